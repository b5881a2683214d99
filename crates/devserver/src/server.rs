//! The HTTP surface: routes, the layers around them, authentication, and the dispatch of each
//! CloudKit endpoint to the planning code of its module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync_model::ServerErrorCode;
use skysync_model::wire::{
    CourierPoll, TokenCreateRequest, TokenCreateResponse, TokenRegisterRequest, UserIdentity,
    UsersResponse,
};
use tokio::sync::{RwLock, watch};

use crate::auth::{self, Caller, WEB_AUTH_TOKEN_HEADER};
use crate::courier::{self, Courier};
use crate::dev_view::{self, DevUser, RequestStats};
use crate::faults::{self, Faults};
use crate::persist::Disk;
use crate::rate_limit::{self, RateLimit};
use crate::records::{self, Planned, Writer};
use crate::reply::{Refusal, error_reply, json_reply, wrong_method_reply};
use crate::s2s::{DATE_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER, ServerKeys, SignedRequest};
use crate::state::{CourierOwner, Database, DbKey, Scope, State as Data, Write};
use crate::throttle_profile::{self, ProfileLimiter, ProfileThrottle};
use crate::time_scale::{ServerClock, TimeScale};
use crate::{DevServerError, ServerConfig, changes, subscriptions, zones};

/// A CloudKit endpoint this server knows, by its operation subpath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    RecordsModify,
    RecordsLookup,
    RecordsQuery,
    RecordsChanges,
    ZonesList,
    ZonesLookup,
    ZonesModify,
    ZonesChanges,
    ChangesDatabase,
    ChangesZone,
    SubscriptionsList,
    SubscriptionsLookup,
    SubscriptionsModify,
    UsersCaller,
    UsersCurrent,
    TokensCreate,
    TokensRegister,
}

impl Endpoint {
    /// The endpoint under `/database/1/{c}/{env}/{db}/`.
    fn database_operation(operation: &str) -> Option<Endpoint> {
        Some(match operation {
            "records/modify" => Endpoint::RecordsModify,
            "records/lookup" => Endpoint::RecordsLookup,
            "records/query" => Endpoint::RecordsQuery,
            "records/changes" => Endpoint::RecordsChanges,
            "zones/list" => Endpoint::ZonesList,
            "zones/lookup" => Endpoint::ZonesLookup,
            "zones/modify" => Endpoint::ZonesModify,
            "zones/changes" => Endpoint::ZonesChanges,
            "changes/database" => Endpoint::ChangesDatabase,
            "changes/zone" => Endpoint::ChangesZone,
            "subscriptions/list" => Endpoint::SubscriptionsList,
            "subscriptions/lookup" => Endpoint::SubscriptionsLookup,
            "subscriptions/modify" => Endpoint::SubscriptionsModify,
            "users/caller" => Endpoint::UsersCaller,
            "users/current" => Endpoint::UsersCurrent,
            _ => return None,
        })
    }

    /// The method CloudKit serves the endpoint with.
    fn method(self) -> Method {
        match self {
            Endpoint::ZonesList
            | Endpoint::SubscriptionsList
            | Endpoint::UsersCaller
            | Endpoint::UsersCurrent => Method::GET,
            _ => Method::POST,
        }
    }

    /// Whether the endpoint needs a user even on the public database (writes, subscriptions,
    /// identities, notification tokens).
    fn needs_user(self) -> bool {
        matches!(
            self,
            Endpoint::RecordsModify
                | Endpoint::ZonesModify
                | Endpoint::SubscriptionsList
                | Endpoint::SubscriptionsLookup
                | Endpoint::SubscriptionsModify
                | Endpoint::UsersCaller
                | Endpoint::UsersCurrent
                | Endpoint::TokensCreate
                | Endpoint::TokensRegister
        )
    }

    /// Whether the endpoint is one of the user-identity ones (web auth only).
    fn is_users(self) -> bool {
        matches!(self, Endpoint::UsersCaller | Endpoint::UsersCurrent)
    }

    /// Whether the endpoint serves only the private and shared databases.
    fn private_only(self) -> bool {
        matches!(
            self,
            Endpoint::RecordsChanges | Endpoint::ChangesDatabase | Endpoint::ChangesZone
        )
    }
}

