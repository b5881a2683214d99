//! Property tests: coalescing and batch formation against a plain in-memory model.
//!
//! For any sequence of saves, deletes, batch formations, (partial) acknowledgements and requeues, the
//! outbox on a real redb file holds exactly the model's pending changes, in the model's order, each
//! the latest local state of its record with the number the model predicts; every batch is the
//! longest prefix within its limits; and draining the outbox sends the model's latest state of every
//! pending record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use redb::Database;
use skysync_model::{FieldValue, PendingChange, Record, RecordId, ZoneId};
use skysync_queue::{Batch, BatchLimits, ChangeSeq, Outbox, write_durably};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Save {
        record: u8,
        pad: usize,
    },
    Delete {
        record: u8,
    },
    Form {
        max_changes: usize,
        max_bytes: Option<usize>,
    },
    Ack {
        batch: usize,
    },
    AckPart {
        batch: usize,
        keep: u8,
    },
    Requeue {
        batch: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, 0usize..1500).prop_map(|(record, pad)| Op::Save { record, pad }),
        2 => (0u8..6).prop_map(|record| Op::Delete { record }),
        3 => (1usize..6, proptest::option::of(150usize..4000))
            .prop_map(|(max_changes, max_bytes)| Op::Form { max_changes, max_bytes }),
        2 => any::<usize>().prop_map(|batch| Op::Ack { batch }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(batch, keep)| Op::AckPart { batch, keep }),
        1 => any::<usize>().prop_map(|batch| Op::Requeue { batch }),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Content {
    Save { seq: u64, pad: usize },
    Delete,
}

/// The plain model: records in send order, each with its latest content and version number.
#[derive(Default)]
struct Model {
    next_seq: u64,
    order: Vec<u8>,
    latest: BTreeMap<u8, (u64, Content)>,
}

impl Model {
    fn change(&mut self, record: u8, content: impl FnOnce(u64) -> Content) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if !self.latest.contains_key(&record) {
            self.order.push(record);
        }
        self.latest.insert(record, (seq, content(seq)));
        seq
    }

    fn ack(&mut self, acked: &[(u8, u64)]) -> usize {
        let mut removed = 0;
        for (record, seq) in acked {
            if self.latest.get(record).map(|(s, _)| *s) == Some(*seq) {
                self.latest.remove(record);
                self.order.retain(|r| r != record);
                removed += 1;
            }
        }
        removed
    }

    fn requeue(&mut self, batch: &[(u8, u64)]) -> usize {
        let moved: Vec<u8> = batch
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| self.latest.contains_key(r))
            .collect();
        self.order.retain(|r| !moved.contains(r));
        let mut order = moved.clone();
        order.append(&mut self.order);
        self.order = order;
        moved.len()
    }
}

fn id(record: u8) -> RecordId {
    RecordId::new(ZoneId::new("Z"), format!("r{record}"))
}

fn record_of(id: &RecordId) -> u8 {
    id.record_name[1..].parse().unwrap()
}

fn content_of(change: &PendingChange) -> Content {
    match change {
        PendingChange::Save(r) => {
            let seq = match r.get("seq") {
                Some(FieldValue::Int64(v)) => u64::try_from(*v).unwrap(),
                other => panic!("unexpected seq field {other:?}"),
            };
            let pad = match r.get("pad") {
                Some(FieldValue::String(s)) => s.len(),
                other => panic!("unexpected pad field {other:?}"),
            };
            Content::Save { seq, pad }
        }
        PendingChange::Delete { .. } => Content::Delete,
    }
}

fn pairs(batch: &Batch) -> Vec<(u8, u64)> {
    batch
        .changes()
        .iter()
        .map(|c| (record_of(c.record_id()), c.seq.0))
        .collect()
}

