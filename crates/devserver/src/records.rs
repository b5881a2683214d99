//! `records/modify`, `records/lookup` and `records/query`, planned against a database.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use axum::http::StatusCode;
use serde_json::Value;
use skysync_model::wire::{
    Comparator, LookupRecordsRequest, ModifyRecordsRequest, OperationType, QueryRecordsRequest,
    QueryRecordsResponse, RecordFetchError, RecordOperation, RecordResult, RecordsResponse,
    WireRecord,
};
use skysync_model::{
    ChangeTag, DEFAULT_ZONE_NAME, Field, FieldValue, MAX_OPERATIONS_PER_REQUEST, MAX_RECORD_BYTES,
    ModelError, Record, RecordId, ServerErrorCode, Stamp, SystemFields, ZoneId,
};

use crate::faults::Faults;
use crate::reply::Refusal;
use crate::state::{
    Changes, Database, DbKey, StoredRecord, TokenKind, TouchedZones, Zone, change_tag, make_token,
    read_token,
};

/// The device id stamped on writes (what CloudKit reports for web clients).
const DEVICE_ID: &str = "iCloud";

/// The most records one response carries (and the default page size).
pub(crate) const MAX_RESULTS: usize = 200;

/// Who writes, and when: what a write stamps on a record.
pub(crate) struct Writer<'a> {
    /// The database written to.
    pub(crate) key: &'a DbKey,
    /// The writing user's record name.
    pub(crate) user: &'a str,
    /// Now, in ms since 1970.
    pub(crate) now_ms: i64,
}

impl Writer<'_> {
    fn stamp(&self) -> Stamp {
        Stamp {
            timestamp_ms: self.now_ms,
            user_record_name: Some(self.user.to_owned()),
            device_id: Some(DEVICE_ID.to_owned()),
        }
    }
}

/// The outcome of a planned request: its answer and, for a write, the changes to commit first.
pub(crate) struct Planned<T> {
    /// The HTTP status to answer with.
    pub(crate) status: StatusCode,
    /// The body to answer with.
    pub(crate) body: T,
    /// The changes to persist and apply before answering (`None`: nothing to write).
    pub(crate) changes: Option<Changes>,
    /// The zones written, with the record types written in each (for notifications).
    pub(crate) touched: TouchedZones,
}

/// A per-record error with `code` and `reason`.
pub(crate) fn item_error(
    record_name: Option<String>,
    code: ServerErrorCode,
    reason: impl Into<String>,
) -> RecordFetchError {
    RecordFetchError {
        record_name,
        reason: Some(reason.into()),
        server_error_code: code,
        retry_after: None,
        uuid: None,
        redirect_url: None,
        server_record: None,
    }
}

/// [`item_error`], boxed (as the planning functions return it).
fn boxed_error(
    record_name: Option<String>,
    code: ServerErrorCode,
    reason: impl Into<String>,
) -> Box<RecordFetchError> {
    Box::new(item_error(record_name, code, reason))
}

/// The `desiredKeys` that apply: the item's own if it has the key, else the request's; `None`
/// means every field.
pub(crate) fn desired_keys<'a>(
    item: &'a Option<Option<Vec<String>>>,
    request: &'a Option<Option<Vec<String>>>,
) -> Option<&'a [String]> {
    item.as_ref()
        .or(request.as_ref())
        .and_then(|keys| keys.as_deref())
}

/// A stored record as a response carries it, with only the desired fields.
pub(crate) fn record_output(
    record: &Record,
    desired: Option<&[String]>,
    numbers_as_strings: bool,
) -> WireRecord {
    let mut wire = record.to_wire(numbers_as_strings);
    if let (Some(keys), Some(fields)) = (desired, wire.fields.as_mut()) {
        fields.retain(|name, _| keys.iter().any(|k| k == name));
    }
    wire
}

/// A tombstone as change feeds carry it: `recordName`, `deleted: true`, and the type if known.
pub(crate) fn tombstone_output(stored: &StoredRecord) -> WireRecord {
    WireRecord {
        record_name: Some(stored.record.id.record_name.clone()),
        record_type: Some(stored.record.record_type.clone()).filter(|t| !t.is_empty()),
        deleted: Some(true),
        ..WireRecord::default()
    }
}

