//! `zones/list`, `zones/lookup` and `zones/modify`.

use std::collections::HashSet;

use axum::http::StatusCode;
use skysync_model::wire::{
    LookupZonesRequest, ModifyZonesRequest, WireZone, ZoneFetchError, ZoneOperationType,
    ZoneResult, ZonesResponse,
};
use skysync_model::{DEFAULT_ZONE_NAME, ServerErrorCode};

use crate::changes::zone_token;
use crate::records::{Planned, within_limit};
use crate::reply::Refusal;
use crate::state::{Changes, Database, DbKey, Scope, TouchedZones, Zone, ZoneMeta};

fn zone_entry(key: &DbKey, epoch: u64, name: &str, zone: &Zone) -> ZoneResult {
    ZoneResult::Zone(WireZone {
        zone_id: key.wire_zone_id(name),
        sync_token: Some(zone_token(key, epoch, name, zone)),
        atomic: Some(name != DEFAULT_ZONE_NAME),
        deleted: None,
    })
}

fn zone_error(key: &DbKey, name: &str, code: ServerErrorCode, reason: &str) -> ZoneResult {
    ZoneResult::Error(ZoneFetchError {
        zone_id: key.wire_zone_id(name),
        reason: Some(reason.to_owned()),
        server_error_code: code,
        retry_after: None,
        redirect_url: None,
    })
}

/// `zones/list`: every live zone with its current sync token.
pub(crate) fn list(db: &Database, key: &DbKey) -> ZonesResponse {
    ZonesResponse {
        zones: db
            .zones
            .iter()
            .filter(|(_, zone)| zone.is_live())
            .map(|(name, zone)| zone_entry(key, db.epoch, name, zone))
            .collect(),
    }
}

/// `zones/lookup`: each zone, or `ZONE_NOT_FOUND` in its place.
pub(crate) fn lookup(
    db: &Database,
    key: &DbKey,
    request: &LookupZonesRequest,
) -> Result<ZonesResponse, Refusal> {
    within_limit(request.zones.len(), "zones")?;
    Ok(ZonesResponse {
        zones: request
            .zones
            .iter()
            .map(|wanted| match db.live_zone(&wanted.zone_name) {
                Some(zone) => zone_entry(key, db.epoch, &wanted.zone_name, zone),
                None => zone_error(
                    key,
                    &wanted.zone_name,
                    ServerErrorCode::ZoneNotFound,
                    "zone not found",
                ),
            })
            .collect(),
    })
}

/// `zones/modify`: creates (idempotently) and deletes zones, in order. Deleting a zone removes its
/// records; the zone then shows as deleted in `changes/database` and `zones/changes`, and tokens of
/// it expire (a zone created again under the same name is a new zone).
pub(crate) fn modify(
    db: &Database,
    key: &DbKey,
    request: &ModifyZonesRequest,
) -> Result<Planned<ZonesResponse>, Refusal> {
    within_limit(request.operations.len(), "operations")?;
    let mut seen = HashSet::new();
    for op in &request.operations {
        if !seen.insert(op.zone.zone_id.zone_name.as_str()) {
            return Err(Refusal::bad_request(format!(
                "more than one operation on zone '{}' in one request",
                op.zone.zone_id.zone_name
            )));
        }
    }
    let mut changes = Changes::new(key, db);
    let mut touched = TouchedZones::new();
    let mut zones = Vec::with_capacity(request.operations.len());
    for op in &request.operations {
        let name = op.zone.zone_id.zone_name.as_str();
        let existing = db.live_zone(name);
        zones.push(match op.operation_type {
            ZoneOperationType::Create => {
                if let Some(zone) = existing {
                    zone_entry(key, db.epoch, name, zone)
                } else if name.is_empty() {
                    zone_error(
                        key,
                        name,
                        ServerErrorCode::BadRequest,
                        "zoneName must not be empty",
                    )
                } else if key.scope == Scope::Public {
                    zone_error(
                        key,
                        name,
                        ServerErrorCode::BadRequest,
                        "custom zones are not supported in the public database",
                    )
                } else {
                    let counter = changes.next_counter();
                    let zone = Zone::new(ZoneMeta::created_at(counter));
                    changes.put_zone(name, zone.meta.clone());
                    zone_entry(key, db.epoch, name, &zone)
                }
            }
            ZoneOperationType::Delete => match existing {
                _ if name == DEFAULT_ZONE_NAME => zone_error(
                    key,
                    name,
                    ServerErrorCode::BadRequest,
                    "cannot delete the default zone",
                ),
                None => zone_error(key, name, ServerErrorCode::ZoneNotFound, "zone not found"),
                Some(zone) => {
                    let counter = changes.next_counter();
                    changes.put_zone(
                        name,
                        ZoneMeta {
                            generation: zone.meta.generation,
                            deleted: true,
                            changed_at: counter,
                            meta_changed_at: counter,
                        },
                    );
                    for record_name in zone.records.keys() {
                        changes.remove_record(name, record_name);
                    }
                    touched.insert(name.to_owned(), Default::default());
                    ZoneResult::Zone(WireZone {
                        zone_id: key.wire_zone_id(name),
                        sync_token: None,
                        atomic: None,
                        deleted: Some(true),
                    })
                }
            },
        });
    }
    Ok(Planned {
        status: StatusCode::OK,
        body: ZonesResponse { zones },
        changes: Some(changes),
        touched,
    })
}
