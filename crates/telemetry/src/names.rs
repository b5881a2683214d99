//! Every name skysync emits: spans, span attributes, events, metrics and metric labels.
//!
//! Dashboards, alerts and log searches are written against these strings, so they change only with
//! a note in the changelog. Everything skysync records goes through the constants here; nothing
//! spells a name inline.
//!
//! # Cardinality
//!
//! Metric labels come from small, fixed sets only: the operation kind, the error class, the wait
//! cause, the halt reason, the component, the outcome, the park reason and the conflict resolution
//! (the values are in [`values`]). Record names, record types, batch ids, error messages and change
//! tags are never labels: each would make a new time series per record. A zone name is allowed as
//! a *span* attribute ([`ZONE`]), because an app syncs a small, fixed set of zones it named itself;
//! it is never a metric label.
//!
//! # What never appears anywhere
//!
//! Tokens (`ckWebAuthToken`, `ckAPIToken`, web auth tokens), keys, request signatures and record
//! field values are never a span attribute, an event field, a metric label or a log line. Strings
//! that may carry one (a URL, a server's error text) go through [`crate::redact`] first.

// ---------------------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------------------

/// The span around one operation the session runs (one request to CloudKit and its handling):
/// attributes [`OP_KIND`], [`ZONE`], [`BATCH_SIZE`], [`ATTEMPT`], [`BATCH_ID`] and, once it
/// finished, [`OUTCOME`]. Every retry, wait and halt event of that operation is recorded on it.
pub const OP_SPAN: &str = "skysync.op";

// ---------------------------------------------------------------------------------------------
// Span attributes, event fields and metric labels
// ---------------------------------------------------------------------------------------------

/// The operation's kind, one of [`values::op_kind`] (`send`, `fetch_zone`, ...). A span attribute,
/// an event field and a metric label.
pub const OP_KIND: &str = "skysync.op.kind";
/// The zone an operation works on, when it works on one. A span attribute only (zones are a small
/// set the app names, but still never a metric label).
pub const ZONE: &str = "skysync.zone";
/// How many changes or records an operation carries. A span attribute.
pub const BATCH_SIZE: &str = "skysync.batch.size";
/// Which attempt at the same operation this is, from 1. A span attribute and an event field.
pub const ATTEMPT: &str = "skysync.attempt";
/// How an operation ended, one of [`values::outcome`]. A span attribute and a metric label.
pub const OUTCOME: &str = "skysync.outcome";
/// The session's id of an operation's batch: the same number appears on the span, on the events
/// about the batch and in the engine's diagnostics, so the three can be joined. A span attribute
/// and an event field; never a metric label.
pub const BATCH_ID: &str = "skysync.batch.id";
/// The class of a failure, one of [`values::error_class`]. An event field and a metric label.
pub const ERROR_CLASS: &str = "skysync.error.class";
/// The server's `retryAfter`, in milliseconds, when it sent one. An event field.
pub const RETRY_AFTER_MS: &str = "skysync.retry_after_ms";
/// Why the engine waits before its next request, one of [`values::wait_cause`]. An event field and
/// a metric label.
pub const WAIT_CAUSE: &str = "skysync.wait.cause";
/// How long a wait lasts, in milliseconds. An event field (the metric is
/// [`BACKOFF_DURATION`], in seconds).
pub const WAIT_MS: &str = "skysync.wait.ms";
/// Why the engine halted, one of [`values::halt_reason`]. An event field and a metric label.
pub const HALT_REASON: &str = "skysync.halt.reason";
/// A supervised component, one of [`values::component`]. An event field and a metric label.
pub const COMPONENT: &str = "skysync.component";
/// Why a change was parked, one of [`values::park_reason`]. An event field and a metric label.
pub const PARK_REASON: &str = "skysync.park.reason";
/// How a conflict was settled, one of [`values::resolution`]. An event field and a metric label.
pub const RESOLUTION: &str = "skysync.conflict.resolution";
/// How many times an operation failed within the loop detector's window. An event field.
pub const LOOP_FAILURES: &str = "skysync.loop.failures";
/// The loop detector's window, in milliseconds. An event field.
pub const LOOP_WINDOW_MS: &str = "skysync.loop.window_ms";

// ---------------------------------------------------------------------------------------------
// Events (tracing events; on the current `skysync.op` span when there is one)
// ---------------------------------------------------------------------------------------------

