//! What the throttle is told about each dispatched operation, and which operation it was.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use skysync_model::{CloudError, ErrorClass};

/// Which operation an outcome belongs to, chosen by the session: a batch id, or a key such as
/// `send zone Notes` or `fetch zone Notes`. Retries are counted per operation, so that a
/// success of one operation never clears the failures of another.
///
/// Use the same id for every attempt of the same work and a new one for new work (after a
/// split, a new batch). The id is shown in diagnostics: never put tokens, keys or record field
/// values in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(Arc<str>);

impl OperationId {
    /// An operation id from the session's key for it.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for OperationId {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for OperationId {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

/// How one dispatched operation ended, as far as pacing and retrying are concerned. It mirrors
/// the first three rows of the design's error table ([`ErrorClass`]):
///
/// * [`Outcome::Throttled`] is the only rate signal: it lowers the learned rate, its
///   `retryAfter` is a hard deadline, and it counts as a failed attempt.
/// * [`Outcome::Transient`] backs off on its own capped exponential backoff, leaves the rate
///   alone, and counts.
/// * [`Outcome::Offline`] probes on its own capped backoff, leaves the rate alone, and is not
///   counted: being offline never exhausts an operation.
///
/// Errors the session handles another way (too large, conflict, zone gone, token expired,
/// item rejected, fatal) are not reported here. Neither is a failure inside this process (a
/// component actor that did not answer, failed or is restarting): that is not the server's
/// doing, so it has no outcome at all; the session waits for the restart and redoes the
/// operation without telling the throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server accepted the operation. Clears that operation's retry count, ends any
    /// transient or offline backoff, and lets the rate grow.
    Success,
    /// The server said to slow down (`THROTTLED` 429, or a 503 / `ZONE_BUSY` with
    /// `retryAfter`). Sets the learned ceiling, waits for `retryAfter`, counts one attempt.
    Throttled {
        /// The server's `retryAfter`, if it sent one: no start is permitted before it has passed.
        retry_after: Option<Duration>,
        /// A short description for diagnostics, such as `THROTTLED (HTTP 429)`.
        /// Never put tokens, keys or record field values here.
        detail: String,
    },
    /// A passing failure (`TRY_AGAIN_LATER` without `retryAfter`, `INTERNAL_ERROR`, a lost or
    /// unparsable answer). Backs off on its own, counts one attempt; not a rate signal.
    Transient {
        /// A `retryAfter` the server sent anyway: honoured as a deadline, still not a rate signal.
        retry_after: Option<Duration>,
        /// A short description for diagnostics, such as `INTERNAL_ERROR (HTTP 500)`.
        /// Never put tokens, keys or record field values here.
        detail: String,
    },
    /// No connection could be made (refused, no route, DNS, connect timeout). Probes again on
    /// its own backoff; not counted, not a rate signal.
    Offline {
        /// A short description for diagnostics, such as `could not connect`.
        detail: String,
    },
}

impl Outcome {
    /// A throttled outcome, with the server's `retryAfter` if it sent one.
    pub fn throttled(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::Throttled {
            retry_after,
            detail: detail.into(),
        }
    }

    /// A transient failure, with a `retryAfter` if the server sent one anyway.
    pub fn transient(retry_after: Option<Duration>, detail: impl Into<String>) -> Self {
        Self::Transient {
            retry_after,
            detail: detail.into(),
        }
    }

    /// An offline failure.
    pub fn offline(detail: impl Into<String>) -> Self {
        Self::Offline {
            detail: detail.into(),
        }
    }

    /// The outcome for a cloud error of the throttled, transient or offline class, or `None`
    /// for any other class (those are not the throttle's business). The detail names the error
    /// code and HTTP status or the network failure, never the server's free-text reason.
    pub fn from_cloud_error(error: &CloudError) -> Option<Self> {
        let detail = match error {
            CloudError::Server(server) => format!("{} (HTTP {})", server.code, server.http_status),
            CloudError::Network { kind, .. } => kind.to_string(),
            CloudError::UnexpectedResponse { status, .. } => match status {
                Some(status) => format!("unexpected response (HTTP {status})"),
                None => "unexpected response".to_owned(),
            },
            CloudError::ResponseTooLarge { status, .. } => {
                format!("answer over the size cap (HTTP {status})")
            }
            CloudError::Incompatible(_) => return None,
        };
        match error.class() {
            ErrorClass::Throttled => Some(Self::throttled(error.retry_after(), detail)),
            ErrorClass::Transient => Some(Self::transient(error.retry_after(), detail)),
            ErrorClass::Offline => Some(Self::offline(detail)),
            _ => None,
        }
    }

