//! One run: the world (the server, the devices, the ledger, the clock), its steps, the healing
//! and the checks.

use crate::clock::{Clock, Watchdog};
use crate::ledger::{
    Change, FinalRecord, Kind, Ledger, OWNED_FIELD, Write, contested_name, device_field,
    owned_name, shared_name,
};
use crate::network::{CONTAINER, InProcessDatabase, Link, NetworkLog, Power};
use crate::{RunStats, SimConfig, SimFailure, SimReport, TraceLine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skysync_devserver::dev_view::DatabaseSnapshot;
use skysync_devserver::faults::{FaultSpec, ItemFaultSpec};
use skysync_devserver::{InProcessServer, ServerConfig};
use skysync_model::{FieldValue, Record, RecordId, ZoneId};
use skysync_queue::{BatchLimits, ChangeSeq, QueueConfig};
use skysync_session::{Engine, EngineError, HaltReason, SessionConfig};
use skysync_store::StoreConfig;
use skysync_store::power_loss::{DiskUnit, PowerLossDisk, UnsyncedWrites};
use skysync_throttle::ThrottleConfig;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

/// The web auth token every device signs in with: one user, one private database.
const USER_TOKEN: &str = "sim-user";

/// The zone every record lives in.
const ZONE: &str = "Notes";

/// The most changes in one `records/modify`: small, so that a few records make several batches.
const BATCH_CHANGES: usize = 4;

/// How long an operation may take in real time while the clock stands still.
const REAL_TIME_LIMIT: Duration = Duration::from_secs(60);

/// How much simulated time a dead engine's shutdown may take.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(600);

/// How much simulated time passes between two looks while the devices settle.
const SETTLE_ROUND: Duration = Duration::from_secs(2);

/// How much simulated time the devices have to settle after the network healed: enough for the
/// longest cool-down an exhausted operation can reach here, several times over.
const SETTLE_LIMIT: Duration = Duration::from_secs(1800);

/// How often a planned power cut is looked for while time passes.
const CUT_WATCH: Duration = Duration::from_millis(5);

/// How long a step may let time pass: short steps interleave edits with requests in flight, long
/// ones let backoffs and periodic fetches run.
const PASSES: [Duration; 6] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

fn zone() -> ZoneId {
    ZoneId::new(ZONE)
}

/// Runs seed `seed` at the size `config` gives, on a runtime of its own (one thread, tokio's clock
/// paused), and checks the promises once the network healed. The same seed gives the same trace.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return Err(SimFailure::Harness {
                seed,
                detail: format!("could not build the runtime: {e}"),
                trace: Vec::new(),
                log: Vec::new(),
            });
        }
    };
    let outcome = runtime.block_on(simulate(seed, config.clone()));
    // Whatever is left (a task of a dead engine) is dropped, not waited for.
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome
}

/// Why a run stopped early.
enum Stop {
    Broken(Vec<String>),
    Unsettled(String),
    Harness(String),
}

fn broken(what: String) -> Stop {
    Stop::Broken(vec![what])
}

async fn simulate(seed: u64, config: SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = match World::new(seed, config).await {
        Ok(world) => world,
        Err(stop) => return Err(failure(seed, stop, Vec::new(), Vec::new())),
    };
    let played = world.play().await;
    world.stats.simulated = world.started.elapsed();
    let (returned, interrupted) = world.ledger.counts();
    world.stats.changes_returned = returned;
    world.stats.changes_interrupted = interrupted;
    world.stats.requests = world
        .server
        .request_stats()
        .snapshot()
        .users
        .values()
        .map(|u| u.totals.requests)
        .sum();
    let log = world.log.clone();
    let (trace, stats) = world.end().await;
    match played {
        Ok(()) => Ok(SimReport { seed, trace, stats }),
        Err(stop) => Err(failure(seed, stop, trace, log.lines())),
    }
}

fn failure(seed: u64, stop: Stop, trace: Vec<TraceLine>, log: Vec<String>) -> SimFailure {
    match stop {
        Stop::Broken(violations) => SimFailure::Broken {
            seed,
            violations,
            trace,
            log,
        },
        Stop::Unsettled(detail) => SimFailure::Unsettled {
            seed,
            detail,
            trace,
            log,
        },
        Stop::Harness(detail) => SimFailure::Harness {
            seed,
            detail,
            trace,
            log,
        },
    }
}

/// A running engine of one device, on its disk, with its power.
struct Life {
    engine: Engine,
    disk: PowerLossDisk,
    power: Arc<Power>,
}

