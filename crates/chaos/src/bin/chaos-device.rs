//! `chaos-device`: one device of a chaos run.
//!
//! ```text
//! chaos-device run --dir DIR --server URL --token T --device N --devices D --changes C --seed S
//!                  [--endless --rate R]
//! chaos-device settle --dir DIR --server URL --token T [--timeout SECONDS]
//! chaos-device plan --device N --devices D --changes C --seed S [--record NAME]
//! ```
//!
//! `run` works through the device's share of the seeded plan from the change after the last one
//! in DIR/journal, then keeps syncing until stopped. `settle` runs the engine to quiescence and
//! writes DIR/settle.json. `plan` prints the device's plan (one change a line, or only the
//! changes to one record), for a post-mortem. Logs go to stderr (`RUST_LOG`; default `warn`).

use clap::{Parser, Subcommand};
use skysync_chaos::device::{self, DeviceSetup, Pace};
use skysync_chaos::plan::{DevicePlan, PlanConfig};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// One device of a chaos run.
#[derive(Debug, Parser)]
#[command(name = "chaos-device")]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Mode,
}

/// Where the device keeps its files and whom it syncs with.
#[derive(Debug, clap::Args)]
struct Where {
    /// The device's directory (store, journal, vitals, dump).
    #[arg(long)]
    dir: PathBuf,
    /// The dev server's base URL.
    #[arg(long)]
    server: String,
    /// The web auth token to sign in with.
    #[arg(long)]
    token: String,
}

impl Where {
    fn setup(self) -> DeviceSetup {
        DeviceSetup {
            dir: self.dir,
            server: self.server,
            token: self.token,
        }
    }
}

/// The device's share of a run's seeded plan.
#[derive(Debug, clap::Args)]
struct Share {
    /// The device's number (from 0).
    #[arg(long)]
    device: u32,
    /// How many devices share the plan.
    #[arg(long)]
    devices: u32,
    /// How many changes all devices make together.
    #[arg(long)]
    changes: u64,
    /// The run's seed.
    #[arg(long)]
    seed: u64,
}

impl Share {
    /// The plan shared (`endless`: it goes on past `changes`, a soak run).
    fn plan(&self, endless: bool) -> PlanConfig {
        PlanConfig {
            seed: self.seed,
            devices: self.devices,
            changes: self.changes,
            endless,
        }
    }
}

/// The modes.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Make the device's changes, then keep syncing until stopped.
    Run {
        /// Where.
        #[command(flatten)]
        at: Where,
        /// Which share of which plan.
        #[command(flatten)]
        share: Share,
        /// Go on making changes until stopped (a soak run).
        #[arg(long)]
        endless: bool,
        /// With --endless: changes per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// Print the device's plan, one change a line.
    Plan {
        /// Which share of which plan.
        #[command(flatten)]
        share: Share,
        /// Only the changes to this record.
        #[arg(long)]
        record: Option<String>,
    },
    /// Run to quiescence and write DIR/settle.json.
    Settle {
        /// Where.
        #[command(flatten)]
        at: Where,
        /// Give up after this many seconds (the dump then says it did not settle).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

async fn main_async(mode: Mode) -> Result<(), device::DeviceError> {
    match mode {
        Mode::Run {
            at,
            share,
            endless,
            rate,
        } => {
            let plan = share.plan(endless);
            let pace = if endless {
                Pace::PerSecond(rate)
            } else {
                Pace::Bursts
            };
            device::run(&at.setup(), &plan, share.device, pace).await
        }
        Mode::Plan { share, record } => {
            let plan = share.plan(false);
            let mut out = std::io::stdout().lock();
            for change in DevicePlan::new(&plan, share.device) {
                if record.as_ref().is_none_or(|r| *r == change.record) {
                    let line = format!(
                        "{} {} {:?} {}",
                        change.index,
                        change.record,
                        change.kind,
                        change.value().unwrap_or_default()
                    );
                    if writeln!(out, "{line}").is_err() {
                        break;
                    }
                }
            }
            Ok(())
        }
        Mode::Settle { at, timeout } => {
            device::settle(&at.setup(), Duration::from_secs(timeout)).await?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chaos-device: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chaos-device failed");
            eprintln!("chaos-device: {e}");
            ExitCode::FAILURE
        }
    }
}
