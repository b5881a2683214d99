//! DESIGN.md's error table, row by row: every server code, at request and item scope, maps to the
//! action the session takes; codes keep their HTTP status and CKError number.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skysync_model::wire::ErrorBody;
use skysync_model::{
    CkErrorCode, CloudError, ErrorClass, ErrorScope, ModelError, NetworkFailure, ServerErrorCode,
};

use ErrorClass as A;
use ServerErrorCode as C;

/// (code, HTTP status, class at request scope, class at item scope, CKError)
fn table() -> Vec<(C, u16, A, A, CkErrorCode)> {
    vec![
        (
            C::AccessDenied,
            403,
            A::Fatal,
            A::Fatal,
            CkErrorCode::PermissionFailure,
        ),
        (
            C::AtomicError,
            400,
            A::Transient,
            A::Transient,
            CkErrorCode::BatchRequestFailed,
        ),
        (
            C::AuthenticationFailed,
            401,
            A::Fatal,
            A::Fatal,
            CkErrorCode::NotAuthenticated,
        ),
        (
            C::AuthenticationRequired,
            421,
            A::Fatal,
            A::Fatal,
            CkErrorCode::NotAuthenticated,
        ),
        (
            C::BadRequest,
            400,
            A::Fatal,
            A::ItemRejected,
            CkErrorCode::InvalidArguments,
        ),
        (
            C::Conflict,
            409,
            A::Conflict,
            A::Conflict,
            CkErrorCode::ServerRecordChanged,
        ),
        (
            C::Exists,
            409,
            A::Conflict,
            A::Conflict,
            CkErrorCode::ServerRecordChanged,
        ),
        (
            C::InternalError,
            500,
            A::Transient,
            A::Transient,
            CkErrorCode::InternalError,
        ),
        (
            C::NotFound,
            404,
            A::Fatal,
            A::ItemRejected,
            CkErrorCode::UnknownItem,
        ),
        (
            C::QuotaExceeded,
            413,
            A::Fatal,
            A::Fatal,
            CkErrorCode::QuotaExceeded,
        ),
        (
            C::Throttled,
            429,
            A::Throttled,
            A::Throttled,
            CkErrorCode::RequestRateLimited,
        ),
        (
            C::TryAgainLater,
            503,
            A::Transient,
            A::Transient,
            CkErrorCode::ServiceUnavailable,
        ),
        (
            C::ValidatingReferenceError,
            412,
            A::Fatal,
            A::ItemRejected,
            CkErrorCode::ReferenceViolation,
        ),
        (
            C::ZoneNotFound,
            404,
            A::ZoneGone,
            A::ZoneGone,
            CkErrorCode::ZoneNotFound,
        ),
        (
            C::UniqueFieldError,
            409,
            A::Fatal,
            A::ItemRejected,
            CkErrorCode::ConstraintViolation,
        ),
        (
            C::ZoneBusy,
            503,
            A::Transient,
            A::Transient,
            CkErrorCode::ZoneBusy,
        ),
        (
            C::LimitExceeded,
            413,
            A::TooLarge,
            A::TooLarge,
            CkErrorCode::LimitExceeded,
        ),
        (
            C::ChangeTokenExpired,
            410,
            A::TokenExpired,
            A::TokenExpired,
            CkErrorCode::ChangeTokenExpired,
        ),
    ]
}

#[test]
fn every_known_code_is_classified_as_the_design_says() {
    let rows = table();
    assert_eq!(
        rows.len(),
        ServerErrorCode::KNOWN.len(),
        "a known code has no row"
    );
    for (code, status, request, item, ck) in rows {
        assert_eq!(code.http_status(), status, "{code}");
        assert_eq!(
            code.classify(ErrorScope::Request),
            request,
            "{code} (request)"
        );
        assert_eq!(code.classify(ErrorScope::Item), item, "{code} (item)");
        assert_eq!(code.ck_error_code(), ck, "{code}");
        assert_eq!(
            ServerErrorCode::parse(code.as_str()),
            code,
            "{code} round-trips"
        );
    }
}

/// A number for each variant, from 0 up, and `None` for the catch-all. The match names every
/// variant and has no wildcard, so a new variant does not compile until it is numbered here: give
/// it the next number, raise [`VARIANTS`], and the test below fails until the variant is in
/// [`ServerErrorCode::KNOWN`].
fn number_of(code: &C) -> Option<usize> {
    Some(match code {
        C::AccessDenied => 0,
        C::AtomicError => 1,
        C::AuthenticationFailed => 2,
        C::AuthenticationRequired => 3,
        C::BadRequest => 4,
        C::Conflict => 5,
        C::Exists => 6,
        C::InternalError => 7,
        C::NotFound => 8,
        C::QuotaExceeded => 9,
        C::Throttled => 10,
        C::TryAgainLater => 11,
        C::ValidatingReferenceError => 12,
        C::ZoneNotFound => 13,
        C::UniqueFieldError => 14,
        C::ZoneBusy => 15,
        C::LimitExceeded => 16,
        C::ChangeTokenExpired => 17,
        C::Other(_) => return None,
    })
}

/// How many variants `number_of` numbers: its highest number plus one.
const VARIANTS: usize = 18;

