//! A view inside the dev server, for tests and the demo: what reached the server, counted per user
//! and operation (requests, requests in flight at once, throttled answers), and every record and
//! tombstone of a user's database, so that a device's store can be compared with the server without
//! a client in between.
//!
//! The endpoints (no authentication; a dev server only):
//!
//! | request | answer |
//! |---|---|
//! | `GET /_dev/stats` | [`ServerStats`]: every user's counters |
//! | `GET /_dev/stats/{user}` | [`UserStats`]: one user's counters (zeros for a user never seen) |
//! | `DELETE /_dev/stats` | [`StatsReset`]: sets every counter to zero (see [`RequestStats::reset`]) |
//! | `GET /_dev/records/{container}/{environment}/{database}?user={user}&zone={zone}` | [`DatabaseSnapshot`]: the database's zones with their records and tombstones; `zone` (optional) keeps one zone; `user` is required for `private` and `shared`, ignored for `public` |
//! | `GET /_dev/user?ckWebAuthToken={token}` or `?keyID={key id}` | [`DevUser`]: the user record name the server knows that caller by |
//!
//! A user is named by its user record name, the one `users/caller` answers: for a web auth token,
//! [`web_token_user`](crate::auth::web_token_user) of the token (the same for every rotation of it);
//! for a server-to-server key, [`server_key_user`](crate::auth::server_key_user) of its key id;
//! requests with neither are counted under [`ANONYMOUS`](crate::rate_limit::ANONYMOUS). `GET
//! /_dev/user` answers the same name over HTTP. [`DevView`] builds the URLs.
//!
//! What is counted: every CloudKit request (`/database/…` and `/device/…/tokens/…`), from the moment
//! it arrives (before any throttling or fault) until its response is complete: its body's last
//! bytes handed to the connection, or the connection dropped. Courier long-polls and `/_dev/`
//! requests are not counted. A throttled answer is one with status 429 or 503, whoever produced it
//! (the throttle profile, the rate limit or an injected fault); a locked-out answer is one of the
//! throttle profile's refusals of a client that came back before its `retryAfter`.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use skysync_model::wire::WireRecord;

use crate::changes::zone_token;
use crate::faults::cloudkit_operation;
use crate::rate_limit::user_of;
use crate::reply::{json_reply, wrong_method_reply};
use crate::state::{Database, DbKey, StoredRecord};
use crate::throttle_profile::ThrottleCause;

/// Every user's counters: the answer to `GET /_dev/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    /// Counters by user record name.
    pub users: BTreeMap<String, UserStats>,
}

/// One user's counters: the answer to `GET /_dev/stats/{user}`, and an entry of [`ServerStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStats {
    /// The user's requests, every operation together.
    #[serde(flatten)]
    pub totals: OperationStats,
    /// The same counters per operation (`records/modify`, `changes/zone`, `tokens/create`, …).
    pub operations: BTreeMap<String, OperationStats>,
}

/// Counters of one user's requests (to one operation, or to all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStats {
    /// Requests received.
    pub requests: u64,
    /// Answers with status 429 or 503.
    pub throttled: u64,
    /// Refusals of the throttle profile because the client came back before its `retryAfter`.
    pub locked_out: u64,
    /// Requests in flight now (received, response not complete).
    pub in_flight: u64,
    /// The most requests that were in flight at once.
    pub max_in_flight: u64,
}

/// The answer to `DELETE /_dev/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReset {
    /// How many users had counters.
    pub users: usize,
}

/// The answer to `GET /_dev/user`: the name the server knows a caller by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevUser {
    /// The user record name (`_` and 32 hex digits).
    pub user_record_name: String,
}

/// A database's contents: the answer to `GET /_dev/records/…`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSnapshot {
    /// Its zones (including the default zone and deleted zones), by name.
    pub zones: Vec<ZoneSnapshot>,
}

/// One zone's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSnapshot {
    /// The zone's name.
    pub zone_name: String,
    /// Whether the zone was deleted (its records and tombstones went with it).
    pub deleted: bool,
    /// The zone's current sync token, as `zones/list` reports it (none for a deleted zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// The live records, by record name, as CloudKit answers them: type, change tag, every field
    /// and the `created` and `modified` stamps.
    pub records: Vec<WireRecord>,
    /// The deleted records, by record name.
    pub tombstones: Vec<TombstoneSnapshot>,
}

/// A deleted record the server remembers (and reports to change fetches from a token).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TombstoneSnapshot {
    /// The record's name.
    pub record_name: String,
    /// Its type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    /// The change tag of the delete.
    pub record_change_tag: String,
    /// When it was deleted, in ms since 1970.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<i64>,
}

