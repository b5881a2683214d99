//! Per-operation retry counting.

use crate::outcome::{LastError, Outcome};

/// What the retry count says after an outcome was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryVerdict {
    /// The operation succeeded; the count is back to zero.
    Succeeded,
    /// The operation failed and may be tried again.
    Retry {
        /// Failed attempts of this operation so far (1 after the first failure).
        failures: u32,
        /// Failures still allowed before the operation is exhausted.
        remaining: u32,
    },
    /// The operation failed `failures` times, the limit: stop retrying it and halt.
    Exhausted {
        /// Failed attempts of this operation (equal to the configured maximum, or more if
        /// failures keep being reported after exhaustion).
        failures: u32,
        /// The failure behind the last attempt, for the halt reason.
        last_error: LastError,
    },
}

/// Counts the failed attempts of the current operation; exhausted after `max_attempts`.
///
/// A success resets the count (and forgets the last error); so does
/// [`RetryBudget::begin_operation`] when the caller moves on to a different operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudget {
    max_attempts: u32,
    failures: u32,
    last_error: Option<LastError>,
}

impl RetryBudget {
    /// A fresh count that exhausts after `max_attempts` failures (a value of 0 is read as 1).
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            failures: 0,
            last_error: None,
        }
    }

    /// Takes in the outcome of the current operation's latest attempt.
    pub fn record(&mut self, outcome: &Outcome) -> RetryVerdict {
        let Some(failure) = outcome.failure() else {
            self.begin_operation();
            return RetryVerdict::Succeeded;
        };
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(failure.clone());
        if self.failures >= self.max_attempts {
            RetryVerdict::Exhausted {
                failures: self.failures,
                last_error: failure,
            }
        } else {
            RetryVerdict::Retry {
                failures: self.failures,
                remaining: self.max_attempts - self.failures,
            }
        }
    }

    /// Starts counting afresh for a new operation (after a split, a park, or a resume).
    pub fn begin_operation(&mut self) {
        self.failures = 0;
        self.last_error = None;
    }

    /// Failed attempts of the current operation.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The configured limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether the current operation has used up its attempts.
    pub fn is_exhausted(&self) -> bool {
        self.failures >= self.max_attempts
    }

    /// The failure behind the current count, if any.
    pub fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;
    use std::time::Duration;

    #[test]
    fn exhausted_after_exactly_max_attempts_failures() {
        let mut budget = RetryBudget::new(5);
        for n in 1..=4 {
            assert_eq!(
                budget.record(&Outcome::throttled(None, format!("THROTTLED #{n}"))),
                RetryVerdict::Retry {
                    failures: n,
                    remaining: 5 - n
                }
            );
            assert!(!budget.is_exhausted());
        }
        let verdict = budget.record(&Outcome::transient(
            Some(Duration::from_secs(3)),
            "TRY_AGAIN_LATER (503)",
        ));
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
        assert!(budget.is_exhausted());
        assert_eq!(
            budget.last_error().map(|e| e.detail.as_str()),
            Some("TRY_AGAIN_LATER (503)")
        );
    }

    #[test]
    fn success_resets_the_count_and_the_error() {
        let mut budget = RetryBudget::new(3);
        budget.record(&Outcome::throttled(None, "THROTTLED"));
        budget.record(&Outcome::throttled(None, "THROTTLED"));
        assert_eq!(budget.failures(), 2);
        assert_eq!(budget.record(&Outcome::Success), RetryVerdict::Succeeded);
        assert_eq!(budget.failures(), 0);
        assert_eq!(budget.last_error(), None);
        // The full allowance is available again.
        assert!(matches!(
            budget.record(&Outcome::throttled(None, "THROTTLED")),
            RetryVerdict::Retry {
                failures: 1,
                remaining: 2
            }
        ));
    }

    #[test]
    fn begin_operation_resets_an_exhausted_count() {
        let mut budget = RetryBudget::new(1);
        assert!(matches!(
            budget.record(&Outcome::transient(None, "reset")),
            RetryVerdict::Exhausted { failures: 1, .. }
        ));
        budget.begin_operation();
        assert!(!budget.is_exhausted());
        assert_eq!(budget.failures(), 0);
    }
}