/// An operation failed and will be tried again: fields [`OP_KIND`], [`ERROR_CLASS`],
/// [`RETRY_AFTER_MS`] (when the server sent one). Counted in [`RETRIES`].
pub const RETRY_EVENT: &str = "skysync.retry";
/// The engine waits before its next request: fields [`WAIT_CAUSE`], [`WAIT_MS`]. Recorded in
/// [`BACKOFF_DURATION`].
pub const WAIT_EVENT: &str = "skysync.wait";
/// The engine halted: field [`HALT_REASON`]. Counted in [`HALTS`]; [`HALTED`] goes to 1.
pub const HALT_EVENT: &str = "skysync.halt";
/// The supervisor restarted a failed component: field [`COMPONENT`]. Counted in [`RESTARTS`].
pub const RESTART_EVENT: &str = "skysync.restart";
/// A change was parked as failed for the app to decide on: field [`PARK_REASON`]. Counted in
/// [`PARKED`].
pub const PARKED_EVENT: &str = "skysync.parked";
/// A conflict was resolved: field [`RESOLUTION`]. Counted in [`CONFLICTS`].
pub const CONFLICT_EVENT: &str = "skysync.conflict.resolved";
/// An operation failed more than the loop detector's threshold within its window, before it
/// exhausted its retries: fields [`OP_KIND`], [`LOOP_FAILURES`], [`LOOP_WINDOW_MS`]. Counted in
/// [`LOOPS`].
pub const LOOP_EVENT: &str = "skysync.loop.detected";

// ---------------------------------------------------------------------------------------------
// Metrics (all from the meter named [`METER`])
// ---------------------------------------------------------------------------------------------

/// The name of the meter every skysync instrument belongs to.
pub const METER: &str = "skysync";

/// Counter: operations tried again, by [`OP_KIND`] and [`ERROR_CLASS`].
pub const RETRIES: &str = "skysync.retries";
/// Histogram, seconds: every wait before a request, by [`WAIT_CAUSE`] (`pacing` is the throttle's
/// own delay, which DESIGN.md once called `skysync.throttle.delay`; `retry_after` and `backoff` are
/// the waits after failures). Its count is the number of waits.
pub const BACKOFF_DURATION: &str = "skysync.backoff.duration";
/// Counter: halts, by [`HALT_REASON`].
pub const HALTS: &str = "skysync.halts";
/// Gauge: changes waiting in the outbox (last recorded value).
pub const QUEUE_DEPTH: &str = "skysync.queue.depth";
/// Gauge: conflicts parked for the app and not yet decided (last recorded value).
pub const OPEN_CONFLICTS: &str = "skysync.open_conflicts";
/// Gauge, operations per second: the rate the throttle paces at now (last recorded value).
pub const THROTTLE_RATE: &str = "skysync.throttle.rate";
/// Gauge, operations per second: the highest rate the throttle allows itself, learned from the
/// server's throttles (last recorded value).
pub const THROTTLE_CEILING: &str = "skysync.throttle.ceiling";
/// Gauge: 1 while the engine is halted, 0 otherwise.
pub const HALTED: &str = "skysync.halted";
/// Histogram, seconds: how long operations took, by [`OP_KIND`] and [`OUTCOME`].
pub const OP_DURATION: &str = "skysync.op.duration";
/// Counter: records (saves and deletes) the server confirmed.
pub const RECORDS_SENT: &str = "skysync.records.sent";
/// Counter: records (changes and deletions) fetched from the server and applied.
pub const RECORDS_RECEIVED: &str = "skysync.records.received";
/// Counter: conflicts resolved, by [`RESOLUTION`].
pub const CONFLICTS: &str = "skysync.conflicts";
/// Counter: supervised restarts, by [`COMPONENT`].
pub const RESTARTS: &str = "skysync.restarts";
/// Counter: changes parked, by [`PARK_REASON`].
pub const PARKED: &str = "skysync.parked";
/// Counter: retry loops detected, by [`OP_KIND`].
pub const LOOPS: &str = "skysync.loops";

/// Every metric name, for dashboards and tests that check all of them.
pub const ALL_METRICS: [&str; 15] = [
    RETRIES,
    BACKOFF_DURATION,
    HALTS,
    QUEUE_DEPTH,
    OPEN_CONFLICTS,
    THROTTLE_RATE,
    THROTTLE_CEILING,
    HALTED,
    OP_DURATION,
    RECORDS_SENT,
    RECORDS_RECEIVED,
    CONFLICTS,
    RESTARTS,
    PARKED,
    LOOPS,
];

/// The bounded sets of label values. The engine passes these (or its own enums' names, which
/// match them) to [`crate::Metrics`]; a label is a `&'static str`, so no value built at run time
/// (a record name, an error text) can become one.
pub mod values {
    /// Operation kinds ([`super::OP_KIND`]), as the session's `OperationKind` prints them.
    pub mod op_kind {
        /// `users/caller`.
        pub const CURRENT_USER: &str = "current_user";
        /// `zones/modify`.
        pub const ENSURE_ZONES: &str = "ensure_zones";
        /// `subscriptions/modify`.
        pub const ENSURE_SUBSCRIPTION: &str = "ensure_subscription";
        /// `tokens/create` and `tokens/register`.
        pub const ENSURE_NOTIFICATIONS: &str = "ensure_notifications";
        /// `changes/database`.
        pub const FETCH_DATABASE: &str = "fetch_database";
        /// `changes/zone`.
        pub const FETCH_ZONE: &str = "fetch_zone";
        /// `records/modify`.
        pub const SEND: &str = "send";
        /// `records/lookup`.
        pub const LOOKUP: &str = "lookup";
    }