/// One device: its network link (which outlives power cuts) and its running engine.
struct Device {
    link: Arc<Link>,
    life: Option<Life>,
    starts: u64,
}

/// Where a power cut meets a save.
#[derive(Clone, Copy, Debug)]
enum CutPoint {
    /// At the save's first write: nothing of it reaches the disk.
    FirstWrite,
    /// At the save's first sync: all of it was written, none of it made durable.
    FirstSync,
}

/// What a step does.
#[derive(Clone, Debug)]
enum Action {
    Edit {
        device: usize,
        name: String,
        kind: Kind,
    },
    Delete {
        device: usize,
        name: String,
    },
    Link {
        device: usize,
        up: bool,
    },
    CutPower {
        device: usize,
        unsynced: UnsyncedWrites,
    },
    CutDuringSave {
        device: usize,
        name: String,
        kind: Kind,
        at: CutPoint,
        unsynced: UnsyncedWrites,
    },
    /// The power goes at the device's `sync`-th next sync, if it syncs within `span` while the
    /// engine works on its own (a fetched page, a confirmation, a resolution committing): the
    /// moments between the transactions of one sync step.
    CutDuringSync {
        device: usize,
        sync: u64,
        span: Duration,
        unsynced: UnsyncedWrites,
    },
    Fault(Fault),
    Pass(Duration),
    SyncNow {
        device: usize,
    },
}

/// A fault to arm on the server.
#[derive(Clone, Debug)]
enum Fault {
    Request { what: String, spec: FaultSpec },
    Item { what: String, spec: ItemFaultSpec },
}

fn show_unsynced(unsynced: UnsyncedWrites) -> &'static str {
    match unsynced {
        UnsyncedWrites::Lost => "unsynced writes lost",
        UnsyncedWrites::PartlyKept { .. } => "unsynced writes partly kept",
        UnsyncedWrites::Kept => "unsynced writes kept",
    }
}

fn show_duration(span: Duration) -> String {
    if span < Duration::from_secs(1) {
        format!("{}ms", span.as_millis())
    } else {
        format!("{}s", span.as_secs())
    }
}

/// A record as compared between a device and the server: type, non-null fields, change tag.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compared {
    record: FinalRecord,
    change_tag: Option<String>,
}

fn compared(record: &Record) -> Compared {
    let fields = record
        .fields
        .iter()
        .filter_map(|(name, field)| match &field.value {
            FieldValue::Null => None,
            FieldValue::String(text) => Some((name.clone(), text.clone())),
            other => Some((name.clone(), format!("{other:?}"))),
        })
        .collect();
    Compared {
        record: FinalRecord {
            record_type: record.record_type.clone(),
            fields,
        },
        change_tag: record.change_tag().map(|t| t.0.clone()),
    }
}

/// Everything one run holds.
struct World {
    seed: u64,
    config: SimConfig,
    rng: StdRng,
    server: InProcessServer,
    router: axum::Router,
    devices: Vec<Device>,
    ledger: Ledger,
    trace: Vec<TraceLine>,
    clock: Option<Clock>,
    watchdog: Watchdog,
    started: tokio::time::Instant,
    stats: RunStats,
    log: NetworkLog,
}

impl World {
    async fn new(seed: u64, config: SimConfig) -> Result<World, Stop> {
        let watchdog = Watchdog::start()
            .map_err(|e| Stop::Harness(format!("could not start the watchdog thread: {e}")))?;
        let server = InProcessServer::start(ServerConfig::default())
            .await
            .map_err(|e| Stop::Harness(format!("the dev server would not start: {e}")))?;
        let router = server.router();
        let mut world = World {
            seed,
            rng: StdRng::seed_from_u64(seed),
            server,
            router,
            devices: (0..config.devices.max(1))
                .map(|_| Device {
                    link: Link::new(),
                    life: None,
                    starts: 0,
                })
                .collect(),
            config,
            ledger: Ledger::default(),
            trace: Vec::new(),
            clock: Some(Clock::held()),
            watchdog,
            started: tokio::time::Instant::now(),
            stats: RunStats::default(),
            log: NetworkLog::new(),
        };
        for index in 0..world.devices.len() {
            world.start_engine(index, PowerLossDisk::new()).await?;
        }
        Ok(world)
    }

    fn clock(&mut self) -> Result<&mut Clock, Stop> {
        self.clock
            .as_mut()
            .ok_or_else(|| Stop::Harness("the clock was already released".into()))
    }

    fn note(
        &mut self,
        step: Option<usize>,
        device: Option<usize>,
        action: impl Into<String>,
        outcome: impl Into<String>,
    ) {
        let line = TraceLine {
            step,
            device,
            action: action.into(),
            outcome: outcome.into(),
        };
        self.log.push(format!("STEP {line}"));
        self.trace.push(line);
    }

