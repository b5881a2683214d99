//! Records on the wire: the record dictionary, fields, per-record errors, and the bodies of
//! `records/modify`, `records/lookup`, `records/query`, `records/changes` and `changes/zone`.

use super::{WireZoneId, ZoneFetchError, nullable, retry_after};
use crate::error::{ErrorScope, ModelError, ServerError, ServerErrorCode};
use crate::field::Field;
use crate::ids::{RecordId, ZoneId};
use crate::record::{ChangeTag, Record, Stamp, SystemFields};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A field dictionary: `{"value": …, "type": "…"?, "isEncrypted": true?}`. The value is kept as raw JSON
/// so that each field can fail on its own; convert with [`Field::from_wire`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireField {
    /// The raw value.
    #[serde(default)]
    pub value: Value,
    /// The type tag, optional on writes.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub field_type: Option<String>,
    /// `isEncrypted`.
    #[serde(
        rename = "isEncrypted",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_encrypted: Option<bool>,
}

/// `created` / `modified`: `{timestamp, userRecordName, deviceID}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStamp {
    /// ms since 1970.
    pub timestamp: i64,
    /// The writer.
    #[serde(
        rename = "userRecordName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_record_name: Option<String>,
    /// The writing device.
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl From<&WireStamp> for Stamp {
    fn from(w: &WireStamp) -> Self {
        Stamp {
            timestamp_ms: w.timestamp,
            user_record_name: w.user_record_name.clone(),
            device_id: w.device_id.clone(),
        }
    }
}

impl From<&Stamp> for WireStamp {
    fn from(s: &Stamp) -> Self {
        WireStamp {
            timestamp: s.timestamp_ms,
            user_record_name: s.user_record_name.clone(),
            device_id: s.device_id.clone(),
        }
    }
}

/// The record dictionary, in requests and responses. Keys this type does not name (sharing keys such
/// as `shortGUID`, `share`, `parent`, `participants`) are kept in `extra` and re-emitted.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct WireRecord {
    /// `recordName` (a create without one gets a random name).
    #[serde(
        rename = "recordName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub record_name: Option<String>,
    /// `recordType`.
    #[serde(
        rename = "recordType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub record_type: Option<String>,
    /// `recordChangeTag`.
    #[serde(
        rename = "recordChangeTag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub record_change_tag: Option<String>,
    /// `fields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, WireField>>,
    /// `created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<WireStamp>,
    /// `modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<WireStamp>,
    /// `deleted`: a tombstone in a change feed, or a confirmed delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// `zoneID`, which some responses put on records.
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<WireZoneId>,
    /// Every other key, passed through unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl WireRecord {
    /// Whether this entry reports a deleted record.
    pub fn is_tombstone(&self) -> bool {
        self.deleted == Some(true)
    }
}

impl Record {
    /// The wire dictionary of this record: name, type, change tag (if any), every field with its type
    /// tag, and the server stamps it has. With `numbers_as_strings`, integers go out as strings.
    pub fn to_wire(&self, numbers_as_strings: bool) -> WireRecord {
        let system = self.system.as_ref();
        WireRecord {
            record_name: Some(self.id.record_name.clone()),
            record_type: Some(self.record_type.clone()),
            record_change_tag: system.map(|s| s.change_tag.0.clone()),
            fields: Some(
                self.fields
                    .iter()
                    .map(|(name, field)| (name.clone(), field.to_wire(numbers_as_strings)))
                    .collect(),
            ),
            created: system.and_then(|s| s.created.as_ref()).map(WireStamp::from),
            modified: system
                .and_then(|s| s.modified.as_ref())
                .map(WireStamp::from),
            deleted: system.and_then(|s| s.deleted.then_some(true)),
            ..WireRecord::default()
        }
    }

