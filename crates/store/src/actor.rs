//! The store actor and its handle: the local mirror as the app and the session use it.

use crate::error::StoreError;
use crate::file::StoreFile;
use crate::mirror::Mirror;
use crate::types::{
    CommitReceipt, ConfirmOutcome, ConfirmedChange, DatabaseChanges, DatabaseChangesOutcome,
    FetchOutcome, FetchedPage, LocalChange, OpenConflict, RecordPage, ResolveOutcome,
    ResolvedConflict, SyncMetadata, SyncMetadataChange, Tombstone, ZoneRemoval, ZoneReset,
};
use crate::writer::{TypedJob, WriteJob, Writer, WriterStats};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use skysync_actors::Mailbox;
use skysync_model::{ChangeToken, Record, RecordId, ZoneId};
use skysync_queue::{ChangeSeq, OutboxEntry};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How the store behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a handle waits for an answer before giving up with [`StoreError::TimedOut`]. A save
    /// waits for its durable commit, so leave room for a slow disk.
    pub call_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
        }
    }
}

type Reply<T> = RpcReplyPort<Result<T, StoreError>>;

/// The messages the store actor handles: its whole interface. [`StoreHandle`] builds them.
#[derive(Debug)]
pub enum StoreMsg {
    /// Save one record locally and queue it.
    Save {
        /// The latest local copy.
        record: Record,
        /// Its outbox version, once durable.
        reply: Reply<ChangeSeq>,
    },
    /// Delete one record locally and queue the delete.
    Delete {
        /// The record.
        id: RecordId,
        /// The delete's outbox version, once durable.
        reply: Reply<ChangeSeq>,
    },
    /// Commit several local changes in one transaction.
    Commit {
        /// The changes, in order.
        changes: Vec<LocalChange>,
        /// Their outbox versions, once durable.
        reply: Reply<CommitReceipt>,
    },
    /// Apply a fetched page and advance its zone's token.
    ApplyFetched {
        /// The page.
        page: FetchedPage,
        /// Whether it is a page of a refetch from no token ([`Mirror::apply_refetched_page`]).
        refetch: bool,
        /// What was applied.
        reply: Reply<FetchOutcome>,
    },
    /// Record confirmed changes and acknowledge them in the outbox.
    ConfirmSent {
        /// What the server confirmed.
        confirmed: Vec<ConfirmedChange>,
        /// What was acknowledged.
        reply: Reply<ConfirmOutcome>,
    },
    /// Keep the server side of a conflict a send revealed.
    RecordConflict {
        /// The record.
        id: RecordId,
        /// The server's copy, or `None` if the server deleted it.
        server: Option<Box<Record>>,
        /// Whether it was kept.
        reply: Reply<bool>,
    },
    /// Commit a conflict's resolution with everything it implies.
    CommitResolution {
        /// The resolution (boxed: it holds records).
        resolved: Box<ResolvedConflict>,
        /// What happened.
        reply: Reply<ResolveOutcome>,
    },
    /// Commit what `changes/database` reported with its token.
    ApplyDatabaseChanges {
        /// The changes.
        changes: DatabaseChanges,
        /// What was removed.
        reply: Reply<DatabaseChangesOutcome>,
    },
    /// Change the sync metadata.
    UpdateSyncMetadata {
        /// The change.
        change: SyncMetadataChange,
        /// The metadata after it.
        reply: Reply<SyncMetadata>,
    },
    /// Read the sync metadata.
    SyncMetadata {
        /// The metadata.
        reply: Reply<SyncMetadata>,
    },
    /// Read one record's open conflict.
    OpenConflict {
        /// The record.
        id: RecordId,
        /// Its open conflict, if any.
        reply: Reply<Option<OpenConflict>>,
    },
    /// Read a page of open conflicts.
    OpenConflicts {
        /// Start after this record.
        after: Option<RecordId>,
        /// At most this many.
        limit: usize,
        /// The page.
        reply: Reply<Vec<OpenConflict>>,
    },
    /// Forget a zone's change token.
    ForgetToken {
        /// The zone.
        zone: ZoneId,
        /// Whether there was one.
        reply: Reply<bool>,
    },
    /// Forget a zone's change tags and token and queue its records again.
    ResetZone {
        /// The zone.
        zone: ZoneId,
        /// What was reset.
        reply: Reply<ZoneReset>,
    },
    /// Remove all of a zone's data.
    RemoveZone {
        /// The zone.
        zone: ZoneId,
        /// What was removed.
        reply: Reply<ZoneRemoval>,
    },
    /// Read one record.
    Record {
        /// The record.
        id: RecordId,
        /// Its local copy, if it exists.
        reply: Reply<Option<Record>>,
    },
    /// Read one record's merge base.
    MergeBase {
        /// The record.
        id: RecordId,
        /// The last known server copy.
        reply: Reply<Option<Record>>,
    },
    /// Read one record's tombstone.
    Tombstone {
        /// The record.
        id: RecordId,
        /// Its tombstone, if kept.
        reply: Reply<Option<Tombstone>>,
    },
    /// Read one record's outbox entry.
    PendingChange {
        /// The record.
        id: RecordId,
        /// Its pending or parked change.
        reply: Reply<Option<OutboxEntry>>,
    },
    /// Read a zone's change token.
    ChangeToken {
        /// The zone.
        zone: ZoneId,
        /// Its token, if fetched before.
        reply: Reply<Option<ChangeToken>>,
    },
    /// Read a page of records of one type.
    RecordsOfType {
        /// The record type.
        record_type: String,
        /// Start after this record.
        after: Option<RecordId>,
        /// At most this many.
        limit: usize,
        /// The page.
        reply: Reply<RecordPage>,
    },
    /// Read a page of records of one zone.
    RecordsInZone {
        /// The zone.
        zone: ZoneId,
        /// Start after this record.
        after: Option<RecordId>,
        /// At most this many.
        limit: usize,
        /// The page.
        reply: Reply<RecordPage>,
    },
    /// Count the records holding a change tag.
    TaggedCount {
        /// The count.
        reply: Reply<u64>,
    },
    /// Report what the writer thread has done.
    WriterStats {
        /// The counts.
        reply: Reply<WriterStats>,
    },
    /// Sent by the store's own writer thread when it can no longer commit (it panicked, or redb
    /// reported an I/O error after which the file must be reopened): the actor fails, so that its
    /// supervisor reopens the file and starts it again.
    WriterFailed {
        /// What happened.
        detail: String,
    },
}

