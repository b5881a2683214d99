//! Fault injection over real HTTP: faults armed with `POST /_dev/faults` hit the next K requests to
//! their operation with an error, a delay, a dropped connection or an HTML page, then disarm, and the
//! server serves normally afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use skysync_devserver::{DevServer, ServerConfig};

const CONTAINER: &str = "iCloud.com.example.skysync";
const TOKEN: &str = "fault-injection-user";

struct Harness {
    server: DevServer,
    client: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        let server = DevServer::start(ServerConfig::default()).await.unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Harness { server, client }
    }

    fn url(&self, database: &str, operation: &str) -> String {
        format!(
            "{}/database/1/{CONTAINER}/development/{database}/{operation}?ckAPIToken=api&ckWebAuthToken={TOKEN}",
            self.server.base_url()
        )
    }

    fn tokens_url(&self, operation: &str) -> String {
        format!(
            "{}/device/1/{CONTAINER}/development/tokens/{operation}?ckAPIToken=api&ckWebAuthToken={TOKEN}",
            self.server.base_url()
        )
    }

    fn faults_url(&self) -> String {
        format!("{}/_dev/faults", self.server.base_url())
    }

    async fn arm(&self, fault: Value) -> Value {
        let response = self
            .client
            .post(self.faults_url())
            .body(fault.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "arming {fault}");
        response.json().await.unwrap()
    }

    async fn armed(&self) -> Vec<Value> {
        let response = self.client.get(self.faults_url()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let listed: Value = response.json().await.unwrap();
        listed["faults"].as_array().cloned().unwrap()
    }

    async fn zones_list(&self) -> reqwest::Response {
        self.client
            .get(self.url("private", "zones/list"))
            .send()
            .await
            .unwrap()
    }

    /// `zones/list` answered normally: 200 with the default zone.
    async fn assert_serves_normally(&self) {
        let response = self.zones_list().await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let zones = body["zones"].as_array().expect("a zones array");
        assert!(
            zones
                .iter()
                .any(|zone| zone["zoneID"]["zoneName"] == "_defaultZone"),
            "{body}"
        );
    }

    async fn post(&self, database: &str, operation: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(database, operation))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}

