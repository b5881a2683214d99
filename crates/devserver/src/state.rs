//! The server's data, in memory: databases (per container, environment, scope and owner), their zones,
//! records (with tombstones), subscriptions, and the courier tokens handed out.
//!
//! Every change is expressed as a list of [`Write`]s, planned against the current state, written to
//! disk (if the server persists), and only then applied here, so that memory and disk always hold
//! the same thing.
//!
//! Each database has one change counter. Every record write (or delete) and every zone creation or
//! deletion takes the next counter value. A record's change tag is its counter in hex, and a zone's
//! sync token names a counter value: the changes after a token are the records whose counter is
//! larger, in counter order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use skysync_model::wire::{Subscription, WireZoneId};
use skysync_model::{DEFAULT_ZONE_NAME, Record, ZoneId};

use crate::auth::checksum;

/// Which of a container's databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Scope {
    /// Shared by every user of the container.
    Public,
    /// One per user.
    Private,
    /// One per user: the zones others share with them (none, on this server).
    Shared,
}

impl Scope {
    /// The scope a URL path segment names.
    pub(crate) fn parse(segment: &str) -> Option<Scope> {
        Some(match segment {
            "public" => Scope::Public,
            "private" => Scope::Private,
            "shared" => Scope::Shared,
            _ => return None,
        })
    }

    /// CloudKit's internal name of the database type, as used in its error messages.
    pub(crate) fn internal_name(self) -> &'static str {
        match self {
            Scope::Public => "publicdb",
            Scope::Private => "privatedb",
            Scope::Shared => "shareddb",
        }
    }
}

/// Which database: container, environment, scope and (for private and shared) the owning user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct DbKey {
    /// e.g. `iCloud.com.example.App`.
    pub(crate) container: String,
    /// `development` or `production`.
    pub(crate) environment: String,
    /// Public, private or shared.
    pub(crate) scope: Scope,
    /// The owner's user record name; empty for the public database.
    pub(crate) owner: String,
}

impl DbKey {
    /// The owner record name zones of this database report.
    pub(crate) fn zone_owner(&self) -> String {
        if self.owner.is_empty() {
            "__defaultOwner__".to_owned()
        } else {
            self.owner.clone()
        }
    }

    /// The wire zone id of one of this database's zones, as responses carry it.
    pub(crate) fn wire_zone_id(&self, zone_name: &str) -> WireZoneId {
        let mut wire = WireZoneId::with_type(&ZoneId::new(zone_name));
        wire.owner_record_name = Some(self.zone_owner());
        wire
    }

    fn identity(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{:?}\u{0}{}",
            self.container, self.environment, self.scope, self.owner
        )
    }
}

/// What is kept about a zone besides its records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ZoneMeta {
    /// The counter value at the zone's creation (0 for the default zone). Tokens of an earlier
    /// zone of the same name carry another generation and are refused.
    pub(crate) generation: u64,
    /// The zone was deleted (kept so that change feeds can report it).
    pub(crate) deleted: bool,
    /// The counter of the zone's latest change of any kind.
    pub(crate) changed_at: u64,
    /// The counter of the zone's latest creation or deletion.
    pub(crate) meta_changed_at: u64,
}

impl ZoneMeta {
    /// A live zone created at `counter` (0 for the default zone, which every database has).
    pub(crate) fn created_at(counter: u64) -> ZoneMeta {
        ZoneMeta {
            generation: counter,
            deleted: false,
            changed_at: counter,
            meta_changed_at: counter,
        }
    }
}

/// A record as kept: the record with its system fields (`deleted` for a tombstone) and the counter
/// of its latest write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    /// The record; a tombstone has no fields and `system.deleted` set.
    pub(crate) record: Record,
    /// The counter of the write that produced this version.
    pub(crate) counter: u64,
}

impl StoredRecord {
    /// Whether this is a tombstone of a deleted record.
    pub(crate) fn is_tombstone(&self) -> bool {
        self.record.system.as_ref().is_some_and(|s| s.deleted)
    }
}

