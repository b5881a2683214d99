//! The slot every component handle calls through, re-pointed by the supervisor after a restart.

use crate::error::LocalError;
use ractor::{ActorRef, Message, MessagingErr, RpcReplyPort};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a component's messages go: the component's current actor, replaced on every restart.
///
/// A handle (`StoreHandle`, `ThrottleHandle`, ...) holds a `Mailbox` instead of an `ActorRef`, so
/// the handle and all its clones stay valid when the actor behind them is restarted: the
/// supervisor [`attach`](Mailbox::attach)es the new actor, and a call that found the old actor
/// dead waits (within its time limit) for the new one and delivers its message there. Messages
/// are only re-sent when the dead actor never took them, so nothing runs twice; a message the
/// actor took and then died on is reported as [`LocalError::Lost`].
///
/// Cloning shares the slot.
pub struct Mailbox<M: Message> {
    slot: Arc<watch::Sender<Option<ActorRef<M>>>>,
    component: &'static str,
}

impl<M: Message> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
            component: self.component,
        }
    }
}

impl<M: Message> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("component", &self.component)
            .field("actor", &self.actor().map(|a| a.get_id()))
            .finish()
    }
}

impl<M: Message> Mailbox<M> {
    /// An empty mailbox for `component` (named in errors): calls wait until an actor is attached.
    pub fn new(component: &'static str) -> Self {
        let (slot, _) = watch::channel(None);
        Self {
            slot: Arc::new(slot),
            component,
        }
    }

    /// A mailbox already pointing at `actor`.
    pub fn with_actor(component: &'static str, actor: ActorRef<M>) -> Self {
        let mailbox = Self::new(component);
        mailbox.attach(actor);
        mailbox
    }

    /// The component this mailbox serves, as named in errors.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// Points the mailbox (and every clone of it) at `actor`: the supervisor calls this after it
    /// spawned or restarted the component. Calls waiting for an actor go on at once.
    pub fn attach(&self, actor: ActorRef<M>) {
        self.slot.send_replace(Some(actor));
    }

    /// Empties the mailbox: calls wait for the next [`attach`](Mailbox::attach), or fail with
    /// [`LocalError::Unavailable`] at their time limit.
    pub fn detach(&self) {
        self.slot.send_replace(None);
    }

    /// The actor messages go to now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<M>> {
        self.slot.borrow().clone()
    }

    /// Sends the message that `build` makes around a reply port and waits for the answer, at most
    /// `timeout` in all (including any wait for a restarted actor).
    pub async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
    ) -> Result<T, LocalError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        self.deliver(operation, deadline, build(RpcReplyPort::from(tx)))
            .await?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LocalError::Lost {
                component: self.component,
                operation,
            }),
            Err(_) => Err(LocalError::TimedOut {
                component: self.component,
                operation,
                timeout,
            }),
        }
    }

    /// Sends a message that needs no answer, waiting at most `timeout` for an actor to take it.
    pub async fn cast(
        &self,
        operation: &'static str,
        timeout: Duration,
        message: M,
    ) -> Result<(), LocalError> {
        self.deliver(operation, Instant::now() + timeout, message)
            .await
    }

    /// Hands `message` to the current actor; if it is dead, waits for the next one (until
    /// `deadline`) and tries again. Only a message no actor took is ever re-sent.
    async fn deliver(
        &self,
        operation: &'static str,
        deadline: Instant,
        mut message: M,
    ) -> Result<(), LocalError> {
        let unavailable = || LocalError::Unavailable {
            component: self.component,
            operation,
        };
        let mut slot = self.slot.subscribe();
        loop {
            let actor = slot.borrow_and_update().clone();
            if let Some(actor) = actor {
                match actor.send_message(message) {
                    Ok(()) => return Ok(()),
                    Err(MessagingErr::SendErr(back)) => message = back,
                    // Other errors cannot carry the message back; none apply to a typed ref.
                    Err(_) => return Err(unavailable()),
                }
            }
            // No live actor: wait for the supervisor to attach another.
            match tokio::time::timeout_at(deadline, slot.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(unavailable()),
            }
        }
    }
}
