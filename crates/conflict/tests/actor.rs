//! The conflict actor, driven only through its handle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{delete, note, save, stamped};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use skysync_actors::{LocalError, RestartPolicy, SupervisorEvent, SupervisorHandle};
use skysync_conflict::{
    ConflictCase, ConflictError, ConflictHandle, ConflictMessage, ConflictSpec, Custom, Resolution,
    ServerWins, ThreeWayMerge,
};
use skysync_model::{ChangeTag, FieldValue, PendingChange, Record};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

fn base() -> Record {
    stamped(
        note().with("title", "Draft").with("body", "Hello"),
        "t1",
        2_000,
    )
}

fn server() -> Record {
    stamped(
        note().with("title", "Draft").with("body", "Hello there"),
        "t2",
        3_000,
    )
}

fn local() -> Record {
    stamped(
        note().with("title", "Mine").with("body", "Hello"),
        "t1",
        2_000,
    )
}

#[tokio::test]
async fn handle_settles_a_conflict_with_the_wrapped_resolver() {
    let (handle, join) = ConflictHandle::spawn(ThreeWayMerge::default())
        .await
        .unwrap();
    let answer = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await
        .unwrap();
    match answer {
        Resolution::Send(record) => {
            assert_eq!(record.change_tag(), Some(&ChangeTag("t2".into())));
            assert_eq!(
                record.get("title"),
                Some(&FieldValue::String("Mine".into()))
            );
            assert_eq!(
                record.get("body"),
                Some(&FieldValue::String("Hello there".into()))
            );
        }
        other => panic!("expected Send, got {other:?}"),
    }
    // A local delete against a server edit: the default merge sends the delete with t2.
    let answer = handle
        .resolve(delete("t1"), Some(base()), Some(server()))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Resolution::SendDelete {
            change_tag: ChangeTag("t2".into())
        }
    );
    handle.stop();
    join.await.unwrap();
}

#[tokio::test]
async fn clones_of_a_handle_reach_the_same_actor() {
    let (handle, join) = ConflictHandle::spawn(ServerWins::default()).await.unwrap();
    let other = handle.clone();
    assert_eq!(
        handle.actor().unwrap().get_id(),
        other.actor().unwrap().get_id()
    );
    let (a, b) = tokio::join!(
        handle.resolve(save(local()), Some(base()), Some(server())),
        other.resolve(delete("t1"), Some(base()), Some(server())),
    );
    assert_eq!(a.unwrap(), Resolution::AcceptServer);
    assert_eq!(b.unwrap(), Resolution::Restore);
    other.stop();
    join.await.unwrap();
}

#[tokio::test]
async fn a_refused_answer_comes_back_as_an_error_and_the_actor_keeps_serving() {
    let always_send = Custom::new(
        |local: &PendingChange, _: Option<&Record>, _: Option<&Record>| match local {
            PendingChange::Save(record) => Resolution::Send(record.clone()),
            PendingChange::Delete { .. } => Resolution::AcceptServer,
        },
    );
    let (handle, join) = ConflictHandle::spawn(always_send).await.unwrap();
    let refused = handle.resolve(save(local()), Some(base()), None).await;
    assert!(matches!(
        refused,
        Err(ConflictError::NotAllowed {
            case: ConflictCase::DeletedOnServer,
            answered: "Send",
            ..
        })
    ));
    let fine = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await
        .unwrap();
    assert!(matches!(fine, Resolution::Send(_)));
    handle.stop();
    join.await.unwrap();
}

