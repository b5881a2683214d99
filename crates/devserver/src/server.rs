//! The HTTP surface: routes, the layers around them, and the dispatch of each CloudKit endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use skysync_model::ServerErrorCode;
use skysync_model::wire::ErrorBody;

use crate::faults::{self, Faults};
use crate::rate_limit::{self, RateLimit};
use crate::reply::{error_reply, json_reply};
use crate::{DevServerError, ServerConfig};

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
}

/// Everything the handlers share.
pub(crate) struct App {
    /// Where the server listens (for URLs it hands out).
    pub(crate) addr: SocketAddr,
}

type Shared = Arc<App>;

/// Builds the complete router for `config`, listening at `addr`.
pub(crate) async fn router(
    config: &ServerConfig,
    addr: SocketAddr,
    _stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Router, DevServerError> {
    let app = Arc::new(App { addr });
    let faults = Faults::default();
    let mut cloudkit = Router::new()
        .route(
            "/database/{version}/{container}/{environment}/{database}/{*operation}",
            any(database_endpoint),
        )
        .route(
            "/device/{version}/{container}/{environment}/tokens/{operation}",
            any(device_endpoint),
        )
        .with_state(app);
    if let Some(per_second) = config.rate_limit {
        cloudkit = cloudkit.layer(axum::middleware::from_fn_with_state(
            RateLimit::new(per_second),
            rate_limit::middleware,
        ));
    }
    Ok(Router::new()
        .merge(cloudkit)
        .merge(faults.router())
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::middleware,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes)))
}

async fn unknown_path() -> Response {
    error_reply(
        ServerErrorCode::NotFound,
        "could not find handler for endpoint",
        None,
    )
}

/// `405` with a CloudKit body naming the method to use.
fn wrong_method(endpoint: Endpoint, method: &Method) -> Response {
    let allowed = endpoint.method();
    let mut response = json_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        &ErrorBody {
            uuid: Some(uuid::Uuid::new_v4().to_string()),
            server_error_code: ServerErrorCode::BadRequest,
            reason: Some(format!(
                "method {method} is not allowed on this endpoint; use {allowed}"
            )),
            retry_after: None,
            redirect_url: None,
        },
    );
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

async fn database_endpoint(
    State(_app): State<Shared>,
    method: Method,
    Path((_version, _container, _environment, _database, operation)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> Response {
    let Some(endpoint) = Endpoint::database_operation(&operation) else {
        return unknown_path().await;
    };
    if method != endpoint.method() {
        return wrong_method(endpoint, &method);
    }
    error_reply(
        ServerErrorCode::InternalError,
        "this endpoint is being written",
        None,
    )
}

async fn device_endpoint(
    State(_app): State<Shared>,
    method: Method,
    Path((_version, _container, _environment, operation)): Path<(String, String, String, String)>,
) -> Response {
    let endpoint = match operation.as_str() {
        "create" => Endpoint::TokensCreate,
        "register" => Endpoint::TokensRegister,
        _ => return unknown_path().await,
    };
    if method != endpoint.method() {
        return wrong_method(endpoint, &method);
    }
    error_reply(
        ServerErrorCode::InternalError,
        "this endpoint is being written",
        None,
    )
}
