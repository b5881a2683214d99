//! [`TransportActor`]: any [`CloudDatabase`] behind a ractor mailbox, and [`TransportHandle`], the
//! cloneable, typed face the session talks to; [`TransportSpec`] restarts it under a supervisor.
//!
//! # The mailbox never waits on the network
//!
//! The actor's handler does not await HTTP. Each request message is handed to a task of its own
//! (tracked by the actor, aborted when it stops), which answers the caller when the request is done.
//! So the mailbox always stays responsive: a long fetch never holds up a second caller, a
//! notification subscription or the actor's own shutdown.
//!
//! The session's one-in-flight rule is the session's: it sends the next operation only after the
//! previous one answered. The transport neither enforces nor breaks that rule. In particular a call
//! that times out on the handle does not leave its request running behind the session's back: the
//! task notices that nobody waits for the answer any more and cancels the request (the server may
//! still have applied it, exactly as with a network timeout; every operation is safe to resend).

use crate::database::{
    CloudDatabase, DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChangesPage,
    ZoneNotifications,
};
use crate::error::TransportError;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use skysync_actors::{BoxFuture, ChildSpec, LocalError, Mailbox};
use skysync_model::wire::{Subscription, UserIdentity};
use skysync_model::{ChangeToken, CloudError, ZoneId};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

/// How often a request's task checks whether its caller still waits for the answer.
const CALLER_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The transport's interface: one message per [`CloudDatabase`] method, each with its reply port.
#[derive(Debug)]
pub enum TransportMessage {
    /// [`CloudDatabase::modify_records`].
    ModifyRecords(
        ModifyBatch,
        RpcReplyPort<Result<Vec<ModifyOutcome>, CloudError>>,
    ),
    /// [`CloudDatabase::lookup_records`].
    LookupRecords(
        ZoneId,
        Vec<String>,
        RpcReplyPort<Result<Vec<LookupOutcome>, CloudError>>,
    ),
    /// [`CloudDatabase::fetch_zone_changes`].
    FetchZoneChanges(
        ZoneId,
        Option<ChangeToken>,
        RpcReplyPort<Result<ZoneChangesPage, CloudError>>,
    ),
    /// [`CloudDatabase::fetch_database_changes`].
    FetchDatabaseChanges(
        Option<ChangeToken>,
        RpcReplyPort<Result<DatabaseChangesPage, CloudError>>,
    ),
    /// [`CloudDatabase::ensure_zones`].
    EnsureZones(Vec<ZoneId>, RpcReplyPort<Result<(), CloudError>>),
    /// [`CloudDatabase::delete_zones`].
    DeleteZones(Vec<ZoneId>, RpcReplyPort<Result<(), CloudError>>),
    /// [`CloudDatabase::ensure_subscription`].
    EnsureSubscription(Subscription, RpcReplyPort<Result<(), CloudError>>),
    /// [`CloudDatabase::current_user`].
    CurrentUser(RpcReplyPort<Result<UserIdentity, CloudError>>),
    /// [`CloudDatabase::notifications`].
    Notifications(RpcReplyPort<Result<ZoneNotifications, CloudError>>),
    /// A request made inside the caller's span (an operation's `skysync.op` span): the request's
    /// own span ([`crate::client::REQUEST_SPAN`]) becomes a child of it. [`TransportHandle`]
    /// sends every request this way.
    InSpan(tracing::Span, Box<TransportMessage>),
}

/// The actor that serves [`TransportMessage`]s with a [`CloudDatabase`]. Spawn it through
/// [`TransportHandle::spawn`] or [`TransportHandle::spawn_linked`]; it is never named.
pub struct TransportActor<D>(PhantomData<fn() -> D>);

impl<D> TransportActor<D> {
    /// The actor (its state, the database, is passed at spawn).
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<D> Default for TransportActor<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// The actor's state: the database and the requests in flight.
pub struct TransportState<D> {
    database: Arc<D>,
    in_flight: JoinSet<()>,
}

impl<D: CloudDatabase> Actor for TransportActor<D> {
    type Msg = TransportMessage;
    type State = TransportState<D>;
    type Arguments = Arc<D>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        database: Arc<D>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TransportState {
            database,
            in_flight: JoinSet::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Forget finished tasks (bounded by the number in the set).
        while state.in_flight.try_join_next().is_some() {}
        let db = Arc::clone(&state.database);
        let tasks = &mut state.in_flight;
        let (span, message) = match message {
            TransportMessage::InSpan(span, inner) => (span, *inner),
            other => (tracing::Span::none(), other),
        };
        match message {
            TransportMessage::ModifyRecords(batch, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.modify_records(batch).await }),
                );
            }
            TransportMessage::LookupRecords(zone, names, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.lookup_records(zone, names).await }),
                );
            }
            TransportMessage::FetchZoneChanges(zone, since, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(
                        reply,
                        async move { db.fetch_zone_changes(zone, since).await },
                    ),
                );
            }
            TransportMessage::FetchDatabaseChanges(since, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.fetch_database_changes(since).await }),
                );
            }
            TransportMessage::EnsureZones(zones, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.ensure_zones(zones).await }),
                );
            }
            TransportMessage::DeleteZones(zones, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.delete_zones(zones).await }),
                );
            }
            TransportMessage::EnsureSubscription(subscription, reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(
                        reply,
                        async move { db.ensure_subscription(subscription).await },
                    ),
                );
            }
            TransportMessage::CurrentUser(reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.current_user().await }),
                );
            }
            TransportMessage::Notifications(reply) => {
                spawn_in(
                    tasks,
                    span,
                    answer(reply, async move { db.notifications().await }),
                );
            }
            // Unwrapped above; a span inside a span is refused rather than recursed into.
            TransportMessage::InSpan(..) => {
                tracing::warn!("a transport request nested in two spans was dropped");
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Requests of a stopped transport must not go on behind the supervisor's back.
        state.in_flight.abort_all();
        Ok(())
    }
}

