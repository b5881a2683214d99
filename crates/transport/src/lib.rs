//! The CloudKit Web Services transport of skysync: the CloudDatabase trait and its HTTP client.
//!
//! (Being written.)
