//! Golden tests: the bytes the client puts on the wire (bodies, string to sign, signatures, headers,
//! the percent-encoded query) match the protocol contract exactly. The wire tests capture real HTTP
//! requests on 127.0.0.1 with a one-shot listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use skysync_model::{ChangeTag, PendingChange, Record, RecordId, Stamp, SystemFields, ZoneId};
use skysync_transport::auth::{encode_query_value, string_to_sign};
use skysync_transport::{
    Auth, CloudDatabase, CloudKitClient, DatabaseScope, ModifyBatch, ModifyOutcome,
    RequestSignature, ServerKey, WebAuthToken,
};
use std::sync::Arc;

mod common;
use common::{Canned, capture};

/// A P-256 key made with `openssl ecparam -name prime256v1 -genkey -noout` (SEC1 PEM).
const SEC1_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIER76+U0frL4ugEe7eWtGBgCjMrs6fV1lsR5n22dknPboAoGCCqGSM49
AwEHoUQDQgAEPSRT9E51hP9n1s4FRx/qhcDuD+Rbkvk0+aU6uDE/F8sMxXORN+/e
cG9jXKVkrGfElLZAg3TvZrD4Hw8yp0YuNQ==
-----END EC PRIVATE KEY-----
";

/// The same key as PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`).
const PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRHvr5TR+svi6AR7t
5a0YGAKMyuzp9XWWxHmfbZ2Sc9uhRANCAAQ9JFP0TnWE/2fWzgVHH+qFwO4P5FuS
+TT5pTq4MT8XywzFc5E3795wb2NcpWSsZ8SUtkCDdO9msPgfDzKnRi41
-----END PRIVATE KEY-----
";

/// Its public half (`openssl ec -pubout`).
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPSRT9E51hP9n1s4FRx/qhcDuD+Rb
kvk0+aU6uDE/F8sMxXORN+/ecG9jXKVkrGfElLZAg3TvZrD4Hw8yp0YuNQ==
-----END PUBLIC KEY-----
";

const DATE: &str = "2016-01-25T22:15:43Z";
const LOOKUP_PATH: &str =
    "/database/1/iCloud.com.example.gkumar.MyApp/development/public/records/lookup";
const LOOKUP_BODY: &str = r#"{"records":[{"recordName":"n1"}],"zoneID":{"zoneName":"Notes"}}"#;
/// `printf '%s' "$LOOKUP_BODY" | openssl dgst -sha256 -binary | base64`
const LOOKUP_BODY_SHA256: &str = "a+6y+WfIkSN4I93YQUl7Ckc4og9swgvmw8XzfsfnB5A=";
/// `openssl dgst -sha256 -sign eckey.pem` over the POST string to sign, base64: an independent
/// signer's DER signature of the same text.
const OPENSSL_SIGNATURE: &str = "MEYCIQD/r0NHYGmemd7HZcK7hAIOdDBvxN6CiFCzP6qQVqRDMAIhAKLa8gEu6YNwL6aWq84JtI3eXhzynOPeJRTYL3WiLC8s";

/// Our (RFC 6979, deterministic) signature of the same text, checked once with
/// `openssl dgst -sha256 -verify pub.pem -signature sig.der` ("Verified OK").
const OUR_SIGNATURE: &str = "MEUCIAXI7SC1L2RS9MYhYdv70kaiWH1VeKjLuNWKLZF32AiKAiEAhbB9BgTOZL54Tl4jJSGw03eegzru4j3e99IctbKOO9I=";

fn verifying_key() -> VerifyingKey {
    use p256::pkcs8::DecodePublicKey as _;
    VerifyingKey::from_public_key_pem(PUBLIC_PEM).unwrap()
}

fn verify(signature_b64: &str, message: &str) -> bool {
    let der = BASE64.decode(signature_b64).unwrap();
    let signature = Signature::from_der(&der).unwrap();
    verifying_key()
        .verify(message.as_bytes(), &signature)
        .is_ok()
}

#[test]
fn string_to_sign_for_a_post_hashes_the_exact_body() {
    assert_eq!(
        string_to_sign(DATE, Some(LOOKUP_BODY.as_bytes()), LOOKUP_PATH),
        format!("{DATE}:{LOOKUP_BODY_SHA256}:{LOOKUP_PATH}")
    );
}

