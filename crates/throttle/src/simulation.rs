//! A deterministic simulation that measures pacing policies against one simulated server.
//!
//! Virtual time only (nothing sleeps), seeded random numbers only: the same configuration and
//! seed always produce the same table.
//!
//! **The server** ([`SimServer`]) is a token bucket: capacity `burst`, refilled at `rate`
//! tokens per second, starting full. A request that finds a token succeeds. One that does not
//! is answered 429 `THROTTLED` with a `retryAfter` in whole seconds (the time until a token is
//! back, rounded up, at least 1 s), and the server remembers that deadline. A client that comes
//! back *before* its deadline is hammering during a penalty: it is locked out for
//! `lockout` (10 s by default), every request during the lock-out is refused with the time
//! left as `retryAfter`, and each further offence doubles the lock-out up to `max_lockout`
//! (300 s). The doubling is forgiven once the client has behaved for `forgive_after` (60 s)
//! after its last lock-out ended. The network adds a round trip drawn uniformly from
//! `[latency/2, 3·latency/2]`; the server decides in the middle of it.
//!
//! **The client** has `work` requests to get accepted, one at a time, exactly one in flight,
//! like the session. What it does between requests is its [`ClientPolicy`]:
//! [`SkysyncPolicy`] (this crate's [`Throttle`] with its quota), [`LegacyPolicy`] and
//! [`PidPolicy`] (CloudSyncSession's two policies, as read in their docs), and [`NaivePolicy`]
//! (no pacing at all). [`compare_policies`] runs all four on identical servers and seeds.
//!
//! A run ends when the work is done, after `max_requests` requests, or once
//! [`MAX_SIMULATED_TIME`] has passed; the last two are reported as not done.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::config::{MAX_DELAY_LIMIT, ThrottleConfig, invalid};
use crate::error::Result;
use crate::outcome::Outcome;
use crate::throttle::{Permit, Throttle};

/// The longest stretch of simulated time a run covers: 100 years. A policy that has not got
/// its work accepted by then (against a server far too slow for the work) is stopped and
/// reported as not done, so that no clock, skysync's quota clock included, runs past what it
/// can count.
pub const MAX_SIMULATED_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The simulated server's limits and penalties.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `R`: tokens added per second (the sustainable request rate). Must be above zero.
    pub rate: f64,
    /// `B`: the bucket's capacity (requests that can go back to back). At least 1.
    pub burst: u32,
    /// The mean round trip of one request (default 20 ms). Must be above zero and at most
    /// [`MAX_DELAY_LIMIT`].
    pub latency: Duration,
    /// The first lock-out for coming back before a `retryAfter` (default 10 s).
    pub lockout: Duration,
    /// The longest lock-out after repeated offences (default 300 s).
    pub max_lockout: Duration,
    /// Good behaviour after a lock-out that resets the doubling (default 60 s).
    pub forgive_after: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            rate: 10.0,
            burst: 20,
            latency: Duration::from_millis(20),
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(300),
            forgive_after: Duration::from_secs(60),
        }
    }
}

impl ServerConfig {
    /// Checks the server settings; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(invalid(
                "rate",
                format!("is {}; it must be a number above zero", self.rate),
            ));
        }
        if self.burst == 0 {
            return Err(invalid("burst", "is zero; it must be at least 1"));
        }
        if self.latency.is_zero() {
            return Err(invalid(
                "latency",
                "is zero; it must be above zero so that time moves with every request",
            ));
        }
        if self.latency > MAX_DELAY_LIMIT {
            return Err(invalid(
                "latency",
                format!(
                    "is {:?}; it must be at most {MAX_DELAY_LIMIT:?}",
                    self.latency
                ),
            ));
        }
        if self.lockout.is_zero() || self.max_lockout < self.lockout {
            return Err(invalid(
                "lockout",
                format!(
                    "({:?}) must be above zero and at most max_lockout ({:?})",
                    self.lockout, self.max_lockout
                ),
            ));
        }
        Ok(())
    }
}

/// One simulation run: the server, the amount of work, the seed and a safety bound.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The server every policy talks to.
    pub server: ServerConfig,
    /// `W`: requests that must be accepted for the work to be done. At least 1.
    pub work: u64,
    /// Seeds the round-trip draws (the same for every policy) and skysync's jitter.
    pub seed: u64,
    /// A policy that has sent this many requests without finishing is stopped and reported
    /// as not done. At least `work`.
    pub max_requests: u64,
}