    /// Error classes ([`super::ERROR_CLASS`]), as the model's `ErrorClass` names them.
    pub mod error_class {
        /// The server said to slow down.
        pub const THROTTLED: &str = "throttled";
        /// A passing failure.
        pub const TRANSIENT: &str = "transient";
        /// No connection could be made.
        pub const OFFLINE: &str = "offline";
        /// Over a count or size limit.
        pub const TOO_LARGE: &str = "too_large";
        /// The server has a newer copy.
        pub const CONFLICT: &str = "conflict";
        /// The zone is gone.
        pub const ZONE_GONE: &str = "zone_gone";
        /// The sync token expired.
        pub const TOKEN_EXPIRED: &str = "token_expired";
        /// One change refused.
        pub const ITEM_REJECTED: &str = "item_rejected";
        /// Nothing retrying can fix.
        pub const FATAL: &str = "fatal";
        /// A local component did not answer (never a cloud error).
        pub const LOCAL: &str = "local";
    }

    /// Wait causes ([`super::WAIT_CAUSE`]), as the throttle's `WaitCause` names them.
    pub mod wait_cause {
        /// The pacing rate.
        pub const PACING: &str = "pacing";
        /// The server's `retryAfter` deadline.
        pub const RETRY_AFTER: &str = "retry_after";
        /// The backoff after a transient failure.
        pub const BACKOFF: &str = "backoff";
        /// The device looked offline; waiting for the next probe.
        pub const OFFLINE: &str = "offline";
        /// The governor quota, the hard cap on the request rate.
        pub const QUOTA: &str = "quota";
    }

    /// Halt reasons ([`super::HALT_REASON`]), one per variant of the session's `HaltReason`.
    pub mod halt_reason {
        /// CloudKit refused for a reason retrying cannot fix.
        pub const FATAL: &str = "fatal";
        /// One operation failed too often.
        pub const EXHAUSTED: &str = "exhausted";
        /// A record from a newer schema arrived.
        pub const NEWER_SCHEMA: &str = "newer_schema";
        /// A component kept failing and the supervisor gave up on it.
        pub const COMPONENT_FAILED: &str = "component_failed";
        /// The app deleted its data on the server.
        pub const REMOTE_DATA_DELETED: &str = "remote_data_deleted";
    }

    /// Supervised components ([`super::COMPONENT`]).
    pub mod component {
        /// The store and the queue, which share one database and restart together.
        pub const STORE: &str = "store";
        /// The throttle.
        pub const THROTTLE: &str = "throttle";
        /// The transport.
        pub const TRANSPORT: &str = "transport";
        /// The conflict resolver.
        pub const CONFLICT: &str = "conflict";
        /// The session.
        pub const SESSION: &str = "session";
    }

    /// Outcomes of an operation ([`super::OUTCOME`]).
    pub mod outcome {
        /// Everything in it succeeded.
        pub const OK: &str = "ok";
        /// It succeeded, with some items refused, conflicting or split off.
        pub const PARTIAL: &str = "partial";
        /// It failed and will be tried again.
        pub const RETRY: &str = "retry";
        /// It failed and the engine halted.
        pub const HALTED: &str = "halted";
        /// A local component did not answer; the operation is redone.
        pub const LOCAL_FAILURE: &str = "local_failure";
        /// It was abandoned (shutdown, account change).
        pub const CANCELLED: &str = "cancelled";
    }

    /// Why a change was parked ([`super::PARK_REASON`]).
    pub mod park_reason {
        /// The server deleted the record while this device edited it.
        pub const DELETED_ON_SERVER: &str = "deleted_on_server";
        /// This device deleted the record while another edited it.
        pub const DELETED_LOCALLY: &str = "deleted_locally";
        /// A strategy's ordering field held values it cannot compare.
        pub const UNORDERABLE_FIELD: &str = "unorderable_field";
        /// The server copy came without a change tag.
        pub const SERVER_COPY_WITHOUT_CHANGE_TAG: &str = "server_copy_without_change_tag";
        /// The server refused this one change.
        pub const REJECTED: &str = "rejected";
        /// A single change over the server's size limit.
        pub const TOO_LARGE: &str = "too_large";
    }

    /// Conflict resolutions ([`super::RESOLUTION`]), as the model's `Resolution::kind` names them.
    pub mod resolution {
        /// Save the resolved record over the server's copy.
        pub const SEND: &str = "Send";
        /// Delete on the server with its change tag.
        pub const SEND_DELETE: &str = "SendDelete";
        /// Take the server's state.
        pub const ACCEPT_SERVER: &str = "AcceptServer";
        /// Create a server-deleted record again.
        pub const RECREATE: &str = "Recreate";
        /// Bring a locally deleted record back.
        pub const RESTORE: &str = "Restore";
        /// Park for the app.
        pub const PARK: &str = "Park";
    }
}
