//! The backlog benchmark (`cargo xtask bench backlog`): a device offline with 100,000 pending
//! changes.
//!
//! - **A save at 0, 10k and 100k pending**: the median of 300 `Engine::save` calls (each durable
//!   on return) on an engine whose server refuses connections (a port on 127.0.0.1 nobody
//!   listens on), so that nothing is sent meanwhile. The backlog is built untimed, straight
//!   through the store's own functions (`Mirror::save`, the same writes a save makes) in large
//!   transactions.
//! - **Opening the engine** on the store holding 100,000 pending changes: from the start of
//!   `Engine::builder(...).build()` until it returns, when the engine accepts a save (the median
//!   of three opens, each a fresh process-level open of the file).
//! - **Draining** the backlog to a dev server on 127.0.0.1 (in this process, in memory): in a
//!   fresh child process (this binary again, with an argument) that opens the engine on the store
//!   and waits until nothing is pending; its peak resident memory (`VmHWM`) is the engine's alone,
//!   not the server's.
//!
//! Pacing is out of the way (the throttle starts at, and may reach, 1,000 requests per second).
//! Records carry about 1 KB of fields each.
//!
//! Writes `target/bench/backlog.json`: `{"save_us_at_0", "save_us_at_10k", "save_us_at_100k",
//! "open_ms", "peak_rss_mb", "drain_s"}`. Goals: a save at 100k at most 1.2 times a save at 0;
//! open at most 200 ms; peak RSS at most 64 MB.

use redb::Durability;
use skysync::{Engine, Record, RecordId, SessionConfig, ZoneId};
use skysync_bench::{TOKEN, dev_server, unpaced};
use skysync_store::StoreFile;
use std::error::Error;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The backlog the device builds up offline.
const BACKLOG: usize = 100_000;
/// The middle level the cost of a save is measured at.
const BACKLOG_SMALL: usize = 10_000;
/// Saves timed at each level (their median is reported).
const SAVES: usize = 300;
/// How many times the engine is opened on the full backlog (the median is reported).
const OPENS: usize = 3;
/// Records per transaction while building the backlog.
const BUILD_CHUNK: usize = 5_000;
/// The longest the drain may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// What the drain child measured, as it prints it for the parent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Drained {
    drained: u64,
    seconds: f64,
    peak_rss_mb: f64,
}

/// The zone every change is in.
fn zone() -> ZoneId {
    ZoneId::new("Backlog")
}

/// A record of about 1 KB of fields.
fn note(name: String, n: usize) -> Record {
    Record::new(RecordId::new(zone(), name), "Note")
        .with("body", "x".repeat(1_000))
        .with("n", i64::try_from(n).unwrap_or(i64::MAX))
}

/// A server URL on 127.0.0.1 that refuses connections: a port that was free a moment ago.
fn refusing_url() -> BenchResult<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}

/// An engine over `path` syncing to `base`.
async fn engine(path: &Path, base: &str) -> BenchResult<Engine> {
    let mut config = SessionConfig::new(vec![zone()]);
    config.notifications = false;
    config.send_debounce = Duration::from_millis(20);
    Ok(Engine::builder(path)
        .dev_server(base, TOKEN)?
        .session(config)
        .throttle(unpaced())
        .build()
        .await?)
}

/// Adds pending saves of records `from..to` to the store at `path`, through the store's own
/// functions, `BUILD_CHUNK` to a durable transaction (untimed).
async fn build_backlog(path: PathBuf, from: usize, to: usize) -> BenchResult<()> {
    tokio::task::spawn_blocking(move || -> BenchResult<()> {
        let file = StoreFile::open(&path)?;
        let mirror = file.mirror();
        for start in (from..to).step_by(BUILD_CHUNK) {
            let mut txn = file.database().begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            for i in start..(start + BUILD_CHUNK).min(to) {
                mirror.save(&txn, &note(format!("b{i:06}"), i))?;
            }
            txn.commit()?;
        }
        Ok(())
    })
    .await?
}

