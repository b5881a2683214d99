//! `sim`: runs many seeds of the simulation and reports the ones that fail, with their traces.
//!
//! ```text
//! sim --seeds N [--from S] [--devices K] [--steps M] [--jobs J] [--show] [--log] [--no-sync-cuts]
//! ```
//!
//! Runs seeds S, S+1, …, S+N−1 (S defaults to 0) with K devices (default 3) and M steps (default
//! 40), on J threads (default: the machine's cores). Each failing seed is printed with what broke
//! and its trace; the last line says how many seeds ran clean and for how long. The exit status
//! is non-zero if any seed failed. `--show` prints every seed's trace and counts, clean or not;
//! `--log` prints a failing seed's requests too, interleaved with its steps. `--no-sync-cuts` leaves
//! out the power cuts planned at a sync while an engine works on its own, which replays seeds found
//! before those steps existed. `cargo xtask sim --seeds N` builds and runs it in release mode.

use skysync_sim::{SimConfig, SimFailure, run};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the command line asked for.
struct Options {
    seeds: u64,
    from: u64,
    jobs: usize,
    show: bool,
    log: bool,
    config: SimConfig,
}

const USAGE: &str = "usage: sim --seeds N [--from S] [--devices K] [--steps M] [--jobs J] [--show] [--log] \
     [--no-sync-cuts]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seeds: 0,
        from: 0,
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
        show: false,
        log: false,
        config: SimConfig::default(),
    };
    let mut seeds_given = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-sync-cuts" {
            options.config.cuts_during_sync = false;
            continue;
        }
        if flag == "--show" || flag == "--log" {
            options.show |= flag == "--show";
            options.log |= flag == "--log";
            continue;
        }
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, not `{value}`\n{USAGE}"))
        };
        let count = || -> Result<usize, String> {
            usize::try_from(number()?).map_err(|_| format!("{flag} is too large\n{USAGE}"))
        };
        match flag.as_str() {
            "--seeds" => {
                options.seeds = number()?;
                seeds_given = true;
            }
            "--from" => options.from = number()?,
            "--devices" => options.config.devices = count()?.max(1),
            "--steps" => options.config.steps = count()?,
            "--jobs" => options.jobs = count()?.max(1),
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    if !seeds_given {
        return Err(format!("say how many seeds to run\n{USAGE}"));
    }
    Ok(options)
}

#[allow(clippy::print_stdout)] // the summary is this tool's output
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<SimFailure>> = Mutex::new(Vec::new());
    let clean = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs {
            scope.spawn(|| {
                // Bounded: each turn takes the next of `seeds` indices, then the loop ends.
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= options.seeds {
                        return;
                    }
                    let seed = options.from + index;
                    match run(seed, &options.config) {
                        Ok(report) => {
                            if options.show {
                                eprintln!(
                                    "seed {seed}: clean; {:?}\n{}",
                                    report.stats,
                                    report.trace_text()
                                );
                            }
                            clean.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(failure) => {
                            eprintln!("{failure}\n{}", failure.trace_text());
                            if options.log {
                                eprintln!("{}", failure.log().join("\n"));
                            }
                            failures
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(failure);
                        }
                    }
                }
            });
        }
    });
    let failed: Vec<u64> = failures
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(SimFailure::seed)
        .collect();
    println!(
        "sim: {} of {} seeds (from {}) ran clean with {} devices and {} steps, in {:.1} s on {} \
         thread(s){}",
        clean.load(Ordering::SeqCst),
        options.seeds,
        options.from,
        options.config.devices,
        options.config.steps,
        started.elapsed().as_secs_f64(),
        options.jobs,
        if failed.is_empty() {
            String::new()
        } else {
            let mut sorted = failed.clone();
            sorted.sort_unstable();
            format!("; failing seeds: {sorted:?}")
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
