//! Changes the app made locally that the server has not confirmed yet.

use crate::ids::RecordId;
use crate::record::{ChangeTag, Record};
use crate::wire::{OperationType, RecordOperation, WireRecord};
use serde::{Deserialize, Serialize};
use std::io;

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

    /// The `records/modify` operation that sends this change: a save with a change tag is an
    /// `update`, without one a `create`; a delete with a tag is a `delete`, without one a
    /// `forceDelete`. Response-only keys (created, modified, deleted) stay out.
    pub fn to_operation(&self) -> RecordOperation {
        let (operation_type, record) = match self {
            PendingChange::Save(record) => {
                let mut wire = record.to_wire(false);
                wire.created = None;
                wire.modified = None;
                wire.deleted = None;
                let op = if wire.record_change_tag.is_some() {
                    OperationType::Update
                } else {
                    OperationType::Create
                };
                (op, wire)
            }
            PendingChange::Delete { id, change_tag } => {
                let wire = WireRecord {
                    record_name: Some(id.record_name.clone()),
                    record_change_tag: change_tag.as_ref().map(|t| t.0.clone()),
                    ..WireRecord::default()
                };
                let op = if change_tag.is_some() {
                    OperationType::Delete
                } else {
                    OperationType::ForceDelete
                };
                (op, wire)
            }
        };
        RecordOperation {
            operation_type,
            record,
            desired_keys: None,
        }
    }

    /// How many bytes this change's operation takes in a `records/modify` body: what CloudKit's
    /// request size limit counts, and what batches are limited by.
    pub fn wire_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Serializing plain data into a counter cannot fail: no I/O, no map with non-string keys.
        match serde_json::to_writer(&mut counter, &self.to_operation()) {
            Ok(()) => counter.0,
            Err(_) => usize::MAX,
        }
    }
}

/// A writer that only counts the bytes written to it.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ZoneId;

    #[test]
    fn wire_len_is_the_length_of_the_operation_json() {
        let record = Record::new(RecordId::new(ZoneId::new("Notes"), "n1"), "Note")
            .with("title", "Groceries: milk, eggs, bread");
        for change in [
            PendingChange::Save(record.clone()),
            PendingChange::Delete {
                id: record.id.clone(),
                change_tag: Some(ChangeTag("t1".into())),
            },
        ] {
            let json = serde_json::to_vec(&change.to_operation()).unwrap_or_default();
            assert!(!json.is_empty());
            assert_eq!(change.wire_len(), json.len());
        }
    }
}
