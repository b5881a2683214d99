//! How the client reads answers that CloudKit documents but skysync's dev server does not produce:
//! a conflict without an attached server record (Apple never attaches one), a field type from a
//! newer schema, a proxy page echoing the request URL, a 400 error body next to the 400 atomic
//! batch answer. Served over real HTTP on 127.0.0.1 by a one-shot listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Canned, capture};
use skysync_model::{
    ChangeTag, CloudError, ErrorClass, ErrorScope, FieldValue, ModelError, PendingChange, Record,
    RecordId, ServerErrorCode, SystemFields, ZoneId,
};
use skysync_transport::{
    Auth, CloudDatabase, CloudKitClient, LookupOutcome, ModifyBatch, ModifyOutcome,
};

fn zone() -> ZoneId {
    ZoneId::new("Notes")
}

fn client(base: &str) -> CloudKitClient {
    CloudKitClient::builder(
        "iCloud.com.example.App",
        Auth::web("api-token-1234", "web-token-5678"),
    )
    .base_url(base)
    .build()
    .unwrap()
}

fn update(name: &str, tag: &str) -> PendingChange {
    let mut record = Record::new(RecordId::new(zone(), name), "Note").with("title", "mine");
    record.system = Some(SystemFields {
        change_tag: ChangeTag(tag.into()),
        created: None,
        modified: None,
        deleted: false,
    });
    PendingChange::Save(record)
}

/// A CONFLICT answered without the server's copy is reported as such, and nothing more is sent
/// behind the caller's back: the lookup is an operation of its own, under its own permit.
#[tokio::test]
async fn a_conflict_without_a_server_record_is_reported_without_a_hidden_lookup() {
    let (base, served) = capture(vec![
        Canned::ok(
            r#"{"records":[{"recordName":"n1","reason":"oplock error","serverErrorCode":"CONFLICT"},
                           {"recordName":"n2","recordChangeTag":"b2"}]}"#,
        ),
        Canned::ok(
            r#"{"records":[{"recordName":"n1","recordType":"Note","recordChangeTag":"9",
                "fields":{"title":{"value":"theirs","type":"STRING"}},
                "modified":{"timestamp":1700000000000,"userRecordName":"_other","deviceID":"d"}}]}"#,
        ),
    ])
    .await;
    let client = client(&base);
    let batch = ModifyBatch::new(zone(), vec![update("n1", "3"), update("n2", "4")]).unwrap();
    let outcomes = client.modify_records(batch).await.unwrap();
    match &outcomes[0] {
        ModifyOutcome::Conflict {
            id,
            server_record,
            error,
        } => {
            assert_eq!(id.record_name, "n1");
            assert_eq!(server_record, &None, "no copy came, none was fetched");
            assert_eq!(error.code, ServerErrorCode::Conflict);
            assert_eq!(error.reason, "oplock error");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        matches!(&outcomes[1], ModifyOutcome::Saved { system, .. } if system.change_tag.0 == "b2")
    );

    // The caller's own lookup, as a separate request.
    let found = client
        .lookup_records(zone(), vec!["n1".into()])
        .await
        .unwrap();
    match &found[0] {
        LookupOutcome::Found(server) => {
            assert_eq!(server.change_tag(), Some(&ChangeTag("9".into())));
            assert_eq!(
                server.get("title"),
                Some(&FieldValue::String("theirs".into()))
            );
        }
        other => panic!("expected the server copy, got {other:?}"),
    }
    let seen = served.await.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].path().ends_with("/private/records/modify"));
    assert!(seen[1].path().ends_with("/private/records/lookup"));
}

