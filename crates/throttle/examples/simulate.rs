//! Compares skysync's throttle with CloudSyncSession's two policies and a naive client on the
//! same simulated server, and prints the table.
//!
//! ```text
//! cargo run -p skysync-throttle --release --example simulate -- --rate 10 --burst 20 --work 20000 --seed 1
//! ```
//!
//! Options: `--rate R` (requests per second the server sustains, default 10), `--burst B`
//! (default 20), `--work W` (requests to get accepted, default 20000), `--seed S` (default 1),
//! `--latency-ms L` (mean round trip, default 20).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use skysync_throttle::simulation::{SimConfig, compare_policies};

const USAGE: &str = "usage: simulate [--rate R] [--burst B] [--work W] [--seed S] [--latency-ms L]";

fn parse_args() -> Result<SimConfig, String> {
    let (mut rate, mut burst, mut work, mut seed) = (10.0, 20, 20_000, 1);
    let mut latency = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--rate" => rate = value.parse().map_err(|_| bad("a number"))?,
            "--burst" => burst = value.parse().map_err(|_| bad("a whole number"))?,
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
    // SimConfig::new sets max_requests from the work.
    let mut config = SimConfig::new(rate, burst, work, seed);
    if let Some(latency) = latency {
        config.server.latency = latency;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            return ExitCode::from(2);
        }
    };
    match compare_policies(&config) {
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
