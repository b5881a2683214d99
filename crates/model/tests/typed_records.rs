//! Typed records: a serde struct becomes a record of its type and back, exactly, through the wire
//! JSON; Option is an explicit null; everything that cannot map is a typed error naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{finite, reference};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use skysync_model::typed::{self, Bytes, RecordType, Timestamp};
use skysync_model::wire::WireRecord;
use skysync_model::{
    Asset, ChangeTag, Field, FieldType, FieldValue, Location, Record, RecordId, Reference,
    ReferenceAction, SystemFields, TypedError, ZoneId,
};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn id(name: &str) -> RecordId {
    RecordId::new(ZoneId::new("Notes"), name)
}

/// The record as the server would get it and send it back: wire JSON text, parsed again.
fn through_wire(record: &Record, numbers_as_strings: bool) -> Record {
    let json = serde_json::to_string(&record.to_wire(numbers_as_strings)).unwrap();
    let wire: WireRecord = serde_json::from_str(&json).unwrap();
    Record::from_wire(&record.id.zone, &wire).unwrap()
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
enum Mood {
    Calm,
    #[serde(rename = "very-busy")]
    Busy,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Meters(f64);

/// One field of every CloudKit type, and each Rust type that maps to one.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Everything {
    text: String,
    letter: char,
    yes: bool,
    no: bool,
    tiny: i8,
    small: i16,
    medium: i32,
    big: i64,
    ubyte: u8,
    ushort: u16,
    uint: u32,
    ulong: u64,
    wide: i128,
    huge: u128,
    single: f32,
    double: f64,
    when: Timestamp,
    #[serde(with = "typed::system_time")]
    clock: SystemTime,
    blob: Bytes,
    #[serde(with = "typed::bytes")]
    raw: Vec<u8>,
    owner: Reference,
    photo: Asset,
    place: Location,
    mood: Mood,
    height: Meters,
    #[serde(rename = "renamedOnTheWire")]
    renamed: String,
    maybe_text: Option<String>,
    maybe_when: Option<Timestamp>,
    nothing: Option<i64>,
    texts: Vec<String>,
    numbers: Vec<i64>,
    flags: Vec<bool>,
    doubles: Vec<f64>,
    times: Vec<Timestamp>,
    blobs: Vec<Bytes>,
    links: Vec<Reference>,
    photos: Vec<Asset>,
    places: Vec<Location>,
    moods: Vec<Mood>,
}

impl RecordType for Everything {
    const RECORD_TYPE: &'static str = "Everything";
}

fn location(lat: f64) -> Location {
    Location {
        latitude: lat,
        longitude: -122.03,
        horizontal_accuracy: Some(5.5),
        vertical_accuracy: Some(2.25),
        altitude: Some(-12.0),
        speed: Some(1.5),
        course: Some(270.0),
        timestamp_ms: Some(1_700_000_000_123),
    }
}

fn everything() -> Everything {
    let reference = Reference {
        record_name: "owner-1".into(),
        zone: Some(ZoneId {
            zone_name: "People".into(),
            owner_record_name: Some("_abc".into()),
        }),
        action: Some(ReferenceAction::DeleteSelf),
    };
    let asset = Asset {
        file_checksum: Some("c0ffee".into()),
        size: Some(4096),
        reference_checksum: Some("beef".into()),
        wrapping_key: Some("a2V5".into()),
        receipt: Some("r-1".into()),
        download_url: None,
    };
    Everything {
        text: "héllo \"quoted\" \n✓".into(),
        letter: 'ß',
        yes: true,
        no: false,
        tiny: i8::MIN,
        small: i16::MAX,
        medium: -7,
        big: i64::MIN,
        ubyte: u8::MAX,
        ushort: 65_535,
        uint: u32::MAX,
        ulong: i64::MAX as u64,
        wide: -(1 << 62),
        huge: 1 << 40,
        single: 0.1,
        double: 0.1 + 0.2,
        when: Timestamp(1_700_000_000_001),
        clock: UNIX_EPOCH + Duration::from_millis(1_234_567_890_123),
        blob: Bytes(vec![0, 159, 146, 150, 255]),
        raw: b"plain bytes\0".to_vec(),
        owner: reference.clone(),
        photo: asset.clone(),
        place: location(37.33),
        mood: Mood::Busy,
        height: Meters(1.75),
        renamed: "on the wire".into(),
        maybe_text: Some("there".into()),
        maybe_when: Some(Timestamp(-1)),
        nothing: None,
        texts: vec!["a".into(), String::new(), "c".into()],
        numbers: vec![i64::MAX, 0, i64::MIN],
        flags: vec![true, false],
        doubles: vec![f64::MIN_POSITIVE, -0.5, 1e300],
        times: vec![Timestamp(0), Timestamp(i64::MAX)],
        blobs: vec![Bytes(vec![]), Bytes(vec![1, 2, 3])],
        links: vec![
            reference,
            Reference {
                record_name: "plain".into(),
                zone: None,
                action: Some(ReferenceAction::None),
            },
        ],
        photos: vec![asset],
        places: vec![location(0.0), location(-89.5)],
        moods: vec![Mood::Calm, Mood::Busy],
    }
}

#[test]
fn every_field_type_maps_to_its_cloudkit_type() {
    let record = typed::to_record(id("e1"), &everything()).unwrap();
    assert_eq!(record.record_type, "Everything");
    assert_eq!(record.id, id("e1"));
    assert!(record.system.is_none());
    let ty = |name: &str| record.get(name).and_then(FieldValue::field_type);
    for (name, expected) in [
        ("text", FieldType::String),
        ("letter", FieldType::String),
        ("yes", FieldType::Int64),
        ("tiny", FieldType::Int64),
        ("ulong", FieldType::Int64),
        ("wide", FieldType::Int64),
        ("huge", FieldType::Int64),
        ("single", FieldType::Double),
        ("double", FieldType::Double),
        ("when", FieldType::Timestamp),
        ("clock", FieldType::Timestamp),
        ("blob", FieldType::Bytes),
        ("raw", FieldType::Bytes),
        ("owner", FieldType::Reference),
        ("photo", FieldType::Asset),
        ("place", FieldType::Location),
        ("mood", FieldType::String),
        ("height", FieldType::Double),
        ("renamedOnTheWire", FieldType::String),
        ("maybe_text", FieldType::String),
        ("maybe_when", FieldType::Timestamp),
        ("texts", FieldType::StringList),
        ("numbers", FieldType::Int64List),
        ("flags", FieldType::Int64List),
        ("doubles", FieldType::DoubleList),
        ("times", FieldType::TimestampList),
        ("blobs", FieldType::BytesList),
        ("links", FieldType::ReferenceList),
        ("photos", FieldType::AssetList),
        ("places", FieldType::LocationList),
        ("moods", FieldType::StringList),
    ] {
        assert_eq!(ty(name), Some(expected), "field {name}");
    }
    assert_eq!(record.get("yes"), Some(&FieldValue::Int64(1)));
    assert_eq!(record.get("no"), Some(&FieldValue::Int64(0)));
    assert_eq!(
        record.get("mood"),
        Some(&FieldValue::String("very-busy".into()))
    );
    assert_eq!(
        record.get("clock"),
        Some(&FieldValue::Timestamp(1_234_567_890_123))
    );
    assert_eq!(
        record.get("raw"),
        Some(&FieldValue::Bytes(b"plain bytes\0".to_vec()))
    );
    assert_eq!(record.get("nothing"), Some(&FieldValue::Null));
    assert!(
        record.get("renamed").is_none(),
        "the serde name is the field name"
    );
    assert_eq!(record.fields.len(), 39);
}

#[test]
fn every_field_type_round_trips_exactly_through_wire_json() {
    let original = everything();
    let record = typed::to_record(id("e1"), &original).unwrap();
    for numbers_as_strings in [false, true] {
        let parsed = through_wire(&record, numbers_as_strings);
        assert_eq!(parsed, record, "numbers_as_strings = {numbers_as_strings}");
        let back: Everything = typed::from_record(&parsed).unwrap();
        assert_eq!(back, original, "numbers_as_strings = {numbers_as_strings}");
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
struct Task {
    title: String,
    due: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(default)]
    priority: i64,
    #[serde(skip)]
    local_only: u32,
}

impl RecordType for Task {
    const RECORD_TYPE: &'static str = "Task";
}

#[test]
fn none_is_an_explicit_null_on_the_wire_and_a_skipped_field_is_absent() {
    let task = Task {
        title: "Call".into(),
        due: None,
        note: None,
        priority: 2,
        local_only: 9,
    };
    let record = typed::to_record(id("t1"), &task).unwrap();
    assert_eq!(record.get("due"), Some(&FieldValue::Null));
    assert!(
        record.get("note").is_none(),
        "skip_serializing_if leaves the field out"
    );
    assert!(
        record.get("local_only").is_none(),
        "#[serde(skip)] leaves the field out"
    );

    let json = serde_json::to_value(record.to_wire(false)).unwrap();
    let fields = json["fields"].as_object().unwrap();
    assert_eq!(fields["due"], serde_json::json!({ "value": null }));
    assert!(!fields.contains_key("note"));
    assert!(!fields.contains_key("local_only"));

    let back: Task = typed::from_record(&through_wire(&record, false)).unwrap();
    assert_eq!(
        back,
        Task {
            local_only: 0,
            ..task
        }
    );
}

#[test]
fn absent_and_null_fields_read_as_none_or_the_default() {
    let mut record = Record::new(id("t2"), "Task").with("title", "Write");
    let absent: Task = typed::from_record(&record).unwrap();
    assert_eq!(absent.due, None);
    assert_eq!(absent.note, None);
    assert_eq!(absent.priority, 0);

    record.clear("due");
    record.clear("note");
    record.clear("priority");
    let cleared: Task = typed::from_record(&record).unwrap();
    assert_eq!(cleared, absent);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Lists {
    tags: Vec<String>,
    scores: Vec<i64>,
    seen: Vec<Timestamp>,
}

impl RecordType for Lists {
    const RECORD_TYPE: &'static str = "Lists";
    const LIST_TYPES: &'static [(&'static str, FieldType)] = &[
        ("scores", FieldType::Int64List),
        // The element type is accepted too.
        ("seen", FieldType::Timestamp),
    ];
}

#[test]
fn an_empty_list_is_a_string_list_unless_its_type_is_declared() {
    let empty = Lists {
        tags: vec![],
        scores: vec![],
        seen: vec![],
    };
    let record = typed::to_record(id("l1"), &empty).unwrap();
    assert_eq!(record.get("tags"), Some(&FieldValue::StringList(vec![])));
    assert_eq!(record.get("scores"), Some(&FieldValue::Int64List(vec![])));
    assert_eq!(record.get("seen"), Some(&FieldValue::TimestampList(vec![])));
    let back: Lists = typed::from_record(&through_wire(&record, false)).unwrap();
    assert_eq!(back, empty);

    // An empty list of any type reads into any Vec.
    let other = Record::new(id("l2"), "Lists")
        .with("tags", FieldValue::LocationList(vec![]))
        .with("scores", FieldValue::StringList(vec![]))
        .with("seen", FieldValue::BytesList(vec![]));
    assert_eq!(typed::from_record::<Lists>(&other).unwrap(), empty);
}

#[test]
fn a_list_of_another_type_than_declared_is_refused() {
    #[derive(Serialize, Deserialize)]
    struct Declared {
        scores: Vec<String>,
    }
    impl RecordType for Declared {
        const RECORD_TYPE: &'static str = "Declared";
        const LIST_TYPES: &'static [(&'static str, FieldType)] =
            &[("scores", FieldType::Int64List)];
    }
    let err = typed::to_record(
        id("d"),
        &Declared {
            scores: vec!["x".into()],
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        TypedError::WrongFieldType {
            field: "scores".into(),
            expected: "INT64_LIST",
            found: "STRING_LIST",
        }
    );
}

