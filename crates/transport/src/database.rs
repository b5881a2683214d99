//! The [`CloudDatabase`] trait: everything the session asks of CloudKit, with typed answers.

use crate::error::TransportError;
use futures::Stream;
use skysync_model::wire::{
    ModifyRecordsRequest, Subscription, SubscriptionType, UserIdentity, WireZoneId,
};
use skysync_model::{
    ChangeToken, CloudError, ErrorClass, PendingChange, Record, RecordId, ServerError,
    SystemFields, ZoneId,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// One `records/modify` request: changes to records of one zone, sent together.
#[derive(Clone, Debug, PartialEq)]
pub struct ModifyBatch {
    zone: ZoneId,
    changes: Vec<PendingChange>,
    atomic: bool,
}

impl ModifyBatch {
    /// A batch of changes to records of `zone`, not atomic (each change succeeds or fails on its own,
    /// so one rejected change does not hold the others back).
    ///
    /// Each change is sent as: a save with a change tag → `update`; a save without one → `create`
    /// (an existing record answers `EXISTS`, a conflict); a delete with a tag → `delete`; a delete
    /// without one → `forceDelete`.
    ///
    /// Fails with [`TransportError::MixedZones`] if a change is for a record of another zone.
    pub fn new(zone: ZoneId, changes: Vec<PendingChange>) -> Result<Self, TransportError> {
        if let Some(stray) = changes.iter().find(|c| c.record_id().zone != zone) {
            return Err(TransportError::MixedZones {
                batch_zone: zone.to_string(),
                record: stray.record_id().to_string(),
            });
        }
        Ok(Self {
            zone,
            changes,
            atomic: false,
        })
    }

    /// Makes the batch all-or-nothing (custom zones only; CloudKit ignores it in the default zone).
    /// A failed atomic batch answers every change: the culprit with its own error, the others with
    /// `ATOMIC_ERROR` (transient: send them again).
    pub fn atomic(mut self, atomic: bool) -> Self {
        self.atomic = atomic;
        self
    }

    /// The zone.
    pub fn zone(&self) -> &ZoneId {
        &self.zone
    }

    /// The changes, in the order they are sent and answered.
    pub fn changes(&self) -> &[PendingChange] {
        &self.changes
    }

    /// Whether the batch is atomic.
    pub fn is_atomic(&self) -> bool {
        self.atomic
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The exact request body: each change's operation, the zone, `atomic`, and `desiredKeys: []`
    /// (the answer carries only system fields: the session already holds the fields it sent).
    pub fn to_request(&self) -> ModifyRecordsRequest {
        ModifyRecordsRequest {
            operations: self
                .changes
                .iter()
                .map(PendingChange::to_operation)
                .collect(),
            zone_id: Some(WireZoneId::from(&self.zone)),
            atomic: Some(self.atomic),
            desired_keys: Some(Some(Vec::new())),
            numbers_as_strings: None,
        }
    }
}

/// What became of one change of a [`ModifyBatch`]. The answers come in the order of the changes.
#[derive(Clone, Debug, PartialEq)]
pub enum ModifyOutcome {
    /// The record is saved; store these system fields (the new change tag) with it.
    Saved {
        /// The record.
        id: RecordId,
        /// Its system fields as the server now has them.
        system: SystemFields,
    },
    /// The record is deleted on the server (also when the server no longer had it: the delete's goal
    /// is reached either way).
    Deleted {
        /// The record.
        id: RecordId,
    },
    /// The server holds a different version (`CONFLICT`, or `EXISTS` for a create). Resolve with
    /// `server_record` and send again with its change tag.
    Conflict {
        /// The record.
        id: RecordId,
        /// The server's current copy, with its system fields, when the answer carried it. `None`:
        /// the answer carried no usable copy; look the record up
        /// ([`CloudDatabase::lookup_records`]) as an operation of its own, under its own permit.
        server_record: Option<Box<Record>>,
        /// The server's error, as it came.
        error: ServerError,
    },
    /// The change failed; [`CloudError::class`] says what to do (retry, park, halt, ...).
    Failed {
        /// The record.
        id: RecordId,
        /// Why.
        error: CloudError,
    },
}

impl ModifyOutcome {
    /// The record this outcome is about.
    pub fn id(&self) -> &RecordId {
        match self {
            ModifyOutcome::Saved { id, .. }
            | ModifyOutcome::Deleted { id }
            | ModifyOutcome::Conflict { id, .. }
            | ModifyOutcome::Failed { id, .. } => id,
        }
    }

    /// The error class of a conflict or failure; `None` when the change went through.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            ModifyOutcome::Saved { .. } | ModifyOutcome::Deleted { .. } => None,
            ModifyOutcome::Conflict { .. } => Some(ErrorClass::Conflict),
            ModifyOutcome::Failed { error, .. } => Some(error.class()),
        }
    }
}

