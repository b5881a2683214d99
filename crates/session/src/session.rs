//! The session actor: the state machine that keeps exactly one operation in flight.
//!
//! The session is the only actor that talks to more than one other. It decides the next operation
//! in DESIGN's priority order (account, zones, subscriptions, conflict lookups, fetches, sends),
//! hands it to a task of its own that waits for the throttle's permit and runs the request, and
//! applies the answer when the task reports back. While an operation is out, nothing else is
//! dispatched. Between operations it resolves open conflicts locally (no request), and when
//! nothing is left to do it arms the periodic fetch timer.

use crate::config::{AccountChangePolicy, SessionConfig};
use crate::types::{
    Diagnostics, Halt, HaltReason, MisbehaviorKind, OperationKind, OperationSummary,
    ServerMisbehavior, Status, SyncEvent,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use skysync_conflict::ConflictHandle;
use skysync_model::wire::UserIdentity;
use skysync_model::{
    ChangeToken, CloudError, ErrorClass, FieldValue, ParkReason, PendingChange, Record, RecordId,
    Resolution, ZoneId,
};
use skysync_queue::{Batch, BatchLimits, QueueHandle};
use skysync_store::{
    ConfirmedChange, DatabaseChanges, FetchedPage, ResolveOutcome, ResolvedConflict, StoreHandle,
    SyncMetadata, SyncMetadataChange,
};
use skysync_telemetry::names::values as labels;
use skysync_telemetry::{LoopDetector, Metrics, OpAttributes, op_span, record_outcome};
use skysync_throttle::{OperationId, Outcome, Permit, RetryVerdict, ThrottleHandle, WaitCause};
use skysync_transport::{
    DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, RequestError, TransportHandle,
    ZoneChangesPage, ZoneNotifications, zone_subscription,
};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// The five components the session drives, each behind its restartable handle.
#[derive(Clone, Debug)]
pub struct Components {
    /// The local mirror.
    pub store: StoreHandle,
    /// The outbox.
    pub queue: QueueHandle,
    /// Pacing and retry counting.
    pub throttle: ThrottleHandle,
    /// CloudKit.
    pub transport: TransportHandle,
    /// The conflict resolver.
    pub conflict: ConflictHandle,
}

/// One operation, with what it needs to run.
#[derive(Clone, Debug)]
enum Operation {
    CurrentUser,
    EnsureZones(Vec<ZoneId>),
    EnsureSubscription(ZoneId),
    EnsureNotifications,
    FetchDatabase(Option<ChangeToken>),
    FetchZone {
        zone: ZoneId,
        token: Option<ChangeToken>,
    },
    Send(Batch),
    Lookup {
        zone: ZoneId,
        ids: Vec<RecordId>,
    },
}

impl Operation {
    fn kind(&self) -> OperationKind {
        match self {
            Operation::CurrentUser => OperationKind::CurrentUser,
            Operation::EnsureZones(_) => OperationKind::EnsureZones,
            Operation::EnsureSubscription(_) => OperationKind::EnsureSubscription,
            Operation::EnsureNotifications => OperationKind::EnsureNotifications,
            Operation::FetchDatabase(_) => OperationKind::FetchDatabase,
            Operation::FetchZone { .. } => OperationKind::FetchZone,
            Operation::Send(_) => OperationKind::Send,
            Operation::Lookup { .. } => OperationKind::Lookup,
        }
    }

    fn zone(&self) -> Option<ZoneId> {
        match self {
            Operation::EnsureSubscription(zone)
            | Operation::FetchZone { zone, .. }
            | Operation::Lookup { zone, .. } => Some(zone.clone()),
            Operation::Send(batch) => batch.zone().cloned(),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        match self {
            Operation::EnsureZones(zones) => zones.len(),
            Operation::Send(batch) => batch.len(),
            Operation::Lookup { ids, .. } => ids.len(),
            _ => 1,
        }
    }

    /// The identity the throttle counts retries by: the same work, retried, keeps it.
    fn retry_key(&self) -> OperationId {
        let zone = self.zone().map(|z| z.zone_name).unwrap_or_default();
        OperationId::new(match self {
            Operation::Send(batch) => format!(
                "send:{zone}:{}",
                batch.changes().first().map(|c| c.seq.0).unwrap_or_default()
            ),
            other => format!("{}:{zone}", other.kind()),
        })
    }
}

/// A change feed: the database's (`changes/database`) or one zone's (`changes/zone`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Feed {
    Database,
    Zone(ZoneId),
}

impl Feed {
    fn zone(&self) -> Option<ZoneId> {
        match self {
            Feed::Database => None,
            Feed::Zone(zone) => Some(zone.clone()),
        }
    }

    fn operation(&self) -> OperationKind {
        match self {
            Feed::Database => OperationKind::FetchDatabase,
            Feed::Zone(_) => OperationKind::FetchZone,
        }
    }
}

/// CONFLICT answers for one record in a row, and the contents of the server's copy the last one
/// carried: a streak counts a tag that changes while the contents stay.
#[derive(Debug, Default)]
struct ConflictStreak {
    /// CONFLICTs in a row whose server copy had the contents of the one before.
    count: u32,
    /// The record type and fields of the server's copy the last CONFLICT carried.
    contents: Option<(
        String,
        std::collections::BTreeMap<String, skysync_model::Field>,
    )>,
}

/// What an operation's request answered (opaque: only the session reads it).
#[derive(Debug)]
pub struct Completion(Result<Answer, RequestError>);

/// What an operation's request answered.
#[derive(Debug)]
enum Answer {
    User(UserIdentity),
    ZonesEnsured(Vec<ZoneId>),
    SubscriptionEnsured(ZoneId),
    Notifications(ZoneNotifications),
    Database(DatabaseChangesPage),
    Zone(ZoneChangesPage),
    Sent(Batch, Vec<ModifyOutcome>),
    Looked(Vec<LookupOutcome>),
}

/// The session's messages: its interface. The [`crate::Engine`] sends most of them.
pub enum SessionMsg {
    /// A local change was committed: send soon.
    LocalChanged,
    /// Fetch and send now.
    SyncNow,
    /// A notification said a zone changed.
    RemoteChanged(ZoneId),
    /// The notification courier failed for good: the notifications are set up again, or the
    /// engine halts, as the error table says for this error.
    NotificationsFailed(CloudError),
    /// Leave a halt and sync again.
    Resume(RpcReplyPort<()>),
    /// Diagnostics, with the liveness verdict.
    Diagnostics(RpcReplyPort<Diagnostics>),
    /// Delete the synced zones on the server and stop syncing.
    DeleteAllRemoteData(RpcReplyPort<Result<(), String>>),
    /// Stop dispatching; cancel or finish the operation in flight; answer when done.
    Shutdown(RpcReplyPort<()>),
    /// A component the supervisor gave up on.
    ComponentFailed {
        /// The component.
        component: String,
        /// Its last failure.
        reason: String,
    },
    /// A timer fired (the generation tells stale timers apart).
    Timer(u64),
    /// The operation's task is waiting for the throttle.
    Waiting {
        /// The operation's batch id.
        id: u64,
        /// Until when.
        until: Instant,
        /// Why.
        cause: WaitCause,
    },
    /// The operation's task got its permit and sent the request.
    Started(u64),
    /// The operation's task ended.
    Done(u64, Box<Completion>),
}

impl std::fmt::Debug for SessionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionMsg::LocalChanged => "LocalChanged",
            SessionMsg::SyncNow => "SyncNow",
            SessionMsg::RemoteChanged(_) => "RemoteChanged",
            SessionMsg::NotificationsFailed(_) => "NotificationsFailed",
            SessionMsg::Resume(_) => "Resume",
            SessionMsg::Diagnostics(_) => "Diagnostics",
            SessionMsg::DeleteAllRemoteData(_) => "DeleteAllRemoteData",
            SessionMsg::Shutdown(_) => "Shutdown",
            SessionMsg::ComponentFailed { .. } => "ComponentFailed",
            SessionMsg::Timer(_) => "Timer",
            SessionMsg::Waiting { .. } => "Waiting",
            SessionMsg::Started(_) => "Started",
            SessionMsg::Done(..) => "Done",
        })
    }
}

