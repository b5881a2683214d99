//! Golden tests: the literal JSON examples of the protocol contract (docs/cloudkit-web-services.md)
//! parse into the wire types and re-emit as the same JSON. Where the contract elides a value with `…`
//! or `[...]`, a concrete value stands in; everything else is verbatim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use skysync_model::wire::*;
use skysync_model::{ErrorClass, ErrorScope, FieldValue, Record, ServerErrorCode, ZoneId};

/// Parses `json` as `T`, re-emits it, and checks that nothing was lost, added or changed.
fn round_trip<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let original: Value = serde_json::from_str(json).expect("example is JSON");
    let parsed: T = serde_json::from_str(json).expect("example parses into the wire type");
    let emitted = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        emitted, original,
        "re-emitted JSON differs from the example"
    );
    parsed
}

#[test]
fn records_modify_request_example() {
    // §2.3, verbatim.
    let request: ModifyRecordsRequest = round_trip(
        r#"{
          "operations": [
            { "operationType": "create",
              "record": { "recordType": "Artist", "recordName": "Mei Chen",
                          "fields": { "firstName": {"value": "Mei"}, "lastName": {"value": "Chen"} } },
              "desiredKeys": ["firstName"] },
            { "operationType": "update",
              "record": { "recordName": "101", "recordChangeTag": "e",
                          "fields": { "width": {"value": 18}, "height": {"value": 24} } } },
            { "operationType": "forceDelete", "record": { "recordName": "old" } }
          ],
          "zoneID": { "zoneName": "myCustomZone" },
          "atomic": true,
          "desiredKeys": null,
          "numbersAsStrings": false
        }"#,
    );
    assert_eq!(request.operations.len(), 3);
    assert_eq!(request.operations[0].operation_type, OperationType::Create);
    assert_eq!(
        request.operations[0].desired_keys,
        Some(Some(vec!["firstName".to_owned()]))
    );
    assert_eq!(request.operations[1].operation_type, OperationType::Update);
    assert_eq!(
        request.operations[2].operation_type,
        OperationType::ForceDelete
    );
    // `"desiredKeys": null` (all keys) is kept apart from an absent key.
    assert_eq!(request.desired_keys, Some(None));
    assert_eq!(request.operations[1].desired_keys, None);
    // Untyped values are inferred as the server does.
    let artist =
        Record::from_wire(&ZoneId::new("myCustomZone"), &request.operations[0].record).unwrap();
    assert_eq!(
        artist.get("firstName"),
        Some(&FieldValue::String("Mei".into()))
    );
    let width = &request.operations[1].record.fields.as_ref().unwrap()["width"];
    assert_eq!(
        skysync_model::Field::from_wire("width", width)
            .unwrap()
            .value,
        FieldValue::Int64(18)
    );
}

#[test]
fn records_modify_success_response_example() {
    // §2.3; the record name and user record name are elided in the contract.
    let response: RecordsResponse = round_trip(
        r#"{"records":[{"recordName":"4c016e24-5dbf-4b0e-8bd5-6a1c0a1d3b52","recordChangeTag":"1e",
            "created":{"timestamp":1422312944104,"userRecordName":"_9a06d3b1","deviceID":"iCloud"},
            "modified":{"timestamp":1422312944104,"userRecordName":"_9a06d3b1","deviceID":"iCloud"}}]}"#,
    );
    match &response.records[0] {
        RecordResult::Record(r) => {
            let system = r.system_fields().unwrap();
            assert_eq!(system.change_tag.0, "1e");
            assert_eq!(system.modified.unwrap().timestamp_ms, 1_422_312_944_104);
        }
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn record_fetch_error_example() {
    // §2.3, verbatim (the contract's own placeholders are strings).
    let error: RecordFetchError = round_trip(
        r#"{ "recordName": "101", "reason": "oplock error", "serverErrorCode": "CONFLICT",
             "retryAfter": 3, "uuid": "…", "redirectURL": "…" }"#,
    );
    assert_eq!(error.server_error_code, ServerErrorCode::Conflict);
    let typed = error.to_server_error(200);
    assert_eq!(typed.retry_after, Some(std::time::Duration::from_secs(3)));
    assert_eq!(typed.code.classify(typed.scope), ErrorClass::Conflict);
    // Inside a records array the error variant wins over the record variant.
    let response: RecordsResponse = round_trip(
        r#"{"records":[{"recordName":"101","reason":"oplock error","serverErrorCode":"CONFLICT"},
                       {"recordName":"102","recordChangeTag":"2"}]}"#,
    );
    assert!(matches!(response.records[0], RecordResult::Error(_)));
    assert!(matches!(response.records[1], RecordResult::Record(_)));
}