impl SimConfig {
    /// A run of `work` requests against a server of `rate` per second and `burst`, with the
    /// other server settings at their defaults and `max_requests` at `1000 · work`, at least
    /// 10,000 (a naive client needs about that many under the default lock-outs).
    pub fn new(rate: f64, burst: u32, work: u64, seed: u64) -> Self {
        Self {
            server: ServerConfig {
                rate,
                burst,
                ..ServerConfig::default()
            },
            work,
            seed,
            max_requests: work.saturating_mul(1000).max(10_000),
        }
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

/// The server's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The request was accepted.
    Accepted,
    /// 429 `THROTTLED`.
    Throttled {
        /// When to come back (whole seconds).
        retry_after: Duration,
        /// Whether this answer comes from a lock-out (a penalty for coming back too early)
        /// rather than from an empty bucket.
        lockout: bool,
    },
}

/// The simulated server: a token bucket with `retryAfter` deadlines and escalating lock-outs
/// for clients that ignore them (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SimServer {
    config: ServerConfig,
    tokens: f64,
    refilled_at: Duration,
    told_until: Duration,
    locked_until: Duration,
    offences: u32,
    lockouts: u64,
}

/// `secs` rounded up to whole seconds, at least 1 s; a wait too long for a `Duration` (a
/// server with a vanishing rate) is the longest one.
fn whole_seconds_at_least_one(secs: f64) -> Duration {
    let whole = secs.ceil().max(1.0);
    Duration::try_from_secs_f64(whole).unwrap_or(Duration::MAX)
}

impl SimServer {
    /// A server with a full bucket at time zero.
    pub fn new(config: &ServerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            tokens: f64::from(config.burst),
            refilled_at: Duration::ZERO,
            told_until: Duration::ZERO,
            locked_until: Duration::ZERO,
            offences: 0,
            lockouts: 0,
        })
    }

    /// How many lock-outs the server has imposed so far.
    pub fn lockouts(&self) -> u64 {
        self.lockouts
    }

    /// Answers a request arriving at virtual time `at` (times must not go backwards).
    pub fn handle(&mut self, at: Duration) -> Reply {
        let elapsed = at.saturating_sub(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.config.rate).min(f64::from(self.config.burst));
        self.refilled_at = self.refilled_at.max(at);

        if at < self.locked_until {
            return Reply::Throttled {
                retry_after: whole_seconds_at_least_one((self.locked_until - at).as_secs_f64()),
                lockout: true,
            };
        }
        if at < self.told_until {
            // Came back before its retryAfter: lock it out, longer for each repeat offence.
            let forgiven = at.saturating_sub(self.locked_until) > self.config.forgive_after;
            self.offences = if forgiven || self.lockouts == 0 {
                1
            } else {
                self.offences.saturating_add(1)
            };
            let factor = 2u32.saturating_pow(self.offences.saturating_sub(1).min(30));
            let lockout = self
                .config
                .lockout
                .saturating_mul(factor)
                .min(self.config.max_lockout);
            self.locked_until = at.saturating_add(lockout);
            self.told_until = self.locked_until;
            self.lockouts += 1;
            return Reply::Throttled {
                retry_after: whole_seconds_at_least_one(lockout.as_secs_f64()),
                lockout: true,
            };
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Reply::Accepted;
        }
        let retry_after = whole_seconds_at_least_one((1.0 - self.tokens) / self.config.rate);
        self.told_until = at.saturating_add(retry_after);
        Reply::Throttled {
            retry_after,
            lockout: false,
        }
    }
}

/// What a client does between requests. Times are virtual, measured from the start of the run.
pub trait ClientPolicy {
    /// The name shown in the table.
    fn name(&self) -> &str;
    /// The earliest time the next request may go, asked at `now`. Answering `now` (or
    /// earlier) sends it now; answering a later time makes the run wait until then and ask
    /// again.
    fn ready_at(&mut self, now: Duration) -> Duration;
    /// The reply to the request in flight arrived at `now`.
    fn observe(&mut self, now: Duration, reply: &Reply);
}