#[test]
fn system_time_rounds_down_to_whole_milliseconds() {
    let after = UNIX_EPOCH + Duration::from_micros(1_500);
    assert_eq!(Timestamp::from_system_time(after), Some(Timestamp(1)));
    let before = UNIX_EPOCH - Duration::from_micros(1_500);
    assert_eq!(Timestamp::from_system_time(before), Some(Timestamp(-2)));
    let exact = UNIX_EPOCH - Duration::from_millis(3);
    assert_eq!(Timestamp::from_system_time(exact), Some(Timestamp(-3)));
    assert_eq!(Timestamp(-3).to_system_time(), Some(exact));
}

// ---- update_record -------------------------------------------------------------------------

#[test]
fn update_record_keeps_the_change_tag_encryption_and_untouched_fields() {
    let mut stored = Record::new(id("t3"), "Task").with("title", "Old");
    stored.system = Some(SystemFields {
        change_tag: ChangeTag("e7".into()),
        created: None,
        modified: None,
        deleted: false,
    });
    stored.fields.insert(
        "note".into(),
        Field::encrypted(FieldValue::String("secret".into())),
    );
    stored.fields.insert(
        "title".into(),
        Field::encrypted(FieldValue::String("Old".into())),
    );
    stored.set("server_only", 5_i64);

    let task = Task {
        title: "New".into(),
        due: Some(Timestamp(10)),
        note: None,
        priority: 1,
        local_only: 0,
    };
    typed::update_record(&mut stored, &task).unwrap();
    assert_eq!(stored.change_tag(), Some(&ChangeTag("e7".into())));
    assert_eq!(
        stored.fields["title"],
        Field::encrypted(FieldValue::String("New".into()))
    );
    assert_eq!(stored.get("due"), Some(&FieldValue::Timestamp(10)));
    // Skipped by skip_serializing_if: the stored value stays.
    assert_eq!(
        stored.fields["note"],
        Field::encrypted(FieldValue::String("secret".into()))
    );
    assert_eq!(stored.get("server_only"), Some(&FieldValue::Int64(5)));
}

