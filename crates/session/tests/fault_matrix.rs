//! The fault matrix: every server error code and every network fault, at every step the engine
//! takes, against a real dev server over real HTTP.
//!
//! A case is (step, fault). Each case gets its own dev server, a TCP gate in front of it (to refuse
//! connections), a fresh device whose first sync walks through every step (who is signed in, the
//! zone, its subscription, the notification token and its courier, `changes/database`, the zone's
//! pages, the send of four local records), and the fault armed on its step. Then it checks:
//!
//! (a) the engine did what the error table says ([`expected`], the table in one place), seen in
//!     its events, its telemetry (retries with their class, waits with their cause) and the
//!     server's request counts;
//! (b) nothing panicked: every component runs, the liveness rule held at every look;
//! (c) nothing was lost: after the fault (and a `resume` where the table says a halt needs one),
//!     every saved record is on the server or parked with its reason, the device equals the
//!     server, and a change made elsewhere afterwards arrives by notification.
//!
//! Cases run concurrently, each on a runtime of its own on a worker thread, so that each case's
//! telemetry is captured apart (a thread-local tracing subscriber).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CONTAINER, Gate, contents, fast_throttle, id, note, zone};
use skysync_devserver::faults::{FaultSpec, ItemFaultSpec};
use skysync_devserver::time_scale::TimeScale;
use skysync_devserver::{DevServer, ServerConfig};
use skysync_model::{PendingChange, Record, ServerErrorCode};
use skysync_session::{Engine, HaltReason, SessionConfig, Status, SyncEvent};
use skysync_telemetry::names;
use skysync_throttle::ThrottleConfig;
use skysync_transport::{Auth, CloudDatabase, CloudKitClient, Limits, ModifyBatch, ModifyOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt as _;

/// The user every case signs in as (each case has a server of its own).
const TOKEN: &str = "matrix-user";
/// Records on the server before the device starts: with pages of two, three pages.
const SEEDED: [&str; 5] = ["s1", "s2", "s3", "s4", "s5"];
/// Records the device saves at its start; its first send carries all four.
const LOCAL: [&str; 4] = ["l1", "l2", "l3", "l4"];
/// The local record an item fault hits.
const ITEM_FAULTED: &str = "l2";
/// The record written elsewhere at the end, which must arrive by notification.
const LATE: &str = "late";
/// The records per page of a zone fetch.
const PAGE_SIZE: u32 = 2;
/// The `retryAfter` of throttling faults, in seconds.
const RETRY_AFTER: u64 = 1;
/// How many times faster than real time the dev server's durations run: its courier answers an
/// idle poll after 30 s of server time, one real second.
const TIME_SCALE: f64 = 30.0;
/// The device's limit for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The device's limit for one courier poll.
const COURIER_POLL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a timeout fault holds a request: past the device's limit for it.
const TIMEOUT_HOLD: Duration = Duration::from_secs(5);
/// How long the refused case holds the step's request while the gate closes behind it.
const REFUSED_HOLD: Duration = Duration::from_secs(10);
/// The least wait of a first backoff (transient or offline): half of its 300 ms bound.
const LEAST_BACKOFF: Duration = Duration::from_millis(150);
/// The longest any one wait of a case may take before the case fails.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// The longest a whole case may take.
const CASE_LIMIT: Duration = Duration::from_secs(90);
/// How many cases run at once (each mostly waits: on the server, the throttle, the courier).
const PARALLEL: usize = 24;

// ---------------------------------------------------------------------------------------------
// The matrix: steps, faults, and what the error table says the engine does.

/// A step of a device's sync, named by the operation the dev server sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `users/caller`: who is signed in.
    CurrentUser,
    /// `zones/modify`: the zone is created.
    EnsureZones,
    /// `subscriptions/modify`: the zone's subscription.
    EnsureSubscription,
    /// `tokens/create`: the notification token.
    EnsureNotifications,
    /// The courier's long poll (not a CloudKit operation: the notification channel).
    Courier,
    /// `changes/database`.
    FetchDatabase,
    /// `changes/zone`, the first page.
    FetchFirstPage,
    /// `changes/zone`, the second page of three.
    FetchSecondPage,
    /// `records/modify`: the local records sent.
    Send,
}

const STEPS: [Step; 9] = [
    Step::CurrentUser,
    Step::EnsureZones,
    Step::EnsureSubscription,
    Step::EnsureNotifications,
    Step::Courier,
    Step::FetchDatabase,
    Step::FetchFirstPage,
    Step::FetchSecondPage,
    Step::Send,
];