/// Refuses a request with more than 200 `what` (operations, records, zones, subscriptions) as a
/// whole, with `413 LIMIT_EXCEEDED`.
pub(crate) fn within_limit(count: usize, what: &str) -> Result<(), Refusal> {
    if count > MAX_OPERATIONS_PER_REQUEST {
        return Err(Refusal::new(
            ServerErrorCode::LimitExceeded,
            format!("{count} {what} in one request; the limit is {MAX_OPERATIONS_PER_REQUEST}"),
        ));
    }
    Ok(())
}

/// The page size a request asks for: 1 to 200, default 200 (larger values are capped).
pub(crate) fn page_size(requested: Option<u32>) -> Result<usize, Refusal> {
    match requested {
        None => Ok(MAX_RESULTS),
        Some(0) => Err(Refusal::bad_request("resultsLimit must be at least 1")),
        Some(n) => Ok(usize::try_from(n).map_or(MAX_RESULTS, |n| n.min(MAX_RESULTS))),
    }
}

fn zone_of(wire: Option<&skysync_model::wire::WireZoneId>) -> ZoneId {
    wire.map_or_else(ZoneId::default_zone, |z| ZoneId::new(z.zone_name.clone()))
}

fn zone_not_found(record_name: Option<String>, zone: &str) -> RecordFetchError {
    item_error(
        record_name,
        ServerErrorCode::ZoneNotFound,
        format!("zone '{zone}' does not exist"),
    )
}

fn field_error_reason(error: &ModelError) -> String {
    match error {
        ModelError::FractionalTimestamp { .. } => "Invalid value, expected type TIMESTAMP.".into(),
        other => format!("Invalid value: {other}"),
    }
}

/// Parses an operation's fields, checking the record size limit and (in the public database) that
/// none is encrypted. Null values are kept: they clear a field.
fn parse_fields(
    wire: &WireRecord,
    name: &str,
    public: bool,
) -> Result<BTreeMap<String, Field>, Box<RecordFetchError>> {
    let Some(fields) = &wire.fields else {
        return Ok(BTreeMap::new());
    };
    let size = serde_json::to_vec(fields).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_RECORD_BYTES {
        return Err(boxed_error(
            Some(name.to_owned()),
            ServerErrorCode::LimitExceeded,
            format!("record is {size} bytes, over the limit of {MAX_RECORD_BYTES} bytes"),
        ));
    }
    let mut parsed = BTreeMap::new();
    for (field_name, field) in fields {
        let field = Field::from_wire(field_name, field).map_err(|e| {
            boxed_error(
                Some(name.to_owned()),
                ServerErrorCode::BadRequest,
                field_error_reason(&e),
            )
        })?;
        if public && field.encrypted {
            return Err(boxed_error(
                Some(name.to_owned()),
                ServerErrorCode::BadRequest,
                "encrypted fields are not supported in the public database",
            ));
        }
        parsed.insert(field_name.clone(), field);
    }
    Ok(parsed)
}

fn without_nulls(fields: BTreeMap<String, Field>) -> BTreeMap<String, Field> {
    fields
        .into_iter()
        .filter(|(_, f)| f.value != FieldValue::Null)
        .collect()
}

fn check_tag(
    op: &RecordOperation,
    existing: &StoredRecord,
    name: &str,
) -> Result<(), Box<RecordFetchError>> {
    let Some(sent) = &op.record.record_change_tag else {
        return Err(boxed_error(
            Some(name.to_owned()),
            ServerErrorCode::BadRequest,
            "recordChangeTag is required for update, replace and delete",
        ));
    };
    if existing.record.change_tag().map(|t| &t.0) == Some(sent) {
        return Ok(());
    }
    let mut conflict = boxed_error(
        Some(name.to_owned()),
        ServerErrorCode::Conflict,
        "oplock error",
    );
    conflict.server_record = Some(Box::new(existing.record.to_wire(false)));
    Err(conflict)
}

/// The fields of an `update`: the existing ones with `changes` applied (a null clears a field).
fn merged(existing: &Record, changes: BTreeMap<String, Field>) -> BTreeMap<String, Field> {
    let mut all = existing.fields.clone();
    for (field_name, field) in changes {
        if field.value == FieldValue::Null {
            all.remove(&field_name);
        } else {
            all.insert(field_name, field);
        }
    }
    all
}

