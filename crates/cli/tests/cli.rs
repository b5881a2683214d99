//! The `skysync` binary, run as a user runs it, on real store files and a real dev server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::Value;
use skysync_devserver::dev_view::{DevUser, DevView, UserStats};
use skysync_devserver::{DevServer, ServerConfig};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NOTE: &str = r#"{"title": {"value": "Groceries", "type": "STRING"}, "stars": {"value": 4, "type": "INT64"}}"#;

fn skysync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skysync"))
        .args(args)
        .output()
        .expect("run skysync")
}

fn ok(args: &[&str]) -> String {
    let out = skysync(args);
    assert!(
        out.status.success(),
        "skysync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Asserts the command failed with exit code 1 and exactly one stderr line containing `needles`.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = skysync(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "skysync {args:?} should fail with 1"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("skysync: "), "{stderr:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{stderr:?} should say {needle:?}");
    }
    stderr
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn put(store: &Path, zone: &str, name: &str, record_type: &str, fields: &str) {
    ok(&[
        "put",
        "--store",
        s(store),
        "--zone",
        zone,
        "--name",
        name,
        "--type",
        record_type,
        "--fields",
        fields,
    ]);
}

fn store_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn put_is_durable_and_get_records_pending_status_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    put(
        &store,
        "Notes",
        "t1",
        "Tag",
        r#"{"label": {"value": "home"}}"#,
    );
    put(
        &store,
        "Other",
        "n2",
        "Note",
        r#"{"title": {"value": "Other"}}"#,
    );

    let got = json(&[
        "get",
        "--store",
        s(&store),
        "--zone",
        "Notes",
        "--name",
        "n1",
        "--json",
    ]);
    assert_eq!(got["type"], "Note");
    assert_eq!(got["fields"]["title"]["value"], "Groceries");
    assert_eq!(got["fields"]["title"]["type"], "STRING");
    assert_eq!(got["fields"]["stars"]["value"], 4);
    assert_eq!(got["change_tag"], Value::Null);
    let line = ok(&[
        "get",
        "--store",
        s(&store),
        "--zone",
        "Notes",
        "--name",
        "n1",
    ]);
    assert!(line.starts_with("Notes/n1 (Note)"), "{line}");

    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["zone"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let in_zone = json(&["records", "--store", s(&store), "--zone", "Notes", "--json"]);
    assert_eq!(names(in_zone), ["Notes/n1", "Notes/t1"]);
    let of_type = json(&["records", "--store", s(&store), "--type", "Note", "--json"]);
    assert_eq!(names(of_type), ["Notes/n1", "Other/n2"]);
    let both = json(&[
        "records",
        "--store",
        s(&store),
        "--zone",
        "Other",
        "--type",
        "Note",
        "--json",
    ]);
    assert_eq!(names(both), ["Other/n2"]);
    let all = json(&["records", "--store", s(&store), "--json"]);
    assert_eq!(names(all), ["Notes/n1", "Notes/t1", "Other/n2"]);

    let pending = json(&["pending", "--store", s(&store), "--json"]);
    let queued = pending["pending"].as_array().unwrap();
    assert_eq!(queued.len(), 3);
    assert_eq!(queued[0]["operation"], "save");
    assert_eq!(queued[0]["name"], "n1");
    assert_eq!(pending["parked"].as_array().unwrap().len(), 0);
    assert_eq!(pending["open_conflicts"].as_array().unwrap().len(), 0);

    let status = json(&["status", "--store", s(&store), "--json"]);
    assert_eq!(status["pending"], 3);
    assert_eq!(status["parked"], 0);
    assert_eq!(status["tagged_records"], 0);
    let human = ok(&["status", "--store", s(&store)]);
    assert!(human.contains("pending: 3"), "{human}");
}

#[test]
fn delete_removes_the_record_and_queues_the_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    ok(&[
        "delete",
        "--store",
        s(&store),
        "--zone",
        "Notes",
        "--name",
        "n1",
    ]);
    fails(
        &[
            "get",
            "--store",
            s(&store),
            "--zone",
            "Notes",
            "--name",
            "n1",
        ],
        &["no record n1 in zone Notes"],
    );
    let pending = json(&["pending", "--store", s(&store), "--json"]);
    let queued = pending["pending"].as_array().unwrap();
    assert_eq!(
        queued.len(),
        1,
        "the save and the delete coalesce: {pending}"
    );
    assert_eq!(queued[0]["operation"], "delete");
    fails(
        &[
            "delete",
            "--store",
            s(&store),
            "--zone",
            "Notes",
            "--name",
            "nope",
        ],
        &["no record nope in zone Notes"],
    );
}

#[test]
fn a_missing_store_is_one_line_saying_to_check_the_path_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "missing.redb");
    for args in [
        vec!["status", "--store", s(&store)],
        vec!["pending", "--store", s(&store)],
        vec!["records", "--store", s(&store)],
        vec!["get", "--store", s(&store), "--zone", "Z", "--name", "n"],
        vec!["delete", "--store", s(&store), "--zone", "Z", "--name", "n"],
    ] {
        fails(&args, &["no store at", "check the path"]);
    }
    assert!(!store.exists(), "reading must not create a store");
}