/// skysync's own throttle: the pacing controller plus the governor quota, both on the
/// simulation's virtual time.
///
/// When the server sustains less than the floor pace (`1/d_min`, 4 requests per second by
/// default), the ×2-on-failure / ×2/3-on-success rule settles where failures are
/// `ln 1.5 / ln 3 ≈ 37 %` of requests: the controller keeps probing for capacity. The server's
/// `retryAfter` deadlines keep that probing from ever earning a lock-out.
#[derive(Debug)]
pub struct SkysyncPolicy {
    throttle: Throttle<FakeRelativeClock>,
    clock: FakeRelativeClock,
    base: Instant,
}

impl SkysyncPolicy {
    /// A client running [`Throttle`] with `config` (set `config.seed` for repeatable jitter).
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        let clock = FakeRelativeClock::default();
        Ok(Self {
            throttle: Throttle::with_clock(config, clock.clone())?,
            clock,
            base: Instant::now(),
        })
    }

    /// The throttle inside, for inspection.
    pub fn throttle(&self) -> &Throttle<FakeRelativeClock> {
        &self.throttle
    }

    /// Moves the quota's clock forward to `now` (it reads the time since the run started).
    fn sync_clock(&mut self, now: Duration) {
        let clock_at = Duration::from(self.clock.now());
        if now > clock_at {
            self.clock.advance(now - clock_at);
        }
    }
}

impl ClientPolicy for SkysyncPolicy {
    fn name(&self) -> &str {
        "skysync"
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        self.sync_clock(now);
        match self.throttle.permit(self.base + now) {
            Permit::Granted => now,
            Permit::Wait { until, .. } => until.saturating_duration_since(self.base),
        }
    }

    fn observe(&mut self, now: Duration, reply: &Reply) {
        self.sync_clock(now);
        let outcome = match reply {
            Reply::Accepted => Outcome::Success,
            Reply::Throttled { retry_after, .. } => {
                Outcome::throttled(Some(*retry_after), "THROTTLED (429)")
            }
        };
        // The retry verdict matters to the session (halt when exhausted); the simulation
        // measures pacing only and keeps going.
        let _verdict = self.throttle.report(self.base + now, &outcome);
    }
}

/// CloudSyncSession's legacy policy: the delay starts at 2 s and stays within [2 s, 600 s];
/// a failure sets it to the server's `retryAfter` if given (else doubles it); a success
/// multiplies it by 2/3. The delay is waited after every reply.
#[derive(Debug, Clone)]
pub struct LegacyPolicy {
    delay: Duration,
    next_at: Duration,
}

impl LegacyPolicy {
    /// The floor and starting delay.
    pub const FLOOR: Duration = Duration::from_secs(2);
    /// The ceiling.
    pub const CEILING: Duration = Duration::from_secs(600);

    /// The policy at its starting delay of 2 s.
    pub fn new() -> Self {
        Self {
            delay: Self::FLOOR,
            next_at: Duration::ZERO,
        }
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Applies one reply's effect on the delay (`retry_after` is `None` for a failure that
    /// carried none).
    pub fn on_reply(&mut self, success: bool, retry_after: Option<Duration>) {
        let next = if success {
            self.delay.mul_f64(2.0 / 3.0)
        } else {
            retry_after.unwrap_or(self.delay.saturating_mul(2))
        };
        self.delay = next.clamp(Self::FLOOR, Self::CEILING);
    }
}

impl Default for LegacyPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientPolicy for LegacyPolicy {
    fn name(&self) -> &str {
        "legacy (2 s, x2 / x2/3)"
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now.max(self.next_at)
    }