/// The store actor. Writes go to its writer thread (group commit); each read runs on a blocking
/// thread against its own read snapshot, answering its caller itself, so the actor takes the next
/// message (a save for the writer) without waiting for a read to finish. The actor itself never
/// touches the disk; reads still running when it stops are waited for before the file closes.
#[derive(Debug, Default)]
pub struct StoreActor;

/// The store actor's state: the open file and its writer thread.
#[derive(Debug)]
pub struct StoreState {
    /// `None` once the actor stopped (the file is released on a blocking thread).
    db: Option<Arc<Database>>,
    mirror: Mirror,
    writer: Option<Writer>,
    /// The reads in progress (joined at stop: each holds the file open).
    reads: tokio::task::JoinSet<()>,
}

impl StoreState {
    fn write<T, F>(&self, op: F, reply: Reply<T>)
    where
        T: Send + 'static,
        F: FnMut(&Mirror, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let job: Box<dyn WriteJob> = TypedJob::boxed(op, reply);
        match &self.writer {
            Some(writer) => writer.submit(job),
            None => job.finish(Err(StoreError::Stopped {
                operation: "write",
                detail: "the store is stopping".into(),
            })),
        }
    }

    /// Starts a read on a blocking thread; the read answers `reply` itself.
    fn read<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        f: impl FnOnce(&Mirror, &ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) {
        let Some(db) = self.db.clone() else {
            let _ = reply.send(Err(StoreError::Stopped {
                operation: "read",
                detail: "the store is stopping".into(),
            }));
            return;
        };
        // Forget the reads that have finished (a panicked read dropped its port: its caller
        // hears that the store did not answer).
        while self.reads.try_join_next().is_some() {}
        let mirror = self.mirror.clone();
        self.reads.spawn_blocking(move || {
            let result = db
                .begin_read()
                .map_err(|e| mirror.storage_error(e.into()))
                .and_then(|txn| f(&mirror, &txn));
            // A caller that gave up waiting has dropped its port.
            let _ = reply.send(result);
        });
    }
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreFile;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        file: StoreFile,
    ) -> Result<Self::State, ActorProcessingErr> {
        let db = Arc::clone(file.database());
        let mirror = file.mirror().clone();
        let on_failure = move |detail: String| {
            // The actor may be gone already (stopping); then nobody needs telling.
            let _ = myself.send_message(StoreMsg::WriterFailed { detail });
        };
        let writer = Writer::start(Arc::clone(&db), mirror.clone(), on_failure)?;
        Ok(StoreState {
            db: Some(db),
            mirror,
            writer: Some(writer),
            reads: tokio::task::JoinSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Reads in progress hold the file open: let them finish before it closes (a supervisor
        // reopens the file next).
        while state.reads.join_next().await.is_some() {}
        let writer = state.writer.take();
        // Finishing queued commits, joining the thread and closing the file are blocking.
        let db = state.db.take();
        tokio::task::spawn_blocking(move || {
            if let Some(writer) = writer {
                writer.shutdown();
            }
            drop(db);
        })
        .await?;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StoreMsg::Save { record, reply } => {
                state.write(move |m, txn| m.save(txn, &record), reply);
            }
            StoreMsg::Delete { id, reply } => {
                state.write(move |m, txn| m.delete(txn, &id), reply);
            }
            StoreMsg::Commit { changes, reply } => {
                state.write(move |m, txn| m.commit_local(txn, &changes), reply);
            }
            StoreMsg::ApplyFetched {
                page,
                refetch,
                reply,
            } => {
                state.write(
                    move |m, txn| {
                        if refetch {
                            m.apply_refetched_page(txn, &page)
                        } else {
                            m.apply_fetched(txn, &page)
                        }
                    },
                    reply,
                );
            }
            StoreMsg::ConfirmSent { confirmed, reply } => {
                state.write(move |m, txn| m.confirm_sent(txn, &confirmed), reply);
            }
            StoreMsg::RecordConflict { id, server, reply } => {
                state.write(
                    move |m, txn| m.record_conflict(txn, &id, server.as_deref()),
                    reply,
                );
            }
            StoreMsg::CommitResolution { resolved, reply } => {
                state.write(move |m, txn| m.commit_resolution(txn, &resolved), reply);
            }
            StoreMsg::ApplyDatabaseChanges { changes, reply } => {
                state.write(move |m, txn| m.apply_database_changes(txn, &changes), reply);
            }
            StoreMsg::UpdateSyncMetadata { change, reply } => {
                state.write(
                    move |m, txn| m.update_sync_metadata(txn, |meta| change.apply(meta)),
                    reply,
                );
            }
            StoreMsg::SyncMetadata { reply } => {
                state.read(reply, |m, txn| m.sync_metadata(txn));
            }
            StoreMsg::OpenConflict { id, reply } => {
                state.read(reply, move |m, txn| m.open_conflict(txn, &id));
            }
            StoreMsg::OpenConflicts {
                after,
                limit,
                reply,
            } => {
                state.read(reply, move |m, txn| {
                    m.open_conflicts(txn, after.as_ref(), limit)
                });
            }
            StoreMsg::WriterFailed { detail } => {
                return Err(format!("the store's writer failed: {detail}").into());
            }
            StoreMsg::ForgetToken { zone, reply } => {
                state.write(move |m, txn| m.forget_token(txn, &zone), reply);
            }
            StoreMsg::ResetZone { zone, reply } => {
                state.write(move |m, txn| m.reset_zone(txn, &zone), reply);
            }
            StoreMsg::RemoveZone { zone, reply } => {
                state.write(move |m, txn| m.remove_zone(txn, &zone), reply);
            }
            StoreMsg::Record { id, reply } => {
                state.read(reply, move |m, txn| m.record(txn, &id));
            }
            StoreMsg::MergeBase { id, reply } => {
                state.read(reply, move |m, txn| m.merge_base(txn, &id));
            }
            StoreMsg::Tombstone { id, reply } => {
                state.read(reply, move |m, txn| m.tombstone(txn, &id));
            }
            StoreMsg::PendingChange { id, reply } => {
                state.read(reply, move |m, txn| Ok(m.outbox().entry(txn, &id)?));
            }
            StoreMsg::ChangeToken { zone, reply } => {
                state.read(reply, move |m, txn| m.change_token(txn, &zone));
            }
            StoreMsg::RecordsOfType {
                record_type,
                after,
                limit,
                reply,
            } => {
                state.read(reply, move |m, txn| {
                    m.records_of_type(txn, &record_type, after.as_ref(), limit)
                });
            }
            StoreMsg::RecordsInZone {
                zone,
                after,
                limit,
                reply,
            } => {
                state.read(reply, move |m, txn| {
                    m.records_in_zone(txn, &zone, after.as_ref(), limit)
                });
            }
            StoreMsg::TaggedCount { reply } => {
                state.read(reply, |m, txn| m.tagged_count(txn));
            }
            StoreMsg::WriterStats { reply } => {
                let stats = state.writer.as_ref().map(Writer::stats).unwrap_or_default();
                // A caller that gave up waiting has dropped its port.
                let _ = reply.send(Ok(stats));
            }
        }
        Ok(())
    }
}

/// A cloneable handle to the store actor, with one typed async method per message.
///
/// It calls through a [`Mailbox`], so it and its clones stay valid across restarts of the actor
/// by a supervisor (see [`crate::StoreUnit`]). A store that does not answer is
/// [`StoreError::Local`], never a storage error.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    mailbox: Mailbox<StoreMsg>,
    config: StoreConfig,
}

