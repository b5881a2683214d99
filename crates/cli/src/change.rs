//! `put` and `delete`: local changes through the store actor, durable when the command returns.

use crate::error::CliError;
use skysync_model::{Record, RecordId, ZoneId};
use skysync_store::{StoreConfig, StoreFile, StoreHandle};
use std::path::PathBuf;

/// The record `put` saves, from its flags; `fields` is CloudKit's wire form of the fields.
pub fn record_from_args(
    zone: &str,
    name: &str,
    record_type: &str,
    fields: &str,
) -> Result<Record, CliError> {
    Record::from_wire_fields_json(&ZoneId::new(zone), name, record_type, fields).map_err(|e| {
        CliError::MalformedFields {
            detail: e.to_string(),
        }
    })
}

/// Opens (or creates) the store and starts its actor.
async fn open(path: &PathBuf) -> Result<StoreHandle, CliError> {
    let file = StoreFile::open_async(path.clone())
        .await
        .map_err(|e| CliError::store(path, e))?;
    let (handle, _join) = StoreHandle::spawn(file, StoreConfig::default())
        .await
        .map_err(|e| CliError::store(path, e))?;
    Ok(handle)
}

/// `skysync put`: saves the record; it is on disk when this returns.
pub async fn put(path: PathBuf, record: Record) -> Result<(), CliError> {
    let store = open(&path).await?;
    let result = store.save(record).await;
    store.stop().await;
    result.map_err(|e| CliError::store(&path, e))?;
    Ok(())
}

/// `skysync delete`: deletes the record; the deletion is on disk when this returns.
pub async fn delete(path: PathBuf, zone: &str, name: &str) -> Result<(), CliError> {
    if !path.exists() {
        return Err(CliError::NoStore { path });
    }
    let store = open(&path).await?;
    let id = RecordId::new(ZoneId::new(zone), name);
    let result = async {
        if store.record(id.clone()).await?.is_none() {
            return Ok(false);
        }
        store.delete(id).await.map(|_| true)
    }
    .await;
    store.stop().await;
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(CliError::NoRecord {
            zone: zone.to_owned(),
            name: name.to_owned(),
        }),
        Err(e) => Err(CliError::store(&path, e)),
    }
}
