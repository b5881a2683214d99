//! The whole-record strategies: one copy wins outright. (Field by field is
//! [`crate::ThreeWayMerge`].)

use crate::compare;
use crate::resolution::{ParkReason, Resolution};
use crate::resolver::{ConflictResolver, DeletePolicy, Side, Tiebreak, by_case, side_wins};
use skysync_model::{PendingChange, Record};
use std::fmt;

/// The server's copy always wins; the local change is dropped.
///
/// **Choose it** for data the server owns (settings pushed by an admin, catalogue data) or for a
/// read-mostly device whose edits are cheap to redo.
///
/// **What it gets wrong:** every local edit that meets a conflict is lost, including the common
/// case of one user's two quick edits (the second is sent with the first's stale change tag, and
/// loses to the first).
///
/// **Deletions** (default [`DeletePolicy::ServerSide`]): a server deletion is accepted; a server edit
/// of a record deleted here restores it ([`Resolution::Restore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerWins {
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl Default for ServerWins {
    fn default() -> Self {
        Self {
            on_delete: DeletePolicy::ServerSide,
        }
    }
}

impl ConflictResolver for ServerWins {
    fn resolve(
        &self,
        local: &PendingChange,
        _base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |_, _| {
            Resolution::AcceptServer
        })
    }
}

/// The local copy always wins: it is re-sent over the server's copy with the server's change tag.
/// Fields the local copy does not name keep the server's values (a CloudKit `update` leaves them
/// alone).
///
/// **Choose it** for data only this device edits in practice (a per-device draft, a single-user app
/// used on one device at a time), where the latest local intent is the truth.
///
/// **What it gets wrong:** another device's edits to the fields this copy holds are overwritten
/// without a trace, even when they touched fields this device never changed, because a full local
/// copy names every field.
///
/// **Deletions** (default [`DeletePolicy::LocalSide`]): a local delete is sent; a record the server
/// deleted is created again from the local copy ([`Resolution::Recreate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientWins {
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl Default for ClientWins {
    fn default() -> Self {
        Self {
            on_delete: DeletePolicy::LocalSide,
        }
    }
}

impl ConflictResolver for ClientWins {
    fn resolve(
        &self,
        local: &PendingChange,
        _base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |local, server| {
            side_wins(Side::Local, local, server)
        })
    }
}

/// The copy the server stamped later wins: the local copy's `modified` time (that of the server copy
/// the edit started from) against the server copy's. Equal times go to the local copy; a local copy
/// the server never stamped (a new record) counts as older than any stamped one.
///
/// **Choose it** only to match another client that already settles conflicts this way.
///
/// **What it gets wrong:** the local side has no server time of its own: a local edit carries the
/// stamp of the copy it started from, which is never later than the server's current copy. So it
/// behaves as [`ServerWins`] in disguise, and quick successive edits lose the second one (sent with
/// the first's change tag, it loses to the first, which the server stamped later). Prefer
/// [`LastWriterWinsByClock`] or [`crate::ThreeWayMerge`].
///
/// **Deletions** (default [`DeletePolicy::DeletionWins`]): a deletion carries no time to compare,
/// so the deletion wins and nothing is resurrected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LastWriterWinsByServerTime {
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl LastWriterWinsByServerTime {
    /// Which copy the server stamped later (the local one on a tie).
    pub fn winner(local: &Record, server: &Record) -> Side {
        if local.modified_ms() >= server.modified_ms() {
            Side::Local
        } else {
            Side::Server
        }
    }
}

impl ConflictResolver for LastWriterWinsByServerTime {
    fn resolve(
        &self,
        local: &PendingChange,
        _base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |local, server| {
            side_wins(Self::winner(local, server), local, server)
        })
    }
}