impl StoreHandle {
    /// Starts an unnamed, unsupervised store actor (and its writer thread) over an open file.
    /// Returns the handle and the actor's join handle.
    pub async fn spawn(
        file: StoreFile,
        config: StoreConfig,
    ) -> Result<(StoreHandle, JoinHandle<()>), StoreError> {
        let handle = StoreHandle::detached(config);
        let join = handle.start(file, None).await?;
        Ok((handle, join))
    }

    /// A handle whose mailbox has no actor yet: calls wait for one (up to the call timeout) until
    /// [`StoreHandle::start`] or a supervisor attaches it.
    pub fn detached(config: StoreConfig) -> Self {
        Self {
            mailbox: Mailbox::new("store"),
            config,
        }
    }

    /// Starts a store actor over `file`, linked to `supervisor` if given, and attaches it to this
    /// handle's mailbox (and every clone's).
    pub async fn start(
        &self,
        file: StoreFile,
        supervisor: Option<ActorCell>,
    ) -> Result<JoinHandle<()>, StoreError> {
        let spawned = match supervisor {
            Some(supervisor) => Actor::spawn_linked(None, StoreActor, file, supervisor).await,
            None => Actor::spawn(None, StoreActor, file).await,
        };
        let (actor, join) = spawned.map_err(|e| StoreError::Stopped {
            operation: "spawn",
            detail: e.to_string(),
        })?;
        self.mailbox.attach(actor);
        Ok(join)
    }

