//! Throttling as CloudKit does it, over real HTTP: `Retry-After` beside every `retryAfter`, and the
//! CloudKit throttle profile run at a time scale, so that a minute of CloudKit's pacing passes in
//! well under a second.
//!
//! No assertion times anything: the clients below sleep (real time) to pace themselves, and the
//! assertions are about which answers came back, which the profile fixes whatever the machine's
//! speed (a client that sleeps at least as told is never early; one that sends 100 times faster
//! than the sustained pace is over it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Answer, Harness};
use reqwest::StatusCode;
use serde_json::json;
use skysync_devserver::ServerConfig;
use skysync_devserver::throttle_profile::ThrottleProfile;
use skysync_devserver::time_scale::TimeScale;

/// A server running the CloudKit profile (seeded) `scale` times faster than real time.
async fn cloudkit_server(scale: f64) -> Harness {
    let h = Harness::with_config(ServerConfig {
        throttle_profile: Some(ThrottleProfile {
            seed: 11,
            ..ThrottleProfile::cloudkit()
        }),
        time_scale: TimeScale::new(scale).unwrap(),
        ..ServerConfig::default()
    })
    .await;
    h.create_zone("Notes").await;
    h
}

/// Saves note `i` (a `records/modify`, the paced operation).
async fn save(h: &Harness, i: usize) -> Answer {
    h.modify(
        "Notes",
        json!([{"operationType": "forceReplace", "record": {
            "recordName": format!("n{i}"), "recordType": "Note",
            "fields": {"i": {"value": i}}
        }}]),
    )
    .await
}

fn is_throttled(answer: &Answer) -> bool {
    answer.status == StatusCode::TOO_MANY_REQUESTS
        || answer.status == StatusCode::SERVICE_UNAVAILABLE
}

/// Asserts a throttle answer: 429 THROTTLED or 503 TRY_AGAIN_LATER, with `retryAfter` (whole
/// seconds, at least 1) in the body and the same in `Retry-After`. Returns the seconds.
fn retry_after_of(answer: &Answer) -> u64 {
    let code = answer.body["serverErrorCode"].as_str().unwrap_or_default();
    match answer.status {
        StatusCode::TOO_MANY_REQUESTS => assert_eq!(code, "THROTTLED", "{}", answer.body),
        StatusCode::SERVICE_UNAVAILABLE => assert_eq!(code, "TRY_AGAIN_LATER", "{}", answer.body),
        other => panic!("not a throttle answer: {other} {}", answer.body),
    }
    assert!(answer.body["uuid"].is_string(), "{}", answer.body);
    let seconds = answer.body["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retryAfter in {}", answer.body));
    assert!(seconds >= 1);
    let header = answer
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After header beside {}", answer.body));
    assert_eq!(header.to_str().unwrap(), seconds.to_string());
    seconds
}