#[tokio::test]
async fn an_atomic_failure_answered_with_400_is_read_per_record() {
    let (base, _served) = capture(vec![Canned::json(
        400,
        r#"{"records":[
            {"recordName":"n1","serverErrorCode":"ATOMIC_ERROR","reason":"atomic batch failed"},
            {"recordName":"n2","serverErrorCode":"CONFLICT","reason":"oplock error",
             "serverRecord":{"recordName":"n2","recordType":"Note","recordChangeTag":"7",
                             "fields":{"title":{"value":"theirs","type":"STRING"}}}}]}"#,
    )])
    .await;
    let batch = ModifyBatch::new(zone(), vec![update("n1", "1"), update("n2", "2")])
        .unwrap()
        .atomic(true);
    let outcomes = client(&base).modify_records(batch).await.unwrap();
    match &outcomes[0] {
        ModifyOutcome::Failed { error, .. } => {
            assert_eq!(error.server_code(), Some(&ServerErrorCode::AtomicError));
            assert_eq!(
                error.class(),
                ErrorClass::Transient,
                "the innocent is re-sent"
            );
            match error {
                CloudError::Server(e) => {
                    assert_eq!(e.scope, ErrorScope::Item);
                    assert_eq!(e.http_status, 400);
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("expected ATOMIC_ERROR, got {other:?}"),
    }
    assert!(matches!(
        &outcomes[1],
        ModifyOutcome::Conflict { server_record: Some(server_record), .. }
            if server_record.change_tag().unwrap().0 == "7"
    ));
}

#[tokio::test]
async fn a_400_error_body_is_a_request_level_error() {
    let (base, _served) = capture(vec![Canned::json(
        400,
        r#"{"uuid":"u-1","serverErrorCode":"BAD_REQUEST","reason":"Unexpected input"}"#,
    )])
    .await;
    let batch = ModifyBatch::new(zone(), vec![update("n1", "1")]).unwrap();
    let err = client(&base).modify_records(batch).await.unwrap_err();
    match &err {
        CloudError::Server(e) => {
            assert_eq!(e.code, ServerErrorCode::BadRequest);
            assert_eq!(e.scope, ErrorScope::Request);
            assert_eq!(e.uuid.as_deref(), Some("u-1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Fatal);
}

#[tokio::test]
async fn an_unknown_field_type_in_a_change_feed_is_incompatible_and_names_the_field() {
    let (base, _served) = capture(vec![Canned::ok(
        r#"{"zones":[{"zoneID":{"zoneName":"Notes","zoneType":"REGULAR_CUSTOM_ZONE"},
            "syncToken":"t2","moreComing":false,
            "records":[{"recordName":"n1","recordType":"Note","recordChangeTag":"1",
                        "fields":{"mood":{"value":"?","type":"QUANTUM_STATE"}}}]}]}"#,
    )])
    .await;
    let err = client(&base)
        .fetch_zone_changes(zone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::Incompatible(ModelError::UnknownFieldType { field, type_name })
            if field == "mood" && type_name == "QUANTUM_STATE"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.to_string().contains("mood"), "{err}");
}

#[tokio::test]
async fn an_unknown_field_type_in_a_lookup_fails_that_record_as_incompatible() {
    let (base, _served) = capture(vec![Canned::ok(
        r#"{"records":[{"recordName":"n1","recordType":"Note","recordChangeTag":"1",
                        "fields":{"mood":{"value":"?","type":"QUANTUM_STATE"}}},
                       {"recordName":"n2","serverErrorCode":"NOT_FOUND","reason":"Record not found"}]}"#,
    )])
    .await;
    let found = client(&base)
        .lookup_records(zone(), vec!["n1".into(), "n2".into()])
        .await
        .unwrap();
    assert!(matches!(
        &found[0],
        LookupOutcome::Failed { error: CloudError::Incompatible(ModelError::UnknownFieldType { field, .. }), .. }
            if field == "mood"
    ));
    assert_eq!(
        found[1],
        LookupOutcome::NotFound(RecordId::new(zone(), "n2"))
    );
}

#[tokio::test]
async fn a_change_feed_reports_tombstones_and_zone_errors() {
    let (base, _served) = capture(vec![
        Canned::ok(
            r#"{"zones":[{"zoneID":{"zoneName":"Notes"},"syncToken":"t9","moreComing":true,
                "records":[{"recordName":"gone","deleted":true},
                           {"recordName":"n1","recordType":"Note","recordChangeTag":"1",
                            "fields":{"tags":{"value":[],"type":"STRING_LIST"}}}]}]}"#,
        ),
        Canned::ok(
            r#"{"zones":[{"zoneID":{"zoneName":"Notes"},"serverErrorCode":"ZONE_NOT_FOUND","reason":"zone gone"}]}"#,
        ),
    ])
    .await;
    let client = client(&base);
    let page = client.fetch_zone_changes(zone(), None).await.unwrap();
    assert_eq!(page.deleted, vec![RecordId::new(zone(), "gone")]);
    assert_eq!(page.changed.len(), 1);
    assert_eq!(page.token.0, "t9");
    assert!(page.more_coming);
    let err = client
        .fetch_zone_changes(zone(), Some(page.token))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::ZoneGone);
}

#[tokio::test]
async fn a_proxy_page_is_transient_and_quoted_without_the_tokens() {
    let (base, _served) = capture(vec![Canned {
        status: 502,
        content_type: "text/html",
        headers: Vec::new(),
        hold: false,
        body: "<html><body>Bad Gateway for /x?ckAPIToken=api-token-1234&ckWebAuthToken=web-token-5678\n</body></html>".into(),
    }])
    .await;
    let err = client(&base).current_user().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    let CloudError::UnexpectedResponse { status, detail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, Some(502));
    assert!(detail.contains("text/html"), "{detail}");
    assert!(detail.contains("<html><body>Bad Gateway"), "{detail}");
    assert!(
        detail.contains("\\n"),
        "control characters are escaped: {detail}"
    );
    assert!(!detail.contains("api-token-1234"), "{detail}");
    assert!(!detail.contains("web-token-5678"), "{detail}");
}

#[tokio::test]
async fn a_json_answer_of_the_wrong_shape_is_transient_and_quotes_no_values() {
    let (base, _served) = capture(vec![Canned::ok(
        r#"{"zones":[{"zoneID":{"zoneName":"Notes"},"records":[{"recordName":"private-name"}]}]}"#,
    )])
    .await;
    let err = client(&base)
        .fetch_zone_changes(zone(), None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    let text = err.to_string();
    assert!(text.contains("changes/zone"), "{text}");
    assert!(!text.contains("private-name"), "{text}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_failure_whose_detail_has_no_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client(&base).current_user().await.unwrap_err();
    let CloudError::Network { kind, detail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*kind, skysync_model::NetworkFailure::Connect, "{detail}");
    assert!(!detail.contains("api-token-1234"), "{detail}");
    assert!(!detail.contains("web-token-5678"), "{detail}");
    assert!(!detail.contains("ckAPIToken"), "{detail}");
    assert_eq!(err.class(), ErrorClass::Offline);
}
