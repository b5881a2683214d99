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
    for _ in 0..3 {
        a.engine.sync_now();
        b.engine.sync_now();
        wait_quiet(&a).await;
        wait_quiet(&b).await;
    }
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
    for _ in 0..3 {
        a.engine.sync_now();
        b.engine.sync_now();
        wait_quiet(&a).await;
        wait_quiet(&b).await;
    }
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
    for i in 0..450 {
        a.engine.save(note(&format!("r{i:03}"), "x")).await.unwrap();
    }
    a.engine.delete(id("r001")).await.unwrap();
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
