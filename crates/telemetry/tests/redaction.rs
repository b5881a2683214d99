//! The redaction helper removes tokens, keys and signatures from URLs, headers, JSON and messages,
//! and leaves everything else alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;

use skysync_telemetry::{Redacted, redact};

#[test]
fn query_tokens_are_removed_from_urls() {
    let url = "https://api.apple-cloudkit.com/database/1/iCloud.x/development/private/records/modify?ckAPIToken=api%2B1%2F2%3D&ckWebAuthToken=106__54__ab%2Bcd%2Fef%3D%3D";
    let shown = redact(url);
    assert_eq!(
        shown,
        "https://api.apple-cloudkit.com/database/1/iCloud.x/development/private/records/modify?ckAPIToken=[redacted]&ckWebAuthToken=[redacted]"
    );
}

#[test]
fn headers_and_bearer_credentials_are_removed() {
    let text = "X-Apple-CloudKit-Request-KeyID: 9f1e\nX-Apple-CloudKit-Request-SignatureV1: MEUCIQ+/=\nX-Apple-CloudKit-Web-Auth-Token: skysync-wat.0123.nonce\nauthorization: Bearer abc.def";
    let shown = redact(text);
    for secret in ["9f1e", "MEUCIQ", "0123", "abc.def"] {
        assert!(!shown.contains(secret), "{secret} left in {shown}");
    }
    assert!(
        shown.contains("authorization: Bearer [redacted]"),
        "{shown}"
    );
    assert_eq!(
        redact("token rejected: Bearer xyz123"),
        "token rejected: Bearer [redacted]"
    );
}

#[test]
fn json_and_messages_lose_their_tokens() {
    let body =
        r#"{"ckWebAuthToken":"106__54__secret","serverErrorCode":"AUTHENTICATION_REQUIRED"}"#;
    assert_eq!(
        redact(body),
        r#"{"ckWebAuthToken":"[redacted]","serverErrorCode":"AUTHENTICATION_REQUIRED"}"#
    );
    let message = "sign in failed for skysync-wat.00112233445566778899aabbccddeeff.n1, try again";
    assert_eq!(redact(message), "sign in failed for [redacted], try again");
    assert_eq!(
        Redacted("ckapitoken = 'k1'; retry").to_string(),
        "ckapitoken = '[redacted]'; retry"
    );
}

#[test]
fn text_without_secrets_is_untouched_and_borrowed() {
    for text in [
        "zone Notes: 3 records sent, change token AQAAAAAAA==",
        "the Authorization header was missing",
        "ckWebAuthTokenX=keep",
        "",
    ] {
        assert!(
            matches!(redact(text), Cow::Borrowed(t) if t == text),
            "{text}"
        );
    }
}
