//! One test per storage invariant of DESIGN.md, each on a real redb file, each written to fail if
//! its invariant breaks. (The crash test, `crash_recovery.rs`, adds SIGKILL at random moments.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redb::{Database, ReadableDatabase, TableDefinition};
use skysync_model::{ChangeToken, PendingChange, Record, RecordId, Resolution};
use skysync_queue::{BatchLimits, OutboxEntry};
use skysync_store::{
    DatabaseChanges, FetchedPage, LocalChange, ResolveOutcome, ResolvedConflict, StoreError,
    StoreFile, SyncMetadataChange, TombstoneState,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// How many snapshots an observer must take while writes go on, for its verdict to mean something.
const MIN_SNAPSHOTS: u32 = 50;

/// Everything one read snapshot shows about a zone: records, and the outbox's change per record.
fn snapshot(
    db: &Database,
    file: &StoreFile,
) -> (BTreeMap<String, Record>, BTreeMap<String, PendingChange>) {
    let txn = db.begin_read().unwrap();
    let mirror = file.mirror();
    let records = mirror
        .records_in_zone(&txn, &zone(), None, usize::MAX)
        .unwrap()
        .records
        .into_iter()
        .map(|r| (r.id.record_name.clone(), r))
        .collect();
    let pending = mirror
        .outbox()
        .form_batch(&txn, BatchLimits::unlimited())
        .unwrap()
        .into_changes()
        .into_iter()
        .map(|c| (c.record_id().record_name.clone(), c.change))
        .collect();
    (records, pending)
}

/// Invariant 1: a local change and its outbox entry commit in the same transaction, and are on disk
/// when `save` returns. Many writers save and delete concurrently (sharing group commits) while a
/// reader takes snapshot after snapshot: no snapshot may ever show a record without its outbox
/// entry, an entry without its record, or the two disagreeing. Then the file is reopened and every
/// returned save is there with its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_local_change_and_outbox_entry_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.redb");
    let file = StoreFile::open_async(&path).await.unwrap();
    let db = file.database().clone();
    let (store, _) = skysync_store::StoreHandle::spawn(file.clone(), Default::default())
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicU32::new(0));
    let observer = {
        let stop = stop.clone();
        let observed = observed.clone();
        let db = db.clone();
        let file = file.clone();
        std::thread::spawn(move || {
            let mut snapshots = 0u32;
            let mut violations = Vec::new();
            while !stop.load(Ordering::Relaxed) && snapshots < 100_000 {
                let (records, pending) = snapshot(&db, &file);
                snapshots += 1;
                observed.store(snapshots, Ordering::Relaxed);
                for (name, record) in &records {
                    match pending.get(name) {
                        Some(PendingChange::Save(queued)) if queued == record => {}
                        other => violations.push(format!("record {name} has entry {other:?}")),
                    }
                }
                for (name, change) in &pending {
                    match change {
                        PendingChange::Save(_) if records.contains_key(name) => {}
                        PendingChange::Delete { .. } if !records.contains_key(name) => {}
                        _ => violations.push(format!("entry for {name} disagrees with the record")),
                    }
                }
            }
            (snapshots, violations)
        })
    };

    // Writers go on until the observer has taken enough snapshots while they write (bounded).
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let observed = observed.clone();
        writers.push(tokio::spawn(async move {
            let mut returned = BTreeMap::new();
            for i in 0..2000 {
                if i >= 40 && observed.load(Ordering::Relaxed) >= MIN_SNAPSHOTS {
                    break;
                }
                let name = format!("w{w}-r{}", i % 5);
                if i % 7 == 6 {
                    store.delete(id(&name)).await.unwrap();
                    returned.insert(name, None);
                } else {
                    let text = format!("{w}-{i}");
                    store.save(note(&name, &text)).await.unwrap();
                    returned.insert(name, Some(text));
                }
            }
            returned
        }));
    }
    let mut expected = BTreeMap::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (snapshots, violations) = observer.join().unwrap();
    assert!(
        violations.is_empty(),
        "inconsistent snapshots: {violations:?}"
    );
    assert!(
        snapshots >= MIN_SNAPSHOTS,
        "the observer took only {snapshots} snapshots"
    );

    store.stop().await;
    drop((file, db));
    let reopened = StoreFile::open_async(&path).await.unwrap();
    let (records, pending) = snapshot(reopened.database(), &reopened);
    for (name, text) in &expected {
        match text {
            Some(text) => {
                assert_eq!(common::text(&records[name]), *text, "record {name}");
                assert_eq!(
                    change_text(&pending[name]).as_ref(),
                    Some(text),
                    "entry {name}"
                );
            }
            None => {
                assert!(!records.contains_key(name), "{name} was deleted");
                assert!(pending[name].is_delete(), "{name}'s delete is queued");
            }
        }
    }
}

