//! [`TransportActor`]: any [`CloudDatabase`] behind a ractor mailbox, and [`TransportHandle`], the
//! cloneable, typed face the session talks to.
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
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort};
use skysync_model::wire::{Subscription, UserIdentity};
use skysync_model::{ChangeToken, CloudError, NetworkFailure, ZoneId};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};

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
        match message {
            TransportMessage::ModifyRecords(batch, reply) => {
                tasks.spawn(answer(reply, async move { db.modify_records(batch).await }));
            }
            TransportMessage::LookupRecords(zone, names, reply) => {
                tasks.spawn(answer(reply, async move {
                    db.lookup_records(zone, names).await
                }));
            }
            TransportMessage::FetchZoneChanges(zone, since, reply) => {
                tasks.spawn(answer(reply, async move {
                    db.fetch_zone_changes(zone, since).await
                }));
            }
            TransportMessage::FetchDatabaseChanges(since, reply) => {
                tasks.spawn(answer(reply, async move {
                    db.fetch_database_changes(since).await
                }));
            }
            TransportMessage::EnsureZones(zones, reply) => {
                tasks.spawn(answer(reply, async move { db.ensure_zones(zones).await }));
            }
            TransportMessage::DeleteZones(zones, reply) => {
                tasks.spawn(answer(reply, async move { db.delete_zones(zones).await }));
            }
            TransportMessage::EnsureSubscription(subscription, reply) => {
                tasks.spawn(answer(reply, async move {
                    db.ensure_subscription(subscription).await
                }));
            }
            TransportMessage::CurrentUser(reply) => {
                tasks.spawn(answer(reply, async move { db.current_user().await }));
            }
            TransportMessage::Notifications(reply) => {
                tasks.spawn(answer(reply, async move { db.notifications().await }));
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
    /// How long a call waits for the actor's answer. It must exceed the longest operation: a modify
    /// whose conflicts need a lookup makes two requests, so the default is 2 × the client's default
    /// request timeout (60 s) plus a margin: 150 s.
    pub call_timeout: Duration,
}

impl Default for HandleOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(150),
        }
    }
}

/// The cloneable, typed face of the transport actor. Each method is one call with a timeout; a
/// mailbox failure comes back as a transient [`CloudError::Network`] (the supervisor restarts the
/// actor; the session retries).
///
/// All clones share the actor reference, so [`TransportHandle::repoint`] after a restart redirects
/// every clone at once.
#[derive(Clone, Debug)]
pub struct TransportHandle {
    actor: Arc<RwLock<ActorRef<TransportMessage>>>,
    options: HandleOptions,
}

impl TransportHandle {
    /// Spawns an unnamed, unsupervised transport actor serving `database`.
    pub async fn spawn<D: CloudDatabase>(
        database: D,
        options: HandleOptions,
    ) -> Result<(TransportHandle, JoinHandle<()>), TransportError> {
        let (actor, join) = Actor::spawn(None, TransportActor::<D>::new(), Arc::new(database))
            .await
            .map_err(|e| TransportError::Spawn(e.to_string()))?;
        Ok((TransportHandle::new(actor, options), join))
    }

    /// Spawns an unnamed transport actor supervised by `supervisor`.
    pub async fn spawn_linked<D: CloudDatabase>(
        database: D,
        options: HandleOptions,
        supervisor: ActorCell,
    ) -> Result<(TransportHandle, JoinHandle<()>), TransportError> {
        let (actor, join) = Actor::spawn_linked(
            None,
            TransportActor::<D>::new(),
            Arc::new(database),
            supervisor,
        )
        .await
        .map_err(|e| TransportError::Spawn(e.to_string()))?;
        Ok((TransportHandle::new(actor, options), join))
    }

    /// A handle to an actor that serves [`TransportMessage`]s (a [`TransportActor`], or a test's
    /// scripted stand-in).
    pub fn new(actor: ActorRef<TransportMessage>, options: HandleOptions) -> Self {
        Self {
            actor: Arc::new(RwLock::new(actor)),
            options,
        }
    }