#[test]
fn update_record_refuses_another_type_and_leaves_the_record_unchanged_on_error() {
    let mut other = Record::new(id("x"), "Contact").with("title", "keep");
    let before = other.clone();
    let err = typed::update_record(&mut other, &Task::default()).unwrap_err();
    assert!(matches!(err, TypedError::WrongRecordType { .. }));
    assert_eq!(other, before);

    #[derive(Serialize, Deserialize)]
    struct Partial {
        title: String,
        count: u64,
    }
    impl RecordType for Partial {
        const RECORD_TYPE: &'static str = "Partial";
    }
    let mut stored = Record::new(id("p"), "Partial").with("title", "keep");
    let before = stored.clone();
    let bad = Partial {
        title: "changed".into(),
        count: u64::MAX,
    };
    assert!(typed::update_record(&mut stored, &bad).is_err());
    assert_eq!(stored, before, "a failed update writes nothing");
}

// ---- errors, one test per variant ----------------------------------------------------------

#[test]
fn a_value_that_is_not_a_struct_is_not_a_struct() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Pair(i64, i64);
    impl RecordType for Pair {
        const RECORD_TYPE: &'static str = "Pair";
    }
    let err = typed::to_record(id("p"), &Pair(1, 2)).unwrap_err();
    assert_eq!(
        err,
        TypedError::NotAStruct {
            shape: "the tuple struct Pair".into()
        }
    );
    let err = typed::from_record::<Pair>(&Record::new(id("p"), "Pair")).unwrap_err();
    assert!(matches!(err, TypedError::NotAStruct { .. }), "{err:?}");
}

