//! The durable outbox of skysync: pending changes, coalescing, batches and acknowledgement.
//!
//! Local changes wait here until the server confirmed them. The outbox lives in the same redb file as
//! the store, and [`Outbox`]'s functions work over the caller's transaction, so that the store commits
//! a record and its outbox entry in one transaction. The session drives the outbox through a
//! [`QueueHandle`] (a ractor actor running each message as one transaction on a blocking thread).
//!
//! - Each record has at most one pending change: a new change coalesces into it and keeps its place
//!   (save A, save B, save A sends A then B; save then delete sends the delete).
//! - Every change version has a [`ChangeSeq`]. [`QueueHandle::next_batch`] takes changes of one zone
//!   from the front up to a count and a byte limit on the request as sent ([`BatchLimits`]) and
//!   removes nothing; acknowledging a change (the store does it when the server confirmed it)
//!   removes exactly the version that was sent, so an edit made after the batch was formed stays
//!   pending.
//! - A change the server refuses for good is parked with its reason, listed, and retried on demand.
//!
//! ```
//! use skysync_model::{PendingChange, Record, RecordId, ZoneId};
//! use skysync_queue::{Outbox, QueueConfig, QueueHandle, write_durably};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("sync.redb");
//! let db = Arc::new(redb::Database::create(&path)?);
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let (queue, _join) = QueueHandle::spawn(db.clone(), &path, QueueConfig::default()).await?;
//!
//!     // The store enqueues inside its own transaction; here we do it by hand.
//!     let outbox = Outbox::new(&path);
//!     let note = |name: &str, text: &str| {
//!         Record::new(RecordId::new(ZoneId::new("Notes"), name), "Note").with("text", text)
//!     };
//!     let edits = [note("a", "1"), note("b", "1"), note("a", "2")];
//!     let db2 = db.clone();
//!     tokio::task::spawn_blocking(move || {
//!         write_durably(&db2, &outbox, |o, txn| {
//!             for edit in edits {
//!                 o.enqueue(txn, PendingChange::Save(edit))?;
//!             }
//!             Ok(())
//!         })
//!     })
//!     .await??;
//!
//!     // Coalesced: a (latest copy), then b.
//!     let batch = queue.next_batch().await?;
//!     let names: Vec<_> = batch.changes().iter().map(|c| c.record_id().record_name.clone()).collect();
//!     assert_eq!(names, ["a", "b"]);
//!
//!     // The server confirmed it: the store acknowledges exactly those versions, in the same
//!     // transaction as the records' new change tags (here by hand).
//!     let outbox = Outbox::new(&path);
//!     let db2 = db.clone();
//!     tokio::task::spawn_blocking(move || {
//!         write_durably(&db2, &outbox, |o, txn| {
//!             for change in batch.changes() {
//!                 o.ack_change(txn, change.record_id(), change.seq)?;
//!             }
//!             Ok(())
//!         })
//!     })
//!     .await??;
//!     assert_eq!(queue.depth().await?.pending, 0);
//!     queue.stop().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod actor;
mod batch;
mod error;
pub mod keys;
mod outbox;

pub use actor::{
    QueueActor, QueueArgs, QueueConfig, QueueHandle, QueueMsg, QueueState, write_durably,
};
pub use batch::{
    Batch, BatchLimits, ChangeSeq, OutboxEntry, ParkedChange, QueueDepth, QueuedChange,
};
pub use error::QueueError;
pub use outbox::{OUTBOX_FORMAT_VERSION, Outbox};

use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition, TableError, Value,
    WriteTransaction,
};

mod sealed {
    pub trait Sealed {}
    impl Sealed for redb::ReadTransaction {}
    impl Sealed for redb::WriteTransaction {}
}

/// A redb transaction that tables can be read through: a [`ReadTransaction`] or a
/// [`WriteTransaction`]. Lets the outbox's (and the store's) reading functions run inside a write
/// transaction as well as on a read snapshot.
pub trait TxnRead: sealed::Sealed {
    /// The table type this transaction opens.
    type Table<'t, K: Key + 'static, V: Value + 'static>: ReadableTable<K, V>
    where
        Self: 't;

    /// Opens a table for reading. In a write transaction a missing table is created (empty); in a
    /// read transaction it is [`TableError::TableDoesNotExist`].
    fn table<'t, K: Key + 'static, V: Value + 'static>(
        &'t self,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'t, K, V>, TableError>;
}

impl TxnRead for ReadTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = ReadOnlyTable<K, V>;

    fn table<'t, K: Key + 'static, V: Value + 'static>(
        &'t self,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'t, K, V>, TableError> {
        self.open_table(definition)
    }
}

impl TxnRead for WriteTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = Table<'t, K, V>;

    fn table<'t, K: Key + 'static, V: Value + 'static>(
        &'t self,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'t, K, V>, TableError> {
        self.open_table(definition)
    }
}
