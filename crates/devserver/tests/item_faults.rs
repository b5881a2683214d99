//! Item-level fault injection over real HTTP: `POST /_dev/item-faults` makes the next K operations
//! on a named record (or on any record of a zone) answer a per-item `serverErrorCode` inside an
//! otherwise normal `records/modify` response, so that a test can build a batch with mixed
//! outcomes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn item_faults_url(h: &Harness) -> String {
    h.url("/_dev/item-faults")
}

async fn arm_item(h: &Harness, spec: Value) -> Value {
    let answer = h
        .send_raw(
            Method::POST,
            &item_faults_url(h),
            Some(spec.to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "arming {spec}: {}",
        answer.body
    );
    answer.body
}

async fn armed_items(h: &Harness) -> Vec<Value> {
    let answer = h.send_raw(Method::GET, &item_faults_url(h), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["itemFaults"].as_array().cloned().unwrap()
}

fn create(name: &str) -> Value {
    json!({"operationType": "create", "record": {
        "recordName": name, "recordType": "Note", "fields": {"title": {"value": name}}
    }})
}

/// Whether `name` exists in `zone`.
async fn exists(h: &Harness, zone: &str, name: &str) -> bool {
    let record = h.lookup(zone, name).await;
    match record["serverErrorCode"].as_str() {
        None => true,
        Some("NOT_FOUND") => false,
        Some(other) => panic!("{other}: {record}"),
    }
}

#[tokio::test]
async fn a_batch_of_five_saves_with_two_injected_item_errors_saves_the_other_three() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    arm_item(
        &h,
        json!({"recordName": "n2", "serverErrorCode": "CONFLICT", "reason": "injected conflict"}),
    )
    .await;
    arm_item(
        &h,
        json!({"recordName": "n4", "zoneName": "Notes", "serverErrorCode": "VALIDATING_REFERENCE_ERROR"}),
    )
    .await;
    let batch: Vec<Value> = ["n1", "n2", "n3", "n4", "n5"]
        .into_iter()
        .map(create)
        .collect();
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "atomic": false, "operations": batch}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let records = answer.records();
    assert_eq!(records.len(), 5);
    for i in [0, 2, 4] {
        assert!(records[i]["recordChangeTag"].is_string(), "{}", records[i]);
        assert!(records[i]["serverErrorCode"].is_null(), "{}", records[i]);
    }
    assert_eq!(records[1]["recordName"], "n2");
    assert_eq!(records[1]["serverErrorCode"], "CONFLICT");
    assert_eq!(records[1]["reason"], "injected conflict");
    assert!(
        records[1].get("serverRecord").is_none(),
        "n2 does not exist yet, so there is no server copy: {}",
        records[1]
    );
    assert_eq!(records[3]["recordName"], "n4");
    assert_eq!(records[3]["serverErrorCode"], "VALIDATING_REFERENCE_ERROR");
    assert!(records[3]["reason"].is_string());

    for (name, saved) in [
        ("n1", true),
        ("n2", false),
        ("n3", true),
        ("n4", false),
        ("n5", true),
    ] {
        assert_eq!(exists(&h, "Notes", name).await, saved, "{name}");
    }
    // Used up: sent again, both are saved.
    assert!(armed_items(&h).await.is_empty());
    let again = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "atomic": false,
                   "operations": [create("n2"), create("n4")]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(
        again
            .records()
            .iter()
            .all(|r| r["recordChangeTag"].is_string())
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zone_wide_item_fault_hits_the_next_k_operations_of_that_zone_only() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_zone("Other").await;
    arm_item(
        &h,
        json!({"zoneName": "Notes", "count": 2, "serverErrorCode": "LIMIT_EXCEEDED", "retryAfter": 4}),
    )
    .await;
    // Another zone is not hit.
    let other = h.modify("Other", json!([create("o1")])).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);

    // In an atomic batch the injected errors fail the batch: the rest is ATOMIC_ERROR, nothing
    // is written.
    let atomic = h
        .modify("Notes", json!([create("a"), create("b"), create("c")]))
        .await;
    assert_eq!(atomic.status, StatusCode::BAD_REQUEST, "{}", atomic.body);
    let codes: Vec<&str> = atomic
        .records()
        .iter()
        .map(|r| r["serverErrorCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["LIMIT_EXCEEDED", "LIMIT_EXCEEDED", "ATOMIC_ERROR"]);
    assert_eq!(atomic.record(0)["retryAfter"], 4);
    assert!(!exists(&h, "Notes", "c").await);
    assert!(armed_items(&h).await.is_empty(), "two hits used it up");
    assert_eq!(
        h.modify("Notes", json!([create("a")])).await.status,
        StatusCode::OK
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_injected_conflict_on_an_existing_record_carries_the_server_record() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let tag = h.create_note("Notes", "n1", "first").await;
    arm_item(
        &h,
        json!({"recordName": "n1", "serverErrorCode": "CONFLICT"}),
    )
    .await;
    let answer = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {"recordName": "n1",
                "recordChangeTag": tag, "fields": {"title": {"value": "second"}}}}]),
        )
        .await;
    // A single refused item of an atomic batch: the batch fails, as a real conflict would.
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    let conflict = answer.record(0);
    assert_eq!(conflict["serverErrorCode"], "CONFLICT");
    assert_eq!(conflict["reason"], "injected fault: CONFLICT");
    assert_eq!(conflict["serverRecord"]["recordChangeTag"], tag.as_str());
    assert_eq!(
        conflict["serverRecord"]["fields"]["title"]["value"],
        "first"
    );
    // The same update goes through now.
    let retried = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {"recordName": "n1",
                "recordChangeTag": tag, "fields": {"title": {"value": "second"}}}}]),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn item_faults_are_listed_cleared_and_bad_specs_are_refused() {
    let h = Harness::start().await;
    let armed = arm_item(
        &h,
        json!({"recordName": "n1", "count": 3, "serverErrorCode": "BAD_REQUEST"}),
    )
    .await;
    assert_eq!(armed["remaining"], 3);
    assert_eq!(armed["recordName"], "n1");
    assert!(armed["id"].is_u64());
    let listed = armed_items(&h).await;
    assert_eq!(listed, [armed]);
    // Request faults and item faults are listed apart.
    assert!(h.armed_faults().await.is_empty());

    for (body, why) in [
        (json!({"serverErrorCode": "CONFLICT"}), "no record or zone"),
        (
            json!({"recordName": "", "serverErrorCode": "CONFLICT"}),
            "empty name",
        ),
        (
            json!({"recordName": "n1", "count": 0, "serverErrorCode": "CONFLICT"}),
            "count 0",
        ),
        (json!({"recordName": "n1"}), "no code"),
        (
            json!({"recordName": "n1", "serverErrorCode": "CONFLICT", "operation": "*"}),
            "unknown key",
        ),
    ] {
        let answer = h
            .send_raw(
                Method::POST,
                &item_faults_url(&h),
                Some(body.to_string().into_bytes()),
            )
            .await;
        answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert!(answer.body["reason"].is_string(), "{why}");
    }
    let put = h.send_raw(Method::PUT, &item_faults_url(&h), None).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);

    let cleared = h.send_raw(Method::DELETE, &item_faults_url(&h), None).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["cleared"], 1);
    assert!(armed_items(&h).await.is_empty());
    h.server.shutdown().await.unwrap();
}
