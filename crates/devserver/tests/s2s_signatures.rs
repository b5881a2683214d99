//! Server-to-server signed requests over real HTTP: a request signed with a registered P-256 key is
//! served on the public database; every signing mistake, and any signed request to the private
//! database, gets the same `401 AUTHENTICATION_FAILED`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Answer, Harness, database_path};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use skysync_devserver::ServerConfig;

const KEY_ID: &str = "skysync-test-key";

/// A fixed private scalar: the tests need a key pair, not randomness.
fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

/// The key whose public half the server trusts under [`KEY_ID`].
fn registered_key() -> SigningKey {
    signing_key(42)
}

/// The hash field of the string to sign.
enum BodyHash {
    /// base64(sha256(body)), what a request with a body uses.
    Sha256,
    /// The empty string, what MistKit sends for a body-less GET.
    Empty,
}

/// What to sign, and how to send it.
struct Signed<'a> {
    method: Method,
    database: &'a str,
    operation: &'a str,
    /// The body the signature covers.
    signed_body: &'a [u8],
    /// The body actually sent (differs from `signed_body` to tamper).
    sent_body: &'a [u8],
    hash: BodyHash,
    key_id: &'a str,
    date: SystemTime,
}

impl<'a> Signed<'a> {
    fn new(method: Method, database: &'a str, operation: &'a str, body: &'a [u8]) -> Self {
        Signed {
            method,
            database,
            operation,
            signed_body: body,
            sent_body: body,
            hash: BodyHash::Sha256,
            key_id: KEY_ID,
            date: SystemTime::now(),
        }
    }
}

/// A server that trusts [`registered_key`] under [`KEY_ID`].
async fn start() -> Harness {
    let pem = registered_key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Harness::with_config(ServerConfig {
        s2s_keys: vec![(KEY_ID.to_owned(), pem)],
        ..ServerConfig::default()
    })
    .await
}

/// Signs `request` with the registered key and sends it.
async fn send(h: &Harness, request: Signed<'_>) -> Answer {
    send_signed_by(h, request, &registered_key()).await
}

/// Signs `request` with `key` and sends it.
async fn send_signed_by(h: &Harness, request: Signed<'_>, key: &SigningKey) -> Answer {
    let path = database_path(request.database, request.operation);
    let date = humantime::format_rfc3339_seconds(request.date).to_string();
    let hash = match request.hash {
        BodyHash::Sha256 => BASE64.encode(Sha256::digest(request.signed_body)),
        BodyHash::Empty => String::new(),
    };
    let signature: Signature = key.sign(format!("{date}:{hash}:{path}").as_bytes());
    let signature = BASE64.encode(signature.to_der().as_bytes());
    send_with_signature(
        h,
        request.method,
        &path,
        request.sent_body,
        request.key_id,
        &date,
        &signature,
    )
    .await
}

/// Sends `body` (none if empty) to `path` with these server-to-server headers, as they are.
async fn send_with_signature(
    h: &Harness,
    method: Method,
    path: &str,
    body: &[u8],
    key_id: &str,
    date: &str,
    signature: &str,
) -> Answer {
    let headers = [
        ("X-Apple-CloudKit-Request-KeyID", key_id),
        ("X-Apple-CloudKit-Request-ISO8601Date", date),
        ("X-Apple-CloudKit-Request-SignatureV1", signature),
    ];
    let body = (!body.is_empty()).then(|| body.to_vec());
    h.send_with_headers(method, &h.url(path), &headers, body)
        .await
}

fn query_body() -> Vec<u8> {
    json!({"query": {"recordType": "Artist"}, "resultsLimit": 10})
        .to_string()
        .into_bytes()
}

fn assert_served(answer: &Answer, key: &str) {
    let body = &answer.body;
    assert_eq!(answer.status, StatusCode::OK, "{body}");
    assert!(body[key].is_array(), "{body}");
}

fn assert_authentication_failed(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let body = &answer.body;
    assert_eq!(body["serverErrorCode"], "AUTHENTICATION_FAILED", "{body}");
    assert!(body["uuid"].is_string(), "{body}");
}

