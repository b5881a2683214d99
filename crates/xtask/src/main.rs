//! `cargo xtask`: the project's tasks.
//!
//! - `cargo xtask demo`: the end-to-end demo (two devices and a dev server in one process; it
//!   fails unless they end with identical data).
//! - `cargo xtask bench [NAME]...`: the benchmarks listed in `BENCHES` (all of them without a
//!   name), in release mode, on loopback.
//! - `cargo xtask ci`: what CI runs (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One benchmark: a binary of `crates/bench`, what it measures, and the goals its JSON is held to.
struct Bench {
    name: &'static str,
    args: &'static [&'static str],
    measures: &'static str,
    goals: &'static [Goal],
}

/// A goal one benchmark's report is held to.
struct Goal {
    /// What the table calls it.
    text: &'static str,
    check: Check,
}

/// How a goal reads the report.
enum Check {
    /// The number at this key is at most the bound.
    AtMost(&'static str, f64),
    /// The number at this key is at least the bound.
    AtLeast(&'static str, f64),
    /// The first key's number is at most the factor times the second's.
    RatioAtMost(&'static str, &'static str, f64),
    /// The key holds `true`.
    IsTrue(&'static str),
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "upload",
        args: &[],
        measures: "20,000 saves synced by the engine to an in-process dev server, against the same \
                   durable writes and 200-record requests made directly",
        goals: &[Goal {
            text: "ratio <= 1.15",
            check: Check::AtMost("ratio", 1.15),
        }],
    },
    Bench {
        name: "download",
        args: &[],
        measures: "100,000 records fetched by a fresh engine, against a raw loop fetching the same \
                   pages into redb; peak memory at 100k and at 10k records",
        goals: &[
            Goal {
                text: "ratio <= 1.15",
                check: Check::AtMost("ratio", 1.15),
            },
            Goal {
                text: "peak RSS <= 64 MB",
                check: Check::AtMost("peak_rss_mb", 64.0),
            },
            Goal {
                text: "RSS does not grow 10k -> 100k (<= 1.25x)",
                check: Check::RatioAtMost("peak_rss_mb", "peak_rss_mb_at_10k", 1.25),
            },
        ],
    },
    Bench {
        name: "local-writes",
        args: &[],
        measures: "durable saves: latency with one writer, throughput with 1, 8 and 64 writers",
        goals: &[
            Goal {
                text: "p99 <= 2 ms",
                check: Check::AtMost("p99_us", 2_000.0),
            },
            Goal {
                text: ">= 20,000 saves/s with 64 writers",
                check: Check::AtLeast("saves_per_s_64", 20_000.0),
            },
        ],
    },
    Bench {
        name: "backlog",
        args: &[],
        measures: "a device offline with 100,000 pending changes: a save at 0/10k/100k pending, \
                   opening the engine, peak memory, draining to the dev server",
        goals: &[
            Goal {
                text: "save at 100k <= 1.2x save at 0",
                check: Check::RatioAtMost("save_us_at_100k", "save_us_at_0", 1.2),
            },
            Goal {
                text: "open <= 200 ms",
                check: Check::AtMost("open_ms", 200.0),
            },
            Goal {
                text: "peak RSS <= 64 MB",
                check: Check::AtMost("peak_rss_mb", 64.0),
            },
        ],
    },
    Bench {
        name: "throttle",
        args: &[],
        measures: "every pacing policy over the simulation grid of server capacities, bursts and \
                   seeds, and over the CloudKit profile (virtual time)",
        goals: &[],
    },
    Bench {
        name: "convergence",
        args: &[],
        measures: "5 devices making 2,000 edits, 20% on shared records, until all are quiescent, \
                   against one device sending as many changes alone",
        goals: &[
            Goal {
                text: "converged",
                check: Check::IsTrue("converged"),
            },
            Goal {
                text: "0 lost updates",
                check: Check::AtMost("lost_updates", 0.0),
            },
            Goal {
                text: "ratio <= 1.5",
                check: Check::AtMost("ratio", 1.5),
            },
        ],
    },
    Bench {
        name: "devserver",
        args: &[],
        measures: "the dev server taking 500 records/modify requests of 200 records, in memory \
                   and committed to redb",
        goals: &[],
    },
    Bench {
        name: "telemetry",
        args: &[],
        measures: "20,000 records saved and synced with telemetry off, then exporting every span \
                   and metric over OTLP/HTTP",
        goals: &[],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        Some("sim") => sim(&args[1..]),
        // By its path from this crate, so that `cargo xtask ci` works from any directory of the
        // workspace (the script moves to the workspace root itself).
        Some("ci") => {
            run(Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run")))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <demo [--otlp URL] | bench [{}]... | chaos --kills N --seed S \
                 [--devices D] [--changes C] [--soak MINUTES] | sim --seeds N [--from S] [--devices K] \
                 [--steps M] | ci>",
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
    let chosen: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| selected.is_empty() || selected.iter().any(|s| s == b.name))
        .collect();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let report_dir = target.join("bench");
    run(Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "skysync-bench",
            "--bins",
        ])
        .current_dir(&workspace))?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for bench in chosen {
        eprintln!("\n== {}: {}", bench.name, bench.measures);
        let report_path = report_dir.join(format!("{}.json", bench.name));
        // A report left by an earlier run must not pass for this one.
        let _ = std::fs::remove_file(&report_path);
        let started = Instant::now();
        let outcome = run(Command::new(target.join("release").join(bench.name))
            .args(bench.args)
            .env("SKYSYNC_BENCH_DIR", &report_dir));
        let seconds = started.elapsed().as_secs_f64();
        let report = outcome.and_then(|()| read_report(&report_path));
        match report {
            Ok(report) => rows.extend(table_rows(bench, &report, seconds)),
            Err(e) => {
                eprintln!("{}: {e}", bench.name);
                failed.push(bench.name);
            }
        }
    }
    print_table(&rows);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("benchmarks that failed: {}", failed.join(", ")))
    }
}

