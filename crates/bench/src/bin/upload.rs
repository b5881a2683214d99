//! The upload benchmark (`cargo xtask bench upload`): 20,000 record saves (about 1 KB of fields
//! each) synced by the engine to an in-process dev server on 127.0.0.1, against a raw baseline
//! that does the same work without the engine.
//!
//! - **engine**: `Engine::save` for every record (durable on return), then wait until the outbox
//!   is empty and nothing is in flight. Timed from the first save to the last confirmation.
//! - **raw**: the same records, each written to redb in one durable commit of its own (the record
//!   and its outbox row, as the engine's store does), and, as soon as 200 are on disk, those 200
//!   sent in one `records/modify` request with reqwest (the very body the engine sends), the
//!   answer's change tags committed durably with the rows taken off the outbox. Saving and sending
//!   overlap, as they do in the engine: this is what the disk and the network allow.
//!
//! Pacing is out of the way in the engine (the throttle starts at, and may reach, 1,000 requests
//! per second): this measures the engine, not the server's patience. Each run has its own server
//! and its own store file; the records are built before either clock starts. After each run the
//! server's copy of the zone is counted, so a run that lost records fails instead of reporting.
//!
//! Writes `target/bench/upload.json`: `{"records", "engine_s", "raw_s", "ratio"}` (ratio =
//! engine_s / raw_s; the goal is at most 1.15).

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use skysync::{Engine, Record, RecordId, SessionConfig, ZoneId};
use skysync_bench::{CONTAINER, TOKEN, dev_server, unpaced};
use skysync_devserver::DevServer;
use skysync_devserver::dev_view::DatabaseSnapshot;
use skysync_model::PendingChange;
use skysync_model::wire::{RecordResult, RecordsResponse};
use skysync_transport::ModifyBatch;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// How many records each run saves and syncs.
const RECORDS: usize = 20_000;
/// How many changes one `records/modify` request carries (CloudKit's limit, the engine's batch).
const BATCH: usize = 200;
/// The longest either run may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// The raw baseline's tables: record name → the encoded record; outbox position → the encoded
/// pending change.
const RAW_RECORDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("raw.records");
const RAW_OUTBOX: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("raw.outbox");

/// The records both runs save: about 1 KB of fields each, one zone.
fn records(zone: &ZoneId) -> BenchResult<Vec<Record>> {
    let body = "x".repeat(1_000);
    (0..RECORDS)
        .map(|i| {
            Ok(
                Record::new(RecordId::new(zone.clone(), format!("r{i:05}")), "Note")
                    .with("body", body.as_str())
                    .with("n", i64::try_from(i)?),
            )
        })
        .collect()
}

/// How many `records/modify` requests the server received from the bench user.
fn modify_requests(server: &DevServer) -> u64 {
    let user = skysync_devserver::auth::web_token_user(TOKEN);
    server
        .request_stats()
        .user(&user)
        .operations
        .get("records/modify")
        .map_or(0, |o| o.requests)
}

/// How many live records the server holds in `zone` of the bench user's private database.
async fn records_on_server(server: &DevServer, zone: &ZoneId) -> BenchResult<usize> {
    let user = skysync_devserver::auth::web_token_user(TOKEN);
    let url = server.dev_view().records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user),
        Some(&zone.zone_name),
    );
    let snapshot: DatabaseSnapshot = reqwest::get(url).await?.json().await?;
    Ok(snapshot
        .zones
        .iter()
        .filter(|z| z.zone_name == zone.zone_name && !z.deleted)
        .map(|z| z.records.len())
        .sum())
}

