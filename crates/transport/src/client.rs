//! [`CloudKitClient`]: the [`CloudDatabase`] of CloudKit Web Services, over HTTPS with reqwest.

use crate::answers;
use crate::auth::{
    ApiToken, Auth, ServerKey, TokenRotationCallback, WebAuthToken, encode_query_value, iso8601_utc,
};
use crate::config::{APPLE_BASE_URL, DatabaseScope, Environment, Limits};
use crate::courier;
use crate::database::{
    CloudDatabase, DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChangesPage,
    ZoneNotifications,
};
use crate::error::TransportError;
use crate::response::{RawResponse, send_error};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skysync_model::wire::{
    CourierPoll, DatabaseChangesResponse, RecordsResponse, Subscription, SubscriptionsResponse,
    TokenCreateRequest, TokenCreateResponse, TokenRegisterRequest, UserIdentity, UsersResponse,
    ZoneChangesResponse, ZoneOperationType, ZonesResponse,
};
use skysync_model::{ChangeToken, CloudError, ModelError, ZoneId};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tracing::Instrument as _;

/// The response headers that carry a rotated web auth token (the second is a fallback seen in
/// third-party clients).
const ROTATED_TOKEN_HEADERS: [&str; 2] = [
    "x-apple-cloudkit-web-auth-token",
    "x-apple-cloudkit-session",
];

/// The content type of every request body.
const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The name of the span around each HTTP request.
pub const REQUEST_SPAN: &str = "skysync.transport.request";

/// Builds a [`CloudKitClient`]; start with [`CloudKitClient::builder`].
#[derive(Debug)]
pub struct CloudKitClientBuilder {
    container: String,
    auth: Auth,
    base_url: String,
    environment: Environment,
    database: DatabaseScope,
    limits: Limits,
}

impl CloudKitClientBuilder {
    /// Sends requests to this root instead of Apple's (e.g. the dev server's `http://127.0.0.1:PORT`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The container environment (default development).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// The database (default private).
    pub fn database(mut self, database: DatabaseScope) -> Self {
        self.database = database;
        self
    }

    /// All timeouts and limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long one request may take, end to end.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_timeout = timeout;
        self
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.limits.connect_timeout = timeout;
        self
    }

    /// The largest answer read, in bytes.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_response_bytes = bytes;
        self
    }

    /// `resultsLimit` of change-feed pages.
    pub fn changes_page_size(mut self, records: u32) -> Self {
        self.limits.changes_page_size = Some(records);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<CloudKitClient, TransportError> {
        check_container(&self.container)?;
        let base = parse_base_url(&self.base_url)?;
        let prefix = |api: &str| -> Result<String, TransportError> {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| bad_base(&self.base_url, "it cannot hold a path"))?
                .pop_if_empty()
                .extend([api, "1", &self.container, self.environment.as_str()]);
            Ok(url.path().to_owned())
        };
        let database_prefix = prefix("database")?;
        let device_prefix = prefix("device")?;
        let credentials = match self.auth {
            Auth::ApiToken {
                api_token,
                web_auth_token,
                on_rotation,
            } => {
                if api_token.expose().is_empty() {
                    return Err(TransportError::BadSetting {
                        what: "API token",
                        reason: "is empty".into(),
                    });
                }
                Credentials::Web {
                    api_token,
                    web_auth_token: Mutex::new(web_auth_token),
                    on_rotation: on_rotation.map(RotationNotifier::start).transpose()?,
                }
            }
            Auth::ServerToServer(key) => Credentials::Signed(key),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.limits.connect_timeout)
            .timeout(self.limits.request_timeout)
            // CloudKit does not redirect API calls; following one would carry the tokens elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .gzip(true)
            .user_agent(concat!("skysync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError::HttpClient(e.without_url().to_string()))?;
        Ok(CloudKitClient {
            inner: Arc::new(ClientInner {
                http,
                base,
                database_prefix,
                device_prefix,
                environment: self.environment,
                database: self.database,
                credentials,
                limits: self.limits,
            }),
        })
    }
}

fn check_container(container: &str) -> Result<(), TransportError> {
    if container.is_empty() {
        return Err(TransportError::BadSetting {
            what: "container",
            reason: "is empty (expected e.g. `iCloud.com.example.App`)".into(),
        });
    }
    if container.contains('/')
        || container
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(TransportError::BadSetting {
            what: "container",
            reason: "must not contain `/`, spaces or control characters".into(),
        });
    }
    Ok(())
}

