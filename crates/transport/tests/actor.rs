//! The transport actor: calls reach the database and answer; the mailbox stays free while a request
//! is in flight; a call that times out, or an actor that stops, cancels its request and is a local
//! error, never a cloud one; a supervised transport restarts behind the same handle. The database here is a scripted `CloudDatabase` whose slow operation never finishes
//! and records when it is dropped. Timing runs on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skysync_actors::{LocalError, RestartPolicy, SupervisorEvent, SupervisorHandle};
use skysync_model::wire::{Subscription, UserIdentity};
use skysync_model::{ChangeToken, CloudError, NetworkFailure, ZoneId};
use skysync_transport::{
    CloudDatabase, DatabaseChangesPage, HandleOptions, LookupOutcome, ModifyBatch, ModifyOutcome,
    RequestError, TransportHandle, TransportSpec, ZoneChanged, ZoneChangesPage, ZoneNotifications,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Answers at once, except `fetch_zone_changes`, which never finishes and flags when dropped.
#[derive(Default)]
struct Scripted {
    name: &'static str,
    slow_started: Arc<AtomicUsize>,
    slow_dropped: Arc<AtomicBool>,
}

/// Sets its flag when dropped (i.e. when the request it guards was cancelled).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl CloudDatabase for Scripted {
    async fn modify_records(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        Ok(batch
            .changes()
            .iter()
            .map(|c| ModifyOutcome::Deleted {
                id: c.record_id().clone(),
            })
            .collect())
    }

    async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        Ok(record_names
            .into_iter()
            .map(|n| LookupOutcome::NotFound(skysync_model::RecordId::new(zone.clone(), n)))
            .collect())
    }

    async fn fetch_zone_changes(
        &self,
        _zone: ZoneId,
        _since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        let _flag = DropFlag(Arc::clone(&self.slow_dropped));
        self.slow_started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }

    async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        Ok(DatabaseChangesPage {
            changed_zones: vec![ZoneId::new("Notes")],
            deleted_zones: Vec::new(),
            token: since.unwrap_or(ChangeToken("d1".into())),
            more_coming: false,
        })
    }

    async fn ensure_zones(&self, _zones: Vec<ZoneId>) -> Result<(), CloudError> {
        Ok(())
    }

    async fn delete_zones(&self, _zones: Vec<ZoneId>) -> Result<(), CloudError> {
        Err(CloudError::Network {
            kind: NetworkFailure::Connect,
            detail: "scripted".into(),
        })
    }

    async fn ensure_subscription(&self, _subscription: Subscription) -> Result<(), CloudError> {
        Ok(())
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        Ok(UserIdentity {
            user_record_name: self.name.to_owned(),
            lookup_info: None,
            name_components: None,
        })
    }

    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        sender
            .send(Ok(ZoneChanged {
                zone: ZoneId::new("Notes"),
                subscription_id: "s".into(),
            }))
            .await
            .unwrap();
        Ok(ZoneNotifications::new(receiver))
    }
}

fn options(secs: u64) -> HandleOptions {
    HandleOptions {
        call_timeout: Duration::from_secs(secs),
    }
}

/// Waits (on the paused clock) until `flag` is set, for at most 60 simulated seconds.
async fn wait_for(flag: &AtomicBool) -> bool {
    for _ in 0..600 {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn calls_reach_the_database_and_carry_its_answers_and_errors() {
    let (handle, _join) = TransportHandle::spawn(
        Scripted {
            name: "_first",
            ..Scripted::default()
        },
        options(30),
    )
    .await
    .unwrap();
    assert_eq!(
        handle.current_user().await.unwrap().user_record_name,
        "_first"
    );
    let page = handle
        .fetch_database_changes(Some(ChangeToken("d7".into())))
        .await
        .unwrap();
    assert_eq!(page.token.0, "d7");
    let found = handle
        .lookup_records(ZoneId::new("Notes"), vec!["a".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    handle
        .ensure_zones(vec![ZoneId::new("Notes")])
        .await
        .unwrap();
    let err = handle.delete_zones(vec![]).await.unwrap_err();
    assert!(matches!(
        err,
        RequestError::Cloud(CloudError::Network {
            kind: NetworkFailure::Connect,
            ..
        })
    ));
    let mut signals = handle.notifications().await.unwrap();
    assert_eq!(
        signals.next_signal().await.unwrap().unwrap().zone,
        ZoneId::new("Notes")
    );
}

#[tokio::test(start_paused = true)]
async fn the_mailbox_answers_while_a_request_is_in_flight() {
    let script = Scripted {
        name: "_me",
        ..Scripted::default()
    };
    let started = Arc::clone(&script.slow_started);
    let (handle, _join) = TransportHandle::spawn(script, options(3600)).await.unwrap();
    let slow = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.fetch_zone_changes(ZoneId::new("Notes"), None).await })
    };
    while started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The slow fetch is still in flight; the actor still answers.
    assert_eq!(handle.current_user().await.unwrap().user_record_name, "_me");
    assert!(!slow.is_finished());
    slow.abort();
}

#[tokio::test(start_paused = true)]
async fn a_call_that_times_out_is_a_local_error_and_cancels_its_request() {
    let script = Scripted::default();
    let dropped = Arc::clone(&script.slow_dropped);
    let (handle, _join) = TransportHandle::spawn(script, options(5)).await.unwrap();
    let err = handle
        .fetch_zone_changes(ZoneId::new("Notes"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Local(LocalError::TimedOut {
                component: "transport",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(
        err.cloud().is_none(),
        "a silent actor is not a cloud failure"
    );
    assert!(
        wait_for(&dropped).await,
        "the request must not run on after its caller gave up"
    );
}

#[tokio::test(start_paused = true)]
async fn stopping_the_actor_cancels_requests_in_flight_and_later_calls_fail_locally() {
    let script = Scripted::default();
    let started = Arc::clone(&script.slow_started);
    let dropped = Arc::clone(&script.slow_dropped);
    let (handle, join) = TransportHandle::spawn(script, options(60)).await.unwrap();
    let pending = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.fetch_zone_changes(ZoneId::new("Notes"), None).await })
    };
    while started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    handle.actor().unwrap().stop(None);
    join.await.unwrap();
    assert!(wait_for(&dropped).await);
    let answer = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(answer, RequestError::Local(LocalError::Lost { .. })),
        "{answer:?}"
    );
    let later = handle.current_user().await.unwrap_err();
    assert!(
        matches!(later, RequestError::Local(LocalError::Unavailable { .. })),
        "{later:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervised_transport_answers_through_the_same_handle_after_it_is_killed() {
    let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default())
        .await
        .unwrap();
    let spec = TransportSpec::new(
        Scripted {
            name: "_me",
            ..Scripted::default()
        },
        options(30),
    );
    let handle = spec.handle();
    supervisor.start(spec).await.unwrap();
    let mut events = supervisor.subscribe();
    assert_eq!(handle.current_user().await.unwrap().user_record_name, "_me");
    let first = handle.actor().unwrap().get_id();
    handle.actor().unwrap().kill();
    assert!(matches!(
        events.recv().await.unwrap(),
        SupervisorEvent::Restarting {
            child: "transport",
            ..
        }
    ));
    assert_eq!(handle.current_user().await.unwrap().user_record_name, "_me");
    assert_ne!(
        handle.actor().unwrap().get_id(),
        first,
        "a new actor answered"
    );
    supervisor.shutdown().await;
}
