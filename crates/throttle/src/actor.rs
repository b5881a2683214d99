//! The throttle as a ractor actor behind a cloneable handle.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use governor::clock::Clock;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use skysync_actors::{BoxFuture, ChildSpec, Mailbox};
use skysync_model::PacingMemory;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::error::{Result, ThrottleError};
use crate::outcome::{OperationId, Outcome};
use crate::quota::TokioClock;
use crate::retry::RetryVerdict;
use crate::throttle::{Permit, Throttle, ThrottleDiagnostics};

/// How long a handle waits for the actor to answer before giving up with
/// [`ThrottleError::Local`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times [`ThrottleHandle::acquire`] waits and asks again before answering
/// [`ThrottleError::PermitStarved`].
pub const DEFAULT_ACQUIRE_ROUNDS: u32 = 64;

/// The throttle actor's interface: every request it answers.
#[derive(Debug)]
pub enum ThrottleMessage {
    /// May the next operation start now? Answers [`Permit`]; never sleeps in the actor.
    Permit(RpcReplyPort<Permit>),
    /// How an attempt of an operation ended; answers that operation's retry verdict.
    Report(OperationId, Outcome, RpcReplyPort<RetryVerdict>),
    /// Drop the retry count of an operation (split, parked, abandoned).
    ForgetOperation(OperationId, RpcReplyPort<()>),
    /// Drop every retry count (a resume from a halt).
    ClearRetries(RpcReplyPort<()>),
    /// The platform says the network is back: end the offline probing wait.
    NetworkAvailable(RpcReplyPort<()>),
    /// A snapshot for diagnostics.
    Diagnostics(RpcReplyPort<ThrottleDiagnostics>),
    /// What to save in the store: the learned ceiling and a pending `retryAfter` deadline.
    Memory(RpcReplyPort<PacingMemory>),
}

/// The actor that owns a [`Throttle`]; reads tokio's clock (and, for [`PacingMemory`], the
/// wall clock) for `now` on each message. Spawn it through [`ThrottleHandle::spawn`] (or
/// `spawn_with_clock` / `spawn_linked`).
pub struct ThrottleActor<C>(PhantomData<fn() -> C>);

impl<C> Default for ThrottleActor<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C> Actor for ThrottleActor<C>
where
    C: Clock + Send + Sync + 'static,
{
    type Msg = ThrottleMessage;
    type State = Throttle<C>;
    type Arguments = Throttle<C>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        throttle: Throttle<C>,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        Ok(throttle)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        throttle: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let now = Instant::now();
        // A failed reply means the caller gave up waiting (its call timed out) and left; there
        // is nobody to tell, and the throttle's state is already updated.
        match message {
            ThrottleMessage::Permit(reply) => {
                let _ = reply.send(throttle.permit(now));
            }
            ThrottleMessage::Report(operation, outcome, reply) => {
                let _ = reply.send(throttle.report(now, &operation, &outcome));
            }
            ThrottleMessage::ForgetOperation(operation, reply) => {
                throttle.forget_operation(&operation);
                let _ = reply.send(());
            }
            ThrottleMessage::ClearRetries(reply) => {
                throttle.clear_retries();
                let _ = reply.send(());
            }
            ThrottleMessage::NetworkAvailable(reply) => {
                throttle.network_available();
                let _ = reply.send(());
            }
            ThrottleMessage::Diagnostics(reply) => {
                let _ = reply.send(throttle.diagnostics(now));
            }
            ThrottleMessage::Memory(reply) => {
                let _ = reply.send(throttle.memory(now, SystemTime::now()));
            }
        }
        Ok(())
    }
}

/// A cloneable handle to the throttle actor, with typed async methods.
///
/// All clones talk to the same throttle, through a [`Mailbox`] that a supervisor re-points after a
/// restart (see [`ThrottleSpec`]). Every call goes through one private method that carries the
/// timeout ([`DEFAULT_CALL_TIMEOUT`] unless changed with [`ThrottleHandle::with_call_timeout`]);
/// a missing answer is [`ThrottleError::Local`], never a throttle decision.
#[derive(Debug, Clone)]
pub struct ThrottleHandle {
    mailbox: Mailbox<ThrottleMessage>,
    call_timeout: Duration,
}

fn spawn_failed(err: impl std::fmt::Display) -> ThrottleError {
    ThrottleError::Spawn {
        reason: err.to_string(),
    }
}

/// The throttle to start from: a restored one if the store had something saved, else a fresh
/// one.
fn starting_throttle<C: Clock>(
    config: &ThrottleConfig,
    clock: C,
    memory: Option<&PacingMemory>,
) -> Result<Throttle<C>> {
    match memory {
        Some(memory) => Throttle::restore(config, clock, memory, Instant::now(), SystemTime::now()),
        None => Throttle::with_clock(config, clock),
    }
}