/// Plans one operation on record `name`: the version it writes (a tombstone for a delete), or
/// `None` when it changes nothing.
fn plan_op(
    zone: &Zone,
    zone_id: &ZoneId,
    op: &RecordOperation,
    name: &str,
    writer: &Writer<'_>,
    changes: &mut Changes,
) -> Result<Option<StoredRecord>, Box<RecordFetchError>> {
    let kind = op.operation_type;
    let public = writer.key.scope == crate::state::Scope::Public;
    let existing = zone.live_record(name);
    let fields = if kind.is_delete() {
        BTreeMap::new()
    } else {
        parse_fields(&op.record, name, public)?
    };
    let not_found = || {
        boxed_error(
            Some(name.to_owned()),
            ServerErrorCode::NotFound,
            "Record not found",
        )
    };
    let needs_type = || {
        op.record
            .record_type
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                boxed_error(
                    Some(name.to_owned()),
                    ServerErrorCode::BadRequest,
                    "recordType is required when the record may not exist",
                )
            })
    };
    let created_of = |existing: &StoredRecord| {
        existing
            .record
            .system
            .as_ref()
            .and_then(|s| s.created.clone())
    };
    // (record type, fields, created stamp) of the new version; the record deleted; or nothing.
    enum Next<'a> {
        Save(String, BTreeMap<String, Field>, Option<Stamp>),
        Delete(&'a StoredRecord),
        Nothing,
    }
    let next = match kind {
        OperationType::Create => {
            if let Some(existing) = existing {
                let mut exists = boxed_error(
                    Some(name.to_owned()),
                    ServerErrorCode::Exists,
                    "record to insert already exists",
                );
                exists.server_record = Some(Box::new(existing.record.to_wire(false)));
                return Err(exists);
            }
            Next::Save(needs_type()?, without_nulls(fields), None)
        }
        OperationType::Update => {
            let existing = existing.ok_or_else(not_found)?;
            check_tag(op, existing, name)?;
            Next::Save(
                existing.record.record_type.clone(),
                merged(&existing.record, fields),
                created_of(existing),
            )
        }
        OperationType::ForceUpdate => match existing {
            Some(existing) => Next::Save(
                existing.record.record_type.clone(),
                merged(&existing.record, fields),
                created_of(existing),
            ),
            None => Next::Save(needs_type()?, without_nulls(fields), None),
        },
        OperationType::Replace => {
            let existing = existing.ok_or_else(not_found)?;
            check_tag(op, existing, name)?;
            Next::Save(
                existing.record.record_type.clone(),
                without_nulls(fields),
                created_of(existing),
            )
        }
        OperationType::ForceReplace => match existing {
            Some(existing) => Next::Save(
                existing.record.record_type.clone(),
                without_nulls(fields),
                created_of(existing),
            ),
            None => Next::Save(needs_type()?, without_nulls(fields), None),
        },
        OperationType::Delete => {
            let existing = existing.ok_or_else(not_found)?;
            check_tag(op, existing, name)?;
            Next::Delete(existing)
        }
        OperationType::ForceDelete => match existing {
            Some(existing) => Next::Delete(existing),
            // Deleting what is already gone succeeds and changes nothing, so a resent delete is
            // harmless.
            None => Next::Nothing,
        },
    };
    let (record_type, fields, created, deleted) = match next {
        Next::Nothing => return Ok(None),
        Next::Delete(existing) => (
            existing.record.record_type.clone(),
            BTreeMap::new(),
            created_of(existing),
            true,
        ),
        Next::Save(record_type, fields, created) => (
            record_type,
            fields,
            Some(created.unwrap_or_else(|| writer.stamp())),
            false,
        ),
    };
    let counter = changes.next_counter();
    let record = Record {
        id: RecordId::new(zone_id.clone(), name),
        record_type,
        fields,
        system: Some(SystemFields {
            change_tag: ChangeTag(change_tag(counter)),
            created,
            modified: Some(writer.stamp()),
            deleted,
        }),
    };
    Ok(Some(StoredRecord { record, counter }))
}

/// The per-item error an armed item fault answers for operation `name` in `zone` (with the
/// server's record for a `CONFLICT` or `EXISTS`, when it exists), or `None` when none is armed.
fn injected_error(
    faults: &Faults,
    zone: &Zone,
    zone_id: &ZoneId,
    name: &str,
) -> Option<Box<RecordFetchError>> {
    let hit = faults.take_item(&zone_id.zone_name, name)?;
    let mut error = boxed_error(Some(name.to_owned()), hit.code, hit.reason);
    error.retry_after = hit.retry_after;
    if matches!(
        error.server_error_code,
        ServerErrorCode::Conflict | ServerErrorCode::Exists
    ) {
        error.server_record = zone
            .live_record(name)
            .map(|existing| Box::new(existing.record.to_wire(false)));
    }
    Some(error)
}

