//! The simulated server: a token bucket with `retryAfter` deadlines and escalating lock-outs.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{MAX_DELAY_LIMIT, invalid};
use crate::error::Result;

/// How the server picks the `retryAfter` of a request it refuses for lack of capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterRule {
    /// The time until a token is back, rounded up to whole seconds, at least 1 s: coming back
    /// then always finds a token.
    UntilToken,
    /// Whole seconds drawn uniformly from `[min, max]`, whatever the bucket holds (CloudKit's
    /// observed behaviour: 10–80 s). Coming back then may find no token yet.
    Drawn {
        /// The shortest `retryAfter` (at least 1 s).
        min: Duration,
        /// The longest `retryAfter`.
        max: Duration,
    },
}

/// Punishment for a client that keeps getting throttled even though it obeys `retryAfter`:
/// the throttle that makes `throttles` within `window` becomes a lock-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatLimit {
    /// How many throttles within `window` earn a lock-out (at least 1).
    pub throttles: u32,
    /// The sliding window they are counted over.
    pub window: Duration,
}

/// The simulated server's limits, penalties and network.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `R`: tokens added per second (the sustainable request rate). Must be above zero.
    pub rate: f64,
    /// `B`: the bucket's capacity (requests that can go back to back). At least 1.
    pub burst: u32,
    /// The mean round trip of one request (default 20 ms). Must be above zero and at most
    /// [`MAX_DELAY_LIMIT`].
    pub latency: Duration,
    /// The round trip is drawn uniformly from `[latency·(1−s), latency·(1+s)]` with this `s`
    /// (default 0.5; from 0 up to, not including, 1). The server decides halfway through it.
    pub latency_spread: f64,
    /// How `retryAfter` is chosen for a request refused for lack of capacity.
    pub retry_after: RetryAfterRule,
    /// The first lock-out (default 10 s).
    pub lockout: Duration,
    /// The longest lock-out after repeated offences (default 300 s).
    pub max_lockout: Duration,
    /// Good behaviour after a lock-out that resets the doubling (default 60 s).
    pub forgive_after: Duration,
    /// Lock-outs for clients that keep getting throttled (default: 10 throttles within
    /// 10 minutes), or `None` to lock out only clients that come back before `retryAfter`.
    pub repeat_limit: Option<RepeatLimit>,
    /// The fraction of requests answered with a transient failure (`INTERNAL_ERROR`) that
    /// costs no token (default 0; from 0 up to, not including, 1).
    pub transient_fraction: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            rate: 10.0,
            burst: 20,
            latency: Duration::from_millis(20),
            latency_spread: 0.5,
            retry_after: RetryAfterRule::UntilToken,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(300),
            forgive_after: Duration::from_secs(60),
            repeat_limit: Some(RepeatLimit {
                throttles: 10,
                window: Duration::from_secs(600),
            }),
            transient_fraction: 0.0,
        }
    }
}