/// The engine: every save durable on return, synced in the background; timed until the outbox is
/// empty and nothing is in flight.
async fn engine_run(zone: &ZoneId, records: Vec<Record>) -> BenchResult<f64> {
    let server = dev_server().await?;
    let dir = tempfile::tempdir()?;
    let mut config = SessionConfig::new(vec![zone.clone()]);
    config.send_debounce = Duration::from_millis(20);
    config.notifications = false;
    let engine = Engine::builder(dir.path().join("engine.redb"))
        .dev_server(server.base_url(), TOKEN)?
        .session(config)
        .throttle(unpaced())
        .build()
        .await?;
    let started = Instant::now();
    for record in records {
        engine.save(record).await?;
    }
    loop {
        let d = engine.diagnostics().await?;
        if d.queue.pending == 0 && d.in_flight.is_none() {
            break;
        }
        if let Some(halt) = d.halt {
            return Err(format!("the engine halted: {}", halt.reason).into());
        }
        if started.elapsed() > PATIENCE {
            return Err("the engine did not sync within 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = engine.components().store.writer_stats().await?.commits;
    engine.shutdown().await;
    eprintln!(
        "upload: engine: {} records/modify requests, {commits} durable commits",
        modify_requests(&server)
    );
    let on_server = records_on_server(&server, zone).await?;
    server.shutdown().await?;
    if on_server != RECORDS {
        return Err(
            format!("the engine left {on_server} of {RECORDS} records on the server").into(),
        );
    }
    Ok(elapsed)
}

/// What the raw baseline's sender needs: where to send, and the store to confirm into.
struct RawSender {
    http: reqwest::Client,
    modify_url: String,
    db: Arc<Database>,
    zone: ZoneId,
}

impl RawSender {
    /// Sends the changes at outbox positions `first..=last` in one `records/modify` request and
    /// commits the answer's change tags durably, taking the rows off the outbox.
    async fn send(&self, first: u64, last: u64) -> BenchResult<()> {
        let db = Arc::clone(&self.db);
        let changes = tokio::task::spawn_blocking(move || -> BenchResult<Vec<PendingChange>> {
            let txn = db.begin_read()?;
            let outbox = txn.open_table(RAW_OUTBOX)?;
            let mut changes = Vec::new();
            for row in outbox.range(first..=last)? {
                let (_, bytes) = row?;
                changes.push(skysync_model::codec::decode(bytes.value())?);
            }
            Ok(changes)
        })
        .await??;
        let body = serde_json::to_vec(
            &ModifyBatch::new(self.zone.clone(), changes.clone())?.to_request(),
        )?;
        let response = self
            .http
            .post(&self.modify_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("records/modify answered {}", response.status()).into());
        }
        let answer: RecordsResponse = response.json().await?;
        if answer.records.len() != changes.len() {
            return Err("records/modify answered the wrong number of records".into());
        }
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || -> BenchResult<()> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(RAW_RECORDS)?;
                let mut outbox = txn.open_table(RAW_OUTBOX)?;
                for ((position, change), result) in (first..=last).zip(changes).zip(answer.records)
                {
                    let (PendingChange::Save(mut record), RecordResult::Record(wire)) =
                        (change, result)
                    else {
                        return Err("a record was not saved".into());
                    };
                    record.system = wire.system_fields();
                    let bytes = skysync_model::codec::encode(&record)?;
                    table.insert(record.id.record_name.as_str(), bytes.as_slice())?;
                    outbox.remove(position)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await?
    }
}

/// The raw baseline: one durable commit per save on a blocking thread, and each full batch sent
/// (and its answer committed) while the saves go on.
async fn raw_run(zone: &ZoneId, records: Vec<Record>) -> BenchResult<f64> {
    let server = dev_server().await?;
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Database::create(dir.path().join("raw.redb"))?);
    {
        let txn = db.begin_write()?;
        txn.open_table(RAW_RECORDS)?;
        txn.open_table(RAW_OUTBOX)?;
        txn.commit()?;
    }
    let http = reqwest::Client::new();
    let base = format!(
        "{}/database/1/{CONTAINER}/development/private",
        server.base_url()
    );
    let auth = format!("ckAPIToken=dev-api-token&ckWebAuthToken={TOKEN}");
    // The zone exists before the clock starts (the engine creates it in its first milliseconds).
    let create_zone = serde_json::json!({
        "operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": zone.zone_name}}}]
    });
    let created = http
        .post(format!("{base}/zones/modify?{auth}"))
        .json(&create_zone)
        .send()
        .await?;
    if !created.status().is_success() {
        return Err(format!("zones/modify answered {}", created.status()).into());
    }
    let sender = RawSender {
        http,
        modify_url: format!("{base}/records/modify?{auth}"),
        db: Arc::clone(&db),
        zone: zone.clone(),
    };
    let (batches, mut ready) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();

    let started = Instant::now();
    let saver_db = Arc::clone(&db);
    let saver = tokio::task::spawn_blocking(move || -> BenchResult<()> {
        let mut first = 1u64;
        for (position, record) in (1u64..).zip(records) {
            let change = PendingChange::Save(record.clone());
            let mut txn = saver_db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(RAW_RECORDS)?;
                let mut outbox = txn.open_table(RAW_OUTBOX)?;
                let bytes = skysync_model::codec::encode(&record)?;
                table.insert(record.id.record_name.as_str(), bytes.as_slice())?;
                let bytes = skysync_model::codec::encode(&change)?;
                outbox.insert(position, bytes.as_slice())?;
            }
            txn.commit()?;
            if position - first + 1 == BATCH as u64 {
                batches.send((first, position))?;
                first = position + 1;
            }
        }
        Ok(())
    });
    // A trailing partial batch would need one more send; RECORDS is a multiple of BATCH.
    while let Some((first, last)) = ready.recv().await {
        sender.send(first, last).await?;
        if started.elapsed() > PATIENCE {
            return Err("the raw baseline did not sync within 5 minutes".into());
        }
    }
    saver.await??;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "upload: raw: {} records/modify requests, {} durable commits",
        modify_requests(&server),
        RECORDS + RECORDS / BATCH
    );
    let on_server = records_on_server(&server, zone).await?;
    server.shutdown().await?;
    if on_server != RECORDS {
        return Err(format!("the raw baseline left {on_server} of {RECORDS} records").into());
    }
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let zone = ZoneId::new("Bench");
    let engine_s = engine_run(&zone, records(&zone)?).await?;
    eprintln!("upload: engine {engine_s:.2} s");
    let raw_s = raw_run(&zone, records(&zone)?).await?;
    eprintln!("upload: raw {raw_s:.2} s");
    let report = serde_json::json!({
        "records": RECORDS,
        "engine_s": skysync_bench::round(engine_s, 3),
        "raw_s": skysync_bench::round(raw_s, 3),
        "ratio": skysync_bench::round(engine_s / raw_s, 3),
    });
    skysync_bench::write_report("upload", &report)?;
    Ok(())
}
