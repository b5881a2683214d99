//! Fault injection: make the next requests to an operation fail, stall or lose their connection, so
//! that clients can be tested against every failure CloudKit (or the network in between) produces.
//!
//! Faults are armed over HTTP under `/_dev/` (see [`Faults::router`]) or in process with
//! [`Faults::arm`]. Each fault names an operation (`records/modify`, `changes/zone`, `tokens/create`,
//! `records/*` for every `records/…` operation, `*` for any CloudKit operation, or `courier` for the
//! web courier's long polls, which only a fault naming `courier` hits) and a count K: the next K
//! requests to a matching operation get the fault, then it disarms itself. When several armed faults
//! match a request, the one armed first applies.
//!
//! What a fault does, optionally after waiting `delayMs`:
//! * an error: answer a CloudKit error body `{uuid, serverErrorCode, reason, retryAfter?}` with the
//!   code's HTTP status (or the given `status`) without running the request;
//! * `htmlBody`: answer a non-CloudKit HTML page (as a proxy or captive portal would), status 502 by
//!   default, without running the request;
//! * `garbageBody`: answer status 200 (or the given `status`) with a JSON content type and a body
//!   that is not JSON, without running the request, as a broken middlebox would;
//! * `dropConnection`: run the request (its effects happen on the server), then send the response's
//!   headers and part of its body and abort the connection, the way a response is lost in transit;
//! * `truncatedJson`: run the request, then send a complete HTTP response whose body is the first
//!   half of the real one (its `Content-Length` says so): well-framed, but the JSON ends early;
//! * with only `delayMs`: run the request normally after the delay (longer than a client's request
//!   timeout, it is a timeout).
//!
//! Item faults ([`ItemFaultSpec`], armed under `/_dev/item-faults` or with [`Faults::arm_item`])
//! work inside a request instead: the next K `records/modify` operations on a named record, or on
//! any record of a zone, are answered with a per-item `serverErrorCode` in place of their result,
//! while the rest of the batch runs as usual, so a test can build a batch with mixed outcomes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use skysync_model::ServerErrorCode;
use skysync_model::wire::ErrorBody;

use crate::reply::{
    Refusal, error_body_reply_with_status, error_reply, json_reply, wrong_method_reply,
};
use crate::time_scale::TimeScale;

/// The longest delay a fault may ask for (five minutes), so that a mistyped delay cannot hang a test
/// run for hours.
pub const MAX_DELAY_MS: u64 = 5 * 60 * 1000;

/// The largest body accepted by the `/_dev/faults` endpoints.
const MAX_FAULT_REQUEST_BYTES: usize = 64 * 1024;

/// The armed faults of one dev server. Cloning shares the same set.
///
/// ```
/// use skysync_devserver::faults::{FaultSpec, Faults};
///
/// let faults = Faults::default();
/// let spec: FaultSpec = serde_json::from_str(
///     r#"{"operation": "records/modify", "count": 2, "serverErrorCode": "THROTTLED", "retryAfter": 3}"#,
/// )
/// .unwrap();
/// let armed = faults.arm(spec).unwrap();
/// assert_eq!(armed.remaining, 2);
/// assert_eq!(faults.armed().len(), 1);
/// assert_eq!(faults.clear(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Faults {
    inner: Arc<Mutex<ArmedFaults>>,
    time_scale: TimeScale,
}

#[derive(Debug, Default)]
struct ArmedFaults {
    next_id: u64,
    faults: Vec<ArmedFault>,
    items: Vec<ArmedItemFault>,
}

/// A fault as requested: `POST /_dev/faults` takes this as JSON.
///
/// Exactly one of `serverErrorCode`, `htmlBody`, `garbageBody`, `dropConnection` and
/// `truncatedJson` may be given; `delayMs` may be given alone or with any of them (it then waits
/// before the fault applies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// The operation subpath to match: `records/modify`, `zones/list`, `tokens/create`, …; a prefix
    /// ending in `/*` such as `records/*`; `*` for every CloudKit operation; or `courier` for the
    /// web courier's long polls (`/_courier/…`, which `*` does not match).
    pub operation: String,
    /// How many matching requests get the fault before it disarms (at least 1; default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// The HTTP status to answer with (200–599). Defaults to the error code's own status, 502 for
    /// `htmlBody`, 200 for `garbageBody`. Only with `serverErrorCode`, `htmlBody` or `garbageBody`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Answer a CloudKit error body with this code (e.g. `THROTTLED`, `TRY_AGAIN_LATER`,
    /// `QUOTA_EXCEEDED`, `ZONE_NOT_FOUND`, `CHANGE_TOKEN_EXPIRED`, or any other code a client should
    /// cope with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_error_code: Option<ServerErrorCode>,
    /// The `reason` of the error body. Only with `serverErrorCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `retryAfter` (seconds) of the error body. Only with `serverErrorCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The `redirectURL` of the error body (CloudKit sends one with `AUTHENTICATION_REQUIRED`). Only
    /// with `serverErrorCode`.
    #[serde(
        default,
        rename = "redirectURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_url: Option<String>,
    /// Wait this many milliseconds (at most [`MAX_DELAY_MS`]) before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Run the request, then cut its response off part-way through the body.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drop_connection: bool,
    /// Answer an HTML page instead of CloudKit JSON.
    #[serde(default, skip_serializing_if = "is_false")]
    pub html_body: bool,
    /// Answer a body that is not JSON under a JSON content type, without running the request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub garbage_body: bool,
    /// Run the request, then answer a complete HTTP response carrying only the first half of its
    /// body.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated_json: bool,
}

