//! Zones on the wire: `zones/list`, `zones/lookup`, `zones/modify`, `zones/changes`, `changes/database`.

use super::{WireZoneId, retry_after};
use crate::error::{ErrorScope, ServerError, ServerErrorCode};
use serde::{Deserialize, Serialize};

/// A zone dictionary: `{zoneID, syncToken, atomic}` (+ `deleted: true` on change feeds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireZone {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
    /// The zone's current sync token.
    #[serde(rename = "syncToken", default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// Whether the zone supports atomic batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomic: Option<bool>,
    /// A deleted zone on a change feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// A per-zone error (`ZoneFetchError`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneFetchError {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
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
    /// Where to sign in.
    #[serde(
        rename = "redirectURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_url: Option<String>,
}

impl ZoneFetchError {
    /// The typed, item-scoped error, as carried by a response with the given HTTP status.
    pub fn to_server_error(&self, http_status: u16) -> ServerError {
        ServerError::from_wire_parts(
            &self.server_error_code,
            ErrorScope::Item,
            http_status,
            self.reason.as_deref(),
            self.retry_after,
            self.redirect_url.as_deref(),
            None,
        )
    }
}

/// One entry of a `zones` array: a zone, or its error (tried first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ZoneResult {
    /// The zone failed.
    Error(ZoneFetchError),
    /// The zone.
    Zone(WireZone),
}

/// The answer to `zones/list`, `zones/lookup` and `zones/modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonesResponse {
    /// One entry per zone.
    pub zones: Vec<ZoneResult>,
}

/// The body of `zones/lookup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupZonesRequest {
    /// The zones to look up.
    pub zones: Vec<WireZoneId>,
}

/// `create` or `delete` a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ZoneOperationType {
    /// Create the zone (succeeds if it exists).
    Create,
    /// Delete the zone and everything in it.
    Delete,
}

/// The `zone` of a zone operation: just its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSpec {
    /// The zone.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
}

/// One operation of `zones/modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneOperation {
    /// What to do.
    #[serde(rename = "operationType")]
    pub operation_type: ZoneOperationType,
    /// To which zone.
    pub zone: ZoneSpec,
}

/// The body of `zones/modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifyZonesRequest {
    /// The operations, in order, one per zone.
    pub operations: Vec<ZoneOperation>,
}

/// The body of `zones/changes` (note: `metaSyncToken`, not `syncToken`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ZonesChangesRequest {
    /// Where the previous fetch stopped.
    #[serde(
        rename = "metaSyncToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub meta_sync_token: Option<String>,
    /// Page size.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
}

/// The answer to `zones/changes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonesChangesResponse {
    /// Changed (or deleted) zones.
    pub zones: Vec<ZoneResult>,
    /// The token to fetch from next.
    #[serde(rename = "metaSyncToken")]
    pub meta_sync_token: String,
    /// Whether another page follows.
    #[serde(rename = "moreComing")]
    pub more_coming: bool,
}

/// The body of `changes/database`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DatabaseChangesRequest {
    /// Where the previous fetch stopped.
    #[serde(rename = "syncToken", default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// Page size.
    #[serde(
        rename = "resultsLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub results_limit: Option<u32>,
}

/// The answer to `changes/database`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseChangesResponse {
    /// Zones that changed (or were deleted).
    pub zones: Vec<ZoneResult>,
    /// The token to fetch from next.
    #[serde(rename = "syncToken")]
    pub sync_token: String,
    /// Whether another page follows.
    #[serde(rename = "moreComing")]
    pub more_coming: bool,
}
