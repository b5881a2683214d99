//! Field values: every type CloudKit Web Services knows, and their exact wire JSON.
//!
//! On the wire a field is `{"value": <json>, "type": "<TYPE>", "isEncrypted": true?}`. [`FieldValue`] is
//! the typed value; [`Field::from_wire`] turns wire JSON into it with a [`ModelError`] for an unknown type,
//! a value of the wrong shape or a fractional timestamp, and [`Field::to_wire`] always emits the type tag
//! (an untyped whole number would be read back as `INT64`, an untyped base64 string as `STRING`).

use crate::error::ModelError;
use crate::ids::ZoneId;
use crate::wire::{WireField, WireZoneId};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// The wire type tag of a field value (`"STRING"`, `"INT64_LIST"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// `STRING`: UTF-8 text.
    String,
    /// `INT64`: a signed 64-bit integer (CloudKit has no booleans: they are 0 and 1).
    Int64,
    /// `DOUBLE`: a 64-bit float.
    Double,
    /// `TIMESTAMP`: whole milliseconds since 1970.
    Timestamp,
    /// `BYTES`: raw bytes, base64 on the wire.
    Bytes,
    /// `REFERENCE`: a link to another record.
    Reference,
    /// `ASSETID`: a file stored beside the record.
    Asset,
    /// `LOCATION`: a geographic position.
    Location,
    /// `STRING_LIST`.
    StringList,
    /// `INT64_LIST`.
    Int64List,
    /// `DOUBLE_LIST`.
    DoubleList,
    /// `TIMESTAMP_LIST`.
    TimestampList,
    /// `BYTES_LIST`.
    BytesList,
    /// `REFERENCE_LIST`.
    ReferenceList,
    /// `ASSETID_LIST`.
    AssetList,
    /// `LOCATION_LIST`.
    LocationList,
}

impl FieldType {
    /// Every type, in wire-table order.
    pub const ALL: [FieldType; 16] = [
        FieldType::String,
        FieldType::Int64,
        FieldType::Double,
        FieldType::Timestamp,
        FieldType::Bytes,
        FieldType::Reference,
        FieldType::Asset,
        FieldType::Location,
        FieldType::StringList,
        FieldType::Int64List,
        FieldType::DoubleList,
        FieldType::TimestampList,
        FieldType::BytesList,
        FieldType::ReferenceList,
        FieldType::AssetList,
        FieldType::LocationList,
    ];

    /// The tag the server emits for this type.
    pub fn wire_name(self) -> &'static str {
        match self {
            FieldType::String => "STRING",
            FieldType::Int64 => "INT64",
            FieldType::Double => "DOUBLE",
            FieldType::Timestamp => "TIMESTAMP",
            FieldType::Bytes => "BYTES",
            FieldType::Reference => "REFERENCE",
            FieldType::Asset => "ASSETID",
            FieldType::Location => "LOCATION",
            FieldType::StringList => "STRING_LIST",
            FieldType::Int64List => "INT64_LIST",
            FieldType::DoubleList => "DOUBLE_LIST",
            FieldType::TimestampList => "TIMESTAMP_LIST",
            FieldType::BytesList => "BYTES_LIST",
            FieldType::ReferenceList => "REFERENCE_LIST",
            FieldType::AssetList => "ASSETID_LIST",
            FieldType::LocationList => "LOCATION_LIST",
        }
    }

    /// The type a wire tag names. Also accepts `ASSET`/`ASSET_LIST`, which some clients send.
    /// Returns `None` for `LIST`, `BOOLEAN` and unknown tags (see [`Field::from_wire`]).
    pub fn from_wire_name(name: &str) -> Option<FieldType> {
        Some(match name {
            "ASSET" => FieldType::Asset,
            "ASSET_LIST" => FieldType::AssetList,
            other => *FieldType::ALL.iter().find(|t| t.wire_name() == other)?,
        })
    }

    /// The element type of a list type, `None` for a scalar type.
    pub fn element(self) -> Option<FieldType> {
        Some(match self {
            FieldType::StringList => FieldType::String,
            FieldType::Int64List => FieldType::Int64,
            FieldType::DoubleList => FieldType::Double,
            FieldType::TimestampList => FieldType::Timestamp,
            FieldType::BytesList => FieldType::Bytes,
            FieldType::ReferenceList => FieldType::Reference,
            FieldType::AssetList => FieldType::Asset,
            FieldType::LocationList => FieldType::Location,
            _ => return None,
        })
    }

    /// The list type whose elements are of this type, `None` for a list type.
    pub fn list_of(self) -> Option<FieldType> {
        FieldType::ALL
            .iter()
            .copied()
            .find(|t| t.element() == Some(self))
    }
}

