//! The store's decoding of what it stored: a store whose tables hold arbitrary bytes (a value, or a
//! key, overwritten with the fuzzer's input in any table of the mirror or the outbox) answers every
//! read and write with a value or a typed error, never a panic.
//!
//! One database in memory (redb's in-memory backend) holds the store's tables and a few saved
//! records (so there are tombstones, a parked change and a token to corrupt). Each input writes
//! itself into one table inside a write transaction, runs the store's reads and a save and a delete
//! over it, and aborts the transaction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redb::backends::InMemoryBackend;
use redb::{Database, TableDefinition};
use std::sync::OnceLock;
use skysync_model::{ChangeToken, Record, RecordId, ZoneId};
use skysync_queue::BatchLimits;
use skysync_store::{FetchedPage, Mirror};

/// The byte-keyed tables the store and the outbox keep (the names are the store format's).
const TABLES: &[&str] = &[
    "skysync.records",
    "skysync.records_by_type",
    "skysync.tagged",
    "skysync.merge_bases",
    "skysync.tombstones",
    "skysync.zone_tokens",
    "skysync.open_conflicts",
    "skysync.sync_meta",
    "skysync.outbox.parked",
];
/// The outbox's pending table is keyed by sequence number.
const PENDING: TableDefinition<'static, i64, &[u8]> =
    TableDefinition::new("skysync.outbox.pending");
const BY_RECORD: TableDefinition<'static, &[u8], i64> =
    TableDefinition::new("skysync.outbox.by_record");

fn zone() -> ZoneId {
    ZoneId::new("Fuzz")
}

fn note(name: &str) -> Record {
    Record::new(RecordId::new(zone(), name), "Note").with("title", name)
}

/// A database with the store's tables and a little of everything in them.
fn seeded(mirror: &Mirror) -> Option<Database> {
    let db = Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .ok()?;
    let txn = db.begin_write().ok()?;
    mirror.create_tables(&txn).ok()?;
    for name in ["a", "b", "c"] {
        mirror.save(&txn, &note(name)).ok()?;
    }
    mirror.delete(&txn, &RecordId::new(zone(), "c")).ok()?;
    let b = RecordId::new(zone(), "b");
    let seq = mirror.save(&txn, &note("b")).ok()?;
    mirror.outbox().park(&txn, &b, seq, "fuzz").ok()?;
    let page = FetchedPage {
        zone: zone(),
        changed: vec![],
        deleted: vec![],
        token: ChangeToken("t1".into()),
        more_coming: false,
    };
    mirror.apply_fetched(&txn, &page).ok()?;
    txn.commit().ok()?;
    Some(db)
}

/// A sequence number from the first eight bytes (missing bytes are zero).
fn seq_of(bytes: &[u8]) -> i64 {
    let mut eight = [0u8; 8];
    for (slot, byte) in eight.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    i64::from_le_bytes(eight)
}

/// The seeded database, built once; every input works in a write transaction it then aborts, so
/// each sees the same seeded store.
fn database() -> Option<&'static (Mirror, Database)> {
    static DATABASE: OnceLock<Option<(Mirror, Database)>> = OnceLock::new();
    DATABASE
        .get_or_init(|| {
            let mirror = Mirror::new("fuzz.redb");
            let db = seeded(&mirror)?;
            Some((mirror, db))
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let [selector, key_len, rest @ ..] = data else {
        return;
    };
    let key_len = usize::from(*key_len).min(rest.len());
    let (key, value) = rest.split_at(key_len);
    let Some((mirror, db)) = database() else {
        return;
    };
    let Ok(txn) = db.begin_write() else {
        return;
    };
    let choice = usize::from(*selector) % (TABLES.len() + 2);
    let written = match TABLES.get(choice) {
        Some(name) => {
            let table: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(name);
            txn.open_table(table)
                .map(|mut t| t.insert(key, value).is_ok())
                .unwrap_or(false)
        }
        None if choice == TABLES.len() => txn
            .open_table(PENDING)
            .map(|mut t| t.insert(seq_of(key), value).is_ok())
            .unwrap_or(false),
        None => txn
            .open_table(BY_RECORD)
            .map(|mut t| t.insert(key, seq_of(value)).is_ok())
            .unwrap_or(false),
    };
    if !written {
        return;
    }
    // Every read answers (a value or a typed error) and never panics.
    for name in ["a", "b", "c", "d"] {
        let id = RecordId::new(zone(), name);
        let _ = mirror.record(&txn, &id);
        let _ = mirror.merge_base(&txn, &id);
        let _ = mirror.tombstone(&txn, &id);
        let _ = mirror.open_conflict(&txn, &id);
        let _ = mirror.outbox().entry(&txn, &id);
    }
    let _ = mirror.records_in_zone(&txn, &zone(), None, 10);
    let _ = mirror.records_of_type(&txn, "Note", None, 10);
    let _ = mirror.open_conflicts(&txn, None, 10);
    let _ = mirror.open_conflict_count(&txn);
    let _ = mirror.change_token(&txn, &zone());
    let _ = mirror.sync_metadata(&txn);
    let _ = mirror.tagged_count(&txn);
    let _ = mirror.outbox().form_batch(&txn, BatchLimits::default());
    let _ = mirror.outbox().pending(&txn, 10);
    let _ = mirror.outbox().parked(&txn);
    let _ = mirror.outbox().depth(&txn);
    // And so does changing the store over what was corrupted.
    let _ = mirror.save(&txn, &note("a"));
    let _ = mirror.delete(&txn, &RecordId::new(zone(), "b"));
    let _ = mirror.save(&txn, &note("c"));
    // Back to the seeded state for the next input.
    let _ = txn.abort();
});