fn bad_base(url: &str, reason: &str) -> TransportError {
    TransportError::BadBaseUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_base_url(text: &str) -> Result<Url, TransportError> {
    let url = Url::parse(text).map_err(|e| bad_base(text, &e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_base(text, "the scheme must be http or https"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(bad_base(text, "it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad_base(
            &without_secrets(&url),
            "it must not have a query or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_base(
            &without_secrets(&url),
            "it must not carry credentials",
        ));
    }
    Ok(url)
}

/// `url` without the parts that may hold secrets (user, password, query, fragment), for an
/// error message about them.
fn without_secrets(url: &Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs without a host, which `parse_base_url` has refused already; the
    // query and fragment go either way.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// How requests of one client authenticate.
enum Credentials {
    /// API token + web auth token in the query; the web token is replaced when the server rotates it.
    Web {
        api_token: ApiToken,
        web_auth_token: Mutex<Option<WebAuthToken>>,
        on_rotation: Option<RotationNotifier>,
    },
    /// Server-to-server signature headers.
    Signed(ServerKey),
}

/// Hands rotated tokens to the app's callback, in rotation order, on a thread of its own: the
/// callback may block (write a file, call a keychain) without stalling an async worker or a
/// request. The thread ends when the client (every clone of it) is dropped.
struct RotationNotifier {
    tokens: std::sync::mpsc::Sender<WebAuthToken>,
}

impl RotationNotifier {
    /// The name of the thread the callback runs on.
    const THREAD_NAME: &'static str = "skysync-token-rotation";

    fn start(callback: TokenRotationCallback) -> Result<Self, TransportError> {
        let (tokens, rotated) = std::sync::mpsc::channel::<WebAuthToken>();
        std::thread::Builder::new()
            .name(Self::THREAD_NAME.into())
            .spawn(move || {
                for token in rotated {
                    callback(&token);
                }
            })
            .map_err(|e| TransportError::RotationThread(e.to_string()))?;
        Ok(Self { tokens })
    }

    fn notify(&self, token: WebAuthToken) {
        // The thread only ends once every sender is gone, so a send cannot fail while `self` lives.
        let _ = self.tokens.send(token);
    }
}

struct ClientInner {
    http: reqwest::Client,
    base: Url,
    database_prefix: String,
    device_prefix: String,
    environment: Environment,
    database: DatabaseScope,
    credentials: Credentials,
    limits: Limits,
}

/// A CloudKit Web Services client for one container, environment and database.
///
/// Cheap to clone (clones share one connection pool and the current web auth token). It implements
/// [`CloudDatabase`]; see the crate docs for an example.
#[derive(Clone)]
pub struct CloudKitClient {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for CloudKitClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.credentials {
            Credentials::Web { .. } => "api token + web auth token (redacted)",
            Credentials::Signed(_) => "server-to-server key (redacted)",
        };
        f.debug_struct("CloudKitClient")
            .field("base", &self.inner.base.as_str())
            .field("database_prefix", &self.inner.database_prefix)
            .field("database", &self.inner.database)
            .field("auth", &auth)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded value is a plain token that is always valid; a panic elsewhere cannot corrupt it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request about to be sent.
struct Call {
    operation: &'static str,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
    authenticate: bool,
}

impl CloudKitClient {
    /// Starts building a client for `container` (e.g. `iCloud.com.example.Notes`) with `auth`.
    /// Defaults: Apple's host, development environment, private database, [`Limits::default`].
    pub fn builder(container: impl Into<String>, auth: Auth) -> CloudKitClientBuilder {
        CloudKitClientBuilder {
            container: container.into(),
            auth,
            base_url: APPLE_BASE_URL.to_owned(),
            environment: Environment::default(),
            database: DatabaseScope::default(),
            limits: Limits::default(),
        }
    }

    /// The database this client talks to.
    pub fn database(&self) -> DatabaseScope {
        self.inner.database
    }

    /// The limits this client was built with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The web auth token the next request will carry (the latest rotation), if any.
    pub fn current_web_auth_token(&self) -> Option<WebAuthToken> {
        match &self.inner.credentials {
            Credentials::Web { web_auth_token, .. } => lock(web_auth_token).clone(),
            Credentials::Signed(_) => None,
        }
    }

    /// The URL of `operation` (e.g. `records/modify`) in `database`, without auth.
    pub fn database_url(&self, database: DatabaseScope, operation: &str) -> Url {
        let mut url = self.inner.base.clone();
        url.set_path(&format!(
            "{}/{}/{operation}",
            self.inner.database_prefix,
            database.as_str()
        ));
        url
    }

    /// The URL of a device operation (`tokens/create`, `tokens/register`).
    pub fn device_url(&self, operation: &str) -> Url {
        let mut url = self.inner.base.clone();
        url.set_path(&format!("{}/{operation}", self.inner.device_prefix));
        url
    }

    /// Sends a JSON body to `url` (authenticated) and reads the answer, whatever its status.
    async fn post<B: Serialize>(
        &self,
        operation: &'static str,
        url: Url,
        body: &B,
    ) -> Result<RawResponse, CloudError> {
        self.execute(Call {
            operation,
            method: Method::POST,
            url,
            body: Some(encode_body(body)?),
            timeout: None,
            authenticate: true,
        })
        .await
    }

    /// Sends a JSON body to an operation of this client's database and decodes the success answer.
    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        body: &B,
    ) -> Result<T, CloudError> {
        let url = self.database_url(self.inner.database, operation);
        let raw = self.post(operation, url, body).await?;
        self.decode(&raw, operation)
    }

    /// Decodes a success answer, or turns an error answer into the typed error.
    fn decode<T: DeserializeOwned>(&self, raw: &RawResponse, what: &str) -> Result<T, CloudError> {
        if raw.is_success() {
            serde_json::from_slice(&raw.body)
                .map_err(|e| raw.unexpected(&format!("not a `{what}` answer"), Some(&e), self))
        } else {
            Err(raw.error(self))
        }
    }

    /// Sends one request: adds auth, enforces the size cap, takes up a rotated web auth token.
    async fn execute(&self, call: Call) -> Result<RawResponse, CloudError> {
        let span = tracing::debug_span!(
            REQUEST_SPAN,
            operation = call.operation,
            method = %call.method,
            status = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        self.execute_in_span(call).instrument(span).await
    }

    async fn execute_in_span(&self, call: Call) -> Result<RawResponse, CloudError> {
        let Call {
            operation: _,
            method,
            mut url,
            body,
            timeout,
            authenticate,
        } = call;
        let mut signature = None;
        if authenticate {
            match &self.inner.credentials {
                Credentials::Web {
                    api_token,
                    web_auth_token,
                    ..
                } => {
                    // The guard lives for this statement only: the query is built under the lock
                    // instead of cloning the token for every request.
                    url.set_query(Some(&auth_query(api_token, lock(web_auth_token).as_ref())));
                }
                Credentials::Signed(key) => {
                    let date = iso8601_utc(SystemTime::now());
                    signature = Some(key.sign(&date, body.as_deref(), url.path()));
                }
            }
        }
        let mut request = self.inner.http.request(method, url);
        if let Some(signature) = &signature {
            for (name, value) in signature.headers() {
                request = request.header(name, value);
            }
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, JSON_CONTENT_TYPE).body(body);
        }
        let mut response = request.send().await.map_err(send_error)?;
        let status = response.status().as_u16();
        tracing::Span::current().record("status", status);
        self.take_up_rotated_token(response.headers());
        let raw = RawResponse::read(&mut response, self.inner.limits.max_response_bytes).await?;
        tracing::Span::current().record("bytes", raw.body.len());
        Ok(raw)
    }

    /// Takes up a rotated web auth token from the answer's headers and tells the callback.
    fn take_up_rotated_token(&self, headers: &HeaderMap) {
        let Credentials::Web {
            web_auth_token,
            on_rotation,
            ..
        } = &self.inner.credentials
        else {
            return;
        };
        let Some(rotated) = ROTATED_TOKEN_HEADERS
            .iter()
            .filter_map(|name| headers.get(*name))
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .find(|value| !value.is_empty())
        else {
            return;
        };
        let token = WebAuthToken::new(rotated);
        {
            let mut current = lock(web_auth_token);
            if current.as_ref() == Some(&token) {
                return;
            }
            *current = Some(token.clone());
        }
        tracing::debug!("web auth token rotated by the server");
        if let Some(notifier) = on_rotation {
            notifier.notify(token);
        }
    }

    /// Replaces every token this client holds with `<redacted>` in `text` (for excerpts of odd
    /// answers, which may echo the request URL).
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Credentials::Web {
            api_token,
            web_auth_token,
            ..
        } = &self.inner.credentials
        {
            secrets.push(api_token.expose().to_owned());
            if let Some(web) = lock(web_auth_token).as_ref() {
                secrets.push(web.expose().to_owned());
            }
        }
        let mut out = text.to_owned();
        for secret in secrets.iter().filter(|s| s.len() >= 6) {
            out = out
                .replace(secret.as_str(), "<redacted>")
                .replace(&encode_query_value(secret), "<redacted>");
        }
        out
    }

    /// A zone as the server named it, as the model names it ([`answers::local_zone`] in this
    /// client's database).
    pub(crate) fn local_zone(&self, zone: ZoneId) -> ZoneId {
        answers::local_zone(self.inner.database, zone)
    }

    /// An [`CloudError::UnexpectedResponse`] for a problem with a success answer that is no
    /// longer at hand (as `200`, the status every success answer of CloudKit carries).
    fn unexpected_success(problem: &str) -> CloudError {
        CloudError::UnexpectedResponse {
            status: Some(200),
            detail: problem.to_owned(),
        }
    }

    async fn modify(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.database_url(self.inner.database, "records/modify");
        let raw = self
            .post("records/modify", url, &batch.to_request())
            .await?;
        // A failed atomic batch answers 400 with one entry per operation: parse it as per-record
        // results, not as a request-level error.
        let answer: RecordsResponse = if raw.is_success() {
            self.decode(&raw, "records/modify")?
        } else {
            match answers::failed_batch_answer(&raw.body, batch.len()) {
                Some(answer) => answer,
                None => return Err(raw.error(self)),
            }
        };
        answers::modify_outcomes(
            self.inner.database,
            &batch,
            answer,
            raw.status,
            &|problem| raw.unexpected(problem, None, self),
        )
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
        let url = self.database_url(self.inner.database, "records/lookup");
        let raw = self.post("records/lookup", url, &request).await?;
        let answer: RecordsResponse = self.decode(&raw, "records/lookup")?;
        answers::lookup_outcomes(
            self.inner.database,
            &zone,
            record_names,
            answer,
            raw.status,
            &|problem| raw.unexpected(problem, None, self),
        )
    }

    async fn zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        let request =
            answers::zone_changes_request(&zone, since, self.inner.limits.changes_page_size);
        let answer: ZoneChangesResponse = self.post_json("changes/zone", &request).await?;
        answers::zone_changes_page(
            self.inner.database,
            &zone,
            answer,
            200,
            &Self::unexpected_success,
        )
    }

    async fn database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        let request = answers::database_changes_request(since, self.inner.limits.changes_page_size);
        let answer: DatabaseChangesResponse = self.post_json("changes/database", &request).await?;
        answers::database_changes_page(self.inner.database, answer, 200)
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
        let answer: ZonesResponse = self.post_json("zones/modify", &request).await?;
        answers::zones_modified(
            operation_type,
            zones.len(),
            answer,
            200,
            &Self::unexpected_success,
        )
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<(), CloudError> {
        let request = answers::subscription_request(subscription);
        let answer: SubscriptionsResponse =
            self.post_json("subscriptions/modify", &request).await?;
        answers::subscription_saved(answer, 200, &Self::unexpected_success)
    }

    async fn caller(&self) -> Result<UserIdentity, CloudError> {
        // `users/*` lives under the public database whatever database the client syncs.
        let url = self.database_url(DatabaseScope::Public, "users/caller");
        let raw = self
            .execute(Call {
                operation: "users/caller",
                method: Method::GET,
                url,
                body: None,
                timeout: None,
                authenticate: true,
            })
            .await?;
        let answer: UsersResponse = self.decode(&raw, "users/caller")?;
        answers::caller_identity(answer, &|problem| raw.unexpected(problem, None, self))
    }

    async fn start_notifications(&self) -> Result<ZoneNotifications, CloudError> {
        let apns_environment = self.inner.environment.as_str().to_owned();
        let created: TokenCreateResponse = self
            .device_call(
                "tokens/create",
                &TokenCreateRequest {
                    apns_environment: apns_environment.clone(),
                },
            )
            .await?;
        let _registered: serde_json::Value = self
            .device_call(
                "tokens/register",
                &TokenRegisterRequest {
                    apns_environment,
                    apns_token: created.apns_token.clone(),
                },
            )
            .await?;
        let courier_url = self.inner.base.join(&created.webcourier_url).map_err(|e| {
            CloudError::UnexpectedResponse {
                status: Some(200),
                detail: format!("tokens/create answered an unusable webcourierURL: {e}"),
            }
        })?;
        Ok(courier::start(self.clone(), courier_url))
    }

    async fn device_call<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        body: &B,
    ) -> Result<T, CloudError> {
        let raw = self
            .post(operation, self.device_url(operation), body)
            .await?;
        self.decode(&raw, operation)
    }

    /// One long-poll of the notification courier. The courier URL is a capability of its own: no
    /// tokens are sent with it (it may live on another host).
    pub(crate) async fn poll_courier(&self, url: &Url) -> Result<CourierPoll, CloudError> {
        let raw = self
            .execute(Call {
                operation: "webcourier",
                method: Method::GET,
                url: url.clone(),
                body: None,
                timeout: Some(self.inner.limits.courier_poll_timeout),
                authenticate: false,
            })
            .await?;
        self.decode(&raw, "webcourier")
    }
}

/// The query string of API-token auth, every value percent-encoded.
fn auth_query(api_token: &ApiToken, web_auth_token: Option<&WebAuthToken>) -> String {
    let mut query = format!("ckAPIToken={}", encode_query_value(api_token.expose()));
    if let Some(web) = web_auth_token {
        query.push_str("&ckWebAuthToken=");
        query.push_str(&encode_query_value(web.expose()));
    }
    query
}

/// Serializes a request body. The wire types serialize infallibly (string keys only); a failure
/// would be a bug in skysync, reported as such rather than as a panic.
fn encode_body<B: Serialize>(body: &B) -> Result<Vec<u8>, CloudError> {
    serde_json::to_vec(body)
        .map_err(|e| CloudError::Incompatible(ModelError::Encode(format!("request body: {e}"))))
}

impl CloudDatabase for CloudKitClient {
    async fn modify_records(&self, batch: ModifyBatch) -> Result<Vec<ModifyOutcome>, CloudError> {
        self.modify(batch).await
    }

    async fn lookup_records(
        &self,
        zone: ZoneId,
        record_names: Vec<String>,
    ) -> Result<Vec<LookupOutcome>, CloudError> {
        self.lookup(zone, record_names).await
    }

    async fn fetch_zone_changes(
        &self,
        zone: ZoneId,
        since: Option<ChangeToken>,
    ) -> Result<ZoneChangesPage, CloudError> {
        self.zone_changes(zone, since).await
    }

    async fn fetch_database_changes(
        &self,
        since: Option<ChangeToken>,
    ) -> Result<DatabaseChangesPage, CloudError> {
        self.database_changes(since).await
    }

    async fn ensure_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.modify_zones(zones, ZoneOperationType::Create).await
    }

    async fn delete_zones(&self, zones: Vec<ZoneId>) -> Result<(), CloudError> {
        self.modify_zones(zones, ZoneOperationType::Delete).await
    }

    async fn ensure_subscription(&self, subscription: Subscription) -> Result<(), CloudError> {
        self.subscribe(subscription).await
    }

    async fn current_user(&self) -> Result<UserIdentity, CloudError> {
        self.caller().await
    }

    async fn notifications(&self) -> Result<ZoneNotifications, CloudError> {
        self.start_notifications().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_query_percent_encodes_plus_slash_and_equals() {
        let query = auth_query(
            &ApiToken::new("api+1/2="),
            Some(&WebAuthToken::new("106__54__ab+cd/ef==")),
        );
        assert_eq!(
            query,
            "ckAPIToken=api%2B1%2F2%3D&ckWebAuthToken=106__54__ab%2Bcd%2Fef%3D%3D"
        );
    }

    #[test]
    fn urls_keep_the_encoded_query_and_the_documented_path() {
        let client = CloudKitClient::builder("iCloud.com.example.App", Auth::web("k", "a+b/c="))
            .base_url("http://127.0.0.1:9/")
            .build()
            .unwrap();
        let mut url = client.database_url(DatabaseScope::Private, "records/modify");
        url.set_query(Some(&auth_query(
            &ApiToken::new("k"),
            Some(&WebAuthToken::new("a+b/c=")),
        )));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/database/1/iCloud.com.example.App/development/private/records/modify\
             ?ckAPIToken=k&ckWebAuthToken=a%2Bb%2Fc%3D"
        );
        assert_eq!(
            client.device_url("tokens/create").path(),
            "/device/1/iCloud.com.example.App/development/tokens/create"
        );
    }

    #[test]
    fn a_base_url_with_a_path_prefix_keeps_it() {
        let client = CloudKitClient::builder("iCloud.a", Auth::api_token_only("k"))
            .base_url("https://example.invalid/proxy/ck")
            .environment(Environment::Production)
            .build()
            .unwrap();
        assert_eq!(
            client
                .database_url(DatabaseScope::Public, "zones/list")
                .path(),
            "/proxy/ck/database/1/iCloud.a/production/public/zones/list"
        );
    }

    #[test]
    fn bad_base_urls_and_containers_are_typed_errors() {
        for bad in [
            "not a url",
            "ftp://example.invalid",
            "http://x.invalid/?q=1",
            "mailto:a@b",
        ] {
            let err = CloudKitClient::builder("iCloud.a", Auth::api_token_only("k"))
                .base_url(bad)
                .build()
                .unwrap_err();
            assert!(
                matches!(err, TransportError::BadBaseUrl { .. }),
                "{bad}: {err}"
            );
        }
        let err = CloudKitClient::builder("iCloud/a", Auth::api_token_only("k"))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            TransportError::BadSetting {
                what: "container",
                ..
            }
        ));
        let err = CloudKitClient::builder("iCloud.a", Auth::api_token_only(""))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            TransportError::BadSetting {
                what: "API token",
                ..
            }
        ));
    }

    #[test]
    fn a_refused_base_url_is_quoted_without_its_credentials_or_query() {
        for bad in [
            "https://user:hunter2@example.invalid/ck",
            "https://example.invalid/ck?ckAPIToken=hunter2",
            "https://example.invalid/ck#hunter2",
        ] {
            let err = CloudKitClient::builder("iCloud.a", Auth::api_token_only("k"))
                .base_url(bad)
                .build()
                .unwrap_err();
            let TransportError::BadBaseUrl { url, .. } = &err else {
                panic!("{bad}: {err}")
            };
            assert_eq!(url, "https://example.invalid/ck");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn redaction_hides_raw_and_encoded_tokens() {
        let client =
            CloudKitClient::builder("iCloud.a", Auth::web("apitoken123", "web+token/xyz="))
                .build()
                .unwrap();
        let text =
            "GET /x?ckAPIToken=apitoken123&ckWebAuthToken=web%2Btoken%2Fxyz%3D raw web+token/xyz=";
        let out = client.redact(text);
        assert!(!out.contains("apitoken123"), "{out}");
        assert!(!out.contains("web%2Btoken"), "{out}");
        assert!(!out.contains("web+token"), "{out}");
    }

    #[test]
    fn debug_of_a_client_hides_its_credentials() {
        let client = CloudKitClient::builder("iCloud.a", Auth::web("apitoken123", "webtoken456"))
            .build()
            .unwrap();
        let text = format!("{client:?}");
        assert!(
            !text.contains("apitoken123") && !text.contains("webtoken456"),
            "{text}"
        );
    }
}
