//! The dev server's own errors (starting, storing, configuring), as opposed to the CloudKit error
//! bodies it answers requests with (see `reply`).

use std::path::PathBuf;

/// Why the dev server could not start, store or stop.
#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    /// The listen address could not be bound: pick another address or port (port 0 picks a free one).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A `--s2s-key` could not be read: give `KEY_ID=PEM` with a P-256 public key in PEM form.
    #[error("server-to-server key `{key_id}` is not usable: {reason}")]
    InvalidKey {
        /// The key id given.
        key_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory could not be opened or written: check the path and its permissions.
    #[error("data store at {path}: {reason}")]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A setting of the server's configuration is out of range (a time scale, a throttle profile):
    /// change it as the reason says.
    #[error("setting `{setting}` is not usable: {reason}")]
    InvalidSetting {
        /// The setting, as the command line or `ServerConfig` names it.
        setting: &'static str,
        /// What is wrong with it and what is accepted.
        reason: String,
    },
    /// Serving failed after start (an I/O error of the listener).
    #[error("serving failed: {0}")]
    Serve(#[from] std::io::Error),
}
