//! What a resolver answers, how an answer is checked against the conflict it settles, and the
//! rebase that makes every re-sent record carry the server's change tag.

use crate::error::ConflictError;
use crate::resolver::ConflictResolver;
pub use skysync_model::resolution::{ParkReason, Resolution};
use skysync_model::{PendingChange, Record};
use std::fmt;

/// The four kinds of conflict, by what each side did to the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConflictCase {
    /// Both sides saved the record (`CONFLICT` on an update, `EXISTS` on a create).
    BothEdited,
    /// This device saved the record, the server deleted it (`NOT_FOUND` on an update).
    DeletedOnServer,
    /// This device deleted the record, the server's copy was edited.
    DeletedLocally,
    /// Both sides deleted the record.
    BothDeleted,
}

impl ConflictCase {
    /// The kind of conflict between a local change and the server's copy (`None`: deleted).
    pub fn of(local: &PendingChange, server: Option<&Record>) -> Self {
        match (local, server) {
            (PendingChange::Save(_), Some(_)) => ConflictCase::BothEdited,
            (PendingChange::Save(_), None) => ConflictCase::DeletedOnServer,
            (PendingChange::Delete { .. }, Some(_)) => ConflictCase::DeletedLocally,
            (PendingChange::Delete { .. }, None) => ConflictCase::BothDeleted,
        }
    }

    /// The resolution kinds that can settle this kind of conflict.
    pub fn allowed(self) -> &'static str {
        match self {
            ConflictCase::BothEdited => "Send, AcceptServer, Park",
            ConflictCase::DeletedOnServer => "AcceptServer, Recreate, Park",
            ConflictCase::DeletedLocally => "SendDelete, Restore, Park",
            ConflictCase::BothDeleted => "AcceptServer, Park",
        }
    }
}

impl fmt::Display for ConflictCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictCase::BothEdited => "both-edited",
            ConflictCase::DeletedOnServer => "deleted-on-server",
            ConflictCase::DeletedLocally => "deleted-locally",
            ConflictCase::BothDeleted => "both-deleted",
        })
    }
}

/// One conflict, owned: what the conflict actor receives and what an app can keep for later.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The local change that clashed: the latest local copy to save, or a deletion.
    pub local: PendingChange,
    /// The last server copy both sides started from (the store's merge base); `None` when unknown,
    /// as for a record created here that collided with one created elsewhere (`EXISTS`).
    pub base: Option<Record>,
    /// The server's current copy; `None` when the server deleted the record.
    pub server: Option<Record>,
}

impl Conflict {
    /// The kind of conflict this is.
    pub fn case(&self) -> ConflictCase {
        ConflictCase::of(&self.local, self.server.as_ref())
    }

    /// Settles this conflict with `resolver` (see [`settle`]).
    pub fn settle_with<R: ConflictResolver + ?Sized>(
        &self,
        resolver: &R,
    ) -> Result<Resolution, ConflictError> {
        settle(
            resolver,
            &self.local,
            self.base.as_ref(),
            self.server.as_ref(),
        )
    }
}

/// `record` with the server copy's system fields (change tag, created, modified), ready to be sent
/// as an update over that copy. Identity, type and fields stay `record`'s own.
///
/// ```
/// use skysync_conflict::rebase_onto;
/// use skysync_model::{ChangeTag, Record, RecordId, SystemFields, ZoneId};
///
/// let id = RecordId::new(ZoneId::new("Notes"), "n1");
/// let mut server = Record::new(id.clone(), "Note").with("title", "theirs");
/// server.system = Some(SystemFields {
///     change_tag: ChangeTag("t7".into()),
///     created: None,
///     modified: None,
///     deleted: false,
/// });
/// let mine = Record::new(id, "Note").with("title", "mine");
/// let rebased = rebase_onto(mine, &server);
/// assert_eq!(rebased.change_tag(), Some(&ChangeTag("t7".into())));
/// assert_eq!(rebased.get("title"), Some(&"mine".into()));
/// ```
pub fn rebase_onto(mut record: Record, server: &Record) -> Record {
    record.system = server.system.clone();
    record
}

