//! A seeded simulation of skysync: K devices of one user edit, delete, go offline and lose power
//! in a random interleaving, against the dev server running in process, on tokio's paused clock;
//! once the network heals, every device must equal the server, and the server must hold every
//! change whose save returned and no record whose deletion was final.
//!
//! ```no_run
//! use skysync_sim::{SimConfig, run};
//!
//! match run(7, &SimConfig::default()) {
//!     Ok(report) => println!("seed 7 ran clean in {} steps", report.trace.len()),
//!     Err(failure) => eprintln!("{failure}\n{}", failure.trace_text()),
//! }
//! ```
//!
//! # What runs
//!
//! Everything real but the socket and the disk. The dev server ([`skysync_devserver`]) serves
//! each request in the requesting task through its router ([`InProcessDatabase`]): its handlers,
//! state, limits and fault injection do the work. Each device is a whole [`skysync_session::Engine`]
//! (session, throttle, transport, conflict resolver, supervisor) over a store on a
//! [`skysync_store::power_loss::PowerLossDisk`] (the redb file in memory, with a power switch). All
//! devices sign in as the same user, so they share one private database, zone `Notes`.
//!
//! # What a run does
//!
//! A `StdRng` seeded with the seed chooses each step: which device acts and how (edit a record,
//! delete one, take its network down or up, lose power, sync now), which fault the server arms next
//! (errors, throttles with `retryAfter`, lost answers, HTML pages, slow answers, expired change
//! tokens, per-item errors), or how long to let time pass. Records come in three kinds (see the
//! `ledger` module): *shared* records every device edits, each its own field; *owned* records only
//! their device writes and deletes; *contested* records every device edits and deletes. A power
//! cut happens either between steps or inside a save (at its first write or its first sync); the
//! disk then keeps none, some (seeded, torn at a sector) or all of what was not yet synced; the
//! device's engine is dropped and a new one starts from what the disk kept.
//!
//! After the steps, the network heals: faults are cleared, every device comes online, and time
//! passes (with `sync_now` on every device) until every device is quiet (nothing pending, parked
//! or in conflict, no halt) and holds exactly the server's records, change tags included. Then the
//! checks: the liveness rule held on every device throughout; every change whose save returned is
//! in the final state unless a later change of the same record (owned) or field (shared) replaced
//! it; a deleted record is gone unless a save could have brought it back; nothing else is there.
//!
//! # Time
//!
//! The simulation alone moves the clock. tokio's paused clock would jump to the next timer
//! whenever the runtime looks idle, and it looks idle while the store's writer thread commits; so
//! the simulation holds the clock still (a parked `spawn_blocking` task, during which tokio does
//! not auto-advance) except while a step lets time pass. Waits that may need timers (an engine
//! shutting down after its power cut) let the clock run for a bounded simulated time; waits with
//! the clock held are bounded in real time, so a stuck operation fails the run instead of hanging
//! it.
//!
//! # What the same seed replays
//!
//! The trace: every step's device, action and outcome, and the final verdict. The random choices
//! come only from the seed, never from what the engines did, and an outcome is only what cannot
//! depend on timing: a save returns `ok` on a powered disk, and a save during which the power is
//! cut is `cut` (the cut is placed at or before its own commit, so it can never have returned
//! first). A test runs one seed twice and compares the traces byte for byte.
//!
//! What is not replayed exactly: what the engines do between the simulation's steps. The store
//! commits on its own thread and reads on tokio's blocking pool, devices sharing a moment of
//! simulated time run in whatever order those threads answer, and the session jitters its periodic
//! fetch with the operating system's randomness; so which requests go out at which step, the
//! change tags, which conflicts arise, and what the disk holds of a commit in progress at a cut
//! can differ between two runs of a seed. The checks do not depend on any of it: a failure says
//! what was broken and prints the trace of the seed, which replays the same steps; a failure that
//! depends on one interleaving may need the seed run a few times.
//!
//! # What is left out
//!
//! Faults that are lies about the data rather than failures: `ZONE_NOT_FOUND` for a zone that
//! exists (the engine rightly re-creates the zone and re-uploads its records, which brings back
//! records other devices deleted), per-item `CONFLICT` for a record the server does not hold, and
//! item rejections (a parked change stays unsent by design, so the devices cannot all equal the
//! server). Notifications are off: devices learn of each other's changes by their periodic fetch.

mod clock;
mod ledger;
mod network;
mod run;

pub use network::{CONTAINER, InProcessDatabase, Link, NetworkLog, Power};
pub use run::run;

use std::fmt;
use std::time::Duration;

/// How big a run is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// How many devices (at least 1).
    pub devices: usize,
    /// How many steps before the network heals.
    pub steps: usize,
    /// How many shared records (edited by every device, each its own field; never deleted).
    pub shared_records: usize,
    /// How many records each device owns (only it edits and deletes them).
    pub owned_records: usize,
    /// How many contested records (edited and deleted by every device).
    pub contested_records: usize,
    /// Disks acknowledge syncs without making anything durable, so that a power cut loses saves
    /// that returned: for proving that the checks catch a lost change. `false` in real runs.
    pub lying_disks: bool,
    /// Steps may plan a power cut at one of a device's next few syncs while its engine works on
    /// its own (between the transactions of a fetch, a confirmation, a resolution). `true` by
    /// default; seeds found before these steps existed replay their traces with `false`.
    pub cuts_during_sync: bool,
}

