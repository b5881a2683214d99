//! Field values: every type round-trips through wire JSON and through storage, and bad input is a
//! typed error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{finite, reference};

use proptest::prelude::*;
use serde_json::json;
use skysync_model::wire::WireField;
use skysync_model::{Asset, Field, FieldType, FieldValue, Location, ModelError, codec};

fn wire(value: serde_json::Value, ty: Option<&str>) -> WireField {
    WireField {
        value,
        field_type: ty.map(str::to_owned),
        is_encrypted: None,
    }
}

fn asset() -> impl Strategy<Value = Asset> {
    (
        prop::option::of("[a-f0-9]{8}"),
        prop::option::of(any::<u64>()),
        prop::option::of("[a-f0-9]{8}"),
        prop::option::of("[a-zA-Z0-9+/]{8}"),
        prop::option::of("[a-z]{4}"),
    )
        .prop_map(
            |(file_checksum, size, reference_checksum, wrapping_key, receipt)| Asset {
                // Always at least one key that identifies the value as an asset when untyped.
                file_checksum: file_checksum.or(Some("00".into())),
                size,
                reference_checksum,
                wrapping_key,
                receipt,
                download_url: None,
            },
        )
}

fn location() -> impl Strategy<Value = Location> {
    (
        -90.0..90.0f64,
        -180.0..180.0f64,
        prop::option::of(0.0..1000.0f64),
        prop::option::of(any::<i64>()),
    )
        .prop_map(
            |(latitude, longitude, horizontal_accuracy, timestamp_ms)| Location {
                latitude,
                longitude,
                horizontal_accuracy,
                vertical_accuracy: None,
                altitude: horizontal_accuracy.map(|a| a * 2.0),
                speed: None,
                course: None,
                timestamp_ms,
            },
        )
}

fn value() -> impl Strategy<Value = FieldValue> {
    let list = |n| prop::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        Just(FieldValue::Null),
        ".*".prop_map(FieldValue::String),
        any::<i64>().prop_map(FieldValue::Int64),
        finite().prop_map(FieldValue::Double),
        any::<i64>().prop_map(FieldValue::Timestamp),
        list(64).prop_map(FieldValue::Bytes),
        reference().prop_map(FieldValue::Reference),
        asset().prop_map(FieldValue::Asset),
        location().prop_map(FieldValue::Location),
        prop::collection::vec(".*", 0..5).prop_map(FieldValue::StringList),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(FieldValue::Int64List),
        prop::collection::vec(finite(), 0..5).prop_map(FieldValue::DoubleList),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(FieldValue::TimestampList),
        prop::collection::vec(list(16), 0..5).prop_map(FieldValue::BytesList),
        prop::collection::vec(reference(), 0..4).prop_map(FieldValue::ReferenceList),
        prop::collection::vec(asset(), 0..4).prop_map(FieldValue::AssetList),
        prop::collection::vec(location(), 0..4).prop_map(FieldValue::LocationList),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every type: typed wire JSON text parses back to the same value.
    #[test]
    fn every_field_type_round_trips_through_wire_json(v in value(), encrypted in any::<bool>(), as_strings in any::<bool>()) {
        let field = Field { value: v, encrypted };
        let text = serde_json::to_string(&field.to_wire(as_strings)).unwrap();
        let parsed: WireField = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(Field::from_wire("f", &parsed).unwrap(), field);
    }

    /// Every type: the storage codec gives back the same value.
    #[test]
    fn every_field_type_round_trips_through_storage(v in value(), encrypted in any::<bool>()) {
        let field = Field { value: v, encrypted };
        let bytes = codec::encode(&field).unwrap();
        prop_assert_eq!(codec::decode::<Field>(&bytes).unwrap(), field);
    }

    /// Arbitrary JSON in a field never panics the parser: it is a value or a typed error.
    #[test]
    fn arbitrary_json_is_a_value_or_a_typed_error(text in "[\\[\\]{}\",:0-9a-zA-Z.\\-]{0,40}", tag in prop::option::of("[A-Z_]{0,14}")) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = Field::from_wire("f", &wire(value, tag.as_deref()));
        }
    }
}

#[test]
fn every_type_tag_is_known_by_its_wire_name() {
    for ty in FieldType::ALL {
        assert_eq!(FieldType::from_wire_name(ty.wire_name()), Some(ty));
    }
    assert_eq!(FieldType::from_wire_name("ASSET"), Some(FieldType::Asset));
    assert_eq!(FieldType::from_wire_name("COLOR"), None);
}

#[test]
fn unknown_type_is_a_typed_error() {
    let err = Field::from_wire("shade", &wire(json!("red"), Some("COLOR"))).unwrap_err();
    assert_eq!(
        err,
        ModelError::UnknownFieldType {
            field: "shade".into(),
            type_name: "COLOR".into()
        }
    );
    assert!(err.to_string().contains("COLOR"));
}

