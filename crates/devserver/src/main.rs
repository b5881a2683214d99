//! `skysync-devserver`: run the CloudKit-compatible dev server (being written).

fn main() {}
