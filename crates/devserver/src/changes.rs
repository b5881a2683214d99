//! Change feeds: `changes/zone`, `records/changes`, `changes/database` and `zones/changes`.
//!
//! A zone's sync token names (zone generation, counter): fetching with it returns the records and
//! tombstones written after that counter, in counter order, at most `resultsLimit` per page
//! (`resultsLimit` above 200 is taken as 200). A fetch from no token returns the live records only,
//! never tombstones, as CloudKit does; its continuation tokens (while `moreComing`) remember where
//! it started, so its later pages skip the tombstones written before then too, while deletions made
//! after it started are reported. A token from an earlier incarnation of the zone, from another zone
//! or database, or that is not one of this server's tokens at all is answered
//! `CHANGE_TOKEN_EXPIRED`: fetch again without a token.

use std::ops::Bound;

use skysync_model::ServerErrorCode;
use skysync_model::wire::{
    DatabaseChangesRequest, DatabaseChangesResponse, RecordChangesRequest, RecordChangesResponse,
    RecordResult, WireZone, ZoneChanges, ZoneChangesRequest, ZoneChangesResponse,
    ZoneChangesResult, ZoneFetchError, ZoneResult, ZonesChangesRequest, ZonesChangesResponse,
};

use crate::records::{desired_keys, page_size, record_output, tombstone_output, within_limit};
use crate::reply::Refusal;
use crate::state::{
    Database, DbKey, TokenKind, Zone, make_token, make_token_of, read_token, read_token_of,
};

/// The reason given with `CHANGE_TOKEN_EXPIRED`.
const EXPIRED: &str = "sync token expired or unknown; fetch again without a token";

/// What one zone's page should contain.
struct PageRequest<'a> {
    token: Option<&'a str>,
    limit: usize,
    desired: Option<&'a [String]>,
    record_types: Option<&'a [String]>,
    numbers_as_strings: bool,
}

/// The current sync token of a zone (what `zones/list` reports).
pub(crate) fn zone_token(key: &DbKey, epoch: u64, name: &str, zone: &Zone) -> String {
    make_token(
        TokenKind::Zone,
        key,
        epoch,
        name,
        zone.meta.generation,
        zone.meta.changed_at,
    )
}

/// Where a zone's fetch resumes: after `from`, and (while a fetch from no token is still catching
/// up) skipping the tombstones written at or before `refetch_start`.
struct Resume {
    from: u64,
    refetch_start: Option<u64>,
}

/// Reads a zone's sync token (a plain zone token, or a refetch's continuation) against the zone's
/// current generation; `None` (no token) starts a refetch at the database's current counter.
fn resume_point(
    db: &Database,
    key: &DbKey,
    name: &str,
    zone: &Zone,
    token: Option<&str>,
) -> Result<Resume, Refusal> {
    let expired = || Refusal::new(ServerErrorCode::ChangeTokenExpired, EXPIRED);
    let Some(token) = token else {
        return Ok(Resume {
            from: 0,
            refetch_start: Some(db.counter),
        });
    };
    if let Some((generation, counter)) = read_token(TokenKind::Zone, key, db.epoch, name, token) {
        return if generation == zone.meta.generation && counter <= db.counter {
            Ok(Resume {
                from: counter,
                refetch_start: None,
            })
        } else {
            Err(expired())
        };
    }
    match read_token_of(TokenKind::Refetch, key, db.epoch, name, token, 3).as_deref() {
        Some(&[generation, counter, start])
            if generation == zone.meta.generation && counter <= start && start <= db.counter =>
        {
            Ok(Resume {
                from: counter,
                refetch_start: Some(start),
            })
        }
        _ => Err(expired()),
    }
}

fn zone_page(
    db: &Database,
    key: &DbKey,
    name: &str,
    page: &PageRequest<'_>,
) -> Result<ZoneChanges, Refusal> {
    if name == skysync_model::DEFAULT_ZONE_NAME {
        return Err(Refusal::bad_request("cannot get changes in default zone"));
    }
    let zone = db.live_zone(name).ok_or_else(|| {
        Refusal::new(
            ServerErrorCode::ZoneNotFound,
            format!("zone '{name}' does not exist"),
        )
    })?;
    let Resume {
        from,
        refetch_start,
    } = resume_point(db, key, name, zone, page.token)?;
    let mut records = Vec::new();
    let mut last = from;
    let mut more_coming = false;
    for (&counter, record_name) in zone
        .by_counter
        .range((Bound::Excluded(from), Bound::Unbounded))
    {
        if records.len() == page.limit {
            more_coming = true;
            break;
        }
        last = counter;
        let Some(stored) = zone.records.get(record_name) else {
            continue;
        };
        if let Some(types) = page.record_types
            && !types.contains(&stored.record.record_type)
        {
            continue;
        }
        if stored.is_tombstone() {
            // A fetch from no token sees the zone as it is: a deletion it never saw the record of is
            // not news to it, as on CloudKit, so a device that lost its token cannot learn deletions
            // from the feed.
            if refetch_start.is_some_and(|start| counter <= start) {
                continue;
            }
            records.push(RecordResult::Record(tombstone_output(stored)));
        } else {
            records.push(RecordResult::Record(record_output(
                &stored.record,
                page.desired,
                page.numbers_as_strings,
            )));
        }
    }
    if !more_coming {
        last = last.max(zone.meta.changed_at);
    }
    let sync_token = match refetch_start {
        // More to come inside the range the refetch started with: keep skipping its old tombstones.
        Some(start) if more_coming && last < start => make_token_of(
            TokenKind::Refetch,
            key,
            db.epoch,
            name,
            &[zone.meta.generation, last, start],
        ),
        _ => make_token(
            TokenKind::Zone,
            key,
            db.epoch,
            name,
            zone.meta.generation,
            last,
        ),
    };
    Ok(ZoneChanges {
        zone_id: key.wire_zone_id(name),
        sync_token,
        records,
        more_coming,
    })
}

