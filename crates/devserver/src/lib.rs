//! A CloudKit-compatible server for skysync's tests, demos and local development.
//!
//! (Being written.)
