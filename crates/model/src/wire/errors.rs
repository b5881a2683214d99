//! The request-level error body.

use super::retry_after;
use crate::error::{ErrorScope, ServerError, ServerErrorCode};
use serde::{Deserialize, Serialize};

/// The body of a failed request: `{uuid, serverErrorCode, reason, retryAfter?, redirectURL?}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The server's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The error code.
    #[serde(rename = "serverErrorCode")]
    pub server_error_code: ServerErrorCode,
    /// The explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds to wait before retrying.
    #[serde(
        rename = "retryAfter",
        default,
        skip_serializing_if = "Option::is_none",
        with = "retry_after"
    )]
    pub retry_after: Option<u64>,
    /// Where to sign in (with `AUTHENTICATION_REQUIRED`).
    #[serde(
        rename = "redirectURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_url: Option<String>,
}

impl ErrorBody {
    /// The typed error this body states, for a response with the given HTTP status.
    pub fn to_server_error(&self, http_status: u16) -> ServerError {
        ServerError::from_wire_parts(
            &self.server_error_code,
            ErrorScope::Request,
            http_status,
            self.reason.as_deref(),
            self.retry_after,
            self.redirect_url.as_deref(),
            self.uuid.as_deref(),
        )
    }
}
