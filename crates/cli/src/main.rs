//! `skysync`: look into a skysync store file, make local changes as an app would, sync a store
//! against a dev server (or any CloudKit Web Services endpoint), and run the dev server.
//!
//! Every failure is one line on stderr saying what to do, and a non-zero exit: 2 for a usage error
//! (as clap reports it), 1 otherwise.

mod change;
mod devserver;
mod error;
mod inspect;
mod output;
mod sync;

use clap::{Parser, Subcommand};
use error::CliError;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Inspect, change and sync skysync stores.
#[derive(Debug, Parser)]
#[command(name = "skysync", version)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// The diagnostics of a store file (no engine needs to run).
    Status {
        /// The store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The outbox: pending changes, parked changes with their reasons, open conflicts.
    Pending {
        /// The store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The local records, of one zone and/or of one type.
    Records {
        /// The store file.
        #[arg(long)]
        store: PathBuf,
        /// Only records of this zone.
        #[arg(long)]
        zone: Option<String>,
        /// Only records of this type.
        #[arg(long = "type")]
        record_type: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One local record.
    Get {
        /// The store file.
        #[arg(long)]
        store: PathBuf,
        /// The record's zone.
        #[arg(long)]
        zone: String,
        /// The record's name.
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Save a record locally (durable when the command returns); the next sync sends it.
    Put {
        /// The store file (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// The record's zone.
        #[arg(long)]
        zone: String,
        /// The record's name.
        #[arg(long)]
        name: String,
        /// The record's type.
        #[arg(long = "type")]
        record_type: String,
        /// The fields in CloudKit's wire form: `{"title": {"value": "x", "type": "STRING"}}`.
        #[arg(long)]
        fields: String,
    },
    /// Delete a record locally (durable when the command returns); the next sync sends it.
    Delete {
        /// The store file.
        #[arg(long)]
        store: PathBuf,
        /// The record's zone.
        #[arg(long)]
        zone: String,
        /// The record's name.
        #[arg(long)]
        name: String,
    },
    /// Run the sync engine on a store against a server.
    Sync(sync::SyncArgs),
    /// Run the CloudKit-compatible dev server.
    Devserver(devserver::DevServerArgs),
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Status { store, json } => inspect::status(&store, json),
        Command::Pending { store, json } => inspect::pending(&store, json),
        Command::Records {
            store,
            zone,
            record_type,
            json,
        } => inspect::records(&store, zone.as_deref(), record_type.as_deref(), json),
        Command::Get {
            store,
            zone,
            name,
            json,
        } => inspect::get(&store, &zone, &name, json),
        Command::Put {
            store,
            zone,
            name,
            record_type,
            fields,
        } => {
            let record = change::record_from_args(&zone, &name, &record_type, &fields)?;
            runtime()?.block_on(change::put(store, record))
        }
        Command::Delete { store, zone, name } => {
            runtime()?.block_on(change::delete(store, &zone, &name))
        }
        Command::Sync(args) => runtime()?.block_on(sync::run(args)),
        Command::Devserver(args) => {
            let config = devserver::config(args)?;
            runtime()?.block_on(devserver::run(config))
        }
    }
}

/// The tokio runtime the engine, the store actor and the dev server run on.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "skysync: {e}");
            ExitCode::FAILURE
        }
    }
}
