//! Zones over HTTP: `zones/list`, `zones/lookup`, `zones/modify`, and what deleting a zone does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn list_shows_the_default_zone_and_created_zones_with_sync_tokens() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h.get("zones/list").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let zones = answer.body["zones"].as_array().unwrap();
    let names: Vec<_> = zones
        .iter()
        .map(|z| z["zoneID"]["zoneName"].clone())
        .collect();
    assert_eq!(names, [json!("Notes"), json!("_defaultZone")]);
    for zone in zones {
        assert!(zone["syncToken"].is_string(), "{zone}");
        assert!(
            zone["zoneID"]["ownerRecordName"]
                .as_str()
                .unwrap()
                .starts_with('_')
        );
    }
    assert_eq!(zones[0]["zoneID"]["zoneType"], "REGULAR_CUSTOM_ZONE");
    assert_eq!(zones[1]["zoneID"]["zoneType"], "DEFAULT_ZONE");

    // The token zones/list gives is a valid change-feed position: nothing after it yet.
    let token = zones[0]["syncToken"].as_str().unwrap();
    let page = h.zone_changes("Notes", Some(token), None).await;
    assert_eq!(page["records"], json!([]), "{page}");
}

#[tokio::test]
async fn lookup_answers_each_zone_or_zone_not_found() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    let answer = h
        .post(
            "zones/lookup",
            json!({"zones": [{"zoneName": "Notes"}, {"zoneName": "Nope"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["zones"][0]["zoneID"]["zoneName"], "Notes");
    assert_eq!(answer.body["zones"][1]["serverErrorCode"], "ZONE_NOT_FOUND");
    assert_eq!(answer.body["zones"][1]["zoneID"]["zoneName"], "Nope");
}

#[tokio::test]
async fn creating_an_existing_zone_succeeds_and_keeps_its_records() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_note("Notes", "n1", "kept").await;
    h.create_zone("Notes").await;
    assert_eq!(
        h.lookup("Notes", "n1").await["fields"]["title"]["value"],
        "kept"
    );
}

#[tokio::test]
async fn deleting_a_zone_removes_its_records_and_expires_its_tokens() {
    let h = Harness::start().await;
    h.create_zone("Notes").await;
    h.create_note("Notes", "n1", "x").await;
    let token = h.zone_changes("Notes", None, None).await["syncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = h.delete_zone("Notes").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["zones"][0]["deleted"], true);

    assert_eq!(
        h.lookup("Notes", "n1").await["serverErrorCode"],
        "ZONE_NOT_FOUND"
    );
    assert_eq!(
        h.zone_changes("Notes", Some(&token), None).await["serverErrorCode"],
        "ZONE_NOT_FOUND"
    );
    let listed = h.get("zones/list").await;
    assert_eq!(
        listed.body["zones"].as_array().unwrap().len(),
        1,
        "only the default zone"
    );

    // Created again, it is a new, empty zone: the old token has expired.
    h.create_zone("Notes").await;
    assert_eq!(
        h.lookup("Notes", "n1").await["serverErrorCode"],
        "NOT_FOUND"
    );
    assert_eq!(
        h.zone_changes("Notes", Some(&token), None).await["serverErrorCode"],
        "CHANGE_TOKEN_EXPIRED"
    );
    assert_eq!(
        h.zone_changes("Notes", None, None).await["records"],
        json!([])
    );
}

#[tokio::test]
async fn deleting_a_missing_zone_or_the_default_zone_is_refused_per_zone() {
    let h = Harness::start().await;
    let answer = h
        .post(
            "zones/modify",
            json!({"operations": [
                {"operationType": "delete", "zone": {"zoneID": {"zoneName": "Nope"}}},
                {"operationType": "delete", "zone": {"zoneID": {"zoneName": "_defaultZone"}}},
                {"operationType": "create", "zone": {"zoneID": {"zoneName": "Fine"}}}
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["zones"][0]["serverErrorCode"], "ZONE_NOT_FOUND");
    assert_eq!(answer.body["zones"][1]["serverErrorCode"], "BAD_REQUEST");
    assert_eq!(answer.body["zones"][2]["zoneID"]["zoneName"], "Fine");
}

#[tokio::test]
async fn zones_belong_to_their_user_and_custom_zones_stay_out_of_the_public_database() {
    let h = Harness::start().await;
    h.create_zone("Mine").await;
    let other = h.get_as("someone-else", "private", "zones/list").await;
    assert_eq!(
        other.body["zones"].as_array().unwrap().len(),
        1,
        "{}",
        other.body
    );

    let token = h.token.clone();
    let public = h
        .post_as(
            &token,
            "public",
            "zones/modify",
            json!({"operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": "Pub"}}}]}),
        )
        .await;
    assert_eq!(public.body["zones"][0]["serverErrorCode"], "BAD_REQUEST");
}