/// Invariant 2: a fetched page and the zone's new token commit in the same transaction; the token
/// never moves ahead of the data; replaying a page is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_fetched_page_and_token_commit_together() {
    let engine = Engine::start().await;
    let page = |i: usize| FetchedPage {
        zone: zone(),
        changed: vec![server_copy(
            &note(&format!("p{i:04}"), "server"),
            &format!("t{i}"),
        )],
        deleted: vec![],
        token: ChangeToken(format!("tok-{i:04}")),
        more_coming: false,
    };

    // A reader checks snapshot after snapshot: the token says k exactly when pages 1..=k are in.
    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicU32::new(0));
    let observer = {
        let stop = stop.clone();
        let observed = observed.clone();
        let file = engine.file.clone();
        std::thread::spawn(move || {
            let mut snapshots = 0u32;
            while !stop.load(Ordering::Relaxed) && snapshots < 100_000 {
                let txn = file.database().begin_read().unwrap();
                let mirror = file.mirror();
                let data = mirror
                    .records_in_zone(&txn, &zone(), None, usize::MAX)
                    .unwrap()
                    .records
                    .len();
                let token = match mirror.change_token(&txn, &zone()).unwrap() {
                    Some(ChangeToken(t)) => t["tok-".len()..].parse::<usize>().unwrap(),
                    None => 0,
                };
                assert_eq!(token, data, "token {token} with {data} pages of data");
                snapshots += 1;
                observed.store(snapshots, Ordering::Relaxed);
            }
            snapshots
        })
    };
    let store = engine.store.clone();
    // Pages go on until the observer has taken enough snapshots meanwhile (bounded).
    let mut applied = 0;
    for i in 1..=2000 {
        if i > 60 && observed.load(Ordering::Relaxed) >= MIN_SNAPSHOTS {
            break;
        }
        store.apply_fetched(page(i)).await.unwrap();
        applied = i;
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = observer.join().unwrap();
    assert!(
        snapshots >= MIN_SNAPSHOTS,
        "only {snapshots} snapshots observed"
    );

    // A page that fails part-way commits nothing: neither its records nor its token.
    let mut broken = page(applied + 1);
    broken.changed.push(note("p999", "no system fields"));
    let err = store.apply_fetched(broken).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidPage { .. }), "{err:?}");
    let first_of_broken = id(&format!("p{:04}", applied + 1));
    assert!(store.record(first_of_broken).await.unwrap().is_none());
    assert_eq!(
        store.change_token(zone()).await.unwrap(),
        Some(page(applied).token)
    );

    // Replaying a page is harmless: same records, bases and token.
    let before = (
        store.records_in_zone(zone(), None, 5000).await.unwrap(),
        store.merge_base(id("p0030")).await.unwrap(),
    );
    store.apply_fetched(page(30)).await.unwrap();
    store.apply_fetched(page(applied)).await.unwrap();
    let after = (
        store.records_in_zone(zone(), None, 5000).await.unwrap(),
        store.merge_base(id("p0030")).await.unwrap(),
    );
    assert_eq!(before, after);
    engine.stop().await;
}

