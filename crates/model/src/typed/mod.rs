//! Typed records: a plain Rust struct with serde derives becomes a [`Record`] of a named type, and a
//! record becomes the struct again.
//!
//! The app marks a struct with [`RecordType`] (its CloudKit record type), then calls [`to_record`] to
//! save it and [`from_record`] to read it; [`update_record`] writes a struct onto a record the store
//! already holds, keeping its change tag. Every struct field becomes one record field, named as serde
//! names it (so `#[serde(rename = "...")]` renames the record field).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use skysync_model::typed::{self, RecordType, Timestamp};
//! use skysync_model::{FieldValue, RecordId, ZoneId};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Note {
//!     title: String,
//!     pinned: bool,
//!     edited: Timestamp,
//!     tags: Vec<String>,
//!     archived_at: Option<Timestamp>,
//! }
//!
//! impl RecordType for Note {
//!     const RECORD_TYPE: &'static str = "Note";
//! }
//!
//! let note = Note {
//!     title: "Groceries".into(),
//!     pinned: true,
//!     edited: Timestamp(1_700_000_000_000),
//!     tags: vec!["home".into()],
//!     archived_at: None,
//! };
//! let record = typed::to_record(RecordId::new(ZoneId::new("Notes"), "n1"), &note).unwrap();
//! assert_eq!(record.record_type, "Note");
//! assert_eq!(record.get("pinned"), Some(&FieldValue::Int64(1)));
//! assert_eq!(record.get("edited"), Some(&FieldValue::Timestamp(1_700_000_000_000)));
//! // `None` is an explicit null: saving it clears the field on the server.
//! assert_eq!(record.get("archived_at"), Some(&FieldValue::Null));
//!
//! let back: Note = typed::from_record(&record).unwrap();
//! assert_eq!(back, note);
//! ```
//!
//! # How Rust types map to CloudKit types
//!
//! | Rust | CloudKit |
//! |---|---|
//! | `String`, `&str`, `char` | `STRING` |
//! | `bool` | `INT64` 0 or 1 (CloudKit has no boolean); reads back from 0 or 1 only |
//! | `i8`..`i64`, `u8`..`u64`, `i128`, `u128` | `INT64`; a value beyond `i64` is [`TypedError::IntegerOutOfRange`] |
//! | `f32`, `f64` | `DOUBLE`; NaN and infinities are [`TypedError::NonFiniteDouble`] (CloudKit cannot store them) |
//! | [`Timestamp`], or `SystemTime` with `#[serde(with = "skysync_model::typed::system_time")]` | `TIMESTAMP` |
//! | [`Bytes`], or `Vec<u8>` with `#[serde(with = "skysync_model::typed::bytes")]` | `BYTES` |
//! | [`Reference`], [`Asset`], [`Location`] | `REFERENCE`, `ASSETID`, `LOCATION` |
//! | an enum's unit variant | `STRING` holding the variant's (serde) name |
//! | a newtype struct (`struct Meters(f64)`) | whatever its inner value maps to |
//! | `Vec<T>` of any of the above | the matching `*_LIST` (`Vec<bool>` is an `INT64_LIST`) |
//! | `Option<T>` | `None` is an explicit null ([`FieldValue::Null`]); `Some(v)` is `v` |
//!
//! A plain `Vec<u8>` is a list of numbers to serde, so it maps to `INT64_LIST`: use [`Bytes`] or the
//! [`bytes`] helper for binary data. Anything else (a nested struct or map, a tuple, `()`, an enum
//! variant with data, a list of lists or of options) has no CloudKit type and is
//! [`TypedError::UnsupportedShape`], naming the field and the Rust shape.
//!
//! An empty `Vec` carries no element type, so it is written as an empty `STRING_LIST` (what the
//! server itself sends for an empty list), unless [`RecordType::LIST_TYPES`] names the field's list
//! type. Reading back, an empty list of any type fills any `Vec`.
//!
//! # Optional, skipped and unknown fields
//!
//! - `None` writes an explicit null, which clears the field on the server. A field skipped with
//!   `#[serde(skip_serializing_if = "Option::is_none")]` (or `skip_serializing`) is left out of the
//!   record, so the server leaves it as it is.
//! - Reading, a field absent from the record and a field holding an explicit null are the same (the
//!   server leaves cleared fields out of its answers): `None` for an `Option`, the default for a
//!   `#[serde(default)]` field, [`TypedError::MissingField`] otherwise.
//! - Record fields the struct does not name are ignored, as serde does; with
//!   `#[serde(deny_unknown_fields)]` they are [`TypedError::UnknownField`] (a cleared field holds no
//!   data and is never reported).
//! - A record field whose CloudKit type does not fit the struct field is
//!   [`TypedError::WrongFieldType`]: values are never converted between CloudKit types (an `INT64`
//!   does not read as a `DOUBLE` or a [`Timestamp`]), so a schema mismatch shows up at once.
//!
//! # How it works
//!
//! A serde `Serializer` writes the struct's fields one by one, each value through a second serializer
//! that produces a [`FieldValue`]; a serde `Deserializer` hands the record's fields to the struct the
//! same way. Nothing passes through JSON, so bytes stay bytes, timestamps stay timestamps and integers
//! never become floats. One exception: the model's own [`Reference`], [`Asset`] and [`Location`] are
//! rebuilt through `serde_json::Value` from and into their serde shape, which is exact for them (their
//! fields are strings, integers and finite doubles; a [`Location`]'s doubles are checked to be finite
//! before they are written). Serde only tells a serializer a struct's name, so any struct named
//! `Reference`, `Asset` or `Location` is taken for the model's type, and refused if its fields differ.
//! [`Timestamp`] is recognised by a newtype name of its own.
//!
//! `#[serde(flatten)]` works for writing, but reading goes through serde's buffered content, which
//! does not keep CloudKit types: a `bool` inside a flattened struct does not read back (its `INT64`
//! arrives as a plain integer), and errors inside it name no field. Prefer plain fields.
//!
//! [`FieldValue`]: crate::field::FieldValue
//! [`FieldValue::Null`]: crate::field::FieldValue::Null
//! [`Reference`]: crate::field::Reference
//! [`Asset`]: crate::field::Asset
//! [`Location`]: crate::field::Location

