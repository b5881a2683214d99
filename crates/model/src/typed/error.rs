//! What can go wrong between a struct and a record.

use std::fmt::Display;

/// Why a struct could not become a record, or a record could not become a struct.
///
/// Field names are record field names (after `#[serde(rename)]`); an element of a list is named
/// `field[index]`, a key inside a reference, asset or location `field.key`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TypedError {
    /// The value is not a struct with named fields (nor a map with string keys), so it has no fields
    /// to become record fields. Make the record type a struct with named fields.
    #[error("a record is made from a struct with named fields, not from {shape}")]
    NotAStruct {
        /// The Rust shape that was given, e.g. `"a sequence"`.
        shape: String,
    },
    /// A struct field's Rust shape has no CloudKit type (a nested struct or map, a tuple, `()`, an enum
    /// variant with data, a list of lists). Change the field's type, store the nested value in a
    /// record of its own and reference it, or skip the field with `#[serde(skip)]`.
    #[error("field `{field}` is {shape}, which has no CloudKit type")]
    UnsupportedShape {
        /// The field.
        field: String,
        /// The Rust shape, e.g. `"struct Address"` or `"a map"`.
        shape: String,
    },
    /// An integer does not fit: when writing, a value beyond `INT64` (e.g. a `u64` over `i64::MAX`);
    /// when reading, an `INT64` beyond the struct field's type (e.g. 300 into a `u8`). Use a wider
    /// field type, or keep the value in range.
    #[error("field `{field}`: the integer {value} does not fit {target}")]
    IntegerOutOfRange {
        /// The field.
        field: String,
        /// The integer, in decimal.
        value: String,
        /// What it had to fit, e.g. `"INT64"` or `"u8"`.
        target: String,
    },
    /// A NaN or infinite float: CloudKit's `DOUBLE` holds finite numbers only. Use `Option<f64>` and
    /// `None` for "no value".
    #[error("field `{field}` holds {value}; CloudKit stores finite doubles only")]
    NonFiniteDouble {
        /// The field.
        field: String,
        /// The value.
        value: f64,
    },
    /// The elements of one list map to different CloudKit types (e.g. an untagged enum of a string and
    /// a number). A CloudKit list holds one type: make the element type uniform.
    #[error("field `{field}` is a list of {first} that also holds {other}; a list holds one type")]
    MixedList {
        /// The field.
        field: String,
        /// The wire type of the first element.
        first: &'static str,
        /// The wire type of the element that differs.
        other: &'static str,
    },
    /// The record is of another record type than the struct: read it with the struct for its type.
    #[error("the record is a `{found}`, not a `{expected}`")]
    WrongRecordType {
        /// The struct's [`RecordType::RECORD_TYPE`](super::RecordType::RECORD_TYPE).
        expected: &'static str,
        /// The record's type.
        found: String,
    },
    /// The record has no value for a struct field that is neither an `Option` nor `#[serde(default)]`
    /// (it is absent, or was cleared). Make the field an `Option`, give it a default, or fix the data.
    #[error("field `{field}` is missing or cleared, and the struct needs a value for it")]
    MissingField {
        /// The field.
        field: String,
    },
    /// A record field's CloudKit type does not fit the struct field (e.g. a `STRING` for an `i64`, an
    /// `INT64` for a `Timestamp`); when writing, a list whose type differs from the one declared in
    /// [`RecordType::LIST_TYPES`](super::RecordType::LIST_TYPES). Values are never converted between
    /// CloudKit types: align the struct with the schema.
    #[error("field `{field}` should be {expected} but is {found}")]
    WrongFieldType {
        /// The field.
        field: String,
        /// What the struct field needs, e.g. `"INT64"`.
        expected: &'static str,
        /// The wire type the record holds, e.g. `"STRING"`.
        found: &'static str,
    },
    /// The record has a field the struct does not name, and the struct is
    /// `#[serde(deny_unknown_fields)]` (strict schema). Add the field to the struct or drop the
    /// attribute.
    #[error("the record has field `{field}`, which the struct does not know")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// The CloudKit type fits but the value does not fit the struct field: a `STRING` naming no
    /// variant of an enum, a `bool` field holding an `INT64` other than 0 and 1, a `char` field
    /// holding more than one character, or an error raised by the app's own `Serialize` or
    /// `Deserialize` impl.
    #[error("field `{field}`: {reason}")]
    InvalidValue {
        /// The field (empty when the error is not about one field).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl TypedError {
    /// Names `field` on an error raised without one (by serde or by the app's own impls).
    pub(super) fn in_field(mut self, name: &str) -> Self {
        match &mut self {
            TypedError::UnsupportedShape { field, .. }
            | TypedError::IntegerOutOfRange { field, .. }
            | TypedError::NonFiniteDouble { field, .. }
            | TypedError::MixedList { field, .. }
            | TypedError::MissingField { field }
            | TypedError::WrongFieldType { field, .. }
            | TypedError::UnknownField { field }
            | TypedError::InvalidValue { field, .. } => {
                if field.is_empty() {
                    name.clone_into(field);
                }
            }
            TypedError::NotAStruct { .. } | TypedError::WrongRecordType { .. } => {}
        }
        self
    }

    fn invalid(reason: impl Display) -> Self {
        TypedError::InvalidValue {
            field: String::new(),
            reason: reason.to_string(),
        }
    }
}

impl serde::ser::Error for TypedError {
    fn custom<T: Display>(msg: T) -> Self {
        TypedError::invalid(msg)
    }
}

impl serde::de::Error for TypedError {
    fn custom<T: Display>(msg: T) -> Self {
        TypedError::invalid(msg)
    }

    fn invalid_value(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        use serde::de::Unexpected;
        match unexp {
            Unexpected::Signed(n) => TypedError::IntegerOutOfRange {
                field: String::new(),
                value: n.to_string(),
                target: exp.to_string(),
            },
            Unexpected::Unsigned(n) => TypedError::IntegerOutOfRange {
                field: String::new(),
                value: n.to_string(),
                target: exp.to_string(),
            },
            other => TypedError::invalid(format_args!("{other} is not {exp}")),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        TypedError::MissingField {
            field: field.to_owned(),
        }
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        TypedError::UnknownField {
            field: field.to_owned(),
        }
    }
}
