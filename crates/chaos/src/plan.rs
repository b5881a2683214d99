//! The seeded change plan: which changes each device makes, in which order.
//!
//! A plan is a pure function of [`PlanConfig`] and the device number, so the device (resuming
//! after a kill) and the harness (checking the final states) compute the same changes without
//! exchanging them. Each change writes a value that names it (`d{device}c{index}`), so any value
//! found in a final state says which change put it there.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The zone every device syncs.
pub const ZONE: &str = "Chaos";
/// The record type of a device's own records.
pub const PRIVATE_TYPE: &str = "Item";
/// The record type of the records every device edits.
pub const SHARED_TYPE: &str = "Shared";
/// The one field of a private record: the value of the change that last wrote it.
pub const VALUE_FIELD: &str = "v";

/// The share of changes made on shared records.
const SHARED_SHARE: f64 = 0.2;
/// The share of private changes that go back to the record the previous one touched, so that a
/// create is quickly edited, an edit quickly followed by a delete, a delete by a re-creation.
const HOT_SHARE: f64 = 0.15;
/// The share of changes to an existing private record that delete it.
const DELETE_SHARE: f64 = 0.25;

/// What a plan is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfig {
    /// The run's seed.
    pub seed: u64,
    /// How many devices share the changes.
    pub devices: u32,
    /// How many changes all devices make together (with `endless`: the size the record pools
    /// are drawn for).
    pub changes: u64,
    /// Whether each device's plan goes on for as long as it is asked (a soak run).
    pub endless: bool,
}

impl PlanConfig {
    /// How many changes device `device` makes (the total split as evenly as it goes; without
    /// end for an endless plan).
    pub fn changes_of(&self, device: u32) -> u64 {
        if self.endless {
            return u64::MAX;
        }
        let devices = u64::from(self.devices.max(1));
        self.changes / devices + u64::from(u64::from(device) < self.changes % devices)
    }

    /// How many private records each device has: about ten changes each.
    pub fn private_records(&self) -> u64 {
        (self.changes / u64::from(self.devices.max(1)) / 10).max(4)
    }

    /// How many shared records there are.
    pub fn shared_records(&self) -> u64 {
        (self.changes / 200).max(2)
    }

    /// The name of device `device`'s private record `k`.
    pub fn private_name(device: u32, k: u64) -> String {
        format!("p{device}-{k}")
    }

    /// The name of shared record `k`.
    pub fn shared_name(k: u64) -> String {
        format!("s{k}")
    }

    /// The field of a shared record that only device `device` writes.
    pub fn shared_field(device: u32) -> String {
        format!("f{device}")
    }
}

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Saves a private record that does not exist (first time, or again after a delete).
    Create,
    /// Saves a private record that exists, with a new value.
    Edit,
    /// Deletes a private record that exists.
    Delete,
    /// Saves a shared record naming only this device's field (created if the device has no copy).
    EditShared,
}

/// One change of a device's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The device that makes it.
    pub device: u32,
    /// Its place in the device's plan (from 0).
    pub index: u64,
    /// The record it changes.
    pub record: String,
    /// What it does.
    pub kind: ChangeKind,
}

impl Change {
    /// The value the change writes (`None` for a delete).
    pub fn value(&self) -> Option<String> {
        match self.kind {
            ChangeKind::Delete => None,
            _ => Some(value_of(self.device, self.index)),
        }
    }

    /// The field the change writes.
    pub fn field(&self) -> String {
        match self.kind {
            ChangeKind::EditShared => PlanConfig::shared_field(self.device),
            _ => VALUE_FIELD.to_owned(),
        }
    }

    /// Whether the change is on a shared record.
    pub fn is_shared(&self) -> bool {
        self.kind == ChangeKind::EditShared
    }

    /// The record type it writes.
    pub fn record_type(&self) -> &'static str {
        if self.is_shared() {
            SHARED_TYPE
        } else {
            PRIVATE_TYPE
        }
    }
}

/// The value change `index` of device `device` writes.
pub fn value_of(device: u32, index: u64) -> String {
    format!("d{device}c{index}")
}

/// The change a value names, if it is one a plan writes.
pub fn parse_value(value: &str) -> Option<(u32, u64)> {
    let rest = value.strip_prefix('d')?;
    let (device, index) = rest.split_once('c')?;
    Some((device.parse().ok()?, index.parse().ok()?))
}

/// One device's plan, in order: its share of the changes, or (endless) as many as it is asked
/// for, over the same records.
#[derive(Debug)]
pub struct DevicePlan {
    device: u32,
    rng: StdRng,
    next: u64,
    limit: u64,
    private: u64,
    shared: u64,
    exists: Vec<bool>,
    last_private: Option<u64>,
}

