//! Limits and request-level errors over HTTP: operation counts, record and body sizes, malformed
//! bodies, unknown endpoints and wrong methods, each answered with a CloudKit error body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CONTAINER, Harness};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use skysync_devserver::ServerConfig;

fn creates(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"operationType": "create", "record": {"recordName": format!("r{i}"), "recordType": "T"}})
        })
        .collect()
}

#[tokio::test]
async fn more_than_200_operations_records_or_zones_are_refused_whole_with_limit_exceeded() {
    let h = Harness::start().await;
    h.create_zone("Z").await;
    let too_many = h.modify("Z", json!(creates(201))).await;
    too_many.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED");
    assert_eq!(h.lookup("Z", "r0").await["serverErrorCode"], "NOT_FOUND");

    let exactly = h.modify("Z", json!(creates(200))).await;
    assert_eq!(exactly.status, StatusCode::OK);
    assert_eq!(exactly.records().len(), 200);

    let lookups: Vec<Value> = (0..201)
        .map(|i| json!({"recordName": format!("r{i}")}))
        .collect();
    let lookup = h
        .post(
            "records/lookup",
            json!({"zoneID": {"zoneName": "Z"}, "records": lookups}),
        )
        .await;
    lookup.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED");

    let zones: Vec<Value> = (0..201)
        .map(|i| json!({"zoneName": format!("z{i}")}))
        .collect();
    let zone_lookup = h.post("zones/lookup", json!({"zones": zones})).await;
    zone_lookup.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED");
    let feeds: Vec<Value> = (0..201)
        .map(|i| json!({"zoneID": {"zoneName": format!("z{i}")}}))
        .collect();
    let zone_changes = h.post("changes/zone", json!({"zones": feeds})).await;
    zone_changes.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn a_record_over_one_megabyte_is_refused_per_item_with_limit_exceeded() {
    let h = Harness::start().await;
    h.create_zone("Z").await;
    let big = "x".repeat(1024 * 1024 + 1);
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Z"}, "atomic": false, "operations": [
                {"operationType": "create", "record": {"recordName": "big", "recordType": "T",
                    "fields": {"blob": {"value": big}}}},
                {"operationType": "create", "record": {"recordName": "small", "recordType": "T",
                    "fields": {"blob": {"value": "x"}}}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.record(0)["serverErrorCode"], "LIMIT_EXCEEDED");
    assert_eq!(answer.record(0)["recordName"], "big");
    assert_eq!(answer.record(1)["recordName"], "small");
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_a_cloudkit_limit_exceeded() {
    let h = Harness::with_config(ServerConfig {
        max_body_bytes: 64 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let body = json!({"operations": [{"operationType": "create", "record": {
        "recordName": "r", "recordType": "T", "fields": {"blob": {"value": "y".repeat(100 * 1024)}}}}]});
    let answer = h.post("records/modify", body).await;
    answer.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED");
    // And the server goes on serving.
    assert_eq!(h.get("zones/list").await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_invalid_utf8_and_a_missing_body_are_bad_requests() {
    let h = Harness::start().await;
    let url = h.url_as(&h.token, "private", "records/modify");
    for (what, body) in [
        ("malformed JSON", Some(b"{\"operations\": [".to_vec())),
        (
            "invalid UTF-8",
            Some(b"{\"operations\": [\"\xff\xfe\"]}".to_vec()),
        ),
        ("an empty body", Some(Vec::new())),
        ("no body", None),
        ("the wrong shape", Some(br#"{"operations": 7}"#.to_vec())),
        (
            "an unknown operation type",
            Some(br#"{"operations": [{"operationType": "explode", "record": {}}]}"#.to_vec()),
        ),
    ] {
        let answer = h.send_raw(Method::POST, &url, body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.body
        );
        answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
}

#[tokio::test]
async fn an_unknown_endpoint_is_404_and_a_wrong_method_is_405_both_with_cloudkit_bodies() {
    let h = Harness::start().await;
    let unknown = h.post("records/explode", json!({})).await;
    unknown.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let unknown_db = h
        .post_as(&h.token, "secret", "records/modify", json!({}))
        .await;
    unknown_db.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let nowhere = h
        .send_raw(
            Method::GET,
            &format!("{}/no/such/path", h.server.base_url()),
            None,
        )
        .await;
    nowhere.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    for (method, operation) in [
        (Method::POST, "zones/list"),
        (Method::POST, "subscriptions/list"),
        (Method::POST, "users/caller"),
        (Method::GET, "records/modify"),
        (Method::GET, "changes/zone"),
        (Method::DELETE, "records/lookup"),
    ] {
        let url = h.url_as(&h.token, "private", operation);
        let answer = h.send_raw(method.clone(), &url, Some(b"{}".to_vec())).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {operation}"
        );
        assert!(
            answer.body["serverErrorCode"].is_string(),
            "{}",
            answer.body
        );
        assert!(answer.body["reason"].as_str().unwrap().contains("use"));
    }
    let tokens = format!(
        "{}/device/1/{CONTAINER}/development/tokens/create",
        h.server.base_url()
    );
    let answer = h.send_raw(Method::GET, &tokens, None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn responses_carry_cloudkit_headers() {
    let h = Harness::start().await;
    let answer = h.get("zones/list").await;
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "application/json; charset=UTF-8"
    );
    assert_eq!(
        answer.headers.get("x-apple-cloudkit-version").unwrap(),
        "1.0"
    );
    assert!(answer.headers.contains_key("x-apple-request-uuid"));
    let error = h.post("records/explode", json!({})).await;
    assert!(error.headers.contains_key("x-apple-request-uuid"));
}

#[tokio::test]
async fn a_zero_results_limit_is_a_bad_request() {
    let h = Harness::start().await;
    let answer = h.post("changes/database", json!({"resultsLimit": 0})).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}
