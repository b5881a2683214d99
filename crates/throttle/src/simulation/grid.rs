//! Every policy over a grid of capacities, bursts and seeds, in one table.

use std::fmt;
use std::time::Duration;

use super::server::ServerConfig;
use super::{PolicyRow, SimConfig, all_policies, describe_server, gap_cell, run_policy};
use crate::error::Result;

/// What a grid covers: every rate × every burst × every seed, each run with every policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// The capacities `R` (requests per second).
    pub rates: Vec<f64>,
    /// The bursts `B`.
    pub bursts: Vec<u32>,
    /// The seeds; a cell's numbers are summarised over them.
    pub seeds: Vec<u64>,
    /// The server every cell is built from (its `rate` and `burst` are replaced per cell).
    pub server: ServerConfig,
    /// Each run's work is `R · duration` requests, at least `min_work`.
    pub duration: Duration,
    /// The least work of any run.
    pub min_work: u64,
}

impl GridSpec {
    /// The standard grid: `R` ∈ {0.05, 0.1, 0.5, 1, 5, 10, 20}/s, `B` ∈ {1, 2, 5, 20, 50},
    /// seeds 1–3, the default server (20 ms round trip), an hour of work at each rate (at least
    /// 1000 requests).
    pub fn standard() -> Self {
        Self {
            rates: vec![0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 20.0],
            bursts: vec![1, 2, 5, 20, 50],
            seeds: vec![1, 2, 3],
            server: ServerConfig::default(),
            duration: Duration::from_secs(3600),
            min_work: 1000,
        }
    }

    /// The CloudKit profile ([`ServerConfig::cloudkit`]) at one request per 10, 12.5 and 15 s,
    /// seeds 1–3, 2000 requests per run (about 7 hours).
    pub fn cloudkit() -> Self {
        let server = ServerConfig::cloudkit(0.08);
        Self {
            rates: vec![1.0 / 10.0, 1.0 / 12.5, 1.0 / 15.0],
            bursts: vec![server.burst],
            seeds: vec![1, 2, 3],
            server,
            duration: Duration::from_secs(3600),
            min_work: 2000,
        }
    }

    /// The work of a run at `rate`.
    pub fn work_for(&self, rate: f64) -> u64 {
        let work = (rate * self.duration.as_secs_f64()).ceil();
        // Far below 2^53 for any sensible grid; a saturating float-to-int conversion otherwise.
        (work as u64).max(self.min_work).max(1)
    }

    /// The run of one cell and seed.
    pub fn config(&self, rate: f64, burst: u32, seed: u64) -> SimConfig {
        let server = ServerConfig {
            rate,
            burst,
            ..self.server.clone()
        };
        let work = self.work_for(rate);
        let mut config = SimConfig::with_server(server, work, seed);
        // Enough for every paced policy; a naive client is stopped here, not finished.
        config.max_requests = work.saturating_mul(20).max(10_000);
        config
    }
}

/// One policy at one `(R, B)`, over every seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    /// `R`.
    pub rate: f64,
    /// `B`.
    pub burst: u32,
    /// The policy's name.
    pub policy: String,
    /// One row per seed.
    pub runs: Vec<PolicyRow>,
}

impl GridCell {
    fn values<'a>(&'a self, of: impl Fn(&PolicyRow) -> f64 + 'a) -> impl Iterator<Item = f64> + 'a {
        self.runs.iter().map(of)
    }

    /// Mean goodput over the seeds, as a fraction of `min(R, 1/round trip)`.
    pub fn mean_goodput(&self) -> f64 {
        // A handful of seeds: the conversion is exact.
        self.values(PolicyRow::goodput_of_bound).sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// The lowest goodput over the seeds, as a fraction of `min(R, 1/round trip)`.
    pub fn min_goodput(&self) -> f64 {
        self.values(PolicyRow::goodput_of_bound)
            .fold(f64::INFINITY, f64::min)
    }

    /// Mean throttled fraction over the seeds.
    pub fn mean_throttled(&self) -> f64 {
        self.values(|row| row.throttled_fraction).sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// The highest throttled fraction over the seeds.
    pub fn max_throttled(&self) -> f64 {
        self.values(|row| row.throttled_fraction)
            .fold(0.0, f64::max)
    }

    /// Lock-outs over all seeds.
    pub fn lockouts(&self) -> u64 {
        self.runs.iter().map(|row| row.lockouts).sum()
    }

    /// The shortest gap between throttles after warm-up, over all seeds.
    pub fn min_throttle_gap(&self) -> Option<Duration> {
        self.runs
            .iter()
            .filter_map(|row| row.min_throttle_gap)
            .min()
    }

    /// How many seeds' runs got all their work done.
    pub fn completed(&self) -> usize {
        self.runs.iter().filter(|row| row.completed).count()
    }
}

/// The result of [`run_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// What was run.
    pub spec: GridSpec,
    /// One cell per `(R, B, policy)`, in rate, burst, policy order.
    pub cells: Vec<GridCell>,
}

impl Grid {
    /// The cell of `policy` at `(rate, burst)`.
    pub fn cell(&self, rate: f64, burst: u32, policy: &str) -> Option<&GridCell> {
        self.cells
            .iter()
            .find(|cell| cell.rate == rate && cell.burst == burst && cell.policy == policy)
    }
}

/// Runs every policy on every `(R, B, seed)` of `spec`.
pub fn run_grid(spec: &GridSpec) -> Result<Grid> {
    let mut cells = Vec::new();
    for &rate in &spec.rates {
        for &burst in &spec.bursts {
            let mut by_policy: Vec<GridCell> = Vec::new();
            for &seed in &spec.seeds {
                let config = spec.config(rate, burst, seed);
                for (index, policy) in all_policies(seed)?.iter_mut().enumerate() {
                    let row = run_policy(&config, policy.as_mut())?;
                    match by_policy.get_mut(index) {
                        Some(cell) => cell.runs.push(row),
                        None => by_policy.push(GridCell {
                            rate,
                            burst,
                            policy: row.policy.clone(),
                            runs: vec![row],
                        }),
                    }
                }
            }
            cells.extend(by_policy);
        }
    }
    Ok(Grid {
        spec: spec.clone(),
        cells,
    })
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = &self.spec;
        writeln!(
            f,
            "server: {}; work = max({}, R x {} s) requests; seeds {:?}",
            describe_server(&spec.server),
            spec.min_work,
            spec.duration.as_secs(),
            spec.seeds,
        )?;
        writeln!(
            f,
            "goodput as a fraction of min(R, 1/round trip), mean [lowest] over the seeds; \
             throttled as % of requests, mean [highest]; min gap = shortest time between two \
             throttles after warm-up"
        )?;
        writeln!(
            f,
            "{:>7} {:>3}  {:<34} {:>15} {:>16} {:>8} {:>8} {:>5}",
            "R/s", "B", "policy", "goodput", "throttled %", "lockouts", "min gap", "done"
        )?;
        for cell in &self.cells {
            writeln!(
                f,
                "{:>7.4} {:>3}  {:<34} {:>6.3} [{:>6.3}] {:>6.2} [{:>6.2}] {:>8} {:>8} {:>3}/{}",
                cell.rate,
                cell.burst,
                cell.policy,
                cell.mean_goodput(),
                cell.min_goodput(),
                cell.mean_throttled() * 100.0,
                cell.max_throttled() * 100.0,
                cell.lockouts(),
                gap_cell(cell.min_throttle_gap()),
                cell.completed(),
                cell.runs.len(),
            )?;
        }
        Ok(())
    }
}
