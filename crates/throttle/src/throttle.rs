//! The throttle: the rate controller, the server's deadlines, the backoffs, the retry counts
//! and the governor quota in one place.

use std::fmt;
use std::time::{Duration, SystemTime};

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skysync_model::PacingMemory;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{RETRY_AFTER_CAP, ThrottleConfig};
use crate::error::Result;
use crate::outcome::{LastError, OperationId, Outcome};
use crate::pacing::{PacingPhase, RateController, RateSignal, WaitCause, instant_after};
use crate::quota::TokioClock;
use crate::retry::{RetryBudget, RetryVerdict};

/// The answer to "may I start the next operation?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Start now: the pacing interval, any `retryAfter` and any backoff have passed, and a
    /// quota cell has been taken for this request.
    Granted,
    /// Do not start before `until`. Sleep until then (outside any actor handler) and ask
    /// again: the quota is only consulted once everything else permits, because taking a
    /// quota cell early would let the real starts exceed the cap.
    Wait {
        /// The earliest instant a start can be permitted.
        until: Instant,
        /// What is holding the start back.
        cause: WaitCause,
    },
}

impl Permit {
    /// How long to wait from `now`: zero for [`Permit::Granted`].
    pub fn wait_from(&self, now: Instant) -> Duration {
        match self {
            Self::Granted => Duration::ZERO,
            Self::Wait { until, .. } => until.saturating_duration_since(now),
        }
    }

    /// Whether the start may go now.
    pub fn is_granted(&self) -> bool {
        matches!(self, Self::Granted)
    }
}

/// A snapshot of the throttle for dashboards and `Engine::diagnostics()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleDiagnostics {
    /// When the snapshot was taken.
    pub taken_at: Instant,
    /// The current pacing rate, in operation starts per second.
    pub rate: f64,
    /// The mean interval between starts at that rate (`1/rate`).
    pub interval: Duration,
    /// The learned ceiling in starts per second, once a throttle taught one (or it was
    /// restored from the store).
    pub ceiling: Option<f64>,
    /// Slow start, recovering towards the ceiling, or probing above it.
    pub phase: PacingPhase,
    /// Throttles taken in since the throttle was built.
    pub throttles: u64,
    /// The next instant a start can be permitted, if it lies in the future; `None` means a
    /// permit request now would pass every check but, perhaps, the quota. The quota's part is
    /// known once it has refused a request (governor cannot be asked without taking a cell).
    pub next_permitted_at: Option<Instant>,
    /// What `next_permitted_at` is waiting for: pacing, `retryAfter`, backoff, offline, quota.
    pub waiting_for: Option<WaitCause>,
    /// The server's `retryAfter` deadline, while it lies in the future.
    pub retry_after_until: Option<Instant>,
    /// The operation reported most recently, the one the counts below are about.
    pub operation: Option<OperationId>,
    /// Counted failures of that operation.
    pub failures: u32,
    /// The number of counted failures that exhausts an operation.
    pub max_attempts: u32,
    /// The counted failure behind that operation's count, if any.
    pub last_error: Option<LastError>,
    /// Whether that operation has used up its attempts (the session halts).
    pub exhausted: bool,
    /// The latest failure of any operation and any kind (offline included), until a success.
    pub last_failure: Option<LastError>,
    /// How many operations have counted failures.
    pub failing_operations: usize,
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Paces operations, honours the server's deadlines, backs off, counts retries per operation
/// and caps the request rate.
///
/// * The [`RateController`] paces starts by rate and learns the server's capacity from
///   throttles; only [`Outcome::Throttled`] lowers it.
/// * A `retryAfter` is a hard deadline: no start before it, plus jitter
///   (`retry_after_jitter · retryAfter`) so that devices told the same deadline spread out.
/// * Transient failures and offline probing each have their own capped exponential backoff
///   with jitter; they leave the learned rate alone.
/// * Retries are counted per [`OperationId`] ([`RetryBudget`]); offline is not counted.
/// * A governor quota caps the request rate whatever the controller says.
///
/// Time is passed in (`now`), so the throttle works the same on real time, tokio's paused clock
/// and a simulation's virtual time. The quota is a governor rate limiter on clock `C`
/// ([`TokioClock`] by default; tests use governor's `FakeRelativeClock`).
pub struct Throttle<C: Clock = TokioClock> {
    rate: RateController,
    retry_after_until: Option<Instant>,
    retry_after_start: Option<Instant>,
    retry_after_jitter: f64,
    transient: Backoff,
    offline: Backoff,
    retries: RetryBudget,
    quota: Limiter<C>,
    quota_not_before: Option<Instant>,
    rng: StdRng,
    operation: Option<OperationId>,
    last_failure: Option<LastError>,
}

