//! `records/modify` over HTTP: the seven operation types, change tags and stamps, conflicts with the
//! server's copy, atomic and non-atomic batches, desiredKeys, numbersAsStrings and per-item errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, tag_of};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn create_stamps_the_record_and_a_second_create_is_exists_with_the_server_copy() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .modify(
            "Notes",
            json!([{"operationType": "create", "record": {
                "recordName": "n1", "recordType": "Note",
                "fields": {"title": {"value": "Groceries"}, "count": {"value": 3},
                           "at": {"value": 1_700_000_000_123_i64, "type": "TIMESTAMP"}}
            }}]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let created = answer.record(0);
    assert_eq!(created["recordName"], "n1");
    assert_eq!(created["recordType"], "Note");
    assert_eq!(
        created["fields"]["title"],
        json!({"value": "Groceries", "type": "STRING"})
    );
    assert_eq!(
        created["fields"]["count"],
        json!({"value": 3, "type": "INT64"})
    );
    assert_eq!(
        created["fields"]["at"],
        json!({"value": 1_700_000_000_123_i64, "type": "TIMESTAMP"})
    );
    let tag = tag_of(created);
    assert!(
        !tag.is_empty() && tag.len() <= 16,
        "short opaque tag: {tag}"
    );
    for stamp in ["created", "modified"] {
        assert!(created[stamp]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        assert!(
            created[stamp]["userRecordName"]
                .as_str()
                .unwrap()
                .starts_with('_')
        );
        assert!(created[stamp]["deviceID"].is_string());
    }

    let again = h
        .modify(
            "Notes",
            json!([{"operationType": "create", "record": {
                "recordName": "n1", "recordType": "Note", "fields": {"title": {"value": "Other"}}
            }}]),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "atomic batch failed");
    let error = again.record(0);
    assert_eq!(error["serverErrorCode"], "EXISTS");
    assert_eq!(error["recordName"], "n1");
    assert_eq!(error["serverRecord"]["recordChangeTag"], tag.as_str());
    assert_eq!(
        error["serverRecord"]["fields"]["title"]["value"],
        "Groceries"
    );
    assert_eq!(
        h.lookup("Notes", "n1").await["fields"]["title"]["value"],
        "Groceries"
    );
}

#[tokio::test]
async fn update_changes_only_the_given_fields_and_every_write_gets_a_new_tag() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let first = h.create_note("Notes", "n1", "one").await;
    let answer = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {
                "recordName": "n1", "recordChangeTag": first, "fields": {"body": {"value": "text"}}
            }}]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let second = tag_of(answer.record(0));
    assert_ne!(first, second);
    let record = h.lookup("Notes", "n1").await;
    assert_eq!(record["fields"]["title"]["value"], "one");
    assert_eq!(record["fields"]["body"]["value"], "text");
    assert_eq!(record["recordChangeTag"], second.as_str());
    assert_eq!(
        record["created"]["timestamp"],
        answer.record(0)["created"]["timestamp"],
        "created is kept"
    );

    // An explicit null clears a field.
    let cleared = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {
                "recordName": "n1", "recordChangeTag": second, "fields": {"body": {"value": null}}
            }}]),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    let third = tag_of(cleared.record(0));
    assert!(third != first && third != second);
    let record = h.lookup("Notes", "n1").await;
    assert!(record["fields"].get("body").is_none(), "{record}");
    assert_eq!(record["fields"]["title"]["value"], "one");
}

#[tokio::test]
async fn a_stale_tag_is_a_conflict_with_oplock_error_and_the_server_record() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let old = h.create_note("Notes", "n1", "one").await;
    let updated = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {
                "recordName": "n1", "recordChangeTag": old, "fields": {"title": {"value": "two"}}
            }}]),
        )
        .await;
    let current = tag_of(updated.record(0));

    for operation in ["update", "replace", "delete"] {
        let answer = h
            .post(
                "records/modify",
                json!({"zoneID": {"zoneName": "Notes"}, "atomic": false, "operations": [
                    {"operationType": operation, "record": {
                        "recordName": "n1", "recordChangeTag": old,
                        "fields": {"title": {"value": "stale"}}
                    }}
                ]}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "non-atomic errors are inline"
        );
        let error = answer.record(0);
        assert_eq!(error["serverErrorCode"], "CONFLICT", "{operation}: {error}");
        assert_eq!(error["reason"], "oplock error");
        assert_eq!(error["serverRecord"]["recordChangeTag"], current.as_str());
        assert_eq!(error["serverRecord"]["fields"]["title"]["value"], "two");
    }
    assert_eq!(
        h.lookup("Notes", "n1").await["fields"]["title"]["value"],
        "two"
    );
}