/// What a lookup found for one record name. The answers come in the order of the names.
#[derive(Clone, Debug, PartialEq)]
pub enum LookupOutcome {
    /// The record, with all its fields and system fields.
    Found(Record),
    /// The server has no such record.
    NotFound(RecordId),
    /// The record could not be fetched or read (e.g. a field of a type this client does not know:
    /// [`CloudError::Incompatible`]).
    Failed {
        /// The record.
        id: RecordId,
        /// Why.
        error: CloudError,
    },
}

/// One page of a zone's change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneChangesPage {
    /// The zone.
    pub zone: ZoneId,
    /// Records created or changed since the token, with their system fields.
    pub changed: Vec<Record>,
    /// Records deleted since the token.
    pub deleted: Vec<RecordId>,
    /// The token to fetch from next; store it in the same transaction as this page.
    pub token: ChangeToken,
    /// Whether another page follows right away.
    pub more_coming: bool,
}

/// One page of the database's change feed: which zones changed.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseChangesPage {
    /// Zones with changes since the token.
    pub changed_zones: Vec<ZoneId>,
    /// Zones deleted since the token.
    pub deleted_zones: Vec<ZoneId>,
    /// The token to fetch from next.
    pub token: ChangeToken,
    /// Whether another page follows right away.
    pub more_coming: bool,
}

/// A signal that a zone changed on the server (a subscription fired): fetch its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneChanged {
    /// The zone.
    pub zone: ZoneId,
    /// The subscription that fired.
    pub subscription_id: String,
}

/// A stream of [`ZoneChanged`] signals from the server's notification long-poll.
///
/// It is bounded: when the reader falls behind, the poller waits. An `Err` item is the last one: the
/// poller met an error it cannot retry (e.g. rejected credentials). Transient failures are retried by
/// the poller with backoff and never show up here. Dropping the stream stops the poller.
pub struct ZoneNotifications {
    receiver: tokio::sync::mpsc::Receiver<Result<ZoneChanged, CloudError>>,
}

impl ZoneNotifications {
    /// A stream reading from `receiver`. The sending side is the poller (or, in tests, a script).
    pub fn new(receiver: tokio::sync::mpsc::Receiver<Result<ZoneChanged, CloudError>>) -> Self {
        Self { receiver }
    }

    /// The next signal; `None` once the poller stopped.
    pub async fn next_signal(&mut self) -> Option<Result<ZoneChanged, CloudError>> {
        self.receiver.recv().await
    }
}

impl std::fmt::Debug for ZoneNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneNotifications")
            .field("buffered", &self.receiver.len())
            .finish()
    }
}

