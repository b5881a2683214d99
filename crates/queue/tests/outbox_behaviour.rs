//! The outbox through its actor handle, on a real redb file: coalescing, batches and their limits,
//! acknowledgement by version, requeueing, parking, depth, and the format check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redb::{Database, TableDefinition};
use skysync_model::{ChangeTag, FieldValue, PendingChange, Record, RecordId, SystemFields, ZoneId};
use skysync_queue::{
    BatchLimits, Outbox, OutboxEntry, QueueConfig, QueueError, QueueHandle, write_durably,
};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    db: Arc<Database>,
    queue: QueueHandle,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let (queue, _) = QueueHandle::spawn(db.clone(), &path, QueueConfig::default())
            .await
            .unwrap();
        Fixture {
            _dir: dir,
            path,
            db,
            queue,
        }
    }

    /// Enqueues changes in one durable transaction, as the store does; returns their numbers.
    async fn enqueue(&self, changes: Vec<PendingChange>) -> Vec<skysync_queue::ChangeSeq> {
        let db = self.db.clone();
        let outbox = Outbox::new(&self.path);
        tokio::task::spawn_blocking(move || {
            write_durably(&db, &outbox, |o, txn| {
                changes.into_iter().map(|c| o.enqueue(txn, c)).collect()
            })
        })
        .await
        .unwrap()
        .unwrap()
    }

    async fn enqueue_front(&self, change: PendingChange) -> skysync_queue::ChangeSeq {
        let db = self.db.clone();
        let outbox = Outbox::new(&self.path);
        tokio::task::spawn_blocking(move || {
            write_durably(&db, &outbox, |o, txn| o.enqueue_front(txn, change))
        })
        .await
        .unwrap()
        .unwrap()
    }

    /// Acknowledges exactly the versions a batch carries, as the store does when the server
    /// confirmed it; returns how many were removed.
    async fn ack(&self, batch: skysync_queue::Batch) -> usize {
        let db = self.db.clone();
        let outbox = Outbox::new(&self.path);
        tokio::task::spawn_blocking(move || {
            write_durably(&db, &outbox, |o, txn| {
                let mut removed = 0;
                for change in batch.changes() {
                    if o.ack_change(txn, change.record_id(), change.seq)? {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
        })
        .await
        .unwrap()
        .unwrap()
    }

    async fn set_tag(&self, id: RecordId, tag: &str) -> bool {
        let db = self.db.clone();
        let outbox = Outbox::new(&self.path);
        let system = SystemFields {
            change_tag: ChangeTag(tag.into()),
            created: None,
            modified: None,
            deleted: false,
        };
        tokio::task::spawn_blocking(move || {
            write_durably(&db, &outbox, |o, txn| {
                o.set_change_tag(txn, &id, Some(&system))
            })
        })
        .await
        .unwrap()
        .unwrap()
    }

    /// The names of the records in the next batch, in order.
    async fn next_names(&self, limits: BatchLimits) -> Vec<String> {
        names(&self.queue.next_batch_within(limits).await.unwrap())
    }
}

fn id(name: &str) -> RecordId {
    RecordId::new(ZoneId::new("Notes"), name)
}

fn save(name: &str, text: &str) -> PendingChange {
    PendingChange::Save(Record::new(id(name), "Note").with("text", text))
}

fn delete(name: &str) -> PendingChange {
    PendingChange::Delete {
        id: id(name),
        change_tag: None,
    }
}

fn names(batch: &skysync_queue::Batch) -> Vec<String> {
    batch
        .changes()
        .iter()
        .map(|c| c.record_id().record_name.clone())
        .collect()
}

fn text_of(change: &PendingChange) -> Option<String> {
    match change {
        PendingChange::Save(r) => match r.get("text") {
            Some(FieldValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        PendingChange::Delete { .. } => None,
    }
}

#[tokio::test]
async fn save_a_b_a_sends_a_then_b_with_the_latest_copy_of_a() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1"), save("a", "2")])
        .await;
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&batch), ["a", "b"]);
    assert_eq!(text_of(&batch.changes()[0].change).as_deref(), Some("2"));
    assert_eq!(f.queue.depth().await.unwrap().pending, 2);
}

#[tokio::test]
async fn save_then_delete_sends_only_the_delete() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), delete("a")]).await;
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1);
    assert!(batch.changes()[0].change.is_delete());
    // And a save after the delete turns it back into a save.
    f.enqueue(vec![save("a", "3")]).await;
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(text_of(&batch.changes()[0].change).as_deref(), Some("3"));
}

