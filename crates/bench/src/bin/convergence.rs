//! Several devices editing the same data at once (`cargo xtask bench convergence`): 5 engines in
//! one process, each over its own redb file, signed in as the same user of one in-process dev
//! server on 127.0.0.1, make 2,000 edits in all, then sync until every device is quiescent.
//!
//! **The edits.** Before the clock starts, one device creates 20 shared records and every device
//! fetches them. Then five writers, writer `k` on device `k`, each make 400 edits, in 10 rounds of
//! 40 with a 50 ms pause after each round, so that sends, fetches and conflicts interleave with
//! editing. One edit in five (chosen by a seeded generator) writes to a shared record: writer `k`
//! reads its device's local copy, writes a value no other edit writes into its own field `d{k}`,
//! and saves the record. The others work on the writer's own records (`p{k}-{n}`): a create
//! (title and count), an edit of one (a new title and count, on the local copy) or a delete (then
//! that record is never written again).
//!
//! **Quiescent** means: on every device nothing is pending, nothing is in flight, no conflict is
//! open, it is not halted; then every device is told to fetch, and each one's fetch completes
//! while no device sent anything or fetched anything new. Until that holds, the check repeats.
//!
//! **What is checked** once quiescent:
//! - `converged`: every device's records of the zone (their fields, without system fields) equal
//!   the server's.
//! - `lost_updates`: edits whose effect is in no final state although no later edit overwrote it.
//!   Precisely: every field an edit writes has one writer (`d{k}` of a shared record is written
//!   only by writer `k`; a private record only by its writer), so the last edit of each field is
//!   never overwritten by design and must be what the server holds at the end: the last value
//!   written to each `d{k}` of each shared record, the last title and count of each private
//!   record that was not deleted, and no record for each one deleted. Each of those that the
//!   server's final state does not show is one lost update (a device that does not match the
//!   server is reported by `converged`).
//!
//! **The baseline.** `serial_s` is one device making the same 2,000 edits alone: the same five
//! writers with the same plans, rounds and pauses, all on the one device (each device holds a lock
//! across reading and saving a shared record, so that its writers do not save copies of each
//! other's reads; with one writer a device it is never contended), against a fresh dev server,
//! synced until quiescent. `engine_s` is the same for the five devices, from the first edit until
//! quiescence is confirmed; `ratio` = `engine_s / serial_s`.
//!
//! Every device uses the engine's defaults (three-way merge, notifications from the dev server's
//! courier) except a throttle that starts at 40 requests per second, so that the measurement is
//! of the engine and not of the pacing's slow start (the same for both runs).
//!
//! ```text
//! cargo run -p skysync-bench --release --bin convergence
//! ```
//!
//! JSON: `devices`, `edits`, `converged`, `lost_updates`, `engine_s`, `serial_s`, `ratio`, and
//! `conflicts_resolved` (over the five devices), `quiescence_checks` (rounds the final check
//! took), `records` (live records on the server at the end).
#![allow(clippy::print_stdout)]

use serde_json::json;
use skysync::{
    Diagnostics, Engine, FieldValue, Record, RecordId, SessionConfig, Status, SyncEvent,
    ThrottleConfig, ZoneId,
};
use skysync_bench::{round, write_report};
use skysync_devserver::dev_view::{DatabaseSnapshot, DevUser, DevView};
use skysync_devserver::{DevServer, ServerConfig};
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Devices of the concurrent run.
const DEVICES: usize = 5;
/// Writers making the edits, each with its own plan: one per device in the concurrent run, all
/// five on the one device of the serial run.
const WRITERS: usize = 5;
/// Edits in all, in each run.
const EDITS: usize = 2_000;
/// Records every device edits (one field per device).
const SHARED_RECORDS: usize = 20;
/// One edit in this many is on a shared record (20 %).
const SHARED_ONE_IN: u64 = 5;
/// Each device's edits are made in this many rounds.
const ROUNDS: usize = 10;
/// The pause after each round.
const PAUSE: Duration = Duration::from_millis(50);
/// The user every device signs in as.
const TOKEN: &str = "bench-user";
/// The container the engine's dev-server client uses.
const CONTAINER: &str = "iCloud.dev.skysync";
/// The longest a run may take before the benchmark gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(100);
/// How often diagnostics are read while waiting.
const POLL: Duration = Duration::from_millis(10);

fn zone() -> ZoneId {
    ZoneId::new("Bench")
}

fn shared_name(i: usize) -> String {
    format!("s{i:02}")
}

