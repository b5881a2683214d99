//! The ledger: every local change the simulation made, whether its save returned, and what the
//! final state may therefore hold. The checks after quiescence read it.
//!
//! Three kinds of records make the promises checkable:
//!
//! - **shared** (`s0`, `s1`, …, type `Shared`): every device edits them, each only its own field
//!   (`d0` for device 0, …); nobody deletes them. Field `dN` must end as device N's last save that
//!   returned, or as one of its saves after it that a power cut interrupted (they may or may not
//!   have reached the disk).
//! - **owned** (`o0-0`, `o0-1`, … for device 0, type `Owned`): only their device creates, edits and
//!   deletes them. The record must end as the device's last change that returned (its field `v`,
//!   or gone after a delete), or as one interrupted after it.
//! - **contested** (`x0`, `x1`, …, type `Contested`): every device edits its own field and any
//!   device deletes them; a deletion wins over an edit it crosses. One that was deleted (by a
//!   delete that returned) may be present at the end only if a device saved it after that delete
//!   or saved it without holding a copy (a create, which legitimately brings it back); every field
//!   holds a value its device saved; one nobody deleted ends as a shared record does.
//!
//! Values are unique (`v` and the step), so a value in the final state names the save it came from.
//!
//! One allowance: an edit is a read, a change and a save, and the engine may commit a fetched page
//! or a merge between the read and the save. The save then writes back the other devices' fields
//! as they were read, on top of the newer copy: the store takes the stale values for local edits
//! (they differ from the merge base), sends them with the newest change tag, and a later merge
//! keeps them over newer values (the client wins a field both sides changed). That is a lost
//! update the app's read-modify-write causes, since the engine has no atomic field update. When
//! the store committed anything in that window, the ledger keeps the values the save carried, and
//! another device's field may end as one of them. Edits without a commit in between are held to
//! the exact rule.

use std::collections::BTreeMap;

/// The kind of a record, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Shared,
    Owned { device: usize },
    Contested,
}

impl Kind {
    /// The record type of records of this kind.
    pub(crate) fn record_type(self) -> &'static str {
        match self {
            Kind::Shared => "Shared",
            Kind::Owned { .. } => "Owned",
            Kind::Contested => "Contested",
        }
    }
}

/// The name of shared record `k`.
pub(crate) fn shared_name(k: usize) -> String {
    format!("s{k}")
}

/// The name of device `device`'s owned record `k`.
pub(crate) fn owned_name(device: usize, k: usize) -> String {
    format!("o{device}-{k}")
}

/// The name of contested record `k`.
pub(crate) fn contested_name(k: usize) -> String {
    format!("x{k}")
}

/// The field device `device` edits on shared and contested records.
pub(crate) fn device_field(device: usize) -> String {
    format!("d{device}")
}

/// The field of owned records.
pub(crate) const OWNED_FIELD: &str = "v";

/// A record's kind, from its name; `None` for a name the simulation never uses.
pub(crate) fn kind_of(name: &str) -> Option<Kind> {
    if let Some(rest) = name.strip_prefix('s') {
        rest.parse::<usize>().ok().map(|_| Kind::Shared)
    } else if let Some(rest) = name.strip_prefix('x') {
        rest.parse::<usize>().ok().map(|_| Kind::Contested)
    } else if let Some(rest) = name.strip_prefix('o') {
        let (device, k) = rest.split_once('-')?;
        k.parse::<usize>().ok()?;
        device.parse().ok().map(|device| Kind::Owned { device })
    } else {
        None
    }
}

/// What a local change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Saved the record with this value in the device's field (or in `v`, for owned records).
    Save(String),
    /// Deleted the record.
    Delete,
}

