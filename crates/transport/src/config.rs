//! Where a client sends its requests and how patient it is.

use std::fmt;
use std::time::Duration;

/// Apple's CloudKit Web Services host.
pub const APPLE_BASE_URL: &str = "https://api.apple-cloudkit.com";

/// The container environment (a segment of every URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Environment {
    /// `development`: the schema can still change.
    #[default]
    Development,
    /// `production`.
    Production,
}

impl Environment {
    /// The URL segment (also the `apnsEnvironment` of `tokens/create`).
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which database of the container (a segment of every URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DatabaseScope {
    /// `public`: shared by all users of the app; the only one server-to-server keys may use.
    Public,
    /// `private`: the signed-in user's own data (needs a web auth token).
    #[default]
    Private,
    /// `shared`: zones other users shared with the signed-in user.
    Shared,
}

impl DatabaseScope {
    /// The URL segment.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseScope::Public => "public",
            DatabaseScope::Private => "private",
            DatabaseScope::Shared => "shared",
        }
    }
}

impl fmt::Display for DatabaseScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timeouts and limits of a client. The defaults suit Apple's servers over a mobile network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long to wait for a connection (TCP + TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// How long one request may take from sending to the last byte of the answer. Default 60 s.
    pub request_timeout: Duration,
    /// The largest answer read, in bytes after decompression; a bigger one is refused with
    /// `CloudError::ResponseTooLarge` (transient) as soon as its declared length or the bytes read
    /// pass it, so a server that streams for ever costs at most this much memory. Default
    /// [`skysync_model::MAX_RESPONSE_BYTES`] (204 MiB: 200 records at CloudKit's 1 MiB record
    /// limit, plus 4 MiB), which every answer within CloudKit's limits fits. An app that lowers it
    /// should lower `changes_page_size` with it, or a page of large records never fits.
    pub max_response_bytes: usize,
    /// `resultsLimit` of a change-feed page; `None` leaves it to the server (200 at most).
    pub changes_page_size: Option<u32>,
    /// How long one notification long-poll may stay open before the client asks again. Default 90 s.
    pub courier_poll_timeout: Duration,
    /// How many "zone changed" signals the notification stream buffers. Default 64.
    pub notification_capacity: usize,
    /// The first wait after a failed notification poll; it doubles on each further failure.
    /// Default 1 s.
    pub courier_retry_min: Duration,
    /// The longest wait between failed notification polls. Default 60 s.
    pub courier_retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_response_bytes: skysync_model::MAX_RESPONSE_BYTES,
            changes_page_size: None,
            courier_poll_timeout: Duration::from_secs(90),
            notification_capacity: 64,
            courier_retry_min: Duration::from_secs(1),
            courier_retry_max: Duration::from_secs(60),
        }
    }
}
