//! The store's tables and the functions over a redb transaction that read and change them.
//!
//! Every writing function takes the caller's write transaction and calls the outbox's functions in
//! that same transaction, so a record and its outbox entry (invariant 1), a fetched page and its
//! token (invariant 2), a confirmation and its acknowledgement commit together. Nothing here commits.
//!
//! Layout (keys from [`skysync_queue::keys`], values through [`skysync_model::codec`]):
//! - `skysync.meta`: the store format version.
//! - `skysync.records`: record key → the local copy (with the latest known system fields).
//! - `skysync.records_by_type`: (record type, record id) → nothing: the index for reads by type.
//! - `skysync.tagged`: record key → nothing, for every local record holding a change tag.
//! - `skysync.merge_bases`: record key → the last known server copy, for records with a local change
//!   (a clean record, a server copy with no pending change, is its own merge base).
//! - `skysync.tombstones`: record key → [`Tombstone`] of a record deleted locally.
//! - `skysync.zone_tokens`: zone key → the zone's [`ChangeToken`].
//! - `skysync.open_conflicts`: record key → [`OpenConflict`], the server side of a conflict with a
//!   pending local change, until it is resolved.
//! - `skysync.sync_meta`: one [`SyncMetadata`] value, the engine's own state.
//!
//! A record key is in `records` or in `tombstones`, never both. A key in `open_conflicts` has an
//! outbox entry (pending or parked) while the conflict is open.

use crate::error::StoreError;
use crate::types::{
    CommitReceipt, ConfirmOutcome, ConfirmedChange, DatabaseChanges, DatabaseChangesOutcome,
    FetchOutcome, FetchedPage, LocalChange, OpenConflict, RecordPage, ResolveOutcome,
    ResolvedConflict, SyncMetadata, Tombstone, TombstoneState, ZoneRemoval, ZoneReset,
};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, Value, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync_model::{
    ChangeToken, PacingMemory, PendingChange, Record, RecordId, Resolution, SystemFields, ZoneId,
    codec,
};
use skysync_queue::{ChangeSeq, Outbox, TxnRead, keys};
use std::collections::HashSet;
use std::fmt::Display;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The store format this build writes and reads. Version 2 added open conflicts and sync metadata;
/// a version 1 file is upgraded in place on open (the new tables start empty).
pub const STORE_FORMAT_VERSION: u64 = 2;

const META_NAME: &str = "skysync.meta";
const RECORDS_NAME: &str = "skysync.records";
const BY_TYPE_NAME: &str = "skysync.records_by_type";
const TAGGED_NAME: &str = "skysync.tagged";
const BASES_NAME: &str = "skysync.merge_bases";
const TOMBSTONES_NAME: &str = "skysync.tombstones";
const TOKENS_NAME: &str = "skysync.zone_tokens";
const CONFLICTS_NAME: &str = "skysync.open_conflicts";
const SYNC_META_NAME: &str = "skysync.sync_meta";
const PRIORS_NAME: &str = "skysync.prior_copies";

const META: TableDefinition<'static, &str, u64> = TableDefinition::new(META_NAME);
const RECORDS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(RECORDS_NAME);
const BY_TYPE: TableDefinition<'static, &[u8], ()> = TableDefinition::new(BY_TYPE_NAME);
const TAGGED: TableDefinition<'static, &[u8], ()> = TableDefinition::new(TAGGED_NAME);
const BASES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(BASES_NAME);
const TOMBSTONES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(TOMBSTONES_NAME);
const TOKENS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(TOKENS_NAME);
const CONFLICTS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(CONFLICTS_NAME);
const SYNC_META: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(SYNC_META_NAME);
/// Per record, the local copy as it was just before the store last replaced its fields with
/// another device's (a fetched copy, a conflict's resolution): what an app that read the record
/// before then holds, so that a save of that copy keeps the other device's changes (see
/// [`Mirror::save`]). A file without this table (written by an older build) simply has none.
const PRIORS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(PRIORS_NAME);

const FORMAT_KEY: &str = "format_version";
const SYNC_META_KEY: &[u8] = b"sync";

/// The local mirror of one database file: the functions over a transaction that keep records, merge
/// bases, tombstones and change tokens, together with the file's [`Outbox`].
///
/// It holds only the file's path (kept by its outbox), for error messages; clone it freely.
#[derive(Clone, Debug)]
pub struct Mirror {
    outbox: Outbox,
}

