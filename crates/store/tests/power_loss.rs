//! Power-loss crash test of the store and its outbox, on a simulated disk that loses every write not
//! yet synced ([`skysync_store::power_loss`]), not only on a killed process, whose writes the page
//! cache would keep.
//!
//! Each seed runs a workload the way the engine drives the store: local saves and deletes (a few per
//! commit, as group commit makes them), fetched pages with their tokens, confirmations of batches
//! formed from the outbox (sometimes after the records were edited again), parks, requeues, and now
//! and then a zone reset, a forgotten token or a removed zone. Every step is one write transaction
//! of [`Mirror`] functions committed with `Durability::Immediate`, as the store's writer commits,
//! run synchronously on the test thread so that a seed replays exactly.
//!
//! The power is cut at a seeded I/O operation or sync (also while opening, i.e. while redb recovers
//! from the previous cut). The file a restart finds is the synced image plus, by seed, none, a
//! random part (the last piece torn) or all of the unsynced writes. The test reopens it and checks
//! the storage invariants, one function each, against a model of what must be true: every step
//! whose commit returned is there; the step in flight is there entirely or not at all. The model
//! follows a replica that runs the same steps on a disk that never loses power. Then the reopened
//! store takes a new write, and the next run goes on with the same file, as that write left it or
//! as the power loss left it.
//!
//! `cargo test` runs [`DEFAULT_SEEDS`] seeds of [`CRASHES_PER_SEED`] crashes each.
//! `SKYSYNC_POWER_LOSS_SEEDS=N` runs N seeds; `SKYSYNC_POWER_LOSS_SEED=S` replays seed S alone (a
//! failure names its seed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Durability, ReadableDatabase};
use skysync_model::{
    ChangeTag, ChangeToken, ParkReason, PendingChange, Record, RecordId, Resolution, SystemFields,
    ZoneId,
};
use skysync_queue::{Batch, BatchLimits, ChangeSeq, OutboxEntry, ParkedChange, QueuedChange};
use skysync_store::power_loss::{PowerLossDisk, UnsyncedWrites};
use skysync_store::{
    CommitReceipt, ConfirmOutcome, ConfirmedChange, DatabaseChanges, DatabaseChangesOutcome,
    FetchOutcome, FetchedPage, LocalChange, Mirror, OpenConflict, ResolveOutcome, ResolvedConflict,
    StoreConfig, StoreError, StoreFile, StoreHandle, SyncMetadata, SyncMetadataChange, Tombstone,
    TombstoneState, ZoneRemoval, ZoneReset,
};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Seeds `cargo test` runs.
const DEFAULT_SEEDS: u64 = 100;
/// Power cuts per seed, one after the other on the same file.
const CRASHES_PER_SEED: usize = 5;
/// The power goes at an I/O operation drawn from `1..=LAST_CUT_OPERATION` of each run.
const LAST_CUT_OPERATION: u64 = 300;
/// Or, in a quarter of the runs, at a sync drawn from `1..=LAST_CUT_SYNC`.
const LAST_CUT_SYNC: u64 = 25;
/// A run stops after this many steps if the power is still on (it cannot be with the cut above).
const MAX_STEPS_PER_RUN: usize = 1000;

const SEEDS_ENV: &str = "SKYSYNC_POWER_LOSS_SEEDS";
const SEED_ENV: &str = "SKYSYNC_POWER_LOSS_SEED";

/// How every step commits: as the store's writer commits.
const COMMIT_DURABILITY: Durability = Durability::Immediate;

const ZONES: [&str; 2] = ["Notes", "Lists"];
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const TYPES: [&str; 2] = ["Note", "Task"];

fn zones() -> impl Iterator<Item = ZoneId> {
    ZONES.iter().map(|z| ZoneId::new(*z))
}

/// Every record the workload touches.
fn universe() -> impl Iterator<Item = RecordId> {
    zones().flat_map(|zone| NAMES.iter().map(move |n| RecordId::new(zone.clone(), *n)))
}

// ----- the test -----

#[test]
fn the_store_survives_power_loss_at_any_point() {
    let seeds: Vec<u64> = match std::env::var(SEED_ENV) {
        Ok(seed) => vec![seed.parse().expect("SKYSYNC_POWER_LOSS_SEED is a number")],
        Err(_) => {
            let count = std::env::var(SEEDS_ENV)
                .map(|n| n.parse().expect("SKYSYNC_POWER_LOSS_SEEDS is a number"))
                .unwrap_or(DEFAULT_SEEDS);
            (0..count).collect()
        }
    };
    let started = Instant::now();
    let mut totals = Stats::default();
    for &seed in &seeds {
        let config = RunConfig::default();
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, &config))) {
            Ok(Ok(stats)) => totals.add(&stats),
            Ok(Err(failure)) => {
                panic!("power-loss seed {seed} failed: {failure}\nreplay it with {SEED_ENV}={seed}")
            }
            Err(_) => {
                panic!("power-loss seed {seed} panicked (above); replay it with {SEED_ENV}={seed}")
            }
        }
    }
    println!(
        "power loss: {} seeds, {} crashes in {:.1?}: {} steps committed, {} steps in flight at the cut \
         ({} found committed after the restart), {} cuts while opening (recovering), unsynced writes \
         lost {} times, partly kept {} times, all kept {} times; {} conflict resolutions committed",
        seeds.len(),
        totals.crashes,
        started.elapsed(),
        totals.steps,
        totals.in_flight,
        totals.in_flight_committed,
        totals.cut_while_opening,
        totals.lost,
        totals.partly_kept,
        totals.kept,
        RESOLUTIONS.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(totals.crashes >= seeds.len() * CRASHES_PER_SEED);
}

/// The test notices a lost fsync, which a process kill would not: with syncs that persist nothing,
/// the file a killed process leaves (every write kept) passes every check, and the file a power
/// loss leaves fails them.
#[test]
fn a_lost_fsync_fails_the_power_loss_check_but_not_a_process_kill() {
    for seed in 0..5 {
        let killed = RunConfig {
            syncs_ignored: true,
            writes: Some(UnsyncedWrites::Kept),
        };
        if let Err(failure) = run_seed(seed, &killed) {
            panic!("seed {seed}: a process kill should keep every write: {failure}");
        }
        let power_loss = RunConfig {
            syncs_ignored: true,
            writes: Some(UnsyncedWrites::Lost),
        };
        let failure =
            run_seed(seed, &power_loss).expect_err("lost syncs must fail the power-loss check");
        assert!(
            failure.contains("invariant 1") && failure.contains("invariant 7"),
            "seed {seed}: {failure}"
        );
    }
}

