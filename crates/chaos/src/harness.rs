//! The harness: starts the dev server and the devices as child processes, kills and restarts
//! them, arms faults, then settles every device and checks the final states.

use crate::check::{self, FinalState, FinalStates, Findings};
use crate::device::{DeviceSetup, SettleDump, Vitals, fields_of};
use crate::faults::{self, Fault};
use crate::journal::{self, JournalError};
use crate::plan::{PlanConfig, ZONE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use skysync_devserver::dev_view::{DatabaseSnapshot, DevUser, DevView};
use skysync_model::{Record, ZoneId};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The web auth token every device signs in with: one user, one private database.
pub const TOKEN: &str = "chaos-user";
/// The container the engine's dev-server client uses.
const CONTAINER: &str = "iCloud.dev.skysync";
/// How often the harness looks at its processes.
const TICK: Duration = Duration::from_millis(50);
/// How long the devices may make no progress before the run counts it as a liveness violation
/// and stops.
const STALL: Duration = Duration::from_secs(120);
/// The most settle rounds: a round in which no device sends anything ends them sooner.
const SETTLE_ROUNDS: u32 = 6;
/// The most processes that may exit by themselves before the run gives up.
const MAX_CRASHES: u64 = 20;

/// Why a chaos run could not be carried out (as opposed to a run that found something, which is
/// a [`Report`] that does not pass).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A file or directory of the run could not be read or written; check the path and the disk.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// A binary could not be started: build them first (`cargo build --release -p
    /// skysync-chaos --bins`) or point `--bin-dir` at them.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The dev server did not say it was listening; its log (in the work directory) says why.
    #[error("the dev server did not start: {0}")]
    ServerStart(String),
    /// The dev server's view inside could not be read.
    #[error("reading the server's view failed: {0}")]
    View(String),
    /// A device's journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ChaosError + '_ {
    move |source| ChaosError::File {
        path: path.to_owned(),
        source,
    }
}

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seeds the plan, the kill and restart moments, the devices killed and the faults.
    pub seed: u64,
    /// How many device processes.
    pub devices: u32,
    /// How many changes they make together (a soak run: the size of the record pools).
    pub changes: u64,
    /// How many times a device is killed with SIGKILL and restarted.
    pub kills: u32,
    /// How many times the dev server is killed and restarted on its data (`None`: one per 20
    /// kills, at least one; in a soak, one per two minutes).
    pub server_restarts: Option<u32>,
    /// Whether faults are armed.
    pub faults: bool,
    /// A soak run: this long, with each device making `soak_rate` changes per second.
    pub soak: Option<Duration>,
    /// A soak run's changes per second per device.
    pub soak_rate: f64,
    /// Where `chaos-device` and `chaos-server` are.
    pub bin_dir: PathBuf,
    /// The run's working directory (emptied first): the server's data, each device's files and
    /// the logs.
    pub work_dir: PathBuf,
    /// Where the report is written.
    pub report_path: PathBuf,
    /// The longest a device may take to settle.
    pub settle_timeout: Duration,
    /// The longest the chaos phase may last before the run stops it (a liveness violation).
    pub deadline: Duration,
}

impl ChaosConfig {
    /// The defaults of `cargo xtask chaos`: 2 devices, 10,000 changes, faults on, the report at
    /// `out/report.json` and the work directory `out/work`.
    pub fn new(seed: u64, kills: u32, bin_dir: PathBuf, out: &Path) -> Self {
        Self {
            seed,
            devices: 2,
            changes: 10_000,
            kills,
            server_restarts: None,
            faults: true,
            soak: None,
            soak_rate: 20.0,
            bin_dir,
            work_dir: out.join("work"),
            report_path: out.join("report.json"),
            settle_timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(30 * 60),
        }
    }

    fn plan(&self) -> PlanConfig {
        PlanConfig {
            seed: self.seed,
            devices: self.devices,
            changes: self.changes,
            endless: self.soak.is_some(),
        }
    }
}

