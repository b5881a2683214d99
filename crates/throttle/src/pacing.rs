//! The pacing controller: an adaptive delay between operations, with jitter and retry-after
//! deadlines. Pure: no I/O, no clock reads; the caller passes `now` in.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::config::{RETRY_AFTER_CAP, ThrottleConfig};
use crate::error::Result;
use crate::outcome::Outcome;

/// Why a caller has to wait before dispatching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitCause {
    /// The adaptive pacing delay after the last outcome has not passed yet.
    Pacing,
    /// The server's `retryAfter` deadline has not passed yet.
    RetryAfter,
    /// The governor quota (the hard cap on the request rate) has no cell free yet.
    Quota,
}

/// The adaptive pacing delay `d`, kept within `[d_min, d_max]`.
///
/// * A failure ([`Outcome::Throttled`] or [`Outcome::Transient`]) multiplies `d` by
///   `failure_growth` (at least 2, so at least doubles it), capped at `d_max`.
/// * A success multiplies `d` by `success_shrink` (default 2/3), never going below `d_min`.
/// * A `retryAfter` is a hard deadline: nothing is permitted before it, whatever `d` says.
/// * After each outcome the controller draws the wait before the next dispatch uniformly from
///   `[d·(1−j), min(d·(1+j), d_max)]` ([`PacingController::wait_range`]). The range is centred
///   on `d` so that `d` stays the mean spacing (clipping it at `d_min` would add a systematic
///   `j/2` to every wait at the floor); only the top is clipped, so no wait exceeds `d_max`.
///   The hard cap on the rate is the quota's job, not the jitter's. After a `retryAfter` the
///   next dispatch also lies uniformly within `[deadline, deadline + j·d]`, so devices told
///   the same deadline do not all come back at the same instant.
///
/// The only memory is `d` itself (plus the pending deadline): there is no integral term that
/// could accumulate credit during a long run of successes, so the first failure after any
/// such run raises the delay at once (no wind-up).
#[derive(Debug)]
pub struct PacingController {
    min: Duration,
    max: Duration,
    growth: f64,
    shrink: f64,
    jitter: f64,
    delay: Duration,
    next_at: Option<(Instant, WaitCause)>,
    retry_after_until: Option<Instant>,
    rng: StdRng,
}

/// `d · factor`, or `fallback` when that is not representable.
fn scale(d: Duration, factor: f64, fallback: Duration) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(fallback)
}

/// `at + by`, saturating: if the clock cannot represent it, the furthest instant it can (found
/// by adding ever smaller halvings of `by`), so a deadline is never silently dropped.
pub(crate) fn instant_after(at: Instant, by: Duration) -> Instant {
    if let Some(later) = at.checked_add(by) {
        return later;
    }
    let mut result = at;
    let mut step = by;
    // Each halving level adds at most once before failing again, and a Duration has fewer
    // than 100 halvings before it reaches zero: 256 rounds always suffice.
    for _ in 0..256 {
        if step.is_zero() {
            break;
        }
        match result.checked_add(step) {
            Some(later) => result = later,
            None => step /= 2,
        }
    }
    result
}

impl PacingController {
    /// A controller at `initial_delay`, permitting the first dispatch at once.
    /// Answers [`crate::ThrottleError::InvalidConfig`] if the configuration is out of range.
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        config.validate()?;
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            min: config.min_delay,
            max: config.max_delay,
            growth: config.failure_growth,
            shrink: config.success_shrink,
            jitter: config.jitter,
            delay: config.initial_delay,
            next_at: None,
            retry_after_until: None,
            rng,
        })
    }

    /// The current pacing delay `d`.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The bounds `[d_min, d_max]` this controller keeps `d` within.
    pub fn bounds(&self) -> (Duration, Duration) {
        (self.min, self.max)
    }

    /// The range the jittered wait is drawn from for the current delay:
    /// `[d·(1−j), min(d·(1+j), d_max)]`.
    pub fn wait_range(&self) -> (Duration, Duration) {
        let low = scale(self.delay, 1.0 - self.jitter, self.min).min(self.delay);
        let high = scale(self.delay, 1.0 + self.jitter, self.max).min(self.max);
        (low, high.max(low))
    }

    /// The earliest instant the controller permits the next dispatch, and why; `None` before
    /// the first outcome (dispatch at once).
    pub fn next_permitted(&self) -> Option<(Instant, WaitCause)> {
        self.next_at
    }

    /// The most recent `retryAfter` deadline the server set, if any.
    pub fn retry_after_until(&self) -> Option<Instant> {
        self.retry_after_until
    }

    /// Whether the controller permits a dispatch at `now`; otherwise the instant to wait for.
    pub fn check(&self, now: Instant) -> std::result::Result<(), (Instant, WaitCause)> {
        match self.next_at {
            Some((at, cause)) if at > now => Err((at, cause)),
            _ => Ok(()),
        }
    }

    /// Takes in the outcome of an operation that ended at `now`: adjusts `d`, then draws the
    /// jittered wait and sets the next permitted instant (never before a pending deadline).
    pub fn record(&mut self, now: Instant, outcome: &Outcome) {
        self.delay = if outcome.is_failure() {
            // `max` with an exact doubling guards against float rounding: at least doubles.
            let grown = scale(self.delay, self.growth, self.max).max(self.delay.saturating_mul(2));
            grown.clamp(self.min, self.max)
        } else {
            scale(self.delay, self.shrink, self.min).clamp(self.min, self.max)
        };

        let (low, high) = self.wait_range();
        let wait = low + (high - low).mul_f64(self.rng.random::<f64>());
        let mut next = (instant_after(now, wait), WaitCause::Pacing);

        // A deadline already pending stays in force, whatever this outcome says.
        let pending = self.retry_after_until.filter(|deadline| *deadline > now);
        let fresh = outcome
            .retry_after()
            .map(|after| instant_after(now, after.min(RETRY_AFTER_CAP)));
        let deadline = match (pending, fresh) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            let spread = self
                .delay
                .mul_f64(self.jitter)
                .mul_f64(self.rng.random::<f64>());
            let after_deadline = instant_after(deadline, spread);
            if after_deadline > next.0 {
                next = (after_deadline, WaitCause::RetryAfter);
            }
        }
        self.retry_after_until = deadline;
        self.next_at = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded() -> ThrottleConfig {
        ThrottleConfig {
            seed: Some(42),
            ..ThrottleConfig::default()
        }
    }

    #[test]
    fn instant_after_adds_exactly_when_representable() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(instant_after(now, Duration::ZERO), now);
    }

    #[test]
    fn instant_after_saturates_instead_of_overflowing() {
        let now = Instant::now();
        let far = instant_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn first_dispatch_is_permitted_at_once() {
        let pacing = PacingController::new(&seeded()).unwrap();
        assert_eq!(pacing.check(Instant::now()), Ok(()));
        assert_eq!(pacing.next_permitted(), None);
    }

    #[test]
    fn zero_jitter_waits_exactly_the_delay() {
        let mut pacing = PacingController::new(&ThrottleConfig {
            jitter: 0.0,
            ..seeded()
        })
        .unwrap();
        let now = Instant::now();
        pacing.record(now, &Outcome::transient(None, "reset"));
        assert_eq!(pacing.delay(), Duration::from_millis(500));
        assert_eq!(
            pacing.next_permitted(),
            Some((now + Duration::from_millis(500), WaitCause::Pacing))
        );
    }
}