#[tokio::test]
async fn every_retry_after_in_a_body_is_also_a_retry_after_header() {
    // The plain rate limit.
    let h = Harness::with_config(ServerConfig {
        rate_limit: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let mut throttled = None;
    for _ in 0..10 {
        let answer = h.get("zones/list").await;
        if is_throttled(&answer) {
            throttled = Some(answer);
            break;
        }
    }
    let throttled = throttled.expect("ten requests at once are over 1 per second");
    retry_after_of(&throttled);
    h.server.shutdown().await.unwrap();

    // Injected faults: THROTTLED and TRY_AGAIN_LATER with a retryAfter carry the header; without a
    // retryAfter (a transient TRY_AGAIN_LATER) neither the body nor the headers have one.
    let h = Harness::start().await;
    for (code, seconds) in [("THROTTLED", 3), ("TRY_AGAIN_LATER", 7)] {
        h.arm_fault(
            json!({"operation": "zones/list", "serverErrorCode": code, "retryAfter": seconds}),
        )
        .await;
        assert_eq!(retry_after_of(&h.get("zones/list").await), seconds);
    }
    h.arm_fault(json!({"operation": "zones/list", "serverErrorCode": "TRY_AGAIN_LATER"}))
        .await;
    let transient = h.get("zones/list").await;
    assert_eq!(transient.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(transient.body.get("retryAfter").is_none());
    assert!(transient.headers.get("retry-after").is_none());
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cloudkit_profile_throttles_a_client_sending_one_save_per_second_and_locks_it_out_longer_and_longer()
 {
    // 100 times faster: one save per server second is one per 10 ms.
    let h = cloudkit_server(100.0).await;
    let mut answers = Vec::new();
    for i in 0..40 {
        answers.push(save(&h, i).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let saved = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let retry_afters: Vec<u64> = answers
        .iter()
        .filter(|a| is_throttled(a))
        .map(retry_after_of)
        .collect();
    assert_eq!(saved + retry_afters.len(), 40, "only saves and throttles");
    assert!(
        saved < 20,
        "one save per second is at least ten times the pace of one per 10-15 s: {saved} saved"
    );
    // Coming back early again and again: each lock-out outlasts the previous one (60 s doubling,
    // up to an hour: 1, 2, 3, 5, 10, 20, 36 real seconds at this scale).
    assert!(
        retry_afters.windows(2).skip(1).all(|w| w[1] >= w[0]),
        "{retry_afters:?}"
    );
    assert!(
        retry_afters.last().copied().unwrap_or_default() >= 20,
        "{retry_afters:?}"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cloudkit_profile_never_throttles_a_client_pacing_itself_at_the_sustained_interval() {
    // 1000 times faster: the longest sustained interval, 15 s, is 15 ms.
    let h = cloudkit_server(1000.0).await;
    for i in 0..25 {
        let answer = save(&h, i).await;
        assert_eq!(answer.status, StatusCode::OK, "save {i}: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cloudkit_profile_admits_a_client_that_waits_as_told_and_never_locks_it_out() {
    // 100 times faster: a retryAfter of 10-80 s is told as 1 real second, and a burst of four
    // saves lands within the 10-15 s (0.1-0.15 s) that make it a burst even on a slow machine.
    let h = cloudkit_server(100.0).await;
    let mut outcomes = Vec::new();
    for i in 0..7 {
        let answer = save(&h, i).await;
        if is_throttled(&answer) {
            let seconds = retry_after_of(&answer);
            assert_eq!(seconds, 1, "80 s at most, a hundred times faster");
            outcomes.push("throttled");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        } else {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            outcomes.push("saved");
        }
    }
    // A burst of three, then told to wait; after waiting, a full burst again: never locked out.
    assert_eq!(
        outcomes,
        [
            "saved",
            "saved",
            "saved",
            "throttled",
            "saved",
            "saved",
            "saved"
        ]
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_profile_paces_each_users_database_apart_and_lets_fetches_through() {
    let h = cloudkit_server(1.0).await;
    for i in 0..3 {
        assert_eq!(save(&h, i).await.status, StatusCode::OK);
    }
    // Fetches are not paced, only held back by a penalty in force.
    for _ in 0..5 {
        assert_eq!(h.get("zones/list").await.status, StatusCode::OK);
    }
    let refused = save(&h, 3).await;
    assert!(retry_after_of(&refused) >= 10, "{}", refused.body);
    // Another user's database is paced on its own.
    let other = h
        .post_as("someone-else", "private", "zones/list", json!({}))
        .await;
    assert_ne!(other.status, StatusCode::TOO_MANY_REQUESTS);
    let other_save = h
        .post_as(
            "someone-else",
            "private",
            "records/modify",
            json!({"operations": [{"operationType": "forceReplace", "record": {
                "recordName": "x", "recordType": "Note"}}]}),
        )
        .await;
    assert_eq!(other_save.status, StatusCode::OK, "{}", other_save.body);
    h.server.shutdown().await.unwrap();
}
