//! The throttle actor, exercised only through its handle, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use skysync_actors::{LocalError, RestartPolicy, SupervisorEvent, SupervisorHandle};
use skysync_model::PacingMemory;
use skysync_throttle::{
    OperationId, Outcome, PacingPhase, Permit, RetryVerdict, Throttle, ThrottleConfig,
    ThrottleError, ThrottleHandle, ThrottleSpec, WaitCause,
};
use tokio::time::Instant;

fn config(seed: u64) -> ThrottleConfig {
    ThrottleConfig {
        seed: Some(seed),
        ..ThrottleConfig::default()
    }
}

fn op(key: &str) -> OperationId {
    OperationId::new(key)
}

fn throttled(retry_after: u64) -> Outcome {
    Outcome::throttled(
        Some(Duration::from_secs(retry_after)),
        "THROTTLED (HTTP 429)",
    )
}

#[tokio::test(start_paused = true)]
async fn permit_is_granted_then_held_back_until_the_retry_after_deadline() {
    let (throttle, join) = ThrottleHandle::spawn(&config(1), None).await.unwrap();
    let start = Instant::now();
    assert_eq!(throttle.permit().await.unwrap(), Permit::Granted);

    let verdict = throttle.report(op("send"), throttled(10)).await.unwrap();
    assert_eq!(
        verdict,
        RetryVerdict::Retry {
            failures: 1,
            remaining: 4
        }
    );
    match throttle.permit().await.unwrap() {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            assert!(until >= start + Duration::from_secs(10));
        }
        Permit::Granted => panic!("granted inside a 10 s retryAfter"),
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(throttle.permit().await.unwrap(), Permit::Granted);

    throttle.stop();
    join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_in_the_caller_while_the_actor_keeps_answering() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(2), None).await.unwrap();
    let start = Instant::now();
    throttle.acquire().await.unwrap();
    throttle.report(op("send"), throttled(30)).await.unwrap();

    let waiter = {
        let throttle = throttle.clone();
        tokio::spawn(async move { throttle.acquire().await })
    };
    // Let the waiter ask and go to sleep; virtual time does not move while tasks can run.
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());

    // The actor answers at once while the caller sleeps: it is not sleeping in its handler.
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert!(diagnostics.taken_at < start + Duration::from_secs(1));
    assert_eq!(
        diagnostics.retry_after_until,
        Some(start + Duration::from_secs(30))
    );
    assert_eq!(diagnostics.waiting_for, Some(WaitCause::RetryAfter));
    assert_eq!(diagnostics.failures, 1);

    let waited = waiter.await.unwrap().unwrap();
    assert!(
        waited >= Duration::from_secs(30),
        "acquired after only {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_are_counted_per_operation_through_the_handle() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(3), None).await.unwrap();
    let send = op("send batch 1");
    for n in 1..5 {
        assert_eq!(
            throttle
                .report(send.clone(), Outcome::transient(None, "connection lost"))
                .await
                .unwrap(),
            RetryVerdict::Retry {
                failures: n,
                remaining: 5 - n
            }
        );
    }
    // Another operation succeeds in between; offline attempts of the send are not counted.
    assert_eq!(
        throttle
            .report(op("fetch"), Outcome::Success)
            .await
            .unwrap(),
        RetryVerdict::Succeeded
    );
    throttle
        .report(send.clone(), Outcome::offline("could not connect"))
        .await
        .unwrap();
    let last = throttle
        .report(send.clone(), Outcome::transient(None, "connection lost"))
        .await
        .unwrap();
    assert!(matches!(
        last,
        RetryVerdict::Exhausted { failures: 5, ref last_error } if last_error.detail == "connection lost"
    ));
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert!(diagnostics.exhausted);
    assert_eq!(diagnostics.operation, Some(send.clone()));

    throttle.forget_operation(send.clone()).await.unwrap();
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert_eq!(diagnostics.failures, 0);
    assert!(!diagnostics.exhausted);

    throttle
        .report(op("other"), Outcome::transient(None, "reset"))
        .await
        .unwrap();
    throttle.clear_retries().await.unwrap();
    assert_eq!(throttle.diagnostics().await.unwrap().failing_operations, 0);
}

