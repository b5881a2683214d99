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
use std::process::ExitCode;

use clap::Parser;
use skysync_devserver::command_line::ServerArgs as Args;
use skysync_devserver::{DevServer, DevServerError, ServerConfig};

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
    let result = args.into_config().and_then(|config| {
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
    use skysync_devserver::s2s::read_key_argument;
    use skysync_devserver::throttle_profile::ThrottleProfile;
    use skysync_devserver::time_scale::TimeScale;
    use std::net::SocketAddr;

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
        let config = args.into_config().unwrap();
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
        Args::try_parse_from(argv).unwrap().into_config()
    }
}