/// A chaos run's report: `target/chaos/report.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Devices killed with SIGKILL (and restarted).
    pub kills: u64,
    /// Journaled changes whose effect is in no final state.
    pub lost: u64,
    /// Records or values no change put where they are found.
    pub duplicated: u64,
    /// Records deleted last and never re-created, present in some final state.
    pub resurrected: u64,
    /// Every device settled and holds exactly the server's records.
    pub converged: bool,
    /// The engines' liveness violations (every process life, and the settles), plus devices that
    /// stopped making progress or could not settle.
    pub liveness_violations: u64,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// The seed.
    pub seed: u64,
    /// Device processes.
    pub devices: u32,
    /// Changes planned (a soak run: the size the record pools were drawn for).
    pub changes: u64,
    /// Changes each device journaled.
    pub journaled: Vec<u64>,
    /// Times the dev server was killed and restarted.
    pub server_restarts: u64,
    /// Faults armed.
    pub faults_armed: u64,
    /// Processes that exited without being killed (each restarted).
    pub crashes: u64,
    /// Settle rounds run.
    pub settle_rounds: u32,
    /// Changes left parked on some device.
    pub parked: u64,
    /// The longest one operation stayed in flight, in ms (seen every 50 ms).
    pub longest_operation_ms: u64,
    /// Its kind.
    pub longest_operation: Option<String>,
    /// The longest a save or delete took to return, in ms.
    pub longest_save_ms: u64,
    /// A soak run's memory trends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
    /// Examples of what was found, to start debugging from.
    pub examples: Vec<String>,
}

impl Report {
    /// Whether the run found nothing: 0 lost, duplicated, resurrected, liveness violations,
    /// crashes and parked changes, and converged.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.resurrected == 0
            && self.liveness_violations == 0
            && self.crashes == 0
            && self.parked == 0
            && self.converged
    }
}

/// What a soak run adds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// How long the faults and changes ran.
    pub minutes: f64,
    /// The resident memory of each process, over its longest life.
    pub memory: Vec<MemoryTrend>,
}

/// One process's resident memory over its longest life.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryTrend {
    /// `server` or `device N`.
    pub process: String,
    /// How long that life lasted, in minutes.
    pub minutes: f64,
    /// Samples taken (one a second).
    pub samples: usize,
    /// The first sample, MB.
    pub first_mb: f64,
    /// The last sample, MB.
    pub last_mb: f64,
    /// The largest sample, MB.
    pub max_mb: f64,
    /// The least-squares slope, MB per minute.
    pub slope_mb_per_min: f64,
}

impl MemoryTrend {
    fn of(process: String, samples: &[(f64, f64)]) -> Option<MemoryTrend> {
        let (first, last) = (samples.first()?, samples.last()?);
        let n = samples.len() as f64;
        let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let mean_m = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let var: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
        let cov: f64 = samples
            .iter()
            .map(|s| (s.0 - mean_t) * (s.1 - mean_m))
            .sum();
        let slope_per_s = if var > 0.0 { cov / var } else { 0.0 };
        Some(MemoryTrend {
            process,
            minutes: (last.0 - first.0) / 60.0,
            samples: samples.len(),
            first_mb: first.1,
            last_mb: last.1,
            max_mb: samples.iter().map(|s| s.1).fold(0.0, f64::max),
            slope_mb_per_min: slope_per_s * 60.0,
        })
    }
}

/// One process life: its memory samples (seconds since it started, MB).
#[derive(Debug, Default)]
struct Life {
    rss: Vec<(f64, f64)>,
}

/// A child process the harness started, with its lives.
#[derive(Debug, Default)]
struct Proc {
    child: Option<Child>,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    lives: Vec<Life>,
}

impl Proc {
    fn adopt(&mut self, child: Child) {
        self.lives.push(Life::default());
        self.child = Some(child);
        self.started = Some(Instant::now());
    }