fn one() -> u32 {
    1
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A fault that is armed: its spec, its id and how many more requests it will hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmedFault {
    /// The id the server gave it (increasing in arming order).
    pub id: u64,
    /// How many more matching requests will get it.
    pub remaining: u32,
    /// What was asked for.
    #[serde(flatten)]
    pub spec: FaultSpec,
    #[serde(skip)]
    plan: FaultPlan,
}

/// Why a fault spec cannot be armed; the message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault: {0}")]
pub struct InvalidFault(String);

/// What a validated fault does to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FaultPlan {
    delay: Option<Duration>,
    action: FaultAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FaultAction {
    /// Run the request normally (a delay-only fault).
    Forward,
    /// Answer a CloudKit error body instead of running the request.
    Error { status: StatusCode, body: ErrorBody },
    /// Answer an HTML page instead of running the request.
    Html { status: StatusCode },
    /// Answer bytes that are not JSON (under a JSON content type) instead of running the request.
    Garbage { status: StatusCode },
    /// Run the request, then lose the connection part-way through the response body.
    DropConnection,
    /// Run the request, then answer a well-framed response with only half of its body.
    TruncatedJson,
}

impl FaultAction {
    fn name(&self) -> &'static str {
        match self {
            FaultAction::Forward => "delay",
            FaultAction::Error { .. } => "error",
            FaultAction::Html { .. } => "html",
            FaultAction::Garbage { .. } => "garbage",
            FaultAction::DropConnection => "drop_connection",
            FaultAction::TruncatedJson => "truncated_json",
        }
    }
}

/// An item fault as requested: `POST /_dev/item-faults` takes this as JSON. The next `count`
/// operations of a `records/modify` on a matching record are answered with a per-item error of
/// `serverErrorCode` in place of their result, inside an otherwise normal response; the other
/// operations of the request run as usual (in an atomic batch, they then fail with `ATOMIC_ERROR`,
/// as for any refused item).
///
/// At least one of `recordName` and `zoneName` is given: a record name alone matches that record in
/// any zone, a zone name alone every record of that zone, both that record of that zone.
///
/// ```
/// use skysync_devserver::faults::{Faults, ItemFaultSpec};
///
/// let faults = Faults::default();
/// let spec: ItemFaultSpec = serde_json::from_str(
///     r#"{"recordName": "n2", "count": 1, "serverErrorCode": "VALIDATING_REFERENCE_ERROR"}"#,
/// )
/// .unwrap();
/// let armed = faults.arm_item(spec).unwrap();
/// assert_eq!(armed.remaining, 1);
/// assert_eq!(faults.clear_items(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemFaultSpec {
    /// The record whose operations fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_name: Option<String>,
    /// The zone whose records' operations fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// How many matching operations get the error before it disarms (at least 1; default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// The per-item code: `CONFLICT`, `BAD_REQUEST`, `VALIDATING_REFERENCE_ERROR`,
    /// `LIMIT_EXCEEDED`, `EXISTS`, `NOT_FOUND`, or any other. A `CONFLICT` or `EXISTS` carries the
    /// server's current record as `serverRecord` when the record exists, as real ones do.
    pub server_error_code: ServerErrorCode,
    /// The item error's `reason` (default `injected fault: CODE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The item error's `retryAfter` (seconds, told as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// An item fault that is armed: its spec, its id and how many more operations it will hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmedItemFault {
    /// The id the server gave it (increasing in arming order, shared with request faults).
    pub id: u64,
    /// How many more matching operations will get it.
    pub remaining: u32,
    /// What was asked for.
    #[serde(flatten)]
    pub spec: ItemFaultSpec,
}

/// One hit of an item fault: the per-item error to answer in place of an operation's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ItemFaultHit {
    /// The armed fault's id.
    pub(crate) id: u64,
    /// The code.
    pub(crate) code: ServerErrorCode,
    /// The reason.
    pub(crate) reason: String,
    /// The `retryAfter`, if any.
    pub(crate) retry_after: Option<u64>,
}

impl ItemFaultSpec {
    /// Whether the spec names an operation on record `record_name` in zone `zone_name`.
    fn matches(&self, zone_name: &str, record_name: &str) -> bool {
        self.zone_name
            .as_deref()
            .is_none_or(|zone| zone == zone_name)
            && self
                .record_name
                .as_deref()
                .is_none_or(|record| record == record_name)
    }

    fn check(&self) -> Result<(), InvalidFault> {
        let invalid = |why: &str| Err(InvalidFault(why.to_owned()));
        let named = |name: &Option<String>| name.as_deref().is_some_and(|n| !n.is_empty());
        if !named(&self.record_name) && !named(&self.zone_name) {
            return invalid("give a `recordName`, a `zoneName`, or both");
        }
        if self.record_name.as_deref() == Some("") || self.zone_name.as_deref() == Some("") {
            return invalid("`recordName` and `zoneName` must not be empty when given");
        }
        if self.count == 0 {
            return invalid("`count` must be at least 1");
        }
        if self.server_error_code.as_str().is_empty() {
            return invalid("`serverErrorCode` must not be empty");
        }
        Ok(())
    }
}

