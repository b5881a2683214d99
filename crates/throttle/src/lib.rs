//! Pacing between CloudKit operations (placeholder while the crate is written).