/// The copy whose clock field is later wins; ties go to the [`Tiebreak`]. The app writes the
/// clock field (a `TIMESTAMP`, `INT64`, `DOUBLE` or ISO-8601 `STRING`) from the device's clock on
/// every edit. A copy without the field is older than any copy with it; values that cannot be
/// compared (a string against a number, a list) park the change with
/// [`ParkReason::UnorderableField`].
///
/// **Choose it** when the latest edit by wall-clock time should win the whole record, and your
/// devices' clocks are roughly right: quick successive edits keep the second, because it was made
/// later.
///
/// **What it gets wrong:** it trusts device clocks: a device whose clock runs fast wins edits it
/// made earlier; one running slow loses its edits. And the whole record wins, so another device's
/// edit to a different field is lost.
///
/// **Deletions** (default [`DeletePolicy::DeletionWins`]): a deletion carries no clock, so the
/// deletion wins and nothing is resurrected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LastWriterWinsByClock {
    /// The name of the clock field.
    pub field: String,
    /// Who wins when both clocks read the same.
    pub tiebreak: Tiebreak,
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl LastWriterWinsByClock {
    /// Orders copies by `field`, with the default tiebreak ([`Tiebreak::Content`]) and deletion
    /// policy ([`DeletePolicy::DeletionWins`]).
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            tiebreak: Tiebreak::default(),
            on_delete: DeletePolicy::default(),
        }
    }

    /// Which copy's clock is later (ties to the tiebreak); a reason to park when it cannot tell.
    pub fn winner(&self, local: &Record, server: &Record) -> Result<Side, ParkReason> {
        self.tiebreak.winner(
            compare::order_by_clock(&self.field, local, server)?,
            local,
            server,
        )
    }
}

impl ConflictResolver for LastWriterWinsByClock {
    fn resolve(
        &self,
        local: &PendingChange,
        _base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |local, server| {
            match self.winner(local, server) {
                Ok(side) => side_wins(side, local, server),
                Err(reason) => Resolution::Park { reason },
            }
        })
    }
}

/// The copy with the higher edit count wins; ties go to the [`Tiebreak`]. The app keeps an `INT64`
/// field it increments on every edit; a copy without it counts 0, and a count of another type parks
/// the change with [`ParkReason::UnorderableField`].
///
/// **Choose it** when the copy more worked on should win and clocks cannot be trusted: it needs no
/// clock, and quick successive edits keep the second (its count is higher).
///
/// **What it gets wrong:** many small edits beat one large one (a device that fixed three typos
/// beats one that rewrote the text once), and the whole record wins, so the loser's edits to other
/// fields are lost. Two devices editing from the same base reach the same count and fall to the
/// tiebreak.
///
/// **Deletions** (default [`DeletePolicy::DeletionWins`]): a deletion carries no count, so the
/// deletion wins and nothing is resurrected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EditCount {
    /// The name of the edit-count field.
    pub field: String,
    /// Who wins when both counts are equal.
    pub tiebreak: Tiebreak,
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl EditCount {
    /// Orders copies by the count in `field`, with the default tiebreak ([`Tiebreak::Content`]) and
    /// deletion policy ([`DeletePolicy::DeletionWins`]).
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            tiebreak: Tiebreak::default(),
            on_delete: DeletePolicy::default(),
        }
    }

    /// Which copy has the higher count (ties to the tiebreak); a reason to park when it cannot tell.
    pub fn winner(&self, local: &Record, server: &Record) -> Result<Side, ParkReason> {
        self.tiebreak.winner(
            compare::order_by_count(&self.field, local, server)?,
            local,
            server,
        )
    }
}

impl ConflictResolver for EditCount {
    fn resolve(
        &self,
        local: &PendingChange,
        _base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |local, server| {
            match self.winner(local, server) {
                Ok(side) => side_wins(side, local, server),
                Err(reason) => Resolution::Park { reason },
            }
        })
    }
}

/// The app's own resolver, as a closure over `(local, base, server)`.
///
/// **Choose it** when the record has meaning the built-in strategies cannot see: counters to add,
/// lists to union, a status field with its own precedence.
///
/// **What it gets wrong:** whatever the closure gets wrong. [`crate::settle`] still checks its
/// answer (the right record, a resolution that suits the conflict) and rebases a re-sent record
/// onto the server copy; a closure that panics stops the conflict actor it runs in.
///
/// **Deletions:** the closure sees every case (`local` a delete, `server` `None`) and decides
/// itself; a resurrection must still be spelled [`Resolution::Recreate`] or [`Resolution::Restore`].
pub struct Custom<F> {
    resolve: F,
}

impl<F> Custom<F>
where
    F: Fn(&PendingChange, Option<&Record>, Option<&Record>) -> Resolution + Send + Sync,
{
    /// A resolver that calls `resolve`.
    pub fn new(resolve: F) -> Self {
        Self { resolve }
    }
}

impl<F> fmt::Debug for Custom<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Custom(<closure>)")
    }
}

impl<F> ConflictResolver for Custom<F>
where
    F: Fn(&PendingChange, Option<&Record>, Option<&Record>) -> Resolution + Send + Sync,
{
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        (self.resolve)(local, base, server)
    }
}
