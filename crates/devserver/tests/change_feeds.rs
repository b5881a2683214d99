//! Change feeds over HTTP: `changes/zone` paging and tombstones, per-zone errors, `records/changes`,
//! `changes/database` and `zones/changes`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Harness, tag_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn add_notes(h: &Harness, zone: &str, count: usize) {
    let operations: Vec<Value> = (0..count)
        .map(|i| {
            json!({"operationType": "create", "record": {"recordName": format!("n{i:03}"),
                "recordType": "Note", "fields": {"i": {"value": i}}}})
        })
        .collect();
    for chunk in operations.chunks(200) {
        let answer = h.modify(zone, json!(chunk)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}

fn record_names(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recordName"].as_str().unwrap().to_owned())
        .collect()
}

/// Fetches every page from `token`, returning the names seen (in order), the pages and the last token.
async fn fetch_all(
    h: &Harness,
    zone: &str,
    token: Option<String>,
    limit: u32,
) -> (Vec<String>, usize, String) {
    let mut token = token;
    let mut names = Vec::new();
    for pages in 1..=100 {
        let page = h.zone_changes(zone, token.as_deref(), Some(limit)).await;
        assert!(page["records"].as_array().unwrap().len() <= limit as usize);
        names.extend(record_names(&page));
        token = Some(page["syncToken"].as_str().unwrap().to_owned());
        if page["moreComing"] == false {
            return (names, pages, token.unwrap());
        }
    }
    panic!("moreComing never ended");
}

#[tokio::test]
async fn paging_with_more_coming_returns_every_record_exactly_once() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    add_notes(&h, "Notes", 250).await;
    let (names, pages, token) = fetch_all(&h, "Notes", None, 60).await;
    assert_eq!(pages, 5, "250 records in pages of 60");
    let mut counts = BTreeMap::new();
    for name in &names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 250);
    assert!(counts.values().all(|&n| n == 1), "a record came twice");

    // Nothing new since the last token.
    let (again, _, _) = fetch_all(&h, "Notes", Some(token.clone()), 60).await;
    assert!(again.is_empty(), "{again:?}");

    // A change after the token comes alone; replaying the same token gives the same page.
    h.create_note("Notes", "late", "x").await;
    let first = h.zone_changes("Notes", Some(&token), None).await;
    let replay = h.zone_changes("Notes", Some(&token), None).await;
    assert_eq!(record_names(&first), ["late"]);
    assert_eq!(first["records"], replay["records"]);
    assert_eq!(first["syncToken"], replay["syncToken"]);
}

#[tokio::test]
async fn updates_move_a_record_to_the_end_and_deletes_come_as_tombstones() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let tag_a = h.create_note("Notes", "a", "1").await;
    h.create_note("Notes", "b", "2").await;
    let start = h.zone_changes("Notes", None, None).await;
    let token = start["syncToken"].as_str().unwrap().to_owned();

    let updated = h
        .modify(
            "Notes",
            json!([{"operationType": "update", "record": {"recordName": "a", "recordChangeTag": tag_a,
                "fields": {"title": {"value": "1b"}}}}]),
        )
        .await;
    let tag_a = tag_of(updated.record(0));
    h.modify(
        "Notes",
        json!([{"operationType": "delete", "record": {"recordName": "a", "recordChangeTag": tag_a}}]),
    )
    .await;
    let page = h.zone_changes("Notes", Some(&token), None).await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{page}");
    assert_eq!(
        records[0],
        json!({"recordName": "a", "recordType": "Note", "deleted": true})
    );
}

