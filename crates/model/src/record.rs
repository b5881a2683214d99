//! Records as the app and the local store see them, with the server's system fields.

use crate::field::{Field, FieldValue};
use crate::ids::RecordId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The server's version stamp of one record (`recordChangeTag`): an opaque short string that changes on
/// every write. Sending a stale one in an `update` earns a `CONFLICT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChangeTag(pub String);

impl fmt::Display for ChangeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a change feed (a zone's `syncToken`, or the database's): fetch with it to get only what
/// changed since. Opaque; compare only for equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChangeToken(pub String);

impl fmt::Display for ChangeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who changed a record and when (`created` / `modified` on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since 1970-01-01 UTC, as the server recorded it.
    pub timestamp_ms: i64,
    /// The user record name of the writer, when the server says.
    pub user_record_name: Option<String>,
    /// The writing device, when the server says.
    pub device_id: Option<String>,
}

/// What the server knows about a record beyond its fields: its change tag and history stamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemFields {
    /// The tag to send with the next update, replace or delete.
    pub change_tag: ChangeTag,
    /// When and by whom the record was created.
    pub created: Option<Stamp>,
    /// When and by whom the record was last modified.
    pub modified: Option<Stamp>,
    /// Whether the server reported the record deleted (a tombstone in a change feed).
    pub deleted: bool,
}

/// One record: its identity, type, fields and (once the server has seen it) its system fields.
///
/// The serde derives of this type are its storage shape (see [`crate::codec`]); the wire JSON is
/// [`crate::wire::WireRecord`], converted with [`Record::to_wire`] and [`Record::from_wire`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Which record this is.
    pub id: RecordId,
    /// The record type, e.g. `"Note"`.
    pub record_type: String,
    /// The fields by name. A field holding [`FieldValue::Null`] is an explicit clear.
    pub fields: BTreeMap<String, Field>,
    /// The server's system fields; `None` for a record the server has never confirmed.
    pub system: Option<SystemFields>,
}

impl Record {
    /// A new, never-synced record with no fields.
    pub fn new(id: RecordId, record_type: impl Into<String>) -> Self {
        Self {
            id,
            record_type: record_type.into(),
            fields: BTreeMap::new(),
            system: None,
        }
    }

    /// Sets a (plain, unencrypted) field, replacing any previous value; returns `self` for chaining.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets a (plain, unencrypted) field, replacing any previous value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<FieldValue>) {
        self.fields.insert(name.into(), Field::plain(value.into()));
    }

    /// Clears a field explicitly: it is sent as `{"value": null}`, so the server clears it too.
    pub fn clear(&mut self, name: impl Into<String>) {
        self.fields
            .insert(name.into(), Field::plain(FieldValue::Null));
    }

    /// The value of a field, if the record has it (an explicitly cleared field reads as `Null`).
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.fields.get(name).map(|f| &f.value)
    }

    /// The change tag the server last gave this record, if any.
    pub fn change_tag(&self) -> Option<&ChangeTag> {
        self.system.as_ref().map(|s| &s.change_tag)
    }

    /// The server's modification time in ms, if known.
    pub fn modified_ms(&self) -> Option<i64> {
        self.system
            .as_ref()
            .and_then(|s| s.modified.as_ref())
            .map(|m| m.timestamp_ms)
    }
}
