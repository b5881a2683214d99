//! The end-to-end demo (`cargo xtask demo`): a dev server in this process, two devices with their
//! own store files, offline edits on both, a conflicting edit, a delete that must not come back, a
//! burst of 2,000 records, and an outage (503 with retryAfter) ridden out. It ends by printing both
//! devices' diagnostics and comparing both devices with the server's own view of its data, and
//! exits non-zero unless all three hold identical records.
#![allow(clippy::print_stdout)]

use indicatif::{ProgressBar, ProgressStyle};
use skysync::{
    Diagnostics, Engine, FieldValue, Record, RecordId, SessionConfig, ThrottleConfig, ZoneId,
};
use skysync_devserver::dev_view::{DatabaseSnapshot, DevUser, DevView};
use skysync_devserver::{DevServer, ServerConfig};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

type DemoResult<T> = Result<T, Box<dyn Error>>;

const USER_TOKEN: &str = "demo-user";
const BURST: usize = 2_000;

fn zone() -> ZoneId {
    ZoneId::new("Notes")
}

fn note(name: &str, title: &str) -> Record {
    Record::new(RecordId::new(zone(), name), "Note").with("title", title)
}

fn config() -> SessionConfig {
    let mut config = SessionConfig::new(vec![zone()]);
    config.fetch_interval = Duration::from_millis(500);
    config.send_debounce = Duration::from_millis(50);
    config
}

fn throttle() -> ThrottleConfig {
    // The dev server has no capacity limit here: start briskly instead of at 0.5/s.
    ThrottleConfig {
        initial_rate: 10.0,
        ..ThrottleConfig::default()
    }
}

async fn device(path: &Path, base_url: &str) -> DemoResult<Engine> {
    Ok(Engine::builder(path)
        .dev_server(base_url, USER_TOKEN)?
        .zones([zone()])
        .session(config())
        .throttle(throttle())
        .build()
        .await?)
}