#[test]
fn a_corrupt_store_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "corrupt.redb");
    std::fs::write(
        &store,
        b"this is not a redb file at all, just garbage bytes",
    )
    .unwrap();
    for command in ["status", "pending", "records"] {
        fails(
            &[command, "--store", s(&store)],
            &["cannot open", "corrupt", "backup"],
        );
    }
    fails(
        &[
            "put",
            "--store",
            s(&store),
            "--zone",
            "Z",
            "--name",
            "n",
            "--type",
            "T",
            "--fields",
            "{}",
        ],
        &["corrupt"],
    );
    fails(
        &["get", "--store", s(&store), "--zone", "Z", "--name", "n"],
        &["corrupt", "backup"],
    );
    fails(
        &["delete", "--store", s(&store), "--zone", "Z", "--name", "n"],
        &["corrupt", "backup"],
    );
    // sync opens the store before it sends anything: the port is never reached.
    fails(
        &sync_args(&store, "http://127.0.0.1:1", "5"),
        &["corrupt", "backup"],
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        b"this is not a redb file at all, just garbage bytes",
        "a corrupt file is left alone"
    );
}

#[test]
fn a_store_of_a_newer_format_is_refused_with_upgrade_advice() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "newer.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<'_, &str, u64> =
                redb::TableDefinition::new("skysync.meta");
            let mut table = txn.open_table(meta).unwrap();
            table.insert("format_version", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    for command in ["status", "pending", "records"] {
        fails(
            &[command, "--store", s(&store)],
            &["format version 99", "newer skysync"],
        );
    }
    fails(
        &[
            "get",
            "--store",
            s(&store),
            "--zone",
            "Notes",
            "--name",
            "n1",
        ],
        &["format version 99"],
    );
    fails(
        &[
            "put",
            "--store",
            s(&store),
            "--zone",
            "Notes",
            "--name",
            "n2",
            "--type",
            "Note",
            "--fields",
            NOTE,
        ],
        &["format version 99", "newer skysync"],
    );
    fails(
        &[
            "delete",
            "--store",
            s(&store),
            "--zone",
            "Notes",
            "--name",
            "n1",
        ],
        &["format version 99", "newer skysync"],
    );
    fails(
        &sync_args(&store, "http://127.0.0.1:1", "5"),
        &["format version 99", "newer skysync"],
    );
}

