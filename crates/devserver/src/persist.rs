//! Keeping the server's data in a redb file (`devserver.redb` under `--data DIR`).
//!
//! Memory stays the source of truth for serving; every mutating request's [`Write`]s are committed
//! here (on a blocking thread, with redb's immediate durability) before they are applied in memory and
//! answered. At start the whole file is read back into a [`State`].
//!
//! Encoding: keys and domain values (records with their system fields, zone metadata, database keys,
//! courier owners) go through `skysync_model::codec`; subscriptions, which hold free-form JSON
//! (`query`, `notificationInfo`), are stored as serde_json. A format version in the `meta` table guards
//! against reading a file written by a newer, incompatible dev server.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use skysync_model::codec;

use crate::DevServerError;
use crate::state::{
    CourierOwner, DbKey, State, StoredRecord, StoredSubscription, Write, ZoneMeta, random_epoch,
};

/// The file name inside the data directory.
pub(crate) const FILE_NAME: &str = "devserver.redb";

/// The format this version writes and reads.
const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<'_, &[u8], u64> = TableDefinition::new("counters");
const ZONES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("zones");
const RECORDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("records");
const SUBSCRIPTIONS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("subscriptions");
const COURIER_TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("courier_tokens");

/// An open data file (until [`Disk::close`]).
#[derive(Clone)]
pub(crate) struct Disk {
    db: Arc<Mutex<Option<Arc<redb::Database>>>>,
    path: PathBuf,
}

/// One encoded change to a table.
enum Op {
    Counter(Vec<u8>, u64),
    Put(Table, Vec<u8>, Vec<u8>),
    Remove(Table, Vec<u8>),
    Courier(String, Vec<u8>),
}

#[derive(Clone, Copy)]
enum Table {
    Zones,
    Records,
    Subscriptions,
}

fn storage_error(path: &Path, what: &str, e: impl std::fmt::Display) -> DevServerError {
    DevServerError::Storage {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

fn encode<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, DevServerError> {
    codec::encode(value).map_err(|e| storage_error(path, "encoding a stored value", e))
}

fn decode<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, DevServerError> {
    codec::decode(bytes).map_err(|e| storage_error(path, "decoding a stored value", e))
}

impl Disk {
    /// Opens (or creates) the data file in `dir` and reads everything in it.
    pub(crate) async fn open(dir: PathBuf) -> Result<(Disk, State), DevServerError> {
        let path = dir.join(FILE_NAME);
        tokio::task::spawn_blocking(move || Disk::open_blocking(&dir))
            .await
            .map_err(|e| storage_error(&path, "the opening task failed", e))?
    }

    fn open_blocking(dir: &Path) -> Result<(Disk, State), DevServerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage_error(dir, "creating the directory", e))?;
        let path = dir.join(FILE_NAME);
        let db = redb::Database::create(&path).map_err(|e| storage_error(&path, "opening", e))?;
        let txn = db
            .begin_write()
            .map_err(|e| storage_error(&path, "starting a transaction", e))?;
        let epoch: u64;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| storage_error(&path, "opening the meta table", e))?;
            let stored = meta
                .get("format")
                .map_err(|e| storage_error(&path, "reading the format version", e))?
                .map(|v| v.value());
            match stored {
                Some(version) if version > FORMAT_VERSION => {
                    return Err(storage_error(
                        &path,
                        "refusing to read",
                        format!(
                            "written by a newer skysync-devserver (format {version}; this one reads \
                             format {FORMAT_VERSION}); use that version or another --data directory"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    meta.insert("format", FORMAT_VERSION)
                        .map_err(|e| storage_error(&path, "writing the format version", e))?;
                }
            }
            let stored_epoch = meta
                .get("epoch")
                .map_err(|e| storage_error(&path, "reading the epoch", e))?
                .map(|v| v.value());
            epoch = match stored_epoch {
                Some(epoch) => epoch,
                None => {
                    let epoch = random_epoch();
                    meta.insert("epoch", epoch)
                        .map_err(|e| storage_error(&path, "writing the epoch", e))?;
                    epoch
                }
            };
            drop(meta);
            txn.open_table(COUNTERS)
                .map_err(|e| storage_error(&path, "creating tables", e))?;
            txn.open_table(ZONES)
                .map_err(|e| storage_error(&path, "creating tables", e))?;
            txn.open_table(RECORDS)
                .map_err(|e| storage_error(&path, "creating tables", e))?;
            txn.open_table(SUBSCRIPTIONS)
                .map_err(|e| storage_error(&path, "creating tables", e))?;
            txn.open_table(COURIER_TOKENS)
                .map_err(|e| storage_error(&path, "creating tables", e))?;
        }
        txn.commit()
            .map_err(|e| storage_error(&path, "committing", e))?;
        let state = load(&db, &path, epoch)?;
        Ok((
            Disk {
                db: Arc::new(Mutex::new(Some(Arc::new(db)))),
                path,
            },
            state,
        ))
    }

    /// The open database, or an error once it is closed.
    fn database(&self) -> Result<Arc<redb::Database>, DevServerError> {
        self.db
            .lock()
            // Only an `Option` is swapped under the lock: it is whole even after a panic.
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| storage_error(&self.path, "writing", "the data file is closed"))
    }

    /// Commits `writes` to disk (durably) before returning.
    pub(crate) async fn persist(&self, writes: &[Write]) -> Result<(), DevServerError> {
        let ops = encode_writes(&self.path, writes)?;
        let db = self.database()?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || commit(&db, &path, ops))
            .await
            .map_err(|e| storage_error(&self.path, "the writing task failed", e))?
    }

    /// Closes the data file once the commits in progress are done, so that another server may open
    /// it at once. Later writes fail.
    pub(crate) async fn close(&self) -> Result<(), DevServerError> {
        let taken = self
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut db) = taken else {
            return Ok(());
        };
        // A commit in progress holds a clone; wait for it (bounded: ten seconds).
        for _ in 0..1000 {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    return tokio::task::spawn_blocking(move || drop(db))
                        .await
                        .map_err(|e| storage_error(&self.path, "closing", e));
                }
                Err(shared) => {
                    db = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Err(storage_error(
            &self.path,
            "closing",
            "a commit did not finish within ten seconds",
        ))
    }
}