impl Step {
    /// The operation a fault names to hit this step.
    fn operation(self) -> &'static str {
        match self {
            Step::CurrentUser => "users/caller",
            Step::EnsureZones => "zones/modify",
            Step::EnsureSubscription => "subscriptions/modify",
            Step::EnsureNotifications => "tokens/create",
            Step::Courier => "courier",
            Step::FetchDatabase => "changes/database",
            Step::FetchFirstPage | Step::FetchSecondPage => "changes/zone",
            Step::Send => "records/modify",
        }
    }

    /// The request that goes again when the step is retried by the session: the step's own;
    /// for the courier, the notification token it is set up again with.
    fn retried_operation(self) -> &'static str {
        match self {
            Step::Courier => "tokens/create",
            other => other.operation(),
        }
    }

    /// The session's operation kind for this step (the courier belongs to the notifications).
    fn kind(self) -> &'static str {
        use names::values::op_kind as k;
        match self {
            Step::CurrentUser => k::CURRENT_USER,
            Step::EnsureZones => k::ENSURE_ZONES,
            Step::EnsureSubscription => k::ENSURE_SUBSCRIPTION,
            Step::EnsureNotifications | Step::Courier => k::ENSURE_NOTIFICATIONS,
            Step::FetchDatabase => k::FETCH_DATABASE,
            Step::FetchFirstPage | Step::FetchSecondPage => k::FETCH_ZONE,
            Step::Send => k::SEND,
        }
    }

    /// Whether the step's operation is about one zone (a zone-gone answer applies to it).
    fn has_zone(self) -> bool {
        matches!(
            self,
            Step::EnsureSubscription | Step::FetchFirstPage | Step::FetchSecondPage | Step::Send
        )
    }

    /// Whether the step's operation carries a sync token (a token-expired answer applies to it).
    fn has_token(self) -> bool {
        matches!(
            self,
            Step::FetchDatabase | Step::FetchFirstPage | Step::FetchSecondPage
        )
    }
}

/// What goes wrong.
#[derive(Clone, Debug, PartialEq)]
enum Fault {
    /// The whole request is answered with this CloudKit error.
    Request {
        code: ServerErrorCode,
        retry_after: Option<u64>,
    },
    /// One record of the send ([`ITEM_FAULTED`]) is answered with this error; the rest is saved.
    Item {
        code: ServerErrorCode,
        retry_after: Option<u64>,
    },
    /// The server's address refuses connections (the gate closes while the step's request is
    /// out, so that attempt is cut, and every later one is refused until the gate opens).
    Refused,
    /// The request runs, and its answer is cut off mid-body.
    Reset,
    /// No answer within the device's request timeout (the request runs late).
    Timeout,
    /// The request runs; its 200 answer is complete HTTP but the JSON stops half-way.
    TruncatedJson,
    /// A proxy's HTML error page (502) instead of CloudKit JSON.
    HtmlPage,
    /// A 200 whose body is not JSON.
    Garbage,
}

const NETWORK_FAULTS: [Fault; 6] = [
    Fault::Refused,
    Fault::Reset,
    Fault::Timeout,
    Fault::TruncatedJson,
    Fault::HtmlPage,
    Fault::Garbage,
];

impl Fault {
    fn name(&self) -> String {
        let code = |code: &ServerErrorCode, retry_after: &Option<u64>| match retry_after {
            Some(secs) => format!("{code}+retryAfter={secs}"),
            None => code.to_string(),
        };
        match self {
            Fault::Request {
                code: c,
                retry_after,
            } => code(c, retry_after),
            Fault::Item {
                code: c,
                retry_after,
            } => format!("item {}", code(c, retry_after)),
            other => format!("{other:?}"),
        }
    }
}

/// Every server code: each known one (iterated, so that a new code is in the matrix at once), the
/// two that mean "slow down" when they carry a `retryAfter` also with one, and a code this client
/// has never heard of.
fn codes() -> Vec<(ServerErrorCode, Option<u64>)> {
    let mut all = Vec::new();
    for code in ServerErrorCode::KNOWN {
        match code {
            ServerErrorCode::Throttled => all.push((code, Some(RETRY_AFTER))),
            ServerErrorCode::TryAgainLater | ServerErrorCode::ZoneBusy => {
                all.push((code.clone(), None));
                all.push((code, Some(RETRY_AFTER)));
            }
            other => all.push((other, None)),
        }
    }
    all.push((ServerErrorCode::Other("SOMETHING_NEW".into()), None));
    all
}