    /// The record a wire dictionary describes, placed in `zone` (or in the record's own `zoneID`
    /// when it names one). Needs `recordName` and `recordType`; every field must parse.
    pub fn from_wire(zone: &ZoneId, wire: &WireRecord) -> Result<Record, ModelError> {
        let record_name = wire
            .record_name
            .clone()
            .ok_or(ModelError::MissingKey { key: "recordName" })?;
        let record_type = wire
            .record_type
            .clone()
            .ok_or(ModelError::MissingKey { key: "recordType" })?;
        let zone = wire
            .zone_id
            .as_ref()
            .map_or_else(|| zone.clone(), WireZoneId::to_zone_id);
        let mut fields = BTreeMap::new();
        for (name, field) in wire.fields.iter().flatten() {
            fields.insert(name.clone(), Field::from_wire(name, field)?);
        }
        Ok(Record {
            id: RecordId::new(zone, record_name),
            record_type,
            fields,
            system: wire.system_fields(),
        })
    }
}

impl Record {
    /// A new record named `name` of `record_type` in `zone` whose fields are written in CloudKit's
    /// wire form, as a person types them (`{"title": {"value": "x", "type": "STRING"}}`): what
    /// `skysync put --fields` reads. Every field must parse; nothing else may be in the text.
    ///
    /// ```
    /// use skysync_model::{Record, ZoneId};
    ///
    /// let record = Record::from_wire_fields_json(
    ///     &ZoneId::new("Notes"),
    ///     "n1",
    ///     "Note",
    ///     r#"{"title": {"value": "hello", "type": "STRING"}}"#,
    /// )?;
    /// assert_eq!(record.fields.len(), 1);
    /// assert!(Record::from_wire_fields_json(&ZoneId::new("Notes"), "n1", "Note", "{").is_err());
    /// # Ok::<(), skysync_model::ModelError>(())
    /// ```
    pub fn from_wire_fields_json(
        zone: &ZoneId,
        name: &str,
        record_type: &str,
        fields_json: &str,
    ) -> Result<Record, ModelError> {
        let fields: BTreeMap<String, WireField> =
            serde_json::from_str(fields_json).map_err(|e| ModelError::InvalidJson {
                what: "a JSON object of fields in CloudKit's wire form",
                detail: e.to_string(),
            })?;
        let wire = WireRecord {
            record_name: Some(name.to_owned()),
            record_type: Some(record_type.to_owned()),
            fields: Some(fields),
            ..WireRecord::default()
        };
        Record::from_wire(zone, &wire)
    }
}

impl WireRecord {
    /// The system fields this dictionary carries, if it has a change tag.
    pub fn system_fields(&self) -> Option<SystemFields> {
        self.record_change_tag.as_ref().map(|tag| SystemFields {
            change_tag: ChangeTag(tag.clone()),
            created: self.created.as_ref().map(Stamp::from),
            modified: self.modified.as_ref().map(Stamp::from),
            deleted: self.is_tombstone(),
        })
    }
}

/// A per-record error (`RecordFetchError`), inline in `records` arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordFetchError {
    /// The record it is about.
    #[serde(
        rename = "recordName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub record_name: Option<String>,
    /// The explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The code.
    #[serde(rename = "serverErrorCode")]
    pub server_error_code: ServerErrorCode,
    /// Seconds to wait before retrying.
    #[serde(
        rename = "retryAfter",
        default,
        skip_serializing_if = "Option::is_none",
        with = "retry_after"
    )]
    pub retry_after: Option<u64>,
    /// The server's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Where to sign in.
    #[serde(
        rename = "redirectURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_url: Option<String>,
    /// The server's copy of the record, which skysync's dev server attaches to `CONFLICT` and `EXISTS`
    /// (CloudKit itself may omit it; then the client looks the record up).
    #[serde(
        rename = "serverRecord",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub server_record: Option<Box<WireRecord>>,
}

impl RecordFetchError {
    /// The typed, item-scoped error, as carried by a response with the given HTTP status.
    pub fn to_server_error(&self, http_status: u16) -> ServerError {
        ServerError::from_wire_parts(
            &self.server_error_code,
            ErrorScope::Item,
            http_status,
            self.reason.as_deref(),
            self.retry_after,
            self.redirect_url.as_deref(),
            self.uuid.as_deref(),
        )
    }
}

