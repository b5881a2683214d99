//! `records/lookup` and `records/query` over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn add_artists(h: &Harness) {
    let artists = [
        ("a1", "Mei", 1990),
        ("a2", "Ana", 1985),
        ("a3", "Mei", 1970),
        ("a4", "Zoe", 2001),
    ];
    let operations: Vec<Value> = artists
        .iter()
        .map(|(name, first, born)| {
            json!({"operationType": "create", "record": {"recordName": name, "recordType": "Artist",
                "fields": {"firstName": {"value": first}, "born": {"value": born}}}})
        })
        .chain([
            json!({"operationType": "create", "record": {"recordName": "x", "recordType": "Song",
            "fields": {"firstName": {"value": "Mei"}}}}),
        ])
        .collect();
    let answer = h.modify("_defaultZone", json!(operations)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

fn names(answer: &Value) -> Vec<String> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordName"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lookup_returns_records_in_order_with_not_found_in_place_of_missing_ones() {
    let h = Harness::start().await;
    add_artists(&h).await;
    let answer = h
        .post(
            "records/lookup",
            json!({"records": [{"recordName": "a2"}, {"recordName": "nope"},
                               {"recordName": "a1", "desiredKeys": ["born"]}],
                   "desiredKeys": ["firstName"], "numbersAsStrings": true}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.record(0)["fields"],
        json!({"firstName": {"value": "Ana", "type": "STRING"}})
    );
    assert_eq!(answer.record(1)["serverErrorCode"], "NOT_FOUND");
    assert_eq!(answer.record(1)["reason"], "Record not found");
    assert_eq!(answer.record(1)["recordName"], "nope");
    assert_eq!(
        answer.record(2)["fields"],
        json!({"born": {"value": "1990", "type": "INT64"}})
    );
}

#[tokio::test]
async fn lookup_in_a_missing_zone_is_zone_not_found_per_record() {
    let h = Harness::start().await;
    let answer = h
        .post(
            "records/lookup",
            json!({"zoneID": {"zoneName": "Gone"}, "records": [{"recordName": "a"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.record(0)["serverErrorCode"], "ZONE_NOT_FOUND");
}

#[tokio::test]
async fn query_filters_with_equals_on_a_field_and_a_system_field() {
    let h = Harness::start().await;
    add_artists(&h).await;
    let by_field = h
        .post(
            "records/query",
            json!({"query": {"recordType": "Artist", "filterBy": [
                {"comparator": "EQUALS", "fieldName": "firstName", "fieldValue": {"value": "Mei"}}
            ]}}),
        )
        .await;
    assert_eq!(by_field.status, StatusCode::OK, "{}", by_field.body);
    assert_eq!(names(&by_field.body), ["a1", "a3"]);

    let by_system = h
        .post(
            "records/query",
            json!({"query": {"recordType": "Artist", "filterBy": [
                {"comparator": "EQUALS", "systemFieldName": "recordName", "fieldValue": {"value": "a4"}}
            ]}}),
        )
        .await;
    assert_eq!(by_system.status, StatusCode::OK, "{}", by_system.body);
    assert_eq!(names(&by_system.body), ["a4"]);
}

#[tokio::test]
async fn query_sorts_by_one_field_either_way() {
    let h = Harness::start().await;
    add_artists(&h).await;
    for (ascending, expected) in [
        (true, ["a3", "a2", "a1", "a4"]),
        (false, ["a4", "a1", "a2", "a3"]),
    ] {
        let answer = h
            .post(
                "records/query",
                json!({"query": {"recordType": "Artist",
                    "sortBy": [{"fieldName": "born", "ascending": ascending}]}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(names(&answer.body), expected);
    }
}

#[tokio::test]
async fn query_pages_with_a_continuation_marker_until_it_is_absent() {
    let h = Harness::start().await;
    add_artists(&h).await;
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10 {
        let mut body = json!({"resultsLimit": 3, "query": {"recordType": "Artist",
            "sortBy": [{"systemFieldName": "recordName"}]}});
        if let Some(marker) = &marker {
            body["continuationMarker"] = json!(marker);
        }
        let answer = h.post("records/query", body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        seen.extend(names(&answer.body));
        marker = answer.body["continuationMarker"]
            .as_str()
            .map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a1", "a2", "a3", "a4"]);

    let forged = h
        .post(
            "records/query",
            json!({"continuationMarker": "q9.0.00000000", "query": {"recordType": "Artist"}}),
        )
        .await;
    forged.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn other_comparators_are_refused_as_unsupported() {
    let h = Harness::start().await;
    let answer = h
        .post(
            "records/query",
            json!({"query": {"recordType": "Artist", "filterBy": [
                {"comparator": "BEGINS_WITH", "fieldName": "firstName", "fieldValue": {"value": "M"}}
            ]}}),
        )
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let reason = answer.body["reason"].as_str().unwrap();
    assert!(
        reason.contains("BEGINS_WITH") && reason.contains("dev server"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_query_in_a_missing_zone_is_zone_not_found() {
    let h = Harness::start().await;
    let answer = h
        .post(
            "records/query",
            json!({"zoneID": {"zoneName": "Gone"}, "query": {"recordType": "Artist"}}),
        )
        .await;
    answer.assert_error(StatusCode::NOT_FOUND, "ZONE_NOT_FOUND");
}