impl FaultSpec {
    /// Checks the spec and works out what it does.
    fn plan(&self) -> Result<FaultPlan, InvalidFault> {
        let invalid = |why: &str| Err(InvalidFault(why.to_owned()));
        let operation = self.operation.trim();
        if operation.is_empty() || operation.chars().any(char::is_whitespace) {
            return invalid(
                "`operation` must name an operation such as \"records/modify\", \"records/*\" or \"*\"",
            );
        }
        if self.count == 0 {
            return invalid("`count` must be at least 1");
        }
        let delay = match self.delay_ms {
            Some(ms) if ms > MAX_DELAY_MS => {
                return invalid(&format!("`delayMs` must be at most {MAX_DELAY_MS}"));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let status = match self.status {
            Some(code) => match StatusCode::from_u16(code) {
                Ok(status) if (200..=599).contains(&code) => Some(status),
                _ => return invalid("`status` must be an HTTP status from 200 to 599"),
            },
            None => None,
        };
        let kinds = [
            self.server_error_code.is_some(),
            self.html_body,
            self.garbage_body,
            self.drop_connection,
            self.truncated_json,
        ];
        match kinds.iter().filter(|given| **given).count() {
            0 if self.delay_ms.is_none() => {
                return invalid(
                    "give one of `serverErrorCode`, `htmlBody`, `garbageBody`, `dropConnection`, \
                     `truncatedJson`, or a `delayMs`",
                );
            }
            0 | 1 => {}
            _ => {
                return invalid(
                    "give only one of `serverErrorCode`, `htmlBody`, `garbageBody`, \
                     `dropConnection` and `truncatedJson`",
                );
            }
        }
        let error_details =
            self.reason.is_some() || self.retry_after.is_some() || self.redirect_url.is_some();
        if self.server_error_code.is_none() && error_details {
            return invalid("`reason`, `retryAfter` and `redirectURL` go with a `serverErrorCode`");
        }
        if status.is_some()
            && self.server_error_code.is_none()
            && !self.html_body
            && !self.garbage_body
        {
            return invalid("`status` goes with a `serverErrorCode`, `htmlBody` or `garbageBody`");
        }

        let action = if let Some(code) = &self.server_error_code {
            if code.as_str().is_empty() {
                return invalid("`serverErrorCode` must not be empty");
            }
            let status = status
                .or_else(|| StatusCode::from_u16(code.http_status()).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            FaultAction::Error {
                status,
                body: ErrorBody {
                    uuid: None,
                    server_error_code: code.clone(),
                    reason: Some(
                        self.reason
                            .clone()
                            .unwrap_or_else(|| format!("injected fault: {code}")),
                    ),
                    retry_after: self.retry_after,
                    redirect_url: self.redirect_url.clone(),
                },
            }
        } else if self.html_body {
            FaultAction::Html {
                status: status.unwrap_or(StatusCode::BAD_GATEWAY),
            }
        } else if self.garbage_body {
            FaultAction::Garbage {
                status: status.unwrap_or(StatusCode::OK),
            }
        } else if self.drop_connection {
            FaultAction::DropConnection
        } else if self.truncated_json {
            FaultAction::TruncatedJson
        } else {
            FaultAction::Forward
        };
        Ok(FaultPlan { delay, action })
    }
}

impl Faults {
    /// An empty fault set whose delays run `time_scale` times faster than real time (a `delayMs`
    /// is server time, like every duration of the server; see [`crate::time_scale`]).
    pub fn with_time_scale(time_scale: TimeScale) -> Faults {
        Faults {
            inner: Arc::default(),
            time_scale,
        }
    }

    /// Arms a fault; it applies to the next `spec.count` matching requests.
    pub fn arm(&self, mut spec: FaultSpec) -> Result<ArmedFault, InvalidFault> {
        spec.operation = spec.operation.trim().trim_matches('/').to_owned();
        if spec.operation.is_empty() {
            // "/" or "": nothing left to match.
            return Err(InvalidFault(
                "`operation` must name an operation such as \"records/modify\" or \"*\"".to_owned(),
            ));
        }
        let plan = spec.plan()?;
        let mut armed = self.lock();
        armed.next_id += 1;
        let fault = ArmedFault {
            id: armed.next_id,
            remaining: spec.count,
            spec,
            plan,
        };
        armed.faults.push(fault.clone());
        Ok(fault)
    }

    /// The faults still armed, in the order they apply.
    pub fn armed(&self) -> Vec<ArmedFault> {
        self.lock().faults.clone()
    }

    /// Disarms every fault; returns how many were armed.
    pub fn clear(&self) -> usize {
        let mut armed = self.lock();
        let cleared = armed.faults.len();
        armed.faults.clear();
        cleared
    }

    /// Arms an item fault; it applies to the next `spec.count` matching record operations.
    pub fn arm_item(&self, spec: ItemFaultSpec) -> Result<ArmedItemFault, InvalidFault> {
        spec.check()?;
        let mut armed = self.lock();
        armed.next_id += 1;
        let fault = ArmedItemFault {
            id: armed.next_id,
            remaining: spec.count,
            spec,
        };
        armed.items.push(fault.clone());
        Ok(fault)
    }

    /// The item faults still armed, in the order they apply.
    pub fn armed_items(&self) -> Vec<ArmedItemFault> {
        self.lock().items.clone()
    }

    /// Disarms every item fault; returns how many were armed.
    pub fn clear_items(&self) -> usize {
        let mut armed = self.lock();
        let cleared = armed.items.len();
        armed.items.clear();
        cleared
    }

    /// Takes one hit of the first armed item fault matching record `record_name` in zone
    /// `zone_name`, disarming it when used up.
    pub(crate) fn take_item(&self, zone_name: &str, record_name: &str) -> Option<ItemFaultHit> {
        let mut armed = self.lock();
        let index = armed
            .items
            .iter()
            .position(|fault| fault.spec.matches(zone_name, record_name))?;
        let fault = &mut armed.items[index];
        fault.remaining = fault.remaining.saturating_sub(1);
        let code = fault.spec.server_error_code.clone();
        let hit = ItemFaultHit {
            id: fault.id,
            reason: fault
                .spec
                .reason
                .clone()
                .unwrap_or_else(|| format!("injected fault: {code}")),
            code,
            retry_after: fault.spec.retry_after,
        };
        if fault.remaining == 0 {
            armed.items.remove(index);
        }
        tracing::info!(id = hit.id, code = %hit.code, "injecting an item fault");
        Some(hit)
    }

    /// Takes one hit of the first armed fault matching `operation`, disarming it when used up.
    fn take(&self, operation: &str) -> Option<(u64, FaultPlan)> {
        let mut armed = self.lock();
        let index = armed
            .faults
            .iter()
            .position(|fault| operation_matches(&fault.spec.operation, operation))?;
        let fault = &mut armed.faults[index];
        fault.remaining = fault.remaining.saturating_sub(1);
        let hit = (fault.id, fault.plan.clone());
        if fault.remaining == 0 {
            armed.faults.remove(index);
        }
        Some(hit)
    }

    fn lock(&self) -> MutexGuard<'_, ArmedFaults> {
        // The lock is only held for plain list edits that cannot leave the list half-changed, so a
        // panic elsewhere while holding it does not make the data unusable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `/_dev/faults` endpoints over this fault set:
    /// `POST` arms a fault ([`FaultSpec`] as JSON, answered with the armed fault),
    /// `GET` lists the armed faults (`{"faults": [...]}`),
    /// `DELETE` disarms them all (`{"cleared": n}`).
    /// Bad requests are answered with CloudKit error bodies.
    ///
    /// And the `/_dev/item-faults` endpoints, the same way over item faults: `POST` arms one
    /// ([`ItemFaultSpec`]), `GET` lists them (`{"itemFaults": [...]}`), `DELETE` disarms them all
    /// (`{"cleared": n}`).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/_dev/faults",
                get(list_faults)
                    .post(arm_fault)
                    .delete(clear_faults)
                    .fallback(method_not_allowed),
            )
            .route(
                "/_dev/item-faults",
                get(list_item_faults)
                    .post(arm_item_fault)
                    .delete(clear_item_faults)
                    .fallback(item_faults_method_not_allowed),
            )
            .layer(axum::extract::DefaultBodyLimit::max(
                MAX_FAULT_REQUEST_BYTES,
            ))
            .with_state(self.clone())
    }
}

/// The operation name of the web courier's long polls in fault specs.
pub const COURIER_OPERATION: &str = "courier";

/// Whether a fault's operation pattern matches a request's operation subpath. `*` matches every
/// CloudKit operation but not the courier, which only its own name matches.
fn operation_matches(pattern: &str, operation: &str) -> bool {
    if pattern == operation {
        return true;
    }
    if operation == COURIER_OPERATION {
        return false;
    }
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => operation
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => false,
    }
}