/// Asserts a CloudKit error body with this status and code, and returns it.
async fn assert_cloudkit_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> Value {
    assert_eq!(response.status(), status, "expected {code}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["serverErrorCode"], code, "{body}");
    assert!(
        body["uuid"].as_str().is_some_and(|uuid| !uuid.is_empty()),
        "{body}"
    );
    assert!(body["reason"].is_string(), "{body}");
    body
}

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
        h.arm(json!({
            "operation": "zones/list", "count": 1, "serverErrorCode": code,
            "reason": format!("injected {code}"), "retryAfter": 2
        }))
        .await;
        let body = assert_cloudkit_error(h.zones_list().await, status, code).await;
        assert_eq!(body["retryAfter"], 2, "{body}");
        assert_eq!(body["reason"], format!("injected {code}"));
        h.assert_serves_normally().await;
    }
    assert!(h.armed().await.is_empty());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_error_fault_may_override_the_status_and_omit_retry_after() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "zones/list", "serverErrorCode": "TRY_AGAIN_LATER", "status": 500}))
        .await;
    let body = assert_cloudkit_error(
        h.zones_list().await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "TRY_AGAIN_LATER",
    )
    .await;
    assert!(body.get("retryAfter").is_none(), "{body}");
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delay_fault_answers_correctly_after_at_least_the_delay() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "zones/list", "delayMs": 300}))
        .await;
    let started = Instant::now();
    let response = h.zones_list().await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["zones"].is_array(), "{body}");
    assert!(h.armed().await.is_empty());
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_connection_loses_the_response_but_the_write_happens() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "records/modify", "dropConnection": true}))
        .await;

    let outcome = h
        .client
        .post(h.url("private", "records/modify"))
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
            "private",
            "records/lookup",
            json!({"records": [{"recordName": "dropped-1"}], "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(lookup.status(), StatusCode::OK);
    let found: Value = lookup.json().await.unwrap();
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
    let again = h
        .post("private", "records/modify", create_note("dropped-1"))
        .await;
    let status = again.status();
    let body: Value = again.json().await.unwrap();
    assert!(
        body.to_string().contains("EXISTS"),
        "status {status}, body {body}"
    );
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_html_fault_answers_a_proxy_page_instead_of_json() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "zones/list", "htmlBody": true}))
        .await;
    let response = h.zones_list().await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("502 Bad Gateway"), "{page}");
    assert!(serde_json::from_str::<Value>(&page).is_err());

    h.arm(json!({"operation": "zones/list", "htmlBody": true, "status": 200}))
        .await;
    let portal = h.zones_list().await;
    assert_eq!(portal.status(), StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&portal.text().await.unwrap()).is_err());
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fault_with_count_k_hits_k_requests_then_disarms() {
    let h = Harness::start().await;
    let armed = h
        .arm(json!({"operation": "zones/list", "count": 3, "serverErrorCode": "THROTTLED", "retryAfter": 1}))
        .await;
    assert_eq!(armed["remaining"], 3);
    for left in [2, 1, 0] {
        assert_cloudkit_error(
            h.zones_list().await,
            StatusCode::TOO_MANY_REQUESTS,
            "THROTTLED",
        )
        .await;
        let armed = h.armed().await;
        if left == 0 {
            assert!(armed.is_empty(), "{armed:?}");
        } else {
            assert_eq!(armed[0]["remaining"], left);
        }
    }
    h.assert_serves_normally().await;
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fault_only_hits_its_own_operation() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "records/modify", "serverErrorCode": "QUOTA_EXCEEDED"}))
        .await;

    h.assert_serves_normally().await;
    let query = h
        .post(
            "private",
            "records/query",
            json!({"query": {"recordType": "Note"}, "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_eq!(query.status(), StatusCode::OK);
    assert_eq!(
        h.armed().await.len(),
        1,
        "other operations must not use it up"
    );

    let modify = h
        .post("private", "records/modify", create_note("quota-1"))
        .await;
    assert_cloudkit_error(modify, StatusCode::PAYLOAD_TOO_LARGE, "QUOTA_EXCEEDED").await;
    let retried = h
        .post("private", "records/modify", create_note("quota-1"))
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let saved: Value = retried.json().await.unwrap();
    assert_eq!(saved["records"][0]["recordName"], "quota-1", "{saved}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wildcard_fault_hits_every_operation_including_tokens() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "*", "count": 3, "serverErrorCode": "TRY_AGAIN_LATER", "retryAfter": 5}))
        .await;
    assert_cloudkit_error(
        h.zones_list().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "TRY_AGAIN_LATER",
    )
    .await;
    let query = h
        .post(
            "public",
            "records/query",
            json!({"query": {"recordType": "Note"}}),
        )
        .await;
    assert_cloudkit_error(query, StatusCode::SERVICE_UNAVAILABLE, "TRY_AGAIN_LATER").await;
    let token = h
        .client
        .post(h.tokens_url("create"))
        .body(json!({"apnsEnvironment": "development"}).to_string())
        .send()
        .await
        .unwrap();
    assert_cloudkit_error(token, StatusCode::SERVICE_UNAVAILABLE, "TRY_AGAIN_LATER").await;

    let token = h
        .client
        .post(h.tokens_url("create"))
        .body(json!({"apnsEnvironment": "development"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_prefix_fault_hits_only_operations_under_it() {
    let h = Harness::start().await;
    h.arm(json!({"operation": "records/*", "count": 1, "serverErrorCode": "INTERNAL_ERROR"}))
        .await;
    h.assert_serves_normally().await;
    let query = h
        .post(
            "private",
            "records/query",
            json!({"query": {"recordType": "Note"}, "zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    assert_cloudkit_error(query, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").await;
    assert!(h.armed().await.is_empty());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_are_listed_and_cleared() {
    let h = Harness::start().await;
    let first = h
        .arm(json!({"operation": "changes/zone", "count": 2, "serverErrorCode": "CHANGE_TOKEN_EXPIRED"}))
        .await;
    let second = h
        .arm(json!({"operation": "zones/list", "count": 4, "delayMs": 10}))
        .await;
    assert!(second["id"].as_u64() > first["id"].as_u64());

    let armed = h.armed().await;
    assert_eq!(armed.len(), 2);
    assert_eq!(armed[0]["operation"], "changes/zone");
    assert_eq!(armed[0]["remaining"], 2);
    assert_eq!(armed[0]["serverErrorCode"], "CHANGE_TOKEN_EXPIRED");
    assert_eq!(armed[1]["operation"], "zones/list");
    assert_eq!(armed[1]["delayMs"], 10);

    let cleared = h.client.delete(h.faults_url()).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    let cleared: Value = cleared.json().await.unwrap();
    assert_eq!(cleared["cleared"], 2);
    assert!(h.armed().await.is_empty());

    let changes = h
        .post(
            "private",
            "changes/zone",
            json!({"zones": [{"zoneID": {"zoneName": "_defaultZone"}}]}),
        )
        .await;
    assert_ne!(changes.status(), StatusCode::GONE);
    h.assert_serves_normally().await;
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
        "{\"operation\": \"zones/list\", \"serverErrorCode\": \"THROTTLED\", \"retryAfer\": 2}",
    ] {
        let response = h
            .client
            .post(h.faults_url())
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_cloudkit_error(response, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
    }
    let wrong_method = h.client.put(h.faults_url()).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.armed().await.is_empty());
    h.assert_serves_normally().await;
    h.server.shutdown().await.unwrap();
}
