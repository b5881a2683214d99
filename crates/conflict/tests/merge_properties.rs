//! Properties of ThreeWayMerge over generated records: it is deterministic, it keeps every field
//! changed on only one side, it returns the server's copy when nothing changed locally and the local
//! copy when nothing changed on the server. Values include nulls, NaN and -0.0, encrypted fields,
//! and fields missing from either side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{note, save, stamped};
use proptest::prelude::*;
use skysync_conflict::{
    Fallback, LastWriterWinsByClock, ParkReason, Resolution, Side, ThreeWayMerge, Tiebreak, settle,
};
use skysync_model::{Field, FieldValue, Record};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        Just(FieldValue::Null),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(|s| FieldValue::String(s.into())),
        (0i64..3).prop_map(FieldValue::Int64),
        prop::sample::select(vec![0.0, -0.0, 1.5, f64::NAN]).prop_map(FieldValue::Double),
        (0i64..2).prop_map(FieldValue::Timestamp),
        prop::collection::vec(prop::sample::select(vec!["p", "q"]), 0..3).prop_map(|items| {
            FieldValue::StringList(items.into_iter().map(String::from).collect())
        }),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    (value(), prop::bool::weighted(0.1)).prop_map(|(value, encrypted)| Field { value, encrypted })
}

/// What one side did to one field, relative to the base.
#[derive(Clone, Debug)]
enum Edit {
    /// Left out of this side's copy (locally: untouched; on the server: no value).
    Absent,
    /// Kept the base's field.
    Same,
    /// Set to this (a null clears it).
    Set(Field),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(Edit::Absent),
            2 => Just(Edit::Same),
            2 => field().prop_map(Edit::Set),
        ],
        NAMES.len(),
    )
}

fn base_record() -> impl Strategy<Value = Record> {
    prop::collection::vec(prop::option::weighted(0.7, field()), NAMES.len()).prop_map(|fields| {
        let mut record = note();
        for (name, field) in NAMES.iter().zip(fields) {
            if let Some(field) = field {
                record.fields.insert((*name).to_owned(), field);
            }
        }
        stamped(record, "t1", 2_000)
    })
}

fn apply(base: &Record, edits: &[Edit], tag: &str, modified_ms: i64) -> Record {
    let mut record = note();
    for (name, edit) in NAMES.iter().zip(edits) {
        let field = match edit {
            Edit::Absent => None,
            Edit::Same => base.fields.get(*name).cloned(),
            Edit::Set(field) => Some(field.clone()),
        };
        if let Some(field) = field {
            record.fields.insert((*name).to_owned(), field);
        }
    }
    stamped(record, tag, modified_ms)
}

fn fallback() -> impl Strategy<Value = Fallback> {
    prop_oneof![
        Just(Fallback::ClientWins),
        Just(Fallback::ServerWins),
        Just(Fallback::LastWriterWinsByServerTime),
        Just(Fallback::LastWriterWinsByClock {
            field: "c".into(),
            tiebreak: Tiebreak::Content
        }),
        Just(Fallback::EditCount {
            field: "b".into(),
            tiebreak: Tiebreak::Content
        }),
    ]
}

/// A field's value for comparison: missing and null alike; doubles by their printed form, so NaN
/// equals NaN and -0.0 differs from 0.0 (the merge compares doubles by their bits).
fn value_of(field: Option<&Field>) -> Option<String> {
    field
        .filter(|f| f.value != FieldValue::Null)
        .map(|f| format!("{:?}/{}", f.value, f.encrypted))
}

fn same(a: Option<&Field>, b: Option<&Field>) -> bool {
    value_of(a) == value_of(b)
}

