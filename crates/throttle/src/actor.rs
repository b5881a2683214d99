//! The throttle as a ractor actor behind a cloneable handle.

use std::marker::PhantomData;
use std::time::Duration;

use governor::clock::Clock;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, call_t};
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::error::{Result, ThrottleError};
use crate::outcome::Outcome;
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
    /// May the next operation go now? Answers [`Permit`]; never sleeps in the actor.
    Permit(RpcReplyPort<Permit>),
    /// The outcome of the operation that just ended; answers the retry verdict.
    Report(Outcome, RpcReplyPort<RetryVerdict>),
    /// Start counting retries afresh for a new operation.
    BeginOperation(RpcReplyPort<()>),
    /// A snapshot for diagnostics.
    Diagnostics(RpcReplyPort<ThrottleDiagnostics>),
}

/// The actor that owns a [`Throttle`]; reads tokio's clock for `now` on each message.
/// Spawn it through [`ThrottleHandle::spawn`] (or `spawn_with_clock` / `spawn_linked`).
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
            ThrottleMessage::Report(outcome, reply) => {
                let _ = reply.send(throttle.report(now, &outcome));
            }
            ThrottleMessage::BeginOperation(reply) => {
                throttle.begin_operation();
                let _ = reply.send(());
            }
            ThrottleMessage::Diagnostics(reply) => {
                let _ = reply.send(throttle.diagnostics(now));
            }
        }
        Ok(())
    }
}

/// A cloneable handle to a running throttle actor, with typed async methods.
///
/// All clones talk to the same throttle. Every call carries a timeout
/// ([`DEFAULT_CALL_TIMEOUT`] unless changed with [`ThrottleHandle::with_call_timeout`]).
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

impl ThrottleHandle {
    /// Spawns an unnamed throttle actor on tokio's clock. Answers
    /// [`ThrottleError::InvalidConfig`] before spawning anything if the config is out of range.
    pub async fn spawn(config: &ThrottleConfig) -> Result<(Self, JoinHandle<()>)> {
        Self::spawn_with_clock(config, TokioClock).await
    }

    /// Spawns an unnamed throttle actor whose quota runs on `clock`.
    pub async fn spawn_with_clock<C>(
        config: &ThrottleConfig,
        clock: C,
    ) -> Result<(Self, JoinHandle<()>)>
    where
        C: Clock + Send + Sync + 'static,
    {
        let throttle = Throttle::with_clock(config, clock)?;
        let (actor, join) = Actor::spawn(None, ThrottleActor::<C>::default(), throttle)
            .await
            .map_err(|err| ThrottleError::Spawn {
                reason: err.to_string(),
            })?;
        Ok((Self::from_actor(actor), join))
    }

    /// Spawns an unnamed throttle actor on tokio's clock, supervised by `supervisor`.
    pub async fn spawn_linked(
        config: &ThrottleConfig,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>)> {
        Self::spawn_linked_from(Throttle::new(config)?, supervisor).await
    }

    /// Spawns an unnamed throttle actor that continues from `throttle`, supervised by
    /// `supervisor`.
    ///
    /// A supervisor restarting a throttle that stopped cleanly finds its last [`Throttle`] in
    /// `SupervisionEvent::ActorTerminated` (take it with
    /// `BoxedState::take::<Throttle<C>>()`) and hands it back here, so that the delay, the
    /// server's `retryAfter` deadline and the retry count survive the restart.
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
                .map_err(|err| ThrottleError::Spawn {
                    reason: err.to_string(),
                })?;
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

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// May the next operation go now? [`Permit::Granted`], or the instant to wait for. The
    /// caller does the waiting (see [`ThrottleHandle::acquire`]); the actor never sleeps.
    pub async fn permit(&self) -> Result<Permit> {
        call_t!(self.actor, ThrottleMessage::Permit, self.timeout_ms())
            .map_err(|err| unavailable("permit", err))
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

    /// Reports how the dispatched operation ended; answers whether to retry it or that it is
    /// exhausted.
    pub async fn report(&self, outcome: Outcome) -> Result<RetryVerdict> {
        call_t!(
            self.actor,
            ThrottleMessage::Report,
            self.timeout_ms(),
            outcome
        )
        .map_err(|err| unavailable("report", err))
    }

    /// Starts counting retries afresh for a new operation.
    pub async fn begin_operation(&self) -> Result<()> {
        call_t!(
            self.actor,
            ThrottleMessage::BeginOperation,
            self.timeout_ms()
        )
        .map_err(|err| unavailable("begin_operation", err))
    }

    /// A snapshot of the throttle: delay, next permitted instant, retry count and its error,
    /// and the `retryAfter` deadline.
    pub async fn diagnostics(&self) -> Result<ThrottleDiagnostics> {
        call_t!(self.actor, ThrottleMessage::Diagnostics, self.timeout_ms())
            .map_err(|err| unavailable("diagnostics", err))
    }

    /// Asks the actor to stop; calls made afterwards answer [`ThrottleError::Unavailable`].
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