impl<C: Clock> fmt::Debug for Throttle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate)
            .field("retry_after_until", &self.retry_after_until)
            .field("retry_after_start", &self.retry_after_start)
            .field("transient", &self.transient)
            .field("offline", &self.offline)
            .field("retries", &self.retries)
            .field("quota_not_before", &self.quota_not_before)
            .finish_non_exhaustive()
    }
}

impl Throttle<TokioClock> {
    /// A throttle in slow start whose quota runs on tokio's clock. Answers
    /// [`crate::ThrottleError::InvalidConfig`] for an out-of-range configuration.
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        Self::with_clock(config, TokioClock)
    }
}

/// The later of two optional instants.
fn later(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl<C: Clock> Throttle<C> {
    /// A throttle in slow start whose quota runs on `clock`. Answers
    /// [`crate::ThrottleError::InvalidConfig`] for an out-of-range configuration.
    pub fn with_clock(config: &ThrottleConfig, clock: C) -> Result<Self> {
        Self::build(config, clock, RateController::new(config)?)
    }

    /// A throttle that continues from what a previous run saved ([`Throttle::memory`]): it
    /// paces at the restored ceiling at once, and a `retryAfter` deadline that has not passed
    /// by the wall clock `now_wall` is a hard wait from `now` (a restart during a penalty waits
    /// it out). A ceiling that is not a positive number is ignored.
    pub fn restore(
        config: &ThrottleConfig,
        clock: C,
        memory: &PacingMemory,
        now: Instant,
        now_wall: SystemTime,
    ) -> Result<Self> {
        let rate = match memory.ceiling_per_sec {
            Some(ceiling) => RateController::restored(config, ceiling)?,
            None => RateController::new(config)?,
        };
        let mut throttle = Self::build(config, clock, rate)?;
        let remaining = memory.remaining_penalty(now_wall);
        if !remaining.is_zero() {
            throttle.set_deadline(now, remaining);
        }
        Ok(throttle)
    }

    fn build(config: &ThrottleConfig, clock: C, rate: RateController) -> Result<Self> {
        let quota = config.quota()?;
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            rate,
            retry_after_until: None,
            retry_after_start: None,
            retry_after_jitter: config.retry_after_jitter,
            transient: Backoff::new(config.transient_backoff, config.transient_backoff_cap),
            offline: Backoff::new(config.offline_backoff, config.offline_backoff_cap),
            retries: RetryBudget::new(config.max_attempts),
            quota: RateLimiter::direct_with_clock(quota, clock),
            quota_not_before: None,
            rng,
            operation: None,
            last_failure: None,
        })
    }

    /// The hard waits (server deadline, backoffs) still running at `now`, latest first.
    fn hard_wait(&self, now: Instant) -> Option<(Instant, WaitCause)> {
        [
            (
                self.retry_after_start.filter(|at| *at > now),
                WaitCause::RetryAfter,
            ),
            (self.transient.until(now), WaitCause::Backoff),
            (self.offline.until(now), WaitCause::Offline),
        ]
        .into_iter()
        .filter_map(|(at, cause)| at.map(|at| (at, cause)))
        .max_by_key(|(at, _)| *at)
    }

    /// May the next operation start at `now`? The answer is [`Permit::Granted`] (a quota cell
    /// is taken and the start is recorded) or the instant to wait for: the latest of the
    /// `retryAfter` deadline, the backoffs, the pacing interval and the quota.
    pub fn permit(&mut self, now: Instant) -> Permit {
        if let Some((until, cause)) = self.hard_wait(now) {
            return Permit::Wait { until, cause };
        }
        if let Err(until) = self.rate.check(now) {
            return Permit::Wait {
                until,
                cause: WaitCause::Pacing,
            };
        }
        match self.quota.check() {
            Ok(()) => {
                self.quota_not_before = None;
                let held_until = later(
                    self.retry_after_start,
                    later(self.transient.ends_at(), self.offline.ends_at()),
                );
                self.rate
                    .on_start(now, self.retry_after_start, held_until, &mut self.rng);
                Permit::Granted
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.quota.clock().now());
                // At least a nanosecond, so that a caller waiting for `until` makes progress.
                let until = instant_after(now, wait.max(Duration::from_nanos(1)));
                self.quota_not_before = Some(until);
                Permit::Wait {
                    until,
                    cause: WaitCause::Quota,
                }
            }
        }
    }

    /// Sets the server's deadline `after` from `now` (capped at [`RETRY_AFTER_CAP`]) and the
    /// jittered start after it; a later deadline already pending stays.
    fn set_deadline(&mut self, now: Instant, after: Duration) {
        let after = after.min(RETRY_AFTER_CAP);
        let deadline = instant_after(now, after);
        let spread = after.mul_f64(self.retry_after_jitter * self.rng.random::<f64>());
        let start = instant_after(deadline, spread);
        self.retry_after_until = later(
            self.retry_after_until.filter(|at| *at > now),
            Some(deadline),
        );
        self.retry_after_start = later(self.retry_after_start.filter(|at| *at > now), Some(start));
    }

    /// Takes in how an attempt of `operation` ended at `now`: adjusts the rate (throttles
    /// only), the deadlines and backoffs, and that operation's retry count, and says whether
    /// to retry it or that it is exhausted.
    pub fn report(
        &mut self,
        now: Instant,
        operation: &OperationId,
        outcome: &Outcome,
    ) -> RetryVerdict {
        match outcome {
            Outcome::Success => {
                self.rate.on_report(now, RateSignal::Accepted);
                self.transient.reset();
                self.offline.reset();
                self.last_failure = None;
            }
            Outcome::Throttled { retry_after, .. } => {
                self.rate.on_report(now, RateSignal::Throttled);
                // The server answered: the device is online.
                self.offline.reset();
                if let Some(after) = retry_after {
                    self.set_deadline(now, *after);
                }
            }
            Outcome::Transient { retry_after, .. } => {
                self.rate.on_report(now, RateSignal::Transient);
                self.offline.reset();
                self.transient.fail(now, &mut self.rng);
                if let Some(after) = retry_after {
                    self.set_deadline(now, *after);
                }
            }
            Outcome::Offline { .. } => {
                self.rate.on_report(now, RateSignal::Offline);
                self.offline.fail(now, &mut self.rng);
            }
        }
        if let Some(failure) = outcome.failure() {
            self.last_failure = Some(failure);
        }
        self.operation = Some(operation.clone());
        self.retries.record(operation, outcome)
    }

    /// The network is back (the platform said so): the offline probing wait ends, so the next
    /// start may go as soon as the pacing and any `retryAfter` permit.
    pub fn network_available(&mut self) {
        self.offline.reset();
    }

    /// Drops the retry count of `operation` (it was split, parked or abandoned). The pacing is
    /// unaffected: the server's capacity does not change with the session's plans.
    pub fn forget_operation(&mut self, operation: &OperationId) {
        self.retries.forget(operation);
    }

    /// Drops every retry count (a resume from a halt). The pacing is unaffected.
    pub fn clear_retries(&mut self) {
        self.retries.clear();
    }

    /// What to save in the store's sync metadata: the learned ceiling and the server's pending
    /// `retryAfter` deadline, converted to wall-clock time through the pair (`now`, `now_wall`)
    /// read at the same moment.
    pub fn memory(&self, now: Instant, now_wall: SystemTime) -> PacingMemory {
        let not_before = self.retry_after_until.filter(|at| *at > now).map(|at| {
            // Rounded up, so that a restored deadline is never a millisecond early.
            now_wall
                .checked_add(at.saturating_duration_since(now))
                .map_or(u64::MAX, |wall| {
                    PacingMemory::unix_ms(wall).saturating_add(1)
                })
        });
        PacingMemory {
            ceiling_per_sec: self.rate.ceiling(),
            not_before_unix_ms: not_before,
        }
    }

    /// The current pacing rate, in starts per second.
    pub fn rate(&self) -> f64 {
        self.rate.rate()
    }

    /// The rate controller, for inspection.
    pub fn rate_controller(&self) -> &RateController {
        &self.rate
    }

    /// The retry counts, for inspection.
    pub fn retries(&self) -> &RetryBudget {
        &self.retries
    }

    /// A snapshot of the throttle's state as of `now`.
    pub fn diagnostics(&self, now: Instant) -> ThrottleDiagnostics {
        let pacing = self
            .rate
            .next_start()
            .filter(|at| *at > now)
            .map(|at| (at, WaitCause::Pacing));
        let quota = self
            .quota_not_before
            .filter(|at| *at > now)
            .map(|at| (at, WaitCause::Quota));
        let next = [self.hard_wait(now), pacing, quota]
            .into_iter()
            .flatten()
            .max_by_key(|(at, _)| *at);
        let (failures, last_error, exhausted) = match &self.operation {
            Some(op) => (
                self.retries.failures(op),
                self.retries.last_error(op).cloned(),
                self.retries.is_exhausted(op),
            ),
            None => (0, None, false),
        };
        ThrottleDiagnostics {
            taken_at: now,
            rate: self.rate.rate(),
            interval: self.rate.interval(),
            ceiling: self.rate.ceiling(),
            phase: self.rate.phase(now),
            throttles: self.rate.throttles(),
            next_permitted_at: next.map(|(at, _)| at),
            waiting_for: next.map(|(_, cause)| cause),
            retry_after_until: self.retry_after_until.filter(|at| *at > now),
            operation: self.operation.clone(),
            failures,
            max_attempts: self.retries.max_attempts(),
            last_error,
            exhausted,
            last_failure: self.last_failure.clone(),
            failing_operations: self.retries.failing_operations(),
        }
    }
}
