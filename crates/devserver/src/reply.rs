//! Building responses the way CloudKit does: JSON with `application/json; charset=UTF-8`, and error
//! bodies `{uuid, serverErrorCode, reason, retryAfter?, redirectURL?}` with the code's HTTP status.
//! An error body with a `retryAfter` also carries it as a `Retry-After` header (whole seconds).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use skysync_model::ServerErrorCode;
use skysync_model::wire::ErrorBody;

/// The content type CloudKit answers with.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// A JSON response with the given status.
pub fn json_reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(JSON_CONTENT_TYPE),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => error_reply(
            ServerErrorCode::InternalError,
            &format!("could not encode the response: {e}"),
            None,
        ),
    }
}

/// A request-level CloudKit error, with the status that belongs to its code.
pub fn error_reply(code: ServerErrorCode, reason: &str, retry_after: Option<u64>) -> Response {
    error_body_reply(ErrorBody {
        uuid: Some(uuid::Uuid::new_v4().to_string()),
        server_error_code: code,
        reason: Some(reason.to_owned()),
        retry_after,
        redirect_url: None,
    })
}

/// A request-level CloudKit error from a complete body (e.g. with a `redirectURL`), with the status
/// that belongs to its code (and a `Retry-After` header when it carries a `retryAfter`).
pub fn error_body_reply(body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(body.server_error_code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_body_reply_with_status(status, &body)
}

/// A request-level CloudKit error answered with `status`. When the body carries a `retryAfter`, the
/// same whole seconds also go in a `Retry-After` header, so that HTTP clients and proxies that only
/// read headers wait as long as the body says.
pub fn error_body_reply_with_status(status: StatusCode, body: &ErrorBody) -> Response {
    let mut response = json_reply(status, body);
    if let Some(seconds) = body.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A wrong method, as CloudKit answers it: `405` with a `BAD_REQUEST` body saying `reason`, and an
/// `Allow` header naming the methods the endpoint serves (e.g. `GET` or `GET,POST,DELETE`).
pub(crate) fn wrong_method_reply(allow: &str, reason: &str) -> Response {
    let mut response = error_reply(ServerErrorCode::BadRequest, reason, None);
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    if let Ok(allow) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// A request refused as a whole: the CloudKit code, the reason, and (for `AUTHENTICATION_REQUIRED`)
/// where to sign in. Answered with the code's HTTP status and a CloudKit error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The `serverErrorCode`.
    pub code: ServerErrorCode,
    /// The `reason`.
    pub reason: String,
    /// The `redirectURL`, with `AUTHENTICATION_REQUIRED`.
    pub redirect_url: Option<String>,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: ServerErrorCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            redirect_url: None,
        }
    }

    /// A `400 BAD_REQUEST` refusal.
    pub fn bad_request(reason: impl Into<String>) -> Refusal {
        Refusal::new(ServerErrorCode::BadRequest, reason)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_body_reply(ErrorBody {
            uuid: Some(uuid::Uuid::new_v4().to_string()),
            server_error_code: self.code,
            reason: Some(self.reason),
            retry_after: None,
            redirect_url: self.redirect_url,
        })
    }
}
