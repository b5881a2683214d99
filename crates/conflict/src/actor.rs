//! The conflict resolver as a ractor actor behind a cloneable handle.

use crate::error::ConflictError;
use crate::resolution::{Conflict, Resolution};
use crate::resolver::ConflictResolver;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use skysync_actors::{BoxFuture, ChildSpec, Mailbox};
use skysync_model::{PendingChange, Record};
use std::sync::Arc;
use std::time::Duration;

/// How long a handle waits for the actor to answer before giving up with
/// [`ConflictError::Local`].
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

/// A cloneable handle to the conflict actor, with a typed async [`ConflictHandle::resolve`].
///
/// It calls through a [`Mailbox`], so it and its clones stay valid across restarts of the actor
/// by a supervisor (see [`ConflictSpec`]). Every call carries a timeout ([`DEFAULT_CALL_TIMEOUT`]
/// unless changed with [`ConflictHandle::with_call_timeout`]); an actor that does not answer is
/// [`ConflictError::Local`].
#[derive(Debug, Clone)]
pub struct ConflictHandle {
    mailbox: Mailbox<ConflictMessage>,
    call_timeout: Duration,
}

fn spawn_failed(err: impl std::fmt::Display) -> ConflictError {
    ConflictError::Spawn {
        reason: err.to_string(),
    }
}

impl ConflictHandle {
    /// Spawns an unnamed, unsupervised conflict actor that settles conflicts with `resolver`.
    pub async fn spawn(
        resolver: impl ConflictResolver + 'static,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        Self::spawn_shared(Arc::new(resolver)).await
    }

    /// Spawns an unnamed, unsupervised conflict actor over a shared resolver.
    pub async fn spawn_shared(
        resolver: Arc<dyn ConflictResolver>,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        let handle = Self::detached();
        let join = handle.start(resolver, None).await?;
        Ok((handle, join))
    }

    /// Spawns an unnamed conflict actor over a shared resolver, linked to `supervisor`.
    pub async fn spawn_linked(
        resolver: Arc<dyn ConflictResolver>,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>), ConflictError> {
        let handle = Self::detached();
        let join = handle.start(resolver, Some(supervisor)).await?;
        Ok((handle, join))
    }

    /// A handle whose mailbox has no actor yet: calls wait for one (up to the call timeout).
    pub fn detached() -> Self {
        Self {
            mailbox: Mailbox::new("conflict"),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Starts a conflict actor over `resolver`, linked to `supervisor` if given, and attaches it to
    /// this handle's mailbox (and every clone's).
    pub async fn start(
        &self,
        resolver: Arc<dyn ConflictResolver>,
        supervisor: Option<ActorCell>,
    ) -> Result<JoinHandle<()>, ConflictError> {
        let spawned = match supervisor {
            Some(supervisor) => {
                Actor::spawn_linked(None, ConflictActor, resolver, supervisor).await
            }
            None => Actor::spawn(None, ConflictActor, resolver).await,
        };
        let (actor, join) = spawned.map_err(spawn_failed)?;
        self.mailbox.attach(actor);
        Ok(join)
    }

    /// A handle to an actor that answers [`ConflictMessage`]s: the conflict actor, or a stand-in a
    /// test spawns in its place.
    pub fn from_actor(actor: ActorRef<ConflictMessage>) -> Self {
        Self {
            mailbox: Mailbox::with_actor("conflict", actor),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same handle, waiting at most `timeout` for each answer.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The mailbox this handle calls through (a supervisor attaches restarted actors to it).
    pub fn mailbox(&self) -> &Mailbox<ConflictMessage> {
        &self.mailbox
    }

    /// The actor behind this handle now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<ConflictMessage>> {
        self.mailbox.actor()
    }

    /// Settles the conflict between the local change and the server's copy (`None`: deleted), both
    /// started from `base` (`None`: unknown). Answers the checked resolution (see
    /// [`crate::settle`]); [`ConflictError::Local`] if the actor does not answer in time.
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
        self.mailbox
            .call("resolve", self.call_timeout, |reply| {
                ConflictMessage::Resolve(conflict, reply)
            })
            .await?
    }

    /// Stops the actor gracefully and empties the mailbox: later calls answer
    /// [`ConflictError::Local`] unless a new actor is started.
    pub fn stop(&self) {
        if let Some(actor) = self.mailbox.actor() {
            self.mailbox.detach();
            actor.stop(None);
        }
    }
}

/// How a supervisor starts (and restarts) the conflict actor: a new actor over the same resolver,
/// attached to the same handle.
pub struct ConflictSpec {
    resolver: Arc<dyn ConflictResolver>,
    handle: ConflictHandle,
}

impl ConflictSpec {
    /// The spec of a conflict actor settling with `resolver`, with a handle that waits for its
    /// first start.
    pub fn new(resolver: Arc<dyn ConflictResolver>) -> Self {
        Self {
            resolver,
            handle: ConflictHandle::detached(),
        }
    }

    /// The conflict actor's handle (valid across restarts).
    pub fn handle(&self) -> ConflictHandle {
        self.handle.clone()
    }
}

impl ChildSpec for ConflictSpec {
    fn name(&self) -> &'static str {
        "conflict"
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        Box::pin(async move {
            self.handle
                .start(Arc::clone(&self.resolver), Some(supervisor))
                .await
                .map_err(|e| e.to_string())?;
            self.handle
                .actor()
                .map(|actor| vec![actor.get_cell()])
                .ok_or_else(|| "the conflict actor was not attached".to_owned())
        })
    }
}
