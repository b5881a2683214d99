//! `cargo xtask`: the project's tasks (placeholder while the tasks are written).

fn main() {}
