//! The transport's own errors: problems with how a client was set up, found before any request.
//!
//! Operations never return these; they return [`skysync_model::CloudError`], classified for the session.

use std::path::PathBuf;

/// A client, key or batch could not be set up. Each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The base URL does not parse or is not an `http`/`https` URL without query or fragment.
    /// Pass something like `https://api.apple-cloudkit.com` or `http://127.0.0.1:8080`.
    #[error("bad base URL `{url}`: {reason}")]
    BadBaseUrl {
        /// The URL as given, less any user, password, query or fragment (they may hold
        /// secrets).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server-to-server key is not a P-256 private key in PEM (`EC PRIVATE KEY` or `PRIVATE KEY`)
    /// or DER form. Create one with `openssl ecparam -name prime256v1 -genkey -noout -out eckey.pem`.
    #[error("bad server-to-server key: {reason}")]
    BadKey {
        /// What is wrong (never the key material itself).
        reason: String,
    },
    /// The key file could not be read; check the path and its permissions.
    #[error("could not read the key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A container, token or key id is empty or holds characters a URL or header cannot carry.
    #[error("bad {what}: {reason}")]
    BadSetting {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. no TLS roots on this system).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
    /// A batch holds changes for more than one zone; `records/modify` takes one zone per request.
    /// Split the batch by zone.
    #[error("a batch for zone `{batch_zone}` holds a change for `{record}` in another zone")]
    MixedZones {
        /// The batch's zone.
        batch_zone: String,
        /// The record in another zone.
        record: String,
    },
    /// The thread that hands rotated web auth tokens to the app's callback could not be started
    /// (the system is out of threads or memory). Nothing was built; retry, or build the client
    /// without a rotation callback.
    #[error("could not start the token rotation thread: {0}")]
    RotationThread(String),
    /// The transport actor could not be started (ractor's reason inside; in practice the tokio
    /// runtime is shutting down). Nothing is running; spawn it again from a running runtime.
    #[error("could not start the transport actor: {0}; spawn it again from a running runtime")]
    Spawn(String),
}