#[tokio::test]
async fn a_validly_signed_request_is_served_on_the_public_database() {
    let h = start().await;
    let body = query_body();
    let answer = send(
        &h,
        Signed::new(Method::POST, "public", "records/query", &body),
    )
    .await;
    assert_served(&answer, "records");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signed_write_to_the_public_database_is_applied() {
    let h = start().await;
    let create = json!({
        "operations": [{"operationType": "create", "record": {
            "recordName": "signed-1", "recordType": "Artist",
            "fields": {"name": {"value": "Mei Chen", "type": "STRING"}}
        }}]
    })
    .to_string()
    .into_bytes();
    let answer = send(
        &h,
        Signed::new(Method::POST, "public", "records/modify", &create),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let saved = &answer.body;
    assert_eq!(saved["records"][0]["recordName"], "signed-1", "{saved}");
    assert!(
        saved["records"][0]["recordChangeTag"].is_string(),
        "{saved}"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let h = start().await;
    let signed = query_body();
    let tampered = json!({"query": {"recordType": "Secret"}, "resultsLimit": 10})
        .to_string()
        .into_bytes();
    let mut request = Signed::new(Method::POST, "public", "records/query", &signed);
    request.sent_body = &tampered;
    assert_authentication_failed(&send(&h, request).await);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_key_id_is_refused() {
    let h = start().await;
    let body = query_body();
    let mut request = Signed::new(Method::POST, "public", "records/query", &body);
    request.key_id = "some-other-key";
    assert_authentication_failed(&send(&h, request).await);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signature_by_an_unregistered_private_key_is_refused() {
    let h = start().await;
    let body = query_body();
    let request = Signed::new(Method::POST, "public", "records/query", &body);
    assert_authentication_failed(&send_signed_by(&h, request, &signing_key(43)).await);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_date_more_than_ten_minutes_off_is_refused_either_way() {
    let h = start().await;
    let body = query_body();
    let eleven_minutes = Duration::from_secs(11 * 60);
    for date in [
        SystemTime::now() - eleven_minutes,
        SystemTime::now() + eleven_minutes,
    ] {
        let mut request = Signed::new(Method::POST, "public", "records/query", &body);
        request.date = date;
        assert_authentication_failed(&send(&h, request).await);
    }
    // A few minutes of skew is tolerated.
    let mut request = Signed::new(Method::POST, "public", "records/query", &body);
    request.date = SystemTime::now() - Duration::from_secs(5 * 60);
    assert_served(&send(&h, request).await, "records");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_garbage_signature_is_refused() {
    let h = start().await;
    let body = query_body();
    let path = database_path("public", "records/query");
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for garbage in [
        "not base64 at all!",
        BASE64.encode(b"valid base64, not DER").as_str(),
        "",
    ] {
        let answer =
            send_with_signature(&h, Method::POST, &path, &body, KEY_ID, &date, garbage).await;
        assert_authentication_failed(&answer);
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_valid_signature_on_the_private_database_is_refused() {
    let h = start().await;
    let body = query_body();
    let query = Signed::new(Method::POST, "private", "records/query", &body);
    assert_authentication_failed(&send(&h, query).await);
    let mut list = Signed::new(Method::GET, "private", "zones/list", b"");
    list.hash = BodyHash::Empty;
    assert_authentication_failed(&send(&h, list).await);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_empty_body_get_may_sign_an_empty_hash_or_the_hash_of_nothing() {
    let h = start().await;
    let mut empty_hash = Signed::new(Method::GET, "public", "zones/list", b"");
    empty_hash.hash = BodyHash::Empty;
    assert_served(&send(&h, empty_hash).await, "zones");

    let hashed_nothing = Signed::new(Method::GET, "public", "zones/list", b"");
    assert_served(&send(&h, hashed_nothing).await, "zones");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signature_for_another_path_is_refused() {
    let h = start().await;
    let path = database_path("public", "zones/list");
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let other = database_path("public", "subscriptions/list");
    let signature: Signature = registered_key().sign(format!("{date}::{other}").as_bytes());
    let signature = BASE64.encode(signature.to_der().as_bytes());
    let answer = send_with_signature(&h, Method::GET, &path, b"", KEY_ID, &date, &signature).await;
    assert_authentication_failed(&answer);
    h.server.shutdown().await.unwrap();
}