    /// Runs `work` while the clock stands still, bounded in real time.
    async fn bounded<F: Future>(&self, what: &str, work: F) -> Result<F::Output, Stop> {
        self.watchdog
            .bound(REAL_TIME_LIMIT, work)
            .await
            .ok_or_else(|| {
                Stop::Harness(format!(
                    "{what} did not finish within {REAL_TIME_LIMIT:?} of real time while the \
                     clock stood still (it waits for a timer, or never ends)"
                ))
            })
    }

    fn life(&self, device: usize) -> Result<&Life, Stop> {
        self.devices
            .get(device)
            .and_then(|d| d.life.as_ref())
            .ok_or_else(|| Stop::Harness(format!("device {device} has no running engine")))
    }

    /// Starts device `index`'s engine on `disk` (a fresh one, or what a power cut left).
    async fn start_engine(&mut self, index: usize, disk: PowerLossDisk) -> Result<(), Stop> {
        if self.config.lying_disks {
            disk.ignore_syncs(true);
        }
        let Some(device) = self.devices.get_mut(index) else {
            return Err(Stop::Harness(format!("there is no device {index}")));
        };
        device.starts += 1;
        let restart = device.starts > 1;
        let power = Power::new();
        let limits = BatchLimits::new(BATCH_CHANGES, BatchLimits::DEFAULT_MAX_BYTES);
        let unit = DiskUnit::new(
            disk.clone(),
            StoreConfig::default(),
            QueueConfig {
                limits,
                ..QueueConfig::default()
            },
        );
        let (store, queue) = (unit.store(), unit.queue());
        let database = InProcessDatabase::new(
            self.router.clone(),
            USER_TOKEN,
            device.link.clone(),
            power.clone(),
        )
        .logging(format!("d{index}.{}", device.starts), self.log.clone());
        let throttle_seed = self
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((index as u64) << 32)
            .wrapping_add(device.starts);
        let built = Engine::builder(format!("sim-device-{index}.redb"))
            .store(store, queue, unit)
            .transport(database)
            .session(session_config(limits))
            .throttle(throttle_config(throttle_seed))
            .build();
        let engine = self
            .bounded(&format!("starting device {index}'s engine"), built)
            .await?
            .map_err(|e| {
                if restart {
                    broken(format!(
                        "device {index} could not start again after its power cut: {e}"
                    ))
                } else {
                    Stop::Harness(format!("device {index}'s engine would not start: {e}"))
                }
            })?;
        if let Some(device) = self.devices.get_mut(index) {
            device.life = Some(Life {
                engine,
                disk,
                power,
            });
        }
        Ok(())
    }

    async fn play(&mut self) -> Result<(), Stop> {
        for step in 0..self.config.steps {
            let action = self.choose();
            self.act(step, action).await?;
        }
        self.heal().await?;
        self.check().await
    }

    fn random_unsynced(&mut self) -> UnsyncedWrites {
        match self.rng.random_range(0..3u32) {
            0 => UnsyncedWrites::Lost,
            1 => UnsyncedWrites::PartlyKept {
                seed: self.rng.random(),
            },
            _ => UnsyncedWrites::Kept,
        }
    }

