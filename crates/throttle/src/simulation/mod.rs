//! A deterministic simulation that measures pacing policies against one simulated server.
//!
//! Virtual time only (nothing sleeps), seeded random numbers only: the same configuration and
//! seed always produce the same table.
//!
//! **The server** ([`SimServer`]) is a token bucket: capacity `burst` (`B`), refilled at `rate`
//! (`R`) tokens per second, starting full. A request that finds a token succeeds. One that does
//! not is answered 429 `THROTTLED` with a `retryAfter` in whole seconds ([`RetryAfterRule`]:
//! the time until a token is back, or, in the CloudKit profile, a draw from 10–80 s) and the
//! server remembers that deadline. It punishes two behaviours with lock-outs (every request
//! during one is refused with the time left as `retryAfter`): coming back *before* the
//! deadline, and, with a [`RepeatLimit`], getting throttled too often even while obeying it.
//! Each further offence doubles the lock-out up to `max_lockout`; the doubling is forgiven
//! after `forgive_after` of good behaviour. Optionally a fraction of requests fails with a
//! transient error that costs no token.
//!
//! **The network** adds a round trip drawn uniformly from `[L·(1−s), L·(1+s)]` (mean `L`,
//! spread `s`, default ±50 %); the server decides halfway through it.
//!
//! **The client** has `work` requests to get accepted, one at a time, exactly one in flight,
//! like the session. What it does between requests is its [`ClientPolicy`]:
//! [`SkysyncPolicy`] (this crate's [`Throttle`](crate::Throttle) with its quota),
//! [`PreviousLawPolicy`] (the ×2 / ×⅔ law this crate followed before), [`LegacyPolicy`] and
//! [`PidPolicy`] (CloudSyncSession's two policies, as read in their docs), and [`NaivePolicy`]
//! (no pacing at all). [`compare_policies`] runs all five on identical servers and seeds;
//! [`run_grid`] runs them over a grid of capacities, bursts and seeds and prints one table.
//!
//! A run ends when the work is done, after `max_requests` requests, or once
//! [`MAX_SIMULATED_TIME`] has passed; the last two are reported as not done.

mod grid;
mod policies;
mod server;

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use grid::{Grid, GridCell, GridSpec, run_grid};
pub use policies::{
    ClientPolicy, LegacyPolicy, NaivePolicy, PidPolicy, PidSettings, PreviousLawPolicy,
    SkysyncPolicy,
};
pub use server::{RepeatLimit, Reply, RetryAfterRule, ServerConfig, SimServer};

use crate::config::{ThrottleConfig, invalid};
use crate::error::Result;

/// The longest stretch of simulated time a run covers: 100 years. A policy that has not got
/// its work accepted by then (against a server far too slow for the work) is stopped and
/// reported as not done, so that no clock, skysync's quota clock included, runs past what it
/// can count.
pub const MAX_SIMULATED_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One simulation run: the server, the amount of work, the seed and the bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The server every policy talks to.
    pub server: ServerConfig,
    /// `W`: requests that must be accepted for the work to be done. At least 1.
    pub work: u64,
    /// Seeds the round trips and the server's draws (the same for every policy) and the
    /// policies' jitter.
    pub seed: u64,
    /// A policy that has sent this many requests without finishing is stopped and reported
    /// as not done. At least `work`.
    pub max_requests: u64,
    /// Throttles before this much simulated time are warm-up: [`PolicyRow`]'s
    /// `throttles_after_warmup` and `min_throttle_gap` count only the later ones.
    pub warmup: Duration,
}

impl SimConfig {
    /// A run of `work` requests against `server`, with `max_requests` at `1000 · work`, at
    /// least 10,000 (a naive client needs about that many under the default lock-outs), and a
    /// warm-up of 5 minutes or 30 requests' worth of capacity (`30/R`), whichever is longer.
    pub fn with_server(server: ServerConfig, work: u64, seed: u64) -> Self {
        let warmup = Duration::try_from_secs_f64((30.0 / server.rate).max(300.0))
            .unwrap_or(MAX_SIMULATED_TIME);
        Self {
            server,
            work,
            seed,
            max_requests: work.saturating_mul(1000).max(10_000),
            warmup,
        }
    }

    /// A run of `work` requests against a server of `rate` per second and `burst`, with the
    /// other server settings at their defaults (see [`SimConfig::with_server`]).
    pub fn new(rate: f64, burst: u32, work: u64, seed: u64) -> Self {
        Self::with_server(ServerConfig::new(rate, burst), work, seed)
    }