#[tokio::test]
async fn force_update_creates_a_missing_record_but_needs_its_type() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let untyped = h
        .modify(
            "Notes",
            json!([{"operationType": "forceUpdate", "record": {
                "recordName": "n1", "fields": {"title": {"value": "x"}}
            }}]),
        )
        .await;
    assert_eq!(untyped.record(0)["serverErrorCode"], "BAD_REQUEST");

    let created = h
        .modify(
            "Notes",
            json!([{"operationType": "forceUpdate", "record": {
                "recordName": "n1", "recordType": "Note", "fields": {"title": {"value": "x"}}
            }}]),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    // And on an existing record it ignores the tag and merges the fields.
    let merged = h
        .modify(
            "Notes",
            json!([{"operationType": "forceUpdate", "record": {
                "recordName": "n1", "recordChangeTag": "stale", "fields": {"body": {"value": "b"}}
            }}]),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    let record = h.lookup("Notes", "n1").await;
    assert_eq!(record["fields"]["title"]["value"], "x");
    assert_eq!(record["fields"]["body"]["value"], "b");
}

#[tokio::test]
async fn replace_nulls_omitted_fields_and_force_replace_creates_or_replaces() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let tag = h.create_note("Notes", "n1", "one").await;
    let replaced = h
        .modify(
            "Notes",
            json!([{"operationType": "replace", "record": {
                "recordName": "n1", "recordChangeTag": tag, "fields": {"body": {"value": "only"}}
            }}]),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    let record = h.lookup("Notes", "n1").await;
    assert!(record["fields"].get("title").is_none(), "{record}");
    assert_eq!(record["fields"]["body"]["value"], "only");

    let forced = h
        .modify(
            "Notes",
            json!([
                {"operationType": "forceReplace", "record": {
                    "recordName": "n1", "fields": {"title": {"value": "new"}}}},
                {"operationType": "forceReplace", "record": {
                    "recordName": "n2", "recordType": "Note", "fields": {"title": {"value": "fresh"}}}}
            ]),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    let n1 = h.lookup("Notes", "n1").await;
    assert_eq!(n1["fields"]["title"]["value"], "new");
    assert!(n1["fields"].get("body").is_none());
    assert_eq!(
        h.lookup("Notes", "n2").await["fields"]["title"]["value"],
        "fresh"
    );
}

#[tokio::test]
async fn update_replace_and_delete_of_a_missing_record_are_not_found() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "atomic": false, "operations": [
                {"operationType": "update", "record": {"recordName": "a", "recordChangeTag": "1"}},
                {"operationType": "replace", "record": {"recordName": "b", "recordChangeTag": "1"}},
                {"operationType": "delete", "record": {"recordName": "c", "recordChangeTag": "1"}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(answer.record(i)["serverErrorCode"], "NOT_FOUND");
        assert_eq!(answer.record(i)["recordName"], *name);
    }
}

#[tokio::test]
async fn delete_checks_the_tag_force_delete_does_not_and_both_answer_deleted() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let tag = h.create_note("Notes", "n1", "one").await;
    h.create_note("Notes", "n2", "two").await;
    let answer = h
        .modify(
            "Notes",
            json!([
                {"operationType": "delete", "record": {"recordName": "n1", "recordChangeTag": tag}},
                {"operationType": "forceDelete", "record": {"recordName": "n2"}}
            ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.record(0),
        &json!({"recordName": "n1", "deleted": true})
    );
    assert_eq!(
        answer.record(1),
        &json!({"recordName": "n2", "deleted": true})
    );
    for name in ["n1", "n2"] {
        let gone = h.lookup("Notes", name).await;
        assert_eq!(gone["serverErrorCode"], "NOT_FOUND");
        assert_eq!(gone["reason"], "Record not found");
    }
    // A deleted record can be created again.
    h.create_note("Notes", "n1", "back").await;
}

#[tokio::test]
async fn an_atomic_batch_with_one_failure_applies_nothing() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_note("Notes", "existing", "x").await;
    let answer = h
        .modify(
            "Notes",
            json!([
                {"operationType": "create", "record": {"recordName": "a", "recordType": "Note"}},
                {"operationType": "create", "record": {"recordName": "existing", "recordType": "Note"}},
                {"operationType": "forceUpdate", "record": {"recordName": "b", "recordType": "Note"}}
            ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.records().len(), 3);
    assert_eq!(answer.record(0)["serverErrorCode"], "ATOMIC_ERROR");
    assert_eq!(answer.record(0)["recordName"], "a");
    assert_eq!(answer.record(1)["serverErrorCode"], "EXISTS");
    assert_eq!(answer.record(2)["serverErrorCode"], "ATOMIC_ERROR");
    for name in ["a", "b"] {
        assert_eq!(
            h.lookup("Notes", name).await["serverErrorCode"],
            "NOT_FOUND"
        );
    }
    // Nothing reached the change feed either.
    let changes = h.zone_changes("Notes", None, None).await;
    let names: Vec<_> = changes["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["existing"]);
}

#[tokio::test]
async fn a_non_atomic_batch_applies_what_succeeds_and_reports_the_rest_inline() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_note("Notes", "existing", "x").await;
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "atomic": false, "operations": [
                {"operationType": "create", "record": {"recordName": "a", "recordType": "Note"}},
                {"operationType": "create", "record": {"recordName": "existing", "recordType": "Note"}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.record(0)["recordChangeTag"].is_string());
    assert_eq!(answer.record(1)["serverErrorCode"], "EXISTS");
    assert_eq!(h.lookup("Notes", "a").await["recordName"], "a");
}

#[tokio::test]
async fn the_default_zone_is_never_atomic() {
    let h = Harness::start().await;
    h.create_note("_defaultZone", "existing", "x").await;
    let answer = h
        .modify(
            "_defaultZone",
            json!([
                {"operationType": "create", "record": {"recordName": "a", "recordType": "Note"}},
                {"operationType": "create", "record": {"recordName": "existing", "recordType": "Note"}}
            ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.record(1)["serverErrorCode"], "EXISTS");
    assert_eq!(h.lookup("_defaultZone", "a").await["recordName"], "a");
}

#[tokio::test]
async fn desired_keys_pick_the_fields_returned_per_request_and_per_operation() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let fields = json!({"a": {"value": "1"}, "b": {"value": "2"}, "c": {"value": "3"}});
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "desiredKeys": ["a"], "operations": [
                {"operationType": "create", "record": {"recordName": "r1", "recordType": "T", "fields": fields}},
                {"operationType": "create", "record": {"recordName": "r2", "recordType": "T", "fields": fields},
                 "desiredKeys": ["b", "c"]},
                {"operationType": "create", "record": {"recordName": "r3", "recordType": "T", "fields": fields},
                 "desiredKeys": []},
                {"operationType": "create", "record": {"recordName": "r4", "recordType": "T", "fields": fields},
                 "desiredKeys": null}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let keys = |i: usize| -> Vec<String> {
        answer.record(i)["fields"]
            .as_object()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(0), ["a"]);
    assert_eq!(keys(1), ["b", "c"]);
    assert!(keys(2).is_empty());
    assert_eq!(keys(3), ["a", "b", "c"]);
    assert!(answer.record(2)["recordChangeTag"].is_string());
}

#[tokio::test]
async fn numbers_as_strings_sends_integers_as_strings() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "numbersAsStrings": true, "operations": [
                {"operationType": "create", "record": {"recordName": "r", "recordType": "T", "fields": {
                    "n": {"value": 9_007_199_254_740_993_i64, "type": "INT64"},
                    "d": {"value": 1.5, "type": "DOUBLE"}
                }}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.record(0)["fields"]["n"]["value"], "9007199254740993");
    assert_eq!(answer.record(0)["fields"]["d"]["value"], 1.5);
}

#[tokio::test]
async fn bad_fields_are_refused_per_item_with_a_reason() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .post(
            "records/modify",
            json!({"zoneID": {"zoneName": "Notes"}, "atomic": false, "operations": [
                {"operationType": "create", "record": {"recordName": "frac", "recordType": "T",
                    "fields": {"at": {"value": 1.5, "type": "TIMESTAMP"}}}},
                {"operationType": "create", "record": {"recordName": "unknown", "recordType": "T",
                    "fields": {"x": {"value": 1, "type": "QUATERNION"}}}},
                {"operationType": "create", "record": {"recordName": "shape", "recordType": "T",
                    "fields": {"x": {"value": "nine", "type": "INT64"}}}},
                {"operationType": "create", "record": {"recordName": "fine", "recordType": "T",
                    "fields": {"x": {"value": 9, "type": "INT64"}}}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.record(0)["serverErrorCode"], "BAD_REQUEST");
    assert_eq!(
        answer.record(0)["reason"],
        "Invalid value, expected type TIMESTAMP."
    );
    assert_eq!(answer.record(1)["serverErrorCode"], "BAD_REQUEST");
    assert!(
        answer.record(1)["reason"]
            .as_str()
            .unwrap()
            .contains("QUATERNION")
    );
    assert_eq!(answer.record(2)["serverErrorCode"], "BAD_REQUEST");
    assert_eq!(answer.record(3)["fields"]["x"]["value"], 9);
}

#[tokio::test]
async fn a_missing_zone_is_zone_not_found_per_item() {
    let h = Harness::start().await;
    let answer = h
        .modify(
            "Nowhere",
            json!([{"operationType": "create", "record": {"recordName": "r", "recordType": "T"}}]),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "an atomic batch that failed"
    );
    assert_eq!(answer.record(0)["serverErrorCode"], "ZONE_NOT_FOUND");
    assert_eq!(answer.record(0)["recordName"], "r");
}

#[tokio::test]
async fn two_operations_on_one_record_are_a_bad_request() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .modify(
            "Notes",
            json!([
                {"operationType": "create", "record": {"recordName": "r", "recordType": "T"}},
                {"operationType": "forceDelete", "record": {"recordName": "r"}}
            ]),
        )
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(h.lookup("Notes", "r").await["serverErrorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn encrypted_fields_are_refused_in_the_public_database_only() {
    let h = Harness::start().await;
    let op = json!([{"operationType": "create", "record": {"recordName": "s", "recordType": "Secret",
        "fields": {"pin": {"value": "1234", "type": "STRING", "isEncrypted": true}}}}]);
    let public = h
        .post_as(
            &h.token.clone(),
            "public",
            "records/modify",
            json!({"operations": op}),
        )
        .await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.body);
    assert_eq!(public.record(0)["serverErrorCode"], "BAD_REQUEST");
    assert_eq!(
        public.record(0)["reason"],
        "encrypted fields are not supported in the public database"
    );

    let private = h.post("records/modify", json!({"operations": op})).await;
    assert_eq!(private.status, StatusCode::OK, "{}", private.body);
    assert_eq!(private.record(0)["fields"]["pin"]["isEncrypted"], true);
    assert_eq!(private.record(0)["fields"]["pin"]["value"], "1234");
}

#[tokio::test]
async fn a_create_without_a_name_gets_a_fresh_one() {
    let h = Harness::start().await;
    let answer = h
        .modify(
            "_defaultZone",
            json!([{"operationType": "create", "record": {"recordType": "Note"}}]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let name = answer.record(0)["recordName"].as_str().unwrap().to_owned();
    assert!(!name.is_empty());
    assert_eq!(
        h.lookup("_defaultZone", &name).await["recordName"],
        name.as_str()
    );
}