/// One commit cut at each of its I/O operations in turn: after the restart the save is there
/// entirely or not at all, whatever became of the unsynced writes. Cut at its sync, the save is
/// in the file a process kill leaves (every write kept) and not in the one a power loss leaves:
/// the loss only a power-loss test sees.
#[test]
fn a_commit_cut_at_any_operation_is_there_entirely_or_not_at_all() {
    let id = RecordId::new(ZoneId::new("Notes"), "a");
    let start = PowerLossDisk::new();
    let file = StoreFile::open_with_backend("one.redb", start.backend()).unwrap();
    commit_step(
        &file,
        &Step::Local(vec![LocalChange::Save(note(&id, "one", 10))]),
    )
    .unwrap();
    assert_eq!(
        start.unsynced_changes(),
        0,
        "a durable commit leaves nothing unsynced"
    );
    drop(file);
    let image = start.written_image();

    let mut lost_only_to_power = 0;
    for cut in 1.. {
        let disk = PowerLossDisk::with_contents(image.clone());
        let file = StoreFile::open_with_backend("one.redb", disk.backend()).unwrap();
        disk.cut_power_at(disk.operations() + cut);
        let save = Step::Local(vec![LocalChange::Save(note(&id, "two", 9000))]);
        let committed = commit_step(&file, &save).is_ok();
        drop(file);
        if committed {
            assert!(
                cut > 3,
                "a multi-page commit takes several writes and a sync"
            );
            break;
        }
        let found_text = |writes| {
            let restarted = disk.after_power_loss(writes);
            let file = StoreFile::open_with_backend("one.redb", restarted.backend())
                .unwrap_or_else(|e| panic!("cut at {cut}, {writes:?}: {e}"));
            let found = snapshot(&file).unwrap();
            let text = text_of(&found.records[&id]);
            let queued = match found.entries[&id].change() {
                PendingChange::Save(record) => text_of(record),
                other => panic!("cut at {cut}, {writes:?}: queued {other:?}"),
            };
            assert_eq!(
                text, queued,
                "cut at {cut}, {writes:?}: record and outbox disagree"
            );
            assert!(
                text == "one" || text == "two",
                "cut at {cut}, {writes:?}: {text}"
            );
            text
        };
        let lost = found_text(UnsyncedWrites::Lost);
        let kept = found_text(UnsyncedWrites::Kept);
        for seed in 0..20 {
            found_text(UnsyncedWrites::PartlyKept { seed });
        }
        if lost == "one" && kept == "two" {
            lost_only_to_power += 1;
        }
    }
    assert!(
        lost_only_to_power > 0,
        "some cut (at the sync) must lose the save to a power loss and keep it through a kill"
    );
}

/// The store actor's writer thread (group commit) answers a save only once it is durable: after a
/// power cut, the last save each of four concurrent writers got an answer for is there with its
/// outbox entry (or the one it had in flight, entirely).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_the_store_actor_acknowledged_survive_power_loss() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let disk = PowerLossDisk::new();
        let backend = disk.backend();
        let file = tokio::task::spawn_blocking(move || {
            StoreFile::open_with_backend("actor.redb", backend).unwrap()
        })
        .await
        .unwrap();
        disk.cut_power_at(disk.operations() + rng.random_range(1..=200));
        // A store whose writer failed is not restarted here (no supervisor): calls after the cut
        // wait for a new actor only this long before they are refused.
        let config = StoreConfig {
            call_timeout: std::time::Duration::from_secs(1),
        };
        let (store, _) = StoreHandle::spawn(file, config).await.unwrap();
        let mut writers = Vec::new();
        for (w, name) in NAMES.iter().enumerate() {
            let store = store.clone();
            let id = RecordId::new(ZoneId::new(ZONES[0]), *name);
            writers.push(tokio::spawn(async move {
                let mut answered = None;
                for n in 0..1000 {
                    let text = format!("w{w}-{n}");
                    match store.save(note(&id, &text, 100 * w)).await {
                        Ok(seq) => answered = Some((text, seq)),
                        Err(_) => return (id, answered, Some(text)),
                    }
                }
                (id, answered, None)
            }));
        }
        let mut outcomes = Vec::new();
        for writer in writers {
            outcomes.push(writer.await.unwrap());
        }
        // The power goes before the store closes the file (a clean close would flush it). Without
        // I/O, the planned cut never came: it goes now.
        disk.cut_power();
        store.stop().await;
        let writes = if rng.random_bool(0.5) {
            UnsyncedWrites::Lost
        } else {
            UnsyncedWrites::PartlyKept { seed: rng.random() }
        };
        let restarted = disk.after_power_loss(writes);
        let found = tokio::task::spawn_blocking(move || {
            let file = StoreFile::open_with_backend("actor.redb", restarted.backend()).unwrap();
            snapshot(&file).unwrap()
        })
        .await
        .unwrap();
        for (id, answered, in_flight) in outcomes {
            let Some((text, seq)) = answered else {
                continue;
            };
            let context = format!("seed {seed}, {writes:?}, {id}: saved {text} as {seq}");
            let record = found
                .records
                .get(&id)
                .unwrap_or_else(|| panic!("{context}: lost"));
            let entry = found
                .entries
                .get(&id)
                .unwrap_or_else(|| panic!("{context}: no entry"));
            let found_text = text_of(record);
            assert!(
                found_text == text || Some(&found_text) == in_flight.as_ref(),
                "{context}: found {found_text}"
            );
            assert!(
                entry.seq() >= seq,
                "{context}: the outbox holds {}",
                entry.seq()
            );
            assert_eq!(
                entry.change(),
                &PendingChange::Save(record.clone()),
                "{context}"
            );
        }
    }
}

/// A creation interrupted by a crash or power loss leaves at most the temporary file it was being
/// built under; the next open discards it and creates the store whole. (A cut while redb creates a
/// file on a simulated disk shows why: the half-written file is refused as corrupt at every start,
/// so `StoreFile::open` never creates the file in place.)
#[test]
fn an_interrupted_creation_leaves_nothing_that_stops_the_next_start() {
    // What a cut mid-creation leaves on the simulated disk: not a database.
    let disk = PowerLossDisk::new();
    disk.cut_power_at(2);
    assert!(StoreFile::open_with_backend("new.redb", disk.backend()).is_err());
    let half_written = disk.after_power_loss(UnsyncedWrites::Kept).written_image();
    assert!(
        StoreFile::open_with_backend(
            "new.redb",
            PowerLossDisk::with_contents(half_written.clone()).backend()
        )
        .is_err(),
        "a half-created file is refused"
    );

    // On a real directory that half-written file is only ever the temporary one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.redb");
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".creating");
    std::fs::write(&temporary, &half_written).unwrap();
    let file = StoreFile::open(&path).unwrap();
    assert!(
        !std::path::Path::new(&temporary).exists(),
        "the leftover was discarded"
    );
    let txn = file.database().begin_read().unwrap();
    assert_eq!(file.mirror().tagged_count(&txn).unwrap(), 0);
}

// ----- one seed -----

/// How a seed runs: the defaults are the real test; the others prove it can fail.
#[derive(Clone, Debug, Default)]
struct RunConfig {
    /// Syncs make nothing durable (a lost fsync).
    syncs_ignored: bool,
    /// Always this fate for the unsynced writes, instead of a seeded one.
    writes: Option<UnsyncedWrites>,
}

/// What the runs did, to show that the crashes hit every kind of moment.
#[derive(Debug, Default)]
struct Stats {
    crashes: usize,
    steps: usize,
    in_flight: usize,
    in_flight_committed: usize,
    cut_while_opening: usize,
    lost: usize,
    partly_kept: usize,
    kept: usize,
}

impl Stats {
    fn add(&mut self, s: &Stats) {
        self.crashes += s.crashes;
        self.steps += s.steps;
        self.in_flight += s.in_flight;
        self.in_flight_committed += s.in_flight_committed;
        self.cut_while_opening += s.cut_while_opening;
        self.lost += s.lost;
        self.partly_kept += s.partly_kept;
        self.kept += s.kept;
    }
}

