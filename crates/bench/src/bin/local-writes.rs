//! Durable local saves (`cargo xtask bench local-writes`): the latency of one writer saving one
//! record after another, and saves per second with 1, 8 and 64 writers saving at once (group
//! commit lets concurrent writers share one fsync).
//!
//! Saves are made the way an app makes them: through [`Engine::save`], on an engine syncing to
//! an in-process dev server on 127.0.0.1 (so the background sends of what was saved run at the
//! same time and share the two cores, the store's writer thread and its fsyncs with the saves,
//! as in an app). The engine's save is the store handle's save plus a message to the session; the
//! same runs are also made directly on a [`StoreHandle`] over another file, reported as
//! `store_*`, to show what the engine adds.
//!
//! Each save is a record of about 200 bytes of fields, saved with its outbox entry in one
//! transaction and committed durably (redb `Durability::Immediate`) before it returns. Each
//! writer cycles through 100 records of its own, so saves are updates as well as creates. The
//! files live in the system temp dir (set `TMPDIR` to measure another disk).
//!
//! JSON: `p50_us`, `p99_us` (one writer, 2,000 saves), `saves_per_s_1`, `saves_per_s_8`,
//! `saves_per_s_64`, the same for the store handle as `store_*`, and `saves_per_commit_64` (how
//! many saves shared a commit with 64 writers, store handle).
//!
//! ```text
//! cargo run -p skysync-bench --release --bin local-writes
//! ```
#![allow(clippy::print_stdout)]

use serde_json::json;
use skysync::{Engine, Record, RecordId, SessionConfig, ThrottleConfig, ZoneId};
use skysync_bench::{percentile, round, write_report};
use skysync_devserver::{DevServer, ServerConfig};
use skysync_store::{StoreConfig, StoreFile, StoreHandle};
use std::error::Error;
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Distinct records each writer cycles through (so saves are updates as well as creates).
const RECORDS_PER_WRITER: usize = 100;

/// Saves of the one-writer latency run.
const LATENCY_SAVES: usize = 2_000;

/// The throughput runs: writers and saves per writer.
const THROUGHPUT_RUNS: [(usize, usize); 3] = [(1, 2_000), (8, 500), (64, 150)];

fn zone() -> ZoneId {
    ZoneId::new("Bench")
}

fn record(writer: usize, i: usize) -> Record {
    Record::new(
        RecordId::new(zone(), format!("w{writer}-r{}", i % RECORDS_PER_WRITER)),
        "Note",
    )
    .with("title", format!("note {i} of writer {writer}"))
    .with("body", "lorem ipsum dolor sit amet ".repeat(6))
    .with("count", i64::try_from(i).unwrap_or(i64::MAX))
}

/// What saves go through.
#[derive(Clone)]
enum Saver {
    /// The engine, as an app saves.
    Engine(Engine),
    /// The store handle directly.
    Store(StoreHandle),
}

impl Saver {
    async fn save(&self, record: Record) -> BenchResult<()> {
        match self {
            Saver::Engine(engine) => {
                engine.save(record).await?;
            }
            Saver::Store(store) => {
                store.save(record).await?;
            }
        }
        Ok(())
    }

    fn store(&self) -> StoreHandle {
        match self {
            Saver::Engine(engine) => engine.components().store,
            Saver::Store(store) => store.clone(),
        }
    }
}

/// One run: its wall time, every save's latency (ascending) and the commits it took.
struct Run {
    saves: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    commits: u64,
}

impl Run {
    fn saves_per_s(&self) -> f64 {
        self.saves as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn saves_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.saves as f64 / self.commits as f64
        }
    }
}

/// `writers` tasks each saving `per_writer` records one after another, all at once.
async fn run(saver: &Saver, writers: usize, per_writer: usize) -> BenchResult<Run> {
    let before = saver.store().writer_stats().await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let saver = saver.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let record = record(w, i);
                let t = Instant::now();
                saver.save(record).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(writers * per_writer);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let after = saver.store().writer_stats().await?;
    latencies.sort();
    Ok(Run {
        saves: writers * per_writer,
        elapsed,
        latencies,
        commits: after.commits - before.commits,
    })
}

