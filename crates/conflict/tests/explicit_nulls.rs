//! Explicit nulls: a cleared field survives resolution and goes out as `{"value": null}`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{note, save, stamped, wire_json};
use serde_json::json;
use skysync_conflict::{
    ClientWins, Custom, Fallback, FieldPick, Resolution, ThreeWayMerge, settle,
};
use skysync_model::{Field, FieldValue, PendingChange, Record, ZoneId};

fn base() -> Record {
    stamped(
        note()
            .with("title", "Draft")
            .with("body", "Hello")
            .with("due", FieldValue::Timestamp(5_000)),
        "t1",
        2_000,
    )
}

fn sent(resolution: Resolution) -> Record {
    match resolution {
        Resolution::Send(record) => record,
        other => panic!("expected Send, got {other:?}"),
    }
}

/// The field's wire dictionary in the record as it would be sent.
fn wire_field(record: &Record, name: &str) -> serde_json::Value {
    wire_json(record)["fields"][name].clone()
}

#[test]
fn a_field_cleared_here_and_untouched_there_is_sent_cleared() {
    let mut here = base();
    here.clear("due");
    let there = stamped(base().with("title", "Renamed there"), "t2", 3_000);
    let record = sent(
        settle(
            &ThreeWayMerge::default(),
            &save(here),
            Some(&base()),
            Some(&there),
        )
        .unwrap(),
    );
    assert_eq!(record.get("due"), Some(&FieldValue::Null));
    assert_eq!(wire_field(&record, "due"), json!({ "value": null }));
    assert_eq!(
        record.get("title"),
        Some(&FieldValue::String("Renamed there".into()))
    );
}

#[test]
fn a_field_the_server_cleared_and_untouched_here_is_sent_cleared() {
    // The server's copy omits a cleared field entirely.
    let mut there = stamped(base(), "t2", 3_000);
    there.fields.remove("due");
    let here = base().with("title", "Renamed here");
    let record = sent(
        settle(
            &ThreeWayMerge::default(),
            &save(here),
            Some(&base()),
            Some(&there),
        )
        .unwrap(),
    );
    assert_eq!(record.get("due"), Some(&FieldValue::Null));
    assert_eq!(wire_field(&record, "due"), json!({ "value": null }));
}

#[test]
fn a_clear_here_against_an_edit_there_goes_to_the_fallback() {
    let mut here = base();
    here.clear("body");
    let there = stamped(base().with("body", "Longer text"), "t2", 3_000);

    let client = sent(
        settle(
            &ThreeWayMerge::default(),
            &save(here.clone()),
            Some(&base()),
            Some(&there),
        )
        .unwrap(),
    );
    assert_eq!(wire_field(&client, "body"), json!({ "value": null }));

    let server_fallback = ThreeWayMerge::new(Fallback::ServerWins);
    assert_eq!(
        settle(&server_fallback, &save(here), Some(&base()), Some(&there)).unwrap(),
        Resolution::AcceptServer,
        "with the server's body the merge is the server's copy"
    );
}

#[test]
fn both_sides_clearing_a_field_is_not_a_clash() {
    let mut here = base().with("title", "Mine");
    here.clear("body");
    let mut there = stamped(base(), "t2", 3_000);
    there.fields.remove("body");
    let parks = ThreeWayMerge::new(Fallback::custom(|clash| {
        FieldPick::Park(skysync_conflict::ParkReason::Custom(clash.name.to_owned()))
    }));
    let record = sent(settle(&parks, &save(here), Some(&base()), Some(&there)).unwrap());
    assert_eq!(wire_field(&record, "body"), json!({ "value": null }));
}

#[test]
fn client_wins_sends_a_local_clear_over_a_server_value() {
    let mut here = base();
    here.clear("body");
    let there = stamped(base().with("body", "Kept there"), "t2", 3_000);
    let record = sent(
        settle(
            &ClientWins::default(),
            &save(here),
            Some(&base()),
            Some(&there),
        )
        .unwrap(),
    );
    assert_eq!(wire_field(&record, "body"), json!({ "value": null }));
}

#[test]
fn a_custom_resolver_can_clear_a_field_and_the_clear_survives_settle() {
    let clears_due = Custom::new(
        |local: &PendingChange, _: Option<&Record>, _: Option<&Record>| match local {
            PendingChange::Save(record) => {
                let mut record = record.clone();
                record.clear("due");
                Resolution::Send(record)
            }
            PendingChange::Delete { .. } => Resolution::AcceptServer,
        },
    );
    let there = stamped(base().with("title", "Other"), "t2", 3_000);
    let record = sent(settle(&clears_due, &save(base()), Some(&base()), Some(&there)).unwrap());
    assert_eq!(wire_field(&record, "due"), json!({ "value": null }));
}

#[test]
fn a_custom_fallback_can_clear_a_clashing_field() {
    let clear_on_clash = ThreeWayMerge::new(Fallback::custom(|_| {
        FieldPick::Value(Field::plain(FieldValue::Null))
    }));
    let here = base().with("body", "Mine");
    let there = stamped(base().with("body", "Theirs"), "t2", 3_000);
    let record = sent(settle(&clear_on_clash, &save(here), Some(&base()), Some(&there)).unwrap());
    assert_eq!(wire_field(&record, "body"), json!({ "value": null }));
}

#[test]
fn a_sent_clear_reads_back_as_an_explicit_null() {
    let mut here = base();
    here.clear("due");
    let there = stamped(base().with("title", "Other"), "t2", 3_000);
    let record = sent(
        settle(
            &ThreeWayMerge::default(),
            &save(here),
            Some(&base()),
            Some(&there),
        )
        .unwrap(),
    );
    let text = serde_json::to_string(&record.to_wire(false)).unwrap();
    assert!(text.contains(r#""due":{"value":null}"#), "{text}");
    let back =
        Record::from_wire(&ZoneId::new("Notes"), &serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(back.get("due"), Some(&FieldValue::Null));
}
