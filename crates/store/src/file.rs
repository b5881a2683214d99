//! Opening the database file: one redb file per engine, shared by the store and the queue.

use crate::error::StoreError;
use crate::mirror::{Mirror, storage_error};
use redb::{Database, Durability};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most memory redb may use to cache the file's pages: 16 MiB.
///
/// redb's own default is 1 GiB, and it keeps every page it reads or writes until that is full,
/// so an engine's memory would grow with its data (a fetch of 100,000 records of 1 KB held
/// about 300 MB). Past this cap, pages are read again from the file, which the operating system
/// keeps cached; the B-trees' inner pages, which every lookup and insert goes through, stay well
/// within it.
pub const STORE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A redb builder with the store's settings ([`STORE_CACHE_BYTES`]).
fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(STORE_CACHE_BYTES);
    builder
}

/// An open skysync database file: the redb [`Database`] (shared by the store and the queue actors)
/// and the [`Mirror`] of its tables. Cloning shares the same open file.
#[derive(Clone, Debug)]
pub struct StoreFile {
    db: Arc<Database>,
    mirror: Mirror,
}

impl StoreFile {
    /// Opens the file at `path`, creating it if missing; checks its format version and creates any
    /// missing tables (the store's and the outbox's) in one durable commit.
    ///
    /// Blocking (file I/O, a repair after a crash): call it from a blocking thread, or use
    /// [`StoreFile::open_async`]. A file that is not a skysync store, is damaged, or has a newer
    /// format is a typed error naming the file.
    ///
    /// A new file is created whole or not at all: it is built under a temporary name beside the
    /// target, set up and synced, then renamed into place (and the directory synced). A crash or
    /// power loss while creating leaves at most a temporary file, which the next open discards;
    /// the target is never a half-created file that would be refused as corrupt at every start.
    pub fn open(path: impl AsRef<Path>) -> Result<StoreFile, StoreError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            create_whole(&path)?;
        }
        let db = builder()
            .create(&path)
            .map_err(|e| open_error(&path, e.into()))?;
        StoreFile::set_up(db, path)
    }

    /// Opens the database held by a custom redb storage backend, creating it if the backend is
    /// empty; `file` only names it in errors (and is [`StoreFile::path`]). Otherwise as
    /// [`StoreFile::open`]. This is how crash tests run the store on a simulated disk
    /// ([`crate::power_loss`]).
    pub fn open_with_backend(
        file: impl Into<PathBuf>,
        backend: impl redb::StorageBackend,
    ) -> Result<StoreFile, StoreError> {
        let path = file.into();
        let db = builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(&path, e.into()))?;
        StoreFile::set_up(db, path)
    }

    /// Checks the format and creates missing tables in one durable commit.
    fn set_up(db: Database, path: PathBuf) -> Result<StoreFile, StoreError> {
        let mirror = Mirror::new(path);
        let mut txn = db
            .begin_write()
            .map_err(|e| mirror.storage_error(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| mirror.storage_error(e.into()))?;
        if let Err(e) = mirror.create_tables(&txn) {
            // Refused: nothing may be written to a file we do not understand.
            let _ = txn.abort();
            return Err(e);
        }
        txn.commit().map_err(|e| mirror.storage_error(e.into()))?;
        Ok(StoreFile {
            db: Arc::new(db),
            mirror,
        })
    }

    /// [`StoreFile::open`] on a blocking thread.
    pub async fn open_async(path: impl Into<PathBuf>) -> Result<StoreFile, StoreError> {
        let path = path.into();
        tokio::task::spawn_blocking(move || StoreFile::open(path))
            .await
            .map_err(|e| StoreError::Stopped {
                operation: "open",
                detail: e.to_string(),
            })?
    }

    /// The redb database, to hand to the queue actor (or to read with [`Mirror`] in a transaction).
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The functions over this file's tables.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.mirror.file()
    }
}

/// Errors while opening: anything that says the bytes are not a redb file is corruption.
fn open_error(path: &Path, error: redb::Error) -> StoreError {
    match error {
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                file: path.to_path_buf(),
                table: "(file)",
                detail: io.to_string(),
            }
        }
        redb::Error::UpgradeRequired(version) => StoreError::Corrupt {
            file: path.to_path_buf(),
            table: "(file)",
            detail: format!("redb file format {version} needs an upgrade this build cannot do"),
        },
        other => storage_error(path, other),
    }
}

/// The name a new store file is built under before it is renamed into place.
pub(crate) fn creating_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".creating");
    PathBuf::from(name)
}

/// Creates a new store file at `path` atomically: set up under [`creating_name`], synced, renamed
/// into place, directory synced. A leftover temporary file of an earlier, interrupted creation is
/// discarded first.
fn create_whole(path: &Path) -> Result<(), StoreError> {
    let io_error = |e: std::io::Error| storage_error(path, redb::Error::Io(e));
    let temporary = creating_name(path);
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let db = builder()
        .create(&temporary)
        .map_err(|e| open_error(&temporary, e.into()))?;
    // Tables and format version, in one durable commit; then close the file.
    drop(StoreFile::set_up(db, temporary.clone())?);
    std::fs::rename(&temporary, path).map_err(io_error)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}
