//! The local mirror of skysync in redb: records, merge bases, change tokens and tombstones.
//!
//! (Being written.)
