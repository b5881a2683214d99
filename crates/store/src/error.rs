//! The one error type of the store.

use skysync_actors::LocalError;
use skysync_model::{RecordId, ZoneId};
use skysync_queue::QueueError;
use std::path::PathBuf;

/// Everything that can go wrong in the store. Variants about the file name it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine (redb) failed: an I/O error, a full disk. Nothing of the failed operation
    /// was committed. Check the disk, then retry or reopen the file.
    #[error("store storage in {} failed: {source}", file.display())]
    Storage {
        /// The database file.
        file: PathBuf,
        /// What redb reported.
        #[source]
        source: Box<redb::Error>,
    },
    /// A group of local changes could not be committed (the commit or its transaction failed); the
    /// changes are not confirmed durable. Check the disk and retry the save.
    #[error("commit to {} failed: {detail}", file.display())]
    CommitFailed {
        /// The database file.
        file: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The file is not a readable skysync store: not a redb file, damaged, or holding values this build
    /// cannot read. Nothing is guessed; restore the file from a backup, or remove it and resync.
    #[error("{} is corrupt ({table}): {detail}", file.display())]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// The table holding the unreadable value, or `(file)` for the file itself.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The file was written by a newer skysync in a format this build does not know; it is refused
    /// rather than misread. Upgrade skysync to open it.
    #[error("{} has store format version {found}, newer than version {supported} which this build reads; upgrade skysync", file.display())]
    NewerFormat {
        /// The database file.
        file: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// Another store (in this or another process) has the file open. Close it first; one engine per
    /// file.
    #[error("{} is already open by another store", file.display())]
    AlreadyOpen {
        /// The database file.
        file: PathBuf,
    },
    /// A value could not be encoded for storage. This is a bug in skysync: please report it.
    #[error("could not encode {what} for {}: {detail}", file.display())]
    Encode {
        /// The database file.
        file: PathBuf,
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// The app handed the store a record it cannot keep (an empty name or type). Fix the record.
    #[error("record {id} cannot be saved: {reason}")]
    InvalidRecord {
        /// The record.
        id: RecordId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fetched page is inconsistent (a record outside the page's zone, a server copy without
    /// system fields). Nothing of it was applied and the zone's token did not move; this is a bug in
    /// the caller or the server's answer, report it.
    #[error("fetched page for zone {zone} refused: {reason}")]
    InvalidPage {
        /// The zone the page was for.
        zone: ZoneId,
        /// What is wrong with it.
        reason: String,
    },
    /// A confirmation or conflict resolution is inconsistent (a server copy without system fields, a
    /// resolution for a different record). Nothing of it was applied; this is a bug in the caller.
    #[error("confirmation for {id} refused: {reason}")]
    InvalidConfirmation {
        /// The record.
        id: RecordId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The outbox failed; see the inner error for what to do.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store actor did not answer: timed out, restarting, or stopped mid-call (a local
    /// failure, never a storage one). For a write whose outcome is unknown, read back before
    /// redoing it; the supervisor restarts the actor.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The store actor or its writer thread has stopped; the supervisor restarts it. Retry through a
    /// fresh handle once it is back.
    #[error("the store is not running (`{operation}`): {detail}")]
    Stopped {
        /// The operation that was asked for.
        operation: &'static str,
        /// What was reported.
        detail: String,
    },
}
