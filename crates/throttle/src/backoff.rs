//! Capped exponential backoff with jitter, for failures that are not rate signals.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::pacing::instant_after;

/// A capped exponential backoff: the `n`-th consecutive failure waits a time drawn uniformly
/// from `[b/2, b]` with `b = min(first · 2^(n−1), cap)`. Half the wait is certain (the backoff
/// really grows), half is random (devices that failed together do not retry together).
///
/// The throttle keeps one for transient failures and one for offline probing; neither touches
/// the learned rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    streak: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// A backoff whose first wait is up to `first`, growing to at most `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap: cap.max(first),
            streak: 0,
            until: None,
        }
    }

    /// The upper end `b` of the next wait, were a failure to happen now.
    pub fn next_bound(&self) -> Duration {
        let doublings = self.streak.min(40);
        self.first
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.cap)
    }

    /// One more consecutive failure at `now`: draws the wait and answers when it ends.
    pub fn fail(&mut self, now: Instant, rng: &mut impl Rng) -> Instant {
        let bound = self.next_bound();
        self.streak = self.streak.saturating_add(1);
        let wait = bound.mul_f64(0.5 + 0.5 * rng.random::<f64>());
        let until = instant_after(now, wait);
        self.until = Some(until);
        until
    }

    /// The failures ended (a success, or a sign that the cause is gone): the next failure waits
    /// the first backoff again, and any wait in progress is over.
    pub fn reset(&mut self) {
        self.streak = 0;
        self.until = None;
    }

    /// Consecutive failures so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// When the latest wait ends (or ended).
    pub fn ends_at(&self) -> Option<Instant> {
        self.until
    }

    /// When the current wait ends, while it lies after `now`.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn doubles_per_consecutive_failure_up_to_the_cap_with_half_jitter() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut bound = Duration::from_secs(1);
        for _ in 0..20 {
            assert_eq!(backoff.next_bound(), bound);
            let wait = backoff.fail(now, &mut rng) - now;
            assert!(wait >= bound / 2 && wait <= bound, "{wait:?} for {bound:?}");
            bound = (bound * 2).min(Duration::from_secs(300));
        }
        assert_eq!(backoff.next_bound(), Duration::from_secs(300));
        backoff.reset();
        assert_eq!(backoff.next_bound(), Duration::from_secs(1));
        assert_eq!(backoff.until(now), None);
    }
}