/// Everything the handlers share.
pub(crate) struct App {
    /// Where the server listens (for the URLs it hands out).
    addr: SocketAddr,
    /// The API token required as `ckAPIToken`, if any.
    api_token: Option<String>,
    /// The largest body accepted (enforced by `DefaultBodyLimit`; quoted in the refusal).
    max_body_bytes: usize,
    /// Server-to-server keys accepted on the public database.
    keys: ServerKeys,
    /// The data, the source of truth for serving.
    data: RwLock<Data>,
    /// Where the data is persisted, if anywhere.
    disk: Option<Disk>,
    /// Courier mailboxes.
    courier: Courier,
    /// Becomes `true` when the server stops (ends long-polls).
    stopped: watch::Receiver<bool>,
    /// How much faster than real time the server's durations run.
    time_scale: TimeScale,
    /// Armed faults (item faults are applied while planning `records/modify`).
    faults: Faults,
}

type Shared = Arc<App>;

/// Builds the complete router for `config`, listening at `addr`, with `faults` armed through
/// `/_dev/faults`; `stopped` turns `true` at shutdown. Also returns the data file, if any, for the
/// server to close at shutdown.
pub(crate) async fn router(
    config: &ServerConfig,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
    faults: Faults,
    stats: RequestStats,
) -> Result<(Router, Option<Disk>), DevServerError> {
    let mut keys = ServerKeys::default();
    for (key_id, pem) in &config.s2s_keys {
        keys.insert_pem(key_id, pem)?;
    }
    let (disk, data) = match &config.data_dir {
        Some(dir) => {
            let (disk, data) = Disk::open(dir.clone()).await?;
            (Some(disk), data)
        }
        None => (None, Data::default()),
    };
    let app = Arc::new(App {
        addr,
        api_token: config.api_token.clone(),
        max_body_bytes: config.max_body_bytes,
        keys,
        data: RwLock::new(data),
        disk: disk.clone(),
        courier: Courier::default(),
        stopped,
        time_scale: config.time_scale,
        faults: faults.clone(),
    });

    let mut cloudkit = Router::new()
        .route(
            "/database/{version}/{container}/{environment}/{database}/{*operation}",
            any(database_endpoint),
        )
        .route(
            "/device/{version}/{container}/{environment}/tokens/{operation}",
            any(device_endpoint),
        )
        .with_state(Arc::clone(&app));
    if let Some(per_second) = config.rate_limit {
        cloudkit = cloudkit.layer(axum::middleware::from_fn_with_state(
            RateLimit::scaled(per_second, config.time_scale),
            rate_limit::middleware,
        ));
    }
    if let Some(profile) = &config.throttle_profile {
        let throttle = ProfileThrottle {
            limiter: ProfileLimiter::new(profile.clone())?,
            clock: ServerClock::start(config.time_scale),
        };
        cloudkit = cloudkit.layer(axum::middleware::from_fn_with_state(
            throttle,
            throttle_profile::middleware,
        ));
    }
    let support = Router::new()
        .route(
            "/_courier/{token}",
            get(courier_poll).fallback(support_wrong_method),
        )
        .route("/_auth/signin", get(sign_in).fallback(support_wrong_method))
        .route(
            "/_dev/records/{container}/{environment}/{database}",
            get(dev_records).fallback(support_wrong_method),
        )
        .route("/_dev/user", get(dev_user).fallback(support_wrong_method))
        .with_state(app);
    let router = Router::new()
        .merge(cloudkit)
        .merge(support)
        .merge(faults.router())
        .merge(stats.router())
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::middleware,
        ))
        // Outside the faults, so that injected answers and delays are counted too.
        .layer(axum::middleware::from_fn_with_state(
            stats,
            dev_view::middleware,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(cloudkit_headers))
        .layer(axum::middleware::from_fn(catch_panic));
    Ok((router, disk))
}

/// The last line of defence: a handler that panics is answered `500 INTERNAL_ERROR`, and the
/// server keeps serving.
async fn catch_panic(request: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!("a request handler panicked; answered 500");
            error_reply(
                ServerErrorCode::InternalError,
                "the dev server failed while handling this request",
                None,
            )
        }
    }
}

/// Adds the headers CloudKit puts on every response, and logs the request (never its query, which
/// holds tokens, nor courier paths, which are tokens).
async fn cloudkit_headers(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(uuid) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert(HeaderName::from_static("x-apple-request-uuid"), uuid);
    }
    headers.insert(
        HeaderName::from_static("x-apple-cloudkit-version"),
        HeaderValue::from_static("1.0"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Apple-Request-UUID,X-Apple-CloudKit-Web-Auth-Token"),
    );
    let shown = if path.starts_with("/_courier/") {
        "/_courier/…"
    } else {
        path.as_str()
    };
    tracing::debug!(%method, path = shown, status = response.status().as_u16(), "request");
    response
}