/// What the engine does, in the error table's words.
#[derive(Clone, Debug, PartialEq)]
enum Reaction {
    /// Throttled: the operation waits for the `retryAfter` deadline, the throttle lowers its
    /// learned rate, the attempt counts; then it goes through.
    WaitRetryAfter { kind: &'static str },
    /// Transient: the operation is retried on its own backoff, the attempt counts, the learned
    /// rate stays.
    Backoff { kind: &'static str },
    /// Offline: the engine says Offline and probes until the server answers; not counted; never a
    /// halt.
    Offline,
    /// Too large: the batch is split in halves and everything goes; nothing is parked.
    Split,
    /// Zone gone: `changes/database` is asked, the zone is created again and its records re-sent.
    RecreateZone,
    /// Token expired: the zone (or the database) is fetched again from the start; not a retry.
    Refetch { operation: &'static str },
    /// Fatal: a halt naming the operation and the code; every change is kept; `resume` goes on.
    Halt { kind: &'static str },
    /// Item rejected: that change is parked with its reason; the rest of the batch goes on.
    Park,
    /// Conflict: the server's copy is looked up (the answer carried none: the record is new) and
    /// the change goes again, resolved against what the lookup found.
    Resolve,
    /// The courier retries on its own backoff; the session and its operations are not involved.
    CourierRetries,
}

/// The error table, row by row: what a fault at a step makes the engine do.
fn expected(step: Step, fault: &Fault) -> Reaction {
    match fault {
        Fault::Refused => Reaction::Offline,
        // Not a byte of an answer in time: as far as the device can tell, the server is
        // unreachable (DESIGN's "timeout before any byte"). A courier poll that hears nothing is
        // the courier's own business.
        Fault::Timeout if step != Step::Courier => Reaction::Offline,
        Fault::Reset | Fault::Timeout | Fault::TruncatedJson | Fault::HtmlPage | Fault::Garbage => {
            match step {
                Step::Courier => Reaction::CourierRetries,
                _ => Reaction::Backoff { kind: step.kind() },
            }
        }
        Fault::Request { code, retry_after } => {
            let class = class_of(code, *retry_after, false);
            match (step, class) {
                // The courier retries on its own whatever passes, and an answer about a batch,
                // a zone or a token, none of which a poll has.
                (
                    Step::Courier,
                    Class::Throttled
                    | Class::Transient
                    | Class::TooLarge
                    | Class::ZoneGone
                    | Class::TokenExpired,
                ) => Reaction::CourierRetries,
                (_, Class::Throttled) => Reaction::WaitRetryAfter { kind: step.kind() },
                (_, Class::Transient) => Reaction::Backoff { kind: step.kind() },
                (Step::Send, Class::TooLarge) => Reaction::Split,
                (_, Class::ZoneGone) if step.has_zone() => Reaction::RecreateZone,
                (_, Class::TokenExpired) if step.has_token() => Reaction::Refetch {
                    operation: step.operation(),
                },
                // An answer that cannot apply to the operation (too large without a batch to
                // split, a zone or token error on a request without one) is a passing failure.
                (_, Class::TooLarge | Class::ZoneGone | Class::TokenExpired) => {
                    Reaction::Backoff { kind: step.kind() }
                }
                (_, Class::Fatal | Class::Conflict | Class::Rejected) => {
                    Reaction::Halt { kind: step.kind() }
                }
            }
        }
        Fault::Item { code, retry_after } => match class_of(code, *retry_after, true) {
            Class::Throttled => Reaction::WaitRetryAfter {
                kind: names::values::op_kind::SEND,
            },
            Class::Transient | Class::TokenExpired => Reaction::Backoff {
                kind: names::values::op_kind::SEND,
            },
            Class::TooLarge | Class::Rejected => Reaction::Park,
            Class::Conflict => Reaction::Resolve,
            Class::ZoneGone => Reaction::RecreateZone,
            Class::Fatal => Reaction::Halt {
                kind: names::values::op_kind::SEND,
            },
        },
    }
}

/// The rows of the error table a server code falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Throttled,
    Transient,
    TooLarge,
    Conflict,
    ZoneGone,
    TokenExpired,
    Rejected,
    Fatal,
}

/// The table's row for a code, written out here (not asked of the code under test), for the whole
/// request or for one item. The match names every code: a new one does not compile until it has a
/// row.
fn class_of(code: &ServerErrorCode, retry_after: Option<u64>, item: bool) -> Class {
    use ServerErrorCode as C;
    match code {
        C::Throttled => Class::Throttled,
        C::TryAgainLater | C::ZoneBusy if retry_after.is_some() => Class::Throttled,
        C::TryAgainLater | C::ZoneBusy | C::InternalError | C::AtomicError => Class::Transient,
        C::LimitExceeded => Class::TooLarge,
        C::Conflict | C::Exists => Class::Conflict,
        C::ZoneNotFound => Class::ZoneGone,
        C::ChangeTokenExpired => Class::TokenExpired,
        C::BadRequest | C::NotFound | C::ValidatingReferenceError | C::UniqueFieldError => {
            if item {
                Class::Rejected
            } else {
                Class::Fatal
            }
        }
        C::AuthenticationFailed
        | C::AuthenticationRequired
        | C::AccessDenied
        | C::QuotaExceeded
        | C::Other(_) => Class::Fatal,
    }
}

/// One cell of the matrix.
#[derive(Clone, Debug)]
struct Case {
    step: Step,
    fault: Fault,
}

impl Case {
    fn name(&self) -> String {
        format!("{} at {:?}", self.fault.name(), self.step)
    }
}

/// Every cell: every code and every network fault at every step, and every code for one item of
/// a send. The courier is reached directly (its URL is the server's own), so no gate can refuse
/// it: that one cell is left out.
fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for step in STEPS {
        for (code, retry_after) in codes() {
            cases.push(Case {
                step,
                fault: Fault::Request { code, retry_after },
            });
        }
        for fault in NETWORK_FAULTS {
            if step == Step::Courier && fault == Fault::Refused {
                continue;
            }
            cases.push(Case { step, fault });
        }
    }
    for (code, retry_after) in codes() {
        cases.push(Case {
            step: Step::Send,
            fault: Fault::Item { code, retry_after },
        });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The test.

#[test]
fn every_fault_at_every_step_does_what_the_error_table_says_and_loses_nothing() {
    let cases = matrix();
    let total = cases.len();
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(cases));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                // Bounded: each turn takes one case off a finite list.
                loop {
                    let Some(case) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if let Err(why) = run_isolated(&case) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {why}", case.name()));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    println!(
        "fault matrix: {total} cases ({} steps × ({} codes + {} network faults) − 1, and {} item \
         codes at the send) in {:.1} s, {} failed",
        STEPS.len(),
        codes().len(),
        NETWORK_FAULTS.len(),
        codes().len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs a case on a runtime of its own with its own telemetry capture; a panic is a failure.
fn run_isolated(case: &Case) -> Result<(), String> {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(captured.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            match tokio::time::timeout(CASE_LIMIT, run_case(case, &captured)).await {
                Ok(result) => result,
                Err(_) => Err(format!("the case took over {CASE_LIMIT:?}")),
            }
        })
    }));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

async fn run_case(case: &Case, captured: &Captured) -> Result<(), String> {
    let reaction = expected(case.step, &case.fault);
    let server = DevServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        time_scale: TimeScale::new(TIME_SCALE).unwrap(),
        ..ServerConfig::default()
    })
    .await
    .map_err(|e| format!("dev server: {e}"))?;
    let gate = Gate::start(server.local_addr()).await;
    let elsewhere = client(&server.base_url());
    seed(&elsewhere).await?;
    arm(&server, case);