#[test]
fn the_list_of_known_codes_holds_every_variant_once() {
    // Tests (the fault matrix among them) iterate `KNOWN` to cover every code: a variant missing
    // from it would be parsed as `Other` and never tested.
    let mut numbers: Vec<usize> = C::KNOWN
        .iter()
        .map(|code| number_of(code).unwrap_or_else(|| panic!("{code} is the catch-all")))
        .collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (0..VARIANTS).collect::<Vec<_>>(),
        "ServerErrorCode::KNOWN must list every variant once (numbered as in `number_of`)"
    );
    assert_eq!(number_of(&C::Other("SOMETHING_NEW".into())), None);
}

#[test]
fn an_unknown_code_is_kept_verbatim_and_is_fatal() {
    let body: ErrorBody = serde_json::from_str(
        r#"{"uuid":"u","serverErrorCode":"SOMETHING_NEW","reason":"from the future"}"#,
    )
    .unwrap();
    assert_eq!(body.server_error_code, C::Other("SOMETHING_NEW".into()));
    assert_eq!(
        serde_json::to_value(&body).unwrap()["serverErrorCode"],
        "SOMETHING_NEW"
    );
    let error = CloudError::Server(body.to_server_error(500));
    assert_eq!(error.class(), A::Fatal, "never guess at an unknown failure");
}

#[test]
fn transport_failures_are_transient_or_offline_and_incompatible_data_is_fatal() {
    let refused = CloudError::Network {
        kind: NetworkFailure::Connect,
        detail: "connection refused".into(),
    };
    assert_eq!(
        refused.class(),
        A::Offline,
        "no connection is offline, not a failure"
    );
    let silent = CloudError::Network {
        kind: NetworkFailure::NoAnswer,
        detail: "no answer within 30 s".into(),
    };
    assert_eq!(
        silent.class(),
        A::Offline,
        "not a byte of an answer in time: the server is unreachable as far as we can tell"
    );
    for kind in [
        NetworkFailure::Timeout,
        NetworkFailure::Reset,
        NetworkFailure::Other,
    ] {
        let e = CloudError::Network {
            kind,
            detail: "x".into(),
        };
        assert_eq!(e.class(), A::Transient);
    }
    let html = CloudError::UnexpectedResponse {
        status: Some(502),
        detail: "text/html: <html>Bad Gateway".into(),
    };
    assert_eq!(html.class(), A::Transient);
    assert!(html.to_string().contains("HTTP 502"));
    // An answer over the size cap is a server misbehaving: neither offline nor throttled.
    let endless = CloudError::ResponseTooLarge {
        status: 200,
        cap: skysync_model::MAX_RESPONSE_BYTES,
        declared: None,
        read: 1024,
    };
    assert_eq!(endless.class(), A::Transient);
    assert_eq!(endless.retry_after(), None);
    assert!(
        endless
            .to_string()
            .contains("reading stopped after 1024 bytes")
    );
    let declared = CloudError::ResponseTooLarge {
        status: 200,
        cap: 1024,
        declared: Some(1 << 30),
        read: 0,
    };
    assert!(declared.to_string().contains("declared 1073741824 bytes"));
    let newer = CloudError::Incompatible(ModelError::UnknownFieldType {
        field: "f".into(),
        type_name: "HOLOGRAM".into(),
    });
    assert_eq!(newer.class(), A::Fatal);
    assert_eq!(newer.ck_error_code(), CkErrorCode::IncompatibleVersion);
}

#[test]
fn retry_after_is_carried_to_the_typed_error() {
    let body: ErrorBody = serde_json::from_str(
        r#"{"serverErrorCode":"THROTTLED","reason":"slow down","retryAfter":30}"#,
    )
    .unwrap();
    let error = CloudError::Server(body.to_server_error(429));
    assert_eq!(
        error.retry_after(),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(error.class(), A::Throttled);
    assert_eq!(CkErrorCode::RequestRateLimited.number(), 7);
}

#[test]
fn a_503_or_zone_busy_is_throttled_only_with_a_retry_after() {
    for (code, status) in [("TRY_AGAIN_LATER", 503), ("ZONE_BUSY", 503)] {
        let with: ErrorBody = serde_json::from_str(&format!(
            r#"{{"serverErrorCode":"{code}","reason":"busy","retryAfter":12}}"#
        ))
        .unwrap();
        let without: ErrorBody = serde_json::from_str(&format!(
            r#"{{"serverErrorCode":"{code}","reason":"busy"}}"#
        ))
        .unwrap();
        assert_eq!(
            CloudError::Server(with.to_server_error(status)).class(),
            A::Throttled,
            "{code} with retryAfter is the server asking to slow down"
        );
        assert_eq!(
            CloudError::Server(without.to_server_error(status)).class(),
            A::Transient,
            "{code} without retryAfter is a passing failure, not a rate signal"
        );
    }
    let internal: ErrorBody = serde_json::from_str(
        r#"{"serverErrorCode":"INTERNAL_ERROR","reason":"oops","retryAfter":5}"#,
    )
    .unwrap();
    assert_eq!(
        CloudError::Server(internal.to_server_error(500)).class(),
        A::Transient
    );
}