    /// SIGKILL (by the child's pid), and reaps it.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether it exited by itself, with its status.
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => {
                self.child = None;
                Some(e.to_string())
            }
        }
    }

    async fn sample_memory(&mut self) {
        let (Some(child), Some(started)) = (&self.child, self.started) else {
            return;
        };
        let Some(pid) = child.id() else { return };
        if let Some(mb) = rss_mb(pid).await
            && let Some(life) = self.lives.last_mut()
        {
            life.rss.push((started.elapsed().as_secs_f64(), mb));
        }
    }

    fn trend(&self, process: String) -> Option<MemoryTrend> {
        let longest = self.lives.iter().max_by(|a, b| {
            let span = |l: &Life| l.rss.last().map_or(0.0, |s| s.0);
            span(a).total_cmp(&span(b))
        })?;
        MemoryTrend::of(process, &longest.rss)
    }
}

/// A process's resident memory, from `/proc` (Linux).
async fn rss_mb(pid: u32) -> Option<f64> {
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A log file to append a child's stderr to.
async fn log_file(path: &Path) -> Result<Stdio, ChaosError> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(file_error(path))?;
    Ok(Stdio::from(file.into_std().await))
}

/// The dev server child.
struct Server {
    proc: Proc,
    program: PathBuf,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Server {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and data, and waits for it to say it listens. The port may
    /// still be held for a moment after a kill: a few tries.
    async fn start(&mut self) -> Result<(), ChaosError> {
        let mut last = String::new();
        for _ in 0..40 {
            let mut child = Command::new(&self.program)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--data")
                .arg(&self.data)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file(&self.log).await?)
                .env(
                    "RUST_LOG",
                    std::env::var("CHAOS_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
                )
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| ChaosError::Spawn {
                    program: self.program.clone(),
                    source,
                })?;
            let listening = match child.stdout.take() {
                Some(stdout) => {
                    let mut lines = tokio::io::BufReader::new(stdout).lines();
                    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                }
                None => None,
            };
            match listening {
                Some(line) if line.contains("listening on") => {
                    self.proc.adopt(child);
                    return Ok(());
                }
                other => {
                    last = format!("{other:?}");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Err(ChaosError::ServerStart(format!(
            "no `listening on` line (last: {last}); see {}",
            self.log.display()
        )))
    }

    async fn restart(&mut self) -> Result<(), ChaosError> {
        self.proc.kill().await;
        self.start().await
    }
}

/// A free port on 127.0.0.1 (the server keeps it across restarts).
fn free_port() -> Result<u16, ChaosError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(file_error(Path::new("127.0.0.1:0")))?;
    let port = listener
        .local_addr()
        .map_err(file_error(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

/// A device child.
struct Device {
    number: u32,
    setup: DeviceSetup,
    proc: Proc,
}

impl Device {
    fn log(&self) -> PathBuf {
        self.setup.dir.join("device.log")
    }

    /// `chaos-device VERB --dir … --server … --token …` for this device; the caller adds the
    /// verb's own arguments and hands it to [`Device::spawn`].
    fn command(&self, config: &ChaosConfig, verb: &str) -> Command {
        let mut command = Command::new(config.bin_dir.join("chaos-device"));
        command
            .arg(verb)
            .arg("--dir")
            .arg(&self.setup.dir)
            .arg("--server")
            .arg(&self.setup.server)
            .arg("--token")
            .arg(&self.setup.token);
        command
    }

    /// Starts `command` with no input, its output dropped and its errors appended to the device's
    /// log, killed if dropped.
    async fn spawn(&self, mut command: Command) -> Result<Child, ChaosError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.log()).await?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChaosError::Spawn {
                program: PathBuf::from(command.as_std().get_program()),
                source,
            })
    }

    async fn start(&mut self, config: &ChaosConfig) -> Result<(), ChaosError> {
        let mut command = self.command(config, "run");
        command
            .arg("--device")
            .arg(self.number.to_string())
            .arg("--devices")
            .arg(config.devices.to_string())
            .arg("--changes")
            .arg(config.changes.to_string())
            .arg("--seed")
            .arg(config.seed.to_string());
        if config.soak.is_some() {
            command
                .arg("--endless")
                .arg("--rate")
                .arg(config.soak_rate.to_string());
        }
        let child = self.spawn(command).await?;
        self.proc.adopt(child);
        Ok(())
    }

    async fn journaled(&self) -> Result<u64, ChaosError> {
        Ok(journal::read(&self.setup.journal()).await?)
    }

    /// Runs `chaos-device settle` and reads its dump (`None`: it failed; the log says why).
    async fn settle(&self, config: &ChaosConfig) -> Result<Option<SettleDump>, ChaosError> {
        let dump = self.setup.dump();
        let _ = tokio::fs::remove_file(&dump).await;
        let mut command = self.command(config, "settle");
        command
            .arg("--timeout")
            .arg(config.settle_timeout.as_secs().to_string());
        let mut child = self.spawn(command).await?;
        let bound = config.settle_timeout + Duration::from_secs(60);
        if tokio::time::timeout(bound, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Ok(None);
        }
        match tokio::fs::read(&dump).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(_) => Ok(None),
        }
    }

    /// Every life's vitals.
    async fn vitals(&self) -> Vec<Vitals> {
        let mut out = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.setup.dir).await else {
            return out;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("vitals-")
                && name.ends_with(".json")
                && let Ok(bytes) = tokio::fs::read(entry.path()).await
                && let Ok(vitals) = serde_json::from_slice::<Vitals>(&bytes)
            {
                out.push(vitals);
            }
        }
        out
    }
}