#[tokio::test(start_paused = true)]
async fn network_available_ends_the_offline_probing_wait() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(4), None).await.unwrap();
    throttle.acquire().await.unwrap();
    for _ in 0..8 {
        throttle
            .report(op("send"), Outcome::offline("could not connect"))
            .await
            .unwrap();
    }
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert_eq!(diagnostics.waiting_for, Some(WaitCause::Offline));
    assert!(diagnostics.next_permitted_at.unwrap() > Instant::now() + Duration::from_secs(30));
    throttle.network_available().await.unwrap();
    let waited = throttle.acquire().await.unwrap();
    assert!(
        waited <= Duration::from_secs(3),
        "waited {waited:?} after the network came back"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_goes_to_the_store_and_a_spawn_from_it_waits_out_the_penalty() {
    let (first, join) = ThrottleHandle::spawn(&config(5), None).await.unwrap();
    first.acquire().await.unwrap();
    first.report(op("send"), throttled(600)).await.unwrap();
    let saved = first.memory().await.unwrap();
    let ceiling = saved.ceiling_per_sec.expect("a throttle teaches a ceiling");
    let remaining = saved.remaining_penalty(SystemTime::now());
    assert!(
        remaining > Duration::from_secs(590) && remaining <= Duration::from_secs(601),
        "{remaining:?}"
    );
    first.stop();
    join.await.unwrap();

    // The next run of the engine starts from what the store kept.
    let started = Instant::now();
    let (second, _join) = ThrottleHandle::spawn(&config(6), Some(&saved))
        .await
        .unwrap();
    let diagnostics = second.diagnostics().await.unwrap();
    assert_eq!(diagnostics.ceiling, Some(ceiling));
    assert_eq!(diagnostics.rate, ceiling);
    assert_eq!(diagnostics.phase, PacingPhase::Probing);
    match second.permit().await.unwrap() {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            assert!(until >= started + Duration::from_secs(590), "{until:?}");
        }
        Permit::Granted => panic!("a restart during a penalty started at once"),
    }
    let nothing_saved = PacingMemory::default();
    let (third, _join) = ThrottleHandle::spawn(&config(7), Some(&nothing_saved))
        .await
        .unwrap();
    assert_eq!(third.permit().await.unwrap(), Permit::Granted);
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_handle_share_one_throttle() {
    let (first, _join) = ThrottleHandle::spawn(&config(8), None).await.unwrap();
    let second = first.clone();
    first.report(op("send"), throttled(1)).await.unwrap();
    let seen = second.diagnostics().await.unwrap();
    assert_eq!(seen.failures, 1);
    assert_eq!(seen.throttles, 1);
}

#[tokio::test(start_paused = true)]
async fn calls_to_a_stopped_throttle_answer_a_local_error_naming_the_request() {
    let (throttle, join) = ThrottleHandle::spawn(&config(9), None).await.unwrap();
    throttle.stop();
    join.await.unwrap();
    let unavailable = |request| {
        ThrottleError::Local(LocalError::Unavailable {
            component: "throttle",
            operation: request,
        })
    };
    assert_eq!(throttle.permit().await, Err(unavailable("permit")));
    assert_eq!(
        throttle.report(op("a"), Outcome::Success).await,
        Err(unavailable("report"))
    );
    assert_eq!(throttle.memory().await, Err(unavailable("memory")));
}

#[tokio::test(start_paused = true)]
async fn a_supervised_throttle_restarts_from_the_saved_memory_behind_the_same_handle() {
    let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default())
        .await
        .unwrap();
    let spec = ThrottleSpec::new(config(10), None).unwrap();
    let (throttle, saved) = (spec.handle(), spec.saved_memory());
    supervisor.start(spec).await.unwrap();
    let mut events = supervisor.subscribe();
    assert_eq!(throttle.permit().await.unwrap(), Permit::Granted);
    // The server throttles with retryAfter 30 s; the engine saves what the throttle learned.
    throttle.report(op("send"), throttled(30)).await.unwrap();
    *saved.lock().unwrap() = Some(throttle.memory().await.unwrap());

    throttle.actor().unwrap().kill();
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarting {
            child: "throttle",
            ..
        }
    ));
    // The same handle answers from a new actor, which still owes the server its penalty.
    match throttle.permit().await.unwrap() {
        Permit::Wait { until, .. } => {
            assert!(
                until >= Instant::now() + Duration::from_secs(20),
                "{until:?}"
            );
        }
        Permit::Granted => panic!("a restarted throttle forgot the retryAfter it was given"),
    }
    supervisor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn spawn_refuses_an_invalid_config_with_a_typed_error() {
    let result = ThrottleHandle::spawn(
        &ThrottleConfig {
            max_attempts: 0,
            ..ThrottleConfig::default()
        },
        None,
    )
    .await;
    assert!(matches!(
        result,
        Err(ThrottleError::InvalidConfig {
            field: "max_attempts",
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn acquire_gives_up_when_others_keep_pushing_the_deadline() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(10), None).await.unwrap();
    throttle.report(op("a"), throttled(5)).await.unwrap();
    // Another task reports a fresh 5 s retryAfter just before each deadline comes, so the
    // waiter never finds the way clear. Bounded: it stops after 10 pushes.
    let pusher = {
        let throttle = throttle.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let next = throttle
                    .diagnostics()
                    .await
                    .unwrap()
                    .next_permitted_at
                    .unwrap();
                tokio::time::sleep_until(next - Duration::from_millis(1)).await;
                throttle.report(op("a"), throttled(5)).await.unwrap();
            }
        })
    };
    let result = throttle.acquire_within(3).await;
    assert_eq!(result, Err(ThrottleError::PermitStarved { rounds: 3 }));
    pusher.abort();
}

