//! A CloudKit-compatible server for skysync's tests, demos and local development.
//!
//! It serves CloudKit Web Services on loopback as `docs/cloudkit-web-services.md` describes it, answers
//! errors with CloudKit's own bodies (`{uuid, serverErrorCode, reason, retryAfter?, redirectURL?}`
//! with the code's HTTP status), and can inject faults on demand under `/_dev/`. Run it in process
//! with [`DevServer::start`], without a socket with [`InProcessServer::start`], or as the
//! `skysync-devserver` binary.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use skysync_devserver::{DevServer, ServerConfig};
//!
//! let server = DevServer::start(ServerConfig::default()).await.unwrap();
//! let url = server.base_url(); // "http://127.0.0.1:PORT"
//! assert!(url.starts_with("http://127.0.0.1:"));
//!
//! let zones = reqwest::get(format!(
//!     "{url}/database/1/iCloud.com.example.App/development/private/zones/list?ckWebAuthToken=me"
//! ))
//! .await
//! .unwrap();
//! assert_eq!(zones.status(), 200);
//! server.shutdown().await.unwrap();
//! # });
//! ```
//!
//! # What it serves
//!
//! * `/database/1/{container}/{environment}/{public|private|shared}/…`: `records/modify` (all seven
//!   operation types, atomic batches in custom zones), `records/lookup`, `records/query`,
//!   `records/changes`, `changes/zone`, `changes/database`, `zones/list` (GET), `zones/lookup`,
//!   `zones/modify`, `zones/changes` (`metaSyncToken`), `subscriptions/list` (GET),
//!   `subscriptions/lookup`, `subscriptions/modify`, `users/caller` (GET), `users/current` (GET).
//! * `/device/1/{container}/{environment}/tokens/create` and `…/tokens/register`.
//! * `/_courier/{apnsToken}?timeout=SECONDS` (GET): the `webcourierURL` that `tokens/create` hands out.
//!   It long-polls: it answers `{"notifications": [...]}` as soon as a subscription of the token's user
//!   fires (a record written in a subscribed zone, or the zone deleted), or `{"notifications": []}`
//!   after the timeout (default 30 s, at most 120 s). Notifications wait for the next poll.
//! * `/_auth/signin` (GET): the `redirectURL` of `AUTHENTICATION_REQUIRED`; answers
//!   `{"ckWebAuthToken": "…"}` with a token for a new user.
//! * `/_dev/faults` (GET lists, POST arms, DELETE clears): fault injection (see [`faults`]).
//! * `/_dev/item-faults` (GET lists, POST arms, DELETE clears): per-item errors inside
//!   `records/modify` answers (see [`faults::ItemFaultSpec`]).
//! * `/_dev/stats`, `/_dev/stats/{user}`, `/_dev/records/{container}/{environment}/{database}` and
//!   `/_dev/user`: a view inside for tests: request counters per user and operation (with the most
//!   requests in flight at once) and every record and tombstone of a database (see [`dev_view`]).
//!
//! Data is kept per container and environment; each user has a private database, and the public
//! database is shared by all. There is no sharing: each user's shared database behaves as a second,
//! separate private database.
//!
//! # Authentication
//!
//! * `ckAPIToken` must match [`ServerConfig::api_token`] when one is set (else `401
//!   AUTHENTICATION_FAILED`).
//! * Any non-empty `ckWebAuthToken` signs a user in; the user record name is derived from the token
//!   (see [`auth`]). Every response to a web-auth request carries a rotated token in
//!   `X-Apple-CloudKit-Web-Auth-Token` that names the same user; old tokens keep working.
//! * Without a web token the private and shared databases answer `421 AUTHENTICATION_REQUIRED` with a
//!   `redirectURL`; the public database can be read, but writes, subscriptions, `users/*` and tokens
//!   need a user.
//! * Server-to-server signed requests ([`s2s`]) are accepted on the public database only, acting as a
//!   user derived from the key id; `users/*` refuse them.
//!
//! # Choices where CloudKit's behaviour is unknown or unspecified
//!
//! * A record over 1 MB (its `fields` as JSON) is refused per item with `LIMIT_EXCEEDED`; more than 200
//!   operations (modify, lookup) refuse the whole request with `413 LIMIT_EXCEEDED`, as does a body
//!   over [`ServerConfig::max_body_bytes`].
//! * Two operations on one record in one request refuse the whole request (`400 BAD_REQUEST`).
//! * `update`, `replace` and `delete` without a `recordChangeTag` are refused per item with
//!   `BAD_REQUEST`; `forceDelete` of a missing record succeeds and changes nothing.
//! * `CONFLICT` and `EXISTS` carry the server's current record as `serverRecord`.
//! * Change tags are the database's change counter in hex: short, opaque, new on every write.
//! * Sync tokens are opaque and bound to their database, zone and data (a random epoch kept with the
//!   data, new for each in-memory server); a token this server's data did not issue for that zone
//!   (or issued for a deleted incarnation of it) is `CHANGE_TOKEN_EXPIRED` (410), per
//!   zone in `changes/zone` and for the request in `records/changes` and `changes/database`.
//!   Tombstones (`{recordName, recordType, deleted: true}`) are kept and reported to fetches from a
//!   token; a fetch from no token (and the rest of its pages) returns the live records only, as
//!   CloudKit does, so a device that lost its token cannot learn deletions from the feed.
//! * `resultsLimit` above 200 is taken as 200 (the most records one response carries), with
//!   `moreComing` telling the client to fetch on.
//! * `changes/zone` (like `records/changes`) refuses the default zone per zone with `BAD_REQUEST`
//!   "cannot get changes in default zone"; the change feeds refuse the public database.
//! * `zones/changes` reports zones created or deleted; `changes/database` reports zones whose records
//!   or existence changed. Custom zones cannot be created in the public database.
//! * `records/query` supports `EQUALS` on a field or a system field (`recordName`,
//!   `createdTimestamp`, `modifiedTimestamp`, `createdUserRecordName`, `modifiedUserRecordName`) and
//!   one sort key; anything else is `BAD_REQUEST` naming what the dev server does not support. Results
//!   are immediately consistent.
//! * A wrong method is `405` with a CloudKit body whose code is `BAD_REQUEST`.
//!
//! # Throttling
//!
//! * [`ServerConfig::rate_limit`]: N requests per second per user, then `429 THROTTLED` (see
//!   [`rate_limit`]).
//! * [`ServerConfig::throttle_profile`]: CloudKit's throttling per user's database, with lock-outs for
//!   clients that come back before their `retryAfter` (see [`throttle_profile`]).
//! * [`ServerConfig::time_scale`]: every server-side duration runs F times faster; `retryAfter` is
//!   told in real seconds (see [`time_scale`]).
//! * Every error body with a `retryAfter` also carries a `Retry-After` header with the same seconds.
//!
//! # Storage
//!
//! With [`ServerConfig::data_dir`] everything (records with their tags and stamps, tombstones, change
//! counters, zones, subscriptions, courier tokens) is kept in `devserver.redb` in that directory. Memory
//! is the source of truth for serving; each mutating request is committed to redb (on a blocking thread,
//! durably) before it is applied in memory and answered, so a crash loses nothing that was answered.
//! Keys and domain values are encoded with `skysync_model::codec`; subscriptions (free-form JSON) with
//! serde_json. A second server on the same directory is refused while the first runs.

