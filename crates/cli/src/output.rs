//! What the commands print: small structs of this tool's own, as JSON or as human lines.

use crate::error::CliError;
use serde::Serialize;
use serde_json::Value;
use skysync_model::{PendingChange, Record};
use std::collections::BTreeMap;
use std::io::Write as _;

/// A record as the tool shows it: its id, type, change tag and fields in CloudKit's wire form.
#[derive(Debug, Serialize)]
pub struct RecordOut {
    /// The zone's name.
    pub zone: String,
    /// The record's name.
    pub name: String,
    /// The record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The server's change tag, once the record was synced.
    pub change_tag: Option<String>,
    /// The fields, as `{"name": {"value": ..., "type": ...}}`.
    pub fields: BTreeMap<String, Value>,
}

impl RecordOut {
    /// The output form of a record.
    pub fn of(record: &Record) -> Result<RecordOut, CliError> {
        let wire = record.to_wire(false);
        let mut fields = BTreeMap::new();
        for (name, field) in wire.fields.unwrap_or_default() {
            fields.insert(name, serde_json::to_value(field)?);
        }
        Ok(RecordOut {
            zone: record.id.zone.zone_name.clone(),
            name: record.id.record_name.clone(),
            record_type: record.record_type.clone(),
            change_tag: record.change_tag().map(|t| t.0.clone()),
            fields,
        })
    }

    /// One human line: `zone/name (type) tag=... {fields}`.
    pub fn line(&self) -> Result<String, CliError> {
        Ok(format!(
            "{}/{} ({}) tag={} {}",
            self.zone,
            self.name,
            self.record_type,
            self.change_tag.as_deref().unwrap_or("-"),
            serde_json::to_string(&self.fields)?
        ))
    }
}

/// One outbox change as the tool shows it.
#[derive(Debug, Serialize)]
pub struct ChangeOut {
    /// The change's number in the outbox.
    pub seq: u64,
    /// `save` or `delete`.
    pub operation: &'static str,
    /// The zone's name.
    pub zone: String,
    /// The record's name.
    pub name: String,
    /// Why it is parked (parked changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ChangeOut {
    /// The output form of a change.
    pub fn of(seq: u64, change: &PendingChange, reason: Option<String>) -> ChangeOut {
        let id = change.record_id();
        ChangeOut {
            seq,
            operation: if change.is_delete() { "delete" } else { "save" },
            zone: id.zone.zone_name.clone(),
            name: id.record_name.clone(),
            reason,
        }
    }

    /// One human line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "#{} {} {}/{}",
            self.seq, self.operation, self.zone, self.name
        );
        if let Some(reason) = &self.reason {
            line.push_str(&format!(": {reason}"));
        }
        line
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)?;
    print_lines([text])
}

/// Prints lines on stdout.
pub fn print_lines(lines: impl IntoIterator<Item = String>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