    fn observe(&mut self, now: Duration, reply: &Reply) {
        match reply {
            Reply::Accepted => self.on_reply(true, None),
            Reply::Throttled { retry_after, .. } => self.on_reply(false, Some(*retry_after)),
        }
        self.next_at = now + self.delay;
    }
}

/// The tuning of [`PidPolicy`]; the defaults are CloudSyncSession's.
#[derive(Debug, Clone, PartialEq)]
pub struct PidSettings {
    /// Lowest delay (0.25 s).
    pub floor: Duration,
    /// Highest delay (600 s).
    pub ceiling: Duration,
    /// Proportional gain, seconds of delay per unit of error (2).
    pub kp: f64,
    /// Integral gain (0.05).
    pub ki: f64,
    /// Derivative gain (0.02).
    pub kd: f64,
    /// How many recent outcomes the success rate is measured over (20).
    pub window: usize,
    /// The success rate the controller aims for (0.96).
    pub target_success_rate: f64,
    /// The delay before any outcome, and the bias the controller output is added to (1 s).
    pub start: Duration,
}

impl Default for PidSettings {
    fn default() -> Self {
        Self {
            floor: Duration::from_millis(250),
            ceiling: Duration::from_secs(600),
            kp: 2.0,
            ki: 0.05,
            kd: 0.02,
            window: 20,
            target_success_rate: 0.96,
            start: Duration::from_secs(1),
        }
    }
}

/// CloudSyncSession's PID policy, read as a textbook discrete PID controller.
///
/// After each reply: the success rate `s` over the last `window` outcomes gives the error
/// `e = target − s` (positive when too many requests fail); the integral is the plain running
/// sum of `e` per outcome (no clamping), the derivative is `e − e_previous`; the output
/// `u = kp·e + ki·Σe + kd·Δe` is in seconds and the delay is `start + u`, clamped to
/// `[floor, ceiling]`. A failure that carries a `retryAfter` waits exactly that long instead
/// (as given); the controller state is updated either way.
///
/// Because successes keep adding `target − 1 = −0.04` to the integral, a long calm run banks
/// credit that later failures must first pay back: this is the wind-up skysync's controller
/// avoids.
#[derive(Debug, Clone)]
pub struct PidPolicy {
    settings: PidSettings,
    outcomes: VecDeque<bool>,
    integral: f64,
    previous_error: f64,
    delay: Duration,
    next_at: Duration,
}

impl PidPolicy {
    /// The policy at its starting delay.
    pub fn new(settings: PidSettings) -> Self {
        let delay = settings.start.clamp(settings.floor, settings.ceiling);
        Self {
            settings,
            outcomes: VecDeque::new(),
            integral: 0.0,
            previous_error: 0.0,
            delay,
            next_at: Duration::ZERO,
        }
    }

    /// The delay the controller currently asks for.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The accumulated integral term `Σe`.
    pub fn integral(&self) -> f64 {
        self.integral
    }

    /// Feeds one outcome into the controller and updates the delay.
    pub fn on_reply(&mut self, success: bool) {
        self.outcomes.push_back(success);
        while self.outcomes.len() > self.settings.window.max(1) {
            self.outcomes.pop_front();
        }
        let successes = self.outcomes.iter().filter(|ok| **ok).count();
        // Window sizes are small, so the usize-to-f64 conversions are exact.
        let rate = successes as f64 / self.outcomes.len().max(1) as f64;
        let error = self.settings.target_success_rate - rate;
        self.integral += error;
        let derivative = error - self.previous_error;
        self.previous_error = error;
        let output = self.settings.kp * error
            + self.settings.ki * self.integral
            + self.settings.kd * derivative;
        let secs = self.settings.start.as_secs_f64() + output;
        self.delay = if secs.is_finite() && secs > 0.0 {
            Duration::try_from_secs_f64(secs).unwrap_or(self.settings.ceiling)
        } else {
            self.settings.floor
        }
        .clamp(self.settings.floor, self.settings.ceiling);
    }
}

impl ClientPolicy for PidPolicy {
    fn name(&self) -> &str {
        "PID (CloudSyncSession)"
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now.max(self.next_at)
    }

    fn observe(&mut self, now: Duration, reply: &Reply) {
        let wait = match reply {
            Reply::Accepted => {
                self.on_reply(true);
                self.delay
            }
            Reply::Throttled { retry_after, .. } => {
                self.on_reply(false);
                *retry_after
            }
        };
        self.next_at = now.saturating_add(wait);
    }
}

/// No pacing at all: the next request goes as soon as the previous reply is in, whatever the
/// server said.
#[derive(Debug, Clone, Copy, Default)]
pub struct NaivePolicy;

impl ClientPolicy for NaivePolicy {
    fn name(&self) -> &str {
        "naive (no pacing)"
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now
    }