pub mod auth;
mod changes;
pub mod command_line;
mod courier;
pub mod dev_view;
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
pub mod throttle_profile;
pub mod time_scale;
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
    /// Throttle each user's database as CloudKit does (see [`throttle_profile`]); `None` for no
    /// such throttling. Its `seed` makes its random draws repeatable.
    pub throttle_profile: Option<throttle_profile::ThrottleProfile>,
    /// How many times faster than real time the server's own durations run: the throttle
    /// profile, the rate limit's second, fault delays and courier timeouts (see [`time_scale`]).
    pub time_scale: time_scale::TimeScale,
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
            throttle_profile: None,
            time_scale: time_scale::TimeScale::REAL,
        }
    }
}

/// A dev server without a socket: its router serves each request in the caller's own task, so a
/// test drives the server's code and state (its fault injection included) through
/// `tower::ServiceExt::oneshot` on the router, without a network. A simulation on tokio's paused
/// clock uses it: nothing waits on a socket, so the clock decides everything.
///
/// URLs the server hands out (`redirectURL`, `webcourierURL`) name [`ServerConfig::listen`], where
/// nothing listens.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use skysync_devserver::{InProcessServer, ServerConfig};
/// use tower::ServiceExt as _;
///
/// let server = InProcessServer::start(ServerConfig::default()).await.unwrap();
/// let request = axum::http::Request::get(
///     "/database/1/iCloud.com.example.App/development/private/zones/list?ckWebAuthToken=me",
/// )
/// .body(axum::body::Body::empty())
/// .unwrap();
/// let answer = server.router().oneshot(request).await.unwrap();
/// assert_eq!(answer.status(), 200);
/// server.close().await.unwrap();
/// # });
/// ```
pub struct InProcessServer {
    router: axum::Router,
    faults: faults::Faults,
    stats: dev_view::RequestStats,
    disk: Option<persist::Disk>,
    /// Kept so that courier long-polls wait their full time; sending `true` ends them.
    stop: tokio::sync::watch::Sender<bool>,
}

