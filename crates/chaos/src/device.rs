//! One device: an [`Engine`] over its own store file, working through its share of the plan
//! (`run`), or running to quiescence and dumping what it holds (`settle`).
//!
//! A device's directory holds its store (`store.redb`), its journal (`journal`), one vitals file
//! per process life (`vitals-PID.json`: liveness violations and the longest operation that life
//! saw, rewritten when either grows) and, after a settle, `settle.json`.

use crate::check::FinalState;
use crate::journal::{Journal, JournalError};
use crate::plan::{Change, ChangeKind, DevicePlan, PRIVATE_TYPE, PlanConfig, SHARED_TYPE, ZONE};
use rand::Rng;
use serde::{Deserialize, Serialize};
use skysync_model::{FieldValue, Record, RecordId, ZoneId};
use skysync_session::{
    Diagnostics, Engine, EngineBuilder, EngineError, HaltReason, OperationKind, SessionConfig,
    Status, SyncEvent,
};
use skysync_throttle::ThrottleConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

/// How often a device looks at its engine's diagnostics.
const LOOK: Duration = Duration::from_millis(50);

/// Why a device stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The engine could not be built or refused a local write; the inner error says why.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A file of the device's directory could not be written (check the disk).
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    fn file(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
        move |source| DeviceError::File {
            path: path.to_owned(),
            source,
        }
    }
}

/// Where a device syncs and keeps its files.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// The device's directory.
    pub dir: PathBuf,
    /// The dev server's base URL.
    pub server: String,
    /// The web auth token every device signs in with (one user: one private database).
    pub token: String,
}

impl DeviceSetup {
    /// The store file.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store.redb")
    }

    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// The dump a settle writes.
    pub fn dump(&self) -> PathBuf {
        self.dir.join("settle.json")
    }

    /// An engine builder with the chaos run's settings: quick fetches and backoffs, a short
    /// cool-down after an exhausted operation, the default resolver (three-way merge).
    pub fn builder(&self) -> Result<EngineBuilder, EngineError> {
        let zone = ZoneId::new(ZONE);
        let mut session = SessionConfig::new(vec![zone]);
        session.fetch_interval = Duration::from_millis(500);
        session.send_debounce = Duration::from_millis(20);
        session.local_retry = Duration::from_millis(100);
        session.exhausted_cool_down = Duration::from_secs(1);
        let throttle = ThrottleConfig {
            initial_rate: 40.0,
            probe_interval: Duration::from_secs(5),
            probe_requests: 20,
            transient_backoff: Duration::from_millis(50),
            transient_backoff_cap: Duration::from_millis(500),
            offline_backoff: Duration::from_millis(50),
            offline_backoff_cap: Duration::from_millis(500),
            ..ThrottleConfig::default()
        };
        Ok(Engine::builder(self.store())
            .dev_server(self.server.clone(), self.token.clone())?
            .throttle(throttle)
            .session(session))
    }
}

/// What one process life of a device saw, written to `vitals-PID.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vitals {
    /// The process.
    pub pid: u32,
    /// The engine's liveness violations so far.
    pub liveness_violations: u64,
    /// The longest one operation stayed in flight (seen every 50 ms), in ms.
    pub longest_operation_ms: u64,
    /// Its kind.
    pub longest_operation: Option<String>,
    /// The longest a save or delete took to return, in ms.
    pub longest_save_ms: u64,
}

/// How a device paces its changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Bursts of 1 to 40 changes with pauses of up to 100 ms between them.
    Bursts,
    /// This many changes per second, steadily (a soak run).
    PerSecond(f64),
}