    /// A run of `work` requests against the CloudKit profile at `rate`
    /// ([`ServerConfig::cloudkit`]).
    pub fn cloudkit(rate: f64, work: u64, seed: u64) -> Self {
        Self::with_server(ServerConfig::cloudkit(rate), work, seed)
    }

    /// Checks the configuration; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        self.server.validate()?;
        if self.work == 0 {
            return Err(invalid("work", "is zero; it must be at least 1"));
        }
        if self.max_requests < self.work {
            return Err(invalid(
                "max_requests",
                format!(
                    "({}) is below work ({}); it must be at least work",
                    self.max_requests, self.work
                ),
            ));
        }
        Ok(())
    }
}

/// The measurements of one policy's run.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// The policy's name.
    pub policy: String,
    /// Accepted requests per second of simulated time.
    pub goodput: f64,
    /// The most a client with one request in flight could get: `min(R, 1/latency)`.
    pub bound: f64,
    /// Throttled requests (lock-out refusals included) as a fraction of all requests sent.
    pub throttled_fraction: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests accepted.
    pub accepted: u64,
    /// Requests answered 429 (lock-out refusals included).
    pub throttled: u64,
    /// Requests answered with a transient failure.
    pub transient: u64,
    /// Lock-outs the server imposed.
    pub lockouts: u64,
    /// Throttles after the warm-up.
    pub throttles_after_warmup: u64,
    /// The shortest time between two consecutive throttles after the warm-up, if there were
    /// at least two.
    pub min_throttle_gap: Option<Duration>,
    /// Simulated time from the first request until the last accepted reply arrived (or until
    /// the run was stopped).
    pub elapsed: Duration,
    /// Whether all the work was accepted within `max_requests` and [`MAX_SIMULATED_TIME`].
    pub completed: bool,
}

impl PolicyRow {
    /// Goodput as a fraction of what the server and the round trip allow (`goodput / bound`).
    pub fn goodput_of_bound(&self) -> f64 {
        self.goodput / self.bound
    }
}

/// Runs one policy against a fresh server, until its work is done, `max_requests` have been
/// sent, or [`MAX_SIMULATED_TIME`] has passed. Answers [`crate::ThrottleError::InvalidConfig`]
/// for an invalid `config`.
pub fn run_policy(config: &SimConfig, policy: &mut dyn ClientPolicy) -> Result<PolicyRow> {
    config.validate()?;
    let mut server = SimServer::new(&config.server, config.seed)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let spread = config.server.latency_spread;
    let mut now = Duration::ZERO;
    let (mut requests, mut accepted, mut throttled, mut transient) = (0u64, 0u64, 0u64, 0u64);
    let mut elapsed = Duration::ZERO;
    let mut throttles_after_warmup = 0u64;
    let mut last_throttle: Option<Duration> = None;
    let mut min_throttle_gap: Option<Duration> = None;

    // Each round either sends a request or waits; policies ask to wait at most a few times per
    // request, so this bound is never the one that stops a run.
    let max_rounds = config.max_requests.saturating_mul(8).saturating_add(64);
    for _ in 0..max_rounds {
        if accepted >= config.work || requests >= config.max_requests || now >= MAX_SIMULATED_TIME {
            break;
        }
        let ready = policy.ready_at(now);
        if ready > now {
            now = ready.min(MAX_SIMULATED_TIME);
            continue;
        }
        requests += 1;
        let round_trip = config
            .server
            .latency
            .mul_f64(1.0 - spread + 2.0 * spread * rng.random::<f64>());
        let reply = server.handle(now + round_trip / 2);
        now += round_trip;
        match reply {
            Reply::Accepted => {
                accepted += 1;
                elapsed = now;
            }
            Reply::Throttled { .. } => {
                throttled += 1;
                if now >= config.warmup {
                    throttles_after_warmup += 1;
                    if let Some(previous) = last_throttle {
                        let gap = now - previous;
                        min_throttle_gap = Some(min_throttle_gap.map_or(gap, |min| min.min(gap)));
                    }
                    last_throttle = Some(now);
                }
            }
            Reply::Transient => transient += 1,
        }
        policy.observe(now, &reply);
    }
    let completed = accepted >= config.work;
    if !completed {
        elapsed = now;
    }
    // Counts stay far below 2^53, so these conversions are exact.
    let goodput = if elapsed.is_zero() {
        0.0
    } else {
        accepted as f64 / elapsed.as_secs_f64()
    };
    let throttled_fraction = if requests == 0 {
        0.0
    } else {
        throttled as f64 / requests as f64
    };
    Ok(PolicyRow {
        policy: policy.name().to_owned(),
        goodput,
        bound: config.server.bound(),
        throttled_fraction,
        requests,
        accepted,
        throttled,
        transient,
        lockouts: server.lockouts(),
        throttles_after_warmup,
        min_throttle_gap,
        elapsed,
        completed,
    })
}

