//! Each strategy on an edit against an edit, `settle`'s checks, and the rebase helper.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{id, note, save, stamped, system};
use skysync_conflict::{
    ClientWins, ConflictCase, ConflictError, ConflictResolver, Custom, EditCount, Fallback,
    FieldPick, LastWriterWinsByClock, LastWriterWinsByServerTime, ParkReason, Resolution,
    ServerWins, ThreeWayMerge, Tiebreak, rebase_onto, settle,
};
use skysync_model::{ChangeTag, Field, FieldValue, PendingChange, Record, RecordId, ZoneId};

/// The base both sides started from: tag t1, modified at 2000.
fn base() -> Record {
    stamped(
        note().with("title", "Draft").with("body", "Hello"),
        "t1",
        2_000,
    )
}

/// Another device changed the body; the server now has tag t2, modified at 3000.
fn server() -> Record {
    stamped(
        note().with("title", "Draft").with("body", "Hello there"),
        "t2",
        3_000,
    )
}

/// This device changed the title, starting from the base (so it carries t1).
fn local() -> Record {
    stamped(
        note().with("title", "Groceries").with("body", "Hello"),
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

fn resolve(r: &impl ConflictResolver, local: Record, server: Record) -> Resolution {
    settle(r, &save(local), Some(&base()), Some(&server)).unwrap()
}

fn text(record: &Record, name: &str) -> Option<String> {
    match record.get(name) {
        Some(FieldValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------- ServerWins / ClientWins

#[test]
fn server_wins_accepts_the_server_copy_and_drops_the_local_edit() {
    assert_eq!(
        resolve(&ServerWins::default(), local(), server()),
        Resolution::AcceptServer
    );
}

#[test]
fn client_wins_resends_the_local_copy_with_the_server_change_tag_and_system_fields() {
    let server = server().with("pinned", true);
    let record = sent(resolve(&ClientWins::default(), local(), server.clone()));
    assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
    // What it gets wrong: the other device's body edit is overwritten by the full local copy.
    assert_eq!(text(&record, "body").as_deref(), Some("Hello"));
    // A field the local copy does not name keeps the server's value.
    assert_eq!(record.get("pinned"), Some(&FieldValue::Int64(1)));
    assert_eq!(record.system, server.system);
    assert_eq!(record.change_tag(), Some(&ChangeTag("t2".into())));
}

#[test]
fn client_wins_sends_nothing_when_the_local_copy_already_matches_the_server() {
    let same = stamped(server(), "t1", 2_000);
    assert_eq!(
        resolve(&ClientWins::default(), same, server()),
        Resolution::AcceptServer
    );
}

// ---------------------------------------------------------------- LastWriterWinsByServerTime

#[test]
fn server_time_gives_the_record_to_a_later_server_stamp() {
    assert_eq!(
        resolve(&LastWriterWinsByServerTime::default(), local(), server()),
        Resolution::AcceptServer
    );
}

#[test]
fn server_time_keeps_the_local_copy_when_its_stamp_is_not_older() {
    let local = stamped(local(), "t1", 3_000);
    let record = sent(resolve(
        &LastWriterWinsByServerTime::default(),
        local,
        server(),
    ));
    assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
    assert_eq!(record.change_tag(), Some(&ChangeTag("t2".into())));
}

#[test]
fn server_time_treats_a_never_stamped_local_copy_as_older() {
    let created_here = note().with("title", "Mine");
    let answer = settle(
        &LastWriterWinsByServerTime::default(),
        &save(created_here),
        None,
        Some(&server()),
    )
    .unwrap();
    assert_eq!(answer, Resolution::AcceptServer);
}

// ---------------------------------------------------------------- LastWriterWinsByClock

#[test]
fn clock_gives_the_record_to_the_later_clock_either_way() {
    let lww = LastWriterWinsByClock::new("editedAt");
    let later_here = local().with("editedAt", FieldValue::Timestamp(50));
    let earlier_there = server().with("editedAt", FieldValue::Timestamp(40));
    let record = sent(resolve(&lww, later_here.clone(), earlier_there.clone()));
    assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
    assert_eq!(record.get("editedAt"), Some(&FieldValue::Timestamp(50)));

    let earlier_here = local().with("editedAt", FieldValue::Timestamp(30));
    assert_eq!(
        resolve(&lww, earlier_here, earlier_there),
        Resolution::AcceptServer
    );
}

#[test]
fn clock_ranks_a_copy_without_the_field_below_one_with_it() {
    let lww = LastWriterWinsByClock::new("editedAt");
    let here = local().with("editedAt", 1i64);
    assert!(matches!(resolve(&lww, here, server()), Resolution::Send(_)));
    let there = server().with("editedAt", 1i64);
    assert_eq!(resolve(&lww, local(), there), Resolution::AcceptServer);
}

#[test]
fn clock_compares_iso_strings_as_times() {
    let lww = LastWriterWinsByClock::new("editedAt");
    let here = local().with("editedAt", "2026-03-01T10:00:00Z");
    let there = server().with("editedAt", "2026-02-28T23:59:59Z");
    assert!(matches!(resolve(&lww, here, there), Resolution::Send(_)));
}

#[test]
fn clock_content_tiebreak_picks_the_same_copy_whichever_device_resolves() {
    let lww = LastWriterWinsByClock::new("editedAt");
    let a = stamped(
        note().with("title", "A").with("editedAt", 7i64),
        "t1",
        2_000,
    );
    let b = stamped(
        note().with("title", "B").with("editedAt", 7i64),
        "t2",
        3_000,
    );
    let winner_title =
        |local: Record, server: Record| match lww.resolve(&save(local), None, Some(&server)) {
            Resolution::Send(r) => text(&r, "title"),
            Resolution::AcceptServer => text(&server, "title"),
            other => panic!("unexpected {other:?}"),
        };
    let on_device_a = winner_title(a.clone(), b.clone());
    let on_device_b = winner_title(b, a);
    assert_eq!(on_device_a, on_device_b);
}

#[test]
fn clock_tiebreaks_local_server_and_field_decide_equal_clocks() {
    let here = local().with("editedAt", 7i64).with("device", "phone");
    let there = server().with("editedAt", 7i64).with("device", "laptop");
    let mut lww = LastWriterWinsByClock::new("editedAt");

    lww.tiebreak = Tiebreak::Local;
    assert!(matches!(
        resolve(&lww, here.clone(), there.clone()),
        Resolution::Send(_)
    ));
    lww.tiebreak = Tiebreak::Server;
    assert_eq!(
        resolve(&lww, here.clone(), there.clone()),
        Resolution::AcceptServer
    );
    // "phone" > "laptop": the local copy wins by the device field, whatever the contents.
    lww.tiebreak = Tiebreak::Field("device".into());
    assert!(matches!(
        resolve(&lww, here.clone(), there.clone()),
        Resolution::Send(_)
    ));
    assert_eq!(
        resolve(
            &lww,
            here.with("device", "alpha"),
            there.with("device", "beta")
        ),
        Resolution::AcceptServer
    );
}

#[test]
fn clock_parks_values_it_cannot_compare() {
    let lww = LastWriterWinsByClock::new("editedAt");
    let answer = resolve(
        &lww,
        local().with("editedAt", "yesterday"),
        server().with("editedAt", 5i64),
    );
    assert!(matches!(
        answer,
        Resolution::Park {
            reason: ParkReason::UnorderableField { ref field, .. }
        } if field == "editedAt"
    ));
    let answer = resolve(
        &lww,
        local().with("editedAt", vec![1u8, 2]),
        server().with("editedAt", 5i64),
    );
    assert!(matches!(answer, Resolution::Park { .. }));
}

// ---------------------------------------------------------------- EditCount

#[test]
fn edit_count_gives_the_record_to_the_higher_count_either_way() {
    let counted = EditCount::new("edits");
    let record = sent(resolve(
        &counted,
        local().with("edits", 5i64),
        server().with("edits", 4i64),
    ));
    assert_eq!(record.get("edits"), Some(&FieldValue::Int64(5)));
    assert_eq!(
        resolve(
            &counted,
            local().with("edits", 3i64),
            server().with("edits", 4i64)
        ),
        Resolution::AcceptServer
    );
}

#[test]
fn edit_count_reads_a_missing_count_as_zero() {
    let counted = EditCount::new("edits");
    assert!(matches!(
        resolve(&counted, local().with("edits", 1i64), server()),
        Resolution::Send(_)
    ));
    let mut negative_there = server();
    negative_there.set("edits", -1i64);
    assert!(matches!(
        resolve(&counted, local(), negative_there),
        Resolution::Send(_)
    ));
}

#[test]
fn edit_count_ties_go_to_the_tiebreak_and_bad_counts_park() {
    let mut counted = EditCount::new("edits");
    counted.tiebreak = Tiebreak::Server;
    assert_eq!(
        resolve(
            &counted,
            local().with("edits", 2i64),
            server().with("edits", 2i64)
        ),
        Resolution::AcceptServer
    );
    counted.tiebreak = Tiebreak::Local;
    assert!(matches!(
        resolve(
            &counted,
            local().with("edits", 2i64),
            server().with("edits", 2i64)
        ),
        Resolution::Send(_)
    ));
    assert!(matches!(
        resolve(
            &counted,
            local().with("edits", 2.5),
            server().with("edits", 2i64)
        ),
        Resolution::Park {
            reason: ParkReason::UnorderableField { .. }
        }
    ));
}

// ---------------------------------------------------------------- ThreeWayMerge

#[test]
fn merge_keeps_both_sides_edits_to_different_fields() {
    let record = sent(resolve(&ThreeWayMerge::default(), local(), server()));
    assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
    assert_eq!(text(&record, "body").as_deref(), Some("Hello there"));
    assert_eq!(record.system, server().system);
}

#[test]
fn merge_fallback_decides_a_field_changed_on_both_sides() {
    let here = local().with("body", "Bye");
    let client = sent(resolve(&ThreeWayMerge::default(), here.clone(), server()));
    assert_eq!(text(&client, "body").as_deref(), Some("Bye"));
    assert_eq!(text(&client, "title").as_deref(), Some("Groceries"));

    let server_fallback = ThreeWayMerge::new(Fallback::ServerWins);
    let merged = sent(resolve(&server_fallback, here, server()));
    assert_eq!(text(&merged, "body").as_deref(), Some("Hello there"));
    // The title was changed only here, so it survives even with a server-wins fallback.
    assert_eq!(text(&merged, "title").as_deref(), Some("Groceries"));
}

#[test]
fn merge_that_equals_the_server_copy_accepts_it() {
    let here = stamped(
        note().with("title", "Draft").with("body", "Bye"),
        "t1",
        2_000,
    );
    let merge = ThreeWayMerge::new(Fallback::ServerWins);
    assert_eq!(resolve(&merge, here, server()), Resolution::AcceptServer);
}

#[test]
fn merge_does_not_consult_the_fallback_when_both_sides_made_the_same_change() {
    let never = ThreeWayMerge::new(Fallback::custom(|clash| {
        FieldPick::Park(ParkReason::Custom(format!("asked about {}", clash.name)))
    }));
    let here = local().with("body", "Hello there");
    let record = sent(resolve(&never, here, server()));
    assert_eq!(text(&record, "body").as_deref(), Some("Hello there"));
    assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
}

#[test]
fn merge_takes_the_server_value_of_a_field_the_local_copy_does_not_name() {
    // A partial local copy (only the title) leaves the body to the server, as an update would.
    let partial = stamped(note().with("title", "Groceries"), "t1", 2_000);
    let record = sent(resolve(&ThreeWayMerge::default(), partial, server()));
    assert_eq!(text(&record, "body").as_deref(), Some("Hello there"));
}

#[test]
fn merge_with_clock_fallback_gives_clashing_fields_to_the_later_copy_only() {
    let merge = ThreeWayMerge::new(Fallback::LastWriterWinsByClock {
        field: "editedAt".into(),
        tiebreak: Tiebreak::Content,
    });
    let base = base().with("editedAt", 10i64).with("tag", "x");
    let here = stamped(base.clone(), "t1", 2_000)
        .with("title", "Mine")
        .with("body", "Mine too")
        .with("editedAt", 20i64);
    let there = stamped(base.clone(), "t2", 3_000)
        .with("body", "Theirs")
        .with("tag", "y")
        .with("editedAt", 30i64);
    let answer = settle(&merge, &save(here), Some(&base), Some(&there)).unwrap();
    let record = sent(answer);
    assert_eq!(
        text(&record, "title").as_deref(),
        Some("Mine"),
        "local-only change kept"
    );
    assert_eq!(
        text(&record, "tag").as_deref(),
        Some("y"),
        "server-only change kept"
    );
    assert_eq!(
        text(&record, "body").as_deref(),
        Some("Theirs"),
        "later clock wins the clash"
    );
    assert_eq!(record.get("editedAt"), Some(&FieldValue::Int64(30)));
}

#[test]
fn merge_with_edit_count_and_server_time_fallbacks_use_their_order() {
    let base = base().with("edits", 1i64);
    let here = stamped(base.clone(), "t1", 2_000)
        .with("body", "Mine")
        .with("edits", 3i64);
    let there = stamped(base.clone(), "t2", 3_000)
        .with("body", "Theirs")
        .with("edits", 2i64);
    let by_count = ThreeWayMerge::new(Fallback::EditCount {
        field: "edits".into(),
        tiebreak: Tiebreak::Content,
    });
    let record = sent(settle(&by_count, &save(here.clone()), Some(&base), Some(&there)).unwrap());
    assert_eq!(text(&record, "body").as_deref(), Some("Mine"));

    let by_time = ThreeWayMerge::new(Fallback::LastWriterWinsByServerTime);
    let answer = settle(&by_time, &save(here), Some(&base), Some(&there)).unwrap();
    assert_eq!(
        answer,
        Resolution::AcceptServer,
        "the server's stamp is later"
    );
}

#[test]
fn merge_custom_fallback_can_union_two_lists() {
    let union = ThreeWayMerge::new(Fallback::custom(|clash| {
        let list = |f: Option<&Field>| match f.map(|f| &f.value) {
            Some(FieldValue::StringList(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut all = list(clash.local);
        for item in list(clash.server) {
            if !all.contains(&item) {
                all.push(item);
            }
        }
        FieldPick::Value(Field::plain(FieldValue::StringList(all)))
    }));
    let tags =
        |items: &[&str]| FieldValue::StringList(items.iter().map(|s| s.to_string()).collect());
    let base = base().with("tags", tags(&["a"]));
    let here = stamped(base.clone(), "t1", 2_000).with("tags", tags(&["a", "b"]));
    let there = stamped(base.clone(), "t2", 3_000).with("tags", tags(&["a", "c"]));
    let record = sent(settle(&union, &save(here), Some(&base), Some(&there)).unwrap());
    assert_eq!(record.get("tags"), Some(&tags(&["a", "b", "c"])));
}

#[test]
fn merge_custom_fallback_can_park_the_change() {
    let parks = ThreeWayMerge::new(Fallback::custom(|_| {
        FieldPick::Park(ParkReason::Custom("needs a human".into()))
    }));
    assert_eq!(
        resolve(&parks, local().with("body", "Bye"), server()),
        Resolution::Park {
            reason: ParkReason::Custom("needs a human".into())
        }
    );
}

#[test]
fn merge_without_a_base_sends_clashing_fields_to_the_fallback_and_keeps_the_rest() {
    // EXISTS: a record created here collided with one created elsewhere; no common base.
    let created_here = note().with("title", "Mine");
    let there = server();
    let record = sent(
        settle(
            &ThreeWayMerge::default(),
            &save(created_here.clone()),
            None,
            Some(&there),
        )
        .unwrap(),
    );
    assert_eq!(text(&record, "title").as_deref(), Some("Mine"));
    assert_eq!(text(&record, "body").as_deref(), Some("Hello there"));
    assert_eq!(record.change_tag(), Some(&ChangeTag("t2".into())));

    let server_fallback = ThreeWayMerge::new(Fallback::ServerWins);
    assert_eq!(
        settle(&server_fallback, &save(created_here), None, Some(&there)).unwrap(),
        Resolution::AcceptServer
    );
}

// ---------------------------------------------------------------- Custom and settle

#[test]
fn custom_resolver_sees_all_three_copies_and_its_send_is_rebased_onto_the_server() {
    let custom = Custom::new(
        |local: &PendingChange, base: Option<&Record>, server: Option<&Record>| {
            let (PendingChange::Save(local), Some(base), Some(server)) = (local, base, server)
            else {
                return Resolution::Park {
                    reason: ParkReason::Custom("unexpected inputs".into()),
                };
            };
            // Keep both titles, and deliberately leave the local (stale) system fields on the record.
            let mut merged = local.clone();
            let both = format!(
                "{} / {} (was {})",
                text(local, "title").unwrap_or_default(),
                text(server, "title").unwrap_or_default(),
                text(base, "title").unwrap_or_default()
            );
            merged.set("title", both);
            Resolution::Send(merged)
        },
    );
    let record = sent(resolve(&custom, local(), server()));
    assert_eq!(
        text(&record, "title").as_deref(),
        Some("Groceries / Draft (was Draft)")
    );
    assert_eq!(record.change_tag(), Some(&ChangeTag("t2".into())));
    assert_eq!(record.system, server().system);
}

#[test]
fn settle_refuses_a_record_of_another_id_and_inputs_of_another_record() {
    let other = RecordId::new(ZoneId::new("Notes"), "note-2");
    let wrong = Custom::new(
        move |_: &PendingChange, _: Option<&Record>, _: Option<&Record>| {
            Resolution::Send(Record::new(other.clone(), "Note"))
        },
    );
    assert!(matches!(
        settle(&wrong, &save(local()), Some(&base()), Some(&server())),
        Err(ConflictError::WrongRecord { .. })
    ));

    let mut foreign_base = base();
    foreign_base.id = RecordId::new(ZoneId::new("Notes"), "note-2");
    assert!(matches!(
        settle(
            &ThreeWayMerge::default(),
            &save(local()),
            Some(&foreign_base),
            Some(&server())
        ),
        Err(ConflictError::RecordMismatch { which: "base", .. })
    ));
}

#[test]
fn settle_refuses_a_server_copy_without_change_tag_and_strategies_park_it() {
    let mut untagged = server();
    untagged.system = None;
    assert_eq!(
        settle(
            &ClientWins::default(),
            &save(local()),
            None,
            Some(&untagged)
        ),
        Err(ConflictError::ServerCopyWithoutChangeTag { id: Box::new(id()) })
    );
    // Called directly, without settle, a strategy parks instead of sending a tagless update.
    assert_eq!(
        ClientWins::default().resolve(&save(local()), None, Some(&untagged)),
        Resolution::Park {
            reason: ParkReason::ServerCopyWithoutChangeTag
        }
    );
}

#[test]
fn settle_refuses_answers_that_do_not_suit_the_conflict() {
    let always_send = Custom::new(
        |local: &PendingChange, _: Option<&Record>, _: Option<&Record>| match local {
            PendingChange::Save(record) => Resolution::Send(record.clone()),
            PendingChange::Delete { .. } => Resolution::AcceptServer,
        },
    );
    // Sending over a record the server deleted would be a silent resurrection: it must be Recreate.
    let err = settle(&always_send, &save(local()), Some(&base()), None).unwrap_err();
    assert_eq!(
        err,
        ConflictError::NotAllowed {
            id: Box::new(id()),
            case: ConflictCase::DeletedOnServer,
            answered: "Send",
            allowed: "AcceptServer, Recreate, Park",
        }
    );
    // Accepting the server's copy of a record deleted here would bring it back: it must be Restore.
    let err = settle(
        &always_send,
        &common::delete("t1"),
        Some(&base()),
        Some(&server()),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        ConflictError::NotAllowed {
            case: ConflictCase::DeletedLocally,
            answered: "AcceptServer",
            ..
        }
    ));
    assert!(err.to_string().contains("SendDelete, Restore, Park"));
}

#[test]
fn settle_gives_send_delete_the_server_tag_and_recreate_no_system_fields() {
    let stale = Custom::new(
        |local: &PendingChange, _: Option<&Record>, server: Option<&Record>| match (local, server) {
            (PendingChange::Delete { .. }, Some(_)) => Resolution::SendDelete {
                change_tag: ChangeTag("stale".into()),
            },
            (PendingChange::Save(record), None) => Resolution::Recreate(record.clone()),
            _ => Resolution::AcceptServer,
        },
    );
    assert_eq!(
        settle(
            &stale,
            &common::delete("t1"),
            Some(&base()),
            Some(&server())
        )
        .unwrap(),
        Resolution::SendDelete {
            change_tag: ChangeTag("t2".into())
        }
    );
    match settle(&stale, &save(local()), Some(&base()), None).unwrap() {
        Resolution::Recreate(record) => {
            assert_eq!(record.system, None, "a re-created record is a create");
            assert_eq!(text(&record, "title").as_deref(), Some("Groceries"));
        }
        other => panic!("expected Recreate, got {other:?}"),
    }
}

// ---------------------------------------------------------------- rebase_onto

#[test]
fn rebase_takes_every_system_field_of_the_server_copy_and_nothing_else() {
    let mut mine = local().with("extra", 1i64);
    mine.system = Some(system("t0", 10));
    let there = server();
    let rebased = rebase_onto(mine.clone(), &there);
    assert_eq!(rebased.system, there.system);
    assert_eq!(rebased.fields, mine.fields);
    assert_eq!(rebased.id, mine.id);
    assert_eq!(rebased.record_type, mine.record_type);
    let wire = rebased.to_wire(false);
    assert_eq!(wire.record_change_tag.as_deref(), Some("t2"));
    assert_eq!(wire.modified.map(|m| m.timestamp), Some(3_000));
}
