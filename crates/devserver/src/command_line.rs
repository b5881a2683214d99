//! The dev server's command-line flags, shared by `skysync-devserver` and `skysync devserver`.

use crate::s2s::read_key_argument;
use crate::throttle_profile::ThrottleProfile;
use crate::time_scale::TimeScale;
use crate::{DevServerError, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A CloudKit Web Services-compatible server for skysync's tests, demos and local development.
#[derive(Debug, clap::Parser)]
#[command(name = "skysync-devserver", version)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Keep data in DIR (a redb file); without it everything is kept in memory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Allow N requests per second per user, answering 429 THROTTLED beyond.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Accept server-to-server requests signed with this key: KEY_ID=PEM or KEY_ID=@path/to/key.pem.
    #[arg(long = "s2s-key", value_name = "KEY_ID=PUBLIC_KEY_PEM")]
    pub s2s_keys: Vec<String>,
    /// Require this API token as `ckAPIToken`.
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Throttle each user's database as CloudKit does: `cloudkit` sustains about one
    /// records/modify per 10-15 s with a burst of 3, answers 429/503 with a retryAfter of 10-80 s,
    /// and locks out for growing periods a client that comes back before its retryAfter.
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub throttle_profile: Option<ProfileName>,
    /// Run every server-side duration F times faster than real time (throttle profile, rate
    /// limit, fault delays, courier timeouts); retryAfter is told in real seconds.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed the throttle profile's random draws, so that a run can be repeated.
    #[arg(long, value_name = "N", requires = "throttle_profile")]
    pub seed: Option<u64>,
}

/// The throttle profiles `--throttle-profile` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileName {
    /// CloudKit's throttling as field reports describe it (`ThrottleProfile::cloudkit`).
    Cloudkit,
}

impl ServerArgs {
    /// The server configuration the flags ask for. Reads the `--s2s-key KEY_ID=@file` files:
    /// blocking, so call it before the runtime starts (or on a blocking thread).
    pub fn into_config(self) -> Result<ServerConfig, DevServerError> {
        let s2s_keys = self
            .s2s_keys
            .iter()
            .map(|value| read_key_argument(value))
            .collect::<Result<Vec<_>, _>>()?;
        let throttle_profile = self
            .throttle_profile
            .map(|ProfileName::Cloudkit| ThrottleProfile {
                seed: self.seed.unwrap_or_default(),
                ..ThrottleProfile::cloudkit()
            });
        Ok(ServerConfig {
            listen: self.listen,
            data_dir: self.data,
            rate_limit: self.rate_limit,
            s2s_keys,
            api_token: self.api_token,
            throttle_profile,
            time_scale: TimeScale::new(self.time_scale)?,
            ..ServerConfig::default()
        })
    }
}
