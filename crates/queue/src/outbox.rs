//! The outbox tables and the functions over a redb transaction that read and change them.
//!
//! Every function takes the caller's transaction, so a local change and its outbox entry can commit in
//! one transaction (the store does exactly that). Nothing here commits.
//!
//! Layout:
//! - `skysync.outbox.pending`: position (`i64`) → a pending change and its [`ChangeSeq`]. New records
//!   take the position of their sequence number (counting up from 1); requeued changes take positions
//!   counting down from -1, so they sort before everything else.
//! - `skysync.outbox.by_record`: record key → position of its one pending change (coalescing).
//! - `skysync.outbox.parked`: record key → a change parked as failed, with its reason.
//! - `skysync.outbox.meta`: the format version and the two counters.

use crate::batch::{Batch, BatchLimits, ChangeSeq, OutboxEntry, ParkedChange, QueueDepth};
use crate::error::QueueError;
use crate::keys;
use crate::{QueuedChange, TxnRead};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, Value, WriteTransaction};
use serde::{Deserialize, Serialize};
use skysync_model::{PendingChange, RecordId, SystemFields, ZoneId, codec};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The outbox format this build writes and reads.
pub const OUTBOX_FORMAT_VERSION: u64 = 1;

const META_NAME: &str = "skysync.outbox.meta";
const PENDING_NAME: &str = "skysync.outbox.pending";
const BY_RECORD_NAME: &str = "skysync.outbox.by_record";
const PARKED_NAME: &str = "skysync.outbox.parked";

const META: TableDefinition<'static, &str, u64> = TableDefinition::new(META_NAME);
const PENDING: TableDefinition<'static, i64, &[u8]> = TableDefinition::new(PENDING_NAME);
const BY_RECORD: TableDefinition<'static, &[u8], i64> = TableDefinition::new(BY_RECORD_NAME);
const PARKED: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new(PARKED_NAME);

const FORMAT_KEY: &str = "format_version";
const NEXT_SEQ_KEY: &str = "next_seq";
const FRONT_COUNT_KEY: &str = "front_count";

/// One row of the pending table.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    seq: ChangeSeq,
    change: PendingChange,
}

/// The outbox of one database file: the functions over a transaction that enqueue, coalesce, batch,
/// acknowledge, requeue and park pending changes.
///
/// It holds only the file's path, for error messages; clone it freely.
#[derive(Clone, Debug)]
pub struct Outbox {
    file: Arc<Path>,
}

