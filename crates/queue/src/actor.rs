//! The queue actor and its handle: the outbox as the session drives it.

use crate::batch::{Batch, BatchLimits, ChangeSeq, OutboxEntry, ParkedChange, QueueDepth};
use crate::error::QueueError;
use crate::outbox::Outbox;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use skysync_actors::Mailbox;
use skysync_model::RecordId;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How the queue behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// The limits of a batch formed by [`QueueHandle::next_batch`].
    pub limits: BatchLimits,
    /// How long a handle waits for the actor's answer before giving up with
    /// [`QueueError::TimedOut`].
    pub call_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            limits: BatchLimits::default(),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The messages the queue actor handles: its whole interface. Every message carries the port its
/// answer goes to; [`QueueHandle`] builds them.
#[derive(Debug)]
pub enum QueueMsg {
    /// Form a batch from the front of the outbox within the limits.
    NextBatch {
        /// The limits of the batch.
        limits: BatchLimits,
        /// Where the batch goes.
        reply: RpcReplyPort<Result<Batch, QueueError>>,
    },
    /// Move a batch's records to the front of the outbox.
    RequeueFront {
        /// The changes to send first.
        batch: Batch,
        /// How many moved.
        reply: RpcReplyPort<Result<usize, QueueError>>,
    },
    /// Park a record's change as failed.
    Park {
        /// The record.
        id: RecordId,
        /// The version the server refused.
        seq: ChangeSeq,
        /// Why (an error code and message; never field values).
        reason: String,
        /// Whether it was parked.
        reply: RpcReplyPort<Result<bool, QueueError>>,
    },
    /// List parked changes.
    Parked {
        /// The parked changes, oldest first.
        reply: RpcReplyPort<Result<Vec<ParkedChange>, QueueError>>,
    },
    /// Make parked changes pending again, at the front.
    RetryParked {
        /// Only these records' parked changes; `None` for all.
        only: Option<Vec<RecordId>>,
        /// How many were retried.
        reply: RpcReplyPort<Result<usize, QueueError>>,
    },
    /// Count pending and parked changes.
    Depth {
        /// The counts.
        reply: RpcReplyPort<Result<QueueDepth, QueueError>>,
    },
    /// Look up the outbox entry of one record.
    Entry {
        /// The record.
        id: RecordId,
        /// Its pending or parked change, if any.
        reply: RpcReplyPort<Result<Option<OutboxEntry>, QueueError>>,
    },
}

/// The actor that owns no data of its own: every message runs as one redb transaction on a blocking
/// thread against the shared database, one message at a time.
#[derive(Debug, Default)]
pub struct QueueActor;

/// What the queue actor starts with.
#[derive(Debug)]
pub struct QueueArgs {
    /// The database the session opened (shared with the store).
    pub db: Arc<Database>,
    /// The outbox of that database.
    pub outbox: Outbox,
}

/// The queue actor's state: the shared database and its outbox.
#[derive(Debug)]
pub struct QueueState {
    /// `None` once the actor stopped (the file is released on a blocking thread).
    db: Option<Arc<Database>>,
    outbox: Outbox,
}

impl QueueState {
    fn db(&self, operation: &'static str) -> Result<Arc<Database>, QueueError> {
        self.db.clone().ok_or_else(|| QueueError::Stopped {
            operation,
            detail: "the queue is stopping".into(),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Outbox, &ReadTransaction) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db(operation)?;
        let outbox = self.outbox.clone();
        blocking(operation, move || {
            let txn = db
                .begin_read()
                .map_err(|e| outbox.storage_error(e.into()))?;
            f(&outbox, &txn)
        })
        .await
    }

    async fn write<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Outbox, &WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db(operation)?;
        let outbox = self.outbox.clone();
        blocking(operation, move || write_durably(&db, &outbox, f)).await
    }
}

/// Runs `f` in one write transaction and commits it durably (the commit returns once it is on disk).
/// Blocking: call it on a blocking thread.
pub fn write_durably<T>(
    db: &Database,
    outbox: &Outbox,
    f: impl FnOnce(&Outbox, &WriteTransaction) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| outbox.storage_error(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| outbox.storage_error(e.into()))?;
    match f(outbox, &txn) {
        Ok(value) => {
            txn.commit().map_err(|e| outbox.storage_error(e.into()))?;
            Ok(value)
        }
        Err(e) => {
            // The operation failed: nothing of it may commit. An abort error adds nothing to the
            // operation's own error, which is the one the caller can act on.
            let _ = txn.abort();
            Err(e)
        }
    }
}