    fn observe(&mut self, _now: Duration, _reply: &Reply) {}
}

/// The measurements of one policy's run.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// The policy's name.
    pub policy: String,
    /// Accepted requests per second of simulated time, as a fraction of the server's rate `R`.
    pub goodput: f64,
    /// Throttled requests as a fraction of all requests sent.
    pub throttled_fraction: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests accepted.
    pub accepted: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Lock-outs the server imposed for coming back before a `retryAfter`.
    pub lockouts: u64,
    /// Simulated time from the first request until the last accepted reply arrived (or until
    /// the run was stopped).
    pub elapsed: Duration,
    /// Whether all the work was accepted within `max_requests` and [`MAX_SIMULATED_TIME`].
    pub completed: bool,
}

/// Runs one policy against a fresh server, until its work is done, `max_requests` have been
/// sent, or [`MAX_SIMULATED_TIME`] has passed. Answers [`crate::ThrottleError::InvalidConfig`]
/// for an invalid `config`.
pub fn run_policy(config: &SimConfig, policy: &mut dyn ClientPolicy) -> Result<PolicyRow> {
    config.validate()?;
    let mut server = SimServer::new(&config.server)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut now = Duration::ZERO;
    let (mut requests, mut accepted, mut throttled) = (0u64, 0u64, 0u64);
    let mut elapsed = Duration::ZERO;

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
        let round_trip = config.server.latency.mul_f64(0.5 + rng.random::<f64>());
        let reply = server.handle(now + round_trip / 2);
        now += round_trip;
        match reply {
            Reply::Accepted => {
                accepted += 1;
                elapsed = now;
            }
            Reply::Throttled { .. } => throttled += 1,
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
        accepted as f64 / elapsed.as_secs_f64() / config.server.rate
    };
    let throttled_fraction = if requests == 0 {
        0.0
    } else {
        throttled as f64 / requests as f64
    };
    Ok(PolicyRow {
        policy: policy.name().to_owned(),
        goodput,
        throttled_fraction,
        requests,
        accepted,
        throttled,
        lockouts: server.lockouts(),
        elapsed,
        completed,
    })
}

/// The result of [`compare_policies`]: the configuration and one row per policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What was simulated.
    pub config: SimConfig,
    /// skysync, legacy, PID and naive, in that order.
    pub rows: Vec<PolicyRow>,
}

impl Comparison {
    /// The row of the policy with this name.
    pub fn row(&self, policy: &str) -> Option<&PolicyRow> {
        self.rows.iter().find(|row| row.policy == policy)
    }
}

/// Runs skysync's throttle (default configuration, jitter seeded from `config.seed`),
/// CloudSyncSession's legacy and PID policies and a naive client on identical servers with the
/// same seed.
pub fn compare_policies(config: &SimConfig) -> Result<Comparison> {
    config.validate()?;
    let skysync_config = ThrottleConfig {
        seed: Some(config.seed),
        ..ThrottleConfig::default()
    };
    let mut policies: Vec<Box<dyn ClientPolicy>> = vec![
        Box::new(SkysyncPolicy::new(&skysync_config)?),
        Box::new(LegacyPolicy::new()),
        Box::new(PidPolicy::new(PidSettings::default())),
        Box::new(NaivePolicy),
    ];
    let rows = policies
        .iter_mut()
        .map(|policy| run_policy(config, policy.as_mut()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Comparison {
        config: config.clone(),
        rows,
    })
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = &self.config.server;
        writeln!(
            f,
            "server: R = {}/s, burst B = {}, round trip {} ms (±50 %), lock-out {} s doubling to {} s; \
             work W = {} requests; seed {}",
            server.rate,
            server.burst,
            server.latency.as_millis(),
            server.lockout.as_secs(),
            server.max_lockout.as_secs(),
            self.config.work,
            self.config.seed,
        )?;
        writeln!(
            f,
            "{:<24} {:>12} {:>10} {:>10} {:>9} {:>14} {:>5}",
            "policy", "goodput (R)", "throttled", "requests", "lockouts", "simulated time", "done"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "{:<24} {:>12.3} {:>9.1}% {:>10} {:>9} {:>12.1} s {:>5}",
                row.policy,
                row.goodput,
                row.throttled_fraction * 100.0,
                row.requests,
                row.lockouts,
                row.elapsed.as_secs_f64(),
                if row.completed { "yes" } else { "NO" },
            )?;
        }
        Ok(())
    }
}