/// One local change the simulation made.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    /// The step that made it.
    pub(crate) step: usize,
    /// The device that made it.
    pub(crate) device: usize,
    /// What it did.
    pub(crate) change: Change,
    /// Whether the save (or delete) returned `Ok` before any power cut: durable, so it must count.
    pub(crate) returned: bool,
    /// Whether the device held no copy of the record when it saved (the save is a create).
    pub(crate) blind: bool,
    /// Other devices' fields as the device read them, when the store changed between its read and
    /// its save (a fetch or a merge landed in between): the save wrote these possibly stale values
    /// back, as an app's read-modify-write does. Empty when nothing landed in between.
    pub(crate) carried: BTreeMap<String, String>,
}

/// A record as the final state holds it: its type and its non-null string fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FinalRecord {
    pub(crate) record_type: String,
    pub(crate) fields: BTreeMap<String, String>,
}

/// Every local change, by record name, in the order made.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    writes: BTreeMap<String, Vec<Write>>,
}

/// What a sequence of changes may have left, for one value: the last change that returned, or any
/// interrupted one after it (`None` for a delete, or for nothing at all when no change returned).
fn candidates<'a>(writes: impl Iterator<Item = &'a Write> + Clone) -> Vec<Option<&'a str>> {
    let last_returned = writes.clone().filter(|w| w.returned).last().map(|w| w.step);
    let mut out = Vec::new();
    if last_returned.is_none() {
        out.push(None);
    }
    for write in writes {
        let counts = match last_returned {
            Some(step) => write.step > step || (write.step == step && write.returned),
            None => true,
        };
        if counts {
            out.push(match &write.change {
                Change::Save(value) => Some(value.as_str()),
                Change::Delete => None,
            });
        }
    }
    out
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "nothing".to_owned(), |v| format!("\"{v}\""))
}

fn show_all(values: &[Option<&str>]) -> String {
    values
        .iter()
        .map(|v| show(*v))
        .collect::<Vec<_>>()
        .join(" or ")
}

impl Ledger {
    /// Notes a change.
    pub(crate) fn record(&mut self, name: &str, write: Write) {
        self.writes.entry(name.to_owned()).or_default().push(write);
    }

    /// How many changes returned, and how many a power cut interrupted.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let all = self.writes.values().flatten();
        let returned = all.clone().filter(|w| w.returned).count();
        (returned, all.count() - returned)
    }

    /// Every way `state` (the server's records, by name) breaks the promises; empty if it keeps
    /// them all.
    pub(crate) fn violations(
        &self,
        state: &BTreeMap<String, FinalRecord>,
        devices: usize,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for (name, record) in state {
            match kind_of(name) {
                None => found.push(format!("{name} is on the server, but no device wrote it")),
                Some(kind) if record.record_type != kind.record_type() => found.push(format!(
                    "{name} has type {}, not {}",
                    record.record_type,
                    kind.record_type()
                )),
                Some(_) if !self.writes.contains_key(name) => {
                    found.push(format!("{name} is on the server, but no device wrote it"));
                }
                Some(_) => {}
            }
        }
        for (name, writes) in &self.writes {
            let Some(kind) = kind_of(name) else { continue };
            let now = state.get(name);
            match kind {
                Kind::Owned { .. } => owned(name, writes, now, &mut found),
                Kind::Shared => fields_exact(name, writes, now, devices, &mut found),
                Kind::Contested => contested(name, writes, now, devices, &mut found),
            }
        }
        found
    }
}

/// An owned record ends as its device's last change that returned, or an interrupted one after it.
fn owned(name: &str, writes: &[Write], now: Option<&FinalRecord>, found: &mut Vec<String>) {
    let allowed = candidates(writes.iter());
    let actual = now.map(|r| r.fields.get(OWNED_FIELD).map(String::as_str));
    let ok = match actual {
        None => allowed.contains(&None),
        Some(value @ Some(_)) => allowed.contains(&value),
        Some(None) => false,
    };
    if !ok {
        let actual_text = match actual {
            None => "nothing".to_owned(),
            Some(value) => format!("a record holding {}", show(value)),
        };
        found.push(format!(
            "{name}: expected {} (its device's last change that returned{}), found {actual_text}",
            show_all(&allowed),
            if allowed.len() > 1 {
                ", or one a power cut interrupted after it"
            } else {
                ""
            }
        ));
    }
    if let Some(record) = now
        && let Some(stray) = record.fields.keys().find(|f| f.as_str() != OWNED_FIELD)
    {
        found.push(format!("{name} holds a field no device writes: {stray}"));
    }
}

