//! The durable outbox of skysync: pending changes, coalescing, batches and acknowledgement.
//!
//! (Being written.)
