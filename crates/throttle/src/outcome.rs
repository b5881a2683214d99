//! What the throttle is told about each dispatched operation.

use std::time::Duration;

/// How one dispatched operation ended, as far as pacing and retrying are concerned.
///
/// The session maps its typed cloud errors onto these three cases: `THROTTLED` (429) becomes
/// [`Outcome::Throttled`]; `TRY_AGAIN_LATER` (503), `INTERNAL_ERROR`, zone busy, and
/// connect/timeout/reset or unparsable-body failures become [`Outcome::Transient`]. Errors that
/// are not retried the same way (conflicts, too large, fatal) are not reported here at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server accepted the operation. Shrinks the delay and resets the retry count.
    Success,
    /// The server said to slow down (`THROTTLED`, `requestRateLimited`).
    /// At least doubles the delay and counts one failed attempt.
    Throttled {
        /// The server's `retryAfter`, if it sent one: no permit is given before it has passed.
        retry_after: Option<Duration>,
        /// A short description of the error for diagnostics, such as `THROTTLED (429)`.
        /// Never put tokens, keys or record field values here.
        detail: String,
    },
    /// A temporary failure worth retrying (`TRY_AGAIN_LATER`, `INTERNAL_ERROR`, zone busy,
    /// connection reset, timeout, truncated body). Treated like [`Outcome::Throttled`].
    Transient {
        /// The server's `retryAfter`, if it sent one: no permit is given before it has passed.
        retry_after: Option<Duration>,
        /// A short description of the error for diagnostics, such as `TRY_AGAIN_LATER (503)`.
        /// Never put tokens, keys or record field values here.
        detail: String,
    },
}

impl Outcome {
    /// A throttled outcome (`THROTTLED`), with the server's `retryAfter` if it sent one.
    pub fn throttled(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::Throttled {
            retry_after,
            detail: detail.into(),
        }
    }

    /// A transient failure (`TRY_AGAIN_LATER`, network error, ...), with `retryAfter` if sent.
    pub fn transient(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::Transient {
            retry_after,
            detail: detail.into(),
        }
    }

    /// Whether this outcome is a failure (anything but [`Outcome::Success`]).
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Success)
    }

    /// The server's `retryAfter`, if this is a failure that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Success => None,
            Self::Throttled { retry_after, .. } | Self::Transient { retry_after, .. } => {
                *retry_after
            }
        }
    }

    /// The failure this outcome describes, or `None` for a success.
    pub fn failure(&self) -> Option<LastError> {
        match self {
            Self::Success => None,
            Self::Throttled {
                retry_after,
                detail,
            } => Some(LastError {
                kind: FailureKind::Throttled,
                retry_after: *retry_after,
                detail: detail.clone(),
            }),
            Self::Transient {
                retry_after,
                detail,
            } => Some(LastError {
                kind: FailureKind::Transient,
                retry_after: *retry_after,
                detail: detail.clone(),
            }),
        }
    }
}

/// Which kind of failure an attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The server throttled the request ([`Outcome::Throttled`]).
    Throttled,
    /// A temporary failure ([`Outcome::Transient`]).
    Transient,
}

/// The most recent failure of the current operation, kept for diagnostics and for the halt
/// reason when the operation is exhausted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// Throttled or transient.
    pub kind: FailureKind,
    /// The `retryAfter` the server sent with it, if any.
    pub retry_after: Option<Duration>,
    /// The short description the session reported.
    pub detail: String,
}

impl std::fmt::Display for LastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            FailureKind::Throttled => "throttled",
            FailureKind::Transient => "transient failure",
        };
        write!(f, "{kind}: {}", self.detail)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retryAfter {:.3} s)", after.as_secs_f64())?;
        }
        Ok(())
    }
}
