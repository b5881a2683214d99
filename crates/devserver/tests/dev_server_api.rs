//! The in-process API: `DevServer::start`, `base_url`, `local_addr`, `faults` and `shutdown`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use reqwest::StatusCode;
use serde_json::json;
use skysync_devserver::faults::FaultSpec;
use skysync_devserver::{DevServer, DevServerError, ServerConfig};

#[tokio::test]
async fn base_url_names_the_bound_address_and_shutdown_stops_serving() {
    let server = DevServer::start(ServerConfig::default()).await.unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "port 0 picks a real port");
    assert_eq!(server.base_url(), format!("http://{addr}"));
    server.shutdown().await.unwrap();
    let after = common::client()
        .get(format!("http://{addr}/_dev/faults"))
        .send()
        .await;
    assert!(after.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error() {
    let first = DevServer::start(ServerConfig::default()).await.unwrap();
    let taken = DevServer::start(ServerConfig {
        listen: first.local_addr(),
        ..ServerConfig::default()
    })
    .await;
    assert!(matches!(taken, Err(DevServerError::Bind { .. })));
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fault_armed_in_process_hits_the_next_matching_request_only() {
    let h = Harness::start().await;
    let spec: FaultSpec = serde_json::from_value(json!({
        "operation": "zones/list", "serverErrorCode": "THROTTLED", "retryAfter": 3
    }))
    .unwrap();
    h.server.faults().arm(spec).unwrap();
    let throttled = h.get("zones/list").await;
    throttled.assert_error(StatusCode::TOO_MANY_REQUESTS, "THROTTLED");
    assert_eq!(throttled.body["retryAfter"], 3);
    assert_eq!(h.get("zones/list").await.status, StatusCode::OK);
    // Armed in process, listed over HTTP: it is the same set (now empty).
    let listed = h
        .send_raw(reqwest::Method::GET, &h.faults_url(), None)
        .await;
    assert_eq!(listed.body["faults"], json!([]));
}

#[tokio::test]
async fn an_unusable_server_to_server_key_fails_the_start() {
    let refused = DevServer::start(ServerConfig {
        s2s_keys: vec![("key".into(), "not a pem".into())],
        ..ServerConfig::default()
    })
    .await;
    assert!(matches!(refused, Err(DevServerError::InvalidKey { .. })));
}
