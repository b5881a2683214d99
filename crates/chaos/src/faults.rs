//! The faults the harness arms on the dev server (`POST /_dev/faults`, `POST /_dev/item-faults`):
//! throttles with a short `retryAfter`, 500s and 503s, slow answers, HTML pages, dropped
//! connections, expired change tokens, and per-item errors inside `records/modify`.
//!
//! Left out on purpose: faults that park a change (item `BAD_REQUEST`, `LIMIT_EXCEEDED`) or halt
//! the engine until the app acts (`QUOTA_EXCEEDED`, authentication), since the app then decides
//! what happens to the change; and an item `CONFLICT` on a record the server does not hold, which
//! CloudKit never answers and which reads as the record having been deleted.

use crate::plan::ZONE;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Where a fault is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A request fault (`/_dev/faults`).
    Request,
    /// An item fault (`/_dev/item-faults`).
    Item,
}

impl FaultKind {
    /// The path under `/_dev/`.
    pub fn path(self) -> &'static str {
        match self {
            FaultKind::Request => "faults",
            FaultKind::Item => "item-faults",
        }
    }
}

/// A fault to arm.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Where it is armed.
    pub kind: FaultKind,
    /// Its spec as the endpoint takes it.
    pub spec: Value,
}

/// Draws a fault. `existing_shared` names shared records the server holds: only they may get an
/// item `CONFLICT` (which carries the server's copy).
pub fn draw(rng: &mut StdRng, existing_shared: &[String]) -> Fault {
    let request = |spec: Value| Fault {
        kind: FaultKind::Request,
        spec,
    };
    let item = |spec: Value| Fault {
        kind: FaultKind::Item,
        spec,
    };
    let count = rng.random_range(1..=3u32);
    match rng.random_range(0..14u32) {
        0 | 1 => request(json!({
            "operation": "records/modify", "count": count,
            "serverErrorCode": "THROTTLED", "retryAfter": 1
        })),
        2 => request(json!({
            "operation": "changes/zone", "count": count,
            "serverErrorCode": "TRY_AGAIN_LATER", "retryAfter": 1
        })),
        3 | 4 => request(json!({
            "operation": "*", "count": count, "serverErrorCode": "INTERNAL_ERROR"
        })),
        5 => request(json!({
            "operation": "records/modify", "count": count, "serverErrorCode": "ZONE_BUSY"
        })),
        6 | 7 => request(json!({
            "operation": "records/modify", "count": 1, "dropConnection": true
        })),
        8 => request(json!({
            "operation": "changes/zone", "count": 1, "dropConnection": true
        })),
        9 => request(json!({
            "operation": "*", "count": 1, "delayMs": rng.random_range(200..1_500u64)
        })),
        10 => request(json!({
            "operation": "records/*", "count": 1, "htmlBody": true
        })),
        11 => {
            let operation = if rng.random_bool(0.5) {
                "changes/zone"
            } else {
                "changes/database"
            };
            request(json!({
                "operation": operation, "count": 1, "serverErrorCode": "CHANGE_TOKEN_EXPIRED"
            }))
        }
        12 => {
            let code = if rng.random_bool(0.5) {
                json!({"serverErrorCode": "INTERNAL_ERROR"})
            } else {
                json!({"serverErrorCode": "ZONE_BUSY", "retryAfter": 1})
            };
            let mut spec = json!({"zoneName": ZONE, "count": rng.random_range(1..=5u32)});
            if let (Some(spec), Some(code)) = (spec.as_object_mut(), code.as_object()) {
                spec.extend(code.clone());
            }
            item(spec)
        }
        _ => match existing_shared {
            [] => request(json!({
                "operation": "records/modify", "count": 1, "serverErrorCode": "INTERNAL_ERROR"
            })),
            names => {
                let name = &names[rng.random_range(0..names.len())];
                item(json!({
                    "zoneName": ZONE, "recordName": name, "count": 1,
                    "serverErrorCode": "CONFLICT"
                }))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use skysync_devserver::faults::{FaultSpec, ItemFaultSpec};

    #[test]
    fn every_fault_drawn_is_one_the_dev_server_takes() {
        let mut rng = StdRng::seed_from_u64(1);
        let shared = vec!["s1".to_owned()];
        let mut conflicts = 0;
        for _ in 0..500 {
            let fault = draw(&mut rng, &shared);
            match fault.kind {
                FaultKind::Request => {
                    let spec: FaultSpec = serde_json::from_value(fault.spec.clone()).unwrap();
                    assert!(
                        skysync_devserver::faults::Faults::default()
                            .arm(spec)
                            .is_ok()
                    );
                }
                FaultKind::Item => {
                    let spec: ItemFaultSpec = serde_json::from_value(fault.spec.clone()).unwrap();
                    if spec.server_error_code.as_str() == "CONFLICT" {
                        conflicts += 1;
                        assert_eq!(spec.record_name.as_deref(), Some("s1"));
                    }
                    assert!(
                        skysync_devserver::faults::Faults::default()
                            .arm_item(spec)
                            .is_ok()
                    );
                }
            }
        }
        assert!(conflicts > 0);
        // Without a shared record on the server, no item conflict.
        for _ in 0..200 {
            let fault = draw(&mut rng, &[]);
            assert!(!fault.spec.to_string().contains("CONFLICT"));
        }
    }
}
