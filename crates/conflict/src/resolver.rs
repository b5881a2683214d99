//! The [`ConflictResolver`] trait and the choices every strategy shares: which side won, what
//! happens when one side deleted the record, and how ties are broken.

use crate::compare;
use crate::resolution::{ParkReason, Resolution, rebase_onto};
use skysync_model::{PendingChange, Record};
use std::cmp::Ordering;
use std::sync::Arc;

/// Decides how one conflict is settled.
///
/// `local` is the pending change that clashed (the latest local copy to save, or a deletion);
/// `base` is the last server copy both sides started from, `None` when unknown; `server` is the
/// server's current copy, `None` when the server deleted the record. Every combination is a
/// conflict the session can meet:
///
/// | `local` | `server` | when |
/// |---|---|---|
/// | `Save` | `Some` | `CONFLICT` on an update, `EXISTS` on a create |
/// | `Save` | `None` | `NOT_FOUND` on an update: the server deleted the record |
/// | `Delete` | `Some` | a fetched server edit of a record deleted here, or `CONFLICT` on the delete |
/// | `Delete` | `None` | both deleted: nothing left to do |
///
/// A resolver is a plain value: call it directly, through [`crate::settle`] (which checks the answer
/// and rebases re-sent records onto the server copy), or from the [`crate::ConflictActor`]. It must
/// not fail: a change it cannot decide is [`Resolution::Park`]ed with a reason. It should be quick
/// and must not block; it runs on the conflict actor's task.
pub trait ConflictResolver: Send + Sync {
    /// Decides how the conflict between `local` and `server`, both started from `base`, is settled.
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution;
}

impl<R: ConflictResolver + ?Sized> ConflictResolver for &R {
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        (**self).resolve(local, base, server)
    }
}

impl<R: ConflictResolver + ?Sized> ConflictResolver for Box<R> {
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        (**self).resolve(local, base, server)
    }
}

impl<R: ConflictResolver + ?Sized> ConflictResolver for Arc<R> {
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        (**self).resolve(local, base, server)
    }
}

/// Which copy of a record (or of one field) won.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The local copy: this device's edit.
    Local,
    /// The server's copy: another device's edit.
    Server,
}

/// What a strategy does when one side deleted the record and the other edited it.
///
/// Every variant that brings a deleted record back does it through a resolution named for it
/// ([`Resolution::Recreate`], [`Resolution::Restore`]), so a resurrection is never silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeletePolicy {
    /// The deletion wins, whichever side made it: a local delete is sent with the server's change tag
    /// ([`Resolution::SendDelete`]); a server deletion is accepted and the local edit dropped
    /// ([`Resolution::AcceptServer`]). Nothing comes back. The default for every strategy that has no
    /// side of its own to favour: a deletion is a deliberate act on the whole record, while an edit
    /// usually touches a field, and a record that reappears after the user deleted it surprises more
    /// than an edit lost on a record somebody chose to delete.
    #[default]
    DeletionWins,
    /// The edit wins, whichever side made it: a record the server deleted is created again from the
    /// local copy ([`Resolution::Recreate`]); a record deleted here is restored from the server's
    /// copy ([`Resolution::Restore`]). No edit is lost; deleted records come back.
    EditWins,
    /// The server's side wins: its edit restores a record deleted here ([`Resolution::Restore`]); its
    /// deletion is accepted ([`Resolution::AcceptServer`]).
    ServerSide,
    /// This device's side wins: its delete is sent ([`Resolution::SendDelete`]); its edit re-creates
    /// a record the server deleted ([`Resolution::Recreate`]).
    LocalSide,
    /// Neither: the change is parked ([`ParkReason::DeletedOnServer`] or
    /// [`ParkReason::DeletedLocally`]) for the app to decide.
    Park,
}

impl DeletePolicy {
    /// The resolution when this device edited `local` and the server deleted the record.
    pub fn on_server_delete(self, local: &Record) -> Resolution {
        match self {
            DeletePolicy::DeletionWins | DeletePolicy::ServerSide => Resolution::AcceptServer,
            DeletePolicy::EditWins | DeletePolicy::LocalSide => {
                let mut record = local.clone();
                record.system = None;
                Resolution::Recreate(record)
            }
            DeletePolicy::Park => Resolution::Park {
                reason: ParkReason::DeletedOnServer,
            },
        }
    }

