//! The group commit: one dedicated thread owns every write transaction of the store.
//!
//! Writers hand their operation to the thread through a channel. The thread takes everything queued
//! (up to [`MAX_GROUP`] operations), applies them in order in one write transaction, commits it once
//! with durable commit (one fsync), and only then answers every waiter. While a commit is being made
//! durable, new operations queue up and form the next group, so many concurrent writers share fsyncs
//! instead of paying one each.
//!
//! If an operation fails, the transaction is dropped uncommitted, the failing operation is answered
//! with its error, and the group is applied again without it: every operation is atomic on its own
//! and the others are not held back by it.
//!
//! A failure of the database itself (a commit that fails, an I/O error: redb must be reopened
//! after one) or a panic of the thread ends the writer: every waiting operation is answered with
//! an error, and the thread reports the failure so that the store actor fails and its supervisor
//! reopens the file. A writer never lingers half-dead.

use crate::error::StoreError;
use crate::mirror::Mirror;
use ractor::RpcReplyPort;
use redb::{Database, Durability, WriteTransaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// The most operations one commit takes.
pub(crate) const MAX_GROUP: usize = 1024;

/// One write operation waiting for the writer thread.
pub(crate) trait WriteJob: Send {
    /// Applies the operation in `txn`, keeping its result until [`WriteJob::finish`]. May run more
    /// than once (a group is applied again after another operation in it failed).
    fn apply(&mut self, mirror: &Mirror, txn: &WriteTransaction) -> Result<(), StoreError>;

    /// Answers the waiter: the kept result if the transaction committed, else the error.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A write operation producing a `T`, answered on a reply port.
pub(crate) struct TypedJob<T, F> {
    op: F,
    output: Option<T>,
    reply: RpcReplyPort<Result<T, StoreError>>,
}

impl<T, F> TypedJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Mirror, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    pub(crate) fn boxed(op: F, reply: RpcReplyPort<Result<T, StoreError>>) -> Box<dyn WriteJob> {
        Box::new(Self {
            op,
            output: None,
            reply,
        })
    }
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Mirror, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(&mut self, mirror: &Mirror, txn: &WriteTransaction) -> Result<(), StoreError> {
        self.output = Some((self.op)(mirror, txn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let TypedJob { output, reply, .. } = *self;
        let answer = committed.and_then(|()| {
            // `finish(Ok)` follows a successful `apply`, which always sets the output.
            output.ok_or_else(|| StoreError::Stopped {
                operation: "write",
                detail: "the writer answered before applying the operation".into(),
            })
        });
        // A waiter that gave up has dropped its port; the outcome is durable (or not) either way.
        let _ = reply.send(answer);
    }
}

/// Counts of what the writer thread did, since it started.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    commits: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
}

impl WriterCounters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            committed_operations: self.committed.load(Ordering::Relaxed),
            failed_operations: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What the store's writer thread has done since the actor started: how well group commit shares
/// commits between writers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Durable commits made (one fsync each).
    pub commits: u64,
    /// Write operations committed (saves, confirmations, pages, ...).
    pub committed_operations: u64,
    /// Write operations answered with an error.
    pub failed_operations: u64,
}

/// The writer thread and the channel to it.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Sender<Box<dyn WriteJob>>,
    thread: JoinHandle<()>,
    counters: Arc<WriterCounters>,
}

impl Writer {
    /// Starts the writer thread over `db`. `on_failure` is called (on the writer thread) once if
    /// the writer ends because it can no longer commit, or panicked.
    pub(crate) fn start(
        db: Arc<Database>,
        mirror: Mirror,
        on_failure: impl Fn(String) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let (sender, receiver) = channel();
        let counters = Arc::new(WriterCounters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("skysync-store-writer".into())
            .spawn(move || {
                let guard = PanicReport(&on_failure);
                if let Err(detail) = run(&db, &mirror, &receiver, &thread_counters) {
                    // Nothing more can commit: answer everything still queued, then report.
                    while let Ok(job) = receiver.try_recv() {
                        job.finish(Err(StoreError::Stopped {
                            operation: "write",
                            detail: detail.clone(),
                        }));
                    }
                    on_failure(detail);
                }
                drop(guard);
            })
            .map_err(|e| StoreError::Stopped {
                operation: "start writer",
                detail: e.to_string(),
            })?;
        Ok(Writer {
            sender,
            thread,
            counters,
        })
    }

    /// What the thread has done so far.
    pub(crate) fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Hands an operation to the writer thread. Never blocks. If the thread is gone, the operation
    /// is answered with [`StoreError::Stopped`] at once.
    pub(crate) fn submit(&self, job: Box<dyn WriteJob>) {
        if let Err(returned) = self.sender.send(job) {
            returned.0.finish(Err(StoreError::Stopped {
                operation: "write",
                detail: "the writer thread has stopped".into(),
            }));
        }
    }

    /// Closes the channel and waits for the thread to finish what was queued. Blocking.
    pub(crate) fn shutdown(self) {
        drop(self.sender);
        // A panicked writer thread has already failed every waiter it held (their ports dropped).
        let _ = self.thread.join();
    }
}

impl std::fmt::Debug for dyn WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteJob")
    }
}