impl ThrottleHandle {
    /// Spawns an unnamed throttle actor on tokio's clock, starting from `memory` if the store
    /// had one saved ([`ThrottleHandle::memory`]): the learned ceiling, and a `retryAfter`
    /// deadline still to wait out. Answers [`ThrottleError::InvalidConfig`] before spawning
    /// anything if the config is out of range.
    pub async fn spawn(
        config: &ThrottleConfig,
        memory: Option<&PacingMemory>,
    ) -> Result<(Self, JoinHandle<()>)> {
        Self::spawn_with_clock(config, TokioClock, memory).await
    }

    /// Spawns an unnamed throttle actor whose quota runs on `clock`, starting from `memory`.
    pub async fn spawn_with_clock<C>(
        config: &ThrottleConfig,
        clock: C,
        memory: Option<&PacingMemory>,
    ) -> Result<(Self, JoinHandle<()>)>
    where
        C: Clock + Send + Sync + 'static,
    {
        let throttle = starting_throttle(config, clock, memory)?;
        let handle = Self::detached();
        let join = handle.start_from(throttle, None).await?;
        Ok((handle, join))
    }

    /// Spawns an unnamed throttle actor on tokio's clock, starting from `memory`, supervised
    /// by `supervisor`.
    pub async fn spawn_linked(
        config: &ThrottleConfig,
        memory: Option<&PacingMemory>,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>)> {
        let throttle = starting_throttle(config, TokioClock, memory)?;
        Self::spawn_linked_from(throttle, supervisor).await
    }

    /// Spawns an unnamed throttle actor that continues from `throttle`, supervised by
    /// `supervisor`.
    ///
    /// A supervisor restarting a throttle that stopped cleanly finds its last [`Throttle`] in
    /// `SupervisionEvent::ActorTerminated` (take it with
    /// `BoxedState::take::<Throttle<C>>()`) and hands it back here, so that the rate, the
    /// server's `retryAfter` deadline and the retry counts survive the restart. One that
    /// failed left no state: restart it from the last saved [`PacingMemory`] instead (as
    /// [`ThrottleSpec`] does).
    pub async fn spawn_linked_from<C>(
        throttle: Throttle<C>,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>)>
    where
        C: Clock + Send + Sync + 'static,
    {
        let handle = Self::detached();
        let join = handle.start_from(throttle, Some(supervisor)).await?;
        Ok((handle, join))
    }