/// A minimal supervisor for the test: forwards the state of every child that stopped cleanly.
struct Watcher;

impl ractor::Actor for Watcher {
    type Msg = ();
    type State = tokio::sync::mpsc::UnboundedSender<Option<Throttle>>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<Option<Throttle>>;

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<()>,
        sender: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(sender)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ractor::ActorRef<()>,
        event: ractor::SupervisionEvent,
        sender: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match event {
            ractor::SupervisionEvent::ActorTerminated(_, Some(mut state), _) => {
                let _ = sender.send(state.take::<Throttle>().ok());
            }
            ractor::SupervisionEvent::ActorTerminated(_, None, _)
            | ractor::SupervisionEvent::ActorFailed(..) => {
                let _ = sender.send(None);
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_can_restart_the_throttle_from_its_last_state() {
    let (sender, mut stopped) = tokio::sync::mpsc::unbounded_channel();
    let (watcher, watcher_join) = ractor::Actor::spawn(None, Watcher, sender).await.unwrap();

    let (throttle, join) = ThrottleHandle::spawn_linked(&config(11), None, watcher.get_cell())
        .await
        .unwrap();
    let start = Instant::now();
    throttle.report(op("send"), throttled(60)).await.unwrap();
    throttle.stop();
    join.await.unwrap();

    let last = stopped
        .recv()
        .await
        .unwrap()
        .expect("the throttle's last state");
    assert!(last.rate_controller().ceiling().is_some());
    let (restarted, _join) = ThrottleHandle::spawn_linked_from(last, watcher.get_cell())
        .await
        .unwrap();
    // The server's deadline and the retry count survived the restart.
    match restarted.permit().await.unwrap() {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            assert!(until >= start + Duration::from_secs(60));
        }
        Permit::Granted => panic!("the restart forgot the retryAfter deadline"),
    }
    assert_eq!(restarted.diagnostics().await.unwrap().failures, 1);

    restarted.stop();
    watcher.stop(None);
    watcher_join.await.unwrap();
}