/// A zone with its records.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    /// Its metadata.
    pub(crate) meta: ZoneMeta,
    /// Records and tombstones by name.
    pub(crate) records: HashMap<String, StoredRecord>,
    /// Record names by the counter of their latest write: the zone's change feed.
    pub(crate) by_counter: BTreeMap<u64, String>,
}

impl Zone {
    /// An empty zone with `meta`.
    pub(crate) fn new(meta: ZoneMeta) -> Zone {
        Zone {
            meta,
            records: HashMap::new(),
            by_counter: BTreeMap::new(),
        }
    }

    /// Whether the zone exists (is not deleted).
    pub(crate) fn is_live(&self) -> bool {
        !self.meta.deleted
    }

    /// A live record by name (not a tombstone).
    pub(crate) fn live_record(&self, name: &str) -> Option<&StoredRecord> {
        self.records.get(name).filter(|r| !r.is_tombstone())
    }
}

/// A subscription and the user it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSubscription {
    /// The user who created it (who is notified).
    pub(crate) subscriber: String,
    /// The subscription as the client defined it.
    pub(crate) subscription: Subscription,
}

/// One database.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    /// The server instance's epoch (see [`State::epoch`]), mixed into every token of this database.
    pub(crate) epoch: u64,
    /// The latest change counter value handed out.
    pub(crate) counter: u64,
    /// Zones by name, including deleted ones.
    pub(crate) zones: BTreeMap<String, Zone>,
    /// Subscriptions by (subscriber, subscription id).
    pub(crate) subscriptions: BTreeMap<(String, String), StoredSubscription>,
}

impl Database {
    /// An empty database (only its default zone) of a server with `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        let mut zones = BTreeMap::new();
        zones.insert(
            DEFAULT_ZONE_NAME.to_owned(),
            Zone::new(ZoneMeta::created_at(0)),
        );
        Database {
            epoch,
            counter: 0,
            zones,
            subscriptions: BTreeMap::new(),
        }
    }

    /// A live zone by name.
    pub(crate) fn live_zone(&self, name: &str) -> Option<&Zone> {
        self.zones.get(name).filter(|z| z.is_live())
    }
}

/// Who a courier token delivers notifications to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct CourierOwner {
    /// The container.
    pub(crate) container: String,
    /// The environment.
    pub(crate) environment: String,
    /// The user.
    pub(crate) user: String,
}

/// One change to the server's data. Planned first, then persisted, then applied.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    /// The database's change counter moved on.
    Counter {
        /// Which database.
        db: DbKey,
        /// The new counter value.
        counter: u64,
    },
    /// A zone was created, changed or deleted (its records are removed by separate writes).
    Zone {
        /// Which database.
        db: DbKey,
        /// The zone's name.
        zone: String,
        /// Its new metadata.
        meta: ZoneMeta,
    },
    /// A record (or its tombstone) was written.
    Record {
        /// Which database.
        db: DbKey,
        /// The zone's name.
        zone: String,
        /// The new version.
        stored: StoredRecord,
    },
    /// A record (or tombstone) was removed with its zone.
    RemoveRecord {
        /// Which database.
        db: DbKey,
        /// The zone's name.
        zone: String,
        /// The record's name.
        record_name: String,
    },
    /// A subscription was created or updated.
    Subscription {
        /// Which database.
        db: DbKey,
        /// The subscription and its owner.
        stored: StoredSubscription,
    },
    /// A subscription was deleted.
    RemoveSubscription {
        /// Which database.
        db: DbKey,
        /// Its owner.
        subscriber: String,
        /// Its id.
        id: String,
    },
    /// A courier token was handed out or registered.
    CourierToken {
        /// The token.
        token: String,
        /// Whose notifications it receives.
        owner: CourierOwner,
    },
}