#[test]
fn string_to_sign_for_a_get_leaves_the_hash_empty() {
    let path = "/database/1/iCloud.com.example.App/development/public/zones/list";
    assert_eq!(string_to_sign(DATE, None, path), format!("{DATE}::{path}"));
    // An empty body is still a body: its hash is SHA-256 of nothing.
    assert_eq!(
        string_to_sign(DATE, Some(b""), path),
        format!("{DATE}:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:{path}")
    );
}

#[test]
fn signature_is_der_base64_that_p256_verifies_like_openssls() {
    let key = ServerKey::from_pem("key-1", SEC1_PEM).unwrap();
    let signed = key.sign(DATE, Some(LOOKUP_BODY.as_bytes()), LOOKUP_PATH);
    let message = format!("{DATE}:{LOOKUP_BODY_SHA256}:{LOOKUP_PATH}");
    assert_eq!(signed.key_id, "key-1");
    assert_eq!(signed.date, DATE);
    assert!(
        verify(&signed.signature, &message),
        "our signature must verify"
    );
    assert_eq!(
        signed.signature, OUR_SIGNATURE,
        "byte for byte what openssl verified"
    );
    // DER: a SEQUENCE (0x30) of two INTEGERs.
    let der = BASE64.decode(&signed.signature).unwrap();
    assert_eq!(der[0], 0x30);
    assert_eq!(usize::from(der[1]) + 2, der.len());
    // The same verifier accepts an independent signer's signature in the same encoding...
    assert!(verify(OPENSSL_SIGNATURE, &message));
    // ...and rejects a signature over any other text.
    assert!(!verify(
        &signed.signature,
        &message.replace("lookup", "modify")
    ));
}

#[test]
fn signing_is_deterministic_so_equal_inputs_give_equal_headers() {
    let key = ServerKey::from_pem("key-1", SEC1_PEM).unwrap();
    let a = key.sign(DATE, None, LOOKUP_PATH);
    let b = key.sign(DATE, None, LOOKUP_PATH);
    assert_eq!(a, b);
    assert_ne!(
        a.signature,
        key.sign(DATE, Some(b""), LOOKUP_PATH).signature
    );
}

#[test]
fn sec1_pkcs8_and_der_forms_load_the_same_key() {
    let sec1 = ServerKey::from_pem("k", SEC1_PEM).unwrap();
    let pkcs8 = ServerKey::from_pem("k", PKCS8_PEM).unwrap();
    let from_bytes = ServerKey::from_bytes("k", PKCS8_PEM.as_bytes()).unwrap();
    assert_eq!(sec1.verifying_key(), verifying_key());
    assert_eq!(pkcs8.verifying_key(), verifying_key());
    assert_eq!(from_bytes.verifying_key(), verifying_key());
    assert_eq!(sec1.public_key_pem().unwrap().trim(), PUBLIC_PEM.trim());
    let der_body: String = SEC1_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = BASE64.decode(der_body).unwrap();
    assert_eq!(
        ServerKey::from_bytes("k", &der).unwrap().verifying_key(),
        verifying_key()
    );
}

