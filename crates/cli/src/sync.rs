//! `skysync sync`: the engine on a store against a server, until idle, a halt, or a timeout.

use crate::error::CliError;
use crate::output::{print_json, print_lines};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use skysync_model::ZoneId;
use skysync_session::{Diagnostics, Engine, OperationKind, SessionConfig, Status, SyncEvent};
use skysync_transport::{Auth, CloudKitClient, Environment};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

/// How often the engine's diagnostics are read.
const POLL: Duration = Duration::from_millis(100);

/// The flags of `skysync sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The store file (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// The server's base URL (a dev server, or a CloudKit Web Services endpoint).
    #[arg(long)]
    server: String,
    /// The web auth token to sign in with.
    #[arg(long)]
    token: String,
    /// The CloudKit container identifier (a dev server accepts any).
    #[arg(long, default_value = "iCloud.dev.skysync")]
    container: String,
    /// The API token sent as `ckAPIToken` (a dev server started with `--api-token` checks it).
    #[arg(long, default_value = "dev-api-token")]
    api_token: String,
    /// The container environment.
    #[arg(long, value_enum, default_value = "development")]
    environment: EnvironmentName,
    /// A zone to sync; repeat for more.
    #[arg(long = "zone", required = true)]
    zones: Vec<String>,
    /// Exit once nothing is pending and a fetch found nothing new.
    #[arg(long)]
    until_idle: bool,
    /// Give up after this many seconds (with --until-idle: a failure; without: a normal stop).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Print the final diagnostics as JSON.
    #[arg(long)]
    json: bool,
}

/// The container environments `--environment` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EnvironmentName {
    /// The schema can still change.
    Development,
    /// The deployed schema.
    Production,
}

/// The diagnostics `sync` prints when it stops.
#[derive(Debug, Serialize)]
struct SyncOut {
    outcome: &'static str,
    status: String,
    pending: u64,
    parked: u64,
    open_conflicts: u64,
    tagged_records: u64,
    account: Option<String>,
    last_fetch_unix_ms: Option<u64>,
    last_send_unix_ms: Option<u64>,
    halt: Option<String>,
    offline: bool,
}

impl SyncOut {
    fn of(outcome: &'static str, d: &Diagnostics) -> SyncOut {
        SyncOut {
            outcome,
            status: d.status.to_string(),
            pending: d.queue.pending,
            parked: d.queue.parked,
            open_conflicts: d.open_conflicts,
            tagged_records: d.tagged_records,
            account: d.account.clone(),
            last_fetch_unix_ms: d.last_fetch_unix_ms,
            last_send_unix_ms: d.last_send_unix_ms,
            halt: d.halt.as_ref().map(|h| h.reason.to_string()),
            offline: d.offline,
        }
    }

    fn print(&self, json: bool) -> Result<(), CliError> {
        if json {
            return print_json(self);
        }
        let mut lines = vec![
            format!("outcome: {}", self.outcome),
            format!("status: {}", self.status),
            format!("pending: {}  parked: {}", self.pending, self.parked),
            format!("open conflicts: {}", self.open_conflicts),
            format!("synced records: {}", self.tagged_records),
        ];
        if let Some(halt) = &self.halt {
            lines.push(format!("halt: {halt}"));
        }
        print_lines(lines)
    }
}

/// Where `--until-idle` stands.
#[derive(Debug, Default)]
struct Quiet {
    /// The operation id last completed when a confirming fetch was asked for.
    asked_after: Option<u64>,
    /// Whether something was sent or fetched since it was asked for.
    activity: bool,
}

/// Whether the diagnostics show a settled engine: nothing in flight, nothing pending, no halt.
fn settled(d: &Diagnostics) -> bool {
    d.status == Status::Idle && d.in_flight.is_none() && d.queue.pending == 0 && d.halt.is_none()
}

