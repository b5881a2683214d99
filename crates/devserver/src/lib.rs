//! A CloudKit-compatible server for skysync's tests, demos and local development.
//!
//! It serves CloudKit Web Services (`/database/1/{container}/{environment}/{database}/{operation}` and
//! `/device/1/{container}/{environment}/tokens/{create,register}`) on loopback, answers errors with
//! CloudKit's own bodies, and can inject faults on demand under `/_dev/`.
//!
//! (Crate docs with an example are being written.)

mod error;
pub mod reply;

pub use error::DevServerError;

use std::net::SocketAddr;
use std::path::PathBuf;

/// How to run a dev server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Keep data in redb files under this directory; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Requests per second allowed per user before `429 THROTTLED`; `None` for no limit.
    pub rate_limit: Option<u32>,
    /// Server-to-server keys accepted on the public database: (key id, P-256 public key PEM).
    pub s2s_keys: Vec<(String, String)>,
    /// The API token clients must send as `ckAPIToken`; `None` accepts any.
    pub api_token: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
            rate_limit: None,
            s2s_keys: Vec::new(),
            api_token: None,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}
