//! `skysync put --fields JSON`: whatever a person types is either a record or a typed error, and a
//! record read from it survives the trip to CloudKit's wire form and back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skysync_model::{Record, ZoneId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let zone = ZoneId::new("Fuzz");
    let Ok(record) = Record::from_wire_fields_json(&zone, "r", "Note", text) else {
        return;
    };
    // What was read is what is sent: to the wire and back gives the same record (both number
    // forms CloudKit accepts).
    for numbers_as_strings in [false, true] {
        let wire = record.to_wire(numbers_as_strings);
        let again = Record::from_wire(&zone, &wire);
        assert_eq!(again.as_ref(), Ok(&record), "wire round trip changed the record");
    }
});