impl Default for SimConfig {
    /// The small size CI runs many seeds of: 3 devices, 40 steps.
    fn default() -> Self {
        Self {
            devices: 3,
            steps: 40,
            shared_records: 3,
            owned_records: 2,
            contested_records: 2,
            lying_disks: false,
            cuts_during_sync: true,
        }
    }
}

/// One line of a run's trace: a step's device, action and outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// The step (`None` for the healing and the checks after the steps).
    pub step: Option<usize>,
    /// The device that acted (`None` for the server and the clock).
    pub device: Option<usize>,
    /// What was done.
    pub action: String,
    /// What came of it.
    pub outcome: String,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self
            .step
            .map_or_else(|| "   -".to_owned(), |s| format!("{s:4}"));
        let device = self
            .device
            .map_or_else(|| "--".to_owned(), |d| format!("d{d}"));
        write!(f, "{step} {device:3} {} -> {}", self.action, self.outcome)
    }
}

/// The trace as text, one line per step.
fn trace_text(trace: &[TraceLine]) -> String {
    trace
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>()
}

/// What a clean run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Every step and its outcome; the same seed gives the same trace.
    pub trace: Vec<TraceLine>,
    /// Counts of what happened (these depend on timing, unlike the trace).
    pub stats: RunStats,
}

impl SimReport {
    /// The trace as text, one line per step.
    pub fn trace_text(&self) -> String {
        trace_text(&self.trace)
    }
}

/// Counts of what a run did. They depend on how the engines' threads were scheduled, so they are
/// not part of what a seed replays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Saves and deletes that returned.
    pub changes_returned: usize,
    /// Saves and deletes a power cut interrupted.
    pub changes_interrupted: usize,
    /// Power cuts.
    pub power_cuts: usize,
    /// Faults armed on the server.
    pub faults_armed: usize,
    /// Edits during which the engine committed something between the read and the save, so that
    /// the save may have written other devices' fields back as read (see the crate docs).
    pub raced_edits: usize,
    /// Simulated time from the first step to the end of the checks.
    pub simulated: Duration,
    /// Records on the server at the end.
    pub records_at_end: usize,
    /// Requests the server answered.
    pub requests: u64,
}

/// Why a run failed. Every variant carries the seed and the trace: `sim --from SEED --seeds 1`
/// replays the same steps.
#[derive(Debug, thiserror::Error)]
pub enum SimFailure {
    /// A promise broke: a change that returned is missing, a deletion came back, a device differs
    /// from the server, the liveness rule failed, a save failed on a powered disk. A bug in skysync
    /// (or in the simulation's checks): replay the seed and read the trace.
    #[error("seed {seed}: {} broken promise(s):\n  {}", violations.len(), violations.join("\n  "))]
    Broken {
        /// The seed.
        seed: u64,
        /// What broke, one line each.
        violations: Vec<String>,
        /// The steps up to the failure.
        trace: Vec<TraceLine>,
        /// The steps and every request, by simulated time (not replayed exactly).
        log: Vec<String>,
    },
    /// The devices did not settle (quiet and equal to the server) within the simulated time
    /// allowed after the network healed: a stuck engine, a loop, or a halt that never lifts.
    /// Replay the seed and read the trace and the devices' state.
    #[error("seed {seed}: the devices did not settle after the network healed: {detail}")]
    Unsettled {
        /// The seed.
        seed: u64,
        /// The devices' state when the simulation gave up.
        detail: String,
        /// The steps.
        trace: Vec<TraceLine>,
        /// The steps and every request, by simulated time (not replayed exactly).
        log: Vec<String>,
    },
    /// The simulation itself could not go on: an engine would not start, an operation did not
    /// return within the real-time bound while the clock stood still, the runtime could not be
    /// built. Report it with the seed.
    #[error("seed {seed}: the simulation could not go on: {detail}")]
    Harness {
        /// The seed.
        seed: u64,
        /// What went wrong.
        detail: String,
        /// The steps up to it.
        trace: Vec<TraceLine>,
        /// The steps and every request, by simulated time (not replayed exactly).
        log: Vec<String>,
    },
}

impl SimFailure {
    /// The seed that failed.
    pub fn seed(&self) -> u64 {
        match self {
            SimFailure::Broken { seed, .. }
            | SimFailure::Unsettled { seed, .. }
            | SimFailure::Harness { seed, .. } => *seed,
        }
    }

    /// The steps of the failed run.
    pub fn trace(&self) -> &[TraceLine] {
        match self {
            SimFailure::Broken { trace, .. }
            | SimFailure::Unsettled { trace, .. }
            | SimFailure::Harness { trace, .. } => trace,
        }
    }

    /// The trace as text, one line per step.
    pub fn trace_text(&self) -> String {
        trace_text(self.trace())
    }

    /// The steps and every request the devices made, by simulated time: what the engines did,
    /// which the trace leaves out (it depends on timing, so a replay may differ in it).
    pub fn log(&self) -> &[String] {
        match self {
            SimFailure::Broken { log, .. }
            | SimFailure::Unsettled { log, .. }
            | SimFailure::Harness { log, .. } => log,
        }
    }
}
