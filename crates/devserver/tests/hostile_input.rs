//! Hostile and malformed requests over real HTTP: each gets a CloudKit error body (`serverErrorCode`,
//! `uuid`, `reason`) with the right status, never a panic or a dropped connection, and the server
//! answers the next valid request correctly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A valid read and a valid write are both answered correctly.
async fn assert_serves_normally(h: &Harness, after: &str) {
    h.assert_lists_default_zone(&format!("after {after}")).await;

    let name = format!("after-{}", uuid::Uuid::new_v4().simple());
    let saved = h
        .modify(
            "_defaultZone",
            json!([{"operationType": "create", "record": {
                "recordName": name, "recordType": "Note",
                "fields": {"title": {"value": "still working", "type": "STRING"}}
            }}]),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "records/modify after {after}");
    let saved = &saved.body;
    assert_eq!(
        saved["records"][0]["recordName"], name,
        "after {after}: {saved}"
    );
    assert!(
        saved["records"][0]["recordChangeTag"].is_string(),
        "after {after}: {saved}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let h = Harness::start().await;
    for (body, case) in [
        (r#"{"operations": ["#, "unterminated"),
        (r#"{"operations": [],}"#, "trailing comma"),
        ("operations=1", "form encoding"),
        (r#"{"operations": []} trailing"#, "trailing garbage"),
    ] {
        let answer = h.post_bytes("records/modify", body).await;
        answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", case);
        assert_serves_normally(&h, case).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_as_too_large() {
    let h = Harness::start().await;
    let padding = "x".repeat(10 * 1024 * 1024);
    let body = format!(r#"{{"operations": [], "padding": "{padding}"}}"#);
    let answer = h.post_bytes("records/modify", body).await;
    answer.assert_cloudkit_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "LIMIT_EXCEEDED",
        "10 MB body",
    );
    assert_serves_normally(&h, "10 MB body").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_refused_as_too_large() {
    let h = Harness::start().await;
    // Sent chunked, without a Content-Length, so the limit must be enforced while reading.
    let url = h.url_as(&h.token, "private", "records/modify");
    let path = url
        .strip_prefix(&h.server.base_url())
        .expect("a URL on the server")
        .to_owned();
    let stream = tokio::net::TcpStream::connect(h.server.local_addr())
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..10 {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    // Read while writing: the server may answer (and stop reading) before the body ends.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within a minute");
    // Writing may have failed once the server stopped reading; that is allowed.
    let _ = writing.await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP answer: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(body["serverErrorCode"], "LIMIT_EXCEEDED", "{body}");
    assert!(body["uuid"].is_string(), "{body}");
    assert_serves_normally(&h, "10 MB chunked body").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn deeply_nested_json_is_a_bad_request_not_a_stack_overflow() {
    let h = Harness::start().await;
    let arrays = "[".repeat(100_000);
    let objects = r#"{"a":"#.repeat(100_000);
    let inside = format!(r#"{{"operations": {}"#, "[".repeat(100_000));
    for (body, case) in [
        (arrays, "100,000 ["),
        (objects, "100,000 nested objects"),
        (inside, "nesting inside operations"),
    ] {
        let answer = h.post_bytes("records/modify", body).await;
        answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", case);
        assert_serves_normally(&h, case).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_is_a_bad_request() {
    let h = Harness::start().await;
    let mut in_string =
        br#"{"operations": [{"operationType": "create", "record": {"recordName": ""#.to_vec();
    in_string.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    in_string.extend_from_slice(br#"", "recordType": "Note"}}]}"#);
    for (body, case) in [
        (vec![0xff, 0xfe, 0xfd, 0x00], "binary garbage"),
        (in_string, "invalid UTF-8 inside a string"),
    ] {
        let answer = h.post_bytes("records/modify", body).await;
        answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", case);
        assert_serves_normally(&h, case).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_method_is_method_not_allowed() {
    let h = Harness::start().await;
    for (method, operation, body) in [
        (Method::GET, "records/modify", None),
        (Method::PUT, "records/modify", Some(b"{}".to_vec())),
        (Method::DELETE, "records/query", None),
        (Method::POST, "zones/list", Some(b"{}".to_vec())),
    ] {
        let case = format!("{method} {operation}");
        let answer = h.send(method, operation, body).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{case}");
        let body = &answer.body;
        assert!(body["serverErrorCode"].is_string(), "{case}: {body}");
        assert!(body["uuid"].is_string(), "{case}: {body}");
        assert_serves_normally(&h, &case).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_operation_is_not_found() {
    let h = Harness::start().await;
    for operation in ["records/frobnicate", "nothing", "records/modify/extra"] {
        let answer = h.send(Method::POST, operation, Some(b"{}".to_vec())).await;
        answer.assert_cloudkit_error(StatusCode::NOT_FOUND, "NOT_FOUND", operation);
        assert_serves_normally(&h, operation).await;
    }
    let elsewhere = h.send_raw(Method::GET, &h.url("/no/such/path"), None).await;
    elsewhere.assert_cloudkit_error(StatusCode::NOT_FOUND, "NOT_FOUND", "/no/such/path");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_body_is_a_bad_request() {
    let h = Harness::start().await;
    let answer = h.send(Method::POST, "records/modify", None).await;
    answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "no body");
    assert_serves_normally(&h, "no body").await;
    let answer = h
        .send(Method::POST, "records/lookup", Some(Vec::new()))
        .await;
    answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "empty body");
    assert_serves_normally(&h, "empty body").await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_bad_request() {
    let h = Harness::start().await;
    for (operation, body, case) in [
        ("records/modify", json!([1, 2, 3]), "an array"),
        ("records/modify", json!("records"), "a string"),
        ("records/modify", json!(null), "null"),
        (
            "records/modify",
            json!({"operations": "all of them"}),
            "operations not a list",
        ),
        (
            "records/modify",
            json!({"operations": [42]}),
            "an operation that is a number",
        ),
        (
            "records/lookup",
            json!({"records": {"recordName": "a"}}),
            "records not a list",
        ),
        (
            "zones/modify",
            json!({"operations": [{"zone": 7}]}),
            "zone not an object",
        ),
        (
            "changes/zone",
            json!({"zones": "_defaultZone"}),
            "zones not a list",
        ),
    ] {
        let answer = h
            .send(Method::POST, operation, Some(body.to_string().into_bytes()))
            .await;
        answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", case);
        assert_serves_normally(&h, case).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_bad_requests_leaves_the_server_serving() {
    let h = Harness::start().await;
    let bad: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        vec![0xff; 64],
        "[".repeat(50_000).into_bytes(),
        br#"{"operations": "no"}"#.to_vec(),
    ];
    let url = h.url_as(&h.token, "private", "records/modify");
    let (harness, url) = (&h, url.as_str());
    let requests = (0..40).map(|i| {
        let body = bad[i % bad.len()].clone();
        async move {
            harness
                .respond(Method::POST, url, &[], Some(body))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    assert_serves_normally(&h, "40 concurrent bad requests").await;
    h.server.shutdown().await.unwrap();
}