/// The fields the server holds after `resolution`, or `None` if the change was parked.
fn result_fields(resolution: &Resolution, server: &Record) -> Option<Record> {
    match resolution {
        Resolution::AcceptServer => Some(server.clone()),
        Resolution::Send(record) => {
            assert_eq!(
                record.system, server.system,
                "a Send carries the server's system fields"
            );
            Some(record.clone())
        }
        Resolution::Park { reason } => {
            assert!(
                matches!(reason, ParkReason::UnorderableField { .. }),
                "only an unorderable clock or count may park a merge: {reason:?}"
            );
            None
        }
        other => panic!("a merge of two edits answered {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_deterministic(
        base in base_record(),
        local_edits in edits(),
        server_edits in edits(),
        fallback in fallback(),
        base_known in any::<bool>(),
    ) {
        let local = apply(&base, &local_edits, "t1", 2_000);
        let server = apply(&base, &server_edits, "t2", 3_000);
        let base = base_known.then_some(&base);
        let merge = ThreeWayMerge::new(fallback);
        let first = settle(&merge, &save(local.clone()), base, Some(&server)).unwrap();
        let again = settle(&merge.clone(), &save(local), base.cloned().as_ref(), Some(&server.clone())).unwrap();
        prop_assert_eq!(format!("{first:?}"), format!("{again:?}"));
    }

    #[test]
    fn merge_keeps_every_field_changed_on_only_one_side(
        base in base_record(),
        local_edits in edits(),
        server_edits in edits(),
        fallback in fallback(),
    ) {
        let local = apply(&base, &local_edits, "t1", 2_000);
        let server = apply(&base, &server_edits, "t2", 3_000);
        let resolution = settle(&ThreeWayMerge::new(fallback), &save(local.clone()), Some(&base), Some(&server)).unwrap();
        let Some(result) = result_fields(&resolution, &server) else { return Ok(()) };
        for name in NAMES {
            let (l, b, s, r) = (
                local.fields.get(name),
                base.fields.get(name),
                server.fields.get(name),
                result.fields.get(name),
            );
            let changed_here = l.is_some() && !same(l, b);
            let changed_there = !same(s, b);
            if changed_here && !changed_there {
                prop_assert!(same(r, l), "{name}: local change lost: {l:?} -> {r:?}");
            }
            if changed_there && !changed_here {
                prop_assert!(same(r, s), "{name}: server change lost: {s:?} -> {r:?}");
            }
            if !changed_here && !changed_there {
                prop_assert!(same(r, b), "{name}: unchanged field moved: {b:?} -> {r:?}");
            }
        }
    }

    #[test]
    fn merge_with_nothing_changed_locally_returns_the_server_copy(
        base in base_record(),
        server_edits in edits(),
        fallback in fallback(),
    ) {
        let local = base.clone();
        let server = apply(&base, &server_edits, "t2", 3_000);
        let resolution = settle(&ThreeWayMerge::new(fallback), &save(local), Some(&base), Some(&server)).unwrap();
        prop_assert_eq!(resolution, Resolution::AcceptServer);
    }

    #[test]
    fn merge_with_nothing_changed_on_the_server_returns_the_local_copy(
        base in base_record(),
        local_edits in edits(),
        fallback in fallback(),
    ) {
        let local = apply(&base, &local_edits, "t1", 2_000);
        let server = stamped(base.clone(), "t2", 3_000);
        let resolution = settle(&ThreeWayMerge::new(fallback), &save(local.clone()), Some(&base), Some(&server)).unwrap();
        let changed_here = NAMES.iter().any(|name| {
            local.fields.get(*name).is_some_and(|l| !same(Some(l), base.fields.get(*name)))
        });
        match resolution {
            Resolution::AcceptServer => prop_assert!(!changed_here, "a local change was dropped"),
            Resolution::Send(record) => {
                prop_assert!(changed_here, "sent although nothing changed");
                prop_assert_eq!(&record.system, &server.system);
                for name in NAMES {
                    // The local copy's value where it names the field; otherwise the untouched base.
                    let expected = local.fields.get(name).or(base.fields.get(name));
                    prop_assert!(same(record.fields.get(name), expected), "{}", name);
                }
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn clock_content_tiebreak_picks_the_same_copy_whichever_side_is_local(
        base in base_record(),
        a_edits in edits(),
        b_edits in edits(),
    ) {
        let lww = LastWriterWinsByClock::new("clock");
        let a = apply(&base, &a_edits, "t1", 2_000).with("clock", 9i64);
        let b = apply(&base, &b_edits, "t2", 3_000).with("clock", 9i64);
        let ab = lww.winner(&a, &b).unwrap();
        let ba = lww.winner(&b, &a).unwrap();
        let winner = |side, local: &Record, server: &Record| match side {
            Side::Local => format!("{:?}", local.fields),
            Side::Server => format!("{:?}", server.fields),
        };
        prop_assert_eq!(winner(ab, &a, &b), winner(ba, &b, &a));
    }
}