/// Everything the server holds.
#[derive(Debug)]
pub(crate) struct State {
    /// A random number chosen when the data was first created (kept with it on disk, new for each
    /// in-memory server): tokens carry it, so that tokens of another server's data are refused.
    pub(crate) epoch: u64,
    /// Databases by key; absent ones are empty (only a default zone).
    pub(crate) databases: HashMap<DbKey, Database>,
    /// Courier tokens and whom they belong to.
    pub(crate) courier_tokens: HashMap<String, CourierOwner>,
}

impl Default for State {
    /// An empty state with a fresh random epoch.
    fn default() -> Self {
        State::new(random_epoch())
    }
}

/// A fresh random epoch.
pub(crate) fn random_epoch() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(epoch)
}

impl State {
    /// An empty state with `epoch`.
    pub(crate) fn new(epoch: u64) -> State {
        State {
            epoch,
            databases: HashMap::new(),
            courier_tokens: HashMap::new(),
        }
    }

    /// The database stored under `key`, or an empty one if nothing was ever written to it.
    pub(crate) fn database(&self, key: &DbKey) -> std::borrow::Cow<'_, Database> {
        match self.databases.get(key) {
            Some(db) => std::borrow::Cow::Borrowed(db),
            None => std::borrow::Cow::Owned(Database::new(self.epoch)),
        }
    }

    /// Applies planned writes (already persisted) in order.
    pub(crate) fn apply(&mut self, writes: Vec<Write>) {
        for write in writes {
            self.apply_one(write);
        }
    }

    fn apply_one(&mut self, write: Write) {
        let epoch = self.epoch;
        match write {
            Write::Counter { db, counter } => {
                let database = self
                    .databases
                    .entry(db)
                    .or_insert_with(|| Database::new(epoch));
                database.counter = database.counter.max(counter);
            }
            Write::Zone { db, zone, meta } => {
                let database = self
                    .databases
                    .entry(db)
                    .or_insert_with(|| Database::new(epoch));
                database
                    .zones
                    .entry(zone)
                    .and_modify(|z| z.meta = meta.clone())
                    .or_insert_with(|| Zone::new(meta));
            }
            Write::Record { db, zone, stored } => {
                let database = self
                    .databases
                    .entry(db)
                    .or_insert_with(|| Database::new(epoch));
                let zone = database.zones.entry(zone).or_insert_with(|| {
                    // Writes always carry their zone's metadata first; this is only reached by
                    // damaged stored data, where a live zone is the least surprising repair.
                    Zone::new(ZoneMeta::created_at(stored.counter))
                });
                let name = stored.record.id.record_name.clone();
                zone.by_counter.insert(stored.counter, name.clone());
                if let Some(previous) = zone.records.insert(name, stored) {
                    zone.by_counter.remove(&previous.counter);
                }
            }
            Write::RemoveRecord {
                db,
                zone,
                record_name,
            } => {
                if let Some(zone) = self
                    .databases
                    .get_mut(&db)
                    .and_then(|d| d.zones.get_mut(&zone))
                    && let Some(previous) = zone.records.remove(&record_name)
                {
                    zone.by_counter.remove(&previous.counter);
                }
            }
            Write::Subscription { db, stored } => {
                let database = self
                    .databases
                    .entry(db)
                    .or_insert_with(|| Database::new(epoch));
                let key = (
                    stored.subscriber.clone(),
                    stored.subscription.subscription_id.clone(),
                );
                database.subscriptions.insert(key, stored);
            }
            Write::RemoveSubscription { db, subscriber, id } => {
                if let Some(database) = self.databases.get_mut(&db) {
                    database.subscriptions.remove(&(subscriber, id));
                }
            }
            Write::CourierToken { token, owner } => {
                self.courier_tokens.insert(token, owner);
            }
        }
    }
}

/// The changes of one request to one database: counter values handed out so far and the writes.
pub(crate) struct Changes {
    db: DbKey,
    counter: u64,
    start: u64,
    writes: Vec<Write>,
    zones: BTreeMap<String, ZoneMeta>,
}

