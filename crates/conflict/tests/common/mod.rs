//! Builders shared by the integration tests: one record, its server copies and pending changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use skysync_model::{ChangeTag, PendingChange, Record, RecordId, Stamp, SystemFields, ZoneId};

/// The record every test argues about.
pub fn id() -> RecordId {
    RecordId::new(ZoneId::new("Notes"), "note-1")
}

/// A fresh local copy of the record with no fields and no system fields.
pub fn note() -> Record {
    Record::new(id(), "Note")
}

/// System fields as the server would send them: a change tag and a modification time.
pub fn system(tag: &str, modified_ms: i64) -> SystemFields {
    SystemFields {
        change_tag: ChangeTag(tag.to_owned()),
        created: Some(Stamp {
            timestamp_ms: 1_000,
            user_record_name: Some("_creator".into()),
            device_id: Some("phone".into()),
        }),
        modified: Some(Stamp {
            timestamp_ms: modified_ms,
            user_record_name: Some("_editor".into()),
            device_id: Some("laptop".into()),
        }),
        deleted: false,
    }
}

/// `record` as a server copy with this change tag and modification time.
pub fn stamped(mut record: Record, tag: &str, modified_ms: i64) -> Record {
    record.system = Some(system(tag, modified_ms));
    record
}

/// A pending save of `record`.
pub fn save(record: Record) -> PendingChange {
    PendingChange::Save(record)
}

/// A pending delete sent with `tag`.
pub fn delete(tag: &str) -> PendingChange {
    PendingChange::Delete {
        id: id(),
        change_tag: Some(ChangeTag(tag.to_owned())),
    }
}

/// The JSON a record goes out as (`Record::to_wire`), as a `serde_json::Value`.
pub fn wire_json(record: &Record) -> serde_json::Value {
    serde_json::to_value(record.to_wire(false)).unwrap()
}
