//! The one place stored bytes are made: every value skysync keeps on disk goes through [`encode`] and
//! [`decode`]. The format (bincode 2, standard configuration) can be replaced here alone; the store
//! records a format version beside the data so that a newer format is refused, never misread.

use crate::error::ModelError;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
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
}