    let dir = tempfile::tempdir().unwrap();
    let builder = Engine::builder(dir.path().join("device.redb"))
        .cloudkit(client(&gate.base_url()))
        .throttle(throttle_config())
        .session(session_config());
    let events = collect(builder.events());
    let engine = builder
        .build()
        .await
        .map_err(|e| format!("the engine did not start: {e}"))?;
    for name in LOCAL {
        engine
            .save(note(name, &format!("local {name}")))
            .await
            .map_err(|e| format!("save: {e}"))?;
    }

    // The fault happens.
    until("the fault to be used", async || {
        let faults = server.faults();
        (faults.armed().is_empty() && faults.armed_items().is_empty()).then_some(())
    })
    .await?;
    if case.fault == Fault::Refused {
        gate.close();
        until("the engine to say it is offline", async || {
            seen_status(&events, Status::Offline).then_some(())
        })
        .await?;
        // A few probes meet the closed gate.
        tokio::time::sleep(Duration::from_millis(300)).await;
        gate.open();
    }
    if let Reaction::Halt { .. } = reaction {
        until("the halt", async || {
            (!halts(&events).is_empty()).then_some(())
        })
        .await?;
        // A request already on its way when the halt came may still arrive; then none may.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = server_requests(&server, None);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let during = server_requests(&server, None) - before;
        if during > 0 {
            return Err(format!("{during} requests were sent while halted"));
        }
        engine.resume().await.map_err(|e| format!("resume: {e}"))?;
    }

    // The engine recovers, and a change made elsewhere afterwards arrives by notification.
    settle(&engine).await?;
    write_elsewhere(&elsewhere, LATE).await?;
    until(
        "the change made elsewhere to arrive by notification",
        async || engine.get(id(LATE)).await.ok().flatten().map(|_| ()),
    )
    .await?;
    let diagnostics = settle(&engine).await?;