fn commit(db: &redb::Database, path: &Path, ops: Vec<Op>) -> Result<(), DevServerError> {
    let txn = db
        .begin_write()
        .map_err(|e| storage_error(path, "starting a transaction", e))?;
    {
        let mut counters = txn
            .open_table(COUNTERS)
            .map_err(|e| storage_error(path, "opening a table", e))?;
        let mut zones = txn
            .open_table(ZONES)
            .map_err(|e| storage_error(path, "opening a table", e))?;
        let mut records = txn
            .open_table(RECORDS)
            .map_err(|e| storage_error(path, "opening a table", e))?;
        let mut subscriptions = txn
            .open_table(SUBSCRIPTIONS)
            .map_err(|e| storage_error(path, "opening a table", e))?;
        let mut courier = txn
            .open_table(COURIER_TOKENS)
            .map_err(|e| storage_error(path, "opening a table", e))?;
        for op in ops {
            let result = match op {
                Op::Counter(key, counter) => counters.insert(key.as_slice(), counter).map(drop),
                Op::Put(table, key, value) => {
                    let table = match table {
                        Table::Zones => &mut zones,
                        Table::Records => &mut records,
                        Table::Subscriptions => &mut subscriptions,
                    };
                    table.insert(key.as_slice(), value.as_slice()).map(drop)
                }
                Op::Remove(table, key) => {
                    let table = match table {
                        Table::Zones => &mut zones,
                        Table::Records => &mut records,
                        Table::Subscriptions => &mut subscriptions,
                    };
                    table.remove(key.as_slice()).map(drop)
                }
                Op::Courier(token, owner) => {
                    courier.insert(token.as_str(), owner.as_slice()).map(drop)
                }
            };
            result.map_err(|e| storage_error(path, "writing", e))?;
        }
    }
    txn.commit()
        .map_err(|e| storage_error(path, "committing", e))
}

fn record_key(db: &DbKey, zone: &str, name: &str) -> (DbKey, String, String) {
    (db.clone(), zone.to_owned(), name.to_owned())
}

fn encode_writes(path: &Path, writes: &[Write]) -> Result<Vec<Op>, DevServerError> {
    writes
        .iter()
        .map(|write| {
            Ok(match write {
                Write::Counter { db, counter } => Op::Counter(encode(path, db)?, *counter),
                Write::Zone { db, zone, meta } => Op::Put(
                    Table::Zones,
                    encode(path, &(db, zone))?,
                    encode(path, meta)?,
                ),
                Write::Record { db, zone, stored } => Op::Put(
                    Table::Records,
                    encode(path, &record_key(db, zone, &stored.record.id.record_name))?,
                    encode(path, stored)?,
                ),
                Write::RemoveRecord {
                    db,
                    zone,
                    record_name,
                } => Op::Remove(
                    Table::Records,
                    encode(path, &record_key(db, zone, record_name))?,
                ),
                Write::Subscription { db, stored } => Op::Put(
                    Table::Subscriptions,
                    encode(
                        path,
                        &(db, &stored.subscriber, &stored.subscription.subscription_id),
                    )?,
                    serde_json::to_vec(stored)
                        .map_err(|e| storage_error(path, "encoding a subscription", e))?,
                ),
                Write::RemoveSubscription { db, subscriber, id } => {
                    Op::Remove(Table::Subscriptions, encode(path, &(db, subscriber, id))?)
                }
                Write::CourierToken { token, owner } => {
                    Op::Courier(token.clone(), encode(path, owner)?)
                }
            })
        })
        .collect()
}

