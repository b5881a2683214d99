//! The simulated network: a [`CloudDatabase`] that hands every request to the dev server's router
//! in the requesting task, through a link the simulation can take down (an offline device) or cut
//! for good (a device that lost power).
//!
//! Requests are the real CloudKit Web Services requests (the model's wire types, the dev server's
//! routes, authentication, limits and fault injection); only the socket is missing. Answers are read
//! the way the transport's HTTP client reads them: an error body is a typed [`CloudError`], a
//! `records/modify` answer is one outcome per change, a body that breaks off is a lost answer.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync_model::wire::{
    DatabaseChangesRequest, DatabaseChangesResponse, ErrorBody, LookupRecordsRequest,
    ModifySubscriptionsRequest, ModifyZonesRequest, RecordLookup, RecordResult, RecordsResponse,
    Subscription, SubscriptionOperation, SubscriptionOperationType, SubscriptionResult,
    SubscriptionsResponse, UserIdentity, UsersResponse, WireZoneId, ZoneChangesQuery,
    ZoneChangesRequest, ZoneChangesResponse, ZoneChangesResult, ZoneOperation, ZoneOperationType,
    ZoneResult, ZoneSpec, ZonesResponse,
};
use skysync_model::{
    ChangeToken, CloudError, ModelError, NetworkFailure, Record, RecordId, ServerErrorCode, ZoneId,
};
use skysync_transport::{
    CloudDatabase, DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChangesPage,
    ZoneNotifications,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt as _;

/// The container every simulated device syncs.
pub const CONTAINER: &str = "iCloud.dev.skysync";

/// The largest answer read, in bytes (the dev server's answers in a simulation are far smaller).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// What crossed the simulated network, one line per request, for reading a failed run. It
/// depends on timing (it is not part of what a seed replays).
#[derive(Clone, Debug, Default)]
pub struct NetworkLog {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    started: Option<tokio::time::Instant>,
}

impl NetworkLog {
    /// An empty log, timing its lines from now.
    pub fn new() -> NetworkLog {
        NetworkLog {
            lines: Arc::default(),
            started: Some(tokio::time::Instant::now()),
        }
    }

    /// Adds a line (timed).
    pub(crate) fn push(&self, line: String) {
        let at = self.started.map(|s| s.elapsed()).unwrap_or_default();
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{:9.3}s {line}", at.as_secs_f64()));
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A device's network connection: up or down, as the simulation says. It outlives the device's
/// engine (a device that restarts after a power cut finds its network as it left it).
#[derive(Debug)]
pub struct Link {
    up: AtomicBool,
}

impl Link {
    /// A link that is up.
    pub fn new() -> Arc<Link> {
        Arc::new(Link {
            up: AtomicBool::new(true),
        })
    }

    /// Takes the link down (`false`: every request fails as if the device were offline) or up.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

/// One run of a device's engine, from its start to its power cut: once cut, nothing it sends
/// reaches the server and nothing the server answers reaches it.
#[derive(Debug)]
pub struct Power {
    on: AtomicBool,
}

impl Power {
    /// Power that is on.
    pub fn new() -> Arc<Power> {
        Arc::new(Power {
            on: AtomicBool::new(true),
        })
    }

    /// Cuts the power for good.
    pub fn cut(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    /// Whether the power is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }
}

/// The [`CloudDatabase`] of one simulated device: the dev server's router, reached through the
/// device's [`Link`] while its [`Power`] is on.
#[derive(Clone)]
pub struct InProcessDatabase {
    router: axum::Router,
    web_auth_token: String,
    link: Arc<Link>,
    power: Arc<Power>,
    log: NetworkLog,
    name: String,
}

impl std::fmt::Debug for InProcessDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential, even a simulated one: never printed.
        f.debug_struct("InProcessDatabase")
            .field("link_up", &self.link.is_up())
            .field("power_on", &self.power.is_on())
            .finish_non_exhaustive()
    }
}

/// An answer as it arrived: status, content type and the whole body.
struct Answer {
    status: u16,
    body: axum::body::Bytes,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as `T`, or the typed error it carries.
    fn decode<T: DeserializeOwned>(&self, what: &str) -> Result<T, CloudError> {
        if self.is_success() {
            serde_json::from_slice(&self.body).map_err(|e| self.unexpected(what, &e.to_string()))
        } else {
            Err(self.error())
        }
    }

    /// The typed error of an answer that is not a success: CloudKit's error body, or an
    /// unexpected answer (transient) when it is not one.
    fn error(&self) -> CloudError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => CloudError::Server(body.to_server_error(self.status)),
            Err(e) => self.unexpected("a CloudKit error body", &e.to_string()),
        }
    }

    fn unexpected(&self, expected: &str, problem: &str) -> CloudError {
        CloudError::UnexpectedResponse {
            status: Some(self.status),
            detail: format!(
                "expected {expected}, got {} bytes that do not parse ({problem})",
                self.body.len()
            ),
        }
    }
}

fn offline(detail: &str) -> CloudError {
    CloudError::Network {
        kind: NetworkFailure::Connect,
        detail: detail.to_owned(),
    }
}

fn answer_lost(detail: String) -> CloudError {
    CloudError::Network {
        kind: NetworkFailure::Reset,
        detail,
    }
}

/// A zone the server named, as the device names it: its own zones carry no owner.
fn own_zone(wire: &WireZoneId) -> ZoneId {
    ZoneId {
        owner_record_name: None,
        ..wire.to_zone_id()
    }
}

/// A record the server answered for a request about `zone`, in that zone.
fn record_in(zone: &ZoneId, wire: &skysync_model::wire::WireRecord) -> Result<Record, ModelError> {
    let mut record = Record::from_wire(zone, wire)?;
    record.id.zone = zone.clone();
    Ok(record)
}

impl InProcessDatabase {
    /// The database of a device signed in with `web_auth_token` (which must be URL-safe), reaching
    /// `router` through `link` while `power` is on.
    pub fn new(
        router: axum::Router,
        web_auth_token: impl Into<String>,
        link: Arc<Link>,
        power: Arc<Power>,
    ) -> Self {
        Self {
            router,
            web_auth_token: web_auth_token.into(),
            link,
            power,
            log: NetworkLog::default(),
            name: String::new(),
        }
    }

    /// Writes a line to `log` for every request, naming the device `name`.
    pub fn logging(mut self, name: impl Into<String>, log: NetworkLog) -> Self {
        self.name = name.into();
        self.log = log;
        self
    }

    fn note(&self, operation: &str, what: &str, outcome: &str) {
        if self.log.started.is_some() {
            self.log
                .push(format!("{} {operation} {what} -> {outcome}", self.name));
        }
    }

    fn note_failure<T>(&self, operation: &str, what: &str, result: &Result<T, CloudError>) {
        if let Err(error) = result {
            self.note(operation, what, &error.to_string());
        }
    }

    /// Whether a request (or its answer) can cross the network now.
    fn reachable(&self) -> Result<(), &'static str> {
        if !self.power.is_on() {
            Err("the device has no power")
        } else if !self.link.is_up() {
            Err("the simulated network is down")
        } else {
            Ok(())
        }
    }

    /// Sends one request to the private database's `operation` (or, for `users/*`, the public
    /// one's) and reads its whole answer.
    async fn exchange(
        &self,
        method: Method,
        operation: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CloudError> {
        self.reachable().map_err(offline)?;
        let database = if operation.starts_with("users/") {
            "public"
        } else {
            "private"
        };
        let uri = format!(
            "/database/1/{CONTAINER}/development/{database}/{operation}\
             ?ckAPIToken=sim-api-token&ckWebAuthToken={}",
            self.web_auth_token
        );
        let mut request = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(bytes) => {
                request = request.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| CloudError::Network {
            kind: NetworkFailure::Other,
            detail: format!("the request could not be built: {e}"),
        })?;
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| answer_lost(format!("the answer broke off: {e}")))?;
        // The answer crosses the network too: a device that went offline or lost its power while
        // the server worked never hears it (the server's effects stay).
        self.reachable()
            .map_err(|why| answer_lost(format!("the answer was lost: {why}")))?;
        Ok(Answer { status, body })
    }

    async fn post<B: Serialize>(&self, operation: &str, body: &B) -> Result<Answer, CloudError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            CloudError::Incompatible(ModelError::Encode(format!("request body: {e}")))
        })?;
        self.exchange(Method::POST, operation, Some(bytes)).await
    }

    async fn modify_zones(
        &self,
        zones: Vec<ZoneId>,
        operation_type: ZoneOperationType,
    ) -> Result<(), CloudError> {
        if zones.is_empty() {
            return Ok(());
        }
        let request = ModifyZonesRequest {
            operations: zones
                .iter()
                .map(|zone| ZoneOperation {
                    operation_type,
                    zone: ZoneSpec {
                        zone_id: WireZoneId::from(zone),
                    },
                })
                .collect(),
        };
        let answer = self.post("zones/modify", &request).await?;
        let zones_answered: ZonesResponse = answer.decode("a zones/modify answer")?;
        for entry in zones_answered.zones {
            if let ZoneResult::Error(error) = entry {
                let already_gone = operation_type == ZoneOperationType::Delete
                    && error.server_error_code == ServerErrorCode::ZoneNotFound;
                if !already_gone {
                    return Err(CloudError::Server(error.to_server_error(answer.status)));
                }
            }
        }
        Ok(())
    }
}

