//! Value types serde has no word for: binary data and points in time.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The newtype name [`Timestamp`] serializes under, which the record serializer recognises. Other
/// serializers see a plain newtype around an `i64` (JSON writes the bare number).
pub(super) const TIMESTAMP_NAME: &str = "$skysync_model::typed::Timestamp";

/// Binary data for a `BYTES` field (`Vec<Bytes>` for `BYTES_LIST`). A bare `Vec<u8>` would be a list
/// of numbers (`INT64_LIST`); see also the [`bytes`](mod@bytes) helper for a `Vec<u8>` field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor).map(Bytes)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BYTES")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    // Formats without a bytes type (JSON) write bytes as a list of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// A point in time for a `TIMESTAMP` field (`Vec<Timestamp>` for `TIMESTAMP_LIST`): whole
/// milliseconds since 1970-01-01 UTC, CloudKit's resolution. See also the [`system_time`] helper for
/// a `SystemTime` field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp of `time`, rounded down to a whole millisecond; `None` beyond ±292 million
    /// years, which `i64` milliseconds cannot hold.
    pub fn from_system_time(time: SystemTime) -> Option<Timestamp> {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok().map(Timestamp),
            Err(before) => {
                let before = before.duration();
                // Round toward the past: 1.5 ms before 1970 is -2 ms.
                let whole = before.as_millis() + u128::from(before.subsec_nanos() % 1_000_000 != 0);
                i64::try_from(whole).ok().map(|ms| Timestamp(-ms))
            }
        }
    }

    /// This timestamp as a `SystemTime`; `None` if the platform's clock cannot represent it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(TIMESTAMP_NAME, &self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(TIMESTAMP_NAME, TimestampVisitor)
    }
}

struct TimestampVisitor;

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TIMESTAMP (whole ms since 1970)")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }

    // Self-describing formats may hand over the bare number.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        Ok(Timestamp(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        i64::try_from(v)
            .map(Timestamp)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

/// `#[serde(with = "skysync_model::typed::bytes")]` on a `Vec<u8>` field: the field is `BYTES`
/// rather than a list of numbers. (For `Option<Vec<u8>>` or a list, use [`Bytes`].)
pub mod bytes {
    use super::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the bytes as bytes.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        Bytes::deserialize(deserializer).map(|b| b.0)
    }
}

/// `#[serde(with = "skysync_model::typed::system_time")]` on a `SystemTime` field: the field is a
/// `TIMESTAMP`, rounded down to a whole millisecond. (For `Option<SystemTime>` or a list, use
/// [`Timestamp`].)
pub mod system_time {
    use super::Timestamp;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::SystemTime;

    /// Writes the time as a [`Timestamp`]; a time beyond `i64` milliseconds is an error.
    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        Timestamp::from_system_time(*time)
            .ok_or_else(|| S::Error::custom("the time is beyond what i64 milliseconds can hold"))?
            .serialize(serializer)
    }

    /// Reads a [`Timestamp`] as a time; one the platform's clock cannot represent is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let ts = Timestamp::deserialize(deserializer)?;
        ts.to_system_time().ok_or_else(|| {
            D::Error::custom(format_args!(
                "TIMESTAMP {} is beyond what this platform's clock can represent",
                ts.0
            ))
        })
    }
}
