//! Errors: the model's own [`ModelError`], and CloudKit's typed errors with DESIGN.md's classification.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// Everything that can go wrong while turning bytes into the model's types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A field's `type` tag is not a CloudKit type. The sender is newer than this client or wrong:
    /// upgrade skysync, or fix the sender.
    #[error("field `{field}` has unknown type `{type_name}`; this client does not know that type")]
    UnknownFieldType {
        /// The field's name.
        field: String,
        /// The tag that arrived.
        type_name: String,
    },
    /// A field's value does not have the shape its type requires. Fix the value or its type tag.
    #[error("field `{field}` should hold {expected} but holds {found}")]
    WrongShape {
        /// The field's name (with a `.key` suffix for a nested key).
        field: String,
        /// What the type requires.
        expected: &'static str,
        /// What arrived.
        found: String,
    },
    /// A `TIMESTAMP` must be whole milliseconds; round the value before sending it.
    #[error("field `{field}` is a TIMESTAMP but holds the fractional value {value}; send whole ms")]
    FractionalTimestamp {
        /// The field's name.
        field: String,
        /// The value that arrived.
        value: f64,
    },
    /// A `BYTES` value is not valid standard base64.
    #[error("field `{field}` is BYTES but is not valid base64")]
    InvalidBase64 {
        /// The field's name.
        field: String,
    },
    /// An untyped value whose type cannot be inferred; send a `type` tag with it.
    #[error("field `{field}` holds {found} without a type tag; send `type` with it")]
    UntypedValue {
        /// The field's name.
        field: String,
        /// What arrived.
        found: String,
    },
    /// A record on the wire lacks a key this use of it needs (e.g. `recordName`, `recordType`).
    #[error("record is missing `{key}`")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// Text that should be JSON of a known shape is not (a `--fields` argument, say): fix the text;
    /// the detail says where reading stopped.
    #[error("{what} is not valid: {detail}")]
    InvalidJson {
        /// What the text should have been.
        what: &'static str,
        /// Where and why reading stopped.
        detail: String,
    },
    /// Stored bytes could not be encoded; a bug in skysync, please report it.
    #[error("could not encode a stored value: {0}")]
    Encode(String),
    /// Stored bytes could not be decoded: the file is corrupt or from an incompatible version.
    #[error("could not decode a stored value (corrupt or incompatible data): {0}")]
    Decode(String),
}

/// A `serverErrorCode` as CloudKit Web Services sends it. Codes this client does not know are kept
/// verbatim in [`ServerErrorCode::Other`] (and classified fatal: never guess at an unknown failure).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerErrorCode {
    /// `ACCESS_DENIED` (403): no permission for the endpoint, record, zone or database.
    AccessDenied,
    /// `ATOMIC_ERROR` (400): this item was fine but another item of its atomic batch failed.
    AtomicError,
    /// `AUTHENTICATION_FAILED` (401): credentials or a server-to-server signature were rejected.
    AuthenticationFailed,
    /// `AUTHENTICATION_REQUIRED` (421): the user must sign in (see the `redirectURL`).
    AuthenticationRequired,
    /// `BAD_REQUEST` (400): the request or item is not valid.
    BadRequest,
    /// `CONFLICT` (409): the change tag is stale; merge with the server's copy and retry.
    Conflict,
    /// `EXISTS` (409): a `create` hit a record that already exists.
    Exists,
    /// `INTERNAL_ERROR` (500): the server failed; retry with backoff.
    InternalError,
    /// `NOT_FOUND` (404): the record (or endpoint) does not exist.
    NotFound,
    /// `QUOTA_EXCEEDED` (413): the app's or the user's iCloud quota is full.
    QuotaExceeded,
    /// `THROTTLED` (429): too many requests; wait `retryAfter`.
    Throttled,
    /// `TRY_AGAIN_LATER` (503): the server is busy; wait `retryAfter`.
    TryAgainLater,
    /// `VALIDATING_REFERENCE_ERROR` (412): a `VALIDATE` reference points at a missing record.
    ValidatingReferenceError,
    /// `ZONE_NOT_FOUND` (404): the zone does not exist (or was deleted).
    ZoneNotFound,
    /// `UNIQUE_FIELD_ERROR` (409): a unique-field constraint was violated.
    UniqueFieldError,
    /// `ZONE_BUSY` (503): the zone is busy; retry (CKError zoneBusy).
    ZoneBusy,
    /// `LIMIT_EXCEEDED` (413): the request or an item is over a size or count limit; split it.
    LimitExceeded,
    /// `CHANGE_TOKEN_EXPIRED` (410): the sync token is no longer valid; fetch from the start.
    ChangeTokenExpired,
    /// Any other code, kept as sent.
    Other(String),
}

