//! `status`, `pending`, `records` and `get`: read a store file directly, without an engine.

use crate::error::CliError;
use crate::output::{ChangeOut, RecordOut, print_json, print_lines};
use redb::ReadableDatabase as _;
use serde::Serialize;
use skysync_model::{Record, RecordId, ZoneId};
use skysync_store::{StoreError, StoreFile};
use std::collections::BTreeSet;
use std::path::Path;

/// How many rows one read asks for while paging through a table.
const PAGE: usize = 500;

/// Opens an existing store file (never creates one) and a read transaction over it.
fn open_read(path: &Path) -> Result<(StoreFile, redb::ReadTransaction), CliError> {
    if !path.exists() {
        return Err(CliError::NoStore {
            path: path.to_path_buf(),
        });
    }
    let file = StoreFile::open(path).map_err(|e| CliError::store(path, e))?;
    let txn = file
        .database()
        .begin_read()
        .map_err(|e| CliError::store(path, file.mirror().storage_error(e.into())))?;
    Ok((file, txn))
}

/// The diagnostics of a store file, as `status` prints them.
#[derive(Debug, Serialize)]
struct StatusOut {
    store: String,
    pending: u64,
    parked: u64,
    open_conflicts: u64,
    tagged_records: u64,
    account: Option<String>,
    last_fetch_unix_ms: Option<u64>,
    last_send_unix_ms: Option<u64>,
    synced_zones: Vec<String>,
    zones_to_fetch: Vec<String>,
    zones_deleted_remotely: Vec<String>,
}

/// `skysync status`.
pub fn status(path: &Path, json: bool) -> Result<(), CliError> {
    let (file, txn) = open_read(path)?;
    let mirror = file.mirror();
    let st = |e: StoreError| CliError::store(path, e);
    let depth = mirror
        .outbox()
        .depth(&txn)
        .map_err(|e| st(StoreError::Queue(e)))?;
    let meta = mirror.sync_metadata(&txn).map_err(st)?;
    let names = |zones: &BTreeSet<ZoneId>| zones.iter().map(|z| z.zone_name.clone()).collect();
    let out = StatusOut {
        store: path.display().to_string(),
        pending: depth.pending,
        parked: depth.parked,
        open_conflicts: mirror.open_conflict_count(&txn).map_err(st)?,
        tagged_records: mirror.tagged_count(&txn).map_err(st)?,
        account: meta.account.clone(),
        last_fetch_unix_ms: meta.last_fetch_unix_ms,
        last_send_unix_ms: meta.last_send_unix_ms,
        synced_zones: names(&meta.ensured_zones),
        zones_to_fetch: names(&meta.zones_to_fetch),
        zones_deleted_remotely: names(&meta.deleted_remotely),
    };
    if json {
        return print_json(&out);
    }
    let ms =
        |v: Option<u64>| v.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms since epoch"));
    print_lines([
        format!("store: {}", out.store),
        format!("pending: {}  parked: {}", out.pending, out.parked),
        format!("open conflicts: {}", out.open_conflicts),
        format!("synced records: {}", out.tagged_records),
        format!("account: {}", out.account.as_deref().unwrap_or("unknown")),
        format!("last fetch: {}", ms(out.last_fetch_unix_ms)),
        format!("last send: {}", ms(out.last_send_unix_ms)),
        format!("synced zones: {}", out.synced_zones.join(", ")),
        format!("zones to fetch: {}", out.zones_to_fetch.join(", ")),
        format!(
            "zones deleted remotely: {}",
            out.zones_deleted_remotely.join(", ")
        ),
    ])
}

/// An open conflict as `pending` prints it.
#[derive(Debug, Serialize)]
struct ConflictOut {
    zone: String,
    name: String,
    server_change_tag: Option<String>,
    deleted_on_server: bool,
}

/// The outbox, as `pending` prints it.
#[derive(Debug, Serialize)]
struct PendingOut {
    pending: Vec<ChangeOut>,
    parked: Vec<ChangeOut>,
    open_conflicts: Vec<ConflictOut>,
}