fn check_outbox_matches(model: &Model, all: &Batch) -> Result<(), TestCaseError> {
    let found: Vec<(u8, u64, Content)> = all
        .changes()
        .iter()
        .map(|c| (record_of(c.record_id()), c.seq.0, content_of(&c.change)))
        .collect();
    let expected: Vec<(u8, u64, Content)> = model
        .order
        .iter()
        .map(|r| {
            let (seq, content) = model.latest[r].clone();
            (*r, seq, content)
        })
        .collect();
    prop_assert_eq!(found, expected);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.redb");
    let db = Database::create(&path).unwrap();
    let outbox = Outbox::new(&path);
    write_durably(&db, &outbox, |o, txn| o.create_tables(txn)).unwrap();
    let read_all = || {
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        outbox.form_batch(&txn, BatchLimits::unlimited()).unwrap()
    };

    let mut model = Model::default();
    let mut batches: Vec<Vec<(u8, u64)>> = Vec::new();
    let pick = |batches: &Vec<Vec<(u8, u64)>>, i: usize| -> Option<Vec<(u8, u64)>> {
        (!batches.is_empty()).then(|| batches[i % batches.len()].clone())
    };
    let mut formed: Vec<Batch> = Vec::new();

    for op in ops {
        match op {
            Op::Save { record, pad } => {
                let expected = model.change(record, |seq| Content::Save { seq, pad });
                let change = PendingChange::Save(
                    Record::new(id(record), "T")
                        .with("seq", i64::try_from(expected).unwrap())
                        .with("pad", "p".repeat(pad)),
                );
                let seq = write_durably(&db, &outbox, |o, txn| o.enqueue(txn, change)).unwrap();
                prop_assert_eq!(seq, ChangeSeq(expected));
            }
            Op::Delete { record } => {
                let expected = model.change(record, |_| Content::Delete);
                let change = PendingChange::Delete {
                    id: id(record),
                    change_tag: None,
                };
                let seq = write_durably(&db, &outbox, |o, txn| o.enqueue(txn, change)).unwrap();
                prop_assert_eq!(seq, ChangeSeq(expected));
            }
            Op::Form {
                max_changes,
                max_bytes,
            } => {
                let limits = BatchLimits::new(max_changes, max_bytes.unwrap_or(usize::MAX));
                let all = read_all();
                let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
                let batch = outbox.form_batch(&txn, limits).unwrap();
                let n = batch.len();
                // A prefix of everything pending...
                prop_assert_eq!(batch.changes(), &all.changes()[..n]);
                // ...within the limits (one change may exceed the byte limit alone)...
                prop_assert!(n <= limits.max_changes);
                prop_assert!(n <= 1 || batch.wire_len() <= limits.max_bytes);
                prop_assert_eq!(n == 0, all.is_empty());
                // ...and the longest such prefix.
                if n < all.len() {
                    let next = all.changes()[n].wire_len;
                    prop_assert!(
                        n == limits.max_changes || batch.wire_len() + next > limits.max_bytes
                    );
                }
                batches.push(pairs(&batch));
                formed.push(batch);
            }
            Op::Ack { batch } => {
                let Some(chosen) = pick(&batches, batch) else {
                    continue;
                };
                let real = formed[batch % formed.len()].clone();
                let removed = write_durably(&db, &outbox, |o, txn| ack(o, txn, &real)).unwrap();
                prop_assert_eq!(removed, model.ack(&chosen));
            }
            Op::AckPart { batch, keep } => {
                let Some(_) = pick(&batches, batch) else {
                    continue;
                };
                let mut real = formed[batch % formed.len()].clone();
                let mut index = 0u32;
                real.retain(|_| {
                    let kept = keep & (1 << (index % 8)) != 0;
                    index += 1;
                    kept
                });
                let chosen = pairs(&real);
                let removed = write_durably(&db, &outbox, |o, txn| ack(o, txn, &real)).unwrap();
                prop_assert_eq!(removed, model.ack(&chosen));
            }
            Op::Requeue { batch } => {
                let Some(chosen) = pick(&batches, batch) else {
                    continue;
                };
                let real = formed[batch % formed.len()].clone();
                let moved =
                    write_durably(&db, &outbox, |o, txn| o.requeue_front(txn, &real)).unwrap();
                prop_assert_eq!(moved, model.requeue(&chosen));
            }
        }
        check_outbox_matches(&model, &read_all())?;
    }

    // Drain: send batch after batch and acknowledge each. What went out, last per record, is the
    // model's latest state of every pending record.
    let mut sent: BTreeMap<u8, Content> = BTreeMap::new();
    for _ in 0..100 {
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let batch = outbox.form_batch(&txn, BatchLimits::new(3, 4000)).unwrap();
        drop(txn);
        if batch.is_empty() {
            break;
        }
        for c in batch.changes() {
            sent.insert(record_of(c.record_id()), content_of(&c.change));
        }
        write_durably(&db, &outbox, |o, txn| ack(o, txn, &batch)).unwrap();
    }
    let expected: BTreeMap<u8, Content> = model
        .latest
        .iter()
        .map(|(r, (_, content))| (*r, content.clone()))
        .collect();
    prop_assert_eq!(sent, expected);
    prop_assert!(read_all().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_sends_the_latest_state_of_every_record_in_first_change_order(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops)?;
    }
}

/// Acknowledges exactly the versions a batch carries, as the store does; returns how many went.
fn ack(
    outbox: &Outbox,
    txn: &redb::WriteTransaction,
    batch: &skysync_queue::Batch,
) -> Result<usize, skysync_queue::QueueError> {
    let mut removed = 0;
    for change in batch.changes() {
        if outbox.ack_change(txn, change.record_id(), change.seq)? {
            removed += 1;
        }
    }
    Ok(removed)
}