/// Reports a panic of the writer thread when it unwinds through this guard.
struct PanicReport<'a, F: Fn(String)>(&'a F);

impl<F: Fn(String)> Drop for PanicReport<'_, F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)("the writer thread panicked".into());
        }
    }
}

/// Commits groups until the channel closes (`Ok`) or the database fails (`Err` with what
/// happened).
fn run(
    db: &Database,
    mirror: &Mirror,
    receiver: &Receiver<Box<dyn WriteJob>>,
    counters: &WriterCounters,
) -> Result<(), String> {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(db, mirror, group, counters)?;
    }
    Ok(())
}

enum GroupResult {
    Committed,
    JobFailed(usize, StoreError),
    TransactionFailed(String),
}

/// Whether an operation's error means the database itself failed and must be reopened.
fn database_failed(error: &StoreError) -> bool {
    let source = match error {
        StoreError::Storage { source, .. } => source,
        StoreError::Queue(skysync_queue::QueueError::Storage { source, .. }) => source,
        _ => return false,
    };
    matches!(
        **source,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_)
    )
}

/// Commits one group; `Err` when the database failed (every job of the group was answered).
fn commit_group(
    db: &Database,
    mirror: &Mirror,
    mut group: Vec<Box<dyn WriteJob>>,
    counters: &WriterCounters,
) -> Result<(), String> {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    loop {
        match try_group(db, mirror, &mut group) {
            GroupResult::Committed => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .committed
                    .fetch_add(count(group.len()), Ordering::Relaxed);
                for job in group {
                    job.finish(Ok(()));
                }
                return Ok(());
            }
            GroupResult::JobFailed(index, error) if database_failed(&error) => {
                let detail = error.to_string();
                counters
                    .failed
                    .fetch_add(count(group.len()), Ordering::Relaxed);
                let failed = group.remove(index);
                failed.finish(Err(error));
                for job in group {
                    job.finish(Err(StoreError::CommitFailed {
                        file: mirror.file().to_path_buf(),
                        detail: detail.clone(),
                    }));
                }
                return Err(detail);
            }
            GroupResult::JobFailed(index, error) => {
                let failed = group.remove(index);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                failed.finish(Err(error));
                if group.is_empty() {
                    return Ok(());
                }
            }
            GroupResult::TransactionFailed(detail) => {
                counters
                    .failed
                    .fetch_add(count(group.len()), Ordering::Relaxed);
                for job in group {
                    job.finish(Err(StoreError::CommitFailed {
                        file: mirror.file().to_path_buf(),
                        detail: detail.clone(),
                    }));
                }
                // A transaction that cannot begin or commit leaves redb needing a reopen.
                return Err(detail);
            }
        }
    }
}

fn try_group(db: &Database, mirror: &Mirror, group: &mut [Box<dyn WriteJob>]) -> GroupResult {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return GroupResult::TransactionFailed(e.to_string()),
    };
    if let Err(e) = txn.set_durability(Durability::Immediate) {
        return GroupResult::TransactionFailed(e.to_string());
    }
    for (index, job) in group.iter_mut().enumerate() {
        if let Err(error) = job.apply(mirror, &txn) {
            // Nothing of this group may commit; the abort's own error adds nothing to the job's.
            let _ = txn.abort();
            return GroupResult::JobFailed(index, error);
        }
    }
    match txn.commit() {
        Ok(()) => GroupResult::Committed,
        Err(e) => GroupResult::TransactionFailed(e.to_string()),
    }
}
