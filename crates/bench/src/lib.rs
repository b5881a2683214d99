//! What every benchmark shares: where its JSON goes, how peak memory is read, percentiles, the
//! dev server and the sign-in they sync with, unpaced throttling, and measuring in a child process.
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

use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync::ThrottleConfig;
use skysync_devserver::{DevServer, DevServerError, ServerConfig};
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// The web auth token benchmark clients sign in to their dev server with.
pub const TOKEN: &str = "bench-user";

/// The container the engine's dev-server client uses (`EngineBuilder::dev_server`), for requests
/// a benchmark makes to the same database itself.
pub const CONTAINER: &str = "iCloud.dev.skysync";

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
    /// A child measuring process could not be started.
    #[error("could not start the {what} child: {source}")]
    ChildStart {
        /// Which child.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A child measuring process failed (its stderr, passed through, says why).
    #[error("the {what} child failed: {status}")]
    ChildFailed {
        /// Which child.
        what: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A child's answer was not the JSON its parent expected.
    #[error("the {what} child answered something else than its measurement: {source}")]
    ChildAnswer {
        /// Which child.
        what: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
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

/// A dev server on 127.0.0.1 (a free port), in memory, with the default settings (no rate limit).
pub async fn dev_server() -> Result<DevServer, DevServerError> {
    DevServer::start(ServerConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..ServerConfig::default()
    })
    .await
}

/// Pacing out of the way: the throttle starts at its ceiling and the quota never bites.
pub fn unpaced() -> ThrottleConfig {
    ThrottleConfig {
        initial_rate: 1_000.0,
        max_rate: 1_000.0,
        quota_interval: Duration::from_micros(500),
        quota_burst: NonZeroU32::MIN.saturating_add(999),
        ..ThrottleConfig::default()
    }
}

/// Runs this benchmark's binary again with `args`, as a child measuring something in a process
/// of its own (its peak memory its own), and reads the measurement it answered with
/// [`answer_parent`]. The child's stderr passes through; `what` names it in errors.
pub async fn in_child<T: DeserializeOwned>(what: &str, args: &[&OsStr]) -> Result<T, BenchError> {
    let start = |source| BenchError::ChildStart {
        what: what.to_owned(),
        source,
    };
    let output = tokio::process::Command::new(std::env::current_exe().map_err(start)?)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(start)?;
    if !output.status.success() {
        return Err(BenchError::ChildFailed {
            what: what.to_owned(),
            status: output.status,
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|source| BenchError::ChildAnswer {
        what: what.to_owned(),
        source,
    })
}

/// In a child started by [`in_child`]: hands `measured` to the parent (one JSON line on stdout).
pub fn answer_parent<T: Serialize>(measured: &T) -> Result<(), BenchError> {
    println!("{}", serde_json::to_string(measured)?);
    Ok(())
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