/// The URLs of a dev server's view inside, for a test or the demo to fetch with any HTTP client
/// and read into the typed answers of this module.
///
/// ```
/// use skysync_devserver::auth::web_token_user;
/// use skysync_devserver::dev_view::DevView;
///
/// let view = DevView::new("http://127.0.0.1:8787/");
/// let alice = web_token_user("alice's token");
/// assert_eq!(view.stats_url(), "http://127.0.0.1:8787/_dev/stats");
/// assert_eq!(view.user_stats_url(&alice), format!("http://127.0.0.1:8787/_dev/stats/{alice}"));
/// assert_eq!(
///     view.records_url("iCloud.com.example", "development", "private", Some(&alice), Some("My Notes")),
///     format!(
///         "http://127.0.0.1:8787/_dev/records/iCloud.com.example/development/private\
///          ?user={alice}&zone=My%20Notes"
///     )
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevView {
    base_url: String,
}

/// What is percent-encoded in a path segment or query value: everything but unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

impl DevView {
    /// The view of the server at `base_url` (as [`crate::DevServer::base_url`] gives it; a trailing
    /// `/` is ignored).
    pub fn new(base_url: impl Into<String>) -> DevView {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        DevView { base_url }
    }

    /// `GET` for [`ServerStats`], `DELETE` to reset every counter.
    pub fn stats_url(&self) -> String {
        format!("{}/_dev/stats", self.base_url)
    }

    /// `GET` for one user's [`UserStats`].
    pub fn user_stats_url(&self, user_record_name: &str) -> String {
        format!("{}/_dev/stats/{}", self.base_url, encode(user_record_name))
    }

    /// `GET` for a [`DatabaseSnapshot`] of `database` (`private`, `shared` or `public`) of
    /// `container` in `environment`, owned by `user_record_name` (required unless public), with
    /// only `zone` if given.
    pub fn records_url(
        &self,
        container: &str,
        environment: &str,
        database: &str,
        user_record_name: Option<&str>,
        zone: Option<&str>,
    ) -> String {
        let mut url = format!(
            "{}/_dev/records/{}/{}/{}",
            self.base_url,
            encode(container),
            encode(environment),
            encode(database)
        );
        let query: Vec<String> = [("user", user_record_name), ("zone", zone)]
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| format!("{name}={}", encode(value))))
            .collect();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// `GET` for the [`DevUser`] a web auth token signs in as.
    pub fn user_url(&self, web_auth_token: &str) -> String {
        format!(
            "{}/_dev/user?ckWebAuthToken={}",
            self.base_url,
            encode(web_auth_token)
        )
    }
}

/// The live counters of one dev server. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct RequestStats {
    users: Arc<Mutex<HashMap<String, UserCounters>>>,
}

#[derive(Debug, Default)]
struct UserCounters {
    totals: OperationStats,
    operations: HashMap<String, OperationStats>,
}

