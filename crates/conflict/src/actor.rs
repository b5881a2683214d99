//! The conflict resolver as a ractor actor behind a cloneable handle.

use crate::error::ConflictError;
use crate::resolution::{Conflict, Resolution};
use crate::resolver::ConflictResolver;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, call_t};
use skysync_model::{PendingChange, Record};
use std::sync::Arc;
use std::time::Duration;

/// How long a handle waits for the actor to answer before giving up with
/// [`ConflictError::Unavailable`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The conflict actor's interface: every request it answers.
#[derive(Debug)]
pub enum ConflictMessage {
    /// Settle this conflict with the actor's resolver (see [`crate::settle`]) and answer the checked
    /// resolution, or why the conflict could not be settled.
    Resolve(Conflict, RpcReplyPort<Result<Resolution, ConflictError>>),
}

/// The actor that owns a resolver and settles conflicts with it, one at a time. Spawn it through
/// [`ConflictHandle::spawn`] (or `spawn_shared` / `spawn_linked`); it is never named.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConflictActor;

impl Actor for ConflictActor {
    type Msg = ConflictMessage;
    type State = Arc<dyn ConflictResolver>;
    type Arguments = Arc<dyn ConflictResolver>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        resolver: Arc<dyn ConflictResolver>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(resolver)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        resolver: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConflictMessage::Resolve(conflict, reply) => {
                // A failed reply means the caller stopped waiting (its call timed out); the
                // resolution is pure, so there is nothing to undo and nobody to tell.
                let _ = reply.send(conflict.settle_with(resolver.as_ref()));
            }
        }
        Ok(())
    }
}

/// A cloneable handle to a running conflict actor, with a typed async [`ConflictHandle::resolve`].
///
/// All clones talk to the same actor. Every call carries a timeout ([`DEFAULT_CALL_TIMEOUT`] unless
/// changed with [`ConflictHandle::with_call_timeout`]).
#[derive(Debug, Clone)]
pub struct ConflictHandle {
    actor: ActorRef<ConflictMessage>,
    call_timeout: Duration,
}

fn spawn_failed(err: impl std::fmt::Display) -> ConflictError {
    ConflictError::Spawn {
        reason: err.to_string(),
    }
}

impl ConflictHandle {
    /// Spawns an unnamed conflict actor that settles conflicts with `resolver`.
    pub async fn spawn(
        resolver: impl ConflictResolver + 'static,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        Self::spawn_shared(Arc::new(resolver)).await
    }

    /// Spawns an unnamed conflict actor over a shared resolver (keep the `Arc` to spawn it again
    /// after a failure).
    pub async fn spawn_shared(
        resolver: Arc<dyn ConflictResolver>,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        let (actor, join) = Actor::spawn(None, ConflictActor, resolver)
            .await
            .map_err(spawn_failed)?;
        Ok((Self::from_actor(actor), join))
    }

    /// Spawns an unnamed conflict actor over a shared resolver, supervised by `supervisor`.
    pub async fn spawn_linked(
        resolver: Arc<dyn ConflictResolver>,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        let (actor, join) = Actor::spawn_linked(None, ConflictActor, resolver, supervisor)
            .await
            .map_err(spawn_failed)?;
        Ok((Self::from_actor(actor), join))
    }

    /// A handle to an actor that answers [`ConflictMessage`]s: the conflict actor, or a stand-in a
    /// test spawns in its place.
    pub fn from_actor(actor: ActorRef<ConflictMessage>) -> Self {
        Self {
            actor,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same handle, waiting at most `timeout` for each answer.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The actor behind this handle (to link, monitor or stop it).
    pub fn actor(&self) -> &ActorRef<ConflictMessage> {
        &self.actor
    }

    /// Settles the conflict between the local change and the server's copy (`None`: deleted), both
    /// started from `base` (`None`: unknown). Answers the checked resolution (see
    /// [`crate::settle`]); [`ConflictError::Unavailable`] if the actor has stopped or does not
    /// answer in time.
    pub async fn resolve(
        &self,
        local: PendingChange,
        base: Option<Record>,
        server: Option<Record>,
    ) -> Result<Resolution, ConflictError> {
        self.settle(Conflict {
            local,
            base,
            server,
        })
        .await
    }

    /// Settles an owned [`Conflict`]; the same as [`ConflictHandle::resolve`].
    pub async fn settle(&self, conflict: Conflict) -> Result<Resolution, ConflictError> {
        let timeout_ms = u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX);
        let answer: Result<Result<Resolution, ConflictError>, RactorErr<ConflictMessage>> =
            call_t!(self.actor, ConflictMessage::Resolve, timeout_ms, conflict);
        answer.map_err(|err| ConflictError::Unavailable {
            reason: match err {
                RactorErr::Timeout => {
                    format!("no answer within {} ms", self.call_timeout.as_millis())
                }
                other => other.to_string(),
            },
        })?
    }

    /// Stops the actor gracefully: it stops taking messages, and calls still waiting answer
    /// [`ConflictError::Unavailable`].
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