#[test]
fn bad_keys_are_typed_errors_that_never_echo_the_key() {
    use skysync_transport::TransportError;
    let garbled = SEC1_PEM.replace("MHcCAQEE", "MHcCAQEX");
    for bad in [PUBLIC_PEM, "not a key", garbled.as_str()] {
        let err = ServerKey::from_pem("k", bad).unwrap_err();
        assert!(matches!(err, TransportError::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("MHcC"), "{err}");
    }
    assert!(matches!(
        ServerKey::from_pem("", SEC1_PEM).unwrap_err(),
        TransportError::BadSetting { .. }
    ));
    let key = ServerKey::from_pem("k", SEC1_PEM).unwrap();
    let shown = format!("{key:?}");
    assert!(
        !shown.contains("MHcC") && shown.contains("<redacted>"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_missing_key_file_is_a_typed_error() {
    let err = ServerKey::from_pem_file("k", "/nonexistent/skysync/eckey.pem")
        .await
        .unwrap_err();
    assert!(
        matches!(err, skysync_transport::TransportError::KeyFile { .. }),
        "{err}"
    );
}

#[test]
fn web_auth_tokens_percent_encode_plus_slash_and_equals() {
    assert_eq!(encode_query_value("a+b/c="), "a%2Bb%2Fc%3D");
    assert_eq!(
        encode_query_value("106__54__QUJD+ZGVm/Z2hp==__eyJ0IjoxfQ=="),
        "106__54__QUJD%2BZGVm%2FZ2hp%3D%3D__eyJ0IjoxfQ%3D%3D"
    );
    // Nothing else of a base64 token changes; a space would be %20, never `+`.
    assert_eq!(encode_query_value("AZaz09-._~"), "AZaz09-._~");
    assert_eq!(encode_query_value("a b"), "a%20b");
}

fn zone() -> ZoneId {
    ZoneId::new("Notes")
}

fn stamp(ms: i64) -> Stamp {
    Stamp {
        timestamp_ms: ms,
        user_record_name: Some("_u1".into()),
        device_id: Some("iCloud".into()),
    }
}

/// A batch with each of the four operation kinds the session sends.
fn golden_batch() -> ModifyBatch {
    let created = Record::new(RecordId::new(zone(), "n1"), "Note")
        .with("title", "Groceries")
        .with("count", 3);
    let mut updated = Record::new(RecordId::new(zone(), "n2"), "Note").with("pinned", true);
    updated.clear("body");
    updated.system = Some(SystemFields {
        change_tag: ChangeTag("e".into()),
        created: Some(stamp(1_422_312_944_104)),
        modified: Some(stamp(1_422_312_944_105)),
        deleted: false,
    });
    ModifyBatch::new(
        zone(),
        vec![
            PendingChange::Save(created),
            PendingChange::Save(updated),
            PendingChange::Delete {
                id: RecordId::new(zone(), "n3"),
                change_tag: Some(ChangeTag("1e".into())),
            },
            PendingChange::Delete {
                id: RecordId::new(zone(), "n4"),
                change_tag: None,
            },
        ],
    )
    .unwrap()
    .atomic(true)
}

/// The exact `records/modify` body for [`golden_batch`]: `create` without a tag, `update` with it
/// (response-only stamps left out, a cleared field as `{"value":null}`), `delete` with a tag,
/// `forceDelete` without one, the zone, `atomic`, and `desiredKeys: []`.
const GOLDEN_MODIFY_BODY: &str = concat!(
    r#"{"operations":["#,
    r#"{"operationType":"create","record":{"recordName":"n1","recordType":"Note","fields":{"count":{"value":3,"type":"INT64"},"title":{"value":"Groceries","type":"STRING"}}}},"#,
    r#"{"operationType":"update","record":{"recordName":"n2","recordType":"Note","recordChangeTag":"e","fields":{"body":{"value":null},"pinned":{"value":1,"type":"INT64"}}}},"#,
    r#"{"operationType":"delete","record":{"recordName":"n3","recordChangeTag":"1e"}},"#,
    r#"{"operationType":"forceDelete","record":{"recordName":"n4"}}"#,
    r#"],"zoneID":{"zoneName":"Notes"},"atomic":true,"desiredKeys":[]}"#,
);

#[test]
fn modify_body_matches_the_golden_text() {
    let body = serde_json::to_string(&golden_batch().to_request()).unwrap();
    assert_eq!(body, GOLDEN_MODIFY_BODY);
}

#[test]
fn a_batch_with_a_record_of_another_zone_is_refused() {
    let stray = Record::new(RecordId::new(ZoneId::new("Other"), "x"), "Note");
    let err = ModifyBatch::new(zone(), vec![PendingChange::Save(stray)]).unwrap_err();
    assert!(
        matches!(err, skysync_transport::TransportError::MixedZones { .. }),
        "{err}"
    );
}

// On the wire: a one-shot HTTP listener on 127.0.0.1 records what the client sends.

fn is_iso8601_without_ms(date: &str) -> bool {
    let b = date.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

const MODIFY_ANSWER: &str = r#"{"records":[
  {"recordName":"n1","recordType":"Note","recordChangeTag":"a1","created":{"timestamp":1,"userRecordName":"_s2s","deviceID":"d"},"modified":{"timestamp":2,"userRecordName":"_s2s","deviceID":"d"}},
  {"recordName":"n2","recordType":"Note","recordChangeTag":"f"},
  {"recordName":"n3","deleted":true},
  {"recordName":"n4","deleted":true}
]}"#;

#[tokio::test]
async fn server_to_server_requests_carry_a_verifiable_signature_over_the_exact_body() {
    let (base, served) = capture(vec![
        Canned::ok(MODIFY_ANSWER),
        Canned::ok(r#"{"users":[{"userRecordName":"_s2s"}]}"#),
    ])
    .await;
    let key = ServerKey::from_pem("key-1", SEC1_PEM).unwrap();
    let client = CloudKitClient::builder("iCloud.com.example.App", Auth::ServerToServer(key))
        .base_url(&base)
        .database(DatabaseScope::Public)
        .build()
        .unwrap();
    let outcomes = client.modify_records(golden_batch()).await.unwrap();
    assert!(
        matches!(&outcomes[0], ModifyOutcome::Saved { system, .. } if system.change_tag.0 == "a1")
    );
    assert!(matches!(&outcomes[2], ModifyOutcome::Deleted { .. }));
    let user = client.current_user().await.unwrap();
    assert_eq!(user.user_record_name, "_s2s");

    let seen = served.await.unwrap();
    let post = &seen[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.path(),
        "/database/1/iCloud.com.example.App/development/public/records/modify"
    );
    assert_eq!(
        post.query(),
        None,
        "no API token with a server-to-server key"
    );
    assert_eq!(
        String::from_utf8(post.body.clone()).unwrap(),
        GOLDEN_MODIFY_BODY
    );
    assert_eq!(
        post.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(post.header(RequestSignature::KEY_ID_HEADER), Some("key-1"));
    let date = post.header(RequestSignature::DATE_HEADER).unwrap();
    assert!(is_iso8601_without_ms(date), "{date}");
    let signature = post.header(RequestSignature::SIGNATURE_HEADER).unwrap();
    assert!(verify(
        signature,
        &string_to_sign(date, Some(&post.body), post.path())
    ));

    let get = &seen[1];
    assert_eq!(get.method, "GET");
    assert_eq!(
        get.path(),
        "/database/1/iCloud.com.example.App/development/public/users/caller"
    );
    assert!(get.body.is_empty());
    let date = get.header(RequestSignature::DATE_HEADER).unwrap();
    let signature = get.header(RequestSignature::SIGNATURE_HEADER).unwrap();
    let expected = format!("{date}::{}", get.path());
    assert_eq!(string_to_sign(date, None, get.path()), expected);
    assert!(
        verify(signature, &expected),
        "a GET signs an empty hash field"
    );
}

#[tokio::test]
async fn web_auth_requests_send_encoded_tokens_and_take_up_the_rotated_one() {
    let rotated = "106__54__NEW+token/xy==";
    let (base, served) = capture(vec![
        Canned {
            headers: vec![("X-Apple-CloudKit-Web-Auth-Token", rotated.to_owned())],
            ..Canned::ok(r#"{"zones":[{"zoneID":{"zoneName":"Notes"},"syncToken":"z1"}]}"#)
        },
        Canned::ok(r#"{"users":[{"userRecordName":"_me"}]}"#),
    ])
    .await;
    let (sink, mut seen_tokens) = tokio::sync::mpsc::unbounded_channel();
    let auth = Auth::web("api+key", "106__54__OLD+token/ab==").with_rotation_callback(Arc::new(
        move |token: &WebAuthToken| sink.send(token.expose().to_owned()).unwrap(),
    ));
    let client = CloudKitClient::builder("iCloud.com.example.App", auth)
        .base_url(&base)
        .build()
        .unwrap();
    client.ensure_zones(vec![zone()]).await.unwrap();
    client.current_user().await.unwrap();

    let seen = served.await.unwrap();
    assert_eq!(
        seen[0].query(),
        Some("ckAPIToken=api%2Bkey&ckWebAuthToken=106__54__OLD%2Btoken%2Fab%3D%3D")
    );
    assert_eq!(
        String::from_utf8(seen[0].body.clone()).unwrap(),
        r#"{"operations":[{"operationType":"create","zone":{"zoneID":{"zoneName":"Notes"}}}]}"#
    );
    assert!(seen[0].header(RequestSignature::SIGNATURE_HEADER).is_none());
    assert_eq!(
        seen[1].query(),
        Some("ckAPIToken=api%2Bkey&ckWebAuthToken=106__54__NEW%2Btoken%2Fxy%3D%3D"),
        "the request after a rotation carries the rotated token"
    );
    assert_eq!(seen_tokens.recv().await.as_deref(), Some(rotated));
    assert_eq!(client.current_web_auth_token().unwrap().expose(), rotated);
    drop(client);
    assert_eq!(
        seen_tokens.recv().await,
        None,
        "exactly one rotation, and the thread ended"
    );
}
