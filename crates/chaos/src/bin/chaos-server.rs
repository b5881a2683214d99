//! `chaos-server`: the dev server the chaos harness starts, kills and starts again: the dev
//! server library behind the same flags as `skysync-devserver` (built with this crate, so the
//! harness finds it next to itself).
//!
//! Once it accepts connections it prints `chaos-server listening on http://HOST:PORT` on stdout.
//! SIGTERM or ctrl-c stop it cleanly; SIGKILL loses nothing it answered (every write is on disk
//! first).

use clap::Parser;
use skysync_devserver::command_line::ServerArgs;
use skysync_devserver::{DevServer, DevServerError, ServerConfig};
use std::io::Write as _;
use std::process::ExitCode;

async fn serve(config: ServerConfig) -> Result<(), DevServerError> {
    let server = DevServer::start(config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "chaos-server listening on {}", server.base_url())?;
        stdout.flush()?;
    }
    stopped().await;
    server.shutdown().await
}

async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Key files are read here, before the runtime starts.
    let result = ServerArgs::parse().into_config().and_then(|config| {
        tokio::runtime::Runtime::new()
            .map_err(DevServerError::Serve)?
            .block_on(serve(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-server: {e}");
            ExitCode::FAILURE
        }
    }
}