/// `records/modify`: applies the operations in order, all or nothing when atomic. An operation
/// that an armed item fault (see [`Faults::arm_item`]) matches is answered with its error instead.
pub(crate) fn modify(
    db: &Database,
    writer: &Writer<'_>,
    request: ModifyRecordsRequest,
    faults: &Faults,
) -> Result<Planned<RecordsResponse>, Refusal> {
    within_limit(request.operations.len(), "operations")?;
    let request_zone = zone_of(request.zone_id.as_ref());
    let atomic = request.atomic.unwrap_or(true) && !request_zone.is_default();
    let numbers_as_strings = request.numbers_as_strings.unwrap_or(false);

    // Name every operation (a create without a name gets a fresh one) and refuse repeats.
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(request.operations.len());
    for op in &request.operations {
        let zone = op.record.zone_id.as_ref().map_or_else(
            || request_zone.clone(),
            |z| ZoneId::new(z.zone_name.clone()),
        );
        let name = match op.record.record_name.as_deref() {
            Some(name) if !name.is_empty() => Some(name.to_owned()),
            _ if op.operation_type == OperationType::Create => {
                Some(uuid::Uuid::new_v4().to_string().to_uppercase())
            }
            _ => None,
        };
        if let Some(name) = &name
            && !seen.insert((zone.zone_name.clone(), name.clone()))
        {
            return Err(Refusal::bad_request(format!(
                "more than one operation on record '{name}' in one request"
            )));
        }
        names.push((zone, name));
    }

    let mut changes = Changes::new(writer.key, db);
    let mut results: Vec<Result<Option<StoredRecord>, Box<RecordFetchError>>> = Vec::new();
    for (op, (zone_id, name)) in request.operations.iter().zip(&names) {
        let result = match name {
            None => Err(boxed_error(
                None,
                ServerErrorCode::BadRequest,
                "recordName is required",
            )),
            Some(name) => match db.live_zone(&zone_id.zone_name) {
                None => Err(Box::new(zone_not_found(
                    Some(name.clone()),
                    &zone_id.zone_name,
                ))),
                Some(zone) => match injected_error(faults, zone, zone_id, name) {
                    Some(error) => Err(error),
                    None => plan_op(zone, zone_id, op, name, writer, &mut changes),
                },
            },
        };
        results.push(result);
    }

    let failed = results.iter().any(Result::is_err);
    log_operations(&request, &names, &results, atomic && failed);
    if atomic && failed {
        let records = results
            .into_iter()
            .zip(&names)
            .map(|(result, (_, name))| match result {
                Err(error) => RecordResult::Error(*error),
                Ok(_) => RecordResult::Error(item_error(
                    name.clone(),
                    ServerErrorCode::AtomicError,
                    "atomic batch failed: another operation in it was refused",
                )),
            })
            .collect();
        return Ok(Planned {
            status: StatusCode::BAD_REQUEST,
            body: RecordsResponse { records },
            changes: None,
            touched: TouchedZones::new(),
        });
    }

    let mut touched = TouchedZones::new();
    let mut records = Vec::with_capacity(results.len());
    for ((result, op), (_, name)) in results.into_iter().zip(&request.operations).zip(&names) {
        match result {
            Err(error) => records.push(RecordResult::Error(*error)),
            Ok(written) => {
                let output = match &written {
                    Some(stored) if !stored.is_tombstone() => record_output(
                        &stored.record,
                        desired_keys(&op.desired_keys, &request.desired_keys),
                        numbers_as_strings,
                    ),
                    // A delete, or a forced delete of a record already gone.
                    _ => WireRecord {
                        record_name: name.clone(),
                        deleted: Some(true),
                        ..WireRecord::default()
                    },
                };
                if let Some(stored) = written {
                    let zone_name = stored.record.id.zone.zone_name.clone();
                    touched
                        .entry(zone_name.clone())
                        .or_default()
                        .insert(stored.record.record_type.clone());
                    if let Some(zone) = db.live_zone(&zone_name) {
                        changes.put_record(&zone_name, &zone.meta, stored);
                    }
                }
                records.push(RecordResult::Record(output));
            }
        }
    }
    Ok(Planned {
        status: StatusCode::OK,
        body: RecordsResponse { records },
        changes: Some(changes),
        touched,
    })
}