impl Changes {
    /// Starts planning changes to `database` (stored under `db`).
    pub(crate) fn new(db: &DbKey, database: &Database) -> Changes {
        Changes {
            db: db.clone(),
            counter: database.counter,
            start: database.counter,
            writes: Vec::new(),
            zones: BTreeMap::new(),
        }
    }

    /// The next counter value.
    pub(crate) fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Records a record write in `zone` (whose current metadata is `meta`) at `stored.counter`.
    pub(crate) fn put_record(&mut self, zone: &str, meta: &ZoneMeta, stored: StoredRecord) {
        let entry = self
            .zones
            .entry(zone.to_owned())
            .or_insert_with(|| meta.clone());
        entry.changed_at = entry.changed_at.max(stored.counter);
        self.writes.push(Write::Record {
            db: self.db.clone(),
            zone: zone.to_owned(),
            stored,
        });
    }

    /// Records new metadata for a zone (creation or deletion).
    pub(crate) fn put_zone(&mut self, zone: &str, meta: ZoneMeta) {
        self.zones.insert(zone.to_owned(), meta);
    }

    /// Records the removal of a record together with its deleted zone.
    pub(crate) fn remove_record(&mut self, zone: &str, record_name: &str) {
        self.writes.push(Write::RemoveRecord {
            db: self.db.clone(),
            zone: zone.to_owned(),
            record_name: record_name.to_owned(),
        });
    }

    /// Records any other write.
    pub(crate) fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    /// The writes to persist and apply: zone metadata first, then records, then the counter.
    pub(crate) fn into_writes(self) -> Vec<Write> {
        let mut writes: Vec<Write> = self
            .zones
            .into_iter()
            .map(|(zone, meta)| Write::Zone {
                db: self.db.clone(),
                zone,
                meta,
            })
            .collect();
        writes.extend(self.writes);
        if self.counter > self.start {
            writes.push(Write::Counter {
                db: self.db,
                counter: self.counter,
            });
        }
        writes
    }
}

/// The change tag of a record written at `counter`: a short opaque string.
pub(crate) fn change_tag(counter: u64) -> String {
    format!("{counter:x}")
}

/// The kinds of opaque position this server hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A zone's `syncToken`.
    Zone,
    /// The database's `syncToken` (`changes/database`).
    Database,
    /// The database's `metaSyncToken` (`zones/changes`).
    Meta,
    /// A query's `continuationMarker`.
    Query,
    /// A zone's `syncToken` in the middle of a fetch that started from no token: besides the
    /// zone's generation and position it carries where the refetch started, so that its later
    /// pages skip the tombstones written before then, as the first page did.
    Refetch,
}

impl TokenKind {
    fn tag(self) -> &'static str {
        match self {
            TokenKind::Zone => "z",
            TokenKind::Database => "d",
            TokenKind::Meta => "m",
            TokenKind::Query => "q",
            TokenKind::Refetch => "r",
        }
    }
}

/// Makes an opaque token `{kind}{a}.{b}.{check}` for database `db` (of a server with `epoch`) and
/// `scope` (a zone name, a query).
pub(crate) fn make_token(
    kind: TokenKind,
    db: &DbKey,
    epoch: u64,
    scope: &str,
    a: u64,
    b: u64,
) -> String {
    make_token_of(kind, db, epoch, scope, &[a, b])
}