impl ServerConfig {
    /// A server of `rate` per second and `burst`, other settings at their defaults.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst,
            ..Self::default()
        }
    }

    /// A realistic CloudKit profile at `rate` requests per second (about one 200-record
    /// request per 10–15 s is what CloudKit sustains, so `rate` is typically 1/10 to 1/15): a
    /// burst of 5, a 1 s mean round trip (±50 %), `retryAfter` drawn from 10–80 s, and
    /// lock-outs for clients that ignore it or keep getting throttled (10 throttles within an
    /// hour) that start at 5 minutes and double up to 4 hours, forgiven after an hour of good
    /// behaviour.
    pub fn cloudkit(rate: f64) -> Self {
        Self {
            rate,
            burst: 5,
            latency: Duration::from_secs(1),
            latency_spread: 0.5,
            retry_after: RetryAfterRule::Drawn {
                min: Duration::from_secs(10),
                max: Duration::from_secs(80),
            },
            lockout: Duration::from_secs(300),
            max_lockout: Duration::from_secs(4 * 3600),
            forgive_after: Duration::from_secs(3600),
            repeat_limit: Some(RepeatLimit {
                throttles: 10,
                window: Duration::from_secs(3600),
            }),
            transient_fraction: 0.0,
        }
    }

    /// The most a client with one request in flight can get accepted per second:
    /// `min(R, 1/latency)`.
    pub fn bound(&self) -> f64 {
        self.rate.min(1.0 / self.latency.as_secs_f64())
    }

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
        if !(self.latency_spread.is_finite()
            && self.latency_spread >= 0.0
            && self.latency_spread < 1.0)
        {
            return Err(invalid(
                "latency_spread",
                format!(
                    "is {}; it must be from 0 up to, not including, 1",
                    self.latency_spread
                ),
            ));
        }
        if let RetryAfterRule::Drawn { min, max } = self.retry_after
            && (min < Duration::from_secs(1) || max < min || max > MAX_DELAY_LIMIT)
        {
            return Err(invalid(
                "retry_after",
                format!(
                    "draws from [{min:?}, {max:?}]; it must be within [1 s, {MAX_DELAY_LIMIT:?}] and in order"
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
        if let Some(limit) = self.repeat_limit
            && (limit.throttles == 0 || limit.window.is_zero())
        {
            return Err(invalid(
                "repeat_limit",
                "must count at least 1 throttle over a window above zero",
            ));
        }
        if !(self.transient_fraction.is_finite()
            && self.transient_fraction >= 0.0
            && self.transient_fraction < 1.0)
        {
            return Err(invalid(
                "transient_fraction",
                format!(
                    "is {}; it must be from 0 up to, not including, 1",
                    self.transient_fraction
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
        /// Whether this answer comes from a lock-out (a penalty) rather than from an empty
        /// bucket.
        lockout: bool,
    },
    /// 500 `INTERNAL_ERROR`: a passing failure, no `retryAfter`, no token spent.
    Transient,
}

/// The simulated server: a token bucket with `retryAfter` deadlines and escalating lock-outs
/// (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct SimServer {
    config: ServerConfig,
    rng: StdRng,
    tokens: f64,
    refilled_at: Duration,
    told_until: Duration,
    locked_until: Duration,
    offences: u32,
    lockouts: u64,
    recent_throttles: VecDeque<Duration>,
}

/// `secs` rounded up to whole seconds, at least 1 s; a wait too long for a `Duration` (a
/// server with a vanishing rate) is the longest one.
fn whole_seconds_at_least_one(secs: f64) -> Duration {
    let whole = secs.ceil().max(1.0);
    Duration::try_from_secs_f64(whole).unwrap_or(Duration::MAX)
}

impl SimServer {
    /// A server with a full bucket at time zero; `seed` drives its own draws (`retryAfter`,
    /// transient failures).
    pub fn new(config: &ServerConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            rng: StdRng::seed_from_u64(seed ^ 0x5EED_5E4F_E4A1_u64),
            tokens: f64::from(config.burst),
            refilled_at: Duration::ZERO,
            told_until: Duration::ZERO,
            locked_until: Duration::ZERO,
            offences: 0,
            lockouts: 0,
            recent_throttles: VecDeque::new(),
        })
    }

    /// How many lock-outs the server has imposed so far.
    pub fn lockouts(&self) -> u64 {
        self.lockouts
    }

    /// Locks the client out from `at`, longer for each repeat offence.
    fn lock_out(&mut self, at: Duration) -> Reply {
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
        self.recent_throttles.clear();
        Reply::Throttled {
            retry_after: whole_seconds_at_least_one(lockout.as_secs_f64()),
            lockout: true,
        }
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
            // Came back before its retryAfter: hammering during a penalty.
            return self.lock_out(at);
        }
        if self.config.transient_fraction > 0.0
            && self.rng.random::<f64>() < self.config.transient_fraction
        {
            return Reply::Transient;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Reply::Accepted;
        }
        if let Some(limit) = self.config.repeat_limit {
            while self
                .recent_throttles
                .front()
                .is_some_and(|first| at.saturating_sub(*first) >= limit.window)
            {
                self.recent_throttles.pop_front();
            }
            self.recent_throttles.push_back(at);
            if self.recent_throttles.len() >= usize::try_from(limit.throttles).unwrap_or(usize::MAX)
            {
                return self.lock_out(at);
            }
        }
        let retry_after = match self.config.retry_after {
            RetryAfterRule::UntilToken => {
                whole_seconds_at_least_one((1.0 - self.tokens) / self.config.rate)
            }
            RetryAfterRule::Drawn { min, max } => {
                let (min, max) = (min.as_secs(), max.as_secs().max(min.as_secs()));
                Duration::from_secs(self.rng.random_range(min..=max))
            }
        };
        self.told_until = at.saturating_add(retry_after);
        Reply::Throttled {
            retry_after,
            lockout: false,
        }
    }
}