#[tokio::test]
async fn changes_zone_answers_each_zone_with_its_own_page_or_error() {
    let h = Harness::start().await;
    h.create_zone("A").await;
    h.create_zone("B").await;
    h.create_note("A", "a1", "x").await;
    h.create_note("B", "b1", "y").await;
    let answer = h
        .post(
            "changes/zone",
            json!({"zones": [
                {"zoneID": {"zoneName": "A"}},
                {"zoneID": {"zoneName": "Missing"}},
                {"zoneID": {"zoneName": "B"}, "syncToken": "not-a-token"},
                {"zoneID": {"zoneName": "B"}, "desiredRecordTypes": ["Other"]}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let zones = answer.body["zones"].as_array().unwrap();
    assert_eq!(record_names(&zones[0]), ["a1"]);
    assert_eq!(zones[0]["zoneID"]["zoneName"], "A");
    assert_eq!(zones[1]["serverErrorCode"], "ZONE_NOT_FOUND");
    assert_eq!(zones[1]["zoneID"]["zoneName"], "Missing");
    assert_eq!(zones[2]["serverErrorCode"], "CHANGE_TOKEN_EXPIRED");
    assert!(
        record_names(&zones[3]).is_empty(),
        "filtered by record type"
    );
}

#[tokio::test]
async fn a_token_of_another_zone_is_expired() {
    let h = Harness::start().await;
    h.create_zone("A").await;
    h.create_zone("B").await;
    let token_a = h.zone_changes("A", None, None).await["syncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = h.zone_changes("B", Some(&token_a), None).await;
    assert_eq!(page["serverErrorCode"], "CHANGE_TOKEN_EXPIRED");
}

#[tokio::test]
async fn records_changes_refuses_the_default_zone_and_expired_tokens() {
    let h = Harness::start().await;
    let default = h
        .post(
            "records/changes",
            json!({"zoneID": {"zoneName": "_defaultZone"}}),
        )
        .await;
    default.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(default.body["reason"], "cannot get changes in default zone");

    h.create_zone("Notes").await;
    h.create_note("Notes", "n1", "x").await;
    let first = h
        .post(
            "records/changes",
            json!({"zoneID": {"zoneName": "Notes"}, "resultsLimit": 1}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(record_names(&first.body), ["n1"]);
    assert_eq!(first.body["moreComing"], false);
    assert!(first.body["syncToken"].is_string());

    let expired = h
        .post(
            "records/changes",
            json!({"zoneID": {"zoneName": "Notes"}, "syncToken": "zff.ffff.deadbeef"}),
        )
        .await;
    expired.assert_error(StatusCode::GONE, "CHANGE_TOKEN_EXPIRED");
}

#[tokio::test]
async fn changes_database_lists_changed_zones_and_flags_deleted_ones() {
    let h = Harness::start().await;
    h.create_zone("A").await;
    h.create_zone("B").await;
    let first = h.post("changes/database", json!({})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let zone_names = |body: &Value| -> Vec<(String, bool)> {
        body["zones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| {
                (
                    z["zoneID"]["zoneName"].as_str().unwrap().to_owned(),
                    z["deleted"] == true,
                )
            })
            .collect()
    };
    assert_eq!(
        zone_names(&first.body),
        [("A".into(), false), ("B".into(), false)]
    );
    let token = first.body["syncToken"].as_str().unwrap().to_owned();

    h.create_note("B", "b1", "x").await;
    let answer = h.delete_zone("A").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let next = h
        .post("changes/database", json!({"syncToken": token}))
        .await;
    assert_eq!(
        zone_names(&next.body),
        [("B".into(), false), ("A".into(), true)]
    );
    assert_eq!(next.body["moreComing"], false);

    // Paging by one.
    let paged = h
        .post(
            "changes/database",
            json!({"syncToken": token, "resultsLimit": 1}),
        )
        .await;
    assert_eq!(zone_names(&paged.body), [("B".into(), false)]);
    assert_eq!(paged.body["moreComing"], true);
    let rest = h
        .post(
            "changes/database",
            json!({"syncToken": paged.body["syncToken"], "resultsLimit": 1}),
        )
        .await;
    assert_eq!(zone_names(&rest.body), [("A".into(), true)]);
    assert_eq!(rest.body["moreComing"], false);

    let expired = h
        .post("changes/database", json!({"syncToken": "garbage"}))
        .await;
    expired.assert_error(StatusCode::GONE, "CHANGE_TOKEN_EXPIRED");
}

#[tokio::test]
async fn zones_changes_uses_the_meta_sync_token_and_ignores_a_sync_token() {
    let h = Harness::start().await;
    h.create_zone("A").await;
    let first = h.post("zones/changes", json!({})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["zones"][0]["zoneID"]["zoneName"], "A");
    let meta = first.body["metaSyncToken"].as_str().unwrap().to_owned();

    h.create_zone("B").await;
    let with_meta = h
        .post("zones/changes", json!({"metaSyncToken": meta}))
        .await;
    let names: Vec<_> = with_meta.body["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zoneID"]["zoneName"].clone())
        .collect();
    assert_eq!(names, [json!("B")]);

    // `syncToken` in its place is ignored: the first page again, as live.
    let ignored = h.post("zones/changes", json!({"syncToken": meta})).await;
    assert_eq!(ignored.status, StatusCode::OK, "{}", ignored.body);
    assert_eq!(ignored.body["zones"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn change_feeds_are_refused_on_the_public_database() {
    let h = Harness::start().await;
    let token = h.token.clone();
    let answer = h
        .post_as(&token, "public", "changes/database", json!({}))
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn a_token_from_another_servers_data_is_expired() {
    let a = Harness::start().await;
    let mut b = Harness::start().await;
    b.token = a.token.clone();
    for h in [&a, &b] {
        h.create_zone("Notes").await;
        h.create_note("Notes", "n1", "x").await;
    }
    let from_a = a.zone_changes("Notes", None, None).await["syncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_b = b.zone_changes("Notes", Some(&from_a), None).await;
    assert_eq!(on_b["serverErrorCode"], "CHANGE_TOKEN_EXPIRED", "{on_b}");
}

/// Deletes `name` (whose change tag is `tag`) from `zone`.
async fn delete_note(h: &Harness, zone: &str, name: &str, tag: &str) {
    let answer = h
        .modify(
            zone,
            json!([{"operationType": "delete", "record": {"recordName": name, "recordChangeTag": tag}}]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.record(0)["deleted"], true, "{}", answer.body);
}

fn tombstones(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["deleted"] == true)
        .map(|r| r["recordName"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_refetch_from_no_token_after_a_delete_shows_no_tombstone() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_note("Notes", "a", "1").await;
    let tag_b = h.create_note("Notes", "b", "2").await;
    h.create_note("Notes", "c", "3").await;
    let before = h.zone_changes("Notes", None, None).await["syncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    delete_note(&h, "Notes", "b", &tag_b).await;

    // A device that kept its token learns of the delete...
    let with_token = h.zone_changes("Notes", Some(&before), None).await;
    assert_eq!(tombstones(&with_token), ["b"], "{with_token}");

    // ...one that lost it sees the live records only, in changes/zone and in records/changes.
    let refetch = h.zone_changes("Notes", None, None).await;
    assert_eq!(record_names(&refetch), ["a", "c"], "{refetch}");
    assert!(tombstones(&refetch).is_empty(), "{refetch}");
    let records_changes = h
        .post("records/changes", json!({"zoneID": {"zoneName": "Notes"}}))
        .await;
    assert_eq!(
        records_changes.status,
        StatusCode::OK,
        "{}",
        records_changes.body
    );
    assert_eq!(record_names(&records_changes.body), ["a", "c"]);

    // The refetch's token carries on like any other: nothing new, then the next delete.
    let token = refetch["syncToken"].as_str().unwrap().to_owned();
    assert!(record_names(&h.zone_changes("Notes", Some(&token), None).await).is_empty());
    let tag_a = tag_of(&h.lookup("Notes", "a").await);
    delete_note(&h, "Notes", "a", &tag_a).await;
    let after = h.zone_changes("Notes", Some(&token), None).await;
    assert_eq!(tombstones(&after), ["a"], "{after}");
}

#[tokio::test]
async fn a_paged_refetch_skips_old_tombstones_on_every_page_but_reports_deletes_made_during_it() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let mut tags = BTreeMap::new();
    for name in ["a", "b", "c", "d", "e", "f"] {
        tags.insert(name, h.create_note("Notes", name, name).await);
    }
    // Deleted before the refetch starts: never reported to it. The tombstones now sit at the end
    // of the feed, behind the live records.
    delete_note(&h, "Notes", "b", &tags["b"]).await;
    delete_note(&h, "Notes", "e", &tags["e"]).await;

    let first = h.zone_changes("Notes", None, Some(2)).await;
    assert_eq!(record_names(&first), ["a", "c"], "{first}");
    assert_eq!(first["moreComing"], true);
    // Deleted while the refetch runs, after the device received it: reported.
    delete_note(&h, "Notes", "a", &tag_of(&h.lookup("Notes", "a").await)).await;

    let mut token = first["syncToken"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = h.zone_changes("Notes", Some(&token), Some(2)).await;
        assert!(page["serverErrorCode"].is_null(), "{page}");
        seen.extend(record_names(&page).into_iter().map(|name| {
            let deleted = page["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["recordName"] == name.as_str() && r["deleted"] == true);
            (name, deleted)
        }));
        token = page["syncToken"].as_str().unwrap().to_owned();
        if page["moreComing"] == false {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            ("d".to_owned(), false),
            ("f".to_owned(), false),
            ("a".to_owned(), true)
        ],
        "b and e were deleted before the refetch began"
    );
}

#[tokio::test]
async fn results_limit_above_200_comes_back_in_pages_of_at_most_200() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    add_notes(&h, "Notes", 500).await;

    let (names, pages, _) = fetch_all(&h, "Notes", None, 1000).await;
    assert_eq!(names.len(), 500);
    assert_eq!(pages, 3, "500 records in pages of at most 200");

    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut body = json!({"zoneID": {"zoneName": "Notes"}, "resultsLimit": 1000});
        if let Some(token) = &token {
            body["syncToken"] = json!(token);
        }
        let page = h.post("records/changes", body).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        sizes.push((page.records().len(), page.body["moreComing"] == true));
        token = Some(page.body["syncToken"].as_str().unwrap().to_owned());
        if page.body["moreComing"] == false {
            break;
        }
    }
    assert_eq!(sizes, [(200, true), (200, true), (100, false)]);
}

#[tokio::test]
async fn one_missing_zone_among_three_is_an_error_entry_beside_the_others_pages() {
    let h = Harness::start().await;
    h.create_zone("A").await;
    h.create_zone("C").await;
    h.create_note("A", "a1", "x").await;
    h.create_note("C", "c1", "y").await;
    let answer = h
        .post(
            "changes/zone",
            json!({"zones": [
                {"zoneID": {"zoneName": "A"}},
                {"zoneID": {"zoneName": "B"}},
                {"zoneID": {"zoneName": "C"}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let zones = answer.body["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 3);
    assert_eq!(record_names(&zones[0]), ["a1"]);
    assert!(zones[0]["syncToken"].is_string());
    assert_eq!(
        zones[1],
        json!({
            "zoneID": zones[1]["zoneID"].clone(),
            "serverErrorCode": "ZONE_NOT_FOUND",
            "reason": zones[1]["reason"].clone()
        }),
        "an error entry is {{zoneID, serverErrorCode, reason}}"
    );
    assert_eq!(zones[1]["zoneID"]["zoneName"], "B");
    assert!(zones[1]["reason"].is_string());
    assert_eq!(record_names(&zones[2]), ["c1"]);
    assert!(zones[2]["syncToken"].is_string());
}