#[test]
fn request_level_error_envelope_example() {
    // §3.1; the redirect URL is elided in the contract.
    let body: ErrorBody = round_trip(
        r#"{ "uuid": "4f02f7aa-fbb5-4cf8ae8e-4dd463793841", "serverErrorCode": "AUTHENTICATION_REQUIRED",
             "reason": "request needs authorization", "redirectURL": "https://idmsa.example/signin" }"#,
    );
    let error = body.to_server_error(421);
    assert_eq!(error.code, ServerErrorCode::AuthenticationRequired);
    assert_eq!(error.scope, ErrorScope::Request);
    assert_eq!(error.code.classify(error.scope), ErrorClass::Fatal);
    assert_eq!(
        error.redirect_url.as_deref(),
        Some("https://idmsa.example/signin")
    );
}

#[test]
fn changes_zone_request_example() {
    // §2.6; `[...]` in the contract stands for a list of keys.
    let request: ZoneChangesRequest = round_trip(
        r#"{ "zones": [ { "zoneID": {"zoneName": "Notes", "ownerRecordName": "_abc", "zoneType": "REGULAR_CUSTOM_ZONE"},
                         "syncToken": "AQAAAAAAAAJ", "resultsLimit": 200, "desiredKeys": ["title", "body"],
                         "desiredRecordTypes": ["Note"] } ],
             "reverse": false, "desiredKeys": null, "numbersAsStrings": false, "resultsLimit": 200,
             "desiredRecordTypes": null }"#,
    );
    assert_eq!(request.zones[0].zone_id.to_zone_id().zone_name, "Notes");
    assert_eq!(request.desired_record_types, Some(None));
    // The reference page's typo is accepted too.
    let typo: ZoneChangesRequest =
        serde_json::from_str(r#"{"zones":[],"numberAsStrings":true}"#).unwrap();
    assert_eq!(typo.numbers_as_strings, Some(true));
}