    /// Whether this outcome is a failure (anything but [`Outcome::Success`]).
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Success)
    }

    /// The server's `retryAfter`, if this is a failure that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } | Self::Transient { retry_after, .. } => {
                *retry_after
            }
            Self::Success | Self::Offline { .. } => None,
        }
    }

    /// The failure this outcome describes, or `None` for a success.
    pub fn failure(&self) -> Option<LastError> {
        let (kind, retry_after, detail) = match self {
            Self::Success => return None,
            Self::Throttled {
                retry_after,
                detail,
            } => (FailureKind::Throttled, *retry_after, detail),
            Self::Transient {
                retry_after,
                detail,
            } => (FailureKind::Transient, *retry_after, detail),
            Self::Offline { detail } => (FailureKind::Offline, None, detail),
        };
        Some(LastError {
            kind,
            retry_after,
            detail: detail.clone(),
        })
    }
}

/// Which kind of failure an attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The server throttled the request ([`Outcome::Throttled`]).
    Throttled,
    /// A passing failure ([`Outcome::Transient`]).
    Transient,
    /// No connection ([`Outcome::Offline`]).
    Offline,
}

impl FailureKind {
    /// Whether a failure of this kind counts towards exhausting its operation.
    pub fn is_counted(self) -> bool {
        !matches!(self, Self::Offline)
    }
}

/// The most recent failure, kept for diagnostics and for the halt reason when an operation is
/// exhausted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// Throttled, transient or offline.
    pub kind: FailureKind,
    /// The `retryAfter` the server sent with it, if any.
    pub retry_after: Option<Duration>,
    /// The short description the session reported.
    pub detail: String,
}

impl fmt::Display for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FailureKind::Throttled => "throttled",
            FailureKind::Transient => "transient failure",
            FailureKind::Offline => "offline",
        };
        write!(f, "{kind}: {}", self.detail)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retryAfter {:.3} s)", after.as_secs_f64())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skysync_model::error::{ErrorScope, NetworkFailure, ServerError, ServerErrorCode};

    fn server(code: ServerErrorCode, status: u16, retry_after: Option<u64>) -> CloudError {
        CloudError::Server(ServerError {
            code,
            scope: ErrorScope::Request,
            http_status: status,
            reason: "record 'secret-name' busy".into(),
            retry_after: retry_after.map(Duration::from_secs),
            redirect_url: None,
            uuid: None,
        })
    }

    #[test]
    fn cloud_errors_map_onto_the_three_classes_the_throttle_knows() {
        let throttled =
            Outcome::from_cloud_error(&server(ServerErrorCode::Throttled, 429, Some(7)));
        assert_eq!(
            throttled,
            Some(Outcome::throttled(
                Some(Duration::from_secs(7)),
                "THROTTLED (HTTP 429)"
            ))
        );
        // A 503 with retryAfter is the server asking to slow down; without, it is transient.
        assert!(matches!(
            Outcome::from_cloud_error(&server(ServerErrorCode::TryAgainLater, 503, Some(3))),
            Some(Outcome::Throttled { .. })
        ));
        assert!(matches!(
            Outcome::from_cloud_error(&server(ServerErrorCode::TryAgainLater, 503, None)),
            Some(Outcome::Transient { .. })
        ));
        let offline = Outcome::from_cloud_error(&CloudError::Network {
            kind: NetworkFailure::Connect,
            detail: "refused".into(),
        });
        assert_eq!(offline, Some(Outcome::offline("could not connect")));
        let reset = Outcome::from_cloud_error(&CloudError::Network {
            kind: NetworkFailure::Reset,
            detail: "reset".into(),
        });
        assert!(matches!(reset, Some(Outcome::Transient { .. })));
        // Not the throttle's business.
        assert_eq!(
            Outcome::from_cloud_error(&server(ServerErrorCode::Conflict, 409, None)),
            None
        );
    }

    #[test]
    fn the_detail_never_carries_the_servers_free_text() {
        let outcome =
            Outcome::from_cloud_error(&server(ServerErrorCode::InternalError, 500, None)).unwrap();
        let detail = outcome.failure().unwrap().detail;
        assert!(!detail.contains("secret"), "{detail}");
    }

    #[test]
    fn only_offline_is_not_counted() {
        assert!(FailureKind::Throttled.is_counted());
        assert!(FailureKind::Transient.is_counted());
        assert!(!FailureKind::Offline.is_counted());
    }
}