/// What the session starts with.
pub struct SessionArgs {
    /// The components.
    pub components: Components,
    /// How to behave.
    pub config: SessionConfig,
    /// Where events go.
    pub events: broadcast::Sender<SyncEvent>,
    /// Where the status goes.
    pub status: watch::Sender<Status>,
}

struct InFlight {
    op: Operation,
    summary: OperationSummary,
    waiting: bool,
    task: tokio::task::JoinHandle<()>,
    span: tracing::Span,
    started: Instant,
}

/// The session actor's state.
pub struct SessionState {
    c: Components,
    config: SessionConfig,
    events: broadcast::Sender<SyncEvent>,
    status: watch::Sender<Status>,
    meta: SyncMetadata,
    /// Zones this process has not fetched to the end yet (every zone at start).
    unfetched: BTreeSet<ZoneId>,
    fetch_wanted: bool,
    lookups: Vec<RecordId>,
    in_flight: Option<InFlight>,
    next_id: u64,
    last_completed: Option<(OperationSummary, bool)>,
    halt: Option<Halt>,
    exhausted_halts: u32,
    offline: bool,
    limits: BatchLimits,
    timer: Option<(u64, Instant)>,
    timer_generation: u64,
    /// Full refetches in progress after an expired token: the records seen so far, per zone.
    refetch_seen: HashMap<ZoneId, BTreeSet<RecordId>>,
    /// The token a refetch goes on from, per zone, while the store keeps none (it is stored with
    /// the refetch's last page: a refetch cut short by a crash starts over, see
    /// `StoreHandle::apply_refetched_page`).
    refetch_token: HashMap<ZoneId, ChangeToken>,
    shutting_down: bool,

    /// Whether this process has asked who is signed in (once per start: the account may change
    /// while the app is not running).
    account_checked: bool,
    /// Whether this process listens for the server's zone-change notifications.
    notifications_started: bool,
    /// Steps after which the liveness rule did not hold (a bug if ever above zero).
    liveness_violations: u64,
    /// After a component did not answer: nothing is dispatched until the timer fires.
    local_hold: bool,
    /// When the app last saved or deleted something (a `LocalChanged`).
    last_local_change: Option<Instant>,
    /// Since when a partial batch has been held back for more changes to join it.
    linger_since: Option<Instant>,
    /// Set by `next_operation` when it holds a partial batch back: when to look again.
    linger_until: Option<Instant>,
    /// Every retry, wait, halt, park and resolution, as metrics and events.
    metrics: Metrics,
    /// Operations that keep failing, reported before they exhaust.
    loops: LoopDetector<String>,
    /// Attempts of the same operation (by its retry key), for the op span.
    attempts: HashMap<String, u32>,
    /// How many times an operation was seen failing in a loop (before it exhausted).
    loops_detected: u64,
    /// The task that hands notifications to the session; ended when the session stops, which
    /// closes the notification stream and ends the courier's long poll.
    notification_task: Option<tokio::task::JoinHandle<()>>,
    /// The batch id of the operation whose answer is being applied (for its events).
    applying: u64,
    /// What the server did wrong, as diagnostics show it (at most `ServerMisbehavior::KEPT`).
    misbehaving: Vec<ServerMisbehavior>,
    /// Pages of each change feed fetched in this fetch pass while the server said `moreComing`.
    feed_pages: HashMap<Feed, u32>,
    /// Feeds cut short in this fetch pass (a page bound reached, a token that did not advance):
    /// not fetched again until the next pass (the periodic fetch, `sync_now`, `resume`).
    held_back: BTreeSet<Feed>,
    /// CONFLICT answers to `records/modify` in a row in which the server's copy changed its tag
    /// and nothing else, per record (forgotten once the server confirms the record, or the
    /// conflict ends without a re-send).
    conflicts_in_a_row: HashMap<RecordId, ConflictStreak>,
    /// A change of the send being applied that failed in passing (throttled or transient): the
    /// send is then retried as the error table says instead of counted a success.
    passing_item_failure: Option<CloudError>,
}

/// The session actor. Spawn it through the [`crate::Engine`].
#[derive(Debug, Default)]
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let meta = args.components.store.sync_metadata().await?;
        let limits = args.config.batch_limits;
        let unfetched = args
            .config
            .zones
            .iter()
            .filter(|z| !meta.deleted_remotely.contains(z))
            .cloned()
            .collect();
        let mut state = SessionState {
            c: args.components,
            config: args.config,
            events: args.events,
            status: args.status,
            meta,
            unfetched,
            fetch_wanted: true,
            lookups: Vec::new(),
            in_flight: None,
            next_id: 0,
            last_completed: None,
            halt: None,
            exhausted_halts: 0,
            offline: false,
            limits,
            timer: None,
            timer_generation: 0,
            refetch_seen: HashMap::new(),
            refetch_token: HashMap::new(),
            shutting_down: false,

            account_checked: false,
            notifications_started: false,
            liveness_violations: 0,
            local_hold: false,
            last_local_change: None,
            linger_since: None,
            linger_until: None,
            metrics: Metrics::new(),
            loops: LoopDetector::new(3, Duration::from_secs(600)),
            attempts: HashMap::new(),
            loops_detected: 0,
            notification_task: None,
            applying: 0,
            misbehaving: Vec::new(),
            feed_pages: HashMap::new(),
            held_back: BTreeSet::new(),
            conflicts_in_a_row: HashMap::new(),
            passing_item_failure: None,
        };
        state.step(&myself).await;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(in_flight) = state.in_flight.take() {
            in_flight.task.abort();
        }
        if let Some(task) = state.notification_task.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::LocalChanged => {
                // Send within the debounce, even if a later timer (the periodic fetch, a long
                // backoff) is armed; not while halted or while an operation is out.
                let debounce = state.config.send_debounce;
                let now = Instant::now();
                state.last_local_change = Some(now);
                let due = now + debounce;
                if state.in_flight.is_none()
                    && state.halt.is_none()
                    && state.timer.is_none_or(|(_, at)| at > due)
                {
                    state.arm_timer(&myself, debounce);
                }
                return Ok(());
            }
            SessionMsg::SyncNow => state.begin_fetch_pass(),
            SessionMsg::RemoteChanged(zone) => {
                state.fetch_wanted = true;
                state.unfetched.insert(zone);
            }
            SessionMsg::NotificationsFailed(error) => {
                // The channel is gone: changes may have gone unnoticed, and a new one is set up
                // (`tokens/create`) as a failed attempt of the operation that made it.
                state.notifications_started = false;
                state.notification_task = None;
                state.fetch_wanted = true;
                let op = Operation::EnsureNotifications;
                let key = op.retry_key();
                state.on_request_failed(&myself, &op, &key, error).await;
            }
            SessionMsg::Resume(reply) => {
                if !matches!(
                    state.halt.as_ref().map(|h| &h.reason),
                    Some(HaltReason::RemoteDataDeleted)
                ) {
                    state.halt = None;
                }
                state.begin_fetch_pass();
                // A resume is a fresh start for every operation's count.
                let _ = state.c.throttle.clear_retries().await;
                state.metrics.resumed();
                let _ = reply.send(());
            }
            SessionMsg::Diagnostics(reply) => {
                let diagnostics = state.diagnostics().await;
                let _ = reply.send(diagnostics);
                return Ok(());
            }
            SessionMsg::DeleteAllRemoteData(reply) => {
                let result = state.delete_all_remote_data().await;
                let _ = reply.send(result);
            }
            SessionMsg::Shutdown(reply) => {
                state.shutting_down = true;
                if let Some(in_flight) = state.in_flight.take() {
                    // Abandoned cleanly: nothing of it was committed locally, and every
                    // operation is safe to redo at the next start.
                    in_flight.task.abort();
                }
                let _ = reply.send(());
                return Ok(());
            }
            SessionMsg::ComponentFailed { component, reason } => {
                state.halt(HaltReason::ComponentFailed { component, reason });
            }
            SessionMsg::Timer(generation) => {
                if state.timer.is_some_and(|(g, _)| g == generation) {
                    state.timer = None;
                    if let Some(Halt {
                        reason: HaltReason::Exhausted { .. },
                    }) = &state.halt
                    {
                        // The cool-down is over: the supervisor's resume.
                        state.halt = None;
                        state.metrics.resumed();
                        let _ = state.c.throttle.clear_retries().await;
                    }
                    if state.in_flight.is_none() && state.pending_count().await == 0 {
                        // The periodic fetch: a new pass, in which feeds cut short go on.
                        state.begin_fetch_pass();
                    }
                } else {
                    return Ok(());
                }
            }
            SessionMsg::Waiting { id, until, cause } => {
                if let Some(in_flight) = state
                    .in_flight
                    .as_mut()
                    .filter(|f| f.summary.batch_id == id)
                {
                    in_flight.waiting = true;
                    let wait = until.saturating_duration_since(Instant::now());
                    let span = in_flight.span.clone();
                    let _entered = span.enter();
                    state.metrics.wait(wait_cause(cause), wait);
                    drop(_entered);
                    state.publish_status();
                }
                return Ok(());
            }
            SessionMsg::Started(id) => {
                if let Some(in_flight) = state
                    .in_flight
                    .as_mut()
                    .filter(|f| f.summary.batch_id == id)
                {
                    in_flight.waiting = false;
                    state.publish_status();
                }
                return Ok(());
            }
            SessionMsg::Done(id, result) => {
                let Some(in_flight) = state.in_flight.take_if(|f| f.summary.batch_id == id) else {
                    return Ok(());
                };
                state.complete(&myself, in_flight, result.0).await;
            }
        }
        state.step(&myself).await;
        Ok(())
    }
}

