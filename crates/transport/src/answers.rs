//! The pure half of talking to CloudKit Web Services: the request bodies of each operation, and
//! the reading of their answers (the wire types the server sent, with the HTTP status) into the
//! model's outcomes. No HTTP here: [`CloudKitClient`](crate::CloudKitClient) sends these requests
//! over reqwest, and any other carrier of the same requests (the simulation hands them to the dev
//! server's router in process) reads its answers with the same functions, so both read an answer
//! the same way.
//!
//! The readers take the answer already parsed from JSON, its `status` (item errors carry it), and
//! `unexpected`: how the carrier words a problem with the answer as a whole (an entry missing, one
//! too many) as a [`CloudError::UnexpectedResponse`]. The problem is given as a sentence such as
//! `records/lookup answered 3 entries for 2 names`.

use crate::config::DatabaseScope;
use crate::database::{
    DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChangesPage,
};
use skysync_model::wire::{
    DatabaseChangesRequest, DatabaseChangesResponse, LookupRecordsRequest,
    ModifySubscriptionsRequest, ModifyZonesRequest, RecordLookup, RecordResult, RecordsResponse,
    Subscription, SubscriptionOperation, SubscriptionOperationType, SubscriptionResult,
    SubscriptionsResponse, UserIdentity, UsersResponse, WireRecord, WireZoneId, ZoneChangesQuery,
    ZoneChangesRequest, ZoneChangesResponse, ZoneChangesResult, ZoneOperation, ZoneOperationType,
    ZoneResult, ZoneSpec, ZonesResponse,
};
use skysync_model::{
    ChangeToken, CloudError, ModelError, PendingChange, Record, RecordId, ServerErrorCode, ZoneId,
};

/// A zone as the server of `database` named it, as the model names it. The private and public
/// databases hold only the caller's own zones, so the owner the server adds (CloudKit does, live)
/// is dropped: `None` means the caller, as in the zones the session asked about. Shared zones keep
/// their owner.
pub fn local_zone(database: DatabaseScope, zone: ZoneId) -> ZoneId {
    match database {
        DatabaseScope::Shared => zone,
        DatabaseScope::Private | DatabaseScope::Public => ZoneId {
            owner_record_name: None,
            ..zone
        },
    }
}

/// The zone of a record answered for a request about `requested`: the request's own name for it
/// when the answer names the same zone (or none), else the answered zone as the model names it
/// ([`local_zone`]).
pub fn answered_zone(
    database: DatabaseScope,
    requested: &ZoneId,
    answered: Option<&WireZoneId>,
) -> ZoneId {
    match answered {
        Some(zone) if zone.zone_name != requested.zone_name => {
            local_zone(database, zone.to_zone_id())
        }
        _ => requested.clone(),
    }
}

/// Parses a record answered for a request about `requested` and names its zone the way the
/// request did ([`answered_zone`]).
pub fn record_in(
    database: DatabaseScope,
    requested: &ZoneId,
    wire: &WireRecord,
) -> Result<Record, ModelError> {
    let mut record = Record::from_wire(requested, wire)?;
    record.id.zone = answered_zone(database, requested, wire.zone_id.as_ref());
    Ok(record)
}

/// The `records/lookup` request for `record_names` in `zone`, every field of each.
pub fn lookup_request(zone: &ZoneId, record_names: &[String]) -> LookupRecordsRequest {
    LookupRecordsRequest {
        records: record_names
            .iter()
            .map(|name| RecordLookup {
                record_name: name.clone(),
                desired_keys: None,
            })
            .collect(),
        zone_id: Some(WireZoneId::from(zone)),
        desired_keys: None,
        numbers_as_strings: None,
    }
}

/// The `changes/zone` request for the changes of `zone` since `since` (from the start without
/// one), at most `results_limit` records a page (the server's choice without one).
pub fn zone_changes_request(
    zone: &ZoneId,
    since: Option<ChangeToken>,
    results_limit: Option<u32>,
) -> ZoneChangesRequest {
    ZoneChangesRequest {
        zones: vec![ZoneChangesQuery {
            zone_id: WireZoneId::from(zone),
            sync_token: since.map(|t| t.0),
            results_limit,
            desired_keys: None,
            desired_record_types: None,
        }],
        reverse: None,
        desired_keys: None,
        numbers_as_strings: None,
        results_limit: None,
        desired_record_types: None,
    }
}

/// The `changes/database` request for the zones changed since `since` (from the start without
/// one), at most `results_limit` zones a page (the server's choice without one).
pub fn database_changes_request(
    since: Option<ChangeToken>,
    results_limit: Option<u32>,
) -> DatabaseChangesRequest {
    DatabaseChangesRequest {
        sync_token: since.map(|t| t.0),
        results_limit,
    }
}