impl InProcessServer {
    /// Builds the server's router and state for `config` (opening the data store if
    /// `config.data_dir` is set) without binding `config.listen`.
    pub async fn start(config: ServerConfig) -> Result<InProcessServer, DevServerError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let faults = faults::Faults::with_time_scale(config.time_scale);
        let stats = dev_view::RequestStats::default();
        let (router, disk) = server::router(
            &config,
            config.listen,
            stopped,
            faults.clone(),
            stats.clone(),
        )
        .await?;
        Ok(InProcessServer {
            router,
            faults,
            stats,
            disk,
            stop,
        })
    }

    /// The router: hand it requests (`tower::ServiceExt::oneshot` on a clone) as the socket would.
    /// Clones share the server's state.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The server's fault set, to arm faults in process (the same set `/_dev/faults` edits).
    pub fn faults(&self) -> faults::Faults {
        self.faults.clone()
    }

    /// The server's request counters (the same counters `/_dev/stats` shows).
    pub fn request_stats(&self) -> dev_view::RequestStats {
        self.stats.clone()
    }

    /// Ends open courier long-polls and closes the data file (if any), every answered write on
    /// disk. Requests still handed to the router afterwards are served from memory.
    pub async fn close(self) -> Result<(), DevServerError> {
        let _ = self.stop.send(true);
        if let Some(disk) = self.disk {
            disk.close().await?;
        }
        Ok(())
    }
}

/// A running dev server: bound, accepting and serving on the tokio runtime it was started on.
///
/// Stop it with [`DevServer::shutdown`], which lets in-flight requests finish and closes the data
/// store. Dropping it without `shutdown` stops accepting at the end of the runtime only.
pub struct DevServer {
    addr: SocketAddr,
    faults: faults::Faults,
    stats: dev_view::RequestStats,
    disk: Option<persist::Disk>,
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
        let faults = faults::Faults::with_time_scale(config.time_scale);
        let stats = dev_view::RequestStats::default();
        let (router, disk) = server::router(
            &config,
            addr,
            stopped.clone(),
            faults.clone(),
            stats.clone(),
        )
        .await?;
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
            faults,
            stats,
            disk,
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

    /// The server's fault set, to arm faults in process (the same set `/_dev/faults` edits).
    pub fn faults(&self) -> faults::Faults {
        self.faults.clone()
    }

    /// The server's request counters, to read or reset them in process (the same counters
    /// `/_dev/stats` shows).
    pub fn request_stats(&self) -> dev_view::RequestStats {
        self.stats.clone()
    }

    /// The view inside this server (`/_dev/stats`, `/_dev/records/…`): its URLs.
    pub fn dev_view(&self) -> dev_view::DevView {
        dev_view::DevView::new(self.base_url())
    }

    /// Stops accepting, lets in-flight requests finish (open courier long-polls answer at once),
    /// and returns when serving has ended, every write is on disk and the data file is closed (so
    /// that a new server can open the same directory at once).
    pub async fn shutdown(self) -> Result<(), DevServerError> {
        let _ = self.stop.send(true);
        let served = match self.serving.await {
            Ok(result) => result.map_err(DevServerError::Serve),
            Err(join) => Err(DevServerError::Serve(std::io::Error::other(format!(
                "the serving task failed: {join}"
            )))),
        };
        // Every answered write is already committed; closing releases the file for the next server.
        if let Some(disk) = self.disk {
            disk.close().await?;
        }
        served
    }
}
