//! The vocabulary of skysync: zones, records, field values, change tags and tokens, pending changes,
//! and CloudKit's typed errors with the classification the session acts on.
//!
//! This crate does no I/O. Two representations meet here:
//! - the domain types ([`Record`], [`FieldValue`], [`ZoneId`], ...), which the app and the store use
//!   (their serde derives are the storage shape, written through [`codec`]);
//! - the [`wire`] types, the exact JSON of CloudKit Web Services, converted with [`Record::to_wire`],
//!   [`Record::from_wire`], [`Field::to_wire`] and [`Field::from_wire`].
//!
//! ```
//! use skysync_model::{Record, RecordId, ZoneId, FieldValue, wire::WireRecord};
//!
//! let note = Record::new(RecordId::new(ZoneId::new("Notes"), "n1"), "Note")
//!     .with("title", "Groceries")
//!     .with("pinned", true);
//! let json = serde_json::to_string(&note.to_wire(false)).unwrap();
//! assert!(json.contains(r#""pinned":{"value":1,"type":"INT64"}"#));
//!
//! let back: WireRecord = serde_json::from_str(&json).unwrap();
//! let parsed = Record::from_wire(&ZoneId::new("Notes"), &back).unwrap();
//! assert_eq!(parsed.get("title"), Some(&FieldValue::String("Groceries".into())));
//!
//! // A fractional TIMESTAMP is a typed error, never a panic.
//! let bad: WireRecord = serde_json::from_str(
//!     r#"{"recordName":"x","recordType":"T","fields":{"at":{"value":1.5,"type":"TIMESTAMP"}}}"#,
//! ).unwrap();
//! assert!(Record::from_wire(&ZoneId::new("Notes"), &bad).is_err());
//! ```

pub mod codec;
pub mod error;
pub mod field;
pub mod ids;
pub mod pacing;
pub mod pending;
pub mod record;
pub mod resolution;
pub mod typed;
pub mod wire;

pub use error::{
    CkErrorCode, CloudError, ErrorClass, ErrorScope, ModelError, NetworkFailure, ServerError,
    ServerErrorCode,
};
pub use field::{Asset, Field, FieldType, FieldValue, Location, Reference, ReferenceAction};
pub use ids::{DEFAULT_ZONE_NAME, RecordId, ZoneId};
pub use pacing::PacingMemory;
pub use pending::PendingChange;
pub use record::{ChangeTag, ChangeToken, Record, Stamp, SystemFields};
pub use resolution::{ParkReason, Resolution};
pub use typed::{RecordType, TypedError};

/// The most operations CloudKit Web Services accepts in one request (and records in one response).
pub const MAX_OPERATIONS_PER_REQUEST: usize = 200;

/// The largest record CloudKit accepts, in bytes of its fields (assets excluded).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The largest answer CloudKit's limits allow: a page of [`MAX_OPERATIONS_PER_REQUEST`] records at
/// [`MAX_RECORD_BYTES`] each (measured as this crate and the dev server measure a record: the JSON
/// of its fields), plus 4 MiB for names, system fields and the envelope (about 20 KiB a record).
/// Every answer a server within those limits sends fits; the transport refuses a larger one as
/// [`CloudError::ResponseTooLarge`] and stops reading there, so a server that streams for ever
/// costs at most this much memory.
pub const MAX_RESPONSE_BYTES: usize =
    MAX_OPERATIONS_PER_REQUEST * MAX_RECORD_BYTES + 4 * 1024 * 1024;