/// Runs the chaos harness in release (`crates/chaos`): builds its three binaries, then runs
/// `chaos` with the arguments given, writing `target/chaos/report.json`. Fails if the run found
/// anything.
fn chaos(args: &[String]) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    run(Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "skysync-chaos",
            "--bins",
        ])
        .current_dir(&workspace))?;
    run(Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "skysync-chaos",
            "--bin",
            "chaos",
            "--",
        ])
        .args(args)
        .arg("--out")
        .arg(target.join("chaos"))
        .current_dir(&workspace))
}

/// Runs the seeded simulation in release (`crates/sim`, its `sim` binary) with the arguments given:
/// `--seeds N` seeds from `--from S`, each printed with its trace if it fails; the last line says
/// how many ran clean and for how long. Fails if any seed failed.
fn sim(args: &[String]) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    run(Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "skysync-sim",
            "--bin",
            "sim",
            "--",
        ])
        .args(args)
        .current_dir(&workspace))
}

fn read_report(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no report at {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// One line of the summary: a benchmark's measurement, or one of its goals and whether it holds.
struct Row {
    bench: &'static str,
    what: String,
    value: String,
    verdict: &'static str,
}

fn table_rows(bench: &Bench, report: &serde_json::Value, seconds: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(fields) = report.as_object() {
        for (key, value) in fields {
            // Long arrays (the throttle grid) are summarised, not spelled out.
            let shown = match value {
                serde_json::Value::Array(items) => format!("{} entries", items.len()),
                other => other.to_string(),
            };
            rows.push(Row {
                bench: bench.name,
                what: key.clone(),
                value: shown,
                verdict: "",
            });
        }
    }
    rows.push(Row {
        bench: bench.name,
        what: "wall time of the run (s)".into(),
        value: format!("{seconds:.1}"),
        verdict: if seconds < 120.0 {
            "< 2 min"
        } else {
            "OVER 2 min"
        },
    });
    for goal in bench.goals {
        let number = |key: &str| report.get(key).and_then(serde_json::Value::as_f64);
        let (value, holds) = match goal.check {
            Check::AtMost(key, bound) => (number(key), number(key).map(|v| v <= bound)),
            Check::AtLeast(key, bound) => (number(key), number(key).map(|v| v >= bound)),
            Check::RatioAtMost(a, b, factor) => {
                let ratio = number(a).zip(number(b)).map(|(a, b)| a / b);
                (ratio, ratio.map(|r| r <= factor))
            }
            Check::IsTrue(key) => {
                let v = report.get(key).and_then(serde_json::Value::as_bool);
                (v.map(f64::from), v)
            }
        };
        rows.push(Row {
            bench: bench.name,
            what: format!("goal: {}", goal.text),
            value: value.map_or_else(|| "missing".into(), |v| format!("{v:.3}")),
            verdict: match holds {
                Some(true) => "holds",
                Some(false) => "MISSED",
                None => "MISSING",
            },
        });
    }
    rows
}

#[allow(clippy::print_stdout)] // the table is this task's output
fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (b, w, v) = (
        width(|r| r.bench.len()).max(5),
        width(|r| r.what.len()).max(4),
        width(|r| r.value.len()).max(5),
    );
    println!();
    println!("{:b$}  {:w$}  {:>v$}  verdict", "bench", "what", "value");
    for r in rows {
        println!(
            "{:b$}  {:w$}  {:>v$}  {}",
            r.bench, r.what, r.value, r.verdict
        );
    }
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