/// One entry of a `records` array: a record, or the error for that position. The error is tried first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordResult {
    /// The item failed.
    Error(RecordFetchError),
    /// The item succeeded.
    Record(WireRecord),
}

/// The seven `operationType`s of `records/modify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationType {
    /// Create; fails with `EXISTS` if the record exists.
    Create,
    /// Update the given fields; needs the current change tag (else `CONFLICT`).
    Update,
    /// Update ignoring the tag; creates the record if missing.
    ForceUpdate,
    /// Replace all fields (omitted ones are cleared); needs the current change tag.
    Replace,
    /// Replace ignoring the tag; creates the record if missing.
    ForceReplace,
    /// Delete; needs the current change tag.
    Delete,
    /// Delete ignoring the tag.
    ForceDelete,
}

impl OperationType {
    /// Whether the operation checks `recordChangeTag`.
    pub fn checks_tag(self) -> bool {
        matches!(
            self,
            OperationType::Update | OperationType::Replace | OperationType::Delete
        )
    }

    /// Whether the operation deletes.
    pub fn is_delete(self) -> bool {
        matches!(self, OperationType::Delete | OperationType::ForceDelete)
    }
}

/// One operation of a `records/modify` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordOperation {
    /// What to do.
    #[serde(rename = "operationType")]
    pub operation_type: OperationType,
    /// The record to do it to.
    pub record: WireRecord,
    /// Which fields to return for this record (overrides the request's).
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
}

/// The body of `records/modify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModifyRecordsRequest {
    /// The operations, applied in order, one per record.
    pub operations: Vec<RecordOperation>,
    /// The zone (default: the default zone).
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<WireZoneId>,
    /// All or nothing (default true; custom zones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomic: Option<bool>,
    /// Which fields to return (`null`: all; `[]`: none).
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Integers as strings in the response.
    #[serde(
        rename = "numbersAsStrings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub numbers_as_strings: Option<bool>,
}

/// The answer to `records/modify`, `records/lookup`: one entry per operation, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordsResponse {
    /// One result per operation.
    pub records: Vec<RecordResult>,
}

/// One record to look up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLookup {
    /// Its name.
    #[serde(rename = "recordName")]
    pub record_name: String,
    /// Fields to return for it.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
}

/// The body of `records/lookup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRecordsRequest {
    /// The records to fetch.
    pub records: Vec<RecordLookup>,
    /// The zone.
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<WireZoneId>,
    /// Fields to return.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Integers as strings.
    #[serde(
        rename = "numbersAsStrings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub numbers_as_strings: Option<bool>,
}

/// A query comparator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // Each variant is the comparator of the same name.
pub enum Comparator {
    Equals,
    NotEquals,
    LessThan,
    LessThanOrEquals,
    GreaterThan,
    GreaterThanOrEquals,
    Near,
    ContainsAllTokens,
    In,
    NotIn,
    ContainsAnyTokens,
    ListContains,
    NotListContains,
    NotListContainsAny,
    BeginsWith,
    NotBeginsWith,
    ListMemberBeginsWith,
    NotListMemberBeginsWith,
    ListContainsAll,
    NotListContainsAll,
}

/// A query filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// How to compare.
    pub comparator: Comparator,
    /// A user field to compare.
    #[serde(rename = "fieldName", default, skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    /// A system field to compare (`recordName`, `createdTimestamp`, ...).
    #[serde(
        rename = "systemFieldName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_field_name: Option<String>,
    /// The value to compare with.
    #[serde(rename = "fieldValue")]
    pub field_value: WireField,
    /// Meters, for `NEAR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
}

/// A sort key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sort {
    /// A user field.
    #[serde(rename = "fieldName", default, skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    /// A system field.
    #[serde(
        rename = "systemFieldName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_field_name: Option<String>,
    /// Ascending (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascending: Option<bool>,
    /// A location to sort by distance from.
    #[serde(
        rename = "relativeLocation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub relative_location: Option<WireField>,
}

