//! What telemetry costs (`cargo xtask bench telemetry`): the time to save 20,000 records and sync
//! them to an in-process dev server, first with no telemetry installed, then with
//! `skysync_telemetry::init` exporting every span and metric over OTLP/HTTP to a collector on
//! 127.0.0.1, in one run.
//!
//! ```text
//! cargo run -p skysync-bench --release --bin telemetry
//! ```
//!
//! JSON: `off_s`, `on_s` (seconds to save and sync everything without and with telemetry),
//! `cost_pct` (how much longer it took with telemetry, in percent) and `export_requests` (OTLP
//! requests the collector received).
#![allow(clippy::print_stdout)]

use serde_json::json;
use skysync::{Engine, Record, RecordId, SessionConfig, ThrottleConfig, ZoneId};
use skysync_bench::{round, write_report};
use skysync_devserver::{DevServer, ServerConfig};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const RECORDS: usize = 20_000;

/// Saves `RECORDS` records (about 1 KB of fields each) and waits until the server has them all.
async fn sync_all() -> BenchResult<Duration> {
    let server = DevServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..ServerConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let zone = ZoneId::new("Bench");
    let mut config = SessionConfig::new(vec![zone.clone()]);
    config.send_debounce = Duration::from_millis(20);
    config.notifications = false;
    let engine = Engine::builder(dir.path().join("bench.redb"))
        .dev_server(server.base_url(), "bench-user")?
        .session(config)
        // Pacing out of the way: this measures the engine, not the server's patience.
        .throttle(ThrottleConfig {
            initial_rate: 40.0,
            ..ThrottleConfig::default()
        })
        .build()
        .await?;
    let body = "x".repeat(1_000);
    let started = Instant::now();
    for i in 0..RECORDS {
        let record = Record::new(RecordId::new(zone.clone(), format!("r{i:05}")), "Note")
            .with("body", body.as_str())
            .with("n", i64::try_from(i)?);
        engine.save(record).await?;
    }
    loop {
        let d = engine.diagnostics().await?;
        if d.queue.pending == 0 && d.in_flight.is_none() {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err("not synced within 15 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    engine.shutdown().await;
    server.shutdown().await?;
    Ok(elapsed)
}

/// An OTLP/HTTP collector on 127.0.0.1 that accepts everything and counts the requests.
async fn collector() -> BenchResult<(String, Arc<AtomicU64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let app = axum::Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        // The collector lives as long as the process.
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, received))
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let off = sync_all().await?;
    println!(
        "telemetry off: {RECORDS} records saved and synced in {:.2} s",
        off.as_secs_f64()
    );
    let (url, received) = collector().await?;
    let guard = skysync_telemetry::init(skysync_telemetry::TelemetryConfig {
        service_name: Some("skysync-bench".into()),
        otlp_endpoint: Some(url.clone()),
        log_to_stderr: false,
        metric_interval: Duration::from_secs(1),
        ..skysync_telemetry::TelemetryConfig::default()
    })?;
    let on = sync_all().await?;
    // Flushing blocks while the exporter sends: not on an async worker.
    tokio::task::spawn_blocking(move || drop(guard)).await?;
    println!(
        "telemetry on (OTLP/HTTP to {url}, {} export requests): {:.2} s",
        received.load(Ordering::Relaxed),
        on.as_secs_f64()
    );
    let cost_pct = (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0;
    println!("cost: {cost_pct:+.1} %");
    let report = json!({
        "off_s": round(off.as_secs_f64(), 3),
        "on_s": round(on.as_secs_f64(), 3),
        "cost_pct": round(cost_pct, 1),
        "export_requests": received.load(Ordering::Relaxed),
    });
    write_report("telemetry", &report)?;
    Ok(())
}