async fn unknown_path() -> Response {
    error_reply(
        ServerErrorCode::NotFound,
        "could not find handler for endpoint",
        None,
    )
}

fn method_not_allowed(allowed: &Method, method: &Method) -> Response {
    wrong_method_reply(
        allowed.as_str(),
        &format!("method {method} is not allowed on this endpoint; use {allowed}"),
    )
}

async fn support_wrong_method(method: Method) -> Response {
    method_not_allowed(&Method::GET, &method)
}

/// Parses a JSON request body: a missing body, invalid UTF-8 or malformed JSON is `BAD_REQUEST`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad_request("missing request body"));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(Refusal::bad_request("request body is not valid UTF-8"));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request(format!("malformed request body: {e}")))
}

fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Refusal> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                ServerErrorCode::LimitExceeded,
                format!("request body is larger than the limit of {limit} bytes"),
            )
        } else {
            Refusal::bad_request("could not read the request body")
        }
    })
}

fn query_params(uri: &Uri) -> Result<Vec<(String, String)>, Refusal> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(|_| Refusal::bad_request("malformed query string"))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn json_ok<T: Serialize>(body: &T) -> Response {
    json_reply(StatusCode::OK, body)
}

/// What a request is, once routed.
struct Incoming<'a> {
    headers: &'a HeaderMap,
    path: &'a str,
    params: &'a [(String, String)],
    body: &'a [u8],
}

impl App {
    fn sign_in_url(&self) -> String {
        format!("http://{}/_auth/signin", self.addr)
    }

    fn sign_in_required(&self, reason: &str) -> Refusal {
        Refusal {
            code: ServerErrorCode::AuthenticationRequired,
            reason: reason.to_owned(),
            redirect_url: Some(self.sign_in_url()),
        }
    }

    /// Works out who is calling. `scope` is the database (`None` for the device endpoints).
    fn authenticate(
        &self,
        incoming: &Incoming<'_>,
        scope: Option<Scope>,
    ) -> Result<Caller, Refusal> {
        let failed = |reason: &str| Refusal::new(ServerErrorCode::AuthenticationFailed, reason);
        if let Some(key_id) = incoming.headers.get(KEY_ID_HEADER) {
            if matches!(scope, Some(Scope::Private | Scope::Shared)) {
                return Err(failed(
                    "server-to-server keys are accepted on the public database only",
                ));
            }
            let header = |name: &str| {
                incoming
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| failed("authentication failed"))
            };
            let key_id = key_id
                .to_str()
                .map_err(|_| failed("authentication failed"))?;
            let signed = SignedRequest {
                key_id,
                date: header(DATE_HEADER)?,
                signature: header(SIGNATURE_HEADER)?,
                body: incoming.body,
                path: incoming.path,
            };
            return match self.keys.verify(&signed, SystemTime::now()) {
                Ok(()) => Ok(Caller::ServerKey {
                    user: auth::server_key_user(key_id),
                }),
                Err(rejected) => {
                    tracing::info!(%rejected, "server-to-server request refused");
                    Err(failed("authentication failed"))
                }
            };
        }
        if let Some(expected) = &self.api_token {
            match param(incoming.params, "ckAPIToken") {
                None | Some("") => return Err(failed("missing ckAPIToken")),
                Some(sent) if sent != expected => return Err(failed("invalid ckAPIToken")),
                Some(_) => {}
            }
        }
        Ok(match param(incoming.params, "ckWebAuthToken") {
            Some(token) if !token.is_empty() => Caller::WebUser {
                user: auth::web_token_user(token),
            },
            _ => Caller::Anonymous,
        })
    }

    /// The first steps of every CloudKit request: read its body and query and work out who is
    /// calling. `scope` is the database (`None` for the device endpoints).
    fn admit(
        &self,
        scope: Option<Scope>,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<(Caller, Bytes), Refusal> {
        let body = read_body(body, self.max_body_bytes)?;
        let params = query_params(uri)?;
        let incoming = Incoming {
            headers,
            path: uri.path(),
            params: &params,
            body: &body,
        };
        let caller = self.authenticate(&incoming, scope)?;
        Ok((caller, body))
    }

    /// Runs a read-only endpoint against a database.
    async fn read(
        &self,
        key: &DbKey,
        run: impl FnOnce(&Database) -> Result<Response, Refusal>,
    ) -> Response {
        let data = self.data.read().await;
        run(&data.database(key)).unwrap_or_else(IntoResponse::into_response)
    }

    /// Runs a writing endpoint: plans against the database, commits the changes (to disk first),
    /// then answers and delivers the notifications the changes fire.
    async fn write<T: Serialize>(
        &self,
        key: &DbKey,
        plan: impl FnOnce(&Database) -> Result<Planned<T>, Refusal>,
    ) -> Response {
        let mut data = self.data.write().await;
        let planned = {
            match plan(&data.database(key)) {
                Ok(planned) => planned,
                Err(refusal) => return refusal.into_response(),
            }
        };
        let response = json_reply(planned.status, &planned.body);
        if let Some(changes) = planned.changes
            && let Err(e) = self.commit(&mut data, changes.into_writes()).await
        {
            return storage_failed(&e);
        }
        let notifications = subscriptions::notifications(&data, key, &planned.touched);
        drop(data);
        self.courier.deliver(notifications);
        response
    }

    /// Persists `writes` (if the server persists) and applies them.
    async fn commit(&self, data: &mut Data, writes: Vec<Write>) -> Result<(), DevServerError> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(disk) = &self.disk {
            disk.persist(&writes).await?;
        }
        data.apply(writes);
        Ok(())
    }
}

