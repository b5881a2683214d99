//! Value strategies shared by the model's property tests.
#![allow(dead_code)]

use proptest::prelude::*;
use skysync_model::{Reference, ReferenceAction, ZoneId};

/// Any finite `f64` (NaN and infinities have no CloudKit form).
pub fn finite() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL
}

/// A reference with or without a zone and an action.
pub fn reference() -> impl Strategy<Value = Reference> {
    (
        "[a-zA-Z0-9_-]{1,12}",
        prop::option::of("[A-Za-z]{1,8}".prop_map(ZoneId::new)),
        prop::option::of(prop_oneof![
            Just(ReferenceAction::None),
            Just(ReferenceAction::DeleteSelf),
            Just(ReferenceAction::Validate)
        ]),
    )
        .prop_map(|(record_name, zone, action)| Reference {
            record_name,
            zone,
            action,
        })
}