    /// A handle whose mailbox has no actor yet: calls wait for one (up to the call timeout).
    pub fn detached() -> Self {
        Self {
            mailbox: Mailbox::new("throttle"),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Starts a throttle actor that continues from `throttle`, linked to `supervisor` if given,
    /// and attaches it to this handle's mailbox (and every clone's).
    pub async fn start_from<C>(
        &self,
        throttle: Throttle<C>,
        supervisor: Option<ActorCell>,
    ) -> Result<JoinHandle<()>>
    where
        C: Clock + Send + Sync + 'static,
    {
        let actor = ThrottleActor::<C>::default();
        let spawned = match supervisor {
            Some(supervisor) => Actor::spawn_linked(None, actor, throttle, supervisor).await,
            None => Actor::spawn(None, actor, throttle).await,
        };
        let (actor, join) = spawned.map_err(spawn_failed)?;
        self.mailbox.attach(actor);
        Ok(join)
    }

    /// A handle for an already running throttle actor (for a test's stand-in).
    pub fn from_actor(actor: ActorRef<ThrottleMessage>) -> Self {
        Self {
            mailbox: Mailbox::with_actor("throttle", actor),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same handle with a different call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The mailbox this handle calls through (a supervisor attaches restarted actors to it).
    pub fn mailbox(&self) -> &Mailbox<ThrottleMessage> {
        &self.mailbox
    }

    /// The actor behind this handle now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<ThrottleMessage>> {
        self.mailbox.actor()
    }

    /// Every request to the actor goes through here: one call, with the timeout, a missing
    /// answer mapped to [`ThrottleError::Local`] naming `request`.
    async fn call<T: Send + 'static>(
        &self,
        request: &'static str,
        build: impl FnOnce(RpcReplyPort<T>) -> ThrottleMessage,
    ) -> Result<T> {
        Ok(self.mailbox.call(request, self.call_timeout, build).await?)
    }

    /// May the next operation start now? [`Permit::Granted`], or the instant to wait for. The
    /// caller does the waiting (see [`ThrottleHandle::acquire`]); the actor never sleeps.
    pub async fn permit(&self) -> Result<Permit> {
        self.call("permit", ThrottleMessage::Permit).await
    }

    /// Waits (in the caller's task) until a permit is granted, and answers how long that took.
    /// Gives up with [`ThrottleError::PermitStarved`] after [`DEFAULT_ACQUIRE_ROUNDS`] waits.
    pub async fn acquire(&self) -> Result<Duration> {
        self.acquire_within(DEFAULT_ACQUIRE_ROUNDS).await
    }

    /// [`ThrottleHandle::acquire`] with a chosen bound on the number of waits.
    pub async fn acquire_within(&self, rounds: u32) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..rounds {
            match self.permit().await? {
                Permit::Granted => return Ok(Instant::now().saturating_duration_since(start)),
                Permit::Wait { until, .. } => tokio::time::sleep_until(until).await,
            }
        }
        // One last ask after the final wait.
        match self.permit().await? {
            Permit::Granted => Ok(Instant::now().saturating_duration_since(start)),
            Permit::Wait { .. } => Err(ThrottleError::PermitStarved { rounds }),
        }
    }

    /// Reports how an attempt of `operation` ended; answers whether to retry it or that it is
    /// exhausted.
    pub async fn report(&self, operation: OperationId, outcome: Outcome) -> Result<RetryVerdict> {
        self.call("report", |reply| {
            ThrottleMessage::Report(operation, outcome, reply)
        })
        .await
    }

    /// Drops the retry count of `operation` (it was split, parked or abandoned).
    pub async fn forget_operation(&self, operation: OperationId) -> Result<()> {
        self.call("forget_operation", |reply| {
            ThrottleMessage::ForgetOperation(operation, reply)
        })
        .await
    }

    /// Drops every retry count (a resume from a halt).
    pub async fn clear_retries(&self) -> Result<()> {
        self.call("clear_retries", ThrottleMessage::ClearRetries)
            .await
    }

    /// Tells the throttle the network is back, ending the offline probing wait.
    pub async fn network_available(&self) -> Result<()> {
        self.call("network_available", ThrottleMessage::NetworkAvailable)
            .await
    }

    /// A snapshot of the throttle: rate, ceiling, next permitted start and why it waits, the
    /// current operation's retry count and its error, the `retryAfter` deadline.
    pub async fn diagnostics(&self) -> Result<ThrottleDiagnostics> {
        self.call("diagnostics", ThrottleMessage::Diagnostics).await
    }

    /// What to save in the store's sync metadata now: the learned ceiling and the pending
    /// `retryAfter` deadline as wall-clock time. Hand it to [`ThrottleHandle::spawn`] after a
    /// restart.
    pub async fn memory(&self) -> Result<PacingMemory> {
        self.call("memory", ThrottleMessage::Memory).await
    }

    /// Asks the actor to stop and empties the mailbox; calls made afterwards answer
    /// [`ThrottleError::Local`] unless a new actor is started.
    pub fn stop(&self) {
        if let Some(actor) = self.mailbox.actor() {
            self.mailbox.detach();
            actor.stop(None);
        }
    }
}

/// How a supervisor starts (and restarts) the throttle on tokio's clock: a new actor from the last
/// [`PacingMemory`] the engine saved, attached to the same handle. (A failed actor leaves no state;
/// what the store holds is what a restart after a crash would start from too.)
pub struct ThrottleSpec {
    config: ThrottleConfig,
    memory: Arc<Mutex<Option<PacingMemory>>>,
    handle: ThrottleHandle,
}

impl ThrottleSpec {
    /// The spec of a throttle with `config`, starting from `memory`, with a handle that waits for
    /// its first start. Answers [`ThrottleError::InvalidConfig`] for an out-of-range config.
    pub fn new(config: ThrottleConfig, memory: Option<PacingMemory>) -> Result<Self> {
        // Checked here, so that a restart cannot fail on the config.
        Throttle::new(&config)?;
        Ok(Self {
            config,
            memory: Arc::new(Mutex::new(memory)),
            handle: ThrottleHandle::detached(),
        })
    }

    /// The throttle's handle (valid across restarts).
    pub fn handle(&self) -> ThrottleHandle {
        self.handle.clone()
    }

    /// Where the engine records each [`PacingMemory`] it saves to the store, so that a restart of
    /// the throttle starts from it.
    pub fn saved_memory(&self) -> Arc<Mutex<Option<PacingMemory>>> {
        Arc::clone(&self.memory)
    }
}

impl ChildSpec for ThrottleSpec {
    fn name(&self) -> &'static str {
        "throttle"
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        Box::pin(async move {
            let memory = *self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            let throttle = starting_throttle(&self.config, TokioClock, memory.as_ref())
                .map_err(|e| e.to_string())?;
            self.handle
                .start_from(throttle, Some(supervisor))
                .await
                .map_err(|e| e.to_string())?;
            self.handle
                .actor()
                .map(|actor| vec![actor.get_cell()])
                .ok_or_else(|| "the throttle actor was not attached".to_owned())
        })
    }
}