fn storage_failed(error: &DevServerError) -> Response {
    tracing::error!(%error, "could not store a change; answered 500");
    error_reply(
        ServerErrorCode::InternalError,
        "the dev server could not store the change; nothing was applied",
        None,
    )
}

type DatabasePath = (String, String, String, String, String);

async fn database_endpoint(
    State(app): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<DatabasePath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path((version, container, environment, database, operation))) = path else {
        return unknown_path().await;
    };
    let (Some(endpoint), Some(scope), "1") = (
        Endpoint::database_operation(&operation),
        Scope::parse(&database),
        version.as_str(),
    ) else {
        return unknown_path().await;
    };
    if method != endpoint.method() {
        return method_not_allowed(&endpoint.method(), &method);
    }
    let (caller, body) = match app.admit(Some(scope), &uri, &headers, body) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let response = serve_database(
        &app,
        endpoint,
        scope,
        &container,
        &environment,
        &caller,
        &body,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response);
    with_rotated_token(&caller, response)
}

fn with_rotated_token(caller: &Caller, mut response: Response) -> Response {
    if let Caller::WebUser { user } = caller
        && let Ok(value) = HeaderValue::from_str(&auth::rotated_web_token(user))
    {
        response.headers_mut().insert(WEB_AUTH_TOKEN_HEADER, value);
    }
    response
}

/// Refuses an environment (`what`: the URL's `environment`, or an `apnsEnvironment`) other than
/// `development` and `production`.
fn check_environment(what: &str, environment: &str) -> Result<(), Refusal> {
    match environment {
        "development" | "production" => Ok(()),
        other => Err(Refusal::bad_request(format!(
            "unknown {what} '{other}'; use development or production"
        ))),
    }
}

