//! Conflicts end to end through the store: a fetch keeps the server side beside the local edit and
//! the common ancestor, the resolver reconciles the three, and the store commits each kind of
//! resolution atomically with everything it implies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use skysync_conflict::{ThreeWayMerge, settle};
use skysync_model::{ChangeToken, FieldValue, PendingChange, Record, Resolution};
use skysync_queue::OutboxEntry;
use skysync_store::{FetchedPage, ResolveOutcome, ResolvedConflict, StoreHandle, TombstoneState};

fn page(changed: Vec<Record>, deleted: Vec<skysync_model::RecordId>) -> FetchedPage {
    FetchedPage {
        zone: zone(),
        changed,
        deleted,
        token: ChangeToken("tok".into()),
        more_coming: false,
    }
}

fn field(record: &Record, name: &str) -> Option<String> {
    match record.get(name) {
        Some(FieldValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Resolves `id`'s open conflict with `resolver` from the store's three copies and commits it.
async fn resolve_with(
    store: &StoreHandle,
    id: skysync_model::RecordId,
    resolver: &dyn skysync_conflict::ConflictResolver,
) -> ResolveOutcome {
    let open = store.open_conflict(id.clone()).await.unwrap().unwrap();
    let entry = store.pending_change(id.clone()).await.unwrap().unwrap();
    let base = store.merge_base(id.clone()).await.unwrap();
    let resolution = settle(
        resolver,
        entry.change(),
        base.as_ref(),
        open.server.as_ref(),
    )
    .unwrap();
    store
        .commit_resolution(ResolvedConflict {
            id,
            server: open.server,
            local_seq: Some(entry.seq()),
            resolution,
        })
        .await
        .unwrap()
}

/// Two devices edit different fields of one record from the same version. The server has the
/// other device's edit (the body) when this device's edit (the title) is still pending. Both edits
/// must survive the three-way merge. With the fetched copy written over the merge base, the merge
/// would see "the server changed nothing" and send the old body back, reverting the other device.
#[tokio::test]
async fn two_devices_edit_different_fields_and_both_edits_survive_a_three_way_merge() {
    let engine = Engine::start().await;
    let store = &engine.store;
    let original = Record::new(id("n1"), "Note")
        .with("title", "Draft")
        .with("body", "Hi");
    store.save(original.clone()).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;

    // This device edits the title; the other device's body edit is on the server as t2.
    store
        .save(original.clone().with("title", "Groceries"))
        .await
        .unwrap();
    let theirs = server_copy(&original.clone().with("body", "Hi there"), "t2");
    let fetched = store
        .apply_fetched(page(vec![theirs], vec![]))
        .await
        .unwrap();
    assert_eq!(fetched.conflicts, vec![id("n1")]);

    let outcome = resolve_with(store, id("n1"), &ThreeWayMerge::default()).await;
    assert!(matches!(
        outcome,
        ResolveOutcome::Committed { queued: Some(_) }
    ));
    let next = engine.queue.next_batch().await.unwrap();
    let PendingChange::Save(sent) = &next.changes()[0].change else {
        panic!("expected the merged save first");
    };
    assert_eq!(
        field(sent, "title").as_deref(),
        Some("Groceries"),
        "this device's edit was lost"
    );
    assert_eq!(
        field(sent, "body").as_deref(),
        Some("Hi there"),
        "the other device's edit was reverted"
    );
    assert_eq!(
        sent.change_tag(),
        Some(&tag("t2")),
        "sent over the server's tag"
    );
    let local = store.record(id("n1")).await.unwrap().unwrap();
    assert_eq!(field(&local, "title").as_deref(), Some("Groceries"));
    assert_eq!(field(&local, "body").as_deref(), Some("Hi there"));
    engine.stop().await;
}

/// One pending change per scenario, confirmed once at t1, then a server side arrives; each
/// resolution kind is committed and its effects checked as one.
#[tokio::test]
async fn every_kind_of_resolution_commits_with_what_it_implies() {
    let engine = Engine::start().await;
    let store = &engine.store;
    for name in [
        "send",
        "accept",
        "accept-gone",
        "recreate",
        "restore",
        "send-delete",
        "park",
    ] {
        store.save(note(name, "v1")).await.unwrap();
    }
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    for name in ["send", "accept", "accept-gone", "recreate", "park"] {
        store.save(note(name, "mine")).await.unwrap();
    }
    for name in ["restore", "send-delete"] {
        store.delete(id(name)).await.unwrap();
    }
    let server = |name: &str| server_copy(&note(name, "theirs"), "t2");
    let fetched = store
        .apply_fetched(page(
            ["send", "accept", "restore", "send-delete", "park"]
                .iter()
                .map(|n| server(n))
                .collect(),
            vec![id("accept-gone"), id("recreate")],
        ))
        .await
        .unwrap();
    assert_eq!(fetched.conflicts.len(), 7, "{fetched:?}");

    let commit = |name: &'static str, resolution: Resolution| async move {
        let open = store.open_conflict(id(name)).await.unwrap().unwrap();
        let seq = store
            .pending_change(id(name))
            .await
            .unwrap()
            .map(|e| e.seq());
        let outcome = store
            .commit_resolution(ResolvedConflict {
                id: id(name),
                server: open.server,
                local_seq: seq,
                resolution,
            })
            .await
            .unwrap();
        assert!(
            store.open_conflict(id(name)).await.unwrap().is_none(),
            "{name} still open"
        );
        outcome
    };
    let pending_tag = |entry: Option<OutboxEntry>| match entry {
        Some(OutboxEntry::Pending(q)) => (q.change.is_delete(), q.change.change_tag().cloned()),
        other => panic!("expected a pending change, got {other:?}"),
    };

    // Send: the merged copy goes first over the server's tag; the server copy is the base.
    commit("send", Resolution::Send(note("send", "merged"))).await;
    assert_eq!(
        text(&store.record(id("send")).await.unwrap().unwrap()),
        "merged"
    );
    assert_eq!(
        store.merge_base(id("send")).await.unwrap(),
        Some(server("send"))
    );
    assert_eq!(
        pending_tag(store.pending_change(id("send")).await.unwrap()),
        (false, Some(tag("t2")))
    );

    // AcceptServer: the server copy is local and base; nothing is left to send.
    let outcome = commit("accept", Resolution::AcceptServer).await;
    assert_eq!(outcome, ResolveOutcome::Committed { queued: None });
    assert_eq!(
        store.record(id("accept")).await.unwrap(),
        Some(server("accept"))
    );
    assert_eq!(
        store.merge_base(id("accept")).await.unwrap(),
        Some(server("accept"))
    );
    assert!(store.pending_change(id("accept")).await.unwrap().is_none());

    // AcceptServer of a server-side delete: gone everywhere, nothing to send.
    commit("accept-gone", Resolution::AcceptServer).await;
    assert!(store.record(id("accept-gone")).await.unwrap().is_none());
    assert!(store.merge_base(id("accept-gone")).await.unwrap().is_none());
    assert!(
        store
            .pending_change(id("accept-gone"))
            .await
            .unwrap()
            .is_none()
    );

    // Recreate: the local copy goes out again as a create, without any tag or base.
    commit("recreate", Resolution::Recreate(note("recreate", "mine"))).await;
    assert_eq!(
        pending_tag(store.pending_change(id("recreate")).await.unwrap()),
        (false, None)
    );
    assert!(store.merge_base(id("recreate")).await.unwrap().is_none());
    assert_eq!(
        store.record(id("recreate")).await.unwrap().unwrap().system,
        None
    );

    // Restore: the local delete is dropped and the server copy comes back, by name.
    commit("restore", Resolution::Restore).await;
    assert_eq!(
        store.record(id("restore")).await.unwrap(),
        Some(server("restore"))
    );
    assert!(store.tombstone(id("restore")).await.unwrap().is_none());
    assert!(store.pending_change(id("restore")).await.unwrap().is_none());

    // SendDelete: the delete goes first, over the server's tag; the record stays deleted.
    commit(
        "send-delete",
        Resolution::SendDelete {
            change_tag: tag("t2"),
        },
    )
    .await;
    assert!(store.record(id("send-delete")).await.unwrap().is_none());
    assert_eq!(
        store
            .tombstone(id("send-delete"))
            .await
            .unwrap()
            .unwrap()
            .state,
        TombstoneState::DeletePending
    );
    assert_eq!(
        pending_tag(store.pending_change(id("send-delete")).await.unwrap()),
        (true, Some(tag("t2")))
    );

    // Park: the change is set aside with the reason; the local copy stays.
    commit(
        "park",
        Resolution::Park {
            reason: skysync_model::ParkReason::Custom("ask the user".into()),
        },
    )
    .await;
    match store.pending_change(id("park")).await.unwrap() {
        Some(OutboxEntry::Parked(p)) => assert_eq!(p.reason, "ask the user"),
        other => panic!("expected parked, got {other:?}"),
    }
    assert_eq!(
        text(&store.record(id("park")).await.unwrap().unwrap()),
        "mine"
    );

    // The merged and re-sent changes are at the front of the outbox.
    let next = engine.queue.next_batch().await.unwrap();
    let names: Vec<_> = next
        .changes()
        .iter()
        .map(|c| c.record_id().record_name.clone())
        .collect();
    assert_eq!(names, ["send-delete", "recreate", "send"]);
    engine.stop().await;
}

/// A CONFLICT answered to a send carries the server copy: kept as an open conflict (it survives a
/// restart); a newer server side arriving meanwhile makes the older resolution stale.
#[tokio::test]
async fn a_conflict_from_a_send_is_kept_and_a_newer_server_side_supersedes_it() {
    let engine = Engine::start().await;
    store_and_confirm(&engine, "a").await;
    let store = &engine.store;
    store.save(note("a", "mine")).await.unwrap();
    let answered = server_copy(&note("a", "theirs"), "t2");
    assert!(
        store
            .record_conflict(id("a"), Some(answered.clone()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_conflict(id("nothing-pending"), None)
            .await
            .unwrap(),
        "no conflict without a pending change"
    );
    let engine = engine.restart().await;
    let store = &engine.store;
    let open = store.open_conflict(id("a")).await.unwrap().unwrap();
    assert_eq!(open.server.as_ref(), Some(&answered));

    let newer = server_copy(&note("a", "theirs again"), "t3");
    store
        .apply_fetched(page(vec![newer.clone()], vec![]))
        .await
        .unwrap();
    let seq = store
        .pending_change(id("a"))
        .await
        .unwrap()
        .map(|e| e.seq());
    let stale = ResolvedConflict {
        id: id("a"),
        server: Some(answered),
        local_seq: seq,
        resolution: Resolution::AcceptServer,
    };
    assert_eq!(
        store.commit_resolution(stale).await.unwrap(),
        ResolveOutcome::ServerChangedSince
    );
    assert_eq!(text(&store.record(id("a")).await.unwrap().unwrap()), "mine");
    assert_eq!(
        store.open_conflict(id("a")).await.unwrap().unwrap().server,
        Some(newer)
    );
    engine.stop().await;
}

async fn store_and_confirm(engine: &Engine, name: &str) {
    engine.store.save(note(name, "v1")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
}

/// A record deleted here whose deletion the server also reports (the delete went through but its
/// answer was lost, so the fetch finds the record gone) is deleted on both sides: an open conflict
/// with no server copy. If the app then creates the record again, the deletion of the old life is
/// no conflict with the new one: the create must go out, not be settled by the delete policy
/// (which drops a local save against a server deletion). Found by `cargo xtask chaos --seed 5`:
/// the re-created record was in no final state.
#[tokio::test]
async fn a_record_created_again_after_both_sides_deleted_it_is_sent_not_settled() {
    let engine = Engine::start().await;
    let store = &engine.store;
    store.save(note("a", "v1")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    store.delete(id("a")).await.unwrap();
    let fetched = store
        .apply_fetched(page(vec![], vec![id("a")]))
        .await
        .unwrap();
    assert_eq!(fetched.conflicts, vec![id("a")], "deleted on both sides");

    store.save(note("a", "again")).await.unwrap();
    assert_eq!(
        store.open_conflict(id("a")).await.unwrap(),
        None,
        "the old life's deletion is no conflict with the new life"
    );
    let next = engine.queue.next_batch().await.unwrap();
    assert_eq!(next.changes()[0].change.change_tag(), None, "a create");
    assert_eq!(
        change_text(&next.changes()[0].change).as_deref(),
        Some("again")
    );
    engine.stop().await;
}