impl SessionState {
    /// Dispatches the next operation if none is in flight, or arms the timer that will.
    async fn step(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.shutting_down
            || self.in_flight.is_some()
            || (self.local_hold && self.timer.is_some())
        {
            self.publish_status();
            return;
        }
        self.local_hold = false;
        self.resolve_open_conflicts().await;
        if self.halt.is_none()
            && let Some(op) = self.next_operation().await
        {
            self.dispatch(myself, op);
        } else if self.halt.is_none()
            && let Some(at) = self.linger_until.take()
        {
            // A partial batch waits for the changes still coming to join it.
            if self.timer.is_none_or(|(_, armed)| armed > at) {
                self.arm_timer(myself, at.saturating_duration_since(Instant::now()));
            }
        } else if self.halt.is_none() && self.timer.is_none() {
            let interval = jittered(self.config.fetch_interval);
            self.arm_timer(myself, interval);
        }
        self.publish_status();
        // The liveness rule, checked after every step: changes pending and not halted and not
        // offline imply an operation in flight or a timer armed.
        if !self.is_live(self.pending_count().await) {
            self.liveness_violations += 1;
            tracing::error!("liveness broken: changes pending, nothing in flight, no timer armed");
        }
    }

    fn is_live(&self, pending: u64) -> bool {
        pending == 0
            || self.halt.is_some()
            || self.offline
            || self.shutting_down
            || self.in_flight.is_some()
            || self.timer.is_some()
    }