#[tokio::test]
async fn ack_removes_exactly_the_batch_and_keeps_an_edit_made_after_it_was_formed() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1")]).await;
    let batch = f.queue.next_batch().await.unwrap();
    let newer = f.enqueue(vec![save("a", "2"), save("c", "1")]).await;
    assert_eq!(f.ack(batch).await, 1, "only b was unchanged");
    let rest = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&rest), ["a", "c"]);
    assert_eq!(rest.changes()[0].seq, newer[0]);
    assert_eq!(text_of(&rest.changes()[0].change).as_deref(), Some("2"));
    // Acknowledging the same batch again removes nothing.
    assert_eq!(f.ack(rest.clone()).await, 2);
    assert_eq!(f.ack(rest).await, 0);
    assert_eq!(f.queue.depth().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_partial_ack_leaves_the_changes_the_server_did_not_accept() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1"), save("c", "1")])
        .await;
    let mut batch = f.queue.next_batch().await.unwrap();
    batch.retain(|c| c.record_id().record_name != "b");
    assert_eq!(f.ack(batch).await, 2);
    assert_eq!(f.next_names(BatchLimits::default()).await, ["b"]);
}

#[tokio::test]
async fn batches_stop_at_the_count_limit() {
    let f = Fixture::new().await;
    let changes = (0..7).map(|i| save(&format!("r{i}"), "x")).collect();
    f.enqueue(changes).await;
    let limits = BatchLimits::new(3, usize::MAX);
    assert_eq!(f.next_names(limits).await, ["r0", "r1", "r2"]);
    let first = f.queue.next_batch_within(limits).await.unwrap();
    f.ack(first).await;
    assert_eq!(f.next_names(limits).await, ["r3", "r4", "r5"]);
}

#[tokio::test]
async fn the_default_batch_holds_at_most_200_changes() {
    let f = Fixture::new().await;
    let changes = (0..250).map(|i| save(&format!("r{i:03}"), "x")).collect();
    f.enqueue(changes).await;
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(batch.len(), 200);
    assert_eq!(BatchLimits::default().max_bytes, 2 * 1024 * 1024);
}

#[tokio::test]
async fn batches_stop_at_the_byte_limit_but_always_carry_one_change() {
    let f = Fixture::new().await;
    let big = "x".repeat(1000);
    f.enqueue(vec![
        save("a", &big),
        save("b", &big),
        save("c", &big),
        save("d", "small"),
    ])
    .await;
    let one = f
        .queue
        .next_batch_within(BatchLimits::unlimited())
        .await
        .unwrap();
    let size_a = one.changes()[0].wire_len;
    assert!(size_a > 1000);
    // Room for two big changes, not three.
    let limits = BatchLimits::new(200, size_a * 2 + size_a / 2);
    let batch = f.queue.next_batch_within(limits).await.unwrap();
    assert_eq!(names(&batch), ["a", "b"]);
    assert!(batch.wire_len() <= limits.max_bytes);
    // A change larger than the limit on its own still goes out, alone.
    let tiny = BatchLimits::new(200, 10);
    assert_eq!(f.next_names(tiny).await, ["a"]);
}

#[tokio::test]
async fn split_halves_go_out_in_order_and_each_ack_removes_its_own_half() {
    let f = Fixture::new().await;
    let changes = (0..5).map(|i| save(&format!("r{i}"), "x")).collect();
    f.enqueue(changes).await;
    let batch = f.queue.next_batch().await.unwrap();
    let (first, second) = batch.split().unwrap();
    assert_eq!(names(&first), ["r0", "r1"]);
    assert_eq!(names(&second), ["r2", "r3", "r4"]);
    f.ack(first).await;
    assert_eq!(
        f.next_names(BatchLimits::default()).await,
        ["r2", "r3", "r4"]
    );
    let single = f
        .queue
        .next_batch_within(BatchLimits::new(1, usize::MAX))
        .await
        .unwrap();
    assert!(single.split().is_err(), "one change cannot be split");
}

#[tokio::test]
async fn requeue_front_puts_a_batch_before_everything_else_in_its_order() {
    let f = Fixture::new().await;
    f.enqueue(vec![
        save("a", "1"),
        save("b", "1"),
        save("c", "1"),
        save("d", "1"),
    ])
    .await;
    let all = f.queue.next_batch().await.unwrap();
    let (_, tail) = all.split().unwrap();
    assert_eq!(names(&tail), ["c", "d"]);
    // d was edited meanwhile: it moves with its latest version.
    f.enqueue(vec![save("d", "2")]).await;
    assert_eq!(f.queue.requeue_front(tail).await.unwrap(), 2);
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&batch), ["c", "d", "a", "b"]);
    assert_eq!(text_of(&batch.changes()[1].change).as_deref(), Some("2"));
}

