//! A simulated disk that can lose power: a redb storage backend for crash tests.
//!
//! "Durable" means on disk through fsync, not in the page cache. Killing the process (SIGKILL)
//! does not test that: the operating system keeps every write the process made, synced or not.
//! A [`PowerLossDisk`] does. It keeps two images of the database file:
//!
//! - what is **synced**: the file as of the last `sync_data` (what survives a power cut), and
//! - what was **written**: the synced image plus every write since, which is what the database
//!   reads back while it runs (what a page cache would hold).
//!
//! A test cuts the power at a chosen I/O operation ([`PowerLossDisk::cut_power_at`]): from that
//! operation on, every call fails with an I/O error, as if the machine had stopped. It then builds
//! the file a restarted machine would find ([`PowerLossDisk::after_power_loss`]): the synced image
//! plus none, some or all of the writes made since the last sync ([`UnsyncedWrites`]), and opens a
//! new database over it to check what survived.
//!
//! The disk is shared: clone it (the clones are the same disk) to keep a handle while redb owns the
//! backend. Everything is in memory and deterministic, so a seed replays a crash exactly.
//!
//! ```
//! use redb::{Durability, ReadableDatabase};
//! use skysync_model::{Record, RecordId, ZoneId};
//! use skysync_store::power_loss::{PowerLossDisk, UnsyncedWrites};
//! use skysync_store::{LocalChange, StoreFile};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk = PowerLossDisk::new();
//! let file = StoreFile::open_with_backend("sync.redb", disk.backend())?;
//! let id = RecordId::new(ZoneId::new("Notes"), "n1");
//!
//! // A save committed durably: on the disk once `commit` returns.
//! let mut txn = file.database().begin_write()?;
//! txn.set_durability(Durability::Immediate)?;
//! let save = LocalChange::Save(Record::new(id.clone(), "Note").with("title", "Groceries"));
//! file.mirror().commit_local(&txn, &[save])?;
//! txn.commit()?;
//!
//! // The next one never gets its fsync: the power goes at its first write.
//! disk.cut_power_at(disk.operations() + 1);
//! let mut txn = file.database().begin_write()?;
//! txn.set_durability(Durability::Immediate)?;
//! file.mirror().commit_local(&txn, &[LocalChange::Delete(id.clone())])?;
//! assert!(txn.commit().is_err());
//! assert!(disk.power_lost());
//! drop(file);
//!
//! // After the restart: the save is there, the delete is not.
//! let restarted = disk.after_power_loss(UnsyncedWrites::Lost);
//! let file = StoreFile::open_with_backend("sync.redb", restarted.backend())?;
//! let txn = file.database().begin_read()?;
//! assert!(file.mirror().record(&txn, &id)?.is_some());
//! assert!(file.mirror().outbox().entry(&txn, &id)?.is_some());
//! # Ok(())
//! # }
//! ```

use redb::StorageBackend;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The size of the pieces an unsynced write reaches the disk in, or not: one database page.
pub const PIECE_SIZE: usize = 4096;

/// The unit a torn write is cut at: a disk writes whole sectors or nothing of them.
pub const SECTOR_SIZE: usize = 512;

/// What became of the writes made since the last sync when the power went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsyncedWrites {
    /// All of them are lost: the disk holds exactly what was last synced.
    Lost,
    /// Some reached the disk, chosen by `seed`: each page-sized piece of each write (and each
    /// change of the file's length) on its own, in any order, and the last piece that reached the
    /// disk was torn, only its first sectors written.
    PartlyKept {
        /// Chooses the pieces that reached the disk and where the last one was torn.
        seed: u64,
    },
    /// None is lost: the disk holds everything written, as after a process kill, which the
    /// operating system's page cache survives. For comparison with a real power loss.
    Kept,
}

