//! [`ThreeWayMerge`]: field by field against the common base, with a [`Fallback`] for the fields
//! both sides changed.

use crate::compare::{self, same_field, valued};
use crate::resolution::{ParkReason, Resolution, rebase_onto};
use crate::resolver::{ConflictResolver, DeletePolicy, Side, Tiebreak, by_case, send_over};
use crate::strategies::LastWriterWinsByServerTime;
use skysync_model::{Field, FieldValue, PendingChange, Record};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Merges the two copies field by field against the base both started from, and re-sends the merge.
///
/// For each field:
/// - changed only locally: the local value;
/// - changed only on the server (or not named by the local copy): the server's value;
/// - changed on both sides to the same value: that value;
/// - changed on both sides differently: the [`Fallback`] decides, for that field alone.
///
/// "Changed" compares with the base; a missing field and [`FieldValue::Null`] both mean "no value",
/// so a field cleared on one side and unchanged on the other is cleared, and goes out as
/// `{"value": null}`. A field the local copy does not name is one this device did not touch (a
/// CloudKit `update` leaves such fields alone): to clear a field, set it to `Null`
/// ([`Record::clear`]). When the merge equals the server's copy, nothing needs sending and the
/// answer is [`Resolution::AcceptServer`]; otherwise it is [`Resolution::Send`] of the merge,
/// carrying the server's change tag. With no base (a record created here collided with one created
/// elsewhere), every field the two copies hold differently counts as changed on both sides.
///
/// **Choose it** for records several devices edit at once, which is most app data: edits to
/// different fields both survive, and quick successive edits on one device keep the second.
///
/// **What it gets wrong:** a field changed on both sides still loses one side's value to the
/// fallback; fields are merged independently, so a rule that spans fields (start before end, a
/// total matching its items) can be broken by a merge of two valid copies; and list fields are
/// whole values (two devices adding different tags to one list clash on the field; use a
/// [`Fallback::Custom`] rule to union them).
///
/// **Deletions** (default [`DeletePolicy::DeletionWins`]): the deletion wins and nothing is
/// resurrected.
///
/// # The default strategy
///
/// `ThreeWayMerge::default()` (fallback [`Fallback::ClientWins`], deletion wins) is what skysync
/// uses unless the app chooses otherwise. It loses the least work: only a field both sides changed
/// can lose a value, and there the edit being sent, the latest one this user made here, wins. Unlike
/// ordering by server time, it is right for one user's quick successive edits: the second edit's
/// changes are local changes against the base, so they are kept whatever the server stamped.
#[derive(Clone, Debug, Default)]
pub struct ThreeWayMerge {
    /// Who wins a field both sides changed differently.
    pub fallback: Fallback,
    /// What happens when one side deleted the record.
    pub on_delete: DeletePolicy,
}

impl ThreeWayMerge {
    /// A merge with this fallback and the default deletion policy ([`DeletePolicy::DeletionWins`]).
    pub fn new(fallback: Fallback) -> Self {
        Self {
            fallback,
            on_delete: DeletePolicy::default(),
        }
    }

    /// The merge of `local` and `server` against `base` (`None`: unknown), rebased onto the server's
    /// system fields; or why it had to be parked (a fallback could not decide).
    pub fn merge(
        &self,
        local: &Record,
        base: Option<&Record>,
        server: &Record,
    ) -> Result<Record, ParkReason> {
        let mut record_winner: Option<Result<Side, ParkReason>> = None;
        let names: BTreeSet<&String> = local
            .fields
            .keys()
            .chain(server.fields.keys())
            .chain(base.iter().flat_map(|b| b.fields.keys()))
            .collect();
        let mut merged = Record::new(local.id.clone(), local.record_type.clone());
        for name in names {
            let server_field = server.fields.get(name);
            let base_field = base.map(|b| b.fields.get(name));
            let chosen: Option<Field> = match local.fields.get(name) {
                // Not named locally: untouched here, so the server's value stands.
                None => server_field.cloned(),
                Some(local_field) => {
                    let changed_here = base_field.is_none_or(|b| !same_field(Some(local_field), b));
                    let changed_there = base_field.is_none_or(|b| !same_field(server_field, b));
                    if !changed_here {
                        server_field.cloned()
                    } else if !changed_there || same_field(Some(local_field), server_field) {
                        Some(local_field.clone())
                    } else {
                        let clash = FieldClash {
                            name,
                            local: valued(Some(local_field)),
                            base: base_field.and_then(valued),
                            server: valued(server_field),
                            local_record: local,
                            server_record: server,
                        };
                        match self.fallback.decide(&clash, &mut record_winner) {
                            FieldPick::Local => Some(local_field.clone()),
                            FieldPick::Server => server_field.cloned(),
                            FieldPick::Value(field) => Some(field),
                            FieldPick::Park(reason) => return Err(reason),
                        }
                    }
                }
            };
            // No value on the winning side: say so explicitly, so the clear is sent.
            let field = chosen.unwrap_or_else(|| Field::plain(FieldValue::Null));
            merged.fields.insert(name.clone(), field);
        }
        Ok(rebase_onto(merged, server))
    }
}