    /// The resolution when this device deleted the record and the server's copy is `server`.
    pub fn on_local_delete(self, server: &Record) -> Resolution {
        match self {
            DeletePolicy::DeletionWins | DeletePolicy::LocalSide => delete_over(server),
            DeletePolicy::EditWins | DeletePolicy::ServerSide => Resolution::Restore,
            DeletePolicy::Park => Resolution::Park {
                reason: ParkReason::DeletedLocally,
            },
        }
    }
}

/// How a strategy that orders copies by a field (a clock, an edit count) breaks a tie.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Tiebreak {
    /// The copy whose fields come later in a fixed order of their contents wins (the local copy if
    /// they are identical). The answer depends only on the two copies, not on which device resolves,
    /// so two devices that settle the same tie pick the same copy. The default.
    #[default]
    Content,
    /// The local copy wins ties.
    Local,
    /// The server's copy wins ties.
    Server,
    /// The copy whose named field (for example a device id) is greater wins; if that ties too,
    /// [`Tiebreak::Content`] decides.
    Field(String),
}

impl Tiebreak {
    /// Which copy wins a tie between `local` and `server`.
    pub fn pick(&self, local: &Record, server: &Record) -> Result<Side, ParkReason> {
        match self {
            Tiebreak::Content => Ok(compare::content_winner(local, server)),
            Tiebreak::Local => Ok(Side::Local),
            Tiebreak::Server => Ok(Side::Server),
            Tiebreak::Field(field) => Tiebreak::Content.winner(
                compare::order_by_clock(field, local, server)?,
                local,
                server,
            ),
        }
    }

    /// The copy `order` (local against server) ranks higher, or this tiebreak's pick when it
    /// ranks them equal: how every strategy that orders copies by a field picks its winner.
    pub(crate) fn winner(
        &self,
        order: Ordering,
        local: &Record,
        server: &Record,
    ) -> Result<Side, ParkReason> {
        match order {
            Ordering::Greater => Ok(Side::Local),
            Ordering::Less => Ok(Side::Server),
            Ordering::Equal => self.pick(local, server),
        }
    }
}

/// Splits a conflict by its kind: the deletion cases go to `on_delete`, both-deleted is accepted,
/// and an edit against an edit goes to `both_edited`.
pub(crate) fn by_case(
    local: &PendingChange,
    server: Option<&Record>,
    on_delete: DeletePolicy,
    both_edited: impl FnOnce(&Record, &Record) -> Resolution,
) -> Resolution {
    match (local, server) {
        (PendingChange::Save(local), Some(server)) => both_edited(local, server),
        (PendingChange::Save(local), None) => on_delete.on_server_delete(local),
        (PendingChange::Delete { .. }, Some(server)) => on_delete.on_local_delete(server),
        (PendingChange::Delete { .. }, None) => Resolution::AcceptServer,
    }
}

/// `Send` of `record` rebased onto `server`, or `AcceptServer` when sending it would change nothing
/// on the server, or `Park` when the server copy has no change tag to send over.
pub(crate) fn send_over(record: Record, server: &Record) -> Resolution {
    if server.system.is_none() {
        return Resolution::Park {
            reason: ParkReason::ServerCopyWithoutChangeTag,
        };
    }
    if compare::same_content(&record, server) {
        return Resolution::AcceptServer;
    }
    Resolution::Send(rebase_onto(record, server))
}

/// `SendDelete` with the server copy's change tag, or `Park` when it has none.
pub(crate) fn delete_over(server: &Record) -> Resolution {
    match server.change_tag() {
        Some(tag) => Resolution::SendDelete {
            change_tag: tag.clone(),
        },
        None => Resolution::Park {
            reason: ParkReason::ServerCopyWithoutChangeTag,
        },
    }
}

/// The whole-record outcome once a side has won an edit-against-edit conflict: the local copy laid
/// over the server's (fields the local copy does not name are the server's), or the server's copy.
pub(crate) fn side_wins(side: Side, local: &Record, server: &Record) -> Resolution {
    match side {
        Side::Local => send_over(compare::overlay(local, server), server),
        Side::Server => Resolution::AcceptServer,
    }
}
