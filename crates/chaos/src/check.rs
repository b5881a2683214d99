//! The checker: the final states (the server's view and every device's records) against the
//! plan and the journals. The rules are the crate documentation's.

use crate::plan::{Change, ChangeKind, DevicePlan, PlanConfig, VALUE_FIELD, parse_value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A final state: record name → field name → value (string fields; a cleared field is left out).
pub type FinalState = BTreeMap<String, BTreeMap<String, String>>;

/// The final states of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStates {
    /// The server's view (`/_dev/records`).
    pub server: FinalState,
    /// Each device's records after it settled, by device number.
    pub devices: Vec<FinalState>,
}

impl FinalStates {
    fn named(&self) -> impl Iterator<Item = (String, &FinalState)> {
        std::iter::once(("server".to_owned(), &self.server)).chain(
            self.devices
                .iter()
                .enumerate()
                .map(|(d, s)| (format!("device {d}"), s)),
        )
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Changes whose save had returned (journaled) whose effect is in no final state, and not
    /// replaced by the one change that may have followed it unjournaled.
    pub lost: u64,
    /// Records or values no change of the plan put where they are found.
    pub duplicated: u64,
    /// Records whose last journaled change deleted them, with no re-creation after, present in
    /// some final state.
    pub resurrected: u64,
    /// Every device's records equal the server's.
    pub converged: bool,
    /// Up to [`EXAMPLES`] descriptions of each kind of finding, to start debugging from.
    pub examples: Vec<String>,
}

/// How many examples a finding list keeps.
pub const EXAMPLES: usize = 20;

/// What a record (or a field) may look like at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Not there.
    Absent,
    /// There, with this value.
    Value(String),
}

fn outcome_of(change: &Change) -> Outcome {
    change.value().map_or(Outcome::Absent, Outcome::Value)
}

/// The journaled changes of one slot (a private record, or one device's field of a shared
/// record): the last one, and the change that may have followed it without being journaled.
#[derive(Clone, Debug, Default)]
struct Slot {
    last: Option<Change>,
    next: Option<Change>,
}

impl Slot {
    fn acceptable(&self) -> Vec<Outcome> {
        let mut out = vec![self.last.as_ref().map_or(Outcome::Absent, outcome_of)];
        out.extend(self.next.as_ref().map(outcome_of));
        out
    }
}

