//! Crash test: a child process (this same test binary, in its child role) saves, deletes, batches and
//! confirms changes in a loop and is killed with SIGKILL at a random moment, over and over on the
//! same file. The child prints one line before each operation starts and one after it returned (the
//! "after" lines are flushed, so they are a lower bound of what is durable). After every kill the
//! parent reopens the file and checks:
//!
//! - it opens cleanly (redb's integrity check passes, the store opens);
//! - every save or delete that returned is there, or a newer change of the same record (invariant 1);
//! - every record's outbox entry matches the record (content and change tag), and a record without
//!   one had its latest version confirmed: the checkpoint never passed unconfirmed work (invariant 3);
//! - no acknowledged version is pending again;
//! - a deleted record stays deleted with its tombstone (invariant 5).
//!
//! Runs without libtest (`harness = false`): `main` is the parent unless `SKYSYNC_CRASH_CHILD` names
//! the file, which makes it the child. `SKYSYNC_CRASH_SEED` and `SKYSYNC_CRASH_KILLS` override the
//! seed (default fixed) and the number of kills (default 60).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase};
use skysync_model::{ChangeTag, FieldValue, PendingChange, Record, RecordId, SystemFields, ZoneId};
use skysync_queue::{BatchLimits, ChangeSeq, OutboxEntry, QueueConfig, QueueHandle};
use skysync_store::{ConfirmedChange, StoreConfig, StoreFile, StoreHandle, TombstoneState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SKYSYNC_CRASH_CHILD";
const BASE_ENV: &str = "SKYSYNC_CRASH_BASE";
const SEED_ENV: &str = "SKYSYNC_CRASH_SEED";
const KILLS_ENV: &str = "SKYSYNC_CRASH_KILLS";
const WRITERS: u64 = 4;
const RECORDS_PER_WRITER: u64 = 4;
/// The child stops by itself after this long, if nobody killed it.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let base: u64 = std::env::var(BASE_ENV).unwrap().parse().unwrap();
        let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
        child(Path::new(&path), base, seed);
        return;
    }
    // `cargo test -- --list` and friends: nothing to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    parent();
}

fn zone() -> ZoneId {
    ZoneId::new("Crash")
}

fn id(name: &str) -> RecordId {
    RecordId::new(zone(), name)
}

fn n_of(record: &Record) -> u64 {
    match record.get("n") {
        Some(FieldValue::Int64(n)) => u64::try_from(*n).unwrap(),
        other => panic!("record {} has n = {other:?}", record.id),
    }
}

fn emit(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

// ----- the child -----

fn child(path: &Path, base: u64, seed: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let file = StoreFile::open_async(path).await.unwrap();
        let (queue, _) = QueueHandle::spawn(file.database().clone(), path, QueueConfig::default())
            .await
            .unwrap();
        let (store, _) = StoreHandle::spawn(file, StoreConfig::default())
            .await
            .unwrap();
        emit(format_args!("ready"));
        let deadline = Instant::now() + CHILD_LIFETIME;
        let counter = Arc::new(AtomicU64::new(base));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (w + 1).wrapping_mul(0x9e37_79b9));
                while Instant::now() < deadline {
                    let name = format!("w{w}r{}", rng.random_range(0..RECORDS_PER_WRITER));
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    if rng.random_bool(0.2) {
                        emit(format_args!("I {name} del {n}"));
                        let seq = store.delete(id(&name)).await.unwrap();
                        emit(format_args!("D {name} {n} {}", seq.0));
                    } else {
                        emit(format_args!("I {name} save {n}"));
                        let record = Record::new(id(&name), "Crash")
                            .with("n", i64::try_from(n).unwrap())
                            .with("pad", "p".repeat(usize::try_from(n % 300).unwrap()));
                        let seq = store.save(record).await.unwrap();
                        emit(format_args!("D {name} {n} {}", seq.0));
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(async move {
            // The "server" accepts about two changes in three; the rest fail transiently and must
            // stay pending.
            let mut rng = StdRng::seed_from_u64(seed ^ 0xc0ff_ee00);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let batch = queue
                    .next_batch_within(BatchLimits::new(6, usize::MAX))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    continue;
                }
                let mut confirmed = Vec::new();
                for c in batch.changes() {
                    if rng.random_bool(0.33) {
                        continue;
                    }
                    let name = &c.record_id().record_name;
                    match &c.change {
                        PendingChange::Save(record) => {
                            let n = n_of(record);
                            emit(format_args!("C {name} {} {n}", c.seq.0));
                            let mut server = record.clone();
                            server.system = Some(SystemFields {
                                change_tag: ChangeTag(format!("tag-{n}")),
                                created: None,
                                modified: None,
                                deleted: false,
                            });
                            confirmed.push(ConfirmedChange::Saved {
                                seq: c.seq,
                                record: server,
                            });
                        }
                        PendingChange::Delete { id, .. } => {
                            emit(format_args!("C {name} {} del", c.seq.0));
                            confirmed.push(ConfirmedChange::Deleted {
                                seq: c.seq,
                                id: id.clone(),
                            });
                        }
                    }
                }
                let outcome = store.confirm_sent(confirmed).await.unwrap();
                for acked in outcome.acknowledged {
                    let seq = batch.seq_of(&acked).unwrap();
                    emit(format_args!("A {} {}", acked.record_name, seq.0));
                }
            }
        }));
        for task in tasks {
            task.await.unwrap();
        }
    });
}