    /// The actor this handle (and its clones) talks to now.
    pub fn actor(&self) -> ActorRef<TransportMessage> {
        self.actor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Points this handle and all its clones at a new actor (after the supervisor restarted it).
    pub fn repoint(&self, actor: ActorRef<TransportMessage>) {
        *self.actor.write().unwrap_or_else(PoisonError::into_inner) = actor;
    }

    /// Sends the message `build` makes around a reply port and waits for the answer, at most the
    /// call timeout. Mailbox failures come back as transient network errors.
    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T, CloudError>>) -> TransportMessage,
    ) -> Result<T, CloudError> {
        let actor = self.actor();
        let timeout = self.options.call_timeout;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        flatten(ractor::call_t!(actor, build, timeout_ms), timeout)
    }

    /// See [`CloudDatabase::modify_records`].
    pub async fn modify_records(
        &self,
        batch: ModifyBatch,
    ) -> Result<Vec<ModifyOutcome>, CloudError> {
        self.call(|reply| TransportMessage::ModifyRecords(batch, reply))
            .await
    }

    /// See [`CloudDatabase::lookup_records`].
    pub async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        self.call(|reply| TransportMessage::LookupRecords(zone, record_names, reply))
            .await
    }

    /// See [`CloudDatabase::fetch_zone_changes`].
    pub async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        self.call(|reply| TransportMessage::FetchZoneChanges(zone, since, reply))
            .await
    }

    /// See [`CloudDatabase::fetch_database_changes`].
    pub async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        self.call(|reply| TransportMessage::FetchDatabaseChanges(since, reply))
            .await
    }

    /// See [`CloudDatabase::ensure_zones`].
    pub async fn ensure_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.call(|reply| TransportMessage::EnsureZones(zones, reply))
            .await
    }

    /// See [`CloudDatabase::delete_zones`].
    pub async fn delete_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.call(|reply| TransportMessage::DeleteZones(zones, reply))
            .await
    }

    /// See [`CloudDatabase::ensure_subscription`].
    pub async fn ensure_subscription(&self, subscription: Subscription) -> Result<(), CloudError> {
        self.call(|reply| TransportMessage::EnsureSubscription(subscription, reply))
            .await
    }

    /// See [`CloudDatabase::current_user`].
    pub async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        self.call(TransportMessage::CurrentUser).await
    }

    /// See [`CloudDatabase::notifications`].
    pub async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        self.call(TransportMessage::Notifications).await
    }
}

/// A call's answer, with mailbox failures turned into transient network errors.
fn flatten<T>(
    result: Result<Result<T, CloudError>, RactorErr<TransportMessage>>,
    timeout: Duration,
) -> Result<T, CloudError> {
    match result {
        Ok(answer) => answer,
        Err(RactorErr::Timeout) => Err(CloudError::Network {
            kind: NetworkFailure::Timeout,
            detail: format!(
                "the transport actor did not answer within {} s",
                timeout.as_secs()
            ),
        }),
        Err(e) => Err(CloudError::Network {
            kind: NetworkFailure::Other,
            detail: format!("the transport actor is not available: {e}"),
        }),
    }
}

impl CloudDatabase for TransportHandle {
    async fn modify_records(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        TransportHandle::modify_records(self, batch).await
    }

    async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        TransportHandle::lookup_records(self, zone, record_names).await
    }

    async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        TransportHandle::fetch_zone_changes(self, zone, since).await
    }

    async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        TransportHandle::fetch_database_changes(self, since).await
    }

    async fn ensure_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        TransportHandle::ensure_zones(self, zones).await
    }

    async fn delete_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        TransportHandle::delete_zones(self, zones).await
    }

    async fn ensure_subscription(&self, subscription: Subscription) -> Result<(), CloudError> {
        TransportHandle::ensure_subscription(self, subscription).await
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        TransportHandle::current_user(self).await
    }

    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        TransportHandle::notifications(self).await
    }
}