impl Mirror {
    /// The mirror of the database file at `file` (used only to name the file in errors).
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            outbox: Outbox::new(file),
        }
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        self.outbox.file()
    }

    /// The outbox in the same file.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Creates the store's and the outbox's tables if missing and records the format version;
    /// refuses a file of a newer format. Safe on every open.
    pub fn create_tables(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        {
            let mut meta = self.st(txn.open_table(META))?;
            let found = self.st(meta.get(FORMAT_KEY))?.map(|g| g.value());
            match found {
                // A new file, or one of version 1 (whose new tables are created below, empty).
                None | Some(1) => {
                    self.st(meta.insert(FORMAT_KEY, STORE_FORMAT_VERSION))?;
                }
                Some(found) if found > STORE_FORMAT_VERSION => {
                    return Err(StoreError::NewerFormat {
                        file: self.file().to_path_buf(),
                        found,
                        supported: STORE_FORMAT_VERSION,
                    });
                }
                Some(0) => {
                    return Err(self.corrupt(META_NAME, "format version 0 was never written"));
                }
                Some(_) => {}
            }
        }
        self.st(txn.open_table(RECORDS))?;
        self.st(txn.open_table(BY_TYPE))?;
        self.st(txn.open_table(TAGGED))?;
        self.st(txn.open_table(BASES))?;
        self.st(txn.open_table(TOMBSTONES))?;
        self.st(txn.open_table(TOKENS))?;
        self.st(txn.open_table(CONFLICTS))?;
        self.st(txn.open_table(SYNC_META))?;
        self.st(txn.open_table(PRIORS))?;
        self.outbox.create_tables(txn)?;
        Ok(())
    }

    // ----- local commits -----

    /// Commits local changes in order: each record (or tombstone) with its outbox entry, in the
    /// caller's transaction. A save takes the latest change tag the store knows for the record; a
    /// delete leaves a tombstone.
    pub fn commit_local(
        &self,
        txn: &WriteTransaction,
        changes: &[LocalChange],
    ) -> Result<CommitReceipt, StoreError> {
        for change in changes {
            if let LocalChange::Save(record) = change {
                validate_record(record)?;
            } else {
                validate_id(change.record_id())?;
            }
        }
        let mut seqs = Vec::with_capacity(changes.len());
        for change in changes {
            let seq = match change {
                LocalChange::Save(record) => self.save(txn, record)?,
                LocalChange::Delete(id) => self.delete(txn, id)?,
            };
            seqs.push(seq);
        }
        Ok(CommitReceipt { seqs })
    }

    /// Saves one record locally and queues it; see [`Mirror::commit_local`].
    ///
    /// The record is the app's copy, usually one it read and changed. If that copy is of a version
    /// the store has since replaced with another device's (its change tag is the one the local
    /// record had before a fetch or a conflict's resolution brought other values), saving it as it
    /// is would write the older values back over the other device's change, under the newer tag.
    /// Instead, only what the app changed in its copy (each field that differs from the version it
    /// read) is applied to the current local record. A copy without a change tag (a new record)
    /// or of the current version is saved as it is.
    pub fn save(&self, txn: &WriteTransaction, record: &Record) -> Result<ChangeSeq, StoreError> {
        validate_record(record)?;
        let key = self.record_key(&record.id)?;
        let old = self.get_record(txn, &key)?;
        let rebased = match (&old, record.change_tag()) {
            (Some(current), Some(read)) if current.change_tag() != Some(read) => self
                .get_value::<Record>(txn, PRIORS, PRIORS_NAME, &key)?
                .filter(|prior| prior.change_tag() == Some(read))
                .map(|prior| rebase_edit(record, &prior, current)),
            _ => None,
        };
        let record = rebased.as_ref().unwrap_or(record);
        let system = match &old {
            Some(old) => old.system.clone(),
            // Created again after a local delete: a new life, sent as a create. The delete may have
            // reached the server already (even if its answer was lost), so an update of the old
            // life could meet NOT_FOUND and lose the new one to the delete policy. The merge base
            // (the last server copy) stays until the delete is confirmed: an `EXISTS` against that
            // very copy is no conflict, and the session sends the new life over it. For the same
            // reason the server's deletion of the old life (deleted on both sides, an open
            // conflict without a server copy) is no conflict with the new life: settled by the
            // delete policy, it would drop the create.
            None => {
                self.take_tombstone(txn, &key)?;
                if self
                    .get_conflict(txn, &key)?
                    .is_some_and(|conflict| conflict.server.is_none())
                {
                    self.remove_key(txn, CONFLICTS, &key)?;
                }
                None
            }
        };
        self.begin_edit(txn, &key, old.as_ref())?;
        let mut local = record.clone();
        local.system = system;
        self.put_record(txn, &key, &local, old.as_ref())?;
        Ok(self.outbox.enqueue(txn, PendingChange::Save(local))?)
    }

    /// Before a local change to a record (`old`, its local copy): a clean record (a server copy
    /// with no pending change) is its own merge base, kept in no table of its own; the change
    /// about to be made needs that copy as its base, so it is written now.
    fn begin_edit(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        old: Option<&Record>,
    ) -> Result<(), StoreError> {
        if let Some(old) = old
            && old.system.is_some()
            && self.outbox.entry(txn, &old.id)?.is_none()
        {
            self.put_value(txn, BASES, key, old, "a merge base")?;
        }
        Ok(())
    }

    /// Deletes one record locally, leaving a tombstone, and queues the delete.
    pub fn delete(&self, txn: &WriteTransaction, id: &RecordId) -> Result<ChangeSeq, StoreError> {
        validate_id(id)?;
        let key = self.record_key(id)?;
        let old = self.remove_record(txn, &key)?;
        self.begin_edit(txn, &key, old.as_ref())?;
        let prior = self.get_tombstone(txn, &key)?;
        let (record_type, system) = match (old, prior) {
            (Some(old), _) => (Some(old.record_type), old.system),
            (None, Some(prior)) => {
                // A confirmed delete left no server copy whose tag could still be valid.
                let system = match prior.state {
                    TombstoneState::DeletePending => prior.system,
                    TombstoneState::DeleteConfirmed => None,
                };
                (prior.record_type, system)
            }
            (None, None) => (None, None),
        };
        let change_tag = system.as_ref().map(|s| s.change_tag.clone());
        let tombstone = Tombstone {
            id: id.clone(),
            record_type,
            system,
            state: TombstoneState::DeletePending,
        };
        self.put_tombstone(txn, &key, &tombstone)?;
        Ok(self.outbox.enqueue(
            txn,
            PendingChange::Delete {
                id: id.clone(),
                change_tag,
            },
        )?)
    }

    // ----- fetched pages -----

    /// Applies one fetched page and stores the zone's new token, in the caller's transaction.
    ///
    /// - A record with a pending (or parked) local change is not overwritten (invariant 6): its
    ///   local copy and merge base stay, and a server side that differs from what the local edit
    ///   was made on is stored as an [`OpenConflict`] (a newer copy, or the deletion). A create (a
    ///   save without a change tag) was made on no server copy, so a deletion is no conflict with
    ///   it: the record was created again here after an earlier life ended, and the create goes out.
    /// - A record deleted locally is not brought back by a stale copy (invariant 5): its pending
    ///   delete takes the newer change tag and the newer copy is an open conflict for the
    ///   resolver's delete policy. Once the delete was confirmed, a copy with another change tag is
    ///   a new life of the record (another device created it again) and is applied.
    /// - A confirmed tombstone of the zone is dropped once a page that does not hold the record
    ///   alive passes it.
    /// - When no more pages are coming, the zone leaves [`SyncMetadata::zones_to_fetch`]; the time
    ///   of the fetch is recorded.
    ///
    /// Applying the same page twice leaves the same state.
    pub fn apply_fetched(
        &self,
        txn: &WriteTransaction,
        page: &FetchedPage,
    ) -> Result<FetchOutcome, StoreError> {
        self.apply_page(txn, page, true)
    }

    /// Applies a page of a refetch from no token (after an expired token, or on a device that
    /// already holds records) like [`Mirror::apply_fetched`], except that the zone's stored token
    /// stays as it was (none) until the refetch's last page (`more_coming: false`). A refetch
    /// reports no deletions: the caller adds to its last page the records it holds that the
    /// refetch did not return, so that they go in the transaction that stores the token. If the
    /// process dies before then, the next start must refetch from no token again, not go on from
    /// a token of the middle of the refetch and miss those deletions for good.
    pub fn apply_refetched_page(
        &self,
        txn: &WriteTransaction,
        page: &FetchedPage,
    ) -> Result<FetchOutcome, StoreError> {
        self.apply_page(txn, page, !page.more_coming)
    }

    fn apply_page(
        &self,
        txn: &WriteTransaction,
        page: &FetchedPage,
        store_token: bool,
    ) -> Result<FetchOutcome, StoreError> {
        let mut outcome = FetchOutcome::default();
        let mut alive: HashSet<Vec<u8>> = HashSet::new();
        let mut deletions: Vec<RecordId> = page.deleted.clone();
        for server in &page.changed {
            if server.id.zone != page.zone {
                return Err(
                    self.invalid_page(page, format!("record {} is in another zone", server.id))
                );
            }
            let Some(system) = &server.system else {
                return Err(self.invalid_page(
                    page,
                    format!("server copy of {} has no system fields", server.id),
                ));
            };
            if system.deleted {
                deletions.push(server.id.clone());
                continue;
            }
            let key = self.record_key(&server.id)?;
            alive.insert(key.clone());
            if let Some(tombstone) = self.get_tombstone(txn, &key)? {
                let known_tag = tombstone.system.as_ref().map(|s| &s.change_tag);
                if tombstone.state == TombstoneState::DeleteConfirmed
                    && known_tag != Some(&system.change_tag)
                {
                    // Invariant 5's exception: a live copy after the confirmed delete is a new
                    // life of the record.
                    self.remove_key(txn, TOMBSTONES, &key)?;
                    self.put_record(txn, &key, server, None)?;
                    // A clean record: its own merge base.
                    self.remove_key(txn, BASES, &key)?;
                    outcome.applied += 1;
                    outcome.recreated.push(server.id.clone());
                    continue;
                }
                let changed = known_tag != Some(&system.change_tag);
                self.retag_tombstone(txn, &key, &server.id, Some(system))?;
                if changed && tombstone.state == TombstoneState::DeletePending {
                    self.put_conflict(txn, &key, &server.id, Some(server))?;
                    outcome.conflicts.push(server.id.clone());
                }
                outcome.ignored_deleted_locally.push(server.id.clone());
                continue;
            }
            let old = self.get_record(txn, &key)?;
            if self.outbox.entry(txn, &server.id)?.is_some() {
                // Invariant 6: local changes are never overwritten and the base stays the common
                // ancestor; the server copy waits beside them as the server side of a conflict.
                let local_tag = old.as_ref().and_then(|r| r.change_tag());
                if local_tag == Some(&system.change_tag) {
                    // The very copy the local edit was made on: nothing to reconcile.
                    self.remove_key(txn, CONFLICTS, &key)?;
                } else {
                    self.put_conflict(txn, &key, &server.id, Some(server))?;
                    outcome.conflicts.push(server.id.clone());
                }
                continue;
            }
            self.remember_prior(txn, &key, old.as_ref(), server)?;
            self.put_record(txn, &key, server, old.as_ref())?;
            // A clean record is its own merge base (see `begin_edit`): a fetch writes the record
            // alone. (A file written before this held a base for every record; it goes here.)
            self.remove_key(txn, BASES, &key)?;
            outcome.applied += 1;
        }
        for id in &deletions {
            if id.zone != page.zone {
                return Err(
                    self.invalid_page(page, format!("deleted record {id} is in another zone"))
                );
            }
            let key = self.record_key(id)?;
            if let Some(tombstone) = self.get_tombstone(txn, &key)? {
                match tombstone.state {
                    TombstoneState::DeleteConfirmed => {
                        self.remove_key(txn, TOMBSTONES, &key)?;
                        self.remove_key(txn, BASES, &key)?;
                    }
                    // Deleted on both sides: the resolver drops the pending delete.
                    TombstoneState::DeletePending => {
                        self.put_conflict(txn, &key, id, None)?;
                        outcome.conflicts.push(id.clone());
                    }
                }
                continue;
            }
            if let Some(entry) = self.outbox.entry(txn, id)? {
                // A create (a save without a change tag) was made on no server copy: the deletion
                // of an earlier life of the record is no conflict with it, and sending it creates
                // the record anew.
                if !is_create(entry.change()) {
                    self.put_conflict(txn, &key, id, None)?;
                    outcome.conflicts.push(id.clone());
                }
                continue;
            }
            if self.remove_record(txn, &key)?.is_some() {
                outcome.removed += 1;
            }
            self.remove_key(txn, BASES, &key)?;
            self.remove_key(txn, PRIORS, &key)?;
        }
        // A confirmed delete that this page (fetched after the confirmation) does not contradict has
        // been passed by a fetch: its tombstone may go.
        let zone_key = self.zone_key(&page.zone)?;
        for (key, tombstone) in self.tombstones_with_prefix(txn, &zone_key)? {
            if tombstone.state == TombstoneState::DeleteConfirmed && !alive.contains(&key) {
                self.remove_key(txn, TOMBSTONES, &key)?;
                self.remove_key(txn, BASES, &key)?;
            }
        }
        if store_token {
            self.put_value(txn, TOKENS, &zone_key, &page.token, "a change token")?;
        }
        self.update_sync_metadata(txn, |meta| {
            if !page.more_coming {
                meta.zones_to_fetch.remove(&page.zone);
            }
            meta.last_fetch_unix_ms = Some(PacingMemory::unix_ms(SystemTime::now()));
        })?;
        Ok(outcome)
    }

    /// Stores the server side of a conflict that a send revealed (`CONFLICT` or `EXISTS` with the
    /// server's copy, or `NOT_FOUND` on an update: `server` is `None`), so that it survives a crash
    /// until it is resolved. Nothing is stored if the record no longer has an outbox entry (its
    /// change was acknowledged or the zone removed meanwhile), nor for no server copy against a
    /// create (a create is made on no server copy, so its absence is no conflict). Returns whether
    /// it was stored.
    pub fn record_conflict(
        &self,
        txn: &WriteTransaction,
        id: &RecordId,
        server: Option<&Record>,
    ) -> Result<bool, StoreError> {
        if let Some(server) = server {
            if server.id != *id {
                return Err(StoreError::InvalidConfirmation {
                    id: id.clone(),
                    reason: "the server copy is of another record",
                });
            }
            if server.system.is_none() {
                return Err(StoreError::InvalidConfirmation {
                    id: id.clone(),
                    reason: "the server copy has no system fields",
                });
            }
        }
        let Some(entry) = self.outbox.entry(txn, id)? else {
            return Ok(false);
        };
        // No server copy against a create: nothing to reconcile (see `apply_fetched`).
        if server.is_none() && is_create(entry.change()) {
            return Ok(false);
        }
        let key = self.record_key(id)?;
        self.put_conflict(txn, &key, id, server)?;
        Ok(true)
    }

    // ----- confirmations -----

    /// Records what the server confirmed and acknowledges those versions in the outbox, in the
    /// caller's transaction.
    ///
    /// A confirmed save stores the new system fields on the local record and the server copy as its
    /// merge base, except for a record deleted since (it stays deleted; its pending delete takes the
    /// new tag). A record edited since keeps its newer change pending, now with the new tag. A
    /// confirmed delete marks the tombstone confirmed.
    pub fn confirm_sent(
        &self,
        txn: &WriteTransaction,
        confirmed: &[ConfirmedChange],
    ) -> Result<ConfirmOutcome, StoreError> {
        for change in confirmed {
            if let ConfirmedChange::Saved { record, .. } = change
                && record.system.is_none()
            {
                return Err(StoreError::InvalidConfirmation {
                    id: record.id.clone(),
                    reason: "the server copy has no system fields",
                });
            }
        }
        let mut outcome = ConfirmOutcome::default();
        for change in confirmed {
            match change {
                ConfirmedChange::Saved { seq, record } => {
                    self.confirm_save(txn, *seq, record, &mut outcome)?;
                }
                ConfirmedChange::Deleted { seq, id } => {
                    self.confirm_delete(txn, *seq, id, &mut outcome)?;
                }
            }
        }
        if !confirmed.is_empty() {
            self.update_sync_metadata(txn, |meta| {
                meta.last_send_unix_ms = Some(PacingMemory::unix_ms(SystemTime::now()));
            })?;
        }
        Ok(outcome)
    }

    fn confirm_save(
        &self,
        txn: &WriteTransaction,
        seq: ChangeSeq,
        server: &Record,
        outcome: &mut ConfirmOutcome,
    ) -> Result<(), StoreError> {
        let id = &server.id;
        let key = self.record_key(id)?;
        let system = server.system.as_ref();
        // Deleted since the batch was formed: the confirmation must not bring it back.
        if self.retag_tombstone(txn, &key, id, system)? {
            outcome.still_pending.push(id.clone());
            return Ok(());
        }
        let Some(old) = self.get_record(txn, &key)? else {
            // The zone's data was removed meanwhile; there is nothing left to update.
            if self.outbox.ack_change(txn, id, seq)? {
                outcome.acknowledged.push(id.clone());
            }
            return Ok(());
        };
        let mut local = old.clone();
        local.system = server.system.clone();
        self.put_record(txn, &key, &local, Some(&old))?;
        if self.outbox.ack_change(txn, id, seq)? {
            // The server took the local state: a server side seen before is history now, and the
            // record, clean again, is its own merge base.
            self.remove_key(txn, CONFLICTS, &key)?;
            self.remove_key(txn, BASES, &key)?;
            outcome.acknowledged.push(id.clone());
        } else {
            // The newer local change was made on the copy just confirmed.
            self.put_value(txn, BASES, &key, server, "a merge base")?;
            // Invariant 4: the newer local change goes out with the newest tag.
            self.outbox.set_change_tag(txn, id, system)?;
            outcome.still_pending.push(id.clone());
        }
        Ok(())
    }

    fn confirm_delete(
        &self,
        txn: &WriteTransaction,
        seq: ChangeSeq,
        id: &RecordId,
        outcome: &mut ConfirmOutcome,
    ) -> Result<(), StoreError> {
        let key = self.record_key(id)?;
        if self.outbox.ack_change(txn, id, seq)? {
            if let Some(mut tombstone) = self.get_tombstone(txn, &key)? {
                tombstone.state = TombstoneState::DeleteConfirmed;
                self.put_tombstone(txn, &key, &tombstone)?;
            }
            self.remove_key(txn, BASES, &key)?;
            self.remove_key(txn, CONFLICTS, &key)?;
            outcome.acknowledged.push(id.clone());
            return Ok(());
        }
        // Changed locally since (re-created, or deleted again): the server no longer has the record,
        // so no change tag of it is valid any more.
        if self.outbox.entry(txn, id)?.is_some() {
            self.outbox.set_change_tag(txn, id, None)?;
            outcome.still_pending.push(id.clone());
        }
        if let Some(old) = self.get_record(txn, &key)? {
            let mut local = old.clone();
            local.system = None;
            self.put_record(txn, &key, &local, Some(&old))?;
        }
        if let Some(mut tombstone) = self.get_tombstone(txn, &key)? {
            tombstone.system = None;
            self.put_tombstone(txn, &key, &tombstone)?;
        }
        self.remove_key(txn, BASES, &key)?;
        Ok(())
    }

    /// Commits a conflict's resolution in the caller's transaction, with everything it implies,
    /// and closes the open conflict:
    ///
    /// | resolution | local record | merge base | outbox |
    /// |---|---|---|---|
    /// | `Send(r)` | `r` on the server's system fields | the server copy | `r` first, as an update |
    /// | `SendDelete` | stays deleted, tombstone takes the server's tag | the server copy | the delete first, with that tag |
    /// | `AcceptServer` | the server copy (or gone, if deleted there) | the record itself, clean (or none) | the change dropped |
    /// | `Recreate(r)` | `r` without system fields | none | `r` first, as a create |
    /// | `Restore` | the server copy, tombstone dropped | the record itself, clean | the delete dropped |
    /// | `Park` | unchanged | unchanged | the change parked with the reason |
    ///
    /// Nothing is applied if the app changed the record since the resolution started
    /// ([`ResolveOutcome::LocalChangedSince`]) or a newer server side arrived
    /// ([`ResolveOutcome::ServerChangedSince`]); the conflict stays open then. A resolution that
    /// needs a server copy and has none is refused ([`StoreError::InvalidConfirmation`]).
    pub fn commit_resolution(
        &self,
        txn: &WriteTransaction,
        resolved: &ResolvedConflict,
    ) -> Result<ResolveOutcome, StoreError> {
        let id = &resolved.id;
        let invalid = |reason| StoreError::InvalidConfirmation {
            id: id.clone(),
            reason,
        };
        if let Some(server) = &resolved.server {
            if server.id != *id {
                return Err(invalid("the server copy is of another record"));
            }
            if server.system.is_none() {
                return Err(invalid("the server copy has no system fields"));
            }
        }
        let key = self.record_key(id)?;
        if let Some(open) = self.get_conflict(txn, &key)? {
            let resolved_tag = resolved.server.as_ref().and_then(Record::change_tag);
            if open.server_tag() != resolved_tag {
                return Ok(ResolveOutcome::ServerChangedSince);
            }
        }
        let entry = self.outbox.entry(txn, id)?;
        if entry.as_ref().map(|e| e.seq()) != resolved.local_seq {
            return Ok(ResolveOutcome::LocalChangedSince);
        }
        let server = resolved.server.as_ref();
        let needs_server = || invalid("this resolution needs the server's copy");
        let old = self.get_record(txn, &key)?;
        let queued = match &resolved.resolution {
            Resolution::Send(record) => {
                let server = server.ok_or_else(needs_server)?;
                if record.id != *id {
                    return Err(invalid("the resolved record is another record"));
                }
                validate_record(record)?;
                let mut local = record.clone();
                local.system = server.system.clone();
                self.remember_prior(txn, &key, old.as_ref(), &local)?;
                self.put_record(txn, &key, &local, old.as_ref())?;
                self.put_value(txn, BASES, &key, server, "a merge base")?;
                Some(self.outbox.enqueue_front(txn, PendingChange::Save(local))?)
            }
            Resolution::SendDelete { change_tag } => {
                let server = server.ok_or_else(needs_server)?;
                if let Some(old) = &old {
                    // Defensive: a delete resolution leaves no live local copy.
                    self.remove_record(txn, &key)?;
                    let tombstone = Tombstone {
                        id: id.clone(),
                        record_type: Some(old.record_type.clone()),
                        system: server.system.clone(),
                        state: TombstoneState::DeletePending,
                    };
                    self.put_tombstone(txn, &key, &tombstone)?;
                } else {
                    self.retag_tombstone(txn, &key, id, server.system.as_ref())?;
                }
                self.put_value(txn, BASES, &key, server, "a merge base")?;
                let delete = PendingChange::Delete {
                    id: id.clone(),
                    change_tag: Some(change_tag.clone()),
                };
                Some(self.outbox.enqueue_front(txn, delete)?)
            }
            Resolution::AcceptServer => {
                self.remove_key(txn, TOMBSTONES, &key)?;
                match server {
                    Some(server) => {
                        self.remember_prior(txn, &key, old.as_ref(), server)?;
                        self.put_record(txn, &key, server, old.as_ref())?;
                        self.remove_key(txn, BASES, &key)?;
                    }
                    None => {
                        self.remove_record(txn, &key)?;
                        self.remove_key(txn, BASES, &key)?;
                    }
                }
                self.outbox.discard(txn, id)?;
                None
            }
            Resolution::Recreate(record) => {
                if record.id != *id {
                    return Err(invalid("the resolved record is another record"));
                }
                validate_record(record)?;
                let mut local = record.clone();
                local.system = None;
                self.remove_key(txn, TOMBSTONES, &key)?;
                self.put_record(txn, &key, &local, old.as_ref())?;
                self.remove_key(txn, BASES, &key)?;
                Some(self.outbox.enqueue_front(txn, PendingChange::Save(local))?)
            }
            Resolution::Restore => {
                let server = server.ok_or_else(needs_server)?;
                self.remove_key(txn, TOMBSTONES, &key)?;
                self.put_record(txn, &key, server, old.as_ref())?;
                self.remove_key(txn, BASES, &key)?;
                self.outbox.discard(txn, id)?;
                None
            }
            Resolution::Park { reason } => {
                if let Some(seq) = resolved.local_seq {
                    self.outbox.park(txn, id, seq, &reason.to_string())?;
                }
                None
            }
        };
        self.remove_key(txn, CONFLICTS, &key)?;
        Ok(ResolveOutcome::Committed { queued })
    }

    // ----- zones -----

    /// Forgets a zone's change token (it expired): the next fetch starts from the beginning. Returns
    /// whether there was one.
    pub fn forget_token(&self, txn: &WriteTransaction, zone: &ZoneId) -> Result<bool, StoreError> {
        let key = self.zone_key(zone)?;
        self.remove_key(txn, TOKENS, &key)
    }

    /// Resets a zone the server no longer has: forgets its change token and every change tag in it
    /// (records, merge bases, tombstones, pending changes), and queues every local record of the
    /// zone without a pending change to be sent again, as a create.
    pub fn reset_zone(
        &self,
        txn: &WriteTransaction,
        zone: &ZoneId,
    ) -> Result<ZoneReset, StoreError> {
        let prefix = self.zone_key(zone)?;
        self.remove_key(txn, TOKENS, &prefix)?;
        let mut reset = ZoneReset::default();
        for (key, record) in self.records_with_prefix(txn, &prefix, None, usize::MAX)? {
            let mut local = record.clone();
            local.system = None;
            self.put_record(txn, &key, &local, Some(&record))?;
            if self.outbox.entry(txn, &record.id)?.is_none() {
                self.outbox.enqueue(txn, PendingChange::Save(local))?;
                reset.requeued += 1;
            }
        }
        for (key, mut tombstone) in self.tombstones_with_prefix(txn, &prefix)? {
            tombstone.system = None;
            self.put_tombstone(txn, &key, &tombstone)?;
        }
        self.remove_prefix(txn, BASES, &prefix)?;
        self.remove_prefix(txn, PRIORS, &prefix)?;
        // Server sides of a zone the server no longer has: there is nothing left to conflict with.
        self.remove_prefix(txn, CONFLICTS, &prefix)?;
        self.outbox.clear_zone_tags(txn, zone)?;
        self.update_sync_metadata(txn, |meta| {
            meta.ensured_zones.remove(zone);
        })?;
        Ok(reset)
    }

    /// Removes all of a zone's data: records, merge bases, tombstones, its token and its pending and
    /// parked changes.
    pub fn remove_zone(
        &self,
        txn: &WriteTransaction,
        zone: &ZoneId,
    ) -> Result<ZoneRemoval, StoreError> {
        let prefix = self.zone_key(zone)?;
        let mut removal = ZoneRemoval::default();
        for (key, record) in self.records_with_prefix(txn, &prefix, None, usize::MAX)? {
            self.remove_key(txn, RECORDS, &key)?;
            self.unindex(txn, &key, &record)?;
            removal.records += 1;
        }
        removal.tombstones = self.remove_prefix(txn, TOMBSTONES, &prefix)?;
        self.remove_prefix(txn, BASES, &prefix)?;
        self.remove_prefix(txn, PRIORS, &prefix)?;
        self.remove_prefix(txn, CONFLICTS, &prefix)?;
        self.remove_key(txn, TOKENS, &prefix)?;
        removal.changes = self.outbox.remove_zone(txn, zone)?;
        self.update_sync_metadata(txn, |meta| {
            meta.ensured_zones.remove(zone);
            meta.zones_to_fetch.remove(zone);
        })?;
        Ok(removal)
    }

    /// Commits what `changes/database` reported with its token: zones deleted remotely lose their
    /// local data and pending changes (they are never re-uploaded), zones with changes are
    /// remembered until fetched, and the database token advances, all in the caller's
    /// transaction.
    pub fn apply_database_changes(
        &self,
        txn: &WriteTransaction,
        changes: &DatabaseChanges,
    ) -> Result<DatabaseChangesOutcome, StoreError> {
        let mut outcome = DatabaseChangesOutcome::default();
        for zone in &changes.deleted {
            let removal = self.remove_zone(txn, zone)?;
            outcome.removed.push((zone.clone(), removal));
        }
        self.update_sync_metadata(txn, |meta| {
            meta.deleted_remotely
                .extend(changes.deleted.iter().cloned());
            meta.database_token = changes.token.clone();
            for zone in &changes.changed {
                if !changes.deleted.contains(zone) {
                    meta.zones_to_fetch.insert(zone.clone());
                }
            }
        })?;
        Ok(outcome)
    }

    /// Changes the sync metadata with `change`, in the caller's transaction (a missing value starts
    /// from the default).
    pub fn update_sync_metadata(
        &self,
        txn: &WriteTransaction,
        change: impl FnOnce(&mut SyncMetadata),
    ) -> Result<SyncMetadata, StoreError> {
        let mut meta = self.sync_metadata(txn)?;
        change(&mut meta);
        self.put_value(txn, SYNC_META, SYNC_META_KEY, &meta, "the sync metadata")?;
        Ok(meta)
    }

    // ----- reads -----

    /// The engine's sync metadata (the default on a new file).
    pub fn sync_metadata(&self, txn: &impl TxnRead) -> Result<SyncMetadata, StoreError> {
        Ok(self
            .get_value(txn, SYNC_META, SYNC_META_NAME, SYNC_META_KEY)?
            .unwrap_or_default())
    }

    /// The open conflict of a record, if one is waiting to be resolved.
    pub fn open_conflict(
        &self,
        txn: &impl TxnRead,
        id: &RecordId,
    ) -> Result<Option<OpenConflict>, StoreError> {
        let key = self.record_key(id)?;
        self.get_conflict(txn, &key)
    }

    /// Up to `limit` open conflicts (at least one), after the record `after` (exclusive), in key
    /// order.
    pub fn open_conflicts(
        &self,
        txn: &impl TxnRead,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<Vec<OpenConflict>, StoreError> {
        let table = self.st(txn.table(CONFLICTS))?;
        let after_key = after.map(|id| self.record_key(id)).transpose()?;
        let start = match &after_key {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.st(table.range::<&[u8]>((start, Bound::Unbounded)))? {
            if out.len() >= limit.max(1) {
                break;
            }
            let (_, value) = self.st(item)?;
            out.push(self.decode(CONFLICTS_NAME, value.value())?);
        }
        Ok(out)
    }

    /// How many conflicts are open.
    pub fn open_conflict_count(&self, txn: &impl TxnRead) -> Result<u64, StoreError> {
        let table = self.st(txn.table(CONFLICTS))?;
        self.st(table.len())
    }

    /// The local copy of a record, if it exists (a deleted record does not).
    pub fn record(&self, txn: &impl TxnRead, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let key = self.record_key(id)?;
        self.get_record(txn, &key)
    }

    /// The last known server copy of a record (its merge base), if any: the stored base of a
    /// record with a local change, or the local copy itself of a clean record (one holding a
    /// change tag with no pending or parked change).
    pub fn merge_base(
        &self,
        txn: &impl TxnRead,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let key = self.record_key(id)?;
        if let Some(base) = self.get_value(txn, BASES, BASES_NAME, &key)? {
            return Ok(Some(base));
        }
        if self.outbox.entry(txn, id)?.is_some() {
            return Ok(None);
        }
        Ok(self.get_record(txn, &key)?.filter(|r| r.system.is_some()))
    }

    /// The tombstone of a record deleted locally, if it is still kept.
    pub fn tombstone(
        &self,
        txn: &impl TxnRead,
        id: &RecordId,
    ) -> Result<Option<Tombstone>, StoreError> {
        let key = self.record_key(id)?;
        self.get_tombstone(txn, &key)
    }

    /// A zone's change token, if it was fetched before.
    pub fn change_token(
        &self,
        txn: &impl TxnRead,
        zone: &ZoneId,
    ) -> Result<Option<ChangeToken>, StoreError> {
        let key = self.zone_key(zone)?;
        self.get_value(txn, TOKENS, TOKENS_NAME, &key)
    }

    /// Up to `limit` records of a type (at least one), after the record `after` (exclusive), in
    /// key order.
    pub fn records_of_type(
        &self,
        txn: &impl TxnRead,
        record_type: &str,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        let limit = limit.max(1);
        let prefix = self.encode(&record_type, "a record type")?;
        let after_key = after.map(|id| self.type_key(record_type, id)).transpose()?;
        let index = self.st(txn.table(BY_TYPE))?;
        let mut ids = self.scan_prefix(
            &index,
            &prefix,
            after_key.as_deref(),
            limit.saturating_add(1),
            |key, ()| {
                let (_, id): (String, RecordId) = self.decode(BY_TYPE_NAME, key)?;
                Ok(id)
            },
        )?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let table = self.st(txn.table(RECORDS))?;
        let mut records = Vec::with_capacity(ids.len());
        for id in &ids {
            let key = self.record_key(id)?;
            let Some(value) = self.st(table.get(key.as_slice()))? else {
                return Err(self.corrupt(BY_TYPE_NAME, format!("index names missing record {id}")));
            };
            records.push(self.decode(RECORDS_NAME, value.value())?);
        }
        let next = if more { ids.pop() } else { None };
        Ok(RecordPage { records, next })
    }

    /// Up to `limit` records of a zone (at least one), after the record `after` (exclusive), in key
    /// order.
    pub fn records_in_zone(
        &self,
        txn: &impl TxnRead,
        zone: &ZoneId,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        let limit = limit.max(1);
        let prefix = self.zone_key(zone)?;
        let after_key = after.map(|id| self.record_key(id)).transpose()?;
        let mut found =
            self.records_with_prefix(txn, &prefix, after_key.as_deref(), limit.saturating_add(1))?;
        let more = found.len() > limit;
        found.truncate(limit);
        let records: Vec<Record> = found.into_iter().map(|(_, r)| r).collect();
        let next = if more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(RecordPage { records, next })
    }

    /// How many local records hold a change tag (the server has confirmed them at least once).
    pub fn tagged_count(&self, txn: &impl TxnRead) -> Result<u64, StoreError> {
        let tagged = self.st(txn.table(TAGGED))?;
        self.st(tagged.len())
    }

    // ----- helpers -----

    fn put_record(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        record: &Record,
        old: Option<&Record>,
    ) -> Result<(), StoreError> {
        self.put_value(txn, RECORDS, key, record, "a record")?;
        // The indexes hold exactly the stored records' types and tags, so they change only where
        // the record's type or its having a tag did; most saves touch neither.
        if old.is_none_or(|old| old.record_type != record.record_type) {
            let mut by_type = self.st(txn.open_table(BY_TYPE))?;
            if let Some(old) = old {
                let old_key = self.type_key(&old.record_type, &old.id)?;
                self.st(by_type.remove(old_key.as_slice()))?;
            }
            let type_key = self.type_key(&record.record_type, &record.id)?;
            self.st(by_type.insert(type_key.as_slice(), ()))?;
        }
        let was_tagged = old.is_some_and(|old| old.system.is_some());
        if was_tagged != record.system.is_some() {
            let mut tagged = self.st(txn.open_table(TAGGED))?;
            if was_tagged {
                self.st(tagged.remove(key))?;
            } else {
                self.st(tagged.insert(key, ()))?;
            }
        }
        Ok(())
    }

    /// Keeps `old`, the local copy about to be replaced by `new` from another device (a fetched
    /// copy, a resolution), as the record's prior copy, if an app may hold it and a save of it
    /// would need rebasing: it has a change tag and `new` brings other values.
    fn remember_prior(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        old: Option<&Record>,
        new: &Record,
    ) -> Result<(), StoreError> {
        match old {
            Some(old)
                if old.change_tag().is_some()
                    && old.change_tag() != new.change_tag()
                    && (old.fields != new.fields || old.record_type != new.record_type) =>
            {
                self.put_value(txn, PRIORS, key, old, "a prior copy")
            }
            _ => Ok(()),
        }
    }

    fn remove_record(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
    ) -> Result<Option<Record>, StoreError> {
        let old: Option<Record> = self.take_value(txn, RECORDS, RECORDS_NAME, key)?;
        if let Some(old) = &old {
            self.unindex(txn, key, old)?;
        }
        Ok(old)
    }

    /// Takes a record that was removed from `records` out of the type and tag indexes.
    fn unindex(&self, txn: &WriteTransaction, key: &[u8], old: &Record) -> Result<(), StoreError> {
        let type_key = self.type_key(&old.record_type, &old.id)?;
        let mut by_type = self.st(txn.open_table(BY_TYPE))?;
        self.st(by_type.remove(type_key.as_slice()))?;
        if old.system.is_some() {
            let mut tagged = self.st(txn.open_table(TAGGED))?;
            self.st(tagged.remove(key))?;
        }
        Ok(())
    }

    fn get_record(&self, txn: &impl TxnRead, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.get_value(txn, RECORDS, RECORDS_NAME, key)
    }

    fn get_conflict(
        &self,
        txn: &impl TxnRead,
        key: &[u8],
    ) -> Result<Option<OpenConflict>, StoreError> {
        self.get_value(txn, CONFLICTS, CONFLICTS_NAME, key)
    }

    fn put_conflict(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        id: &RecordId,
        server: Option<&Record>,
    ) -> Result<(), StoreError> {
        let conflict = OpenConflict {
            id: id.clone(),
            server: server.cloned(),
        };
        self.put_value(txn, CONFLICTS, key, &conflict, "an open conflict")
    }

    fn get_tombstone(
        &self,
        txn: &impl TxnRead,
        key: &[u8],
    ) -> Result<Option<Tombstone>, StoreError> {
        self.get_value(txn, TOMBSTONES, TOMBSTONES_NAME, key)
    }

    fn put_tombstone(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        tombstone: &Tombstone,
    ) -> Result<(), StoreError> {
        self.put_value(txn, TOMBSTONES, key, tombstone, "a tombstone")
    }

    /// A newer server copy of a record deleted locally leaves it deleted (invariant 5): its
    /// tombstone keeps the newest system fields, and a delete still to be sent takes their tag so
    /// that it can succeed. Returns whether the record has a tombstone (if not, nothing changed).
    fn retag_tombstone(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
        id: &RecordId,
        system: Option<&SystemFields>,
    ) -> Result<bool, StoreError> {
        let Some(mut tombstone) = self.get_tombstone(txn, key)? else {
            return Ok(false);
        };
        tombstone.system = system.cloned();
        self.put_tombstone(txn, key, &tombstone)?;
        if tombstone.state == TombstoneState::DeletePending {
            self.outbox.set_change_tag(txn, id, system)?;
        }
        Ok(true)
    }

    fn take_tombstone(
        &self,
        txn: &WriteTransaction,
        key: &[u8],
    ) -> Result<Option<Tombstone>, StoreError> {
        self.take_value(txn, TOMBSTONES, TOMBSTONES_NAME, key)
    }

    /// A zone's records (record key and record), in key order: at most `limit`, after the key
    /// `after` (exclusive) if given.
    fn records_with_prefix(
        &self,
        txn: &impl TxnRead,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let table = self.st(txn.table(RECORDS))?;
        self.scan_prefix(&table, prefix, after, limit, |key, value| {
            Ok((key.to_vec(), self.decode(RECORDS_NAME, value)?))
        })
    }

    /// A zone's tombstones (record key and tombstone), in key order.
    fn tombstones_with_prefix(
        &self,
        txn: &impl TxnRead,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Tombstone)>, StoreError> {
        let table = self.st(txn.table(TOMBSTONES))?;
        self.scan_prefix(&table, prefix, None, usize::MAX, |key, value| {
            Ok((key.to_vec(), self.decode(TOMBSTONES_NAME, value)?))
        })
    }

    fn remove_prefix(
        &self,
        txn: &WriteTransaction,
        definition: TableDefinition<'static, &'static [u8], &'static [u8]>,
        prefix: &[u8],
    ) -> Result<usize, StoreError> {
        let mut table = self.st(txn.open_table(definition))?;
        let keys = self.scan_prefix(&table, prefix, None, usize::MAX, |key, _| Ok(key.to_vec()))?;
        for key in &keys {
            self.st(table.remove(key.as_slice()))?;
        }
        Ok(keys.len())
    }

    /// Maps `f` over the rows of a table whose keys start with `prefix` (one zone's records, or one
    /// type's index entries), in key order: at most `limit` rows, after the key `after`
    /// (exclusive) if given, else from the first key of the prefix.
    fn scan_prefix<V: Value + 'static, T>(
        &self,
        table: &impl ReadableTable<&'static [u8], V>,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        mut f: impl FnMut(&[u8], V::SelfType<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(prefix),
        };
        let mut out = Vec::new();
        for item in self.st(table.range::<&[u8]>((start, Bound::Unbounded)))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = self.st(item)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(f(key, value.value())?);
        }
        Ok(out)
    }

    fn get_value<T: DeserializeOwned>(
        &self,
        txn: &impl TxnRead,
        definition: TableDefinition<'static, &'static [u8], &'static [u8]>,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let table = self.st(txn.table(definition))?;
        match self.st(table.get(key))? {
            Some(value) => Ok(Some(self.decode(name, value.value())?)),
            None => Ok(None),
        }
    }

    fn put_value<T: Serialize>(
        &self,
        txn: &WriteTransaction,
        definition: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let bytes = self.encode(value, what)?;
        let mut table = self.st(txn.open_table(definition))?;
        self.st(table.insert(key, bytes.as_slice()))?;
        Ok(())
    }

    /// Removes a value and returns it decoded: one lookup, where a get and a remove take two.
    fn take_value<T: DeserializeOwned>(
        &self,
        txn: &WriteTransaction,
        definition: TableDefinition<'static, &'static [u8], &'static [u8]>,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let mut table = self.st(txn.open_table(definition))?;
        let removed = self.st(table.remove(key))?;
        removed
            .map(|value| self.decode(name, value.value()))
            .transpose()
    }

    fn remove_key(
        &self,
        txn: &WriteTransaction,
        definition: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        let mut table = self.st(txn.open_table(definition))?;
        Ok(self.st(table.remove(key))?.is_some())
    }

    fn record_key(&self, id: &RecordId) -> Result<Vec<u8>, StoreError> {
        keys::record_key(id).map_err(|e| self.encode_error("a record key", e))
    }

    fn zone_key(&self, zone: &ZoneId) -> Result<Vec<u8>, StoreError> {
        keys::zone_key(zone).map_err(|e| self.encode_error("a zone key", e))
    }

    fn type_key(&self, record_type: &str, id: &RecordId) -> Result<Vec<u8>, StoreError> {
        self.encode(&(record_type, id), "a record type key")
    }

    fn encode<T: Serialize>(&self, value: &T, what: &'static str) -> Result<Vec<u8>, StoreError> {
        codec::encode(value).map_err(|e| self.encode_error(what, e))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        codec::decode(bytes).map_err(|e| self.corrupt(table, e))
    }

    fn invalid_page(&self, page: &FetchedPage, reason: String) -> StoreError {
        StoreError::InvalidPage {
            zone: page.zone.clone(),
            reason,
        }
    }

    fn encode_error(&self, what: &'static str, e: impl Display) -> StoreError {
        StoreError::Encode {
            file: self.file().to_path_buf(),
            what,
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, table: &'static str, detail: impl Display) -> StoreError {
        StoreError::Corrupt {
            file: self.file().to_path_buf(),
            table,
            detail: detail.to_string(),
        }
    }

    fn st<T, E: Into<redb::Error>>(&self, result: Result<T, E>) -> Result<T, StoreError> {
        result.map_err(|e| self.storage_error(e.into()))
    }

    /// The store's error for a redb failure, naming the file.
    pub fn storage_error(&self, error: redb::Error) -> StoreError {
        storage_error(self.file(), error)
    }
}

