//! The one error type of the command-line tool: each variant says what the user can do.

use std::path::PathBuf;

/// Everything that can make a `skysync` command fail. `main` prints it as one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The store file named by `--store` does not exist (and the command only reads).
    #[error("no store at {} — check the path (put or sync create a store)", path.display())]
    NoStore {
        /// The path given.
        path: PathBuf,
    },
    /// The store file could not be opened or read: corrupt, of a newer format, or in use.
    #[error("cannot open {}: {source} — {hint}", path.display())]
    Store {
        /// The path given.
        path: PathBuf,
        /// What the store reported.
        #[source]
        source: Box<skysync_store::StoreError>,
        /// What to do about it.
        hint: &'static str,
    },
    /// `--fields` is not a JSON object of CloudKit wire fields.
    #[error(
        "--fields is not valid: {detail} — give a JSON object like {{\"title\": {{\"value\": \"x\", \"type\": \"STRING\"}}}}"
    )]
    MalformedFields {
        /// What was wrong with it.
        detail: String,
    },
    /// The record named by `--zone`/`--name` is not in the store.
    #[error(
        "no record {name} in zone {zone} — check the zone and name (`skysync records` lists them)"
    )]
    NoRecord {
        /// The zone.
        zone: String,
        /// The record name.
        name: String,
    },
    /// The sync engine could not start or failed.
    #[error("sync failed: {detail} — check --server, --token and the store path")]
    Engine {
        /// What the engine reported.
        detail: String,
    },
    /// The engine halted during `sync --until-idle`.
    #[error("sync halted: {reason} — fix the cause and run sync again")]
    Halted {
        /// Why it halted.
        reason: String,
    },
    /// `sync --until-idle` did not reach idle within `--timeout`.
    #[error(
        "sync did not finish within {seconds} s (status {status}, {pending} pending) — check the server, or raise --timeout"
    )]
    TimedOut {
        /// The timeout given.
        seconds: u64,
        /// The engine's status at the timeout.
        status: String,
        /// Changes still pending.
        pending: u64,
    },
    /// The dev server could not start or stopped with an error.
    #[error("dev server failed: {0} — check its flags (address in use? data directory writable?)")]
    DevServer(#[from] skysync_devserver::DevServerError),
    /// Writing the output or starting the runtime failed.
    #[error("cannot write output or start: {0}")]
    Io(#[from] std::io::Error),
    /// JSON output could not be produced (a bug: please report it).
    #[error("cannot produce JSON output: {0} — please report this")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// Wraps a store error with the hint that fits it.
    pub fn store(path: impl Into<PathBuf>, source: skysync_store::StoreError) -> CliError {
        use skysync_store::StoreError as E;
        let hint = match &source {
            E::Corrupt { .. } => "restore the file from a backup, or remove it and sync again",
            E::NewerFormat { .. } => "use a newer skysync to open it",
            E::AlreadyOpen { .. } => "stop the app or engine that has it open, then retry",
            E::Storage { .. } => "check the path, the disk and its permissions",
            _ => "check the path and retry",
        };
        CliError::Store {
            path: path.into(),
            source: Box::new(source),
            hint,
        }
    }
}
