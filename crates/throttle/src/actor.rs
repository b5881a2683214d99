//! The throttle as a ractor actor behind a cloneable handle.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use governor::clock::Clock;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, call_t};
use skysync_model::PacingMemory;
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::error::{Result, ThrottleError};
use crate::outcome::{OperationId, Outcome};
use crate::quota::TokioClock;
use crate::retry::RetryVerdict;
use crate::throttle::{Permit, Throttle, ThrottleDiagnostics};

/// How long a handle waits for the actor to answer before giving up with
/// [`ThrottleError::Unavailable`].
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

/// A cloneable handle to a running throttle actor, with typed async methods.
///
/// All clones talk to the same throttle. Every call goes through one private method that
/// carries the timeout ([`DEFAULT_CALL_TIMEOUT`] unless changed with
/// [`ThrottleHandle::with_call_timeout`]) and maps a missing answer to
/// [`ThrottleError::Unavailable`].
#[derive(Debug, Clone)]
pub struct ThrottleHandle {
    actor: ActorRef<ThrottleMessage>,
    call_timeout: Duration,
}

fn unavailable(request: &'static str, err: RactorErr<ThrottleMessage>) -> ThrottleError {
    let reason = match err {
        RactorErr::Timeout => "no answer within the call timeout".to_owned(),
        other => other.to_string(),
    };
    ThrottleError::Unavailable { request, reason }
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
        let (actor, join) = Actor::spawn(None, ThrottleActor::<C>::default(), throttle)
            .await
            .map_err(spawn_failed)?;
        Ok((Self::from_actor(actor), join))
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
    /// failed left no state: restart it from the last saved [`PacingMemory`] instead.
    pub async fn spawn_linked_from<C>(
        throttle: Throttle<C>,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>)>
    where
        C: Clock + Send + Sync + 'static,
    {
        let (actor, join) =
            Actor::spawn_linked(None, ThrottleActor::<C>::default(), throttle, supervisor)
                .await
                .map_err(spawn_failed)?;
        Ok((Self::from_actor(actor), join))
    }

    /// A handle for an already running throttle actor (for a supervisor that spawned it).
    pub fn from_actor(actor: ActorRef<ThrottleMessage>) -> Self {
        Self {
            actor,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same handle with a different call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The actor behind this handle, for supervision and for stopping it.
    pub fn actor(&self) -> &ActorRef<ThrottleMessage> {
        &self.actor
    }

    /// Every request to the actor goes through here: one call, with the timeout, a missing
    /// answer mapped to [`ThrottleError::Unavailable`] naming `request`.
    async fn call<T: Send + 'static>(
        &self,
        request: &'static str,
        build: impl FnOnce(RpcReplyPort<T>) -> ThrottleMessage,
    ) -> Result<T> {
        let timeout_ms = u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX);
        call_t!(self.actor, build, timeout_ms).map_err(|err| unavailable(request, err))
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

    /// Asks the actor to stop; calls made afterwards answer [`ThrottleError::Unavailable`].
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