/// Each device's field of a record nobody deleted ends as that device's last save that returned,
/// or an interrupted one after it.
fn fields_exact(
    name: &str,
    writes: &[Write],
    now: Option<&FinalRecord>,
    devices: usize,
    found: &mut Vec<String>,
) {
    for device in 0..devices {
        let field = device_field(device);
        let own = writes.iter().filter(|w| w.device == device);
        let mut allowed = candidates(own);
        for write in writes {
            if write.device != device
                && let Some(value) = write.carried.get(&field)
            {
                allowed.push(Some(value.as_str()));
            }
        }
        let actual = now.and_then(|r| r.fields.get(&field)).map(String::as_str);
        if !allowed.contains(&actual) {
            found.push(format!(
                "{name}.{field}: expected {} (device {device}'s last save that returned{}), \
                 found {}",
                show_all(&allowed),
                if allowed.len() > 1 {
                    ", or one a power cut interrupted after it"
                } else {
                    ""
                },
                show(actual)
            ));
        }
    }
    stray_fields(name, now, devices, found);
    if let Some(record) = now
        && record.fields.is_empty()
    {
        found.push(format!("{name} is on the server with no field set"));
    }
}

/// A contested record: exact while nobody deleted it; after a returned delete, present only if a
/// save could have brought it back, holding only values its devices saved.
fn contested(
    name: &str,
    writes: &[Write],
    now: Option<&FinalRecord>,
    devices: usize,
    found: &mut Vec<String>,
) {
    let deleted = writes.iter().any(|w| w.change == Change::Delete);
    if !deleted {
        fields_exact(name, writes, now, devices, found);
        return;
    }
    let Some(record) = now else { return };
    let last_delete = writes
        .iter()
        .filter(|w| w.change == Change::Delete && w.returned)
        .map(|w| w.step)
        .max();
    if let Some(deleted_at) = last_delete {
        let revived = writes
            .iter()
            .any(|w| matches!(w.change, Change::Save(_)) && (w.step > deleted_at || w.blind));
        if !revived {
            found.push(format!(
                "{name} came back: deleted at step {deleted_at} (the delete returned), and no \
                 device saved it after that or created it anew, yet it is on the server"
            ));
        }
    }
    for (field, value) in &record.fields {
        let saved_by_its_device = (0..devices).any(|device| {
            *field == device_field(device)
                && writes
                    .iter()
                    .any(|w| w.device == device && w.change == Change::Save(value.clone()))
        });
        if !saved_by_its_device && field.starts_with('d') {
            found.push(format!(
                "{name}.{field} holds \"{value}\", which its device never saved"
            ));
        }
    }
    stray_fields(name, now, devices, found);
}