/// Runs `resolver` on one conflict and checks its answer, so that what comes out can be acted on
/// as it is. This is how the session (and the [`crate::ConflictActor`]) calls a resolver.
///
/// - The inputs must describe one record: a base or server copy of another record is
///   [`ConflictError::RecordMismatch`]; a server copy without a change tag is
///   [`ConflictError::ServerCopyWithoutChangeTag`].
/// - The answer must suit the kind of conflict ([`ConflictCase::allowed`]); otherwise
///   [`ConflictError::NotAllowed`]. In particular a deleted record only comes back through
///   [`Resolution::Recreate`] or [`Resolution::Restore`], never through `Send` or `AcceptServer`.
/// - A [`Resolution::Send`] record is rebased onto the server copy ([`rebase_onto`]), a
///   [`Resolution::SendDelete`] carries the server copy's change tag, and a
///   [`Resolution::Recreate`] record carries no system fields (it is a `create`), whatever the
///   resolver put there; a returned record with another id is [`ConflictError::WrongRecord`].
pub fn settle<R: ConflictResolver + ?Sized>(
    resolver: &R,
    local: &PendingChange,
    base: Option<&Record>,
    server: Option<&Record>,
) -> Result<Resolution, ConflictError> {
    let id = local.record_id();
    for (which, copy) in [("base", base), ("server", server)] {
        if let Some(copy) = copy
            && copy.id != *id
        {
            return Err(ConflictError::RecordMismatch {
                which,
                expected: Box::new(id.clone()),
                found: Box::new(copy.id.clone()),
            });
        }
    }
    let without_tag = || ConflictError::ServerCopyWithoutChangeTag {
        id: Box::new(id.clone()),
    };
    if server.is_some_and(|copy| copy.change_tag().is_none()) {
        return Err(without_tag());
    }
    let case = ConflictCase::of(local, server);
    let answer = resolver.resolve(local, base, server);
    let not_allowed = |answer: &Resolution| ConflictError::NotAllowed {
        id: Box::new(id.clone()),
        case,
        answered: answer.kind(),
        allowed: case.allowed(),
    };
    let check_id = |record: &Record| -> Result<(), ConflictError> {
        if record.id == *id {
            Ok(())
        } else {
            Err(ConflictError::WrongRecord {
                expected: Box::new(id.clone()),
                found: Box::new(record.id.clone()),
            })
        }
    };
    match (case, answer, server) {
        (_, park @ Resolution::Park { .. }, _) => Ok(park),
        (ConflictCase::BothEdited, Resolution::Send(record), Some(server)) => {
            check_id(&record)?;
            Ok(Resolution::Send(rebase_onto(record, server)))
        }
        (
            ConflictCase::BothEdited | ConflictCase::DeletedOnServer | ConflictCase::BothDeleted,
            Resolution::AcceptServer,
            _,
        ) => Ok(Resolution::AcceptServer),
        (ConflictCase::DeletedOnServer, Resolution::Recreate(mut record), _) => {
            check_id(&record)?;
            record.system = None;
            Ok(Resolution::Recreate(record))
        }
        (ConflictCase::DeletedLocally, Resolution::SendDelete { .. }, Some(server)) => {
            let change_tag = server.change_tag().cloned().ok_or_else(without_tag)?;
            Ok(Resolution::SendDelete { change_tag })
        }
        (ConflictCase::DeletedLocally, Resolution::Restore, _) => Ok(Resolution::Restore),
        (_, other, _) => Err(not_allowed(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::Custom;
    use skysync_model::{ChangeTag, RecordId, SystemFields, ZoneId};

    /// `settle`'s match and [`ConflictCase::allowed`] state the same rule twice (one to enforce
    /// it, one to tell the caller); this holds them to each other, every case against every kind.
    #[test]
    fn settle_accepts_exactly_the_kinds_each_case_lists_as_allowed() {
        let id = RecordId::new(ZoneId::new("Notes"), "n1");
        let mut server = Record::new(id.clone(), "Note").with("title", "theirs");
        server.system = Some(SystemFields {
            change_tag: ChangeTag("t2".into()),
            created: None,
            modified: None,
            deleted: false,
        });
        let local = Record::new(id.clone(), "Note").with("title", "mine");
        let answers = [
            Resolution::Send(local.clone()),
            Resolution::SendDelete {
                change_tag: ChangeTag("t1".into()),
            },
            Resolution::AcceptServer,
            Resolution::Recreate(local.clone()),
            Resolution::Restore,
            Resolution::Park {
                reason: ParkReason::Custom("later".into()),
            },
        ];
        let save = PendingChange::Save(local);
        let delete = PendingChange::Delete {
            id,
            change_tag: Some(ChangeTag("t1".into())),
        };
        let conflicts = [
            (&save, Some(&server)),
            (&save, None),
            (&delete, Some(&server)),
            (&delete, None),
        ];
        for (change, server) in conflicts {
            let case = ConflictCase::of(change, server);
            for answer in &answers {
                let fixed = Custom::new(
                    |_: &PendingChange, _: Option<&Record>, _: Option<&Record>| answer.clone(),
                );
                let listed = case.allowed().split(", ").any(|kind| kind == answer.kind());
                let settled = settle(&fixed, change, None, server);
                assert_eq!(
                    settled.is_ok(),
                    listed,
                    "{case}: {} gave {settled:?}",
                    answer.kind()
                );
            }
        }
    }
}
