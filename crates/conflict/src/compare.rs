//! Comparing field values and whole copies: equality that treats a missing field and an explicit
//! null alike (and a NaN as equal to itself), the orders strategies rank copies by, and the fixed
//! content order ties fall back to.

use crate::resolution::{ParkReason, rebase_onto};
use crate::resolver::Side;
use skysync_model::{Field, FieldValue, Location, Record, codec};
use std::cmp::Ordering;

/// The field as a value: `None` when it is missing or explicitly null (both mean "no value").
pub(crate) fn valued(field: Option<&Field>) -> Option<&Field> {
    field.filter(|f| f.value != FieldValue::Null)
}

/// Whether two fields hold the same value (and the same encryption flag); a missing field and an
/// explicit null are the same, and doubles compare by their bits, so a NaN equals itself.
pub(crate) fn same_field(a: Option<&Field>, b: Option<&Field>) -> bool {
    match (valued(a), valued(b)) {
        (None, None) => true,
        (Some(a), Some(b)) => a.encrypted == b.encrypted && same_value(&a.value, &b.value),
        _ => false,
    }
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn same_opt_f64(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_f64(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn same_location(a: &Location, b: &Location) -> bool {
    same_f64(a.latitude, b.latitude)
        && same_f64(a.longitude, b.longitude)
        && same_opt_f64(a.horizontal_accuracy, b.horizontal_accuracy)
        && same_opt_f64(a.vertical_accuracy, b.vertical_accuracy)
        && same_opt_f64(a.altitude, b.altitude)
        && same_opt_f64(a.speed, b.speed)
        && same_opt_f64(a.course, b.course)
        && a.timestamp_ms == b.timestamp_ms
}

fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Double(a), FieldValue::Double(b)) => same_f64(*a, *b),
        (FieldValue::DoubleList(a), FieldValue::DoubleList(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_f64(*a, *b))
        }
        (FieldValue::Location(a), FieldValue::Location(b)) => same_location(a, b),
        (FieldValue::LocationList(a), FieldValue::LocationList(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_location(a, b))
        }
        (a, b) => a == b,
    }
}

/// Whether two copies hold the same type and field values (missing and null alike).
pub(crate) fn same_content(a: &Record, b: &Record) -> bool {
    a.record_type == b.record_type
        && a.fields
            .keys()
            .chain(b.fields.keys())
            .all(|name| same_field(a.fields.get(name), b.fields.get(name)))
}

/// `local`'s fields laid over `server`'s: what the server holds after `local` is sent as an update
/// (fields `local` does not name keep the server's values), rebased onto the server copy.
pub(crate) fn overlay(local: &Record, server: &Record) -> Record {
    let mut laid = local.clone();
    for (name, field) in &server.fields {
        laid.fields
            .entry(name.clone())
            .or_insert_with(|| field.clone());
    }
    rebase_onto(laid, server)
}

/// The copy whose fields come later in a fixed order of their encoded contents; the local copy when
/// they are identical. Depends only on the pair, not on which one is local.
pub(crate) fn content_winner(local: &Record, server: &Record) -> Side {
    // Encoding a map of fields cannot fail (bincode encodes every field type); if it ever did, both
    // sides would compare as `None` and the local copy would win, which is still deterministic.
    let key = |r: &Record| codec::encode(&(&r.record_type, &r.fields)).ok();
    match key(local).cmp(&key(server)) {
        Ordering::Less => Side::Server,
        Ordering::Equal | Ordering::Greater => Side::Local,
    }
}

/// A clock reading: what [`order_by_clock`] compares.
enum Clock<'a> {
    Missing,
    Int(i64),
    Float(f64),
    Text(&'a str),
}

fn type_name(value: &FieldValue) -> &'static str {
    value.field_type().map_or("NULL", |t| t.wire_name())
}

fn clock_of<'a>(field: &str, record: &'a Record) -> Result<Clock<'a>, ParkReason> {
    Ok(match record.get(field) {
        None | Some(FieldValue::Null) => Clock::Missing,
        Some(FieldValue::Int64(n) | FieldValue::Timestamp(n)) => Clock::Int(*n),
        Some(FieldValue::Double(d)) => Clock::Float(*d),
        Some(FieldValue::String(s)) => Clock::Text(s),
        Some(other) => {
            return Err(ParkReason::UnorderableField {
                field: field.to_owned(),
                found: format!(
                    "a {} value (a clock is a TIMESTAMP, INT64, DOUBLE or STRING)",
                    type_name(other)
                ),
            });
        }
    })
}

