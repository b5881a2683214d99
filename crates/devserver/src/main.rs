//! `skysync-devserver`: run the CloudKit-compatible dev server.
//!
//! ```text
//! skysync-devserver [--listen ADDR] [--data DIR] [--rate-limit N]
//!                   [--s2s-key KEY_ID=PUBLIC_KEY_PEM | KEY_ID=@key.pem]... [--api-token TOKEN]
//!                   [--throttle-profile cloudkit [--seed N]] [--time-scale F]
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
use skysync_devserver::s2s::read_key_argument;
use skysync_devserver::throttle_profile::ThrottleProfile;
use skysync_devserver::time_scale::TimeScale;
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
    /// Throttle each user's database as CloudKit does: `cloudkit` sustains about one
    /// records/modify per 10-15 s with a burst of 3, answers 429/503 with a retryAfter of 10-80 s,
    /// and locks out for growing periods a client that comes back before its retryAfter.
    #[arg(long, value_enum, value_name = "PROFILE")]
    throttle_profile: Option<ProfileName>,
    /// Run every server-side duration F times faster than real time (throttle profile, rate
    /// limit, fault delays, courier timeouts); retryAfter is told in real seconds.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    time_scale: f64,
    /// Seed the throttle profile's random draws, so that a run can be repeated.
    #[arg(long, value_name = "N", requires = "throttle_profile")]
    seed: Option<u64>,
}

/// The throttle profiles `--throttle-profile` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProfileName {
    /// CloudKit's throttling as field reports describe it (`ThrottleProfile::cloudkit`).
    Cloudkit,
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

/// The server configuration the arguments ask for (`s2s_keys` already read).
fn config(args: Args, s2s_keys: Vec<(String, String)>) -> Result<ServerConfig, DevServerError> {
    let throttle_profile = args
        .throttle_profile
        .map(|ProfileName::Cloudkit| ThrottleProfile {
            seed: args.seed.unwrap_or_default(),
            ..ThrottleProfile::cloudkit()
        });
    Ok(ServerConfig {
        listen: args.listen,
        data_dir: args.data,
        rate_limit: args.rate_limit,
        s2s_keys,
        api_token: args.api_token,
        throttle_profile,
        time_scale: TimeScale::new(args.time_scale)?,
        ..ServerConfig::default()
    })
}

async fn run(config: ServerConfig) -> Result<(), DevServerError> {
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
        .map(|value| read_key_argument(value))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|s2s_keys| config(args, s2s_keys))
        .and_then(|config| {
            tokio::runtime::Runtime::new()
                .map_err(DevServerError::Serve)?
                .block_on(run(config))
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
        let (id, pem) = read_key_argument("k1=-----BEGIN PUBLIC KEY-----\nAAA=\n").unwrap();
        assert_eq!(id, "k1");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(pem.ends_with("AAA=\n"), "only the first '=' separates");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "PEM FROM FILE").unwrap();
        let (id, pem) = read_key_argument(&format!("k2=@{}", path.display())).unwrap();
        assert_eq!((id.as_str(), pem.as_str()), ("k2", "PEM FROM FILE"));

        assert!(matches!(
            read_key_argument("no-separator"),
            Err(DevServerError::InvalidKey { .. })
        ));
        assert!(matches!(
            read_key_argument("k3=@/no/such/file.pem"),
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

    #[test]
    fn the_throttle_profile_time_scale_and_seed_make_the_config() {
        let args = Args::try_parse_from([
            "skysync-devserver",
            "--throttle-profile",
            "cloudkit",
            "--time-scale",
            "250",
            "--seed",
            "42",
        ])
        .unwrap();
        let config = config(args, Vec::new()).unwrap();
        assert_eq!(
            config.throttle_profile,
            Some(ThrottleProfile {
                seed: 42,
                ..ThrottleProfile::cloudkit()
            })
        );
        assert_eq!(config.time_scale.factor(), 250.0);

        let plain = config_of(&["skysync-devserver"]).unwrap();
        assert_eq!(plain.throttle_profile, None);
        assert_eq!(plain.time_scale, TimeScale::REAL);

        assert!(matches!(
            config_of(&["skysync-devserver", "--time-scale", "0"]),
            Err(DevServerError::InvalidSetting {
                setting: "time-scale",
                ..
            })
        ));
        assert!(
            Args::try_parse_from(["skysync-devserver", "--seed", "1"]).is_err(),
            "a seed without a profile seeds nothing"
        );
        assert!(
            Args::try_parse_from(["skysync-devserver", "--throttle-profile", "gentle"]).is_err()
        );
    }

    fn config_of(argv: &[&str]) -> Result<ServerConfig, DevServerError> {
        config(Args::try_parse_from(argv).unwrap(), Vec::new())
    }
}
