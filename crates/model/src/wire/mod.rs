//! The exact JSON bodies of CloudKit Web Services, as serde types.
//!
//! Every struct here mirrors one JSON dictionary of the protocol (`docs/cloudkit-web-services.md`):
//! keys are spelled as on the wire, optional keys are omitted when absent, unknown keys of a record are
//! kept (so a client passes through what it does not understand). Parse with `serde_json::from_slice`;
//! a per-item failure inside an answered request is the `Error` variant of the `*Result` enums, which are
//! tried first, as the protocol requires.

mod errors;
mod records;
mod subscriptions;
mod zones;

pub use errors::*;
pub use records::*;
pub use subscriptions::*;
pub use zones::*;

use crate::ids::ZoneId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A zone identifier on the wire (`zoneID`). Responses add `zoneType`, which is descriptive only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireZoneId {
    /// `zoneName`.
    #[serde(rename = "zoneName")]
    pub zone_name: String,
    /// `ownerRecordName`: absent for the caller's own zones.
    #[serde(
        rename = "ownerRecordName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub owner_record_name: Option<String>,
    /// `zoneType`: `REGULAR_CUSTOM_ZONE` or `DEFAULT_ZONE`, on responses.
    #[serde(rename = "zoneType", default, skip_serializing_if = "Option::is_none")]
    pub zone_type: Option<String>,
}

impl From<&ZoneId> for WireZoneId {
    fn from(zone: &ZoneId) -> Self {
        Self {
            zone_name: zone.zone_name.clone(),
            owner_record_name: zone.owner_record_name.clone(),
            zone_type: None,
        }
    }
}

impl From<WireZoneId> for ZoneId {
    fn from(wire: WireZoneId) -> Self {
        Self {
            zone_name: wire.zone_name,
            owner_record_name: wire.owner_record_name,
        }
    }
}

impl WireZoneId {
    /// The zone as the model names it (dropping the descriptive `zoneType`).
    pub fn to_zone_id(&self) -> ZoneId {
        ZoneId {
            zone_name: self.zone_name.clone(),
            owner_record_name: self.owner_record_name.clone(),
        }
    }

    /// The zone id with the `zoneType` a server puts on responses.
    pub fn with_type(zone: &ZoneId) -> Self {
        let zone_type = if zone.is_default() {
            "DEFAULT_ZONE"
        } else {
            "REGULAR_CUSTOM_ZONE"
        };
        Self {
            zone_type: Some(zone_type.to_owned()),
            ..Self::from(zone)
        }
    }
}

/// A key that may be absent, present as `null`, or present with a value (e.g. `desiredKeys`, where
/// `null` means "all keys" and `[]` means "none"). Use with
/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]` on an
/// `Option<Option<T>>`.
pub mod nullable {
    use super::*;

    /// Serializes `Some(None)` as `null` and `Some(Some(v))` as `v` (`None` is skipped by the caller).
    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes a present key: `null` becomes `Some(None)`.
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// `retryAfter` in whole seconds. Accepts an integer, a fraction (rounded up) or a numeric string.
pub mod retry_after {
    use super::*;
    use serde_json::Value;

    /// Emits whole seconds (the caller skips `None`).
    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    /// Reads whole, fractional (rounded up) or string seconds; negative or garbage is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        let value = Option::<Value>::deserialize(deserializer)?;
        let seconds = match &value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match seconds {
            Some(s) if (0.0..1e12).contains(&s) => {
                // Bounded above, so the cast cannot overflow; rounding up never waits too little.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Some(s.ceil() as u64))
            }
            _ => Err(serde::de::Error::custom(
                "retryAfter must be a non-negative number of seconds",
            )),
        }
    }
}
