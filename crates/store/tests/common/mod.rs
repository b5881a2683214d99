//! Shared fixtures for the store's integration tests: a real redb file in a temp dir with the store
//! and queue actors over it, and helpers to build records and server copies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use skysync_model::{ChangeTag, FieldValue, PendingChange, Record, RecordId, SystemFields, ZoneId};
use skysync_queue::{Batch, QueueConfig, QueueHandle};
use skysync_store::{ConfirmedChange, StoreConfig, StoreFile, StoreHandle};
use std::path::PathBuf;
use tempfile::TempDir;

/// A store and a queue over one file, as the session will run them.
pub struct Engine {
    pub dir: TempDir,
    pub path: PathBuf,
    /// The open file, for reading snapshots directly with the store's functions.
    pub file: StoreFile,
    pub store: StoreHandle,
    pub queue: QueueHandle,
}

impl Engine {
    pub async fn start() -> Engine {
        Engine::open(tempfile::tempdir().unwrap()).await
    }

    pub async fn open(dir: TempDir) -> Engine {
        let path = dir.path().join("sync.redb");
        let file = StoreFile::open_async(&path).await.unwrap();
        let (queue, _) = QueueHandle::spawn(file.database().clone(), &path, QueueConfig::default())
            .await
            .unwrap();
        let (store, _) = StoreHandle::spawn(file.clone(), StoreConfig::default())
            .await
            .unwrap();
        Engine {
            dir,
            path,
            file,
            store,
            queue,
        }
    }

    /// Stops both actors (releasing the file) and returns the directory.
    pub async fn stop(self) -> TempDir {
        self.store.stop().await;
        self.queue.stop().await;
        self.dir
    }

    /// Stops and reopens the same file.
    pub async fn restart(self) -> Engine {
        let dir = self.stop().await;
        Engine::open(dir).await
    }

    /// Confirms every change of a batch as the server would, giving saves the tag `tag`.
    pub async fn confirm_all(&self, batch: &Batch, tag: &str) -> skysync_store::ConfirmOutcome {
        self.store
            .confirm_sent(confirmations(batch, tag))
            .await
            .unwrap()
    }
}

/// The confirmations a server would send for a whole batch, tagging every save `tag`.
pub fn confirmations(batch: &Batch, tag: &str) -> Vec<ConfirmedChange> {
    batch
        .changes()
        .iter()
        .map(|c| match &c.change {
            PendingChange::Save(record) => ConfirmedChange::Saved {
                seq: c.seq,
                record: server_copy(record, tag),
            },
            PendingChange::Delete { id, .. } => ConfirmedChange::Deleted {
                seq: c.seq,
                id: id.clone(),
            },
        })
        .collect()
}

pub fn zone() -> ZoneId {
    ZoneId::new("Notes")
}

pub fn id(name: &str) -> RecordId {
    RecordId::new(zone(), name)
}

pub fn note(name: &str, text: &str) -> Record {
    Record::new(id(name), "Note").with("text", text)
}

pub fn system(tag: &str) -> SystemFields {
    SystemFields {
        change_tag: ChangeTag(tag.into()),
        created: None,
        modified: None,
        deleted: false,
    }
}

/// The server's copy of a record: the same fields with system fields carrying `tag`.
pub fn server_copy(record: &Record, tag: &str) -> Record {
    let mut copy = record.clone();
    copy.system = Some(system(tag));
    copy
}

pub fn tag(tag: &str) -> ChangeTag {
    ChangeTag(tag.into())
}

pub fn text(record: &Record) -> String {
    match record.get("text") {
        Some(FieldValue::String(s)) => s.clone(),
        other => panic!("record {} has text {other:?}", record.id),
    }
}

pub fn change_text(change: &PendingChange) -> Option<String> {
    match change {
        PendingChange::Save(record) => Some(text(record)),
        PendingChange::Delete { .. } => None,
    }
}
