//! Component actors that outlive their restarts.
//!
//! Every skysync component (store and queue, throttle, transport, conflict) runs as a ractor actor
//! behind a small cloneable handle. This crate is the one mechanism they share so that a handle
//! stays valid when its actor fails and is restarted:
//!
//! - [`Mailbox`]: the slot a handle calls through. The supervisor attaches each new actor to it; a
//!   call that meets a dead actor waits (within its time limit) for the next one and is delivered
//!   there, so a restart is invisible to callers except as latency.
//! - [`LocalError`]: what a call answers when the component did not: timed out, unavailable,
//!   or lost mid-call. It is never a cloud error: it is not counted as a failed attempt, never fed
//!   to the throttle, and never a halt.
//! - [`SupervisorHandle`]: starts components linked to itself ([`ChildSpec`]) and restarts a
//!   failed one with backoff and an intensity limit ([`RestartPolicy`]); components that share a
//!   resource (the store and the queue share one database file) are one spec and restart together.
//!
//! ```
//! use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
//! use skysync_actors::{BoxFuture, ChildSpec, Mailbox, RestartPolicy, SupervisorHandle};
//! use std::time::Duration;
//!
//! // A component: answers how many messages it has seen, and fails on request.
//! enum CounterMsg { Count(RpcReplyPort<u32>), Fail }
//! struct Counter;
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     type State = u32;
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u32, ActorProcessingErr> {
//!         Ok(0)
//!     }
//!     async fn handle(&self, _: ActorRef<CounterMsg>, msg: CounterMsg, seen: &mut u32)
//!         -> Result<(), ActorProcessingErr> {
//!         *seen += 1;
//!         match msg {
//!             CounterMsg::Count(reply) => { let _ = reply.send(*seen); Ok(()) }
//!             CounterMsg::Fail => Err("asked to fail".into()),
//!         }
//!     }
//! }
//!
//! // How the supervisor (re)starts it: spawn linked, attach to the handle's mailbox.
//! struct CounterSpec(Mailbox<CounterMsg>);
//! impl ChildSpec for CounterSpec {
//!     fn name(&self) -> &'static str { "counter" }
//!     fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
//!         Box::pin(async move {
//!             let (actor, _) = Actor::spawn_linked(None, Counter, (), supervisor)
//!                 .await
//!                 .map_err(|e| e.to_string())?;
//!             self.0.attach(actor.clone());
//!             Ok(vec![actor.get_cell()])
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default()).await?;
//! let mailbox = Mailbox::new("counter");
//! supervisor.start(CounterSpec(mailbox.clone())).await?;
//! let limit = Duration::from_secs(5);
//! assert_eq!(mailbox.call("count", limit, CounterMsg::Count).await?, 1);
//!
//! let mut events = supervisor.subscribe();
//! mailbox.cast("fail", limit, CounterMsg::Fail).await?;
//! let restarting = events.recv().await?; // SupervisorEvent::Restarting { child: "counter", .. }
//! assert!(matches!(restarting, skysync_actors::SupervisorEvent::Restarting { .. }));
//! // The same mailbox answers again, from the restarted actor (whose count started over).
//! assert_eq!(mailbox.call("count", limit, CounterMsg::Count).await?, 1);
//! supervisor.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod error;
mod mailbox;
mod supervisor;

pub use error::LocalError;
pub use mailbox::Mailbox;
pub use supervisor::{
    BoxFuture, ChildSpec, ChildState, ChildStatus, RestartPolicy, SuperviseError, Supervisor,
    SupervisorArgs, SupervisorEvent, SupervisorHandle, SupervisorMsg, SupervisorState,
};
