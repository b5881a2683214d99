//! The wire decoders: whatever a server answers — any status, any body — the CloudKit client turns
//! into a typed result or a typed `CloudError`, never a panic, and a `records/modify` it accepts has
//! exactly one outcome per change, for that change.
//!
//! A server on 127.0.0.1 (started once) answers every request with the status and body the input
//! gives; the first byte chooses which call the real client makes, the second the status.
#![no_main]

use axum::http::StatusCode;
use libfuzzer_sys::fuzz_target;
use skysync_model::{ChangeToken, PendingChange, Record, RecordId, ZoneId};
use skysync_transport::{
    Auth, CloudDatabase, CloudKitClient, ModifyBatch, ModifyOutcome, zone_subscription,
};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

const STATUSES: &[u16] = &[200, 200, 200, 200, 400, 401, 403, 404, 409, 412, 413, 421, 429, 500, 503];

/// The answer the server gives next: status and body.
type Answer = Arc<Mutex<(u16, Vec<u8>)>>;

struct World {
    runtime: tokio::runtime::Runtime,
    client: CloudKitClient,
    answer: Answer,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let answer: Answer = Arc::new(Mutex::new((200, Vec::new())));
        let served = Arc::clone(&answer);
        let url = runtime.block_on(async move {
            let app = axum::Router::new().fallback(move || {
                let served = Arc::clone(&served);
                async move {
                    let (status, body) = served
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                        [("content-type", "application/json")],
                        body,
                    )
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        });
        let client = CloudKitClient::builder("iCloud.fuzz", Auth::web("api-token", "web-token"))
            .base_url(url)
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        World {
            runtime,
            client,
            answer,
        }
    })
}

fn changes(zone: &ZoneId) -> Vec<PendingChange> {
    vec![
        PendingChange::Save(Record::new(RecordId::new(zone.clone(), "a"), "Note").with("t", "x")),
        PendingChange::Save(Record::new(RecordId::new(zone.clone(), "b"), "Note")),
        PendingChange::Delete {
            id: RecordId::new(zone.clone(), "c"),
            change_tag: None,
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let [call, status, body @ ..] = data else {
        return;
    };
    let world = world();
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    *world.answer.lock().unwrap_or_else(PoisonError::into_inner) = (status, body.to_vec());
    let client = &world.client;
    let zone = ZoneId::new("Fuzz");
    world.runtime.block_on(async {
        match call % 8 {
            0 => {
                let sent = changes(&zone);
                let batch = ModifyBatch::new(zone.clone(), sent.clone()).unwrap();
                if let Ok(outcomes) = client.modify_records(batch).await {
                    assert_eq!(outcomes.len(), sent.len(), "one outcome per change");
                    for (change, outcome) in sent.iter().zip(&outcomes) {
                        let id = match outcome {
                            ModifyOutcome::Saved { id, .. }
                            | ModifyOutcome::Deleted { id }
                            | ModifyOutcome::Conflict { id, .. }
                            | ModifyOutcome::Failed { id, .. } => id,
                        };
                        assert_eq!(id, change.record_id(), "an outcome for another change");
                    }
                }
            }
            1 => {
                let _ = client
                    .lookup_records(zone.clone(), vec!["a".into(), "b".into()])
                    .await;
            }
            2 => {
                if let Ok(page) = client.fetch_zone_changes(zone.clone(), None).await {
                    // Everything a page holds belongs to the zone asked for.
                    assert!(page.changed.iter().all(|r| r.id.zone == zone));
                }
            }
            3 => {
                let _ = client
                    .fetch_zone_changes(zone.clone(), Some(ChangeToken("t".into())))
                    .await;
            }
            4 => {
                let _ = client.fetch_database_changes(None).await;
            }
            5 => {
                let _ = client.ensure_zones(vec![zone.clone()]).await;
            }
            6 => {
                let _ = client.ensure_subscription(zone_subscription("s", &zone)).await;
            }
            _ => {
                let _ = client.current_user().await;
            }
        }
    });
});
