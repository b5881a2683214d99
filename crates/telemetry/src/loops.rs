//! A retry-loop detector: an operation that keeps failing is reported long before it exhausts.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What the [`LoopDetector`] found: an operation failed more than the threshold within the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopReport<K> {
    /// The operation, as the caller keys it (its kind and zone, say; never a record name).
    pub key: K,
    /// How many times it failed within the window (the threshold plus one when reported).
    pub failures: u32,
    /// The window the failures fell in.
    pub window: Duration,
}

/// The failures of one operation still inside the window, and when it was last reported.
#[derive(Debug, Default)]
struct FailureTrail {
    /// Failure instants, oldest first, at most `threshold + 1` of them.
    at: VecDeque<Instant>,
    /// When this operation was last reported, if it was.
    reported: Option<Instant>,
}

/// Watches failures per operation and reports an operation that failed more than `threshold` times
/// within `window`, once per window while it keeps failing.
///
/// The session feeds it every counted failure ([`LoopDetector::record_failure`]) and every success
/// ([`LoopDetector::record_success`], which forgets the operation). A report goes to
/// [`crate::Metrics::loop_detected`] and to the engine's diagnostics. Memory stays bounded: each
/// operation keeps at most `threshold + 1` instants, and a success drops its entry.
///
/// Time is given by the caller (`now`), so tests drive it with explicit instants or tokio's paused
/// clock (`tokio::time::Instant::now().into_std()`).
#[derive(Debug)]
pub struct LoopDetector<K> {
    threshold: u32,
    window: Duration,
    trails: HashMap<K, FailureTrail>,
}

impl<K: Eq + Hash + Clone> LoopDetector<K> {
    /// A detector that reports an operation failing more than `threshold` times within `window`.
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self {
            threshold,
            window,
            trails: HashMap::new(),
        }
    }

    /// Records that the operation `key` failed at `now`. Returns a report when this failure takes
    /// it past the threshold within the window and it was not reported within the last window.
    pub fn record_failure(&mut self, key: K, now: Instant) -> Option<LoopReport<K>> {
        let window = self.window;
        let keep = usize::try_from(self.threshold)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let trail = self.trails.entry(key.clone()).or_default();
        trail.at.push_back(now);
        while trail
            .at
            .front()
            .is_some_and(|first| now.saturating_duration_since(*first) > window)
        {
            trail.at.pop_front();
        }
        while trail.at.len() > keep {
            trail.at.pop_front();
        }
        let failures = u32::try_from(trail.at.len()).unwrap_or(u32::MAX);
        if failures <= self.threshold {
            return None;
        }
        let quiet = trail
            .reported
            .is_none_or(|last| now.saturating_duration_since(last) >= window);
        if !quiet {
            return None;
        }
        trail.reported = Some(now);
        Some(LoopReport {
            key,
            failures,
            window,
        })
    }

    /// Records that the operation `key` succeeded: its failures are forgotten.
    pub fn record_success(&mut self, key: &K) {
        self.trails.remove(key);
    }

    /// How many operations have failures on record (for diagnostics).
    pub fn tracked(&self) -> usize {
        self.trails.len()
    }
}
