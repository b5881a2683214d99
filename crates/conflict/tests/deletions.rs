//! Deletions against edits: every strategy's documented default, every deletion policy, and the
//! rule that a deleted record never comes back except through a resolution named for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{delete, note, save, stamped};
use skysync_conflict::{
    ClientWins, ConflictResolver, DeletePolicy, EditCount, LastWriterWinsByClock,
    LastWriterWinsByServerTime, ParkReason, Resolution, ServerWins, ThreeWayMerge, settle,
};
use skysync_model::{ChangeTag, Record};

fn base() -> Record {
    stamped(
        note().with("title", "Draft").with("edits", 1i64),
        "t1",
        2_000,
    )
}

/// This device's edit of the record.
fn local_edit() -> Record {
    stamped(
        note()
            .with("title", "Edited here")
            .with("edits", 2i64)
            .with("editedAt", 50i64),
        "t1",
        2_000,
    )
}

/// Another device's edit, now on the server.
fn server_edit() -> Record {
    stamped(
        note()
            .with("title", "Edited there")
            .with("edits", 2i64)
            .with("editedAt", 60i64),
        "t2",
        3_000,
    )
}

/// This device edited; the server deleted the record (`NOT_FOUND` on the update).
fn deleted_on_server(r: &impl ConflictResolver) -> Resolution {
    settle(r, &save(local_edit()), Some(&base()), None).unwrap()
}

/// This device deleted; the server's copy was edited.
fn deleted_locally(r: &impl ConflictResolver) -> Resolution {
    settle(r, &delete("t1"), Some(&base()), Some(&server_edit())).unwrap()
}

fn both_deleted(r: &impl ConflictResolver) -> Resolution {
    settle(r, &delete("t1"), Some(&base()), None).unwrap()
}

fn send_delete_t2() -> Resolution {
    Resolution::SendDelete {
        change_tag: ChangeTag("t2".into()),
    }
}

fn recreated_local_edit() -> Resolution {
    let mut record = local_edit();
    record.system = None;
    Resolution::Recreate(record)
}

#[test]
fn server_wins_accepts_a_server_delete_and_restores_a_record_deleted_here_by_name() {
    let r = ServerWins::default();
    assert_eq!(deleted_on_server(&r), Resolution::AcceptServer);
    let restored = deleted_locally(&r);
    assert_eq!(restored, Resolution::Restore);
    assert!(restored.resurrects());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn client_wins_recreates_a_record_the_server_deleted_and_sends_a_local_delete() {
    let r = ClientWins::default();
    let recreated = deleted_on_server(&r);
    assert_eq!(recreated, recreated_local_edit());
    assert!(recreated.resurrects());
    assert_eq!(deleted_locally(&r), send_delete_t2());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn server_time_lets_the_deletion_win_on_either_side() {
    let r = LastWriterWinsByServerTime::default();
    assert_eq!(deleted_on_server(&r), Resolution::AcceptServer);
    assert_eq!(deleted_locally(&r), send_delete_t2());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn clock_lets_the_deletion_win_on_either_side() {
    // The server's edit has the later clock, yet a deletion carries no clock and still wins.
    let r = LastWriterWinsByClock::new("editedAt");
    assert_eq!(deleted_on_server(&r), Resolution::AcceptServer);
    assert_eq!(deleted_locally(&r), send_delete_t2());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn edit_count_lets_the_deletion_win_on_either_side() {
    let r = EditCount::new("edits");
    assert_eq!(deleted_on_server(&r), Resolution::AcceptServer);
    assert_eq!(deleted_locally(&r), send_delete_t2());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn default_merge_lets_the_deletion_win_on_either_side() {
    let r = ThreeWayMerge::default();
    assert_eq!(deleted_on_server(&r), Resolution::AcceptServer);
    assert_eq!(deleted_locally(&r), send_delete_t2());
    assert_eq!(both_deleted(&r), Resolution::AcceptServer);
}

#[test]
fn each_delete_policy_does_what_it_says_on_both_sides() {
    let with = |on_delete| ThreeWayMerge {
        on_delete,
        ..ThreeWayMerge::default()
    };
    let cases = [
        (
            DeletePolicy::DeletionWins,
            Resolution::AcceptServer,
            send_delete_t2(),
        ),
        (
            DeletePolicy::EditWins,
            recreated_local_edit(),
            Resolution::Restore,
        ),
        (
            DeletePolicy::ServerSide,
            Resolution::AcceptServer,
            Resolution::Restore,
        ),
        (
            DeletePolicy::LocalSide,
            recreated_local_edit(),
            send_delete_t2(),
        ),
        (
            DeletePolicy::Park,
            Resolution::Park {
                reason: ParkReason::DeletedOnServer,
            },
            Resolution::Park {
                reason: ParkReason::DeletedLocally,
            },
        ),
    ];
    for (policy, on_server_delete, on_local_delete) in cases {
        let r = with(policy);
        assert_eq!(deleted_on_server(&r), on_server_delete, "{policy:?}");
        assert_eq!(deleted_locally(&r), on_local_delete, "{policy:?}");
        assert_eq!(both_deleted(&r), Resolution::AcceptServer, "{policy:?}");
    }
}

#[test]
fn no_strategy_brings_a_deleted_record_back_except_through_recreate_or_restore() {
    let policies = [
        DeletePolicy::DeletionWins,
        DeletePolicy::EditWins,
        DeletePolicy::ServerSide,
        DeletePolicy::LocalSide,
        DeletePolicy::Park,
    ];
    for on_delete in policies {
        let resolvers: Vec<Box<dyn ConflictResolver>> = vec![
            Box::new(ServerWins { on_delete }),
            Box::new(ClientWins { on_delete }),
            Box::new(LastWriterWinsByServerTime { on_delete }),
            Box::new(LastWriterWinsByClock {
                on_delete,
                ..LastWriterWinsByClock::new("editedAt")
            }),
            Box::new(EditCount {
                on_delete,
                ..EditCount::new("edits")
            }),
            Box::new(ThreeWayMerge {
                on_delete,
                ..ThreeWayMerge::default()
            }),
        ];
        for r in &resolvers {
            // The server deleted it: the record exists again only after an explicit Recreate.
            match deleted_on_server(r) {
                Resolution::AcceptServer | Resolution::Park { .. } => {}
                Resolution::Recreate(record) => assert_eq!(record.system, None),
                other => panic!("{on_delete:?}: {other:?} after a server delete"),
            }
            // Deleted here: the record exists again only after an explicit Restore.
            match deleted_locally(r) {
                Resolution::SendDelete { .. } | Resolution::Restore | Resolution::Park { .. } => {}
                other => panic!("{on_delete:?}: {other:?} after a local delete"),
            }
        }
    }
}
