//! Compares skysync's throttle with the law it replaced, CloudSyncSession's two policies and a
//! naive client on the same simulated server, and prints the table.
//!
//! ```text
//! # one server
//! cargo run -p skysync-throttle --release --example simulate -- --rate 10 --burst 20 --work 20000 --seed 1
//! # the CloudKit profile at one request per 12.5 s
//! cargo run -p skysync-throttle --release --example simulate -- --cloudkit --rate 0.08 --work 2000
//! # every policy over R ∈ {0.05 … 20}/s × B ∈ {1, 2, 5, 20, 50} × 3 seeds, one table
//! cargo run -p skysync-throttle --release --example simulate -- --grid
//! # the CloudKit profile over three rates × 3 seeds
//! cargo run -p skysync-throttle --release --example simulate -- --grid --cloudkit
//! # both grids, one after the other (`cargo xtask bench throttle` prints the same tables
//! # and writes every cell to target/bench/throttle.json)
//! cargo run -p skysync-throttle --release --example simulate -- --all-grids
//! ```
//!
//! Options: `--rate R` (requests per second the server sustains, default 10), `--burst B`
//! (default 20), `--work W` (requests to get accepted, default 20000), `--seed S` (default 1),
//! `--latency-ms L` (mean round trip, default 20, or 1000 with `--cloudkit`), `--cloudkit` (the
//! realistic CloudKit profile), `--grid` (the whole grid; `--latency-ms` still applies), `--all-grids` (the standard grid, then
//! the CloudKit one).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use skysync_throttle::simulation::{GridSpec, ServerConfig, SimConfig, compare_policies, run_grid};

const USAGE: &str = "usage: simulate [--grid | --all-grids] [--cloudkit] [--rate R] [--burst B] [--work W] [--seed S] [--latency-ms L]";

/// What to run.
enum Task {
    One(SimConfig),
    Grids(Vec<GridSpec>),
}

fn parse_args() -> Result<Task, String> {
    let (mut rate, mut burst, mut work, mut seed) = (None, None, 20_000, 1);
    let (mut latency, mut grid, mut cloudkit, mut all_grids) = (None, false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Err(USAGE.to_owned()),
            "--grid" => {
                grid = true;
                continue;
            }
            "--cloudkit" => {
                cloudkit = true;
                continue;
            }
            "--all-grids" => {
                all_grids = true;
                continue;
            }
            _ => {}
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--rate" => rate = Some(value.parse().map_err(|_| bad("a number"))?),
            "--burst" => burst = Some(value.parse().map_err(|_| bad("a whole number"))?),
            "--work" => work = value.parse().map_err(|_| bad("a whole number"))?,
            "--seed" => seed = value.parse().map_err(|_| bad("a whole number"))?,
            "--latency-ms" => {
                latency = Some(Duration::from_millis(
                    value.parse().map_err(|_| bad("a whole number"))?,
                ))
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if all_grids {
        return Ok(Task::Grids(vec![
            GridSpec::standard(),
            GridSpec::cloudkit(),
        ]));
    }
    if grid {
        let mut spec = if cloudkit {
            GridSpec::cloudkit()
        } else {
            GridSpec::standard()
        };
        if let Some(latency) = latency {
            spec.server.latency = latency;
        }
        return Ok(Task::Grids(vec![spec]));
    }
    let mut server = if cloudkit {
        ServerConfig::cloudkit(rate.unwrap_or(0.08))
    } else {
        ServerConfig::new(rate.unwrap_or(10.0), 20)
    };
    if let Some(burst) = burst {
        server.burst = burst;
    }
    if let Some(latency) = latency {
        server.latency = latency;
    }
    // SimConfig sets max_requests and the warm-up from the work and the server.
    Ok(Task::One(SimConfig::with_server(server, work, seed)))
}

fn main() -> ExitCode {
    let task = match parse_args() {
        Ok(task) => task,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            return ExitCode::from(2);
        }
    };
    let table = match task {
        Task::One(config) => compare_policies(&config).map(|table| table.to_string()),
        Task::Grids(specs) => specs
            .iter()
            .map(|spec| run_grid(spec).map(|grid| grid.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(|tables| tables.join("\n")),
    };
    match table {
        Ok(table) => match write!(std::io::stdout().lock(), "{table}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{err}");
            ExitCode::from(2)
        }
    }
}
