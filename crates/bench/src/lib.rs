//! What every benchmark shares: where its JSON goes, how peak memory is read, percentiles.
//!
//! Each benchmark is a binary of this crate (`src/bin/NAME.rs`). `cargo xtask bench [NAME]...`
//! builds them in release mode, runs each, and prints one table of what they wrote to
//! `target/bench/NAME.json` against the project's goals. A benchmark can also be run alone:
//!
//! ```text
//! cargo run -p skysync-bench --release --bin upload
//! ```
//!
//! Traffic goes only to servers on 127.0.0.1 that the benchmark starts itself.
//!
//! ```
//! let report = serde_json::json!({ "records": 10, "engine_s": 1.0 });
//! let dir = tempfile::tempdir()?;
//! let path = skysync_bench::write_report_in(dir.path(), "example", &report)?;
//! assert!(path.ends_with("example.json"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What can stop a benchmark from producing its report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The report could not be written: check that the target directory is writable.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file it tried to write.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The report could not be encoded as JSON (a non-finite number in it, say).
    #[error("could not encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The directory benchmarks write their JSON into: `$SKYSYNC_BENCH_DIR` when set (xtask sets
/// it), else `target/bench` of the workspace (or of `$CARGO_TARGET_DIR`).
pub fn report_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKYSYNC_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("bench")
}

/// Writes `report` to `report_dir()/NAME.json`, prints it, and returns the path.
pub fn write_report(name: &str, report: &serde_json::Value) -> Result<PathBuf, BenchError> {
    write_report_in(&report_dir(), name, report)
}

/// Writes `report` to `dir/NAME.json` (creating `dir`), prints it, and returns the path.
pub fn write_report_in(
    dir: &Path,
    name: &str,
    report: &serde_json::Value,
) -> Result<PathBuf, BenchError> {
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(report)?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("{text}\n")))
        .map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
    println!("{name}: {text}");
    Ok(path)
}

/// The most resident memory this process has had so far, in MiB (`VmHWM` of
/// `/proc/self/status`); `None` where the kernel does not say (not Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The `p`-th percentile (0–100) of `sorted` (ascending), nearest rank; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds `x` to `digits` decimals, for reports a person reads.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().unwrap_or(0.0);
            assert!(mb > 0.1, "{mb}");
        }
    }
}