    /// A record device `device` may edit, with its kind (`None` if the run has no records).
    fn random_record(&mut self, device: usize) -> Option<(String, Kind)> {
        let c = &self.config;
        let (shared, owned, contested) = (c.shared_records, c.owned_records, c.contested_records);
        let total = shared + owned + contested;
        if total == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..total);
        Some(if pick < shared {
            (shared_name(pick), Kind::Shared)
        } else if pick < shared + owned {
            (owned_name(device, pick - shared), Kind::Owned { device })
        } else {
            (contested_name(pick - shared - owned), Kind::Contested)
        })
    }

    /// The next step, from the seed alone (never from what the engines did).
    fn choose(&mut self) -> Action {
        let device = self.rng.random_range(0..self.devices.len());
        let roll = self.rng.random_range(0..100u32);
        let (shared, owned, contested) = (
            self.config.shared_records,
            self.config.owned_records,
            self.config.contested_records,
        );
        let pass = |rng: &mut StdRng| Action::Pass(PASSES[rng.random_range(0..PASSES.len())]);
        match roll {
            0..22 if shared > 0 => Action::Edit {
                device,
                name: shared_name(self.rng.random_range(0..shared)),
                kind: Kind::Shared,
            },
            22..36 if owned > 0 => Action::Edit {
                device,
                name: owned_name(device, self.rng.random_range(0..owned)),
                kind: Kind::Owned { device },
            },
            36..42 if owned > 0 => Action::Delete {
                device,
                name: owned_name(device, self.rng.random_range(0..owned)),
            },
            42..50 if contested > 0 => Action::Edit {
                device,
                name: contested_name(self.rng.random_range(0..contested)),
                kind: Kind::Contested,
            },
            50..54 if contested > 0 => Action::Delete {
                device,
                name: contested_name(self.rng.random_range(0..contested)),
            },
            54..60 => Action::Link {
                device,
                up: !self.devices[device].link.is_up(),
            },
            60..62 => Action::CutPower {
                device,
                unsynced: self.random_unsynced(),
            },
            62..65 => match self.random_record(device) {
                Some((name, kind)) => {
                    let at = if self.rng.random_bool(0.5) {
                        CutPoint::FirstWrite
                    } else {
                        CutPoint::FirstSync
                    };
                    Action::CutDuringSave {
                        device,
                        name,
                        kind,
                        at,
                        unsynced: self.random_unsynced(),
                    }
                }
                None => pass(&mut self.rng),
            },
            65..72 => Action::Fault(self.random_fault(device)),
            72..76 if self.config.cuts_during_sync => Action::CutDuringSync {
                device,
                sync: self.rng.random_range(1..=6),
                span: PASSES[self.rng.random_range(0..PASSES.len())],
                unsynced: self.random_unsynced(),
            },
            96.. => Action::SyncNow { device },
            _ => pass(&mut self.rng),
        }
    }

    fn random_fault(&mut self, device: usize) -> Fault {
        let count = |rng: &mut StdRng, most: u32| rng.random_range(1..=most);
        let request = |what: String, json: serde_json::Value| match serde_json::from_value(json) {
            Ok(spec) => Fault::Request { what, spec },
            // Every spec below is well-formed; a typo would show as this fault in the trace.
            Err(e) => Fault::Request {
                what: format!("(unbuildable fault: {e})"),
                spec: FaultSpec {
                    operation: "none".into(),
                    count: 1,
                    status: None,
                    server_error_code: None,
                    reason: None,
                    retry_after: None,
                    redirect_url: None,
                    delay_ms: Some(0),
                    drop_connection: false,
                    html_body: false,
                    truncated_json: false,
                    garbage_body: false,
                },
            },
        };
        // The next `n` requests of `operation` (`*`: any) answer the server error `code`.
        let server_error = |operation: &str, code: &str, n: u32| {
            let who = if operation == "*" {
                "every operation"
            } else {
                operation
            };
            request(
                format!("{who} answers {code} x{n}"),
                serde_json::json!({"operation": operation, "count": n, "serverErrorCode": code}),
            )
        };
        match self.rng.random_range(0..10u32) {
            0 => server_error("records/modify", "TRY_AGAIN_LATER", count(&mut self.rng, 3)),
            1 => server_error("*", "INTERNAL_ERROR", count(&mut self.rng, 2)),
            2 => {
                let after = count(&mut self.rng, 3);
                request(
                    format!("every operation answers THROTTLED retryAfter {after}s x1"),
                    serde_json::json!({"operation": "*", "count": 1,
                        "serverErrorCode": "THROTTLED", "retryAfter": after}),
                )
            }
            3 => {
                let n = count(&mut self.rng, 2);
                request(
                    format!("records/modify runs, its answer is lost x{n}"),
                    serde_json::json!({"operation": "records/modify", "count": n,
                        "dropConnection": true}),
                )
            }
            4 => request(
                "changes/zone runs, its answer is lost x1".into(),
                serde_json::json!({"operation": "changes/zone", "dropConnection": true}),
            ),
            5 => request(
                "every operation answers an HTML page x1".into(),
                serde_json::json!({"operation": "*", "htmlBody": true}),
            ),
            6 => {
                let n = count(&mut self.rng, 3);
                let ms = self.rng.random_range(100..=3000u64);
                request(
                    format!("every operation answers after {ms}ms x{n}"),
                    serde_json::json!({"operation": "*", "count": n, "delayMs": ms}),
                )
            }
            7 => server_error("changes/zone", "CHANGE_TOKEN_EXPIRED", 1),
            8 => server_error("changes/database", "CHANGE_TOKEN_EXPIRED", 1),
            _ => {
                let name = self
                    .random_record(device)
                    .map_or_else(|| shared_name(0), |(name, _)| name);
                Fault::Item {
                    what: format!("the next change of {name} answers TRY_AGAIN_LATER x1"),
                    spec: ItemFaultSpec {
                        record_name: Some(name),
                        zone_name: Some(ZONE.into()),
                        count: 1,
                        server_error_code: skysync_model::ServerErrorCode::TryAgainLater,
                        reason: None,
                        retry_after: None,
                    },
                }
            }
        }
    }

    async fn act(&mut self, step: usize, action: Action) -> Result<(), Stop> {
        let at = Some(step);
        match action {
            Action::Edit { device, name, kind } => {
                let field = field_of(kind, device);
                let outcome = self.edit(step, device, &name, kind, None).await?;
                self.note(
                    at,
                    Some(device),
                    format!("edit {name}.{field}=v{step}"),
                    outcome,
                );
            }
            Action::Delete { device, name } => {
                let engine = self.life(device)?.engine.clone();
                let id = RecordId::new(zone(), name.clone());
                let returned = self.write(device, engine.delete(id), None).await?;
                self.ledger.record(
                    &name,
                    Write {
                        step,
                        device,
                        change: Change::Delete,
                        returned,
                        blind: false,
                        carried: BTreeMap::new(),
                    },
                );
                self.note(at, Some(device), format!("delete {name}"), "ok");
            }
            Action::Link { device, up } => {
                if let Some(d) = self.devices.get(device) {
                    d.link.set_up(up);
                }
                let what = if up { "network up" } else { "network down" };
                self.note(at, Some(device), what, "ok");
            }
            Action::CutPower { device, unsynced } => {
                self.cut_and_restart(device, unsynced).await?;
                self.note(
                    at,
                    Some(device),
                    format!("power cut ({})", show_unsynced(unsynced)),
                    "restarted",
                );
            }
            Action::CutDuringSave {
                device,
                name,
                kind,
                at: point,
                unsynced,
            } => {
                let field = field_of(kind, device);
                let outcome = self.edit(step, device, &name, kind, Some(point)).await?;
                self.cut_and_restart(device, unsynced).await?;
                let place = match point {
                    CutPoint::FirstWrite => "its first write",
                    CutPoint::FirstSync => "its first sync",
                };
                self.note(
                    at,
                    Some(device),
                    format!(
                        "edit {name}.{field}=v{step}, power cut at {place} ({})",
                        show_unsynced(unsynced)
                    ),
                    format!("{outcome}, restarted"),
                );
            }
            Action::Fault(fault) => {
                let faults = self.server.faults();
                let (what, armed) = match fault {
                    Fault::Request { what, spec } => (what, faults.arm(spec).map(|_| ())),
                    Fault::Item { what, spec } => (what, faults.arm_item(spec).map(|_| ())),
                };
                armed.map_err(|e| Stop::Harness(format!("the fault `{what}` was refused: {e}")))?;
                self.stats.faults_armed += 1;
                self.note(at, None, format!("fault: {what}"), "armed");
            }
            Action::CutDuringSync {
                device,
                sync,
                span,
                unsynced,
            } => {
                let disk = self.life(device)?.disk.clone();
                let planned = disk.syncs() + sync;
                disk.cut_power_at_sync(planned);
                // Time passes in slices, so that the machine is off (network too) right after
                // its disk.
                let mut passed = Duration::ZERO;
                while passed < span && !disk.power_lost() {
                    let slice = CUT_WATCH.min(span - passed);
                    self.clock()?.pass(slice).await;
                    passed += slice;
                }
                if disk.power_lost() {
                    self.cut_and_restart(device, unsynced).await?;
                    self.note(
                        at,
                        Some(device),
                        format!(
                            "power cut at its sync +{sync}, {} in ({})",
                            show_duration(passed),
                            show_unsynced(unsynced)
                        ),
                        "restarted",
                    );
                } else {
                    // Disarmed: a sync that far off never comes.
                    disk.cut_power_at_sync(u64::MAX);
                    self.note(
                        at,
                        Some(device),
                        format!(
                            "power cut planned at its sync +{sync} within {}",
                            show_duration(span)
                        ),
                        "not reached",
                    );
                }
            }
            Action::Pass(span) => {
                self.clock()?.pass(span).await;
                self.note(at, None, format!("let {} pass", show_duration(span)), "ok");
            }
            Action::SyncNow { device } => {
                self.life(device)?.engine.sync_now();
                self.note(at, Some(device), "sync now", "ok");
            }
        }
        Ok(())
    }

    /// Device `device` edits its field of record `name` (read, change, save), the power cut at
    /// `cut` if given. The outcome: `ok`, or `cut` when the save did not return before the cut.
    async fn edit(
        &mut self,
        step: usize,
        device: usize,
        name: &str,
        kind: Kind,
        cut: Option<CutPoint>,
    ) -> Result<&'static str, Stop> {
        let engine = self.life(device)?.engine.clone();
        let store = engine.components().store;
        let id = RecordId::new(zone(), name);
        let before = self.writes_committed(&store).await?;
        let local = self
            .bounded("reading a record", engine.get(id.clone()))
            .await?
            .map_err(|e| broken(format!("device {device} could not read {name}: {e}")))?;
        let blind = local.is_none();
        let read = local.as_ref().map(compared);
        self.log.push(format!(
            "d{device} reads {name}: {}",
            read.as_ref().map_or_else(
                || "nothing".to_owned(),
                |r| format!(
                    "{:?}@{}",
                    r.record.fields,
                    r.change_tag.clone().unwrap_or_default()
                )
            )
        ));
        let mut record = local.unwrap_or_else(|| Record::new(id, kind.record_type()));
        let value = format!("v{step}");
        let field = field_of(kind, device);
        record.set(field.clone(), value.clone());
        let returned = if cut.is_some() {
            // The store dies with the save: whether anything landed in between is asked first.
            let raced = self.writes_committed(&store).await? > before;
            (self.write(device, engine.save(record), cut).await?, raced)
        } else {
            let returned = self.write(device, engine.save(record), cut).await?;
            // The save itself is one write; any other in the window may have changed the record.
            (returned, self.writes_committed(&store).await? > before + 1)
        };
        let (returned, raced) = returned;
        let carried = match (&read, raced) {
            (Some(read), true) => read
                .record
                .fields
                .iter()
                .filter(|(name, _)| **name != field)
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        if !carried.is_empty() {
            self.stats.raced_edits += 1;
        }
        self.ledger.record(
            name,
            Write {
                step,
                device,
                change: Change::Save(value),
                returned,
                blind,
                carried,
            },
        );
        Ok(if returned { "ok" } else { "cut" })
    }

    /// How many writes device's store has committed or failed so far (a count that moves whenever
    /// the engine writes anything).
    async fn writes_committed(&self, store: &skysync_store::StoreHandle) -> Result<u64, Stop> {
        let stats = self
            .bounded("reading the store's writer counts", store.writer_stats())
            .await?
            .map_err(|e| broken(format!("a store did not answer: {e}")))?;
        Ok(stats.committed_operations + stats.failed_operations)
    }

    /// Runs a local write (save or delete) of device `device`, the power cut at `cut` if given.
    /// True if it returned `Ok` with the power on (durable: it must count).
    async fn write<F>(
        &mut self,
        device: usize,
        write: F,
        cut: Option<CutPoint>,
    ) -> Result<bool, Stop>
    where
        F: Future<Output = Result<ChangeSeq, EngineError>>,
    {
        let disk = self.life(device)?.disk.clone();
        let Some(point) = cut else {
            return match self.bounded("a local write", write).await? {
                Ok(_) => Ok(true),
                Err(e) => Err(broken(format!(
                    "device {device}: a local write failed on a powered disk: {e}"
                ))),
            };
        };
        // The cut is placed at the next write or sync of the disk: the write's own commit or one
        // before it, so the write cannot return before the power goes.
        match point {
            CutPoint::FirstWrite => disk.cut_power_at(disk.operations() + 1),
            CutPoint::FirstSync => disk.cut_power_at_sync(disk.syncs() + 1),
        }
        let raced = self
            .bounded("a local write during a power cut", async {
                tokio::select! {
                    biased;
                    result = write => Some(result),
                    () = power_gone(&disk) => None,
                }
            })
            .await?;
        let returned = matches!(raced, Some(Ok(_))) && !disk.power_lost();
        // Whatever happened, the machine is off from here on.
        disk.cut_power();
        Ok(returned)
    }

    /// Cuts device `device`'s power (if the disk still has it), keeps what the disk would hold after
    /// the cut with `unsynced` deciding the writes not yet synced, drops the engine and starts a new
    /// one on that disk.
    async fn cut_and_restart(
        &mut self,
        device: usize,
        unsynced: UnsyncedWrites,
    ) -> Result<(), Stop> {
        let Some(life) = self.devices.get_mut(device).and_then(|d| d.life.take()) else {
            return Err(Stop::Harness(format!(
                "device {device} has no running engine"
            )));
        };
        // Nothing crosses the network from the dead machine, and nothing reaches its disk.
        life.power.cut();
        life.disk.cut_power();
        let image = life.disk.after_power_loss(unsynced);
        self.stats.power_cuts += 1;
        // The dead engine's tasks are stopped (the machine is off); its shutdown may need timers.
        let engine = life.engine;
        let stopped = self
            .clock()?
            .run_in_time(SHUTDOWN_LIMIT, engine.shutdown())
            .await;
        if stopped.is_none() {
            return Err(Stop::Harness(format!(
                "device {device}'s engine did not stop within {SHUTDOWN_LIMIT:?} after its power cut"
            )));
        }
        drop(engine);
        self.start_engine(device, image).await
    }

    /// Clears every fault, brings every device online, and lets time pass until every device is
    /// quiet and holds what the server holds.
    async fn heal(&mut self) -> Result<(), Stop> {
        let faults = self.server.faults();
        faults.clear();
        faults.clear_items();
        for device in &self.devices {
            device.link.set_up(true);
        }
        self.note(
            None,
            None,
            "heal: faults cleared, every device online",
            "ok",
        );
        let mut waited = Duration::ZERO;
        loop {
            for device in &self.devices {
                if let Some(life) = &device.life {
                    life.engine.sync_now();
                }
            }
            self.clock()?.pass(SETTLE_ROUND).await;
            waited += SETTLE_ROUND;
            match self.settled().await? {
                None => break,
                Some(why) if waited >= SETTLE_LIMIT => {
                    return Err(Stop::Unsettled(format!(
                        "after {}s of simulated time: {why}",
                        waited.as_secs()
                    )));
                }
                Some(_) => {}
            }
        }
        self.note(None, None, "wait until every device is quiet", "settled");
        Ok(())
    }

    /// `None` when every device is quiet and equal to the server; else what is not yet.
    async fn settled(&mut self) -> Result<Option<String>, Stop> {
        for index in 0..self.devices.len() {
            let engine = self.life(index)?.engine.clone();
            let d = self
                .bounded("diagnostics", engine.diagnostics())
                .await?
                .map_err(|e| broken(format!("device {index} does not answer: {e}")))?;
            if let Some(halt) = &d.halt
                && !matches!(halt.reason, HaltReason::Exhausted { .. })
            {
                return Err(broken(format!(
                    "device {index} halted and will not resume by itself: {}",
                    halt.reason
                )));
            }
            if d.queue.pending > 0 || d.queue.parked > 0 || d.open_conflicts > 0 || d.halt.is_some()
            {
                return Ok(Some(format!(
                    "device {index} is {} with {} pending, {} parked, {} open conflicts{}",
                    d.status,
                    d.queue.pending,
                    d.queue.parked,
                    d.open_conflicts,
                    d.halt
                        .as_ref()
                        .map(|h| format!(", halted: {}", h.reason))
                        .unwrap_or_default()
                )));
            }
        }
        let server = self.server_records().await?;
        for index in 0..self.devices.len() {
            let local = self.device_records(index).await?;
            if let Some(difference) = first_difference(&local, &server) {
                return Ok(Some(format!(
                    "device {index} differs from the server: {difference}"
                )));
            }
        }
        Ok(None)
    }

    /// The final checks: liveness on every device, every device equal to the server, and the
    /// server's records as the ledger allows.
    async fn check(&mut self) -> Result<(), Stop> {
        let mut violations = Vec::new();
        for index in 0..self.devices.len() {
            let engine = self.life(index)?.engine.clone();
            let d = self
                .bounded("diagnostics", engine.diagnostics())
                .await?
                .map_err(|e| broken(format!("device {index} does not answer: {e}")))?;
            if !d.liveness_ok || d.liveness_violations > 0 {
                violations.push(format!(
                    "device {index} broke the liveness rule {} time(s)",
                    d.liveness_violations
                ));
            }
        }
        let server = self.server_records().await?;
        for index in 0..self.devices.len() {
            let local = self.device_records(index).await?;
            if let Some(difference) = first_difference(&local, &server) {
                violations.push(format!(
                    "device {index} differs from the server: {difference}"
                ));
            }
        }
        let state: BTreeMap<String, FinalRecord> = server
            .into_iter()
            .map(|(name, c)| (name, c.record))
            .collect();
        self.stats.records_at_end = state.len();
        violations.extend(self.ledger.violations(&state, self.devices.len()));
        if violations.is_empty() {
            self.note(None, None, "check the promises", "ok");
            Ok(())
        } else {
            self.note(None, None, "check the promises", "BROKEN");
            Err(Stop::Broken(violations))
        }
    }

    /// The server's live records of the zone, through the dev server's view inside.
    async fn server_records(&self) -> Result<BTreeMap<String, Compared>, Stop> {
        let user = skysync_devserver::auth::web_token_user(USER_TOKEN);
        let uri = format!("/_dev/records/{CONTAINER}/development/private?user={user}&zone={ZONE}");
        let request = axum::http::Request::get(uri)
            .body(axum::body::Body::empty())
            .map_err(|e| Stop::Harness(format!("the records request could not be built: {e}")))?;
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| Stop::Harness(format!("the server's records could not be read: {e}")))?;
        let snapshot: DatabaseSnapshot = serde_json::from_slice(&body)
            .map_err(|e| Stop::Harness(format!("the server's records did not parse: {e}")))?;
        let mut out = BTreeMap::new();
        for zone_snapshot in snapshot
            .zones
            .iter()
            .filter(|z| z.zone_name == ZONE && !z.deleted)
        {
            for wire in &zone_snapshot.records {
                let record = Record::from_wire(&zone(), wire)
                    .map_err(|e| Stop::Harness(format!("a server record did not parse: {e}")))?;
                out.insert(record.id.record_name.clone(), compared(&record));
            }
        }
        Ok(out)
    }

    /// Device `index`'s records of the zone.
    async fn device_records(&self, index: usize) -> Result<BTreeMap<String, Compared>, Stop> {
        let engine = self.life(index)?.engine.clone();
        let mut out = BTreeMap::new();
        let mut after = None;
        // Bounded: each page moves `after` forward through a finite zone.
        for _ in 0..10_000 {
            let page = self
                .bounded(
                    "reading records",
                    engine.records_in_zone(zone(), after, 500),
                )
                .await?
                .map_err(|e| broken(format!("device {index} could not list its records: {e}")))?;
            for record in &page.records {
                out.insert(record.id.record_name.clone(), compared(record));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
        Err(Stop::Harness(format!(
            "device {index}'s records never ended"
        )))
    }

    /// Stops every engine, lets the clock go and closes the server; the trace and the counts.
    async fn end(mut self) -> (Vec<TraceLine>, RunStats) {
        let engines: Vec<Engine> = self
            .devices
            .iter_mut()
            .filter_map(|d| d.life.take())
            .map(|life| {
                life.power.cut();
                life.engine
            })
            .collect();
        if let Some(mut clock) = self.clock.take() {
            for engine in engines {
                let _ = clock.run_in_time(SHUTDOWN_LIMIT, engine.shutdown()).await;
            }
            clock.finish().await;
        }
        let _ = self.server.close().await;
        (self.trace, self.stats)
    }
}

fn field_of(kind: Kind, device: usize) -> String {
    match kind {
        Kind::Owned { .. } => OWNED_FIELD.to_owned(),
        Kind::Shared | Kind::Contested => device_field(device),
    }
}

/// Returns once the disk has lost its power (the machine is off).
async fn power_gone(disk: &PowerLossDisk) {
    // Bounded by the caller's real-time limit; each turn lets every other task run.
    while !disk.power_lost() {
        tokio::task::yield_now().await;
    }
}

/// The first way two sets of records differ, if any.
fn first_difference(
    device: &BTreeMap<String, Compared>,
    server: &BTreeMap<String, Compared>,
) -> Option<String> {
    for (name, here) in device {
        match server.get(name) {
            None => return Some(format!("it holds {name}, which the server does not")),
            Some(there) if there != here => {
                return Some(format!(
                    "{name} is {here:?} here and {there:?} on the server"
                ));
            }
            Some(_) => {}
        }
    }
    server
        .keys()
        .find(|name| !device.contains_key(*name))
        .map(|name| format!("it lacks {name}, which the server holds"))
}

/// The session settings of a simulated device: a short debounce, a periodic fetch every second,
/// small batches, short cool-downs, no notifications.
fn session_config(limits: BatchLimits) -> SessionConfig {
    let mut config = SessionConfig::new(vec![zone()]);
    config.fetch_interval = Duration::from_secs(1);
    config.send_debounce = Duration::from_millis(20);
    config.batch_limits = limits;
    config.exhausted_cool_down = Duration::from_secs(2);
    config.local_retry = Duration::from_millis(100);
    config.notifications = false;
    config
}

/// The throttle of a simulated device: quick to start, short backoffs, seeded jitter.
fn throttle_config(seed: u64) -> ThrottleConfig {
    ThrottleConfig {
        initial_rate: 20.0,
        transient_backoff: Duration::from_millis(100),
        transient_backoff_cap: Duration::from_secs(1),
        offline_backoff: Duration::from_millis(100),
        offline_backoff_cap: Duration::from_secs(1),
        seed: Some(seed),
        ..ThrottleConfig::default()
    }
}