impl OperationStats {
    fn arrived(&mut self) {
        self.requests += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    fn answered(&mut self, throttled: bool, locked_out: bool) {
        self.throttled += u64::from(throttled);
        self.locked_out += u64::from(locked_out);
    }

    fn completed(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn reset(&mut self) {
        *self = OperationStats {
            in_flight: self.in_flight,
            max_in_flight: self.in_flight,
            ..OperationStats::default()
        };
    }
}

impl RequestStats {
    /// Every user's counters now.
    pub fn snapshot(&self) -> ServerStats {
        let users = self.lock();
        ServerStats {
            users: users
                .iter()
                .map(|(user, counters)| (user.clone(), counters.to_stats()))
                .collect(),
        }
    }

    /// One user's counters now (zeros for a user never seen).
    pub fn user(&self, user_record_name: &str) -> UserStats {
        self.lock()
            .get(user_record_name)
            .map(UserCounters::to_stats)
            .unwrap_or_default()
    }

    /// Sets every count to zero and every maximum in flight to the requests in flight now (which
    /// stay counted until they complete); forgets users with nothing in flight. Returns how many
    /// users had counters.
    pub fn reset(&self) -> usize {
        let mut users = self.lock();
        let had = users.len();
        users.retain(|_, counters| counters.totals.in_flight > 0);
        for counters in users.values_mut() {
            counters.totals.reset();
            counters.operations.retain(|_, stats| stats.in_flight > 0);
            counters
                .operations
                .values_mut()
                .for_each(OperationStats::reset);
        }
        had
    }

    /// Counts a request of `user` to `operation` arriving; it stays in flight until the returned
    /// guard is dropped.
    fn arrive(&self, user: &str, operation: &str) -> InFlight {
        let mut users = self.lock();
        let counters = users.entry(user.to_owned()).or_default();
        counters.totals.arrived();
        counters
            .operations
            .entry(operation.to_owned())
            .or_default()
            .arrived();
        InFlight {
            stats: self.clone(),
            user: user.to_owned(),
            operation: operation.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, UserCounters>> {
        // Every edit under the lock is a few integer updates that leave the map whole.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `/_dev/stats` endpoints over these counters.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/_dev/stats",
                get(all_stats)
                    .delete(reset_stats)
                    .fallback(stats_wrong_method),
            )
            .route(
                "/_dev/stats/{user}",
                get(one_user_stats).fallback(stats_wrong_method),
            )
            .with_state(self.clone())
    }
}

impl UserCounters {
    fn to_stats(&self) -> UserStats {
        UserStats {
            totals: self.totals.clone(),
            operations: self
                .operations
                .iter()
                .map(|(operation, stats)| (operation.clone(), stats.clone()))
                .collect(),
        }
    }
}

/// One request in flight; dropping it completes the request.
#[derive(Debug)]
struct InFlight {
    stats: RequestStats,
    user: String,
    operation: String,
}

impl InFlight {
    /// Counts the answer's kind (throttled, locked out).
    fn answered(&self, response: &Response) {
        let status = response.status();
        let throttled =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        let locked_out = matches!(
            response.extensions().get::<ThrottleCause>(),
            Some(ThrottleCause::CameBackEarly { .. })
        );
        let mut users = self.stats.lock();
        if let Some(counters) = users.get_mut(&self.user) {
            counters.totals.answered(throttled, locked_out);
            if let Some(stats) = counters.operations.get_mut(&self.operation) {
                stats.answered(throttled, locked_out);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut users = self.stats.lock();
        if let Some(counters) = users.get_mut(&self.user) {
            counters.totals.completed();
            if let Some(stats) = counters.operations.get_mut(&self.operation) {
                stats.completed();
            }
        }
    }
}

/// A response body that completes its request when its last frame is handed over, when it fails,
/// or when it is dropped unfinished (a dropped connection), whichever comes first.
struct CountedBody {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.in_flight = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.in_flight = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts CloudKit requests per user and operation, in flight from arrival until the response is
/// complete (see the module's documentation). Other requests pass uncounted.
pub async fn middleware(
    State(stats): State<RequestStats>,
    request: Request,
    next: Next,
) -> Response {
    let Some(operation) = cloudkit_operation(request.uri().path()) else {
        return next.run(request).await;
    };
    let in_flight = stats.arrive(&user_of(&request), &operation);
    let response = next.run(request).await;
    in_flight.answered(&response);
    let (parts, body) = response.into_parts();
    let in_flight = if body.is_end_stream() {
        // Nothing left to send: complete now.
        drop(in_flight);
        None
    } else {
        Some(in_flight)
    };
    Response::from_parts(
        parts,
        Body::new(CountedBody {
            inner: body,
            in_flight,
        }),
    )
}

/// The contents of `db` (stored under `key`), with only zone `only` if given.
pub(crate) fn database_snapshot(
    db: &Database,
    key: &DbKey,
    only: Option<&str>,
) -> DatabaseSnapshot {
    let zones = db
        .zones
        .iter()
        .filter(|(name, _)| only.is_none_or(|only| only == name.as_str()))
        .map(|(name, zone)| {
            let mut stored: Vec<&StoredRecord> = zone.records.values().collect();
            stored.sort_by(|a, b| a.record.id.record_name.cmp(&b.record.id.record_name));
            let (tombstones, live): (Vec<&StoredRecord>, Vec<&StoredRecord>) =
                stored.into_iter().partition(|r| r.is_tombstone());
            ZoneSnapshot {
                zone_name: name.clone(),
                deleted: !zone.is_live(),
                sync_token: zone
                    .is_live()
                    .then(|| zone_token(key, db.epoch, name, zone)),
                records: live.iter().map(|r| r.record.to_wire(false)).collect(),
                tombstones: tombstones
                    .iter()
                    .map(|r| {
                        let system = r.record.system.as_ref();
                        TombstoneSnapshot {
                            record_name: r.record.id.record_name.clone(),
                            record_type: Some(r.record.record_type.clone())
                                .filter(|t| !t.is_empty()),
                            record_change_tag: system
                                .map(|s| s.change_tag.0.clone())
                                .unwrap_or_default(),
                            deleted_at_ms: system
                                .and_then(|s| s.modified.as_ref())
                                .map(|stamp| stamp.timestamp_ms),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    DatabaseSnapshot { zones }
}

async fn all_stats(State(stats): State<RequestStats>) -> Response {
    json_reply(StatusCode::OK, &stats.snapshot())
}

async fn one_user_stats(State(stats): State<RequestStats>, Path(user): Path<String>) -> Response {
    json_reply(StatusCode::OK, &stats.user(&user))
}

async fn reset_stats(State(stats): State<RequestStats>) -> Response {
    let users = stats.reset();
    tracing::info!(users, "request counters reset");
    json_reply(StatusCode::OK, &StatsReset { users })
}

async fn stats_wrong_method() -> Response {
    wrong_method_reply(
        "GET,DELETE",
        "/_dev/stats answers GET (counters) and DELETE (reset); /_dev/stats/{user} answers GET",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::any;
    use tower::ServiceExt as _;

    const LIST: &str = "/database/1/iCloud.c/development/private/zones/list?ckWebAuthToken=alice";

    fn app(stats: &RequestStats, status: StatusCode) -> Router {
        Router::new()
            .route(
                "/database/{*rest}",
                any(move || async move { (status, "{\"zones\":[]}") }),
            )
            .route("/_dev/other", any(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                stats.clone(),
                middleware,
            ))
    }

    fn request(uri: &str) -> Request {
        axum::http::Request::builder()
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    fn alice() -> String {
        crate::auth::web_token_user("alice")
    }

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_is_read() {
        let stats = RequestStats::default();
        let router = app(&stats, StatusCode::OK);
        let response = router.clone().oneshot(request(LIST)).await.unwrap();
        let during = stats.user(&alice());
        assert_eq!(during.totals.in_flight, 1, "the body is not sent yet");
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let after = stats.user(&alice());
        assert_eq!(after.totals.in_flight, 0);
        assert_eq!(after.totals.max_in_flight, 1);
        assert_eq!(after.totals.requests, 1);
        assert_eq!(after.operations["zones/list"].requests, 1);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_completes_its_request() {
        let stats = RequestStats::default();
        let router = app(&stats, StatusCode::OK);
        let first = router.clone().oneshot(request(LIST)).await.unwrap();
        let second = router.clone().oneshot(request(LIST)).await.unwrap();
        assert_eq!(stats.user(&alice()).totals.in_flight, 2);
        drop(first);
        drop(second);
        let after = stats.user(&alice());
        assert_eq!(after.totals.in_flight, 0);
        assert_eq!(after.totals.max_in_flight, 2);
    }

    #[tokio::test]
    async fn throttled_answers_are_counted_and_other_paths_are_not() {
        let stats = RequestStats::default();
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let router = app(&stats, status);
            drop(router.clone().oneshot(request(LIST)).await.unwrap());
            drop(router.oneshot(request("/_dev/other")).await.unwrap());
        }
        let counted = stats.snapshot();
        assert_eq!(counted.users.len(), 1, "{counted:?}");
        let alice = &counted.users[&alice()];
        assert_eq!(alice.totals.requests, 2);
        assert_eq!(alice.totals.throttled, 2);
        assert_eq!(alice.totals.locked_out, 0);
    }

    #[tokio::test]
    async fn a_reset_zeroes_the_counts_and_keeps_what_is_in_flight() {
        let stats = RequestStats::default();
        let router = app(&stats, StatusCode::OK);
        drop(router.clone().oneshot(request(LIST)).await.unwrap());
        let held = router.clone().oneshot(request(LIST)).await.unwrap();
        let bob = LIST.replace("alice", "bob");
        drop(router.clone().oneshot(request(&bob)).await.unwrap());
        assert_eq!(stats.reset(), 2);
        let counted = stats.snapshot();
        assert_eq!(counted.users.len(), 1, "bob had nothing in flight");
        let alice = &counted.users[&alice()];
        assert_eq!(alice.totals.requests, 0);
        assert_eq!(alice.totals.in_flight, 1);
        assert_eq!(alice.totals.max_in_flight, 1);
        drop(held);
        assert_eq!(
            stats
                .user(&crate::auth::web_token_user("alice"))
                .totals
                .in_flight,
            0
        );
    }

    #[test]
    fn the_json_shapes_are_camel_case_and_flat_for_totals() {
        let mut stats = UserStats::default();
        stats.totals.max_in_flight = 2;
        stats
            .operations
            .insert("records/modify".into(), OperationStats::default());
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "requests": 0, "throttled": 0, "lockedOut": 0, "inFlight": 0, "maxInFlight": 2,
                "operations": {"records/modify": {
                    "requests": 0, "throttled": 0, "lockedOut": 0, "inFlight": 0, "maxInFlight": 0
                }}
            })
        );
        let back: UserStats = serde_json::from_value(json).unwrap();
        assert_eq!(back, stats);
    }
}
