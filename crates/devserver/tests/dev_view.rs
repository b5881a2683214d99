//! The view inside over real HTTP: `/_dev/stats` counts requests per user and operation (with the
//! most in flight at once, throttled answers and lock-outs), `/_dev/records/…` shows every record and
//! tombstone of a database, `/_dev/user` names a token's user. Answers are read into the library's
//! typed shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{CONTAINER, Harness, database_path};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use skysync_devserver::ServerConfig;
use skysync_devserver::auth::web_token_user;
use skysync_devserver::dev_view::{DatabaseSnapshot, DevUser, ServerStats, StatsReset, UserStats};
use skysync_devserver::throttle_profile::ThrottleProfile;
use skysync_devserver::time_scale::TimeScale;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn user_stats(h: &Harness, token: &str) -> UserStats {
    let url = h.server.dev_view().user_stats_url(&web_token_user(token));
    let answer = h.send_raw(Method::GET, &url, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_value(answer.body).unwrap()
}

/// Polls `token`'s stats until `done` holds (at most about five seconds).
async fn wait_for_stats(h: &Harness, token: &str, done: impl Fn(&UserStats) -> bool) -> UserStats {
    for _ in 0..500 {
        let stats = user_stats(h, token).await;
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the stats never got there: {:?}",
        user_stats(h, token).await
    );
}

/// A request written by hand on a TCP connection: headers and the first part of the body are sent,
/// the rest is held back, so that the server holds the request in flight until `finish`.
struct HeldRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl HeldRequest {
    async fn start(h: &Harness, token: &str, operation: &str, body: &Value) -> HeldRequest {
        let body = body.to_string().into_bytes();
        let mut stream = TcpStream::connect(h.server.local_addr()).await.unwrap();
        let head = format!(
            "POST {}?ckAPIToken=api&ckWebAuthToken={token} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            database_path("private", operation),
            h.server.local_addr(),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..1]).await.unwrap();
        stream.flush().await.unwrap();
        HeldRequest {
            stream,
            rest: body[1..].to_vec(),
        }
    }

    /// Sends the rest of the body and reads the whole response; returns its status line.
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.unwrap();
        let mut response = Vec::new();
        self.stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        text.lines().next().unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn the_in_flight_count_is_one_for_a_sequential_client_and_two_for_a_concurrent_one() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    for i in 0..10 {
        h.create_note("Notes", &format!("n{i}"), "x").await;
        h.lookup("Notes", &format!("n{i}")).await;
    }
    let sequential = user_stats(&h, &h.token).await;
    assert_eq!(sequential.totals.requests, 21);
    assert_eq!(sequential.totals.in_flight, 0);
    assert_eq!(
        sequential.totals.max_in_flight, 1,
        "a client that waits for each answer has one request in flight"
    );
    assert_eq!(sequential.operations["records/modify"].requests, 10);
    assert_eq!(sequential.operations["records/lookup"].requests, 10);
    assert_eq!(sequential.operations["zones/modify"].requests, 1);

    // A concurrent client: one request held open while another is answered.
    let token = "concurrent-client";
    let held = HeldRequest::start(
        &h,
        token,
        "records/lookup",
        &json!({"records": [{"recordName": "x"}]}),
    )
    .await;
    wait_for_stats(&h, token, |s| s.totals.in_flight == 1).await;
    let meanwhile = h.get_as(token, "private", "zones/list").await;
    assert_eq!(meanwhile.status, StatusCode::OK);
    let status_line = held.finish().await;
    assert!(status_line.contains("200"), "{status_line}");
    let concurrent = wait_for_stats(&h, token, |s| s.totals.in_flight == 0).await;
    assert_eq!(concurrent.totals.requests, 2);
    assert_eq!(concurrent.totals.max_in_flight, 2);
    assert_eq!(concurrent.operations["records/lookup"].max_in_flight, 1);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_whose_connection_is_lost_leave_flight() {
    let h = Harness::start().await;
    let token = "lost-connections";
    // The response is cut off mid-body.
    h.arm_fault(json!({"operation": "zones/list", "dropConnection": true}))
        .await;
    let url = h.url_as(token, "private", "zones/list");
    let lost = match h.client.get(&url).send().await {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(lost, "the response must be lost");
    // The client hangs up while the server is still delaying its answer.
    h.arm_fault(json!({"operation": "records/lookup", "delayMs": 300}))
        .await;
    let held = HeldRequest::start(
        &h,
        token,
        "records/lookup",
        &json!({"records": [{"recordName": "x"}]}),
    )
    .await;
    wait_for_stats(&h, token, |s| s.totals.requests == 2).await;
    drop(held);
    let after = wait_for_stats(&h, token, |s| s.totals.in_flight == 0).await;
    assert_eq!(after.totals.max_in_flight, 1);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttled_answers_and_lock_outs_are_counted_per_operation_and_reset() {
    let h = Harness::with_config(ServerConfig {
        throttle_profile: Some(ThrottleProfile {
            seed: 4,
            ..ThrottleProfile::cloudkit()
        }),
        time_scale: TimeScale::new(10.0).unwrap(),
        ..ServerConfig::default()
    })
    .await;
    let save = |i: usize| {
        json!({"operations": [{"operationType": "forceReplace", "record": {
            "recordName": format!("n{i}"), "recordType": "Note"}}]})
    };
    for i in 0..4 {
        h.post("records/modify", save(i)).await;
    }
    // Back before its retryAfter (at least a real second at this scale): locked out.
    let early = h.get("zones/list").await;
    assert!(
        [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&early.status),
        "{}",
        early.body
    );
    // An injected throttle counts too.
    h.arm_fault(
        json!({"operation": "users/caller", "serverErrorCode": "THROTTLED", "retryAfter": 1}),
    )
    .await;
    h.get("users/caller").await;

    let stats = user_stats(&h, &h.token).await;
    let modify = &stats.operations["records/modify"];
    assert_eq!(
        (modify.requests, modify.throttled, modify.locked_out),
        (4, 1, 0)
    );
    let list = &stats.operations["zones/list"];
    assert_eq!((list.requests, list.throttled, list.locked_out), (1, 1, 1));
    let caller = &stats.operations["users/caller"];
    assert_eq!(
        (caller.requests, caller.throttled, caller.locked_out),
        (1, 1, 0)
    );
    assert_eq!(
        (
            stats.totals.requests,
            stats.totals.throttled,
            stats.totals.locked_out
        ),
        (6, 3, 1)
    );

    // Every user is listed under its user record name.
    let all = h
        .send_raw(Method::GET, &h.server.dev_view().stats_url(), None)
        .await;
    let all: ServerStats = serde_json::from_value(all.body).unwrap();
    assert_eq!(
        all.users.keys().collect::<Vec<_>>(),
        [&web_token_user(&h.token)]
    );

    let reset = h
        .send_raw(Method::DELETE, &h.server.dev_view().stats_url(), None)
        .await;
    assert_eq!(reset.status, StatusCode::OK);
    let reset: StatsReset = serde_json::from_value(reset.body).unwrap();
    assert_eq!(reset.users, 1);
    assert_eq!(user_stats(&h, &h.token).await, UserStats::default());
    let all = h
        .send_raw(Method::GET, &h.server.dev_view().stats_url(), None)
        .await;
    assert_eq!(all.body, json!({"users": {}}));
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_records_view_shows_every_record_with_its_tag_and_fields_and_the_tombstones() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_zone("Gone").await;
    let tag_a = h.create_note("Notes", "a", "first").await;
    let tag_b = h.create_note("Notes", "b", "second").await;
    let deleted = h
        .modify(
            "Notes",
            json!([{"operationType": "delete", "record": {"recordName": "b", "recordChangeTag": tag_b}}]),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    h.create_note("_defaultZone", "d", "default").await;
    h.delete_zone("Gone").await;

    // The user is named by its user record name, which /_dev/user tells for a token.
    let view = h.server.dev_view();
    let named = h
        .send_raw(Method::GET, &view.user_url(&h.token), None)
        .await;
    let user: DevUser = serde_json::from_value(named.body).unwrap();
    assert_eq!(user.user_record_name, web_token_user(&h.token));

    let url = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user.user_record_name),
        None,
    );
    let answer = h.send_raw(Method::GET, &url, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let snapshot: DatabaseSnapshot = serde_json::from_value(answer.body.clone()).unwrap();
    let names: Vec<(&str, bool)> = snapshot
        .zones
        .iter()
        .map(|z| (z.zone_name.as_str(), z.deleted))
        .collect();
    assert_eq!(
        names,
        [("Gone", true), ("Notes", false), ("_defaultZone", false)]
    );
    let notes = &snapshot.zones[1];
    assert_eq!(notes.records.len(), 1);
    let a = &notes.records[0];
    assert_eq!(a.record_name.as_deref(), Some("a"));
    assert_eq!(a.record_type.as_deref(), Some("Note"));
    assert_eq!(a.record_change_tag.as_deref(), Some(tag_a.as_str()));
    assert_eq!(
        answer.body["zones"][1]["records"][0]["fields"]["title"]["value"],
        "first"
    );
    assert!(a.created.is_some() && a.modified.is_some());
    assert_eq!(notes.tombstones.len(), 1);
    let b = &notes.tombstones[0];
    assert_eq!(b.record_name, "b");
    assert_eq!(b.record_type.as_deref(), Some("Note"));
    assert!(!b.record_change_tag.is_empty());
    assert_ne!(b.record_change_tag, tag_b, "the delete wrote a new tag");
    assert!(b.deleted_at_ms.is_some());
    // The sync token is the one zones/list reports.
    let listed = h.get("zones/list").await;
    let listed_token = listed.body["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["zoneID"]["zoneName"] == "Notes")
        .unwrap()["syncToken"]
        .clone();
    assert_eq!(json!(notes.sync_token), listed_token);
    assert!(snapshot.zones[0].records.is_empty() && snapshot.zones[0].sync_token.is_none());

    // One zone only.
    let one = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user.user_record_name),
        Some("Notes"),
    );
    let one: DatabaseSnapshot =
        serde_json::from_value(h.send_raw(Method::GET, &one, None).await.body).unwrap();
    assert_eq!(one.zones.len(), 1);
    assert_eq!(&one.zones[0], notes);

    // Another user's database is theirs alone; the public database needs no user; a private one
    // does.
    let other = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&web_token_user("someone else")),
        None,
    );
    let other: DatabaseSnapshot =
        serde_json::from_value(h.send_raw(Method::GET, &other, None).await.body).unwrap();
    assert_eq!(other.zones.len(), 1);
    assert!(other.zones[0].records.is_empty());
    let public = view.records_url(CONTAINER, "development", "public", None, None);
    assert_eq!(
        h.send_raw(Method::GET, &public, None).await.status,
        StatusCode::OK
    );
    let anonymous = view.records_url(CONTAINER, "development", "private", None, None);
    h.send_raw(Method::GET, &anonymous, None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let bad_database = view.records_url(CONTAINER, "development", "secret", Some("_x"), None);
    h.send_raw(Method::GET, &bad_database, None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    h.server.shutdown().await.unwrap();
}
