//! Components replaced through the builder, and the engine's reaction: a scripted transport whose
//! first send dies mid-request (a local failure: redone, never counted, liveness kept), a custom
//! resolver, an always-granting throttle, a server that is not there (offline, never a halt), and
//! a power-loss disk under the store (a failing disk; a power cut at each sync of a refetch).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use skysync_conflict::Custom;
use skysync_devserver::DevServer;
use skysync_model::wire::{Subscription, UserIdentity};
use skysync_model::{ChangeToken, CloudError, PendingChange, Record, Resolution, ZoneId};
use skysync_session::Status;
use skysync_store::power_loss::{DiskUnit, PowerLossDisk, UnsyncedWrites};
use skysync_throttle::ThrottleConfig;
use skysync_transport::{
    CloudDatabase, DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChangesPage,
    ZoneNotifications,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A cloud that accepts everything; its first `records/modify` dies mid-request (a bug in a
/// transport, say), which the engine must take as a local failure.
#[derive(Default)]
struct Scripted {
    sends: Arc<AtomicU32>,
}

impl CloudDatabase for Scripted {
    async fn modify_records(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            panic!("scripted transport: the first send dies mid-request");
        }
        Ok(batch
            .changes()
            .iter()
            .map(|c| match c {
                PendingChange::Save(r) => ModifyOutcome::Saved {
                    id: r.id.clone(),
                    system: skysync_model::SystemFields {
                        change_tag: skysync_model::ChangeTag(format!("t{n}")),
                        created: None,
                        modified: None,
                        deleted: false,
                    },
                },
                PendingChange::Delete { id, .. } => ModifyOutcome::Deleted { id: id.clone() },
            })
            .collect())
    }

    async fn lookup_records(
        &self,
        _zone: ZoneId,
        _names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        Ok(Vec::new())
    }

    async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        _since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        Ok(ZoneChangesPage {
            zone,
            changed: Vec::new(),
            deleted: Vec::new(),
            token: ChangeToken("z".into()),
            more_coming: false,
        })
    }

    async fn fetch_database_changes(
        &self,
        _since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        Ok(DatabaseChangesPage {
            changed_zones: Vec::new(),
            deleted_zones: Vec::new(),
            token: ChangeToken("d".into()),
            more_coming: false,
        })
    }

    async fn ensure_zones(&self, _zones: Vec<ZoneId>) -> Result<(), CloudError> {
        Ok(())
    }

    async fn delete_zones(&self, _zones: Vec<ZoneId>) -> Result<(), CloudError> {
        Ok(())
    }

    async fn ensure_subscription(&self, _subscription: Subscription) -> Result<(), CloudError> {
        Ok(())
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        Ok(UserIdentity {
            user_record_name: "_scripted".into(),
            lookup_info: None,
            name_components: None,
        })
    }

    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        // A channel that never signals: the periodic fetch is what the engine relies on.
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        std::mem::forget(sender);
        Ok(ZoneNotifications::new(receiver))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_transport_whose_send_dies_is_a_local_failure_redone_and_never_counted() {
    let sends = Arc::new(AtomicU32::new(0));
    let script = Scripted {
        sends: Arc::clone(&sends),
    };
    let device = Device::build(|b| b.transport(script)).await;
    device.engine.save(note("n1", "x")).await.unwrap();
    wait_quiet(&device).await;
    let d = device.diagnostics().await;
    assert_eq!(
        sends.load(Ordering::SeqCst),
        2,
        "redone once after the local failure"
    );
    assert_eq!(d.tagged_records, 1);
    assert_eq!(d.liveness_violations, 0);
    let throttle = d.throttle.unwrap();
    assert_eq!(
        throttle.throttles, 0,
        "a local failure is not a rate signal"
    );
    assert!(
        throttle.last_failure.is_none(),
        "nor a counted failure: {throttle:?}"
    );
    device.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resolver_decides_every_conflict() {
    let server = server().await;
    let a = Device::start(&server, "custom").await;
    a.engine.save(note("n1", "v1")).await.unwrap();
    wait_quiet(&a).await;
    // b always takes the server's side; it fetches only when told, so that its edit is made (and
    // sent) without knowing a's.
    let b = Device::start_built(&server, "custom", |builder| {
        builder
            .session(fetch_only_when_told())
            .resolver(Custom::new(
                |_: &PendingChange, _: Option<&Record>, _: Option<&Record>| {
                    Resolution::AcceptServer
                },
            ))
    })
    .await;
    wait_for(&b, "n1", |d| d.tagged_records == 1).await;
    let from_b = b.engine.get(id("n1")).await.unwrap().unwrap();
    let from_a = a.engine.get(id("n1")).await.unwrap().unwrap();
    a.engine.save(from_a.with("title", "a wins")).await.unwrap();
    wait_quiet(&a).await;
    b.engine
        .save(from_b.with("title", "b loses"))
        .await
        .unwrap();
    wait_quiet(&b).await;
    assert_eq!(
        text(&b.engine.get(id("n1")).await.unwrap().unwrap(), "title").as_deref(),
        Some("a wins")
    );
    assert_eq!(
        text(&server_records(&server, "custom").await["n1"], "title").as_deref(),
        Some("a wins")
    );
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_server_the_engine_is_offline_keeps_every_change_and_never_halts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    // An always-granting throttle: pacing out of the way, only the offline backoff left.
    let device = Device::build(|b| {
        b.dev_server(format!("http://{address}"), "nobody")
            .unwrap()
            .throttle(ThrottleConfig {
                max_attempts: 2,
                ..fast_throttle()
            })
    })
    .await;
    device.engine.save(note("n1", "kept")).await.unwrap();
    wait_for(&device, "offline", |d| d.status == Status::Offline).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = device.diagnostics().await;
    assert_eq!(d.status, Status::Offline, "{d:#?}");
    assert!(
        d.halt.is_none(),
        "offline attempts are not counted: never exhausted"
    );
    assert_eq!(d.queue.pending, 1);
    assert_eq!(d.liveness_violations, 0);
    device.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_disk_fails_is_restarted_and_the_engine_keeps_syncing() {
    let server = server().await;
    let disk = skysync_store::power_loss::PowerLossDisk::new();
    let unit = skysync_store::power_loss::DiskUnit::new(
        disk.clone(),
        skysync_store::StoreConfig::default(),
        skysync_queue::QueueConfig::default(),
    );
    let (store, queue) = (unit.store(), unit.queue());
    let device = Device::start_built(&server, "disk", |b| b.store(store, queue, unit)).await;
    device.engine.save(note("before", "x")).await.unwrap();
    wait_quiet(&device).await;

    // The disk fails: the write is refused with a typed error, never claimed durable.
    disk.cut_power();
    let refused = device.engine.save(note("during", "x")).await;
    assert!(refused.is_err(), "a save on a dead disk must not return Ok");
    // The supervisor reopens the file; the same engine saves and syncs again.
    let mut saved = false;
    for _ in 0..100 {
        if device.engine.save(note("after", "y")).await.is_ok() {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saved, "the store never came back");
    wait_quiet(&device).await;
    let on_server = server_records(&server, "disk").await;
    assert!(on_server.contains_key("before") && on_server.contains_key("after"));
    assert!(device.diagnostics().await.halt.is_none());
    device.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_is_ridden_out_when_the_server_comes_back() {
    let data = tempfile::tempdir().unwrap();
    let config = |listen| skysync_devserver::ServerConfig {
        listen,
        data_dir: Some(data.path().to_path_buf()),
        ..skysync_devserver::ServerConfig::default()
    };
    let first = skysync_devserver::DevServer::start(config("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let address: std::net::SocketAddr = first
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let a = Device::start(&first, "comeback").await;
    a.engine.save(note("n1", "x")).await.unwrap();
    wait_quiet(&a).await;
    first.shutdown().await.unwrap();

    a.engine.save(note("n2", "written offline")).await.unwrap();
    wait_for(&a, "offline", |d| d.status == Status::Offline).await;
    let again = skysync_devserver::DevServer::start(config(address))
        .await
        .unwrap();
    wait_for(&a, "back and sent", |d| {
        d.queue.pending == 0 && d.status != Status::Offline && d.in_flight.is_none()
    })
    .await;
    let on_server = server_records(&again, "comeback").await;
    assert!(on_server.contains_key("n1") && on_server.contains_key("n2"));
    assert!(a.diagnostics().await.halt.is_none());
    a.engine.shutdown().await;
}

/// A device over `disk` (a power-loss disk), fetching only when told; `None` if the engine could
/// not start (the power went while it opened the store).
async fn device_on(server: &DevServer, user: &str, disk: &PowerLossDisk) -> Option<Device> {
    let unit = DiskUnit::new(
        disk.clone(),
        skysync_store::StoreConfig::default(),
        skysync_queue::QueueConfig::default(),
    );
    let (store, queue) = (unit.store(), unit.queue());
    let dir = tempfile::tempdir().unwrap();
    let engine = skysync_session::Engine::builder(dir.path().join("unused.redb"))
        .dev_server(server.base_url(), user)
        .unwrap()
        .throttle(fast_throttle())
        .session(fetch_only_when_told())
        .store(store, queue, unit)
        .build()
        .await
        .ok()?;
    Some(Device {
        dir,
        engine,
        token: user.to_owned(),
    })
}

/// A refetch from no token (after an expired token) learns of deletions only at its end, from
/// what it did not return; its last page, those deletions and the zone's token must commit
/// together. With the token committed first and the deletions after, a power cut in between left
/// the device past deletions it never applied, keeping a record the server had deleted for good.
/// The power is cut at each sync of the refetch in turn, and the device restarted on what the disk
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_commit_of_a_refetch_never_keeps_a_record_deleted_on_the_server() {
    let server = server().await;
    let user = "refetch-cut";
    let writer = Device::start_with(&server, user, fetch_only_when_told()).await;
    for name in ["kept", "gone"] {
        writer.engine.save(note(name, "x")).await.unwrap();
    }
    wait_quiet(&writer).await;
    let disk = PowerLossDisk::new();
    let reader = device_on(&server, user, &disk).await.unwrap();
    settle(&[&reader]).await;
    assert_eq!(reader.records().await.len(), 2);
    reader.engine.shutdown().await;
    let image = disk.synced_image();
    writer.engine.delete(id("gone")).await.unwrap();
    wait_quiet(&writer).await;
    writer.engine.shutdown().await;

    let mut cuts = 0;
    for cut in 1..=50u64 {
        server.faults().clear();
        // The device's first fetch is told its token expired: a refetch from no token.
        arm(
            &server,
            serde_json::json!({"operation": "changes/zone", "count": 1,
                "serverErrorCode": "CHANGE_TOKEN_EXPIRED"}),
        )
        .await;
        let disk = PowerLossDisk::with_contents(image.clone());
        disk.cut_power_at_sync(cut);
        let Some(reader) = device_on(&server, user, &disk).await else {
            // The power went while the engine opened its store, before any fetch.
            continue;
        };
        reader.engine.sync_now();
        let mut finished = false;
        for _ in 0..200 {
            if disk.power_lost() {
                break;
            }
            // A read may fail once the power is gone: the loop looks again.
            if let Ok(page) = reader.engine.records_in_zone(zone(), None, 500).await
                && !page.records.iter().any(|r| r.id.record_name == "gone")
            {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        reader.engine.shutdown().await;
        if finished && !disk.power_lost() {
            // The refetch ended before the planned cut: every sync it makes was cut once.
            assert!(cuts > 0, "no sync of the refetch was ever cut");
            return;
        }
        assert!(
            disk.power_lost(),
            "cut at sync {cut}: the refetch never ended"
        );
        cuts += 1;
        server.faults().clear();
        let restarted = device_on(&server, user, &disk.after_power_loss(UnsyncedWrites::Lost))
            .await
            .expect("the store opens again after the power cut");
        settle(&[&restarted]).await;
        let held = restarted.records().await;
        assert!(
            !held.contains_key("gone"),
            "power cut at sync {cut} of the refetch: the restarted device still holds a record \
             the server deleted"
        );
        assert!(
            held.contains_key("kept"),
            "power cut at sync {cut}: a live record went missing"
        );
        restarted.engine.shutdown().await;
    }
    panic!("the refetch made more than 50 syncs");
}