#[test]
fn shapes_without_a_cloudkit_type_are_unsupported_and_named() {
    #[derive(Serialize, Deserialize, Debug, Default)]
    struct Address {
        street: String,
    }
    #[derive(Serialize, Deserialize, Debug)]
    enum Shape {
        Circle(f64),
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct Reference {
        record_name: String,
        weight: i64,
    }

    macro_rules! refused {
        ($ty:ty, $value:expr, $field:expr, $shape:expr) => {{
            #[derive(Serialize, Deserialize, Debug)]
            struct Holder {
                value: $ty,
            }
            impl RecordType for Holder {
                const RECORD_TYPE: &'static str = "Holder";
            }
            let err = typed::to_record(id("h"), &Holder { value: $value }).unwrap_err();
            match &err {
                TypedError::UnsupportedShape { field, shape } => {
                    assert_eq!(field, $field);
                    assert!(
                        shape.contains($shape),
                        "{shape:?} should mention {:?}",
                        $shape
                    );
                }
                other => panic!("expected UnsupportedShape, got {other:?}"),
            }
            // The message names the field and the shape.
            let message = err.to_string();
            assert!(
                message.contains($field) && message.contains($shape),
                "{message}"
            );
        }};
    }

    refused!(Address, Address::default(), "value", "struct Address");
    refused!(
        BTreeMap<String, i64>,
        BTreeMap::from([("a".to_owned(), 1)]),
        "value",
        "a map"
    );
    refused!((i64, i64), (1, 2), "value", "a tuple");
    refused!((), (), "value", "()");
    refused!(
        Shape,
        Shape::Circle(1.0),
        "value",
        "Shape::Circle with data"
    );
    refused!(
        Vec<Vec<String>>,
        vec![vec![], vec!["a".into()]],
        "value[0]",
        "a list inside a list"
    );
    refused!(
        Vec<Option<i64>>,
        vec![Some(1), None],
        "value[1]",
        "None inside a list"
    );
    refused!(
        Reference,
        Reference {
            record_name: "r".into(),
            weight: 1,
        },
        "value",
        "not skysync_model::Reference"
    );
}

#[test]
fn reading_a_shape_without_a_cloudkit_type_is_unsupported() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Address {
        street: String,
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct Holder {
        home: Address,
    }
    impl RecordType for Holder {
        const RECORD_TYPE: &'static str = "Holder";
    }
    let record = Record::new(id("h"), "Holder").with("home", "1 Infinite Loop");
    let err = typed::from_record::<Holder>(&record).unwrap_err();
    assert_eq!(
        err,
        TypedError::UnsupportedShape {
            field: "home".into(),
            shape: "the struct Address".into()
        }
    );
}

#[test]
fn integers_out_of_range_are_refused_both_ways() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Counts {
        total: u64,
        small: u8,
        unsigned: Vec<u32>,
    }
    impl RecordType for Counts {
        const RECORD_TYPE: &'static str = "Counts";
    }
    let ok = Counts {
        total: i64::MAX as u64,
        small: 1,
        unsigned: vec![],
    };
    assert!(typed::to_record(id("c"), &ok).is_ok());

    let too_big = Counts {
        total: i64::MAX as u64 + 1,
        ..ok
    };
    assert_eq!(
        typed::to_record(id("c"), &too_big).unwrap_err(),
        TypedError::IntegerOutOfRange {
            field: "total".into(),
            value: "9223372036854775808".into(),
            target: "INT64".into(),
        }
    );

    let record = Record::new(id("c"), "Counts")
        .with("total", 1_i64)
        .with("small", 300_i64)
        .with("unsigned", FieldValue::Int64List(vec![]));
    let err = typed::from_record::<Counts>(&record).unwrap_err();
    assert_eq!(
        err,
        TypedError::IntegerOutOfRange {
            field: "small".into(),
            value: "300".into(),
            target: "u8".into(),
        }
    );

    let record = Record::new(id("c"), "Counts")
        .with("total", 1_i64)
        .with("small", 1_i64)
        .with("unsigned", FieldValue::Int64List(vec![4, -1]));
    let err = typed::from_record::<Counts>(&record).unwrap_err();
    assert!(
        matches!(&err, TypedError::IntegerOutOfRange { field, value, .. } if field == "unsigned[1]" && value == "-1"),
        "{err:?}"
    );
}

