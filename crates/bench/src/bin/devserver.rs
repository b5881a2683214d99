//! How fast the dev server takes writes (`cargo xtask bench devserver`): starts a [`DevServer`]
//! in process on 127.0.0.1:0 and sends `records/modify` requests of 200 `forceUpdate` records
//! each, one after another, from a reqwest client on loopback; once with the server keeping
//! everything in memory, once with it keeping its data in a redb file (each request committed to
//! disk before it is answered).
//!
//! ```text
//! cargo run -p skysync-bench --release --bin devserver
//! cargo run -p skysync-bench --release --bin devserver -- --requests 50
//! ```
//!
//! JSON: `requests_per_s`, `records_per_s`, `p50_ms`, `p99_ms` (in memory) and the same with a
//! `durable_` prefix (redb), and `requests` (per run).

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::error::Error;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use skysync_bench::{percentile, round, write_report};
use skysync_devserver::{DevServer, ServerConfig};

/// Records per request: the protocol's maximum.
const RECORDS_PER_REQUEST: usize = 200;

#[derive(Debug, Parser)]
struct Args {
    /// How many records/modify requests each run sends.
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

fn request_body(request: usize) -> Result<Vec<u8>, serde_json::Error> {
    let operations: Vec<Value> = (0..RECORDS_PER_REQUEST)
        .map(|i| {
            json!({"operationType": "forceUpdate", "record": {
            "recordName": format!("r{request:05}-{i:03}"), "recordType": "Note",
            "fields": {
                "title": {"value": format!("note {i} of request {request}")},
                "body": {"value": "The quick brown fox jumps over the lazy dog."},
                "count": {"value": i},
                "at": {"value": 1_700_000_000_000_i64, "type": "TIMESTAMP"}
            }}})
        })
        .collect();
    serde_json::to_vec(&json!({"zoneID": {"zoneName": "Bench"}, "operations": operations}))
}

/// One run's wall time and per-request latencies (ascending).
struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Starts a server (`durable`: over a redb file in a temporary directory) and sends `requests`
/// requests to it.
async fn run(requests: usize, durable: bool) -> Result<Run, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: durable.then(|| dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let server = DevServer::start(config).await?;
    let client = reqwest::Client::new();
    let base = format!(
        "{}/database/1/iCloud.com.example.bench/development/private",
        server.base_url()
    );
    let auth = "ckAPIToken=bench&ckWebAuthToken=bench-user";

    let zone = client
        .post(format!("{base}/zones/modify?{auth}"))
        .body(
            r#"{"operations":[{"operationType":"create","zone":{"zoneID":{"zoneName":"Bench"}}}]}"#,
        )
        .send()
        .await?;
    if !zone.status().is_success() {
        return Err(format!("creating the zone failed: {}", zone.status()).into());
    }

    // Bodies are built before the clock starts: this measures the server and the loopback, not
    // the client's JSON encoding.
    let bodies = (0..requests)
        .map(request_body)
        .collect::<Result<Vec<_>, _>>()?;
    let url = format!("{base}/records/modify?{auth}");
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for body in bodies {
        let sent = Instant::now();
        let response = client.post(&url).body(body).send().await?;
        let status = response.status();
        let answer = response.bytes().await?;
        latencies.push(sent.elapsed());
        if !status.is_success() {
            return Err(format!(
                "records/modify failed with {status}: {}",
                String::from_utf8_lossy(&answer)
            )
            .into());
        }
    }
    let elapsed = started.elapsed();
    server.shutdown().await?;
    latencies.sort();
    Ok(Run { elapsed, latencies })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let mut report = serde_json::Map::new();
    report.insert("requests".into(), json!(args.requests));
    for (durable, prefix, storage) in [
        (false, "", "in memory"),
        (true, "durable_", "redb (committed per request)"),
    ] {
        let r = run(args.requests, durable).await?;
        let seconds = r.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        // Counts far below 2^52: the conversions are exact.
        let records = (args.requests * RECORDS_PER_REQUEST) as f64;
        let requests = args.requests as f64;
        let ms = |p: f64| round(percentile(&r.latencies, p).as_secs_f64() * 1e3, 2);
        println!(
            "{storage}: {} requests x {RECORDS_PER_REQUEST} forceUpdate records in {seconds:.3} s: \
             {:.1} requests/s, {:.0} records/s, p50 {} ms, p99 {} ms",
            args.requests,
            requests / seconds,
            records / seconds,
            ms(50.0),
            ms(99.0),
        );
        report.insert(
            format!("{prefix}requests_per_s"),
            json!(round(requests / seconds, 1)),
        );
        report.insert(
            format!("{prefix}records_per_s"),
            json!(round(records / seconds, 0)),
        );
        report.insert(format!("{prefix}p50_ms"), json!(ms(50.0)));
        report.insert(format!("{prefix}p99_ms"), json!(ms(99.0)));
    }
    write_report("devserver", &Value::Object(report))?;
    Ok(())
}