/// One change's outcome, from the entry the server answered for it.
fn modify_outcome(
    zone: &ZoneId,
    id: RecordId,
    is_delete: bool,
    result: RecordResult,
    status: u16,
) -> ModifyOutcome {
    match result {
        RecordResult::Record(_) if is_delete => ModifyOutcome::Deleted { id },
        RecordResult::Record(wire) => match wire.system_fields() {
            Some(system) => ModifyOutcome::Saved { id, system },
            None => ModifyOutcome::Failed {
                id,
                error: CloudError::UnexpectedResponse {
                    status: Some(status),
                    detail: "a saved record came back without a recordChangeTag".into(),
                },
            },
        },
        // Deleting what is already gone reaches the delete's goal.
        RecordResult::Error(item)
            if is_delete && item.server_error_code == ServerErrorCode::NotFound =>
        {
            ModifyOutcome::Deleted { id }
        }
        RecordResult::Error(item)
            if matches!(
                item.server_error_code,
                ServerErrorCode::Conflict | ServerErrorCode::Exists
            ) =>
        {
            let error = item.to_server_error(status);
            let server_record = item
                .server_record
                .as_deref()
                .and_then(|wire| record_in(zone, wire).ok())
                .filter(|record| record.system.is_some())
                .map(Box::new);
            ModifyOutcome::Conflict {
                id,
                server_record,
                error,
            }
        }
        RecordResult::Error(item) => ModifyOutcome::Failed {
            id,
            error: CloudError::Server(item.to_server_error(status)),
        },
    }
}