#[test]
fn nan_and_infinity_are_refused() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Reading {
        value: f64,
        history: Vec<f32>,
        place: Option<Location>,
    }
    impl RecordType for Reading {
        const RECORD_TYPE: &'static str = "Reading";
    }
    let err = typed::to_record(
        id("r"),
        &Reading {
            value: f64::NAN,
            history: vec![],
            place: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, TypedError::NonFiniteDouble { field, value } if field == "value" && value.is_nan()),
        "{err:?}"
    );

    let err = typed::to_record(
        id("r"),
        &Reading {
            value: 1.0,
            history: vec![1.0, f32::INFINITY],
            place: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, TypedError::NonFiniteDouble { field, .. } if field == "history[1]"),
        "{err:?}"
    );

    // Inside a Location too: JSON would turn the NaN into null, i.e. silently into `None`.
    let mut place = location(1.0);
    place.altitude = Some(f64::NAN);
    let err = typed::to_record(
        id("r"),
        &Reading {
            value: 1.0,
            history: vec![],
            place: Some(place),
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, TypedError::NonFiniteDouble { field, .. } if field == "place.altitude"),
        "{err:?}"
    );
}

#[test]
fn a_list_of_mixed_types_is_refused() {
    #[derive(Serialize, Deserialize, Debug)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct Holder {
        values: Vec<Either>,
    }
    impl RecordType for Holder {
        const RECORD_TYPE: &'static str = "Holder";
    }
    let err = typed::to_record(
        id("m"),
        &Holder {
            values: vec![Either::Text("a".into()), Either::Number(1)],
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        TypedError::MixedList {
            field: "values".into(),
            first: "STRING",
            other: "INT64",
        }
    );
}

