//! The `Engine`: what an app embeds. One handle that saves locally (durable on return), syncs in
//! the background, and says what it is doing.

use crate::config::SessionConfig;
use crate::session::{Components, SessionActor, SessionArgs, SessionMsg};
use crate::types::{Diagnostics, Status, SyncEvent};
use ractor::{Actor, ActorRef, call_t};
use skysync_actors::{ChildSpec, RestartPolicy, SupervisorEvent, SupervisorHandle};
use skysync_conflict::{ConflictResolver, ConflictSpec, ThreeWayMerge};
use skysync_model::typed::{self, RecordType, TypedError};
use skysync_model::{Record, RecordId, ZoneId};
use skysync_queue::{ChangeSeq, QueueConfig};
use skysync_store::{RecordPage, StoreConfig, StoreError, StoreUnit};
use skysync_throttle::{ThrottleConfig, ThrottleSpec};
use skysync_transport::{
    Auth, CloudDatabase, CloudKitClient, HandleOptions, TransportError, TransportHandle,
    TransportSpec,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Why an engine could not be built or asked something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store file could not be opened or written; the inner error says what to do.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CloudKit client could not be set up (a bad URL, token or key); fix the setting.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The throttle configuration is out of range; fix the value it names.
    #[error(transparent)]
    Throttle(#[from] skysync_throttle::ThrottleError),
    /// A component could not be started under the supervisor (the reason says why).
    #[error(transparent)]
    Supervise(#[from] skysync_actors::SuperviseError),
    /// The builder was not told where to sync: call `dev_server` or `cloudkit` (or `transport`).
    #[error("no server configured: call `dev_server`, `cloudkit` or `transport` on the builder")]
    NoServer,
    /// The session did not answer (it is shutting down, or stopped); the engine is unusable.
    #[error("the sync session is not running: {0}")]
    SessionGone(String),
    /// A typed value does not map to a record, or a record to the type (the error names the
    /// field and what is wrong).
    #[error(transparent)]
    Typed(#[from] TypedError),
    /// Deleting the remote data failed; nothing local was removed. Retry when online.
    #[error("deleting the remote data failed: {0}")]
    DeleteRemote(String),
}

/// Where and how to sync: built into an [`Engine`].
pub struct EngineBuilder {
    store_path: PathBuf,
    zones: Vec<ZoneId>,
    session: Option<SessionConfig>,
    client: Option<CloudKitClient>,
    transport: Option<(TransportHandle, Box<dyn ChildSpec>)>,
    store: Option<(
        skysync_store::StoreHandle,
        skysync_queue::QueueHandle,
        Box<dyn ChildSpec>,
    )>,
    resolver: Arc<dyn ConflictResolver>,
    throttle: ThrottleConfig,
    restart: RestartPolicy,
    events: broadcast::Sender<SyncEvent>,
}

impl EngineBuilder {
    /// An engine over the store file at `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            store_path: path.into(),
            zones: Vec::new(),
            session: None,
            client: None,
            transport: None,
            store: None,
            resolver: Arc::new(ThreeWayMerge::default()),
            throttle: ThrottleConfig::default(),
            restart: RestartPolicy::default(),
            events: broadcast::channel(1024).0,
        }
    }

    /// The engine's events, from its very start (subscribe here to miss none, such as an account
    /// change found by the first request).
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.events.subscribe()
    }

    /// Syncs against a dev server (or any CloudKit Web Services endpoint) at `base_url`, signed in
    /// with `web_auth_token`.
    pub fn dev_server(
        mut self,
        base_url: impl Into<String>,
        web_auth_token: impl Into<String>,
    ) -> Result<Self, EngineError> {
        let client = CloudKitClient::builder(
            "iCloud.dev.skysync",
            Auth::web("dev-api-token", web_auth_token),
        )
        .base_url(base_url)
        .build()?;
        self.client = Some(client);
        Ok(self)
    }

    /// Syncs against CloudKit with a client the app built (container, environment, database,
    /// API token and web auth token with its rotation callback, or a server-to-server key).
    pub fn cloudkit(mut self, client: CloudKitClient) -> Self {
        self.client = Some(client);
        self
    }

    /// Replaces the transport with any [`CloudDatabase`] (a scripted one in a test).
    pub fn transport<D: CloudDatabase>(mut self, database: D) -> Self {
        let spec = TransportSpec::new(database, HandleOptions::default());
        self.transport = Some((spec.handle(), Box::new(spec)));
        self
    }

    /// Replaces the store and queue with a spec of the app's (a store on a failing disk in a
    /// test): the supervisor starts it, and `store` and `queue` are the handles it attaches its
    /// actors to. The builder's path is then unused.
    pub fn store(
        mut self,
        store: skysync_store::StoreHandle,
        queue: skysync_queue::QueueHandle,
        spec: impl ChildSpec,
    ) -> Self {
        self.store = Some((store, queue, Box::new(spec)));
        self
    }

    /// The zones to sync.
    pub fn zones(mut self, zones: impl IntoIterator<Item = ZoneId>) -> Self {
        self.zones = zones.into_iter().collect();
        self
    }

    /// The conflict resolver (default: [`ThreeWayMerge`], client wins on fields both changed).
    pub fn resolver(mut self, resolver: impl ConflictResolver + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The throttle's settings.
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = config;
        self
    }

    /// The session's settings (zones set here override [`EngineBuilder::zones`]).
    pub fn session(mut self, config: SessionConfig) -> Self {
        self.session = Some(config);
        self
    }

    /// How the supervisor restarts failed components.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// Opens the store, starts every component under a supervisor, and starts syncing.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let mut config = self
            .session
            .unwrap_or_else(|| SessionConfig::new(self.zones.clone()));
        if config.zones.is_empty() {
            config.zones = self.zones;
        }
        let (supervisor, _) = SupervisorHandle::spawn(self.restart).await?;
        let (store, queue) = match self.store {
            Some((store, queue, spec)) => {
                supervisor.start(spec).await?;
                (store, queue)
            }
            None => {
                let unit = StoreUnit::new(
                    &self.store_path,
                    StoreConfig::default(),
                    QueueConfig {
                        limits: config.batch_limits,
                        ..QueueConfig::default()
                    },
                );
                let handles = (unit.store(), unit.queue());
                supervisor.start(unit).await?;
                handles
            }
        };
        let memory = store.sync_metadata().await?.pacing;
        let remembered = (memory != skysync_model::PacingMemory::default()).then_some(memory);
        let throttle_spec = ThrottleSpec::new(self.throttle, remembered)?;
        let throttle = throttle_spec.handle();
        supervisor.start(throttle_spec).await?;
        let transport = match (self.transport, self.client) {
            (Some((handle, spec)), _) => {
                supervisor.start(spec).await?;
                handle
            }
            (None, Some(client)) => {
                let spec = TransportSpec::new(client, HandleOptions::default());
                let handle = spec.handle();
                supervisor.start(spec).await?;
                handle
            }
            (None, None) => return Err(EngineError::NoServer),
        };
        let conflict_spec = ConflictSpec::new(self.resolver);
        let conflict = conflict_spec.handle();
        supervisor.start(conflict_spec).await?;
        let components = Components {
            store: store.clone(),
            queue: queue.clone(),
            throttle,
            transport: transport.clone(),
            conflict,
        };
        let events = self.events;
        let (status, status_rx) = watch::channel(Status::Idle);
        let components_for_engine = components.clone();
        let args = SessionArgs {
            components,
            config: config.clone(),
            events: events.clone(),
            status,
        };
        let (session, _) = Actor::spawn(None, SessionActor, args)
            .await
            .map_err(|e| EngineError::SessionGone(e.to_string()))?;
        watch_supervisor(&supervisor, session.clone());
        Ok(Engine {
            inner: Arc::new(EngineInner {
                components: components_for_engine,
                store,
                session,
                supervisor,
                events,
                status: status_rx,
            }),
        })
    }
}