/// One change to the file not yet synced, in the order it was made.
#[derive(Clone, Debug)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Default)]
struct DiskState {
    /// The file as of the last sync.
    synced: Vec<u8>,
    /// The file as the database sees it: `synced` plus `unsynced`.
    written: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<Unsynced>,
    /// Writes, length changes and syncs attempted so far, the failing ones included.
    operations: u64,
    /// Syncs attempted so far, the failing ones included.
    syncs: u64,
    /// The operation that finds the power gone, if a cut is planned.
    cut_at: Option<u64>,
    /// The sync that finds the power gone, if a cut is planned.
    cut_at_sync: Option<u64>,
    power_lost: bool,
    /// Syncs succeed without making anything durable (a disk whose cache lies about flushes).
    syncs_ignored: bool,
}

impl DiskState {
    /// Counts one write, length change or sync, failing it if the power is (now) gone.
    fn begin_operation(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.operations = self.operations.saturating_add(1);
        if self.cut_at.is_some_and(|at| self.operations >= at) {
            self.power_lost = true;
            return Err(power_gone());
        }
        Ok(())
    }

    /// Counts one sync (an operation too), failing it if the power is (now) gone.
    fn begin_sync(&mut self) -> io::Result<()> {
        self.begin_operation()?;
        self.syncs = self.syncs.saturating_add(1);
        if self.cut_at_sync.is_some_and(|at| self.syncs >= at) {
            self.power_lost = true;
            return Err(power_gone());
        }
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.power_lost {
            Err(power_gone())
        } else {
            Ok(())
        }
    }

    /// The file a restart finds, had the power gone now.
    fn image_after_loss(&self, writes: UnsyncedWrites) -> Vec<u8> {
        match writes {
            UnsyncedWrites::Lost => self.synced.clone(),
            UnsyncedWrites::Kept => self.written.clone(),
            UnsyncedWrites::PartlyKept { seed } => self.partly_kept(seed),
        }
    }

    fn partly_kept(&self, seed: u64) -> Vec<u8> {
        let mut random = SplitMix64(seed);
        // How likely each piece is to have reached the disk varies from loss to loss, so that some
        // keep almost nothing and others almost everything.
        let keep_in_256 = random.below(257);
        let mut reached: Vec<Unsynced> = Vec::new();
        for change in &self.unsynced {
            match change {
                Unsynced::SetLen(len) => {
                    if random.below(256) < keep_in_256 {
                        reached.push(Unsynced::SetLen(*len));
                    }
                }
                Unsynced::Write { offset, data } => {
                    let mut start = 0;
                    while start < data.len() {
                        // Pieces end on page boundaries of the file, as a disk's cache holds them.
                        let in_page = (offset + start) % PIECE_SIZE;
                        let end = (start + PIECE_SIZE - in_page).min(data.len());
                        if random.below(256) < keep_in_256 {
                            reached.push(Unsynced::Write {
                                offset: offset + start,
                                data: data[start..end].to_vec(),
                            });
                        }
                        start = end;
                    }
                }
            }
        }
        // The last piece to reach the disk was being written when the power went.
        if let Some(Unsynced::Write { data, .. }) = reached.last_mut() {
            let sectors = data.len().div_ceil(SECTOR_SIZE);
            if sectors > 1 {
                let kept = 1 + random.below(sectors as u64 - 1) as usize;
                data.truncate(kept * SECTOR_SIZE);
            }
        }
        let mut image = self.synced.clone();
        for change in &reached {
            change.apply_to(&mut image);
        }
        image
    }
}

impl Unsynced {
    fn apply_to(&self, image: &mut Vec<u8>) {
        match self {
            Unsynced::SetLen(len) => image.resize(*len, 0),
            Unsynced::Write { offset, data } => {
                // A write past the end of the file (its growth lost) extends it, as a file does.
                let end = offset + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[*offset..end].copy_from_slice(data);
            }
        }
    }
}

fn power_gone() -> io::Error {
    io::Error::other("the power is off: simulated power loss")
}

fn out_of_range(what: &str, offset: u64, len: usize, file_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} of {len} bytes at {offset} is past the end of the {file_len}-byte file"),
    )
}

