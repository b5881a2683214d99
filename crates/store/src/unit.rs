//! The store and the queue as one supervised unit: one database file, reopened on every start.

use crate::actor::{StoreConfig, StoreHandle};
use crate::file::StoreFile;
use ractor::ActorCell;
use skysync_actors::{BoxFuture, ChildSpec};
use skysync_queue::{QueueConfig, QueueHandle};
use std::path::PathBuf;

/// How a supervisor starts (and restarts) the store and the queue: both actors share one redb
/// `Database`, and redb must be reopened after an I/O error, so they live and die together. Every
/// start opens the file afresh and attaches the new actors to the same handles.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use skysync_actors::{RestartPolicy, SupervisorHandle};
/// use skysync_store::{StoreConfig, StoreUnit};
/// use skysync_queue::QueueConfig;
///
/// let (supervisor, _) = SupervisorHandle::spawn(RestartPolicy::default()).await?;
/// let unit = StoreUnit::new("sync.redb", StoreConfig::default(), QueueConfig::default());
/// let (store, queue) = (unit.store(), unit.queue());
/// supervisor.start(unit).await?;
/// // `store` and `queue` stay valid across every restart of the unit.
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StoreUnit {
    path: PathBuf,
    store: StoreHandle,
    queue: QueueHandle,
}

impl StoreUnit {
    /// The unit of the store file at `path`, with handles whose mailboxes wait for the first start.
    pub fn new(path: impl Into<PathBuf>, store: StoreConfig, queue: QueueConfig) -> Self {
        Self {
            path: path.into(),
            store: StoreHandle::detached(store),
            queue: QueueHandle::detached(queue),
        }
    }

    /// The store's handle (valid across restarts).
    pub fn store(&self) -> StoreHandle {
        self.store.clone()
    }

    /// The queue's handle (valid across restarts).
    pub fn queue(&self) -> QueueHandle {
        self.queue.clone()
    }

    /// The store file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl ChildSpec for StoreUnit {
    fn name(&self) -> &'static str {
        "store"
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        Box::pin(async move {
            let file = StoreFile::open_async(self.path.clone())
                .await
                .map_err(|e| e.to_string())?;
            let db = file.database().clone();
            self.store
                .start(file, Some(supervisor.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let mut cells = Vec::with_capacity(2);
            if let Some(store) = self.store.actor() {
                cells.push(store.get_cell());
            }
            if let Err(e) = self
                .queue
                .start(db, self.path.clone(), Some(supervisor))
                .await
            {
                // Leave nothing half-started: the store actor goes with the failed start.
                self.store.stop().await;
                return Err(e.to_string());
            }
            if let Some(queue) = self.queue.actor() {
                cells.push(queue.get_cell());
            }
            Ok(cells)
        })
    }
}