async fn blocking<T: Send + 'static>(
    operation: &'static str,
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::Stopped {
            operation,
            detail: e.to_string(),
        })?
}

/// Sends a write's answer. A write that failed because the database itself failed (an I/O error,
/// after which redb must be reopened) also fails the actor, so that its supervisor reopens the file.
fn answer<T>(
    reply: RpcReplyPort<Result<T, QueueError>>,
    result: Result<T, QueueError>,
) -> Result<(), ActorProcessingErr> {
    let failed = match &result {
        Err(QueueError::Storage { source, .. }) => matches!(
            **source,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_)
        )
        .then(|| source.to_string()),
        _ => None,
    };
    // A caller that gave up waiting has dropped its port; there is nobody left to tell.
    let _ = reply.send(result);
    match failed {
        Some(detail) => Err(format!("the outbox's database failed: {detail}").into()),
        None => Ok(()),
    }
}

impl Actor for QueueActor {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(QueueState {
            db: Some(args.db),
            outbox: args.outbox,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // If this is the last reference, closing the file is blocking I/O.
        if let Some(db) = state.db.take() {
            tokio::task::spawn_blocking(move || drop(db)).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up waiting has dropped its port; there is nobody left to tell.
        match message {
            QueueMsg::NextBatch { limits, reply } => {
                let result = state
                    .read("next_batch", move |o, txn| o.form_batch(txn, limits))
                    .await;
                let _ = reply.send(result);
            }
            QueueMsg::RequeueFront { batch, reply } => {
                let result = state
                    .write("requeue_front", move |o, txn| o.requeue_front(txn, &batch))
                    .await;
                return answer(reply, result);
            }
            QueueMsg::Park {
                id,
                seq,
                reason,
                reply,
            } => {
                let result = state
                    .write("park", move |o, txn| o.park(txn, &id, seq, &reason))
                    .await;
                return answer(reply, result);
            }
            QueueMsg::Parked { reply } => {
                let result = state.read("parked", |o, txn| o.parked(txn)).await;
                let _ = reply.send(result);
            }
            QueueMsg::RetryParked { only, reply } => {
                let result = state
                    .write("retry_parked", move |o, txn| {
                        o.retry_parked(txn, only.as_deref())
                    })
                    .await;
                return answer(reply, result);
            }
            QueueMsg::Depth { reply } => {
                let result = state.read("depth", |o, txn| o.depth(txn)).await;
                let _ = reply.send(result);
            }
            QueueMsg::Entry { id, reply } => {
                let result = state.read("entry", move |o, txn| o.entry(txn, &id)).await;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

/// A cloneable handle to the queue actor, with one typed async method per message.
///
/// It calls through a [`Mailbox`], so it and its clones stay valid across restarts of the actor
/// by a supervisor. A queue that does not answer is [`QueueError::Local`].
///
/// There is no acknowledgement here: a confirmed send is acknowledged by the store
/// (`StoreHandle::confirm_sent`), with the record's new tag and base in the same transaction, so
/// that nothing can remove a change from the outbox without recording what the server said:
///
/// ```compile_fail
/// # async fn f(queue: skysync_queue::QueueHandle) {
/// let batch = queue.next_batch().await.unwrap();
/// queue.ack(batch).await; // no such method: confirm through the store
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct QueueHandle {
    mailbox: Mailbox<QueueMsg>,
    config: QueueConfig,
}

impl QueueHandle {
    /// Creates the outbox tables in `db` if needed (refusing a newer format) and starts an unnamed,
    /// unsupervised queue actor over it. `file` is the database's path, used to name it in errors.
    /// Returns the handle and the actor's join handle.
    pub async fn spawn(
        db: Arc<Database>,
        file: impl Into<PathBuf>,
        config: QueueConfig,
    ) -> Result<(QueueHandle, JoinHandle<()>), QueueError> {
        let handle = QueueHandle::detached(config);
        let join = handle.start(db, file, None).await?;
        Ok((handle, join))
    }

    /// A handle whose mailbox has no actor yet: calls wait for one (up to the call timeout) until
    /// [`QueueHandle::start`] or a supervisor attaches it.
    pub fn detached(config: QueueConfig) -> Self {
        Self {
            mailbox: Mailbox::new("queue"),
            config,
        }
    }

    /// Creates the outbox tables in `db` if needed and starts a queue actor over it, linked to
    /// `supervisor` if given, attached to this handle's mailbox (and every clone's).
    pub async fn start(
        &self,
        db: Arc<Database>,
        file: impl Into<PathBuf>,
        supervisor: Option<ActorCell>,
    ) -> Result<JoinHandle<()>, QueueError> {
        let outbox = Outbox::new(file);
        {
            let db = Arc::clone(&db);
            let outbox = outbox.clone();
            blocking("spawn", move || {
                write_durably(&db, &outbox, |o, txn| o.create_tables(txn))
            })
            .await?;
        }
        let args = QueueArgs { db, outbox };
        let spawned = match supervisor {
            Some(supervisor) => Actor::spawn_linked(None, QueueActor, args, supervisor).await,
            None => Actor::spawn(None, QueueActor, args).await,
        };
        let (actor, join) = spawned.map_err(|e| QueueError::Stopped {
            operation: "spawn",
            detail: e.to_string(),
        })?;
        self.mailbox.attach(actor);
        Ok(join)
    }

    /// The mailbox this handle calls through (a supervisor attaches restarted actors to it).
    pub fn mailbox(&self) -> &Mailbox<QueueMsg> {
        &self.mailbox
    }

    /// The actor behind this handle now, if one is attached.
    pub fn actor(&self) -> Option<ActorRef<QueueMsg>> {
        self.mailbox.actor()
    }

    /// The configuration this handle uses.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// The next batch to send, within the configured limits; empty when nothing is pending.
    pub async fn next_batch(&self) -> Result<Batch, QueueError> {
        self.next_batch_within(self.config.limits).await
    }

    /// The next batch to send within `limits` (e.g. [`BatchLimits::halved`] after a request was too
    /// large).
    pub async fn next_batch_within(&self, limits: BatchLimits) -> Result<Batch, QueueError> {
        self.call("next_batch", |reply| QueueMsg::NextBatch { limits, reply })
            .await
    }

    /// Moves a batch's records to the front of the outbox, in its order. Returns how many moved.
    pub async fn requeue_front(&self, batch: Batch) -> Result<usize, QueueError> {
        self.call("requeue_front", |reply| QueueMsg::RequeueFront {
            batch,
            reply,
        })
        .await
    }

    /// Parks a record's change as failed with `reason`, if `seq` is still its pending version.
    /// Returns whether it parked.
    pub async fn park(
        &self,
        id: RecordId,
        seq: ChangeSeq,
        reason: impl Into<String>,
    ) -> Result<bool, QueueError> {
        let reason = reason.into();
        self.call("park", |reply| QueueMsg::Park {
            id,
            seq,
            reason,
            reply,
        })
        .await
    }

    /// Every parked change, oldest first.
    pub async fn parked(&self) -> Result<Vec<ParkedChange>, QueueError> {
        self.call("parked", |reply| QueueMsg::Parked { reply })
            .await
    }

    /// Makes parked changes pending again at the front: all of them (`None`) or those of the given
    /// records. Returns how many.
    pub async fn retry_parked(&self, only: Option<Vec<RecordId>>) -> Result<usize, QueueError> {
        self.call("retry_parked", |reply| QueueMsg::RetryParked {
            only,
            reply,
        })
        .await
    }

    /// How many changes are pending and parked.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.call("depth", |reply| QueueMsg::Depth { reply }).await
    }

    /// The outbox entry of one record: its pending or parked change, if any.
    pub async fn entry(&self, id: RecordId) -> Result<Option<OutboxEntry>, QueueError> {
        self.call("entry", |reply| QueueMsg::Entry { id, reply })
            .await
    }

    /// Stops the actor and waits until it has finished its current message. The mailbox is left
    /// empty: later calls fail with [`QueueError::Local`] unless a new actor is started.
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
        make: impl FnOnce(RpcReplyPort<Result<T, QueueError>>) -> QueueMsg,
    ) -> Result<T, QueueError> {
        self.mailbox
            .call(operation, self.config.call_timeout, make)
            .await?
    }
}
