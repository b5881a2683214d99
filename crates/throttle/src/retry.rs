//! Retry counting, per operation.

use std::collections::HashMap;

use crate::outcome::{LastError, OperationId, Outcome};

/// How many operations with failures the count keeps at most. Past that, the operation whose
/// last failure is the oldest is forgotten (it was abandoned long ago: the session holds one
/// operation in flight and moves on only after a success, a split or a park).
pub const MAX_TRACKED_OPERATIONS: usize = 1024;

/// What the retry count says after an outcome was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryVerdict {
    /// The operation succeeded; its count is back to zero.
    Succeeded,
    /// The operation failed and may be tried again. After an offline failure the count is
    /// unchanged (offline is not counted).
    Retry {
        /// Counted failures of this operation so far (1 after the first counted failure).
        failures: u32,
        /// Counted failures still allowed before the operation is exhausted.
        remaining: u32,
    },
    /// The operation failed `failures` times, the limit: stop retrying it and halt.
    Exhausted {
        /// Counted failures of this operation (equal to the configured maximum, or more if
        /// failures keep being reported after exhaustion).
        failures: u32,
        /// The counted failure behind the last attempt, for the halt reason.
        last_error: LastError,
    },
}

/// One operation's count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OperationCount {
    failures: u32,
    last_error: Option<LastError>,
    /// When (in reports) it last changed, to forget the stalest first.
    touched: u64,
}

/// Counts the failed attempts of each operation; an operation is exhausted after
/// `max_attempts` counted failures (throttled or transient; offline is not counted).
///
/// A success clears only the count of the operation that succeeded: an operation that keeps
/// failing keeps its count across the successes of others. [`RetryBudget::forget`] drops one
/// operation's count (after a split or a park), [`RetryBudget::clear`] all of them (a resume
/// from a halt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudget {
    max_attempts: u32,
    counts: HashMap<OperationId, OperationCount>,
    reports: u64,
}

