//! What the session tells the app: its status, its events, why it halted, and its diagnostics.

use skysync_model::{RecordId, ZoneId};
use skysync_queue::{BatchLimits, ParkedChange, QueueDepth};
use skysync_throttle::ThrottleDiagnostics;
use std::fmt;
use std::time::Duration;

/// The one-word summary of what the engine is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Nothing to do: everything local is sent and the last fetch found nothing new.
    Idle,
    /// Fetching changes from the server (or setting up: account, zones, subscriptions).
    Downloading,
    /// Sending local changes.
    Uploading,
    /// An operation waits for the throttle: the server's `retryAfter`, a backoff, or pacing.
    Waiting,
    /// Stopped on purpose; see [`Halt`]. Nothing is sent until `resume`.
    Halted,
    /// No connection to the server; probing with backoff.
    Offline,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Idle => "Idle",
            Status::Downloading => "Downloading",
            Status::Uploading => "Uploading",
            Status::Waiting => "Waiting",
            Status::Halted => "Halted",
            Status::Offline => "Offline",
        })
    }
}

/// Why the engine halted. A halt keeps every pending change; the engine sends nothing until the
/// app (or, after [`HaltReason::Exhausted`], the supervisor) resumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halt {
    /// What happened.
    pub reason: HaltReason,
}

/// What made the engine halt, and what resumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaltReason {
    /// CloudKit refused for a reason retrying cannot fix (authentication, access, quota, a bad
    /// request). Fix the cause (new credentials, more quota), then `resume`.
    Fatal {
        /// The operation that was refused.
        operation: String,
        /// The server's code and reason (never tokens or field values).
        error: String,
    },
    /// One operation failed too often (throttled or transient). The engine resumes by itself
    /// after a cool-down that grows each time; `resume` does it at once.
    Exhausted {
        /// The operation.
        operation: String,
        /// Counted failures.
        failures: u32,
        /// The last failure.
        last_error: String,
        /// When the engine resumes by itself.
        cool_down: Duration,
    },
    /// A record from a newer schema arrived (its version field is above what this app knows), or,
    /// in strict mode, a record with fields this app does not know. Upgrade the app, then `resume`.
    NewerSchema {
        /// The record's type.
        record_type: String,
        /// The record's schema version, if it carried one.
        version: Option<i64>,
        /// What is unknown about it.
        detail: String,
    },
    /// A component kept failing and the supervisor gave up on it.
    ComponentFailed {
        /// The component (`"store"`, `"transport"`, ...).
        component: String,
        /// Its last failure.
        reason: String,
    },
    /// The app deleted its data on the server (`delete_all_remote_data`): nothing syncs until the
    /// app starts the engine again.
    RemoteDataDeleted,
}

impl HaltReason {
    /// The reason's kind in metrics and spans (`"fatal"`, `"exhausted"`, ...).
    pub fn kind(&self) -> &'static str {
        use skysync_telemetry::names::values::halt_reason as r;
        match self {
            HaltReason::Fatal { .. } => r::FATAL,
            HaltReason::Exhausted { .. } => r::EXHAUSTED,
            HaltReason::NewerSchema { .. } => r::NEWER_SCHEMA,
            HaltReason::ComponentFailed { .. } => r::COMPONENT_FAILED,
            HaltReason::RemoteDataDeleted => r::REMOTE_DATA_DELETED,
        }
    }
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaltReason::Fatal { operation, error } => write!(f, "{operation} refused: {error}"),
            HaltReason::Exhausted {
                operation,
                failures,
                last_error,
                cool_down,
            } => write!(
                f,
                "{operation} failed {failures} times (last: {last_error}); resuming in {} s",
                cool_down.as_secs()
            ),
            HaltReason::NewerSchema {
                record_type,
                version,
                detail,
            } => match version {
                Some(v) => write!(f, "a {record_type} record of schema version {v}: {detail}"),
                None => write!(f, "a {record_type} record: {detail}"),
            },
            HaltReason::ComponentFailed { component, reason } => {
                write!(f, "the {component} keeps failing: {reason}")
            }
            HaltReason::RemoteDataDeleted => f.write_str("the app deleted its remote data"),
        }
    }
}

