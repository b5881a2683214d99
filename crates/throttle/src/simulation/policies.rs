//! The client policies the simulation compares.

use std::collections::VecDeque;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::server::Reply;
use crate::config::ThrottleConfig;
use crate::error::Result;
use crate::outcome::{OperationId, Outcome};
use crate::throttle::{Permit, Throttle};

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

/// skysync's throttle: the rate controller, deadlines, backoffs and the governor quota, all on
/// the simulation's virtual time. Each piece of work is one operation (its retries share its
/// id), as the session would report it.
#[derive(Debug)]
pub struct SkysyncPolicy {
    throttle: Throttle<FakeRelativeClock>,
    clock: FakeRelativeClock,
    base: Instant,
    done: u64,
    operation: OperationId,
}

impl SkysyncPolicy {
    /// The name in the tables.
    pub const NAME: &'static str = "skysync";

    /// A client running [`Throttle`] with `config` (set `config.seed` for repeatable jitter).
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        let clock = FakeRelativeClock::default();
        Ok(Self {
            throttle: Throttle::with_clock(config, clock.clone())?,
            clock,
            base: Instant::now(),
            done: 0,
            operation: OperationId::new("work 0"),
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
        Self::NAME
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
                Outcome::throttled(Some(*retry_after), "THROTTLED (HTTP 429)")
            }
            Reply::Transient => Outcome::transient(None, "INTERNAL_ERROR (HTTP 500)"),
        };
        // The retry verdict matters to the session (halt when exhausted); the simulation
        // measures pacing only and keeps going.
        let _verdict = self
            .throttle
            .report(self.base + now, &self.operation, &outcome);
        if matches!(reply, Reply::Accepted) {
            self.done += 1;
            self.operation = OperationId::new(format!("work {}", self.done));
        }
    }
}

/// The law skysync's throttle followed before it learned rates: a delay `d` within
/// [0.25 s, 600 s], doubled by any failure and shrunk by a third by a success, waited after
/// every reply with ±20 % jitter; a `retryAfter` is a hard deadline (plus up to `0.2·d`). Kept
/// to show what the rate controller replaced: it can only hold `d` steady by being throttled
/// about 37 % of the time (`ln 1.5 / ln 3`), and its floor caps it at 4 requests per second.
/// (Its quota, 4 per second, never bound below the floor and is left out.)
#[derive(Debug, Clone)]
pub struct PreviousLawPolicy {
    delay: Duration,
    next_at: Duration,
    rng: StdRng,
}

impl PreviousLawPolicy {
    /// The name in the tables.
    pub const NAME: &'static str = "previous law (x2 / x2/3, 0.25 s)";
    /// The floor and starting delay.
    pub const FLOOR: Duration = Duration::from_millis(250);
    /// The ceiling.
    pub const CEILING: Duration = Duration::from_secs(600);
    const JITTER: f64 = 0.2;

    /// The policy at its floor, its jitter seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            delay: Self::FLOOR,
            next_at: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl ClientPolicy for PreviousLawPolicy {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now.max(self.next_at)
    }

    fn observe(&mut self, now: Duration, reply: &Reply) {
        self.delay = match reply {
            Reply::Accepted => self.delay.mul_f64(2.0 / 3.0),
            Reply::Throttled { .. } | Reply::Transient => self.delay.saturating_mul(2),
        }
        .clamp(Self::FLOOR, Self::CEILING);
        let low = self.delay.mul_f64(1.0 - Self::JITTER);
        let high = self.delay.mul_f64(1.0 + Self::JITTER).min(Self::CEILING);
        let wait = low + (high - low).mul_f64(self.rng.random::<f64>());
        let mut next = now.saturating_add(wait);
        if let Reply::Throttled { retry_after, .. } = reply {
            let spread = self.delay.mul_f64(Self::JITTER * self.rng.random::<f64>());
            next = next.max(now.saturating_add(*retry_after).saturating_add(spread));
        }
        self.next_at = next;
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
    /// The name in the tables.
    pub const NAME: &'static str = "legacy (2 s, x2 / x2/3)";
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
        Self::NAME
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now.max(self.next_at)
    }

    fn observe(&mut self, now: Duration, reply: &Reply) {
        match reply {
            Reply::Accepted => self.on_reply(true, None),
            Reply::Throttled { retry_after, .. } => self.on_reply(false, Some(*retry_after)),
            Reply::Transient => self.on_reply(false, None),
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
/// credit that later failures must first pay back (wind-up).
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
    /// The name in the tables.
    pub const NAME: &'static str = "PID (CloudSyncSession)";

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
        Self::NAME
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
            Reply::Transient => {
                self.on_reply(false);
                self.delay
            }
        };
        self.next_at = now.saturating_add(wait);
    }
}

/// No pacing at all: the next request goes as soon as the previous reply is in, whatever the
/// server said.
#[derive(Debug, Clone, Copy, Default)]
pub struct NaivePolicy;

impl NaivePolicy {
    /// The name in the tables.
    pub const NAME: &'static str = "naive (no pacing)";
}

impl ClientPolicy for NaivePolicy {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn ready_at(&mut self, now: Duration) -> Duration {
        now
    }

    fn observe(&mut self, _now: Duration, _reply: &Reply) {}
}