#[test]
fn a_store_an_engine_has_open_is_refused_with_what_to_do() {
    let server = Server::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    // A sync that keeps running (no --until-idle) holds the file.
    let mut child = Command::new(env!("CARGO_BIN_EXE_skysync"))
        .args([
            "sync",
            "--store",
            s(&store),
            "--server",
            &server.url,
            "--token",
            "user-1",
            "--zone",
            "Notes",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the server has heard from it, its engine has the store open.
    let mut running = false;
    for _ in 0..1500 {
        if server.stats("user-1").totals.requests > 0 {
            running = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = skysync(&["status", "--store", s(&store)]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the sync never reached the server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("stop the app or engine that has it open"),
        "{stderr}"
    );
    // Once the engine is gone, the store reads again, with nothing lost.
    let status = json(&["status", "--store", s(&store), "--json"]);
    assert_eq!(
        status["pending"].as_u64().unwrap() + status["tagged_records"].as_u64().unwrap(),
        1
    );
}

#[test]
fn malformed_fields_are_refused_before_the_store_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    for fields in [
        "not json",
        r#"["a list"]"#,
        r#"{"title": "no wire dictionary"}"#,
        r#"{"stars": {"value": "four", "type": "INT64"}}"#,
        r#"{"when": {"value": 1, "type": "NO_SUCH_TYPE"}}"#,
    ] {
        fails(
            &[
                "put",
                "--store",
                s(&store),
                "--zone",
                "Z",
                "--name",
                "n",
                "--type",
                "T",
                "--fields",
                fields,
            ],
            &["--fields is not valid", "\"type\": \"STRING\""],
        );
    }
    assert!(!store.exists(), "nothing is created for a refused put");
}

#[test]
fn usage_errors_exit_with_2() {
    let out = skysync(&["get", "--store", "x.redb", "--zone", "Z"]);
    assert_eq!(out.status.code(), Some(2));
    let out = skysync(&[
        "sync",
        "--store",
        "x.redb",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
    ]);
    assert_eq!(out.status.code(), Some(2), "at least one --zone");
    let out = skysync(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A dev server on 127.0.0.1:0 running on its own runtime while the test runs the binary.
struct Server {
    runtime: tokio::runtime::Runtime,
    server: Option<DevServer>,
    url: String,
}

impl Server {
    fn start(config: ServerConfig) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(DevServer::start(config)).unwrap();
        let url = server.base_url();
        Server {
            runtime,
            server: Some(server),
            url,
        }
    }
}

impl Server {
    /// Runs `future` on the server's runtime (for HTTP to its `/_dev/` endpoints).
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// POSTs `body` to `/_dev/{path}` (a fault to arm).
    fn arm(&self, path: &str, body: Value) {
        let url = format!("{}/_dev/{path}", self.url);
        let status = self.block_on(async {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "arming {body} answered {status}");
    }

    /// The request counters of the user `token` signs in as.
    fn stats(&self, token: &str) -> UserStats {
        let view = DevView::new(self.url.clone());
        self.block_on(async {
            let user: DevUser = reqwest::get(view.user_url(token))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reqwest::get(view.user_stats_url(&user.user_record_name))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    /// Creates record `name` of zone Notes on the server as `token`'s user, as another device
    /// would, straight through CloudKit's `records/modify`.
    fn create_elsewhere(&self, token: &str, name: &str, title: &str) {
        let url = format!(
            "{}/database/1/iCloud.dev.skysync/development/private/records/modify\
             ?ckAPIToken=dev-api-token&ckWebAuthToken={token}",
            self.url
        );
        let body = serde_json::json!({
            "zoneID": {"zoneName": "Notes"},
            "operations": [{"operationType": "create", "record": {
                "recordName": name, "recordType": "Note",
                "fields": {"title": {"value": title, "type": "STRING"}}
            }}]
        });
        let (status, answer) = self.block_on(async {
            let response = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        });
        assert!(status.is_success(), "{status}: {answer}");
        assert!(!answer.contains("serverErrorCode"), "{answer}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

fn sync_args<'a>(store: &'a Path, url: &'a str, timeout: &'a str) -> Vec<&'a str> {
    vec![
        "sync",
        "--store",
        s(store),
        "--server",
        url,
        "--token",
        "user-1",
        "--zone",
        "Notes",
        "--until-idle",
        "--timeout",
        timeout,
    ]
}

#[test]
fn a_record_put_on_one_store_reaches_another_through_sync() {
    let server = Server::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let a = store_in(&dir, "a.redb");
    let b = store_in(&dir, "b.redb");
    put(&a, "Notes", "n1", "Note", NOTE);

    let mut args = sync_args(&a, &server.url, "60");
    args.push("--json");
    let synced = json(&args);
    assert_eq!(synced["outcome"], "idle");
    assert_eq!(synced["pending"], 0);
    assert_eq!(synced["tagged_records"], 1);
    let status = json(&["status", "--store", s(&a), "--json"]);
    assert_eq!(status["pending"], 0);
    assert_eq!(status["synced_zones"], serde_json::json!(["Notes"]));

    let human = ok(&sync_args(&b, &server.url, "60"));
    assert!(human.contains("outcome: idle"), "{human}");
    let got = json(&[
        "get",
        "--store",
        s(&b),
        "--zone",
        "Notes",
        "--name",
        "n1",
        "--json",
    ]);
    assert_eq!(got["fields"]["title"]["value"], "Groceries");
    assert_eq!(got["fields"]["stars"]["value"], 4);
    assert!(
        got["change_tag"].is_string(),
        "a fetched record has its tag: {got}"
    );
}

#[test]
fn sync_against_no_server_times_out_with_the_reason_and_the_diagnostics() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    let mut args = sync_args(&store, &url, "3");
    args.push("--json");
    let out = skysync(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("did not finish within 3 s"), "{stderr}");
    assert!(stderr.contains("1 pending"), "{stderr}");
    let diagnostics: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diagnostics["outcome"], "timed out");
    assert_eq!(diagnostics["pending"], 1);
}

#[test]
fn sync_stops_on_a_halt_with_its_reason() {
    // The server wants another API token than the engine's: every request is refused.
    let server = Server::start(ServerConfig {
        api_token: Some("not-the-engines-token".into()),
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    put(&store, "Notes", "n1", "Note", NOTE);
    let out = skysync(&sync_args(&store, &server.url, "60"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("sync halted"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("outcome: halted"), "{stdout}");

    // With the token the server wants (a CloudKit flag), the same store syncs.
    let mut args = sync_args(&store, &server.url, "60");
    args.extend(["--api-token", "not-the-engines-token", "--json"]);
    let synced = json(&args);
    assert_eq!(synced["outcome"], "idle");
    assert_eq!(synced["pending"], 0);
}

#[test]
fn sync_refuses_a_server_that_is_not_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "a.redb");
    fails(
        &sync_args(&store, "not a url", "5"),
        &["sync failed", "check --server"],
    );
}

#[test]
fn devserver_listens_and_says_where() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skysync"))
        .args(["devserver", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("skysync devserver listening on ")
        .map(str::to_owned);
    let connected = url
        .as_deref()
        .and_then(|u| u.strip_prefix("http://"))
        .map(|addr| std::net::TcpStream::connect(addr).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(connected, Some(true), "{line:?}");

    let out = skysync(&["devserver", "--time-scale", "0", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev server failed"));
}

#[test]
fn until_idle_waits_for_a_fetch_that_finds_nothing_new() {
    // Store B has a change to send; its send is held for 5 s by the server. While it is held
    // (after B's first fetch), another device creates a1 on the server. B's send then completes
    // and B has nothing pending: it may exit only after one more fetch, which brings a1.
    let server = Server::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let b = store_in(&dir, "b.redb");
    put(&b, "Notes", "b1", "Note", NOTE);
    server.arm(
        "faults",
        serde_json::json!({"operation": "records/modify", "delayMs": 5000}),
    );
    let mut args = sync_args(&b, &server.url, "60");
    args.push("--json");
    let child = Command::new(env!("CARGO_BIN_EXE_skysync"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = false;
    for _ in 0..1500 {
        let stats = server.stats("user-1");
        if stats
            .operations
            .get("records/modify")
            .is_some_and(|op| op.in_flight > 0)
        {
            held = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !held {
        let out = child.wait_with_output().unwrap();
        panic!(
            "B's send never reached the server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.create_elsewhere("user-1", "a1", "made elsewhere");

    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let synced: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(synced["outcome"], "idle");
    assert_eq!(synced["pending"], 0);
    let got = json(&[
        "get",
        "--store",
        s(&b),
        "--zone",
        "Notes",
        "--name",
        "a1",
        "--json",
    ]);
    assert_eq!(got["fields"]["title"]["value"], "made elsewhere");
    assert_eq!(
        json(&["status", "--store", s(&b), "--json"])["tagged_records"],
        2
    );
}

#[test]
fn pending_shows_a_parked_change_with_its_reason_and_an_open_conflict() {
    let server = Server::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let a = store_in(&dir, "a.redb");
    let b = store_in(&dir, "b.redb");
    put(&a, "Notes", "n1", "Note", NOTE);
    ok(&sync_args(&a, &server.url, "60"));
    ok(&sync_args(&b, &server.url, "60"));

    // B's change to n1 is refused by the server for good: it is parked, with the reason.
    server.arm(
        "item-faults",
        serde_json::json!({"recordName": "n1", "serverErrorCode": "BAD_REQUEST", "reason": "title too long"}),
    );
    put(
        &b,
        "Notes",
        "n1",
        "Note",
        r#"{"title": {"value": "from b", "type": "STRING"}}"#,
    );
    ok(&sync_args(&b, &server.url, "60"));
    // Meanwhile A changes n1 on the server; B's next fetch brings that copy while B's own change
    // is parked: an open conflict, left for the app to decide.
    put(
        &a,
        "Notes",
        "n1",
        "Note",
        r#"{"title": {"value": "from a", "type": "STRING"}}"#,
    );
    ok(&sync_args(&a, &server.url, "60"));
    let mut args = sync_args(&b, &server.url, "60");
    args.push("--json");
    let synced = json(&args);
    assert_eq!(synced["parked"], 1, "{synced}");
    assert_eq!(synced["open_conflicts"], 1, "{synced}");

    let pending = json(&["pending", "--store", s(&b), "--json"]);
    assert_eq!(pending["pending"].as_array().unwrap().len(), 0, "{pending}");
    let parked = pending["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{pending}");
    assert_eq!(parked[0]["name"], "n1");
    assert_eq!(parked[0]["operation"], "save");
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("BAD_REQUEST") && reason.contains("title too long"),
        "{reason}"
    );
    let conflicts = pending["open_conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{pending}");
    assert_eq!(conflicts[0]["zone"], "Notes");
    assert_eq!(conflicts[0]["name"], "n1");
    assert_eq!(conflicts[0]["deleted_on_server"], false);
    let server_tag = conflicts[0]["server_change_tag"].as_str().unwrap();
    let local_tag = json(&[
        "get",
        "--store",
        s(&b),
        "--zone",
        "Notes",
        "--name",
        "n1",
        "--json",
    ])["change_tag"]
        .clone();
    assert_ne!(
        Some(server_tag),
        local_tag.as_str(),
        "the conflict holds the server's newer copy"
    );

    let text = ok(&["pending", "--store", s(&b)]);
    let lines: Vec<&str> = text.lines().collect();
    let at = |heading: &str| lines.iter().position(|l| l.starts_with(heading)).unwrap();
    assert_eq!(lines[at("pending (0):") + 1], "parked (1):", "{text}");
    let parked_line = lines[at("parked (1):") + 1];
    assert!(
        parked_line.contains("save Notes/n1")
            && parked_line.contains("BAD_REQUEST")
            && parked_line.contains("title too long"),
        "{text}"
    );
    let conflict_line = lines[at("open conflicts (1):") + 1];
    assert_eq!(
        conflict_line,
        format!("  Notes/n1 server tag {server_tag}"),
        "{text}"
    );
    let status = ok(&["status", "--store", s(&b)]);
    assert!(status.contains("pending: 0  parked: 1"), "{status}");
    assert!(status.contains("open conflicts: 1"), "{status}");
}