impl Outbox {
    /// The outbox of the database file at `file` (used only to name the file in errors).
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: Arc::from(file.into()),
        }
    }

    /// The database file this outbox lives in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Creates the outbox tables if they do not exist and records the format version; refuses a file
    /// whose outbox has a newer format. Safe to call on every open.
    pub fn create_tables(&self, txn: &WriteTransaction) -> Result<(), QueueError> {
        {
            let mut meta = self.st(txn.open_table(META))?;
            let found = self.st(meta.get(FORMAT_KEY))?.map(|g| g.value());
            match found {
                None => {
                    self.st(meta.insert(FORMAT_KEY, OUTBOX_FORMAT_VERSION))?;
                }
                Some(v) => self.check_version(v)?,
            }
        }
        self.st(txn.open_table(PENDING))?;
        self.st(txn.open_table(BY_RECORD))?;
        self.st(txn.open_table(PARKED))?;
        Ok(())
    }

    /// Checks, in a read transaction, that the outbox tables exist and their format is one this
    /// build reads.
    pub fn check_format(&self, txn: &impl TxnRead) -> Result<(), QueueError> {
        let meta = self.st(txn.table(META))?;
        match self.st(meta.get(FORMAT_KEY))?.map(|g| g.value()) {
            None => Err(QueueError::NotInitialized {
                file: self.file.to_path_buf(),
            }),
            Some(v) => self.check_version(v),
        }
    }

    fn check_version(&self, found: u64) -> Result<(), QueueError> {
        if found > OUTBOX_FORMAT_VERSION {
            Err(QueueError::NewerFormat {
                file: self.file.to_path_buf(),
                found,
                supported: OUTBOX_FORMAT_VERSION,
            })
        } else if found == 0 {
            Err(self.corrupt(META_NAME, "format version 0 was never written"))
        } else {
            Ok(())
        }
    }

    /// Adds a local change at the back of the outbox, coalescing it with the record's pending change:
    /// the record keeps its place in line and the new change replaces the old one (a save after a
    /// save sends the latest copy, a delete after a save sends the delete). A parked change of the
    /// record is replaced too: the new edit is pending again. Returns the change's number.
    pub fn enqueue(
        &self,
        txn: &WriteTransaction,
        change: PendingChange,
    ) -> Result<ChangeSeq, QueueError> {
        self.put(txn, change, false)
    }

    /// Like [`Outbox::enqueue`], but moves the record's change to the front of the outbox, so that it
    /// is sent next (a conflict's resolution re-sent with the server's change tag).
    pub fn enqueue_front(
        &self,
        txn: &WriteTransaction,
        change: PendingChange,
    ) -> Result<ChangeSeq, QueueError> {
        self.put(txn, change, true)
    }

    fn put(
        &self,
        txn: &WriteTransaction,
        change: PendingChange,
        front: bool,
    ) -> Result<ChangeSeq, QueueError> {
        let key = self.record_key(change.record_id())?;
        let mut meta = self.st(txn.open_table(META))?;
        let seq = self.next_counter(&mut meta, NEXT_SEQ_KEY)?;
        let seq = ChangeSeq(seq);
        let bytes = self.encode_entry(seq, change)?;
        let mut parked = self.st(txn.open_table(PARKED))?;
        self.st(parked.remove(key.as_slice()))?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        let existing = self.st(by_record.get(key.as_slice()))?.map(|g| g.value());
        let pos = match (existing, front) {
            (Some(pos), false) => pos,
            (Some(pos), true) => {
                self.st(pending.remove(pos))?;
                self.front_position(&mut meta)?
            }
            (None, false) => self.back_position(seq)?,
            (None, true) => self.front_position(&mut meta)?,
        };
        self.st(pending.insert(pos, bytes.as_slice()))?;
        // A change coalescing in place keeps its position: rewriting the index would only copy its
        // pages into the commit.
        if existing != Some(pos) {
            self.st(by_record.insert(key.as_slice(), pos))?;
        }
        Ok(seq)
    }

    /// The changes at the front of the outbox for one zone, in order, up to `limits` (at least one
    /// when anything is pending). Removes nothing.
    ///
    /// A batch never mixes zones (`records/modify` takes one zone): its zone is that of the first
    /// pending change, and changes of other zones are passed over (they keep their places for a
    /// later batch). The byte limit counts each change's operation as it will be sent
    /// ([`PendingChange::wire_len`]). Parked changes are not pending and never in a batch.
    pub fn form_batch(&self, txn: &impl TxnRead, limits: BatchLimits) -> Result<Batch, QueueError> {
        let pending = self.st(txn.table(PENDING))?;
        let mut changes: Vec<QueuedChange> = Vec::new();
        let mut bytes = 0usize;
        let mut zone: Option<ZoneId> = None;
        let mut passed_over = 0usize;
        // Interleaved zones cost a scan past other zones' changes; bound it so that one batch never
        // reads the whole outbox.
        let pass_limit = limits.max_changes.saturating_mul(4).max(1024);
        for item in self.st(pending.iter())? {
            if changes.len() >= limits.max_changes || passed_over > pass_limit {
                break;
            }
            let (_, value) = self.st(item)?;
            let entry = self.decode_entry(value.value())?;
            let entry_zone = &entry.change.record_id().zone;
            match &zone {
                Some(zone) if zone != entry_zone => {
                    passed_over += 1;
                    continue;
                }
                Some(_) => {}
                None => zone = Some(entry_zone.clone()),
            }
            let wire_len = entry.change.wire_len();
            if !changes.is_empty() && bytes.saturating_add(wire_len) > limits.max_bytes {
                break;
            }
            bytes = bytes.saturating_add(wire_len);
            changes.push(QueuedChange {
                seq: entry.seq,
                change: entry.change,
                wire_len,
            });
        }
        Ok(Batch::from_changes(changes))
    }

    /// Up to `limit` pending changes of every zone, in sending order (for inspection: diagnostics,
    /// the command-line tool, tests). Parked changes are not pending. Removes nothing.
    pub fn pending(
        &self,
        txn: &impl TxnRead,
        limit: usize,
    ) -> Result<Vec<QueuedChange>, QueueError> {
        let pending = self.st(txn.table(PENDING))?;
        let mut changes = Vec::new();
        for item in self.st(pending.iter())? {
            if changes.len() >= limit {
                break;
            }
            let (_, value) = self.st(item)?;
            let entry = self.decode_entry(value.value())?;
            let wire_len = entry.change.wire_len();
            changes.push(QueuedChange {
                seq: entry.seq,
                change: entry.change,
                wire_len,
            });
        }
        Ok(changes)
    }

    /// Removes the record's pending change if it is still version `seq`; returns whether it did. A
    /// record changed since (a newer version) or parked is left alone.
    ///
    /// This is the store's part of confirming a send (`Mirror::confirm_sent` calls it in the same
    /// transaction that stores the record's new change tag and merge base); nothing else should
    /// acknowledge a change.
    pub fn ack_change(
        &self,
        txn: &WriteTransaction,
        id: &RecordId,
        seq: ChangeSeq,
    ) -> Result<bool, QueueError> {
        let key = self.record_key(id)?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        self.ack_key(&mut by_record, &mut pending, &key, seq)
    }

    /// [`Outbox::ack_change`] over tables the caller opened, by record key.
    fn ack_key(
        &self,
        by_record: &mut Table<'_, &'static [u8], i64>,
        pending: &mut Table<'_, i64, &'static [u8]>,
        key: &[u8],
        seq: ChangeSeq,
    ) -> Result<bool, QueueError> {
        let Some(pos) = self.st(by_record.get(key))?.map(|g| g.value()) else {
            return Ok(false);
        };
        if self.entry_at(pending, pos)?.0.seq != seq {
            return Ok(false);
        }
        self.st(pending.remove(pos))?;
        self.st(by_record.remove(key))?;
        Ok(true)
    }

    /// Drops the record's pending or parked change, whatever its version: the store does this when
    /// a conflict's resolution accepts the server's side, in the same transaction. Returns whether
    /// there was a change to drop.
    pub fn discard(&self, txn: &WriteTransaction, id: &RecordId) -> Result<bool, QueueError> {
        let key = self.record_key(id)?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        let mut parked = self.st(txn.open_table(PARKED))?;
        let mut found = self.st(parked.remove(key.as_slice()))?.is_some();
        if let Some(pos) = self
            .st(by_record.remove(key.as_slice()))?
            .map(|g| g.value())
        {
            if self.st(pending.remove(pos))?.is_none() {
                return Err(self.dangling_index(pos));
            }
            found = true;
        }
        Ok(found)
    }

    /// Moves the batch's records to the front of the outbox, in the batch's order, so that they go
    /// out before anything else (the halves of a split batch, a batch to re-send first). Each record
    /// keeps its latest pending version; records no longer pending are skipped. Returns how many moved.
    pub fn requeue_front(
        &self,
        txn: &WriteTransaction,
        batch: &Batch,
    ) -> Result<usize, QueueError> {
        let mut meta = self.st(txn.open_table(META))?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        let mut moved = 0;
        for change in batch.changes().iter().rev() {
            let key = self.record_key(change.record_id())?;
            let Some(pos) = self.st(by_record.get(key.as_slice()))?.map(|g| g.value()) else {
                continue;
            };
            let Some(value) = self.st(pending.remove(pos))?.map(|g| g.value().to_vec()) else {
                return Err(self.dangling_index(pos));
            };
            let new_pos = self.front_position(&mut meta)?;
            self.st(pending.insert(new_pos, value.as_slice()))?;
            self.st(by_record.insert(key.as_slice(), new_pos))?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Parks the record's pending change as failed with `reason`, if it is still version `seq` (a
    /// newer local edit was not refused and stays pending). Returns whether it parked.
    pub fn park(
        &self,
        txn: &WriteTransaction,
        id: &RecordId,
        seq: ChangeSeq,
        reason: &str,
    ) -> Result<bool, QueueError> {
        let key = self.record_key(id)?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        let Some(pos) = self.st(by_record.get(key.as_slice()))?.map(|g| g.value()) else {
            return Ok(false);
        };
        let (entry, _) = self.entry_at(&pending, pos)?;
        if entry.seq != seq {
            return Ok(false);
        }
        let parked = ParkedChange {
            seq: entry.seq,
            change: entry.change,
            reason: reason.to_owned(),
        };
        let bytes = self.encode(&parked, "a parked change")?;
        self.st(pending.remove(pos))?;
        self.st(by_record.remove(key.as_slice()))?;
        let mut parked_table = self.st(txn.open_table(PARKED))?;
        self.st(parked_table.insert(key.as_slice(), bytes.as_slice()))?;
        Ok(true)
    }

    /// Every parked change, oldest version first.
    pub fn parked(&self, txn: &impl TxnRead) -> Result<Vec<ParkedChange>, QueueError> {
        let table = self.st(txn.table(PARKED))?;
        let mut out = Vec::new();
        for item in self.st(table.iter())? {
            let (_, value) = self.st(item)?;
            out.push(self.decode_parked(value.value())?);
        }
        out.sort_by_key(|p| p.seq);
        Ok(out)
    }

    /// Makes parked changes pending again, at the front of the outbox (oldest first), each under a
    /// new number: all of them, or only those of the given records. Returns how many.
    pub fn retry_parked(
        &self,
        txn: &WriteTransaction,
        only: Option<&[RecordId]>,
    ) -> Result<usize, QueueError> {
        let mut parked_table = self.st(txn.open_table(PARKED))?;
        let mut chosen: Vec<(Vec<u8>, ParkedChange)> = Vec::new();
        match only {
            None => {
                for item in self.st(parked_table.iter())? {
                    let (key, value) = self.st(item)?;
                    chosen.push((key.value().to_vec(), self.decode_parked(value.value())?));
                }
            }
            Some(ids) => {
                for id in ids {
                    let key = self.record_key(id)?;
                    if let Some(value) = self.st(parked_table.get(key.as_slice()))? {
                        let parked = self.decode_parked(value.value())?;
                        chosen.push((key, parked));
                    }
                }
            }
        }
        chosen.sort_by_key(|(_, p)| p.seq);
        let mut meta = self.st(txn.open_table(META))?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        for (key, parked) in chosen.iter().rev() {
            self.st(parked_table.remove(key.as_slice()))?;
            // A retry is a new attempt: a new number, so no batch formed before it can acknowledge it.
            let seq = ChangeSeq(self.next_counter(&mut meta, NEXT_SEQ_KEY)?);
            let bytes = self.encode_entry(seq, parked.change.clone())?;
            let pos = self.front_position(&mut meta)?;
            self.st(pending.insert(pos, bytes.as_slice()))?;
            self.st(by_record.insert(key.as_slice(), pos))?;
        }
        Ok(chosen.len())
    }

    /// The outbox's entry for a record: its pending change, its parked change, or nothing.
    pub fn entry(
        &self,
        txn: &impl TxnRead,
        id: &RecordId,
    ) -> Result<Option<OutboxEntry>, QueueError> {
        let key = self.record_key(id)?;
        let by_record = self.st(txn.table(BY_RECORD))?;
        if let Some(pos) = self.st(by_record.get(key.as_slice()))?.map(|g| g.value()) {
            let pending = self.st(txn.table(PENDING))?;
            let (entry, _) = self.entry_at(&pending, pos)?;
            let wire_len = entry.change.wire_len();
            return Ok(Some(OutboxEntry::Pending(QueuedChange {
                seq: entry.seq,
                change: entry.change,
                wire_len,
            })));
        }
        let parked = self.st(txn.table(PARKED))?;
        match self.st(parked.get(key.as_slice()))? {
            Some(value) => Ok(Some(OutboxEntry::Parked(
                self.decode_parked(value.value())?,
            ))),
            None => Ok(None),
        }
    }

    /// Sets the change tag (the server's system fields, or none) that the record's pending or parked
    /// change will be sent with, without making it a new version. This is how a confirmation or a
    /// zone reset reaches a change edited after its batch was formed, so that what is sent always
    /// carries the latest known tag. Returns whether the record had a change to update.
    pub fn set_change_tag(
        &self,
        txn: &WriteTransaction,
        id: &RecordId,
        system: Option<&SystemFields>,
    ) -> Result<bool, QueueError> {
        let key = self.record_key(id)?;
        let by_record = self.st(txn.open_table(BY_RECORD))?;
        if let Some(pos) = self.st(by_record.get(key.as_slice()))?.map(|g| g.value()) {
            let mut pending = self.st(txn.open_table(PENDING))?;
            let (mut entry, _) = self.entry_at(&pending, pos)?;
            apply_tag(&mut entry.change, system);
            let bytes = self.encode_entry(entry.seq, entry.change)?;
            self.st(pending.insert(pos, bytes.as_slice()))?;
            return Ok(true);
        }
        let mut parked_table = self.st(txn.open_table(PARKED))?;
        let Some(value) = self
            .st(parked_table.get(key.as_slice()))?
            .map(|g| g.value().to_vec())
        else {
            return Ok(false);
        };
        let mut parked = self.decode_parked(&value)?;
        apply_tag(&mut parked.change, system);
        let bytes = self.encode(&parked, "a parked change")?;
        self.st(parked_table.insert(key.as_slice(), bytes.as_slice()))?;
        Ok(true)
    }

    /// Clears the change tag of every pending and parked change in a zone (the zone is gone on the
    /// server, so no tag of it is valid any more). Returns how many changes were touched.
    pub fn clear_zone_tags(
        &self,
        txn: &WriteTransaction,
        zone: &ZoneId,
    ) -> Result<usize, QueueError> {
        let prefix = self.zone_key(zone)?;
        let positions = {
            let by_record = self.st(txn.open_table(BY_RECORD))?;
            self.scan_prefix(&by_record, &prefix, |_, pos| Ok(pos))?
        };
        let mut pending = self.st(txn.open_table(PENDING))?;
        for &pos in &positions {
            let (mut entry, _) = self.entry_at(&pending, pos)?;
            apply_tag(&mut entry.change, None);
            let bytes = self.encode_entry(entry.seq, entry.change)?;
            self.st(pending.insert(pos, bytes.as_slice()))?;
        }
        let mut parked_table = self.st(txn.open_table(PARKED))?;
        let parked = self.scan_prefix(&parked_table, &prefix, |key, value| {
            Ok((key.to_vec(), self.decode_parked(value)?))
        })?;
        let touched = positions.len() + parked.len();
        for (key, mut parked) in parked {
            apply_tag(&mut parked.change, None);
            let bytes = self.encode(&parked, "a parked change")?;
            self.st(parked_table.insert(key.as_slice(), bytes.as_slice()))?;
        }
        Ok(touched)
    }

    /// Removes every pending and parked change of a zone (the app removed the zone's data). Returns
    /// how many were removed.
    pub fn remove_zone(&self, txn: &WriteTransaction, zone: &ZoneId) -> Result<usize, QueueError> {
        let prefix = self.zone_key(zone)?;
        let mut by_record = self.st(txn.open_table(BY_RECORD))?;
        let mut pending = self.st(txn.open_table(PENDING))?;
        let indexed = self.scan_prefix(&by_record, &prefix, |key, pos| Ok((key.to_vec(), pos)))?;
        for (key, pos) in &indexed {
            self.st(pending.remove(pos))?;
            self.st(by_record.remove(key.as_slice()))?;
        }
        let mut parked = self.st(txn.open_table(PARKED))?;
        let parked_keys = self.scan_prefix(&parked, &prefix, |key, _| Ok(key.to_vec()))?;
        for key in &parked_keys {
            self.st(parked.remove(key.as_slice()))?;
        }
        Ok(indexed.len() + parked_keys.len())
    }

    /// How many changes are pending and parked.
    pub fn depth(&self, txn: &impl TxnRead) -> Result<QueueDepth, QueueError> {
        let pending = self.st(txn.table(PENDING))?;
        let parked = self.st(txn.table(PARKED))?;
        Ok(QueueDepth {
            pending: self.st(pending.len())?,
            parked: self.st(parked.len())?,
        })
    }

    /// Maps `f` over the rows of a record-keyed table whose keys start with `prefix` (one zone's
    /// records: see [`crate::keys`]), in key order.
    fn scan_prefix<V: Value + 'static, T>(
        &self,
        table: &impl ReadableTable<&'static [u8], V>,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], V::SelfType<'_>) -> Result<T, QueueError>,
    ) -> Result<Vec<T>, QueueError> {
        let mut out = Vec::new();
        for item in self.st(table.range::<&[u8]>(prefix..))? {
            let (key, value) = self.st(item)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(f(key, value.value())?);
        }
        Ok(out)
    }

    fn next_counter(
        &self,
        meta: &mut redb::Table<'_, &'static str, u64>,
        name: &str,
    ) -> Result<u64, QueueError> {
        let current = self.st(meta.get(name))?.map(|g| g.value()).unwrap_or(0);
        let next = current
            .checked_add(1)
            .ok_or_else(|| self.corrupt(META_NAME, format!("counter `{name}` is exhausted")))?;
        self.st(meta.insert(name, next))?;
        Ok(next)
    }

    fn front_position(
        &self,
        meta: &mut redb::Table<'_, &'static str, u64>,
    ) -> Result<i64, QueueError> {
        let n = self.next_counter(meta, FRONT_COUNT_KEY)?;
        i64::try_from(n)
            .map(|n| -n)
            .map_err(|_| self.corrupt(META_NAME, "front counter out of range"))
    }

    fn back_position(&self, seq: ChangeSeq) -> Result<i64, QueueError> {
        i64::try_from(seq.0).map_err(|_| self.corrupt(META_NAME, "sequence out of range"))
    }

    fn record_key(&self, id: &RecordId) -> Result<Vec<u8>, QueueError> {
        keys::record_key(id).map_err(|e| self.encode_error("a record key", e))
    }

    fn zone_key(&self, zone: &ZoneId) -> Result<Vec<u8>, QueueError> {
        keys::zone_key(zone).map_err(|e| self.encode_error("a zone key", e))
    }

    fn encode_entry(&self, seq: ChangeSeq, change: PendingChange) -> Result<Vec<u8>, QueueError> {
        self.encode(&StoredEntry { seq, change }, "a pending change")
    }

    fn encode<T: Serialize>(&self, value: &T, what: &'static str) -> Result<Vec<u8>, QueueError> {
        codec::encode(value).map_err(|e| self.encode_error(what, e))
    }

    fn decode_entry(&self, bytes: &[u8]) -> Result<StoredEntry, QueueError> {
        codec::decode(bytes).map_err(|e| self.corrupt(PENDING_NAME, e))
    }

    /// The pending entry at `pos`, which the record index points at, and its encoded length.
    fn entry_at(
        &self,
        pending: &impl ReadableTable<i64, &'static [u8]>,
        pos: i64,
    ) -> Result<(StoredEntry, usize), QueueError> {
        let Some(value) = self.st(pending.get(pos))? else {
            return Err(self.dangling_index(pos));
        };
        let bytes = value.value();
        Ok((self.decode_entry(bytes)?, bytes.len()))
    }

    fn dangling_index(&self, pos: i64) -> QueueError {
        self.corrupt(
            BY_RECORD_NAME,
            format!("record index points at empty position {pos}"),
        )
    }

    fn decode_parked(&self, bytes: &[u8]) -> Result<ParkedChange, QueueError> {
        codec::decode(bytes).map_err(|e| self.corrupt(PARKED_NAME, e))
    }

    fn encode_error(&self, what: &'static str, e: impl Display) -> QueueError {
        QueueError::Encode {
            file: self.file.to_path_buf(),
            what,
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, table: &'static str, detail: impl Display) -> QueueError {
        QueueError::Corrupt {
            file: self.file.to_path_buf(),
            table,
            detail: detail.to_string(),
        }
    }

    /// Maps a redb result into this outbox's error, naming the file.
    fn st<T, E: Into<redb::Error>>(&self, result: Result<T, E>) -> Result<T, QueueError> {
        result.map_err(|e| self.storage_error(e.into()))
    }

    /// The outbox's error for a redb failure, naming the file. A missing outbox table in a read
    /// transaction means the file was never set up as a store.
    pub fn storage_error(&self, error: redb::Error) -> QueueError {
        match error {
            redb::Error::TableDoesNotExist(_) => QueueError::NotInitialized {
                file: self.file.to_path_buf(),
            },
            redb::Error::Corrupted(detail) => QueueError::Corrupt {
                file: self.file.to_path_buf(),
                table: "(file)",
                detail,
            },
            other => QueueError::Storage {
                file: self.file.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}

fn apply_tag(change: &mut PendingChange, system: Option<&SystemFields>) {
    match change {
        PendingChange::Save(record) => record.system = system.cloned(),
        PendingChange::Delete { change_tag, .. } => {
            *change_tag = system.map(|s| s.change_tag.clone());
        }
    }
}
