//! What goes into the store and what comes back out.

use serde::{Deserialize, Serialize};
use skysync_model::{
    ChangeTag, ChangeToken, PacingMemory, Record, RecordId, Resolution, SystemFields, ZoneId,
};
use skysync_queue::ChangeSeq;
use std::collections::BTreeSet;

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
    /// Whether the server has more pages after this one. The zone stays in
    /// [`SyncMetadata::zones_to_fetch`] until a page with `more_coming: false` is applied.
    pub more_coming: bool,
}

/// What applying a fetched page did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchOutcome {
    /// Server copies written as the local record (no local changes were pending for them).
    pub applied: usize,
    /// Records removed because the server deleted them.
    pub removed: usize,
    /// Records with pending (or parked) local changes whose server side changed: the local copy and
    /// its merge base were kept and the server side was stored as an open conflict (a new copy, or
    /// its deletion). Resolve each with [`crate::StoreHandle::open_conflict`]'s three copies and
    /// commit the answer with [`crate::StoreHandle::commit_resolution`].
    pub conflicts: Vec<RecordId>,
    /// Records deleted here and confirmed deleted on the server that another device created again
    /// since: the live copy was applied as a new life of the record (also counted in `applied`).
    pub recreated: Vec<RecordId>,
    /// Stale server copies of records deleted locally: not applied (a deleted record never comes
    /// back from stale data).
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

/// The server's side of a conflict with a local change, kept in the store until it is resolved
/// (storage invariant 6): a crash loses no conflict.
///
/// The three copies a resolver needs are the record's pending change (local), its merge base (the
/// common ancestor, unchanged by the fetch) and this server side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenConflict {
    /// The record.
    pub id: RecordId,
    /// The server's current copy with its system fields; `None` when the server deleted it.
    pub server: Option<Record>,
}

impl OpenConflict {
    /// The server copy's change tag, if the server still has the record.
    pub fn server_tag(&self) -> Option<&ChangeTag> {
        self.server.as_ref().and_then(Record::change_tag)
    }
}

/// A resolved conflict, to commit in one transaction with everything it implies.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConflict {
    /// The record.
    pub id: RecordId,
    /// The server side the resolution was made against (a copy with system fields, or `None` for
    /// a deletion). If the store has learned of a newer server side since, nothing is applied.
    pub server: Option<Record>,
    /// The version of the pending change the resolution started from (`None` if none was pending).
    /// If the app changed the record since, nothing is applied.
    pub local_seq: Option<ChangeSeq>,
    /// What to do.
    pub resolution: Resolution,
}

/// What committing a resolution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// Committed. The record's change to send (the merged copy, the delete, the re-created record)
    /// is at the front of the outbox as this version; `None` when nothing is left to send (the
    /// server's side was accepted or restored, or the change was parked).
    Committed {
        /// The version queued at the front, if any.
        queued: Option<ChangeSeq>,
    },
    /// The app changed the record after the resolution started: nothing was applied and the
    /// conflict stays open. Resolve again with the latest local change.
    LocalChangedSince,
    /// A newer server side arrived after the resolution started: nothing was applied and the
    /// conflict stays open with the newer copy. Resolve again.
    ServerChangedSince,
}

/// What `changes/database` reported, to commit with its token in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseChanges {
    /// The database's change token after these changes.
    pub token: Option<ChangeToken>,
    /// Zones with changes to fetch: remembered in [`SyncMetadata::zones_to_fetch`] until fetched.
    pub changed: Vec<ZoneId>,
    /// Zones the user deleted (or purged) on the server: their local data and pending changes are
    /// removed and never re-uploaded.
    pub deleted: Vec<ZoneId>,
}

/// What committing `changes/database` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseChangesOutcome {
    /// Each zone deleted remotely with what was removed of it locally.
    pub removed: Vec<(ZoneId, ZoneRemoval)>,
}

/// The engine's own state, kept in the store file and committed with the data it describes
/// (storage invariant 8).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncMetadata {
    /// The database's change token (`changes/database`), committed with the zone removals and the
    /// zones to fetch it reported.
    pub database_token: Option<ChangeToken>,
    /// Zones known to have changes not fetched yet; a zone leaves once a page with no more coming
    /// was applied.
    pub zones_to_fetch: BTreeSet<ZoneId>,
    /// Zones created (or found) on the server; forgotten when the zone is reset or removed.
    pub ensured_zones: BTreeSet<ZoneId>,
    /// Subscription ids created (or found) on the server.
    pub ensured_subscriptions: BTreeSet<String>,
    /// Zones the user deleted on the server (reported by `changes/database`): their local data is
    /// gone and they are not synced (nor created again) until the app asks for them anew.
    pub deleted_remotely: BTreeSet<ZoneId>,
    /// The account (`userRecordName`) the local data belongs to, once known.
    pub account: Option<String>,
    /// When a fetched page was last applied (ms since the Unix epoch).
    pub last_fetch_unix_ms: Option<u64>,
    /// When a send was last confirmed (ms since the Unix epoch).
    pub last_send_unix_ms: Option<u64>,
    /// What the throttle learned, and a pending `retryAfter` deadline.
    pub pacing: PacingMemory,
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

/// One change to the sync metadata that has no data of its own to commit with.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncMetadataChange {
    /// These zones exist on the server now (created or found).
    ZonesEnsured(Vec<ZoneId>),
    /// This subscription exists on the server now.
    SubscriptionEnsured(String),
    /// The signed-in account's `userRecordName`.
    Account(String),
    /// Another account signed in: everything known of the server belongs to the old one, so the
    /// database token, the ensured zones and subscriptions, the zones to fetch and the zones
    /// deleted remotely are forgotten, and the account is set. (The throttle's memory stays: it
    /// is about the server, not the account.)
    NewAccount(String),
    /// What the throttle learned, and its pending `retryAfter` deadline.
    Pacing(PacingMemory),
    /// The app wrote to a zone that was deleted remotely: it is wanted again (created anew and
    /// synced; the old data stays gone).
    ZoneWanted(ZoneId),
}

impl SyncMetadataChange {
    /// Applies the change to `meta`.
    pub fn apply(&self, meta: &mut SyncMetadata) {
        match self {
            SyncMetadataChange::ZonesEnsured(zones) => {
                for zone in zones {
                    meta.deleted_remotely.remove(zone);
                }
                meta.ensured_zones.extend(zones.iter().cloned());
            }
            SyncMetadataChange::SubscriptionEnsured(id) => {
                meta.ensured_subscriptions.insert(id.clone());
            }
            SyncMetadataChange::Account(user) => meta.account = Some(user.clone()),
            SyncMetadataChange::NewAccount(user) => {
                *meta = SyncMetadata {
                    account: Some(user.clone()),
                    pacing: meta.pacing,
                    ..SyncMetadata::default()
                };
            }
            SyncMetadataChange::Pacing(pacing) => meta.pacing = *pacing,
            SyncMetadataChange::ZoneWanted(zone) => {
                meta.deleted_remotely.remove(zone);
            }
        }
    }
}
