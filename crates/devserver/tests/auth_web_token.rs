//! Authentication over HTTP: the API token, web auth tokens and their rotation, per-user private
//! databases, the shared public database, and sign-in redirects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CONTAINER, Harness};
use reqwest::{Method, StatusCode};
use serde_json::json;
use skysync_devserver::ServerConfig;

fn rotated(answer: &common::Answer) -> String {
    answer
        .headers
        .get("X-Apple-CloudKit-Web-Auth-Token")
        .expect("a rotated web auth token on every web-auth response")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn private_without_a_web_token_needs_sign_in_with_a_redirect_url() {
    let h = Harness::start().await;
    let answer = h.get_as("", "private", "zones/list").await;
    answer.assert_error(StatusCode::MISDIRECTED_REQUEST, "AUTHENTICATION_REQUIRED");
    let redirect = answer.body["redirectURL"].as_str().unwrap();
    assert!(redirect.starts_with(&h.server.base_url()), "{redirect}");

    // The redirect is the dev server's own sign-in, which hands out a working token.
    let signed_in = h.send_raw(Method::GET, redirect, None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["ckWebAuthToken"].as_str().unwrap();
    assert_eq!(
        h.get_as(token, "private", "zones/list").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_or_missing_api_token_is_authentication_failed() {
    let h = Harness::with_config(ServerConfig {
        api_token: Some("right".into()),
        ..ServerConfig::default()
    })
    .await;
    let base = h.server.base_url();
    let list = |query: &str| {
        format!("{base}/database/1/{CONTAINER}/development/private/zones/list?{query}")
    };
    let wrong = h
        .send_raw(
            Method::GET,
            &list("ckAPIToken=wrong&ckWebAuthToken=u"),
            None,
        )
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED");
    let missing = h
        .send_raw(Method::GET, &list("ckWebAuthToken=u"), None)
        .await;
    missing.assert_error(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED");
    let right = h
        .send_raw(
            Method::GET,
            &list("ckAPIToken=right&ckWebAuthToken=u"),
            None,
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
}

#[tokio::test]
async fn every_response_rotates_the_token_and_the_rotated_token_is_the_same_user() {
    let h = Harness::start().await;
    let caller = h.get_as(&h.token, "public", "users/caller").await;
    assert_eq!(caller.status, StatusCode::OK, "{}", caller.body);
    let user = caller.body["users"][0]["userRecordName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.starts_with('_'));

    h.create_zone("Notes").await;
    h.create_note("Notes", "n1", "mine").await;

    let mut token = rotated(&caller);
    assert_ne!(token, h.token);
    for _ in 0..3 {
        let answer = h.get_as(&token, "public", "users/caller").await;
        assert_eq!(answer.body["users"][0]["userRecordName"], user.as_str());
        let next = rotated(&answer);
        assert_ne!(next, token);
        token = next;
    }
    // The rotated token sees the same private data; the original one still works too.
    let looked_up = h
        .post_as(
            &token,
            "private",
            "records/lookup",
            json!({"zoneID": {"zoneName": "Notes"}, "records": [{"recordName": "n1"}]}),
        )
        .await;
    assert_eq!(looked_up.record(0)["fields"]["title"]["value"], "mine");
    assert!(
        looked_up
            .headers
            .contains_key("X-Apple-CloudKit-Web-Auth-Token")
    );
    let original = h.get_as(&h.token, "public", "users/current").await;
    assert_eq!(original.body["userRecordName"], user.as_str());

    // Errors to web-auth requests rotate too.
    let error = h
        .post_as(&token, "private", "records/query", json!({}))
        .await;
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert!(
        error
            .headers
            .contains_key("X-Apple-CloudKit-Web-Auth-Token")
    );
}

#[tokio::test]
async fn the_same_token_is_the_same_user_on_another_server() {
    let a = Harness::start().await;
    let b = Harness::start().await;
    let on_a = a.get_as("stable-token", "public", "users/caller").await;
    let on_b = b.get_as("stable-token", "public", "users/caller").await;
    assert_eq!(
        on_a.body["users"][0]["userRecordName"],
        on_b.body["users"][0]["userRecordName"]
    );
}

#[tokio::test]
async fn private_databases_are_per_user_and_the_public_one_is_shared() {
    let h = Harness::start().await;
    h.create_note("_defaultZone", "secret", "mine").await;
    let other = h
        .post_as(
            "other-user",
            "private",
            "records/lookup",
            json!({"records": [{"recordName": "secret"}]}),
        )
        .await;
    assert_eq!(other.record(0)["serverErrorCode"], "NOT_FOUND");

    let written = h
        .post_as(
            &h.token,
            "public",
            "records/modify",
            json!({"operations": [
            {"operationType": "create", "record": {"recordName": "board", "recordType": "Post",
                "fields": {"text": {"value": "hello"}}}}]}),
        )
        .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    let writer = written.record(0)["created"]["userRecordName"].clone();
    let read_by_other = h
        .post_as(
            "other-user",
            "public",
            "records/lookup",
            json!({"records": [{"recordName": "board"}]}),
        )
        .await;
    assert_eq!(read_by_other.record(0)["fields"]["text"]["value"], "hello");
    assert_eq!(read_by_other.record(0)["created"]["userRecordName"], writer);
    // Reading the public database needs no user at all.
    let anonymous = h
        .post_as(
            "",
            "public",
            "records/lookup",
            json!({"records": [{"recordName": "board"}]}),
        )
        .await;
    assert_eq!(anonymous.record(0)["recordName"], "board");
}

#[tokio::test]
async fn writing_the_public_database_or_asking_who_i_am_needs_a_user() {
    let h = Harness::start().await;
    let write = h
        .post_as(
            "",
            "public",
            "records/modify",
            json!({"operations": [
            {"operationType": "create", "record": {"recordName": "x", "recordType": "Post"}}]}),
        )
        .await;
    write.assert_error(StatusCode::MISDIRECTED_REQUEST, "AUTHENTICATION_REQUIRED");
    assert!(write.body["redirectURL"].is_string());
    let caller = h.get_as("", "public", "users/caller").await;
    caller.assert_error(StatusCode::MISDIRECTED_REQUEST, "AUTHENTICATION_REQUIRED");
}

#[tokio::test]
async fn a_server_to_server_request_to_the_private_database_is_refused() {
    let h = Harness::start().await;
    let url = format!(
        "{}/database/1/{CONTAINER}/development/private/zones/list",
        h.server.base_url()
    );
    let response = h
        .client
        .get(url)
        .header("X-Apple-CloudKit-Request-KeyID", "some-key")
        .header(
            "X-Apple-CloudKit-Request-ISO8601Date",
            "2026-01-01T00:00:00Z",
        )
        .header("X-Apple-CloudKit-Request-SignatureV1", "AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["serverErrorCode"], "AUTHENTICATION_FAILED");
}
