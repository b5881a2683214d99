//! `chaos`: the chaos harness (`cargo xtask chaos` runs it in release).
//!
//! ```text
//! chaos --kills N --seed S [--devices D] [--changes C] [--soak MINUTES] [--server-restarts R]
//!       [--no-faults] [--out DIR] [--bin-dir DIR]
//! ```
//!
//! It starts `chaos-server` and D `chaos-device` processes (found next to itself unless
//! `--bin-dir` says otherwise), kills and restarts them, arms faults, settles the devices and
//! writes DIR/report.json (default `target/chaos/report.json`), which it also prints. It exits
//! non-zero unless nothing was lost, duplicated or resurrected, there was no liveness violation,
//! no crash and no parked change, and every device converged on the server's data.

use clap::Parser;
use skysync_chaos::harness::{self, ChaosConfig};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The chaos harness.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// How many times a device is killed with SIGKILL and restarted.
    #[arg(long)]
    kills: u32,
    /// The seed of the plan, the kills, the restarts and the faults.
    #[arg(long)]
    seed: u64,
    /// How many device processes.
    #[arg(long, default_value_t = 2)]
    devices: u32,
    /// How many changes the devices make together.
    #[arg(long, default_value_t = 10_000)]
    changes: u64,
    /// Run for this many minutes with faults instead, and report the memory trend.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
    /// How many times the dev server is killed and restarted (default: one per 20 kills, at
    /// least one; in a soak, one per two minutes).
    #[arg(long)]
    server_restarts: Option<u32>,
    /// Arm no faults.
    #[arg(long)]
    no_faults: bool,
    /// Where the report and the work directory go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Where `chaos-device` and `chaos-server` are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bin_dir = match args.bin_dir.clone().map_or_else(
        || std::env::current_exe().map(|exe| exe.parent().map(PathBuf::from).unwrap_or_default()),
        Ok,
    ) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("chaos: cannot tell where the binaries are ({e}); pass --bin-dir");
            return ExitCode::FAILURE;
        }
    };
    let mut config = ChaosConfig::new(args.seed, args.kills, bin_dir, &args.out);
    config.devices = args.devices.max(1);
    config.changes = args.changes;
    config.server_restarts = args.server_restarts;
    config.faults = !args.no_faults;
    if let Some(minutes) = args.soak {
        config.soak = Some(Duration::from_secs_f64(minutes.max(0.0) * 60.0));
        config.deadline = config
            .deadline
            .max(Duration::from_secs_f64(minutes * 60.0 * 2.0));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chaos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(harness::run(&config)) {
        Ok(report) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = writeln!(out, "report: {}", config.report_path.display());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                let _ = writeln!(out, "chaos: the run found problems (see the report)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::FAILURE
        }
    }
}
