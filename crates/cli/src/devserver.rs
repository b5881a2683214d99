//! `skysync devserver`: the dev server, with the same flags as `skysync-devserver`.

use crate::error::CliError;
use skysync_devserver::s2s::read_key_argument;
use skysync_devserver::throttle_profile::ThrottleProfile;
use skysync_devserver::time_scale::TimeScale;
use skysync_devserver::{DevServer, ServerConfig};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The dev server's flags.
#[derive(Debug, clap::Args)]
pub struct DevServerArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Keep data in DIR; without it everything is kept in memory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Allow N requests per second per user, answering 429 THROTTLED beyond.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Accept server-to-server requests signed with this key: KEY_ID=PEM or KEY_ID=@key.pem.
    #[arg(long = "s2s-key", value_name = "KEY_ID=PUBLIC_KEY_PEM")]
    s2s_keys: Vec<String>,
    /// Require this API token as `ckAPIToken`.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Throttle each user's database as CloudKit does (`cloudkit`).
    #[arg(long, value_enum, value_name = "PROFILE")]
    throttle_profile: Option<ProfileName>,
    /// Run every server-side duration F times faster than real time.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    time_scale: f64,
    /// Seed the throttle profile's random draws.
    #[arg(long, value_name = "N", requires = "throttle_profile")]
    seed: Option<u64>,
}

/// The throttle profiles `--throttle-profile` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProfileName {
    /// CloudKit's throttling as field reports describe it.
    Cloudkit,
}

/// The server configuration the flags ask for (key files are read here, before the runtime).
pub fn config(args: DevServerArgs) -> Result<ServerConfig, CliError> {
    let s2s_keys = args
        .s2s_keys
        .iter()
        .map(|value| read_key_argument(value))
        .collect::<Result<Vec<_>, _>>()?;
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

/// Runs the server until ctrl-c, printing `skysync devserver listening on URL` once it accepts.
pub async fn run(config: ServerConfig) -> Result<(), CliError> {
    let server = DevServer::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "skysync devserver listening on {}", server.base_url())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown().await?;
    Ok(())
}
