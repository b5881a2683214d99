//! The engine against a hostile server: a change feed that never ends, a change token that never
//! advances, an answer of unbounded size, a record of a newer schema and a change tag that changes
//! on every read. For each, the engine bounds its time, requests and memory, reports the problem
//! (an event, diagnostics, a halt where the error table says) and never spins; each test states
//! its bound and asserts it.
//!
//! The hostile server is a reverse proxy on 127.0.0.1:0 in front of a real dev server: the dev
//! server does the work, and the proxy misbehaves on one endpoint (`changes/zone`, or
//! `records/modify`) when told to. It counts every request it passes and every byte it streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use common::*;
use serde_json::{Value, json};
use skysync_actors::ChildState;
use skysync_devserver::DevServer;
use skysync_model::{CloudError, MAX_RESPONSE_BYTES};
use skysync_session::{
    Diagnostics, HaltReason, MisbehaviorKind, SchemaGuard, SessionConfig, Status, SyncEvent,
};
use skysync_transport::{Auth, CloudDatabase, CloudKitClient};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The most an endless answer streams before the proxy gives up (far past any cap: a client
/// that did not stop reading would take all of it).
const ENDLESS_BYTES: u64 = 1 << 30;

/// Bytes a streamed answer may get ahead of what the client read before it hung up: the kernel's
/// socket buffers on loopback (here up to 4 MiB to send and 32 MiB to receive) and hyper's own.
const SOCKET_SLACK: u64 = 40 << 20;

/// What the proxy does to `changes/zone`.
#[derive(Clone, Debug, Default)]
enum FeedTamper {
    /// Pass it to the dev server.
    #[default]
    Forward,
    /// Every page says `moreComing` with a token never seen before, carrying `records` records
    /// never seen before.
    Endless { records: usize },
    /// `moreComing` with the very token the request asked from (`"stuck"` when it asked from
    /// none), and no records.
    EchoToken,
    /// An answer of unbounded size.
    Oversized(Oversize),
    /// The dev server's page with this record added to it.
    Inject(Value),
    /// The dev server's whole feed (from no token) on every read, each record under a change tag
    /// never seen before; `changes/database` always says the zone changed, so every fetch reads it.
    Churn,
}

/// How an oversized answer is too large.
#[derive(Clone, Copy, Debug)]
enum Oversize {
    /// It declares this many bytes (`content-length`) and streams them.
    Declared(u64),
    /// Chunked, without end (up to [`ENDLESS_BYTES`]).
    Endless,
}

/// What the proxy does to `records/modify`.
#[derive(Clone, Copy, Debug, Default)]
enum ModifyTamper {
    /// Pass it to the dev server.
    #[default]
    Forward,
    /// Answer every operation CONFLICT, with the dev server's copy of the record under a change
    /// tag never seen before (an oplock that can never be won).
    Churn,
    /// Answer the next this-many requests CONFLICT with the dev server's copy changed by another
    /// device each time (a new tag and a new `body`), as heavy contention does; then forward.
    Contend(u32),
}

#[derive(Default)]
struct ProxyState {
    feed: FeedTamper,
    modify: ModifyTamper,
    /// Whether `changes/database` says `moreComing` for ever (a token never seen before each time,
    /// no zones).
    database_endless: bool,
    /// Every request: its operation (`changes/zone`, `tokens/create`, ...) and when it came.
    log: Vec<(String, Instant)>,
    /// The `syncToken` each `changes/zone` request asked from.
    feed_tokens: Vec<Option<String>>,
    /// Bytes handed to the connection, per oversized answer.
    streamed: Vec<Arc<AtomicU64>>,
    /// For tokens and tags never seen before.
    next: u64,
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    state: Mutex<ProxyState>,
}

/// The hostile server: a running proxy and what it saw.
struct Hostile {
    proxy: Arc<Proxy>,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    async fn start(upstream: &DevServer) -> Hostile {
        let proxy = Arc::new(Proxy {
            upstream: upstream.base_url(),
            http: reqwest::Client::new(),
            state: Mutex::new(ProxyState::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hostile { proxy, base, task }
    }

    fn base_url(&self) -> String {
        self.base.clone()
    }

    fn set_feed(&self, feed: FeedTamper) {
        self.proxy.state.lock().unwrap().feed = feed;
    }

    fn set_database_endless(&self) {
        self.proxy.state.lock().unwrap().database_endless = true;
    }

    fn set_modify(&self, modify: ModifyTamper) {
        self.proxy.state.lock().unwrap().modify = modify;
    }

    /// Requests for `operation` that came at or after `since`.
    fn requests_since(&self, operation: &str, since: Instant) -> usize {
        let state = self.proxy.state.lock().unwrap();
        state
            .log
            .iter()
            .filter(|(op, at)| op == operation && *at >= since)
            .count()
    }

    /// Requests for `operation` so far.
    fn requests(&self, operation: &str) -> usize {
        let state = self.proxy.state.lock().unwrap();
        state.log.iter().filter(|(op, _)| op == operation).count()
    }

    /// Every request so far.
    fn all_requests(&self) -> usize {
        self.proxy.state.lock().unwrap().log.len()
    }

    fn feed_tokens(&self) -> Vec<Option<String>> {
        self.proxy.state.lock().unwrap().feed_tokens.clone()
    }

    /// Bytes streamed, per oversized answer.
    fn streamed(&self) -> Vec<u64> {
        let state = self.proxy.state.lock().unwrap();
        state
            .streamed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

/// `changes/zone` from `/database/1/{container}/{env}/{db}/changes/zone`, `tokens/create` from
/// `/device/1/{container}/{env}/tokens/create`, the path itself otherwise.
fn operation(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.first() {
        Some(&"database") if parts.len() > 5 => parts[5..].join("/"),
        Some(&"device") if parts.len() > 4 => parts[4..].join("/"),
        _ => path.to_owned(),
    }
}

async fn handle(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = operation(uri.path());
    let (feed, modify, database_endless) = {
        let mut state = proxy.state.lock().unwrap();
        state.log.push((op.clone(), Instant::now()));
        if op == "changes/zone" {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let asked = request["zones"][0]["syncToken"].as_str().map(str::to_owned);
            state.feed_tokens.push(asked);
        }
        let modify = state.modify;
        if op == "records/modify"
            && let ModifyTamper::Contend(left) = modify
        {
            state.modify = match left {
                0 | 1 => ModifyTamper::Forward,
                more => ModifyTamper::Contend(more - 1),
            };
        }
        (state.feed.clone(), modify, state.database_endless)
    };
    if op == "changes/database" && database_endless {
        let n = proxy.fresh();
        return json_answer(json!({
            "zones": [], "syncToken": format!("db-endless-{n}"), "moreComing": true,
        }));
    }
    if op == "changes/zone" && !matches!(feed, FeedTamper::Forward) {
        return proxy.tamper_feed(feed, &uri, &headers, body).await;
    }
    if op == "changes/database" && matches!(feed, FeedTamper::Churn) {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let mut answer = proxy.upstream_json(&uri, &headers, &request).await;
        answer["zones"]
            .as_array_mut()
            .unwrap()
            .push(json!({"zoneID": {"zoneName": "Notes"}}));
        return json_answer(answer);
    }
    if op == "records/modify" && matches!(modify, ModifyTamper::Churn) {
        return proxy.churn_modify(&uri, &headers, body, false).await;
    }
    if op == "records/modify" && matches!(modify, ModifyTamper::Contend(_)) {
        return proxy.churn_modify(&uri, &headers, body, true).await;
    }
    proxy.forward(method, &uri, &headers, body).await
}

impl Proxy {
    fn fresh(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.next += 1;
        state.next
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.upstream))
            .body(body);
        if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.send().await.unwrap()
    }

    /// Passes a request to the dev server and its answer back (status, headers, body).
    async fn forward(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let answer = self.call(method, path, headers, body).await;
        let mut response = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            let hop = [
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
                header::CONTENT_ENCODING,
            ];
            if !hop.contains(name) {
                response = response.header(name, value);
            }
        }
        response
            .body(Body::from(answer.bytes().await.unwrap()))
            .unwrap()
    }

    /// The dev server's JSON answer to `body` at `uri`.
    async fn upstream_json(&self, uri: &Uri, headers: &HeaderMap, body: &Value) -> Value {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let answer = self
            .call(Method::POST, path, headers, Bytes::from(body.to_string()))
            .await;
        answer.json().await.unwrap()
    }

    async fn tamper_feed(
        &self,
        feed: FeedTamper,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        let zone_id = request["zones"][0]["zoneID"].clone();
        match feed {
            FeedTamper::Forward => unreachable!("forwarded by the handler"),
            FeedTamper::Endless { records } => {
                let n = self.fresh();
                let records: Vec<Value> = (0..records)
                    .map(|i| wire_note(&format!("spam-{n}-{i}"), &format!("tag-{n}"), json!({})))
                    .collect();
                json_answer(json!({"zones": [{
                    "zoneID": zone_id, "syncToken": format!("endless-{n}"),
                    "records": records, "moreComing": true,
                }]}))
            }
            FeedTamper::EchoToken => {
                let token = request["zones"][0]["syncToken"]
                    .as_str()
                    .unwrap_or("stuck")
                    .to_owned();
                json_answer(json!({"zones": [{
                    "zoneID": zone_id, "syncToken": token, "records": [], "moreComing": true,
                }]}))
            }
            FeedTamper::Oversized(size) => self.oversized(size),
            FeedTamper::Inject(record) => {
                let mut answer = self.upstream_json(uri, headers, &request).await;
                answer["zones"][0]["records"]
                    .as_array_mut()
                    .unwrap()
                    .push(record);
                json_answer(answer)
            }
            FeedTamper::Churn => {
                request["zones"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("syncToken");
                let mut answer = self.upstream_json(uri, headers, &request).await;
                for record in answer["zones"][0]["records"].as_array_mut().unwrap() {
                    record["recordChangeTag"] = json!(format!("churn-{}", self.fresh()));
                }
                json_answer(answer)
            }
        }
    }

    /// An answer larger than any cap, counting what it hands to the connection.
    fn oversized(&self, size: Oversize) -> Response {
        let counter = Arc::new(AtomicU64::new(0));
        self.state.lock().unwrap().streamed.push(counter.clone());
        let total = match size {
            Oversize::Declared(length) => length,
            Oversize::Endless => ENDLESS_BYTES,
        };
        let prefix = Bytes::from_static(b"{\"zones\":[");
        let padding = Bytes::from(vec![b' '; 64 * 1024]);
        // Bounded: it ends after `total` bytes, and hyper stops polling it once the client hangs up.
        let stream = futures::stream::unfold(0u64, move |sent| {
            let counter = counter.clone();
            let piece = if sent == 0 {
                prefix.clone()
            } else {
                let left = usize::try_from(total - sent.min(total)).unwrap_or(usize::MAX);
                padding.slice(0..padding.len().min(left))
            };
            async move {
                if sent >= total {
                    return None;
                }
                counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
                let next = sent + piece.len() as u64;
                Some((Ok::<Bytes, std::io::Error>(piece), next))
            }
        });
        let mut response = Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8");
        if let Oversize::Declared(length) = size {
            response = response.header(header::CONTENT_LENGTH, length);
        }
        response.body(Body::from_stream(stream)).unwrap()
    }

    /// Every operation CONFLICT, with the dev server's copy under a change tag never seen before.
    /// Answers every operation CONFLICT with the dev server's copy under a fresh tag; with
    /// `edited`, the copy's `body` is changed too, as if another device had just edited it.
    async fn churn_modify(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        edited: bool,
    ) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let names: Vec<String> = request["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["record"]["recordName"].as_str().unwrap().to_owned())
            .collect();
        let lookup_uri: Uri = uri
            .to_string()
            .replace("records/modify", "records/lookup")
            .parse()
            .unwrap();
        let lookup = json!({
            "records": names.iter().map(|n| json!({"recordName": n})).collect::<Vec<_>>(),
            "zoneID": request["zoneID"],
        });
        let found = self.upstream_json(&lookup_uri, headers, &lookup).await;
        let answers: Vec<Value> = found["records"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&names)
            .map(|(copy, name)| {
                let mut conflict = json!({
                    "recordName": name, "reason": "oplock error", "serverErrorCode": "CONFLICT",
                });
                if copy.get("serverErrorCode").is_none() {
                    let mut copy = copy.clone();
                    let n = self.fresh();
                    copy["recordChangeTag"] = json!(format!("churn-{n}"));
                    if edited {
                        copy["fields"]["body"] =
                            json!({"value": format!("other-{n}"), "type": "STRING"});
                    }
                    conflict["serverRecord"] = copy;
                }
                conflict
            })
            .collect();
        json_answer(json!({ "records": answers }))
    }
}

fn json_answer(body: Value) -> Response {
    Response::builder()
        .status(200)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A `Note` as a change feed carries it, with `extra` fields beside its title.
fn wire_note(name: &str, tag: &str, extra: Value) -> Value {
    let mut fields = json!({"title": {"value": name, "type": "STRING"}});
    for (key, value) in extra.as_object().unwrap() {
        fields[key] = value.clone();
    }
    let stamp = json!({"timestamp": 1_700_000_000_000_i64, "userRecordName": "_other", "deviceID": "hostile"});
    json!({
        "recordName": name, "recordType": "Note", "recordChangeTag": tag,
        "fields": fields, "created": stamp, "modified": stamp,
    })
}

/// A device syncing through the hostile server, with its events from the very start.
async fn device_via(
    hostile: &Hostile,
    user: &str,
    config: SessionConfig,
) -> (Device, broadcast::Receiver<SyncEvent>) {
    let mut events = None;
    let device = Device::build(|b| {
        events = Some(b.events());
        b.dev_server(hostile.base_url(), user)
            .unwrap()
            .session(config)
    })
    .await;
    (device, events.unwrap())
}

/// Every event received so far.
fn drain(events: &mut broadcast::Receiver<SyncEvent>) -> Vec<SyncEvent> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return out,
        }
    }
}

/// The engine is alive: every component runs, it answers, and the liveness rule held throughout.
async fn assert_alive(device: &Device) {
    let states = device.engine.component_states().await.unwrap();
    assert!(
        states.iter().all(|s| s.state == ChildState::Running),
        "{states:?}"
    );
    let d = device.diagnostics().await;
    assert!(d.liveness_ok && d.liveness_violations == 0, "{d:#?}");
}

fn misbehaved(d: &Diagnostics, what: impl Fn(&MisbehaviorKind) -> bool) -> bool {
    d.server_misbehaving.iter().any(|m| what(&m.kind))
}

/// The process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

// 1. A change feed that never ends.

/// Bound: at most `max_pages_per_fetch` pages per fetch pass, and a pass only at `sync_now` or the
/// periodic fetch (at least 0.9 × `fetch_interval` apart), so over a window of W seconds at most
/// `max_pages_per_fetch × (W / (0.9 × fetch_interval) + 2)` requests. Without the bound the engine
/// fetches at the throttle's pace (here 40 a second and rising) and never sends.
async fn an_endless_feed_is_cut_short(records_per_page: usize) {
    const PAGES: u32 = 5;
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    hostile.set_feed(FeedTamper::Endless {
        records: records_per_page,
    });
    let mut config = session_config();
    config.max_pages_per_fetch = PAGES;
    config.fetch_interval = Duration::from_secs(1);
    let user = format!("endless-{records_per_page}");
    let (device, mut events) = device_via(&hostile, &user, config).await;
    let start = Instant::now();
    device
        .engine
        .save(note("mine", "sent anyway"))
        .await
        .unwrap();

    wait_for(&device, "the fetch cut short", |d| {
        d.server_misbehaving.iter().any(|m| {
            matches!(m.kind, MisbehaviorKind::FetchCutShort { .. }) && m.zone == Some(zone())
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(start.elapsed())).await;
    let window = start.elapsed().as_secs_f64();
    let pages = hostile.requests_since("changes/zone", start);
    let passes = (window / 0.9).floor() as usize + 2;
    eprintln!(
        "endless feed ({records_per_page} records a page): {pages} changes/zone requests in \
         {window:.2} s (bound {})",
        PAGES as usize * passes
    );
    assert!(
        pages >= PAGES as usize && pages <= PAGES as usize * passes,
        "{pages} pages in {window:.1} s (bound {})",
        PAGES as usize * passes
    );
    // Other work goes on: the local change reaches the server while the feed never ends.
    wait_for(&device, "the local change sent", |d| d.queue.pending == 0).await;
    assert!(server_records(&server, &user).await.contains_key("mine"));
    let told = drain(&mut events).into_iter().any(|e| {
        matches!(e, SyncEvent::ServerMisbehaved(m)
            if matches!(m.kind, MisbehaviorKind::FetchCutShort { .. }) && m.zone == Some(zone()))
    });
    assert!(told, "an event names the zone");
    let d = device.diagnostics().await;
    assert!(d.halt.is_none() && !d.offline, "{d:#?}");
    let entry = d
        .server_misbehaving
        .iter()
        .find(|m| m.zone == Some(zone()))
        .unwrap();
    assert_eq!(entry.kind, MisbehaviorKind::FetchCutShort { pages: PAGES });
    assert!(entry.times >= 1);
    assert_alive(&device).await;
    device.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_feed_with_new_records_is_cut_short_and_sends_still_go() {
    an_endless_feed_is_cut_short(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_feed_of_empty_pages_is_cut_short_and_sends_still_go() {
    an_endless_feed_is_cut_short(0).await;
}

/// The same bound for the database's feed: `changes/database` saying `moreComing` for ever is cut
/// short after `max_pages_per_fetch` pages per pass, and zones are fetched and changes sent
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_database_feed_is_cut_short_and_zones_and_sends_still_go() {
    const PAGES: u32 = 5;
    let server = server().await;
    let writer = Device::start(&server, "endless-db").await;
    writer.engine.save(note("theirs", "x")).await.unwrap();
    wait_quiet(&writer).await;
    writer.engine.shutdown().await;

    let hostile = Hostile::start(&server).await;
    hostile.set_database_endless();
    let mut config = session_config();
    config.max_pages_per_fetch = PAGES;
    config.fetch_interval = Duration::from_secs(1);
    let (device, _events) = device_via(&hostile, "endless-db", config).await;
    let start = Instant::now();
    device
        .engine
        .save(note("mine", "sent anyway"))
        .await
        .unwrap();
    wait_for(&device, "the database feed cut short", |d| {
        d.server_misbehaving.iter().any(|m| {
            m.kind == MisbehaviorKind::FetchCutShort { pages: PAGES }
                && m.operation == skysync_session::OperationKind::FetchDatabase
                && m.zone.is_none()
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(start.elapsed())).await;
    let window = start.elapsed().as_secs_f64();
    let pages = hostile.requests_since("changes/database", start);
    let bound = PAGES as usize * ((window / 0.9).floor() as usize + 2);
    eprintln!(
        "endless database feed: {pages} changes/database requests in {window:.2} s (bound {bound})"
    );
    assert!(
        pages <= bound,
        "{pages} pages in {window:.1} s (bound {bound})"
    );
    // The zone was fetched (its record arrived) and the local change sent meanwhile.
    wait_for(&device, "the local change sent", |d| d.queue.pending == 0).await;
    assert!(device.engine.get(id("theirs")).await.unwrap().is_some());
    assert!(
        server_records(&server, "endless-db")
            .await
            .contains_key("mine")
    );
    assert_alive(&device).await;
    device.engine.shutdown().await;
}

// 2. A token that never advances.

/// Bound: two requests (the first page, then the one that repeats the token), and one more per
/// fetch pass (`sync_now` here; the periodic fetch is an hour away). Without the check the engine
/// asks again from the same token at the throttle's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_never_advances_is_caught_at_once_and_not_asked_again() {
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    hostile.set_feed(FeedTamper::EchoToken);
    let mut config = session_config();
    config.fetch_interval = Duration::from_secs(3600);
    let (device, mut events) = device_via(&hostile, "stuck", config).await;
    device
        .engine
        .save(note("mine", "sent anyway"))
        .await
        .unwrap();
    wait_for(&device, "the stuck token", |d| {
        misbehaved(d, |k| *k == MisbehaviorKind::TokenNotAdvancing)
    })
    .await;
    wait_for(&device, "the local change sent", |d| d.queue.pending == 0).await;
    assert!(server_records(&server, "stuck").await.contains_key("mine"));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hostile.feed_tokens(),
        vec![None, Some("stuck".to_owned())],
        "caught on the first page that repeated its token, and not asked again"
    );
    device.engine.sync_now();
    wait_for(&device, "the next fetch pass", |d| {
        d.server_misbehaving.iter().any(|m| m.times == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hostile.requests("changes/zone"), 3, "one request per pass");

    let d = device.diagnostics().await;
    let entry = d
        .server_misbehaving
        .iter()
        .find(|m| m.kind == MisbehaviorKind::TokenNotAdvancing)
        .unwrap();
    assert_eq!(entry.zone, Some(zone()));
    assert!(d.halt.is_none(), "{d:#?}");
    assert!(drain(&mut events).iter().any(|e| matches!(e,
        SyncEvent::ServerMisbehaved(m) if m.kind == MisbehaviorKind::TokenNotAdvancing)));
    assert_alive(&device).await;
    device.engine.shutdown().await;
}

// 3. An answer of unbounded size.

/// Bound: each answer is read up to the cap and no further (the client hangs up, so the server
/// streams at most the cap plus socket buffers); it is a transient failure (not offline, not
/// throttled), so five in a row exhaust into a halt with a cool-down and the requests stop there.
async fn an_oversized_answer_is_refused(size: Oversize, cap: Option<usize>) {
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    hostile.set_feed(FeedTamper::Oversized(size));
    let user = "oversized";
    let mut client = CloudKitClient::builder(CONTAINER, Auth::web("dev-api-token", user))
        .base_url(hostile.base_url());
    if let Some(cap) = cap {
        client = client.max_response_bytes(cap);
    }
    let client = client.build().unwrap();
    let cap = cap.unwrap_or(MAX_RESPONSE_BYTES);
    let mut events = None;
    let device = Device::build(|b| {
        events = Some(b.events());
        b.cloudkit(client)
    })
    .await;
    device.engine.save(note("mine", "kept")).await.unwrap();
    wait_for(&device, "the halt", |d| d.halt.is_some()).await;

    let d = device.diagnostics().await;
    let Some(HaltReason::Exhausted {
        operation,
        failures,
        last_error,
        ..
    }) = d.halt.as_ref().map(|h| h.reason.clone())
    else {
        panic!("{d:#?}")
    };
    assert_eq!(operation, "fetch_zone");
    assert!(last_error.contains("size cap"), "{last_error}");
    assert!(!d.offline, "a server that misbehaves is not offline");
    let requests = hostile.requests("changes/zone");
    assert_eq!(requests, failures as usize, "{d:#?}");
    let entry = d
        .server_misbehaving
        .iter()
        .find(|m| matches!(m.kind, MisbehaviorKind::ResponseTooLarge { .. }))
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert_eq!(entry.zone, Some(zone()));
    assert_eq!(entry.times, u64::from(failures));
    let MisbehaviorKind::ResponseTooLarge {
        cap: seen_cap,
        declared,
        read,
    } = entry.kind
    else {
        unreachable!()
    };
    assert_eq!(seen_cap, cap);
    assert!(read <= cap, "read {read} of a cap of {cap}");
    match size {
        Oversize::Declared(length) => {
            assert_eq!((declared, read), (Some(length), 0), "refused on its word")
        }
        Oversize::Endless => assert!(declared.is_none() && read + 64 * 1024 >= cap),
    }
    let streamed = hostile.streamed();
    eprintln!(
        "oversized {size:?}: {requests} requests, cap {cap}, read {read}, streamed {streamed:?}"
    );
    assert_eq!(streamed.len(), requests);
    let taken = match size {
        Oversize::Declared(_) => 0,
        Oversize::Endless => cap as u64,
    };
    for bytes in &streamed {
        assert!(
            *bytes <= taken + SOCKET_SLACK,
            "{bytes} bytes streamed for a cap of {cap}: {streamed:?}"
        );
    }
    // Halted: no request at all over the next second; the pending change is kept.
    let before = hostile.all_requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hostile.all_requests(), before);
    let d = device.diagnostics().await;
    assert_eq!((d.status, d.queue.pending), (Status::Halted, 1));
    let told = drain(events.as_mut().unwrap()).into_iter().any(|e| {
        matches!(e, SyncEvent::ServerMisbehaved(m)
            if matches!(m.kind, MisbehaviorKind::ResponseTooLarge { .. }))
    });
    assert!(told);
    assert_alive(&device).await;
    device.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_streams_for_ever_stops_at_the_cap_and_exhausts_into_a_halt() {
    an_oversized_answer_is_refused(Oversize::Endless, Some(8 << 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_declaring_a_gigabyte_is_refused_before_its_body() {
    an_oversized_answer_is_refused(Oversize::Declared(1 << 30), None).await;
}

/// The default cap (200 records at the 1 MiB record limit, plus 4 MiB) against a server that
/// streams for ever: one request reads up to the cap, and the process's peak memory grows by about
/// the cap, not by the gigabyte the server would send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cap_holds_against_a_server_that_streams_for_ever() {
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    hostile.set_feed(FeedTamper::Oversized(Oversize::Endless));
    let client = CloudKitClient::builder(CONTAINER, Auth::web("dev-api-token", "default-cap"))
        .base_url(hostile.base_url())
        .build()
        .unwrap();
    assert_eq!(client.limits().max_response_bytes, MAX_RESPONSE_BYTES);
    let before = peak_rss();
    let started = Instant::now();
    let err = client.fetch_zone_changes(zone(), None).await.unwrap_err();
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "default cap: refused after {:.2} s; peak RSS {before} -> +{grown} bytes; streamed {:?}",
        started.elapsed().as_secs_f64(),
        hostile.streamed()
    );
    let CloudError::ResponseTooLarge {
        status,
        cap,
        declared,
        read,
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((status, cap, declared), (200, MAX_RESPONSE_BYTES, None));
    assert!(read <= cap && read + 64 * 1024 >= cap, "{read}");
    let streamed = hostile.streamed();
    assert!(
        streamed[0] <= cap as u64 + SOCKET_SLACK,
        "{streamed:?} for a cap of {cap}"
    );
    assert!(
        grown <= cap as u64 + (128 << 20),
        "peak memory grew by {grown} bytes for a cap of {cap}"
    );
}

// 4. A record of a newer schema.

/// Bound: one `changes/zone` request per fetch pass, and none while halted. Nothing of the page is
/// applied, its token is not taken, and the pending change stays.
async fn a_newer_record_halts(injected: Value, check: impl Fn(&HaltReason)) {
    let server = server().await;
    let writer = Device::start(&server, "schema").await;
    writer.engine.save(note("theirs", "x")).await.unwrap();
    wait_quiet(&writer).await;
    writer.engine.shutdown().await;

    let hostile = Hostile::start(&server).await;
    hostile.set_feed(FeedTamper::Inject(injected));
    let mut config = session_config();
    config.schema = SchemaGuard {
        version_field: Some("schemaVersion".into()),
        max_version: 1,
        known_fields: Vec::new(),
    };
    let (reader, mut events) = device_via(&hostile, "schema", config).await;
    reader.engine.save(note("mine", "local")).await.unwrap();
    wait_for(&reader, "the halt", |d| d.halt.is_some()).await;
    let d = reader.diagnostics().await;
    check(&d.halt.as_ref().unwrap().reason);

    // Nothing of the page applied; nothing local lost or sent.
    assert!(reader.engine.get(id("theirs")).await.unwrap().is_none());
    assert!(reader.engine.get(id("future")).await.unwrap().is_none());
    let mine = reader.engine.get(id("mine")).await.unwrap().unwrap();
    assert_eq!(text(&mine, "title").as_deref(), Some("local"));
    assert_eq!(d.queue.pending, 1, "{d:#?}");
    assert!(!server_records(&server, "schema").await.contains_key("mine"));

    // Halted: no request at all.
    let before = hostile.all_requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hostile.all_requests(), before);
    assert_eq!(hostile.requests("changes/zone"), 1);

    // Resumed without an upgrade: the same page from the same token, the same halt, once.
    reader.engine.resume().await.unwrap();
    wait_for(&reader, "the second halt", |d| d.halt.is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hostile.feed_tokens(),
        vec![None, None],
        "the token did not move"
    );
    let d = reader.diagnostics().await;
    check(&d.halt.as_ref().unwrap().reason);
    assert_eq!(d.queue.pending, 1);
    assert!(
        drain(&mut events)
            .iter()
            .any(|e| matches!(e, SyncEvent::Halted(_)))
    );
    assert_alive(&reader).await;
    reader.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_schema_in_a_page_halts_with_its_type_and_version() {
    let future = wire_note(
        "future",
        "tag-future",
        json!({"schemaVersion": {"value": 7, "type": "INT64"}}),
    );
    a_newer_record_halts(future, |reason| match reason {
        HaltReason::NewerSchema {
            record_type,
            version,
            ..
        } => assert_eq!((record_type.as_str(), *version), ("Note", Some(7))),
        other => panic!("{other:?}"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_a_type_this_build_does_not_know_halts_and_loses_nothing() {
    let future = wire_note(
        "future",
        "tag-future",
        json!({"hologram": {"value": 1, "type": "HOLOGRAM"}}),
    );
    a_newer_record_halts(future, |reason| match reason {
        HaltReason::Fatal { operation, error } => {
            assert_eq!(operation, "fetch_zone");
            assert!(error.contains("HOLOGRAM"), "{error}");
        }
        other => panic!("{other:?}"),
    })
    .await;
}

// 5. A change tag that changes on every read.

/// Bound: `max_conflicts_per_record` (5) `records/modify` requests for the record, then it is
/// parked with its reason and not sent again. Without the bound the engine resolves and re-sends at
/// the throttle's pace for ever (every send "succeeds" at the request level, so nothing exhausts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_tag_that_changes_on_every_read_parks_the_change_after_bounded_conflicts() {
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    let config = session_config();
    let limit = config.max_conflicts_per_record;
    assert_eq!(limit, 5, "the default");
    let (device, mut events) = device_via(&hostile, "churn", config).await;
    device.engine.save(note("n1", "orig")).await.unwrap();
    wait_quiet(&device).await;

    hostile.set_modify(ModifyTamper::Churn);
    hostile.set_feed(FeedTamper::Churn);
    let start = Instant::now();
    let mine = device.engine.get(id("n1")).await.unwrap().unwrap();
    device
        .engine
        .save(mine.with("title", "mine"))
        .await
        .unwrap();
    wait_for(&device, "the change parked", |d| d.queue.parked == 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!(
        "churn: {} records/modify and {} changes/zone requests in {:.2} s",
        hostile.requests_since("records/modify", start),
        hostile.requests_since("changes/zone", start),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        hostile.requests_since("records/modify", start),
        limit as usize,
        "each CONFLICT answered once, then parked and not sent again"
    );
    assert!(
        hostile.requests_since("changes/zone", start) >= 1,
        "the churning feed was read meanwhile"
    );

    let d = device.diagnostics().await;
    assert_eq!(d.parked[0].change.record_id(), &id("n1"));
    assert!(
        d.parked[0].reason.contains("CONFLICT"),
        "{}",
        d.parked[0].reason
    );
    assert!(misbehaved(&d, |k| *k
        == MisbehaviorKind::ChangeTagChurn {
            record: id("n1"),
            conflicts: limit,
        }));
    assert!(d.halt.is_none() && d.queue.pending == 0, "{d:#?}");
    let seen = drain(&mut events);
    assert!(seen.iter().any(|e| matches!(e,
        SyncEvent::ChangeParked { id: parked, .. } if *parked == id("n1"))));
    assert!(seen.iter().any(|e| matches!(e,
        SyncEvent::ServerMisbehaved(m) if matches!(m.kind, MisbehaviorKind::ChangeTagChurn { .. }))));
    // Nothing lost: the local edit stands, parked for the app.
    let local = device.engine.get(id("n1")).await.unwrap().unwrap();
    assert_eq!(text(&local, "title").as_deref(), Some("mine"));

    // The server behaves again: other changes go on; the parked one stays parked.
    hostile.set_modify(ModifyTamper::Forward);
    hostile.set_feed(FeedTamper::Forward);
    device.engine.save(note("n2", "after")).await.unwrap();
    wait_for(&device, "n2 sent", |d| d.queue.pending == 0).await;
    let on_server = server_records(&server, "churn").await;
    assert!(on_server.contains_key("n2"));
    assert_eq!(text(&on_server["n1"], "title").as_deref(), Some("orig"));
    assert_eq!(device.diagnostics().await.queue.parked, 1);
    assert_alive(&device).await;
    device.engine.shutdown().await;
}

/// The churn bound is for a server that changes a tag and nothing else: a record that other
/// devices keep editing answers CONFLICT with new contents every time, and each one is resolved
/// and sent again however many come in a row (here twice the bound); the change is never parked
/// and lands, merged with the other devices' last edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_other_devices_keep_editing_is_resolved_every_time_and_never_parked() {
    let server = server().await;
    let hostile = Hostile::start(&server).await;
    let config = session_config();
    let rounds = 2 * config.max_conflicts_per_record;
    let (device, _events) = device_via(&hostile, "contend", config).await;
    device.engine.save(note("n1", "orig")).await.unwrap();
    wait_quiet(&device).await;

    hostile.set_modify(ModifyTamper::Contend(rounds));
    let start = Instant::now();
    let mine = device.engine.get(id("n1")).await.unwrap().unwrap();
    device
        .engine
        .save(mine.with("title", "mine"))
        .await
        .unwrap();
    wait_quiet(&device).await;
    let d = device.diagnostics().await;
    assert_eq!(d.queue.parked, 0, "contention parked the change: {d:#?}");
    assert_eq!(d.queue.pending, 0, "{d:#?}");
    assert!(
        hostile.requests_since("records/modify", start) > rounds as usize,
        "every contended CONFLICT was resolved and sent again"
    );
    assert!(!misbehaved(&d, |k| matches!(
        k,
        MisbehaviorKind::ChangeTagChurn { .. }
    )));
    let on_server = server_records(&server, "contend").await;
    assert_eq!(text(&on_server["n1"], "title").as_deref(), Some("mine"));
    device.engine.shutdown().await;
}