/// `skysync pending`.
pub fn pending(path: &Path, json: bool) -> Result<(), CliError> {
    let (file, txn) = open_read(path)?;
    let mirror = file.mirror();
    let st = |e: StoreError| CliError::store(path, e);
    let queued = mirror
        .outbox()
        .pending(&txn, usize::MAX)
        .map_err(|e| st(StoreError::Queue(e)))?;
    let parked = mirror
        .outbox()
        .parked(&txn)
        .map_err(|e| st(StoreError::Queue(e)))?;
    let mut conflicts = Vec::new();
    let mut after: Option<RecordId> = None;
    loop {
        let page = mirror
            .open_conflicts(&txn, after.as_ref(), PAGE)
            .map_err(st)?;
        let full = page.len() >= PAGE;
        after = page.last().map(|c| c.id.clone());
        conflicts.extend(page.into_iter().map(|c| ConflictOut {
            zone: c.id.zone.zone_name.clone(),
            name: c.id.record_name.clone(),
            server_change_tag: c.server_tag().map(|t| t.0.clone()),
            deleted_on_server: c.server.is_none(),
        }));
        if !full {
            break;
        }
    }
    let out = PendingOut {
        pending: queued
            .iter()
            .map(|q| ChangeOut::of(q.seq.0, &q.change, None))
            .collect(),
        parked: parked
            .iter()
            .map(|p| ChangeOut::of(p.seq.0, &p.change, Some(p.reason.clone())))
            .collect(),
        open_conflicts: conflicts,
    };
    if json {
        return print_json(&out);
    }
    let mut lines = vec![format!("pending ({}):", out.pending.len())];
    lines.extend(out.pending.iter().map(|c| format!("  {}", c.line())));
    lines.push(format!("parked ({}):", out.parked.len()));
    lines.extend(out.parked.iter().map(|c| format!("  {}", c.line())));
    lines.push(format!("open conflicts ({}):", out.open_conflicts.len()));
    lines.extend(out.open_conflicts.iter().map(|c| {
        format!(
            "  {}/{} server tag {}",
            c.zone,
            c.name,
            c.server_change_tag
                .as_deref()
                .unwrap_or("(deleted on server)")
        )
    }));
    print_lines(lines)
}

/// `skysync records`: by zone, by type, both, or (with neither) every zone the store knows.
pub fn records(
    path: &Path,
    zone: Option<&str>,
    record_type: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let (file, txn) = open_read(path)?;
    let mirror = file.mirror();
    let st = |e: StoreError| CliError::store(path, e);
    let mut found: Vec<Record> = Vec::new();
    match (zone, record_type) {
        (_, Some(record_type)) => {
            let mut after: Option<RecordId> = None;
            loop {
                let page = mirror
                    .records_of_type(&txn, record_type, after.as_ref(), PAGE)
                    .map_err(st)?;
                found.extend(page.records);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if let Some(zone) = zone {
                found.retain(|r| r.id.zone.zone_name == zone);
            }
        }
        (Some(zone), None) => {
            found = zone_records(&file, &txn, &ZoneId::new(zone)).map_err(st)?;
        }
        (None, None) => {
            // The store keeps no list of zones: take every zone it syncs or has changes for.
            let meta = mirror.sync_metadata(&txn).map_err(st)?;
            let mut zones: BTreeSet<ZoneId> = meta.ensured_zones.clone();
            zones.extend(meta.zones_to_fetch.iter().cloned());
            let queued = mirror
                .outbox()
                .pending(&txn, usize::MAX)
                .map_err(|e| st(StoreError::Queue(e)))?;
            zones.extend(queued.iter().map(|q| q.change.record_id().zone.clone()));
            let parked = mirror
                .outbox()
                .parked(&txn)
                .map_err(|e| st(StoreError::Queue(e)))?;
            zones.extend(parked.iter().map(|p| p.change.record_id().zone.clone()));
            for zone in &zones {
                found.extend(zone_records(&file, &txn, zone).map_err(st)?);
            }
        }
    }
    let out = found
        .iter()
        .map(RecordOut::of)
        .collect::<Result<Vec<_>, _>>()?;
    if json {
        return print_json(&out);
    }
    let lines = out
        .iter()
        .map(RecordOut::line)
        .collect::<Result<Vec<_>, _>>()?;
    print_lines(lines)
}

/// Every record of one zone.
fn zone_records(
    file: &StoreFile,
    txn: &redb::ReadTransaction,
    zone: &ZoneId,
) -> Result<Vec<Record>, StoreError> {
    let mut found = Vec::new();
    let mut after: Option<RecordId> = None;
    loop {
        let page = file
            .mirror()
            .records_in_zone(txn, zone, after.as_ref(), PAGE)?;
        found.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(found),
        }
    }
}

/// `skysync get`.
pub fn get(path: &Path, zone: &str, name: &str, json: bool) -> Result<(), CliError> {
    let (file, txn) = open_read(path)?;
    let id = RecordId::new(ZoneId::new(zone), name);
    let record = file
        .mirror()
        .record(&txn, &id)
        .map_err(|e| CliError::store(path, e))?
        .ok_or_else(|| CliError::NoRecord {
            zone: zone.to_owned(),
            name: name.to_owned(),
        })?;
    let out = RecordOut::of(&record)?;
    if json {
        print_json(&out)
    } else {
        print_lines([out.line()?])
    }
}