/// What the chaos phase counted.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    server_restarts: u64,
    faults_armed: u64,
    crashes: u64,
    liveness: u64,
    examples: Vec<String>,
    /// What the harness did, one line each with the wall-clock time (`harness.log`).
    events: Vec<String>,
}

impl Tally {
    fn event(&mut self, what: String) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.events.push(format!("{ms} {what}"));
    }
}

/// Seeded moments in `[1, total)`, in order.
fn moments(rng: &mut StdRng, count: u32, total: u64) -> Vec<u64> {
    let mut points: Vec<u64> = (0..count)
        .map(|_| rng.random_range(1..total.max(2)))
        .collect();
    points.sort_unstable();
    points
}

/// Runs a chaos run and writes its report.
pub async fn run(config: &ChaosConfig) -> Result<Report, ChaosError> {
    let started = Instant::now();
    if tokio::fs::try_exists(&config.work_dir)
        .await
        .unwrap_or(false)
    {
        tokio::fs::remove_dir_all(&config.work_dir)
            .await
            .map_err(file_error(&config.work_dir))?;
    }
    tokio::fs::create_dir_all(&config.work_dir)
        .await
        .map_err(file_error(&config.work_dir))?;
    let plan = config.plan();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut server = Server {
        proc: Proc::default(),
        program: config.bin_dir.join("chaos-server"),
        port: free_port()?,
        data: config.work_dir.join("server-data"),
        log: config.work_dir.join("server.log"),
    };
    tokio::fs::create_dir_all(&server.data)
        .await
        .map_err(file_error(&server.data))?;
    server.start().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ChaosError::View(e.to_string()))?;
    let mut devices: Vec<Device> = (0..config.devices)
        .map(|number| Device {
            number,
            setup: DeviceSetup {
                dir: config.work_dir.join(format!("device-{number}")),
                server: server.base_url(),
                token: TOKEN.to_owned(),
            },
            proc: Proc::default(),
        })
        .collect();
    for device in &mut devices {
        tokio::fs::create_dir_all(&device.setup.dir)
            .await
            .map_err(file_error(&device.setup.dir))?;
        device.start(config).await?;
    }

    let mut tally = Tally::default();
    chaos_phase(
        config,
        &plan,
        &mut rng,
        &mut server,
        &mut devices,
        &http,
        &mut tally,
    )
    .await?;
    tally.event("chaos phase over".into());
    let log = config.work_dir.join("harness.log");
    let mut text = tally.events.join("\n");
    text.push('\n');
    tokio::fs::write(&log, text)
        .await
        .map_err(file_error(&log))?;
    for device in &mut devices {
        device.proc.kill().await;
    }
    let mut journaled = Vec::new();
    for device in &devices {
        journaled.push(device.journaled().await?);
    }
    // The end: no more faults; every device runs to quiescence.
    for path in ["faults", "item-faults"] {
        let _ = http
            .delete(format!("{}/_dev/{path}", server.base_url()))
            .send()
            .await;
    }
    let mut longest = (0u64, None::<String>, 0u64);
    for device in &devices {
        for vitals in device.vitals().await {
            tally.liveness += vitals.liveness_violations;
            if vitals.longest_operation_ms > longest.0 {
                longest.0 = vitals.longest_operation_ms;
                longest.1 = vitals.longest_operation.clone();
            }
            longest.2 = longest.2.max(vitals.longest_save_ms);
        }
    }
    let (dumps, rounds) = settle_all(config, &devices, &mut tally).await?;
    let (server_state, doubled) = server_view(&http, &server.base_url()).await?;
    server.proc.kill().await;

    let states = FinalStates {
        server: server_state,
        devices: dumps
            .iter()
            .map(|d| d.as_ref().map(|d| d.records.clone()).unwrap_or_default())
            .collect(),
    };
    let findings: Findings = check::check(&plan, &journaled, &states);
    let settled = dumps.iter().all(|d| d.as_ref().is_some_and(|d| d.settled));
    let parked: u64 = dumps.iter().flatten().map(|d| d.parked.len() as u64).sum();
    for (n, dump) in dumps.iter().enumerate() {
        match dump {
            None => tally.examples.push(format!(
                "device {n}: the settle failed (see its device.log)"
            )),
            Some(d) if !d.settled => tally.examples.push(format!(
                "device {n}: did not settle: pending {}, open conflicts {}, halt {:?}",
                d.pending, d.open_conflicts, d.halt
            )),
            Some(d) => {
                for p in d.parked.iter().take(5) {
                    tally.examples.push(format!("device {n}: parked {p}"));
                }
            }
        }
    }
    let mut examples = tally.examples;
    examples.extend(findings.examples);
    let soak = config.soak.map(|soak| SoakReport {
        minutes: soak.as_secs_f64() / 60.0,
        memory: std::iter::once(server.proc.trend("server".into()))
            .chain(
                devices
                    .iter()
                    .map(|d| d.proc.trend(format!("device {}", d.number))),
            )
            .flatten()
            .collect(),
    });
    let report = Report {
        kills: tally.kills,
        lost: findings.lost,
        duplicated: findings.duplicated + doubled,
        resurrected: findings.resurrected,
        converged: findings.converged && settled,
        liveness_violations: tally.liveness,
        seconds: started.elapsed().as_secs_f64(),
        seed: config.seed,
        devices: config.devices,
        changes: config.changes,
        journaled,
        server_restarts: tally.server_restarts,
        faults_armed: tally.faults_armed,
        crashes: tally.crashes,
        settle_rounds: rounds,
        parked,
        longest_operation_ms: longest.0,
        longest_operation: longest.1,
        longest_save_ms: longest.2,
        soak,
        examples,
    };
    write_report(&config.report_path, &report).await?;
    Ok(report)
}