/// Invariant 3: the outbox lets go of a change only after the server confirmed it. Until then a
/// restart resends exactly the same work; a confirmation removes exactly what it covers.
#[tokio::test]
async fn invariant_3_outbox_forgets_only_confirmed_changes() {
    let engine = Engine::start().await;
    engine.store.save(note("a", "1")).await.unwrap();
    engine.store.save(note("b", "1")).await.unwrap();
    engine.store.delete(id("c")).await.unwrap();
    let first = engine.queue.next_batch().await.unwrap();
    assert_eq!(first.len(), 3);

    // Sent, but the process stops before any answer: the same work is there after a restart.
    let engine = engine.restart().await;
    let again = engine.queue.next_batch().await.unwrap();
    assert_eq!(again, first);

    // The server confirms only a and c (b failed transiently): b stays, nothing else does.
    let mut confirmed = confirmations(&again, "t1");
    confirmed.retain(|c| c.record_id() != &id("b"));
    let outcome = engine.store.confirm_sent(confirmed).await.unwrap();
    assert_eq!(outcome.acknowledged, vec![id("a"), id("c")]);
    let engine = engine.restart().await;
    let rest = engine.queue.next_batch().await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest.changes()[0].record_id(), &id("b"));
    assert_eq!(rest.changes()[0].seq, first.seq_of(&id("b")).unwrap());

    // Resending after a lost answer is harmless: confirming the same versions twice changes nothing.
    let twice = confirmations(&rest, "t2");
    engine.store.confirm_sent(twice.clone()).await.unwrap();
    let outcome = engine.store.confirm_sent(twice).await.unwrap();
    assert!(outcome.acknowledged.is_empty());
    assert_eq!(engine.queue.depth().await.unwrap().pending, 0);
    assert_eq!(
        engine
            .store
            .record(id("b"))
            .await
            .unwrap()
            .unwrap()
            .change_tag(),
        Some(&tag("t2"))
    );
    engine.stop().await;
}