/// Tells the session when the supervisor gives up on a component (the engine halts).
fn watch_supervisor(supervisor: &SupervisorHandle, session: ActorRef<SessionMsg>) {
    let mut events = supervisor.subscribe();
    let metrics = skysync_telemetry::Metrics::new();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(SupervisorEvent::Restarting { child, .. }) => metrics.restart(child),
                Ok(SupervisorEvent::GaveUp { child, reason }) => {
                    let message = SessionMsg::ComponentFailed {
                        component: child.to_owned(),
                        reason,
                    };
                    if session.send_message(message).is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

struct EngineInner {
    components: Components,
    store: skysync_store::StoreHandle,
    session: ActorRef<SessionMsg>,
    supervisor: SupervisorHandle,
    events: broadcast::Sender<SyncEvent>,
    status: watch::Receiver<Status>,
}

/// The sync engine an app embeds: local reads and writes that are durable on return, background
/// sync, events, status and diagnostics. Cheap to clone.
///
/// ```no_run
/// # async fn app() -> Result<(), skysync_session::EngineError> {
/// use skysync_model::{Record, RecordId, ZoneId};
/// use skysync_session::Engine;
///
/// let notes = ZoneId::new("Notes");
/// let engine = Engine::builder("notes.redb")
///     .dev_server("http://127.0.0.1:8787", "my-web-auth-token")?
///     .zones([notes.clone()])
///     .build()
///     .await?;
/// let mut events = engine.events();
/// engine.save(Record::new(RecordId::new(notes, "n1"), "Note").with("title", "Groceries")).await?;
/// let status = engine.status().borrow().clone(); // Idle, Uploading, Waiting, ...
/// println!("{status}; {:?}", events.try_recv());
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// How long a call to the session may take before the engine reports it gone.
const SESSION_CALL_MS: u64 = 120_000;

impl Engine {
    /// Starts building an engine over the store file at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> EngineBuilder {
        EngineBuilder::new(path)
    }

    /// Saves a record locally: durable (with its outbox entry) when this returns; sent soon.
    ///
    /// A store that did not answer (it is being restarted) is asked again: saving the same copy
    /// twice is harmless (it coalesces), so a save the restart interrupted is never lost.
    pub async fn save(&self, record: Record) -> Result<ChangeSeq, EngineError> {
        let seq = self
            .with_store_retry(|store| {
                let record = record.clone();
                async move { store.save(record).await }
            })
            .await?;
        self.nudge();
        Ok(seq)
    }

    /// Deletes a record locally: durable when this returns; the delete is sent soon. It never
    /// comes back from stale data. Retried like [`Engine::save`] across a store restart.
    pub async fn delete(&self, id: RecordId) -> Result<ChangeSeq, EngineError> {
        let seq = self
            .with_store_retry(|store| {
                let id = id.clone();
                async move { store.delete(id).await }
            })
            .await?;
        self.nudge();
        Ok(seq)
    }

    /// Runs a store write, again (up to three times in all) if the store did not answer: every
    /// local write is safe to repeat.
    async fn with_store_retry<T, F, Fut>(&self, write: F) -> Result<T, EngineError>
    where
        F: Fn(skysync_store::StoreHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match write(self.inner.store.clone()).await {
                Err(StoreError::Local(error)) if attempt < 3 => {
                    tracing::warn!(%error, attempt, "the store did not answer a local write; writing again");
                }
                other => return Ok(other?),
            }
        }
    }

    /// The local copy of a record.
    pub async fn get(&self, id: RecordId) -> Result<Option<Record>, EngineError> {
        Ok(self.inner.store.record(id).await?)
    }

    /// Saves a plain Rust value as a record of its [`RecordType`]: durable when this returns.
    /// Fields the struct does not name (or skips) keep what the stored record has; `None` is sent
    /// as an explicit null, which clears the field on the server.
    pub async fn save_typed<T: RecordType>(
        &self,
        id: RecordId,
        value: &T,
    ) -> Result<ChangeSeq, EngineError> {
        let record = match self.inner.store.record(id.clone()).await? {
            Some(mut stored) => {
                typed::update_record(&mut stored, value)?;
                stored
            }
            None => typed::to_record(id, value)?,
        };
        self.save(record).await
    }

    /// The local copy of a record as a plain Rust value of its [`RecordType`].
    pub async fn get_typed<T: RecordType>(&self, id: RecordId) -> Result<Option<T>, EngineError> {
        match self.inner.store.record(id).await? {
            Some(record) => Ok(Some(typed::from_record(&record)?)),
            None => Ok(None),
        }
    }

    /// A page of a zone's records, after `after`; pass the page's `next` to go on.
    pub async fn records_in_zone(
        &self,
        zone: ZoneId,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<RecordPage, EngineError> {
        Ok(self.inner.store.records_in_zone(zone, after, limit).await?)
    }

    /// A page of a type's records, after `after`; pass the page's `next` to go on.
    pub async fn records_of_type(
        &self,
        record_type: impl Into<String>,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<RecordPage, EngineError> {
        Ok(self
            .inner
            .store
            .records_of_type(record_type, after, limit)
            .await?)
    }

    /// The component handles the session drives (valid across restarts), for tools and tests
    /// that look inside or exercise one component.
    pub fn components(&self) -> Components {
        self.inner.components.clone()
    }

    /// Every supervised component's state (running, restarting, given up).
    pub async fn component_states(&self) -> Result<Vec<skysync_actors::ChildStatus>, EngineError> {
        Ok(self.inner.supervisor.children().await?)
    }

    /// The engine's events from now on.
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// The one-word status; the receiver sees the current value at once, then every change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// Everything the engine can say about itself.
    pub async fn diagnostics(&self) -> Result<Diagnostics, EngineError> {
        call_t!(self.inner.session, SessionMsg::Diagnostics, SESSION_CALL_MS)
            .map_err(|e| EngineError::SessionGone(e.to_string()))
    }

    /// Fetches and sends now (instead of waiting for the next timer or notification).
    pub fn sync_now(&self) {
        let _ = self.inner.session.send_message(SessionMsg::SyncNow);
    }

    /// Leaves a halt (after fixing its cause) and syncs again.
    pub async fn resume(&self) -> Result<(), EngineError> {
        call_t!(self.inner.session, SessionMsg::Resume, SESSION_CALL_MS)
            .map_err(|e| EngineError::SessionGone(e.to_string()))
    }

    /// Deletes the synced zones on the server and everything local that could re-upload them
    /// (change tags, tokens, pending changes); syncing stops until the app starts an engine again.
    pub async fn delete_all_remote_data(&self) -> Result<(), EngineError> {
        call_t!(
            self.inner.session,
            SessionMsg::DeleteAllRemoteData,
            SESSION_CALL_MS
        )
        .map_err(|e| EngineError::SessionGone(e.to_string()))?
        .map_err(EngineError::DeleteRemote)
    }

    /// Stops syncing: the operation in flight is abandoned cleanly (nothing of it was committed
    /// locally; it is redone at the next start), then every component stops and the store file is
    /// closed. Nothing is lost.
    pub async fn shutdown(&self) {
        let _ = call_t!(self.inner.session, SessionMsg::Shutdown, SESSION_CALL_MS);
        let _ = self
            .inner
            .session
            .stop_and_wait(None, Some(Duration::from_secs(30)))
            .await;
        self.inner.supervisor.shutdown().await;
    }

    fn nudge(&self) {
        // A stopped session means the engine is shutting down; the change is durable anyway.
        let _ = self.inner.session.send_message(SessionMsg::LocalChanged);
    }
}