impl ServerErrorCode {
    /// Every code this client knows.
    pub const KNOWN: [ServerErrorCode; 18] = [
        ServerErrorCode::AccessDenied,
        ServerErrorCode::AtomicError,
        ServerErrorCode::AuthenticationFailed,
        ServerErrorCode::AuthenticationRequired,
        ServerErrorCode::BadRequest,
        ServerErrorCode::Conflict,
        ServerErrorCode::Exists,
        ServerErrorCode::InternalError,
        ServerErrorCode::NotFound,
        ServerErrorCode::QuotaExceeded,
        ServerErrorCode::Throttled,
        ServerErrorCode::TryAgainLater,
        ServerErrorCode::ValidatingReferenceError,
        ServerErrorCode::ZoneNotFound,
        ServerErrorCode::UniqueFieldError,
        ServerErrorCode::ZoneBusy,
        ServerErrorCode::LimitExceeded,
        ServerErrorCode::ChangeTokenExpired,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ServerErrorCode::AccessDenied => "ACCESS_DENIED",
            ServerErrorCode::AtomicError => "ATOMIC_ERROR",
            ServerErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ServerErrorCode::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            ServerErrorCode::BadRequest => "BAD_REQUEST",
            ServerErrorCode::Conflict => "CONFLICT",
            ServerErrorCode::Exists => "EXISTS",
            ServerErrorCode::InternalError => "INTERNAL_ERROR",
            ServerErrorCode::NotFound => "NOT_FOUND",
            ServerErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ServerErrorCode::Throttled => "THROTTLED",
            ServerErrorCode::TryAgainLater => "TRY_AGAIN_LATER",
            ServerErrorCode::ValidatingReferenceError => "VALIDATING_REFERENCE_ERROR",
            ServerErrorCode::ZoneNotFound => "ZONE_NOT_FOUND",
            ServerErrorCode::UniqueFieldError => "UNIQUE_FIELD_ERROR",
            ServerErrorCode::ZoneBusy => "ZONE_BUSY",
            ServerErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ServerErrorCode::ChangeTokenExpired => "CHANGE_TOKEN_EXPIRED",
            ServerErrorCode::Other(code) => code,
        }
    }

    /// Parses a wire code; unknown codes become [`ServerErrorCode::Other`].
    pub fn parse(code: &str) -> ServerErrorCode {
        ServerErrorCode::KNOWN
            .iter()
            .find(|known| known.as_str() == code)
            .cloned()
            .unwrap_or_else(|| ServerErrorCode::Other(code.to_owned()))
    }

    /// The HTTP status CloudKit answers a request-level error of this code with.
    pub fn http_status(&self) -> u16 {
        match self {
            ServerErrorCode::AccessDenied => 403,
            ServerErrorCode::AtomicError | ServerErrorCode::BadRequest => 400,
            ServerErrorCode::AuthenticationFailed => 401,
            ServerErrorCode::AuthenticationRequired => 421,
            ServerErrorCode::Conflict
            | ServerErrorCode::Exists
            | ServerErrorCode::UniqueFieldError => 409,
            ServerErrorCode::InternalError | ServerErrorCode::Other(_) => 500,
            ServerErrorCode::NotFound | ServerErrorCode::ZoneNotFound => 404,
            ServerErrorCode::QuotaExceeded | ServerErrorCode::LimitExceeded => 413,
            ServerErrorCode::Throttled => 429,
            ServerErrorCode::TryAgainLater | ServerErrorCode::ZoneBusy => 503,
            ServerErrorCode::ValidatingReferenceError => 412,
            ServerErrorCode::ChangeTokenExpired => 410,
        }
    }

    /// The native CKError code this server code corresponds to (the mapping of the protocol doc §3.3).
    pub fn ck_error_code(&self) -> CkErrorCode {
        match self {
            ServerErrorCode::AccessDenied => CkErrorCode::PermissionFailure,
            ServerErrorCode::AtomicError => CkErrorCode::BatchRequestFailed,
            ServerErrorCode::AuthenticationFailed | ServerErrorCode::AuthenticationRequired => {
                CkErrorCode::NotAuthenticated
            }
            ServerErrorCode::BadRequest => CkErrorCode::InvalidArguments,
            ServerErrorCode::Conflict | ServerErrorCode::Exists => CkErrorCode::ServerRecordChanged,
            ServerErrorCode::InternalError => CkErrorCode::InternalError,
            ServerErrorCode::NotFound => CkErrorCode::UnknownItem,
            ServerErrorCode::QuotaExceeded => CkErrorCode::QuotaExceeded,
            ServerErrorCode::Throttled => CkErrorCode::RequestRateLimited,
            ServerErrorCode::TryAgainLater => CkErrorCode::ServiceUnavailable,
            ServerErrorCode::ValidatingReferenceError => CkErrorCode::ReferenceViolation,
            ServerErrorCode::ZoneNotFound => CkErrorCode::ZoneNotFound,
            ServerErrorCode::UniqueFieldError => CkErrorCode::ConstraintViolation,
            ServerErrorCode::ZoneBusy => CkErrorCode::ZoneBusy,
            ServerErrorCode::LimitExceeded => CkErrorCode::LimitExceeded,
            ServerErrorCode::ChangeTokenExpired => CkErrorCode::ChangeTokenExpired,
            ServerErrorCode::Other(_) => CkErrorCode::ServerRejectedRequest,
        }
    }

    /// What the session does about this code (DESIGN.md's error table), given whether it came for
    /// the whole request or for one item of it. This is the class of the code alone:
    /// [`ServerError::class`] also weighs a `retryAfter` (a 503 or ZONE_BUSY that carries one is
    /// [`ErrorClass::Throttled`]).
    pub fn classify(&self, scope: ErrorScope) -> ErrorClass {
        use ServerErrorCode as C;
        match (self, scope) {
            (C::Throttled, _) => ErrorClass::Throttled,
            // Rate signals only when they carry a retryAfter: see [`ServerError::class`].
            (C::TryAgainLater | C::InternalError | C::ZoneBusy, _) => ErrorClass::Transient,
            // An innocent item of a failed atomic batch: send it again once the culprit is handled.
            (C::AtomicError, _) => ErrorClass::Transient,
            (C::LimitExceeded, _) => ErrorClass::TooLarge,
            (C::Conflict | C::Exists, _) => ErrorClass::Conflict,
            (C::ZoneNotFound, _) => ErrorClass::ZoneGone,
            (C::ChangeTokenExpired, _) => ErrorClass::TokenExpired,
            (
                C::BadRequest | C::NotFound | C::ValidatingReferenceError | C::UniqueFieldError,
                ErrorScope::Item,
            ) => ErrorClass::ItemRejected,
            (
                C::BadRequest | C::NotFound | C::ValidatingReferenceError | C::UniqueFieldError,
                ErrorScope::Request,
            ) => ErrorClass::Fatal,
            (
                C::AuthenticationFailed
                | C::AuthenticationRequired
                | C::AccessDenied
                | C::QuotaExceeded
                | C::Other(_),
                _,
            ) => ErrorClass::Fatal,
        }
    }
}