/// What the engine did, for the app (a stream of these) and its dashboards.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncEvent {
    /// A page of a zone's changes was applied.
    Fetched {
        /// The operation that fetched it (the id its span and diagnostics show).
        batch_id: u64,
        /// The zone.
        zone: ZoneId,
        /// Server copies applied (records created or changed by another device).
        changed: usize,
        /// Records removed because another device deleted them.
        deleted: usize,
    },
    /// Records another device deleted (or that a full refetch showed gone).
    DeletedRemotely {
        /// The records.
        ids: Vec<RecordId>,
    },
    /// Changes the server confirmed.
    Sent {
        /// The operation that sent them (the id its span and diagnostics show).
        batch_id: u64,
        /// The zone.
        zone: ZoneId,
        /// Records saved.
        saved: usize,
        /// Records deleted.
        deleted: usize,
    },
    /// A conflict was resolved and committed.
    ConflictResolved {
        /// The record.
        id: RecordId,
        /// The resolution's kind (`"Send"`, `"AcceptServer"`, ...).
        resolution: &'static str,
    },
    /// A change was parked as failed; it stays visible and is never dropped.
    ChangeParked {
        /// The record.
        id: RecordId,
        /// Why (a CloudKit code and message, never field values).
        reason: String,
    },
    /// The user deleted a zone on the server: its local data is gone and it is not synced again.
    ZoneDeletedRemotely {
        /// The zone.
        zone: ZoneId,
    },
    /// The signed-in account changed: the old account's local data is about to be cleared. Export
    /// it now if it matters (the engine waits `account_change_grace` first).
    AccountChanged {
        /// The account the local data belonged to.
        previous: String,
        /// The account now signed in.
        current: String,
    },
    /// The server did something CloudKit's protocol or limits do not allow, or that would keep the
    /// engine busy for ever (a change feed without end, a token that never advances, an answer
    /// over the size cap, a change tag that changes on every read). The engine bounded it and
    /// went on; the same entry is in [`Diagnostics::server_misbehaving`].
    ServerMisbehaved(ServerMisbehavior),
    /// The engine halted.
    Halted(Halt),
    /// The one-word status changed.
    StatusChanged(Status),
}

/// The kinds of operation the session runs, one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// `users/caller`: who is signed in.
    CurrentUser,
    /// `zones/modify`: create the zones.
    EnsureZones,
    /// `subscriptions/modify`: one zone's subscription.
    EnsureSubscription,
    /// `tokens/create` and `tokens/register`: the notification token the courier long-polls.
    EnsureNotifications,
    /// `changes/database`.
    FetchDatabase,
    /// `changes/zone`: one page of a zone.
    FetchZone,
    /// `records/modify`: a batch of changes.
    Send,
    /// `records/lookup`: server copies of conflicting records.
    Lookup,
}

impl OperationKind {
    /// The kind's name in logs, spans and metrics (`"send"`, `"fetch_zone"`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            OperationKind::CurrentUser => "current_user",
            OperationKind::EnsureZones => "ensure_zones",
            OperationKind::EnsureSubscription => "ensure_subscription",
            OperationKind::EnsureNotifications => "ensure_notifications",
            OperationKind::FetchDatabase => "fetch_database",
            OperationKind::FetchZone => "fetch_zone",
            OperationKind::Send => "send",
            OperationKind::Lookup => "lookup",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation as diagnostics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationSummary {
    /// What kind.
    pub kind: OperationKind,
    /// Its zone, if it has one.
    pub zone: Option<ZoneId>,
    /// How many changes or records it carries.
    pub size: usize,
    /// A number that names this operation in events, logs and diagnostics.
    pub batch_id: u64,
}

/// Everything the engine can say about itself, at one moment.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The one-word summary.
    pub status: Status,
    /// Changes waiting to be sent, and parked ones.
    pub queue: QueueDepth,
    /// Parked changes with their reasons.
    pub parked: Vec<ParkedChange>,
    /// Conflicts waiting to be resolved.
    pub open_conflicts: u64,
    /// Records holding a change tag (the server confirmed them at least once).
    pub tagged_records: u64,
    /// The account the data belongs to, once known.
    pub account: Option<String>,
    /// When a page was last fetched and a send last confirmed (ms since the Unix epoch).
    pub last_fetch_unix_ms: Option<u64>,
    /// See `last_fetch_unix_ms`.
    pub last_send_unix_ms: Option<u64>,
    /// The operation in flight.
    pub in_flight: Option<OperationSummary>,
    /// The last operation that completed, and whether it succeeded.
    pub last_completed: Option<(OperationSummary, bool)>,
    /// The throttle: rate, ceiling, next permitted start and why it waits, retry counts.
    pub throttle: Option<ThrottleDiagnostics>,
    /// Why the engine halted, if it did.
    pub halt: Option<Halt>,
    /// Whether the engine considers itself offline.
    pub offline: bool,
    /// The batch limits in force (halved after a request was too large).
    pub batch_limits: BatchLimits,
    /// Whether the liveness rule holds now and held after every step so far: changes pending and
    /// not halted and not offline imply an operation in flight or a timer armed. False is a bug.
    pub liveness_ok: bool,
    /// Steps of the session after which the rule did not hold (checked after every step).
    pub liveness_violations: u64,
    /// How many times an operation was caught failing in a loop (more than 3 failures within 10
    /// minutes), reported before it exhausts, also as an event and a metric.
    pub loops_detected: u64,
    /// What the server did wrong since the engine started, the most recently seen last (at most
    /// [`ServerMisbehavior::KEPT`] entries; one per kind, operation, zone and record, with how
    /// often). A change feed's entries go once the feed reaches its end.
    pub server_misbehaving: Vec<ServerMisbehavior>,
}