impl ConflictResolver for ThreeWayMerge {
    fn resolve(
        &self,
        local: &PendingChange,
        base: Option<&Record>,
        server: Option<&Record>,
    ) -> Resolution {
        by_case(local, server, self.on_delete, |local, server| {
            match self.merge(local, base, server) {
                Ok(merged) => send_over(merged, server),
                Err(reason) => Resolution::Park { reason },
            }
        })
    }
}

/// One field both sides changed to different values: what a [`Fallback`] decides on.
///
/// Each value is `None` when that side has no value for the field (missing or cleared).
#[derive(Clone, Copy, Debug)]
pub struct FieldClash<'a> {
    /// The field's name.
    pub name: &'a str,
    /// The local value.
    pub local: Option<&'a Field>,
    /// The base value (`None` also when the base is unknown).
    pub base: Option<&'a Field>,
    /// The server's value.
    pub server: Option<&'a Field>,
    /// The whole local copy.
    pub local_record: &'a Record,
    /// The whole server copy.
    pub server_record: &'a Record,
}

/// What a custom fallback rule answers for one clashing field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldPick {
    /// Keep the local value.
    Local,
    /// Keep the server's value.
    Server,
    /// Use this value instead (a union of two lists, a sum); [`FieldValue::Null`] clears the field.
    Value(Field),
    /// Park the whole change with this reason.
    Park(ParkReason),
}

/// A custom per-field rule for [`Fallback::Custom`].
#[derive(Clone)]
pub struct FieldRule(Arc<dyn Fn(&FieldClash<'_>) -> FieldPick + Send + Sync>);

impl FieldRule {
    /// A rule that calls `rule` for each clashing field.
    pub fn new(rule: impl Fn(&FieldClash<'_>) -> FieldPick + Send + Sync + 'static) -> Self {
        Self(Arc::new(rule))
    }
}

impl fmt::Debug for FieldRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FieldRule(<closure>)")
    }
}

/// Who wins a field both sides of a [`ThreeWayMerge`] changed differently. The whole-record rules
/// compare the two copies once (by time, clock or count) and give every clashing field to the
/// winner; see the strategy of the same name for what each gets wrong.
#[derive(Clone, Debug, Default)]
pub enum Fallback {
    /// The local value wins (the default: it is the edit being sent, this user's latest here).
    #[default]
    ClientWins,
    /// The server's value wins.
    ServerWins,
    /// The copy the server stamped later wins (see [`LastWriterWinsByServerTime`]).
    LastWriterWinsByServerTime,
    /// The copy with the later clock field wins (see [`crate::LastWriterWinsByClock`]).
    LastWriterWinsByClock {
        /// The clock field.
        field: String,
        /// Who wins equal clocks.
        tiebreak: Tiebreak,
    },
    /// The copy with the higher edit count wins (see [`crate::EditCount`]).
    EditCount {
        /// The edit-count field.
        field: String,
        /// Who wins equal counts.
        tiebreak: Tiebreak,
    },
    /// The app's rule decides each field.
    Custom(FieldRule),
}

impl Fallback {
    /// A custom rule from a closure.
    pub fn custom(rule: impl Fn(&FieldClash<'_>) -> FieldPick + Send + Sync + 'static) -> Self {
        Fallback::Custom(FieldRule::new(rule))
    }

    /// The pick for one clashing field. A whole-record rule compares the copies once per merge and
    /// keeps its answer in `record_winner`.
    fn decide(
        &self,
        clash: &FieldClash<'_>,
        record_winner: &mut Option<Result<Side, ParkReason>>,
    ) -> FieldPick {
        let (local, server) = (clash.local_record, clash.server_record);
        // The same order and tiebreak as the strategy of the same name.
        let ranked = |order: Result<Ordering, ParkReason>, tiebreak: &Tiebreak| {
            order.and_then(|order| tiebreak.winner(order, local, server))
        };
        let winner = match self {
            Fallback::ClientWins => Ok(Side::Local),
            Fallback::ServerWins => Ok(Side::Server),
            Fallback::Custom(FieldRule(rule)) => return rule(clash),
            Fallback::LastWriterWinsByServerTime => {
                Ok(LastWriterWinsByServerTime::winner(local, server))
            }
            Fallback::LastWriterWinsByClock { field, tiebreak } => record_winner
                .get_or_insert_with(|| {
                    ranked(compare::order_by_clock(field, local, server), tiebreak)
                })
                .clone(),
            Fallback::EditCount { field, tiebreak } => record_winner
                .get_or_insert_with(|| {
                    ranked(compare::order_by_count(field, local, server), tiebreak)
                })
                .clone(),
        };
        match winner {
            Ok(Side::Local) => FieldPick::Local,
            Ok(Side::Server) => FieldPick::Server,
            Err(reason) => FieldPick::Park(reason),
        }
    }
}
