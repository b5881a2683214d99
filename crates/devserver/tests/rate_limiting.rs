//! Per-user rate limiting over real HTTP: a burst beyond N requests per second from one user is
//! answered `429 THROTTLED` with a `retryAfter`, while other users are still served.
//!
//! The limit is 1 request per second and each burst is ten back-to-back requests on loopback, so
//! nearly all of them fall within the same second; the assertions only ask that most of a burst is
//! refused (an unlimited or mis-keyed server refuses none), and never time anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use skysync_devserver::{DevServer, ServerConfig};

const CONTAINER: &str = "iCloud.com.example.skysync";
const BURST: usize = 10;

struct Harness {
    server: DevServer,
    client: reqwest::Client,
}

impl Harness {
    async fn start(rate_limit: Option<u32>) -> Harness {
        let server = DevServer::start(ServerConfig {
            rate_limit,
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Harness { server, client }
    }

    async fn zones_list(&self, web_token: &str) -> reqwest::Response {
        self.client
            .get(format!(
                "{}/database/1/{CONTAINER}/development/private/zones/list?ckAPIToken=api&ckWebAuthToken={web_token}",
                self.server.base_url()
            ))
            .send()
            .await
            .unwrap()
    }
}

/// Asserts a `429 THROTTLED` CloudKit body with a `retryAfter` of at least one second.
async fn assert_throttled(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["serverErrorCode"], "THROTTLED", "{body}");
    assert!(
        body["retryAfter"].as_u64().is_some_and(|secs| secs >= 1),
        "{body}"
    );
    assert!(body["uuid"].is_string(), "{body}");
    assert!(body["reason"].is_string(), "{body}");
}

#[tokio::test]
async fn a_burst_beyond_the_limit_is_throttled_while_another_user_is_served() {
    let h = Harness::start(Some(1)).await;

    let first = h.zones_list("alice").await;
    assert_eq!(first.status(), StatusCode::OK);

    let mut throttled = 0;
    for _ in 0..BURST {
        let response = h.zones_list("alice").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_throttled(response).await;
            throttled += 1;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    assert!(
        throttled >= BURST / 2,
        "only {throttled} of {BURST} burst requests were throttled"
    );

    let bob = h.zones_list("bob").await;
    assert_eq!(bob.status(), StatusCode::OK);
    let body: Value = bob.json().await.unwrap();
    assert!(body["zones"].is_array(), "{body}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_stays_limited_when_it_switches_to_its_rotated_web_token() {
    let h = Harness::start(Some(1)).await;
    let first = h.zones_list("carol").await;
    assert_eq!(first.status(), StatusCode::OK);
    let mut token = first
        .headers()
        .get("X-Apple-CloudKit-Web-Auth-Token")
        .expect("a rotated web auth token")
        .to_str()
        .unwrap()
        .to_owned();

    let mut throttled = 0;
    for _ in 0..BURST {
        let encoded = token
            .replace('%', "%25")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let response = h.zones_list(&encoded).await;
        if let Some(rotated) = response.headers().get("X-Apple-CloudKit-Web-Auth-Token") {
            token = rotated.to_str().unwrap().to_owned();
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
        }
    }
    assert!(
        throttled >= BURST / 2,
        "a rotated token escaped the limit: {throttled} of {BURST} throttled"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_limit_a_burst_is_served() {
    let h = Harness::start(None).await;
    for _ in 0..BURST {
        assert_eq!(h.zones_list("dave").await.status(), StatusCode::OK);
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_endpoints_are_not_rate_limited() {
    let h = Harness::start(Some(1)).await;
    for _ in 0..BURST {
        let response = h
            .client
            .get(format!("{}/_dev/faults", h.server.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    h.server.shutdown().await.unwrap();
}