/// The `zones/modify` request applying `operation_type` (create or delete) to each of `zones`.
pub fn modify_zones_request(
    zones: &[ZoneId],
    operation_type: ZoneOperationType,
) -> ModifyZonesRequest {
    ModifyZonesRequest {
        operations: zones
            .iter()
            .map(|zone| ZoneOperation {
                operation_type,
                zone: ZoneSpec {
                    zone_id: WireZoneId::from(zone),
                },
            })
            .collect(),
    }
}

/// The `subscriptions/modify` request creating `subscription`.
pub fn subscription_request(subscription: Subscription) -> ModifySubscriptionsRequest {
    ModifySubscriptionsRequest {
        operations: vec![SubscriptionOperation {
            operation_type: SubscriptionOperationType::Create,
            subscription,
        }],
    }
}

/// The entries of a `records/modify` answer that is not a success, when it is the answer of a
/// failed atomic batch: CloudKit answers one such (HTTP 400) with one entry per change, to be read
/// as per-change outcomes ([`modify_outcomes`]). `None` when `body` is not that (then it is a
/// request-level error).
pub fn failed_batch_answer(body: &[u8], changes: usize) -> Option<RecordsResponse> {
    match serde_json::from_slice::<RecordsResponse>(body) {
        Ok(answer) if answer.records.len() == changes => Some(answer),
        _ => None,
    }
}