/// The operation subpath of a CloudKit request path, e.g. `records/modify` for
/// `/database/1/{container}/{environment}/{database}/records/modify` and `tokens/create` for
/// `/device/1/{container}/{environment}/tokens/create`; `None` for any other path.
pub fn cloudkit_operation(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [
            "database",
            _version,
            _container,
            _environment,
            _database,
            operation @ ..,
        ] if !operation.is_empty() => Some(operation.join("/")),
        [
            "device",
            _version,
            _container,
            _environment,
            "tokens",
            operation,
        ] => Some(format!("tokens/{operation}")),
        _ => None,
    }
}

#[derive(Serialize)]
struct FaultList {
    faults: Vec<ArmedFault>,
}

#[derive(Serialize)]
struct Cleared {
    cleared: usize,
}

async fn list_faults(State(faults): State<Faults>) -> Response {
    json_reply(
        StatusCode::OK,
        &FaultList {
            faults: faults.armed(),
        },
    )
}

/// Reads a JSON spec from a `/_dev/` request body, or the CloudKit error to answer instead.
fn read_spec<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Refusal> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                ServerErrorCode::LimitExceeded,
                format!("a fault spec is at most {MAX_FAULT_REQUEST_BYTES} bytes"),
            )
        } else {
            Refusal::bad_request(format!("could not read the request body: {rejection}"))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| Refusal::bad_request(format!("not a fault spec: {e}")))
}