/// `chaos-device run`: works through the device's plan from the change after the last journaled
/// one, journaling each change once its save or delete returned; then keeps syncing until the
/// process is stopped.
pub async fn run(
    setup: &DeviceSetup,
    plan: &PlanConfig,
    device: u32,
    pace: Pace,
) -> Result<(), DeviceError> {
    tokio::fs::create_dir_all(&setup.dir)
        .await
        .map_err(DeviceError::file(&setup.dir))?;
    let mut journal = Journal::open(&setup.journal()).await?;
    let engine = setup.builder()?.build().await?;
    let longest_save = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(watch_vitals(
        engine.clone(),
        setup.dir.clone(),
        longest_save.clone(),
    ));
    let mut burst = 0u32;
    for change in
        DevicePlan::new(plan, device).skip(usize::try_from(journal.next()).unwrap_or(usize::MAX))
    {
        let started = Instant::now();
        apply(&engine, &change).await?;
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        longest_save.fetch_max(took, Ordering::Relaxed);
        journal.record(change.index).await?;
        match pace {
            Pace::Bursts => {
                if burst == 0 {
                    let (size, pause) = {
                        let mut rng = rand::rng();
                        (rng.random_range(1..=40), rng.random_range(0..=100))
                    };
                    burst = size;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                burst -= 1;
            }
            Pace::PerSecond(rate) => {
                tokio::time::sleep(Duration::from_secs_f64(1.0 / rate.max(0.001))).await;
            }
        }
    }
    tracing::info!(device, "plan done; syncing until stopped");
    stopped().await;
    watcher.abort();
    engine.shutdown().await;
    Ok(())
}

/// Makes one change of the plan through the engine.
pub async fn apply(engine: &Engine, change: &Change) -> Result<(), EngineError> {
    let id = RecordId::new(ZoneId::new(ZONE), change.record.clone());
    match (change.kind, change.value()) {
        (ChangeKind::Delete, _) | (_, None) => {
            engine.delete(id).await?;
        }
        (ChangeKind::EditShared, Some(value)) => {
            // Only this device's field: a CloudKit update leaves the others as they are.
            engine
                .save(Record::new(id, SHARED_TYPE).with(change.field(), value))
                .await?;
        }
        (ChangeKind::Create | ChangeKind::Edit, Some(value)) => {
            engine
                .save(Record::new(id, PRIVATE_TYPE).with(change.field(), value))
                .await?;
        }
    }
    Ok(())
}

/// Waits for SIGTERM or ctrl-c.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Looks at the engine every 50 ms and rewrites this life's vitals file when a liveness violation
/// or a longer operation shows up.
async fn watch_vitals(engine: Engine, dir: PathBuf, longest_save: Arc<AtomicU64>) {
    let pid = std::process::id();
    let path = dir.join(format!("vitals-{pid}.json"));
    let mut vitals = Vitals {
        pid,
        ..Vitals::default()
    };
    let mut written = None;
    let mut current: Option<(u64, Instant, OperationKind)> = None;
    loop {
        tokio::time::sleep(LOOK).await;
        let Ok(d) = engine.diagnostics().await else {
            continue;
        };
        vitals.liveness_violations = vitals.liveness_violations.max(d.liveness_violations);
        match (&d.in_flight, &current) {
            (Some(op), Some((id, since, kind))) if op.batch_id == *id => {
                let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                if ms > vitals.longest_operation_ms {
                    vitals.longest_operation_ms = ms;
                    vitals.longest_operation = Some(kind.to_string());
                }
            }
            (Some(op), _) => current = Some((op.batch_id, Instant::now(), op.kind.clone())),
            (None, _) => current = None,
        }
        vitals.longest_save_ms = longest_save.load(Ordering::Relaxed);
        if written.as_ref() != Some(&vitals) {
            if let Err(error) = write_json(&path, &vitals).await {
                tracing::warn!(%error, "writing the vitals failed");
            }
            written = Some(vitals.clone());
        }
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so a reader (or a
/// kill) never sees half of it.
pub async fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DeviceError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| DeviceError::File {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let temporary = path.with_extension("tmp");
    tokio::fs::write(&temporary, text)
        .await
        .map_err(DeviceError::file(&temporary))?;
    tokio::fs::rename(&temporary, path)
        .await
        .map_err(DeviceError::file(path))
}

/// What a settle leaves in `settle.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleDump {
    /// Whether the device reached quiescence (nothing pending or in flight, no open conflict, no
    /// halt, and a fetch asked for after that found nothing new) before the timeout.
    pub settled: bool,
    /// Records this settle sent (saved or deleted on the server).
    pub sent: u64,
    /// Server changes this settle applied (changed or deleted records).
    pub fetched: u64,
    /// Conflicts this settle resolved.
    pub resolved: u64,
    /// Changes still pending.
    pub pending: u64,
    /// Parked changes, with their reasons.
    pub parked: Vec<String>,
    /// Open conflicts.
    pub open_conflicts: u64,
    /// The halt, if the engine was halted (an exhausted one is resumed at once).
    pub halt: Option<String>,
    /// The engine's liveness violations during the settle.
    pub liveness_violations: u64,
    /// The device's records.
    pub records: FinalState,
}

/// Whether the diagnostics show nothing left to do.
fn quiet(d: &Diagnostics) -> bool {
    d.status == Status::Idle
        && d.in_flight.is_none()
        && d.queue.pending == 0
        && d.open_conflicts == 0
        && d.halt.is_none()
}

/// `chaos-device settle`: runs the engine until it is quiescent (or `timeout` passes), then
/// writes what it holds to `settle.json` and stops.
pub async fn settle(setup: &DeviceSetup, timeout: Duration) -> Result<SettleDump, DeviceError> {
    let builder = setup.builder()?;
    let mut events = builder.events();
    let engine = builder.build().await?;
    let deadline = Instant::now() + timeout;
    let mut dump = SettleDump::default();
    // The last operation completed when a confirming fetch was asked for, and whether anything
    // arrived or left since.
    let mut asked: Option<u64> = None;
    let mut activity = false;
    let last = loop {
        loop {
            match events.try_recv() {
                Ok(SyncEvent::Sent { saved, deleted, .. }) => {
                    dump.sent += (saved + deleted) as u64;
                    activity = true;
                }
                Ok(SyncEvent::Fetched {
                    changed, deleted, ..
                }) if changed + deleted > 0 => {
                    dump.fetched += (changed + deleted) as u64;
                    activity = true;
                }
                Ok(SyncEvent::ConflictResolved { .. }) => {
                    dump.resolved += 1;
                    activity = true;
                }
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let d = engine.diagnostics().await?;
        match d.halt.as_ref().map(|h| &h.reason) {
            Some(HaltReason::Exhausted { .. }) => engine.resume().await?,
            Some(_) => break d,
            None => {}
        }
        if quiet(&d) {
            let last_id = d.last_completed.as_ref().map(|(op, _)| op.batch_id);
            let fetched_last = d.last_completed.as_ref().is_some_and(|(op, ok)| {
                *ok && matches!(
                    op.kind,
                    OperationKind::FetchDatabase | OperationKind::FetchZone
                )
            });
            match asked {
                Some(at) if last_id > Some(at) && fetched_last && !activity => {
                    dump.settled = true;
                    break d;
                }
                Some(at) if last_id > Some(at) => asked = None,
                Some(_) => {}
                None => {
                    asked = last_id.or(Some(0));
                    activity = false;
                    engine.sync_now();
                }
            }
        } else {
            asked = None;
        }
        if Instant::now() >= deadline {
            break d;
        }
        tokio::time::sleep(LOOK).await;
    };
    dump.pending = last.queue.pending;
    dump.parked = last
        .parked
        .iter()
        .map(|p| format!("{}: {}", p.change.record_id().record_name, p.reason))
        .collect();
    dump.open_conflicts = last.open_conflicts;
    dump.halt = last.halt.as_ref().map(|h| h.reason.to_string());
    dump.liveness_violations = last.liveness_violations;
    dump.records = records(&engine).await?;
    engine.shutdown().await;
    write_json(&setup.dump(), &dump).await?;
    Ok(dump)
}

/// Every record of the chaos zone on this device, as a final state.
pub async fn records(engine: &Engine) -> Result<FinalState, EngineError> {
    let mut state = FinalState::new();
    let mut after = None;
    loop {
        let page = engine
            .records_in_zone(ZoneId::new(ZONE), after, 500)
            .await?;
        for record in page.records {
            state.insert(record.id.record_name.clone(), fields_of(&record));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(state),
        }
    }
}

/// A record's fields as a final state holds them: strings as they are, a cleared field left out,
/// any other type spelled out (no change of the plan writes one, so the checker flags it).
pub fn fields_of(record: &Record) -> std::collections::BTreeMap<String, String> {
    record
        .fields
        .iter()
        .filter_map(|(name, field)| match &field.value {
            FieldValue::Null => None,
            FieldValue::String(s) => Some((name.clone(), s.clone())),
            other => Some((name.clone(), format!("{other:?}"))),
        })
        .collect()
}
