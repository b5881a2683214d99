//! Struct → record fields: a serializer for the struct, and one for each field's value.

use super::error::TypedError;
use super::values::TIMESTAMP_NAME;
use crate::field::{Asset, FieldType, FieldValue, Location, Reference};
use serde::Serialize;
use serde::ser::{self, Impossible, SerializeMap, SerializeSeq, SerializeStruct};
use std::collections::BTreeMap;

/// The record fields of `value`, which must serialize as a struct (or a map with string keys).
pub(super) fn record_fields<T: Serialize + ?Sized>(
    value: &T,
    list_types: &'static [(&'static str, FieldType)],
) -> Result<BTreeMap<String, FieldValue>, TypedError> {
    value.serialize(RecordSerializer { list_types })
}

fn unsupported(field: &str, shape: impl Into<String>) -> TypedError {
    TypedError::UnsupportedShape {
        field: field.to_owned(),
        shape: shape.into(),
    }
}

fn not_a_struct(shape: impl Into<String>) -> TypedError {
    TypedError::NotAStruct {
        shape: shape.into(),
    }
}

/// The top level: a struct whose fields become record fields.
struct RecordSerializer {
    list_types: &'static [(&'static str, FieldType)],
}

/// Collects the fields of the top-level struct (or map).
struct FieldsWriter {
    list_types: &'static [(&'static str, FieldType)],
    fields: BTreeMap<String, FieldValue>,
    /// The key of a map entry whose value has not arrived yet.
    pending_key: Option<String>,
}

impl FieldsWriter {
    fn write<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), TypedError> {
        let declared = self
            .list_types
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, ty)| ty.list_of().unwrap_or(*ty));
        let value = value
            .serialize(ValueSerializer {
                field: name,
                declared_list: declared,
            })
            .map_err(|e| e.in_field(name))?;
        self.fields.insert(name.to_owned(), value);
        Ok(())
    }
}

macro_rules! refuse_top_level {
    ($($method:ident($($arg:ty),*) => $shape:expr;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, TypedError> {
            Err(not_a_struct($shape))
        })*
    };
}

impl ser::Serializer for RecordSerializer {
    type Ok = BTreeMap<String, FieldValue>;
    type Error = TypedError;
    type SerializeSeq = Impossible<Self::Ok, TypedError>;
    type SerializeTuple = Impossible<Self::Ok, TypedError>;
    type SerializeTupleStruct = Impossible<Self::Ok, TypedError>;
    type SerializeTupleVariant = Impossible<Self::Ok, TypedError>;
    type SerializeMap = FieldsWriter;
    type SerializeStruct = FieldsWriter;
    type SerializeStructVariant = Impossible<Self::Ok, TypedError>;