/// A small deterministic generator (xorshift64*): the same edits in every run.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Draw {
        Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        // `n` is small: the modulo bias is negligible for a benchmark's mix.
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One edit a device makes.
#[derive(Clone, Debug)]
enum Edit {
    /// Writes `value` into the device's field of shared record `record`.
    Shared { record: usize, value: String },
    /// Creates the device's record `name`.
    Create { name: String, title: String, n: i64 },
    /// Changes the device's record `name`.
    Update { name: String, title: String, n: i64 },
    /// Deletes the device's record `name`.
    Delete { name: String },
}

/// What the server must hold at the end, field by field (see the module docs).
#[derive(Debug, Default)]
struct Expected {
    /// (shared record, device field) → the last value written.
    shared: BTreeMap<(String, String), String>,
    /// Private record → its last title and count, or `None` once deleted.
    private: BTreeMap<String, Option<(String, i64)>>,
}

/// The `edits` edits of device `device`, and what they leave on the server.
fn plan(device: usize, edits: usize, expected: &mut Expected) -> Vec<Edit> {
    let mut draw = Draw::new(device as u64 + 1);
    let mut live: Vec<String> = Vec::new();
    let mut created = 0usize;
    let mut out = Vec::with_capacity(edits);
    for e in 0..edits {
        let value = format!("d{device}-e{e}");
        let n = i64::try_from(e).unwrap_or(i64::MAX);
        let edit = if draw.next().is_multiple_of(SHARED_ONE_IN) {
            let record = draw.below(SHARED_RECORDS);
            expected
                .shared
                .insert((shared_name(record), format!("d{device}")), value.clone());
            Edit::Shared { record, value }
        } else {
            let roll = draw.below(100);
            if live.is_empty() || roll < 30 {
                let name = format!("p{device}-{created:04}");
                created += 1;
                live.push(name.clone());
                expected
                    .private
                    .insert(name.clone(), Some((value.clone(), n)));
                Edit::Create {
                    name,
                    title: value,
                    n,
                }
            } else if roll < 85 {
                let name = live[draw.below(live.len())].clone();
                expected
                    .private
                    .insert(name.clone(), Some((value.clone(), n)));
                Edit::Update {
                    name,
                    title: value,
                    n,
                }
            } else {
                let name = live.swap_remove(draw.below(live.len()));
                expected.private.insert(name.clone(), None);
                Edit::Delete { name }
            }
        };
        out.push(edit);
    }
    out
}

/// Makes one edit on `engine`, as device `device`.
async fn apply(engine: &Engine, device: usize, edit: Edit) -> BenchResult<()> {
    match edit {
        Edit::Shared { record, value } => {
            let id = RecordId::new(zone(), shared_name(record));
            let local = engine.get(id.clone()).await?;
            let record = local.unwrap_or_else(|| Record::new(id, "Shared"));
            engine
                .save(record.with(format!("d{device}"), value))
                .await?;
        }
        Edit::Create { name, title, n } => {
            let record = Record::new(RecordId::new(zone(), name), "Note")
                .with("title", title)
                .with("n", n);
            engine.save(record).await?;
        }
        Edit::Update { name, title, n } => {
            let id = RecordId::new(zone(), name);
            let local = engine.get(id.clone()).await?;
            let record = local.unwrap_or_else(|| Record::new(id, "Note"));
            engine
                .save(record.with("title", title).with("n", n))
                .await?;
        }
        Edit::Delete { name } => {
            engine.delete(RecordId::new(zone(), name)).await?;
        }
    }
    Ok(())
}

/// One device: an engine over its own store file.
struct Device {
    engine: Engine,
}

async fn start_device(server: &DevServer, dir: &std::path::Path, n: usize) -> BenchResult<Device> {
    let config = SessionConfig::new(vec![zone()]);
    let engine = Engine::builder(dir.join(format!("device-{n}.redb")))
        .dev_server(server.base_url(), TOKEN)?
        .session(config)
        .throttle(ThrottleConfig {
            initial_rate: 40.0,
            ..ThrottleConfig::default()
        })
        .build()
        .await?;
    Ok(Device { engine })
}

/// Nothing pending, in flight or open, not halted, idle.
fn settled(d: &Diagnostics) -> bool {
    d.status == Status::Idle
        && d.in_flight.is_none()
        && d.queue.pending == 0
        && d.open_conflicts == 0
        && d.halt.is_none()
}

/// The diagnostics, failing the run on a halt or a broken liveness rule.
async fn look(device: &Device, n: usize) -> BenchResult<Diagnostics> {
    let d = device.engine.diagnostics().await?;
    if let Some(halt) = &d.halt {
        return Err(format!("device {n} halted: {}", halt.reason).into());
    }
    if !d.liveness_ok {
        return Err(format!("device {n} broke the liveness rule: {d:?}").into());
    }
    Ok(d)
}

