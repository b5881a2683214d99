//! Subscriptions, notification tokens and the web courier long-poll over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CONTAINER, Harness, encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn zone_subscription(id: &str, zone: &str) -> Value {
    json!({"subscriptionID": id, "subscriptionType": "zone", "zoneID": {"zoneName": zone}})
}

async fn modify_subscriptions(h: &Harness, operations: Value) -> Value {
    let answer = h
        .post("subscriptions/modify", json!({"operations": operations}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// `tokens/create` as the harness's user; returns (apnsToken, webcourierURL).
async fn create_token(h: &Harness) -> (String, String) {
    let url = format!(
        "{}/device/1/{CONTAINER}/development/tokens/create?ckAPIToken=api&ckWebAuthToken={}",
        h.server.base_url(),
        encode(&h.token)
    );
    let answer = h
        .send_raw(
            Method::POST,
            &url,
            Some(br#"{"apnsEnvironment":"development"}"#.to_vec()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["apnsEnvironment"], "development");
    (
        answer.body["apnsToken"].as_str().unwrap().to_owned(),
        answer.body["webcourierURL"].as_str().unwrap().to_owned(),
    )
}

async fn poll(h: &Harness, courier_url: &str, timeout_secs: u64) -> Vec<Value> {
    let answer = h
        .send_raw(
            Method::GET,
            &format!("{courier_url}?timeout={timeout_secs}"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["notifications"].as_array().unwrap().clone()
}

#[tokio::test]
async fn subscriptions_are_created_idempotently_updated_listed_looked_up_and_deleted() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let sub = zone_subscription("notes-changes", "Notes");
    let created = modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": sub}]),
    )
    .await;
    assert_eq!(
        created["subscriptions"][0]["subscriptionID"],
        "notes-changes"
    );
    let again = modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": sub}]),
    )
    .await;
    assert_eq!(
        again["subscriptions"][0]["subscriptionID"], "notes-changes",
        "{again}"
    );

    let query = json!({"subscriptionID": "artists", "subscriptionType": "query",
        "query": {"recordType": "Artist"}, "firesOn": ["create"]});
    modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": query}]),
    )
    .await;
    let mut updated_query = query.clone();
    updated_query["firesOn"] = json!(["create", "update"]);
    let updated = modify_subscriptions(
        &h,
        json!([{"operationType": "update", "subscription": updated_query}]),
    )
    .await;
    assert_eq!(
        updated["subscriptions"][0]["firesOn"],
        json!(["create", "update"])
    );

    let listed = h.get("subscriptions/list").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let mut ids: Vec<_> = listed.body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionID"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["artists", "notes-changes"]);

    let looked_up = h
        .post(
            "subscriptions/lookup",
            json!({"subscriptions": [{"subscriptionID": "artists"}, {"subscriptionID": "nope"}]}),
        )
        .await;
    assert_eq!(
        looked_up.body["subscriptions"][0]["firesOn"],
        json!(["create", "update"])
    );
    assert_eq!(
        looked_up.body["subscriptions"][1]["serverErrorCode"],
        "NOT_FOUND"
    );

    let deleted = modify_subscriptions(
        &h,
        json!([{"operationType": "delete", "subscription": {"subscriptionID": "artists", "subscriptionType": "query"}},
               {"operationType": "delete", "subscription": {"subscriptionID": "ghost", "subscriptionType": "zone"}}]),
    )
    .await;
    assert_eq!(deleted["subscriptions"][0]["subscriptionID"], "artists");
    assert_eq!(deleted["subscriptions"][1]["serverErrorCode"], "NOT_FOUND");
    let listed = h.get("subscriptions/list").await;
    assert_eq!(listed.body["subscriptions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_subscription_to_a_missing_zone_or_without_a_query_is_refused() {
    let h = Harness::start().await;
    let answer = modify_subscriptions(
        &h,
        json!([
            {"operationType": "create", "subscription": zone_subscription("z", "Missing")},
            {"operationType": "create", "subscription": {"subscriptionID": "q", "subscriptionType": "query"}},
            {"operationType": "update", "subscription": zone_subscription("never-created", "_defaultZone")}
        ]),
    )
    .await;
    assert_eq!(
        answer["subscriptions"][0]["serverErrorCode"],
        "ZONE_NOT_FOUND"
    );
    assert_eq!(answer["subscriptions"][1]["serverErrorCode"], "BAD_REQUEST");
    assert_eq!(answer["subscriptions"][2]["serverErrorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn the_courier_answers_a_waiting_poll_when_a_subscribed_zone_changes() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_zone("Other").await;
    modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": zone_subscription("notes", "Notes")}]),
    )
    .await;
    let (_, courier_url) = create_token(&h).await;
    assert!(
        courier_url.starts_with(&h.server.base_url()),
        "{courier_url}"
    );

    // A long poll (60 s timeout) that the change below answers early.
    let polling = {
        let client = h.client.clone();
        let url = format!("{courier_url}?timeout=60");
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        })
    };
    // A change to an unsubscribed zone fires nothing; then the subscribed zone changes.
    h.create_note("Other", "o1", "x").await;
    h.create_note("Notes", "n1", "x").await;
    let answer = polling.await.unwrap();
    let notifications = answer["notifications"].as_array().unwrap();
    assert!(!notifications.is_empty(), "{answer}");
    for notification in notifications {
        assert_eq!(notification["subscriptionID"], "notes");
        assert_eq!(notification["zoneID"]["zoneName"], "Notes");
        assert!(notification["notificationID"].is_string());
    }
}

#[tokio::test]
async fn a_change_between_polls_is_kept_and_a_quiet_poll_times_out_empty() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": zone_subscription("notes", "Notes")}]),
    )
    .await;
    let (_, courier_url) = create_token(&h).await;
    assert!(poll(&h, &courier_url, 1).await.is_empty());

    h.create_note("Notes", "n1", "x").await;
    let kept = poll(&h, &courier_url, 30).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(poll(&h, &courier_url, 1).await.is_empty(), "delivered once");

    // Deleting the zone notifies too.
    h.delete_zone("Notes").await;
    let deleted = poll(&h, &courier_url, 30).await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["zoneID"]["zoneName"], "Notes");
}

#[tokio::test]
async fn another_users_changes_do_not_reach_my_courier() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    modify_subscriptions(
        &h,
        json!([{"operationType": "create", "subscription": zone_subscription("notes", "Notes")}]),
    )
    .await;
    let (_, courier_url) = create_token(&h).await;
    let other = "another-user";
    h.post_as(
        other,
        "private",
        "zones/modify",
        json!({"operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": "Notes"}}}]}),
    )
    .await;
    let written = h
        .post_as(
            other,
            "private",
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "operations": [
                {"operationType": "create", "record": {"recordName": "x", "recordType": "Note"}}]}),
        )
        .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    assert!(poll(&h, &courier_url, 1).await.is_empty());
}

