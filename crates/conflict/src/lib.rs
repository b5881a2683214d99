//! Conflict resolution for skysync: the ConflictResolver trait and its strategies.
//!
//! (Being written.)