/// Runs one seed: [`CRASHES_PER_SEED`] runs on one file, each ended by a power cut and checked
/// after the restart. Returns what a failed check found.
fn run_seed(seed: u64, config: &RunConfig) -> Result<Stats, String> {
    let mut workload = Workload::new(seed);
    let mut stats = Stats::default();
    // The file as the last restart left it. It is created with the power on: a cut while redb
    // creates a file leaves one it refuses (see `a_cut_while_creating_the_file_leaves_one_that_opens`).
    let mut image = {
        let disk = PowerLossDisk::new();
        drop(
            StoreFile::open_with_backend("power-loss.redb", disk.backend())
                .map_err(|e| format!("the new file does not open: {e}"))?,
        );
        disk.written_image()
    };
    let mut model: Option<Model> = None;
    for crash in 0..CRASHES_PER_SEED {
        let context = |what: String| format!("crash {crash}: {what}");
        let disk = PowerLossDisk::with_contents(image.clone());
        let reference_disk = PowerLossDisk::with_contents(image.clone());
        let reference = StoreFile::open_with_backend("reference.redb", reference_disk.backend())
            .map_err(|e| context(format!("the reference replica does not open: {e}")))?;
        let acked = match model.take() {
            Some(model) => model,
            None => Model::new(snapshot(&reference).map_err(context)?),
        };
        // A fixed fate is for the proofs: they cut once some steps have committed.
        if config.writes.is_none() {
            if workload.rng.random_bool(0.25) {
                disk.cut_power_at_sync(workload.rng.random_range(1..=LAST_CUT_SYNC));
            } else {
                disk.cut_power_at(workload.rng.random_range(1..=LAST_CUT_OPERATION));
            }
        }

        let (acked, in_flight) =
            match StoreFile::open_with_backend("power-loss.redb", disk.backend()) {
                Err(e) => {
                    if !disk.power_lost() {
                        return Err(context(format!(
                            "the file does not open with the power on: {e}"
                        )));
                    }
                    stats.cut_while_opening += 1;
                    (acked, None)
                }
                Ok(file) => {
                    if config.syncs_ignored {
                        disk.ignore_syncs(true);
                    }
                    let run = run_until_power_cut(
                        &mut workload,
                        &file,
                        &reference,
                        &disk,
                        acked,
                        config.writes.is_some(),
                    )
                    .map_err(context)?;
                    stats.steps += run.steps;
                    (run.acked, run.in_flight)
                }
            };
        drop(reference);
        // The session's batch in transit is gone with the machine.
        workload.in_transit = None;

        let writes = config
            .writes
            .unwrap_or_else(|| match workload.rng.random_range(0..20) {
                0..5 => UnsyncedWrites::Lost,
                // The disk got everything out before the power died (a cut at the sync).
                5..8 => UnsyncedWrites::Kept,
                _ => UnsyncedWrites::PartlyKept {
                    seed: workload.rng.random(),
                },
            });
        match writes {
            UnsyncedWrites::Lost => stats.lost += 1,
            UnsyncedWrites::PartlyKept { .. } => stats.partly_kept += 1,
            UnsyncedWrites::Kept => stats.kept += 1,
        }
        let found_image = disk.image_after_power_loss(writes);
        let restarted = PowerLossDisk::with_contents(found_image.clone());
        let mut candidates = vec![("every acknowledged step, without the one in flight", acked)];
        if let Some(after) = in_flight {
            stats.in_flight += 1;
            candidates.push(("every acknowledged step and the one in flight", after));
        }
        let (index, found_model) = check_restart(&restarted, candidates)
            .map_err(|e| context(format!("after losing unsynced writes as {writes:?}: {e}")))?;
        if index == 1 {
            stats.in_flight_committed += 1;
        }
        stats.crashes += 1;

        // The restarted store takes new writes.
        let file = StoreFile::open_with_backend("power-loss.redb", restarted.backend())
            .map_err(|e| context(format!("the restarted file does not reopen: {e}")))?;
        let step = workload.local_step();
        let outcome = commit_step(&file, &step)
            .map_err(|e| context(format!("the restarted store refuses a write: {e}")))?;
        let state = snapshot(&file).map_err(context)?;
        drop(file);
        // The next run goes on from here, or from the file as the power loss left it, so that the
        // next cut may come while redb recovers it.
        if workload.rng.random_bool(0.5) {
            model = Some(found_model.after(&step, &outcome, state));
            image = restarted.written_image();
        } else {
            model = Some(found_model);
            image = found_image;
        }
    }
    Ok(stats)
}

struct Run {
    steps: usize,
    acked: Model,
    in_flight: Option<Model>,
}

