//! Record fields → struct: a deserializer for the record, and one for each field's value.

use super::error::TypedError;
use super::values::TIMESTAMP_NAME;
use crate::field::{Asset, Field, FieldType, FieldValue, Location, Reference};
use crate::record::Record;
use serde::Deserializer as _;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::collections::btree_map;

/// The top level: a record whose fields become struct fields.
pub(super) struct RecordDeserializer<'de> {
    record: &'de Record,
}

impl<'de> RecordDeserializer<'de> {
    pub(super) fn new(record: &'de Record) -> Self {
        Self { record }
    }

    fn fields(&self) -> FieldsReader<'de> {
        FieldsReader {
            fields: self.record.fields.iter(),
            pending: None,
        }
    }
}

macro_rules! refuse_top_level {
    ($($method:ident => $shape:expr;)*) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TypedError> {
            Err(TypedError::NotAStruct { shape: $shape.into() })
        })*
    };
}

impl<'de> de::Deserializer<'de> for RecordDeserializer<'de> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_map(self.fields())
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_map(self.fields())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor.visit_map(self.fields())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_unit()
    }

    refuse_top_level! {
        deserialize_bool => "a bool";
        deserialize_i8 => "an integer";
        deserialize_i16 => "an integer";
        deserialize_i32 => "an integer";
        deserialize_i64 => "an integer";
        deserialize_i128 => "an integer";
        deserialize_u8 => "an integer";
        deserialize_u16 => "an integer";
        deserialize_u32 => "an integer";
        deserialize_u64 => "an integer";
        deserialize_u128 => "an integer";
        deserialize_f32 => "a float";
        deserialize_f64 => "a float";
        deserialize_char => "a char";
        deserialize_str => "a string";
        deserialize_string => "a string";
        deserialize_bytes => "bytes";
        deserialize_byte_buf => "bytes";
        deserialize_option => "an Option";
        deserialize_unit => "()";
        deserialize_seq => "a sequence";
        deserialize_identifier => "an identifier";
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, TypedError> {
        Err(TypedError::NotAStruct {
            shape: format!("the unit struct {name}"),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, TypedError> {
        Err(TypedError::NotAStruct {
            shape: "a tuple".into(),
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, TypedError> {
        Err(TypedError::NotAStruct {
            shape: format!("the tuple struct {name}"),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, TypedError> {
        Err(TypedError::NotAStruct {
            shape: format!("the enum {name}"),
        })
    }
}

/// Hands the record's fields to the struct one by one. A field holding an explicit null is left out:
/// the server leaves cleared fields out of its answers, so null and absent read the same.
struct FieldsReader<'de> {
    fields: btree_map::Iter<'de, String, Field>,
    pending: Option<(&'de str, &'de FieldValue)>,
}

impl<'de> MapAccess<'de> for FieldsReader<'de> {
    type Error = TypedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TypedError> {
        for (name, field) in self.fields.by_ref() {
            if field.value == FieldValue::Null {
                continue;
            }
            self.pending = Some((name, &field.value));
            return seed
                .deserialize(BorrowedStrDeserializer::<TypedError>::new(name))
                .map(Some)
                .map_err(|e| e.in_field(name));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TypedError> {
        let (name, value) = self
            .pending
            .take()
            .ok_or_else(|| TypedError::InvalidValue {
                field: String::new(),
                reason: "a field's value was asked for before its name".into(),
            })?;
        seed.deserialize(ValueDeserializer {
            field: name,
            cell: Cell::of(value),
        })
        .map_err(|e| e.in_field(name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// One field's value, or one element of a list field.
#[derive(Clone, Copy)]
enum Cell<'de> {
    Null,
    Str(&'de str),
    Int(i64),
    Double(f64),
    Timestamp(i64),
    Bytes(&'de [u8]),
    Reference(&'de Reference),
    Asset(&'de Asset),
    Location(&'de Location),
    List(&'de FieldValue),
}

impl<'de> Cell<'de> {
    fn of(value: &'de FieldValue) -> Cell<'de> {
        match value {
            FieldValue::Null => Cell::Null,
            FieldValue::String(s) => Cell::Str(s),
            FieldValue::Int64(n) => Cell::Int(*n),
            FieldValue::Double(d) => Cell::Double(*d),
            FieldValue::Timestamp(ms) => Cell::Timestamp(*ms),
            FieldValue::Bytes(b) => Cell::Bytes(b),
            FieldValue::Reference(r) => Cell::Reference(r),
            FieldValue::Asset(a) => Cell::Asset(a),
            FieldValue::Location(l) => Cell::Location(l),
            list => Cell::List(list),
        }
    }

    /// The wire name of this cell's type, for errors.
    fn type_name(self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Str(_) => "STRING",
            Cell::Int(_) => "INT64",
            Cell::Double(_) => "DOUBLE",
            Cell::Timestamp(_) => "TIMESTAMP",
            Cell::Bytes(_) => "BYTES",
            Cell::Reference(_) => "REFERENCE",
            Cell::Asset(_) => "ASSETID",
            Cell::Location(_) => "LOCATION",
            Cell::List(list) => list.field_type().map_or("null", FieldType::wire_name),
        }
    }
}

/// The `index`-th element of a list value; `None` past its end.
fn element(list: &FieldValue, index: usize) -> Option<Cell<'_>> {
    Some(match list {
        FieldValue::StringList(v) => Cell::Str(v.get(index)?),
        FieldValue::Int64List(v) => Cell::Int(*v.get(index)?),
        FieldValue::DoubleList(v) => Cell::Double(*v.get(index)?),
        FieldValue::TimestampList(v) => Cell::Timestamp(*v.get(index)?),
        FieldValue::BytesList(v) => Cell::Bytes(v.get(index)?),
        FieldValue::ReferenceList(v) => Cell::Reference(v.get(index)?),
        FieldValue::AssetList(v) => Cell::Asset(v.get(index)?),
        FieldValue::LocationList(v) => Cell::Location(v.get(index)?),
        _ => return None,
    })
}

/// The number of elements of a list value.
fn list_len(list: &FieldValue) -> usize {
    match list {
        FieldValue::StringList(v) => v.len(),
        FieldValue::Int64List(v) | FieldValue::TimestampList(v) => v.len(),
        FieldValue::DoubleList(v) => v.len(),
        FieldValue::BytesList(v) => v.len(),
        FieldValue::ReferenceList(v) => v.len(),
        FieldValue::AssetList(v) => v.len(),
        FieldValue::LocationList(v) => v.len(),
        _ => 0,
    }
}

/// Deserializes one cell; `field` names it in errors.
struct ValueDeserializer<'a, 'de> {
    field: &'a str,
    cell: Cell<'de>,
}

impl ValueDeserializer<'_, '_> {
    fn wrong(&self, expected: &'static str) -> TypedError {
        match self.cell {
            Cell::Null => TypedError::MissingField {
                field: self.field.to_owned(),
            },
            cell => TypedError::WrongFieldType {
                field: self.field.to_owned(),
                expected,
                found: cell.type_name(),
            },
        }
    }

    fn unsupported(&self, shape: impl Into<String>) -> TypedError {
        TypedError::UnsupportedShape {
            field: self.field.to_owned(),
            shape: shape.into(),
        }
    }

    /// Hands a model struct to a visitor through its serde shape (exact: see the module docs).
    fn model_struct<'v, V: Visitor<'v>, T: serde::Serialize>(
        &self,
        value: &T,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        let invalid = |e: serde_json::Error| TypedError::InvalidValue {
            field: self.field.to_owned(),
            reason: e.to_string(),
        };
        serde_json::to_value(value)
            .map_err(invalid)?
            .deserialize_struct(name, fields, visitor)
            .map_err(invalid)
    }
}

macro_rules! integers {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
            match self.cell {
                Cell::Int(n) => visitor.visit_i64(n),
                _ => Err(self.wrong("INT64")),
            }
        })*
    };
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_, 'de> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Null => visitor.visit_none(),
            Cell::Str(s) => visitor.visit_borrowed_str(s),
            Cell::Int(n) | Cell::Timestamp(n) => visitor.visit_i64(n),
            Cell::Double(d) => visitor.visit_f64(d),
            Cell::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Cell::List(list) => visitor.visit_seq(ListReader::new(self.field, list)),
            Cell::Reference(r) => json_any(self.field, r, visitor),
            Cell::Asset(a) => json_any(self.field, a, visitor),
            Cell::Location(l) => json_any(self.field, l, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Int(0) => visitor.visit_bool(false),
            Cell::Int(1) => visitor.visit_bool(true),
            Cell::Int(n) => Err(TypedError::InvalidValue {
                field: self.field.to_owned(),
                reason: format!("INT64 {n} is not a boolean (CloudKit booleans are 0 and 1)"),
            }),
            _ => Err(self.wrong("INT64 (0 or 1, a boolean)")),
        }
    }

    integers!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Double(d) => visitor.visit_f64(d),
            _ => Err(self.wrong("DOUBLE")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Str(s) => visitor.visit_borrowed_str(s),
            _ => Err(self.wrong("STRING")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Bytes(b) => visitor.visit_borrowed_bytes(b),
            _ => Err(self.wrong("BYTES")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TypedError> {
        Err(self.unsupported("()"))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, TypedError> {
        Err(self.unsupported(format!("the unit struct {name}")))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        if name != TIMESTAMP_NAME {
            return visitor.visit_newtype_struct(self);
        }
        match self.cell {
            Cell::Timestamp(ms) => visitor.visit_newtype_struct(ms.into_deserializer()),
            _ => Err(self.wrong("TIMESTAMP")),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.cell {
            Cell::List(list) => visitor.visit_seq(ListReader::new(self.field, list)),
            _ => Err(self.wrong("a list (*_LIST)")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, _: V) -> Result<V::Value, TypedError> {
        Err(self.unsupported(format!("a tuple of {len}")))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, TypedError> {
        Err(self.unsupported(format!("the tuple struct {name}")))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TypedError> {
        Err(self.unsupported("a map"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        match (name, self.cell) {
            ("Reference", Cell::Reference(r)) => self.model_struct(r, name, fields, visitor),
            ("Asset", Cell::Asset(a)) => self.model_struct(a, name, fields, visitor),
            ("Location", Cell::Location(l)) => self.model_struct(l, name, fields, visitor),
            ("Reference", _) => Err(self.wrong("REFERENCE")),
            ("Asset", _) => Err(self.wrong("ASSETID")),
            ("Location", _) => Err(self.wrong("LOCATION")),
            _ => Err(self.unsupported(format!("the struct {name}"))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        match self.cell {
            // A unit variant, by name; a variant with data cannot be read from a string.
            Cell::Str(s) => visitor.visit_enum(BorrowedStrDeserializer::<TypedError>::new(s)),
            _ => Err(self.wrong("STRING (an enum variant's name)")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_unit()
    }
}

fn json_any<'v, V: Visitor<'v>, T: serde::Serialize>(
    field: &str,
    value: &T,
    visitor: V,
) -> Result<V::Value, TypedError> {
    let invalid = |e: serde_json::Error| TypedError::InvalidValue {
        field: field.to_owned(),
        reason: e.to_string(),
    };
    serde_json::to_value(value)
        .map_err(invalid)?
        .deserialize_any(visitor)
        .map_err(invalid)
}

/// Hands a list's elements to a `Vec` one by one.
struct ListReader<'a, 'de> {
    field: &'a str,
    list: &'de FieldValue,
    next: usize,
}

impl<'a, 'de> ListReader<'a, 'de> {
    fn new(field: &'a str, list: &'de FieldValue) -> Self {
        Self {
            field,
            list,
            next: 0,
        }
    }
}

impl<'de> SeqAccess<'de> for ListReader<'_, 'de> {
    type Error = TypedError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TypedError> {
        let Some(cell) = element(self.list, self.next) else {
            return Ok(None);
        };
        let name = format!("{}[{}]", self.field, self.next);
        self.next += 1;
        seed.deserialize(ValueDeserializer { field: &name, cell })
            .map(Some)
            .map_err(|e| e.in_field(&name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(list_len(self.list).saturating_sub(self.next))
    }
}