    // (a) What the error table says happened.
    let seen = Seen {
        events: events.lock().unwrap().clone(),
        telemetry: captured.0.lock().unwrap().clone(),
    };
    let checked = async {
        check_reaction(case, &reaction, &seen, &server, &diagnostics)?;
        check_alive(&engine, &diagnostics).await?;
        check_nothing_lost(&engine, &elsewhere, &diagnostics).await
    };
    checked
        .await
        .map_err(|why| format!("{why}\n  expected {reaction:?}\n  saw {}", seen.summary()))?;
    engine.shutdown().await;
    Ok(())
}

/// (b) No panic: every component runs; the liveness rule held at every step.
async fn check_alive(
    engine: &Engine,
    diagnostics: &skysync_session::Diagnostics,
) -> Result<(), String> {
    let states = engine
        .component_states()
        .await
        .map_err(|e| format!("component states: {e}"))?;
    if let Some(down) = states
        .iter()
        .find(|s| s.state != skysync_actors::ChildState::Running)
    {
        return Err(format!("{} is not running: {:?}", down.child, down.state));
    }
    if diagnostics.liveness_violations > 0 {
        return Err(format!(
            "{} liveness violations",
            diagnostics.liveness_violations
        ));
    }
    Ok(())
}

/// (c) Nothing lost: every saved record is on the server or parked with its reason, and the
/// device equals the server.
async fn check_nothing_lost(
    engine: &Engine,
    elsewhere: &CloudKitClient,
    diagnostics: &skysync_session::Diagnostics,
) -> Result<(), String> {
    let parked: BTreeSet<String> = diagnostics
        .parked
        .iter()
        .map(|p| p.change.record_id().record_name.clone())
        .collect();
    let on_server = server_records(elsewhere).await?;
    for name in LOCAL {
        if !on_server.contains_key(name) && !parked.contains(name) {
            return Err(format!(
                "{name} was saved and is neither on the server nor parked"
            ));
        }
    }
    let mut local = BTreeMap::new();
    let mut after = None;
    // Bounded: the zone holds a few records; each page moves `after` on.
    for _ in 0..100 {
        let page = engine
            .records_in_zone(zone(), after, 500)
            .await
            .map_err(|e| format!("reading the device: {e}"))?;
        for record in page.records {
            if !parked.contains(&record.id.record_name) {
                local.insert(record.id.record_name.clone(), record);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if contents(&local) != contents(&on_server) {
        return Err(format!(
            "the device differs from the server:\n  device {:?}\n  server {:?}",
            local.keys().collect::<Vec<_>>(),
            on_server.keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Arms the case's fault on its step.
fn arm(server: &DevServer, case: &Case) {
    let faults = server.faults();
    let operation = case.step.operation();
    if case.step == Step::FetchSecondPage {
        // The first page goes through untouched; the fault hits the second.
        faults
            .arm(spec(operation, serde_json::json!({"delayMs": 0})))
            .unwrap();
    }
    let server_ms = |real: Duration| {
        let ms = real.as_secs_f64() * 1000.0 * TIME_SCALE;
        serde_json::json!(ms as u64)
    };
    let fault = match &case.fault {
        Fault::Request { code, retry_after } => {
            serde_json::json!({"serverErrorCode": code, "retryAfter": retry_after})
        }
        Fault::Item { code, retry_after } => {
            let item: ItemFaultSpec = serde_json::from_value(serde_json::json!({
                "recordName": ITEM_FAULTED, "serverErrorCode": code, "retryAfter": retry_after,
            }))
            .unwrap();
            faults.arm_item(item).unwrap();
            return;
        }
        Fault::Refused => serde_json::json!({"delayMs": server_ms(REFUSED_HOLD)}),
        Fault::Reset => serde_json::json!({"dropConnection": true}),
        Fault::Timeout => serde_json::json!({"delayMs": server_ms(TIMEOUT_HOLD)}),
        Fault::TruncatedJson => serde_json::json!({"truncatedJson": true}),
        Fault::HtmlPage => serde_json::json!({"htmlBody": true}),
        Fault::Garbage => serde_json::json!({"garbageBody": true}),
    };
    faults.arm(spec(operation, fault)).unwrap();
}

fn spec(operation: &str, mut fields: serde_json::Value) -> FaultSpec {
    let object = fields.as_object_mut().unwrap();
    object.retain(|_, v| !v.is_null());
    object.insert("operation".into(), operation.into());
    serde_json::from_value(fields).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Checking a reaction.

/// What a case saw: the engine's events and its telemetry.
struct Seen {
    events: Vec<SyncEvent>,
    telemetry: Vec<Telemetry>,
}

impl Seen {
    /// How long after the first retry of `kind` for `class` the next `operation` request
    /// started: the wait the retry actually got, however long the engine took to ask for it.
    fn retry_delay(&self, kind: &str, class: &str, operation: &str) -> Result<Duration, String> {
        let failed = self
            .telemetry
            .iter()
            .find_map(|t| match t {
                Telemetry::Retry {
                    kind: k,
                    class: c,
                    at,
                } if k == kind && c == class => Some(*at),
                _ => None,
            })
            .ok_or_else(|| format!("no {class} retry of {kind}"))?;
        let retried = self
            .telemetry
            .iter()
            .find_map(|t| match t {
                Telemetry::Request { operation: o, at } if o == operation && *at > failed => {
                    Some(*at)
                }
                _ => None,
            })
            .ok_or_else(|| format!("{operation} was not sent again after the {class} failure"))?;
        Ok(retried - failed)
    }

    fn waited(&self, cause: &str) -> bool {
        self.telemetry
            .iter()
            .any(|t| matches!(t, Telemetry::Wait { cause: c, .. } if c == cause))
    }

    fn retried(&self, kind: &str) -> bool {
        self.telemetry
            .iter()
            .any(|t| matches!(t, Telemetry::Retry { kind: k, .. } if k == kind))
    }

    fn halts(&self) -> Vec<HaltReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SyncEvent::Halted(halt) => Some(halt.reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn parked(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SyncEvent::ChangeParked { id, reason } => {
                    Some((id.record_name.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn summary(&self) -> String {
        let events: Vec<String> = self
            .events
            .iter()
            .filter(|e| !matches!(e, SyncEvent::Fetched { .. } | SyncEvent::Sent { .. }))
            .map(|e| format!("{e:?}"))
            .collect();
        let telemetry: Vec<String> = self
            .telemetry
            .iter()
            .map(|t| match t {
                Telemetry::Retry { kind, class, .. } => format!("retry {kind} {class}"),
                Telemetry::Wait { cause, ms } => format!("wait {cause} {ms} ms"),
                Telemetry::Request { operation, .. } => format!("request {operation}"),
            })
            .collect();
        format!(
            "events [{}], telemetry [{}]",
            events.join(", "),
            telemetry.join(", ")
        )
    }
}

fn check_reaction(
    case: &Case,
    reaction: &Reaction,
    seen: &Seen,
    server: &DevServer,
    diagnostics: &skysync_session::Diagnostics,
) -> Result<(), String> {
    use names::values::{error_class as class, wait_cause as cause};
    let halts = seen.halts();
    let retried = case.step.retried_operation();
    let throttles = diagnostics.throttle.as_ref().map_or(0, |t| t.throttles);
    let no_halt = || {
        if halts.is_empty() {
            Ok(())
        } else {
            Err(format!("halted: {halts:?}"))
        }
    };
    let no_park = || {
        let parked = seen.parked();
        if parked.is_empty() {
            Ok(())
        } else {
            Err(format!("parked: {parked:?}"))
        }
    };
    match reaction {
        Reaction::WaitRetryAfter { kind } => {
            no_halt()?;
            no_park()?;
            let waited = seen.retry_delay(kind, class::THROTTLED, retried)?;
            if waited < Duration::from_secs(RETRY_AFTER) {
                return Err(format!(
                    "sent again {waited:?} after a retryAfter of {RETRY_AFTER} s"
                ));
            }
            if !seen.waited(cause::RETRY_AFTER) {
                return Err("the wait was not reported as the server's deadline".into());
            }
            if throttles == 0 {
                return Err("the throttle did not take the throttle in".into());
            }
        }
        Reaction::Backoff { kind } => {
            no_halt()?;
            no_park()?;
            let waited = seen.retry_delay(kind, class::TRANSIENT, retried)?;
            if waited < LEAST_BACKOFF {
                return Err(format!("sent again after {waited:?}: no backoff"));
            }
            if throttles > 0 {
                return Err(format!(
                    "a transient failure was taken as a rate signal ({throttles} throttles)"
                ));
            }
        }
        Reaction::Offline => {
            no_halt()?;
            let waited = seen.retry_delay(case.step.kind(), class::OFFLINE, retried)?;
            if waited < LEAST_BACKOFF {
                return Err(format!("probed again after {waited:?}: no offline backoff"));
            }
            if throttles > 0 {
                return Err("being offline was taken as a rate signal".into());
            }
        }
        Reaction::Split => {
            no_halt()?;
            no_park()?;
            let sends = server_requests(server, Some("records/modify"));
            // One refused whole, then two halves (more if fetches brought other changes).
            if sends < 3 {
                return Err(format!(
                    "{sends} records/modify requests: the batch was not split"
                ));
            }
        }
        Reaction::RecreateZone => {
            no_halt()?;
            no_park()?;
            let creates = server_requests(server, Some("zones/modify"));
            if creates < 2 {
                return Err(format!(
                    "zones/modify sent {creates} times: the zone was not created again"
                ));
            }
            if server_requests(server, Some("changes/database")) < 2 {
                return Err("changes/database was not asked again".into());
            }
        }
        Reaction::Refetch { operation } => {
            no_halt()?;
            no_park()?;
            if seen.retried(case.step.kind()) {
                return Err("an expired token was counted as a failed attempt".into());
            }
            if server_requests(server, Some(operation)) < 2 {
                return Err(format!("{operation} was not asked again"));
            }
        }
        Reaction::Halt { kind } => {
            let code = match &case.fault {
                Fault::Request { code, .. } | Fault::Item { code, .. } => code.to_string(),
                _ => String::new(),
            };
            match halts.as_slice() {
                [HaltReason::Fatal { operation, error }]
                    if operation == kind && error.contains(&code) => {}
                other => {
                    return Err(format!(
                        "expected one fatal halt of {kind} naming {code}, got {other:?}"
                    ));
                }
            }
            no_park()?;
        }
        Reaction::Park => {
            no_halt()?;
            let code = match &case.fault {
                Fault::Item { code, .. } => code.to_string(),
                _ => String::new(),
            };
            match seen.parked().as_slice() {
                [(name, reason)] if name == ITEM_FAULTED && reason.contains(&code) => {}
                other => {
                    return Err(format!(
                        "expected {ITEM_FAULTED} parked naming {code}, got {other:?}"
                    ));
                }
            }
            match diagnostics.parked.as_slice() {
                [parked] if parked.change.record_id() == &id(ITEM_FAULTED) => {}
                other => return Err(format!("diagnostics show parked {other:?}")),
            }
        }
        Reaction::Resolve => {
            no_halt()?;
            no_park()?;
            if server_requests(server, Some("records/lookup")) == 0 {
                return Err("the server's copy was not looked up".into());
            }
        }
        Reaction::CourierRetries => {
            no_halt()?;
            no_park()?;
            if seen.retried(names::values::op_kind::ENSURE_NOTIFICATIONS) {
                return Err(
                    "the notifications were set up again: the courier should retry on its own"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The device, the server and the world around them.

/// A client of the dev server at `base` signed in as [`TOKEN`], with short limits.
fn client(base: &str) -> CloudKitClient {
    CloudKitClient::builder(CONTAINER, Auth::web("dev-api-token", TOKEN))
        .base_url(base)
        .limits(Limits {
            connect_timeout: Duration::from_secs(1),
            request_timeout: REQUEST_TIMEOUT,
            changes_page_size: Some(PAGE_SIZE),
            courier_poll_timeout: COURIER_POLL_TIMEOUT,
            courier_retry_min: Duration::from_millis(50),
            courier_retry_max: Duration::from_millis(400),
            ..Limits::default()
        })
        .build()
        .unwrap()
}

/// Pacing out of the way, and backoffs long enough that the wait before a retry is always seen
/// (a backoff that ends before the retry asks for its permit is no wait at all).
fn throttle_config() -> ThrottleConfig {
    ThrottleConfig {
        transient_backoff: Duration::from_millis(300),
        transient_backoff_cap: Duration::from_secs(1),
        offline_backoff: Duration::from_millis(300),
        offline_backoff_cap: Duration::from_secs(1),
        ..fast_throttle()
    }
}

/// A device that fetches only when told or notified, so that the last check shows the
/// notifications work.
fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new(vec![zone()]);
    config.fetch_interval = Duration::from_secs(3600);
    config.send_debounce = Duration::from_millis(20);
    config.local_retry = Duration::from_millis(100);
    config
}

/// The zone and the seeded records, written on the server directly (not through the gate).
async fn seed(elsewhere: &CloudKitClient) -> Result<(), String> {
    elsewhere
        .ensure_zones(vec![zone()])
        .await
        .map_err(|e| format!("seeding the zone: {e}"))?;
    let changes = SEEDED
        .iter()
        .map(|name| PendingChange::Save(note(name, &format!("seeded {name}"))))
        .collect();
    save_elsewhere(elsewhere, changes).await
}

async fn write_elsewhere(elsewhere: &CloudKitClient, name: &str) -> Result<(), String> {
    save_elsewhere(
        elsewhere,
        vec![PendingChange::Save(note(name, "written elsewhere"))],
    )
    .await
}

async fn save_elsewhere(
    elsewhere: &CloudKitClient,
    changes: Vec<PendingChange>,
) -> Result<(), String> {
    let outcomes = elsewhere
        .modify_records(ModifyBatch::new(zone(), changes).unwrap())
        .await
        .map_err(|e| format!("writing elsewhere: {e}"))?;
    match outcomes
        .iter()
        .find(|o| !matches!(o, ModifyOutcome::Saved { .. }))
    {
        Some(other) => Err(format!("writing elsewhere: {other:?}")),
        None => Ok(()),
    }
}

/// The server's records of the zone, by name, read through its API.
async fn server_records(elsewhere: &CloudKitClient) -> Result<BTreeMap<String, Record>, String> {
    let mut all = BTreeMap::new();
    let mut token = None;
    // Bounded: a handful of pages of a handful of records.
    for _ in 0..100 {
        let page = elsewhere
            .fetch_zone_changes(zone(), token)
            .await
            .map_err(|e| format!("reading the server: {e}"))?;
        for record in page.changed {
            all.insert(record.id.record_name.clone(), record);
        }
        for gone in page.deleted {
            all.remove(&gone.record_name);
        }
        if !page.more_coming {
            return Ok(all);
        }
        token = Some(page.token);
    }
    Err("the server's zone never ended".into())
}

/// Requests the server counted for the user, of one operation or of all.
fn server_requests(server: &DevServer, operation: Option<&str>) -> u64 {
    let user = skysync_devserver::auth::web_token_user(TOKEN);
    let stats = server.request_stats().user(&user);
    match operation {
        Some(op) => stats.operations.get(op).map_or(0, |s| s.requests),
        None => stats.totals.requests,
    }
}

/// Waits until the device has nothing pending, nothing in flight, no open conflict and no halt;
/// checks the liveness rule at every look.
async fn settle(engine: &Engine) -> Result<skysync_session::Diagnostics, String> {
    until("the device to settle", async || {
        match engine.diagnostics().await {
            Ok(d) if !d.liveness_ok => Some(Err(format!("liveness broken: {d:#?}"))),
            Ok(d)
                if d.queue.pending == 0
                    && d.in_flight.is_none()
                    && d.halt.is_none()
                    && d.open_conflicts == 0 =>
            {
                Some(Ok(d))
            }
            Ok(_) => None,
            Err(e) => Some(Err(format!("diagnostics: {e}"))),
        }
    })
    .await?
}

/// Polls `probe` every 20 ms until it answers, for at most [`WAIT_LIMIT`].
async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    // Bounded by the deadline.
    loop {
        if let Some(answer) = probe().await {
            return Ok(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects the engine's events as they come.
fn collect(mut events: tokio::sync::broadcast::Receiver<SyncEvent>) -> Arc<Mutex<Vec<SyncEvent>>> {
    let collected = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&collected);
    tokio::spawn(async move {
        // Ends when the engine's event sender goes.
        loop {
            match events.recv().await {
                Ok(event) => sink.lock().unwrap().push(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    collected
}

fn seen_status(events: &Mutex<Vec<SyncEvent>>, status: Status) -> bool {
    events
        .lock()
        .unwrap()
        .contains(&SyncEvent::StatusChanged(status))
}

fn halts(events: &Mutex<Vec<SyncEvent>>) -> Vec<HaltReason> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Halted(halt) => Some(halt.reason.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The telemetry of one case.

/// A retry, a wait or a request, as the engine's telemetry reported it, with when.
#[derive(Clone, Debug)]
enum Telemetry {
    Retry {
        kind: String,
        class: String,
        at: Instant,
    },
    Wait {
        cause: String,
        ms: u64,
    },
    /// An HTTP request started (its span opened once the throttle permitted it).
    Request {
        operation: String,
        at: Instant,
    },
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Telemetry>>>);

/// Records the engine's retry and wait events.
struct CaptureLayer(Captured);

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != skysync_transport::client::REQUEST_SPAN {
            return;
        }
        let at = Instant::now();
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let operation = fields.text.get("operation").cloned().unwrap_or_default();
        self.0
            .0
            .lock()
            .unwrap()
            .push(Telemetry::Request { operation, at });
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = event.metadata().name();
        if name != names::RETRY_EVENT && name != names::WAIT_EVENT {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let text = |key: &str| fields.text.get(key).cloned().unwrap_or_default();
        let seen = if name == names::RETRY_EVENT {
            Telemetry::Retry {
                kind: text(names::OP_KIND),
                class: text(names::ERROR_CLASS),
                at: Instant::now(),
            }
        } else {
            Telemetry::Wait {
                cause: text(names::WAIT_CAUSE),
                ms: fields.numbers.get(names::WAIT_MS).copied().unwrap_or(0),
            }
        };
        self.0.0.lock().unwrap().push(seen);
    }
}

#[derive(Default)]
struct Fields {
    text: BTreeMap<String, String>,
    numbers: BTreeMap<String, u64>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.text.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.numbers
            .insert(field.name().to_owned(), u64::try_from(value).unwrap_or(0));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.numbers.insert(field.name().to_owned(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.text
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
}
