//! Conflict resolution for skysync: the [`ConflictResolver`] trait and its strategies.
//!
//! Two devices edit the same record; CloudKit answers the second with `CONFLICT` and the server's
//! copy. A resolver sees the three copies that matter — the **local** change, the **base** (the last
//! server copy both sides started from, `None` when unknown) and the **server**'s current copy
//! (`None` when the server deleted the record) — and answers a [`Resolution`]:
//!
//! - [`Resolution::Send`]: send this record; it carries the server's change tag and system fields;
//! - [`Resolution::SendDelete`]: send the local delete with the server's change tag;
//! - [`Resolution::AcceptServer`]: drop the local change, the server's copy (or deletion) stands;
//! - [`Resolution::Recreate`] / [`Resolution::Restore`]: bring back a record one side deleted, by
//!   name, so that nothing is ever resurrected silently;
//! - [`Resolution::Park`]: keep the change aside, visibly, with a [`ParkReason`].
//!
//! The session calls [`settle`] (or the [`ConflictActor`] through a [`ConflictHandle`]), which runs
//! the resolver, refuses an answer that does not suit the kind of conflict ([`ConflictCase`]) and
//! rebases every re-sent record onto the server copy ([`rebase_onto`]).
//!
//! # Strategies
//!
//! | strategy | the winner | choose it when |
//! |---|---|---|
//! | [`ThreeWayMerge`] (default) | per field: the side that changed it; the [`Fallback`] if both did | several devices edit the same records |
//! | [`ServerWins`] | the server's copy | the server owns the data |
//! | [`ClientWins`] | the local copy | only this device really edits it |
//! | [`LastWriterWinsByServerTime`] | the later server stamp | matching another client; it loses quick successive edits |
//! | [`LastWriterWinsByClock`] | the later clock field, then a deterministic [`Tiebreak`] | the latest edit by device time should win |
//! | [`EditCount`] | the higher edit count, then a [`Tiebreak`] | the more worked-on copy should win |
//! | [`Custom`] | whatever the closure says | the record has its own merge rules |
//!
//! Each strategy's documentation says when to choose it and what it gets wrong. Deletions against
//! edits follow each strategy's [`DeletePolicy`]: the deletion wins by default, except that
//! [`ServerWins`] and [`ClientWins`] side with their side (restoring or re-creating the record, by
//! name).
//!
//! The default, `ThreeWayMerge::default()`, merges field by field with a client-wins fallback: only
//! a field both sides changed can lose a value, and one user's quick successive edits keep the
//! second (see [`ThreeWayMerge`]).
//!
//! # Explicit nulls
//!
//! [`skysync_model::FieldValue::Null`] is a cleared field. Resolvers keep it, merges produce it for
//! a field cleared on one side and unchanged on the other, and it goes out as `{"value": null}`, so
//! the server clears the field too. A field left out of the local copy is one this device did not
//! touch.
//!
//! # Example
//!
//! Another device changed the body; this device changed the title from the same base. The default
//! strategy keeps both edits and re-sends over the server's change tag:
//!
//! ```
//! use skysync_conflict::{Resolution, ThreeWayMerge, settle};
//! use skysync_model::{ChangeTag, PendingChange, Record, RecordId, SystemFields, ZoneId};
//!
//! let tagged = |record: Record, tag: &str| Record {
//!     system: Some(SystemFields {
//!         change_tag: ChangeTag(tag.into()),
//!         created: None,
//!         modified: None,
//!         deleted: false,
//!     }),
//!     ..record
//! };
//! let id = RecordId::new(ZoneId::new("Notes"), "n1");
//! let base = tagged(Record::new(id.clone(), "Note").with("title", "Draft").with("body", "Hi"), "t1");
//! let server = tagged(base.clone().with("body", "Hi there"), "t2");
//! let mut mine = base.clone().with("title", "Groceries");
//! mine.clear("due"); // an explicit clear travels too
//!
//! let answer = settle(
//!     &ThreeWayMerge::default(),
//!     &PendingChange::Save(mine),
//!     Some(&base),
//!     Some(&server),
//! )
//! .unwrap();
//! let Resolution::Send(merged) = answer else { panic!("expected a merge to send") };
//! assert_eq!(merged.get("title"), Some(&"Groceries".into()));
//! assert_eq!(merged.get("body"), Some(&"Hi there".into()));
//! assert_eq!(merged.change_tag(), Some(&ChangeTag("t2".into())));
//! let wire = serde_json::to_string(&merged.to_wire(false)).unwrap();
//! assert!(wire.contains(r#""due":{"value":null}"#));
//! ```
//!
//! The same resolver behind its actor, as the session uses it:
//!
//! ```
//! # use skysync_conflict::{ConflictHandle, Resolution, ServerWins};
//! # use skysync_model::{ChangeTag, PendingChange, Record, RecordId, SystemFields, ZoneId};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skysync_conflict::ConflictError> {
//! let id = RecordId::new(ZoneId::new("Notes"), "n1");
//! let mut server = Record::new(id.clone(), "Note").with("title", "Theirs");
//! server.system = Some(SystemFields {
//!     change_tag: ChangeTag("t2".into()),
//!     created: None,
//!     modified: None,
//!     deleted: false,
//! });
//! let (conflicts, join) = ConflictHandle::spawn(ServerWins::default()).await?;
//! // This device deleted the record; the server's copy was edited: ServerWins restores it, by name.
//! let delete = PendingChange::Delete { id, change_tag: Some(ChangeTag("t1".into())) };
//! let answer = conflicts.resolve(delete, None, Some(server)).await?;
//! assert_eq!(answer, Resolution::Restore);
//! conflicts.stop();
//! let _ = join.await;
//! # Ok(())
//! # }
//! ```

mod actor;
mod compare;
mod error;
mod merge;
mod resolution;
mod resolver;
mod strategies;

pub use actor::{
    ConflictActor, ConflictHandle, ConflictMessage, ConflictSpec, DEFAULT_CALL_TIMEOUT,
};
pub use error::ConflictError;
pub use merge::{Fallback, FieldClash, FieldPick, FieldRule, ThreeWayMerge};
pub use resolution::{Conflict, ConflictCase, ParkReason, Resolution, rebase_onto, settle};
pub use resolver::{ConflictResolver, DeletePolicy, Side, Tiebreak};
pub use strategies::{
    ClientWins, Custom, EditCount, LastWriterWinsByClock, LastWriterWinsByServerTime, ServerWins,
};