impl InProcessDatabase {
    async fn modify(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self.post("records/modify", &batch.to_request()).await?;
        // A failed atomic batch answers 400 with one entry per change: per-change outcomes.
        let records = if answer.is_success() {
            answer
                .decode::<RecordsResponse>("a records/modify answer")?
                .records
        } else {
            match serde_json::from_slice::<RecordsResponse>(&answer.body) {
                Ok(parsed) if parsed.records.len() == batch.len() => parsed.records,
                _ => return Err(answer.error()),
            }
        };
        if records.len() != batch.len() {
            return Err(answer.unexpected(
                "one records/modify entry per change",
                &format!("{} entries for {} changes", records.len(), batch.len()),
            ));
        }
        let zone = batch.zone().clone();
        Ok(batch
            .changes()
            .iter()
            .zip(records)
            .map(|(change, result)| {
                modify_outcome(
                    &zone,
                    change.record_id().clone(),
                    change.is_delete(),
                    result,
                    answer.status,
                )
            })
            .collect())
    }

    async fn lookup(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        if record_names.is_empty() {
            return Ok(Vec::new());
        }
        let request = LookupRecordsRequest {
            records: record_names
                .iter()
                .map(|name| RecordLookup {
                    record_name: name.clone(),
                    desired_keys: None,
                })
                .collect(),
            zone_id: Some(WireZoneId::from(&zone)),
            desired_keys: None,
            numbers_as_strings: None,
        };
        let answer = self.post("records/lookup", &request).await?;
        let found: RecordsResponse = answer.decode("a records/lookup answer")?;
        if found.records.len() != record_names.len() {
            return Err(answer.unexpected(
                "one records/lookup entry per name",
                &format!(
                    "{} entries for {} names",
                    found.records.len(),
                    record_names.len()
                ),
            ));
        }
        Ok(record_names
            .into_iter()
            .zip(found.records)
            .map(|(name, result)| {
                let id = RecordId::new(zone.clone(), name);
                match result {
                    RecordResult::Record(wire) => match record_in(&zone, &wire) {
                        Ok(record) => LookupOutcome::Found(record),
                        Err(e) => LookupOutcome::Failed {
                            id,
                            error: CloudError::Incompatible(e),
                        },
                    },
                    RecordResult::Error(item)
                        if item.server_error_code == ServerErrorCode::NotFound =>
                    {
                        LookupOutcome::NotFound(id)
                    }
                    RecordResult::Error(item) => LookupOutcome::Failed {
                        id,
                        error: CloudError::Server(item.to_server_error(answer.status)),
                    },
                }
            })
            .collect())
    }

