//! Engine bugs the chaos run (`cargo xtask chaos`) found, each reproduced on its own against the
//! dev server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use skysync_session::OperationKind;

/// `chaos --kills 5 --seed 1 --changes 300`: a record deleted, then re-created while the delete
/// was on its way, vanished when the delete's answer was lost. The delete had run on the server,
/// so the re-creation, sent as an update of the deleted copy, came back NOT_FOUND, which read as
/// another device's deletion, and the deletion won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_re_created_while_its_delete_lost_its_answer_is_kept() {
    let server = server().await;
    let a = Device::start(&server, "chaos-1").await;
    a.engine.save(note("n1", "first")).await.unwrap();
    wait_quiet(&a).await;
    // The next send waits 300 ms on the server, runs, and loses its answer.
    arm(
        &server,
        json!({"operation": "records/modify", "count": 1, "delayMs": 300, "dropConnection": true}),
    )
    .await;
    a.engine.delete(id("n1")).await.unwrap();
    wait_for(&a, "the delete in flight", |d| {
        d.in_flight
            .as_ref()
            .is_some_and(|op| op.kind == OperationKind::Send)
    })
    .await;
    a.engine.save(note("n1", "again")).await.unwrap();
    wait_quiet(&a).await;
    settle(&[&a]).await;
    let on_server = server_records(&server, "chaos-1").await;
    assert_eq!(
        on_server
            .get("n1")
            .and_then(|r| text(r, "title"))
            .as_deref(),
        Some("again"),
        "the re-creation did not reach the server"
    );
    let local = a.engine.get(id("n1")).await.unwrap();
    assert_eq!(
        local.and_then(|r| text(&r, "title")).as_deref(),
        Some("again"),
        "the re-creation was dropped locally"
    );
    a.engine.shutdown().await;
}
