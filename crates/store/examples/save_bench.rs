//! Measures local saves with durable commits: latency with one writer, and throughput with 1, 8 and
//! 64 concurrent writers (group commit lets concurrent writers share fsyncs).
//!
//! Run with `cargo run -p skysync-store --release --example save_bench`. The file lives in the
//! system temp dir (set `TMPDIR` to measure another disk). Each save is a record of ~200 bytes of
//! fields, saved with its outbox entry in one transaction and committed durably before it returns.
#![allow(clippy::print_stdout)]

use skysync_model::{Record, RecordId, ZoneId};
use skysync_store::{StoreConfig, StoreFile, StoreHandle};
use std::error::Error;
use std::time::{Duration, Instant};

/// Distinct records each writer cycles through (so saves are updates as well as creates).
const RECORDS_PER_WRITER: usize = 100;

fn record(writer: usize, i: usize) -> Record {
    Record::new(
        RecordId::new(
            ZoneId::new("Bench"),
            format!("w{writer}-r{}", i % RECORDS_PER_WRITER),
        ),
        "Note",
    )
    .with("title", format!("note {i} of writer {writer}"))
    .with("body", "lorem ipsum dolor sit amet ".repeat(6))
    .with("count", i64::try_from(i).unwrap_or(i64::MAX))
}

struct Run {
    writers: usize,
    saves: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    commits: u64,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(
    store: &StoreHandle,
    writers: usize,
    saves_per_writer: usize,
) -> Result<Run, Box<dyn Error>> {
    let before = store.writer_stats().await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(saves_per_writer);
            for i in 0..saves_per_writer {
                let t = Instant::now();
                store.save(record(w, i)).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, skysync_store::StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(writers * saves_per_writer);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let after = store.writer_stats().await?;
    latencies.sort();
    Ok(Run {
        writers,
        saves: writers * saves_per_writer,
        elapsed,
        latencies,
        commits: after.commits - before.commits,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.redb");
    let file = StoreFile::open_async(&path).await?;
    let (store, _) = StoreHandle::spawn(file, StoreConfig::default()).await?;

    println!("skysync-store save_bench: durable commits (redb Durability::Immediate)");
    println!("file: {}", path.display());
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm up: create the records and the file's pages.
    run(&store, 8, RECORDS_PER_WRITER).await?;

    let single = run(&store, 1, 2000).await?;
    println!();
    println!("one writer, {} sequential saves:", single.saves);
    println!(
        "  latency p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms",
        ms(percentile(&single.latencies, 50)),
        ms(percentile(&single.latencies, 99)),
        ms(percentile(&single.latencies, 100)),
    );

    println!();
    println!(
        "{:>8} {:>8} {:>10} {:>12} {:>10} {:>10} {:>14}",
        "writers", "saves", "seconds", "saves/s", "p50 ms", "p99 ms", "saves/commit"
    );
    for (writers, per_writer) in [(1usize, 2000usize), (8, 500), (64, 100)] {
        let r = run(&store, writers, per_writer).await?;
        let per_commit = if r.commits == 0 {
            0.0
        } else {
            r.saves as f64 / r.commits as f64
        };
        println!(
            "{:>8} {:>8} {:>10.3} {:>12.0} {:>10.3} {:>10.3} {:>14.1}",
            r.writers,
            r.saves,
            r.elapsed.as_secs_f64(),
            r.saves as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 50)),
            ms(percentile(&r.latencies, 99)),
            per_commit,
        );
    }
    store.stop().await;
    Ok(())
}