/// Invariant 4: changes coalesce by record, and what is sent is always the latest local copy with
/// the latest known change tag, including an edit made while the previous version was in flight.
#[tokio::test]
async fn invariant_4_sends_the_latest_copy_with_the_latest_tag() {
    let engine = Engine::start().await;
    let store = &engine.store;
    store.save(note("a", "1")).await.unwrap();
    store.save(note("b", "1")).await.unwrap();
    store.save(note("a", "2")).await.unwrap();
    store.save(note("c", "1")).await.unwrap();
    store.delete(id("c")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    let sent: Vec<(String, Option<String>)> = batch
        .changes()
        .iter()
        .map(|c| (c.record_id().record_name.clone(), change_text(&c.change)))
        .collect();
    assert_eq!(
        sent,
        [
            ("a".to_string(), Some("2".to_string())),
            ("b".to_string(), Some("1".to_string())),
            ("c".to_string(), None),
        ]
    );

    // a is edited while its batch is in flight; the confirmation's tag must reach the newer edit.
    store.save(note("a", "3")).await.unwrap();
    let outcome = engine.confirm_all(&batch, "t1").await;
    assert_eq!(outcome.still_pending, vec![id("a")]);
    let next = engine.queue.next_batch().await.unwrap();
    assert_eq!(next.len(), 1);
    let change = &next.changes()[0].change;
    assert_eq!(change_text(change).as_deref(), Some("3"));
    assert_eq!(change.change_tag(), Some(&tag("t1")));

    // A later edit of a confirmed record carries its tag too, and so does a delete.
    store.save(note("b", "2")).await.unwrap();
    store.delete(id("a")).await.unwrap();
    let next = engine.queue.next_batch().await.unwrap();
    let tags: Vec<_> = next
        .changes()
        .iter()
        .map(|c| {
            (
                c.record_id().record_name.clone(),
                c.change.change_tag().cloned(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("a".to_string(), Some(tag("t1"))),
            ("b".to_string(), Some(tag("t1")))
        ]
    );
    assert!(next.changes()[0].change.is_delete());
    engine.stop().await;
}

/// Invariant 5: a record deleted locally never comes back: not from an in-flight save's
/// confirmation, not from a fetch that crossed the delete; its tombstone stays until the server
/// confirmed the delete and a fetch passed it.
#[tokio::test]
async fn invariant_5_a_deleted_record_never_comes_back() {
    let engine = Engine::start().await;
    let store = &engine.store;

    // A save in flight, a local delete, then the save's confirmation arrives.
    store.save(note("a", "1")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    store.delete(id("a")).await.unwrap();
    let outcome = engine.confirm_all(&batch, "t1").await;
    assert!(outcome.acknowledged.is_empty());
    assert!(
        store.record(id("a")).await.unwrap().is_none(),
        "a came back"
    );
    let tombstone = store.tombstone(id("a")).await.unwrap().unwrap();
    assert_eq!(tombstone.state, TombstoneState::DeletePending);
    // The pending delete now carries the tag the server just gave, so it can succeed.
    let next = engine.queue.next_batch().await.unwrap();
    assert!(next.changes()[0].change.is_delete());
    assert_eq!(next.changes()[0].change.change_tag(), Some(&tag("t1")));

    // A fetch that crossed the delete still holds a alive: it must not come back.
    let crossed = FetchedPage {
        zone: zone(),
        changed: vec![server_copy(&note("a", "server"), "t2")],
        deleted: vec![],
        token: ChangeToken("tok-1".into()),
        more_coming: false,
    };
    let fetched = store.apply_fetched(crossed.clone()).await.unwrap();
    assert_eq!(fetched.ignored_deleted_locally, vec![id("a")]);
    assert!(
        store.record(id("a")).await.unwrap().is_none(),
        "a came back"
    );
    let next = engine.queue.next_batch().await.unwrap();
    assert_eq!(next.changes()[0].change.change_tag(), Some(&tag("t2")));

    // The server confirms the delete: the tombstone is kept, and a replay of the crossed page
    // (fetched before the confirmation) still cannot bring a back.
    let outcome = engine.confirm_all(&next, "unused").await;
    assert_eq!(outcome.acknowledged, vec![id("a")]);
    assert_eq!(
        store.tombstone(id("a")).await.unwrap().unwrap().state,
        TombstoneState::DeleteConfirmed
    );
    store.apply_fetched(crossed).await.unwrap();
    assert!(
        store.record(id("a")).await.unwrap().is_none(),
        "a came back"
    );
    assert!(store.tombstone(id("a")).await.unwrap().is_some());

    // A fetch that passed the delete (a no longer alive on the server) lets the tombstone go.
    let passed = FetchedPage {
        zone: zone(),
        changed: vec![],
        deleted: vec![id("a")],
        token: ChangeToken("tok-2".into()),
        more_coming: false,
    };
    store.apply_fetched(passed).await.unwrap();
    assert!(store.tombstone(id("a")).await.unwrap().is_none());
    assert!(store.record(id("a")).await.unwrap().is_none());
    assert_eq!(engine.queue.depth().await.unwrap().pending, 0);
    engine.stop().await;
}

/// Invariant 5's other half: once the server confirmed a delete, a live copy with a new change tag
/// is another device's re-creation, a new life of the record, and is applied; the copy that was
/// deleted (its old tag) still is not.
#[tokio::test]
async fn invariant_5_a_recreation_after_a_confirmed_delete_arrives() {
    let engine = Engine::start().await;
    let store = &engine.store;
    store.save(note("a", "first life")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    store.delete(id("a")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "unused").await;
    assert_eq!(
        store.tombstone(id("a")).await.unwrap().unwrap().state,
        TombstoneState::DeleteConfirmed
    );

    // The deleted copy itself (tag t1), replayed from an old page: stays deleted.
    let stale = FetchedPage {
        zone: zone(),
        changed: vec![server_copy(&note("a", "first life"), "t1")],
        deleted: vec![],
        token: ChangeToken("tok-1".into()),
        more_coming: false,
    };
    let outcome = store.apply_fetched(stale).await.unwrap();
    assert_eq!(outcome.ignored_deleted_locally, vec![id("a")]);
    assert!(store.record(id("a")).await.unwrap().is_none());

    // Another device creates it again: a new tag, after the confirmed delete.
    let reborn = server_copy(&note("a", "second life"), "t9");
    let page = FetchedPage {
        zone: zone(),
        changed: vec![reborn.clone()],
        deleted: vec![],
        token: ChangeToken("tok-2".into()),
        more_coming: false,
    };
    let outcome = store.apply_fetched(page).await.unwrap();
    assert_eq!(outcome.recreated, vec![id("a")]);
    assert_eq!(store.record(id("a")).await.unwrap(), Some(reborn.clone()));
    assert_eq!(store.merge_base(id("a")).await.unwrap(), Some(reborn));
    assert!(store.tombstone(id("a")).await.unwrap().is_none());
    assert_eq!(engine.queue.depth().await.unwrap().pending, 0);
    engine.stop().await;
}

/// Invariant 5, seen from the other side: a record deleted here (the delete confirmed) and then
/// created here again is a new life, based on no server copy. A fetch from before the delete
/// reports the old life's deletion; that is no conflict with the new life, which must not be
/// dropped (it was: a returned save lost, found by the simulation, `skysync-sim` seed 125). A
/// lookup that finds no server copy does not drop it either.
#[tokio::test]
async fn invariant_5_a_recreation_here_outlives_the_report_of_the_old_deletion() {
    let engine = Engine::start().await;
    let store = &engine.store;
    store.save(note("a", "first life")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    store.delete(id("a")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "unused").await;

    // Created again before a fetch passed the delete: a create, without a change tag.
    store.save(note("a", "second life")).await.unwrap();
    let pending = engine.queue.next_batch().await.unwrap();
    assert_eq!(pending.changes()[0].change.change_tag(), None);

    // The fetch that reports the old life's deletion.
    let page = FetchedPage {
        zone: zone(),
        changed: vec![],
        deleted: vec![id("a")],
        token: ChangeToken("tok-1".into()),
        more_coming: false,
    };
    let outcome = store.apply_fetched(page).await.unwrap();
    assert!(outcome.conflicts.is_empty(), "{outcome:?}");
    assert!(store.open_conflict(id("a")).await.unwrap().is_none());
    assert!(!store.record_conflict(id("a"), None).await.unwrap());
    assert!(store.open_conflict(id("a")).await.unwrap().is_none());
    let record = store
        .record(id("a"))
        .await
        .unwrap()
        .expect("the new life is kept");
    assert_eq!(text(&record), "second life");
    let next = engine.queue.next_batch().await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        change_text(&next.changes()[0].change).as_deref(),
        Some("second life")
    );
    assert_eq!(next.changes()[0].change.change_tag(), None);
    engine.stop().await;
}

/// Invariant 6: fetched server data never overwrites a record with pending local changes and never
/// moves its merge base: the fetched copy is kept beside them as an open conflict (surviving a
/// restart) until a resolution is committed, which sends the merged record first with the server's
/// tag and only then makes the server copy the base.
#[tokio::test]
async fn invariant_6_fetch_never_overwrites_pending_local_changes() {
    let engine = Engine::start().await;
    let store = &engine.store;
    store.save(note("a", "base")).await.unwrap();
    store.save(note("b", "1")).await.unwrap();
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    let base = store.merge_base(id("a")).await.unwrap().unwrap();
    assert_eq!(text(&base), "base");

    // A local edit is pending when the server's newer copy arrives.
    store.save(note("a", "local")).await.unwrap();
    store.save(note("z", "queued first")).await.unwrap();
    let server = server_copy(&note("a", "server"), "t2");
    let page = FetchedPage {
        zone: zone(),
        changed: vec![server.clone(), server_copy(&note("b", "server"), "t2")],
        deleted: vec![],
        token: ChangeToken("tok-1".into()),
        more_coming: false,
    };
    let outcome = store.apply_fetched(page.clone()).await.unwrap();
    assert_eq!(outcome.conflicts, vec![id("a")]);
    assert_eq!(
        outcome.applied, 1,
        "b had no local change and takes the server copy"
    );
    let local = store.record(id("a")).await.unwrap().unwrap();
    assert_eq!(text(&local), "local", "the local edit was overwritten");
    assert_eq!(local.change_tag(), Some(&tag("t1")));
    assert_eq!(
        store.merge_base(id("a")).await.unwrap(),
        Some(base.clone()),
        "the merge base must stay the common ancestor"
    );
    assert_eq!(
        text(&store.record(id("b")).await.unwrap().unwrap()),
        "server"
    );
    // Replaying the page changes nothing.
    assert_eq!(
        store.apply_fetched(page).await.unwrap().conflicts,
        vec![id("a")]
    );
    assert_eq!(store.merge_base(id("a")).await.unwrap(), Some(base.clone()));

    // The open conflict survives a restart, and is listed.
    let engine = engine.restart().await;
    let store = &engine.store;
    let open = store.open_conflict(id("a")).await.unwrap().unwrap();
    assert_eq!(open.server, Some(server.clone()));
    assert_eq!(store.open_conflicts(None, 10).await.unwrap(), vec![open]);

    // A parked change counts as pending too; so does a server-side delete of a record edited
    // here. A create (z, never sent) was made on no server copy: a deletion is no conflict with
    // it, and it stays pending as it was.
    store.save(note("p", "local")).await.unwrap();
    let seq = store.pending_change(id("p")).await.unwrap().unwrap().seq();
    engine.queue.park(id("p"), seq, "rejected").await.unwrap();
    store.save(note("b", "local")).await.unwrap();
    let page = FetchedPage {
        zone: zone(),
        changed: vec![server_copy(&note("p", "server"), "t5")],
        deleted: vec![id("b"), id("z")],
        token: ChangeToken("tok-2".into()),
        more_coming: false,
    };
    assert_eq!(
        store.apply_fetched(page).await.unwrap().conflicts,
        vec![id("p"), id("b")]
    );
    assert_eq!(
        text(&store.record(id("p")).await.unwrap().unwrap()),
        "local"
    );
    assert_eq!(
        store.open_conflict(id("b")).await.unwrap().unwrap().server,
        None,
        "a delete on the server is the server side of b's conflict"
    );
    assert!(store.record(id("b")).await.unwrap().is_some());
    assert!(store.open_conflict(id("z")).await.unwrap().is_none());
    assert!(store.record(id("z")).await.unwrap().is_some());

    // The resolution is committed with the server's tag and sent before anything else; only now
    // does the server copy become the base.
    let local_seq = store
        .pending_change(id("a"))
        .await
        .unwrap()
        .map(|e| e.seq());
    let resolved = ResolvedConflict {
        id: id("a"),
        server: Some(server.clone()),
        local_seq,
        resolution: Resolution::Send(note("a", "local+server")),
    };
    let outcome = store.commit_resolution(resolved.clone()).await.unwrap();
    assert!(matches!(
        outcome,
        ResolveOutcome::Committed { queued: Some(_) }
    ));
    assert_eq!(
        store.merge_base(id("a")).await.unwrap(),
        Some(server.clone())
    );
    assert_eq!(store.open_conflict(id("a")).await.unwrap(), None);
    let next = engine.queue.next_batch().await.unwrap();
    let first = &next.changes()[0];
    assert_eq!(first.record_id(), &id("a"));
    assert_eq!(change_text(&first.change).as_deref(), Some("local+server"));
    assert_eq!(first.change.change_tag(), Some(&tag("t2")));

    // A resolution based on an older local copy is refused rather than overwriting a newer edit.
    store.save(note("p", "newest")).await.unwrap();
    let stale = ResolvedConflict {
        id: id("p"),
        server: Some(server_copy(&note("p", "server"), "t5")),
        local_seq: Some(seq),
        resolution: Resolution::AcceptServer,
    };
    assert_eq!(
        store.commit_resolution(stale).await.unwrap(),
        ResolveOutcome::LocalChangedSince
    );
    assert_eq!(
        text(&store.record(id("p")).await.unwrap().unwrap()),
        "newest"
    );
    assert!(store.open_conflict(id("p")).await.unwrap().is_some());
    engine.stop().await;
}

/// Invariant 7: stored values are versioned; a newer format is refused with an error naming the
/// file, and the file is left as it was. A damaged file or value is a typed error naming the file.
#[tokio::test]
async fn invariant_7_newer_format_and_corruption_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.redb");
    drop(StoreFile::open_async(&path).await.unwrap());

    let meta: TableDefinition<'_, &str, u64> = TableDefinition::new("skysync.meta");
    let set_version = |version: u64| {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta)
            .unwrap()
            .insert("format_version", version)
            .unwrap();
        txn.commit().unwrap();
    };
    set_version(skysync_store::STORE_FORMAT_VERSION + 1);
    let err = StoreFile::open(&path).unwrap_err();
    match &err {
        StoreError::NewerFormat {
            file,
            found,
            supported,
        } => {
            assert_eq!(file, &path);
            assert_eq!(*found, skysync_store::STORE_FORMAT_VERSION + 1);
            assert_eq!(*supported, skysync_store::STORE_FORMAT_VERSION);
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
    {
        // Refused, not rewritten.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let version = txn
            .open_table(meta)
            .unwrap()
            .get("format_version")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, skysync_store::STORE_FORMAT_VERSION + 1);
    }
    set_version(skysync_store::STORE_FORMAT_VERSION);
    StoreFile::open(&path).unwrap();

    // A file that is not a store at all.
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    match StoreFile::open(&garbage) {
        Err(StoreError::Corrupt { file, .. }) => assert_eq!(file, garbage),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A value inside a valid file that this build cannot read.
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let records: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("skysync.records");
        let key = skysync_queue::keys::record_key(&id("broken")).unwrap();
        txn.open_table(records)
            .unwrap()
            .insert(key.as_slice(), [0xff, 0xff, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let engine = Engine::open(dir).await;
    match engine.store.record(id("broken")).await {
        Err(StoreError::Corrupt { file, table, .. }) => {
            assert_eq!(file, engine.path);
            assert_eq!(table, "skysync.records");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    engine.stop().await;
}

/// A commit of several changes is one transaction too: an invalid change in it leaves nothing.
#[tokio::test]
async fn a_multi_change_commit_is_all_or_nothing() {
    let engine = Engine::start().await;
    let bad = Record::new(RecordId::new(zone(), ""), "Note");
    let err = engine
        .store
        .commit(vec![
            LocalChange::Save(note("a", "1")),
            LocalChange::Delete(id("b")),
            LocalChange::Save(bad),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord { .. }), "{err:?}");
    assert!(engine.store.record(id("a")).await.unwrap().is_none());
    assert!(engine.store.tombstone(id("b")).await.unwrap().is_none());
    assert_eq!(engine.queue.depth().await.unwrap().pending, 0);
    let receipt = engine
        .store
        .commit(vec![
            LocalChange::Save(note("a", "1")),
            LocalChange::Delete(id("b")),
        ])
        .await
        .unwrap();
    assert_eq!(receipt.seqs.len(), 2);
    assert!(matches!(
        engine.store.pending_change(id("b")).await.unwrap(),
        Some(OutboxEntry::Pending(_))
    ));
    engine.stop().await;
}

/// Invariant 8: sync metadata lives in the store file and commits with the data it describes: the
/// database token with the removal of the zones it reports deleted and the zones it reports
/// changed; a zone leaves the zones to fetch with its last page; the account, ensured zones and
/// subscriptions, and the throttle's memory survive a restart.
#[tokio::test]
async fn invariant_8_sync_metadata_commits_with_the_data_it_describes() {
    let engine = Engine::start().await;
    let store = &engine.store;
    let gone = skysync_model::ZoneId::new("Gone");
    store.save(note("a", "1")).await.unwrap();
    store
        .save(Record::new(RecordId::new(gone.clone(), "g"), "Note"))
        .await
        .unwrap();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(40);
    let pacing = skysync_model::PacingMemory {
        ceiling_per_sec: Some(0.08),
        not_before_unix_ms: Some(skysync_model::PacingMemory::unix_ms(deadline)),
    };
    for change in [
        SyncMetadataChange::Account("_user1".into()),
        SyncMetadataChange::ZonesEnsured(vec![zone(), gone.clone()]),
        SyncMetadataChange::SubscriptionEnsured("skysync-Notes".into()),
        SyncMetadataChange::Pacing(pacing),
    ] {
        store.update_sync_metadata(change).await.unwrap();
    }

    // changes/database: Gone was deleted by the user, Notes changed.
    let outcome = store
        .apply_database_changes(DatabaseChanges {
            token: Some(ChangeToken("db-1".into())),
            changed: vec![zone()],
            deleted: vec![gone.clone()],
        })
        .await
        .unwrap();
    assert_eq!(outcome.removed.len(), 1);
    assert_eq!(
        outcome.removed[0].1.changes, 1,
        "its pending change went too"
    );
    let meta = store.sync_metadata().await.unwrap();
    assert_eq!(meta.database_token, Some(ChangeToken("db-1".into())));
    assert!(meta.zones_to_fetch.contains(&zone()));
    assert!(!meta.ensured_zones.contains(&gone));
    assert!(
        meta.deleted_remotely.contains(&gone),
        "not to be synced or created again"
    );
    assert!(
        store
            .record(RecordId::new(gone.clone(), "g"))
            .await
            .unwrap()
            .is_none()
    );

    // A first page with more coming keeps Notes to fetch; the last page takes it off.
    let mut page = FetchedPage {
        zone: zone(),
        changed: vec![],
        deleted: vec![],
        token: ChangeToken("tok-1".into()),
        more_coming: true,
    };
    store.apply_fetched(page.clone()).await.unwrap();
    assert!(
        store
            .sync_metadata()
            .await
            .unwrap()
            .zones_to_fetch
            .contains(&zone())
    );
    page.more_coming = false;
    page.token = ChangeToken("tok-2".into());
    store.apply_fetched(page).await.unwrap();

    // Everything above is on disk, in the file.
    let engine = engine.restart().await;
    let meta = engine.store.sync_metadata().await.unwrap();
    assert!(meta.zones_to_fetch.is_empty());
    assert_eq!(meta.account.as_deref(), Some("_user1"));
    assert_eq!(meta.ensured_zones.iter().collect::<Vec<_>>(), vec![&zone()]);
    assert!(meta.ensured_subscriptions.contains("skysync-Notes"));
    assert_eq!(meta.pacing, pacing);
    assert!(meta.last_fetch_unix_ms.is_some());
    assert!(
        meta.pacing.remaining_penalty(std::time::SystemTime::now()) > std::time::Duration::ZERO
    );

    // A confirmed send records its time.
    assert!(meta.last_send_unix_ms.is_none());
    let batch = engine.queue.next_batch().await.unwrap();
    engine.confirm_all(&batch, "t1").await;
    assert!(
        engine
            .store
            .sync_metadata()
            .await
            .unwrap()
            .last_send_unix_ms
            .is_some()
    );

    // Resetting a zone forgets that it was ensured (it must be created again).
    engine.store.reset_zone(zone()).await.unwrap();
    assert!(
        engine
            .store
            .sync_metadata()
            .await
            .unwrap()
            .ensured_zones
            .is_empty()
    );
    engine.stop().await;
}

/// Invariant 7 across versions: a file written by the previous format (1) opens, is upgraded in
/// place, and keeps its data.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    let engine = Engine::start().await;
    engine.store.save(note("a", "kept")).await.unwrap();
    let dir = engine.stop().await;
    let path = dir.path().join("sync.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(TableDefinition::<&str, u64>::new("skysync.meta"))
                .unwrap();
            meta.insert("format_version", 1).unwrap();
        }
        txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(
            "skysync.open_conflicts",
        ))
        .unwrap();
        txn.commit().unwrap();
    }
    let engine = Engine::open(dir).await;
    assert_eq!(
        text(&engine.store.record(id("a")).await.unwrap().unwrap()),
        "kept"
    );
    assert!(
        engine
            .store
            .open_conflicts(None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let txn = engine.file.database().begin_read().unwrap();
    let meta = txn
        .open_table(TableDefinition::<&str, u64>::new("skysync.meta"))
        .unwrap();
    assert_eq!(
        meta.get("format_version").unwrap().unwrap().value(),
        skysync_store::STORE_FORMAT_VERSION
    );
    drop(meta);
    drop(txn);
    engine.stop().await;
}