impl DevicePlan {
    /// Device `device`'s plan.
    pub fn new(config: &PlanConfig, device: u32) -> Self {
        let limit = config.changes_of(device);
        let mixed = config.seed ^ (u64::from(device) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let private = config.private_records();
        Self {
            device,
            rng: StdRng::seed_from_u64(mixed),
            next: 0,
            limit,
            private,
            shared: config.shared_records(),
            exists: vec![false; usize::try_from(private).unwrap_or(usize::MAX)],
            last_private: None,
        }
    }

    fn draw(&mut self) -> Change {
        let index = self.next;
        self.next += 1;
        if self.rng.random_bool(SHARED_SHARE) {
            let k = self.rng.random_range(0..self.shared);
            return Change {
                device: self.device,
                index,
                record: PlanConfig::shared_name(k),
                kind: ChangeKind::EditShared,
            };
        }
        let k = match self.last_private {
            Some(last) if self.rng.random_bool(HOT_SHARE) => last,
            _ => self.rng.random_range(0..self.private),
        };
        let slot = usize::try_from(k).unwrap_or_default();
        let exists = self.exists.get(slot).copied().unwrap_or(false);
        let kind = if !exists {
            ChangeKind::Create
        } else if self.rng.random_bool(DELETE_SHARE) {
            ChangeKind::Delete
        } else {
            ChangeKind::Edit
        };
        if let Some(flag) = self.exists.get_mut(slot) {
            *flag = kind != ChangeKind::Delete;
        }
        self.last_private = Some(k);
        Change {
            device: self.device,
            index,
            record: PlanConfig::private_name(self.device, k),
            kind,
        }
    }
}

impl Iterator for DevicePlan {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        (self.next < self.limit).then(|| self.draw())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> PlanConfig {
        PlanConfig {
            seed: 7,
            devices: 3,
            changes: 1_000,
            endless: false,
        }
    }

    #[test]
    fn a_plan_is_the_same_every_time_and_differs_per_device_and_seed() {
        let a: Vec<Change> = DevicePlan::new(&config(), 0).collect();
        let again: Vec<Change> = DevicePlan::new(&config(), 0).collect();
        assert_eq!(a, again);
        let other_device: Vec<Change> = DevicePlan::new(&config(), 1).collect();
        assert_ne!(
            a.iter().map(|c| &c.record).collect::<Vec<_>>(),
            other_device.iter().map(|c| &c.record).collect::<Vec<_>>()
        );
        let other_seed: Vec<Change> = DevicePlan::new(
            &PlanConfig {
                seed: 8,
                ..config()
            },
            0,
        )
        .collect();
        assert_ne!(a, other_seed);
        // The endless plan starts with the bounded one.
        let endless = PlanConfig {
            endless: true,
            ..config()
        };
        let soak: Vec<Change> = DevicePlan::new(&endless, 0).take(a.len() + 5).collect();
        assert_eq!(a, soak[..a.len()]);
        assert_eq!(soak.len(), a.len() + 5);
    }

    #[test]
    fn the_changes_are_split_between_devices_and_mix_every_kind() {
        let config = config();
        let total: u64 = (0..3).map(|d| config.changes_of(d)).sum();
        assert_eq!(total, 1_000);
        let plan: Vec<Change> = DevicePlan::new(&config, 0).collect();
        for kind in [
            ChangeKind::Create,
            ChangeKind::Edit,
            ChangeKind::Delete,
            ChangeKind::EditShared,
        ] {
            assert!(plan.iter().any(|c| c.kind == kind), "no {kind:?}");
        }
        // A re-creation: a create of a record deleted earlier.
        let recreated = plan.iter().enumerate().any(|(i, c)| {
            c.kind == ChangeKind::Create
                && plan[..i]
                    .iter()
                    .any(|p| p.record == c.record && p.kind == ChangeKind::Delete)
        });
        assert!(recreated);
        // Creates and deletes alternate correctly per record.
        let mut exists = std::collections::BTreeMap::new();
        for c in &plan {
            let was = exists.get(&c.record).copied().unwrap_or(false);
            match c.kind {
                ChangeKind::Create => assert!(!was),
                ChangeKind::Edit | ChangeKind::Delete => assert!(was),
                ChangeKind::EditShared => {}
            }
            exists.insert(c.record.clone(), c.kind != ChangeKind::Delete);
        }
    }

    #[test]
    fn a_value_names_its_change() {
        assert_eq!(parse_value(&value_of(3, 1234)), Some((3, 1234)));
        assert_eq!(parse_value("x"), None);
        assert_eq!(parse_value("d1cx"), None);
    }
}
