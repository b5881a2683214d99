//! The client against skysync's dev server, in process on 127.0.0.1:0: every `CloudDatabase` method,
//! both auth modes, token rotation, notifications, and every error class (through real server
//! behaviour where the server has it, and through its fault injection otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skysync_devserver::{DevServer, ServerConfig};
use skysync_model::{
    ChangeTag, ChangeToken, CloudError, ErrorClass, ErrorScope, FieldValue, NetworkFailure,
    PendingChange, Record, RecordId, ServerErrorCode, ZoneId,
};
use skysync_transport::{
    Auth, CloudDatabase, CloudKitClient, DatabaseScope, HandleOptions, LookupOutcome, ModifyBatch,
    ModifyOutcome, ServerKey, TransportHandle, WebAuthToken, zone_subscription,
};
use std::sync::Arc;
use std::time::Duration;

const CONTAINER: &str = "iCloud.com.example.SkysyncTests";

async fn server() -> DevServer {
    DevServer::start(ServerConfig::default()).await.unwrap()
}

/// A private-database client of the user that `web_token` names.
fn client_as(server: &DevServer, web_token: &str) -> CloudKitClient {
    CloudKitClient::builder(CONTAINER, Auth::web("test-api-token", web_token))
        .base_url(server.base_url())
        .build()
        .unwrap()
}

fn client(server: &DevServer) -> CloudKitClient {
    client_as(server, "user-one-token")
}

/// Arms a fault on the dev server (`POST /_dev/faults`).
async fn arm(server: &DevServer, fault: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_dev/faults", server.base_url()))
        .header("content-type", "application/json")
        .body(fault.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "arming {fault} failed: {}",
        response.status()
    );
}

fn note(zone: &ZoneId, name: &str, title: &str) -> Record {
    Record::new(RecordId::new(zone.clone(), name), "Note").with("title", title)
}

fn save(record: Record) -> PendingChange {
    PendingChange::Save(record)
}

/// Creates `zone` and saves `records` in it; returns the records with their system fields.
async fn seed(client: &CloudKitClient, zone: &ZoneId, records: Vec<Record>) -> Vec<Record> {
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    let batch =
        ModifyBatch::new(zone.clone(), records.iter().cloned().map(save).collect()).unwrap();
    let outcomes = client.modify_records(batch).await.unwrap();
    records
        .into_iter()
        .zip(outcomes)
        .map(|(mut record, outcome)| match outcome {
            ModifyOutcome::Saved { id, system } => {
                assert_eq!(id, record.id);
                record.system = Some(system);
                record
            }
            other => panic!("seeding {} failed: {other:?}", record.id),
        })
        .collect()
}