async fn write_report(path: &Path, report: &Report) -> Result<(), ChaosError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(file_error(parent))?;
    }
    let text = serde_json::to_string_pretty(report).map_err(|e| ChaosError::File {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    tokio::fs::write(path, text).await.map_err(file_error(path))
}

/// The devices make their changes while the harness kills them, restarts the server and arms
/// faults. Ends when every plan is journaled and every kill and restart is done (a soak: when its
/// time is up).
async fn chaos_phase(
    config: &ChaosConfig,
    plan: &PlanConfig,
    rng: &mut StdRng,
    server: &mut Server,
    devices: &mut [Device],
    http: &reqwest::Client,
    tally: &mut Tally,
) -> Result<(), ChaosError> {
    let begun = Instant::now();
    // The moments: in changes journaled (all devices together), or in ms for a soak.
    let total = match config.soak {
        Some(soak) => u64::try_from(soak.as_millis()).unwrap_or(u64::MAX),
        None => (0..config.devices).map(|d| plan.changes_of(d)).sum(),
    };
    let server_restarts = config.server_restarts.unwrap_or_else(|| match config.soak {
        Some(soak) => u32::try_from(soak.as_secs() / 120)
            .unwrap_or(u32::MAX)
            .max(1),
        None => (config.kills / 20).max(1),
    });
    let kill_at = moments(rng, config.kills, total);
    let restart_at = moments(rng, server_restarts, total);
    let (mut next_kill, mut next_restart) = (0usize, 0usize);
    // The first fault at once, then one every 0.3-1.5 s.
    let mut next_fault = Instant::now();
    let mut shared_on_server: Vec<String> = Vec::new();
    let mut shared_checked = Instant::now();
    let mut progress = 0u64;
    let mut last_progress = (0u64, Instant::now());
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(TICK).await;
        tick += 1;
        let now = Instant::now();
        if config.soak.is_none() || tick.is_multiple_of(20) {
            progress = 0;
            for device in devices.iter() {
                progress += device.journaled().await?;
            }
        }
        let clock = match config.soak {
            Some(_) => u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX),
            None => progress,
        };
        if progress != last_progress.0 {
            last_progress = (progress, now);
        }
        if tick.is_multiple_of(20) {
            server.proc.sample_memory().await;
            for device in devices.iter_mut() {
                device.proc.sample_memory().await;
            }
        }

        // Processes that exited by themselves are a finding; they are started again.
        for device in devices.iter_mut() {
            if let Some(status) = device.proc.exited() {
                tally.crashes += 1;
                tally.examples.push(format!(
                    "device {} exited by itself ({status}); see {}",
                    device.number,
                    device.log().display()
                ));
                device.proc.restart_at = Some(now + Duration::from_millis(100));
            }
            if device.proc.child.is_none() && device.proc.restart_at.is_some_and(|at| now >= at) {
                device.proc.restart_at = None;
                device.start(config).await?;
                let pid = device.proc.child.as_ref().and_then(Child::id);
                tally.event(format!("start device {} (pid {pid:?})", device.number));
            }
        }
        if let Some(status) = server.proc.exited() {
            tally.crashes += 1;
            tally
                .examples
                .push(format!("the dev server exited by itself ({status})"));
            server.start().await?;
        }
        if tally.crashes > MAX_CRASHES {
            tally
                .examples
                .push("too many processes exited by themselves; the run stopped".into());
            return Ok(());
        }

        // A kill: a random running device, SIGKILL, started again after a pause.
        if let Some(&at) = kill_at.get(next_kill)
            && clock >= at
        {
            let running: Vec<usize> = (0..devices.len())
                .filter(|&i| devices[i].proc.child.is_some())
                .collect();
            if !running.is_empty() {
                let victim = running[rng.random_range(0..running.len())];
                let device = &mut devices[victim];
                let pid = device.proc.child.as_ref().and_then(Child::id);
                device.proc.kill().await;
                let pause = rng.random_range(0..300);
                device.proc.restart_at = Some(Instant::now() + Duration::from_millis(pause));
                tally.kills += 1;
                tally.event(format!(
                    "kill device {victim} (pid {pid:?}) at {progress} changes; restart in {pause} ms"
                ));
                next_kill += 1;
            }
        }
        if let Some(&at) = restart_at.get(next_restart)
            && clock >= at
        {
            tally.event(format!("server restart at {progress} changes"));
            server.restart().await?;
            tally.event("server listening again".into());
            tally.server_restarts += 1;
            next_restart += 1;
        }
        if config.faults && now >= next_fault {
            if now.duration_since(shared_checked) > Duration::from_secs(5)
                || shared_on_server.is_empty()
            {
                shared_checked = now;
                if let Ok((state, _)) = server_view(http, &server.base_url()).await {
                    shared_on_server = state.into_keys().filter(|n| n.starts_with('s')).collect();
                }
            }
            let fault = faults::draw(rng, &shared_on_server);
            if arm(http, &server.base_url(), &fault).await {
                tally.faults_armed += 1;
                tally.event(format!("fault {}: {}", fault.kind.path(), fault.spec));
            }
            next_fault = now + Duration::from_millis(rng.random_range(300..1_500));
        }

        let kills_done = next_kill >= kill_at.len() && next_restart >= restart_at.len();
        let finished = match config.soak {
            Some(soak) => begun.elapsed() >= soak,
            None => {
                let mut all = true;
                for device in devices.iter() {
                    all &= device.journaled().await? >= plan.changes_of(device.number);
                }
                all && kills_done
            }
        };
        if finished {
            return Ok(());
        }
        let stalled = config.soak.is_none() && now.duration_since(last_progress.1) > STALL;
        if stalled || begun.elapsed() > config.deadline {
            tally.liveness += 1;
            tally.examples.push(format!(
                "the devices stopped making progress at {progress} changes journaled (kills done: {kills_done})"
            ));
            return Ok(());
        }
    }
}