/// What a reference does when its target is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReferenceAction {
    /// Nothing happens to the referring record.
    None,
    /// The referring record is deleted with its target.
    DeleteSelf,
    /// The server refuses to save a reference to a missing target (`VALIDATING_REFERENCE_ERROR`).
    Validate,
}

impl ReferenceAction {
    fn wire_name(self) -> &'static str {
        match self {
            ReferenceAction::None => "NONE",
            ReferenceAction::DeleteSelf => "DELETE_SELF",
            ReferenceAction::Validate => "VALIDATE",
        }
    }
}

/// A link from one record to another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// The target record's name.
    pub record_name: String,
    /// The target's zone, when it is not the referring record's zone.
    pub zone: Option<ZoneId>,
    /// What happens when the target is deleted (required on write, absent inside queries).
    pub action: Option<ReferenceAction>,
}

/// A geographic position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Horizontal accuracy in meters.
    pub horizontal_accuracy: Option<f64>,
    /// Vertical accuracy in meters.
    pub vertical_accuracy: Option<f64>,
    /// Meters above sea level.
    pub altitude: Option<f64>,
    /// Meters per second.
    pub speed: Option<f64>,
    /// Degrees from north.
    pub course: Option<f64>,
    /// When the position was taken, ms since 1970.
    pub timestamp_ms: Option<i64>,
}

/// A file stored beside a record (the value of an `ASSETID` field). Which keys are present depends on
/// the direction: `receipt`/checksums/`wrapping_key` when saving, `download_url` when fetched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Asset {
    /// The file's checksum.
    pub file_checksum: Option<String>,
    /// The file's size in bytes.
    pub size: Option<u64>,
    /// The reference checksum (private database).
    pub reference_checksum: Option<String>,
    /// The wrapping key (private database).
    pub wrapping_key: Option<String>,
    /// The upload receipt.
    pub receipt: Option<String>,
    /// Where to download the file (fetches only).
    pub download_url: Option<String>,
}

/// A typed field value. [`FieldValue::Null`] is an explicitly cleared field (`{"value": null}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// An explicit null: the field is cleared when sent.
    Null,
    /// `STRING`.
    String(String),
    /// `INT64`.
    Int64(i64),
    /// `DOUBLE`.
    Double(f64),
    /// `TIMESTAMP` in whole ms since 1970.
    Timestamp(i64),
    /// `BYTES`.
    Bytes(Vec<u8>),
    /// `REFERENCE`.
    Reference(Reference),
    /// `ASSETID`.
    Asset(Asset),
    /// `LOCATION`.
    Location(Location),
    /// `STRING_LIST`.
    StringList(Vec<String>),
    /// `INT64_LIST`.
    Int64List(Vec<i64>),
    /// `DOUBLE_LIST`.
    DoubleList(Vec<f64>),
    /// `TIMESTAMP_LIST`.
    TimestampList(Vec<i64>),
    /// `BYTES_LIST`.
    BytesList(Vec<Vec<u8>>),
    /// `REFERENCE_LIST`.
    ReferenceList(Vec<Reference>),
    /// `ASSETID_LIST`.
    AssetList(Vec<Asset>),
    /// `LOCATION_LIST`.
    LocationList(Vec<Location>),
}

impl FieldValue {
    /// The wire type of this value; `None` for [`FieldValue::Null`], which carries no type.
    pub fn field_type(&self) -> Option<FieldType> {
        Some(match self {
            FieldValue::Null => return None,
            FieldValue::String(_) => FieldType::String,
            FieldValue::Int64(_) => FieldType::Int64,
            FieldValue::Double(_) => FieldType::Double,
            FieldValue::Timestamp(_) => FieldType::Timestamp,
            FieldValue::Bytes(_) => FieldType::Bytes,
            FieldValue::Reference(_) => FieldType::Reference,
            FieldValue::Asset(_) => FieldType::Asset,
            FieldValue::Location(_) => FieldType::Location,
            FieldValue::StringList(_) => FieldType::StringList,
            FieldValue::Int64List(_) => FieldType::Int64List,
            FieldValue::DoubleList(_) => FieldType::DoubleList,
            FieldValue::TimestampList(_) => FieldType::TimestampList,
            FieldValue::BytesList(_) => FieldType::BytesList,
            FieldValue::ReferenceList(_) => FieldType::ReferenceList,
            FieldValue::AssetList(_) => FieldType::AssetList,
            FieldValue::LocationList(_) => FieldType::LocationList,
        })
    }