/// Waits until `done` holds for device `n`, or fails once `deadline` passes.
async fn wait_until(
    device: &Device,
    n: usize,
    deadline: Instant,
    what: &str,
    done: impl Fn(&Diagnostics) -> bool,
) -> BenchResult<()> {
    loop {
        let d = look(device, n).await?;
        if done(&d) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("device {n} not {what} in time: {d:?}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether anything happened on a device since `events` was subscribed: a send, a fetch that
/// brought something, a resolved conflict, or events lost to lag (counted as activity).
fn activity(events: &mut broadcast::Receiver<SyncEvent>) -> bool {
    let mut any = false;
    loop {
        match events.try_recv() {
            Ok(SyncEvent::Sent { .. } | SyncEvent::ConflictResolved { .. }) => any = true,
            Ok(SyncEvent::Fetched {
                changed, deleted, ..
            }) if changed + deleted > 0 => any = true,
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(_)) => any = true,
            Err(_) => return any,
        }
    }
}

/// Syncs until every device is quiescent (see the module docs); answers how many confirming
/// rounds it took.
async fn until_quiescent(devices: &[Device], deadline: Instant) -> BenchResult<u32> {
    let mut rounds = 0;
    loop {
        rounds += 1;
        for (n, device) in devices.iter().enumerate() {
            wait_until(device, n, deadline, "settled", settled).await?;
        }
        let mut marks = Vec::with_capacity(devices.len());
        let mut events = Vec::with_capacity(devices.len());
        for (n, device) in devices.iter().enumerate() {
            events.push(device.engine.events());
            let d = look(device, n).await?;
            marks.push(d.last_completed.map(|(op, _)| op.batch_id));
        }
        for device in devices {
            device.engine.sync_now();
        }
        for (n, device) in devices.iter().enumerate() {
            let mark = marks[n];
            wait_until(device, n, deadline, "done fetching", |d| {
                settled(d)
                    && d.last_completed.as_ref().is_some_and(|(op, ok)| {
                        *ok && Some(op.batch_id) > mark
                            && matches!(op.kind.as_str(), "fetch_database" | "fetch_zone")
                    })
            })
            .await?;
        }
        let mut quiet = true;
        for receiver in &mut events {
            if activity(receiver) {
                quiet = false;
            }
        }
        if quiet {
            return Ok(rounds);
        }
    }
}

/// The fields of records by name, without system fields and nulls: what devices must agree on.
fn contents(records: &[Record]) -> BTreeMap<String, BTreeMap<String, FieldValue>> {
    records
        .iter()
        .map(|r| {
            let fields = r
                .fields
                .iter()
                .filter(|(_, f)| !matches!(f.value, FieldValue::Null))
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect();
            (r.id.record_name.clone(), fields)
        })
        .collect()
}

/// Every local record of the zone.
async fn local_records(engine: &Engine) -> BenchResult<Vec<Record>> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = engine.records_in_zone(zone(), after, 500).await?;
        all.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
    Err("more pages of local records than any run makes".into())
}

/// The server's live records of the zone, for the benchmark's user.
async fn server_records(server: &DevServer) -> BenchResult<Vec<Record>> {
    let view = DevView::new(server.base_url());
    let user: DevUser = reqwest::get(view.user_url(TOKEN)).await?.json().await?;
    let url = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user.user_record_name),
        Some(&zone().zone_name),
    );
    let snapshot: DatabaseSnapshot = reqwest::get(url).await?.json().await?;
    let mut out = Vec::new();
    for zone_snapshot in snapshot.zones {
        for wire in zone_snapshot.records {
            out.push(Record::from_wire(&zone(), &wire)?);
        }
    }
    Ok(out)
}