#[test]
fn a_record_of_another_type_is_refused() {
    let record = Record::new(id("x"), "Contact").with("title", "x");
    assert_eq!(
        typed::from_record::<Task>(&record).unwrap_err(),
        TypedError::WrongRecordType {
            expected: "Task",
            found: "Contact".into(),
        }
    );
}

#[test]
fn a_missing_or_cleared_required_field_is_named() {
    let record = Record::new(id("t"), "Task").with("priority", 1_i64);
    assert_eq!(
        typed::from_record::<Task>(&record).unwrap_err(),
        TypedError::MissingField {
            field: "title".into()
        }
    );
    let mut cleared = record;
    cleared.clear("title");
    assert_eq!(
        typed::from_record::<Task>(&cleared).unwrap_err(),
        TypedError::MissingField {
            field: "title".into()
        }
    );
}

#[test]
fn a_field_of_the_wrong_cloudkit_type_is_named() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Typed {
        #[serde(default)]
        count: Option<i64>,
        #[serde(default)]
        ratio: Option<f64>,
        #[serde(default)]
        when: Option<Timestamp>,
        #[serde(default)]
        tags: Option<Vec<String>>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        link: Option<Reference>,
        #[serde(default)]
        blob: Option<Bytes>,
    }
    impl RecordType for Typed {
        const RECORD_TYPE: &'static str = "Typed";
    }
    let cases: Vec<(&str, FieldValue, &str, &str)> = vec![
        ("count", FieldValue::String("12".into()), "INT64", "STRING"),
        ("count", FieldValue::Timestamp(12), "INT64", "TIMESTAMP"),
        ("ratio", FieldValue::Int64(1), "DOUBLE", "INT64"),
        ("when", FieldValue::Int64(1), "TIMESTAMP", "INT64"),
        (
            "tags",
            FieldValue::String("a".into()),
            "a list (*_LIST)",
            "STRING",
        ),
        (
            "flag",
            FieldValue::Double(1.0),
            "INT64 (0 or 1, a boolean)",
            "DOUBLE",
        ),
        (
            "link",
            FieldValue::String("r".into()),
            "REFERENCE",
            "STRING",
        ),
        ("blob", FieldValue::String("AAEC".into()), "BYTES", "STRING"),
    ];
    for (field, value, expected, found) in cases {
        let record = Record::new(id("w"), "Typed").with(field, value);
        assert_eq!(
            typed::from_record::<Typed>(&record).unwrap_err(),
            TypedError::WrongFieldType {
                field: field.into(),
                expected,
                found,
            },
            "field {field}"
        );
    }

    // A list element is named by its index.
    let record = Record::new(id("w"), "Lists")
        .with("tags", vec!["a".to_owned()])
        .with("scores", FieldValue::StringList(vec!["1".into()]))
        .with("seen", FieldValue::TimestampList(vec![]));
    assert_eq!(
        typed::from_record::<Lists>(&record).unwrap_err(),
        TypedError::WrongFieldType {
            field: "scores[0]".into(),
            expected: "INT64",
            found: "STRING",
        }
    );
}

#[test]
fn unknown_fields_are_ignored_unless_the_struct_denies_them() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        title: String,
    }
    impl RecordType for Strict {
        const RECORD_TYPE: &'static str = "Task";
    }
    let mut record = Record::new(id("u"), "Task")
        .with("title", "x")
        .with("added_later", 3_i64);
    assert_eq!(
        typed::from_record::<Task>(&record).unwrap().title,
        "x",
        "lenient by default"
    );
    assert_eq!(
        typed::from_record::<Strict>(&record).unwrap_err(),
        TypedError::UnknownField {
            field: "added_later".into()
        }
    );
    // A cleared field holds no data: even a strict struct does not see it.
    record.clear("added_later");
    assert_eq!(
        typed::from_record::<Strict>(&record).unwrap(),
        Strict { title: "x".into() }
    );
}