fn server_error(error: &CloudError) -> &skysync_model::ServerError {
    match error {
        CloudError::Server(e) => e,
        other => panic!("expected a CloudKit error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Every trait method.

#[tokio::test]
async fn records_are_saved_looked_up_fetched_updated_and_deleted() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Notes");
    let saved = seed(
        &client,
        &zone,
        vec![note(&zone, "n1", "Groceries"), note(&zone, "n2", "Chores")],
    )
    .await;
    let n1 = &saved[0];
    let first_tag = n1.change_tag().unwrap().clone();

    let found = client
        .lookup_records(zone.clone(), vec!["n1".into(), "missing".into()])
        .await
        .unwrap();
    match &found[0] {
        LookupOutcome::Found(record) => {
            assert_eq!(
                record.get("title"),
                Some(&FieldValue::String("Groceries".into()))
            );
            assert_eq!(record.change_tag(), Some(&first_tag));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        found[1],
        LookupOutcome::NotFound(RecordId::new(zone.clone(), "missing"))
    );

    let page = client.fetch_zone_changes(zone.clone(), None).await.unwrap();
    let mut names: Vec<&str> = page
        .changed
        .iter()
        .map(|r| r.id.record_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2"]);
    assert!(page.deleted.is_empty());
    assert!(!page.more_coming);

    let mut edited = n1.clone();
    edited.set("title", "Groceries and more");
    let batch = ModifyBatch::new(
        zone.clone(),
        vec![
            save(edited),
            PendingChange::Delete {
                id: saved[1].id.clone(),
                change_tag: saved[1].change_tag().cloned(),
            },
        ],
    )
    .unwrap();
    let outcomes = client.modify_records(batch).await.unwrap();
    match &outcomes[0] {
        ModifyOutcome::Saved { system, .. } => assert_ne!(system.change_tag, first_tag),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        outcomes[1],
        ModifyOutcome::Deleted {
            id: saved[1].id.clone()
        }
    );

    let next = client
        .fetch_zone_changes(zone.clone(), Some(page.token.clone()))
        .await
        .unwrap();
    assert_eq!(next.deleted, vec![saved[1].id.clone()]);
    assert_eq!(next.changed.len(), 1);
    assert_eq!(
        next.changed[0].get("title"),
        Some(&FieldValue::String("Groceries and more".into()))
    );
    assert_ne!(next.token, page.token);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_change_feed_comes_in_pages_until_no_more_are_coming() {
    let server = server().await;
    let writer = client(&server);
    let zone = ZoneId::new("Paged");
    let records = (0..5).map(|i| note(&zone, &format!("p{i}"), "x")).collect();
    seed(&writer, &zone, records).await;
    let reader = CloudKitClient::builder(CONTAINER, Auth::web("test-api-token", "user-one-token"))
        .base_url(server.base_url())
        .changes_page_size(2)
        .build()
        .unwrap();
    let mut token: Option<ChangeToken> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    // Bounded: five records at two per page need three pages.
    for _ in 0..10 {
        let page = reader
            .fetch_zone_changes(zone.clone(), token.clone())
            .await
            .unwrap();
        pages += 1;
        assert!(page.changed.len() <= 2);
        seen.extend(page.changed.into_iter().map(|r| r.id.record_name));
        token = Some(page.token);
        if !page.more_coming {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(pages, 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn database_changes_name_changed_and_deleted_zones() {
    let server = server().await;
    let client = client(&server);
    let kept = ZoneId::new("Kept");
    let dropped = ZoneId::new("Dropped");
    seed(&client, &kept, vec![note(&kept, "k", "x")]).await;
    seed(&client, &dropped, vec![note(&dropped, "d", "x")]).await;
    let first = client.fetch_database_changes(None).await.unwrap();
    assert!(first.changed_zones.contains(&kept), "{first:?}");
    assert!(first.changed_zones.contains(&dropped), "{first:?}");

    client.delete_zones(vec![dropped.clone()]).await.unwrap();
    let later = client
        .fetch_database_changes(Some(first.token.clone()))
        .await
        .unwrap();
    assert_eq!(later.deleted_zones, vec![dropped]);
    assert!(!later.changed_zones.contains(&kept));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ensuring_zones_is_idempotent_and_deleting_a_missing_zone_is_fine() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Twice");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    seed(&client, &zone, vec![note(&zone, "a", "kept")]).await;
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    let found = client
        .lookup_records(zone.clone(), vec!["a".into()])
        .await
        .unwrap();
    assert!(
        matches!(&found[0], LookupOutcome::Found(_)),
        "re-ensuring a zone keeps its records"
    );
    client.delete_zones(vec![zone.clone()]).await.unwrap();
    client.delete_zones(vec![zone]).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ensuring_a_subscription_twice_succeeds() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Watched");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    let subscription = zone_subscription("watched-zone", &zone);
    client
        .ensure_subscription(subscription.clone())
        .await
        .unwrap();
    client.ensure_subscription(subscription).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_current_user_is_the_one_the_web_token_names() {
    let server = server().await;
    let one = client_as(&server, "token-of-one")
        .current_user()
        .await
        .unwrap();
    let again = client_as(&server, "token-of-one")
        .current_user()
        .await
        .unwrap();
    let two = client_as(&server, "token-of-two")
        .current_user()
        .await
        .unwrap();
    assert_eq!(one.user_record_name, again.user_record_name);
    assert_ne!(one.user_record_name, two.user_record_name);
    assert!(one.user_record_name.starts_with('_'));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_with_plus_slash_and_equals_arrives_intact() {
    // If `+` were sent raw, the server would read a space: a different token, a different user.
    let server = server().await;
    let raw = client_as(&server, "a+b/c=").current_user().await.unwrap();
    let other = client_as(&server, "a b/c=").current_user().await.unwrap();
    assert_ne!(raw.user_record_name, other.user_record_name);
    assert_eq!(
        raw.user_record_name,
        skysync_devserver::auth::web_token_user("a+b/c=")
    );
    server.shutdown().await.unwrap();
}

/// The next token the rotation callback reported (bounded wait).
async fn next_rotation(reported: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), reported.recv())
        .await
        .expect("a rotation was reported")
        .unwrap()
}

#[tokio::test]
async fn a_rotated_web_token_is_reported_and_used_next() {
    let server = server().await;
    let (sink, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let auth = Auth::web("test-api-token", "first-token").with_rotation_callback(Arc::new(
        move |token: &WebAuthToken| {
            // Never on an async worker: the callback may block to persist the token.
            let thread = std::thread::current();
            assert_eq!(thread.name(), Some("skysync-token-rotation"));
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "ran on a runtime thread"
            );
            sink.send(token.expose().to_owned()).unwrap();
        },
    ));
    let client = CloudKitClient::builder(CONTAINER, auth)
        .base_url(server.base_url())
        .build()
        .unwrap();
    let before = client.current_user().await.unwrap();
    let first_rotation = next_rotation(&mut reported).await;
    assert_ne!(first_rotation, "first-token");
    assert_eq!(
        client.current_web_auth_token().unwrap().expose(),
        first_rotation
    );

    // The next request goes out with the rotated token: the server still sees the same user and
    // rotates again.
    let after = client.current_user().await.unwrap();
    assert_eq!(before.user_record_name, after.user_record_name);
    let tokens = [first_rotation.clone(), next_rotation(&mut reported).await];
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(
        skysync_devserver::auth::web_token_user(&tokens[1]),
        before.user_record_name
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Server-to-server keys.

const S2S_KEY_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIER76+U0frL4ugEe7eWtGBgCjMrs6fV1lsR5n22dknPboAoGCCqGSM49
AwEHoUQDQgAEPSRT9E51hP9n1s4FRx/qhcDuD+Rbkvk0+aU6uDE/F8sMxXORN+/e
cG9jXKVkrGfElLZAg3TvZrD4Hw8yp0YuNQ==
-----END EC PRIVATE KEY-----
";

async fn s2s_server(key: &ServerKey) -> DevServer {
    DevServer::start(ServerConfig {
        s2s_keys: vec![(key.key_id().to_owned(), key.public_key_pem().unwrap())],
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

fn s2s_client(server: &DevServer, key: ServerKey, database: DatabaseScope) -> CloudKitClient {
    CloudKitClient::builder(CONTAINER, Auth::ServerToServer(key))
        .base_url(server.base_url())
        .database(database)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_server_key_reads_and_writes_the_public_database() {
    let key = ServerKey::from_pem("test-key-1", S2S_KEY_PEM).unwrap();
    let server = s2s_server(&key).await;
    let client = s2s_client(&server, key, DatabaseScope::Public);
    let zone = ZoneId::default_zone();
    let batch = ModifyBatch::new(zone.clone(), vec![save(note(&zone, "pub1", "hello"))]).unwrap();
    let outcomes = client.modify_records(batch).await.unwrap();
    assert!(
        matches!(&outcomes[0], ModifyOutcome::Saved { .. }),
        "{outcomes:?}"
    );
    let found = client
        .lookup_records(zone, vec!["pub1".into()])
        .await
        .unwrap();
    assert!(
        matches!(&found[0], LookupOutcome::Found(r) if r.get("title") == Some(&FieldValue::String("hello".into())))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unregistered_server_key_is_refused_as_fatal() {
    let registered = ServerKey::from_pem("test-key-1", S2S_KEY_PEM).unwrap();
    let server = s2s_server(&registered).await;
    // Same id, another key: the signature cannot verify.
    let other_pem = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggxQ07YfJRa5Flzii
+XlqYDTD+qPogQEaK+JXj34xoYOhRANCAASqPrej//xgDX7yU4EkUA5HngOP6MhD
hmilUMWRaV9Z+NSGZzuNeGUWjATCEd1TmbWXZp8G1BmDUgFHMRZURL87
-----END PRIVATE KEY-----";
    let forged = ServerKey::from_pem("test-key-1", other_pem).unwrap();
    let err = s2s_client(&server, forged, DatabaseScope::Public)
        .lookup_records(ZoneId::default_zone(), vec!["x".into()])
        .await
        .unwrap_err();
    assert_eq!(
        server_error(&err).code,
        ServerErrorCode::AuthenticationFailed
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_key_on_the_private_database_is_refused() {
    let key = ServerKey::from_pem("test-key-1", S2S_KEY_PEM).unwrap();
    let server = s2s_server(&key).await;
    let err = s2s_client(&server, key, DatabaseScope::Private)
        .fetch_database_changes(None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err:?}");
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Notifications.

#[tokio::test]
async fn a_change_by_another_client_arrives_as_a_zone_changed_signal() {
    let server = server().await;
    let listener = client(&server);
    let zone = ZoneId::new("Live");
    listener.ensure_zones(vec![zone.clone()]).await.unwrap();
    listener
        .ensure_subscription(zone_subscription("live-zone", &zone))
        .await
        .unwrap();
    let mut signals = listener.notifications().await.unwrap();

    // Another device of the same user writes to the zone.
    let writer = client(&server);
    seed(&writer, &zone, vec![note(&zone, "w1", "from elsewhere")]).await;

    let signal = tokio::time::timeout(Duration::from_secs(60), signals.next_signal())
        .await
        .expect("a signal within a minute")
        .expect("the stream is open")
        .expect("not an error");
    assert_eq!(signal.zone, zone);
    assert_eq!(signal.subscription_id, "live-zone");
    drop(signals);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Error classes from real server behaviour.

#[tokio::test]
async fn a_stale_change_tag_is_a_conflict_carrying_the_servers_copy() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Conflicts");
    let saved = seed(&client, &zone, vec![note(&zone, "c1", "original")]).await;
    let stale = saved[0].clone();
    let mut theirs = stale.clone();
    theirs.set("title", "theirs");
    let first = client
        .modify_records(ModifyBatch::new(zone.clone(), vec![save(theirs)]).unwrap())
        .await
        .unwrap();
    let ModifyOutcome::Saved { system, .. } = &first[0] else {
        panic!("{first:?}")
    };
    let mut mine = stale;
    mine.set("title", "mine");
    // The server attaches its copy to the conflict: no lookup is needed (one would fail here).
    arm(
        &server,
        serde_json::json!({"operation": "records/lookup", "count": 1, "htmlBody": true}),
    )
    .await;
    let outcomes = client
        .modify_records(ModifyBatch::new(zone, vec![save(mine)]).unwrap())
        .await
        .unwrap();
    match &outcomes[0] {
        ModifyOutcome::Conflict {
            server_record: Some(server_record),
            error,
            ..
        } => {
            assert_eq!(error.code, ServerErrorCode::Conflict);
            assert_eq!(error.scope, ErrorScope::Item);
            assert_eq!(server_record.change_tag(), Some(&system.change_tag));
            assert_eq!(
                server_record.get("title"),
                Some(&FieldValue::String("theirs".into()))
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(outcomes[0].class(), Some(ErrorClass::Conflict));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn creating_an_existing_record_is_a_conflict_with_the_servers_copy() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Exists");
    seed(&client, &zone, vec![note(&zone, "e1", "first")]).await;
    let outcomes = client
        .modify_records(
            ModifyBatch::new(zone.clone(), vec![save(note(&zone, "e1", "second"))]).unwrap(),
        )
        .await
        .unwrap();
    match &outcomes[0] {
        ModifyOutcome::Conflict {
            server_record: Some(server_record),
            error,
            ..
        } => {
            assert_eq!(error.code, ServerErrorCode::Exists);
            assert_eq!(
                server_record.get("title"),
                Some(&FieldValue::String("first".into()))
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn updating_a_missing_record_rejects_that_item_only() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Rejects");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    let mut ghost = note(&zone, "ghost", "x");
    ghost.system = Some(skysync_model::SystemFields {
        change_tag: ChangeTag("zz".into()),
        created: None,
        modified: None,
        deleted: false,
    });
    let outcomes = client
        .modify_records(
            ModifyBatch::new(
                zone.clone(),
                vec![save(ghost), save(note(&zone, "fine", "y"))],
            )
            .unwrap(),
        )
        .await
        .unwrap();
    match &outcomes[0] {
        ModifyOutcome::Failed { error, .. } => {
            assert_eq!(server_error(error).code, ServerErrorCode::NotFound);
            assert_eq!(error.class(), ErrorClass::ItemRejected);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&outcomes[1], ModifyOutcome::Saved { .. }),
        "{outcomes:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_record_the_server_no_longer_has_counts_as_deleted() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Deletes");
    let saved = seed(&client, &zone, vec![note(&zone, "once", "x")]).await;
    let delete = PendingChange::Delete {
        id: saved[0].id.clone(),
        change_tag: saved[0].change_tag().cloned(),
    };
    let first = client
        .modify_records(ModifyBatch::new(zone.clone(), vec![delete.clone()]).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&first[0], ModifyOutcome::Deleted { .. }),
        "{first:?}"
    );
    let never_confirmed = PendingChange::Delete {
        id: RecordId::new(zone.clone(), "never-saved"),
        change_tag: None,
    };
    let again = client
        .modify_records(ModifyBatch::new(zone, vec![delete, never_confirmed]).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&again[0], ModifyOutcome::Deleted { .. }),
        "{again:?}"
    );
    assert!(
        matches!(&again[1], ModifyOutcome::Deleted { .. }),
        "{again:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_atomic_batch_is_answered_per_record() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Atomic");
    let saved = seed(&client, &zone, vec![note(&zone, "a1", "v1")]).await;
    let mut stale = saved[0].clone();
    stale.system.as_mut().unwrap().change_tag = ChangeTag("stale".into());
    let batch = ModifyBatch::new(
        zone.clone(),
        vec![save(note(&zone, "a2", "innocent")), save(stale)],
    )
    .unwrap()
    .atomic(true);
    let outcomes = client.modify_records(batch).await.unwrap();
    match &outcomes[0] {
        ModifyOutcome::Failed { error, .. } => {
            assert_eq!(server_error(error).code, ServerErrorCode::AtomicError);
            assert_eq!(error.class(), ErrorClass::Transient);
        }
        other => panic!("the innocent record fails with ATOMIC_ERROR, got {other:?}"),
    }
    assert!(
        matches!(&outcomes[1], ModifyOutcome::Conflict { .. }),
        "{outcomes:?}"
    );
    // Nothing of the batch was applied.
    let found = client
        .lookup_records(zone, vec!["a2".into()])
        .await
        .unwrap();
    assert!(matches!(&found[0], LookupOutcome::NotFound(_)));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_zone_is_zone_gone() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("NeverMade");
    let err = client
        .fetch_zone_changes(zone.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).code, ServerErrorCode::ZoneNotFound);
    assert_eq!(err.class(), ErrorClass::ZoneGone);

    let answer = client
        .modify_records(ModifyBatch::new(zone.clone(), vec![save(note(&zone, "x", "y"))]).unwrap())
        .await;
    let class = match &answer {
        Err(e) => e.class(),
        Ok(outcomes) => outcomes[0].class().unwrap(),
    };
    assert_eq!(class, ErrorClass::ZoneGone, "{answer:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_two_hundred_operations_is_too_large() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Big");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    let changes = (0..201)
        .map(|i| save(note(&zone, &format!("r{i}"), "x")))
        .collect();
    let err = client
        .modify_records(ModifyBatch::new(zone, changes).unwrap())
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).code, ServerErrorCode::LimitExceeded);
    assert_eq!(server_error(&err).http_status, 413);
    assert_eq!(err.class(), ErrorClass::TooLarge);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Error classes through fault injection.

#[tokio::test]
async fn try_again_later_and_throttled_are_transient_with_their_retry_after() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Busy");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    for (status, code, secs) in [(503, "TRY_AGAIN_LATER", 2), (429, "THROTTLED", 3)] {
        arm(
            &server,
            serde_json::json!({"operation": "records/modify", "count": 1, "status": status,
                               "serverErrorCode": code, "retryAfter": secs}),
        )
        .await;
        let err = client
            .modify_records(
                ModifyBatch::new(zone.clone(), vec![save(note(&zone, "b", "x"))]).unwrap(),
            )
            .await
            .unwrap_err();
        let e = server_error(&err);
        assert_eq!(e.code.as_str(), code);
        assert_eq!(e.http_status, status);
        assert_eq!(e.scope, ErrorScope::Request);
        assert_eq!(err.class(), ErrorClass::Throttled, "{code} with retryAfter");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(secs)));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_change_token_is_token_expired() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Expiring");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    arm(
        &server,
        serde_json::json!({"operation": "changes/zone", "count": 1,
                           "serverErrorCode": "CHANGE_TOKEN_EXPIRED"}),
    )
    .await;
    let err = client
        .fetch_zone_changes(zone, Some(ChangeToken("old".into())))
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).code, ServerErrorCode::ChangeTokenExpired);
    assert_eq!(err.class(), ErrorClass::TokenExpired);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejected_credentials_and_a_full_quota_are_fatal() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Fatal");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    for code in ["AUTHENTICATION_FAILED", "QUOTA_EXCEEDED"] {
        arm(
            &server,
            serde_json::json!({"operation": "records/modify", "count": 1, "serverErrorCode": code}),
        )
        .await;
        let err = client
            .modify_records(
                ModifyBatch::new(zone.clone(), vec![save(note(&zone, "f", "x"))]).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(server_error(&err).code.as_str(), code);
        assert_eq!(err.class(), ErrorClass::Fatal, "{code}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_answer_that_does_not_begin_within_the_request_timeout_is_no_answer_and_offline() {
    let server = server().await;
    let client = CloudKitClient::builder(CONTAINER, Auth::web("test-api-token", "user-one-token"))
        .base_url(server.base_url())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    arm(
        &server,
        serde_json::json!({"operation": "users/caller", "count": 1, "delayMs": 1500}),
    )
    .await;
    let err = client.current_user().await.unwrap_err();
    assert!(
        matches!(
            err,
            CloudError::Network {
                kind: NetworkFailure::NoAnswer,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Offline);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused_as_too_large() {
    let server = server().await;
    let writer = client(&server);
    let zone = ZoneId::new("Large");
    seed(&writer, &zone, vec![note(&zone, "big", &"x".repeat(4096))]).await;
    let capped = CloudKitClient::builder(CONTAINER, Auth::web("test-api-token", "user-one-token"))
        .base_url(server.base_url())
        .max_response_bytes(1024)
        .build()
        .unwrap();
    let err = capped
        .lookup_records(zone, vec!["big".into()])
        .await
        .unwrap_err();
    let CloudError::ResponseTooLarge {
        status,
        cap,
        declared,
        read,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*status, *cap), (200, 1024));
    // The dev server declares its length: refused on its word, not a byte read.
    assert!(declared.is_some_and(|length| length > 1024), "{err}");
    assert_eq!(*read, 0);
    let text = err.to_string();
    assert!(text.contains("1024"), "{text}");
    assert!(
        !text.contains("xxxx"),
        "record values stay out of errors: {text}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_proxy_html_page_is_transient_and_says_what_arrived() {
    let server = server().await;
    let client = client(&server);
    arm(
        &server,
        serde_json::json!({"operation": "changes/database", "count": 1, "status": 502, "htmlBody": true}),
    )
    .await;
    let err = client.fetch_database_changes(None).await.unwrap_err();
    let CloudError::UnexpectedResponse { status, detail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, Some(502));
    assert!(detail.contains("text/html"), "{detail}");
    assert!(detail.contains('<'), "the first bytes are quoted: {detail}");
    assert_eq!(err.class(), ErrorClass::Transient);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_mid_answer_is_a_transient_reset_and_resending_is_safe() {
    let server = server().await;
    let client = client(&server);
    let zone = ZoneId::new("Dropped");
    client.ensure_zones(vec![zone.clone()]).await.unwrap();
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "count": 1, "dropConnection": true}),
    )
    .await;
    let batch = ModifyBatch::new(zone.clone(), vec![save(note(&zone, "d1", "x"))]).unwrap();
    let err = client.modify_records(batch.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            CloudError::Network {
                kind: NetworkFailure::Reset,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    // The server applied the lost request; resending the create meets the saved copy as a conflict.
    let outcomes = client.modify_records(batch).await.unwrap();
    assert!(
        matches!(&outcomes[0], ModifyOutcome::Conflict { .. }),
        "{outcomes:?}"
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The actor over the real client.

#[tokio::test]
async fn the_transport_actor_serves_the_real_client() {
    let server = server().await;
    let (transport, join) = TransportHandle::spawn(client(&server), HandleOptions::default())
        .await
        .unwrap();
    let zone = ZoneId::new("ViaActor");
    transport.ensure_zones(vec![zone.clone()]).await.unwrap();
    let outcomes = transport
        .modify_records(ModifyBatch::new(zone.clone(), vec![save(note(&zone, "v1", "x"))]).unwrap())
        .await
        .unwrap();
    assert!(matches!(&outcomes[0], ModifyOutcome::Saved { .. }));
    let page = transport.fetch_zone_changes(zone, None).await.unwrap();
    assert_eq!(page.changed.len(), 1);
    transport.actor().unwrap().stop(None);
    join.await.unwrap();
    server.shutdown().await.unwrap();
}
