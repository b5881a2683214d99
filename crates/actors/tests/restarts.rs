//! The supervisor and the mailbox, scenario by scenario: a failed component restarts behind the
//! same handle, with growing backoff, until the intensity limit; components that share a resource
//! restart together; a call never runs twice and says when its outcome is unknown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use skysync_actors::{
    BoxFuture, ChildSpec, ChildState, LocalError, Mailbox, RestartPolicy, SupervisorEvent,
    SupervisorHandle,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

enum Msg {
    /// Answers (generation, messages seen by this actor).
    Ask(RpcReplyPort<(u32, u32)>),
    /// Fails the actor.
    Fail,
    /// Fails the actor without answering the port it carries.
    FailHolding(RpcReplyPort<(u32, u32)>),
}

struct Component {
    generation: u32,
}

impl Actor for Component {
    type Msg = Msg;
    type State = u32;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u32, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        seen: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        *seen += 1;
        match msg {
            Msg::Ask(reply) => {
                let _ = reply.send((self.generation, *seen));
                Ok(())
            }
            Msg::Fail => Err("asked to fail".into()),
            Msg::FailHolding(reply) => {
                drop(reply);
                Err("failed mid-call".into())
            }
        }
    }
}

/// Starts `mailboxes.len()` actors as one unit; counts its starts.
struct Spec {
    mailboxes: Vec<Mailbox<Msg>>,
    starts: Arc<AtomicU32>,
}

impl ChildSpec for Spec {
    fn name(&self) -> &'static str {
        "component"
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        Box::pin(async move {
            let generation = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            let mut cells = Vec::new();
            for mailbox in &self.mailboxes {
                let (actor, _) =
                    Actor::spawn_linked(None, Component { generation }, (), supervisor.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                mailbox.attach(actor.clone());
                cells.push(actor.get_cell());
            }
            Ok(cells)
        })
    }
}

const LIMIT: Duration = Duration::from_secs(30);

async fn supervised(
    policy: RestartPolicy,
    actors: usize,
) -> (SupervisorHandle, Vec<Mailbox<Msg>>, Arc<AtomicU32>) {
    let (supervisor, _) = SupervisorHandle::spawn(policy).await.unwrap();
    let mailboxes: Vec<_> = (0..actors).map(|_| Mailbox::new("component")).collect();
    let starts = Arc::new(AtomicU32::new(0));
    supervisor
        .start(Spec {
            mailboxes: mailboxes.clone(),
            starts: Arc::clone(&starts),
        })
        .await
        .unwrap();
    (supervisor, mailboxes, starts)
}

#[tokio::test(start_paused = true)]
async fn a_failed_component_answers_again_through_the_same_handle_after_its_backoff() {
    let policy = RestartPolicy {
        backoff_min: Duration::from_secs(2),
        ..RestartPolicy::default()
    };
    let (supervisor, mailboxes, starts) = supervised(policy, 1).await;
    let mut events = supervisor.subscribe();
    let handle = mailboxes[0].clone();
    assert_eq!(handle.call("ask", LIMIT, Msg::Ask).await.unwrap(), (1, 1));

    let before = tokio::time::Instant::now();
    handle.cast("fail", LIMIT, Msg::Fail).await.unwrap();
    let restarting = events.recv().await.unwrap();
    // The actor is dead now: the call waits for the restarted one and is answered by it.
    assert_eq!(handle.call("ask", LIMIT, Msg::Ask).await.unwrap(), (2, 1));
    assert!(
        before.elapsed() >= Duration::from_secs(2),
        "restarted before its backoff"
    );
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    match restarting {
        SupervisorEvent::Restarting {
            child,
            reason,
            attempt,
            after,
        } => {
            assert_eq!(child, "component");
            assert!(reason.contains("asked to fail"), "{reason}");
            assert_eq!((attempt, after), (1, Duration::from_secs(2)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarted { attempt: 1, .. }
    ));
    supervisor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_and_the_supervisor_gives_up_past_the_intensity_limit() {
    let policy = RestartPolicy {
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(3),
        max_restarts: 3,
        within: Duration::from_secs(600),
    };
    let (supervisor, mailboxes, starts) = supervised(policy, 1).await;
    let mut events = supervisor.subscribe();
    let handle = mailboxes[0].clone();
    let mut waits = Vec::new();
    for _ in 0..3 {
        handle.cast("fail", LIMIT, Msg::Fail).await.unwrap();
        match events.recv().await.unwrap() {
            SupervisorEvent::Restarting { after, .. } => waits.push(after),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            events.recv().await.unwrap(),
            SupervisorEvent::Restarted { .. }
        ));
    }
    assert_eq!(
        waits,
        [1, 2, 3].map(Duration::from_secs),
        "doubling, capped at backoff_max"
    );
    handle.cast("fail", LIMIT, Msg::Fail).await.unwrap();
    match events.recv().await.unwrap() {
        SupervisorEvent::GaveUp { child, reason } => {
            assert_eq!(child, "component");
            assert!(reason.contains("asked to fail"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(starts.load(Ordering::SeqCst), 4, "no start after giving up");
    let children = supervisor.children().await.unwrap();
    assert_eq!(children[0].state, ChildState::GaveUp);
    let err = handle
        .call("ask", Duration::from_secs(5), Msg::Ask)
        .await
        .unwrap_err();
    assert!(matches!(err, LocalError::Unavailable { .. }), "{err:?}");
    supervisor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn components_of_one_spec_restart_together() {
    let (supervisor, mailboxes, starts) = supervised(RestartPolicy::default(), 2).await;
    let (store, queue) = (mailboxes[0].clone(), mailboxes[1].clone());
    assert_eq!(queue.call("ask", LIMIT, Msg::Ask).await.unwrap(), (1, 1));
    let mut events = supervisor.subscribe();
    store.cast("fail", LIMIT, Msg::Fail).await.unwrap();
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarting { .. }
    ));
    // The sibling was stopped and started again with the failed one: a new generation.
    assert_eq!(queue.call("ask", LIMIT, Msg::Ask).await.unwrap(), (2, 1));
    assert_eq!(store.call("ask", LIMIT, Msg::Ask).await.unwrap(), (2, 1));
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    supervisor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_the_actor_took_and_died_on_is_lost_not_repeated() {
    let (supervisor, mailboxes, _) = supervised(RestartPolicy::default(), 1).await;
    let handle = mailboxes[0].clone();
    let err = handle
        .call("fail holding", LIMIT, Msg::FailHolding)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LocalError::Lost {
            component: "component",
            operation: "fail holding"
        }
    );
    // The restarted actor saw one message: this one, not a re-sent copy of the lost one.
    assert_eq!(handle.call("ask", LIMIT, Msg::Ask).await.unwrap(), (2, 1));
    supervisor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_with_no_actor_attached_is_unavailable_at_its_limit() {
    let mailbox: Mailbox<Msg> = Mailbox::new("store");
    let err = mailbox
        .call("ask", Duration::from_secs(3), Msg::Ask)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LocalError::Unavailable {
            component: "store",
            operation: "ask"
        }
    );
    assert!(err.to_string().contains("store is not running"), "{err}");
}