/// A small, fixed pseudo-random sequence (SplitMix64): the same seed gives the same loss.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A simulated disk holding one database file, which can lose power. Clones share the disk.
///
/// Counts every write, length change and sync as one I/O operation (reads are not counted, and
/// fail too once the power is gone). See the [module documentation](self) for how a test uses it.
#[derive(Clone, Default)]
pub struct PowerLossDisk {
    state: Arc<Mutex<DiskState>>,
}

impl fmt::Debug for PowerLossDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The images are not printed: they are the whole file.
        let state = self.state();
        f.debug_struct("PowerLossDisk")
            .field("synced_len", &state.synced.len())
            .field("written_len", &state.written.len())
            .field("unsynced_changes", &state.unsynced.len())
            .field("operations", &state.operations)
            .field("syncs", &state.syncs)
            .field("cut_at", &state.cut_at)
            .field("cut_at_sync", &state.cut_at_sync)
            .field("power_lost", &state.power_lost)
            .finish()
    }
}

impl PowerLossDisk {
    /// An empty disk (redb creates a new database on it).
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk holding `image`, all of it synced: the file found after a restart.
    pub fn with_contents(image: Vec<u8>) -> Self {
        let state = DiskState {
            written: image.clone(),
            synced: image,
            ..DiskState::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A redb storage backend over this disk, to open a database with
    /// (`redb::Builder::create_with_backend`, or [`crate::StoreFile::open_with_backend`]). Open one
    /// database at a time over a disk.
    pub fn backend(&self) -> PowerLossBackend {
        PowerLossBackend { disk: self.clone() }
    }

    /// How many writes, length changes and syncs were attempted on this disk so far.
    pub fn operations(&self) -> u64 {
        self.state().operations
    }

    /// Plans a power cut: I/O operation number `operation` (counting from 1 on this disk, see
    /// [`PowerLossDisk::operations`]) and every call after it fail. One already past cuts the power
    /// at the next operation.
    pub fn cut_power_at(&self, operation: u64) {
        self.state().cut_at = Some(operation);
    }

    /// How many syncs were attempted on this disk so far (they count as operations too).
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Plans a power cut at sync number `sync` (counting from 1 on this disk, see
    /// [`PowerLossDisk::syncs`]): that sync and every call after it fail, so nothing of the commit
    /// it would have made durable is synced, though all of it may have been written. The moment a
    /// database depends on most. One already past cuts the power at the next sync.
    pub fn cut_power_at_sync(&self, sync: u64) {
        self.state().cut_at_sync = Some(sync);
    }

    /// Cuts the power now: every call from here on fails.
    pub fn cut_power(&self) {
        self.state().power_lost = true;
    }

    /// Whether the power is gone.
    pub fn power_lost(&self) -> bool {
        self.state().power_lost
    }

    /// Makes syncs succeed without making anything durable (`true`), as a disk whose write cache
    /// acknowledges flushes it never made, or a store that forgot to sync. For proving that a
    /// crash test notices lost syncs: a process kill would not.
    pub fn ignore_syncs(&self, ignored: bool) {
        self.state().syncs_ignored = ignored;
    }

    /// How many writes and length changes were made since the last sync.
    pub fn unsynced_changes(&self) -> usize {
        self.state().unsynced.len()
    }

    /// The file as of the last sync.
    pub fn synced_image(&self) -> Vec<u8> {
        self.state().synced.clone()
    }

    /// The file as written so far, synced or not.
    pub fn written_image(&self) -> Vec<u8> {
        self.state().written.clone()
    }

    /// The file a restart would find had the power gone now (or when it went), with `writes`
    /// deciding what became of the writes made since the last sync.
    pub fn image_after_power_loss(&self, writes: UnsyncedWrites) -> Vec<u8> {
        self.state().image_after_loss(writes)
    }

    /// A new disk holding what a restart finds: [`PowerLossDisk::image_after_power_loss`], all of
    /// it synced, with the power on. Open a database over it to see what survived.
    pub fn after_power_loss(&self, writes: UnsyncedWrites) -> PowerLossDisk {
        PowerLossDisk::with_contents(self.image_after_power_loss(writes))
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock leaves the images whole (every change is one copy), so
        // the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The redb storage backend of a [`PowerLossDisk`]: reads see every write, syncs make writes
/// durable, and after the power cut every call fails with an I/O error.
#[derive(Debug)]
pub struct PowerLossBackend {
    disk: PowerLossDisk,
}

impl StorageBackend for PowerLossBackend {
    fn len(&self) -> Result<u64, io::Error> {
        let state = self.disk.state();
        state.check_power()?;
        u64::try_from(state.written.len()).map_err(io::Error::other)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.disk.state();
        state.check_power()?;
        let file_len = state.written.len();
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(out.len())?))
            .filter(|range| range.end <= file_len)
            .ok_or_else(|| out_of_range("read", offset, out.len(), file_len))?;
        out.copy_from_slice(&state.written[range]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.disk.state();
        state.begin_operation()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        state.written.resize(len, 0);
        state.unsynced.push(Unsynced::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.disk.state();
        state.begin_sync()?;
        if !state.syncs_ignored {
            let unsynced = std::mem::take(&mut state.unsynced);
            for change in &unsynced {
                change.apply_to(&mut state.synced);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.disk.state();
        state.begin_operation()?;
        let file_len = state.written.len();
        let start = usize::try_from(offset)
            .ok()
            .filter(|start| {
                start
                    .checked_add(data.len())
                    .is_some_and(|end| end <= file_len)
            })
            .ok_or_else(|| out_of_range("write", offset, data.len(), file_len))?;
        state.written[start..start + data.len()].copy_from_slice(data);
        state.unsynced.push(Unsynced::Write {
            offset: start,
            data: data.to_vec(),
        });
        Ok(())
    }
}

/// The store and the queue as one supervised unit on a [`PowerLossDisk`] (what
/// [`crate::StoreUnit`] is on a real file): every start opens the disk afresh, and a start after a
/// power cut opens what a restarted machine would find (the unsynced writes lost). For tests of
/// everything above the store: a disk that fails under a running engine.
#[derive(Debug)]
pub struct DiskUnit {
    disk: Mutex<PowerLossDisk>,
    store: crate::StoreHandle,
    queue: skysync_queue::QueueHandle,
}

impl DiskUnit {
    /// The unit on `disk` (keep a clone of the disk to cut its power).
    pub fn new(
        disk: PowerLossDisk,
        store: crate::StoreConfig,
        queue: skysync_queue::QueueConfig,
    ) -> Self {
        Self {
            disk: Mutex::new(disk),
            store: crate::StoreHandle::detached(store),
            queue: skysync_queue::QueueHandle::detached(queue),
        }
    }

    /// The store's handle (valid across restarts).
    pub fn store(&self) -> crate::StoreHandle {
        self.store.clone()
    }

    /// The queue's handle (valid across restarts).
    pub fn queue(&self) -> skysync_queue::QueueHandle {
        self.queue.clone()
    }
}

/// The name the unit's file goes by in errors.
const DISK_UNIT_FILE: &str = "power-loss-disk.redb";

impl skysync_actors::ChildSpec for DiskUnit {
    fn name(&self) -> &'static str {
        "store"
    }

    fn start(
        &self,
        supervisor: ractor::ActorCell,
    ) -> skysync_actors::BoxFuture<'_, Result<Vec<ractor::ActorCell>, String>> {
        Box::pin(async move {
            let backend = {
                let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
                if disk.power_lost() {
                    *disk = disk.after_power_loss(UnsyncedWrites::Lost);
                }
                disk.backend()
            };
            let file = tokio::task::spawn_blocking(move || {
                crate::StoreFile::open_with_backend(DISK_UNIT_FILE, backend)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let db = file.database().clone();
            self.store
                .start(file, Some(supervisor.clone()))
                .await
                .map_err(|e| e.to_string())?;
            self.queue
                .start(db, DISK_UNIT_FILE, Some(supervisor))
                .await
                .map_err(|e| e.to_string())?;
            [
                self.store.actor().map(|a| a.get_cell()),
                self.queue.actor().map(|a| a.get_cell()),
            ]
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "the store or queue actor was not attached".to_owned())
        })
    }
}