mod de;
mod error;
mod ser;
mod values;

pub use error::TypedError;
pub use values::{Bytes, Timestamp, bytes, system_time};

use crate::field::{Field, FieldType};
use crate::ids::RecordId;
use crate::record::Record;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A struct the app stores as records of one CloudKit record type.
///
/// Derive `Serialize` and `Deserialize`, then name the type:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use skysync_model::typed::RecordType;
/// #[derive(Serialize, Deserialize)]
/// struct Contact {
///     name: String,
///     phones: Vec<String>,
/// }
///
/// impl RecordType for Contact {
///     const RECORD_TYPE: &'static str = "Contact";
/// }
/// ```
pub trait RecordType: Serialize + DeserializeOwned {
    /// The CloudKit record type (`recordType` on the wire), e.g. `"Contact"`.
    const RECORD_TYPE: &'static str;

    /// The list type of list fields, by record field name, for when the `Vec` is empty: serde cannot
    /// tell an empty `Vec<i64>` from an empty `Vec<String>`, and an undeclared empty list is written
    /// as an empty `STRING_LIST`. Use this when the server's schema already fixes a field's type.
    /// The element type (e.g. [`FieldType::Int64`]) may be given instead of the list type. A
    /// non-empty list of another type is [`TypedError::WrongFieldType`].
    const LIST_TYPES: &'static [(&'static str, FieldType)] = &[];
}

/// A new, never-synced record of type `T::RECORD_TYPE` named `id`, with one field for each field of
/// `value` (see the [module docs](self) for the mapping).
pub fn to_record<T: RecordType>(id: RecordId, value: &T) -> Result<Record, TypedError> {
    let mut record = Record::new(id, T::RECORD_TYPE);
    for (name, value) in ser::record_fields(value, T::LIST_TYPES)? {
        record.fields.insert(name, Field::plain(value));
    }
    Ok(record)
}

/// Writes the fields of `value` onto `record`, a record of type `T::RECORD_TYPE` (typically the
/// store's copy, whose change tag an update must carry). Fields the struct skips and fields it does
/// not name keep their values; a field already marked encrypted stays encrypted. On error the
/// record is left unchanged.
pub fn update_record<T: RecordType>(record: &mut Record, value: &T) -> Result<(), TypedError> {
    check_type::<T>(record)?;
    let fields = ser::record_fields(value, T::LIST_TYPES)?;
    for (name, value) in fields {
        let encrypted = record.fields.get(&name).is_some_and(|f| f.encrypted);
        record.fields.insert(name, Field { value, encrypted });
    }
    Ok(())
}

/// The struct a record of type `T::RECORD_TYPE` holds (see the [module docs](self) for the mapping
/// and for what absent, null and unknown fields read as).
pub fn from_record<T: RecordType>(record: &Record) -> Result<T, TypedError> {
    check_type::<T>(record)?;
    T::deserialize(de::RecordDeserializer::new(record))
}

fn check_type<T: RecordType>(record: &Record) -> Result<(), TypedError> {
    if record.record_type == T::RECORD_TYPE {
        Ok(())
    } else {
        Err(TypedError::WrongRecordType {
            expected: T::RECORD_TYPE,
            found: record.record_type.clone(),
        })
    }
}
