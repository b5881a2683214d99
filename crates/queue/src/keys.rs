//! The byte keys the queue and the store use for records and zones.
//!
//! A record's key is its [`RecordId`] encoded with [`skysync_model::codec`]; a zone's key is its
//! [`ZoneId`] encoded the same way. The encoding writes the zone first, so every record key of a zone
//! starts with that zone's key (and the encoding is self-delimiting, so one zone's key is never a
//! prefix of another's): all records of a zone form one contiguous range of keys.

use skysync_model::codec;
use skysync_model::{ModelError, RecordId, ZoneId};

/// The storage key of a record.
pub fn record_key(id: &RecordId) -> Result<Vec<u8>, ModelError> {
    codec::encode(id)
}

/// The storage key of a zone, which is also the prefix of every record key in that zone.
pub fn zone_key(zone: &ZoneId) -> Result<Vec<u8>, ModelError> {
    codec::encode(zone)
}

/// Reads a record key back into its id.
pub fn record_id_of(key: &[u8]) -> Result<RecordId, ModelError> {
    codec::decode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_key_prefixes_its_records_and_no_other_zone() {
        let notes = ZoneId::new("Notes");
        let notes2 = ZoneId::new("Notes2");
        let shared = ZoneId {
            zone_name: "Notes".into(),
            owner_record_name: Some("_abc".into()),
        };
        let prefix = zone_key(&notes).unwrap();
        let key = record_key(&RecordId::new(notes.clone(), "n1")).unwrap();
        assert!(key.starts_with(&prefix));
        for other in [&notes2, &shared] {
            let other_key = record_key(&RecordId::new(other.clone(), "n1")).unwrap();
            assert!(!other_key.starts_with(&prefix), "{other} shares the prefix");
        }
        assert_eq!(
            record_id_of(&key).unwrap(),
            RecordId::new(notes.clone(), "n1")
        );
    }
}