/// skysync's throttle configuration in the simulation: the defaults, jitter seeded by `seed`.
pub fn skysync_config(seed: u64) -> ThrottleConfig {
    ThrottleConfig {
        seed: Some(seed),
        ..ThrottleConfig::default()
    }
}

/// Every compared policy, fresh, in table order: skysync, the previous law, legacy, PID, naive.
pub fn all_policies(seed: u64) -> Result<Vec<Box<dyn ClientPolicy>>> {
    Ok(vec![
        Box::new(SkysyncPolicy::new(&skysync_config(seed))?),
        Box::new(PreviousLawPolicy::new(seed)),
        Box::new(LegacyPolicy::new()),
        Box::new(PidPolicy::new(PidSettings::default())),
        Box::new(NaivePolicy),
    ])
}

/// The result of [`compare_policies`]: the configuration and one row per policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What was simulated.
    pub config: SimConfig,
    /// skysync, the previous law, legacy, PID and naive, in that order.
    pub rows: Vec<PolicyRow>,
}

impl Comparison {
    /// The row of the policy with this name.
    pub fn row(&self, policy: &str) -> Option<&PolicyRow> {
        self.rows.iter().find(|row| row.policy == policy)
    }
}

/// Runs every policy of [`all_policies`] on identical servers with the same seed.
pub fn compare_policies(config: &SimConfig) -> Result<Comparison> {
    config.validate()?;
    let rows = all_policies(config.seed)?
        .iter_mut()
        .map(|policy| run_policy(config, policy.as_mut()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Comparison {
        config: config.clone(),
        rows,
    })
}

/// `gap` in whole seconds for a table, or `-` when there was none.
pub(crate) fn gap_cell(gap: Option<Duration>) -> String {
    gap.map_or_else(
        || "-".to_owned(),
        |gap| format!("{:.0} s", gap.as_secs_f64()),
    )
}

/// A one-line description of a server for table headers.
pub(crate) fn describe_server(server: &ServerConfig) -> String {
    let retry_after = match server.retry_after {
        RetryAfterRule::UntilToken => "retryAfter = time to a token".to_owned(),
        RetryAfterRule::Drawn { min, max } => {
            format!(
                "retryAfter drawn from {}-{} s",
                min.as_secs(),
                max.as_secs()
            )
        }
    };
    let repeat = server.repeat_limit.map_or_else(String::new, |limit| {
        format!(
            ", or {} throttles within {} s",
            limit.throttles,
            limit.window.as_secs()
        )
    });
    format!(
        "round trip {} ms (±{:.0} %), {retry_after}; lock-out for coming back early{repeat}: {} s doubling to {} s",
        server.latency.as_millis(),
        server.latency_spread * 100.0,
        server.lockout.as_secs(),
        server.max_lockout.as_secs(),
    )
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = &self.config.server;
        writeln!(
            f,
            "server: R = {}/s, burst B = {}, {}; work W = {} requests; seed {}; warm-up {} s",
            server.rate,
            server.burst,
            describe_server(server),
            self.config.work,
            self.config.seed,
            self.config.warmup.as_secs(),
        )?;
        writeln!(
            f,
            "{:<34} {:>10} {:>10} {:>10} {:>9} {:>9} {:>14} {:>5}",
            "policy",
            "goodput/R",
            "throttled",
            "requests",
            "lockouts",
            "min gap",
            "simulated time",
            "done"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "{:<34} {:>10.3} {:>9.2}% {:>10} {:>9} {:>9} {:>12.1} s {:>5}",
                row.policy,
                row.goodput_of_bound(),
                row.throttled_fraction * 100.0,
                row.requests,
                row.lockouts,
                gap_cell(row.min_throttle_gap),
                row.elapsed.as_secs_f64(),
                if row.completed { "yes" } else { "NO" },
            )?;
        }
        Ok(())
    }
}
