//! The instruments behind every skysync metric, with one typed method per thing the engine reports.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use tracing::Level;

use crate::loops::LoopReport;
use crate::names;

/// Bucket bounds (seconds) for [`names::BACKOFF_DURATION`] and [`names::OP_DURATION`]: from a
/// millisecond pacing gap to the hour-long cool-downs an exhausted operation can wait.
const DURATION_BOUNDS_SECONDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Every skysync instrument, and the methods the engine calls to record through them.
///
/// Each method records the metric *and* emits the tracing event of the same name (see
/// [`names`]), with the same labels as fields, so a log reader, a trace viewer and a dashboard see
/// the same thing. When called inside a [`crate::op_span`], the event lands on that span.
///
/// Labels are `&'static str` from the bounded sets in [`names::values`]: nothing built at run time
/// (a record name, an error text) can become a label.
///
/// Gauges are *recorded values* (synchronous OpenTelemetry gauges): the engine calls
/// [`Metrics::queue_depth`] and its siblings whenever the value changes, and each export carries
/// the last value recorded. This keeps the engine free of a shared snapshot that a callback would
/// have to lock from the exporter's thread.
///
/// Cloning is cheap (instruments are reference-counted handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    retries: Counter<u64>,
    backoff_duration: Histogram<f64>,
    halts: Counter<u64>,
    queue_depth: Gauge<u64>,
    open_conflicts: Gauge<u64>,
    throttle_rate: Gauge<f64>,
    throttle_ceiling: Gauge<f64>,
    halted: Gauge<u64>,
    op_duration: Histogram<f64>,
    records_sent: Counter<u64>,
    records_received: Counter<u64>,
    conflicts: Counter<u64>,
    restarts: Counter<u64>,
    parked: Counter<u64>,
    loops: Counter<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The instruments on the global meter provider (`opentelemetry::global::meter("skysync")`).
    ///
    /// Build this after [`crate::init`] (or after the app installed its own meter provider):
    /// instruments created before a provider is installed stay on the no-op provider.
    pub fn new() -> Self {
        Self::with_meter(&opentelemetry::global::meter(names::METER))
    }

    /// The instruments on a given meter (tests use a provider with an in-memory exporter).
    pub fn with_meter(meter: &Meter) -> Self {
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BOUNDS_SECONDS.to_vec())
                .build()
        };
        Self {
            retries: counter(names::RETRIES, "{retry}", "Operations tried again"),
            backoff_duration: seconds(names::BACKOFF_DURATION, "Waits before a request"),
            halts: counter(names::HALTS, "{halt}", "Times the engine halted"),
            queue_depth: meter
                .u64_gauge(names::QUEUE_DEPTH)
                .with_unit("{change}")
                .with_description("Changes waiting in the outbox")
                .build(),
            open_conflicts: meter
                .u64_gauge(names::OPEN_CONFLICTS)
                .with_unit("{conflict}")
                .with_description("Conflicts parked for the app")
                .build(),
            throttle_rate: meter
                .f64_gauge(names::THROTTLE_RATE)
                .with_unit("{operation}/s")
                .with_description("The rate the throttle paces at")
                .build(),
            throttle_ceiling: meter
                .f64_gauge(names::THROTTLE_CEILING)
                .with_unit("{operation}/s")
                .with_description("The highest rate the throttle allows itself")
                .build(),
            halted: meter
                .u64_gauge(names::HALTED)
                .with_description("1 while the engine is halted")
                .build(),
            op_duration: seconds(names::OP_DURATION, "How long operations took"),
            records_sent: counter(
                names::RECORDS_SENT,
                "{record}",
                "Records the server confirmed",
            ),
            records_received: counter(
                names::RECORDS_RECEIVED,
                "{record}",
                "Records fetched and applied",
            ),
            conflicts: counter(names::CONFLICTS, "{conflict}", "Conflicts resolved"),
            restarts: counter(names::RESTARTS, "{restart}", "Supervised restarts"),
            parked: counter(names::PARKED, "{change}", "Changes parked"),
            loops: counter(names::LOOPS, "{loop}", "Retry loops detected"),
        }
    }

    /// An operation of `kind` failed with an error of `class` and will be tried again, after the
    /// server's `retry_after` when it sent one.
    pub fn retry(&self, kind: &'static str, class: &'static str, retry_after: Option<Duration>) {
        self.retries.add(
            1,
            &[
                KeyValue::new(names::OP_KIND, kind),
                KeyValue::new(names::ERROR_CLASS, class),
            ],
        );
        match retry_after {
            Some(after) => tracing::event!(
                name: names::RETRY_EVENT,
                Level::INFO,
                { names::OP_KIND } = kind,
                { names::ERROR_CLASS } = class,
                { names::RETRY_AFTER_MS } = millis(after),
                "{}",
                names::RETRY_EVENT
            ),
            None => tracing::event!(
                name: names::RETRY_EVENT,
                Level::INFO,
                { names::OP_KIND } = kind,
                { names::ERROR_CLASS } = class,
                "{}",
                names::RETRY_EVENT
            ),
        }
    }

    /// The engine waits `duration` before its next request, because of `cause`
    /// ([`names::values::wait_cause`]).
    pub fn wait(&self, cause: &'static str, duration: Duration) {
        self.backoff_duration.record(
            duration.as_secs_f64(),
            &[KeyValue::new(names::WAIT_CAUSE, cause)],
        );
        tracing::event!(
            name: names::WAIT_EVENT,
            Level::DEBUG,
            { names::WAIT_CAUSE } = cause,
            { names::WAIT_MS } = millis(duration),
            "{}",
            names::WAIT_EVENT
        );
    }

    /// The engine halted for `reason_kind` ([`names::values::halt_reason`]); also sets
    /// [`names::HALTED`] to 1. The halt's full text goes to the app and diagnostics, not here.
    pub fn halt(&self, reason_kind: &'static str) {
        self.halts
            .add(1, &[KeyValue::new(names::HALT_REASON, reason_kind)]);
        self.halted.record(1, &[]);
        tracing::event!(
            name: names::HALT_EVENT,
            Level::WARN,
            { names::HALT_REASON } = reason_kind,
            "{}",
            names::HALT_EVENT
        );
    }

    /// The engine runs again after a halt: [`names::HALTED`] goes back to 0.
    pub fn resumed(&self) {
        self.halted.record(0, &[]);
    }

    /// The supervisor restarted `component` ([`names::values::component`]).
    pub fn restart(&self, component: &'static str) {
        self.restarts
            .add(1, &[KeyValue::new(names::COMPONENT, component)]);
        tracing::event!(
            name: names::RESTART_EVENT,
            Level::WARN,
            { names::COMPONENT } = component,
            "{}",
            names::RESTART_EVENT
        );
    }

    /// A change was parked for the app, because of `reason` ([`names::values::park_reason`]).
    pub fn parked(&self, reason: &'static str) {
        self.parked
            .add(1, &[KeyValue::new(names::PARK_REASON, reason)]);
        tracing::event!(
            name: names::PARKED_EVENT,
            Level::WARN,
            { names::PARK_REASON } = reason,
            "{}",
            names::PARKED_EVENT
        );
    }

    /// A conflict was settled with `resolution` ([`names::values::resolution`]).
    pub fn conflict_resolved(&self, resolution: &'static str) {
        self.conflicts
            .add(1, &[KeyValue::new(names::RESOLUTION, resolution)]);
        tracing::event!(
            name: names::CONFLICT_EVENT,
            Level::INFO,
            { names::RESOLUTION } = resolution,
            "{}",
            names::CONFLICT_EVENT
        );
    }

    /// An operation of `kind` ended with `outcome` ([`names::values::outcome`]) after `duration`.
    /// No event: the operation's span already says it (see [`crate::record_outcome`]).
    pub fn op_finished(&self, kind: &'static str, outcome: &'static str, duration: Duration) {
        self.op_duration.record(
            duration.as_secs_f64(),
            &[
                KeyValue::new(names::OP_KIND, kind),
                KeyValue::new(names::OUTCOME, outcome),
            ],
        );
    }

    /// The server confirmed `n` records (saves and deletes).
    pub fn records_sent(&self, n: u64) {
        self.records_sent.add(n, &[]);
    }

    /// `n` records fetched from the server were applied.
    pub fn records_received(&self, n: u64) {
        self.records_received.add(n, &[]);
    }

    /// `depth` changes wait in the outbox now.
    pub fn queue_depth(&self, depth: u64) {
        self.queue_depth.record(depth, &[]);
    }

    /// `open` conflicts are parked for the app now.
    pub fn open_conflicts(&self, open: u64) {
        self.open_conflicts.record(open, &[]);
    }

    /// The throttle paces at `per_second` operations per second now.
    pub fn throttle_rate(&self, per_second: f64) {
        self.throttle_rate.record(per_second, &[]);
    }

    /// The throttle's learned ceiling is `per_second` operations per second now.
    pub fn throttle_ceiling(&self, per_second: f64) {
        self.throttle_ceiling.record(per_second, &[]);
    }

    /// The loop detector reported an operation of `kind` failing in a loop: counted in
    /// [`names::LOOPS`] and emitted as [`names::LOOP_EVENT`].
    pub fn loop_detected<K>(&self, kind: &'static str, report: &LoopReport<K>) {
        self.loops.add(1, &[KeyValue::new(names::OP_KIND, kind)]);
        tracing::event!(
            name: names::LOOP_EVENT,
            Level::WARN,
            { names::OP_KIND } = kind,
            { names::LOOP_FAILURES } = i64::from(report.failures),
            { names::LOOP_WINDOW_MS } = millis(report.window),
            "{}",
            names::LOOP_EVENT
        );
    }
}

/// A duration in whole milliseconds, saturating, as `i64`: tracing-opentelemetry exports an
/// `i64` field as a number but a `u64` one as a string.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
