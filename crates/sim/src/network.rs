//! The simulated network: a [`CloudDatabase`] that hands every request to the dev server's router
//! in the requesting task, through a link the simulation can take down (an offline device) or cut
//! for good (a device that lost power).
//!
//! Requests are the real CloudKit Web Services requests (the model's wire types, the dev server's
//! routes, authentication, limits and fault injection); only the socket is missing. The request
//! bodies are built, and the answers read, by the transport's own [`answers`] functions, the ones
//! its HTTP client uses: an error body is a typed [`CloudError`], a `records/modify` answer is one
//! outcome per change; a body that breaks off is a lost answer.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync_model::wire::{
    DatabaseChangesResponse, ErrorBody, RecordsResponse, Subscription, SubscriptionsResponse,
    UserIdentity, UsersResponse, ZoneChangesResponse, ZoneOperationType, ZonesResponse,
};
use skysync_model::{ChangeToken, CloudError, ModelError, NetworkFailure, Record, ZoneId};
use skysync_transport::{
    CloudDatabase, DatabaseChangesPage, DatabaseScope, LookupOutcome, ModifyBatch, ModifyOutcome,
    ZoneChangesPage, ZoneNotifications, answers,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt as _;

/// The container every simulated device syncs.
pub const CONTAINER: &str = "iCloud.dev.skysync";

/// The database every simulated device syncs (its requests go to the private database's routes).
const DATABASE: DatabaseScope = DatabaseScope::Private;

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

    /// An unexpected answer (transient) for `problem` with an answer that parsed (an entry
    /// missing or too many), as [`answers`] words it.
    fn odd(&self, problem: &str) -> CloudError {
        CloudError::UnexpectedResponse {
            status: Some(self.status),
            detail: problem.to_owned(),
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
        let request = answers::modify_zones_request(&zones, operation_type);
        let answer = self.post("zones/modify", &request).await?;
        let answered: ZonesResponse = answer.decode("a zones/modify answer")?;
        answers::zones_modified(
            operation_type,
            zones.len(),
            answered,
            answer.status,
            &|problem| answer.odd(problem),
        )
    }

    async fn modify(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self.post("records/modify", &batch.to_request()).await?;
        // A failed atomic batch answers 400 with one entry per change: per-change outcomes.
        let answered = if answer.is_success() {
            answer.decode::<RecordsResponse>("a records/modify answer")?
        } else {
            answers::failed_batch_answer(&answer.body, batch.len()).ok_or_else(|| answer.error())?
        };
        answers::modify_outcomes(DATABASE, &batch, answered, answer.status, &|problem| {
            answer.odd(problem)
        })
    }

    async fn lookup(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        if record_names.is_empty() {
            return Ok(Vec::new());
        }
        let request = answers::lookup_request(&zone, &record_names);
        let answer = self.post("records/lookup", &request).await?;
        let found: RecordsResponse = answer.decode("a records/lookup answer")?;
        answers::lookup_outcomes(
            DATABASE,
            &zone,
            record_names,
            found,
            answer.status,
            &|problem| answer.odd(problem),
        )
    }

    async fn zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        let request = answers::zone_changes_request(&zone, since, None);
        let answer = self.post("changes/zone", &request).await?;
        let changes: ZoneChangesResponse = answer.decode("a changes/zone answer")?;
        answers::zone_changes_page(DATABASE, &zone, changes, answer.status, &|problem| {
            answer.odd(problem)
        })
    }

    async fn database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        let request = answers::database_changes_request(since, None);
        let answer = self.post("changes/database", &request).await?;
        let changes: DatabaseChangesResponse = answer.decode("a changes/database answer")?;
        answers::database_changes_page(DATABASE, changes, answer.status)
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
        let request = answers::subscription_request(subscription);
        let answer = self.post("subscriptions/modify", &request).await?;
        let answered: SubscriptionsResponse = answer.decode("a subscriptions/modify answer")?;
        answers::subscription_saved(answered, answer.status, &|problem| answer.odd(problem))
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        let answer = self.exchange(Method::GET, "users/caller", None).await?;
        let users: UsersResponse = answer.decode("a users/caller answer")?;
        answers::caller_identity(users, &|problem| answer.odd(problem))
    }

    /// The simulation runs its devices without notifications (they learn of other devices'
    /// changes by their periodic fetch): a stream that has ended.
    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        let (_, signals) = tokio::sync::mpsc::channel(1);
        Ok(ZoneNotifications::new(signals))
    }
}