// ----- the parent -----

/// What one line of the child's output says.
#[derive(Debug)]
enum Line {
    Ready,
    /// An operation on a record started: a save of version `n`, or a delete.
    Intent {
        name: String,
        delete: bool,
        n: u64,
    },
    /// The operation with `n` returned, as outbox version `seq`.
    Done {
        name: String,
        n: u64,
        seq: u64,
    },
    /// A confirmation of version `seq` (a save of `n`, or a delete) was about to be committed.
    Confirming {
        name: String,
        seq: u64,
    },
    /// Version `seq` was acknowledged (committed).
    Acked {
        name: String,
        seq: u64,
    },
}

fn parse(line: &str) -> Line {
    let parts: Vec<&str> = line.split(' ').collect();
    let num = |i: usize| -> u64 { parts[i].parse().unwrap() };
    match parts[0] {
        "ready" => Line::Ready,
        "I" => Line::Intent {
            name: parts[1].into(),
            delete: parts[2] == "del",
            n: num(3),
        },
        "D" => Line::Done {
            name: parts[1].into(),
            n: num(2),
            seq: num(3),
        },
        "C" => Line::Confirming {
            name: parts[1].into(),
            seq: num(2),
        },
        "A" => Line::Acked {
            name: parts[1].into(),
            seq: num(2),
        },
        other => panic!("unexpected child line {other:?} in {line:?}"),
    }
}

/// A record's state: alive holding version `n`, or gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Alive(u64),
    Gone,
}

#[derive(Clone, Debug)]
struct Op {
    delete: bool,
    n: u64,
    seq: Option<u64>,
}

impl Op {
    fn result(&self) -> State {
        if self.delete {
            State::Gone
        } else {
            State::Alive(self.n)
        }
    }
}

/// What the parent knows about each record across rounds.
#[derive(Default)]
struct Known {
    state: BTreeMap<String, State>,
    /// The outbox version pending for the record after the last round, if any.
    pending: BTreeMap<String, u64>,
    /// Every version acknowledged so far, per record.
    acked: HashMap<String, BTreeSet<u64>>,
    deleted_ever: BTreeSet<String>,
}

#[derive(Default)]
struct Totals {
    returned_ops: usize,
    acks: usize,
    in_flight_committed: usize,
}

fn parent() {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or(0x5eed_2024);
    let kills: usize = std::env::var(KILLS_ENV)
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or(60);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known = Known::default();
    let mut totals = Totals::default();

    for round in 0..kills {
        let base = (round as u64 + 1) * 1_000_000;
        let lines = run_child_until_killed(&exe, &path, base, seed ^ round as u64, &mut rng);
        verify(&path, round, &lines, &mut known, &mut totals);
    }
    println!(
        "crash_recovery: {kills} SIGKILLs (seed {seed:#x}) in {:.1?}: {} operations returned and survived, {} acknowledgements, {} in-flight operations found committed",
        started.elapsed(),
        totals.returned_ops,
        totals.acks,
        totals.in_flight_committed
    );
}