    /// The value as wire JSON (without its type tag). With `numbers_as_strings`, integers
    /// (`INT64`, `TIMESTAMP` and their lists) are emitted as decimal strings.
    pub fn to_json(&self, numbers_as_strings: bool) -> Value {
        let int = |n: i64| {
            if numbers_as_strings {
                Value::String(n.to_string())
            } else {
                Value::from(n)
            }
        };
        match self {
            FieldValue::Null => Value::Null,
            FieldValue::String(s) => Value::String(s.clone()),
            FieldValue::Int64(n) | FieldValue::Timestamp(n) => int(*n),
            FieldValue::Double(d) => double_json(*d),
            FieldValue::Bytes(b) => Value::String(BASE64.encode(b)),
            FieldValue::Reference(r) => reference_json(r),
            FieldValue::Asset(a) => asset_json(a),
            FieldValue::Location(l) => location_json(l),
            FieldValue::StringList(v) => v.iter().cloned().map(Value::String).collect(),
            FieldValue::Int64List(v) | FieldValue::TimestampList(v) => {
                v.iter().copied().map(int).collect()
            }
            FieldValue::DoubleList(v) => v.iter().copied().map(double_json).collect(),
            FieldValue::BytesList(v) => v.iter().map(|b| Value::String(BASE64.encode(b))).collect(),
            FieldValue::ReferenceList(v) => v.iter().map(reference_json).collect(),
            FieldValue::AssetList(v) => v.iter().map(asset_json).collect(),
            FieldValue::LocationList(v) => v.iter().map(location_json).collect(),
        }
    }

    /// Parses wire JSON as a value of the given type. `field` names the field in errors.
    pub fn from_json(field: &str, ty: FieldType, value: &Value) -> Result<FieldValue, ModelError> {
        if value.is_null() {
            return Ok(FieldValue::Null);
        }
        if let Some(element) = ty.element() {
            let items = value
                .as_array()
                .ok_or_else(|| wrong_shape(field, ty, value))?;
            return list_from_json(field, element, items);
        }
        Ok(match ty {
            FieldType::String => FieldValue::String(string_from_json(field, value)?),
            FieldType::Int64 => FieldValue::Int64(int_from_json(field, ty, value)?),
            FieldType::Timestamp => FieldValue::Timestamp(int_from_json(field, ty, value)?),
            FieldType::Double => FieldValue::Double(double_from_json(field, value)?),
            FieldType::Bytes => FieldValue::Bytes(bytes_from_json(field, value)?),
            FieldType::Reference => FieldValue::Reference(reference_from_json(field, value)?),
            FieldType::Asset => FieldValue::Asset(asset_from_json(field, value)?),
            FieldType::Location => FieldValue::Location(location_from_json(field, value)?),
            // Lists were handled above; a list type always has an element type.
            _ => return Err(wrong_shape(field, ty, value)),
        })
    }

    /// Infers the type of untyped wire JSON the way the server does: a string is `STRING`, a whole
    /// number `INT64`, any other number `DOUBLE`, a boolean `INT64` 0/1, an object by its keys
    /// (`recordName`: reference, `latitude`+`longitude`: location, `fileChecksum`/`downloadURL`/`receipt`:
    /// asset), an array by its first element (an empty array is an empty `STRING_LIST`).
    pub fn infer(field: &str, value: &Value) -> Result<FieldValue, ModelError> {
        match infer_type(value) {
            Some(ty) => FieldValue::from_json(field, ty, &normalize_bools(value)),
            None if value.is_null() => Ok(FieldValue::Null),
            None => Err(ModelError::UntypedValue {
                field: field.to_owned(),
                found: json_kind(value),
            }),
        }
    }
}

/// A field as stored on a record: its value and whether the schema declares it encrypted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// The value.
    pub value: FieldValue,
    /// `isEncrypted` on the wire: the field is encrypted at rest by the server.
    pub encrypted: bool,
}