/// Runs a request's task inside the span it was made in.
fn spawn_in(
    tasks: &mut JoinSet<()>,
    span: tracing::Span,
    work: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(work.instrument(span));
}

/// Runs `work` and sends its result, unless the caller stops waiting first: then the work is
/// dropped (cancelling its HTTP request).
async fn answer<T: Send + 'static>(reply: RpcReplyPort<T>, work: impl Future<Output = T>) {
    tokio::select! {
        result = work => {
            // The caller may have given up in the last instant; nothing to do then.
            let _ = reply.send(result);
        }
        () = caller_gone(&reply) => {
            tracing::debug!("the caller stopped waiting; request cancelled");
        }
    }
}

/// Resolves once nobody waits on `reply` any more.
async fn caller_gone<T>(reply: &RpcReplyPort<T>) {
    let mut check = tokio::time::interval(CALLER_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ends when the caller's receiver is dropped; `answer`'s select drops this future once the
    // work is done.
    loop {
        check.tick().await;
        if reply.is_closed() {
            return;
        }
    }
}

/// Settings of a [`TransportHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleOptions {
    /// How long a call waits for the actor's answer before it is a [`LocalError::TimedOut`]. It
    /// must exceed the longest request (the client's own timeout, 60 s by default, ends a request
    /// as a cloud error first): the default is 150 s.
    pub call_timeout: Duration,
}

impl Default for HandleOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(150),
        }
    }
}

/// Why a transport call failed: CloudKit (or the network to it) answered with a failure, or the
/// transport actor itself did not answer. The two are handled apart: only a cloud error is ever a
/// failed attempt, a rate signal or a reason to halt.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The request failed in the cloud or on the way there; act on [`CloudError::class`].
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The transport actor did not answer (timed out, restarting, stopped mid-call): wait for the
    /// supervisor's restart and redo the operation; it is not a cloud failure.
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl RequestError {
    /// The cloud error, if this is one.
    pub fn cloud(&self) -> Option<&CloudError> {
        match self {
            RequestError::Cloud(error) => Some(error),
            RequestError::Local(_) => None,
        }
    }
}

/// The cloneable, typed face of the transport actor. Each method is one call with a timeout.
///
/// It calls through a [`Mailbox`], so it and its clones stay valid across restarts of the actor
/// (see [`TransportSpec`]); a transport that does not answer is [`RequestError::Local`], never a
/// cloud error.
#[derive(Clone, Debug)]
pub struct TransportHandle {
    mailbox: Mailbox<TransportMessage>,
    options: HandleOptions,
}

impl TransportHandle {
    /// Spawns an unnamed, unsupervised transport actor serving `database`.
    pub async fn spawn<D: CloudDatabase>(
        database: D,
        options: HandleOptions,
    ) -> Result<(TransportHandle, JoinHandle<()>), TransportError> {
        let handle = TransportHandle::detached(options);
        let join = handle.start(Arc::new(database), None).await?;
        Ok((handle, join))
    }

    /// A handle whose mailbox has no actor yet: calls wait for one (up to the call timeout).
    pub fn detached(options: HandleOptions) -> Self {
        Self {
            mailbox: Mailbox::new("transport"),
            options,
        }
    }

    /// A handle to an actor that serves [`TransportMessage`]s (a [`TransportActor`], or a test's
    /// scripted stand-in).
    pub fn new(actor: ActorRef<TransportMessage>, options: HandleOptions) -> Self {
        Self {
            mailbox: Mailbox::with_actor("transport", actor),
            options,
        }
    }