/// Arms a fault; false if the server did not take it (it may be restarting).
async fn arm(http: &reqwest::Client, base: &str, fault: &Fault) -> bool {
    http.post(format!("{base}/_dev/{}", fault.kind.path()))
        .json(&fault.spec)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Settles every device, in rounds, until a round in which none of them sent anything (so the
/// server did not change during it and each one's last fetch saw its final state).
async fn settle_all(
    config: &ChaosConfig,
    devices: &[Device],
    tally: &mut Tally,
) -> Result<(Vec<Option<SettleDump>>, u32), ChaosError> {
    let mut dumps = Vec::new();
    for round in 1..=SETTLE_ROUNDS {
        // Each settle is a process of its own: they run at once.
        dumps = futures::future::join_all(devices.iter().map(|d| d.settle(config)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let unsettled = dumps
            .iter()
            .filter(|d| !d.as_ref().is_some_and(|d| d.settled))
            .count();
        let sent: u64 = dumps.iter().flatten().map(|d| d.sent + d.resolved).sum();
        if unsettled > 0 {
            // A device that cannot reach quiescence is a liveness finding.
            tally.liveness += unsettled as u64;
            return Ok((dumps, round));
        }
        if sent == 0 {
            for dump in dumps.iter().flatten() {
                tally.liveness += dump.liveness_violations;
            }
            return Ok((dumps, round));
        }
    }
    tally.examples.push(format!(
        "the devices still sent changes after {SETTLE_ROUNDS} settle rounds"
    ));
    for dump in dumps.iter().flatten() {
        tally.liveness += dump.liveness_violations;
    }
    Ok((dumps, SETTLE_ROUNDS))
}

/// GETs a JSON page of the dev server's view (a non-success status is an error too).
async fn get_view<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Result<T, ChaosError> {
    let err = |e: reqwest::Error| ChaosError::View(e.to_string());
    http.get(url)
        .send()
        .await
        .map_err(err)?
        .error_for_status()
        .map_err(err)?
        .json()
        .await
        .map_err(err)
}

/// The server's view of the chaos zone, and how many record names it lists more than once.
async fn server_view(http: &reqwest::Client, base: &str) -> Result<(FinalState, u64), ChaosError> {
    let view = DevView::new(base);
    let user: DevUser = get_view(http, view.user_url(TOKEN)).await?;
    let url = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user.user_record_name),
        Some(ZONE),
    );
    let snapshot: DatabaseSnapshot = get_view(http, url).await?;
    let zone = ZoneId::new(ZONE);
    let mut state = FinalState::new();
    let mut doubled = 0;
    for zone_snapshot in snapshot
        .zones
        .iter()
        .filter(|z| z.zone_name == ZONE && !z.deleted)
    {
        for wire in &zone_snapshot.records {
            let record =
                Record::from_wire(&zone, wire).map_err(|e| ChaosError::View(e.to_string()))?;
            if state
                .insert(record.id.record_name.clone(), fields_of(&record))
                .is_some()
            {
                doubled += 1;
            }
        }
    }
    Ok((state, doubled))
}
