//! Fault injection over real HTTP: faults armed with `POST /_dev/faults` hit the next K requests to
//! their operation with an error, a delay, a dropped connection, a truncated answer, an HTML page or
//! a body that is not JSON, then disarm, and the server serves normally afterwards. The courier's
//! long polls are faulted only by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// When [`Harness::assert_lists_default_zone`] runs: once the faults have had their turn.
const AFTER: &str = "after the fault";

fn create_note(name: &str) -> Value {
    json!({
        "operations": [{
            "operationType": "create",
            "record": {
                "recordName": name,
                "recordType": "Note",
                "fields": {"title": {"value": "kept despite the lost response", "type": "STRING"}}
            }
        }],
        "zoneID": {"zoneName": "_defaultZone"}
    })
}

#[tokio::test]
async fn error_faults_answer_each_code_with_its_status_and_retry_after() {
    let h = Harness::start().await;
    for (code, status) in [
        ("THROTTLED", StatusCode::TOO_MANY_REQUESTS),
        ("TRY_AGAIN_LATER", StatusCode::SERVICE_UNAVAILABLE),
        ("QUOTA_EXCEEDED", StatusCode::PAYLOAD_TOO_LARGE),
        ("ZONE_NOT_FOUND", StatusCode::NOT_FOUND),
        ("CHANGE_TOKEN_EXPIRED", StatusCode::GONE),
        ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        ("AUTHENTICATION_FAILED", StatusCode::UNAUTHORIZED),
    ] {
        h.arm_fault(json!({
            "operation": "zones/list", "count": 1, "serverErrorCode": code,
            "reason": format!("injected {code}"), "retryAfter": 2
        }))
        .await;
        let answer = h.get("zones/list").await;
        let body = answer.assert_cloudkit_error(status, code, "zones/list");
        assert_eq!(body["retryAfter"], 2, "{body}");
        assert_eq!(body["reason"], format!("injected {code}"));
        h.assert_lists_default_zone(AFTER).await;
    }
    assert!(h.armed_faults().await.is_empty());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_error_fault_may_override_the_status_and_omit_retry_after() {
    let h = Harness::start().await;
    h.arm_fault(
        json!({"operation": "zones/list", "serverErrorCode": "TRY_AGAIN_LATER", "status": 500}),
    )
    .await;
    let answer = h.get("zones/list").await;
    let body = answer.assert_cloudkit_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "TRY_AGAIN_LATER",
        "zones/list",
    );
    assert!(body.get("retryAfter").is_none(), "{body}");
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delay_fault_answers_correctly_after_at_least_the_delay() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "zones/list", "delayMs": 300}))
        .await;
    let started = Instant::now();
    let answer = h.get("zones/list").await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body["zones"].is_array(), "{}", answer.body);
    assert!(h.armed_faults().await.is_empty());
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_connection_loses_the_response_but_the_write_happens() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "records/modify", "dropConnection": true}))
        .await;

    // Sent by hand: the shared helpers expect an answer, and this one must be allowed to fail.
    let outcome = h
        .client
        .post(h.url_as(&h.token, "private", "records/modify"))
        .header("content-type", "application/json")
        .body(create_note("dropped-1").to_string())
        .send()
        .await;
    match outcome {
        Err(_) => {} // the connection went before the headers arrived
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.bytes().await;
            assert!(body.is_err(), "the body must not arrive whole: {body:?}");
        }
    }

    // The request ran before its response was lost: the record is there.
    let lookup = h
        .post(
            "records/lookup",
            json!({"records": [{"recordName": "dropped-1"}], "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(lookup.status, StatusCode::OK);
    let found = &lookup.body;
    assert_eq!(found["records"][0]["recordName"], "dropped-1", "{found}");
    assert!(
        found["records"][0]["recordChangeTag"].is_string(),
        "{found}"
    );
    assert!(
        found["records"][0].get("serverErrorCode").is_none(),
        "{found}"
    );

    // And a second create of the same record now meets it.
    let again = h.post("records/modify", create_note("dropped-1")).await;
    let (status, body) = (again.status, &again.body);
    assert!(
        body.to_string().contains("EXISTS"),
        "status {status}, body {body}"
    );
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_html_fault_answers_a_proxy_page_instead_of_json() {
    let h = Harness::start().await;
    let zones_list = h.url_as(&h.token, "private", "zones/list");
    h.arm_fault(json!({"operation": "zones/list", "htmlBody": true}))
        .await;
    let response = h.respond(Method::GET, &zones_list, &[], None).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("502 Bad Gateway"), "{page}");
    assert!(serde_json::from_str::<Value>(&page).is_err());

    h.arm_fault(json!({"operation": "zones/list", "htmlBody": true, "status": 200}))
        .await;
    let portal = h.respond(Method::GET, &zones_list, &[], None).await;
    assert_eq!(portal.status(), StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&portal.text().await.unwrap()).is_err());
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_truncated_answer_is_complete_http_with_json_cut_short_and_the_write_happens() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "records/modify", "truncatedJson": true}))
        .await;
    let url = h.url_as(&h.token, "private", "records/modify");
    let response = h
        .respond(
            Method::POST,
            &url,
            &[],
            Some(create_note("truncated-1").to_string().into_bytes()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let announced: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The HTTP answer is whole: every announced byte arrives and the body ends cleanly.
    let body = response.bytes().await.expect("a complete HTTP response");
    assert_eq!(body.len(), announced);
    let parsed = serde_json::from_slice::<Value>(&body);
    assert!(
        parsed.as_ref().is_err_and(serde_json::Error::is_eof),
        "the JSON must end early: {parsed:?} from {:?}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        body.starts_with(b"{"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );

    // The request ran: the record is there, and the next answer is whole again.
    let lookup = h
        .post(
            "records/lookup",
            json!({"records": [{"recordName": "truncated-1"}], "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(lookup.status, StatusCode::OK);
    assert!(
        lookup.body["records"][0]["recordChangeTag"].is_string(),
        "{}",
        lookup.body
    );
    assert!(h.armed_faults().await.is_empty());
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_garbage_answer_is_a_200_that_is_not_json_and_nothing_runs() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "records/modify", "garbageBody": true}))
        .await;
    let url = h.url_as(&h.token, "private", "records/modify");
    let response = h
        .respond(
            Method::POST,
            &url,
            &[],
            Some(create_note("garbage-1").to_string().into_bytes()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body = response.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "{body:?}");

    // Nothing ran: the record is not there.
    let lookup = h
        .post(
            "records/lookup",
            json!({"records": [{"recordName": "garbage-1"}], "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(
        lookup.body["records"][0]["serverErrorCode"], "NOT_FOUND",
        "{}",
        lookup.body
    );
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_courier_is_faulted_by_name_and_never_by_the_wildcard() {
    let h = Harness::start().await;
    let tokens_create = h.tokens_url_as(&h.token, "create");
    let created = h
        .send_raw(
            Method::POST,
            &tokens_create,
            Some(br#"{"apnsEnvironment":"development"}"#.to_vec()),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let courier_url = format!(
        "{}?timeout=1",
        created.body["webcourierURL"].as_str().unwrap()
    );

    // A wildcard fault is for CloudKit operations: a quiet poll still times out empty.
    h.arm_fault(json!({"operation": "*", "serverErrorCode": "INTERNAL_ERROR"}))
        .await;
    let quiet = h.send_raw(Method::GET, &courier_url, None).await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.body);
    assert_eq!(quiet.body["notifications"], json!([]));
    assert_eq!(h.armed_faults().await.len(), 1, "the courier took no fault");
    h.send_raw(Method::DELETE, &h.faults_url(), None).await;

    // Named, it hits the next polls: an error, then a page that is not JSON.
    h.arm_fault(json!({"operation": "courier", "serverErrorCode": "THROTTLED", "retryAfter": 2}))
        .await;
    h.arm_fault(json!({"operation": "courier", "garbageBody": true}))
        .await;
    let throttled = h.send_raw(Method::GET, &courier_url, None).await;
    throttled.assert_cloudkit_error(StatusCode::TOO_MANY_REQUESTS, "THROTTLED", "courier");
    assert_eq!(throttled.body["retryAfter"], 2);
    let garbage = h.respond(Method::GET, &courier_url, &[], None).await;
    assert_eq!(garbage.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&garbage.bytes().await.unwrap()).is_err());
    let served = h.send_raw(Method::GET, &courier_url, None).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);
    assert!(h.armed_faults().await.is_empty());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fault_with_count_k_hits_k_requests_then_disarms() {
    let h = Harness::start().await;
    let armed = h
        .arm_fault(json!({"operation": "zones/list", "count": 3, "serverErrorCode": "THROTTLED", "retryAfter": 1}))
        .await;
    assert_eq!(armed["remaining"], 3);
    for left in [2, 1, 0] {
        h.get("zones/list").await.assert_cloudkit_error(
            StatusCode::TOO_MANY_REQUESTS,
            "THROTTLED",
            "zones/list",
        );
        let armed = h.armed_faults().await;
        if left == 0 {
            assert!(armed.is_empty(), "{armed:?}");
        } else {
            assert_eq!(armed[0]["remaining"], left);
        }
    }
    h.assert_lists_default_zone(AFTER).await;
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fault_only_hits_its_own_operation() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "records/modify", "serverErrorCode": "QUOTA_EXCEEDED"}))
        .await;

    h.assert_lists_default_zone("with a records/modify fault armed")
        .await;
    let query = h
        .post(
            "records/query",
            json!({"query": {"recordType": "Note"}, "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(query.status, StatusCode::OK);
    assert_eq!(
        h.armed_faults().await.len(),
        1,
        "other operations must not use it up"
    );

    let modify = h.post("records/modify", create_note("quota-1")).await;
    modify.assert_cloudkit_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "QUOTA_EXCEEDED",
        "records/modify",
    );
    let retried = h.post("records/modify", create_note("quota-1")).await;
    assert_eq!(retried.status, StatusCode::OK);
    let saved = &retried.body;
    assert_eq!(saved["records"][0]["recordName"], "quota-1", "{saved}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wildcard_fault_hits_every_operation_including_tokens() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "*", "count": 3, "serverErrorCode": "TRY_AGAIN_LATER", "retryAfter": 5}))
        .await;
    h.get("zones/list").await.assert_cloudkit_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TRY_AGAIN_LATER",
        "zones/list",
    );
    let query = h
        .post_as(
            &h.token,
            "public",
            "records/query",
            json!({"query": {"recordType": "Note"}}),
        )
        .await;
    query.assert_cloudkit_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TRY_AGAIN_LATER",
        "public records/query",
    );
    let tokens_create = h.tokens_url_as(&h.token, "create");
    let apns = json!({"apnsEnvironment": "development"}).to_string();
    let token = h
        .send_raw(
            Method::POST,
            &tokens_create,
            Some(apns.clone().into_bytes()),
        )
        .await;
    token.assert_cloudkit_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TRY_AGAIN_LATER",
        "tokens/create",
    );

    let token = h
        .send_raw(Method::POST, &tokens_create, Some(apns.into_bytes()))
        .await;
    assert_eq!(token.status, StatusCode::OK);
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_prefix_fault_hits_only_operations_under_it() {
    let h = Harness::start().await;
    h.arm_fault(json!({"operation": "records/*", "count": 1, "serverErrorCode": "INTERNAL_ERROR"}))
        .await;
    h.assert_lists_default_zone("with a records/* fault armed")
        .await;
    let query = h
        .post(
            "records/query",
            json!({"query": {"recordType": "Note"}, "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    query.assert_cloudkit_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "records/query",
    );
    assert!(h.armed_faults().await.is_empty());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_are_listed_and_cleared() {
    let h = Harness::start().await;
    let first = h
        .arm_fault(json!({"operation": "changes/zone", "count": 2, "serverErrorCode": "CHANGE_TOKEN_EXPIRED"}))
        .await;
    let second = h
        .arm_fault(json!({"operation": "zones/list", "count": 4, "delayMs": 10}))
        .await;
    assert!(second["id"].as_u64() > first["id"].as_u64());

    let armed = h.armed_faults().await;
    assert_eq!(armed.len(), 2);
    assert_eq!(armed[0]["operation"], "changes/zone");
    assert_eq!(armed[0]["remaining"], 2);
    assert_eq!(armed[0]["serverErrorCode"], "CHANGE_TOKEN_EXPIRED");
    assert_eq!(armed[1]["operation"], "zones/list");
    assert_eq!(armed[1]["delayMs"], 10);

    let cleared = h.send_raw(Method::DELETE, &h.faults_url(), None).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["cleared"], 2);
    assert!(h.armed_faults().await.is_empty());

    let changes = h
        .post(
            "changes/zone",
            json!({"zones": [{"zoneID": {"zoneName": "_defaultZone"}}]}),
        )
        .await;
    assert_ne!(changes.status, StatusCode::GONE);
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_fault_requests_get_cloudkit_errors_and_arm_nothing() {
    let h = Harness::start().await;
    for bad in [
        "{\"operation\": ",
        "[]",
        "{\"operation\": \"zones/list\"}",
        "{\"operation\": \"zones/list\", \"count\": 0, \"delayMs\": 5}",
        "{\"operation\": \"zones/list\", \"htmlBody\": true, \"dropConnection\": true}",
        "{\"operation\": \"zones/list\", \"garbageBody\": true, \"truncatedJson\": true}",
        "{\"operation\": \"zones/list\", \"truncatedJson\": true, \"status\": 500}",
        "{\"operation\": \"zones/list\", \"serverErrorCode\": \"THROTTLED\", \"retryAfer\": 2}",
    ] {
        let answer = h
            .send_raw(Method::POST, &h.faults_url(), Some(bad.into()))
            .await;
        answer.assert_cloudkit_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", bad);
    }
    let wrong_method = h.respond(Method::PUT, &h.faults_url(), &[], None).await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.armed_faults().await.is_empty());
    h.assert_lists_default_zone(AFTER).await;
    h.server.shutdown().await.unwrap();
}
