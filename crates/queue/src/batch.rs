//! What the outbox hands out: numbered changes, batches of them, their limits, and parked failures.

use serde::{Deserialize, Serialize};
use skysync_model::{PendingChange, RecordId, ZoneId};
use std::fmt;

/// The number of one version of a pending change.
///
/// Every local change the outbox accepts gets the next number of one increasing sequence, including
/// a change that coalesces into an earlier pending change of the same record. A batch remembers the
/// number of every change it carries, so acknowledging it removes exactly those versions: a record
/// edited after the batch was formed has a newer number and stays pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChangeSeq(pub u64);

impl fmt::Display for ChangeSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One pending change as the outbox holds it: the change and the number of its version.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedChange {
    /// The number of this version of the change; pass it back to acknowledge or park it.
    pub seq: ChangeSeq,
    /// The change to send: the latest local copy with the latest known change tag, or a deletion.
    pub change: PendingChange,
    /// How many bytes the change's operation takes in the request body
    /// ([`PendingChange::wire_len`]), as counted against [`BatchLimits::max_bytes`].
    pub wire_len: usize,
}

impl QueuedChange {
    /// The record this change is about.
    pub fn record_id(&self) -> &RecordId {
        self.change.record_id()
    }
}

/// How large a batch may grow.
///
/// A batch always holds at least one change, even one larger than `max_bytes` on its own: sending
/// it is how the server gets to say it is too large, after which the session parks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most changes in one batch (CloudKit accepts 200 operations per request).
    pub max_changes: usize,
    /// The most bytes of operations (their JSON, as sent) in one batch.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// The default count limit: CloudKit's 200 operations per request.
    pub const DEFAULT_MAX_CHANGES: usize = skysync_model::MAX_OPERATIONS_PER_REQUEST;
    /// The default byte limit: 2 MB of operations as sent.
    pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;

    /// Limits of `max_changes` changes and `max_bytes` bytes (a zero is treated as one).
    pub fn new(max_changes: usize, max_bytes: usize) -> Self {
        Self {
            max_changes: max_changes.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// No limit at all: a batch of everything pending (for inspection and tests).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }

    /// Half these limits (at least one change and one byte): what to ask for after a request was too large.
    pub fn halved(self) -> Self {
        Self::new(self.max_changes / 2, self.max_bytes / 2)
    }
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_CHANGES, Self::DEFAULT_MAX_BYTES)
    }
}

/// Changes taken from the front of the outbox to send in one request.
///
/// Forming a batch removes nothing: the changes stay pending until the batch (or a part of it) is
/// acknowledged after the server confirmed it, so a crash at any point resends the same work.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    changes: Vec<QueuedChange>,
}

impl Batch {
    pub(crate) fn from_changes(changes: Vec<QueuedChange>) -> Self {
        Self { changes }
    }

    /// The changes in sending order.
    pub fn changes(&self) -> &[QueuedChange] {
        &self.changes
    }

    /// Consumes the batch, returning its changes in sending order.
    pub fn into_changes(self) -> Vec<QueuedChange> {
        self.changes
    }

    /// How many changes the batch holds.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the outbox had nothing to send.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The size of all its changes' operations as sent.
    pub fn wire_len(&self) -> usize {
        self.changes.iter().map(|c| c.wire_len).sum()
    }

    /// The zone of the batch (every change of a batch is in one zone); `None` when empty.
    pub fn zone(&self) -> Option<&ZoneId> {
        self.changes.first().map(|c| &c.record_id().zone)
    }

    /// The version number this batch carries for a record, if it carries the record.
    pub fn seq_of(&self, id: &RecordId) -> Option<ChangeSeq> {
        self.changes
            .iter()
            .find(|c| c.record_id() == id)
            .map(|c| c.seq)
    }

    /// Splits the batch into its first and second halves (for a request the server found too large).
    /// A batch of one change cannot be split and comes back unchanged as the error.
    pub fn split(mut self) -> Result<(Batch, Batch), Batch> {
        if self.changes.len() < 2 {
            return Err(self);
        }
        let second = self.changes.split_off(self.changes.len() / 2);
        Ok((self, Batch { changes: second }))
    }

    /// Keeps only the changes for which `keep` returns true (e.g. the ones the server accepted,
    /// before acknowledging).
    pub fn retain(&mut self, keep: impl FnMut(&QueuedChange) -> bool) {
        self.changes.retain(keep);
    }
}

/// A change the server refused for a reason retrying cannot fix, set aside with that reason.
///
/// A parked change is never sent again on its own and never dropped: it stays visible through
/// [`crate::QueueHandle::parked`] until the app retries it, or a newer local edit of the same record
/// replaces it (the new edit is pending again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedChange {
    /// The number of the version that was refused.
    pub seq: ChangeSeq,
    /// The change itself.
    pub change: PendingChange,
    /// Why it was refused, as the session reported it (an error code and message, never field values).
    pub reason: String,
}

/// The outbox's current entry for one record: pending to be sent, or parked.
#[derive(Clone, Debug, PartialEq)]
pub enum OutboxEntry {
    /// Waiting to be sent.
    Pending(QueuedChange),
    /// Set aside after the server refused it.
    Parked(ParkedChange),
}

impl OutboxEntry {
    /// The change, pending or parked.
    pub fn change(&self) -> &PendingChange {
        match self {
            OutboxEntry::Pending(q) => &q.change,
            OutboxEntry::Parked(p) => &p.change,
        }
    }

    /// The number of the change's current version.
    pub fn seq(&self) -> ChangeSeq {
        match self {
            OutboxEntry::Pending(q) => q.seq,
            OutboxEntry::Parked(p) => p.seq,
        }
    }
}

/// How many changes the outbox holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Changes waiting to be sent.
    pub pending: u64,
    /// Changes parked as failed.
    pub parked: u64,
}
