//! What one durable save costs as the outbox grows: `cargo run --release -p skysync-store
//! --example commit_cost -- [CACHE_MIB] [none]`. Builds 0, 10k and 100k pending saves of ~1 KB records
//! (5,000 to a transaction), then times 300 saves of new records, each in its own durable
//! transaction (as the store's writer commits one save), and reports the median time, the bytes
//! written per commit (`wchar` of /proc/self/io) and redb's tree height.
#![allow(clippy::print_stdout)]

use redb::{Durability, ReadableDatabase};
use skysync_model::{Record, RecordId, ZoneId};
use skysync_store::Mirror;
use std::time::{Duration, Instant};

fn note(name: String, n: usize) -> Record {
    Record::new(RecordId::new(ZoneId::new("Backlog"), name), "Note")
        .with("body", "x".repeat(1_000))
        .with("n", i64::try_from(n).unwrap_or(i64::MAX))
}

fn io(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.trim().strip_prefix(':'))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cost.redb");
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_mib * 1024 * 1024);
    let db = builder.create(&path)?;
    let mirror = Mirror::new(&path);
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    mirror.create_tables(&txn)?;
    txn.commit()?;
    // `none` leaves out the fsync: the CPU a save costs.
    let durability = match std::env::args().nth(2).as_deref() {
        Some("none") => Durability::None,
        _ => Durability::Immediate,
    };
    println!("cache {cache_mib} MiB, {durability:?}");
    let mut built = 0;
    for level in [0usize, 10_000, 100_000] {
        while built < level {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            for i in built..(built + 5_000).min(level) {
                mirror.save(&txn, &note(format!("b{i:06}"), i))?;
            }
            txn.commit()?;
            built = (built + 5_000).min(level);
        }
        let mut times: Vec<Duration> = Vec::new();
        let (w0, s0) = (io("wchar"), io("syscw"));
        for i in 0..300 {
            let started = Instant::now();
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            mirror.save(&txn, &note(format!("at{level}-{i:04}"), i))?;
            txn.commit()?;
            times.push(started.elapsed());
        }
        let (w1, s1) = (io("wchar"), io("syscw"));
        times.sort();
        let stats = db.begin_write()?.stats()?;
        let file_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        println!(
            "pending {level:>6}: median {:>5.0} us, p90 {:>5.0} us, {:>6.0} bytes and {:.1} writes per commit, tree height {}, file {file_mb:.1} MB",
            times[150].as_secs_f64() * 1e6,
            times[270].as_secs_f64() * 1e6,
            (w1 - w0) as f64 / 300.0,
            (s1 - s0) as f64 / 300.0,
            stats.tree_height(),
        );
        let _ = db.begin_read();
    }
    Ok(())
}