#[tokio::test]
async fn tokens_register_echoes_and_an_unknown_courier_token_is_not_found() {
    let h = Harness::start().await;
    let url = format!(
        "{}/device/1/{CONTAINER}/development/tokens/register?ckAPIToken=api&ckWebAuthToken={}",
        h.server.base_url(),
        encode(&h.token)
    );
    let body = json!({"apnsEnvironment": "production", "apnsToken": "abc123"});
    let answer = h
        .send_raw(Method::POST, &url, Some(serde_json::to_vec(&body).unwrap()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, body);
    // The registered token can now be polled.
    let registered = format!("{}/_courier/abc123", h.server.base_url());
    assert!(poll(&h, &registered, 1).await.is_empty());

    let unknown = h
        .send_raw(
            Method::GET,
            &format!("{}/_courier/never-issued?timeout=1", h.server.base_url()),
            None,
        )
        .await;
    unknown.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let undecodable = h
        .send_raw(
            Method::GET,
            &format!("{}/_courier/%FF%FE?timeout=1", h.server.base_url()),
            None,
        )
        .await;
    undecodable.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    let bad_env = h
        .send_raw(
            Method::POST,
            &url.replace("register", "create"),
            Some(br#"{"apnsEnvironment":"moon"}"#.to_vec()),
        )
        .await;
    bad_env.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn tokens_need_a_signed_in_user_and_the_database_path_is_not_served() {
    let h = Harness::start().await;
    let url = format!(
        "{}/device/1/{CONTAINER}/development/tokens/create?ckAPIToken=api",
        h.server.base_url()
    );
    let answer = h
        .send_raw(
            Method::POST,
            &url,
            Some(br#"{"apnsEnvironment":"development"}"#.to_vec()),
        )
        .await;
    answer.assert_error(StatusCode::MISDIRECTED_REQUEST, "AUTHENTICATION_REQUIRED");

    let documented_path = h
        .post("tokens/create", json!({"apnsEnvironment": "development"}))
        .await;
    documented_path.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn shutdown_ends_a_waiting_poll() {
    let h = Harness::start().await;
    let (_, courier_url) = create_token(&h).await;
    let polling = {
        let client = h.client.clone();
        tokio::spawn(async move {
            client
                .get(format!("{courier_url}?timeout=120"))
                .send()
                .await
        })
    };
    // Let the poll arrive, then stop the server: shutdown must not wait out the 120 s.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.server.shutdown().await.unwrap();
    let response = polling.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["notifications"], json!([]));
}