impl RetryBudget {
    /// A fresh count that exhausts after `max_attempts` failures (a value of 0 is read as 1).
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            counts: HashMap::new(),
            reports: 0,
        }
    }

    /// Takes in the outcome of an attempt of `operation`.
    pub fn record(&mut self, operation: &OperationId, outcome: &Outcome) -> RetryVerdict {
        self.reports = self.reports.saturating_add(1);
        let Some(failure) = outcome.failure() else {
            self.counts.remove(operation);
            return RetryVerdict::Succeeded;
        };
        if !failure.kind.is_counted() {
            return self.verdict(operation);
        }
        if !self.counts.contains_key(operation) && self.counts.len() >= MAX_TRACKED_OPERATIONS {
            self.forget_stalest();
        }
        let count = self
            .counts
            .entry(operation.clone())
            .or_insert(OperationCount {
                failures: 0,
                last_error: None,
                touched: 0,
            });
        count.failures = count.failures.saturating_add(1);
        count.last_error = Some(failure);
        count.touched = self.reports;
        self.verdict(operation)
    }

    /// What the count of `operation` says now.
    pub fn verdict(&self, operation: &OperationId) -> RetryVerdict {
        let failures = self.failures(operation);
        match self.last_error(operation) {
            Some(last_error) if failures >= self.max_attempts => RetryVerdict::Exhausted {
                failures,
                last_error: last_error.clone(),
            },
            _ => RetryVerdict::Retry {
                failures,
                remaining: self.max_attempts.saturating_sub(failures),
            },
        }
    }

    fn forget_stalest(&mut self) {
        let stalest = self
            .counts
            .iter()
            .min_by_key(|(_, count)| count.touched)
            .map(|(id, _)| id.clone());
        if let Some(id) = stalest {
            self.counts.remove(&id);
        }
    }

    /// Drops the count of `operation` (it was split, parked, or abandoned).
    pub fn forget(&mut self, operation: &OperationId) {
        self.counts.remove(operation);
    }

    /// Drops every count (a resume from a halt starts afresh).
    pub fn clear(&mut self) {
        self.counts.clear();
    }

    /// Counted failures of `operation`.
    pub fn failures(&self, operation: &OperationId) -> u32 {
        self.counts.get(operation).map_or(0, |count| count.failures)
    }

    /// The configured limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether `operation` has used up its attempts.
    pub fn is_exhausted(&self, operation: &OperationId) -> bool {
        self.failures(operation) >= self.max_attempts
    }

    /// The counted failure behind the count of `operation`, if any.
    pub fn last_error(&self, operation: &OperationId) -> Option<&LastError> {
        self.counts
            .get(operation)
            .and_then(|count| count.last_error.as_ref())
    }

    /// How many operations currently have counted failures.
    pub fn failing_operations(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;
    use std::time::Duration;

    fn op(key: &str) -> OperationId {
        OperationId::new(key)
    }

    #[test]
    fn exhausted_after_exactly_max_attempts_failures() {
        let mut budget = RetryBudget::new(5);
        let send = op("send zone A");
        for n in 1..=4 {
            assert_eq!(
                budget.record(&send, &Outcome::throttled(None, format!("THROTTLED #{n}"))),
                RetryVerdict::Retry {
                    failures: n,
                    remaining: 5 - n
                }
            );
            assert!(!budget.is_exhausted(&send));
        }
        let verdict = budget.record(
            &send,
            &Outcome::transient(Some(Duration::from_secs(3)), "TRY_AGAIN_LATER (503)"),
        );
        assert_eq!(
            verdict,
            RetryVerdict::Exhausted {
                failures: 5,
                last_error: LastError {
                    kind: FailureKind::Transient,
                    retry_after: Some(Duration::from_secs(3)),
                    detail: "TRY_AGAIN_LATER (503)".into(),
                }
            }
        );
        assert!(budget.is_exhausted(&send));
    }

    #[test]
    fn a_success_of_another_operation_leaves_the_count_alone() {
        let mut budget = RetryBudget::new(5);
        let send = op("send zone A");
        let fetch = op("fetch zone A");
        for _ in 0..4 {
            budget.record(&send, &Outcome::transient(None, "reset"));
        }
        assert_eq!(
            budget.record(&fetch, &Outcome::Success),
            RetryVerdict::Succeeded
        );
        assert_eq!(budget.failures(&send), 4);
        assert!(matches!(
            budget.record(&send, &Outcome::transient(None, "reset")),
            RetryVerdict::Exhausted { failures: 5, .. }
        ));
    }

    #[test]
    fn a_success_clears_its_own_count() {
        let mut budget = RetryBudget::new(3);
        let send = op("batch 7");
        budget.record(&send, &Outcome::throttled(None, "THROTTLED"));
        budget.record(&send, &Outcome::throttled(None, "THROTTLED"));
        assert_eq!(
            budget.record(&send, &Outcome::Success),
            RetryVerdict::Succeeded
        );
        assert_eq!(budget.failures(&send), 0);
        assert_eq!(budget.last_error(&send), None);
        assert_eq!(budget.failing_operations(), 0);
    }

    #[test]
    fn offline_is_not_counted() {
        let mut budget = RetryBudget::new(2);
        let send = op("batch 1");
        for _ in 0..10 {
            assert_eq!(
                budget.record(&send, &Outcome::offline("could not connect")),
                RetryVerdict::Retry {
                    failures: 0,
                    remaining: 2
                }
            );
        }
        assert!(!budget.is_exhausted(&send));
    }

    #[test]
    fn forget_and_clear_drop_counts() {
        let mut budget = RetryBudget::new(1);
        let (a, b) = (op("a"), op("b"));
        budget.record(&a, &Outcome::transient(None, "reset"));
        budget.record(&b, &Outcome::transient(None, "reset"));
        budget.forget(&a);
        assert!(!budget.is_exhausted(&a));
        assert!(budget.is_exhausted(&b));
        budget.clear();
        assert!(!budget.is_exhausted(&b));
    }

    #[test]
    fn the_stalest_operation_is_forgotten_past_the_limit() {
        let mut budget = RetryBudget::new(5);
        for n in 0..=MAX_TRACKED_OPERATIONS {
            budget.record(
                &op(&format!("batch {n}")),
                &Outcome::transient(None, "reset"),
            );
        }
        assert_eq!(budget.failing_operations(), MAX_TRACKED_OPERATIONS);
        assert_eq!(budget.failures(&op("batch 0")), 0);
        assert_eq!(budget.failures(&op("batch 1")), 1);
    }
}