/// Checks the final states against the plan of `config`, given how many changes each device
/// journaled (`journaled[d]`). A device may have made one more change than it journaled (it was
/// stopped between the change and its line).
pub fn check(config: &PlanConfig, journaled: &[u64], states: &FinalStates) -> Findings {
    let mut findings = Findings::default();
    let mut examples: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut note = |kind: &'static str, text: String| {
        let list = examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(text);
        }
    };

    // Every change of the plan each device may have made, by the value it writes.
    let mut private: BTreeMap<String, Slot> = BTreeMap::new();
    let mut shared: BTreeMap<(String, String), Slot> = BTreeMap::new();
    let mut made: HashMap<String, Change> = HashMap::new();
    for (device, &count) in journaled.iter().enumerate() {
        let device = u32::try_from(device).unwrap_or(u32::MAX);
        let plan = DevicePlan::new(config, device);
        for change in plan.take(usize::try_from(count.saturating_add(1)).unwrap_or(usize::MAX)) {
            let slot = if change.is_shared() {
                shared
                    .entry((change.record.clone(), change.field()))
                    .or_default()
            } else {
                private.entry(change.record.clone()).or_default()
            };
            if change.index < count {
                slot.last = Some(change.clone());
            } else {
                slot.next = Some(change.clone());
            }
            if let Some(value) = change.value() {
                made.insert(value, change);
            }
        }
    }

    // Private records: lost, resurrected.
    for (name, slot) in &private {
        let acceptable = slot.acceptable();
        let found: Vec<(String, Outcome)> = states
            .named()
            .map(|(who, state)| {
                let outcome = match state.get(name) {
                    None => Outcome::Absent,
                    Some(fields) => Outcome::Value(
                        fields
                            .get(VALUE_FIELD)
                            .cloned()
                            .unwrap_or_else(|| "(no value)".into()),
                    ),
                };
                (who, outcome)
            })
            .collect();
        let saved_last = slot.last.as_ref().filter(|c| c.kind != ChangeKind::Delete);
        if let Some(last) = saved_last
            && !found.iter().any(|(_, o)| acceptable.contains(o))
        {
            findings.lost += 1;
            note(
                "lost",
                format!(
                    "{name}: change {} ({:?}) is in no final state; found {found:?}",
                    last.index, last.kind
                ),
            );
        }
        let deleted_last = slot
            .last
            .as_ref()
            .is_some_and(|c| c.kind == ChangeKind::Delete);
        let recreated_after = slot
            .next
            .as_ref()
            .is_some_and(|c| c.kind != ChangeKind::Delete);
        if deleted_last && !recreated_after && found.iter().any(|(_, o)| *o != Outcome::Absent) {
            findings.resurrected += 1;
            note(
                "resurrected",
                format!("{name}: deleted last, yet found {found:?}"),
            );
        }
    }

    // Shared records: each device's field.
    for ((name, field), slot) in &shared {
        let Some(last) = &slot.last else { continue };
        let acceptable = slot.acceptable();
        let found: Vec<(String, Outcome)> = states
            .named()
            .map(|(who, state)| {
                let outcome = state
                    .get(name)
                    .and_then(|fields| fields.get(field))
                    .map_or(Outcome::Absent, |v| Outcome::Value(v.clone()));
                (who, outcome)
            })
            .collect();
        if !found.iter().any(|(_, o)| acceptable.contains(o)) {
            findings.lost += 1;
            note(
                "lost",
                format!(
                    "{name}.{field}: change {} of device {} is in no final state; found {found:?}",
                    last.index, last.device
                ),
            );
        }
    }

    // Anything no change of the plan put where it is.
    let mut unexpected: BTreeSet<String> = BTreeSet::new();
    for (who, state) in states.named() {
        for (name, fields) in state {
            let known = private.contains_key(name)
                || shared.keys().any(|(shared_name, _)| shared_name == name);
            if !known {
                if unexpected.insert(format!("record {name}")) {
                    note(
                        "duplicated",
                        format!("{who}: record {name} was made by no change"),
                    );
                }
                continue;
            }
            for (field, value) in fields {
                let fits = parse_value(value)
                    .and_then(|_| made.get(value))
                    .is_some_and(|c| c.record == *name && c.field() == *field);
                if !fits && unexpected.insert(format!("{name}.{field}={value}")) {
                    note(
                        "duplicated",
                        format!("{who}: {name}.{field} = {value:?} was written there by no change"),
                    );
                }
            }
        }
    }
    findings.duplicated = unexpected.len() as u64;

    findings.converged = states.devices.iter().all(|d| *d == states.server);
    if !findings.converged {
        for (d, device) in states.devices.iter().enumerate() {
            let names: BTreeSet<&String> = device.keys().chain(states.server.keys()).collect();
            for name in names {
                let (here, there) = (device.get(name), states.server.get(name));
                if here != there {
                    note(
                        "diverged",
                        format!("device {d}: {name} is {here:?}, the server has {there:?}"),
                    );
                }
            }
        }
    }
    findings.examples = examples
        .into_iter()
        .flat_map(|(kind, list)| list.into_iter().map(move |t| format!("{kind}: {t}")))
        .collect();
    findings
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> PlanConfig {
        PlanConfig {
            seed: 3,
            devices: 2,
            changes: 400,
            endless: false,
        }
    }

    /// Makes `change` to `state`, as a device's store would.
    fn apply(state: &mut FinalState, change: &Change) {
        match change.kind {
            ChangeKind::Delete => {
                state.remove(&change.record);
            }
            ChangeKind::Create | ChangeKind::Edit => {
                state.insert(
                    change.record.clone(),
                    [(change.field(), change.value().unwrap())].into(),
                );
            }
            ChangeKind::EditShared => {
                state
                    .entry(change.record.clone())
                    .or_default()
                    .insert(change.field(), change.value().unwrap());
            }
        }
    }

    /// The state the whole plan leaves behind.
    fn expected(config: &PlanConfig) -> FinalState {
        let mut state = FinalState::new();
        for device in 0..config.devices {
            for change in DevicePlan::new(config, device) {
                apply(&mut state, &change);
            }
        }
        state
    }

    fn all_journaled(config: &PlanConfig) -> Vec<u64> {
        (0..config.devices).map(|d| config.changes_of(d)).collect()
    }

    fn everyone(state: &FinalState) -> FinalStates {
        FinalStates {
            server: state.clone(),
            devices: vec![state.clone(), state.clone()],
        }
    }

    #[test]
    fn the_plans_own_final_state_passes() {
        let config = config();
        let findings = check(
            &config,
            &all_journaled(&config),
            &everyone(&expected(&config)),
        );
        assert_eq!(
            (
                findings.lost,
                findings.duplicated,
                findings.resurrected,
                findings.converged
            ),
            (0, 0, 0, true),
            "{:#?}",
            findings.examples
        );
    }

    /// The latest change of `kind` in `plan` that is also the last change to its record (what the
    /// record ends as).
    fn last_standing(plan: &[Change], kind: ChangeKind) -> &Change {
        plan.iter()
            .rev()
            .find(|c| {
                c.kind == kind
                    && plan
                        .iter()
                        .rev()
                        .find(|o| o.record == c.record)
                        .is_some_and(|o| o.index == c.index)
            })
            .unwrap()
    }

    #[test]
    fn a_lost_edit_is_found() {
        let config = config();
        let mut state = expected(&config);
        // Put an older value back on a record whose last change is an edit.
        let plan: Vec<Change> = DevicePlan::new(&config, 0).collect();
        let last_edit = last_standing(&plan, ChangeKind::Edit);
        let older = plan
            .iter()
            .rev()
            .find(|c| {
                c.record == last_edit.record && c.index < last_edit.index && c.value().is_some()
            })
            .unwrap();
        state.insert(
            last_edit.record.clone(),
            [(VALUE_FIELD.to_owned(), older.value().unwrap())].into(),
        );
        let findings = check(&config, &all_journaled(&config), &everyone(&state));
        assert_eq!(findings.lost, 1, "{:#?}", findings.examples);
        assert_eq!((findings.duplicated, findings.resurrected), (0, 0));
        // Kept on one device only, it is not lost, but the devices did not converge.
        let mut states = everyone(&state);
        states.devices[1] = expected(&config);
        let findings = check(&config, &all_journaled(&config), &states);
        assert_eq!(findings.lost, 0);
        assert!(!findings.converged);
    }

    #[test]
    fn a_lost_shared_field_is_found() {
        let config = config();
        let mut state = expected(&config);
        let (name, fields) = state
            .iter_mut()
            .find(|(name, _)| name.starts_with('s'))
            .unwrap();
        let name = name.clone();
        fields.remove("f1");
        fields.remove("f0");
        let findings = check(&config, &all_journaled(&config), &everyone(&state));
        assert!(findings.lost >= 1, "{name}: {:#?}", findings.examples);
    }

    #[test]
    fn a_resurrected_record_is_found() {
        let config = config();
        let mut state = expected(&config);
        let plan: Vec<Change> = DevicePlan::new(&config, 1).collect();
        let deleted = last_standing(&plan, ChangeKind::Delete);
        let before = plan
            .iter()
            .rev()
            .find(|c| c.record == deleted.record && c.index < deleted.index)
            .unwrap();
        // Present on one device only: still a resurrection.
        let mut states = everyone(&state);
        states.devices[0].insert(
            deleted.record.clone(),
            [(VALUE_FIELD.to_owned(), before.value().unwrap())].into(),
        );
        let findings = check(&config, &all_journaled(&config), &states);
        assert_eq!(findings.resurrected, 1, "{:#?}", findings.examples);
        assert_eq!(findings.lost, 0);
        // Everywhere: the same single finding.
        state.insert(
            deleted.record.clone(),
            [(VALUE_FIELD.to_owned(), before.value().unwrap())].into(),
        );
        let findings = check(&config, &all_journaled(&config), &everyone(&state));
        assert_eq!(findings.resurrected, 1);
        assert!(findings.converged);
    }

    #[test]
    fn a_record_or_value_no_change_made_is_a_duplicate() {
        let config = config();
        let mut state = expected(&config);
        state.insert(
            "p0-999999".into(),
            [(VALUE_FIELD.to_owned(), "d0c1".into())].into(),
        );
        let findings = check(&config, &all_journaled(&config), &everyone(&state));
        assert_eq!(findings.duplicated, 1);
        // A change's value on another record than the one it was made to.
        let mut state = expected(&config);
        let (name, fields) = state
            .iter_mut()
            .find(|(name, _)| name.starts_with("p0-"))
            .unwrap();
        let name = name.clone();
        let value = fields.get(VALUE_FIELD).unwrap().clone();
        let (other, other_fields) = state
            .iter_mut()
            .find(|(other, _)| other.starts_with("p1-"))
            .unwrap();
        other_fields.insert(VALUE_FIELD.to_owned(), value);
        let other = other.clone();
        let findings = check(&config, &all_journaled(&config), &everyone(&state));
        assert!(findings.duplicated >= 1, "{name} -> {other}");
    }

    #[test]
    fn the_change_after_the_last_journaled_one_may_or_may_not_have_landed() {
        let config = config();
        let plan: Vec<Change> = DevicePlan::new(&config, 0).collect();
        // Journal device 0 up to just before its last change on some private record.
        let target = plan.iter().rev().find(|c| !c.is_shared()).unwrap();
        let mut journaled = all_journaled(&config);
        journaled[0] = target.index;
        let mut before = FinalState::new();
        let mut after = FinalState::new();
        for (device, &count) in journaled.iter().enumerate() {
            let device = u32::try_from(device).unwrap();
            for change in DevicePlan::new(&config, device).take(usize::try_from(count + 1).unwrap())
            {
                if change.index < count {
                    apply(&mut before, &change);
                }
                apply(&mut after, &change);
            }
        }
        for state in [&before, &after] {
            let findings = check(&config, &journaled, &everyone(state));
            assert_eq!(
                (findings.lost, findings.duplicated, findings.resurrected),
                (0, 0, 0),
                "{:#?}",
                findings.examples
            );
        }
    }
}