    refuse_top_level! {
        serialize_bool(bool) => "a bool";
        serialize_i8(i8) => "an integer";
        serialize_i16(i16) => "an integer";
        serialize_i32(i32) => "an integer";
        serialize_i64(i64) => "an integer";
        serialize_i128(i128) => "an integer";
        serialize_u8(u8) => "an integer";
        serialize_u16(u16) => "an integer";
        serialize_u32(u32) => "an integer";
        serialize_u64(u64) => "an integer";
        serialize_u128(u128) => "an integer";
        serialize_f32(f32) => "a float";
        serialize_f64(f64) => "a float";
        serialize_char(char) => "a char";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "bytes";
        serialize_none() => "an Option";
        serialize_unit() => "()";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Self::Ok, TypedError> {
        Err(not_a_struct("an Option"))
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<Self::Ok, TypedError> {
        Err(not_a_struct(format!("the unit struct {name}")))
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, TypedError> {
        Err(not_a_struct(format!("the enum variant {name}::{variant}")))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, TypedError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<Self::Ok, TypedError> {
        Err(not_a_struct(format!("the enum variant {name}::{variant}")))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, TypedError> {
        Err(not_a_struct("a sequence"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, TypedError> {
        Err(not_a_struct("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, TypedError> {
        Err(not_a_struct(format!("the tuple struct {name}")))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TypedError> {
        Err(not_a_struct(format!("the enum variant {name}::{variant}")))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<FieldsWriter, TypedError> {
        Ok(FieldsWriter {
            list_types: self.list_types,
            fields: BTreeMap::new(),
            pending_key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<FieldsWriter, TypedError> {
        self.serialize_map(None)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TypedError> {
        Err(not_a_struct(format!("the enum variant {name}::{variant}")))
    }
}

impl SerializeStruct for FieldsWriter {
    type Ok = BTreeMap<String, FieldValue>;
    type Error = TypedError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TypedError> {
        self.write(key, value)
    }

    // A skipped field is left out of the record: the server leaves it as it is.
    fn skip_field(&mut self, _: &'static str) -> Result<(), TypedError> {
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, TypedError> {
        Ok(self.fields)
    }
}

impl SerializeMap for FieldsWriter {
    type Ok = BTreeMap<String, FieldValue>;
    type Error = TypedError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), TypedError> {
        self.pending_key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TypedError> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| not_a_struct("a map that wrote a value before its key"))?;
        self.write(&key, value)
    }

    fn end(self) -> Result<Self::Ok, TypedError> {
        Ok(self.fields)
    }
}

/// A map key at the top level, which must be text: it becomes a field name.
struct KeySerializer;

macro_rules! refuse_key {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<String, TypedError> {
            Err(not_a_struct("a map whose keys are not strings"))
        })*
    };
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = TypedError;
    type SerializeSeq = Impossible<String, TypedError>;
    type SerializeTuple = Impossible<String, TypedError>;
    type SerializeTupleStruct = Impossible<String, TypedError>;
    type SerializeTupleVariant = Impossible<String, TypedError>;
    type SerializeMap = Impossible<String, TypedError>;
    type SerializeStruct = Impossible<String, TypedError>;
    type SerializeStructVariant = Impossible<String, TypedError>;

    fn serialize_str(self, v: &str) -> Result<String, TypedError> {
        Ok(v.to_owned())
    }

    fn serialize_char(self, v: char) -> Result<String, TypedError> {
        Ok(v.to_string())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, TypedError> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, TypedError> {
        value.serialize(self)
    }

    refuse_key! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TypedError> {
        Err(not_a_struct("a map whose keys are not strings"))
    }
}

/// One field's value (or one list element's), as a [`FieldValue`].
struct ValueSerializer<'a> {
    /// The field, for errors.
    field: &'a str,
    /// The list type [`RecordType::LIST_TYPES`](super::RecordType::LIST_TYPES) declares for the field.
    declared_list: Option<FieldType>,
}

impl ValueSerializer<'_> {
    fn int(&self, value: impl TryInto<i64> + ToString + Copy) -> Result<FieldValue, TypedError> {
        value
            .try_into()
            .map(FieldValue::Int64)
            .map_err(|_| TypedError::IntegerOutOfRange {
                field: self.field.to_owned(),
                value: value.to_string(),
                target: "INT64".into(),
            })
    }

    fn double(&self, value: f64) -> Result<FieldValue, TypedError> {
        if value.is_finite() {
            Ok(FieldValue::Double(value))
        } else {
            Err(TypedError::NonFiniteDouble {
                field: self.field.to_owned(),
                value,
            })
        }
    }

    fn unsupported(&self, shape: impl Into<String>) -> TypedError {
        unsupported(self.field, shape)
    }
}

impl<'a> ser::Serializer for ValueSerializer<'a> {
    type Ok = FieldValue;
    type Error = TypedError;
    type SerializeSeq = ListWriter<'a>;
    type SerializeTuple = Impossible<FieldValue, TypedError>;
    type SerializeTupleStruct = Impossible<FieldValue, TypedError>;
    type SerializeTupleVariant = Impossible<FieldValue, TypedError>;
    type SerializeMap = Impossible<FieldValue, TypedError>;
    type SerializeStruct = ModelStructWriter<'a>;
    type SerializeStructVariant = Impossible<FieldValue, TypedError>;

    fn serialize_bool(self, v: bool) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(i64::from(v)))
    }

    fn serialize_i8(self, v: i8) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v))
    }

    fn serialize_i128(self, v: i128) -> Result<FieldValue, TypedError> {
        self.int(v)
    }

    fn serialize_u8(self, v: u8) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Int64(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<FieldValue, TypedError> {
        self.int(v)
    }

    fn serialize_u128(self, v: u128) -> Result<FieldValue, TypedError> {
        self.int(v)
    }

    fn serialize_f32(self, v: f32) -> Result<FieldValue, TypedError> {
        self.double(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<FieldValue, TypedError> {
        self.double(v)
    }

    fn serialize_char(self, v: char) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::String(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::String(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Bytes(v.to_vec()))
    }

    fn serialize_none(self) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<FieldValue, TypedError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<FieldValue, TypedError> {
        Err(self.unsupported("()"))
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<FieldValue, TypedError> {
        Err(self.unsupported(format!("the unit struct {name}")))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<FieldValue, TypedError> {
        Ok(FieldValue::String(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<FieldValue, TypedError> {
        if name != TIMESTAMP_NAME {
            return value.serialize(self);
        }
        let field = self.field;
        match value.serialize(self)? {
            FieldValue::Int64(ms) => Ok(FieldValue::Timestamp(ms)),
            _ => Err(unsupported(field, "a Timestamp that does not hold an i64")),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<FieldValue, TypedError> {
        Err(self.unsupported(format!(
            "the enum variant {name}::{variant} with data (only unit variants map, to a STRING)"
        )))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ListWriter<'a>, TypedError> {
        Ok(ListWriter {
            field: self.field,
            declared: self.declared_list,
            items: Vec::with_capacity(len.unwrap_or(0).min(1024)),
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, TypedError> {
        Err(self.unsupported(format!("a tuple of {len}")))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, TypedError> {
        Err(self.unsupported(format!("the tuple struct {name}")))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TypedError> {
        Err(self.unsupported(format!(
            "the enum variant {name}::{variant} with data (only unit variants map, to a STRING)"
        )))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, TypedError> {
        Err(self.unsupported("a map"))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<ModelStructWriter<'a>, TypedError> {
        let kind = match name {
            "Reference" => ModelStruct::Reference,
            "Asset" => ModelStruct::Asset,
            "Location" => ModelStruct::Location,
            _ => return Err(self.unsupported(format!("the struct {name}"))),
        };
        Ok(ModelStructWriter {
            field: self.field,
            kind,
            map: serde_json::Map::new(),
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TypedError> {
        Err(self.unsupported(format!(
            "the enum variant {name}::{variant} with data (only unit variants map, to a STRING)"
        )))
    }
}

/// The elements of a `Vec` field, each a scalar of one CloudKit type.
struct ListWriter<'a> {
    field: &'a str,
    declared: Option<FieldType>,
    items: Vec<FieldValue>,
}

impl SerializeSeq for ListWriter<'_> {
    type Ok = FieldValue;
    type Error = TypedError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TypedError> {
        let name = format!("{}[{}]", self.field, self.items.len());
        let item = value
            .serialize(ValueSerializer {
                field: &name,
                declared_list: None,
            })
            .map_err(|e| e.in_field(&name))?;
        match item.field_type() {
            None => Err(unsupported(
                &name,
                "None inside a list (a CloudKit list cannot hold a null)",
            )),
            Some(ty) if ty.element().is_some() => Err(unsupported(&name, "a list inside a list")),
            Some(_) => {
                self.items.push(item);
                Ok(())
            }
        }
    }

    fn end(self) -> Result<FieldValue, TypedError> {
        let first = self.items.first().and_then(FieldValue::field_type);
        let list_type = match (first.and_then(FieldType::list_of), self.declared) {
            (Some(found), Some(declared)) if found != declared => {
                return Err(TypedError::WrongFieldType {
                    field: self.field.to_owned(),
                    expected: declared.wire_name(),
                    found: found.wire_name(),
                });
            }
            (Some(found), _) => found,
            (None, Some(declared)) => declared,
            (None, None) => FieldType::StringList,
        };
        list_value(self.field, list_type, self.items)
    }
}

/// The list value of type `list_type` holding `items`, each of which must be of its element type.
fn list_value(
    field: &str,
    list_type: FieldType,
    items: Vec<FieldValue>,
) -> Result<FieldValue, TypedError> {
    let element = list_type.element().unwrap_or(FieldType::String);
    macro_rules! collect {
        ($list:ident, $scalar:ident) => {{
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    FieldValue::$scalar(v) => out.push(v),
                    other => {
                        return Err(TypedError::MixedList {
                            field: field.to_owned(),
                            first: element.wire_name(),
                            other: other.field_type().map_or("null", FieldType::wire_name),
                        });
                    }
                }
            }
            FieldValue::$list(out)
        }};
    }
    Ok(match list_type {
        FieldType::Int64List => collect!(Int64List, Int64),
        FieldType::DoubleList => collect!(DoubleList, Double),
        FieldType::TimestampList => collect!(TimestampList, Timestamp),
        FieldType::BytesList => collect!(BytesList, Bytes),
        FieldType::ReferenceList => collect!(ReferenceList, Reference),
        FieldType::AssetList => collect!(AssetList, Asset),
        FieldType::LocationList => collect!(LocationList, Location),
        // STRING_LIST, and (never reached: the type always comes from an element or a list_of) a
        // scalar type.
        _ => collect!(StringList, String),
    })
}

/// Which model struct a `Reference`, `Asset` or `Location` field holds.
#[derive(Clone, Copy)]
enum ModelStruct {
    Reference,
    Asset,
    Location,
}

impl ModelStruct {
    fn name(self) -> &'static str {
        match self {
            ModelStruct::Reference => "Reference",
            ModelStruct::Asset => "Asset",
            ModelStruct::Location => "Location",
        }
    }

    /// The serde field names of the model type: a struct with any other field is not it.
    fn fields(self) -> &'static [&'static str] {
        match self {
            ModelStruct::Reference => &["record_name", "zone", "action"],
            ModelStruct::Asset => &[
                "file_checksum",
                "size",
                "reference_checksum",
                "wrapping_key",
                "receipt",
                "download_url",
            ],
            ModelStruct::Location => &[
                "latitude",
                "longitude",
                "horizontal_accuracy",
                "vertical_accuracy",
                "altitude",
                "speed",
                "course",
                "timestamp_ms",
            ],
        }
    }
}

/// Rebuilds a model [`Reference`], [`Asset`] or [`Location`] from its serde fields.
struct ModelStructWriter<'a> {
    field: &'a str,
    kind: ModelStruct,
    map: serde_json::Map<String, serde_json::Value>,
}

/// The error for a struct named like a model type whose shape is another.
fn not_the_model_type(
    field: &str,
    kind: ModelStruct,
    detail: impl std::fmt::Display,
) -> TypedError {
    let name = kind.name();
    unsupported(
        field,
        format!("a struct {name} that is not skysync_model::{name} ({detail})"),
    )
}

impl SerializeStruct for ModelStructWriter<'_> {
    type Ok = FieldValue;
    type Error = TypedError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TypedError> {
        if !self.kind.fields().contains(&key) {
            return Err(not_the_model_type(
                self.field,
                self.kind,
                format_args!("it has a field `{key}`"),
            ));
        }
        let json = match self.kind {
            // A Location is all numbers: write each through the field serializer, which refuses
            // NaN and infinities (JSON would turn them into null, i.e. silently into `None`).
            ModelStruct::Location => {
                let name = format!("{}.{key}", self.field);
                let value = value.serialize(ValueSerializer {
                    field: &name,
                    declared_list: None,
                })?;
                match value {
                    FieldValue::Null => serde_json::Value::Null,
                    FieldValue::Int64(n) => serde_json::Value::from(n),
                    FieldValue::Double(d) => serde_json::Value::from(d),
                    _ => {
                        return Err(not_the_model_type(
                            self.field,
                            self.kind,
                            format_args!("`{key}` is no number"),
                        ));
                    }
                }
            }
            ModelStruct::Reference | ModelStruct::Asset => serde_json::to_value(value)
                .map_err(|e| not_the_model_type(self.field, self.kind, e))?,
        };
        self.map.insert(key.to_owned(), json);
        Ok(())
    }

    fn end(self) -> Result<FieldValue, TypedError> {
        let json = serde_json::Value::Object(self.map);
        let value = match self.kind {
            ModelStruct::Reference => {
                serde_json::from_value::<Reference>(json).map(FieldValue::Reference)
            }
            ModelStruct::Asset => serde_json::from_value::<Asset>(json).map(FieldValue::Asset),
            ModelStruct::Location => {
                serde_json::from_value::<Location>(json).map(FieldValue::Location)
            }
        };
        value.map_err(|e| not_the_model_type(self.field, self.kind, e))
    }
}