#[test]
fn values_that_fit_the_type_but_not_the_rust_type_are_invalid() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Holder {
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        mood: Option<Mood>,
        #[serde(default)]
        letter: Option<char>,
    }
    impl RecordType for Holder {
        const RECORD_TYPE: &'static str = "Holder";
    }
    for (field, value, mentions) in [
        ("flag", FieldValue::Int64(2), "not a boolean"),
        ("mood", FieldValue::String("Angry".into()), "Angry"),
        ("letter", FieldValue::String("ab".into()), "ab"),
    ] {
        let record = Record::new(id("i"), "Holder").with(field, value);
        let err = typed::from_record::<Holder>(&record).unwrap_err();
        match &err {
            TypedError::InvalidValue { field: f, reason } => {
                assert_eq!(f, field);
                assert!(reason.contains(mentions), "{reason}");
            }
            other => panic!("field {field}: expected InvalidValue, got {other:?}"),
        }
    }
}

#[test]
fn an_error_from_the_apps_own_impls_is_an_invalid_value_of_its_field() {
    /// A name that must not be empty, checked both ways.
    #[derive(Debug)]
    struct Name(String);
    impl Serialize for Name {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0.is_empty() {
                return Err(serde::ser::Error::custom("a name cannot be empty"));
            }
            s.serialize_str(&self.0)
        }
    }
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            if s.is_empty() {
                return Err(serde::de::Error::custom("a name cannot be empty"));
            }
            Ok(Name(s))
        }
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct Holder {
        names: Vec<Name>,
    }
    impl RecordType for Holder {
        const RECORD_TYPE: &'static str = "Holder";
    }
    let expected = |field: &str| TypedError::InvalidValue {
        field: field.into(),
        reason: "a name cannot be empty".into(),
    };
    let bad = Holder {
        names: vec![Name("a".into()), Name(String::new())],
    };
    assert_eq!(
        typed::to_record(id("n"), &bad).unwrap_err(),
        expected("names[1]")
    );
    let record = Record::new(id("n"), "Holder").with("names", vec![String::new()]);
    assert_eq!(
        typed::from_record::<Holder>(&record).unwrap_err(),
        expected("names[0]")
    );
}

// ---- serde attributes ----------------------------------------------------------------------

#[test]
fn serde_rename_all_and_newtypes_work_as_serde_users_expect() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Profile {
        display_name: String,
        #[serde(rename = "age_in_years")]
        age: u8,
        home_town: Option<String>,
    }
    impl RecordType for Profile {
        const RECORD_TYPE: &'static str = "Profile";
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapped(Profile);
    impl RecordType for Wrapped {
        const RECORD_TYPE: &'static str = "Profile";
    }
    let profile = Profile {
        display_name: "Mei".into(),
        age: 30,
        home_town: None,
    };
    let record = typed::to_record(id("p"), &profile).unwrap();
    let names: Vec<&str> = record.fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["age_in_years", "displayName", "homeTown"]);

    // A newtype around the struct is the struct.
    let wrapped = typed::to_record(id("p"), &Wrapped(profile)).unwrap();
    assert_eq!(wrapped, record);
    let back: Wrapped = typed::from_record(&record).unwrap();
    assert_eq!(back.0.display_name, "Mei");
}

#[test]
fn a_top_level_map_with_string_keys_is_a_record() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(transparent)]
    struct Bag(BTreeMap<String, i64>);
    impl RecordType for Bag {
        const RECORD_TYPE: &'static str = "Bag";
    }
    let bag = Bag(BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]));
    let record = typed::to_record(id("b"), &bag).unwrap();
    assert_eq!(record.get("b"), Some(&FieldValue::Int64(2)));
    assert_eq!(typed::from_record::<Bag>(&record).unwrap(), bag);
}