async fn arm_fault(State(faults): State<Faults>, body: Result<Bytes, BytesRejection>) -> Response {
    let spec: FaultSpec = match read_spec(body) {
        Ok(spec) => spec,
        Err(refusal) => return refusal.into_response(),
    };
    match faults.arm(spec) {
        Ok(armed) => {
            tracing::info!(
                id = armed.id,
                operation = %armed.spec.operation,
                count = armed.remaining,
                kind = armed.plan.action.name(),
                "fault armed"
            );
            json_reply(StatusCode::OK, &armed)
        }
        Err(invalid) => error_reply(ServerErrorCode::BadRequest, &invalid.to_string(), None),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemFaultList {
    item_faults: Vec<ArmedItemFault>,
}

async fn list_item_faults(State(faults): State<Faults>) -> Response {
    json_reply(
        StatusCode::OK,
        &ItemFaultList {
            item_faults: faults.armed_items(),
        },
    )
}

async fn arm_item_fault(
    State(faults): State<Faults>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let spec: ItemFaultSpec = match read_spec(body) {
        Ok(spec) => spec,
        Err(refusal) => return refusal.into_response(),
    };
    match faults.arm_item(spec) {
        Ok(armed) => {
            tracing::info!(
                id = armed.id,
                code = %armed.spec.server_error_code,
                count = armed.remaining,
                "item fault armed"
            );
            json_reply(StatusCode::OK, &armed)
        }
        Err(invalid) => error_reply(ServerErrorCode::BadRequest, &invalid.to_string(), None),
    }
}

async fn clear_item_faults(State(faults): State<Faults>) -> Response {
    let cleared = faults.clear_items();
    tracing::info!(cleared, "item faults cleared");
    json_reply(StatusCode::OK, &Cleared { cleared })
}

async fn item_faults_method_not_allowed() -> Response {
    wrong_method_reply(
        "GET,POST,DELETE",
        "/_dev/item-faults answers GET (list), POST (arm) and DELETE (clear)",
    )
}

async fn clear_faults(State(faults): State<Faults>) -> Response {
    let cleared = faults.clear();
    tracing::info!(cleared, "faults cleared");
    json_reply(StatusCode::OK, &Cleared { cleared })
}

async fn method_not_allowed() -> Response {
    wrong_method_reply(
        "GET,POST,DELETE",
        "/_dev/faults answers GET (list), POST (arm) and DELETE (clear)",
    )
}

/// The operation a fault may name for a request path: its CloudKit operation (see
/// [`cloudkit_operation`]), or [`COURIER_OPERATION`] for a web courier poll (`/_courier/{token}`).
fn faultable_operation(path: &str) -> Option<String> {
    cloudkit_operation(path).or_else(|| {
        let token = path.strip_prefix("/_courier/")?;
        (!token.is_empty() && !token.contains('/')).then(|| COURIER_OPERATION.to_owned())
    })
}

/// Applies armed faults to CloudKit requests (`/database/1/…` and `/device/1/…/tokens/…`) and
/// courier polls (`/_courier/…`); other requests, and requests no fault matches, go through
/// untouched.
pub async fn middleware(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let Some(operation) = faultable_operation(request.uri().path()) else {
        return next.run(request).await;
    };
    let Some((id, plan)) = faults.take(&operation) else {
        return next.run(request).await;
    };
    tracing::info!(
        id,
        operation = %operation,
        kind = plan.action.name(),
        delay_ms = plan.delay.map(|d| d.as_millis()),
        "injecting a fault"
    );
    if let Some(delay) = plan.delay {
        tokio::time::sleep(faults.time_scale.real(delay)).await;
    }
    match plan.action {
        FaultAction::Forward => next.run(request).await,
        FaultAction::Error { status, mut body } => {
            body.uuid = Some(uuid::Uuid::new_v4().to_string());
            error_body_reply_with_status(status, &body)
        }
        FaultAction::Html { status } => html_reply(status),
        FaultAction::Garbage { status } => garbage_reply(status),
        FaultAction::DropConnection => cut_short(next.run(request).await).await,
        FaultAction::TruncatedJson => truncated(next.run(request).await).await,
    }
}

/// The body of a `garbageBody` fault: bytes that no JSON parser accepts (a NUL, invalid UTF-8 and
/// stray punctuation), as a broken middlebox might send.
pub const GARBAGE_BODY: &[u8] = b"\x00\xff\xfe}garbage{\x01";

/// A body that is not JSON under a JSON content type.
fn garbage_reply(status: StatusCode) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )],
        Bytes::from_static(GARBAGE_BODY),
    )
        .into_response()
}

/// The response with only the first half of its body, framed as complete: its `Content-Length`
/// announces the half that is sent, so the client reads a whole HTTP answer whose JSON ends early.
async fn truncated(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // The body is this server's own response, already bounded by what its handlers produce.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let kept = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(kept.len()));
    Response::from_parts(parts, Body::from(kept))
}