#[test]
fn fractional_timestamp_is_a_typed_error() {
    let err = Field::from_wire("at", &wire(json!(1.5), Some("TIMESTAMP"))).unwrap_err();
    assert!(
        matches!(err, ModelError::FractionalTimestamp { ref field, value } if field == "at" && value == 1.5)
    );
    // A whole number written with a fraction part is still whole milliseconds.
    assert_eq!(
        Field::from_wire("at", &wire(json!(2.0), Some("TIMESTAMP")))
            .unwrap()
            .value,
        FieldValue::Timestamp(2)
    );
    assert!(matches!(
        Field::from_wire("n", &wire(json!(0.5), Some("INT64"))),
        Err(ModelError::WrongShape { .. })
    ));
}

#[test]
fn values_of_the_wrong_shape_are_typed_errors() {
    let cases = [
        (json!("x"), "INT64"),
        (json!(1), "STRING"),
        (json!([1, "a"]), "INT64_LIST"),
        (json!({"latitude": 1}), "LOCATION"),
        (json!({"zoneID": {}}), "REFERENCE"),
        (json!(3), "BYTES"),
        (json!("not base64!"), "BYTES"),
        (json!({"recordName": "a", "action": "EXPLODE"}), "REFERENCE"),
        (json!(1), "STRING_LIST"),
        (json!({"size": -1}), "ASSETID"),
        (json!({}), "LIST"),
    ];
    for (value, ty) in cases {
        let result = Field::from_wire("f", &wire(value.clone(), Some(ty)));
        assert!(
            matches!(
                result,
                Err(ModelError::WrongShape { .. } | ModelError::InvalidBase64 { .. })
            ),
            "{value} as {ty} gave {result:?}"
        );
    }
    assert!(matches!(
        Field::from_wire("f", &wire(json!({"what": 1}), None)),
        Err(ModelError::UntypedValue { .. })
    ));
}

#[test]
fn untyped_values_are_inferred_as_the_server_does() {
    let infer = |v| Field::from_wire("f", &wire(v, None)).unwrap().value;
    assert_eq!(infer(json!("a")), FieldValue::String("a".into()));
    assert_eq!(infer(json!(7)), FieldValue::Int64(7));
    assert_eq!(infer(json!(7.5)), FieldValue::Double(7.5));
    assert_eq!(infer(json!(true)), FieldValue::Int64(1));
    assert_eq!(infer(json!([])), FieldValue::StringList(vec![]));
    assert_eq!(infer(json!([1, 2])), FieldValue::Int64List(vec![1, 2]));
    assert_eq!(infer(json!(null)), FieldValue::Null);
    assert!(matches!(
        infer(json!({"recordName": "r", "action": "NONE"})),
        FieldValue::Reference(_)
    ));
    assert!(matches!(
        infer(json!({"latitude": 1.0, "longitude": 2.0})),
        FieldValue::Location(_)
    ));
    // The old flat LIST tag and CloudKit JS's BOOLEAN are accepted.
    assert_eq!(
        Field::from_wire("f", &wire(json!(["a"]), Some("LIST")))
            .unwrap()
            .value,
        FieldValue::StringList(vec!["a".into()])
    );
    assert_eq!(
        Field::from_wire("f", &wire(json!(false), Some("BOOLEAN")))
            .unwrap()
            .value,
        FieldValue::Int64(0)
    );
    // numbersAsStrings input.
    assert_eq!(
        Field::from_wire("f", &wire(json!("-12"), Some("INT64")))
            .unwrap()
            .value,
        FieldValue::Int64(-12)
    );
}

#[test]
fn explicit_null_goes_out_as_a_cleared_field_and_encryption_as_a_flag() {
    let cleared = Field::plain(FieldValue::Null).to_wire(false);
    assert_eq!(
        serde_json::to_value(&cleared).unwrap(),
        json!({"value": null})
    );
    let secret = Field::encrypted(FieldValue::String("s".into())).to_wire(false);
    assert_eq!(
        serde_json::to_value(&secret).unwrap(),
        json!({"value": "s", "type": "STRING", "isEncrypted": true})
    );
    let bytes = Field::plain(FieldValue::Bytes(vec![0xfb, 0xff])).to_wire(false);
    assert_eq!(
        serde_json::to_value(&bytes).unwrap(),
        json!({"value": "+/8=", "type": "BYTES"})
    );
    let ints = Field::plain(FieldValue::TimestampList(vec![1, 2])).to_wire(true);
    assert_eq!(
        serde_json::to_value(&ints).unwrap(),
        json!({"value": ["1", "2"], "type": "TIMESTAMP_LIST"})
    );
}
