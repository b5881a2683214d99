//! Shared fixtures: a dev server on 127.0.0.1:0, devices (engines with their own store files),
//! the server's view inside, and bounded waits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use skysync_devserver::dev_view::{DatabaseSnapshot, DevUser, DevView, UserStats};
use skysync_devserver::{DevServer, ServerConfig};
use skysync_model::{FieldValue, Record, RecordId, ZoneId};
use skysync_session::{Diagnostics, Engine, EngineBuilder, SessionConfig, Status};
use skysync_throttle::ThrottleConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use tempfile::TempDir;

/// The container the engine's dev-server client uses.
pub const CONTAINER: &str = "iCloud.dev.skysync";

pub fn zone() -> ZoneId {
    ZoneId::new("Notes")
}

pub fn id(name: &str) -> RecordId {
    RecordId::new(zone(), name)
}

pub fn note(name: &str, title: &str) -> Record {
    Record::new(id(name), "Note").with("title", title)
}

pub fn text(record: &Record, field: &str) -> Option<String> {
    match record.get(field) {
        Some(FieldValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

pub async fn server() -> DevServer {
    server_with(ServerConfig::default()).await
}

pub async fn server_with(mut config: ServerConfig) -> DevServer {
    config.listen = "127.0.0.1:0".parse().unwrap();
    DevServer::start(config).await.unwrap()
}

/// A throttle that stays out of the way of functional tests (pacing is tested in its crate).
pub fn fast_throttle() -> ThrottleConfig {
    ThrottleConfig {
        initial_rate: 40.0,
        transient_backoff: Duration::from_millis(50),
        transient_backoff_cap: Duration::from_millis(400),
        offline_backoff: Duration::from_millis(50),
        offline_backoff_cap: Duration::from_millis(400),
        ..ThrottleConfig::default()
    }
}

/// The session settings of a test device: frequent fetches, a short debounce.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new(vec![zone()]);
    config.fetch_interval = Duration::from_millis(300);
    config.send_debounce = Duration::from_millis(20);
    config.local_retry = Duration::from_millis(100);
    config.account_change_grace = Duration::from_millis(50);
    config
}

/// Session settings of a device that fetches only when told (no timer, no notifications), so
/// that its edits are made and sent without knowing other devices'.
pub fn fetch_only_when_told() -> SessionConfig {
    let mut config = session_config();
    config.fetch_interval = Duration::from_secs(3600);
    config.notifications = false;
    config
}

/// A few rounds of fetch-and-send on every device, so each has what the others sent.
pub async fn settle(devices: &[&Device]) {
    for _ in 0..3 {
        for device in devices {
            device.engine.sync_now();
        }
        for device in devices {
            wait_quiet(device).await;
        }
    }
}

/// One device: an engine over its own store file, signed in as `user`.
pub struct Device {
    pub dir: TempDir,
    pub engine: Engine,
    pub token: String,
}

impl Device {
    pub async fn start(server: &DevServer, user: &str) -> Device {
        Device::start_with(server, user, session_config()).await
    }

    pub async fn start_with(server: &DevServer, user: &str, config: SessionConfig) -> Device {
        Device::start_built(server, user, |b| b.session(config)).await
    }

    /// A device whose builder `edit` changes further (a resolver, a transport, a store).
    pub async fn start_built(
        server: &DevServer,
        user: &str,
        edit: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Device {
        let base = server.base_url();
        let mut device = Device::build(|b| edit(b.dev_server(base, user).unwrap())).await;
        device.token = user.to_owned();
        device
    }

    /// A device with no server configured until `edit` sets one (or a transport).
    pub async fn build(edit: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let builder = Engine::builder(dir.path().join("device.redb"))
            .throttle(fast_throttle())
            .session(session_config());
        let engine = edit(builder).build().await.unwrap();
        Device {
            dir,
            engine,
            token: String::new(),
        }
    }

    /// Every local record of the zone, by name.
    pub async fn records(&self) -> BTreeMap<String, Record> {
        let mut all = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self
                .engine
                .records_in_zone(zone(), after, 500)
                .await
                .unwrap();
            for record in page.records {
                all.insert(record.id.record_name.clone(), record);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }

    pub async fn diagnostics(&self) -> Diagnostics {
        self.engine.diagnostics().await.unwrap()
    }
}

/// Waits (bounded) until `done` holds for the device's diagnostics; checks the liveness rule at
/// every look.
pub async fn wait_for(device: &Device, what: &str, done: impl Fn(&Diagnostics) -> bool) {
    for _ in 0..600 {
        let d = device.diagnostics().await;
        assert!(
            d.liveness_ok,
            "liveness broken while waiting for {what}: {d:#?}"
        );
        if done(&d) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}: {:#?}",
        device.diagnostics().await
    );
}

/// Waits until the device has nothing pending, no open conflict, and is idle.
pub async fn wait_quiet(device: &Device) {
    wait_for(device, "quiet", |d| {
        d.queue.pending == 0 && d.open_conflicts == 0 && d.in_flight.is_none() && d.halt.is_none()
    })
    .await;
}

/// The user record name the dev server knows a web auth token by.
pub async fn dev_user(server: &DevServer, token: &str) -> String {
    let view = DevView::new(server.base_url());
    let user: DevUser = reqwest::get(view.user_url(token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    user.user_record_name
}

/// The server's view of a user's private database, zone `Notes`: live records by name.
pub async fn server_records(server: &DevServer, token: &str) -> BTreeMap<String, Record> {
    let view = DevView::new(server.base_url());
    let user = dev_user(server, token).await;
    let url = view.records_url(
        CONTAINER,
        "development",
        "private",
        Some(&user),
        Some("Notes"),
    );
    let snapshot: DatabaseSnapshot = reqwest::get(url).await.unwrap().json().await.unwrap();
    let mut out = BTreeMap::new();
    for zone_snapshot in snapshot.zones {
        for wire in zone_snapshot.records {
            let record = Record::from_wire(&zone(), &wire).unwrap();
            out.insert(record.id.record_name.clone(), record);
        }
    }
    out
}

/// The server's request counters for a user.
pub async fn server_stats(server: &DevServer, token: &str) -> UserStats {
    let view = DevView::new(server.base_url());
    let user = dev_user(server, token).await;
    reqwest::get(view.user_stats_url(&user))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Arms a dev server fault (`POST /_dev/faults`).
pub async fn arm(server: &DevServer, spec: serde_json::Value) {
    arm_at(server, "faults", spec).await;
}

/// Arms a per-item fault (`POST /_dev/item-faults`).
pub async fn arm_item(server: &DevServer, spec: serde_json::Value) {
    arm_at(server, "item-faults", spec).await;
}

async fn arm_at(server: &DevServer, path: &str, spec: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_dev/{path}", server.base_url()))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

/// The fields of records by name, without system fields: what two devices must agree on.
pub fn contents(
    records: &BTreeMap<String, Record>,
) -> BTreeMap<String, BTreeMap<String, FieldValue>> {
    records
        .iter()
        .map(|(name, r)| {
            let fields = r
                .fields
                .iter()
                .filter(|(_, f)| !matches!(f.value, FieldValue::Null))
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect();
            (name.clone(), fields)
        })
        .collect()
}

pub fn is_idle(d: &Diagnostics) -> bool {
    d.status == Status::Idle
}

/// A TCP gate in front of a server, on 127.0.0.1: it forwards every connection while open, and
/// when closed it cuts the connections it carries and refuses new ones (the port stays reserved,
/// bound but not listening, so the kernel answers a connect with a reset: "connection refused").
/// Opening it again listens on the same port.
pub struct Gate {
    addr: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<GateState>>,
}

#[derive(Default)]
struct GateState {
    accepting: Option<tokio::task::JoinHandle<()>>,
    /// The socket that keeps the port while the gate is closed.
    reserved: Option<tokio::net::TcpSocket>,
    connections: Vec<tokio::task::AbortHandle>,
}

impl Gate {
    /// An open gate forwarding to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Gate {
        let socket = Gate::socket();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let gate = Gate {
            addr,
            upstream,
            state: std::sync::Arc::default(),
        };
        gate.listen(socket);
        gate
    }

    /// The gate's root URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection through the gate and refuses new ones until [`Gate::open`].
    pub fn close(&self) {
        // Reserve the port before the listener goes (both sockets allow port reuse), so that no
        // other process can take it while the gate is closed.
        let reserved = Gate::socket();
        reserved.bind(self.addr).unwrap();
        let mut state = self.state.lock().unwrap();
        if let Some(accepting) = state.accepting.take() {
            accepting.abort();
        }
        for connection in state.connections.drain(..) {
            connection.abort();
        }
        state.reserved = Some(reserved);
    }

    /// Listens again on the same port.
    pub fn open(&self) {
        let reserved = self.state.lock().unwrap().reserved.take();
        if let Some(socket) = reserved {
            self.listen(socket);
        }
    }

    fn socket() -> tokio::net::TcpSocket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.set_reuseport(true).unwrap();
        socket
    }

    fn listen(&self, socket: tokio::net::TcpSocket) {
        let listener = socket.listen(64).unwrap();
        let upstream = self.upstream;
        let state = std::sync::Arc::clone(&self.state);
        let accepting = tokio::spawn(async move {
            // Ends when the gate closes (the task is aborted) or the listener fails.
            while let Ok((mut inbound, _)) = listener.accept().await {
                let forwarding = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut state = state.lock().unwrap();
                state.connections.retain(|c| !c.is_finished());
                state.connections.push(forwarding.abort_handle());
            }
        });
        self.state.lock().unwrap().accepting = Some(accepting);
    }
}
