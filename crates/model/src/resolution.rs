//! How a conflict is settled: the answer a conflict resolver gives and the store commits.
//!
//! The resolvers live in `skysync-conflict`; the store commits a [`Resolution`] atomically with
//! everything it implies (the new local copy, the new merge base, the outbox entry). Both speak
//! this one type.

use crate::record::{ChangeTag, Record};
use std::fmt;

/// How a conflict is settled: what goes to the server next, or what the local side becomes.
///
/// Bringing a deleted record back is never silent: it has its own variants ([`Resolution::Recreate`]
/// and [`Resolution::Restore`]), so the session can report it by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Save this record over the server's copy (an `update`). It carries the server copy's change tag
    /// and system fields (see `skysync_conflict::rebase_onto`); `skysync_conflict::settle` enforces that whatever the resolver set.
    /// Fields set to [`crate::FieldValue::Null`] go out as `{"value": null}` and are cleared.
    Send(Record),
    /// Delete the record on the server with the server copy's change tag: the local deletion wins
    /// over the server's edit.
    SendDelete {
        /// The server copy's change tag, to send with the `delete`.
        change_tag: ChangeTag,
    },
    /// Drop the local change; the server's state stands. Its copy becomes the local record and the
    /// new merge base, or, when the server deleted the record, the local record is deleted too.
    AcceptServer,
    /// The server deleted the record, and this local copy is created again (a `create`, with no
    /// change tag): a resurrection on the server, chosen explicitly.
    Recreate(Record),
    /// The record was deleted locally, and the server's edited copy brings it back on this device
    /// (the local delete is dropped): a resurrection on the device, chosen explicitly.
    Restore,
    /// Keep the change out of the outbox's way as a failure the app can see and decide on; nothing
    /// is sent or dropped.
    Park {
        /// Why it was parked.
        reason: ParkReason,
    },
}

impl Resolution {
    /// The variant's name, as used in error messages and telemetry (`"Send"`, `"Park"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Resolution::Send(_) => "Send",
            Resolution::SendDelete { .. } => "SendDelete",
            Resolution::AcceptServer => "AcceptServer",
            Resolution::Recreate(_) => "Recreate",
            Resolution::Restore => "Restore",
            Resolution::Park { .. } => "Park",
        }
    }

    /// Whether this resolution brings back a record one side deleted.
    pub fn resurrects(&self) -> bool {
        matches!(self, Resolution::Recreate(_) | Resolution::Restore)
    }
}

/// Why a change was parked instead of resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParkReason {
    /// The server deleted the record while this device edited it, and the resolver's deletion policy
    /// leaves the choice to the app (accept the deletion, or re-create the record).
    DeletedOnServer,
    /// This device deleted the record while another edited it on the server, and the deletion policy
    /// leaves the choice to the app (send the delete, or restore the record).
    DeletedLocally,
    /// The field a strategy orders by (a clock or an edit count) holds values it cannot compare, such
    /// as a string against a number. Fix the data or the strategy's field name.
    UnorderableField {
        /// The field's name.
        field: String,
        /// What was found, e.g. `"a STRING against an INT64"`.
        found: String,
    },
    /// The server copy has no change tag, so nothing can be sent over it; fetch the record again.
    ServerCopyWithoutChangeTag,
    /// An app-defined reason, from a custom resolver or fallback.
    Custom(String),
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParkReason::DeletedOnServer => {
                f.write_str("the server deleted the record while it was edited here")
            }
            ParkReason::DeletedLocally => {
                f.write_str("the record was deleted here while it was edited on the server")
            }
            ParkReason::UnorderableField { field, found } => {
                write!(f, "field `{field}` cannot be compared: {found}")
            }
            ParkReason::ServerCopyWithoutChangeTag => {
                f.write_str("the server copy carries no change tag")
            }
            ParkReason::Custom(reason) => f.write_str(reason),
        }
    }
}