/// Makes an opaque token carrying any number of `positions`: `{kind}{p1}.{p2}….{check}`, the check
/// covering the kind, the epoch, the database, `scope` and every position.
pub(crate) fn make_token_of(
    kind: TokenKind,
    db: &DbKey,
    epoch: u64,
    scope: &str,
    positions: &[u64],
) -> String {
    let identity = db.identity();
    let epoch = epoch.to_be_bytes();
    let encoded: Vec<[u8; 8]> = positions.iter().map(|p| p.to_be_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![
        kind.tag().as_bytes(),
        &epoch,
        identity.as_bytes(),
        scope.as_bytes(),
    ];
    parts.extend(encoded.iter().map(|bytes| bytes.as_slice()));
    let check = checksum(&parts);
    let numbers: Vec<String> = positions.iter().map(|p| format!("{p:x}")).collect();
    format!("{}{}.{check}", kind.tag(), numbers.join("."))
}

/// Reads a token made by [`make_token`] for the same kind, database, epoch and scope; `None` if it
/// is malformed or was made for something else.
pub(crate) fn read_token(
    kind: TokenKind,
    db: &DbKey,
    epoch: u64,
    scope: &str,
    token: &str,
) -> Option<(u64, u64)> {
    match read_token_of(kind, db, epoch, scope, token, 2)?.as_slice() {
        [a, b] => Some((*a, *b)),
        _ => None,
    }
}

/// Reads a token made by [`make_token_of`] with `count` positions for the same kind, database,
/// epoch and scope; `None` if it is malformed or was made for something else.
pub(crate) fn read_token_of(
    kind: TokenKind,
    db: &DbKey,
    epoch: u64,
    scope: &str,
    token: &str,
    count: usize,
) -> Option<Vec<u64>> {
    let rest = token.strip_prefix(kind.tag())?;
    let parts: Vec<&str> = rest.split('.').collect();
    let (check, numbers) = parts.split_last()?;
    if numbers.len() != count || check.is_empty() {
        return None;
    }
    let positions = numbers
        .iter()
        .map(|n| u64::from_str_radix(n, 16).ok())
        .collect::<Option<Vec<u64>>>()?;
    (make_token_of(kind, db, epoch, scope, &positions) == token).then_some(positions)
}

/// Zone names a change touched, with the record types written in each (for notifications).
pub(crate) type TouchedZones = BTreeMap<String, BTreeSet<String>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: &str) -> DbKey {
        DbKey {
            container: "iCloud.test".into(),
            environment: "development".into(),
            scope: Scope::Private,
            owner: owner.into(),
        }
    }

    #[test]
    fn tokens_read_back_only_for_their_kind_database_and_scope() {
        let token = make_token(TokenKind::Zone, &key("_a"), 7, "Notes", 3, 17);
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Notes", &token),
            Some((3, 17))
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_b"), 7, "Notes", &token),
            None
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Other", &token),
            None
        );
        assert_eq!(
            read_token(TokenKind::Database, &key("_a"), 7, "Notes", &token),
            None
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Notes", "garbage"),
            None
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Notes", ""),
            None
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 8, "Notes", &token),
            None,
            "another server's token"
        );
        let forged = token.replace("z3.11.", "z3.12.");
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Notes", &forged),
            None
        );
    }

    #[test]
    fn tokens_with_three_positions_read_back_only_with_three() {
        let token = make_token_of(TokenKind::Refetch, &key("_a"), 7, "Notes", &[1, 5, 9]);
        assert_eq!(
            read_token_of(TokenKind::Refetch, &key("_a"), 7, "Notes", &token, 3),
            Some(vec![1, 5, 9])
        );
        assert_eq!(
            read_token_of(TokenKind::Refetch, &key("_a"), 7, "Notes", &token, 2),
            None
        );
        assert_eq!(
            read_token(TokenKind::Zone, &key("_a"), 7, "Notes", &token),
            None,
            "a refetch token is not a zone token"
        );
        let forged = token.replace("r1.5.9.", "r1.5.a.");
        assert_eq!(
            read_token_of(TokenKind::Refetch, &key("_a"), 7, "Notes", &forged, 3),
            None
        );
        assert_eq!(
            make_token(TokenKind::Zone, &key("_a"), 7, "Notes", 3, 17),
            make_token_of(TokenKind::Zone, &key("_a"), 7, "Notes", &[3, 17]),
            "two-position tokens keep their form, so tokens stored by clients stay valid"
        );
    }
}