#[tokio::test]
async fn enqueue_front_sends_a_conflict_resolution_first() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1"), save("c", "1")])
        .await;
    f.enqueue_front(save("c", "resolved")).await;
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&batch), ["c", "a", "b"]);
    assert_eq!(
        text_of(&batch.changes()[0].change).as_deref(),
        Some("resolved")
    );
}

#[tokio::test]
async fn a_parked_change_is_listed_with_its_reason_skipped_and_retried_on_demand() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1")]).await;
    let batch = f.queue.next_batch().await.unwrap();
    let seq_a = batch.seq_of(&id("a")).unwrap();
    assert!(
        f.queue
            .park(id("a"), seq_a, "BAD_REQUEST: field too long")
            .await
            .unwrap()
    );
    let parked = f.queue.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, "BAD_REQUEST: field too long");
    assert_eq!(parked[0].seq, seq_a);
    assert_eq!(f.next_names(BatchLimits::default()).await, ["b"]);
    let depth = f.queue.depth().await.unwrap();
    assert_eq!((depth.pending, depth.parked), (1, 1));
    assert!(matches!(
        f.queue.entry(id("a")).await.unwrap(),
        Some(OutboxEntry::Parked(_))
    ));

    assert_eq!(f.queue.retry_parked(None).await.unwrap(), 1);
    assert!(f.queue.parked().await.unwrap().is_empty());
    let retried = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&retried), ["a", "b"]);
    // A new attempt under a new number: the batch that carried the refused version cannot remove it.
    assert!(retried.changes()[0].seq > seq_a);
    let mut stale = batch;
    stale.retain(|c| c.record_id() == &id("a"));
    assert_eq!(f.ack(stale).await, 0);
    assert_eq!(f.queue.depth().await.unwrap().pending, 2);
}

#[tokio::test]
async fn retry_parked_can_pick_records() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), save("b", "1"), save("c", "1")])
        .await;
    let batch = f.queue.next_batch().await.unwrap();
    for c in batch.changes() {
        f.queue
            .park(c.record_id().clone(), c.seq, "rejected")
            .await
            .unwrap();
    }
    assert_eq!(f.queue.retry_parked(Some(vec![id("b")])).await.unwrap(), 1);
    assert_eq!(f.next_names(BatchLimits::default()).await, ["b"]);
    assert_eq!(f.queue.parked().await.unwrap().len(), 2);
}

#[tokio::test]
async fn parking_a_stale_version_does_nothing_and_a_new_edit_unparks() {
    let f = Fixture::new().await;
    let first = f.enqueue(vec![save("a", "1")]).await[0];
    f.enqueue(vec![save("a", "2")]).await;
    assert!(!f.queue.park(id("a"), first, "rejected").await.unwrap());
    assert!(f.queue.parked().await.unwrap().is_empty());

    let current = f.queue.next_batch().await.unwrap().changes()[0].seq;
    assert!(f.queue.park(id("a"), current, "rejected").await.unwrap());
    f.enqueue(vec![save("a", "3")]).await;
    assert!(f.queue.parked().await.unwrap().is_empty());
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(text_of(&batch.changes()[0].change).as_deref(), Some("3"));
}

#[tokio::test]
async fn a_new_change_tag_reaches_the_pending_change_without_a_new_version() {
    let f = Fixture::new().await;
    let seq = f.enqueue(vec![save("a", "1")]).await[0];
    assert!(f.set_tag(id("a"), "t-9").await);
    let batch = f.queue.next_batch().await.unwrap();
    assert_eq!(batch.changes()[0].seq, seq);
    assert_eq!(
        batch.changes()[0].change.change_tag(),
        Some(&ChangeTag("t-9".into()))
    );
    assert!(!f.set_tag(id("nothing"), "t").await);
}

#[tokio::test]
async fn the_outbox_survives_reopening_the_file() {
    let f = Fixture::new().await;
    f.enqueue(vec![save("a", "1"), delete("b")]).await;
    let before = f.queue.next_batch().await.unwrap();
    f.queue.stop().await;
    let Fixture { _dir, path, db, .. } = f;
    drop(db);
    let db = Arc::new(Database::create(&path).unwrap());
    let (queue, _) = QueueHandle::spawn(db, &path, QueueConfig::default())
        .await
        .unwrap();
    assert_eq!(queue.next_batch().await.unwrap(), before);
    queue.stop().await;
}

