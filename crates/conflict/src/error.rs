//! The one error type of this crate.

use crate::resolution::ConflictCase;
use skysync_actors::LocalError;
use skysync_model::RecordId;

/// Everything that can go wrong while settling a conflict, each variant saying what the caller can
/// do about it. A resolver itself never fails: a change it cannot decide is parked
/// ([`crate::Resolution::Park`]); these errors are about inputs that do not describe one conflict,
/// answers that cannot settle the conflict they were given, and an unreachable conflict actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflictError {
    /// The base or server copy passed in is a different record from the local change. Nothing was
    /// resolved; pass the copies that belong to the local change's record.
    #[error(
        "the {which} copy is record {found}, but the local change is for {expected}; pass the {which} copy of {expected}"
    )]
    RecordMismatch {
        /// Which input was wrong: `"base"` or `"server"`.
        which: &'static str,
        /// The local change's record.
        expected: Box<RecordId>,
        /// The record the wrong input is for.
        found: Box<RecordId>,
    },

    /// The server copy has no system fields, so nothing can be re-sent over it (a re-sent record must
    /// carry the server's change tag). Nothing was resolved; look the record up on the server again
    /// and pass the copy it returns.
    #[error(
        "the server copy of {id} carries no change tag; look the record up again and resolve with that copy"
    )]
    ServerCopyWithoutChangeTag {
        /// The record concerned.
        id: Box<RecordId>,
    },

    /// The resolver answered with a resolution that cannot settle this kind of conflict (for
    /// example `Send` when the server has deleted the record: that must be the explicit
    /// `Recreate`). Nothing was resolved; fix the resolver to answer one of the allowed kinds.
    #[error(
        "the resolver answered `{answered}` to a {case} conflict on {id}, which it cannot settle; answer one of: {allowed}"
    )]
    NotAllowed {
        /// The record concerned.
        id: Box<RecordId>,
        /// The kind of conflict.
        case: ConflictCase,
        /// The resolution's kind, e.g. `"Send"`.
        answered: &'static str,
        /// The kinds that would have been accepted.
        allowed: &'static str,
    },

    /// The resolver returned a record with another identity than the conflicting one. Nothing was
    /// resolved; fix the resolver to return a record with the local change's id.
    #[error(
        "the resolver returned record {found} for a conflict on {expected}; return a record with the conflicting record's id"
    )]
    WrongRecord {
        /// The conflicting record.
        expected: Box<RecordId>,
        /// The id the resolver returned.
        found: Box<RecordId>,
    },

    /// The conflict actor could not be started. Nothing is running; retry the spawn (it normally
    /// fails only while the runtime is shutting down).
    #[error("the conflict actor could not start: {reason}; retry once the runtime is running")]
    Spawn {
        /// What ractor reported.
        reason: String,
    },

    /// The conflict actor did not answer: it has stopped or failed (a resolver that panicked stops
    /// it), is restarting, or did not reply within the call timeout. The conflict is unresolved and
    /// the pending change untouched; resolve again once the actor is restarted.
    #[error(transparent)]
    Local(#[from] LocalError),
}