/// A query: a record type, filters and sort keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The type to query.
    #[serde(rename = "recordType")]
    pub record_type: String,
    /// All filters must match.
    #[serde(rename = "filterBy", default, skip_serializing_if = "Option::is_none")]
    pub filter_by: Option<Vec<Filter>>,
    /// Sort keys, most significant first.
    #[serde(rename = "sortBy", default, skip_serializing_if = "Option::is_none")]
    pub sort_by: Option<Vec<Sort>>,
}

/// The body of `records/query`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryRecordsRequest {
    /// The zone.
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<WireZoneId>,
    /// Page size.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
    /// The query.
    pub query: Query,
    /// Where the previous page stopped.
    #[serde(
        rename = "continuationMarker",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub continuation_marker: Option<String>,
    /// Fields to return.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Query every zone (ignored with a zone).
    #[serde(rename = "zoneWide", default, skip_serializing_if = "Option::is_none")]
    pub zone_wide: Option<bool>,
    /// Integers as strings.
    #[serde(
        rename = "numbersAsStrings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub numbers_as_strings: Option<bool>,
}

/// The answer to `records/query`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryRecordsResponse {
    /// Matching records.
    pub records: Vec<RecordResult>,
    /// Present when more results follow.
    #[serde(
        rename = "continuationMarker",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub continuation_marker: Option<String>,
}

/// The body of `records/changes` (custom zones only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChangesRequest {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
    /// Page size.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
    /// Fields to return.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Where the previous fetch stopped (omit the first time).
    #[serde(rename = "syncToken", default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// Integers as strings.
    #[serde(
        rename = "numbersAsStrings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub numbers_as_strings: Option<bool>,
}

/// The answer to `records/changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordChangesResponse {
    /// Changed records and tombstones.
    pub records: Vec<RecordResult>,
    /// The token to fetch from next.
    #[serde(rename = "syncToken")]
    pub sync_token: String,
    /// Whether another page follows.
    #[serde(rename = "moreComing")]
    pub more_coming: bool,
    /// Whether the order is reversed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
}

/// One zone of a `changes/zone` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneChangesQuery {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
    /// Where the previous fetch stopped.
    #[serde(rename = "syncToken", default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// Page size for this zone.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
    /// Fields to return for this zone.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Record types to return for this zone.
    #[serde(
        rename = "desiredRecordTypes",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_record_types: Option<Option<Vec<String>>>,
}

/// The body of `changes/zone`. Per-zone keys override the top-level ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneChangesRequest {
    /// The zones to fetch.
    pub zones: Vec<ZoneChangesQuery>,
    /// Reverse order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    /// Fields to return.
    #[serde(
        rename = "desiredKeys",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_keys: Option<Option<Vec<String>>>,
    /// Integers as strings (the reference page's typo `numberAsStrings` is accepted too).
    #[serde(
        rename = "numbersAsStrings",
        alias = "numberAsStrings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub numbers_as_strings: Option<bool>,
    /// Page size.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
    /// Record types to return.
    #[serde(
        rename = "desiredRecordTypes",
        default,
        skip_serializing_if = "Option::is_none",
        with = "nullable"
    )]
    pub desired_record_types: Option<Option<Vec<String>>>,
}

/// One zone's page of a `changes/zone` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneChanges {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
    /// The token to fetch from next.
    #[serde(rename = "syncToken")]
    pub sync_token: String,
    /// Changed records and tombstones.
    pub records: Vec<RecordResult>,
    /// Whether another page follows.
    #[serde(rename = "moreComing")]
    pub more_coming: bool,
}

/// One entry of a `changes/zone` answer: a page, or that zone's error (tried first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ZoneChangesResult {
    /// The zone failed.
    Error(ZoneFetchError),
    /// The zone's page.
    Changes(ZoneChanges),
}

/// The answer to `changes/zone`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneChangesResponse {
    /// One entry per requested zone.
    pub zones: Vec<ZoneChangesResult>,
}