impl fmt::Display for ServerErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ServerErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ServerErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(ServerErrorCode::parse(&code))
    }
}

/// The native CloudKit error codes (CKError.Code), with their numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each variant is the CKError code of the same name.
pub enum CkErrorCode {
    InternalError = 1,
    PartialFailure = 2,
    NetworkUnavailable = 3,
    NetworkFailure = 4,
    BadContainer = 5,
    ServiceUnavailable = 6,
    RequestRateLimited = 7,
    MissingEntitlement = 8,
    NotAuthenticated = 9,
    PermissionFailure = 10,
    UnknownItem = 11,
    InvalidArguments = 12,
    ResultsTruncated = 13,
    ServerRecordChanged = 14,
    ServerRejectedRequest = 15,
    AssetFileNotFound = 16,
    AssetFileModified = 17,
    IncompatibleVersion = 18,
    ConstraintViolation = 19,
    OperationCancelled = 20,
    ChangeTokenExpired = 21,
    BatchRequestFailed = 22,
    ZoneBusy = 23,
    BadDatabase = 24,
    QuotaExceeded = 25,
    ZoneNotFound = 26,
    LimitExceeded = 27,
    UserDeletedZone = 28,
    TooManyParticipants = 29,
    AlreadyShared = 30,
    ReferenceViolation = 31,
    ManagedAccountRestricted = 32,
    ParticipantMayNeedVerification = 33,
    ServerResponseLost = 34,
    AssetNotAvailable = 35,
    AccountTemporarilyUnavailable = 36,
    ParticipantAlreadyInvited = 37,
}