    async fn zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        let request = ZoneChangesRequest {
            zones: vec![ZoneChangesQuery {
                zone_id: WireZoneId::from(&zone),
                sync_token: since.map(|t| t.0),
                results_limit: None,
                desired_keys: None,
                desired_record_types: None,
            }],
            reverse: None,
            desired_keys: None,
            numbers_as_strings: None,
            results_limit: None,
            desired_record_types: None,
        };
        let answer = self.post("changes/zone", &request).await?;
        let changes: ZoneChangesResponse = answer.decode("a changes/zone answer")?;
        let entry = changes
            .zones
            .into_iter()
            .find(|entry| match entry {
                ZoneChangesResult::Error(e) => e.zone_id.zone_name == zone.zone_name,
                ZoneChangesResult::Changes(c) => c.zone_id.zone_name == zone.zone_name,
            })
            .ok_or_else(|| {
                answer.unexpected("an entry for the zone asked about", "none answered")
            })?;
        let changes = match entry {
            ZoneChangesResult::Error(error) => {
                return Err(CloudError::Server(error.to_server_error(answer.status)));
            }
            ZoneChangesResult::Changes(changes) => changes,
        };
        let mut page = ZoneChangesPage {
            zone: zone.clone(),
            changed: Vec::new(),
            deleted: Vec::new(),
            token: ChangeToken(changes.sync_token),
            more_coming: changes.more_coming,
        };
        for result in changes.records {
            match result {
                // A failed entry cannot be skipped: the token would move past it.
                RecordResult::Error(item) => {
                    return Err(CloudError::Server(item.to_server_error(answer.status)));
                }
                RecordResult::Record(wire) if wire.is_tombstone() => {
                    let name = wire.record_name.clone().ok_or(CloudError::Incompatible(
                        ModelError::MissingKey { key: "recordName" },
                    ))?;
                    page.deleted.push(RecordId::new(zone.clone(), name));
                }
                RecordResult::Record(wire) => {
                    page.changed
                        .push(record_in(&zone, &wire).map_err(CloudError::Incompatible)?);
                }
            }
        }
        Ok(page)
    }

    async fn database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        let request = DatabaseChangesRequest {
            sync_token: since.map(|t| t.0),
            results_limit: None,
        };
        let answer = self.post("changes/database", &request).await?;
        let changes: DatabaseChangesResponse = answer.decode("a changes/database answer")?;
        let mut page = DatabaseChangesPage {
            changed_zones: Vec::new(),
            deleted_zones: Vec::new(),
            token: ChangeToken(changes.sync_token),
            more_coming: changes.more_coming,
        };
        for entry in changes.zones {
            match entry {
                ZoneResult::Error(error) => {
                    return Err(CloudError::Server(error.to_server_error(answer.status)));
                }
                ZoneResult::Zone(zone) if zone.deleted == Some(true) => {
                    page.deleted_zones.push(own_zone(&zone.zone_id));
                }
                ZoneResult::Zone(zone) => page.changed_zones.push(own_zone(&zone.zone_id)),
            }
        }
        Ok(page)
    }
}