/// How `local`'s clock field compares with `server`'s. A copy without the field is older than
/// any copy with it; integers and doubles compare as numbers, strings by their bytes (so ISO-8601
/// times sort by time); a number against a string cannot be ordered.
pub(crate) fn order_by_clock(
    field: &str,
    local: &Record,
    server: &Record,
) -> Result<Ordering, ParkReason> {
    let (l, s) = (clock_of(field, local)?, clock_of(field, server)?);
    Ok(match (l, s) {
        (Clock::Missing, Clock::Missing) => Ordering::Equal,
        (Clock::Missing, _) => Ordering::Less,
        (_, Clock::Missing) => Ordering::Greater,
        (Clock::Int(a), Clock::Int(b)) => a.cmp(&b),
        // i64 to f64 rounds beyond 2^53; clocks in ms or ns since 1970 stay well below that.
        (Clock::Int(a), Clock::Float(b)) => (a as f64).total_cmp(&b),
        (Clock::Float(a), Clock::Int(b)) => a.total_cmp(&(b as f64)),
        (Clock::Float(a), Clock::Float(b)) => a.total_cmp(&b),
        (Clock::Text(a), Clock::Text(b)) => a.cmp(b),
        (Clock::Text(_), _) | (_, Clock::Text(_)) => {
            return Err(ParkReason::UnorderableField {
                field: field.to_owned(),
                found: "a STRING against a number".to_owned(),
            });
        }
    })
}

fn count_of(field: &str, record: &Record) -> Result<i64, ParkReason> {
    match record.get(field) {
        None | Some(FieldValue::Null) => Ok(0),
        Some(FieldValue::Int64(n)) => Ok(*n),
        Some(other) => Err(ParkReason::UnorderableField {
            field: field.to_owned(),
            found: format!("a {} value (an edit count is an INT64)", type_name(other)),
        }),
    }
}

/// How `local`'s edit count compares with `server`'s; a missing or null count is 0.
pub(crate) fn order_by_count(
    field: &str,
    local: &Record,
    server: &Record,
) -> Result<Ordering, ParkReason> {
    Ok(count_of(field, local)?.cmp(&count_of(field, server)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skysync_model::{RecordId, ZoneId};

    fn note() -> Record {
        Record::new(RecordId::new(ZoneId::new("Z"), "r"), "Note")
    }

    #[test]
    fn missing_and_null_fields_are_the_same_and_nan_equals_itself() {
        let mut cleared = note().with("n", f64::NAN);
        cleared.clear("title");
        let absent = note().with("n", f64::NAN);
        assert!(same_content(&cleared, &absent));
        assert!(!same_content(&cleared, &note().with("n", 1.0)));
    }

    #[test]
    fn encryption_flag_is_part_of_a_fields_value() {
        let plain = Field::plain("x".into());
        let secret = Field::encrypted("x".into());
        assert!(!same_field(Some(&plain), Some(&secret)));
        assert!(same_field(Some(&plain), Some(&plain.clone())));
    }

    #[test]
    fn content_winner_is_the_same_whichever_side_is_local() {
        let a = note().with("title", "a");
        let b = note().with("title", "b");
        let ab = content_winner(&a, &b);
        let ba = content_winner(&b, &a);
        assert_ne!(
            ab, ba,
            "swapping sides must pick the same copy, so the side flips"
        );
    }

    #[test]
    fn clocks_order_numbers_together_and_refuse_strings_against_numbers() {
        let int = note().with("at", 5i64);
        let float = note().with("at", 5.5);
        let text = note().with("at", "2026-01-01");
        assert_eq!(order_by_clock("at", &int, &float), Ok(Ordering::Less));
        assert_eq!(order_by_clock("at", &note(), &int), Ok(Ordering::Less));
        assert!(matches!(
            order_by_clock("at", &int, &text),
            Err(ParkReason::UnorderableField { .. })
        ));
    }
}