/// Logs each operation of a `records/modify` at debug level (target `skysync_devserver::records`):
/// the record, the operation, the change tag it was sent with and what came of it, so that a
/// record's history on the server can be read back after a failed test or chaos run.
fn log_operations(
    request: &ModifyRecordsRequest,
    names: &[(ZoneId, Option<String>)],
    results: &[Result<Option<StoredRecord>, Box<RecordFetchError>>],
    refused_atomically: bool,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for ((op, (zone, name)), result) in request.operations.iter().zip(names).zip(results) {
        let outcome = match result {
            Err(error) => format!("{:?}", error.server_error_code),
            Ok(_) if refused_atomically => "ATOMIC_ERROR".to_owned(),
            Ok(None) => "nothing to change".to_owned(),
            Ok(Some(stored)) => match &stored.record.system {
                Some(system) if system.deleted => format!("deleted at {}", system.change_tag.0),
                Some(system) => format!("saved as {}", system.change_tag.0),
                None => "saved".to_owned(),
            },
        };
        tracing::debug!(
            zone = %zone.zone_name,
            record = name.as_deref().unwrap_or(""),
            operation = ?op.operation_type,
            sent_tag = op.record.record_change_tag.as_deref().unwrap_or(""),
            %outcome,
            "records/modify operation"
        );
    }
}

/// `records/lookup`: each record, or `NOT_FOUND` in its place.
pub(crate) fn lookup(
    db: &Database,
    request: &LookupRecordsRequest,
) -> Result<RecordsResponse, Refusal> {
    within_limit(request.records.len(), "records")?;
    let zone_id = zone_of(request.zone_id.as_ref());
    let numbers_as_strings = request.numbers_as_strings.unwrap_or(false);
    let zone = db.live_zone(&zone_id.zone_name);
    let records = request
        .records
        .iter()
        .map(|item| {
            let name = item.record_name.clone();
            let Some(zone) = zone else {
                return RecordResult::Error(zone_not_found(Some(name), &zone_id.zone_name));
            };
            match zone.live_record(&name) {
                Some(stored) => RecordResult::Record(record_output(
                    &stored.record,
                    desired_keys(&item.desired_keys, &request.desired_keys),
                    numbers_as_strings,
                )),
                None => RecordResult::Error(item_error(
                    Some(name),
                    ServerErrorCode::NotFound,
                    "Record not found",
                )),
            }
        })
        .collect();
    Ok(RecordsResponse { records })
}

/// A value a query compares or sorts by: a field's value, or a system field's.
fn system_value(record: &Record, system_field: &str) -> Result<Option<Value>, Refusal> {
    let system = record.system.as_ref();
    Ok(match system_field {
        "recordName" => Some(Value::String(record.id.record_name.clone())),
        "createdTimestamp" => system
            .and_then(|s| s.created.as_ref())
            .map(|s| Value::from(s.timestamp_ms)),
        "modifiedTimestamp" => system
            .and_then(|s| s.modified.as_ref())
            .map(|s| Value::from(s.timestamp_ms)),
        "createdUserRecordName" => system
            .and_then(|s| s.created.as_ref())
            .and_then(|s| s.user_record_name.clone())
            .map(Value::String),
        "modifiedUserRecordName" => system
            .and_then(|s| s.modified.as_ref())
            .and_then(|s| s.user_record_name.clone())
            .map(Value::String),
        other => {
            return Err(Refusal::bad_request(format!(
                "system field '{other}' is not supported in queries by the dev server"
            )));
        }
    })
}

/// Where a query looks: a user field or a system field.
enum Target {
    Field(String),
    System(String),
}

impl Target {
    fn of(field: Option<&String>, system: Option<&String>) -> Result<Target, Refusal> {
        match (field, system) {
            (Some(field), None) => Ok(Target::Field(field.clone())),
            (None, Some(system)) => Ok(Target::System(system.clone())),
            _ => Err(Refusal::bad_request(
                "give exactly one of fieldName and systemFieldName",
            )),
        }
    }

    fn value(&self, record: &Record) -> Result<Option<Value>, Refusal> {
        match self {
            Target::Field(name) => Ok(record.get(name).map(|v| v.to_json(false))),
            Target::System(name) => system_value(record, name),
        }
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x
                .as_f64()
                .unwrap_or(f64::NAN)
                .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_string().cmp(&b.to_string())),
    }
}