impl Field {
    /// An unencrypted field.
    pub fn plain(value: FieldValue) -> Self {
        Self {
            value,
            encrypted: false,
        }
    }

    /// An encrypted field (private database only; the public database refuses it).
    pub fn encrypted(value: FieldValue) -> Self {
        Self {
            value,
            encrypted: true,
        }
    }

    /// Parses a wire field dictionary. `name` is the field's name, used in errors.
    ///
    /// A `type` tag is authoritative; `LIST` (an old flat tag) and `BOOLEAN` (a CloudKit JS
    /// convenience) are accepted and resolved from the value; without a tag the type is inferred.
    pub fn from_wire(name: &str, wire: &WireField) -> Result<Field, ModelError> {
        if wire.field_type.as_deref() == Some("LIST") && !wire.value.is_array() {
            return Err(ModelError::WrongShape {
                field: name.to_owned(),
                expected: "LIST",
                found: json_kind(&wire.value),
            });
        }
        let value = match wire.field_type.as_deref() {
            None | Some("LIST") => FieldValue::infer(name, &wire.value)?,
            Some("BOOLEAN") => match &wire.value {
                Value::Bool(b) => FieldValue::Int64(i64::from(*b)),
                other => FieldValue::from_json(name, FieldType::Int64, other)?,
            },
            Some(tag) => {
                let ty =
                    FieldType::from_wire_name(tag).ok_or_else(|| ModelError::UnknownFieldType {
                        field: name.to_owned(),
                        type_name: tag.to_owned(),
                    })?;
                FieldValue::from_json(name, ty, &wire.value)?
            }
        };
        Ok(Field {
            value,
            encrypted: wire.is_encrypted.unwrap_or(false),
        })
    }

    /// The wire dictionary for this field, always with its type tag (none for an explicit null).
    pub fn to_wire(&self, numbers_as_strings: bool) -> WireField {
        WireField {
            value: self.value.to_json(numbers_as_strings),
            field_type: self.value.field_type().map(|t| t.wire_name().to_owned()),
            is_encrypted: self.encrypted.then_some(true),
        }
    }
}

macro_rules! impl_from_for_field_value {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self {
                FieldValue::$variant(v.into())
            }
        })*
    };
}

impl_from_for_field_value! {
    String => String,
    &str => String,
    i64 => Int64,
    i32 => Int64,
    f64 => Double,
    Vec<u8> => Bytes,
    Reference => Reference,
    Asset => Asset,
    Location => Location,
    Vec<String> => StringList,
    Vec<i64> => Int64List,
    Vec<f64> => DoubleList,
}

impl From<bool> for FieldValue {
    /// CloudKit has no boolean type: booleans are `INT64` 0 and 1.
    fn from(b: bool) -> Self {
        FieldValue::Int64(i64::from(b))
    }
}

fn json_kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".into(),
        Value::Number(_) => "a fractional number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn wrong_shape(field: &str, ty: FieldType, value: &Value) -> ModelError {
    ModelError::WrongShape {
        field: field.to_owned(),
        expected: ty.wire_name(),
        found: json_kind(value),
    }
}

fn double_json(d: f64) -> Value {
    // JSON has no NaN or infinity; CloudKit cannot store them either, so they go out as null.
    Number::from_f64(d).map_or(Value::Null, Value::Number)
}

fn int_from_json(field: &str, ty: FieldType, value: &Value) -> Result<i64, ModelError> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.fract() != 0.0 && ty == FieldType::Timestamp => {
                    Err(ModelError::FractionalTimestamp {
                        field: field.to_owned(),
                        value: f,
                    })
                }
                // A whole number written with a fraction part (`2.0`) is still that integer.
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    // |f| < 2^53, so the value is exact and the cast cannot truncate.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(f as i64)
                }
                _ => Err(wrong_shape(field, ty, value)),
            }
        }
        // numbersAsStrings: integers may arrive as decimal strings.
        Value::String(s) => s.parse().map_err(|_| wrong_shape(field, ty, value)),
        _ => Err(wrong_shape(field, ty, value)),
    }
}

fn string_from_json(field: &str, value: &Value) -> Result<String, ModelError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| wrong_shape(field, FieldType::String, value))
}