fn load(db: &redb::Database, path: &Path, epoch: u64) -> Result<State, DevServerError> {
    let txn = db
        .begin_read()
        .map_err(|e| storage_error(path, "starting a read", e))?;
    let read_err = |e: redb::StorageError| storage_error(path, "reading", e);
    let table_err = |e: redb::TableError| storage_error(path, "opening a table", e);
    let mut writes = Vec::new();

    for entry in txn
        .open_table(COUNTERS)
        .map_err(table_err)?
        .iter()
        .map_err(read_err)?
    {
        let (key, counter) = entry.map_err(read_err)?;
        writes.push(Write::Counter {
            db: decode(path, key.value())?,
            counter: counter.value(),
        });
    }
    for entry in txn
        .open_table(ZONES)
        .map_err(table_err)?
        .iter()
        .map_err(read_err)?
    {
        let (key, meta) = entry.map_err(read_err)?;
        let (db, zone): (DbKey, String) = decode(path, key.value())?;
        let meta: ZoneMeta = decode(path, meta.value())?;
        writes.push(Write::Zone { db, zone, meta });
    }
    for entry in txn
        .open_table(RECORDS)
        .map_err(table_err)?
        .iter()
        .map_err(read_err)?
    {
        let (key, stored) = entry.map_err(read_err)?;
        let (db, zone, _name): (DbKey, String, String) = decode(path, key.value())?;
        let stored: StoredRecord = decode(path, stored.value())?;
        writes.push(Write::Record { db, zone, stored });
    }
    for entry in txn
        .open_table(SUBSCRIPTIONS)
        .map_err(table_err)?
        .iter()
        .map_err(read_err)?
    {
        let (key, stored) = entry.map_err(read_err)?;
        let (db, _subscriber, _id): (DbKey, String, String) = decode(path, key.value())?;
        let stored: StoredSubscription = serde_json::from_slice(stored.value())
            .map_err(|e| storage_error(path, "decoding a subscription", e))?;
        writes.push(Write::Subscription { db, stored });
    }
    for entry in txn
        .open_table(COURIER_TOKENS)
        .map_err(table_err)?
        .iter()
        .map_err(read_err)?
    {
        let (token, owner) = entry.map_err(read_err)?;
        let owner: CourierOwner = decode(path, owner.value())?;
        writes.push(Write::CourierToken {
            token: token.value().to_owned(),
            owner,
        });
    }
    let mut state = State::new(epoch);
    state.apply(writes);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Scope, change_tag};
    use skysync_model::{ChangeTag, Record, RecordId, SystemFields, ZoneId};

    #[tokio::test]
    async fn writes_survive_reopening_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = DbKey {
            container: "c".into(),
            environment: "development".into(),
            scope: Scope::Private,
            owner: "_u".into(),
        };
        let mut record =
            Record::new(RecordId::new(ZoneId::new("Notes"), "n1"), "Note").with("title", "hello");
        record.system = Some(SystemFields {
            change_tag: ChangeTag(change_tag(2)),
            created: None,
            modified: None,
            deleted: false,
        });
        let first_epoch;
        let meta = ZoneMeta {
            generation: 1,
            deleted: false,
            changed_at: 2,
            meta_changed_at: 1,
        };
        {
            let (disk, state) = Disk::open(dir.path().to_owned()).await.unwrap();
            assert!(state.databases.is_empty());
            first_epoch = state.epoch;
            disk.persist(&[
                Write::Zone {
                    db: key.clone(),
                    zone: "Notes".into(),
                    meta: meta.clone(),
                },
                Write::Record {
                    db: key.clone(),
                    zone: "Notes".into(),
                    stored: StoredRecord {
                        record: record.clone(),
                        counter: 2,
                    },
                },
                Write::Counter {
                    db: key.clone(),
                    counter: 2,
                },
            ])
            .await
            .unwrap();
        }
        let (disk, state) = Disk::open(dir.path().to_owned()).await.unwrap();
        assert_eq!(state.epoch, first_epoch, "the epoch is kept with the data");
        let db = &state.databases[&key];
        assert_eq!(db.counter, 2);
        let zone = &db.zones["Notes"];
        assert_eq!(zone.meta, meta);
        assert_eq!(zone.records["n1"].record, record);
        assert_eq!(zone.by_counter.get(&2).map(String::as_str), Some("n1"));
        disk.close().await.unwrap();
        assert!(
            disk.persist(&[Write::Counter {
                db: key,
                counter: 3
            }])
            .await
            .is_err(),
            "a closed file refuses writes"
        );

        {
            let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", FORMAT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let refused = Disk::open(dir.path().to_owned()).await;
        assert!(
            matches!(refused, Err(DevServerError::Storage { ref reason, .. }) if reason.contains("newer")),
            "a newer format must be refused"
        );
    }
}
