//! The notification poller against a scripted courier on 127.0.0.1: it retries transient failures
//! (and answers that cannot apply to a poll), ends the stream after a fatal one, sends no credentials to the courier, and stops polling (closing
//! its open long-poll) when the stream is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Canned, capture, capture_with_arrivals};
use skysync_model::{ErrorClass, ServerErrorCode, ZoneId};
use skysync_transport::{Auth, CloudDatabase, CloudKitClient, Limits};
use std::time::Duration;

const TOKEN_CREATED: &str =
    r#"{"apnsEnvironment":"development","apnsToken":"tok-1","webcourierURL":"/_courier/tok-1"}"#;
const TOKEN_REGISTERED: &str = r#"{"apnsEnvironment":"development","apnsToken":"tok-1"}"#;
const ONE_NOTIFICATION: &str = r#"{"notifications":[{"notificationID":"x1","subscriptionID":"sub","zoneID":{"zoneName":"Notes","ownerRecordName":"_me"}}]}"#;

fn client(base: &str) -> CloudKitClient {
    CloudKitClient::builder(
        "iCloud.com.example.App",
        Auth::web("api-token-1234", "web-token-5678"),
    )
    .base_url(base)
    .limits(Limits {
        courier_retry_min: Duration::from_millis(10),
        courier_retry_max: Duration::from_millis(40),
        ..Limits::default()
    })
    .build()
    .unwrap()
}

async fn next<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the stream answers within a minute")
}

#[tokio::test]
async fn transient_courier_failures_are_retried_and_the_signal_still_arrives() {
    let (base, served, mut arrivals) = capture_with_arrivals(vec![
        Canned::ok(TOKEN_CREATED),
        Canned::ok(TOKEN_REGISTERED),
        Canned::json(503, r#"{"serverErrorCode":"TRY_AGAIN_LATER"}"#),
        Canned {
            status: 502,
            content_type: "text/html",
            ..Canned::ok("<html>bad gateway</html>")
        },
        Canned::ok(ONE_NOTIFICATION),
        Canned::hold(),
    ])
    .await;
    let mut signals = client(&base).notifications().await.unwrap();
    let signal = next(signals.next_signal()).await.unwrap().unwrap();
    assert_eq!(
        signal.zone,
        ZoneId::new("Notes"),
        "the caller's zone has no owner"
    );
    assert_eq!(signal.subscription_id, "sub");
    // Wait until the next long-poll is open, then drop the stream.
    while next(arrivals.recv()).await.unwrap() < 5 {}
    drop(signals);

    let seen = served.await.unwrap();
    assert!(
        seen[0]
            .path()
            .ends_with("/device/1/iCloud.com.example.App/development/tokens/create")
    );
    assert_eq!(
        String::from_utf8(seen[1].body.clone()).unwrap(),
        TOKEN_REGISTERED
    );
    for poll in &seen[2..] {
        assert_eq!(poll.method, "GET");
        assert_eq!(poll.path(), "/_courier/tok-1");
        assert_eq!(poll.query(), None, "no tokens go to the courier");
    }
    assert!(
        seen[5].closed_by_client,
        "dropping the stream closes the open long-poll"
    );
}

#[tokio::test]
async fn answers_that_cannot_apply_to_a_poll_are_retried_like_transient_ones() {
    let (base, served, mut arrivals) = capture_with_arrivals(vec![
        Canned::ok(TOKEN_CREATED),
        Canned::ok(TOKEN_REGISTERED),
        Canned::json(413, r#"{"serverErrorCode":"LIMIT_EXCEEDED"}"#),
        Canned::json(404, r#"{"serverErrorCode":"ZONE_NOT_FOUND"}"#),
        Canned::json(410, r#"{"serverErrorCode":"CHANGE_TOKEN_EXPIRED"}"#),
        Canned::ok(ONE_NOTIFICATION),
        Canned::hold(),
    ])
    .await;
    let mut signals = client(&base).notifications().await.unwrap();
    let signal = next(signals.next_signal()).await.unwrap();
    assert_eq!(signal.unwrap().zone, ZoneId::new("Notes"));
    while next(arrivals.recv()).await.unwrap() < 6 {}
    drop(signals);
    let seen = served.await.unwrap();
    assert_eq!(seen.len(), 7, "three refused polls, one answered, one open");
}

#[tokio::test]
async fn a_fatal_courier_failure_is_the_last_item_of_the_stream() {
    let (base, _served) = capture(vec![
        Canned::ok(TOKEN_CREATED),
        Canned::ok(TOKEN_REGISTERED),
        Canned::ok(ONE_NOTIFICATION),
        Canned::json(
            401,
            r#"{"serverErrorCode":"AUTHENTICATION_FAILED","reason":"token revoked"}"#,
        ),
    ])
    .await;
    let mut signals = client(&base).notifications().await.unwrap();
    assert!(next(signals.next_signal()).await.unwrap().is_ok());
    let error = next(signals.next_signal()).await.unwrap().unwrap_err();
    assert_eq!(
        error.server_code(),
        Some(&ServerErrorCode::AuthenticationFailed)
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
    assert!(
        next(signals.next_signal()).await.is_none(),
        "the poller stopped"
    );
}

#[tokio::test]
async fn a_failure_to_create_the_notification_token_is_returned_at_once() {
    let (base, _served) = capture(vec![Canned::json(
        421,
        r#"{"serverErrorCode":"AUTHENTICATION_REQUIRED","redirectURL":"https://example.invalid/signin"}"#,
    )])
    .await;
    let error = client(&base).notifications().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Fatal);
    match error {
        skysync_model::CloudError::Server(e) => {
            assert_eq!(e.http_status, 421);
            assert_eq!(
                e.redirect_url.as_deref(),
                Some("https://example.invalid/signin")
            );
        }
        other => panic!("{other:?}"),
    }
}