impl CkErrorCode {
    /// The numeric code, as CKError.h numbers it.
    pub fn number(self) -> i32 {
        self as i32
    }
}

/// Whether an error came for a whole request or for one item (record, zone, subscription) of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorScope {
    /// The whole request failed (an error body, non-2xx status).
    Request,
    /// One item failed inside an otherwise answered request.
    Item,
}

/// What the session does with an error: the rows of DESIGN.md's error table.
///
/// Throttled, transient and offline are three different things: only a throttle is a rate signal
/// (the throttle lowers its learned rate); a transient failure is retried on its own backoff and
/// leaves the rate alone; offline is not even counted as an attempt. A failure inside this process
/// (a component that did not answer) is not a cloud error at all and has no class here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server said to slow down (THROTTLED, or a 503 / ZONE_BUSY with `retryAfter`): wait for
    /// `retryAfter` as a hard deadline, lower the learned rate, count the attempt.
    Throttled,
    /// A passing failure (TRY_AGAIN_LATER without `retryAfter`, INTERNAL_ERROR, a lost or
    /// unparsable answer, an innocent item of a failed atomic batch): retry the same operation on
    /// its own capped backoff, count the attempt; not a rate signal.
    Transient,
    /// No connection could be made (refused, no route, DNS, connect timeout): the device is
    /// offline. Probe with backoff; never counted as an attempt, never a halt.
    Offline,
    /// Over a count or size limit: split the batch in halves; a single change still too large is parked.
    TooLarge,
    /// The server has a newer copy: resolve with it and re-send with the server's change tag.
    Conflict,
    /// The zone is gone: recreate it, forget its change tags, re-send its records, refetch.
    ZoneGone,
    /// The sync token expired: reset the zone's token and refetch from the start.
    TokenExpired,
    /// This one change is refused: park it as failed with its reason; the rest goes on.
    ItemRejected,
    /// Halt: keep every pending change, stop issuing requests, report why.
    Fatal,
}

/// A CloudKit error as the server stated it: its code and everything that came with it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerError {
    /// The `serverErrorCode`.
    pub code: ServerErrorCode,
    /// Whether it failed the request or one item of it.
    pub scope: ErrorScope,
    /// The HTTP status of the response that carried it.
    pub http_status: u16,
    /// The server's explanation (`reason`), for people, not for matching.
    pub reason: String,
    /// How long the server asks us to wait before retrying (`retryAfter`); absent: not retryable as is.
    pub retry_after: Option<Duration>,
    /// Where the user signs in (`redirectURL`, with `AUTHENTICATION_REQUIRED`).
    pub redirect_url: Option<String>,
    /// The server's request id (`uuid`), for support.
    pub uuid: Option<String>,
}

impl ServerError {
    /// The typed error for the fields an error dictionary carries (request body or inline item).
    pub(crate) fn from_wire_parts(
        code: &ServerErrorCode,
        scope: ErrorScope,
        http_status: u16,
        reason: Option<&str>,
        retry_after_secs: Option<u64>,
        redirect_url: Option<&str>,
        uuid: Option<&str>,
    ) -> ServerError {
        ServerError {
            code: code.clone(),
            scope,
            http_status,
            reason: reason.unwrap_or_default().to_owned(),
            retry_after: retry_after_secs.map(Duration::from_secs),
            redirect_url: redirect_url.map(str::to_owned),
            uuid: uuid.map(str::to_owned),
        }
    }
}

impl ServerError {
    /// What the session does about this error: the code's class, except that TRY_AGAIN_LATER and
    /// ZONE_BUSY with a `retryAfter` are the server asking to slow down ([`ErrorClass::Throttled`]).
    pub fn class(&self) -> ErrorClass {
        match (&self.code, self.retry_after) {
            (ServerErrorCode::TryAgainLater | ServerErrorCode::ZoneBusy, Some(_)) => {
                ErrorClass::Throttled
            }
            (code, _) => code.classify(self.scope),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (HTTP {}): {}",
            self.code, self.http_status, self.reason
        )?;
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {} s", after.as_secs())?;
        }
        Ok(())
    }
}