/// The median time of `SAVES` saves of new records on an offline engine, in µs.
async fn median_save_us(engine: &Engine, label: &str) -> BenchResult<f64> {
    let mut times = Vec::with_capacity(SAVES);
    for i in 0..SAVES {
        let record = note(format!("{label}-{i:04}"), i);
        let started = Instant::now();
        engine.save(record).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(skysync_bench::percentile(&times, 50.0).as_secs_f64() * 1e6)
}

/// The drain child: opens the engine on the store at `path`, syncing to `base`, and waits until
/// nothing is pending.
async fn drain(path: &Path, base: &str) -> BenchResult<Drained> {
    let started = Instant::now();
    let engine = engine(path, base).await?;
    let before = engine.diagnostics().await?.queue.pending;
    loop {
        let d = engine.diagnostics().await?;
        if let Some(halt) = d.halt {
            return Err(format!("the engine halted: {}", halt.reason).into());
        }
        if !d.parked.is_empty() {
            return Err(format!("{} changes were parked", d.parked.len()).into());
        }
        if d.queue.pending == 0 && d.in_flight.is_none() {
            break;
        }
        if started.elapsed() > PATIENCE {
            return Err("the backlog did not drain within 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    engine.shutdown().await;
    Ok(Drained {
        drained: before,
        seconds,
        peak_rss_mb: skysync_bench::peak_rss_mb().unwrap_or(0.0),
    })
}

/// The parent: the levels, the opens, the server and the drain child, the report.
async fn parent() -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let offline = refusing_url()?;

    // At 0 pending: a new store.
    let empty = dir.path().join("empty.redb");
    let device = engine(&empty, &offline).await?;
    let save_us_at_0 = median_save_us(&device, "at0").await?;
    device.shutdown().await;
    eprintln!("backlog: a save at 0 pending: {save_us_at_0:.0} µs");

    // At 10k pending.
    let store = dir.path().join("backlog.redb");
    let building = Instant::now();
    build_backlog(store.clone(), 0, BACKLOG_SMALL).await?;
    let device = engine(&store, &offline).await?;
    let save_us_at_10k = median_save_us(&device, "at10k").await?;
    let pending = device.diagnostics().await?.queue.pending;
    device.shutdown().await;
    eprintln!("backlog: a save at 10k pending: {save_us_at_10k:.0} µs");

    // At 100k pending: the rest of the backlog, then the opens and the saves.
    let rest = BACKLOG - usize::try_from(pending)?;
    build_backlog(store.clone(), BACKLOG_SMALL, BACKLOG_SMALL + rest).await?;
    eprintln!(
        "backlog: {BACKLOG} pending changes built in {:.1} s (not timed)",
        building.elapsed().as_secs_f64()
    );
    let mut opens = Vec::with_capacity(OPENS);
    let mut save_us_at_100k = 0.0;
    for attempt in 0..OPENS {
        let started = Instant::now();
        let device = engine(&store, &offline).await?;
        opens.push(started.elapsed());
        if attempt == 0 {
            let pending = device.diagnostics().await?.queue.pending;
            if pending != u64::try_from(BACKLOG)? {
                return Err(format!("the backlog holds {pending}, not {BACKLOG}").into());
            }
        }
        if attempt + 1 == OPENS {
            save_us_at_100k = median_save_us(&device, "at100k").await?;
        }
        device.shutdown().await;
    }
    opens.sort();
    let open_ms = skysync_bench::percentile(&opens, 50.0).as_secs_f64() * 1e3;
    eprintln!("backlog: a save at 100k pending: {save_us_at_100k:.0} µs; open {open_ms:.1} ms");

    // The drain, in a child, to a server in this process.
    let server = dev_server().await?;
    let base = server.base_url();
    let drained: Result<Drained, _> = skysync_bench::in_child(
        "drain",
        &[OsStr::new("drain"), store.as_os_str(), OsStr::new(&base)],
    )
    .await;
    server.shutdown().await?;
    let drained = drained?;
    eprintln!(
        "backlog: drained {} changes in {:.1} s, peak RSS {:.1} MB",
        drained.drained, drained.seconds, drained.peak_rss_mb
    );

    let report = serde_json::json!({
        "save_us_at_0": skysync_bench::round(save_us_at_0, 1),
        "save_us_at_10k": skysync_bench::round(save_us_at_10k, 1),
        "save_us_at_100k": skysync_bench::round(save_us_at_100k, 1),
        "open_ms": skysync_bench::round(open_ms, 1),
        "peak_rss_mb": skysync_bench::round(drained.peak_rss_mb, 1),
        "drain_s": skysync_bench::round(drained.seconds, 2),
    });
    skysync_bench::write_report("backlog", &report)?;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => parent().await,
        [kind, path, base] if kind == "drain" => {
            let drained = drain(Path::new(path), base).await?;
            Ok(skysync_bench::answer_parent(&drained)?)
        }
        _ => Err("usage: backlog [drain STORE_PATH BASE_URL]".into()),
    }
}