fn stray_fields(name: &str, now: Option<&FinalRecord>, devices: usize, found: &mut Vec<String>) {
    if let Some(record) = now {
        for field in record.fields.keys() {
            if !(0..devices).any(|device| *field == device_field(device)) {
                found.push(format!("{name} holds a field no device writes: {field}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn save(step: usize, device: usize, value: &str, returned: bool) -> Write {
        Write {
            step,
            device,
            change: Change::Save(value.to_owned()),
            returned,
            blind: false,
            carried: BTreeMap::new(),
        }
    }

    fn delete(step: usize, device: usize, returned: bool) -> Write {
        Write {
            step,
            device,
            change: Change::Delete,
            returned,
            blind: false,
            carried: BTreeMap::new(),
        }
    }

    fn record(record_type: &str, fields: &[(&str, &str)]) -> FinalRecord {
        FinalRecord {
            record_type: record_type.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn names_say_their_kind() {
        assert_eq!(kind_of("s3"), Some(Kind::Shared));
        assert_eq!(kind_of("x0"), Some(Kind::Contested));
        assert_eq!(kind_of("o2-5"), Some(Kind::Owned { device: 2 }));
        assert_eq!(kind_of("o2"), None);
        assert_eq!(kind_of("n1"), None);
    }

    #[test]
    fn a_returned_save_must_be_there_and_an_interrupted_one_may_be() {
        let mut ledger = Ledger::default();
        ledger.record("o0-0", save(1, 0, "v1", true));
        ledger.record("o0-0", save(2, 0, "v2", false));
        let with = |v: &str| BTreeMap::from([("o0-0".to_owned(), record("Owned", &[("v", v)]))]);
        assert!(ledger.violations(&with("v1"), 1).is_empty());
        assert!(ledger.violations(&with("v2"), 1).is_empty());
        assert!(!ledger.violations(&BTreeMap::new(), 1).is_empty());
        ledger.record("o0-0", save(3, 0, "v3", true));
        assert!(!ledger.violations(&with("v1"), 1).is_empty());
        assert!(ledger.violations(&with("v3"), 1).is_empty());
    }

    #[test]
    fn a_deleted_owned_record_must_stay_gone() {
        let mut ledger = Ledger::default();
        ledger.record("o0-0", save(1, 0, "v1", true));
        ledger.record("o0-0", delete(2, 0, true));
        let back = BTreeMap::from([("o0-0".to_owned(), record("Owned", &[("v", "v1")]))]);
        assert!(!ledger.violations(&back, 1).is_empty());
        assert!(ledger.violations(&BTreeMap::new(), 1).is_empty());
    }

    #[test]
    fn shared_fields_are_checked_one_device_at_a_time() {
        let mut ledger = Ledger::default();
        ledger.record("s0", save(1, 0, "v1", true));
        ledger.record("s0", save(2, 1, "v2", true));
        let both = BTreeMap::from([(
            "s0".to_owned(),
            record("Shared", &[("d0", "v1"), ("d1", "v2")]),
        )]);
        assert!(ledger.violations(&both, 2).is_empty());
        let lost = BTreeMap::from([("s0".to_owned(), record("Shared", &[("d1", "v2")]))]);
        assert_eq!(ledger.violations(&lost, 2).len(), 1);
    }

    #[test]
    fn a_stale_value_is_allowed_only_from_a_save_that_raced_a_commit() {
        let mut ledger = Ledger::default();
        ledger.record("s0", save(1, 1, "v1", true));
        ledger.record("s0", save(2, 1, "v2", true));
        let mut racing = save(3, 0, "v3", true);
        let state = BTreeMap::from([(
            "s0".to_owned(),
            record("Shared", &[("d0", "v3"), ("d1", "v1")]),
        )]);
        ledger.record("s0", racing.clone());
        assert_eq!(ledger.violations(&state, 2).len(), 1);
        let mut ledger = Ledger::default();
        ledger.record("s0", save(1, 1, "v1", true));
        ledger.record("s0", save(2, 1, "v2", true));
        racing.carried = BTreeMap::from([("d1".to_owned(), "v1".to_owned())]);
        ledger.record("s0", racing);
        assert!(ledger.violations(&state, 2).is_empty());
    }

    #[test]
    fn a_contested_record_deleted_and_not_saved_again_must_be_gone() {
        let mut ledger = Ledger::default();
        ledger.record("x0", save(1, 0, "v1", true));
        ledger.record("x0", delete(2, 1, true));
        let back = BTreeMap::from([("x0".to_owned(), record("Contested", &[("d0", "v1")]))]);
        assert_eq!(ledger.violations(&back, 2).len(), 1);
        ledger.record("x0", save(3, 0, "v3", true));
        let again = BTreeMap::from([("x0".to_owned(), record("Contested", &[("d0", "v3")]))]);
        assert!(ledger.violations(&again, 2).is_empty());
        let forged = BTreeMap::from([("x0".to_owned(), record("Contested", &[("d0", "v9")]))]);
        assert_eq!(ledger.violations(&forged, 2).len(), 1);
    }
}
