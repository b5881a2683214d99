//! Per-user rate limiting over real HTTP: a burst beyond N requests per second from one user is
//! answered `429 THROTTLED` with a `retryAfter`, while other users are still served.
//!
//! The limit is 1 request per second and each burst is ten back-to-back requests on loopback, so
//! nearly all of them fall within the same second; the assertions only ask that most of a burst is
//! refused (an unlimited or mis-keyed server refuses none), and never time anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Answer, Harness};
use reqwest::{Method, StatusCode};
use skysync_devserver::ServerConfig;

const BURST: usize = 10;

/// A server that lets each user make `rate_limit` requests per second (no limit for `None`).
async fn start(rate_limit: Option<u32>) -> Harness {
    Harness::with_config(ServerConfig {
        rate_limit,
        ..ServerConfig::default()
    })
    .await
}

/// `zones/list` in the private database as the user signed in with `web_token`.
async fn zones_list(h: &Harness, web_token: &str) -> Answer {
    h.get_as(web_token, "private", "zones/list").await
}

/// Asserts a `429 THROTTLED` CloudKit body with a `retryAfter` of at least one second.
fn assert_throttled(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let body = &answer.body;
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
    let h = start(Some(1)).await;

    let first = zones_list(&h, "alice").await;
    assert_eq!(first.status, StatusCode::OK);

    let mut throttled = 0;
    for _ in 0..BURST {
        let answer = zones_list(&h, "alice").await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_throttled(&answer);
            throttled += 1;
        } else {
            assert_eq!(answer.status, StatusCode::OK);
        }
    }
    assert!(
        throttled >= BURST / 2,
        "only {throttled} of {BURST} burst requests were throttled"
    );

    let bob = zones_list(&h, "bob").await;
    assert_eq!(bob.status, StatusCode::OK);
    assert!(bob.body["zones"].is_array(), "{}", bob.body);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_stays_limited_when_it_switches_to_its_rotated_web_token() {
    let h = start(Some(1)).await;
    let first = zones_list(&h, "carol").await;
    assert_eq!(first.status, StatusCode::OK);
    let mut token = first
        .headers
        .get("X-Apple-CloudKit-Web-Auth-Token")
        .expect("a rotated web auth token")
        .to_str()
        .unwrap()
        .to_owned();

    let mut throttled = 0;
    for _ in 0..BURST {
        let answer = zones_list(&h, &token).await;
        if let Some(rotated) = answer.headers.get("X-Apple-CloudKit-Web-Auth-Token") {
            token = rotated.to_str().unwrap().to_owned();
        }
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
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
    let h = start(None).await;
    for _ in 0..BURST {
        assert_eq!(zones_list(&h, "dave").await.status, StatusCode::OK);
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_endpoints_are_not_rate_limited() {
    let h = start(Some(1)).await;
    for _ in 0..BURST {
        let answer = h.respond(Method::GET, &h.faults_url(), &[], None).await;
        assert_eq!(answer.status(), StatusCode::OK);
    }
    h.server.shutdown().await.unwrap();
}
