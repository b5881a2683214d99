//! The real `skysync-devserver` binary on a `--data` directory: killed with SIGKILL and restarted, its
//! change tags, sync tokens, subscriptions and courier tokens are still valid; SIGTERM stops it
//! cleanly with exit status 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{CONTAINER, client, encode, tag_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "restart-user";

/// A running child `skysync-devserver` and its base URL.
struct Running {
    child: Child,
    base_url: String,
}

async fn spawn(data: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skysync-devserver"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line).await.unwrap();
    assert!(read > 0, "the server exited before listening");
    let base_url = line
        .trim()
        .strip_prefix("skysync-devserver listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    Running { child, base_url }
}

async fn post(base_url: &str, operation: &str, body: Value) -> (StatusCode, Value) {
    let url = format!(
        "{base_url}/database/1/{CONTAINER}/development/private/{operation}?ckAPIToken=api&ckWebAuthToken={}",
        encode(TOKEN)
    );
    let response = client().post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn modify(base_url: &str, operations: Value) -> Value {
    let (status, body) = post(
        base_url,
        "records/modify",
        json!({"zoneID": {"zoneName": "Notes"}, "operations": operations}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn zone_changes(base_url: &str, token: Option<&str>) -> Value {
    let mut zone = json!({"zoneID": {"zoneName": "Notes"}});
    if let Some(token) = token {
        zone["syncToken"] = json!(token);
    }
    let (status, body) = post(base_url, "changes/zone", json!({"zones": [zone]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["zones"][0].clone()
}

fn create(name: &str, title: &str) -> Value {
    json!({"operationType": "create", "record": {"recordName": name, "recordType": "Note",
        "fields": {"title": {"value": title}}}})
}

#[tokio::test]
async fn after_sigkill_and_restart_tags_tokens_subscriptions_and_courier_tokens_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn(dir.path()).await;
    let url = first.base_url.clone();

    let (status, body) = post(
        &url,
        "zones/modify",
        json!({"operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": "Notes"}}}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        &url,
        "subscriptions/modify",
        json!({"operations": [{"operationType": "create", "subscription": {
            "subscriptionID": "notes", "subscriptionType": "zone", "zoneID": {"zoneName": "Notes"}}}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token_url = format!(
        "{url}/device/1/{CONTAINER}/development/tokens/create?ckAPIToken=api&ckWebAuthToken={}",
        encode(TOKEN)
    );
    let created: Value = client()
        .post(token_url)
        .json(&json!({"apnsEnvironment": "development"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let apns_token = created["apnsToken"].as_str().unwrap().to_owned();

    let written = modify(&url, json!([create("n1", "one")])).await;
    let tag_n1 = tag_of(&written["records"][0]);
    let page = zone_changes(&url, None).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    let sync_token = page["syncToken"].as_str().unwrap().to_owned();
    let written = modify(&url, json!([create("n2", "two")])).await;
    let tag_n2 = tag_of(&written["records"][0]);

    // SIGKILL: no chance to flush anything beyond what each answered request committed.
    first.child.kill().await.unwrap();

    let second = spawn(dir.path()).await;
    let url = second.base_url.clone();

    // The old token gives exactly the change made after it.
    let page = zone_changes(&url, Some(&sync_token)).await;
    let names: Vec<_> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordName"].clone())
        .collect();
    assert_eq!(names, [json!("n2")], "{page}");
    assert_eq!(page["records"][0]["recordChangeTag"], tag_n2.as_str());

    // The old change tag is still the current one: an update with it succeeds, and gets a new tag.
    let updated = modify(
        &url,
        json!([{"operationType": "update", "record": {"recordName": "n1", "recordChangeTag": tag_n1,
            "fields": {"title": {"value": "one, updated"}}}}]),
    )
    .await;
    let new_tag = tag_of(&updated["records"][0]);
    assert!(
        new_tag != tag_n1 && new_tag != tag_n2,
        "tags are never reused: {new_tag}"
    );

    // The subscription survived, and so did the courier token, which is notified of that update.
    let (_, subscriptions) = get(&format!(
        "{url}/database/1/{CONTAINER}/development/private/subscriptions/list?ckAPIToken=api&ckWebAuthToken={}",
        encode(TOKEN)
    ))
    .await;
    assert_eq!(subscriptions["subscriptions"][0]["subscriptionID"], "notes");
    let (status, polled) = get(&format!("{url}/_courier/{apns_token}?timeout=5")).await;
    assert_eq!(status, StatusCode::OK, "{polled}");
    assert_eq!(
        polled["notifications"][0]["subscriptionID"], "notes",
        "{polled}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_with_status_zero_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = spawn(dir.path()).await;
    let (status, body) = post(
        &running.base_url,
        "records/modify",
        json!({"operations": [create("kept", "still here")]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let pid = running.child.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let exit = running.child.wait().await.unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");

    let again = spawn(dir.path()).await;
    let (status, body) = post(
        &again.base_url,
        "records/lookup",
        json!({"records": [{"recordName": "kept"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["records"][0]["fields"]["title"]["value"], "still here");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let _first = spawn(dir.path()).await;
    let output = Command::new(env!("CARGO_BIN_EXE_skysync-devserver"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it must not claim to listen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("devserver.redb"), "{stderr}");
}

#[tokio::test]
async fn an_in_process_server_restarted_on_the_same_directory_at_once_keeps_everything() {
    use skysync_devserver::{DevServer, ServerConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: Some(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let first = DevServer::start(config.clone()).await.unwrap();
    let url = first.base_url();
    post(
        &url,
        "zones/modify",
        json!({"operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": "Notes"}}}]}),
    )
    .await;
    let written = modify(&url, json!([create("n1", "one")])).await;
    let tag = tag_of(&written["records"][0]);
    let token = zone_changes(&url, None).await["syncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    first.shutdown().await.unwrap();

    // No wait: shutdown has released the data file.
    let second = DevServer::start(config).await.unwrap();
    let url = second.base_url();
    assert_eq!(zone_changes(&url, Some(&token)).await["records"], json!([]));
    let updated = modify(
        &url,
        json!([{"operationType": "update", "record": {"recordName": "n1", "recordChangeTag": tag,
            "fields": {"title": {"value": "two"}}}}]),
    )
    .await;
    assert_ne!(tag_of(&updated["records"][0]), tag);
    second.shutdown().await.unwrap();
}
