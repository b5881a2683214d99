//! Every pacing policy over the throttling simulation's grids (`cargo xtask bench throttle`):
//! skysync's throttle, the ×2 / ×⅔ law it replaced, CloudSyncSession's two policies and a naive
//! client, each against the same simulated servers and seeds, in virtual time (nothing sleeps;
//! the same build always gives the same numbers).
//!
//! Two grids ([`skysync_throttle::simulation::run_grid`]): the standard one (capacities
//! `R` ∈ {0.05 … 20}/s × bursts `B` ∈ {1, 2, 5, 20, 50} × seeds 1–3, a 20 ms round trip) and the
//! CloudKit profile (one request per 10, 12.5 and 15 s, `retryAfter` drawn from 10–80 s,
//! growing lock-outs). Prints the same tables as the interactive tool
//! (`cargo run -p skysync-throttle --release --example simulate -- --all-grids`).
//!
//! ```text
//! cargo run -p skysync-bench --release --bin throttle
//! ```
//!
//! JSON: `cells` (standard grid) and `cloudkit_cells` (CloudKit profile), one entry per policy,
//! capacity, burst and seed: `policy`, `capacity` (`R`, requests per second), `burst`, `seed`,
//! `goodput` (accepted requests per simulated second), `goodput_of_bound` (the same as a fraction
//! of `min(R, 1/round trip)`, the most one request in flight can get), `throttled_fraction`
//! (429s over requests sent), `lockouts`, `requests`, `completed` (all its work accepted) and
//! `simulated_s`. Also `runs` (entries of both lists); `summary` and `cloudkit_summary`, per
//! policy: mean goodput as a fraction of the bound, lock-outs and unfinished runs over the grid;
//! and skysync's entries of those two at the top (`skysync_mean_goodput_of_bound`,
//! `skysync_lockouts`, and the same with `cloudkit_`) for the `cargo xtask bench` table.
#![allow(clippy::print_stdout)]

use serde_json::{Value, json};
use skysync_bench::{round, write_report};
use skysync_throttle::simulation::{Grid, GridSpec, SkysyncPolicy, run_grid};
use std::error::Error;

/// One entry per policy, capacity, burst and seed of `grid`.
fn cells(grid: &Grid) -> Vec<Value> {
    let mut out = Vec::new();
    for cell in &grid.cells {
        for (seed, row) in grid.spec.seeds.iter().zip(&cell.runs) {
            out.push(json!({
                "policy": cell.policy,
                "capacity": cell.rate,
                "burst": cell.burst,
                "seed": seed,
                "goodput": round(row.goodput, 5),
                "goodput_of_bound": round(row.goodput_of_bound(), 4),
                "throttled_fraction": round(row.throttled_fraction, 5),
                "lockouts": row.lockouts,
                "requests": row.requests,
                "completed": row.completed,
                "simulated_s": round(row.elapsed.as_secs_f64(), 1),
            }));
        }
    }
    out
}

/// Per policy over `grid`, in table order: mean goodput as a fraction of the bound, lock-outs,
/// unfinished runs.
fn summary(grid: &Grid) -> Vec<Value> {
    let mut policies: Vec<&str> = Vec::new();
    for cell in &grid.cells {
        if !policies.contains(&cell.policy.as_str()) {
            policies.push(&cell.policy);
        }
    }
    policies
        .into_iter()
        .map(|policy| {
            let rows: Vec<_> = grid
                .cells
                .iter()
                .filter(|c| c.policy == policy)
                .flat_map(|c| &c.runs)
                .collect();
            let n = rows.len().max(1) as f64;
            let mean = rows.iter().map(|r| r.goodput_of_bound()).sum::<f64>() / n;
            let lockouts: u64 = rows.iter().map(|r| r.lockouts).sum();
            let unfinished = rows.iter().filter(|r| !r.completed).count();
            json!({
                "policy": policy,
                "mean_goodput_of_bound": round(mean, 4),
                "lockouts": lockouts,
                "unfinished_runs": unfinished,
            })
        })
        .collect()
}

/// The number at `key` of skysync's entry of a summary.
fn skysync(summary: &[Value], key: &str) -> Value {
    summary
        .iter()
        .find(|entry| entry["policy"] == SkysyncPolicy::NAME)
        .map_or(Value::Null, |entry| entry[key].clone())
}

fn main() -> Result<(), Box<dyn Error>> {
    let standard = run_grid(&GridSpec::standard())?;
    print!("{standard}");
    println!();
    let cloudkit = run_grid(&GridSpec::cloudkit())?;
    print!("{cloudkit}");
    println!();
    let cells_standard = cells(&standard);
    let cells_cloudkit = cells(&cloudkit);
    let summary_standard = summary(&standard);
    let summary_cloudkit = summary(&cloudkit);
    let report = json!({
        "runs": cells_standard.len() + cells_cloudkit.len(),
        "skysync_mean_goodput_of_bound": skysync(&summary_standard, "mean_goodput_of_bound"),
        "skysync_lockouts": skysync(&summary_standard, "lockouts"),
        "skysync_cloudkit_mean_goodput_of_bound":
            skysync(&summary_cloudkit, "mean_goodput_of_bound"),
        "skysync_cloudkit_lockouts": skysync(&summary_cloudkit, "lockouts"),
        "summary": summary_standard,
        "cloudkit_summary": summary_cloudkit,
        "cells": cells_standard,
        "cloudkit_cells": cells_cloudkit,
    });
    write_report("throttle", &report)?;
    Ok(())
}
