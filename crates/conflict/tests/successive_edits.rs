//! One user's two quick edits on one device. Edit 1 is sent with change tag t0; before its answer
//! arrives, edit 2 is queued, also with t0. Edit 1 is saved (the server moves to t1), so edit 2
//! meets `CONFLICT` with the server's copy being edit 1. The user's latest intent is edit 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{note, save, stamped};
use skysync_conflict::{
    ConflictResolver, EditCount, LastWriterWinsByClock, LastWriterWinsByServerTime, Resolution,
    ServerWins, ThreeWayMerge, settle,
};
use skysync_model::{ChangeTag, FieldValue, Record};

/// The server copy both edits started from: tag t0, modified at 1000.
fn original() -> Record {
    stamped(
        note()
            .with("title", "Shopping")
            .with("body", "")
            .with("editedAt", 100i64)
            .with("edits", 1i64),
        "t0",
        1_000,
    )
}

/// Edit 1 as the server saved it: tag t1, modified at 2000.
fn edit_one_saved() -> Record {
    stamped(
        note()
            .with("title", "Shop")
            .with("body", "")
            .with("editedAt", 110i64)
            .with("edits", 2i64),
        "t1",
        2_000,
    )
}

/// Edit 2, queued with edit 1's (now stale) tag t0: the user kept typing the title and added a body.
fn edit_two() -> Record {
    stamped(
        note()
            .with("title", "Shopping list")
            .with("body", "milk, eggs")
            .with("editedAt", 120i64)
            .with("edits", 3i64),
        "t0",
        1_000,
    )
}

/// What the server holds once the resolution is carried out.
fn server_after(resolution: Resolution, server: &Record) -> Record {
    match resolution {
        Resolution::Send(record) => {
            assert_eq!(
                record.change_tag(),
                Some(&ChangeTag("t1".into())),
                "re-sent with the server's tag"
            );
            let mut after = server.clone();
            after.fields.extend(record.fields);
            after
        }
        Resolution::AcceptServer => server.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn outcome(resolver: &impl ConflictResolver, base: &Record) -> Record {
    let server = edit_one_saved();
    let resolution = settle(resolver, &save(edit_two()), Some(base), Some(&server)).unwrap();
    server_after(resolution, &server)
}

fn keeps_edit_two(after: &Record) -> bool {
    after.get("title") == Some(&FieldValue::String("Shopping list".into()))
        && after.get("body") == Some(&FieldValue::String("milk, eggs".into()))
}

#[test]
fn default_strategy_keeps_the_second_edit_against_the_original_base() {
    // The merge base is still the copy both edits started from.
    let after = outcome(&ThreeWayMerge::default(), &original());
    assert!(keeps_edit_two(&after), "{after:?}");
}

#[test]
fn default_strategy_keeps_the_second_edit_once_edit_one_is_the_base() {
    // The store recorded edit 1's confirmation as the new merge base before the conflict.
    let after = outcome(&ThreeWayMerge::default(), &edit_one_saved());
    assert!(keeps_edit_two(&after), "{after:?}");
}

#[test]
fn last_writer_by_server_time_loses_the_second_edit() {
    // Edit 2 carries the stamp of the copy it started from (1000); edit 1 was stamped 2000 on
    // save. By server time edit 1 is "later", so the user's latest edit is thrown away.
    for base in [original(), edit_one_saved()] {
        let after = outcome(&LastWriterWinsByServerTime::default(), &base);
        assert!(!keeps_edit_two(&after));
        assert_eq!(after.get("title"), Some(&FieldValue::String("Shop".into())));
    }
}

#[test]
fn server_wins_loses_the_second_edit_too() {
    let after = outcome(&ServerWins::default(), &original());
    assert_eq!(after.get("title"), Some(&FieldValue::String("Shop".into())));
}

#[test]
fn local_clock_and_edit_count_keep_the_second_edit() {
    let by_clock = outcome(&LastWriterWinsByClock::new("editedAt"), &original());
    assert!(keeps_edit_two(&by_clock), "{by_clock:?}");
    let by_count = outcome(&EditCount::new("edits"), &original());
    assert!(keeps_edit_two(&by_count), "{by_count:?}");
}
