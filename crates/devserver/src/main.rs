//! `skysync-devserver`: run the CloudKit-compatible dev server.
//!
//! ```text
//! skysync-devserver [--listen ADDR] [--data DIR] [--rate-limit N]
//!                   [--s2s-key KEY_ID=PUBLIC_KEY_PEM | KEY_ID=@key.pem]... [--api-token TOKEN]
//! ```
//!
//! Once it accepts connections it prints one line, `skysync-devserver listening on http://HOST:PORT`,
//! on stdout. SIGTERM or ctrl-c stop it cleanly (every write is on disk before it is answered).
//! Logs go to stderr (`RUST_LOG` filters them; default `info`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use skysync_devserver::{DevServer, DevServerError, ServerConfig};

/// A CloudKit Web Services-compatible server for skysync's tests, demos and local development.
#[derive(Debug, Parser)]
#[command(name = "skysync-devserver", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Keep data in DIR (a redb file); without it everything is kept in memory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Allow N requests per second per user, answering 429 THROTTLED beyond.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Accept server-to-server requests signed with this key: KEY_ID=PEM or KEY_ID=@path/to/key.pem.
    #[arg(long = "s2s-key", value_name = "KEY_ID=PUBLIC_KEY_PEM")]
    s2s_keys: Vec<String>,
    /// Require this API token as `ckAPIToken`.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
}

/// Reads one `--s2s-key` value into (key id, PEM).
fn s2s_key(value: &str) -> Result<(String, String), DevServerError> {
    let Some((key_id, pem)) = value.split_once('=') else {
        return Err(DevServerError::InvalidKey {
            key_id: String::new(),
            reason: "expected KEY_ID=PUBLIC_KEY_PEM or KEY_ID=@path/to/key.pem".into(),
        });
    };
    let pem = match pem.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| DevServerError::InvalidKey {
            key_id: key_id.to_owned(),
            reason: format!("cannot read {path}: {e}"),
        })?,
        None => pem.to_owned(),
    };
    Ok((key_id.to_owned(), pem))
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: Args, s2s_keys: Vec<(String, String)>) -> Result<(), DevServerError> {
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data,
        rate_limit: args.rate_limit,
        s2s_keys,
        api_token: args.api_token,
        ..ServerConfig::default()
    };
    let server = DevServer::start(config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "skysync-devserver listening on {}",
            server.base_url()
        )?;
        stdout.flush()?;
    }
    stop_signal().await;
    tracing::info!("stopping");
    server.shutdown().await?;
    tracing::info!("stopped; all data flushed");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    // Key files are read here, before the runtime starts, so no async thread waits on the disk.
    let result = args
        .s2s_keys
        .iter()
        .map(|value| s2s_key(value))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|s2s_keys| {
            tokio::runtime::Runtime::new()
                .map_err(DevServerError::Serve)?
                .block_on(run(args, s2s_keys))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "skysync-devserver failed");
            eprintln!("skysync-devserver: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s2s_key_is_given_inline_or_read_from_a_file() {
        let (id, pem) = s2s_key("k1=-----BEGIN PUBLIC KEY-----\nAAA=\n").unwrap();
        assert_eq!(id, "k1");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(pem.ends_with("AAA=\n"), "only the first '=' separates");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "PEM FROM FILE").unwrap();
        let (id, pem) = s2s_key(&format!("k2=@{}", path.display())).unwrap();
        assert_eq!((id.as_str(), pem.as_str()), ("k2", "PEM FROM FILE"));

        assert!(matches!(
            s2s_key("no-separator"),
            Err(DevServerError::InvalidKey { .. })
        ));
        assert!(matches!(
            s2s_key("k3=@/no/such/file.pem"),
            Err(DevServerError::InvalidKey { key_id, .. }) if key_id == "k3"
        ));
    }

    #[test]
    fn the_listen_address_defaults_to_port_8787_on_loopback() {
        let args = Args::try_parse_from(["skysync-devserver"]).unwrap();
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8787)));
        let args = Args::try_parse_from([
            "skysync-devserver",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "5",
            "--s2s-key",
            "a=x",
            "--s2s-key",
            "b=y",
            "--api-token",
            "t",
        ])
        .unwrap();
        assert_eq!(args.rate_limit, Some(5));
        assert_eq!(args.s2s_keys, ["a=x", "b=y"]);
        assert!(Args::try_parse_from(["skysync-devserver", "--listen", "nowhere"]).is_err());
    }
}
