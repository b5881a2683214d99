//! The engine end to end against the dev server on 127.0.0.1: devices with their own store files
//! sync through it, with the liveness rule checked at every look.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use skysync_session::{HaltReason, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_reaches_the_server_and_another_device() {
    let server = server().await;
    let a = Device::start(&server, "user-1").await;
    let b = Device::start(&server, "user-1").await;
    a.engine.save(note("n1", "Groceries")).await.unwrap();
    wait_quiet(&a).await;
    let on_server = server_records(&server, "user-1").await;
    assert_eq!(
        text(&on_server["n1"], "title").as_deref(),
        Some("Groceries")
    );
    wait_for(&b, "n1 to arrive", |d| d.tagged_records == 1).await;
    let got = b.engine.get(id("n1")).await.unwrap().unwrap();
    assert_eq!(text(&got, "title").as_deref(), Some("Groceries"));
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_different_fields_and_converge_with_both_edits() {
    let server = server().await;
    let a = Device::start(&server, "user-2").await;
    let b = Device::start(&server, "user-2").await;
    a.engine
        .save(note("n1", "Draft").with("body", "Hi"))
        .await
        .unwrap();
    wait_quiet(&a).await;
    wait_for(&b, "n1", |d| d.tagged_records == 1).await;

    // Both edit from the same version: a the title, b the body.
    let base_a = a.engine.get(id("n1")).await.unwrap().unwrap();
    let base_b = b.engine.get(id("n1")).await.unwrap().unwrap();
    a.engine
        .save(base_a.with("title", "Groceries"))
        .await
        .unwrap();
    b.engine
        .save(base_b.with("body", "Hi there"))
        .await
        .unwrap();
    wait_quiet(&a).await;
    wait_quiet(&b).await;
    // Let both fetch what the other sent.
    settle(&[&a, &b]).await;
    let on_server = server_records(&server, "user-2").await;
    let n1 = &on_server["n1"];
    assert_eq!(
        text(n1, "title").as_deref(),
        Some("Groceries"),
        "a's edit was lost"
    );
    assert_eq!(
        text(n1, "body").as_deref(),
        Some("Hi there"),
        "b's edit was lost"
    );
    assert_eq!(contents(&a.records().await), contents(&on_server));
    assert_eq!(contents(&b.records().await), contents(&on_server));
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_never_comes_back_on_any_device() {
    let server = server().await;
    let a = Device::start(&server, "user-3").await;
    let b = Device::start(&server, "user-3").await;
    a.engine.save(note("gone", "x")).await.unwrap();
    a.engine.save(note("kept", "y")).await.unwrap();
    wait_quiet(&a).await;
    wait_for(&b, "both records", |d| d.tagged_records == 2).await;
    a.engine.delete(id("gone")).await.unwrap();
    wait_quiet(&a).await;
    settle(&[&a, &b]).await;
    assert!(!server_records(&server, "user-3").await.contains_key("gone"));
    assert!(
        a.engine.get(id("gone")).await.unwrap().is_none(),
        "came back on a"
    );
    assert!(
        b.engine.get(id("gone")).await.unwrap().is_none(),
        "not deleted on b"
    );
    assert!(b.engine.get(id("kept")).await.unwrap().is_some());
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_one_request_in_flight() {
    let server = server().await;
    let a = Device::start(&server, "user-4").await;
    // Slow answers widen the window in which a second request could overlap the first.
    arm(
        &server,
        serde_json::json!({"operation": "*", "count": 8, "delayMs": 150}),
    )
    .await;
    for i in 0..450 {
        a.engine.save(note(&format!("r{i:03}"), "x")).await.unwrap();
    }
    a.engine.delete(id("r001")).await.unwrap();
    // Every trigger at once, while operations are out.
    for _ in 0..20 {
        a.engine.sync_now();
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    wait_quiet(&a).await;
    a.engine.sync_now();
    wait_quiet(&a).await;
    let stats = server_stats(&server, "user-4").await;
    assert!(stats.totals.requests > 5, "{stats:?}");
    assert_eq!(stats.totals.max_in_flight, 1, "{stats:#?}");
    let modify = &stats.operations["records/modify"];
    assert!(
        modify.requests >= 3,
        "450 changes need at least three batches: {modify:?}"
    );
    assert_eq!(server_records(&server, "user-4").await.len(), 449);
    a.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_halts_and_keeps_every_change_until_resume() {
    let server = server().await;
    let a = Device::start(&server, "user-5").await;
    wait_quiet(&a).await;
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "serverErrorCode": "ACCESS_DENIED"}),
    )
    .await;
    a.engine.save(note("n1", "kept")).await.unwrap();
    wait_for(&a, "the halt", |d| d.halt.is_some()).await;
    let d = a.diagnostics().await;
    assert_eq!(d.status, Status::Halted);
    assert!(matches!(d.halt.unwrap().reason, HaltReason::Fatal { .. }));
    assert_eq!(d.queue.pending, 1, "the change is kept");
    let before = server_stats(&server, "user-5").await.totals.requests;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        server_stats(&server, "user-5").await.totals.requests,
        before,
        "a halted engine sends nothing"
    );
    a.engine.resume().await.unwrap();
    wait_quiet(&a).await;
    assert!(server_records(&server, "user-5").await.contains_key("n1"));
    a.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_before_the_gates_open_and_queued_work_runs_once_they_do() {
    let server = server().await;
    // The zone cannot be created for a while: the gate stays shut.
    arm(
        &server,
        serde_json::json!({"operation": "zones/modify", "count": 3, "serverErrorCode": "INTERNAL_ERROR"}),
    )
    .await;
    let a = Device::start(&server, "gates").await;
    for i in 0..5 {
        a.engine
            .save(note(&format!("g{i}"), "queued"))
            .await
            .unwrap();
    }
    wait_quiet(&a).await;
    let stats = server_stats(&server, "gates").await;
    let zones = &stats.operations["zones/modify"];
    assert_eq!(
        zones.requests, 4,
        "three refusals, then the zone: {zones:?}"
    );
    let modify = &stats.operations["records/modify"];
    assert_eq!(
        modify.requests, 1,
        "nothing was sent while the gate was shut, then one batch: {modify:?}"
    );
    assert_eq!(
        server_records(&server, "gates").await.len(),
        5,
        "queued work ran"
    );
    assert_eq!(stats.totals.max_in_flight, 1);
    a.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_diagnostics_tell_the_truth_at_every_stage() {
    let server = server().await;
    let a = Device::start(&server, "stages").await;
    let mut status = a.engine.status();
    wait_quiet(&a).await;
    assert_eq!(*status.borrow_and_update(), Status::Idle);

    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "delayMs": 600}),
    )
    .await;
    a.engine.save(note("n1", "x")).await.unwrap();
    wait_for(&a, "uploading", |d| d.status == Status::Uploading).await;
    let d = a.diagnostics().await;
    let in_flight = d.in_flight.unwrap();
    assert_eq!(in_flight.kind, skysync_session::OperationKind::Send);
    assert_eq!(in_flight.size, 1);
    assert_eq!(d.queue.pending, 1, "pending until the server confirms");
    wait_quiet(&a).await;
    let d = a.diagnostics().await;
    assert_eq!(d.queue.pending, 0);
    assert_eq!(d.tagged_records, 1);
    assert!(d.last_send_unix_ms.is_some() && d.last_fetch_unix_ms.is_some());
    assert!(d.account.is_some());

    arm(
        &server,
        serde_json::json!({"operation": "changes/database", "delayMs": 600}),
    )
    .await;
    a.engine.sync_now();
    wait_for(&a, "downloading", |d| d.status == Status::Downloading).await;
    wait_quiet(&a).await;
    // The watch replays the current value to a new receiver.
    assert_eq!(*a.engine.status().borrow(), Status::Idle);
    a.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_and_client_wins_settle_a_conflict_as_they_document() {
    for (strategy, expect) in [("server", "from a"), ("client", "from b")] {
        let server = server().await;
        let user = format!("strategy-{strategy}");
        let a = Device::start(&server, &user).await;
        a.engine.save(note("n1", "v1")).await.unwrap();
        wait_quiet(&a).await;
        let b = Device::start_built(&server, &user, |builder| {
            let builder = builder.session(fetch_only_when_told());
            match strategy {
                "server" => builder.resolver(skysync_conflict::ServerWins::default()),
                _ => builder.resolver(skysync_conflict::ClientWins::default()),
            }
        })
        .await;
        wait_for(&b, "n1", |d| d.tagged_records == 1).await;
        let stale = b.engine.get(id("n1")).await.unwrap().unwrap();
        let fresh = a.engine.get(id("n1")).await.unwrap().unwrap();
        a.engine.save(fresh.with("title", "from a")).await.unwrap();
        wait_quiet(&a).await;
        b.engine.save(stale.with("title", "from b")).await.unwrap();
        wait_quiet(&b).await;
        let on_server = server_records(&server, &user).await;
        assert_eq!(
            text(&on_server["n1"], "title").as_deref(),
            Some(expect),
            "{strategy} wins"
        );
        let local = b.engine.get(id("n1")).await.unwrap().unwrap();
        assert_eq!(
            text(&local, "title").as_deref(),
            Some(expect),
            "{strategy} wins on b"
        );
        a.engine.shutdown().await;
        b.engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_the_operation_in_flight_and_nothing_is_lost() {
    let server = server().await;
    let a = Device::start(&server, "shutdown").await;
    wait_quiet(&a).await;
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "delayMs": 2000}),
    )
    .await;
    a.engine
        .save(note("n1", "in flight at shutdown"))
        .await
        .unwrap();
    wait_for(&a, "the send in flight", |d| d.in_flight.is_some()).await;
    a.engine.shutdown().await;

    // The same store file, a new engine: the change is still pending (or confirmed, if the
    // server applied it), and it reaches the server exactly once.
    let path = a.dir.path().join("device.redb");
    let engine = skysync_session::Engine::builder(&path)
        .dev_server(server.base_url(), "shutdown")
        .unwrap()
        .throttle(fast_throttle())
        .session(session_config())
        .build()
        .await
        .unwrap();
    let again = Device {
        dir: a.dir,
        engine,
        token: "shutdown".into(),
    };
    wait_quiet(&again).await;
    let on_server = server_records(&server, "shutdown").await;
    assert_eq!(on_server.len(), 1);
    assert_eq!(
        text(&on_server["n1"], "title").as_deref(),
        Some("in flight at shutdown")
    );
    again.engine.shutdown().await;
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Contact {
    name: String,
    age: i64,
    favourite: bool,
    nickname: Option<String>,
}