/// The outcome of each change of `batch`, from the `records/modify` answer (one entry per change,
/// in order) of `database`. A delete of what is already gone reaches its goal; a conflict carries
/// the server's copy when one is attached whole (else the session looks it up itself).
pub fn modify_outcomes(
    database: DatabaseScope,
    batch: &ModifyBatch,
    answer: RecordsResponse,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<Vec<ModifyOutcome>, CloudError> {
    if answer.records.len() != batch.len() {
        return Err(unexpected(&format!(
            "records/modify answered {} entries for {} operations",
            answer.records.len(),
            batch.len()
        )));
    }
    Ok(batch
        .changes()
        .iter()
        .zip(answer.records)
        .map(|(change, result)| {
            modify_outcome(database, batch.zone(), change, result, status, unexpected)
        })
        .collect())
}

/// One change's outcome, from the entry the server answered for it.
fn modify_outcome(
    database: DatabaseScope,
    zone: &ZoneId,
    change: &PendingChange,
    result: RecordResult,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> ModifyOutcome {
    let id = change.record_id().clone();
    match result {
        RecordResult::Record(_) if change.is_delete() => ModifyOutcome::Deleted { id },
        RecordResult::Record(wire) => match wire.system_fields() {
            Some(system) => ModifyOutcome::Saved { id, system },
            None => ModifyOutcome::Failed {
                id,
                error: unexpected("a saved record came back without a recordChangeTag"),
            },
        },
        RecordResult::Error(item)
            if change.is_delete() && item.server_error_code == ServerErrorCode::NotFound =>
        {
            ModifyOutcome::Deleted { id }
        }
        RecordResult::Error(item)
            if matches!(
                item.server_error_code,
                ServerErrorCode::Conflict | ServerErrorCode::Exists
            ) =>
        {
            let error = item.to_server_error(status);
            let attached = item.server_record.as_deref();
            match attached.map(|w| record_in(database, zone, w)) {
                Some(Ok(server)) if server.system.is_some() => ModifyOutcome::Conflict {
                    id,
                    server_record: Some(Box::new(server)),
                    error,
                },
                Some(Err(e)) if !matches!(e, ModelError::MissingKey { .. }) => {
                    ModifyOutcome::Failed {
                        id,
                        error: CloudError::Incompatible(e),
                    }
                }
                // Not attached, or incomplete: the session looks it up as an operation of its own
                // (its own permit, visible), never inside this one.
                _ => ModifyOutcome::Conflict {
                    id,
                    server_record: None,
                    error,
                },
            }
        }
        RecordResult::Error(item) => ModifyOutcome::Failed {
            id,
            error: CloudError::Server(item.to_server_error(status)),
        },
    }
}

/// The outcome of looking up each of `record_names` in `zone`, from the `records/lookup` answer
/// (one entry per name, in order) of `database`.
pub fn lookup_outcomes(
    database: DatabaseScope,
    zone: &ZoneId,
    record_names: Vec<String>,
    answer: RecordsResponse,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<Vec<LookupOutcome>, CloudError> {
    if answer.records.len() != record_names.len() {
        return Err(unexpected(&format!(
            "records/lookup answered {} entries for {} names",
            answer.records.len(),
            record_names.len()
        )));
    }
    Ok(record_names
        .into_iter()
        .zip(answer.records)
        .map(|(name, result)| {
            let id = RecordId::new(zone.clone(), name);
            match result {
                RecordResult::Record(wire) => match record_in(database, zone, &wire) {
                    Ok(record) => LookupOutcome::Found(record),
                    Err(e) => LookupOutcome::Failed {
                        id,
                        error: CloudError::Incompatible(e),
                    },
                },
                RecordResult::Error(item)
                    if item.server_error_code == ServerErrorCode::NotFound =>
                {
                    LookupOutcome::NotFound(id)
                }
                RecordResult::Error(item) => LookupOutcome::Failed {
                    id,
                    error: CloudError::Server(item.to_server_error(status)),
                },
            }
        })
        .collect())
}

/// The page of changes to `zone` in a `changes/zone` answer of `database`. The zone's error entry,
/// or an error entry for one of its records, fails the whole page: a failed entry cannot be
/// skipped, since the page's token moves past it.
pub fn zone_changes_page(
    database: DatabaseScope,
    zone: &ZoneId,
    answer: ZoneChangesResponse,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<ZoneChangesPage, CloudError> {
    let entry = answer
        .zones
        .into_iter()
        .find(|entry| match entry {
            ZoneChangesResult::Error(e) => e.zone_id.zone_name == zone.zone_name,
            ZoneChangesResult::Changes(c) => c.zone_id.zone_name == zone.zone_name,
        })
        .ok_or_else(|| {
            unexpected(&format!(
                "changes/zone answered without an entry for zone `{zone}`"
            ))
        })?;
    let changes = match entry {
        ZoneChangesResult::Error(error) => {
            return Err(CloudError::Server(error.to_server_error(status)));
        }
        ZoneChangesResult::Changes(changes) => changes,
    };
    let mut page = ZoneChangesPage {
        zone: zone.clone(),
        changed: Vec::new(),
        deleted: Vec::new(),
        token: ChangeToken(changes.sync_token),
        more_coming: changes.more_coming,
    };
    for result in changes.records {
        match result {
            RecordResult::Error(item) => {
                return Err(CloudError::Server(item.to_server_error(status)));
            }
            RecordResult::Record(wire) if wire.is_tombstone() => {
                let name = wire.record_name.clone().ok_or(CloudError::Incompatible(
                    ModelError::MissingKey { key: "recordName" },
                ))?;
                let record_zone = answered_zone(database, zone, wire.zone_id.as_ref());
                page.deleted.push(RecordId::new(record_zone, name));
            }
            RecordResult::Record(wire) => {
                let record = record_in(database, zone, &wire).map_err(CloudError::Incompatible)?;
                page.changed.push(record);
            }
        }
    }
    Ok(page)
}

/// The page of changed and deleted zones in a `changes/database` answer of `database`; an error
/// entry fails the page.
pub fn database_changes_page(
    database: DatabaseScope,
    answer: DatabaseChangesResponse,
    status: u16,
) -> Result<DatabaseChangesPage, CloudError> {
    let mut page = DatabaseChangesPage {
        changed_zones: Vec::new(),
        deleted_zones: Vec::new(),
        token: ChangeToken(answer.sync_token),
        more_coming: answer.more_coming,
    };
    for entry in answer.zones {
        match entry {
            ZoneResult::Error(error) => {
                return Err(CloudError::Server(error.to_server_error(status)));
            }
            ZoneResult::Zone(zone) if zone.deleted == Some(true) => {
                page.deleted_zones
                    .push(local_zone(database, zone.zone_id.to_zone_id()));
            }
            ZoneResult::Zone(zone) => page
                .changed_zones
                .push(local_zone(database, zone.zone_id.to_zone_id())),
        }
    }
    Ok(page)
}

/// Whether a `zones/modify` answer says all `operations` (of `operation_type`) went through:
/// the first error entry, unless it says a zone to delete is already gone.
pub fn zones_modified(
    operation_type: ZoneOperationType,
    operations: usize,
    answer: ZonesResponse,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<(), CloudError> {
    if answer.zones.len() != operations {
        return Err(unexpected(&format!(
            "zones/modify answered {} entries for {operations} operations",
            answer.zones.len(),
        )));
    }
    for entry in answer.zones {
        if let ZoneResult::Error(error) = entry {
            let already_gone = operation_type == ZoneOperationType::Delete
                && error.server_error_code == ServerErrorCode::ZoneNotFound;
            if !already_gone {
                return Err(CloudError::Server(error.to_server_error(status)));
            }
        }
    }
    Ok(())
}

/// Whether a `subscriptions/modify` answer (to [`subscription_request`]) says the subscription
/// was saved.
pub fn subscription_saved(
    answer: SubscriptionsResponse,
    status: u16,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<(), CloudError> {
    match answer.subscriptions.into_iter().next() {
        Some(SubscriptionResult::Subscription(_)) => Ok(()),
        Some(SubscriptionResult::Error(error)) => {
            Err(CloudError::Server(error.to_server_error(status)))
        }
        None => Err(unexpected("subscriptions/modify answered no entry")),
    }
}

/// The caller's identity in a `users/caller` answer.
pub fn caller_identity(
    answer: UsersResponse,
    unexpected: &dyn Fn(&str) -> CloudError,
) -> Result<UserIdentity, CloudError> {
    answer
        .users
        .into_iter()
        .next()
        .ok_or_else(|| unexpected("users/caller answered no user"))
}
