//! A governor clock that follows tokio's clock, so that the quota obeys
//! `#[tokio::test(start_paused = true)]` and `tokio::time::advance` like everything else.

use std::ops::Add;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A reading of tokio's clock, in the form governor's rate limiter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokioInstant(pub Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(crate::pacing::instant_after(self.0, other.into()))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor's clock over `tokio::time::Instant::now()`: real time in production, the paused
/// and manually advanced clock in tokio tests. The default clock of [`crate::Throttle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_the_paused_clock() {
        let clock = TokioClock;
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let after = clock.now();
        assert_eq!(
            Duration::from(after.duration_since(before)),
            Duration::from_secs(3)
        );
        assert_eq!(
            Duration::from(before.duration_since(after)),
            Duration::ZERO,
            "duration_since saturates at zero"
        );
        assert_eq!(
            after.saturating_sub(Nanos::from(Duration::from_secs(1))),
            TokioInstant(before.0 + Duration::from_secs(2))
        );
    }
}
