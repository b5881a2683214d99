//! The download benchmark (`cargo xtask bench download`): 100,000 records fetched by a fresh
//! engine from an in-process dev server on 127.0.0.1, against a raw loop fetching the same pages
//! into redb; and the engine's peak memory at 100,000 records and at 10,000.
//!
//! The parent process runs the dev server and seeds it untimed (records/modify, 200 creates per
//! request) with two zones: one of 10,000 records and one of 100,000 (about 1 KB of fields each).
//! Every measured fetch then runs in a fresh child process (this binary again, with an argument),
//! so that its peak resident memory (`VmHWM`) is that of the fetch alone, not of the server
//! holding the records:
//!
//! - **engine**: a fresh store, `Engine::builder(...).build()`, timed from the start of the build
//!   until the events say every record of the zone was applied (each page is committed with its
//!   token before its event). Pacing is out of the way (the throttle starts at, and may reach,
//!   1,000 requests per second).
//! - **raw**: `changes/zone` with the token of the previous page (200 records per page) until
//!   `moreComing` is false, each page's records and the zone's token written to redb in one
//!   durable commit, as the engine commits a page.
//!
//! Writes `target/bench/download.json`: `{"records", "engine_s", "raw_s", "ratio",
//! "peak_rss_mb", "peak_rss_mb_at_10k"}`. Goals: ratio at most 1.15, peak RSS at most 64 MB, and
//! not growing from 10k to 100k records.

use redb::{Database, Durability, TableDefinition};
use skysync::{Engine, Record, RecordId, SessionConfig, SyncEvent, ZoneId};
use skysync_bench::{CONTAINER, TOKEN, dev_server, unpaced};
use skysync_model::ChangeToken;
use skysync_model::wire::{RecordResult, WireZoneId, ZoneChangesResponse, ZoneChangesResult};
use skysync_transport::answers;
use std::error::Error;
use std::ffi::OsStr;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The records of the timed fetch.
const RECORDS: usize = 100_000;
/// The records of the smaller fetch, whose peak memory the larger one's is compared with.
const RECORDS_SMALL: usize = 10_000;
/// Records per page, and per seeding request.
const PAGE: usize = 200;
/// The longest one fetch may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// The raw loop's tables: record name → the encoded record; zone name → its sync token.
const RAW_RECORDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("raw.records");
const RAW_TOKENS: TableDefinition<'static, &str, &str> = TableDefinition::new("raw.tokens");

/// What a child measured, as it prints it for the parent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Measured {
    records: usize,
    seconds: f64,
    peak_rss_mb: f64,
}

/// The database URL prefix of the bench user's private database on the server at `base`.
fn database_url(base: &str) -> String {
    format!("{base}/database/1/{CONTAINER}/development/private")
}

/// The auth query every request carries.
fn auth() -> String {
    format!("ckAPIToken=dev-api-token&ckWebAuthToken={TOKEN}")
}

/// Creates `zone` and fills it with `count` records of about 1 KB of fields each, 200 per
/// `records/modify` request.
async fn seed(http: &reqwest::Client, base: &str, zone: &ZoneId, count: usize) -> BenchResult<()> {
    let db = database_url(base);
    let auth = auth();
    let create_zone = serde_json::json!({
        "operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": zone.zone_name}}}]
    });
    let created = http
        .post(format!("{db}/zones/modify?{auth}"))
        .json(&create_zone)
        .send()
        .await?;
    if !created.status().is_success() {
        return Err(format!("zones/modify answered {}", created.status()).into());
    }
    let body = "x".repeat(1_000);
    let url = format!("{db}/records/modify?{auth}");
    for start in (0..count).step_by(PAGE) {
        let operations: Vec<_> = (start..(start + PAGE).min(count))
            .map(|i| {
                let record = Record::new(RecordId::new(zone.clone(), format!("r{i:06}")), "Note")
                    .with("body", body.as_str())
                    .with("n", i64::try_from(i).unwrap_or(i64::MAX));
                skysync_model::PendingChange::Save(record).to_operation()
            })
            .collect();
        let request = skysync_model::wire::ModifyRecordsRequest {
            operations,
            zone_id: Some(WireZoneId::from(zone)),
            atomic: Some(false),
            desired_keys: Some(Some(Vec::new())),
            numbers_as_strings: None,
        };
        let answer = http.post(&url).json(&request).send().await?;
        if !answer.status().is_success() {
            return Err(format!("seeding: records/modify answered {}", answer.status()).into());
        }
    }
    Ok(())
}