async fn serve_database(
    app: &App,
    endpoint: Endpoint,
    scope: Scope,
    container: &str,
    environment: &str,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, Refusal> {
    check_environment("environment", environment)?;
    match caller {
        Caller::Anonymous if scope != Scope::Public => {
            return Err(app
                .sign_in_required("request needs authorization: sign in and send ckWebAuthToken"));
        }
        Caller::Anonymous if endpoint.needs_user() => {
            return Err(app.sign_in_required(
                "this request needs a signed-in user: sign in and send ckWebAuthToken",
            ));
        }
        Caller::ServerKey { .. } if endpoint.is_users() => {
            return Err(Refusal::new(
                ServerErrorCode::AuthenticationFailed,
                "user identity endpoints need web authentication, not a server-to-server key",
            ));
        }
        _ => {}
    }
    if scope == Scope::Public && endpoint.private_only() {
        return Err(Refusal::bad_request(format!(
            "endpoint not applicable in the database type '{}'",
            scope.internal_name()
        )));
    }
    let user = caller.user().unwrap_or_default();
    let key = DbKey {
        container: container.to_owned(),
        environment: environment.to_owned(),
        scope,
        owner: if scope == Scope::Public {
            String::new()
        } else {
            user.to_owned()
        },
    };
    run_database_endpoint(app, endpoint, &key, user, body).await
}

/// The identity `users/caller` (in a list) and `users/current` answer for `user`.
fn user_identity(user: &str) -> UserIdentity {
    UserIdentity {
        user_record_name: user.to_owned(),
        lookup_info: None,
        name_components: None,
    }
}

async fn run_database_endpoint(
    app: &App,
    endpoint: Endpoint,
    key: &DbKey,
    user: &str,
    body: &[u8],
) -> Result<Response, Refusal> {
    Ok(match endpoint {
        Endpoint::RecordsModify => {
            let request = parse_body(body)?;
            let writer = Writer {
                key,
                user,
                now_ms: now_ms(),
            };
            app.write(key, |db| records::modify(db, &writer, request, &app.faults))
                .await
        }
        Endpoint::RecordsLookup => {
            let request = parse_body(body)?;
            app.read(key, |db| records::lookup(db, &request).map(|r| json_ok(&r)))
                .await
        }
        Endpoint::RecordsQuery => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                records::query(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::RecordsChanges => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                changes::record_changes(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::ChangesZone => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                changes::zone_changes(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::ChangesDatabase => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                changes::database_changes(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::ZonesChanges => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                changes::zones_changes(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::ZonesList => app.read(key, |db| Ok(json_ok(&zones::list(db, key)))).await,
        Endpoint::ZonesLookup => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                zones::lookup(db, key, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::ZonesModify => {
            let request = parse_body(body)?;
            app.write(key, |db| zones::modify(db, key, &request)).await
        }
        Endpoint::SubscriptionsList => {
            app.read(key, |db| Ok(json_ok(&subscriptions::list(db, user))))
                .await
        }
        Endpoint::SubscriptionsLookup => {
            let request = parse_body(body)?;
            app.read(key, |db| {
                subscriptions::lookup(db, user, &request).map(|r| json_ok(&r))
            })
            .await
        }
        Endpoint::SubscriptionsModify => {
            let request = parse_body(body)?;
            app.write(key, |db| subscriptions::modify(db, key, user, &request))
                .await
        }
        Endpoint::UsersCaller => json_ok(&UsersResponse {
            users: vec![user_identity(user)],
        }),
        Endpoint::UsersCurrent => json_ok(&user_identity(user)),
        Endpoint::TokensCreate | Endpoint::TokensRegister => {
            // Served under /device/, never routed here.
            return Err(Refusal::new(
                ServerErrorCode::NotFound,
                "could not find handler for endpoint",
            ));
        }
    })
}

async fn device_endpoint(
    State(app): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path((version, container, environment, operation))) = path else {
        return unknown_path().await;
    };
    let endpoint = match (version.as_str(), operation.as_str()) {
        ("1", "create") => Endpoint::TokensCreate,
        ("1", "register") => Endpoint::TokensRegister,
        _ => return unknown_path().await,
    };
    if method != endpoint.method() {
        return method_not_allowed(&endpoint.method(), &method);
    }
    let (caller, body) = match app.admit(None, &uri, &headers, body) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let response = serve_device(&app, endpoint, &container, &environment, &caller, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    with_rotated_token(&caller, response)
}

async fn serve_device(
    app: &App,
    endpoint: Endpoint,
    container: &str,
    environment: &str,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, Refusal> {
    check_environment("environment", environment)?;
    let Some(user) = caller.user() else {
        return Err(app.sign_in_required(
            "notification tokens need a signed-in user: sign in and send ckWebAuthToken",
        ));
    };
    let owner = CourierOwner {
        container: container.to_owned(),
        environment: environment.to_owned(),
        user: user.to_owned(),
    };
    let (token, answer) = match endpoint {
        Endpoint::TokensCreate => {
            let request: TokenCreateRequest = parse_body(body)?;
            check_environment("apnsEnvironment", &request.apns_environment)?;
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let answer = json_ok(&TokenCreateResponse {
                apns_environment: request.apns_environment,
                webcourier_url: format!("http://{}/_courier/{token}", app.addr),
                apns_token: token.clone(),
            });
            (token, answer)
        }
        _ => {
            let request: TokenRegisterRequest = parse_body(body)?;
            check_environment("apnsEnvironment", &request.apns_environment)?;
            if request.apns_token.is_empty() {
                return Err(Refusal::bad_request("apnsToken must not be empty"));
            }
            (request.apns_token.clone(), json_ok(&request))
        }
    };
    let mut data = app.data.write().await;
    if let Err(e) = app
        .commit(&mut data, vec![Write::CourierToken { token, owner }])
        .await
    {
        return Ok(storage_failed(&e));
    }
    Ok(answer)
}

/// The long-poll's query: `timeout` in whole seconds (default 30, at most 120).
#[derive(serde::Deserialize)]
struct PollParams {
    timeout: Option<u64>,
}

async fn courier_poll(
    State(app): State<Shared>,
    token: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let Ok(Path(token)) = token else {
        return Refusal::new(ServerErrorCode::NotFound, "unknown courier token").into_response();
    };
    let timeout = match Query::<PollParams>::try_from_uri(&uri) {
        Ok(Query(PollParams { timeout })) => timeout
            .map_or(courier::DEFAULT_TIMEOUT, Duration::from_secs)
            .min(courier::MAX_TIMEOUT),
        Err(_) => {
            return Refusal::bad_request("timeout must be a whole number of seconds")
                .into_response();
        }
    };
    if !app.data.read().await.courier_tokens.contains_key(&token) {
        return Refusal::new(ServerErrorCode::NotFound, "unknown courier token").into_response();
    }
    let notifications = app
        .courier
        .poll(&token, app.time_scale.real(timeout), app.stopped.clone())
        .await;
    json_ok(&CourierPoll { notifications })
}

/// The query of `GET /_dev/records/…`.
#[derive(serde::Deserialize)]
struct RecordsParams {
    user: Option<String>,
    zone: Option<String>,
}

/// `GET /_dev/records/{container}/{environment}/{database}?user=…&zone=…`: a database's records and
/// tombstones (see [`dev_view`]).
async fn dev_records(
    State(app): State<Shared>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    uri: Uri,
) -> Response {
    let Ok(Path((container, environment, database))) = path else {
        return unknown_path().await;
    };
    let Some(scope) = Scope::parse(&database) else {
        return Refusal::bad_request(format!(
            "unknown database '{database}'; use private, shared or public"
        ))
        .into_response();
    };
    if let Err(refusal) = check_environment("environment", &environment) {
        return refusal.into_response();
    }
    let Ok(Query(params)) = Query::<RecordsParams>::try_from_uri(&uri) else {
        return Refusal::bad_request("malformed query string").into_response();
    };
    let owner = match (scope, params.user) {
        (Scope::Public, _) => String::new(),
        (_, Some(user)) if !user.is_empty() => user,
        _ => {
            return Refusal::bad_request(
                "name the database's owner as ?user=USER_RECORD_NAME (GET /_dev/user?ckWebAuthToken=… \
                 tells a token's user record name)",
            )
            .into_response();
        }
    };
    let key = DbKey {
        container,
        environment,
        scope,
        owner,
    };
    let data = app.data.read().await;
    let snapshot = dev_view::database_snapshot(&data.database(&key), &key, params.zone.as_deref());
    drop(data);
    json_ok(&snapshot)
}

/// `GET /_dev/user?ckWebAuthToken=…` (or `?keyID=…`): the user record name of a caller.
async fn dev_user(uri: Uri) -> Response {
    let params = match query_params(&uri) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let user = match (
        param(&params, "ckWebAuthToken").filter(|t| !t.is_empty()),
        param(&params, "keyID").filter(|k| !k.is_empty()),
    ) {
        (Some(token), None) => auth::web_token_user(token),
        (None, Some(key_id)) => auth::server_key_user(key_id),
        _ => {
            return Refusal::bad_request("give exactly one of ckWebAuthToken and keyID")
                .into_response();
        }
    };
    json_ok(&DevUser {
        user_record_name: user,
    })
}

/// The dev server's stand-in for Apple's sign-in page: hands out a new user's web auth token.
async fn sign_in() -> Response {
    json_ok(&serde_json::json!({ "ckWebAuthToken": auth::new_web_token() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("a handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_serving_goes_on() {
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let response = client
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["serverErrorCode"], "INTERNAL_ERROR");
        }
        let fine = client
            .get(format!("http://{addr}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(fine.status(), StatusCode::OK);
        serving.abort();
    }

    #[test]
    fn every_endpoint_has_one_method_and_users_endpoints_need_a_user() {
        for (operation, method) in [
            ("records/modify", Method::POST),
            ("zones/list", Method::GET),
            ("subscriptions/list", Method::GET),
            ("users/caller", Method::GET),
            ("changes/zone", Method::POST),
        ] {
            let endpoint = Endpoint::database_operation(operation).unwrap();
            assert_eq!(endpoint.method(), method, "{operation}");
        }
        assert!(Endpoint::database_operation("records/explode").is_none());
        assert!(Endpoint::UsersCaller.needs_user() && Endpoint::UsersCaller.is_users());
        assert!(!Endpoint::RecordsLookup.needs_user());
        assert!(Endpoint::ChangesZone.private_only());
    }
}