    /// DESIGN's priority: account, zones, subscriptions, conflict lookups, fetch, send.
    async fn next_operation(&mut self) -> Option<Operation> {
        if !self.account_checked || self.meta.account.is_none() {
            return Some(Operation::CurrentUser);
        }
        let synced: Vec<ZoneId> = self
            .config
            .zones
            .iter()
            .filter(|z| !self.meta.deleted_remotely.contains(z))
            .cloned()
            .collect();
        let missing: Vec<ZoneId> = synced
            .iter()
            .filter(|z| !self.meta.ensured_zones.contains(z))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Some(Operation::EnsureZones(missing));
        }
        if self.config.notifications
            && let Some(zone) = synced.iter().find(|z| {
                !self
                    .meta
                    .ensured_subscriptions
                    .contains(&self.config.subscription_id(z))
            })
        {
            return Some(Operation::EnsureSubscription(zone.clone()));
        }
        if self.config.notifications && !self.notifications_started {
            return Some(Operation::EnsureNotifications);
        }
        if let Some(first) = self.lookups.first() {
            let zone = first.zone.clone();
            let ids: Vec<RecordId> = self
                .lookups
                .iter()
                .filter(|id| id.zone == zone)
                .take(skysync_model::MAX_OPERATIONS_PER_REQUEST)
                .cloned()
                .collect();
            return Some(Operation::Lookup { zone, ids });
        }
        if self.fetch_wanted && !self.held_back.contains(&Feed::Database) {
            return Some(Operation::FetchDatabase(self.meta.database_token.clone()));
        }
        let to_fetch = self
            .meta
            .zones_to_fetch
            .iter()
            .chain(self.unfetched.iter())
            .find(|z| synced.contains(z) && !self.held_back.contains(&Feed::Zone((*z).clone())))
            .cloned();
        if let Some(zone) = to_fetch {
            let token = match self.c.store.change_token(zone.clone()).await.ok().flatten() {
                Some(token) => Some(token),
                None => self.refetch_token.get(&zone).cloned(),
            };
            if token.is_none() && self.zone_holds_records(&zone).await {
                // A fetch from no token returns the live records only, never a deletion: whatever
                // is held here with a tag and not returned was deleted on the server. That holds
                // however the token went (expired, or forgotten and then lost with a restart).
                // A zone with nothing held here (a fresh device) has nothing to reconcile, and
                // its first fetch keeps no set of every record it brings.
                self.refetch_seen.entry(zone.clone()).or_default();
            }
            return Some(Operation::FetchZone { zone, token });
        }
        match self.c.queue.next_batch_within(self.limits).await {
            Ok(batch) if !batch.is_empty() => {
                if let Some(at) = self.linger_deadline(&batch) {
                    self.linger_until = Some(at);
                    return None;
                }
                self.linger_since = None;
                if let Some(zone) = batch
                    .zone()
                    .filter(|z| self.meta.deleted_remotely.contains(z))
                {
                    // The app wrote to a zone the user deleted: it wants the zone again. It is
                    // created anew (the old data stays gone) before anything is sent to it.
                    let zone = zone.clone();
                    self.update_meta(SyncMetadataChange::ZoneWanted(zone.clone()))
                        .await;
                    return Some(Operation::EnsureZones(vec![zone]));
                }
                Some(Operation::Send(batch))
            }
            _ => None,
        }
    }

    fn dispatch(&mut self, myself: &ActorRef<SessionMsg>, op: Operation) {
        self.next_id += 1;
        let summary = OperationSummary {
            kind: op.kind(),
            zone: op.zone(),
            size: op.size(),
            batch_id: self.next_id,
        };
        let attempt = {
            let count = self
                .attempts
                .entry(op.retry_key().as_str().to_owned())
                .or_insert(0);
            *count += 1;
            *count
        };
        let span = op_span(OpAttributes {
            kind: summary.kind.as_str(),
            zone: summary.zone.as_ref().map(|z| z.zone_name.as_str()),
            batch_size: summary.size,
            attempt,
            batch_id: summary.batch_id,
        });
        tracing::debug!(parent: &span, "operation dispatched");
        let task = tokio::spawn(
            run(
                myself.clone(),
                self.c.throttle.clone(),
                self.c.transport.clone(),
                self.config.subscription_prefix.clone(),
                op.clone(),
                summary.batch_id,
            )
            .instrument(span.clone()),
        );
        self.timer = None;
        self.in_flight = Some(InFlight {
            op,
            summary,
            waiting: false,
            task,
            span,
            started: Instant::now(),
        });
    }

    /// Applies what an operation's request answered.
    async fn complete(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        in_flight: InFlight,
        result: Result<Answer, RequestError>,
    ) {
        let InFlight {
            op,
            summary,
            span,
            started,
            ..
        } = in_flight;
        let _entered = span.enter();
        let key = op.retry_key();
        let kind = summary.kind.as_str();
        let elapsed = started.elapsed();
        let answer = match result {
            Ok(answer) => answer,
            Err(RequestError::Local(error)) => {
                record_outcome(&span, labels::outcome::LOCAL_FAILURE);
                self.metrics
                    .op_finished(kind, labels::outcome::LOCAL_FAILURE, elapsed);
                // Not a cloud failure: not counted, not a rate signal. Redo after a pause.
                tracing::warn!(%error, kind = %summary.kind, "a component did not answer; redoing the operation");
                self.last_completed = Some((summary, false));
                let retry = self.config.local_retry;
                self.arm_timer(myself, retry);
                self.local_hold = true;
                return;
            }
            Err(RequestError::Cloud(error)) => {
                self.last_completed = Some((summary, false));
                self.on_request_failed(myself, &op, &key, error).await;
                let outcome = if self.halt.is_some() {
                    labels::outcome::HALTED
                } else {
                    labels::outcome::RETRY
                };
                record_outcome(&span, outcome);
                self.metrics.op_finished(kind, outcome, elapsed);
                return;
            }
        };
        if self.offline {
            self.offline = false;
        }
        self.applying = summary.batch_id;
        let applied = self.apply(myself, &op, answer).await;
        let passing = self.passing_item_failure.take();
        let succeeded = applied && passing.is_none();
        if succeeded {
            let _ = self.c.throttle.report(key.clone(), Outcome::Success).await;
            self.attempts.remove(key.as_str());
            self.loops.record_success(&key.as_str().to_owned());
        }
        let retried = passing.is_some();
        if let Some(error) = passing {
            // What went through is confirmed; the changes that failed in passing stay pending,
            // and the send waits and counts as the error table says for their failure.
            self.on_request_failed(myself, &op, &key, error).await;
        }
        let outcome = if succeeded {
            labels::outcome::OK
        } else if retried && self.halt.is_none() {
            labels::outcome::RETRY
        } else {
            labels::outcome::HALTED
        };
        record_outcome(&span, outcome);
        self.metrics.op_finished(kind, outcome, elapsed);
        self.last_completed = Some((summary, succeeded));
        self.record_gauges().await;
    }

    /// DESIGN's error table for a failed request.
    async fn on_request_failed(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        op: &Operation,
        key: &OperationId,
        error: CloudError,
    ) {
        let class = class_for(op, &error);
        tracing::warn!(error = %error, ?class, kind = %op.kind(), "operation failed");
        if let CloudError::ResponseTooLarge {
            cap,
            declared,
            read,
            ..
        } = error
        {
            self.misbehaved(
                MisbehaviorKind::ResponseTooLarge {
                    cap,
                    declared,
                    read,
                },
                op.kind(),
                op.zone(),
            );
        }
        match class {
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Offline => {
                self.offline = class == ErrorClass::Offline;
                let kind = op.kind().as_str();
                self.metrics
                    .retry(kind, error_class(class), error.retry_after());
                if let Some(report) = self
                    .loops
                    .record_failure(key.as_str().to_owned(), Instant::now().into_std())
                {
                    self.metrics.loop_detected(kind, &report);
                    self.loops_detected += 1;
                }
                if let Some(outcome) = throttle_outcome(&error, class)
                    && let Ok(RetryVerdict::Exhausted {
                        failures,
                        last_error,
                    }) = self.c.throttle.report(key.clone(), outcome).await
                {
                    self.exhausted_halts = self.exhausted_halts.saturating_add(1);
                    let cool_down = self
                        .config
                        .exhausted_cool_down
                        .saturating_mul(1 << self.exhausted_halts.saturating_sub(1).min(6))
                        .min(Duration::from_secs(3600));
                    self.halt(HaltReason::Exhausted {
                        operation: op.kind().to_string(),
                        failures,
                        last_error: last_error.to_string(),
                        cool_down,
                    });
                    self.arm_timer(myself, cool_down);
                }
            }
            ErrorClass::TooLarge => {
                if let Operation::Send(batch) = op {
                    if batch.len() <= 1 {
                        self.park_batch(batch, &error.to_string()).await;
                    } else {
                        // Halves: the next batches are formed at half the size.
                        self.limits = BatchLimits::new(batch.len() / 2, self.limits.max_bytes / 2);
                    }
                }
            }
            ErrorClass::TokenExpired => {
                if let Operation::FetchZone { zone, .. } = op {
                    let _ = self.c.store.forget_token(zone.clone()).await;
                    self.refetch_token.remove(zone);
                    self.refetch_seen.insert(zone.clone(), BTreeSet::new());
                    self.unfetched.insert(zone.clone());
                } else {
                    // The database token expired: start over from no token.
                    let _ = self
                        .c
                        .store
                        .apply_database_changes(DatabaseChanges {
                            token: None,
                            changed: self.config.zones.clone(),
                            deleted: Vec::new(),
                        })
                        .await;
                    self.reload_meta().await;
                }
            }
            ErrorClass::ZoneGone => {
                if let Some(zone) = op.zone() {
                    self.zone_gone(zone).await;
                }
            }
            ErrorClass::Fatal | ErrorClass::Conflict | ErrorClass::ItemRejected => {
                self.halt(HaltReason::Fatal {
                    operation: op.kind().to_string(),
                    error: error_brief(&error),
                })
            }
        }
    }

    /// ZONE_NOT_FOUND: check whether the user deleted it (then drop it), otherwise create it again
    /// and re-send its records.
    async fn zone_gone(&mut self, zone: ZoneId) {
        if self.meta.deleted_remotely.contains(&zone) {
            return;
        }
        // Ask changes/database first: a zone deleted on purpose must not be re-created.
        self.fetch_wanted = true;
        match self.c.store.reset_zone(zone.clone()).await {
            Ok(reset) => {
                tracing::info!(zone = %zone.zone_name, requeued = reset.requeued, "zone gone on the server; it will be created again");
            }
            Err(error) => tracing::warn!(%error, "resetting a zone failed"),
        }
        self.unfetched.insert(zone);
        self.reload_meta().await;
    }

    /// Applies a successful answer; false if it turned out to be a failure after all.
    async fn apply(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        op: &Operation,
        answer: Answer,
    ) -> bool {
        match answer {
            Answer::User(user) => {
                self.account_checked = true;
                let current = user.user_record_name;
                match self.meta.account.clone() {
                    Some(previous) if previous != current => {
                        self.account_changed(previous, current).await;
                    }
                    _ => self.update_meta(SyncMetadataChange::Account(current)).await,
                }
                true
            }
            Answer::ZonesEnsured(zones) => {
                self.update_meta(SyncMetadataChange::ZonesEnsured(zones))
                    .await;
                true
            }
            Answer::Notifications(signals) => {
                self.notifications_started = true;
                self.notification_task = Some(forward_notifications(signals, myself.clone()));
                true
            }
            Answer::SubscriptionEnsured(zone) => {
                let id = self.config.subscription_id(&zone);
                self.update_meta(SyncMetadataChange::SubscriptionEnsured(id))
                    .await;
                true
            }
            Answer::Database(page) => {
                let ours = |zones: &[ZoneId]| -> Vec<ZoneId> {
                    zones
                        .iter()
                        .filter(|z| self.config.zones.contains(z))
                        .cloned()
                        .collect()
                };
                let changes = DatabaseChanges {
                    token: Some(page.token.clone()),
                    changed: ours(&page.changed_zones),
                    deleted: ours(&page.deleted_zones),
                };
                match self.c.store.apply_database_changes(changes).await {
                    Ok(outcome) => {
                        for (zone, _) in outcome.removed {
                            self.unfetched.remove(&zone);
                            let _ = self.events.send(SyncEvent::ZoneDeletedRemotely { zone });
                        }
                        if page.more_coming {
                            let asked = match op {
                                Operation::FetchDatabase(token) => token.as_ref(),
                                _ => None,
                            };
                            self.more_coming(Feed::Database, asked, &page.token);
                        } else {
                            self.fetch_wanted = false;
                            self.feed_ended(&Feed::Database);
                        }
                        self.reload_meta().await;
                        true
                    }
                    Err(error) => {
                        tracing::warn!(%error, "committing changes/database failed");
                        false
                    }
                }
            }
            Answer::Zone(page) => {
                let asked = match op {
                    Operation::FetchZone { token, .. } => token.clone(),
                    _ => None,
                };
                self.apply_zone_page(page, asked).await
            }
            Answer::Sent(batch, outcomes) => {
                self.passing_item_failure = self.apply_sent(batch, outcomes).await;
                true
            }
            Answer::Looked(outcomes) => {
                if let Operation::Lookup { ids, .. } = op {
                    self.lookups.retain(|id| !ids.contains(id));
                }
                for outcome in outcomes {
                    let (id, server) = match outcome {
                        LookupOutcome::Found(record) => (record.id.clone(), Some(record)),
                        LookupOutcome::NotFound(id) => {
                            // A record this device created (its change carries no tag) that the
                            // server does not hold was never deleted there: there is nothing to
                            // resolve, and the create goes again as it is.
                            if let Ok(Some(entry)) = self.c.queue.entry(id.clone()).await
                                && entry.change().change_tag().is_none()
                            {
                                continue;
                            }
                            (id, None)
                        }
                        LookupOutcome::Failed { id, error } => {
                            tracing::warn!(record = %id, %error, "a conflicting record could not be read");
                            continue;
                        }
                    };
                    let _ = self.c.store.record_conflict(id, server).await;
                }
                true
            }
        }
    }

    async fn apply_zone_page(&mut self, page: ZoneChangesPage, asked: Option<ChangeToken>) -> bool {
        let zone = page.zone.clone();
        if let Some(reason) = self.schema_violation(&page.changed) {
            self.halt(reason);
            return false;
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let changed: Vec<String> = page
                .changed
                .iter()
                .map(|r| {
                    format!(
                        "{}@{}",
                        r.id.record_name,
                        r.change_tag().map_or("", |t| t.0.as_str())
                    )
                })
                .collect();
            let deleted: Vec<&str> = page
                .deleted
                .iter()
                .map(|id| id.record_name.as_str())
                .collect();
            tracing::debug!(zone = %zone, ?changed, ?deleted, more_coming = page.more_coming, "fetched page");
        }
        let refetching = self.refetch_seen.contains_key(&zone);
        if let Some(seen) = self.refetch_seen.get_mut(&zone) {
            seen.extend(page.changed.iter().map(|r| r.id.clone()));
        }
        // A refetch's last page commits with the deletions the refetch revealed and the zone's
        // token, in one transaction: a process killed in between must refetch again, not keep a
        // token past deletions it never applied.
        let finishing_refetch = refetching && !page.more_coming;
        let gone = if finishing_refetch {
            match self.refetch_gone(&zone).await {
                Some(gone) => gone,
                None => {
                    tracing::warn!(%zone, "reading the zone's records to end a refetch failed");
                    return false;
                }
            }
        } else {
            Vec::new()
        };
        let mut deleted = page.deleted;
        deleted.extend(gone.iter().cloned());
        let fetched = FetchedPage {
            zone: zone.clone(),
            changed: page.changed,
            deleted,
            token: page.token.clone(),
            more_coming: page.more_coming,
        };
        let applied = if refetching {
            self.c.store.apply_refetched_page(fetched).await
        } else {
            self.c.store.apply_fetched(fetched).await
        };
        let outcome = match applied {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(%error, "applying a fetched page failed");
                return false;
            }
        };
        self.metrics
            .records_received(u64::try_from(outcome.applied + outcome.removed).unwrap_or(u64::MAX));
        let _ = self.events.send(SyncEvent::Fetched {
            batch_id: self.applying,
            zone: zone.clone(),
            changed: outcome.applied,
            deleted: outcome.removed,
        });
        let feed = Feed::Zone(zone.clone());
        if page.more_coming {
            if refetching {
                self.refetch_token.insert(zone.clone(), page.token.clone());
            }
            self.more_coming(feed, asked.as_ref(), &page.token);
        } else {
            self.refetch_token.remove(&zone);
            self.feed_ended(&feed);
            self.unfetched.remove(&zone);
            if finishing_refetch {
                self.refetch_seen.remove(&zone);
                if !gone.is_empty() {
                    let _ = self.events.send(SyncEvent::DeletedRemotely { ids: gone });
                }
            }
        }
        self.reload_meta().await;
        true
    }

    /// Whether the store holds any record of `zone` (if it cannot tell, it is taken to).
    async fn zone_holds_records(&self, zone: &ZoneId) -> bool {
        self.c
            .store
            .records_in_zone(zone.clone(), None, 1)
            .await
            .map_or(true, |page| !page.records.is_empty())
    }

    /// At the end of a full refetch (an expired token): the records holding a change tag here,
    /// with no pending change, that the refetch did not return, which were deleted on the server
    /// (a refetch from no token reports no deletions). `None` if the store could not be read.
    async fn refetch_gone(&self, zone: &ZoneId) -> Option<Vec<RecordId>> {
        let seen = self.refetch_seen.get(zone)?;
        let mut gone = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .c
                .store
                .records_in_zone(zone.clone(), after, 500)
                .await
                .ok()?;
            for record in &page.records {
                if record.system.is_some()
                    && !seen.contains(&record.id)
                    && matches!(self.c.queue.entry(record.id.clone()).await, Ok(None))
                {
                    gone.push(record.id.clone());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Some(gone),
            }
        }
    }

    /// Every per-item outcome of a send. Answers the failure of a change that failed in passing
    /// (a throttled one first: it carries the server's deadline), if any did.
    async fn apply_sent(
        &mut self,
        batch: Batch,
        outcomes: Vec<ModifyOutcome>,
    ) -> Option<CloudError> {
        let zone = batch.zone().cloned();
        let mut passing: Option<CloudError> = None;
        let mut confirmed = Vec::new();
        let mut confirmed_ids = Vec::new();
        let (mut saved, mut deleted) = (0, 0);
        for (sent, outcome) in batch.changes().iter().zip(outcomes) {
            tracing::debug!(
                record = %sent.record_id(),
                seq = sent.seq.0,
                delete = sent.change.is_delete(),
                sent_tag = sent.change.change_tag().map_or("", |t| t.0.as_str()),
                outcome = %outcome_brief(&outcome),
                "sent change answered"
            );
            match outcome {
                ModifyOutcome::Saved { system, .. } => {
                    if let PendingChange::Save(record) = &sent.change {
                        let mut record = record.clone();
                        record.system = Some(system);
                        confirmed_ids.push(record.id.clone());
                        confirmed.push(ConfirmedChange::Saved {
                            seq: sent.seq,
                            record,
                        });
                        saved += 1;
                    }
                }
                ModifyOutcome::Deleted { id } => {
                    confirmed_ids.push(id.clone());
                    confirmed.push(ConfirmedChange::Deleted { seq: sent.seq, id });
                    deleted += 1;
                }
                ModifyOutcome::Conflict {
                    id, server_record, ..
                } => match server_record {
                    Some(server) => {
                        // A create whose answer was lost comes back EXISTS with our own copy:
                        // adopt it, do not loop.
                        if let PendingChange::Save(local) = &sent.change
                            && local.fields == server.fields
                            && local.record_type == server.record_type
                        {
                            confirmed_ids.push(id);
                            confirmed.push(ConfirmedChange::Saved {
                                seq: sent.seq,
                                record: *server,
                            });
                            saved += 1;
                        } else if let PendingChange::Save(local) = &sent.change
                            && self.is_merge_base(&id, &server).await
                        {
                            // The server holds the very copy this change was made on (a record
                            // deleted and saved again here, whose create met the old life): nobody
                            // changed it since, so there is nothing to resolve. The change goes
                            // over it, with its tag.
                            let _ = self
                                .c
                                .store
                                .commit_resolution(ResolvedConflict {
                                    id,
                                    server: Some(*server),
                                    local_seq: Some(sent.seq),
                                    resolution: Resolution::Send(local.clone()),
                                })
                                .await;
                        } else {
                            self.count_conflict(&id, Some(&server));
                            let _ = self.c.store.record_conflict(id, Some(*server)).await;
                        }
                    }
                    None => {
                        self.count_conflict(&id, None);
                        self.lookups.push(id);
                    }
                },
                ModifyOutcome::Failed { id, error } => {
                    if let Some(failure) =
                        self.on_item_failed(id, sent.seq, &sent.change, error).await
                        && passing
                            .as_ref()
                            .is_none_or(|kept| kept.class() != ErrorClass::Throttled)
                    {
                        passing = Some(failure);
                    }
                }
            }
        }
        if !confirmed.is_empty() {
            match self.c.store.confirm_sent(confirmed).await {
                Ok(_) => {
                    for id in &confirmed_ids {
                        self.conflicts_in_a_row.remove(id);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "committing a confirmation failed; the batch will be resent");
                }
            }
        }
        // A send that went through restores the full batch size.
        self.limits = self.config.batch_limits;
        self.metrics
            .records_sent(u64::try_from(saved + deleted).unwrap_or(u64::MAX));
        if let Some(zone) = zone {
            let _ = self.events.send(SyncEvent::Sent {
                batch_id: self.applying,
                zone,
                saved,
                deleted,
            });
        }
        passing
    }

    /// Whether `server` is the record's merge base: the server copy the local change was made on.
    async fn is_merge_base(&self, id: &RecordId, server: &Record) -> bool {
        let base = self.c.store.merge_base(id.clone()).await.ok().flatten();
        let base_tag = base.as_ref().and_then(Record::change_tag);
        base_tag.is_some() && base_tag == server.change_tag()
    }

    /// One change of a send failed: acts on it as the error table says, and answers the error if
    /// the change failed in passing (it stays pending and the send is retried after the wait).
    async fn on_item_failed(
        &mut self,
        id: RecordId,
        seq: skysync_queue::ChangeSeq,
        change: &PendingChange,
        error: CloudError,
    ) -> Option<CloudError> {
        let code = error.server_code().cloned();
        match error.class() {
            // NOT_FOUND on an update of a record that had a tag: the server deleted it.
            ErrorClass::ItemRejected
                if code == Some(skysync_model::ServerErrorCode::NotFound)
                    && change.change_tag().is_some() =>
            {
                let _ = self.c.store.record_conflict(id, None).await;
            }
            ErrorClass::ItemRejected | ErrorClass::TooLarge => {
                let reason = error_brief(&error);
                if matches!(
                    self.c.queue.park(id.clone(), seq, reason.clone()).await,
                    Ok(true)
                ) {
                    self.metrics
                        .parked(if error.class() == ErrorClass::TooLarge {
                            labels::park_reason::TOO_LARGE
                        } else {
                            labels::park_reason::REJECTED
                        });
                    let _ = self.events.send(SyncEvent::ChangeParked { id, reason });
                }
            }
            ErrorClass::ZoneGone => self.zone_gone(id.zone.clone()).await,
            ErrorClass::Fatal => self.halt(HaltReason::Fatal {
                operation: "send".into(),
                error: error_brief(&error),
            }),
            // Throttled, transient (an innocent of a failed atomic batch too), or an expired
            // token, which no change carries: it stays pending and goes out again with the next
            // batch, after the wait its failure calls for.
            ErrorClass::Throttled
            | ErrorClass::Transient
            | ErrorClass::Offline
            | ErrorClass::TokenExpired => return Some(error),
            // A conflict comes as its own outcome, with or without the server's copy.
            ErrorClass::Conflict => {}
        }
        None
    }

    async fn park_batch(&mut self, batch: &Batch, reason: &str) {
        for change in batch.changes() {
            if matches!(
                self.c
                    .queue
                    .park(change.record_id().clone(), change.seq, reason)
                    .await,
                Ok(true)
            ) {
                self.metrics.parked(labels::park_reason::TOO_LARGE);
                let _ = self.events.send(SyncEvent::ChangeParked {
                    id: change.record_id().clone(),
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Settles every open conflict with the resolver and commits the answers (no request).
    async fn resolve_open_conflicts(&mut self) {
        let Ok(open) = self.c.store.open_conflicts(None, 200).await else {
            return;
        };
        for conflict in open {
            let id = conflict.id.clone();
            let Ok(Some(entry)) = self.c.store.pending_change(id.clone()).await else {
                continue;
            };
            if matches!(entry, skysync_queue::OutboxEntry::Parked(_)) {
                continue;
            }
            let conflicts = self.conflicts_in_a_row.get(&id).map_or(0, |s| s.count);
            // A server whose change tag changes on every read answers every re-send CONFLICT with
            // the same record under another tag: past the bound the change is parked instead of
            // resolved and sent again. (Other devices editing the record meanwhile bring new
            // contents with each CONFLICT: that is contention, resolved as often as it comes.)
            let churned = conflicts >= self.config.max_conflicts_per_record;
            let resolution = if churned {
                Resolution::Park {
                    reason: ParkReason::Custom(format!(
                        "the server answered CONFLICT {conflicts} times in a row, each time with \
                         another change tag; parked instead of resolving and sending it again"
                    )),
                }
            } else {
                let base = self.c.store.merge_base(id.clone()).await.ok().flatten();
                match self
                    .c
                    .conflict
                    .resolve(entry.change().clone(), base, conflict.server.clone())
                    .await
                {
                    Ok(resolution) => resolution,
                    Err(error) => {
                        tracing::warn!(record = %id, %error, "a conflict could not be resolved");
                        continue;
                    }
                }
            };
            let sends_again = matches!(
                resolution,
                Resolution::Send(_) | Resolution::SendDelete { .. } | Resolution::Recreate(_)
            );
            let park_reason = match &resolution {
                Resolution::Park { reason } => Some(reason.to_string()),
                _ => None,
            };
            let kind = resolution.kind();
            let committed = self
                .c
                .store
                .commit_resolution(ResolvedConflict {
                    id: id.clone(),
                    server: conflict.server,
                    local_seq: Some(entry.seq()),
                    resolution,
                })
                .await;
            if let Ok(ResolveOutcome::Committed { .. }) = committed {
                self.metrics.conflict_resolved(kind);
                let _ = self.events.send(SyncEvent::ConflictResolved {
                    id: id.clone(),
                    resolution: kind,
                });
                if !sends_again {
                    self.conflicts_in_a_row.remove(&id);
                }
                if churned && let Some(reason) = park_reason {
                    self.metrics.parked(labels::park_reason::REJECTED);
                    let zone = id.zone.clone();
                    let _ = self.events.send(SyncEvent::ChangeParked {
                        id: id.clone(),
                        reason,
                    });
                    self.misbehaved(
                        MisbehaviorKind::ChangeTagChurn {
                            record: id,
                            conflicts,
                        },
                        OperationKind::Send,
                        Some(zone),
                    );
                }
            }
        }
    }

    /// Starts a fetch pass: the database's changes, then every changed zone; feeds cut short in
    /// the last pass go on from where they stopped.
    fn begin_fetch_pass(&mut self) {
        self.fetch_wanted = true;
        self.feed_pages.clear();
        self.held_back.clear();
    }

    /// After a page that says more is coming: a feed whose token did not advance, or that took
    /// its pages for this pass, is held back until the next pass (and reported); other work goes
    /// first.
    fn more_coming(&mut self, feed: Feed, asked: Option<&ChangeToken>, answered: &ChangeToken) {
        if asked == Some(answered) {
            self.held_back.insert(feed.clone());
            self.misbehaved(
                MisbehaviorKind::TokenNotAdvancing,
                feed.operation(),
                feed.zone(),
            );
            return;
        }
        let pages = self.feed_pages.entry(feed.clone()).or_insert(0);
        *pages = pages.saturating_add(1);
        let pages = *pages;
        if pages >= self.config.max_pages_per_fetch {
            self.held_back.insert(feed.clone());
            self.misbehaved(
                MisbehaviorKind::FetchCutShort { pages },
                feed.operation(),
                feed.zone(),
            );
        }
    }

    /// A feed reached its end: its page count and its reported problems go.
    fn feed_ended(&mut self, feed: &Feed) {
        self.feed_pages.remove(feed);
        let (operation, zone) = (feed.operation(), feed.zone());
        self.misbehaving
            .retain(|m| !(m.kind.is_feed() && m.operation == operation && m.zone == zone));
    }

    /// Counts a CONFLICT answered for `id` with the server's copy `server` (`None`: the answer
    /// carried none, and a lookup fetches it). The streak grows only while the server's copy
    /// keeps its contents under a new tag, which is what a churning server does; a copy with
    /// other contents is another device's edit, legitimate contention, and starts the streak
    /// again. An answer without a copy says nothing of the contents and counts.
    fn count_conflict(&mut self, id: &RecordId, server: Option<&Record>) {
        let streak = self.conflicts_in_a_row.entry(id.clone()).or_default();
        match server {
            Some(server) => {
                let contents = (server.record_type.clone(), server.fields.clone());
                if streak.contents.as_ref() == Some(&contents) {
                    streak.count = streak.count.saturating_add(1);
                } else {
                    streak.count = 1;
                    streak.contents = Some(contents);
                }
            }
            None => streak.count = streak.count.saturating_add(1),
        }
    }

    /// Reports what the server did wrong: a warning, an event, and an entry in diagnostics (the
    /// same misbehavior counted, at most `ServerMisbehavior::KEPT` kept, oldest forgotten first).
    fn misbehaved(
        &mut self,
        kind: MisbehaviorKind,
        operation: OperationKind,
        zone: Option<ZoneId>,
    ) {
        let seen = ServerMisbehavior {
            kind,
            operation,
            zone,
            times: 1,
        };
        let entry = match self.misbehaving.iter().position(|m| m.same_as(&seen)) {
            Some(at) => {
                let mut entry = self.misbehaving.remove(at);
                entry.kind = seen.kind;
                entry.times = entry.times.saturating_add(1);
                entry
            }
            None => seen,
        };
        tracing::warn!(problem = %entry, times = entry.times, "the server misbehaves");
        if self.misbehaving.len() >= ServerMisbehavior::KEPT {
            self.misbehaving.remove(0);
        }
        self.misbehaving.push(entry.clone());
        let _ = self.events.send(SyncEvent::ServerMisbehaved(entry));
    }

    /// The schema guard over fetched records.
    fn schema_violation(&self, records: &[Record]) -> Option<HaltReason> {
        let guard = &self.config.schema;
        for record in records {
            if let Some(field) = &guard.version_field
                && let Some(FieldValue::Int64(version)) = record.get(field)
                && *version > guard.max_version
            {
                return Some(HaltReason::NewerSchema {
                    record_type: record.record_type.clone(),
                    version: Some(*version),
                    detail: format!("this app reads up to version {}", guard.max_version),
                });
            }
            if let Some((_, known)) = guard
                .known_fields
                .iter()
                .find(|(t, _)| *t == record.record_type)
                && let Some(unknown) = record.fields.keys().find(|f| !known.contains(f))
            {
                return Some(HaltReason::NewerSchema {
                    record_type: record.record_type.clone(),
                    version: None,
                    detail: format!("unknown field `{unknown}`"),
                });
            }
        }
        None
    }

    async fn account_changed(&mut self, previous: String, current: String) {
        let _ = self.events.send(SyncEvent::AccountChanged {
            previous: previous.clone(),
            current: current.clone(),
        });
        match self.config.account_change {
            AccountChangePolicy::Halt => self.halt(HaltReason::Fatal {
                operation: "current_user".into(),
                error: format!("the account changed from {previous} to {current}"),
            }),
            AccountChangePolicy::ClearLocalData => {
                tokio::time::sleep(self.config.account_change_grace).await;
                for zone in self.config.zones.clone() {
                    let _ = self.c.store.remove_zone(zone.clone()).await;
                    self.unfetched.insert(zone);
                }
                self.update_meta(SyncMetadataChange::NewAccount(current))
                    .await;
                self.fetch_wanted = true;
            }
        }
    }

    async fn delete_all_remote_data(&mut self) -> Result<(), String> {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.task.abort();
        }
        let zones: Vec<ZoneId> = self.config.zones.clone();
        self.c
            .transport
            .delete_zones(zones.clone())
            .await
            .map_err(|e| e.to_string())?;
        // Local data goes with the remote: no change tags, tokens or pending changes are left to
        // re-upload anything.
        self.c
            .store
            .apply_database_changes(DatabaseChanges {
                token: None,
                changed: Vec::new(),
                deleted: zones,
            })
            .await
            .map_err(|e| e.to_string())?;

        self.halt(HaltReason::RemoteDataDeleted);
        self.reload_meta().await;
        Ok(())
    }

    fn halt(&mut self, reason: HaltReason) {
        tracing::warn!(reason = %reason, "sync halted");
        if let Some(in_flight) = self.in_flight.take() {
            // The halt came from outside the operation still out (the courier, a component):
            // it is abandoned, so that no request goes out while halted. Nothing of it was
            // committed; it is redone after the resume.
            in_flight.task.abort();
        }
        self.metrics.halt(reason.kind());
        let halt = Halt { reason };
        let _ = self.events.send(SyncEvent::Halted(halt.clone()));
        self.halt = Some(halt);
    }

    /// The gauges: queue depth, open conflicts, the throttle's rate and ceiling.
    async fn record_gauges(&self) {
        if let Ok(depth) = self.c.queue.depth().await {
            self.metrics.queue_depth(depth.pending);
        }
        if let Ok(open) = self.c.store.open_conflicts(None, usize::MAX).await {
            self.metrics
                .open_conflicts(u64::try_from(open.len()).unwrap_or(u64::MAX));
        }
        if let Ok(throttle) = self.c.throttle.diagnostics().await {
            self.metrics.throttle_rate(throttle.rate);
            if let Some(ceiling) = throttle.ceiling {
                self.metrics.throttle_ceiling(ceiling);
            }
        }
    }

    async fn update_meta(&mut self, change: SyncMetadataChange) {
        match self.c.store.update_sync_metadata(change).await {
            Ok(meta) => self.meta = meta,
            Err(error) => tracing::warn!(%error, "saving sync metadata failed"),
        }
    }

    async fn reload_meta(&mut self) {
        if let Ok(meta) = self.c.store.sync_metadata().await {
            self.meta = meta;
        }
    }

    /// Whether a batch should wait for more changes before it goes, and until when. A full batch
    /// (its count limit reached, or three quarters of its byte limit) goes at once; so does one
    /// made after the app has been quiet for `send_debounce`. While the app keeps saving, a
    /// partial batch waits until it has been quiet that long, for at most `max_send_delay` in
    /// all: a stream of saves goes out in full batches (one request of 200 instead of many of a
    /// few), and a steady trickle still goes out within that delay.
    fn linger_deadline(&mut self, batch: &Batch) -> Option<Instant> {
        if batch.len() >= self.limits.max_changes
            || batch.wire_len() >= self.limits.max_bytes / 4 * 3
        {
            return None;
        }
        let debounce = self.config.send_debounce;
        let now = Instant::now();
        let quiet_at = self.last_local_change? + debounce;
        if quiet_at <= now {
            return None;
        }
        let since = *self.linger_since.get_or_insert(now);
        let cap = since + self.config.max_send_delay;
        if cap <= now {
            return None;
        }
        Some(quiet_at.min(cap))
    }

    async fn pending_count(&self) -> u64 {
        self.c.queue.depth().await.map(|d| d.pending).unwrap_or(0)
    }

    fn arm_timer(&mut self, myself: &ActorRef<SessionMsg>, after: Duration) {
        self.timer_generation += 1;
        let generation = self.timer_generation;
        self.timer = Some((generation, Instant::now() + after));
        myself.send_after(after, move || SessionMsg::Timer(generation));
    }

    fn current_status(&self) -> Status {
        if self.halt.is_some() {
            return Status::Halted;
        }
        if self.offline {
            return Status::Offline;
        }
        match &self.in_flight {
            Some(in_flight) if in_flight.waiting => Status::Waiting,
            Some(in_flight) => match in_flight.summary.kind {
                OperationKind::Send => Status::Uploading,
                _ => Status::Downloading,
            },
            None => Status::Idle,
        }
    }

    fn publish_status(&self) {
        let status = self.current_status();
        let changed = self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
        if changed {
            let _ = self.events.send(SyncEvent::StatusChanged(status));
        }
    }

    async fn diagnostics(&self) -> Diagnostics {
        let queue = self.c.queue.depth().await.unwrap_or_default();
        let liveness_ok = self.is_live(queue.pending) && self.liveness_violations == 0;
        Diagnostics {
            status: self.current_status(),
            queue,
            parked: self.c.queue.parked().await.unwrap_or_default(),
            open_conflicts: self
                .c
                .store
                .open_conflicts(None, usize::MAX)
                .await
                .map(|c| c.len() as u64)
                .unwrap_or(0),
            tagged_records: self.c.store.tagged_count().await.unwrap_or(0),
            account: self.meta.account.clone(),
            last_fetch_unix_ms: self.meta.last_fetch_unix_ms,
            last_send_unix_ms: self.meta.last_send_unix_ms,
            in_flight: self.in_flight.as_ref().map(|f| f.summary.clone()),
            last_completed: self.last_completed.clone(),
            throttle: self.c.throttle.diagnostics().await.ok(),
            halt: self.halt.clone(),
            offline: self.offline,
            batch_limits: self.limits,
            liveness_ok,
            liveness_violations: self.liveness_violations,
            loops_detected: self.loops_detected,
            server_misbehaving: self.misbehaving.clone(),
        }
    }
}

/// Runs one operation: waits for the throttle's permit, sends the request, reports back.
async fn run(
    session: ActorRef<SessionMsg>,
    throttle: ThrottleHandle,
    transport: TransportHandle,
    subscription_prefix: String,
    op: Operation,
    id: u64,
) {
    loop {
        match throttle.permit().await {
            Ok(Permit::Granted) => break,
            Ok(Permit::Wait { until, cause }) => {
                let _ = session.send_message(SessionMsg::Waiting { id, until, cause });
                tokio::time::sleep_until(until).await;
            }
            Err(error) => {
                // A throttle that does not answer is a local failure: the operation is redone.
                let local = match error {
                    skysync_throttle::ThrottleError::Local(local) => local,
                    _ => skysync_actors::LocalError::Unavailable {
                        component: "throttle",
                        operation: "permit",
                    },
                };
                let done = Completion(Err(RequestError::Local(local)));
                let _ = session.send_message(SessionMsg::Done(id, Box::new(done)));
                return;
            }
        }
    }
    let _ = session.send_message(SessionMsg::Started(id));
    let result = match op {
        Operation::CurrentUser => transport.current_user().await.map(Answer::User),
        Operation::EnsureZones(zones) => transport
            .ensure_zones(zones.clone())
            .await
            .map(|()| Answer::ZonesEnsured(zones)),
        Operation::EnsureSubscription(zone) => {
            let subscription =
                zone_subscription(format!("{subscription_prefix}{}", zone.zone_name), &zone);
            transport
                .ensure_subscription(subscription)
                .await
                .map(|()| Answer::SubscriptionEnsured(zone))
        }
        Operation::EnsureNotifications => {
            transport.notifications().await.map(Answer::Notifications)
        }
        Operation::FetchDatabase(token) => transport
            .fetch_database_changes(token)
            .await
            .map(Answer::Database),
        Operation::FetchZone { zone, token } => transport
            .fetch_zone_changes(zone, token)
            .await
            .map(Answer::Zone),
        Operation::Send(batch) => {
            // Every task reports back: an empty batch (never dispatched) is a send of nothing.
            let Some(zone) = batch.zone().cloned() else {
                let done = Completion(Ok(Answer::Sent(batch, Vec::new())));
                let _ = session.send_message(SessionMsg::Done(id, Box::new(done)));
                return;
            };
            let changes = batch.changes().iter().map(|c| c.change.clone()).collect();
            match ModifyBatch::new(zone, changes) {
                Ok(request) => transport
                    .modify_records(request)
                    .await
                    .map(|outcomes| Answer::Sent(batch, outcomes)),
                // A batch is formed from one zone; this cannot happen, but it must not panic.
                Err(error) => Err(RequestError::Cloud(CloudError::UnexpectedResponse {
                    status: None,
                    detail: error.to_string(),
                })),
            }
        }
        Operation::Lookup { zone, ids } => {
            let names = ids.iter().map(|id| id.record_name.clone()).collect();
            transport
                .lookup_records(zone.clone(), names)
                .await
                .map(Answer::Looked)
        }
    };
    let _ = session.send_message(SessionMsg::Done(id, Box::new(Completion(result))));
}

/// Hands the server's zone-change notifications to the session (each asks for a fetch). The long
/// poll behind them goes to the notification courier, not to the database API, so it is not an
/// operation in flight.
fn forward_notifications(
    mut signals: ZoneNotifications,
    session: ActorRef<SessionMsg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(signal) = signals.next_signal().await {
            let message = match signal {
                Ok(signal) => SessionMsg::RemoteChanged(signal.zone),
                // The courier failed for good (it retries passing failures itself): the
                // session decides what follows, and this forwarder ends.
                Err(error) => {
                    let _ = session.send_message(SessionMsg::NotificationsFailed(error));
                    return;
                }
            };
            if session.send_message(message).is_err() {
                return;
            }
        }
    })
}

/// The row of the error table the session follows for `error`, answered to `op`. An answer that
/// cannot apply to the operation is a passing failure (transient): too large from a request with
/// no batch to split, ZONE_NOT_FOUND from a request about no zone, an expired token from a request
/// that carries none. Redone at once, uncounted, it would be sent for ever to a server that keeps
/// answering it.
fn class_for(op: &Operation, error: &CloudError) -> ErrorClass {
    match (error.class(), op) {
        (ErrorClass::TooLarge, Operation::Send(_)) => ErrorClass::TooLarge,
        (ErrorClass::ZoneGone, op) if op.zone().is_some() => ErrorClass::ZoneGone,
        (ErrorClass::TokenExpired, Operation::FetchZone { .. } | Operation::FetchDatabase(_)) => {
            ErrorClass::TokenExpired
        }
        (ErrorClass::TooLarge | ErrorClass::ZoneGone | ErrorClass::TokenExpired, _) => {
            ErrorClass::Transient
        }
        (class, _) => class,
    }
}

/// What the throttle is told of a failure the session handles as `class` (throttled, transient
/// or offline).
fn throttle_outcome(error: &CloudError, class: ErrorClass) -> Option<Outcome> {
    match (Outcome::from_cloud_error(error), error) {
        (Some(outcome), _) => Some(outcome),
        // A server code whose own class does not apply to the operation: a passing failure.
        (None, CloudError::Server(e)) if class == ErrorClass::Transient => {
            Some(Outcome::transient(
                e.retry_after,
                format!("{} (HTTP {})", e.code, e.http_status),
            ))
        }
        (None, _) => None,
    }
}

/// The label of an error class.
fn error_class(class: ErrorClass) -> &'static str {
    use labels::error_class as c;
    match class {
        ErrorClass::Throttled => c::THROTTLED,
        ErrorClass::Transient => c::TRANSIENT,
        ErrorClass::Offline => c::OFFLINE,
        ErrorClass::TooLarge => c::TOO_LARGE,
        ErrorClass::Conflict => c::CONFLICT,
        ErrorClass::ZoneGone => c::ZONE_GONE,
        ErrorClass::TokenExpired => c::TOKEN_EXPIRED,
        ErrorClass::ItemRejected => c::ITEM_REJECTED,
        ErrorClass::Fatal => c::FATAL,
    }
}

