//! The throttle: the pacing controller, the retry count and the governor quota in one place.

use std::fmt;
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::error::Result;
use crate::outcome::{LastError, Outcome};
use crate::pacing::{PacingController, WaitCause, instant_after};
use crate::quota::TokioClock;
use crate::retry::{RetryBudget, RetryVerdict};

/// The answer to "may I dispatch now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Dispatch now: the pacing delay and any `retryAfter` have passed and a quota cell has
    /// been taken for this request.
    Granted,
    /// Do not dispatch before `until`. Sleep until then (outside any actor handler) and ask
    /// again: the quota is only consulted once the pacing instant has come, because taking a
    /// quota cell early would let the real dispatches exceed the cap.
    Wait {
        /// The earliest instant a dispatch can be permitted.
        until: Instant,
        /// What is holding the dispatch back.
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

    /// Whether the dispatch may go now.
    pub fn is_granted(&self) -> bool {
        matches!(self, Self::Granted)
    }
}

/// A snapshot of the throttle for dashboards and `Engine::diagnostics()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleDiagnostics {
    /// When the snapshot was taken.
    pub taken_at: Instant,
    /// The current pacing delay `d`.
    pub delay: Duration,
    /// The next instant a dispatch can be permitted, if it lies in the future; `None` means a
    /// permit request now would pass the pacing check. The quota's part is known once it has
    /// refused a request (governor cannot be asked without taking a cell).
    pub next_permitted_at: Option<Instant>,
    /// What `next_permitted_at` is waiting for.
    pub waiting_for: Option<WaitCause>,
    /// The server's `retryAfter` deadline, while it lies in the future.
    pub retry_after_until: Option<Instant>,
    /// Failed attempts of the current operation.
    pub failures: u32,
    /// The number of failures that exhausts an operation.
    pub max_attempts: u32,
    /// The failure behind the current count, if any.
    pub last_error: Option<LastError>,
    /// Whether the current operation has used up its attempts (the session halts).
    pub exhausted: bool,
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Paces operations, counts their retries and caps the request rate.
///
/// Time is passed in (`now`), so the throttle works the same on real time, tokio's paused clock
/// and a simulation's virtual time. The quota is a governor rate limiter on clock `C`
/// ([`TokioClock`] by default; tests use governor's `FakeRelativeClock`).
pub struct Throttle<C: Clock = TokioClock> {
    pacing: PacingController,
    retries: RetryBudget,
    quota: Limiter<C>,
    quota_not_before: Option<Instant>,
}

impl<C: Clock> fmt::Debug for Throttle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("pacing", &self.pacing)
            .field("retries", &self.retries)
            .field("quota_not_before", &self.quota_not_before)
            .finish_non_exhaustive()
    }
}

impl Throttle<TokioClock> {
    /// A throttle whose quota runs on tokio's clock. Answers
    /// [`crate::ThrottleError::InvalidConfig`] for an out-of-range configuration.
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        Self::with_clock(config, TokioClock)
    }
}

impl<C: Clock> Throttle<C> {
    /// A throttle whose quota runs on `clock`. Answers
    /// [`crate::ThrottleError::InvalidConfig`] for an out-of-range configuration.
    pub fn with_clock(config: &ThrottleConfig, clock: C) -> Result<Self> {
        let pacing = PacingController::new(config)?;
        let quota = config.quota()?;
        Ok(Self {
            pacing,
            retries: RetryBudget::new(config.max_attempts),
            quota: RateLimiter::direct_with_clock(quota, clock),
            quota_not_before: None,
        })
    }

    /// May the next operation be dispatched at `now`? The answer is [`Permit::Granted`] (a
    /// quota cell is taken) or the instant to wait for: the later of the pacing instant, the
    /// `retryAfter` deadline and the quota's earliest conforming time.
    pub fn permit(&mut self, now: Instant) -> Permit {
        if let Err((until, cause)) = self.pacing.check(now) {
            return Permit::Wait { until, cause };
        }
        match self.quota.check() {
            Ok(()) => {
                self.quota_not_before = None;
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

    /// Takes in the outcome of the operation that ended at `now`: adjusts the pacing and the
    /// retry count, and says whether to retry, or that the operation is exhausted.
    pub fn report(&mut self, now: Instant, outcome: &Outcome) -> RetryVerdict {
        self.pacing.record(now, outcome);
        self.retries.record(outcome)
    }

    /// Resets the retry count for a new operation (after a split, a park, or a resume from a
    /// halt). The pacing delay is unaffected: the server's mood does not reset.
    pub fn begin_operation(&mut self) {
        self.retries.begin_operation();
    }

    /// The current pacing delay `d`.
    pub fn delay(&self) -> Duration {
        self.pacing.delay()
    }

    /// The pacing controller, for inspection.
    pub fn pacing(&self) -> &PacingController {
        &self.pacing
    }

    /// The retry count, for inspection.
    pub fn retries(&self) -> &RetryBudget {
        &self.retries
    }

    /// A snapshot of the throttle's state as of `now`.
    pub fn diagnostics(&self, now: Instant) -> ThrottleDiagnostics {
        let pacing = self.pacing.next_permitted().filter(|(at, _)| *at > now);
        let quota = self
            .quota_not_before
            .filter(|at| *at > now)
            .map(|at| (at, WaitCause::Quota));
        let next = match (pacing, quota) {
            (Some(p), Some(q)) => Some(if q.0 > p.0 { q } else { p }),
            (p, q) => p.or(q),
        };
        ThrottleDiagnostics {
            taken_at: now,
            delay: self.pacing.delay(),
            next_permitted_at: next.map(|(at, _)| at),
            waiting_for: next.map(|(_, cause)| cause),
            retry_after_until: self.pacing.retry_after_until().filter(|at| *at > now),
            failures: self.retries.failures(),
            max_attempts: self.retries.max_attempts(),
            last_error: self.retries.last_error().cloned(),
            exhausted: self.retries.is_exhausted(),
        }
    }
}
