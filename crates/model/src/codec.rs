//! The one place stored bytes are made: every value skysync keeps on disk goes through [`encode`] and
//! [`decode`]. The format (bincode 2, standard configuration) can be replaced here alone; the store
//! records a format version beside the data so that a newer format is refused, never misread.

use crate::error::ModelError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most bytes one stored value may claim while it is decoded: eight records of the largest
/// size CloudKit accepts, far above anything skysync stores in one value (an open conflict holds
/// three records). Without a limit a corrupt length prefix makes the decoder try to allocate
/// whatever it says (found by the `stored_values` fuzz target: a capacity-overflow panic); with it,
/// such a value is a [`ModelError::Decode`].
pub const MAX_STORED_VALUE_BYTES: usize = 8 * crate::MAX_RECORD_BYTES;

/// The standard configuration (the limit changes no byte of the format, only what decoding will
/// believe).
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_STORED_VALUE_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_STORED_VALUE_BYTES>()
}

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ModelError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| ModelError::Encode(e.to_string()))
}

/// Decodes a stored value. Trailing bytes are an error: they mean the bytes were not what we wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| ModelError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(ModelError::Decode(format!(
            "{} trailing bytes after the value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Record, RecordId, ZoneId};

    #[test]
    fn record_round_trips_and_garbage_is_a_decode_error() {
        let record = Record::new(RecordId::new(ZoneId::new("Notes"), "n1"), "Note")
            .with("title", "hello")
            .with("count", 3i64);
        let bytes = encode(&record).unwrap();
        assert_eq!(decode::<Record>(&bytes).unwrap(), record);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Record>(&longer),
            Err(ModelError::Decode(_))
        ));
        assert!(matches!(
            decode::<Record>(&bytes[..bytes.len() / 2]),
            Err(ModelError::Decode(_))
        ));
    }

    /// The `stored_values` fuzz target's first find: a record id whose zone name claims an
    /// enormous length panicked with "capacity overflow" inside the decoder.
    #[test]
    fn a_length_prefix_claiming_more_than_any_value_holds_is_a_decode_error() {
        let crash = [0xfd, 0x2e, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0];
        assert!(matches!(
            decode::<RecordId>(&crash),
            Err(ModelError::Decode(_))
        ));
        // A length just past the limit is refused before anything is allocated.
        let mut too_long = vec![0xfc];
        too_long.extend_from_slice(
            &u32::try_from(MAX_STORED_VALUE_BYTES + 1)
                .unwrap()
                .to_le_bytes(),
        );
        assert!(matches!(
            decode::<String>(&too_long),
            Err(ModelError::Decode(_))
        ));
        // The limit leaves the format alone: what was written before still reads.
        let long = "x".repeat(crate::MAX_RECORD_BYTES);
        assert_eq!(decode::<String>(&encode(&long).unwrap()).unwrap(), long);
    }
}