#[tokio::test]
async fn a_panicking_resolver_stops_the_actor_and_the_handle_answers_a_local_error() {
    let broken = Custom::new(
        |_: &PendingChange, _: Option<&Record>, _: Option<&Record>| -> Resolution {
            panic!("resolver bug")
        },
    );
    let (handle, join) = ConflictHandle::spawn(broken).await.unwrap();
    let handle = handle.with_call_timeout(Duration::from_millis(300));
    let first = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await;
    assert!(
        matches!(first, Err(ConflictError::Local(LocalError::Lost { .. }))),
        "{first:?}"
    );
    join.await.unwrap();
    let after = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await;
    assert!(
        matches!(
            after,
            Err(ConflictError::Local(LocalError::Unavailable { .. }))
        ),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_stopped_actor_answers_a_local_error() {
    let (handle, join) = ConflictHandle::spawn(ThreeWayMerge::default())
        .await
        .unwrap();
    let handle = handle.with_call_timeout(Duration::from_millis(300));
    handle.stop();
    join.await.unwrap();
    let answer = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await;
    assert!(
        matches!(
            answer,
            Err(ConflictError::Local(LocalError::Unavailable { .. }))
        ),
        "{answer:?}"
    );
}

/// A stand-in that takes every request and never answers (it keeps the reply ports alive).
struct Silent;

impl Actor for Silent {
    type Msg = ConflictMessage;
    type State = Vec<RpcReplyPort<Result<Resolution, ConflictError>>>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        held: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ConflictMessage::Resolve(_, reply) = message;
        held.push(reply);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_without_an_answer_times_out_after_the_call_timeout() {
    let (actor, join) = Actor::spawn(None, Silent, ()).await.unwrap();
    let handle =
        ConflictHandle::from_actor(actor.clone()).with_call_timeout(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let answer = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await;
    let waited = started.elapsed();
    match answer {
        Err(ConflictError::Local(LocalError::TimedOut { timeout, .. })) => {
            assert_eq!(timeout, Duration::from_secs(2));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}");
    actor.stop(None);
    join.await.unwrap();
}

/// A stand-in supervisor that reports which of its children failed.
struct Watcher;

impl Actor for Watcher {
    type Msg = ();
    type State = mpsc::UnboundedSender<ractor::ActorId>;
    type Arguments = mpsc::UnboundedSender<ractor::ActorId>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        failures: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(failures)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        failures: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(who, _) = event {
            let _ = failures.send(who.get_id());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_linked_actor_reports_its_failure_to_the_supervisor_which_can_spawn_it_again() {
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let (watcher, watcher_join) = Actor::spawn(None, Watcher, failures_tx).await.unwrap();
    let panics_on_delete: Arc<dyn skysync_conflict::ConflictResolver> = Arc::new(Custom::new(
        |local: &PendingChange, _: Option<&Record>, _: Option<&Record>| match local {
            PendingChange::Save(_) => Resolution::AcceptServer,
            PendingChange::Delete { .. } => panic!("resolver bug on deletes"),
        },
    ));
    let (handle, join) = ConflictHandle::spawn_linked(panics_on_delete.clone(), watcher.get_cell())
        .await
        .unwrap();
    let failed = handle
        .resolve(delete("t1"), Some(base()), Some(server()))
        .await;
    assert!(matches!(failed, Err(ConflictError::Local(_))), "{failed:?}");
    // Bounded: a supervisor that never hears of the failure fails the test instead of hanging it.
    let reported = tokio::time::timeout(Duration::from_secs(10), failures.recv())
        .await
        .expect("the supervisor heard of the failure");
    assert_eq!(reported, Some(handle.actor().unwrap().get_id()));
    join.await.unwrap();

    // The same shared resolver serves a fresh actor.
    let (again, again_join) = ConflictHandle::spawn_linked(panics_on_delete, watcher.get_cell())
        .await
        .unwrap();
    let answer = again
        .resolve(save(local()), Some(base()), Some(server()))
        .await
        .unwrap();
    assert_eq!(answer, Resolution::AcceptServer);
    again.stop();
    again_join.await.unwrap();
    watcher.stop(None);
    watcher_join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_supervised_conflict_actor_answers_through_the_same_handle_after_it_panics() {
    let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default())
        .await
        .unwrap();
    let panics_on_delete: Arc<dyn skysync_conflict::ConflictResolver> = Arc::new(Custom::new(
        |local: &PendingChange, _: Option<&Record>, _: Option<&Record>| match local {
            PendingChange::Save(_) => Resolution::AcceptServer,
            PendingChange::Delete { .. } => panic!("resolver bug on deletes"),
        },
    ));
    let spec = ConflictSpec::new(panics_on_delete);
    let handle = spec.handle();
    supervisor.start(spec).await.unwrap();
    let mut events = supervisor.subscribe();
    let failed = handle
        .resolve(delete("t1"), Some(base()), Some(server()))
        .await;
    assert!(matches!(failed, Err(ConflictError::Local(_))), "{failed:?}");
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarting {
            child: "conflict",
            ..
        }
    ));
    let answer = handle
        .resolve(save(local()), Some(base()), Some(server()))
        .await
        .unwrap();
    assert_eq!(answer, Resolution::AcceptServer);
    supervisor.shutdown().await;
}