/// Runs steps on `file` and on the reference replica until the power goes.
/// Conflict resolutions committed by the workload, all seeds (to show the runs exercise them).
static RESOLUTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn run_until_power_cut(
    workload: &mut Workload,
    file: &StoreFile,
    reference: &StoreFile,
    disk: &PowerLossDisk,
    mut acked: Model,
    cut_after_steps: bool,
) -> Result<Run, String> {
    for steps in 0..MAX_STEPS_PER_RUN {
        if cut_after_steps && steps == 12 {
            disk.cut_power();
            return Ok(Run {
                steps,
                acked,
                in_flight: None,
            });
        }
        let step = workload.next_step(reference, &acked.state);
        let expected = commit_step(reference, &step)
            .map_err(|e| format!("the reference replica failed {step:?}: {e}"))?;
        if matches!(
            expected,
            StepOutcome::Resolved(ResolveOutcome::Committed { .. })
        ) {
            RESOLUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let state = snapshot(reference)?;
        let after = acked.after(&step, &expected, state);
        match commit_step(file, &step) {
            Ok(outcome) => {
                if outcome != expected {
                    return Err(format!(
                        "{step:?} did {outcome:?} where the reference did {expected:?}"
                    ));
                }
                acked = after;
            }
            Err(_) if disk.power_lost() => {
                return Ok(Run {
                    steps,
                    acked,
                    in_flight: Some(after),
                });
            }
            Err(e) => return Err(format!("{step:?} failed with the power on: {e}")),
        }
    }
    disk.cut_power();
    Ok(Run {
        steps: MAX_STEPS_PER_RUN,
        acked,
        in_flight: None,
    })
}

/// Opens the file a restart finds and checks it against each candidate model (what must be there
/// if the step in flight did not commit, and if it did). Returns the candidate that holds.
fn check_restart(
    disk: &PowerLossDisk,
    candidates: Vec<(&'static str, Model)>,
) -> Result<(usize, Model), String> {
    let found = open_and_read(disk).map_err(|e| format!("invariant 7 (the file opens): {e}"))?;
    let mut report = Vec::new();
    for (index, (name, model)) in candidates.into_iter().enumerate() {
        let violations = violations(&model, &found);
        if violations.is_empty() {
            return Ok((index, model));
        }
        report.push(format!(
            "against {name}:\n    {}",
            violations.join("\n    ")
        ));
    }
    Err(format!(
        "the restarted file breaks the invariants\n  {}",
        report.join("\n  ")
    ))
}

/// Opens the restarted file as redb (recovering it), checks its integrity, then opens it as a store
/// (format version) and reads its whole state.
fn open_and_read(disk: &PowerLossDisk) -> Result<Snapshot, String> {
    {
        let mut db = redb::Builder::new()
            .create_with_backend(disk.backend())
            .map_err(|e| format!("redb refuses it: {e}"))?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => return Err("redb's integrity check had to repair it".into()),
            Err(e) => return Err(format!("redb's integrity check failed: {e}")),
        }
    }
    let file = StoreFile::open_with_backend("power-loss.redb", disk.backend())
        .map_err(|e| format!("the store refuses it: {e}"))?;
    let txn = file.database().begin_read().map_err(|e| e.to_string())?;
    file.mirror()
        .outbox()
        .check_format(&txn)
        .map_err(|e| format!("the outbox format: {e}"))?;
    drop(txn);
    snapshot(&file)
}

// ----- steps -----

/// One write transaction of the engine.
#[derive(Clone, Debug)]
enum Step {
    /// The app's local changes, committed together (group commit).
    Local(Vec<LocalChange>),
    /// A page of a zone's changes from the server, and the zone's token after it.
    Fetch { page: FetchedPage },
    /// The server's confirmation of (part of) a batch sent.
    Confirm(Vec<ConfirmedChange>),
    /// A change the server refused for good.
    Park { id: RecordId, seq: ChangeSeq },
    /// A batch to send again first.
    Requeue(Batch),
    /// The zone is gone on the server: forget its tags, queue its records again.
    ResetZone(ZoneId),
    /// The zone was deleted remotely: drop its data and changes.
    RemoveZone(ZoneId),
    /// The zone's token expired.
    ForgetToken(ZoneId),
    /// A conflict's resolution, committed with everything it implies.
    Resolve(Box<ResolvedConflict>),
    /// What `changes/database` reported, with its token.
    DatabaseChanges(DatabaseChanges),
    /// A change to the sync metadata (ensured zones, the account, the throttle's memory).
    Meta(SyncMetadataChange),
}

/// What a step returned.
#[derive(Clone, Debug, PartialEq)]
enum StepOutcome {
    Local(CommitReceipt),
    Fetched(FetchOutcome),
    Confirmed(ConfirmOutcome),
    Parked(bool),
    Requeued(usize),
    Reset(ZoneReset),
    Removed(ZoneRemoval),
    Forgot(bool),
    Resolved(ResolveOutcome),
    Database(DatabaseChangesOutcome),
    Meta,
}

/// Runs one step in one write transaction, committed as the store's writer commits.
fn commit_step(file: &StoreFile, step: &Step) -> Result<StepOutcome, StoreError> {
    let mirror = file.mirror();
    let mut txn = file
        .database()
        .begin_write()
        .map_err(|e| mirror.storage_error(e.into()))?;
    txn.set_durability(COMMIT_DURABILITY)
        .map_err(|e| mirror.storage_error(e.into()))?;
    match apply_step(mirror, &txn, step) {
        Ok(outcome) => {
            txn.commit().map_err(|e| mirror.storage_error(e.into()))?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = txn.abort();
            Err(e)
        }
    }
}

fn apply_step(
    mirror: &Mirror,
    txn: &redb::WriteTransaction,
    step: &Step,
) -> Result<StepOutcome, StoreError> {
    let outbox = mirror.outbox();
    Ok(match step {
        Step::Local(changes) => StepOutcome::Local(mirror.commit_local(txn, changes)?),
        Step::Fetch { page } => StepOutcome::Fetched(mirror.apply_fetched(txn, page)?),
        Step::Confirm(confirmed) => StepOutcome::Confirmed(mirror.confirm_sent(txn, confirmed)?),
        Step::Park { id, seq } => {
            StepOutcome::Parked(outbox.park(txn, id, *seq, "REFUSED: simulated")?)
        }
        Step::Requeue(batch) => StepOutcome::Requeued(outbox.requeue_front(txn, batch)?),
        Step::ResetZone(zone) => StepOutcome::Reset(mirror.reset_zone(txn, zone)?),
        Step::RemoveZone(zone) => StepOutcome::Removed(mirror.remove_zone(txn, zone)?),
        Step::ForgetToken(zone) => StepOutcome::Forgot(mirror.forget_token(txn, zone)?),
        Step::Resolve(resolved) => StepOutcome::Resolved(mirror.commit_resolution(txn, resolved)?),
        Step::DatabaseChanges(changes) => {
            StepOutcome::Database(mirror.apply_database_changes(txn, changes)?)
        }
        Step::Meta(change) => {
            mirror.update_sync_metadata(txn, |meta| change.apply(meta))?;
            StepOutcome::Meta
        }
    })
}

// ----- the workload -----

/// The seeded source of steps, with the server's side of things.
struct Workload {
    rng: StdRng,
    /// The server's copies of records, as the server holds them.
    server: BTreeMap<RecordId, Record>,
    /// The server's clock: every new version and every page takes the next tick.
    clock: u64,
    /// Counts local edits, to tell them apart.
    edits: u64,
    /// A batch the session sent and has no answer for yet.
    in_transit: Option<Batch>,
    /// The last page fetched, to fetch again now and then (a replay is harmless).
    last_page: Option<FetchedPage>,
}

impl Workload {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            server: BTreeMap::new(),
            clock: 0,
            edits: 0,
            in_transit: None,
            last_page: None,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn pick_zone(&mut self) -> ZoneId {
        ZoneId::new(ZONES[self.rng.random_range(0..ZONES.len())])
    }

    fn pick_id(&mut self, zone: &ZoneId) -> RecordId {
        RecordId::new(zone.clone(), NAMES[self.rng.random_range(0..NAMES.len())])
    }

    fn next_step(&mut self, reference: &StoreFile, state: &Snapshot) -> Step {
        let roll = self.rng.random_range(0..100);
        let step = match roll {
            0..45 => None,
            45..60 => Some(self.fetch_step()),
            60..75 => self.confirm_step(reference),
            75..80 => self.park_step(),
            80..88 => self.requeue_step(reference, state),
            88..90 => Some(Step::ForgetToken(self.pick_zone())),
            90..92 => Some(Step::ResetZone(self.pick_zone())),
            92..93 => Some(Step::RemoveZone(self.pick_zone())),
            93..97 => self.resolve_step(state),
            97..98 => Some(self.database_step()),
            _ => Some(self.meta_step()),
        };
        step.unwrap_or_else(|| self.local_step())
    }

    /// The resolution of one open conflict, of a seeded kind: send the local copy over the
    /// server's, accept the server's side, or park.
    fn resolve_step(&mut self, state: &Snapshot) -> Option<Step> {
        if state.conflicts.is_empty() {
            return None;
        }
        let pick = self.rng.random_range(0..state.conflicts.len());
        let (id, open) = state.conflicts.iter().nth(pick)?;
        let entry = state.entries.get(id)?;
        let resolution = match (entry.change(), &open.server, self.rng.random_range(0..3)) {
            (PendingChange::Save(local), Some(_), 0) => Resolution::Send(local.clone()),
            (PendingChange::Save(local), None, 0) => Resolution::Recreate(local.clone()),
            (_, _, 1) => Resolution::Park {
                reason: ParkReason::Custom("simulated".into()),
            },
            _ => Resolution::AcceptServer,
        };
        // Now and then a resolution made against an older local version: it must change nothing.
        let local_seq = if self.rng.random_bool(0.1) {
            Some(ChangeSeq(entry.seq().0.saturating_sub(1)))
        } else {
            Some(entry.seq())
        };
        Some(Step::Resolve(Box::new(ResolvedConflict {
            id: id.clone(),
            server: open.server.clone(),
            local_seq,
            resolution,
        })))
    }

    /// `changes/database`: some zones changed, with a new database token.
    fn database_step(&mut self) -> Step {
        let changed = ZONES
            .iter()
            .filter(|_| self.rng.random_bool(0.5))
            .map(|z| ZoneId::new(*z))
            .collect();
        let tick = self.tick();
        Step::DatabaseChanges(DatabaseChanges {
            token: Some(ChangeToken(format!("db:{tick}"))),
            changed,
            deleted: Vec::new(),
        })
    }

    /// A change to the sync metadata that has no data of its own.
    fn meta_step(&mut self) -> Step {
        let tick = self.tick();
        Step::Meta(match self.rng.random_range(0..3) {
            0 => SyncMetadataChange::ZonesEnsured(vec![self.pick_zone()]),
            1 => SyncMetadataChange::Account(format!("_user{}", tick % 2)),
            _ => SyncMetadataChange::Pacing(skysync_model::PacingMemory {
                ceiling_per_sec: Some(tick as f64 / 100.0),
                not_before_unix_ms: Some(tick),
            }),
        })
    }

    /// One to three local saves and deletes in one commit.
    fn local_step(&mut self) -> Step {
        let count = self.rng.random_range(1..=3);
        let zone = self.pick_zone();
        let changes = (0..count)
            .map(|_| {
                let id = self.pick_id(&zone);
                if self.rng.random_bool(0.25) {
                    LocalChange::Delete(id)
                } else {
                    self.edits += 1;
                    // Mostly small records; now and then one spanning several pages.
                    let pad = if self.rng.random_bool(0.15) {
                        self.rng.random_range(4000..12_000)
                    } else {
                        self.rng.random_range(0..200)
                    };
                    let mut record = note(&id, &format!("local-{}", self.edits), pad);
                    if self.rng.random_bool(0.2) {
                        record.record_type = TYPES[1].into();
                    }
                    LocalChange::Save(record)
                }
            })
            .collect();
        Step::Local(changes)
    }

    /// A page of changes other devices made on the server (or the last page again).
    fn fetch_step(&mut self) -> Step {
        if let Some(page) = self.last_page.clone()
            && self.rng.random_bool(0.1)
        {
            return Step::Fetch { page };
        }
        let zone = self.pick_zone();
        let mut changed: BTreeMap<RecordId, Record> = BTreeMap::new();
        let mut deleted: BTreeSet<RecordId> = BTreeSet::new();
        for _ in 0..self.rng.random_range(0..=3) {
            let id = self.pick_id(&zone);
            let roll = self.rng.random_range(0..10);
            match self.server.get(&id).cloned() {
                Some(copy) if roll < 2 => {
                    // A change this device made, coming back in the feed.
                    deleted.remove(&id);
                    changed.insert(id, copy);
                }
                Some(_) if roll < 4 => {
                    self.server.remove(&id);
                    changed.remove(&id);
                    deleted.insert(id);
                }
                _ => {
                    let version = self.tick();
                    let pad = self.rng.random_range(0..300);
                    let mut copy = note(&id, &format!("server-{version}"), pad);
                    copy.system = Some(system(version));
                    self.server.insert(id.clone(), copy.clone());
                    deleted.remove(&id);
                    changed.insert(id, copy);
                }
            }
        }
        let page_time = self.tick();
        let page = FetchedPage {
            token: ChangeToken(format!("{zone}:{page_time}")),
            zone,
            changed: changed.into_values().collect(),
            deleted: deleted.into_iter().collect(),
            more_coming: self.rng.random_bool(0.3),
        };
        self.last_page = Some(page.clone());
        Step::Fetch { page }
    }

    /// The server's answer to the batch in transit (sending one first if none is): it accepts most
    /// changes; the rest stay in transit, to be parked or requeued.
    fn confirm_step(&mut self, reference: &StoreFile) -> Option<Step> {
        if self.in_transit.is_none() {
            // Sent now; edits made before the answer arrives are newer versions.
            let limit = self.rng.random_range(1..=4);
            self.in_transit = Some(form_batch(reference, limit)).filter(|b| !b.is_empty());
            if self.rng.random_bool(0.5) {
                return None;
            }
        }
        let mut batch = self.in_transit.take()?;
        let mut confirmed = Vec::new();
        let mut accepted = BTreeSet::new();
        for change in batch.changes() {
            if !self.rng.random_bool(0.75) {
                continue;
            }
            accepted.insert(change.seq);
            match &change.change {
                PendingChange::Save(record) => {
                    let version = self.tick();
                    let mut copy = record.clone();
                    copy.system = Some(system(version));
                    self.server.insert(copy.id.clone(), copy.clone());
                    confirmed.push(ConfirmedChange::Saved {
                        seq: change.seq,
                        record: copy,
                    });
                }
                PendingChange::Delete { id, .. } => {
                    self.server.remove(id);
                    confirmed.push(ConfirmedChange::Deleted {
                        seq: change.seq,
                        id: id.clone(),
                    });
                }
            }
        }
        batch.retain(|c| !accepted.contains(&c.seq));
        self.in_transit = Some(batch).filter(|b| !b.is_empty());
        Some(Step::Confirm(confirmed))
    }

    /// The server refuses one change of the batch in transit for good.
    fn park_step(&mut self) -> Option<Step> {
        let mut batch = self.in_transit.take()?;
        let change = batch.changes().first()?.clone();
        batch.retain(|c| c.seq != change.seq);
        self.in_transit = Some(batch).filter(|b| !b.is_empty());
        Some(Step::Park {
            id: change.record_id().clone(),
            seq: change.seq,
        })
    }

    /// The batch in transit failed as a whole: send it again first. Or, with none in transit, a
    /// batch from the back of the outbox jumps the line (as the halves of a split batch do).
    fn requeue_step(&mut self, reference: &StoreFile, state: &Snapshot) -> Option<Step> {
        if let Some(batch) = self.in_transit.take() {
            return Some(Step::Requeue(batch));
        }
        if state.pending.len() < 2 {
            return None;
        }
        // One zone's changes (a batch never mixes zones): it may hold fewer than the outbox.
        let mut batch = form_batch(reference, usize::MAX);
        if batch.len() < 2 {
            return None;
        }
        let keep = self.rng.random_range(1..batch.len());
        let skipped: BTreeSet<ChangeSeq> = batch.changes()[..keep].iter().map(|c| c.seq).collect();
        batch.retain(|c| !skipped.contains(&c.seq));
        Some(Step::Requeue(batch))
    }
}

fn form_batch(file: &StoreFile, limit: usize) -> Batch {
    let txn = file.database().begin_read().unwrap();
    file.mirror()
        .outbox()
        .form_batch(&txn, BatchLimits::new(limit, usize::MAX))
        .unwrap()
}

fn note(id: &RecordId, text: &str, pad: usize) -> Record {
    Record::new(id.clone(), TYPES[0])
        .with("text", text)
        .with("pad", "p".repeat(pad))
}

fn text_of(record: &Record) -> String {
    match record.get("text") {
        Some(skysync_model::FieldValue::String(s)) => s.clone(),
        other => panic!("record {} has text {other:?}", record.id),
    }
}

/// The server's system fields for version `version` of a record.
fn system(version: u64) -> SystemFields {
    SystemFields {
        change_tag: ChangeTag(format!("v{version}")),
        created: None,
        modified: None,
        deleted: false,
    }
}

/// The server version a change tag names.
fn version_of(tag: &ChangeTag) -> Option<u64> {
    tag.0.strip_prefix('v')?.parse().ok()
}

// ----- what a file holds -----

/// Everything the store's public reads say about the workload's records and zones.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    records: BTreeMap<RecordId, Record>,
    tombstones: BTreeMap<RecordId, Tombstone>,
    bases: BTreeMap<RecordId, Record>,
    entries: BTreeMap<RecordId, OutboxEntry>,
    tokens: BTreeMap<ZoneId, ChangeToken>,
    /// The pending changes in sending order (one unlimited batch).
    pending: Vec<QueuedChange>,
    parked: Vec<ParkedChange>,
    depth: (u64, u64),
    /// The records listed by type, in the order of the type index.
    by_type: BTreeMap<String, Vec<RecordId>>,
    tagged: u64,
    /// Open conflicts, by record.
    conflicts: BTreeMap<RecordId, OpenConflict>,
    /// The sync metadata, with the times of the last fetch and send reduced to whether they are set
    /// (they are wall-clock times of the commit, different in the replica).
    sync: SyncMetadata,
}

