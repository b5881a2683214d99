//! The throttle actor, exercised only through its handle, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use skysync_throttle::{
    Outcome, Permit, RetryVerdict, Throttle, ThrottleConfig, ThrottleError, ThrottleHandle,
    WaitCause,
};
use tokio::time::Instant;

fn config(seed: u64) -> ThrottleConfig {
    ThrottleConfig {
        seed: Some(seed),
        ..ThrottleConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn permit_is_granted_then_held_back_until_the_retry_after_deadline() {
    let (throttle, join) = ThrottleHandle::spawn(&config(1)).await.unwrap();
    let start = Instant::now();
    assert_eq!(throttle.permit().await.unwrap(), Permit::Granted);

    let verdict = throttle
        .report(Outcome::throttled(
            Some(Duration::from_secs(10)),
            "THROTTLED (429)",
        ))
        .await
        .unwrap();
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
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(throttle.permit().await.unwrap(), Permit::Granted);

    throttle.stop();
    join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_in_the_caller_while_the_actor_keeps_answering() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(2)).await.unwrap();
    let start = Instant::now();
    throttle
        .report(Outcome::transient(
            Some(Duration::from_secs(30)),
            "TRY_AGAIN_LATER (503)",
        ))
        .await
        .unwrap();

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
    assert_eq!(diagnostics.failures, 1);

    let waited = waiter.await.unwrap().unwrap();
    assert!(
        waited >= Duration::from_secs(30),
        "acquired after only {waited:?}"
    );
    assert!(Instant::now() >= start + Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn report_through_the_handle_exhausts_after_five_failures_and_resets_on_success() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(3)).await.unwrap();
    for n in 1..5 {
        assert_eq!(
            throttle
                .report(Outcome::throttled(None, "THROTTLED"))
                .await
                .unwrap(),
            RetryVerdict::Retry {
                failures: n,
                remaining: 5 - n
            }
        );
    }
    let last = throttle
        .report(Outcome::transient(None, "connection reset"))
        .await
        .unwrap();
    assert!(matches!(
        last,
        RetryVerdict::Exhausted { failures: 5, ref last_error } if last_error.detail == "connection reset"
    ));
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert!(diagnostics.exhausted);
    assert_eq!(
        diagnostics.delay,
        Duration::from_secs(8),
        "0.25 s doubled five times"
    );
    assert_eq!(
        diagnostics.last_error.map(|e| e.detail),
        Some("connection reset".to_owned())
    );

    assert_eq!(
        throttle.report(Outcome::Success).await.unwrap(),
        RetryVerdict::Succeeded
    );
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert_eq!(diagnostics.failures, 0);
    assert!(!diagnostics.exhausted);
}

#[tokio::test(start_paused = true)]
async fn begin_operation_through_the_handle_resets_the_count() {
    let (throttle, _join) = ThrottleHandle::spawn(&config(4)).await.unwrap();
    throttle
        .report(Outcome::throttled(None, "THROTTLED"))
        .await
        .unwrap();
    throttle
        .report(Outcome::throttled(None, "THROTTLED"))
        .await
        .unwrap();
    assert_eq!(throttle.diagnostics().await.unwrap().failures, 2);
    throttle.begin_operation().await.unwrap();
    let diagnostics = throttle.diagnostics().await.unwrap();
    assert_eq!(diagnostics.failures, 0);
    assert_eq!(
        diagnostics.delay,
        Duration::from_secs(1),
        "pacing is not reset"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_handle_share_one_throttle() {
    let (first, _join) = ThrottleHandle::spawn(&config(5)).await.unwrap();
    let second = first.clone();
    first
        .report(Outcome::throttled(None, "THROTTLED"))
        .await
        .unwrap();
    let seen = second.diagnostics().await.unwrap();
    assert_eq!(seen.failures, 1);
    assert_eq!(seen.delay, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn calls_to_a_stopped_throttle_answer_unavailable() {
    let (throttle, join) = ThrottleHandle::spawn(&config(6)).await.unwrap();
    throttle.stop();
    join.await.unwrap();
    match throttle.permit().await {
        Err(ThrottleError::Unavailable { request, .. }) => assert_eq!(request, "permit"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        throttle.report(Outcome::Success).await,
        Err(ThrottleError::Unavailable {
            request: "report",
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn spawn_refuses_an_invalid_config_with_a_typed_error() {
    let result = ThrottleHandle::spawn(&ThrottleConfig {
        max_attempts: 0,
        ..ThrottleConfig::default()
    })
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
    let (throttle, _join) = ThrottleHandle::spawn(&config(7)).await.unwrap();
    throttle
        .report(Outcome::throttled(
            Some(Duration::from_secs(5)),
            "THROTTLED",
        ))
        .await
        .unwrap();
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
                throttle
                    .report(Outcome::throttled(
                        Some(Duration::from_secs(5)),
                        "THROTTLED",
                    ))
                    .await
                    .unwrap();
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

    let (throttle, join) = ThrottleHandle::spawn_linked(&config(8), watcher.get_cell())
        .await
        .unwrap();
    let start = Instant::now();
    throttle
        .report(Outcome::throttled(
            Some(Duration::from_secs(60)),
            "THROTTLED (429)",
        ))
        .await
        .unwrap();
    throttle.stop();
    join.await.unwrap();

    let last = stopped
        .recv()
        .await
        .unwrap()
        .expect("the throttle's last state");
    assert_eq!(last.delay(), Duration::from_millis(500));
    let (restarted, _join) = ThrottleHandle::spawn_linked_from(last, watcher.get_cell())
        .await
        .unwrap();
    // The server's deadline survived the restart.
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