#[tokio::test]
async fn a_newer_outbox_format_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let db = Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let meta: TableDefinition<'_, &str, u64> = TableDefinition::new("skysync.outbox.meta");
        let mut table = txn.open_table(meta).unwrap();
        table.insert("format_version", 99).unwrap();
    }
    txn.commit().unwrap();
    let err = QueueHandle::spawn(Arc::new(db), &path, QueueConfig::default())
        .await
        .unwrap_err();
    match &err {
        QueueError::NewerFormat { file, found, .. } => {
            assert_eq!(file, &path);
            assert_eq!(*found, 99);
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[tokio::test]
async fn a_stopped_queue_answers_with_a_local_error_at_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let db = Arc::new(Database::create(&path).unwrap());
    let config = QueueConfig {
        call_timeout: std::time::Duration::from_millis(300),
        ..QueueConfig::default()
    };
    let (queue, _) = QueueHandle::spawn(db, &path, config).await.unwrap();
    queue.stop().await;
    let err = queue.depth().await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Local(skysync_actors::LocalError::Unavailable {
                component: "queue",
                operation: "depth",
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn clearing_a_zones_tags_reaches_its_pending_and_parked_changes_only() {
    let f = Fixture::new().await;
    let elsewhere = RecordId::new(ZoneId::new("Other"), "o");
    f.enqueue(vec![
        save("a", "1"),
        save("p", "1"),
        PendingChange::Save(Record::new(elsewhere.clone(), "Note")),
    ])
    .await;
    for record in [id("a"), id("p"), elsewhere.clone()] {
        assert!(f.set_tag(record, "t1").await);
    }
    let seq_p = f.queue.entry(id("p")).await.unwrap().unwrap().seq();
    assert!(f.queue.park(id("p"), seq_p, "rejected").await.unwrap());

    let db = f.db.clone();
    let outbox = Outbox::new(&f.path);
    let touched = tokio::task::spawn_blocking(move || {
        write_durably(&db, &outbox, |o, txn| {
            o.clear_zone_tags(txn, &ZoneId::new("Notes"))
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(touched, 2);
    let tag_of = |entry: Option<OutboxEntry>| entry.unwrap().change().change_tag().cloned();
    assert_eq!(tag_of(f.queue.entry(id("a")).await.unwrap()), None);
    let parked = f.queue.entry(id("p")).await.unwrap();
    assert!(matches!(parked, Some(OutboxEntry::Parked(_))));
    assert_eq!(tag_of(parked), None);
    assert_eq!(
        tag_of(f.queue.entry(elsewhere).await.unwrap()),
        Some(ChangeTag("t1".into()))
    );
    // The versions stay: a batch formed before the reset still acknowledges them.
    assert_eq!(f.queue.entry(id("p")).await.unwrap().unwrap().seq(), seq_p);
}

#[tokio::test]
async fn a_batch_never_mixes_zones_and_others_keep_their_place() {
    let f = Fixture::new().await;
    let in_zone = |zone: &str, name: &str| {
        PendingChange::Save(Record::new(RecordId::new(ZoneId::new(zone), name), "Note"))
    };
    f.enqueue(vec![
        in_zone("Work", "a"),
        in_zone("Home", "b"),
        in_zone("Work", "c"),
        in_zone("Home", "d"),
    ])
    .await;
    let first = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&first), ["a", "c"]);
    assert_eq!(first.zone(), Some(&ZoneId::new("Work")));
    assert_eq!(f.ack(first).await, 2);
    let second = f.queue.next_batch().await.unwrap();
    assert_eq!(names(&second), ["b", "d"]);
    assert_eq!(second.zone(), Some(&ZoneId::new("Home")));
}

#[tokio::test]
async fn the_byte_limit_counts_the_operations_as_sent_not_as_stored() {
    let f = Fixture::new().await;
    // 3,000 raw bytes are 4,000 characters of base64 on the wire, but about 3,000 in storage.
    let blob = |name: &str| {
        PendingChange::Save(
            Record::new(id(name), "Note").with("data", FieldValue::Bytes(vec![7u8; 3000])),
        )
    };
    let changes = vec![blob("a"), blob("b"), blob("c")];
    let sent: Vec<usize> = changes
        .iter()
        .map(|c| serde_json::to_vec(&c.to_operation()).unwrap().len())
        .collect();
    f.enqueue(changes).await;
    // Room for three as stored, for two as sent.
    let limits = BatchLimits::new(200, 10_000);
    let batch = f.queue.next_batch_within(limits).await.unwrap();
    assert_eq!(names(&batch), ["a", "b"]);
    assert_eq!(batch.wire_len(), sent[0] + sent[1]);
    assert!(sent[0] > 4000, "{sent:?}");
}
