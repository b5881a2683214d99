//! Identifiers: which zone, which record.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The name CloudKit gives every database's built-in zone.
pub const DEFAULT_ZONE_NAME: &str = "_defaultZone";

/// A record zone: the unit CloudKit tracks changes in and hands out sync tokens for.
///
/// `owner_record_name` is `None` for the current user's own zones (the wire omits it then).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ZoneId {
    /// The zone's name, e.g. `"Notes"` or [`DEFAULT_ZONE_NAME`].
    pub zone_name: String,
    /// The user record name of the zone's owner; `None` means the caller.
    pub owner_record_name: Option<String>,
}

impl ZoneId {
    /// A zone owned by the current user.
    pub fn new(zone_name: impl Into<String>) -> Self {
        Self {
            zone_name: zone_name.into(),
            owner_record_name: None,
        }
    }

    /// The database's default zone, which has no change feed of its own.
    pub fn default_zone() -> Self {
        Self::new(DEFAULT_ZONE_NAME)
    }

    /// Whether this is the default zone (which `records/changes` refuses and atomic batches ignore).
    pub fn is_default(&self) -> bool {
        self.zone_name == DEFAULT_ZONE_NAME
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner_record_name {
            Some(owner) => write!(f, "{}@{}", self.zone_name, owner),
            None => f.write_str(&self.zone_name),
        }
    }
}

/// A record's identity: its name within a zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId {
    /// The zone the record lives in.
    pub zone: ZoneId,
    /// The record's name, unique within its zone.
    pub record_name: String,
}

impl RecordId {
    /// A record named `record_name` in `zone`.
    pub fn new(zone: ZoneId, record_name: impl Into<String>) -> Self {
        Self {
            zone,
            record_name: record_name.into(),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.zone, self.record_name)
    }
}