/// Counts the expected final values the server does not show (see the module docs).
fn lost_updates(
    expected: &Expected,
    server: &BTreeMap<String, BTreeMap<String, FieldValue>>,
) -> usize {
    let text = |record: &str, field: &str| match server.get(record).and_then(|f| f.get(field)) {
        Some(FieldValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut lost = 0;
    let mut report = |what: String| {
        lost += 1;
        if lost <= 10 {
            println!("lost update: {what}");
        }
    };
    for ((record, field), value) in &expected.shared {
        let found = text(record, field);
        if found.as_deref() != Some(value.as_str()) {
            report(format!(
                "{record}.{field}: last written {value:?}, server has {found:?}"
            ));
        }
    }
    for (record, last) in &expected.private {
        let found = server.get(record);
        let holds = match last {
            None => found.is_none(),
            Some((title, n)) => {
                text(record, "title").as_deref() == Some(title.as_str())
                    && found.and_then(|f| f.get("n")) == Some(&FieldValue::Int64(*n))
            }
        };
        if !holds {
            report(format!(
                "{record}: last edit left {last:?}, server has {found:?}"
            ));
        }
    }
    lost
}

/// What one run found.
struct Outcome {
    seconds: f64,
    converged: bool,
    lost_updates: usize,
    conflicts_resolved: usize,
    checks: u32,
    records: usize,
}

/// `devices` devices make `EDITS` edits in all against a fresh dev server and sync until
/// quiescent.
async fn run(devices: usize) -> BenchResult<Outcome> {
    let server = DevServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..ServerConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mut all = Vec::with_capacity(devices);
    for n in 0..devices {
        all.push(start_device(&server, dir.path(), n).await?);
    }

    // Setup, before the clock: the shared records exist everywhere.
    let setup_deadline = Instant::now() + RUN_LIMIT;
    for i in 0..SHARED_RECORDS {
        let record = Record::new(RecordId::new(zone(), shared_name(i)), "Shared")
            .with("created_by", "setup");
        all[0].engine.save(record).await?;
    }
    until_quiescent(&all, setup_deadline).await?;

    let mut expected = Expected::default();
    let per_writer = EDITS / WRITERS;
    let plans: Vec<Vec<Edit>> = (0..WRITERS)
        .map(|k| plan(k, per_writer, &mut expected))
        .collect();
    // One app-level lock per device around reading and saving a shared record, so that two of
    // its writers never save copies of each other's reads (uncontended with one writer a device).
    let shared_locks: Vec<Arc<tokio::sync::Mutex<()>>> = (0..devices)
        .map(|_| Arc::new(tokio::sync::Mutex::new(())))
        .collect();
    let resolved = Arc::new(AtomicUsize::new(0));
    let mut counters = Vec::with_capacity(devices);
    for device in &all {
        let mut events = device.engine.events();
        let resolved = Arc::clone(&resolved);
        counters.push(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(SyncEvent::ConflictResolved { .. }) => {
                        resolved.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }));
    }

    let started = Instant::now();
    let deadline = started + RUN_LIMIT;
    let mut editors = Vec::with_capacity(WRITERS);
    for (k, edits) in plans.into_iter().enumerate() {
        let engine = all[k % devices].engine.clone();
        let lock = Arc::clone(&shared_locks[k % devices]);
        editors.push(tokio::spawn(async move {
            let per_round = edits.len().div_ceil(ROUNDS).max(1);
            for chunk in edits.chunks(per_round) {
                for edit in chunk {
                    let _held = match edit {
                        Edit::Shared { .. } => Some(lock.lock().await),
                        _ => None,
                    };
                    apply(&engine, k, edit.clone()).await?;
                }
                tokio::time::sleep(PAUSE).await;
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(())
        }));
    }
    for editor in editors {
        editor.await??;
    }
    let checks = until_quiescent(&all, deadline).await?;
    let seconds = started.elapsed().as_secs_f64();

    let server_state = contents(&server_records(&server).await?);
    let mut converged = true;
    for (n, device) in all.iter().enumerate() {
        let local = contents(&local_records(&device.engine).await?);
        if local != server_state {
            let differing = local
                .keys()
                .chain(server_state.keys())
                .filter(|k| local.get(*k) != server_state.get(*k))
                .count();
            println!("device {n} differs from the server in {differing} records");
            converged = false;
        }
    }
    let lost = lost_updates(&expected, &server_state);
    let conflicts_resolved = resolved.load(Ordering::Relaxed);
    for counter in counters {
        counter.abort();
    }
    for device in &all {
        device.engine.shutdown().await;
    }
    server.shutdown().await?;
    Ok(Outcome {
        seconds,
        converged,
        lost_updates: lost,
        conflicts_resolved,
        checks,
        records: server_state.len(),
    })
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let concurrent = run(DEVICES).await?;
    println!(
        "{DEVICES} devices, {EDITS} edits: {:.2} s, converged {}, lost updates {}, conflicts \
         resolved {}, {} quiescence checks, {} records",
        concurrent.seconds,
        concurrent.converged,
        concurrent.lost_updates,
        concurrent.conflicts_resolved,
        concurrent.checks,
        concurrent.records,
    );
    let serial = run(1).await?;
    println!(
        "1 device, {EDITS} edits: {:.2} s, converged {}, lost updates {}",
        serial.seconds, serial.converged, serial.lost_updates,
    );
    let report = json!({
        "devices": DEVICES,
        "edits": EDITS,
        "converged": concurrent.converged,
        "lost_updates": concurrent.lost_updates,
        "engine_s": round(concurrent.seconds, 3),
        "serial_s": round(serial.seconds, 3),
        "ratio": round(concurrent.seconds / serial.seconds.max(f64::MIN_POSITIVE), 3),
        "conflicts_resolved": concurrent.conflicts_resolved,
        "quiescence_checks": concurrent.checks,
        "records": concurrent.records,
        "serial_converged": serial.converged,
        "serial_lost_updates": serial.lost_updates,
    });
    write_report("convergence", &report)?;
    Ok(())
}