/// The child's engine fetch: a fresh store, timed from the build's start until every one of the
/// zone's `count` records was applied.
async fn engine_fetch(base: &str, zone: ZoneId, count: usize) -> BenchResult<Measured> {
    let dir = tempfile::tempdir()?;
    let mut config = SessionConfig::new(vec![zone.clone()]);
    config.notifications = false;
    config.fetch_interval = Duration::from_secs(3_600);
    let builder = Engine::builder(dir.path().join("engine.redb"))
        .dev_server(base, TOKEN)?
        .session(config)
        .throttle(unpaced());
    let mut events = builder.events();
    let started = Instant::now();
    let engine = builder.build().await?;
    let mut applied = 0usize;
    while applied < count {
        if started.elapsed() > PATIENCE {
            return Err("the engine did not fetch within 5 minutes".into());
        }
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(SyncEvent::Fetched {
                zone: fetched,
                changed,
                ..
            })) if fetched == zone => applied += changed,
            Ok(Ok(SyncEvent::Halted(halt))) => {
                return Err(format!("the engine halted: {}", halt.reason).into());
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                return Err("missed the engine's events (the bench read them too slowly)".into());
            }
            Ok(Err(RecvError::Closed)) => return Err("the engine stopped".into()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let held = engine.diagnostics().await?.tagged_records;
    engine.shutdown().await;
    if held != u64::try_from(count)? {
        return Err(format!("the engine holds {held} of {count} records").into());
    }
    Ok(Measured {
        records: count,
        seconds,
        peak_rss_mb: skysync_bench::peak_rss_mb().unwrap_or(0.0),
    })
}

/// The child's raw fetch: `changes/zone` page after page into redb, one durable commit per page.
async fn raw_fetch(base: &str, zone: ZoneId, count: usize) -> BenchResult<Measured> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.redb");
    let http = reqwest::Client::new();
    let url = format!("{}/changes/zone?{}", database_url(base), auth());
    let started = Instant::now();
    let db = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || -> BenchResult<Database> {
            let db = Database::create(path)?;
            let txn = db.begin_write()?;
            txn.open_table(RAW_RECORDS)?;
            txn.open_table(RAW_TOKENS)?;
            txn.commit()?;
            Ok(db)
        })
        .await??,
    );
    let mut token: Option<String> = None;
    let mut applied = 0usize;
    loop {
        if started.elapsed() > PATIENCE {
            return Err("the raw loop did not fetch within 5 minutes".into());
        }
        let request = answers::zone_changes_request(
            &zone,
            token.clone().map(ChangeToken),
            Some(u32::try_from(PAGE)?),
        );
        let response = http.post(&url).json(&request).send().await?;
        if !response.status().is_success() {
            return Err(format!("changes/zone answered {}", response.status()).into());
        }
        let answer: ZoneChangesResponse = response.json().await?;
        let Some(ZoneChangesResult::Changes(page)) = answer.zones.into_iter().next() else {
            return Err("changes/zone answered no page for the zone".into());
        };
        let mut records = Vec::with_capacity(page.records.len());
        for result in &page.records {
            let RecordResult::Record(wire) = result else {
                return Err("changes/zone answered an item error".into());
            };
            records.push(Record::from_wire(&zone, wire)?);
        }
        applied += records.len();
        let db_for_page = std::sync::Arc::clone(&db);
        let zone_name = zone.zone_name.clone();
        let sync_token = page.sync_token.clone();
        tokio::task::spawn_blocking(move || -> BenchResult<()> {
            let mut txn = db_for_page.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(RAW_RECORDS)?;
                for record in &records {
                    let bytes = skysync_model::codec::encode(record)?;
                    table.insert(record.id.record_name.as_str(), bytes.as_slice())?;
                }
                let mut tokens = txn.open_table(RAW_TOKENS)?;
                tokens.insert(zone_name.as_str(), sync_token.as_str())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await??;
        token = Some(page.sync_token);
        if !page.more_coming {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if applied != count {
        return Err(format!("the raw loop fetched {applied} of {count} records").into());
    }
    Ok(Measured {
        records: count,
        seconds,
        peak_rss_mb: skysync_bench::peak_rss_mb().unwrap_or(0.0),
    })
}

/// Runs this binary again as a child measuring one fetch, and reads what it measured.
async fn in_child(kind: &str, base: &str, zone: &ZoneId, count: usize) -> BenchResult<Measured> {
    let count = count.to_string();
    let args = [kind, base, &zone.zone_name, &count].map(OsStr::new);
    Ok(skysync_bench::in_child(kind, &args).await?)
}

/// The parent: the server, the seeding, the children, the report.
async fn parent() -> BenchResult<()> {
    let server = dev_server().await?;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let small = ZoneId::new("Bench10k");
    let large = ZoneId::new("Bench100k");
    let seeding = Instant::now();
    seed(&http, &base, &small, RECORDS_SMALL).await?;
    seed(&http, &base, &large, RECORDS).await?;
    eprintln!(
        "download: seeded {} records in {:.1} s (not timed)",
        RECORDS_SMALL + RECORDS,
        seeding.elapsed().as_secs_f64()
    );

    let at_10k = in_child("engine", &base, &small, RECORDS_SMALL).await?;
    eprintln!(
        "download: engine, {RECORDS_SMALL} records: {:.2} s, peak RSS {:.1} MB",
        at_10k.seconds, at_10k.peak_rss_mb
    );
    let engine = in_child("engine", &base, &large, RECORDS).await?;
    eprintln!(
        "download: engine, {RECORDS} records: {:.2} s, peak RSS {:.1} MB",
        engine.seconds, engine.peak_rss_mb
    );
    let raw = in_child("raw", &base, &large, RECORDS).await?;
    eprintln!(
        "download: raw, {RECORDS} records: {:.2} s, peak RSS {:.1} MB",
        raw.seconds, raw.peak_rss_mb
    );
    server.shutdown().await?;

    let report = serde_json::json!({
        "records": RECORDS,
        "engine_s": skysync_bench::round(engine.seconds, 3),
        "raw_s": skysync_bench::round(raw.seconds, 3),
        "ratio": skysync_bench::round(engine.seconds / raw.seconds, 3),
        "peak_rss_mb": skysync_bench::round(engine.peak_rss_mb, 1),
        "peak_rss_mb_at_10k": skysync_bench::round(at_10k.peak_rss_mb, 1),
    });
    skysync_bench::write_report("download", &report)?;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => parent().await,
        [kind, base, zone, count] if kind == "engine" || kind == "raw" => {
            let zone = ZoneId::new(zone.as_str());
            let count: usize = count.parse()?;
            let measured = if kind == "engine" {
                engine_fetch(base, zone, count).await?
            } else {
                raw_fetch(base, zone, count).await?
            };
            Ok(skysync_bench::answer_parent(&measured)?)
        }
        _ => Err("usage: download [engine|raw BASE_URL ZONE COUNT]".into()),
    }
}