impl Stream for ZoneNotifications {
    type Item = Result<ZoneChanged, CloudError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// A zone subscription with the given id: fires on any change in `zone`.
pub fn zone_subscription(subscription_id: impl Into<String>, zone: &ZoneId) -> Subscription {
    Subscription {
        zone_id: Some(WireZoneId::from(zone)),
        subscription_id: subscription_id.into(),
        subscription_type: SubscriptionType::Zone,
        query: None,
        fires_on: None,
        fires_once: None,
        notification_info: None,
        zone_wide: None,
    }
}

/// Everything the sync session asks of CloudKit. [`crate::CloudKitClient`] implements it over HTTP;
/// a test can implement it with a script.
///
/// Every method returns the model's [`CloudError`] on failure, whose [`CloudError::class`] tells the
/// session what to do. Item-level failures of a batch come back inside `Ok`, one per item.
///
/// The methods are `async` with `Send` futures (return-position `impl Future + Send`), so the trait
/// is used through generics, not `dyn`: [`crate::TransportActor`] is generic over it and
/// [`crate::TransportHandle`] is the type-erased, cloneable face the session holds. That costs no
/// boxing per call and needs no macro.
pub trait CloudDatabase: Send + Sync + 'static {
    /// Sends one batch of changes (`records/modify`). A conflict comes with the server's copy when
    /// the answer carried one; otherwise the caller looks it up as an operation of its own.
    fn modify_records(
        &self,
        batch: ModifyBatch,
    ) -> impl Future<Output = Result<Vec<ModifyOutcome>, CloudError>> + Send;

    /// Fetches records of `zone` by name (`records/lookup`), one answer per name.
    fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> impl Future<Output = Result<Vec<LookupOutcome>, CloudError>> + Send;

    /// Fetches one page of `zone`'s changes since `since` (`None`: from the start) via `changes/zone`.
    /// A record this client cannot read fails the whole page ([`CloudError::Incompatible`]) so that the
    /// token never moves past it.
    fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> impl Future<Output = Result<ZoneChangesPage, CloudError>> + Send;

    /// Fetches one page of the database's zone changes (`changes/database`; private and shared only).
    fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> impl Future<Output = Result<DatabaseChangesPage, CloudError>> + Send;

    /// Creates the zones that do not exist yet (`zones/modify`); existing zones are left as they are.
    fn ensure_zones(
        &self,
        zones: Vec<ZoneId>,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Deletes zones and everything in them; a zone already gone counts as deleted.
    fn delete_zones(
        &self,
        zones: Vec<ZoneId>,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Creates the subscription if it does not exist (`subscriptions/modify`, idempotent by id).
    fn ensure_subscription(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Who the credentials belong to (`users/caller`).
    fn current_user(&self) -> impl Future<Output = Result<UserIdentity, CloudError>> + Send;

    /// Starts listening for "zone changed" signals. Fails if the notification channel cannot be set
    /// up; afterwards the stream reports only what it cannot recover from.
    fn notifications(&self) -> impl Future<Output = Result<ZoneNotifications, CloudError>> + Send;
}

impl<T: CloudDatabase> CloudDatabase for Arc<T> {
    fn modify_records(
        &self,
        batch: ModifyBatch,
    ) -> impl Future<Output = Result<Vec<ModifyOutcome>, CloudError>> + Send {
        T::modify_records(self, batch)
    }

    fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> impl Future<Output = Result<Vec<LookupOutcome>, CloudError>> + Send {
        T::lookup_records(self, zone, record_names)
    }

    fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> impl Future<Output = Result<ZoneChangesPage, CloudError>> + Send {
        T::fetch_zone_changes(self, zone, since)
    }

    fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> impl Future<Output = Result<DatabaseChangesPage, CloudError>> + Send {
        T::fetch_database_changes(self, since)
    }

    fn ensure_zones(
        &self,
        zones: Vec<ZoneId>,
    ) -> impl Future<Output = Result<(), CloudError>> + Send {
        T::ensure_zones(self, zones)
    }

    fn delete_zones(
        &self,
        zones: Vec<ZoneId>,
    ) -> impl Future<Output = Result<(), CloudError>> + Send {
        T::delete_zones(self, zones)
    }

    fn ensure_subscription(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<(), CloudError>> + Send {
        T::ensure_subscription(self, subscription)
    }

    fn current_user(&self) -> impl Future<Output = Result<UserIdentity, CloudError>> + Send {
        T::current_user(self)
    }

    fn notifications(&self) -> impl Future<Output = Result<ZoneNotifications, CloudError>> + Send {
        T::notifications(self)
    }
}