/// `skysync sync`.
pub async fn run(args: SyncArgs) -> Result<(), CliError> {
    let zones: Vec<ZoneId> = args.zones.iter().map(ZoneId::new).collect();
    let engine_error = |e: skysync_session::EngineError| CliError::Engine {
        detail: e.to_string(),
    };
    let environment = match args.environment {
        EnvironmentName::Development => Environment::Development,
        EnvironmentName::Production => Environment::Production,
    };
    let client = CloudKitClient::builder(
        args.container.clone(),
        Auth::web(args.api_token.clone(), args.token.clone()),
    )
    .base_url(args.server.clone())
    .environment(environment)
    .build()
    .map_err(|e| CliError::Engine {
        detail: e.to_string(),
    })?;
    // A store that cannot be opened (corrupt, of a newer format, in use) is refused with the
    // advice that fits it before anything is sent; the engine reopens it once it is known good.
    if args.store.exists() {
        let path = args.store.clone();
        tokio::task::spawn_blocking(move || {
            skysync_store::StoreFile::open(&path)
                .map(drop)
                .map_err(|e| CliError::store(&path, e))
        })
        .await
        .map_err(|e| CliError::Engine {
            detail: e.to_string(),
        })??;
    }
    let builder = Engine::builder(&args.store)
        .cloudkit(client)
        .zones(zones.clone())
        .session(SessionConfig {
            // A one-shot run polls; it needs no push notifications.
            notifications: false,
            ..SessionConfig::new(zones)
        });
    let mut events = builder.events();
    let engine = builder.build().await.map_err(|e| match e {
        skysync_session::EngineError::Store(source) => CliError::store(&args.store, source),
        other => engine_error(other),
    })?;
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let result = watch(&engine, &mut events, &args, &bar).await;
    bar.finish_and_clear();
    engine.shutdown().await;
    let (outcome, diagnostics, error) = result?;
    SyncOut::of(outcome, &diagnostics).print(args.json)?;
    match error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Polls the engine until it settles (with `--until-idle`), halts, or the timeout passes.
async fn watch(
    engine: &Engine,
    events: &mut tokio::sync::broadcast::Receiver<SyncEvent>,
    args: &SyncArgs,
    bar: &ProgressBar,
) -> Result<(&'static str, Diagnostics, Option<CliError>), CliError> {
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut quiet = Quiet::default();
    loop {
        loop {
            match events.try_recv() {
                Ok(SyncEvent::Sent { .. }) => quiet.activity = true,
                Ok(SyncEvent::Fetched {
                    changed, deleted, ..
                }) if changed + deleted > 0 => quiet.activity = true,
                // Events were lost: one of them may have been a send or a fetch that brought
                // something, so the confirming fetch is not trusted to have found nothing.
                Err(TryRecvError::Lagged(_)) => quiet.activity = true,
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let d = engine.diagnostics().await.map_err(|e| CliError::Engine {
            detail: e.to_string(),
        })?;
        bar.set_message(format!(
            "{} — {} pending, {} parked, {} synced",
            d.status, d.queue.pending, d.queue.parked, d.tagged_records
        ));
        if let Some(halt) = &d.halt {
            let reason = halt.reason.to_string();
            return Ok(("halted", d, Some(CliError::Halted { reason })));
        }
        if args.until_idle && settled(&d) {
            let last = d.last_completed.as_ref();
            let last_id = last.map(|(op, _)| op.batch_id);
            let quiet_fetch = last.is_some_and(|(op, ok)| {
                *ok && matches!(
                    op.kind,
                    OperationKind::FetchDatabase | OperationKind::FetchZone
                )
            });
            match quiet.asked_after {
                Some(asked) if last_id > Some(asked) && quiet_fetch && !quiet.activity => {
                    return Ok(("idle", d, None));
                }
                Some(asked) if last_id > Some(asked) => quiet.asked_after = None,
                Some(_) => {}
                None if last_id.is_some() => {
                    // Ask for one more fetch: idle means it found nothing new.
                    quiet = Quiet {
                        asked_after: last_id,
                        activity: false,
                    };
                    engine.sync_now();
                }
                None => {}
            }
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            if !args.until_idle {
                return Ok(("stopped", d, None));
            }
            let error = CliError::TimedOut {
                seconds: args.timeout.unwrap_or_default(),
                status: d.status.to_string(),
                pending: d.queue.pending,
            };
            return Ok(("timed out", d, Some(error)));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(("stopped", d, None)),
        }
    }
}