    /// Starts a transport actor serving `database`, linked to `supervisor` if given, and attaches
    /// it to this handle's mailbox (and every clone's).
    pub async fn start<D: CloudDatabase>(
        &self,
        database: Arc<D>,
        supervisor: Option<ActorCell>,
    ) -> Result<JoinHandle<()>, TransportError> {
        let spawned = match supervisor {
            Some(supervisor) => {
                Actor::spawn_linked(None, TransportActor::<D>::new(), database, supervisor).await
            }
            None => Actor::spawn(None, TransportActor::<D>::new(), database).await,
        };
        let (actor, join) = spawned.map_err(|e| TransportError::Spawn(e.to_string()))?;
        self.mailbox.attach(actor);
        Ok(join)
    }

    /// The mailbox this handle calls through (a supervisor attaches restarted actors to it).
    pub fn mailbox(&self) -> &Mailbox<TransportMessage> {
        &self.mailbox
    }

    /// The actor this handle (and its clones) talks to now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<TransportMessage>> {
        self.mailbox.actor()
    }

    /// Sends the message `build` makes around a reply port and waits for the answer, at most the
    /// call timeout.
    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        build: impl FnOnce(RpcReplyPort<Result<T, CloudError>>) -> TransportMessage,
    ) -> Result<T, RequestError> {
        // The request runs inside the caller's span (an operation's), whatever task it runs on.
        let span = tracing::Span::current();
        let traced = move |reply| TransportMessage::InSpan(span, Box::new(build(reply)));
        Ok(self
            .mailbox
            .call(operation, self.options.call_timeout, traced)
            .await??)
    }

    /// See [`CloudDatabase::modify_records`].
    pub async fn modify_records(
        &self,
        batch: ModifyBatch,
    ) -> Result<Vec<ModifyOutcome>, RequestError> {
        self.call("modify_records", |reply| {
            TransportMessage::ModifyRecords(batch, reply)
        })
        .await
    }

    /// See [`CloudDatabase::lookup_records`].
    pub async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, RequestError> {
        self.call("lookup_records", |reply| {
            TransportMessage::LookupRecords(zone, record_names, reply)
        })
        .await
    }

    /// See [`CloudDatabase::fetch_zone_changes`].
    pub async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, RequestError> {
        self.call("fetch_zone_changes", |reply| {
            TransportMessage::FetchZoneChanges(zone, since, reply)
        })
        .await
    }

    /// See [`CloudDatabase::fetch_database_changes`].
    pub async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, RequestError> {
        self.call("fetch_database_changes", |reply| {
            TransportMessage::FetchDatabaseChanges(since, reply)
        })
        .await
    }

    /// See [`CloudDatabase::ensure_zones`].
    pub async fn ensure_zones(&self, zones: Vec<ZoneId>) -> Result<(), RequestError> {
        self.call("ensure_zones", |reply| {
            TransportMessage::EnsureZones(zones, reply)
        })
        .await
    }

    /// See [`CloudDatabase::delete_zones`].
    pub async fn delete_zones(&self, zones: Vec<ZoneId>) -> Result<(), RequestError> {
        self.call("delete_zones", |reply| {
            TransportMessage::DeleteZones(zones, reply)
        })
        .await
    }

    /// See [`CloudDatabase::ensure_subscription`].
    pub async fn ensure_subscription(
        &self,
        subscription: Subscription,
    ) -> Result<(), RequestError> {
        self.call("ensure_subscription", |reply| {
            TransportMessage::EnsureSubscription(subscription, reply)
        })
        .await
    }

    /// See [`CloudDatabase::current_user`].
    pub async fn current_user(&self) -> Result<UserIdentity, RequestError> {
        self.call("current_user", TransportMessage::CurrentUser)
            .await
    }

    /// See [`CloudDatabase::notifications`].
    pub async fn notifications(&self) -> Result<ZoneNotifications, RequestError> {
        self.call("notifications", TransportMessage::Notifications)
            .await
    }
}

/// How a supervisor starts (and restarts) the transport: a new actor over the same database
/// client, attached to the same handle.
pub struct TransportSpec<D> {
    database: Arc<D>,
    handle: TransportHandle,
}

impl<D: CloudDatabase> TransportSpec<D> {
    /// The spec of a transport serving `database`, with a handle that waits for its first start.
    pub fn new(database: D, options: HandleOptions) -> Self {
        Self {
            database: Arc::new(database),
            handle: TransportHandle::detached(options),
        }
    }

    /// The transport's handle (valid across restarts).
    pub fn handle(&self) -> TransportHandle {
        self.handle.clone()
    }
}

impl<D: CloudDatabase> ChildSpec for TransportSpec<D> {
    fn name(&self) -> &'static str {
        "transport"
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        Box::pin(async move {
            self.handle
                .start(Arc::clone(&self.database), Some(supervisor))
                .await
                .map_err(|e| e.to_string())?;
            self.handle
                .actor()
                .map(|actor| vec![actor.get_cell()])
                .ok_or_else(|| "the transport actor was not attached".to_owned())
        })
    }
}
