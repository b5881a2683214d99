//! Conflict resolution for skysync: the ConflictResolver trait and its strategies.
//!
//! (Being written.)

mod actor;
mod compare;
mod error;
mod merge;
mod resolution;
mod resolver;
mod strategies;

pub use actor::{ConflictActor, ConflictHandle, ConflictMessage, DEFAULT_CALL_TIMEOUT};
pub use error::ConflictError;
pub use merge::{Fallback, FieldClash, FieldPick, FieldRule, ThreeWayMerge};
pub use resolution::{Conflict, ConflictCase, ParkReason, Resolution, rebase_onto, settle};
pub use resolver::{ConflictResolver, DeletePolicy, Side, Tiebreak};
pub use strategies::{
    ClientWins, Custom, EditCount, LastWriterWinsByClock, LastWriterWinsByServerTime, ServerWins,
};