fn run_child_until_killed(
    exe: &Path,
    path: &Path,
    base: u64,
    seed: u64,
    rng: &mut StdRng,
) -> Vec<Line> {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, path)
        .env(BASE_ENV, base.to_string())
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill has no newline: it says nothing.
                Ok(_) if buf.last() == Some(&b'\n') => {
                    let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                    if sender.send(line).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let first = receiver.recv_timeout(Duration::from_secs(20));
    if first.as_deref() != Ok("ready") {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "child did not get ready ({first:?}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(5..=60)));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child should have been killed");
    reader.join().unwrap();
    let mut lines = vec![Line::Ready];
    lines.extend(receiver.try_iter().map(|l| parse(&l)));
    lines
}

fn verify(path: &Path, round: usize, lines: &[Line], known: &mut Known, totals: &mut Totals) {
    let context = |what: String| format!("round {round}: {what}");

    // The file opens cleanly.
    {
        let mut db = Database::open(path)
            .unwrap_or_else(|e| panic!("{}", context(format!("redb open: {e}"))));
        assert!(
            db.check_integrity().unwrap(),
            "{}",
            context("integrity check failed".into())
        );
    }
    let file =
        StoreFile::open(path).unwrap_or_else(|e| panic!("{}", context(format!("store open: {e}"))));
    let db = file.database();
    let mirror = file.mirror();
    let outbox = mirror.outbox();
    let txn = db.begin_read().unwrap();

    // This round's operations per record, and its confirmations and acknowledgements.
    let mut ops: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    let mut confirming: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for line in lines {
        match line {
            Line::Ready => {}
            Line::Intent { name, delete, n } => {
                ops.entry(name.clone()).or_default().push(Op {
                    delete: *delete,
                    n: *n,
                    seq: None,
                });
            }
            Line::Done { name, n, seq } => {
                let op = ops
                    .get_mut(name)
                    .and_then(|v| v.iter_mut().find(|o| o.n == *n))
                    .unwrap_or_else(|| {
                        panic!("{}", context(format!("done without intent: {name} {n}")))
                    });
                op.seq = Some(*seq);
                totals.returned_ops += 1;
            }
            Line::Confirming { name, seq } => {
                confirming.entry(name.clone()).or_default().insert(*seq);
            }
            Line::Acked { name, seq } => {
                known.acked.entry(name.clone()).or_default().insert(*seq);
                totals.acks += 1;
            }
        }
    }

    let mut names: BTreeSet<String> = known.state.keys().cloned().collect();
    names.extend(ops.keys().cloned());
    let mut expected_pending = BTreeMap::new();
    for name in names {
        let rid = id(&name);
        let record = mirror.record(&txn, &rid).unwrap();
        let tombstone = mirror.tombstone(&txn, &rid).unwrap();
        let entry = outbox.entry(&txn, &rid).unwrap();
        let actual = match &record {
            Some(r) => State::Alive(n_of(r)),
            None => State::Gone,
        };
        let record_ops = ops.remove(&name).unwrap_or_default();
        let done = record_ops.iter().take_while(|o| o.seq.is_some()).count();
        assert!(
            record_ops.len() - done <= 1,
            "{}",
            context(format!(
                "{name}: more than one operation in flight: {record_ops:?}"
            ))
        );
        let before = match done {
            0 => known.state.get(&name).copied().unwrap_or(State::Gone),
            _ => record_ops[done - 1].result(),
        };
        let in_flight = record_ops.get(done);

        // Every operation that returned is there, or the one started after it.
        let from_in_flight = match in_flight {
            Some(op) if actual == op.result() && actual != before => true,
            _ => {
                assert_eq!(
                    actual,
                    before,
                    "{}",
                    context(format!(
                        "{name}: a returned operation is lost (in flight: {in_flight:?})"
                    ))
                );
                false
            }
        };
        if from_in_flight {
            totals.in_flight_committed += 1;
        }
        // The outbox version of the state found, when known. When the operation in flight would
        // leave the same state (a second delete), it may or may not have committed a newer version.
        let ambiguous = !from_in_flight && in_flight.is_some_and(|op| op.result() == actual);
        let known_seq = if from_in_flight {
            None
        } else if done > 0 {
            record_ops[done - 1].seq
        } else {
            known.pending.get(&name).copied()
        };
        let acked = known.acked.get(&name).cloned().unwrap_or_default();
        // Only deletes known to have committed leave a tombstone: those that returned, and the one
        // in flight if the state shows it.
        let committed = &record_ops[..done + usize::from(from_in_flight)];
        if committed.iter().any(|o| o.delete) {
            known.deleted_ever.insert(name.clone());
        }

        match &entry {
            Some(OutboxEntry::Pending(q)) => {
                // The entry is the record's latest state, with the record's change tag.
                match (&q.change, actual, &record) {
                    (PendingChange::Save(queued), State::Alive(_), Some(stored)) => {
                        assert_eq!(
                            queued,
                            stored,
                            "{}",
                            context(format!("{name}: entry differs from record"))
                        );
                    }
                    (PendingChange::Delete { change_tag, .. }, State::Gone, None) => {
                        let tombstone = tombstone.clone().unwrap_or_else(|| {
                            panic!(
                                "{}",
                                context(format!("{name}: pending delete without tombstone"))
                            )
                        });
                        assert_eq!(tombstone.state, TombstoneState::DeletePending);
                        assert_eq!(
                            change_tag.as_ref(),
                            tombstone.system.as_ref().map(|s| &s.change_tag),
                            "{}",
                            context(format!("{name}: delete tag differs from tombstone"))
                        );
                    }
                    other => panic!("{}", context(format!("{name}: entry {other:?} disagrees"))),
                }
                match known_seq {
                    Some(seq) if ambiguous => assert!(
                        q.seq.0 >= seq,
                        "{}",
                        context(format!("{name}: older version pending"))
                    ),
                    Some(seq) => assert_eq!(
                        q.seq,
                        ChangeSeq(seq),
                        "{}",
                        context(format!("{name}: wrong version pending"))
                    ),
                    None => {}
                }
                assert!(
                    !acked.contains(&q.seq.0),
                    "{}",
                    context(format!(
                        "{name}: acknowledged version {} is pending again",
                        q.seq
                    ))
                );
                expected_pending.insert(name.clone(), q.seq);
            }
            Some(OutboxEntry::Parked(p)) => {
                panic!(
                    "{}",
                    context(format!("{name}: nothing parks here, found {p:?}"))
                )
            }
            None => {
                // Gone from the outbox: its latest version must have been confirmed.
                let confirmed = confirming.get(&name).cloned().unwrap_or_default();
                if from_in_flight {
                    // The operation in flight committed, under a number not yet printed.
                    assert!(
                        !confirmed.is_empty(),
                        "{}",
                        context(format!(
                            "{name}: state {actual:?} left the outbox unconfirmed"
                        ))
                    );
                } else if ambiguous {
                    // Either it committed and was confirmed, or it did not commit and the earlier
                    // version (if one was pending) was acknowledged.
                    assert!(
                        !confirmed.is_empty() || known_seq.is_none_or(|s| acked.contains(&s)),
                        "{}",
                        context(format!(
                            "{name}: state {actual:?} left the outbox unconfirmed"
                        ))
                    );
                } else if let Some(seq) = known_seq {
                    assert!(
                        confirmed.contains(&seq) || acked.contains(&seq),
                        "{}",
                        context(format!("{name}: version {seq} left the outbox unconfirmed"))
                    );
                }
                match (actual, &record) {
                    (State::Alive(n), Some(stored)) => assert_eq!(
                        stored.change_tag(),
                        Some(&ChangeTag(format!("tag-{n}"))),
                        "{}",
                        context(format!("{name}: confirmed record lacks its tag"))
                    ),
                    (State::Gone, None) if known.deleted_ever.contains(&name) => {
                        let tombstone = tombstone.clone().unwrap_or_else(|| {
                            panic!(
                                "{}",
                                context(format!("{name}: deleted record lost its tombstone"))
                            )
                        });
                        assert_eq!(tombstone.state, TombstoneState::DeleteConfirmed);
                    }
                    _ => {}
                }
            }
        }
        known.state.insert(name.clone(), actual);
        match &entry {
            Some(e) => known.pending.insert(name, e.seq().0),
            None => known.pending.remove(&name),
        };
    }
    assert!(ops.is_empty());

    // The pending table and its per-record index agree.
    let all: BTreeMap<String, ChangeSeq> = outbox
        .form_batch(&txn, BatchLimits::unlimited())
        .unwrap()
        .into_changes()
        .into_iter()
        .map(|c| (c.record_id().record_name.clone(), c.seq))
        .collect();
    assert_eq!(
        all,
        expected_pending,
        "{}",
        context("pending table vs index".into())
    );
    assert_eq!(
        outbox.depth(&txn).unwrap().pending,
        all.len() as u64,
        "{}",
        context("depth".into())
    );
}