#[test]
fn flattened_fields_write_and_read_except_booleans() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Audit {
        edited: Timestamp,
        editor: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Doc {
        title: String,
        #[serde(flatten)]
        audit: Audit,
    }
    impl RecordType for Doc {
        const RECORD_TYPE: &'static str = "Doc";
    }
    let doc = Doc {
        title: "t".into(),
        audit: Audit {
            edited: Timestamp(5),
            editor: "me".into(),
        },
    };
    let record = typed::to_record(id("d"), &doc).unwrap();
    assert_eq!(record.get("edited"), Some(&FieldValue::Timestamp(5)));
    assert_eq!(typed::from_record::<Doc>(&record).unwrap(), doc);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Flags {
        done: bool,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Flagged {
        #[serde(flatten)]
        flags: Flags,
    }
    impl RecordType for Flagged {
        const RECORD_TYPE: &'static str = "Flagged";
    }
    let record = typed::to_record(
        id("f"),
        &Flagged {
            flags: Flags { done: true },
        },
    )
    .unwrap();
    assert_eq!(record.get("done"), Some(&FieldValue::Int64(1)));
    let err = typed::from_record::<Flagged>(&record).unwrap_err();
    // serde buffers flattened fields without their CloudKit types: the INT64 1 is no bool any more.
    assert!(
        matches!(&err, TypedError::InvalidValue { reason, .. } if reason.contains("expected a boolean")),
        "{err:?}"
    );
}

// ---- property test -------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Mixed {
    name: String,
    count: i64,
    small: Option<u16>,
    done: bool,
    ratio: f64,
    at: Timestamp,
    maybe_at: Option<Timestamp>,
    data: Bytes,
    mood: Mood,
    link: Option<Reference>,
    place: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    tags: Vec<String>,
    numbers: Vec<i64>,
    flags: Vec<bool>,
    ratios: Vec<f64>,
    times: Vec<Timestamp>,
    blobs: Vec<Bytes>,
    links: Vec<Reference>,
    places: Vec<Location>,
}

impl RecordType for Mixed {
    const RECORD_TYPE: &'static str = "Mixed";
    const LIST_TYPES: &'static [(&'static str, FieldType)] = &[
        ("numbers", FieldType::Int64List),
        ("flags", FieldType::Int64List),
        ("ratios", FieldType::DoubleList),
        ("times", FieldType::TimestampList),
        ("blobs", FieldType::BytesList),
        ("links", FieldType::ReferenceList),
        ("places", FieldType::LocationList),
    ];
}

fn location_strategy() -> impl Strategy<Value = Location> {
    (
        finite(),
        finite(),
        prop::option::of(finite()),
        prop::option::of(finite()),
        prop::option::of(any::<i64>()),
    )
        .prop_map(
            |(latitude, longitude, altitude, speed, timestamp_ms)| Location {
                latitude,
                longitude,
                horizontal_accuracy: None,
                vertical_accuracy: None,
                altitude,
                speed,
                course: None,
                timestamp_ms,
            },
        )
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp)
}

fn mixed() -> impl Strategy<Value = Mixed> {
    let scalars = (
        any::<String>(),
        any::<i64>(),
        any::<Option<u16>>(),
        any::<bool>(),
        finite(),
        timestamp(),
        prop::option::of(timestamp()),
        bytes(),
        prop_oneof![Just(Mood::Calm), Just(Mood::Busy)],
        prop::option::of(reference()),
        location_strategy(),
        any::<Option<String>>(),
    );
    let lists = (
        prop::collection::vec(any::<String>(), 0..4),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::collection::vec(any::<bool>(), 0..4),
        prop::collection::vec(finite(), 0..4),
        prop::collection::vec(timestamp(), 0..4),
        prop::collection::vec(bytes(), 0..4),
        prop::collection::vec(reference(), 0..3),
        prop::collection::vec(location_strategy(), 0..3),
    );
    (scalars, lists).prop_map(
        |(
            (name, count, small, done, ratio, at, maybe_at, data, mood, link, place, note),
            (tags, numbers, flags, ratios, times, blobs, links, places),
        )| Mixed {
            name,
            count,
            small,
            done,
            ratio,
            at,
            maybe_at,
            data,
            mood,
            link,
            place,
            note,
            tags,
            numbers,
            flags,
            ratios,
            times,
            blobs,
            links,
            places,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_structs_round_trip_through_records_and_wire_json(
        value in mixed(),
        numbers_as_strings in any::<bool>(),
    ) {
        let record = typed::to_record(id("m"), &value).unwrap();
        prop_assert_eq!(record.get("note").is_some(), value.note.is_some());
        for (name, ty) in Mixed::LIST_TYPES {
            prop_assert_eq!(record.get(name).and_then(FieldValue::field_type), Some(*ty));
        }
        let parsed = through_wire(&record, numbers_as_strings);
        prop_assert_eq!(&parsed, &record);
        let back: Mixed = typed::from_record(&parsed).unwrap();
        prop_assert_eq!(back, value);
    }
}