/// A non-CloudKit HTML page, as a reverse proxy or captive portal answers.
fn html_reply(status: StatusCode) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n\
         <hr><center>skysync-devserver fault injection</center>\r\n</body>\r\n</html>\r\n"
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// Sends the response's status, headers and the first half of its body, then aborts the connection:
/// the `Content-Length` still announces the whole body, so the client sees a truncated body (or, for
/// an empty body, a connection closed mid-response).
async fn cut_short(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // The body is this server's own response, already bounded by what its handlers produce.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let sent = bytes.slice(..bytes.len() / 2);
    if bytes.is_empty() {
        // Nothing to cut: announce a chunked body and abort before its end.
        parts.headers.remove(header::CONTENT_LENGTH);
    } else {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    let chunks: [Result<Bytes, std::io::Error>; 2] = [
        Ok(sent),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault injection: connection dropped mid-response",
        )),
    ];
    Response::from_parts(parts, Body::from_stream(futures::stream::iter(chunks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FaultSpec {
        serde_json::from_value(json).unwrap()
    }

    fn plan_of(json: serde_json::Value) -> Result<FaultPlan, InvalidFault> {
        spec(json).plan()
    }

    #[test]
    fn the_operation_is_read_from_database_and_device_paths() {
        assert_eq!(
            cloudkit_operation("/database/1/iCloud.com.example/development/private/records/modify")
                .as_deref(),
            Some("records/modify")
        );
        assert_eq!(
            cloudkit_operation(
                "/database/1/iCloud.com.example/development/public/users/lookup/email"
            )
            .as_deref(),
            Some("users/lookup/email")
        );
        assert_eq!(
            cloudkit_operation("/device/1/iCloud.com.example/production/tokens/create").as_deref(),
            Some("tokens/create")
        );
        assert_eq!(cloudkit_operation("/_dev/faults"), None);
        assert_eq!(
            cloudkit_operation("/database/1/iCloud.com.example/development/private"),
            None
        );
        assert_eq!(cloudkit_operation("/"), None);
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_everything() {
        assert!(operation_matches("records/modify", "records/modify"));
        assert!(!operation_matches("records/modify", "records/query"));
        assert!(operation_matches("records/*", "records/query"));
        assert!(!operation_matches("records/*", "recordsx/query"));
        assert!(!operation_matches("records/*", "zones/list"));
        assert!(operation_matches("*", "tokens/create"));
        assert!(!operation_matches("zones/list", "zones/list/extra"));
    }

    #[test]
    fn an_error_fault_defaults_to_its_codes_status_and_keeps_its_details() {
        let plan = plan_of(serde_json::json!({
            "operation": "records/modify", "serverErrorCode": "THROTTLED", "retryAfter": 3
        }))
        .unwrap();
        match plan.action {
            FaultAction::Error { status, body } => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(body.server_error_code, ServerErrorCode::Throttled);
                assert_eq!(body.retry_after, Some(3));
                assert!(body.reason.is_some());
            }
            other => panic!("expected an error fault, got {other:?}"),
        }
        let explicit = plan_of(serde_json::json!({
            "operation": "*", "serverErrorCode": "TRY_AGAIN_LATER", "status": 500
        }))
        .unwrap();
        assert!(matches!(
            explicit.action,
            FaultAction::Error { status, .. } if status == StatusCode::INTERNAL_SERVER_ERROR
        ));
    }

    #[test]
    fn a_delay_only_fault_forwards_after_the_delay() {
        let plan =
            plan_of(serde_json::json!({"operation": "zones/list", "delayMs": 1500})).unwrap();
        assert_eq!(plan.delay, Some(Duration::from_millis(1500)));
        assert_eq!(plan.action, FaultAction::Forward);
    }

    #[test]
    fn an_html_fault_defaults_to_bad_gateway() {
        let plan = plan_of(serde_json::json!({"operation": "*", "htmlBody": true})).unwrap();
        assert_eq!(
            plan.action,
            FaultAction::Html {
                status: StatusCode::BAD_GATEWAY
            }
        );
    }

    #[test]
    fn a_garbage_fault_defaults_to_200_and_a_truncation_runs_the_request() {
        let plan = plan_of(serde_json::json!({"operation": "*", "garbageBody": true})).unwrap();
        assert_eq!(
            plan.action,
            FaultAction::Garbage {
                status: StatusCode::OK
            }
        );
        let plan =
            plan_of(serde_json::json!({"operation": "*", "garbageBody": true, "status": 503}))
                .unwrap();
        assert_eq!(
            plan.action,
            FaultAction::Garbage {
                status: StatusCode::SERVICE_UNAVAILABLE
            }
        );
        let plan = plan_of(serde_json::json!({"operation": "changes/zone", "truncatedJson": true}))
            .unwrap();
        assert_eq!(plan.action, FaultAction::TruncatedJson);
        assert!(serde_json::from_slice::<serde_json::Value>(GARBAGE_BODY).is_err());
    }

    #[test]
    fn the_courier_is_faulted_only_by_its_own_name() {
        assert_eq!(
            faultable_operation("/_courier/abc123").as_deref(),
            Some(COURIER_OPERATION)
        );
        assert_eq!(faultable_operation("/_courier/"), None);
        assert_eq!(faultable_operation("/_courier/a/b"), None);
        assert_eq!(
            faultable_operation("/database/1/c/development/private/zones/list").as_deref(),
            Some("zones/list")
        );
        assert!(operation_matches(COURIER_OPERATION, COURIER_OPERATION));
        assert!(!operation_matches("*", COURIER_OPERATION));
        assert!(operation_matches("*", "zones/list"));
        assert!(!operation_matches(COURIER_OPERATION, "zones/list"));
    }

    #[test]
    fn contradictory_or_empty_specs_are_refused() {
        for bad in [
            serde_json::json!({"operation": "*"}),
            serde_json::json!({"operation": "*", "count": 0, "delayMs": 1}),
            serde_json::json!({"operation": "", "delayMs": 1}),
            serde_json::json!({"operation": "records modify", "delayMs": 1}),
            serde_json::json!({"operation": "*", "htmlBody": true, "dropConnection": true}),
            serde_json::json!({"operation": "*", "serverErrorCode": "THROTTLED", "htmlBody": true}),
            serde_json::json!({"operation": "*", "garbageBody": true, "truncatedJson": true}),
            serde_json::json!({"operation": "*", "truncatedJson": true, "dropConnection": true}),
            serde_json::json!({"operation": "*", "truncatedJson": true, "status": 200}),
            serde_json::json!({"operation": "*", "garbageBody": true, "retryAfter": 1}),
            serde_json::json!({"operation": "*", "dropConnection": true, "retryAfter": 2}),
            serde_json::json!({"operation": "*", "delayMs": 10, "status": 503}),
            serde_json::json!({"operation": "*", "serverErrorCode": "THROTTLED", "status": 99}),
            serde_json::json!({"operation": "*", "serverErrorCode": "THROTTLED", "status": 600}),
            serde_json::json!({"operation": "*", "delayMs": MAX_DELAY_MS + 1}),
        ] {
            assert!(plan_of(bad.clone()).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn unknown_keys_are_refused_when_parsing() {
        let parsed: Result<FaultSpec, _> = serde_json::from_value(serde_json::json!({
            "operation": "*", "retry_after": 2, "serverErrorCode": "THROTTLED"
        }));
        assert!(parsed.is_err());
    }

    #[test]
    fn a_fault_hits_count_times_then_disarms() {
        let faults = Faults::default();
        faults
            .arm(spec(serde_json::json!({
                "operation": "records/modify", "count": 2, "dropConnection": true
            })))
            .unwrap();
        assert!(faults.take("records/query").is_none());
        assert!(faults.take("records/modify").is_some());
        assert_eq!(faults.armed()[0].remaining, 1);
        assert!(faults.take("records/modify").is_some());
        assert!(faults.take("records/modify").is_none());
        assert!(faults.armed().is_empty());
    }

    #[test]
    fn the_first_armed_matching_fault_applies_first() {
        let faults = Faults::default();
        let first = faults
            .arm(spec(
                serde_json::json!({"operation": "*", "htmlBody": true}),
            ))
            .unwrap();
        let second = faults
            .arm(spec(
                serde_json::json!({"operation": "zones/list", "delayMs": 5}),
            ))
            .unwrap();
        assert!(second.id > first.id);
        assert_eq!(faults.take("zones/list").map(|(id, _)| id), Some(first.id));
        assert_eq!(faults.take("zones/list").map(|(id, _)| id), Some(second.id));
        assert!(faults.take("zones/list").is_none());
    }

    #[test]
    fn clearing_disarms_everything() {
        let faults = Faults::default();
        for _ in 0..3 {
            faults
                .arm(spec(serde_json::json!({"operation": "*", "delayMs": 1})))
                .unwrap();
        }
        assert_eq!(faults.clear(), 3);
        assert!(faults.armed().is_empty());
        assert!(faults.take("records/modify").is_none());
    }

    #[test]
    fn operations_are_normalised_when_armed() {
        let faults = Faults::default();
        let armed = faults
            .arm(spec(
                serde_json::json!({"operation": " /zones/list/ ", "delayMs": 1}),
            ))
            .unwrap();
        assert_eq!(armed.spec.operation, "zones/list");
        assert!(
            faults
                .arm(spec(serde_json::json!({"operation": "/", "delayMs": 1})))
                .is_err()
        );
    }

    #[test]
    fn an_armed_fault_lists_as_its_spec_with_id_and_remaining() {
        let faults = Faults::default();
        faults
            .arm(spec(serde_json::json!({
                "operation": "changes/zone", "count": 2, "serverErrorCode": "CHANGE_TOKEN_EXPIRED"
            })))
            .unwrap();
        let listed = serde_json::to_value(faults.armed()).unwrap();
        assert_eq!(
            listed,
            serde_json::json!([{
                "id": 1, "remaining": 2, "operation": "changes/zone", "count": 2,
                "serverErrorCode": "CHANGE_TOKEN_EXPIRED"
            }])
        );
    }

    mod served {
        //! The middleware and the `/_dev/faults` endpoints, driven through a router on tokio's clock.

        use super::*;
        use axum::routing::any;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tower::ServiceExt as _;

        const MODIFY: &str = "/database/1/iCloud.com.example/development/private/records/modify";
        const ANSWER: &str = r#"{"records":[{"recordName":"a","recordChangeTag":"1"}]}"#;

        /// A router whose CloudKit handler counts its calls and answers `ANSWER`.
        fn app(faults: &Faults) -> (Router, Arc<AtomicUsize>) {
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&calls);
            let handler = move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                        ANSWER,
                    )
                        .into_response()
                }
            };
            let router = Router::new()
                .route("/database/{*rest}", any(handler.clone()))
                .route("/elsewhere", any(handler))
                .merge(faults.router())
                .layer(axum::middleware::from_fn_with_state(
                    faults.clone(),
                    middleware,
                ));
            (router, calls)
        }

        fn request(method: &str, uri: &str, body: &str) -> Request {
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body.to_owned()))
                .unwrap()
        }

        async fn send(router: &Router, method: &str, uri: &str, body: &str) -> Response {
            router
                .clone()
                .oneshot(request(method, uri, body))
                .await
                .unwrap()
        }

        async fn body_json(response: Response) -> serde_json::Value {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }

        fn arm(faults: &Faults, json: serde_json::Value) {
            faults.arm(spec(json)).unwrap();
        }

        #[tokio::test]
        async fn an_error_fault_answers_a_cloudkit_error_without_running_the_request() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({
                    "operation": "records/modify", "serverErrorCode": "TRY_AGAIN_LATER",
                    "retryAfter": 2, "reason": "busy"
                }),
            );
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = body_json(response).await;
            assert_eq!(body["serverErrorCode"], "TRY_AGAIN_LATER");
            assert_eq!(body["retryAfter"], 2);
            assert_eq!(body["reason"], "busy");
            assert!(body["uuid"].as_str().is_some_and(|uuid| !uuid.is_empty()));
            assert_eq!(calls.load(Ordering::SeqCst), 0);

            let served = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(served.status(), StatusCode::OK);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }

        #[tokio::test(start_paused = true)]
        async fn a_delay_fault_holds_the_request_for_its_delay_then_runs_it() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "records/modify", "delayMs": 1500}),
            );
            let mut answer = std::pin::pin!(send(&router, "POST", MODIFY, "{}"));
            assert!(
                tokio::time::timeout(Duration::from_millis(1499), &mut answer)
                    .await
                    .is_err(),
                "answered before the delay was over"
            );
            assert_eq!(calls.load(Ordering::SeqCst), 0);
            let response = tokio::time::timeout(Duration::from_millis(2), &mut answer)
                .await
                .expect("answered once the delay is over");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(&bytes[..], ANSWER.as_bytes());
        }

        #[tokio::test(start_paused = true)]
        async fn a_delayed_error_waits_then_answers_the_error() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({
                    "operation": "*", "delayMs": 250, "serverErrorCode": "THROTTLED", "retryAfter": 4
                }),
            );
            let started = tokio::time::Instant::now();
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert!(started.elapsed() >= Duration::from_millis(250));
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body_json(response).await["retryAfter"], 4);
            assert_eq!(calls.load(Ordering::SeqCst), 0);
        }

        #[tokio::test]
        async fn a_dropped_connection_runs_the_request_and_cuts_its_body_short() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "records/modify", "dropConnection": true}),
            );
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "the request must have run");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()[header::CONTENT_LENGTH],
                ANSWER.len().to_string().as_str()
            );
            let mut body = response.into_body().into_data_stream();
            let mut received = Vec::new();
            let mut failed = false;
            while let Some(chunk) = futures::StreamExt::next(&mut body).await {
                match chunk {
                    Ok(bytes) => received.extend_from_slice(&bytes),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "the body must end in an error, not cleanly");
            assert!(received.len() < ANSWER.len());
            assert!(ANSWER.as_bytes().starts_with(&received));
        }

        #[tokio::test]
        async fn an_empty_body_is_dropped_before_it_ends() {
            let response = cut_short(StatusCode::NO_CONTENT.into_response()).await;
            assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            assert!(bytes.is_err());
        }

        #[tokio::test]
        async fn an_html_fault_answers_a_page_that_is_not_cloudkit_json() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "*", "htmlBody": true}),
            );
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            assert!(
                response.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(String::from_utf8_lossy(&bytes).contains("502 Bad Gateway"));
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 0);
        }

        #[tokio::test]
        async fn a_truncated_answer_runs_the_request_and_sends_half_its_body_whole() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "records/modify", "truncatedJson": true}),
            );
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "the request must have run");
            assert_eq!(response.status(), StatusCode::OK);
            let half = ANSWER.len() / 2;
            assert_eq!(
                response.headers()[header::CONTENT_LENGTH],
                half.to_string().as_str()
            );
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the body ends cleanly");
            assert_eq!(&bytes[..], &ANSWER.as_bytes()[..half]);
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
            assert!(parsed.is_err_and(|e| e.is_eof()), "the JSON must end early");
        }

        #[tokio::test]
        async fn a_garbage_answer_is_not_json_and_does_not_run_the_request() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "*", "garbageBody": true}),
            );
            let response = send(&router, "POST", MODIFY, "{}").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(&bytes[..], GARBAGE_BODY);
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 0);
        }

        #[tokio::test]
        async fn requests_outside_cloudkit_are_never_faulted() {
            let faults = Faults::default();
            let (router, calls) = app(&faults);
            arm(
                &faults,
                serde_json::json!({"operation": "*", "htmlBody": true}),
            );
            let response = send(&router, "GET", "/elsewhere", "").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            let listed = send(&router, "GET", "/_dev/faults", "").await;
            assert_eq!(listed.status(), StatusCode::OK);
            assert_eq!(body_json(listed).await["faults"][0]["remaining"], 1);
        }

        #[tokio::test]
        async fn the_endpoints_arm_list_and_clear() {
            let faults = Faults::default();
            let (router, _calls) = app(&faults);
            let armed = send(
                &router,
                "POST",
                "/_dev/faults",
                r#"{"operation":"zones/list","count":3,"serverErrorCode":"ZONE_NOT_FOUND"}"#,
            )
            .await;
            assert_eq!(armed.status(), StatusCode::OK);
            let armed = body_json(armed).await;
            assert_eq!(armed["operation"], "zones/list");
            assert_eq!(armed["remaining"], 3);

            let listed = body_json(send(&router, "GET", "/_dev/faults", "").await).await;
            assert_eq!(listed["faults"].as_array().map(Vec::len), Some(1));

            let cleared = send(&router, "DELETE", "/_dev/faults", "").await;
            assert_eq!(cleared.status(), StatusCode::OK);
            assert_eq!(body_json(cleared).await["cleared"], 1);
            assert!(faults.armed().is_empty());
        }

        #[tokio::test]
        async fn bad_fault_requests_get_cloudkit_error_bodies() {
            let faults = Faults::default();
            let (router, _calls) = app(&faults);
            for (body, why) in [
                ("{not json", "malformed JSON"),
                ("", "no body"),
                (r#"{"count":1,"delayMs":5}"#, "no operation"),
                (r#"{"operation":"*"}"#, "no fault"),
                (r#"{"operation":"*","delayMs":"soon"}"#, "wrong type"),
                (r#"{"operation":"*","delay":5}"#, "unknown key"),
            ] {
                let response = send(&router, "POST", "/_dev/faults", body).await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
                let error = body_json(response).await;
                assert_eq!(error["serverErrorCode"], "BAD_REQUEST", "{why}");
                assert!(error["uuid"].is_string(), "{why}");
                assert!(error["reason"].is_string(), "{why}");
            }
            let oversized = format!(
                r#"{{"operation":"*","delayMs":1,"reason":"{}"}}"#,
                "x".repeat(MAX_FAULT_REQUEST_BYTES)
            );
            let response = send(&router, "POST", "/_dev/faults", &oversized).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(
                body_json(response).await["serverErrorCode"],
                "LIMIT_EXCEEDED"
            );

            let response = send(&router, "PUT", "/_dev/faults", "{}").await;
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(body_json(response).await["serverErrorCode"], "BAD_REQUEST");
            assert!(faults.armed().is_empty());
        }
    }
}