/// `changes/zone`: a page per requested zone; a zone's failure is reported in its place.
pub(crate) fn zone_changes(
    db: &Database,
    key: &DbKey,
    request: &ZoneChangesRequest,
) -> Result<ZoneChangesResponse, Refusal> {
    if request.reverse == Some(true) {
        return Err(Refusal::bad_request(
            "reverse order is not supported by the dev server",
        ));
    }
    within_limit(request.zones.len(), "zones")?;
    let default_limit = page_size(request.results_limit)?;
    let numbers_as_strings = request.numbers_as_strings.unwrap_or(false);
    let mut zones = Vec::with_capacity(request.zones.len());
    for query in &request.zones {
        let limit = match query.results_limit {
            Some(_) => page_size(query.results_limit)?,
            None => default_limit,
        };
        let record_types = query
            .desired_record_types
            .as_ref()
            .or(request.desired_record_types.as_ref())
            .and_then(|types| types.as_deref());
        let page = PageRequest {
            token: query.sync_token.as_deref(),
            limit,
            desired: desired_keys(&query.desired_keys, &request.desired_keys),
            record_types,
            numbers_as_strings,
        };
        let name = &query.zone_id.zone_name;
        zones.push(match zone_page(db, key, name, &page) {
            Ok(changes) => ZoneChangesResult::Changes(changes),
            Err(refusal) => ZoneChangesResult::Error(ZoneFetchError {
                zone_id: key.wire_zone_id(name),
                reason: Some(refusal.reason),
                server_error_code: refusal.code,
                retry_after: None,
                redirect_url: None,
            }),
        });
    }
    Ok(ZoneChangesResponse { zones })
}

/// `records/changes`: one zone's page; every failure fails the request.
pub(crate) fn record_changes(
    db: &Database,
    key: &DbKey,
    request: &RecordChangesRequest,
) -> Result<RecordChangesResponse, Refusal> {
    let page = PageRequest {
        token: request.sync_token.as_deref(),
        limit: page_size(request.results_limit)?,
        desired: desired_keys(&None, &request.desired_keys),
        record_types: None,
        numbers_as_strings: request.numbers_as_strings.unwrap_or(false),
    };
    let changes = zone_page(db, key, &request.zone_id.zone_name, &page)?;
    Ok(RecordChangesResponse {
        records: changes.records,
        sync_token: changes.sync_token,
        more_coming: changes.more_coming,
        reverse: Some(false),
    })
}

/// The zones changed after `token` (by `changed_at`, or by `meta_changed_at` for `zones/changes`),
/// a page of them, and the token to continue from.
fn changed_zones(
    db: &Database,
    key: &DbKey,
    kind: TokenKind,
    token: Option<&str>,
    results_limit: Option<u32>,
) -> Result<(Vec<ZoneResult>, String, bool), Refusal> {
    let limit = page_size(results_limit)?;
    let from = match token {
        None => 0,
        Some(token) => match read_token(kind, key, db.epoch, "", token) {
            Some((counter, _)) if counter <= db.counter => counter,
            _ => return Err(Refusal::new(ServerErrorCode::ChangeTokenExpired, EXPIRED)),
        },
    };
    let position = |zone: &Zone| match kind {
        TokenKind::Meta => zone.meta.meta_changed_at,
        _ => zone.meta.changed_at,
    };
    let mut changed: Vec<(u64, &String, &Zone)> = db
        .zones
        .iter()
        .map(|(name, zone)| (position(zone), name, zone))
        .filter(|(at, _, _)| *at > from)
        .collect();
    changed.sort_by_key(|(at, _, _)| *at);
    let more_coming = changed.len() > limit;
    changed.truncate(limit);
    let next = match changed.last() {
        Some((at, _, _)) if more_coming => *at,
        _ => db.counter.max(from),
    };
    let zones = changed
        .into_iter()
        .map(|(_, name, zone)| {
            ZoneResult::Zone(WireZone {
                zone_id: key.wire_zone_id(name),
                sync_token: None,
                atomic: None,
                deleted: zone.meta.deleted.then_some(true),
            })
        })
        .collect();
    Ok((
        zones,
        make_token(kind, key, db.epoch, "", next, 0),
        more_coming,
    ))
}

/// `changes/database`: the zones whose records (or existence) changed since the token.
pub(crate) fn database_changes(
    db: &Database,
    key: &DbKey,
    request: &DatabaseChangesRequest,
) -> Result<DatabaseChangesResponse, Refusal> {
    let (zones, sync_token, more_coming) = changed_zones(
        db,
        key,
        TokenKind::Database,
        request.sync_token.as_deref(),
        request.results_limit,
    )?;
    Ok(DatabaseChangesResponse {
        zones,
        sync_token,
        more_coming,
    })
}

/// `zones/changes`: the zones created or deleted since the `metaSyncToken`.
pub(crate) fn zones_changes(
    db: &Database,
    key: &DbKey,
    request: &ZonesChangesRequest,
) -> Result<ZonesChangesResponse, Refusal> {
    let (zones, meta_sync_token, more_coming) = changed_zones(
        db,
        key,
        TokenKind::Meta,
        request.meta_sync_token.as_deref(),
        request.results_limit,
    )?;
    Ok(ZonesChangesResponse {
        zones,
        meta_sync_token,
        more_coming,
    })
}