fn show_change(change: &skysync_model::PendingChange) -> String {
    let verb = match (change.is_delete(), change.change_tag().is_some()) {
        (true, true) => "delete",
        (true, false) => "force-delete",
        (false, true) => "update",
        (false, false) => "create",
    };
    let tag = change
        .change_tag()
        .map(|t| format!("@{}", t.0))
        .unwrap_or_default();
    let fields = match change {
        skysync_model::PendingChange::Save(record) => format!(
            " {{{}}}",
            record
                .fields
                .iter()
                .map(|(k, f)| format!("{k}={:?}", f.value))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        skysync_model::PendingChange::Delete { .. } => String::new(),
    };
    format!("{verb} {}{tag}{fields}", change.record_id().record_name)
}

fn show_outcome(outcome: &ModifyOutcome) -> String {
    match outcome {
        ModifyOutcome::Saved { id, system } => {
            format!("{} saved @{}", id.record_name, system.change_tag.0)
        }
        ModifyOutcome::Deleted { id } => format!("{} deleted", id.record_name),
        ModifyOutcome::Conflict {
            id,
            server_record,
            error,
        } => format!(
            "{} {} (server {})",
            id.record_name,
            error.code,
            server_record
                .as_ref()
                .and_then(|r| r.change_tag())
                .map_or_else(|| "copy not attached".to_owned(), |t| format!("@{}", t.0))
        ),
        ModifyOutcome::Failed { id, error } => format!("{} failed: {error}", id.record_name),
    }
}

fn show_record(record: &Record) -> String {
    format!(
        "{}@{}",
        record.id.record_name,
        record.change_tag().map_or("-", |t| t.0.as_str())
    )
}

impl CloudDatabase for InProcessDatabase {
    async fn modify_records(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        let what = format!(
            "[{}]",
            batch
                .changes()
                .iter()
                .map(show_change)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let result = self.modify(batch).await;
        match &result {
            Ok(outcomes) => self.note(
                "records/modify",
                &what,
                &outcomes
                    .iter()
                    .map(show_outcome)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Err(_) => self.note_failure("records/modify", &what, &result),
        }
        result
    }

    async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        let what = record_names.join(", ");
        let result = self.lookup(zone, record_names).await;
        match &result {
            Ok(found) => self.note(
                "records/lookup",
                &what,
                &found
                    .iter()
                    .map(|f| match f {
                        LookupOutcome::Found(record) => show_record(record),
                        LookupOutcome::NotFound(id) => format!("{} not found", id.record_name),
                        LookupOutcome::Failed { id, error } => {
                            format!("{} failed: {error}", id.record_name)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(_) => self.note_failure("records/lookup", &what, &result),
        }
        result
    }

    async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        let what = if since.is_some() {
            "from a token"
        } else {
            "from the start"
        };
        let result = self.zone_changes(zone, since).await;
        match &result {
            Ok(page) => self.note(
                "changes/zone",
                what,
                &format!(
                    "changed [{}] deleted [{}]{}",
                    page.changed
                        .iter()
                        .map(show_record)
                        .collect::<Vec<_>>()
                        .join(", "),
                    page.deleted
                        .iter()
                        .map(|id| id.record_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if page.more_coming {
                        ", more coming"
                    } else {
                        ""
                    }
                ),
            ),
            Err(_) => self.note_failure("changes/zone", what, &result),
        }
        result
    }

    async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        let result = self.database_changes(since).await;
        self.note_failure("changes/database", "", &result);
        result
    }

    async fn ensure_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.modify_zones(zones, ZoneOperationType::Create).await
    }

    async fn delete_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.modify_zones(zones, ZoneOperationType::Delete).await
    }

    async fn ensure_subscription(&self, subscription: Subscription) -> Result<(), CloudError> {
        let request = ModifySubscriptionsRequest {
            operations: vec![SubscriptionOperation {
                operation_type: SubscriptionOperationType::Create,
                subscription,
            }],
        };
        let answer = self.post("subscriptions/modify", &request).await?;
        let answered: SubscriptionsResponse = answer.decode("a subscriptions/modify answer")?;
        match answered.subscriptions.into_iter().next() {
            Some(SubscriptionResult::Subscription(_)) => Ok(()),
            Some(SubscriptionResult::Error(error)) => {
                Err(CloudError::Server(error.to_server_error(answer.status)))
            }
            None => Err(answer.unexpected("a subscription entry", "none answered")),
        }
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        let answer = self.exchange(Method::GET, "users/caller", None).await?;
        let users: UsersResponse = answer.decode("a users/caller answer")?;
        users
            .users
            .into_iter()
            .next()
            .ok_or_else(|| answer.unexpected("a user", "none answered"))
    }

    /// The simulation runs its devices without notifications (they learn of other devices'
    /// changes by their periodic fetch): a stream that has ended.
    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        let (_, signals) = tokio::sync::mpsc::channel(1);
        Ok(ZoneNotifications::new(signals))
    }
}
