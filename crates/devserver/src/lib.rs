//! A CloudKit-compatible server for skysync's tests, demos and local development.
//!
//! It serves CloudKit Web Services (`/database/1/{container}/{environment}/{database}/{operation}` and
//! `/device/1/{container}/{environment}/tokens/{create,register}`) on loopback, answers errors with
//! CloudKit's own bodies, and can inject faults on demand under `/_dev/`.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use skysync_devserver::{DevServer, ServerConfig};
//!
//! let server = DevServer::start(ServerConfig::default()).await.unwrap();
//! let url = server.base_url(); // "http://127.0.0.1:PORT"
//! assert!(url.starts_with("http://127.0.0.1:"));
//! server.shutdown().await.unwrap();
//! # });
//! ```

pub mod auth;
mod changes;
mod courier;
mod error;
pub mod faults;
mod persist;
pub mod rate_limit;
mod records;
pub mod reply;
pub mod s2s;
mod server;
mod state;
mod subscriptions;
mod zones;

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

/// A running dev server: bound, accepting and serving on the tokio runtime it was started on.
///
/// Stop it with [`DevServer::shutdown`], which lets in-flight requests finish and closes the data
/// store. Dropping it without `shutdown` stops accepting at the end of the runtime only.
pub struct DevServer {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DevServer {
    /// Binds `config.listen`, opens the data store (if `config.data_dir` is set) and starts serving.
    /// Returns once the listener accepts connections.
    pub async fn start(config: ServerConfig) -> Result<DevServer, DevServerError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| DevServerError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let router = server::router(&config, addr, stopped.clone()).await?;
        let mut signal = stopped;
        let serving = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // Either a `true` or the sender going away ends serving.
                    let _ = signal.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, "skysync dev server accepting connections");
        Ok(DevServer {
            addr,
            stop,
            serving,
        })
    }

    /// The server's root URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on (with the port actually bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (open courier long-polls answer at once),
    /// and returns when serving has ended and every write is on disk.
    pub async fn shutdown(self) -> Result<(), DevServerError> {
        let _ = self.stop.send(true);
        match self.serving.await {
            Ok(result) => result.map_err(DevServerError::Serve),
            Err(join) => Err(DevServerError::Serve(std::io::Error::other(format!(
                "the serving task failed: {join}"
            )))),
        }
    }
}