/// Something a server did that would cost the engine unbounded time, requests or memory, and how
/// often: the engine bounded it (see [`MisbehaviorKind`] for how) and reports it here, as a
/// [`SyncEvent::ServerMisbehaved`] and as a warning in the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMisbehavior {
    /// What the server did, and what the engine did about it.
    pub kind: MisbehaviorKind,
    /// The operation that met it.
    pub operation: OperationKind,
    /// The zone it concerns, if it concerns one (`None` for the database's change feed).
    pub zone: Option<ZoneId>,
    /// How many times this engine met it.
    pub times: u64,
}

impl ServerMisbehavior {
    /// How many distinct misbehaviors diagnostics keep; past it the oldest is forgotten.
    pub const KEPT: usize = 32;
}

/// What a misbehaving server did, and how the engine bounded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MisbehaviorKind {
    /// A change feed still said `moreComing` after `pages` pages in one fetch
    /// ([`crate::SessionConfig::max_pages_per_fetch`]). The fetch stopped there and other work
    /// (sends) went on; the feed goes on from where it stopped at the next periodic fetch or
    /// `sync_now`. A very large zone does this too, and then completes over several fetches.
    FetchCutShort {
        /// Pages fetched before it stopped.
        pages: u32,
    },
    /// A change feed answered `moreComing` with the very token it was asked from, so it can never
    /// advance. Seen on the first such page; the feed is not asked again until the next periodic
    /// fetch or `sync_now`.
    TokenNotAdvancing,
    /// An answer larger than the transport's response size cap. Reading stopped at the cap (or
    /// before the first byte, when the answer declared its length); the operation is retried as a
    /// transient failure, so it exhausts into a halt with a cool-down if it goes on.
    ResponseTooLarge {
        /// The cap, in bytes.
        cap: usize,
        /// The length the answer declared, if that is what was refused.
        declared: Option<u64>,
        /// Bytes of the body read before reading stopped (never more than `cap`).
        read: usize,
    },
    /// `records/modify` answered CONFLICT for this record `conflicts` times in a row, each time
    /// with a server copy carrying another change tag, so resolving and sending again would never
    /// end ([`crate::SessionConfig::max_conflicts_per_record`]). The change is parked with a
    /// reason (nothing is lost); the app can retry it later.
    ChangeTagChurn {
        /// The record.
        record: RecordId,
        /// CONFLICT answers in a row.
        conflicts: u32,
    },
}

impl MisbehaviorKind {
    /// Whether this is about a change feed (cleared once the feed reaches its end).
    pub fn is_feed(&self) -> bool {
        matches!(
            self,
            MisbehaviorKind::FetchCutShort { .. } | MisbehaviorKind::TokenNotAdvancing
        )
    }

    /// Whether `other` is the same misbehavior (its counts aside).
    fn same_as(&self, other: &MisbehaviorKind) -> bool {
        match (self, other) {
            (
                MisbehaviorKind::ChangeTagChurn { record: a, .. },
                MisbehaviorKind::ChangeTagChurn { record: b, .. },
            ) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl ServerMisbehavior {
    /// Whether this entry is about the same thing as `other` (kind, operation, zone, record).
    pub(crate) fn same_as(&self, other: &ServerMisbehavior) -> bool {
        self.kind.same_as(&other.kind)
            && self.operation == other.operation
            && self.zone == other.zone
    }
}

impl fmt::Display for ServerMisbehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zone = self
            .zone
            .as_ref()
            .map(|z| format!(" (zone {})", z.zone_name))
            .unwrap_or_default();
        match &self.kind {
            MisbehaviorKind::FetchCutShort { pages } => write!(
                f,
                "{}{zone}: still more coming after {pages} pages; fetching the rest later",
                self.operation
            ),
            MisbehaviorKind::TokenNotAdvancing => write!(
                f,
                "{}{zone}: more coming with the same change token as asked; not asked again until the next fetch",
                self.operation
            ),
            MisbehaviorKind::ResponseTooLarge {
                cap,
                declared,
                read,
            } => match declared {
                Some(length) => write!(
                    f,
                    "{}{zone}: an answer declaring {length} bytes, over the cap of {cap}",
                    self.operation
                ),
                None => write!(
                    f,
                    "{}{zone}: an answer over the cap of {cap} bytes (stopped after {read})",
                    self.operation
                ),
            },
            MisbehaviorKind::ChangeTagChurn { record, conflicts } => write!(
                f,
                "{}{zone}: {conflicts} conflicts in a row on {}, each with another change tag; the change is parked",
                self.operation, record.record_name
            ),
        }
    }
}