/// Maps a redb error to the store's error for `file`.
pub(crate) fn storage_error(file: &Path, error: redb::Error) -> StoreError {
    match error {
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            file: file.to_path_buf(),
            table: "(file)",
            detail,
        },
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            file: file.to_path_buf(),
        },
        redb::Error::TableDoesNotExist(table) => StoreError::Corrupt {
            file: file.to_path_buf(),
            table: "(file)",
            detail: format!(
                "table `{table}` is missing; the file was not opened as a skysync store"
            ),
        },
        other => StoreError::Storage {
            file: file.to_path_buf(),
            source: Box::new(other),
        },
    }
}

fn validate_id(id: &RecordId) -> Result<(), StoreError> {
    let reason = if id.record_name.is_empty() {
        "the record name is empty"
    } else if id.zone.zone_name.is_empty() {
        "the zone name is empty"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidRecord {
        id: id.clone(),
        reason,
    })
}

fn validate_record(record: &Record) -> Result<(), StoreError> {
    validate_id(&record.id)?;
    if record.record_type.is_empty() {
        return Err(StoreError::InvalidRecord {
            id: record.id.clone(),
            reason: "the record type is empty",
        });
    }
    Ok(())
}

/// Whether a pending change is a create: a save without a change tag, made on no server copy.
fn is_create(change: &PendingChange) -> bool {
    matches!(change, PendingChange::Save(record) if record.system.is_none())
}

/// The app's edit of `read` (its copy `edited`) applied to `current`, the newer local record: every
/// field the app changed, added or removed in its copy takes the app's value; every other field
/// keeps `current`'s. The record type is the copy's; the system fields are `current`'s.
fn rebase_edit(edited: &Record, read: &Record, current: &Record) -> Record {
    let mut rebased = current.clone();
    rebased.record_type = edited.record_type.clone();
    let names: std::collections::BTreeSet<&String> =
        edited.fields.keys().chain(read.fields.keys()).collect();
    for name in names {
        let mine = edited.fields.get(name);
        if mine == read.fields.get(name) {
            continue;
        }
        match mine {
            Some(field) => {
                rebased.fields.insert(name.clone(), field.clone());
            }
            None => {
                rebased.fields.remove(name);
            }
        }
    }
    rebased
}
