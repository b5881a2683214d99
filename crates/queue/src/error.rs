//! The one error type of the outbox.

use skysync_actors::LocalError;
use std::path::PathBuf;

/// Everything that can go wrong in the outbox. Variants about the file name it.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The storage engine (redb) failed: an I/O error, a full disk, a file it cannot use. Nothing of
    /// the failed operation was committed. Check the disk and the file, then retry or reopen.
    #[error("outbox storage in {} failed: {source}", file.display())]
    Storage {
        /// The database file.
        file: PathBuf,
        /// What redb reported.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored value cannot be read back: the file is damaged or was written by an incompatible
    /// build. Nothing is guessed; restore the file from a backup or remove it and resync.
    #[error("outbox table `{table}` in {} holds a value this build cannot read: {detail}", file.display())]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// The table holding the unreadable value.
        table: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A value could not be encoded for storage. This is a bug in skysync: please report it.
    #[error("could not encode {what} for the outbox in {}: {detail}", file.display())]
    Encode {
        /// The database file.
        file: PathBuf,
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// The file's outbox was written by a newer skysync with a format this build does not know; it
    /// is refused rather than misread. Upgrade skysync to open it.
    #[error("the outbox in {} has format version {found}, newer than version {supported} which this build reads; upgrade skysync", file.display())]
    NewerFormat {
        /// The database file.
        file: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The outbox tables are missing from the file: it was never opened as a skysync store. Open it
    /// through the store (or spawn the queue actor, which creates them) first.
    #[error("the outbox tables are missing from {}; open the file as a skysync store first", file.display())]
    NotInitialized {
        /// The database file.
        file: PathBuf,
    },
    /// The queue actor did not answer: timed out, restarting, or stopped mid-call (a local
    /// failure, never a storage one). For a write whose outcome is unknown, read back (depth, the
    /// pending entry) before redoing it; the supervisor restarts the actor.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The queue actor (or its worker) has stopped; the supervisor restarts it. Retry through a
    /// fresh handle once it is back.
    #[error("the queue is not running (`{operation}`): {detail}")]
    Stopped {
        /// The operation that was asked for.
        operation: &'static str,
        /// What the actor runtime reported.
        detail: String,
    },
}
