//! What goes into the store and what comes back out.

use serde::{Deserialize, Serialize};
use skysync_model::{ChangeToken, Record, RecordId, SystemFields, ZoneId};
use skysync_queue::ChangeSeq;

/// One local change the app makes: save a record (its latest local copy) or delete one.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalChange {
    /// Save this copy. Its system fields are ignored: the store sets the latest change tag it knows.
    Save(Record),
    /// Delete the record.
    Delete(RecordId),
}

impl LocalChange {
    /// The record this change is about.
    pub fn record_id(&self) -> &RecordId {
        match self {
            LocalChange::Save(record) => &record.id,
            LocalChange::Delete(id) => id,
        }
    }
}

/// What a local commit queued: one change number per change, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The outbox version of each change, in the order the changes were given.
    pub seqs: Vec<ChangeSeq>,
}

/// One page of a zone's change feed, as fetched from the server, with the token that follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedPage {
    /// The zone the page belongs to; every record in it must be in this zone.
    pub zone: ZoneId,
    /// Records changed on the server: the server's copies, with their system fields. A copy whose
    /// system fields say `deleted` counts as a deletion.
    pub changed: Vec<Record>,
    /// Records deleted on the server.
    pub deleted: Vec<RecordId>,
    /// The zone's change token after this page.
    pub token: ChangeToken,
}

/// What applying a fetched page did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchOutcome {
    /// Server copies written as the local record (no local changes were pending for them).
    pub applied: usize,
    /// Records removed because the server deleted them.
    pub removed: usize,
    /// Records with pending local changes whose server copy changed: the local copy was kept and the
    /// server copy is their new merge base. Resolve each (local, base, server) and commit the result
    /// with [`crate::StoreHandle::commit_resolved`].
    pub conflicts: Vec<RecordId>,
    /// Records with pending local changes that the server deleted: the local copy and its pending
    /// change were kept and the merge base removed. Decide whether to re-create or drop them.
    pub deleted_with_local_changes: Vec<RecordId>,
    /// Server copies of records deleted locally: not applied (a deleted record never comes back).
    pub ignored_deleted_locally: Vec<RecordId>,
}

/// One change the server confirmed.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfirmedChange {
    /// A save was confirmed.
    Saved {
        /// The version that was sent (from the batch).
        seq: ChangeSeq,
        /// The server's copy as it answered, with the new system fields (change tag).
        record: Record,
    },
    /// A delete was confirmed.
    Deleted {
        /// The version that was sent (from the batch).
        seq: ChangeSeq,
        /// The deleted record.
        id: RecordId,
    },
}

impl ConfirmedChange {
    /// The record the confirmation is about.
    pub fn record_id(&self) -> &RecordId {
        match self {
            ConfirmedChange::Saved { record, .. } => &record.id,
            ConfirmedChange::Deleted { id, .. } => id,
        }
    }
}

/// What a confirmation did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfirmOutcome {
    /// Records whose sent version was acknowledged and removed from the outbox.
    pub acknowledged: Vec<RecordId>,
    /// Records changed locally since the batch was formed (edited, deleted or re-created): their newer
    /// change stays pending and now carries the latest known change tag.
    pub still_pending: Vec<RecordId>,
}

/// A conflict's resolution, to commit locally and re-send first.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConflict {
    /// The resolved record (its system fields are replaced by the server copy's).
    pub record: Record,
    /// The server's current copy, with its system fields: it becomes the merge base, and its change
    /// tag is the one the resolution is sent with.
    pub server: Record,
    /// The pending version the resolution started from (`None` if no change was pending). If the app
    /// changed the record since, the resolution is not applied.
    pub local_seq: Option<ChangeSeq>,
}

/// What committing a resolution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// Committed and queued at the front of the outbox as this version.
    Queued(ChangeSeq),
    /// The app changed the record after the resolution started: nothing was applied except the new
    /// merge base. Resolve again with the latest local copy.
    LocalChangedSince,
    /// The record was deleted locally: the delete wins, and now carries the server's change tag.
    DeletedLocally,
}

/// Whether a tombstone's delete has reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TombstoneState {
    /// The delete is in the outbox, not yet confirmed.
    DeletePending,
    /// The server confirmed the delete; the tombstone goes once a fetch of the zone passes it.
    DeleteConfirmed,
}

/// What the store remembers of a record deleted locally, so that nothing brings it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted record.
    pub id: RecordId,
    /// Its type, if the store knew the record.
    pub record_type: Option<String>,
    /// The latest server system fields known for it (the change tag its delete is sent with).
    pub system: Option<SystemFields>,
    /// Whether the server confirmed the delete.
    pub state: TombstoneState,
}

/// One page of records read from the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordPage {
    /// The records, in key order.
    pub records: Vec<Record>,
    /// Pass this as `after` to read the next page; `None` when this was the last.
    pub next: Option<RecordId>,
}

/// What resetting a zone did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneReset {
    /// Records queued to be sent again (as creates, without change tags).
    pub requeued: usize,
}

/// What removing a zone's data did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneRemoval {
    /// Records removed.
    pub records: usize,
    /// Tombstones removed.
    pub tombstones: usize,
    /// Pending and parked changes removed from the outbox.
    pub changes: usize,
}
