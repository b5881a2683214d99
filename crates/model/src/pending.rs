//! Changes the app made locally that the server has not confirmed yet.

use crate::ids::RecordId;
use crate::record::{ChangeTag, Record};
use serde::{Deserialize, Serialize};

/// One local change waiting in the outbox to be sent: the latest local copy of a record to save, or a
/// deletion. Changes coalesce per record, so at most one is pending for any record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PendingChange {
    /// Save this copy of the record; its system fields carry the change tag to send (none: create).
    Save(Record),
    /// Delete the record; the tag is the last one the server gave it (none: it was never confirmed).
    Delete {
        /// The record to delete.
        id: RecordId,
        /// The server's last change tag for it, if any.
        change_tag: Option<ChangeTag>,
    },
}

impl PendingChange {
    /// The record this change is about.
    pub fn record_id(&self) -> &RecordId {
        match self {
            PendingChange::Save(record) => &record.id,
            PendingChange::Delete { id, .. } => id,
        }
    }

    /// Whether this change deletes its record.
    pub fn is_delete(&self) -> bool {
        matches!(self, PendingChange::Delete { .. })
    }

    /// The change tag this change will be sent with, if any.
    pub fn change_tag(&self) -> Option<&ChangeTag> {
        match self {
            PendingChange::Save(record) => record.change_tag(),
            PendingChange::Delete { change_tag, .. } => change_tag.as_ref(),
        }
    }
}