fn double_from_json(field: &str, value: &Value) -> Result<f64, ModelError> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| wrong_shape(field, FieldType::Double, value)),
        Value::String(s) => s
            .parse()
            .map_err(|_| wrong_shape(field, FieldType::Double, value)),
        _ => Err(wrong_shape(field, FieldType::Double, value)),
    }
}

fn bytes_from_json(field: &str, value: &Value) -> Result<Vec<u8>, ModelError> {
    let text = value
        .as_str()
        .ok_or_else(|| wrong_shape(field, FieldType::Bytes, value))?;
    BASE64.decode(text).map_err(|_| ModelError::InvalidBase64 {
        field: field.to_owned(),
    })
}

fn list_from_json(
    field: &str,
    element: FieldType,
    items: &[Value],
) -> Result<FieldValue, ModelError> {
    fn all<T>(
        items: &[Value],
        f: impl Fn(&Value) -> Result<T, ModelError>,
    ) -> Result<Vec<T>, ModelError> {
        items.iter().map(f).collect()
    }
    Ok(match element {
        FieldType::String => FieldValue::StringList(all(items, |v| string_from_json(field, v))?),
        FieldType::Int64 => {
            FieldValue::Int64List(all(items, |v| int_from_json(field, element, v))?)
        }
        FieldType::Timestamp => {
            FieldValue::TimestampList(all(items, |v| int_from_json(field, element, v))?)
        }
        FieldType::Double => FieldValue::DoubleList(all(items, |v| double_from_json(field, v))?),
        FieldType::Bytes => FieldValue::BytesList(all(items, |v| bytes_from_json(field, v))?),
        FieldType::Reference => {
            FieldValue::ReferenceList(all(items, |v| reference_from_json(field, v))?)
        }
        FieldType::Asset => FieldValue::AssetList(all(items, |v| asset_from_json(field, v))?),
        FieldType::Location => {
            FieldValue::LocationList(all(items, |v| location_from_json(field, v))?)
        }
        list => {
            return Err(ModelError::WrongShape {
                field: field.to_owned(),
                expected: list.wire_name(),
                found: "a nested list".into(),
            });
        }
    })
}

fn infer_type(value: &Value) -> Option<FieldType> {
    Some(match value {
        Value::String(_) => FieldType::String,
        Value::Bool(_) => FieldType::Int64,
        Value::Number(n) if n.is_i64() => FieldType::Int64,
        Value::Number(_) => FieldType::Double,
        Value::Object(map) if map.contains_key("recordName") => FieldType::Reference,
        Value::Object(map) if map.contains_key("latitude") && map.contains_key("longitude") => {
            FieldType::Location
        }
        Value::Object(map)
            if ["fileChecksum", "downloadURL", "receipt"]
                .iter()
                .any(|k| map.contains_key(*k)) =>
        {
            FieldType::Asset
        }
        Value::Array(items) => match items.first() {
            None => FieldType::StringList,
            Some(first) => infer_type(first)?.list_of()?,
        },
        _ => return None,
    })
}

fn normalize_bools(value: &Value) -> Value {
    match value {
        Value::Bool(b) => Value::from(i64::from(*b)),
        Value::Array(items) => items.iter().map(normalize_bools).collect(),
        other => other.clone(),
    }
}

fn object<'a>(
    field: &str,
    ty: FieldType,
    value: &'a Value,
) -> Result<&'a Map<String, Value>, ModelError> {
    value
        .as_object()
        .ok_or_else(|| wrong_shape(field, ty, value))
}

fn opt_str(
    field: &str,
    ty: FieldType,
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ModelError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ModelError::WrongShape {
            field: format!("{field}.{key}"),
            expected: ty.wire_name(),
            found: json_kind(other),
        }),
    }
}

fn opt_f64(field: &str, map: &Map<String, Value>, key: &str) -> Result<Option<f64>, ModelError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => double_from_json(&format!("{field}.{key}"), v).map(Some),
    }
}

fn reference_json(r: &Reference) -> Value {
    let mut map = Map::new();
    map.insert("recordName".into(), Value::String(r.record_name.clone()));
    if let Some(zone) = &r.zone {
        // A WireZoneId is plain strings, which always serialize: the `Null` arm is never taken.
        let zone = serde_json::to_value(WireZoneId::from(zone)).unwrap_or(Value::Null);
        map.insert("zoneID".into(), zone);
    }
    if let Some(action) = r.action {
        map.insert("action".into(), Value::String(action.wire_name().into()));
    }
    Value::Object(map)
}

