//! What the throttle learned about the server, in a form that outlives the process.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the throttle has learned about the server's capacity and what it still owes the server,
/// kept in the store's sync metadata (storage invariant 8) so that a restarted engine neither
/// relearns the rate from scratch nor starts a request during a penalty it was already given.
///
/// Times are wall-clock (milliseconds since the Unix epoch): a monotonic instant means nothing
/// after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PacingMemory {
    /// The learned ceiling, in operation starts per second, if a throttle has taught one.
    pub ceiling_per_sec: Option<f64>,
    /// The server's pending `retryAfter`: no operation may start before this wall-clock time.
    pub not_before_unix_ms: Option<u64>,
}

impl PacingMemory {
    /// The pending `retryAfter` deadline as a [`SystemTime`], if any.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before_unix_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// How long from `now` until the pending deadline has passed (zero if it has, or if there is
    /// none).
    pub fn remaining_penalty(&self, now: SystemTime) -> Duration {
        self.not_before()
            .and_then(|at| at.duration_since(now).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Milliseconds since the Unix epoch of `time` (zero before the epoch, saturating far after).
    pub fn unix_ms(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_penalty_remains_until_its_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let memory = PacingMemory {
            ceiling_per_sec: Some(0.1),
            not_before_unix_ms: Some(PacingMemory::unix_ms(now + Duration::from_secs(30))),
        };
        assert_eq!(memory.remaining_penalty(now), Duration::from_secs(30));
        assert_eq!(
            memory.remaining_penalty(now + Duration::from_secs(31)),
            Duration::ZERO
        );
        assert_eq!(
            PacingMemory::default().remaining_penalty(now),
            Duration::ZERO
        );
    }
}
