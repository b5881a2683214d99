//! How fast the dev server takes writes: starts a [`DevServer`] in process on 127.0.0.1:0 and sends N
//! `records/modify` requests of 200 `forceUpdate` records each, one after another, from a reqwest
//! client on loopback, then prints records/s and requests/s.
//!
//! ```text
//! cargo run -p skysync-devserver --release --example modify_throughput
//! cargo run -p skysync-devserver --release --example modify_throughput -- --requests 50 --data
//! ```
//!
//! `--data` keeps the data in a redb file in a temporary directory (each request is committed to disk
//! before it is answered); without it the server keeps everything in memory.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::error::Error;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use skysync_devserver::{DevServer, ServerConfig};

/// Records per request: the protocol's maximum.
const RECORDS_PER_REQUEST: usize = 200;

#[derive(Debug, Parser)]
struct Args {
    /// How many records/modify requests to send.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Persist to a redb file in a temporary directory.
    #[arg(long)]
    data: bool,
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        data_dir: args.data.then(|| dir.path().to_owned()),
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
    let bodies = (0..args.requests)
        .map(request_body)
        .collect::<Result<Vec<_>, _>>()?;
    let url = format!("{base}/records/modify?{auth}");
    let mut latencies = Vec::with_capacity(args.requests);
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
    let percentile = |p: usize| {
        latencies
            .get((latencies.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let records = args.requests * RECORDS_PER_REQUEST;
    println!(
        "storage: {}",
        if args.data {
            "redb (committed per request)"
        } else {
            "in memory"
        }
    );
    println!(
        "{} requests x {RECORDS_PER_REQUEST} forceUpdate records in {:.3} s",
        args.requests, seconds
    );
    #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
    let (records_per_second, requests_per_second) =
        (records as f64 / seconds, args.requests as f64 / seconds);
    println!("records/s:  {records_per_second:.0}");
    println!("requests/s: {requests_per_second:.1}");
    println!(
        "latency per request: p50 {:.2} ms, p99 {:.2} ms",
        percentile(50).as_secs_f64() * 1e3,
        percentile(99).as_secs_f64() * 1e3
    );
    Ok(())
}