fn reference_from_json(field: &str, value: &Value) -> Result<Reference, ModelError> {
    let ty = FieldType::Reference;
    let map = object(field, ty, value)?;
    let record_name =
        opt_str(field, ty, map, "recordName")?.ok_or_else(|| ModelError::WrongShape {
            field: field.to_owned(),
            expected: "REFERENCE with a recordName",
            found: "an object without recordName".into(),
        })?;
    let zone = match map.get("zoneID") {
        None | Some(Value::Null) => None,
        Some(z) => Some(
            serde_json::from_value::<WireZoneId>(z.clone())
                .map_err(|_| wrong_shape(field, ty, value))?
                .into(),
        ),
    };
    let action = match opt_str(field, ty, map, "action")?.as_deref() {
        None => None,
        Some("NONE") => Some(ReferenceAction::None),
        Some("DELETE_SELF") => Some(ReferenceAction::DeleteSelf),
        Some("VALIDATE") => Some(ReferenceAction::Validate),
        Some(other) => {
            return Err(ModelError::WrongShape {
                field: format!("{field}.action"),
                expected: "NONE, DELETE_SELF or VALIDATE",
                found: format!("{other:?}"),
            });
        }
    };
    Ok(Reference {
        record_name,
        zone,
        action,
    })
}

fn asset_json(a: &Asset) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            map.insert(k.into(), Value::String(v.clone()));
        }
    };
    put("fileChecksum", &a.file_checksum);
    put("referenceChecksum", &a.reference_checksum);
    put("wrappingKey", &a.wrapping_key);
    put("receipt", &a.receipt);
    put("downloadURL", &a.download_url);
    if let Some(size) = a.size {
        map.insert("size".into(), Value::from(size));
    }
    Value::Object(map)
}

fn asset_from_json(field: &str, value: &Value) -> Result<Asset, ModelError> {
    let ty = FieldType::Asset;
    let map = object(field, ty, value)?;
    let size = match map.get("size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ModelError::WrongShape {
            field: format!("{field}.size"),
            expected: "a non-negative integer",
            found: json_kind(v),
        })?),
    };
    Ok(Asset {
        file_checksum: opt_str(field, ty, map, "fileChecksum")?,
        size,
        reference_checksum: opt_str(field, ty, map, "referenceChecksum")?,
        wrapping_key: opt_str(field, ty, map, "wrappingKey")?,
        receipt: opt_str(field, ty, map, "receipt")?,
        download_url: opt_str(field, ty, map, "downloadURL")?,
    })
}

fn location_json(l: &Location) -> Value {
    let mut map = Map::new();
    map.insert("latitude".into(), double_json(l.latitude));
    map.insert("longitude".into(), double_json(l.longitude));
    for (k, v) in [
        ("horizontalAccuracy", l.horizontal_accuracy),
        ("verticalAccuracy", l.vertical_accuracy),
        ("altitude", l.altitude),
        ("speed", l.speed),
        ("course", l.course),
    ] {
        if let Some(v) = v {
            map.insert(k.into(), double_json(v));
        }
    }
    if let Some(ts) = l.timestamp_ms {
        map.insert("timestamp".into(), Value::from(ts));
    }
    Value::Object(map)
}

fn location_from_json(field: &str, value: &Value) -> Result<Location, ModelError> {
    let ty = FieldType::Location;
    let map = object(field, ty, value)?;
    let required = |key: &str| {
        opt_f64(field, map, key)?.ok_or_else(|| ModelError::WrongShape {
            field: format!("{field}.{key}"),
            expected: "a number (LOCATION needs latitude and longitude)",
            found: "nothing".into(),
        })
    };
    let timestamp_ms = match map.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(int_from_json(
            &format!("{field}.timestamp"),
            FieldType::Timestamp,
            v,
        )?),
    };
    Ok(Location {
        latitude: required("latitude")?,
        longitude: required("longitude")?,
        horizontal_accuracy: opt_f64(field, map, "horizontalAccuracy")?,
        vertical_accuracy: opt_f64(field, map, "verticalAccuracy")?,
        altitude: opt_f64(field, map, "altitude")?,
        speed: opt_f64(field, map, "speed")?,
        course: opt_f64(field, map, "course")?,
        timestamp_ms,
    })
}
