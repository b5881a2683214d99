//! How a session behaves.

use skysync_model::ZoneId;
use skysync_queue::BatchLimits;
use std::time::Duration;

/// What to do when the signed-in account changes (another `userRecordName` than the one the local
/// data belongs to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountChangePolicy {
    /// Tell the app ([`crate::SyncEvent::AccountChanged`]), wait the grace period so it can export
    /// what it needs, then clear the old account's local data and pending changes and sync the new
    /// account from scratch. (What CKSyncEngine does.)
    ClearLocalData,
    /// Tell the app and halt; nothing is cleared or sent until the app decides.
    Halt,
}

/// A guard against records written by a newer version of the app.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SchemaGuard {
    /// The INT64 field every record carries with its schema version, if the app versions its
    /// records. A fetched record whose version is above `max_version` halts the engine.
    pub version_field: Option<String>,
    /// The newest schema version this build understands.
    pub max_version: i64,
    /// Per record type, the fields this build knows; a fetched record with another field halts
    /// the engine (strict mode). Empty: no check.
    pub known_fields: Vec<(String, Vec<String>)>,
}

/// How the session behaves.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The zones to sync (created on the server if missing).
    pub zones: Vec<ZoneId>,
    /// Subscription ids are this prefix and the zone name.
    pub subscription_prefix: String,
    /// How often to fetch when nothing else says changes are waiting (jittered by ±10 %).
    pub fetch_interval: Duration,
    /// How long after a local change the send starts (more changes made meanwhile join it).
    pub send_debounce: Duration,
    /// How long a batch that is not full may wait for more changes while the app keeps saving
    /// (each within `send_debounce` of the one before): a stream of saves then goes out in full
    /// batches instead of one request per few records. A batch goes at once when full, and after
    /// `send_debounce` of quiet. Default 1 s.
    pub max_send_delay: Duration,
    /// How large a batch may grow.
    pub batch_limits: BatchLimits,
    /// The first cool-down after an exhausted halt; it doubles with each one, up to an hour.
    pub exhausted_cool_down: Duration,
    /// The wait after a component did not answer before the operation is redone.
    pub local_retry: Duration,
    /// What to do when the account changes.
    pub account_change: AccountChangePolicy,
    /// How long the app has to export the old account's data before it is cleared.
    pub account_change_grace: Duration,
    /// The schema guard.
    pub schema: SchemaGuard,
    /// Whether to listen for push notifications of zone changes.
    pub notifications: bool,
    /// How many pages of one change feed (a zone's, or the database's) one fetch takes while the
    /// server keeps saying `moreComing`; then the feed waits for the next periodic fetch (or
    /// `sync_now`) and other work, such as sending, goes first. Bounds what a feed without end
    /// costs. Default 1,000 (200,000 records at 200 a page: a fresh device fetches a zone of that
    /// size in one pass; a larger one comes in over several, one per `fetch_interval`).
    pub max_pages_per_fetch: u32,
    /// How many times in a row `records/modify` may answer CONFLICT for one record before its
    /// change is parked instead of resolved and sent again (a server whose change tag changes on
    /// every read would otherwise keep the engine resolving for ever). Default 5.
    pub max_conflicts_per_record: u32,
}

impl SessionConfig {
    /// A configuration syncing `zones` with the defaults.
    pub fn new(zones: Vec<ZoneId>) -> Self {
        Self {
            zones,
            subscription_prefix: "skysync-".into(),
            fetch_interval: Duration::from_secs(30),
            send_debounce: Duration::from_millis(100),
            max_send_delay: Duration::from_secs(1),
            batch_limits: BatchLimits::default(),
            exhausted_cool_down: Duration::from_secs(60),
            local_retry: Duration::from_secs(1),
            account_change: AccountChangePolicy::ClearLocalData,
            account_change_grace: Duration::from_secs(5),
            schema: SchemaGuard::default(),
            notifications: true,
            max_pages_per_fetch: 1_000,
            max_conflicts_per_record: 5,
        }
    }

    /// The subscription id of a zone.
    pub fn subscription_id(&self, zone: &ZoneId) -> String {
        format!("{}{}", self.subscription_prefix, zone.zone_name)
    }
}