    /// The mailbox this handle calls through (a supervisor attaches restarted actors to it).
    pub fn mailbox(&self) -> &Mailbox<StoreMsg> {
        &self.mailbox
    }

    /// The actor behind this handle now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<StoreMsg>> {
        self.mailbox.actor()
    }

    /// Saves a record locally and queues it to be sent, in one transaction; returns once both are
    /// durable on disk. The store sets the record's system fields to the latest it knows. Concurrent
    /// saves share commits.
    pub async fn save(&self, record: Record) -> Result<ChangeSeq, StoreError> {
        self.call("save", |reply| StoreMsg::Save { record, reply })
            .await
    }

    /// Deletes a record locally (leaving a tombstone) and queues the delete, in one transaction;
    /// returns once durable.
    pub async fn delete(&self, id: RecordId) -> Result<ChangeSeq, StoreError> {
        self.call("delete", |reply| StoreMsg::Delete { id, reply })
            .await
    }

    /// Commits several local changes, in order, in one transaction; returns once durable.
    pub async fn commit(&self, changes: Vec<LocalChange>) -> Result<CommitReceipt, StoreError> {
        self.call("commit", |reply| StoreMsg::Commit { changes, reply })
            .await
    }

    /// Applies a fetched page and advances its zone's token in one transaction. See
    /// [`Mirror::apply_fetched`].
    pub async fn apply_fetched(&self, page: FetchedPage) -> Result<FetchOutcome, StoreError> {
        self.apply_page("apply_fetched", page, false).await
    }

    /// Applies a page of a refetch from no token, keeping the zone's stored token as it was until
    /// the last page. See [`Mirror::apply_refetched_page`].
    pub async fn apply_refetched_page(
        &self,
        page: FetchedPage,
    ) -> Result<FetchOutcome, StoreError> {
        self.apply_page("apply_refetched_page", page, true).await
    }

    async fn apply_page(
        &self,
        operation: &'static str,
        page: FetchedPage,
        refetch: bool,
    ) -> Result<FetchOutcome, StoreError> {
        self.call(operation, |reply| StoreMsg::ApplyFetched {
            page,
            refetch,
            reply,
        })
        .await
    }

    /// Records what the server confirmed and acknowledges it in the outbox, in one transaction. See
    /// [`Mirror::confirm_sent`].
    pub async fn confirm_sent(
        &self,
        confirmed: Vec<ConfirmedChange>,
    ) -> Result<ConfirmOutcome, StoreError> {
        self.call("confirm_sent", |reply| StoreMsg::ConfirmSent {
            confirmed,
            reply,
        })
        .await
    }

    /// Keeps the server side of a conflict that a send revealed, until it is resolved. See
    /// [`Mirror::record_conflict`].
    pub async fn record_conflict(
        &self,
        id: RecordId,
        server: Option<Record>,
    ) -> Result<bool, StoreError> {
        self.call("record_conflict", |reply| StoreMsg::RecordConflict {
            id,
            server: server.map(Box::new),
            reply,
        })
        .await
    }

    /// Commits a conflict's resolution with everything it implies, in one transaction. See
    /// [`Mirror::commit_resolution`].
    pub async fn commit_resolution(
        &self,
        resolved: ResolvedConflict,
    ) -> Result<ResolveOutcome, StoreError> {
        self.call("commit_resolution", |reply| StoreMsg::CommitResolution {
            resolved: Box::new(resolved),
            reply,
        })
        .await
    }

    /// Commits what `changes/database` reported with its token. See
    /// [`Mirror::apply_database_changes`].
    pub async fn apply_database_changes(
        &self,
        changes: DatabaseChanges,
    ) -> Result<DatabaseChangesOutcome, StoreError> {
        self.call("apply_database_changes", |reply| {
            StoreMsg::ApplyDatabaseChanges { changes, reply }
        })
        .await
    }

    /// Changes the sync metadata durably; returns it as it is now.
    pub async fn update_sync_metadata(
        &self,
        change: SyncMetadataChange,
    ) -> Result<SyncMetadata, StoreError> {
        self.call("update_sync_metadata", |reply| {
            StoreMsg::UpdateSyncMetadata { change, reply }
        })
        .await
    }

    /// The sync metadata.
    pub async fn sync_metadata(&self) -> Result<SyncMetadata, StoreError> {
        self.call("sync_metadata", |reply| StoreMsg::SyncMetadata { reply })
            .await
    }

    /// The record's open conflict, if one waits to be resolved.
    pub async fn open_conflict(&self, id: RecordId) -> Result<Option<OpenConflict>, StoreError> {
        self.call("open_conflict", |reply| StoreMsg::OpenConflict {
            id,
            reply,
        })
        .await
    }

    /// Up to `limit` open conflicts after `after` (exclusive), in key order.
    pub async fn open_conflicts(
        &self,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<OpenConflict>, StoreError> {
        self.call("open_conflicts", |reply| StoreMsg::OpenConflicts {
            after,
            limit,
            reply,
        })
        .await
    }

    /// Forgets a zone's change token (it expired). Returns whether there was one.
    pub async fn forget_token(&self, zone: ZoneId) -> Result<bool, StoreError> {
        self.call("forget_token", |reply| StoreMsg::ForgetToken {
            zone,
            reply,
        })
        .await
    }

    /// Resets a zone the server no longer has. See [`Mirror::reset_zone`].
    pub async fn reset_zone(&self, zone: ZoneId) -> Result<ZoneReset, StoreError> {
        self.call("reset_zone", |reply| StoreMsg::ResetZone { zone, reply })
            .await
    }

    /// Removes all of a zone's data, including its pending changes.
    pub async fn remove_zone(&self, zone: ZoneId) -> Result<ZoneRemoval, StoreError> {
        self.call("remove_zone", |reply| StoreMsg::RemoveZone { zone, reply })
            .await
    }

    /// The local copy of a record, if it exists.
    pub async fn record(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.call("record", |reply| StoreMsg::Record { id, reply })
            .await
    }

    /// The last known server copy of a record (its merge base).
    pub async fn merge_base(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.call("merge_base", |reply| StoreMsg::MergeBase { id, reply })
            .await
    }

    /// The tombstone of a record deleted locally, while it is kept.
    pub async fn tombstone(&self, id: RecordId) -> Result<Option<Tombstone>, StoreError> {
        self.call("tombstone", |reply| StoreMsg::Tombstone { id, reply })
            .await
    }

    /// The record's pending or parked change in the outbox, if any.
    pub async fn pending_change(&self, id: RecordId) -> Result<Option<OutboxEntry>, StoreError> {
        self.call("pending_change", |reply| StoreMsg::PendingChange {
            id,
            reply,
        })
        .await
    }

    /// A zone's change token, if it was fetched before.
    pub async fn change_token(&self, zone: ZoneId) -> Result<Option<ChangeToken>, StoreError> {
        self.call("change_token", |reply| StoreMsg::ChangeToken {
            zone,
            reply,
        })
        .await
    }

    /// Up to `limit` records of a type, after `after` (exclusive); pass the page's `next` to go on.
    pub async fn records_of_type(
        &self,
        record_type: impl Into<String>,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        let record_type = record_type.into();
        self.call("records_of_type", |reply| StoreMsg::RecordsOfType {
            record_type,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Up to `limit` records of a zone, after `after` (exclusive); pass the page's `next` to go on.
    pub async fn records_in_zone(
        &self,
        zone: ZoneId,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        self.call("records_in_zone", |reply| StoreMsg::RecordsInZone {
            zone,
            after,
            limit,
            reply,
        })
        .await
    }

    /// How many records hold a change tag.
    pub async fn tagged_count(&self) -> Result<u64, StoreError> {
        self.call("tagged_count", |reply| StoreMsg::TaggedCount { reply })
            .await
    }

    /// What the writer thread has done since the actor started: commits made and operations
    /// committed (their ratio is how many writes share one fsync).
    pub async fn writer_stats(&self) -> Result<WriterStats, StoreError> {
        self.call("writer_stats", |reply| StoreMsg::WriterStats { reply })
            .await
    }

    /// Stops the actor, waits for queued commits to finish and releases the file. The mailbox is
    /// left empty: later calls fail with [`StoreError::Local`] unless a new actor is started.
    pub async fn stop(&self) {
        if let Some(actor) = self.mailbox.actor() {
            self.mailbox.detach();
            // An error means the actor is already gone, which is what was asked for.
            let _ = actor
                .stop_and_wait(None, Some(self.config.call_timeout))
                .await;
        }
    }

    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        make: impl FnOnce(Reply<T>) -> StoreMsg,
    ) -> Result<T, StoreError> {
        self.mailbox
            .call(operation, self.config.call_timeout, make)
            .await?
    }
}