/// `records/query`: `EQUALS` filters and one sort key, paged with `continuationMarker`.
pub(crate) fn query(
    db: &Database,
    key: &DbKey,
    request: &QueryRecordsRequest,
) -> Result<QueryRecordsResponse, Refusal> {
    let limit = page_size(request.results_limit)?;
    let numbers_as_strings = request.numbers_as_strings.unwrap_or(false);
    let zones: Vec<&Zone> = match (&request.zone_id, request.zone_wide) {
        (Some(zone_id), _) => vec![db.live_zone(&zone_id.zone_name).ok_or_else(|| {
            Refusal::new(
                ServerErrorCode::ZoneNotFound,
                format!("zone '{}' does not exist", zone_id.zone_name),
            )
        })?],
        (None, Some(true)) => db.zones.values().filter(|z| z.is_live()).collect(),
        (None, _) => db.live_zone(DEFAULT_ZONE_NAME).into_iter().collect(),
    };

    let mut filters = Vec::new();
    for filter in request.query.filter_by.iter().flatten() {
        if filter.comparator != Comparator::Equals {
            let name = serde_json::to_value(filter.comparator)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(Refusal::bad_request(format!(
                "comparator {name} is not supported by the dev server (only EQUALS is)"
            )));
        }
        let target = Target::of(
            filter.field_name.as_ref(),
            filter.system_field_name.as_ref(),
        )?;
        let value = Field::from_wire("fieldValue", &filter.field_value)
            .map_err(|e| Refusal::bad_request(field_error_reason(&e)))?
            .value
            .to_json(false);
        if let Target::Field(name) = &target {
            let encrypted = zones
                .iter()
                .flat_map(|z| z.records.values())
                .any(|r| r.record.fields.get(name).is_some_and(|f| f.encrypted));
            if encrypted {
                return Err(Refusal::bad_request(format!(
                    "Field '{name}' cannot be queried using filter type EQUALS"
                )));
            }
        }
        filters.push((target, value));
    }
    let sorts = request.query.sort_by.as_deref().unwrap_or_default();
    let sort = match sorts {
        [] => None,
        [sort] => {
            if sort.relative_location.is_some() {
                return Err(Refusal::bad_request(
                    "sorting by distance is not supported by the dev server",
                ));
            }
            Some((
                Target::of(sort.field_name.as_ref(), sort.system_field_name.as_ref())?,
                sort.ascending.unwrap_or(true),
            ))
        }
        _ => {
            return Err(Refusal::bad_request(
                "sorting by more than one field is not supported by the dev server",
            ));
        }
    };

    let mut matches: Vec<(Option<Value>, &StoredRecord)> = Vec::new();
    for stored in zones.iter().flat_map(|z| z.records.values()) {
        if stored.is_tombstone() || stored.record.record_type != request.query.record_type {
            continue;
        }
        let mut keep = true;
        for (target, wanted) in &filters {
            let value = target.value(&stored.record)?;
            if value.as_ref() != Some(wanted) {
                keep = false;
                break;
            }
        }
        if keep {
            let sort_value = match &sort {
                Some((target, _)) => target.value(&stored.record)?,
                None => None,
            };
            matches.push((sort_value, stored));
        }
    }
    let ascending = sort.as_ref().is_none_or(|(_, ascending)| *ascending);
    matches.sort_by(|(a, ra), (b, rb)| {
        let by_value = match (a, b) {
            (Some(a), Some(b)) => {
                let order = compare_values(a, b);
                if ascending { order } else { order.reverse() }
            }
            // Records without the sort field come last either way.
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_value.then_with(|| ra.record.id.cmp(&rb.record.id))
    });

    let fingerprint = serde_json::to_string(&(&request.query, &request.zone_id, request.zone_wide))
        .unwrap_or_default();
    let offset = match &request.continuation_marker {
        None => 0,
        Some(marker) => read_token(TokenKind::Query, key, db.epoch, &fingerprint, marker)
            .and_then(|(offset, _)| usize::try_from(offset).ok())
            .ok_or_else(|| {
                Refusal::bad_request("continuationMarker does not belong to this query")
            })?,
    };
    let end = offset.saturating_add(limit).min(matches.len());
    let desired = desired_keys(&None, &request.desired_keys);
    let records = matches
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|(_, stored)| {
            RecordResult::Record(record_output(&stored.record, desired, numbers_as_strings))
        })
        .collect();
    let continuation_marker = (end < matches.len()).then(|| {
        make_token(
            TokenKind::Query,
            key,
            db.epoch,
            &fingerprint,
            u64::try_from(end).unwrap_or(u64::MAX),
            0,
        )
    });
    Ok(QueryRecordsResponse {
        records,
        continuation_marker,
    })
}