impl skysync_model::RecordType for Contact {
    const RECORD_TYPE: &'static str = "Contact";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_struct_is_saved_synced_and_read_back_on_another_device() {
    let server = server().await;
    let a = Device::start(&server, "typed").await;
    let b = Device::start(&server, "typed").await;
    let ada = Contact {
        name: "Ada".into(),
        age: 36,
        favourite: true,
        nickname: None,
    };
    a.engine.save_typed(id("ada"), &ada).await.unwrap();
    wait_quiet(&a).await;
    wait_for(&b, "ada", |d| d.tagged_records == 1).await;
    let on_b: Contact = b.engine.get_typed(id("ada")).await.unwrap().unwrap();
    assert_eq!(on_b, ada);
    // A record of another type is a typed error naming the mismatch, not a panic.
    a.engine.save(note("n1", "x")).await.unwrap();
    let err = a.engine.get_typed::<Contact>(id("n1")).await.unwrap_err();
    assert!(err.to_string().contains("Note"), "{err}");
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_brings_another_devices_change_without_waiting_for_the_timer() {
    let server = server().await;
    let a = Device::start(&server, "notified").await;
    // b fetches on its timer only once an hour: what it learns, it learns from notifications.
    let mut hourly = session_config();
    hourly.fetch_interval = std::time::Duration::from_secs(3600);
    let b = Device::start_with(&server, "notified", hourly).await;
    wait_quiet(&b).await;
    wait_for(&b, "the notification channel", |d| {
        d.last_completed
            .as_ref()
            .is_some_and(|(op, _)| op.kind != skysync_session::OperationKind::EnsureNotifications)
            && d.in_flight.is_none()
    })
    .await;
    let mut events = b.engine.events();
    a.engine
        .save(note("pushed", "via the courier"))
        .await
        .unwrap();
    wait_quiet(&a).await;
    wait_for(&b, "the pushed record", |d| d.tagged_records == 1).await;
    let got = b.engine.get(id("pushed")).await.unwrap().unwrap();
    assert_eq!(text(&got, "title").as_deref(), Some("via the courier"));
    let mut fetched_with_id = false;
    while let Ok(event) = events.try_recv() {
        if let skysync_session::SyncEvent::Fetched {
            batch_id, changed, ..
        } = event
        {
            fetched_with_id |= batch_id > 0 && changed == 1;
        }
    }
    assert!(fetched_with_id, "the fetch event names its operation");
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

/// A record deleted and saved again before the delete went out is a new life, sent as a create.
/// The server still holds the old life, so the create meets `EXISTS` with the very copy the merge
/// base holds: that is no conflict (nobody changed it since), and the new life is sent over it,
/// whatever the resolver (server wins would otherwise keep the old life and drop the save).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_and_saved_again_before_syncing_ends_as_saved_even_when_the_server_wins() {
    let server = server().await;
    let a = Device::start_built(&server, "recreate", |builder| {
        builder.resolver(skysync_conflict::ServerWins::default())
    })
    .await;
    a.engine.save(note("n1", "first life")).await.unwrap();
    wait_quiet(&a).await;
    a.engine.delete(id("n1")).await.unwrap();
    a.engine.save(note("n1", "second life")).await.unwrap();
    wait_quiet(&a).await;
    let on_server = server_records(&server, "recreate").await;
    assert_eq!(
        text(&on_server["n1"], "title").as_deref(),
        Some("second life")
    );
    let local = a.engine.get(id("n1")).await.unwrap().unwrap();
    assert_eq!(text(&local, "title").as_deref(), Some("second life"));
    assert_eq!(local.change_tag(), on_server["n1"].change_tag());
    a.engine.shutdown().await;
}

/// An app saving a stream of records: while it keeps saving, a partial batch waits (up to
/// `max_send_delay`) for the saves still coming, so the stream goes out in nearly full batches of 200,
/// not in a request per handful of records. A trickle after the stream still goes out within a
/// debounce or so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_saves_goes_out_in_full_batches() {
    const RECORDS: usize = 1_000;
    let server = server().await;
    let a = Device::start(&server, "stream").await;
    wait_quiet(&a).await;
    for i in 0..RECORDS {
        a.engine
            .save(note(&format!("r{i:04}"), "streamed"))
            .await
            .unwrap();
    }
    wait_quiet(&a).await;
    let modify = server_stats(&server, "stream").await.operations["records/modify"].clone();
    eprintln!(
        "{RECORDS} saves went out in {} records/modify requests",
        modify.requests
    );
    // 5 full batches; a save slower than the debounce (a loaded machine) may cut one short.
    assert!(
        modify.requests <= 12,
        "{RECORDS} saves took {} requests: batches were sent before they filled",
        modify.requests
    );
    assert_eq!(server_records(&server, "stream").await.len(), RECORDS);

    // A single save later is not held back beyond its debounce and the linger bound.
    let started = std::time::Instant::now();
    a.engine.save(note("late", "alone")).await.unwrap();
    wait_quiet(&a).await;
    assert!(server_records(&server, "stream").await.contains_key("late"));
    eprintln!("a lone save synced in {:?}", started.elapsed());
    a.engine.shutdown().await;
}