/// Waits until the device has nothing pending, no open conflict and nothing in flight.
async fn quiet(engine: &Engine, within: Duration) -> DemoResult<Diagnostics> {
    let deadline = Instant::now() + within;
    loop {
        let d = engine.diagnostics().await?;
        if !d.liveness_ok {
            return Err("the liveness rule broke".into());
        }
        if d.queue.pending == 0 && d.open_conflicts == 0 && d.in_flight.is_none() {
            return Ok(d);
        }
        if Instant::now() > deadline {
            return Err(format!("not quiet after {within:?}: {d:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A few fetch rounds on both devices, so each has what the other sent.
async fn settle(a: &Engine, b: &Engine) -> DemoResult<()> {
    for _ in 0..3 {
        a.sync_now();
        b.sync_now();
        quiet(a, Duration::from_secs(60)).await?;
        quiet(b, Duration::from_secs(60)).await?;
    }
    Ok(())
}

/// Every record of the zone on a device: name → fields (explicit nulls left out).
async fn device_records(
    engine: &Engine,
) -> DemoResult<BTreeMap<String, BTreeMap<String, FieldValue>>> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = engine.records_in_zone(zone(), after, 500).await?;
        for record in page.records {
            out.insert(record.id.record_name.clone(), fields(&record));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

fn fields(record: &Record) -> BTreeMap<String, FieldValue> {
    record
        .fields
        .iter()
        .filter(|(_, f)| !matches!(f.value, FieldValue::Null))
        .map(|(k, f)| (k.clone(), f.value.clone()))
        .collect()
}

/// The server's own view of the zone (`/_dev/records`), without any client in between.
async fn server_records(
    server: &DevServer,
) -> DemoResult<BTreeMap<String, BTreeMap<String, FieldValue>>> {
    let view = DevView::new(server.base_url());
    let user: DevUser = reqwest::get(view.user_url(USER_TOKEN))
        .await?
        .json()
        .await?;
    let url = view.records_url(
        "iCloud.dev.skysync",
        "development",
        "private",
        Some(&user.user_record_name),
        Some("Notes"),
    );
    let snapshot: DatabaseSnapshot = reqwest::get(url).await?.json().await?;
    let mut out = BTreeMap::new();
    for zone_snapshot in snapshot.zones {
        for wire in zone_snapshot.records {
            let record = Record::from_wire(&zone(), &wire)?;
            out.insert(record.id.record_name.clone(), fields(&record));
        }
    }
    Ok(out)
}

async fn arm(server: &DevServer, spec: serde_json::Value) -> DemoResult<()> {
    let response = reqwest::Client::new()
        .post(format!("{}/_dev/faults", server.base_url()))
        .json(&spec)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("arming a fault failed: {}", response.text().await?).into());
    }
    Ok(())
}

fn title(
    records: &BTreeMap<String, BTreeMap<String, FieldValue>>,
    name: &str,
    field: &str,
) -> String {
    match records.get(name).and_then(|f| f.get(field)) {
        Some(FieldValue::String(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    }
}

fn row(label: &str, a: String, b: String) {
    println!("  {label:<28} {a:<28} {b:<28}");
}

fn print_diagnostics(a: &Diagnostics, b: &Diagnostics) {
    println!("\n  {:<28} {:<28} {:<28}", "", "device A", "device B");
    row("status", a.status.to_string(), b.status.to_string());
    row(
        "pending / parked",
        format!("{} / {}", a.queue.pending, a.queue.parked),
        format!("{} / {}", b.queue.pending, b.queue.parked),
    );
    row(
        "records with a change tag",
        a.tagged_records.to_string(),
        b.tagged_records.to_string(),
    );
    row(
        "open conflicts",
        a.open_conflicts.to_string(),
        b.open_conflicts.to_string(),
    );
    row(
        "account",
        a.account.clone().unwrap_or_default(),
        b.account.clone().unwrap_or_default(),
    );
    let last = |d: &Diagnostics| {
        d.last_completed
            .as_ref()
            .map(|(op, ok)| {
                format!(
                    "{} #{} {}",
                    op.kind,
                    op.batch_id,
                    if *ok { "ok" } else { "failed" }
                )
            })
            .unwrap_or_default()
    };
    row("last operation", last(a), last(b));
    let rate = |d: &Diagnostics| {
        d.throttle
            .as_ref()
            .map(|t| {
                format!(
                    "{:.2}/s, ceiling {}",
                    t.rate,
                    t.ceiling
                        .map(|c| format!("{c:.2}/s"))
                        .unwrap_or_else(|| "none".into())
                )
            })
            .unwrap_or_default()
    };
    row("pace", rate(a), rate(b));
    let throttles = |d: &Diagnostics| {
        d.throttle
            .as_ref()
            .map(|t| t.throttles.to_string())
            .unwrap_or_default()
    };
    row("throttled answers", throttles(a), throttles(b));
    row(
        "halted",
        format!("{:?}", a.halt.as_ref().map(|h| h.reason.to_string())),
        format!("{:?}", b.halt.as_ref().map(|h| h.reason.to_string())),
    );
    row(
        "liveness",
        a.liveness_ok.to_string(),
        b.liveness_ok.to_string(),
    );
}

async fn run() -> DemoResult<bool> {
    let started = Instant::now();
    let server = DevServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..ServerConfig::default()
    })
    .await?;
    let base = server.base_url();
    let dir = tempfile::tempdir()?;
    let (path_a, path_b) = (
        dir.path().join("device-a.redb"),
        dir.path().join("device-b.redb"),
    );
    println!("skysync demo: dev server at {base}; two devices with their own store files");

    // 1. Both online: A writes three notes, B receives them.
    let a = device(&path_a, &base).await?;
    let b = device(&path_b, &base).await?;
    for (name, text) in [
        ("shopping", "Milk"),
        ("ideas", "A sync engine"),
        ("old", "Delete me"),
    ] {
        a.save(note(name, text)).await?;
    }
    quiet(&a, Duration::from_secs(30)).await?;
    settle(&a, &b).await?;
    println!(
        "1. A saved 3 notes; B has {} of them",
        device_records(&b).await?.len()
    );

    // 2. B goes offline (its server address leads nowhere) and edits; A edits and deletes online.
    b.shutdown().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let nowhere = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let b = device(&path_b, &nowhere).await?;
    let shopping_b = b
        .get(RecordId::new(zone(), "shopping"))
        .await?
        .ok_or("B lost a note")?;
    b.save(shopping_b.with("body", "and eggs (B, offline)"))
        .await?;
    b.save(note("offline-b", "Written on a plane")).await?;
    let shopping_a = a
        .get(RecordId::new(zone(), "shopping"))
        .await?
        .ok_or("A lost a note")?;
    a.save(shopping_a.with("title", "Milk and bread (A)"))
        .await?;
    a.delete(RecordId::new(zone(), "old")).await?;
    quiet(&a, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offline = b.diagnostics().await?;
    println!(
        "2. B is {} with {} changes waiting; A edited `shopping` (title) and deleted `old`",
        offline.status, offline.queue.pending
    );

    // 3. B comes back: its body edit and A's title edit of `shopping` merge; `old` stays deleted.
    b.shutdown().await;
    let b = device(&path_b, &base).await?;
    quiet(&b, Duration::from_secs(30)).await?;
    settle(&a, &b).await?;
    let merged = device_records(&b).await?;
    println!(
        "3. B is back online: `shopping` = \"{}\" / \"{}\"; `old` on B: {}",
        title(&merged, "shopping", "title"),
        title(&merged, "shopping", "body"),
        if merged.contains_key("old") {
            "CAME BACK"
        } else {
            "gone, as it should be"
        }
    );

    // 4. A burst of 2,000 records, with an outage in the middle: the next two uploads get
    //    503 TRY_AGAIN_LATER with retryAfter 1 s.
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "count": 2, "status": 503,
                           "serverErrorCode": "TRY_AGAIN_LATER", "retryAfter": 1}),
    )
    .await?;
    let bar = ProgressBar::new(BURST as u64);
    bar.set_style(
        ProgressStyle::with_template("4. burst {bar:40} {pos}/{len} confirmed {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for i in 0..BURST {
        a.save(note(&format!("burst-{i:04}"), &format!("record {i}")))
            .await?;
    }
    let burst_deadline = Instant::now() + Duration::from_secs(90);
    let mut saw_wait = false;
    loop {
        let d = a.diagnostics().await?;
        saw_wait |= d.status == skysync::Status::Waiting;
        bar.set_position(BURST as u64 - d.queue.pending.min(BURST as u64));
        bar.set_message(d.status.to_string());
        if d.queue.pending == 0 && d.in_flight.is_none() {
            break;
        }
        if Instant::now() > burst_deadline {
            return Err("the burst did not finish in 90 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_with_message("done");
    println!(
        "   the outage was ridden out{}",
        if saw_wait {
            " (A waited out retryAfter)"
        } else {
            ""
        }
    );

    settle(&a, &b).await?;
    let (da, db) = (a.diagnostics().await?, b.diagnostics().await?);
    print_diagnostics(&da, &db);

    let (ra, rb, rs) = (
        device_records(&a).await?,
        device_records(&b).await?,
        server_records(&server).await?,
    );
    let identical = ra == rs && rb == rs;
    println!(
        "\n  A: {} records, B: {} records, server: {} records -> {}",
        ra.len(),
        rb.len(),
        rs.len(),
        if identical { "identical" } else { "DIFFERENT" }
    );
    let merged_ok = title(&rs, "shopping", "title") == "Milk and bread (A)"
        && title(&rs, "shopping", "body") == "and eggs (B, offline)";
    let deleted_ok = !rs.contains_key("old") && !ra.contains_key("old") && !rb.contains_key("old");
    println!(
        "  both edits of `shopping` kept: {merged_ok}; `old` deleted everywhere: {deleted_ok}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await?;
    Ok(identical && merged_ok && deleted_ok && da.liveness_ok && db.liveness_ok)
}

/// `--otlp URL`: export the demo's spans and metrics to an OTLP/HTTP endpoint.
fn otlp_endpoint() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--otlp"), Some(url)) => Ok(Some(url)),
        _ => Err("usage: demo [--otlp URL]  (e.g. --otlp http://127.0.0.1:4318)".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let endpoint = match otlp_endpoint() {
        Ok(endpoint) => endpoint,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = match &endpoint {
        Some(url) => match skysync_telemetry::init(skysync_telemetry::TelemetryConfig {
            service_name: Some("skysync-demo".into()),
            otlp_endpoint: Some(url.clone()),
            log_filter: Some("warn".into()),
            metric_interval: Duration::from_secs(2),
            ..skysync_telemetry::TelemetryConfig::default()
        }) {
            Ok(guard) => {
                println!("exporting spans and metrics to {url} (OTLP/HTTP)");
                Some(guard)
            }
            Err(error) => {
                eprintln!("demo: telemetry could not start: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: the devices and the server do not agree");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}
