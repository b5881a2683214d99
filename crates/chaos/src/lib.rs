//! `cargo xtask chaos`: skysync's promises checked against crashes, restarts and a faulty server,
//! with real processes.
//!
//! ```text
//! cargo xtask chaos --kills N --seed S [--devices D] [--changes C] [--soak MINUTES]
//! ```
//!
//! # The run
//!
//! The `chaos` binary (the harness, [`harness::run`]) starts the dev server (`chaos-server`, the
//! dev server library behind the same flags as `skysync-devserver`) on a port of 127.0.0.1 it
//! keeps across restarts, with `--data` in the run's work directory, and D `chaos-device run`
//! processes (default 2). Every device signs in as the same user, so they share one private
//! database, and syncs the zone `Chaos` with an [`Engine`](skysync_session::Engine) over its own
//! store file. Together they make C changes (default 10,000).
//!
//! While they work, the harness, from an RNG seeded with S:
//! * kills a random running device with SIGKILL (by its pid) N times and starts it again after a
//!   pause of up to 300 ms; the moments are N seeded points spread over the plan's progress (the
//!   changes journaled by all devices together), so the kills fall across the whole run whatever
//!   the machine's speed;
//! * kills the dev server and starts it again on its data, one time per 20 kills (at least once);
//! * arms a fault every 0.3-1.5 s over HTTP ([`faults`]): throttles with `retryAfter: 1`, 500s,
//!   503s, slow answers, HTML pages, dropped connections, expired change tokens, per-item errors.
//!
//! When every device has journaled its whole plan and every kill and restart is done, the harness
//! kills the devices (not counted), clears every fault, and settles the devices: each runs
//! `chaos-device settle` (to quiescence: nothing pending or in flight, no open conflict, no halt,
//! and a fetch asked for after that found nothing new, then a dump of its records and
//! diagnostics). Settles run in rounds until a round in which no device sent anything: the
//! server did not change during that round, so each device's last fetch saw the server's final
//! state. Then it reads the server's view (`/_dev/records`), checks ([`check`]) and writes
//! `target/chaos/report.json`:
//!
//! ```json
//! {"kills": 100, "lost": 0, "duplicated": 0, "resurrected": 0, "converged": true,
//!  "liveness_violations": 0, "seconds": 312.4, "seed": 1, ...}
//! ```
//!
//! and exits non-zero unless it passed ([`harness::Report::passed`]). The seed fixes the plan,
//! the kill and restart moments, which device each kill hits and the faults; how the processes
//! interleave still depends on the machine, so a run is repeatable in what it does, not to the
//! microsecond. The work directory (`target/chaos/work`) keeps every store, journal, the
//! server's data and each process's log for a post-mortem.
//!
//! `--soak MINUTES` runs the faults, kills and server restarts for that long instead, each
//! device making 20 changes a second from an endless plan over the same records, and adds to the
//! report the resident memory trend of each process over its longest life (`soak.memory`).
//! Every run reports the longest operation seen in flight and the longest save.
//!
//! # The plan
//!
//! [`plan::DevicePlan`] gives each device its share of the changes from the seed alone, so a
//! restarted device and the checker compute the same changes. Each device has its own pool of
//! private records (`p{device}-{k}`, about ten changes each) and every device edits the shared
//! records (`s{k}`, one per 200 changes):
//!
//! * a private change creates the record (type `Item`, field `v`) if the device does not have
//!   it (the first time, or again after a delete), otherwise edits it (75 %) or deletes it (25 %);
//!   15 % of them go back to the record the previous one touched, so creates are quickly edited,
//!   edits quickly deleted and deletes quickly undone by a re-creation;
//! * a shared change (20 % of all) saves the record (type `Shared`) naming only the device's own
//!   field `f{device}`; a CloudKit update leaves the other fields alone and the default
//!   three-way merge keeps both sides of a conflict, so each device's last value per record is
//!   checkable. Shared records are never deleted: a delete against another device's concurrent
//!   edit has no single right outcome (it depends on the resolver's delete policy).
//!
//! Every value a change writes names it (`d{device}c{index}`).
//!
//! # The journal
//!
//! Right after a change's save or delete returned, the device appends the change's index to its
//! [`journal`] and fsyncs it. After a SIGKILL the journal says exactly which changes had
//! returned; the device resumes with the change after the last line, so the change a kill
//! interrupted is made again (saving the same value, or deleting again, is harmless). At most
//! one change per device is made and not journaled (a device is stopped between the change and
//! its line): its effect may or may not be there.
//!
//! # The findings
//!
//! For each private record, and for each device's field of each shared record, the last
//! journaled change is what must be there, or the change that may have followed it unjournaled.
//! A final state is the server's view or a settled device's records.
//!
//! * **lost**: a journaled save whose value (or that of the change after it) is in no final
//!   state.
//! * **resurrected**: a private record whose last journaled change deleted it, with no
//!   re-creation after, present in some final state.
//! * **duplicated**: a record no change of the plan names, a value found on another record or
//!   field than the change that wrote it, or a record the server lists twice: data the plan did
//!   not put there.
//! * **converged**: every device settled and holds exactly the server's records (field by field).
//! * **liveness_violations**: the engines' own count (every process life reports it in a vitals
//!   file, rewritten within 50 ms of a new one; a violation in the last 50 ms before a kill can
//!   be missed), plus a device that could not settle and a run whose devices stopped making
//!   progress for two minutes.
//!
//! A crash (a process that exits without being killed) and a parked change also fail the run.
//!
//! # In `cargo test`
//!
//! `tests/chaos_run.rs` runs a small chaos run (2 devices, 300 changes, 5 kills, a server
//! restart, faults) against the debug binaries, and the checker's tests feed it doctored final
//! states (a lost edit, a lost shared field, a resurrected record, data no change made).

pub mod check;
pub mod device;
pub mod faults;
pub mod harness;
pub mod journal;
pub mod plan;

pub use check::{FinalState, FinalStates, Findings, check};
pub use harness::{ChaosConfig, ChaosError, Report, run};
pub use plan::{Change, ChangeKind, DevicePlan, PlanConfig};
