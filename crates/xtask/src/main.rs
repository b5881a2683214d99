//! `cargo xtask`: the project's tasks.
//!
//! - `cargo xtask demo`: the end-to-end demo (two devices and a dev server in one process; it
//!   fails unless they end with identical data).
//! - `cargo xtask bench [NAME]...`: the benchmarks listed in `BENCHES` (all of them without a
//!   name), in release mode, on loopback.
//! - `cargo xtask ci`: what CI runs (`.ci/run`).

use std::process::{Command, ExitCode};

/// One benchmark: which package's example to run, with which arguments, and what it measures.
struct Bench {
    name: &'static str,
    package: &'static str,
    example: &'static str,
    args: &'static [&'static str],
    measures: &'static str,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "devserver",
        package: "skysync-devserver",
        example: "modify_throughput",
        args: &["--requests", "500"],
        measures: "dev server records/modify throughput, 200-record batches on loopback",
    },
    Bench {
        name: "devserver-durable",
        package: "skysync-devserver",
        example: "modify_throughput",
        args: &["--requests", "500", "--data"],
        measures: "the same, with every request committed to a redb file before it is answered",
    },
    Bench {
        name: "store",
        package: "skysync-store",
        example: "save_bench",
        args: &[],
        measures: "durable local saves: latency with one writer, throughput with 1/8/64 writers",
    },
    Bench {
        name: "telemetry",
        package: "skysync",
        example: "telemetry_cost",
        args: &[],
        measures: "20,000 records saved and synced to an in-process dev server, telemetry off and \
                   then exporting over OTLP/HTTP, in one run",
    },
    Bench {
        name: "throttle",
        package: "skysync-throttle",
        example: "simulate",
        args: &["--all-grids"],
        measures: "pacing policies over a grid of simulated server capacities, bursts and seeds, \
                   and against a CloudKit profile (virtual time)",
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        // By its path from this crate, so that `cargo xtask ci` works from any directory of the
        // workspace (the script moves to the workspace root itself).
        Some("ci") => {
            run(Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run")))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <demo [--otlp URL] | bench [{}]... | ci>",
                BENCHES.iter().map(|b| b.name).collect::<Vec<_>>().join("|")
            );
            Err("unknown task".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the end-to-end demo (`crates/skysync/examples/demo.rs`): a dev server in-process, two
/// devices, offline edits, a conflict, a delete, a burst of 2,000 records and an outage; it fails
/// unless both devices and the server end with identical data.
/// `--otlp URL` is passed on: the demo then exports its spans and metrics over OTLP/HTTP.
fn demo(args: &[String]) -> Result<(), String> {
    run(Command::new(env!("CARGO"))
        .args(["run", "--quiet", "-p", "skysync", "--example", "demo", "--"])
        .args(args))
}

fn bench(selected: &[String]) -> Result<(), String> {
    if let Some(unknown) = selected
        .iter()
        .find(|s| !BENCHES.iter().any(|b| b.name == s.as_str()))
    {
        return Err(format!("no benchmark named `{unknown}`"));
    }
    for bench in BENCHES
        .iter()
        .filter(|b| selected.is_empty() || selected.iter().any(|s| s == b.name))
    {
        eprintln!("\n== {}: {}", bench.name, bench.measures);
        run(Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--release", "-p", bench.package])
            .args(["--example", bench.example, "--"])
            .args(bench.args))?;
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("could not start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}
