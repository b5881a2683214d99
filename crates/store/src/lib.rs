//! The local mirror of skysync in redb: records, merge bases, change tokens and tombstones.
//!
//! One redb file per engine holds the store's tables and the outbox's ([`skysync_queue`]). The store
//! keeps DESIGN.md's storage invariants:
//!
//! 1. A local change and its outbox entry commit in one transaction; [`StoreHandle::save`] returns
//!    once both are durable. Concurrent saves share one commit (group commit on a writer thread).
//! 2. A fetched page and the zone's new token commit in one transaction; replaying a page is harmless.
//! 3. The outbox forgets a change only when the server confirmed it ([`StoreHandle::confirm_sent`]).
//! 4. Changes coalesce per record, and a confirmation's new change tag reaches any newer pending edit.
//! 5. A record deleted locally never comes back from stale data, neither from a late confirmation
//!    nor from a fetch that crossed the delete; a live copy after the confirmed delete is a new life
//!    of the record and is applied.
//! 6. Fetched data never overwrites a record with pending local changes, and never moves its merge
//!    base: the server copy is kept beside them as an [`OpenConflict`] until a resolution is
//!    committed ([`StoreHandle::commit_resolution`], one transaction for every kind of resolution).
//! 7. The file carries a format version; a newer one, or a damaged file, is a typed error naming it.
//! 8. Sync metadata ([`SyncMetadata`]: the database token, ensured zones and subscriptions, the
//!    account, last fetch and send, the throttle's learned state) commits with the data it describes.
//!
//! The store and the queue share the file and restart together under a supervisor ([`StoreUnit`]);
//! their handles stay valid across restarts. A writer thread that can no longer commit fails its
//! actor, so the supervisor reopens the file.
//!
//! [`Mirror`] holds the functions over a redb transaction; [`StoreHandle`] is the actor the app and
//! the session talk to. Every redb call runs on a blocking thread, never on the async ones.
//!
//! ```
//! use skysync_model::{FieldValue, Record, RecordId, ZoneId};
//! use skysync_store::{StoreConfig, StoreFile, StoreHandle};
//! use skysync_queue::{OutboxEntry, QueueConfig, QueueHandle};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let file = StoreFile::open_async(dir.path().join("sync.redb")).await?;
//!     let (queue, _) =
//!         QueueHandle::spawn(file.database().clone(), file.path(), QueueConfig::default()).await?;
//!     let (store, _) = StoreHandle::spawn(file, StoreConfig::default()).await?;
//!
//!     let id = RecordId::new(ZoneId::new("Notes"), "n1");
//!     // Durable when it returns: the record and its outbox entry, in one transaction.
//!     store.save(Record::new(id.clone(), "Note").with("title", "Groceries")).await?;
//!     assert!(matches!(store.pending_change(id.clone()).await?, Some(OutboxEntry::Pending(_))));
//!
//!     let batch = queue.next_batch().await?;
//!     assert_eq!(batch.len(), 1);
//!     let stored = store.record(id).await?.expect("saved");
//!     assert_eq!(stored.get("title"), Some(&FieldValue::String("Groceries".into())));
//!
//!     store.stop().await;
//!     queue.stop().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod actor;
mod error;
mod file;
mod mirror;
pub mod power_loss;
mod types;
mod unit;
mod writer;

pub use actor::{StoreActor, StoreConfig, StoreHandle, StoreMsg, StoreState};
pub use error::StoreError;
pub use file::{STORE_CACHE_BYTES, StoreFile};
pub use mirror::{Mirror, STORE_FORMAT_VERSION};
pub use skysync_queue::TxnRead;
pub use types::{
    CommitReceipt, ConfirmOutcome, ConfirmedChange, DatabaseChanges, DatabaseChangesOutcome,
    FetchOutcome, FetchedPage, LocalChange, OpenConflict, RecordPage, ResolveOutcome,
    ResolvedConflict, SyncMetadata, SyncMetadataChange, Tombstone, TombstoneState, ZoneRemoval,
    ZoneReset,
};
pub use unit::StoreUnit;
pub use writer::WriterStats;
