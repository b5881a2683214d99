//! Server-to-server signed requests over real HTTP: a request signed with a registered P-256 key is
//! served on the public database; every signing mistake, and any signed request to the private
//! database, gets the same `401 AUTHENTICATION_FAILED`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use skysync_devserver::{DevServer, ServerConfig};

const CONTAINER: &str = "iCloud.com.example.skysync";
const KEY_ID: &str = "skysync-test-key";

/// A fixed private scalar: the tests need a key pair, not randomness.
fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

struct Harness {
    server: DevServer,
    client: reqwest::Client,
    key: SigningKey,
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

impl Harness {
    async fn start() -> Harness {
        let key = signing_key(42);
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let config = ServerConfig {
            s2s_keys: vec![(KEY_ID.to_owned(), pem)],
            ..ServerConfig::default()
        };
        let server = DevServer::start(config).await.unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Harness {
            server,
            client,
            key,
        }
    }

    async fn send(&self, request: Signed<'_>) -> reqwest::Response {
        self.send_signed_by(request, &self.key).await
    }

    async fn send_signed_by(&self, request: Signed<'_>, key: &SigningKey) -> reqwest::Response {
        let path = format!(
            "/database/1/{CONTAINER}/development/{}/{}",
            request.database, request.operation
        );
        let date = humantime::format_rfc3339_seconds(request.date).to_string();
        let hash = match request.hash {
            BodyHash::Sha256 => BASE64.encode(Sha256::digest(request.signed_body)),
            BodyHash::Empty => String::new(),
        };
        let signature: Signature = key.sign(format!("{date}:{hash}:{path}").as_bytes());
        let signature = BASE64.encode(signature.to_der().as_bytes());
        self.send_with_headers(
            request.method,
            &path,
            request.sent_body,
            request.key_id,
            &date,
            &signature,
        )
        .await
    }

    async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
        key_id: &str,
        date: &str,
        signature: &str,
    ) -> reqwest::Response {
        let mut builder = self
            .client
            .request(method, format!("{}{path}", self.server.base_url()))
            .header("X-Apple-CloudKit-Request-KeyID", key_id)
            .header("X-Apple-CloudKit-Request-ISO8601Date", date)
            .header("X-Apple-CloudKit-Request-SignatureV1", signature);
        if !body.is_empty() {
            builder = builder
                .header("content-type", "application/json")
                .body(body.to_vec());
        }
        builder.send().await.unwrap()
    }
}

fn query_body() -> Vec<u8> {
    json!({"query": {"recordType": "Artist"}, "resultsLimit": 10})
        .to_string()
        .into_bytes()
}

async fn assert_served(response: reqwest::Response, key: &str) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body[key].is_array(), "{body}");
}

async fn assert_authentication_failed(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["serverErrorCode"], "AUTHENTICATION_FAILED", "{body}");
    assert!(body["uuid"].is_string(), "{body}");
}

#[tokio::test]
async fn a_validly_signed_request_is_served_on_the_public_database() {
    let h = Harness::start().await;
    let body = query_body();
    let response = h
        .send(Signed::new(Method::POST, "public", "records/query", &body))
        .await;
    assert_served(response, "records").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signed_write_to_the_public_database_is_applied() {
    let h = Harness::start().await;
    let create = json!({
        "operations": [{"operationType": "create", "record": {
            "recordName": "signed-1", "recordType": "Artist",
            "fields": {"name": {"value": "Mei Chen", "type": "STRING"}}
        }}]
    })
    .to_string()
    .into_bytes();
    let response = h
        .send(Signed::new(
            Method::POST,
            "public",
            "records/modify",
            &create,
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let saved: Value = response.json().await.unwrap();
    assert_eq!(saved["records"][0]["recordName"], "signed-1", "{saved}");
    assert!(
        saved["records"][0]["recordChangeTag"].is_string(),
        "{saved}"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let h = Harness::start().await;
    let signed = query_body();
    let tampered = json!({"query": {"recordType": "Secret"}, "resultsLimit": 10})
        .to_string()
        .into_bytes();
    let mut request = Signed::new(Method::POST, "public", "records/query", &signed);
    request.sent_body = &tampered;
    assert_authentication_failed(h.send(request).await).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_key_id_is_refused() {
    let h = Harness::start().await;
    let body = query_body();
    let mut request = Signed::new(Method::POST, "public", "records/query", &body);
    request.key_id = "some-other-key";
    assert_authentication_failed(h.send(request).await).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signature_by_an_unregistered_private_key_is_refused() {
    let h = Harness::start().await;
    let body = query_body();
    let request = Signed::new(Method::POST, "public", "records/query", &body);
    assert_authentication_failed(h.send_signed_by(request, &signing_key(43)).await).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_date_more_than_ten_minutes_off_is_refused_either_way() {
    let h = Harness::start().await;
    let body = query_body();
    let eleven_minutes = Duration::from_secs(11 * 60);
    for date in [
        SystemTime::now() - eleven_minutes,
        SystemTime::now() + eleven_minutes,
    ] {
        let mut request = Signed::new(Method::POST, "public", "records/query", &body);
        request.date = date;
        assert_authentication_failed(h.send(request).await).await;
    }
    // A few minutes of skew is tolerated.
    let mut request = Signed::new(Method::POST, "public", "records/query", &body);
    request.date = SystemTime::now() - Duration::from_secs(5 * 60);
    assert_served(h.send(request).await, "records").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_garbage_signature_is_refused() {
    let h = Harness::start().await;
    let body = query_body();
    let path = format!("/database/1/{CONTAINER}/development/public/records/query");
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for garbage in [
        "not base64 at all!",
        BASE64.encode(b"valid base64, not DER").as_str(),
        "",
    ] {
        let response = h
            .send_with_headers(Method::POST, &path, &body, KEY_ID, &date, garbage)
            .await;
        assert_authentication_failed(response).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_valid_signature_on_the_private_database_is_refused() {
    let h = Harness::start().await;
    let body = query_body();
    let query = Signed::new(Method::POST, "private", "records/query", &body);
    assert_authentication_failed(h.send(query).await).await;
    let mut list = Signed::new(Method::GET, "private", "zones/list", b"");
    list.hash = BodyHash::Empty;
    assert_authentication_failed(h.send(list).await).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_empty_body_get_may_sign_an_empty_hash_or_the_hash_of_nothing() {
    let h = Harness::start().await;
    let mut empty_hash = Signed::new(Method::GET, "public", "zones/list", b"");
    empty_hash.hash = BodyHash::Empty;
    assert_served(h.send(empty_hash).await, "zones").await;

    let hashed_nothing = Signed::new(Method::GET, "public", "zones/list", b"");
    assert_served(h.send(hashed_nothing).await, "zones").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_signature_for_another_path_is_refused() {
    let h = Harness::start().await;
    let path = format!("/database/1/{CONTAINER}/development/public/zones/list");
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let other = format!("/database/1/{CONTAINER}/development/public/subscriptions/list");
    let signature: Signature = h.key.sign(format!("{date}::{other}").as_bytes());
    let signature = BASE64.encode(signature.to_der().as_bytes());
    let response = h
        .send_with_headers(Method::GET, &path, b"", KEY_ID, &date, &signature)
        .await;
    assert_authentication_failed(response).await;
    h.server.shutdown().await.unwrap();
}