/// The label of a throttle wait.
fn wait_cause(cause: WaitCause) -> &'static str {
    use labels::wait_cause as w;
    match cause {
        WaitCause::Pacing => w::PACING,
        WaitCause::RetryAfter => w::RETRY_AFTER,
        WaitCause::Backoff => w::BACKOFF,
        WaitCause::Offline => w::OFFLINE,
        WaitCause::Quota => w::QUOTA,
    }
}

/// The code and reason of an error, for halts and parked changes (never tokens or values).
fn error_brief(error: &CloudError) -> String {
    match error {
        CloudError::Server(e) => format!("{} (HTTP {}): {}", e.code, e.http_status, e.reason),
        other => other.to_string(),
    }
}

/// `interval` ± 10 %, so that devices do not fetch in step.
fn jittered(interval: Duration) -> Duration {
    let factor = 0.9 + rand::random::<f64>() * 0.2;
    interval.mul_f64(factor)
}

/// A send's answer for one change, for the debug log: the outcome and the change tags involved,
/// never the record's fields (an app's data stays out of logs).
fn outcome_brief(outcome: &ModifyOutcome) -> String {
    match outcome {
        ModifyOutcome::Saved { system, .. } => format!("saved as {}", system.change_tag.0),
        ModifyOutcome::Deleted { .. } => "deleted".to_owned(),
        ModifyOutcome::Conflict { server_record, .. } => {
            match server_record.as_ref().and_then(|r| r.change_tag()) {
                Some(tag) => format!("conflict with the server's copy at {}", tag.0),
                None => "conflict, the server's copy to be looked up".to_owned(),
            }
        }
        ModifyOutcome::Failed { error, .. } => format!("failed: {error}"),
    }
}