/// The latency run and the throughput runs against one saver.
struct Measured {
    latency: Run,
    throughput: Vec<(usize, Run)>,
}

async fn measure(label: &str, saver: &Saver) -> BenchResult<Measured> {
    // Warm up: create the records and the file's pages.
    run(saver, 8, RECORDS_PER_WRITER).await?;
    let latency = run(saver, 1, LATENCY_SAVES).await?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{label}: one writer, {} saves: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        latency.saves,
        us(percentile(&latency.latencies, 50.0)),
        us(percentile(&latency.latencies, 99.0)),
        us(percentile(&latency.latencies, 100.0)),
    );
    println!(
        "{label}: {:>7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>12}",
        "writers", "saves", "seconds", "saves/s", "p50 us", "p99 us", "saves/commit"
    );
    let mut throughput = Vec::new();
    for (writers, per_writer) in THROUGHPUT_RUNS {
        let r = run(saver, writers, per_writer).await?;
        println!(
            "{label}: {:>7} {:>6} {:>8.3} {:>9.0} {:>9.0} {:>9.0} {:>12.1}",
            writers,
            r.saves,
            r.elapsed.as_secs_f64(),
            r.saves_per_s(),
            us(percentile(&r.latencies, 50.0)),
            us(percentile(&r.latencies, 99.0)),
            r.saves_per_commit(),
        );
        throughput.push((writers, r));
    }
    Ok(Measured {
        latency,
        throughput,
    })
}

fn per_s(measured: &Measured, writers: usize) -> f64 {
    measured
        .throughput
        .iter()
        .find(|(w, _)| *w == writers)
        .map_or(0.0, |(_, r)| round(r.saves_per_s(), 0))
}

fn micros(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e6, 1)
}

async fn engine_saves(dir: &std::path::Path) -> BenchResult<Measured> {
    let server = DevServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..ServerConfig::default()
    })
    .await?;
    let mut config = SessionConfig::new(vec![zone()]);
    config.notifications = false;
    let engine = Engine::builder(dir.join("engine.redb"))
        .dev_server(server.base_url(), "bench-user")?
        .session(config)
        .throttle(ThrottleConfig {
            initial_rate: 40.0,
            ..ThrottleConfig::default()
        })
        .build()
        .await?;
    let measured = measure("engine", &Saver::Engine(engine.clone())).await;
    engine.shutdown().await;
    server.shutdown().await?;
    measured
}

async fn store_saves(dir: &std::path::Path) -> BenchResult<Measured> {
    let file = StoreFile::open_async(dir.join("store.redb")).await?;
    let (store, _) = StoreHandle::spawn(file, StoreConfig::default()).await?;
    let measured = measure("store", &Saver::Store(store.clone())).await;
    store.stop().await;
    measured
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "durable saves in {} ({} cores)",
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let only = std::env::var("LW_ONLY").unwrap_or_default();
    if only == "store" {
        store_saves(dir.path()).await?;
        return Ok(());
    }
    let engine = engine_saves(dir.path()).await?;
    if only == "engine" {
        return Ok(());
    }
    let store = store_saves(dir.path()).await?;
    let store_64 = store
        .throughput
        .iter()
        .find(|(w, _)| *w == 64)
        .map_or(0.0, |(_, r)| round(r.saves_per_commit(), 1));
    let report = json!({
        "p50_us": micros(percentile(&engine.latency.latencies, 50.0)),
        "p99_us": micros(percentile(&engine.latency.latencies, 99.0)),
        "saves_per_s_1": per_s(&engine, 1),
        "saves_per_s_8": per_s(&engine, 8),
        "saves_per_s_64": per_s(&engine, 64),
        "store_p50_us": micros(percentile(&store.latency.latencies, 50.0)),
        "store_p99_us": micros(percentile(&store.latency.latencies, 99.0)),
        "store_saves_per_s_1": per_s(&store, 1),
        "store_saves_per_s_8": per_s(&store, 8),
        "store_saves_per_s_64": per_s(&store, 64),
        "saves_per_commit_64": store_64,
    });
    write_report("local-writes", &report)?;
    Ok(())
}