/// How a request failed below CloudKit: the network or the bytes that came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkFailure {
    /// The connection could not be made (refused, no route, DNS failure, connect timeout): the
    /// device is offline as far as this server is concerned.
    Connect,
    /// Connected and sent, but not a byte of an answer arrived within the time limit: as far as
    /// this device can tell the server is unreachable (a black-holed network, a captive portal
    /// that never answers), so it counts as offline, like a refused connection.
    NoAnswer,
    /// An answer began to arrive but did not complete within the time limit.
    Timeout,
    /// The connection broke mid-request or mid-response.
    Reset,
    /// Any other transport failure.
    Other,
}

impl fmt::Display for NetworkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkFailure::Connect => "could not connect",
            NetworkFailure::NoAnswer => "no answer in time",
            NetworkFailure::Timeout => "timed out",
            NetworkFailure::Reset => "connection lost",
            NetworkFailure::Other => "transport failure",
        })
    }
}

/// Any failure of a CloudKit operation, typed so that the session can act on it (see [`ErrorClass`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// CloudKit answered with an error code. What to do depends on [`CloudError::class`].
    #[error("CloudKit refused: {0}")]
    Server(ServerError),
    /// The request never got a complete answer; retry after a delay.
    #[error("network: {kind}: {detail}")]
    Network {
        /// How it failed.
        kind: NetworkFailure,
        /// What the transport reported.
        detail: String,
    },
    /// The answer was not CloudKit JSON (a proxy's HTML page, a truncated or oversized body); retry.
    #[error("unexpected response{}: {detail}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    UnexpectedResponse {
        /// The HTTP status, if one arrived.
        status: Option<u16>,
        /// What arrived instead, briefly.
        detail: String,
    },
    /// The server sent data this client cannot represent (a newer schema, an unknown field type):
    /// halt and ask the user to upgrade the app.
    #[error("incompatible data from the server (upgrade skysync): {0}")]
    Incompatible(ModelError),
    /// The answer was larger than the response size cap (by default [`crate::MAX_RESPONSE_BYTES`],
    /// more than CloudKit's limits allow): reading stopped at the cap, or before the first byte when
    /// the answer declared its length. The server (or something between) misbehaves; retry later
    /// (transient). If the app lowered the cap, lower the change-feed page size with it.
    #[error(
        "the answer (HTTP {status}) is larger than the response size cap of {cap} bytes: {}",
        match declared {
            Some(length) => format!("it declared {length} bytes"),
            None => format!("reading stopped after {read} bytes"),
        }
    )]
    ResponseTooLarge {
        /// The HTTP status of the answer.
        status: u16,
        /// The cap in force, in bytes.
        cap: usize,
        /// The length the answer declared (`content-length`), when that is what was refused.
        declared: Option<u64>,
        /// How many bytes of the body were read before reading stopped (never more than `cap`).
        read: usize,
    },
}

impl CloudError {
    /// What the session does about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            CloudError::Server(e) => e.class(),
            CloudError::Network {
                kind: NetworkFailure::Connect | NetworkFailure::NoAnswer,
                ..
            } => ErrorClass::Offline,
            CloudError::Network { .. }
            | CloudError::UnexpectedResponse { .. }
            | CloudError::ResponseTooLarge { .. } => ErrorClass::Transient,
            CloudError::Incompatible(_) => ErrorClass::Fatal,
        }
    }

    /// The server's requested wait before a retry, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CloudError::Server(e) => e.retry_after,
            _ => None,
        }
    }

    /// The server's error code, if the server stated one.
    pub fn server_code(&self) -> Option<&ServerErrorCode> {
        match self {
            CloudError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The native CKError code closest to this error.
    pub fn ck_error_code(&self) -> CkErrorCode {
        match self {
            CloudError::Server(e) => e.code.ck_error_code(),
            CloudError::Network {
                kind: NetworkFailure::Connect | NetworkFailure::NoAnswer,
                ..
            } => CkErrorCode::NetworkUnavailable,
            CloudError::Network {
                kind: NetworkFailure::Reset,
                ..
            } => CkErrorCode::ServerResponseLost,
            CloudError::Network { .. } => CkErrorCode::NetworkFailure,
            CloudError::UnexpectedResponse { .. } | CloudError::ResponseTooLarge { .. } => {
                CkErrorCode::ServerRejectedRequest
            }
            CloudError::Incompatible(_) => CkErrorCode::IncompatibleVersion,
        }
    }
}