fn snapshot(file: &StoreFile) -> Result<Snapshot, String> {
    read_snapshot(file).map_err(|e| format!("reading the store failed: {e}"))
}

fn read_snapshot(file: &StoreFile) -> Result<Snapshot, StoreError> {
    let mirror = file.mirror();
    let outbox = mirror.outbox();
    let txn = file
        .database()
        .begin_read()
        .map_err(|e| mirror.storage_error(e.into()))?;
    let mut records = BTreeMap::new();
    for zone in zones() {
        // In small pages, to read through the paging too.
        let mut after = None;
        loop {
            let page = mirror.records_in_zone(&txn, &zone, after.as_ref(), 3)?;
            for record in page.records {
                records.insert(record.id.clone(), record);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let mut tombstones = BTreeMap::new();
    let mut bases = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for id in universe() {
        let record = mirror.record(&txn, &id)?;
        if record.as_ref() != records.get(&id) {
            return Err(StoreError::Corrupt {
                file: file.path().to_path_buf(),
                table: "(test)",
                detail: format!("{id} reads {record:?} alone but not so in its zone's listing"),
            });
        }
        if let Some(t) = mirror.tombstone(&txn, &id)? {
            tombstones.insert(id.clone(), t);
        }
        if let Some(b) = mirror.merge_base(&txn, &id)? {
            bases.insert(id.clone(), b);
        }
        if let Some(e) = outbox.entry(&txn, &id)? {
            entries.insert(id.clone(), e);
        }
    }
    let mut tokens = BTreeMap::new();
    for zone in zones() {
        if let Some(token) = mirror.change_token(&txn, &zone)? {
            tokens.insert(zone, token);
        }
    }
    let pending = outbox.pending(&txn, usize::MAX)?;
    let parked = outbox.parked(&txn)?;
    let depth = outbox.depth(&txn)?;
    let mut by_type = BTreeMap::new();
    for record_type in TYPES {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = mirror.records_of_type(&txn, record_type, after.as_ref(), 2)?;
            ids.extend(page.records.into_iter().map(|r| r.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        by_type.insert(record_type.to_owned(), ids);
    }
    Ok(Snapshot {
        records,
        tombstones,
        bases,
        entries,
        tokens,
        pending,
        parked,
        depth: (depth.pending, depth.parked),
        by_type,
        tagged: mirror.tagged_count(&txn)?,
        conflicts: mirror
            .open_conflicts(&txn, None, usize::MAX)?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect(),
        sync: {
            let mut sync = mirror.sync_metadata(&txn)?;
            sync.last_fetch_unix_ms = sync.last_fetch_unix_ms.map(|_| 0);
            sync.last_send_unix_ms = sync.last_send_unix_ms.map(|_| 0);
            sync
        },
    })
}

/// The newest server version of a record the store knows anywhere: its local copy's tag, its
/// merge base, its tombstone, its outbox entry.
fn known_version(state: &Snapshot, id: &RecordId) -> Option<u64> {
    let record = state.records.get(id).and_then(|r| r.change_tag().cloned());
    let base = state.bases.get(id).and_then(|r| r.change_tag().cloned());
    let tombstone = state
        .tombstones
        .get(id)
        .and_then(|t| t.system.as_ref().map(|s| s.change_tag.clone()));
    let entry = state.entries.get(id).and_then(|e| match e.change() {
        PendingChange::Save(r) => r.change_tag().cloned(),
        PendingChange::Delete { change_tag, .. } => change_tag.clone(),
    });
    let conflict = state
        .conflicts
        .get(id)
        .and_then(|c| c.server_tag().cloned());
    [record, base, tombstone, entry, conflict]
        .iter()
        .flatten()
        .filter_map(version_of)
        .max()
}

// ----- the model -----

/// What a local change the app made left: a copy (type and fields) or a delete.
#[derive(Clone, Debug, PartialEq)]
enum LocalCopy {
    Saved(Box<Record>),
    Deleted,
}

impl LocalCopy {
    /// Whether `record` holds this copy (type and fields; the system fields are the store's).
    fn holds(&self, record: &Record) -> bool {
        match self {
            LocalCopy::Saved(saved) => {
                saved.record_type == record.record_type && saved.fields == record.fields
            }
            LocalCopy::Deleted => false,
        }
    }

    fn matches(&self, change: &PendingChange) -> bool {
        match (self, change) {
            (LocalCopy::Saved(_), PendingChange::Save(record)) => self.holds(record),
            (LocalCopy::Deleted, PendingChange::Delete { .. }) => true,
            _ => false,
        }
    }
}

/// An acknowledged local change the server has not confirmed yet.
#[derive(Clone, Debug)]
struct LocalIntent {
    seq: ChangeSeq,
    copy: LocalCopy,
}

/// The last page of a zone, to check that its token is not ahead of its data.
#[derive(Clone, Debug)]
struct PageFacts {
    token: ChangeToken,
    /// The records the page changed or deleted.
    records: BTreeSet<RecordId>,
}

/// What must be true of the file after a given sequence of committed steps.
#[derive(Clone, Debug)]
struct Model {
    /// The state of a replica that ran the same steps and never lost power.
    state: Snapshot,
    /// Per record, the app's latest acknowledged local change whose version the server has not
    /// confirmed (invariant 1).
    local: BTreeMap<RecordId, LocalIntent>,
    /// Per record, the version the outbox must hold: queued and not confirmed (invariant 3).
    outstanding: BTreeMap<RecordId, ChangeSeq>,
    /// Versions the server confirmed and a committed confirmation acknowledged.
    confirmed: BTreeSet<(RecordId, ChangeSeq)>,
    /// Per zone, its last page, while its token stands (invariant 2).
    pages: BTreeMap<ZoneId, PageFacts>,
    /// Records deleted locally whose tombstone must still stand (invariant 5).
    deleted: BTreeSet<RecordId>,
}

impl Model {
    fn new(state: Snapshot) -> Self {
        Self {
            state,
            local: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            confirmed: BTreeSet::new(),
            pages: BTreeMap::new(),
            deleted: BTreeSet::new(),
        }
    }

    /// The model once `step` committed with `outcome`, leaving the replica in `state`.
    fn after(&self, step: &Step, outcome: &StepOutcome, state: Snapshot) -> Model {
        let mut next = self.clone();
        match (step, outcome) {
            (Step::Local(changes), StepOutcome::Local(receipt)) => {
                for (change, seq) in changes.iter().zip(&receipt.seqs) {
                    let id = change.record_id().clone();
                    next.outstanding.insert(id.clone(), *seq);
                    let copy = match change {
                        LocalChange::Save(record) => {
                            next.deleted.remove(&id);
                            LocalCopy::Saved(Box::new(record.clone()))
                        }
                        LocalChange::Delete(_) => {
                            next.deleted.insert(id.clone());
                            LocalCopy::Deleted
                        }
                    };
                    next.local.insert(id, LocalIntent { seq: *seq, copy });
                }
            }
            (Step::Fetch { page }, _) => {
                let records = page
                    .changed
                    .iter()
                    .map(|r| r.id.clone())
                    .chain(page.deleted.iter().cloned())
                    .collect();
                next.pages.insert(
                    page.zone.clone(),
                    PageFacts {
                        token: page.token.clone(),
                        records,
                    },
                );
            }
            (Step::Confirm(confirmed), StepOutcome::Confirmed(outcome)) => {
                for change in confirmed {
                    let (id, seq) = match change {
                        ConfirmedChange::Saved { seq, record } => (&record.id, *seq),
                        ConfirmedChange::Deleted { seq, id } => (id, *seq),
                    };
                    if !outcome.acknowledged.contains(id) {
                        continue;
                    }
                    next.confirmed.insert((id.clone(), seq));
                    if next.outstanding.get(id) == Some(&seq) {
                        next.outstanding.remove(id);
                    }
                    if next.local.get(id).is_some_and(|i| i.seq == seq) {
                        next.local.remove(id);
                    }
                }
            }
            (Step::ResetZone(zone), _) => {
                next.pages.remove(zone);
                // The zone's records without a pending change were queued again, as new versions.
                for (id, entry) in &state.entries {
                    if id.zone == *zone {
                        next.outstanding.insert(id.clone(), entry.seq());
                    }
                }
            }
            (Step::RemoveZone(zone), _) => {
                next.pages.remove(zone);
                next.local.retain(|id, _| id.zone != *zone);
                next.outstanding.retain(|id, _| id.zone != *zone);
                next.deleted.retain(|id| id.zone != *zone);
            }
            (Step::ForgetToken(zone), _) => {
                next.pages.remove(zone);
            }
            (Step::Resolve(resolved), StepOutcome::Resolved(outcome)) => {
                let id = &resolved.id;
                match (outcome, &resolved.resolution) {
                    (ResolveOutcome::Committed { queued: Some(seq) }, resolution) => {
                        next.outstanding.insert(id.clone(), *seq);
                        let copy = match resolution {
                            Resolution::Send(r) | Resolution::Recreate(r) => {
                                LocalCopy::Saved(Box::new(r.clone()))
                            }
                            _ => LocalCopy::Deleted,
                        };
                        next.local
                            .insert(id.clone(), LocalIntent { seq: *seq, copy });
                    }
                    (ResolveOutcome::Committed { queued: None }, Resolution::Park { .. }) => {}
                    (ResolveOutcome::Committed { queued: None }, _) => {
                        // The server's side was taken: the local change is gone on purpose.
                        next.outstanding.remove(id);
                        next.local.remove(id);
                        next.deleted.remove(id);
                    }
                    _ => {}
                }
            }
            (Step::DatabaseChanges(_), _) | (Step::Meta(_), _) => {}
            (Step::Park { .. } | Step::Requeue(_), _) => {}
            (step, outcome) => panic!("{step:?} cannot have returned {outcome:?}"),
        }
        // A tombstone goes once its delete was confirmed and a fetch passed it: from then on the
        // record may live again (another device re-created it).
        next.deleted.retain(|id| state.tombstones.contains_key(id));
        next.state = state;
        next
    }
}

// ----- the invariants -----

/// One check of the restarted file against the model: what it finds wrong.
type Check = fn(&Model, &Snapshot) -> Vec<String>;

/// The checks, by DESIGN.md's invariant numbers.
const CHECKS: [(&str, Check); 8] = [
    (
        "1 (local changes and their outbox entries)",
        local_changes_are_kept,
    ),
    (
        "2 (a zone's token is not ahead of its page)",
        token_is_not_ahead_of_its_page,
    ),
    (
        "3 (only confirmed changes leave the outbox)",
        only_confirmed_changes_left,
    ),
    (
        "4 (one pending change per record, the latest copy)",
        one_change_per_record,
    ),
    (
        "5 (records deleted locally stay deleted)",
        deleted_records_stay_deleted,
    ),
    (
        "6 (open conflicts beside the unchanged merge base)",
        conflicts_keep_their_base,
    ),
    ("7 (nothing is misread)", everything_reads_back),
    (
        "8 (sync metadata commits with its data)",
        sync_metadata_matches,
    ),
];

/// 6. Every open conflict is there exactly as committed, beside a pending (or parked) change, and
///    the merge base of every record with a local change is the one committed (a fetch never
///    moved it).
fn conflicts_keep_their_base(model: &Model, found: &Snapshot) -> Vec<String> {
    let expected = &model.state;
    let mut wrong = Vec::new();
    diff_maps(
        "open conflict",
        &expected.conflicts,
        &found.conflicts,
        |c| format!("{c:?}"),
        &mut wrong,
    );
    for id in found.conflicts.keys() {
        if !found.entries.contains_key(id) {
            wrong.push(format!("{id}: an open conflict without a local change"));
        }
    }
    for id in found.entries.keys() {
        if expected.bases.get(id) != found.bases.get(id) {
            wrong.push(format!(
                "{id}: merge base {:?}, committed {:?}",
                found.bases.get(id).map(brief_record),
                expected.bases.get(id).map(brief_record)
            ));
        }
    }
    wrong
}

/// 8. The sync metadata is exactly what was committed with the data it describes.
fn sync_metadata_matches(model: &Model, found: &Snapshot) -> Vec<String> {
    if model.state.sync == found.sync {
        Vec::new()
    } else {
        vec![format!(
            "sync metadata {:?}, committed {:?}",
            found.sync, model.state.sync
        )]
    }
}

fn violations(model: &Model, found: &Snapshot) -> Vec<String> {
    CHECKS
        .iter()
        .flat_map(|(name, check)| {
            check(model, found)
                .into_iter()
                .map(move |v| format!("invariant {name}: {v}"))
        })
        .collect()
}

/// 1. Every acknowledged local change is there with its outbox entry, and they agree: never one
///    without the other.
fn local_changes_are_kept(model: &Model, found: &Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, intent) in &model.local {
        match found.entries.get(id) {
            None => wrong.push(format!(
                "{id}: acknowledged change {} ({:?}) has no outbox entry",
                intent.seq,
                summary(&intent.copy)
            )),
            Some(entry) if entry.seq() != intent.seq || !intent.copy.matches(entry.change()) => {
                wrong.push(format!(
                    "{id}: the outbox holds {} {:?}, not acknowledged change {} ({:?})",
                    entry.seq(),
                    entry.change(),
                    intent.seq,
                    summary(&intent.copy)
                ));
            }
            Some(_) => {}
        }
        let record = found.records.get(id);
        let tombstone = found.tombstones.get(id);
        match &intent.copy {
            LocalCopy::Saved(_) => {
                if !record.is_some_and(|r| intent.copy.holds(r)) || tombstone.is_some() {
                    wrong.push(format!(
                        "{id}: acknowledged save {} is not the record (found {:?}, tombstone {tombstone:?})",
                        intent.seq,
                        record.map(text_of)
                    ));
                }
            }
            LocalCopy::Deleted => {
                if record.is_some()
                    || !tombstone.is_some_and(|t| t.state == TombstoneState::DeletePending)
                {
                    wrong.push(format!(
                        "{id}: acknowledged delete {} is not there (record {:?}, tombstone {tombstone:?})",
                        intent.seq,
                        record.map(text_of)
                    ));
                }
            }
        }
    }
    wrong
}

/// 2. A zone's token is the one its last committed page brought, and that page's data is there:
///    each of its records is as new as the server's copies a store that never lost power knows
///    (and there or not as in that store). The token is never ahead of the data, nor behind it.
fn token_is_not_ahead_of_its_page(model: &Model, found: &Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    for zone in zones() {
        let facts = model.pages.get(&zone);
        let token = found.tokens.get(&zone);
        if token != facts.map(|f| &f.token) {
            wrong.push(format!(
                "zone {zone}: token {:?}, where the last committed page left {:?}",
                token.map(|t| &t.0),
                facts.map(|f| &f.token.0)
            ));
            continue;
        }
        let Some(facts) = facts else { continue };
        for id in &facts.records {
            let now = (known_version(found, id), found.records.contains_key(id));
            let expected = (
                known_version(&model.state, id),
                model.state.records.contains_key(id),
            );
            if now != expected {
                wrong.push(format!(
                    "{id}: the token of its page {} is there, but not its data: (server version, \
                     record there) is {now:?}, expected {expected:?}",
                    facts.token.0
                ));
            }
        }
    }
    wrong
}

/// 3. Nothing the server did not confirm left the outbox, and nothing confirmed is pending again.
fn only_confirmed_changes_left(model: &Model, found: &Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, seq) in &model.outstanding {
        match found.entries.get(id).map(OutboxEntry::seq) {
            None => wrong.push(format!("{id}: change {seq} left the outbox unconfirmed")),
            Some(held) if held != *seq => wrong.push(format!(
                "{id}: the outbox holds change {held} where {seq} was queued last"
            )),
            Some(_) => {}
        }
    }
    for (id, entry) in &found.entries {
        let seq = entry.seq();
        if model.confirmed.contains(&(id.clone(), seq)) {
            wrong.push(format!(
                "{id}: confirmed change {seq} is in the outbox again"
            ));
        } else if !model.outstanding.contains_key(id) {
            wrong.push(format!(
                "{id}: change {seq} is in the outbox, but none is outstanding"
            ));
        }
    }
    wrong
}

/// 4. At most one pending change per record, holding the latest local copy with the record's
///    latest change tag; the outbox's tables agree with each other.
fn one_change_per_record(_model: &Model, found: &Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for change in &found.pending {
        let id = change.record_id();
        if !seen.insert(id.clone()) {
            wrong.push(format!("{id}: more than one pending change"));
        }
        if found.entries.get(id) != Some(&OutboxEntry::Pending(change.clone())) {
            wrong.push(format!(
                "{id}: pending change {} is not the record's outbox entry {:?}",
                change.seq,
                found.entries.get(id).map(OutboxEntry::seq)
            ));
        }
    }
    for parked in &found.parked {
        let id = parked.change.record_id();
        if !seen.insert(id.clone()) {
            wrong.push(format!("{id}: parked and pending, or parked twice"));
        }
        if found.entries.get(id) != Some(&OutboxEntry::Parked(parked.clone())) {
            wrong.push(format!(
                "{id}: parked change {} is not its outbox entry",
                parked.seq
            ));
        }
    }
    if seen.len() != found.entries.len() {
        wrong.push(format!(
            "{} outbox entries, {} pending or parked changes",
            found.entries.len(),
            seen.len()
        ));
    }
    let depth = (found.pending.len() as u64, found.parked.len() as u64);
    if found.depth != depth {
        wrong.push(format!("outbox depth {:?}, counted {depth:?}", found.depth));
    }
    for (id, entry) in &found.entries {
        match entry.change() {
            PendingChange::Save(queued) => {
                if found.records.get(id) != Some(queued) {
                    wrong.push(format!(
                        "{id}: the queued save {} is not the stored record",
                        entry.seq()
                    ));
                }
            }
            PendingChange::Delete { change_tag, .. } => {
                let tombstone = found.tombstones.get(id);
                let agrees = tombstone.is_some_and(|t| {
                    t.state == TombstoneState::DeletePending
                        && t.system.as_ref().map(|s| &s.change_tag) == change_tag.as_ref()
                });
                if found.records.contains_key(id) || !agrees {
                    wrong.push(format!(
                        "{id}: the queued delete {} (tag {change_tag:?}) disagrees with the record or tombstone {tombstone:?}",
                        entry.seq()
                    ));
                }
            }
        }
    }
    for (id, tombstone) in &found.tombstones {
        let queued_delete = found
            .entries
            .get(id)
            .is_some_and(|e| matches!(e.change(), PendingChange::Delete { .. }));
        if (tombstone.state == TombstoneState::DeletePending) != queued_delete {
            wrong.push(format!(
                "{id}: tombstone {:?} but queued delete: {queued_delete}",
                tombstone.state
            ));
        }
        if found.records.contains_key(id) {
            wrong.push(format!("{id}: both a record and a tombstone"));
        }
    }
    wrong
}

/// 5. No record deleted locally is back while its tombstone must stand.
fn deleted_records_stay_deleted(model: &Model, found: &Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    for id in &model.deleted {
        if let Some(record) = found.records.get(id) {
            wrong.push(format!(
                "{id}: deleted locally, but back as {:?}",
                text_of(record)
            ));
        }
        if !found.tombstones.contains_key(id) {
            wrong.push(format!("{id}: deleted locally, but its tombstone is gone"));
        }
    }
    wrong
}

/// 7. Nothing is misread: everything the store's reads return is what a store that never lost
///    power holds after the same steps (the file opening and its format were checked before).
fn everything_reads_back(model: &Model, found: &Snapshot) -> Vec<String> {
    let expected = &model.state;
    let mut wrong = Vec::new();
    diff_maps(
        "record",
        &expected.records,
        &found.records,
        brief_record,
        &mut wrong,
    );
    diff_maps(
        "tombstone",
        &expected.tombstones,
        &found.tombstones,
        |t| format!("{t:?}"),
        &mut wrong,
    );
    diff_maps(
        "merge base",
        &expected.bases,
        &found.bases,
        brief_record,
        &mut wrong,
    );
    diff_maps(
        "outbox entry",
        &expected.entries,
        &found.entries,
        brief_entry,
        &mut wrong,
    );
    diff_maps(
        "token",
        &expected.tokens,
        &found.tokens,
        |t| t.0.clone(),
        &mut wrong,
    );
    let order = |s: &Snapshot| s.pending.iter().map(|c| c.seq).collect::<Vec<_>>();
    if order(expected) != order(found) {
        wrong.push(format!(
            "sending order {:?}, expected {:?}",
            order(found),
            order(expected)
        ));
    }
    if expected.parked != found.parked {
        wrong.push("the parked changes differ".into());
    }
    if expected.depth != found.depth {
        wrong.push(format!(
            "depth {:?}, expected {:?}",
            found.depth, expected.depth
        ));
    }
    if expected.by_type != found.by_type {
        wrong.push(format!(
            "records by type {:?}, expected {:?}",
            found.by_type, expected.by_type
        ));
    }
    if expected.tagged != found.tagged {
        wrong.push(format!(
            "{} tagged records, expected {}",
            found.tagged, expected.tagged
        ));
    }
    wrong
}

fn diff_maps<K: Ord + std::fmt::Display, V: PartialEq>(
    what: &str,
    expected: &BTreeMap<K, V>,
    found: &BTreeMap<K, V>,
    brief: impl Fn(&V) -> String,
    wrong: &mut Vec<String>,
) {
    for (key, value) in expected {
        match found.get(key) {
            None => wrong.push(format!(
                "{what} {key} is missing: expected {}",
                brief(value)
            )),
            Some(v) if v != value => {
                wrong.push(format!(
                    "{what} {key} is {}, expected {}",
                    brief(v),
                    brief(value)
                ));
            }
            Some(_) => {}
        }
    }
    for (key, value) in found {
        if !expected.contains_key(key) {
            wrong.push(format!(
                "{what} {key} should not be there: {}",
                brief(value)
            ));
        }
    }
}

/// A record in a line: type, text, change tag.
fn brief_record(record: &Record) -> String {
    format!(
        "{} {:?} tag {:?}",
        record.record_type,
        text_of(record),
        record.change_tag().map(|t| &t.0)
    )
}

fn brief_entry(entry: &OutboxEntry) -> String {
    let state = match entry {
        OutboxEntry::Pending(_) => "pending",
        OutboxEntry::Parked(_) => "parked",
    };
    let change = match entry.change() {
        PendingChange::Save(record) => format!("save {}", brief_record(record)),
        PendingChange::Delete { change_tag, .. } => {
            format!("delete tag {:?}", change_tag.as_ref().map(|t| &t.0))
        }
    };
    format!("{state} {} {change}", entry.seq())
}

fn summary(copy: &LocalCopy) -> String {
    match copy {
        LocalCopy::Saved(record) => format!("save of {}", text_of(record)),
        LocalCopy::Deleted => "delete".into(),
    }
}

/// A writer thread that can no longer commit (the disk failed under it) fails its store actor, so
/// that the supervisor sees it and reopens the file, instead of leaving an actor that answers
/// "stopped" forever. The same handle answers after the restart, with what was durable.
#[tokio::test]
async fn a_failed_disk_fails_the_store_actor_and_the_supervisor_reopens_the_file() {
    use skysync_actors::{RestartPolicy, SupervisorEvent, SupervisorHandle};

    let disk = PowerLossDisk::new();
    let spec = skysync_store::power_loss::DiskUnit::new(
        disk.clone(),
        StoreConfig::default(),
        skysync_queue::QueueConfig::default(),
    );
    let store = spec.store();
    let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default())
        .await
        .unwrap();
    supervisor.start(spec).await.unwrap();
    let mut events = supervisor.subscribe();
    let kept = RecordId::new(ZoneId::new("Notes"), "kept");
    store.save(Record::new(kept.clone(), "Note")).await.unwrap();

    disk.cut_power();
    let lost = RecordId::new(ZoneId::new("Notes"), "lost");
    assert!(store.save(Record::new(lost.clone(), "Note")).await.is_err());
    // Bounded: a store that never fails would hang the test instead of failing it.
    let failed = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
        .await
        .expect("the store actor failed and the supervisor heard of it");
    match failed.unwrap() {
        SupervisorEvent::Restarting { child, reason, .. } => {
            assert_eq!(child, "store");
            assert!(reason.contains("writer failed"), "{reason}");
        }
        other => panic!("expected the store to fail, got {other:?}"),
    }
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarted { .. }
    ));
    // The same handle, a new actor over the reopened file: what was durable is there.
    assert!(store.record(kept).await.unwrap().is_some());
    assert!(store.record(lost.clone()).await.unwrap().is_none());
    store.save(Record::new(lost.clone(), "Note")).await.unwrap();
    assert!(store.record(lost).await.unwrap().is_some());
    supervisor.shutdown().await;
}