#[test]
fn changes_zone_response_with_a_per_zone_error() {
    let response: ZoneChangesResponse = round_trip(
        r#"{"zones":[
            {"zoneID":{"zoneName":"Notes"},"syncToken":"t2","moreComing":false,
             "records":[{"recordName":"n1","recordType":"Note","recordChangeTag":"3",
                         "fields":{"title":{"value":"Hi","type":"STRING"},
                                   "tags":{"value":[],"type":"STRING_LIST"}}},
                        {"recordName":"n2","deleted":true}]},
            {"zoneID":{"zoneName":"Gone"},"reason":"zone not found","serverErrorCode":"ZONE_NOT_FOUND"}]}"#,
    );
    match &response.zones[0] {
        ZoneChangesResult::Changes(page) => {
            let RecordResult::Record(first) = &page.records[0] else {
                panic!("expected a record")
            };
            let note = Record::from_wire(&page.zone_id.to_zone_id(), first).unwrap();
            assert_eq!(note.get("tags"), Some(&FieldValue::StringList(vec![])));
            let RecordResult::Record(second) = &page.records[1] else {
                panic!("expected a tombstone")
            };
            assert!(second.is_tombstone());
        }
        other => panic!("expected a page, got {other:?}"),
    }
    match &response.zones[1] {
        ZoneChangesResult::Error(e) => {
            assert_eq!(
                e.server_error_code.classify(ErrorScope::Item),
                ErrorClass::ZoneGone
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn record_dictionary_with_response_and_sharing_keys() {
    // §2.1 (the contract's annotated record, comments removed, placeholders filled).
    let record: WireRecord = round_trip(
        r#"{
          "recordName": "Mei Chen", "recordType": "Artist", "recordChangeTag": "e",
          "fields": { "firstName": { "value": "Mei", "type": "STRING" } },
          "createShortGUID": true, "parent": {"recordName": "Root"},
          "publicPermission": "READ_ONLY",
          "created":  { "timestamp": 1422312944104, "userRecordName": "_9a06", "deviceID": "iCloud" },
          "modified": { "timestamp": 1422312944105, "userRecordName": "_9a06", "deviceID": "iCloud" },
          "shortGUID": "0xyz", "share": {"recordName": "share-1"}
        }"#,
    );
    assert_eq!(record.extra.len(), 5, "sharing keys pass through untouched");
}

#[test]
fn zones_subscriptions_tokens_and_users_bodies() {
    round_trip::<ModifyZonesRequest>(
        r#"{"operations":[{"operationType":"create","zone":{"zoneID":{"zoneName":"Notes"}}},
                          {"operationType":"delete","zone":{"zoneID":{"zoneName":"Old"}}}]}"#,
    );
    round_trip::<ZonesResponse>(
        r#"{"zones":[{"zoneID":{"zoneName":"_defaultZone","zoneType":"DEFAULT_ZONE"},"syncToken":"1","atomic":false},
                     {"zoneID":{"zoneName":"Notes"},"serverErrorCode":"ZONE_NOT_FOUND","reason":"missing"}]}"#,
    );
    let changes: ZonesChangesResponse = round_trip(
        r#"{"zones":[{"zoneID":{"zoneName":"Old"},"deleted":true}],"metaSyncToken":"m2","moreComing":false}"#,
    );
    assert_eq!(changes.meta_sync_token, "m2");
    round_trip::<ZonesChangesRequest>(r#"{"metaSyncToken":"m1","resultsLimit":50}"#);
    round_trip::<DatabaseChangesResponse>(
        r#"{"zones":[{"zoneID":{"zoneName":"Notes"},"syncToken":"5"}],"syncToken":"d3","moreComing":true}"#,
    );
    round_trip::<ModifySubscriptionsRequest>(
        r#"{"operations":[{"operationType":"create","subscription":{"subscriptionID":"notes-changed",
            "subscriptionType":"zone","zoneID":{"zoneName":"Notes"}}}]}"#,
    );
    round_trip::<SubscriptionsResponse>(
        r#"{"subscriptions":[{"subscriptionID":"a","subscriptionType":"query","firesOn":["create","update","delete"],
            "firesOnce":false,"zoneWide":true,"query":{"recordType":"Note"}},
            {"subscriptionID":"b","reason":"nope","serverErrorCode":"INTERNAL_ERROR"}]}"#,
    );
    round_trip::<TokenCreateResponse>(
        r#"{"apnsEnvironment":"development","apnsToken":"abc","webcourierURL":"http://127.0.0.1:1/_courier/abc"}"#,
    );
    round_trip::<UsersResponse>(r#"{"users":[{"userRecordName":"_d2a1"}]}"#);
    round_trip::<QueryRecordsRequest>(
        r#"{"zoneID":{"zoneName":"Notes"},"resultsLimit":10,"query":{"recordType":"Note",
            "filterBy":[{"comparator":"EQUALS","fieldName":"owner","fieldValue":{"value":"me"}}],
            "sortBy":[{"fieldName":"title","ascending":false}]},"continuationMarker":"c1"}"#,
    );
    round_trip::<LookupRecordsRequest>(
        r#"{"records":[{"recordName":"a"},{"recordName":"b","desiredKeys":[]}],"zoneID":{"zoneName":"Notes"}}"#,
    );
}

#[test]
fn retry_after_accepts_fractions_and_strings() {
    let e: ErrorBody =
        serde_json::from_str(r#"{"serverErrorCode":"THROTTLED","retryAfter":2.2}"#).unwrap();
    assert_eq!(e.retry_after, Some(3), "fractions round up, never down");
    let e: ErrorBody =
        serde_json::from_str(r#"{"serverErrorCode":"THROTTLED","retryAfter":"7"}"#).unwrap();
    assert_eq!(e.retry_after, Some(7));
    assert!(
        serde_json::from_str::<ErrorBody>(r#"{"serverErrorCode":"THROTTLED","retryAfter":-1}"#)
            .is_err()
    );
}
