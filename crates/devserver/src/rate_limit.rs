//! Per-user request rate limiting, answered the way CloudKit throttles: `429 THROTTLED` with a
//! `retryAfter` (whole seconds, at least 1) in a CloudKit error body and no rate-limit headers.
//!
//! Each requester has its own bucket of `N` requests that refills at `N` per second (governor's GCRA),
//! so a burst of up to `N` requests passes at once and sustained traffic is held to `N` per second.
//! Requesters are told apart by their server-to-server key id, else by the user their web auth token
//! names, else they share one anonymous bucket. Only CloudKit requests count; `/_dev/` control requests are
//! never limited.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use skysync_model::ServerErrorCode;

use crate::auth::{server_key_user, web_token_user};
use crate::reply::error_reply;
use crate::s2s::KEY_ID_HEADER;
use crate::time_scale::TimeScale;

/// How many checks pass between sweeps that forget requesters whose buckets are full again.
const SWEEP_EVERY: u64 = 4096;

/// governor's keyed GCRA limiter, one bucket per requester.
type KeyedLimiter<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A per-requester rate limit of `N` requests per second. Cloning shares the same buckets.
///
/// The clock is a type parameter so that tests can drive it by hand
/// (`governor::clock::FakeRelativeClock`); the server uses the default monotonic clock.
pub struct RateLimit<C: Clock = DefaultClock> {
    limiter: Arc<KeyedLimiter<C>>,
    clock: C,
    checks: Arc<AtomicU64>,
}

impl<C: Clock + Clone> Clone for RateLimit<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            clock: self.clock.clone(),
            checks: Arc::clone(&self.checks),
        }
    }
}

impl<C: Clock> std::fmt::Debug for RateLimit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

/// A request refused by the rate limit, and how long the requester should wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// The time until the requester's next request would be admitted.
    pub wait: Duration,
}

impl Throttled {
    /// The `retryAfter` to send: the wait rounded up to whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let whole = self.wait.as_secs();
        let rounded = if self.wait.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole
        };
        rounded.max(1)
    }
}

impl RateLimit {
    /// A limit of `requests_per_second` per requester on the monotonic clock (0 is taken as 1).
    pub fn new(requests_per_second: u32) -> RateLimit {
        RateLimit::with_clock(requests_per_second, DefaultClock::default())
    }

    /// A limit of `requests_per_second` of server time per requester: with a [`TimeScale`] of F,
    /// F times as many per real second (0 is taken as 1).
    pub fn scaled(requests_per_second: u32, scale: TimeScale) -> RateLimit {
        RateLimit::with_clock_and_scale(requests_per_second, scale, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimit<C> {
    /// A limit of `requests_per_second` per requester on the given clock (0 is taken as 1).
    pub fn with_clock(requests_per_second: u32, clock: C) -> RateLimit<C> {
        RateLimit::with_clock_and_scale(requests_per_second, TimeScale::REAL, clock)
    }

    /// A limit of `requests_per_second` of server time per requester on the given clock, the
    /// server's second lasting `1 / scale` real seconds (0 requests is taken as 1).
    pub fn with_clock_and_scale(
        requests_per_second: u32,
        scale: TimeScale,
        clock: C,
    ) -> RateLimit<C> {
        let per_second = NonZeroU32::new(requests_per_second).unwrap_or(NonZeroU32::MIN);
        let period = scale
            .real(Duration::from_secs(1) / per_second.get())
            .max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(per_second))
            .allow_burst(per_second);
        let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone());
        RateLimit {
            limiter: Arc::new(limiter),
            clock,
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts one request from `requester`; refuses it if the requester is over the limit.
    pub fn check(&self, requester: &str) -> Result<(), Throttled> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&requester.to_owned())
            .map_err(|not_until| Throttled {
                wait: not_until.wait_time_from(self.clock.now()),
            })
    }
}

/// Who a request counts against, told apart the way authentication tells callers apart: a
/// server-to-server key id, else the user a web auth token names (the same user before and after
/// token rotation, see [`crate::auth::web_token_user`]), else the shared anonymous bucket.
pub fn requester_of(request: &Request) -> String {
    if let Some(key_id) = request
        .headers()
        .get(KEY_ID_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        return format!("s2s:{key_id}");
    }
    if let Some(token) = web_auth_token(request.uri()) {
        return format!("web:{}", web_token_user(&token));
    }
    "anonymous".to_owned()
}

/// The user record name a request comes from, told apart as [`requester_of`] does: the user a
/// server-to-server key acts as, else the user a web auth token names, else `anonymous` (which no
/// user record name can be, since they all start with `_`).
pub fn user_of(request: &Request) -> String {
    if let Some(key_id) = request
        .headers()
        .get(KEY_ID_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        return server_key_user(key_id);
    }
    match web_auth_token(request.uri()) {
        Some(token) => web_token_user(&token),
        None => ANONYMOUS.to_owned(),
    }
}

/// How [`user_of`] names a request without a user.
pub const ANONYMOUS: &str = "anonymous";

/// The `ckWebAuthToken` query parameter, decoded.
fn web_auth_token(uri: &Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(name, value)| name == "ckWebAuthToken" && !value.is_empty())
        .map(|(_, value)| value)
}

/// Applies the rate limit to CloudKit requests (`/database/…`, `/device/…`), answering
/// `429 THROTTLED` with a `retryAfter` when the requester is over it.
pub async fn middleware(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !(path.starts_with("/database/") || path.starts_with("/device/")) {
        return next.run(request).await;
    }
    let requester = requester_of(&request);
    match limit.check(&requester) {
        Ok(()) => next.run(request).await,
        Err(throttled) => {
            tracing::debug!(
                retry_after = throttled.retry_after_secs(),
                "request throttled by the rate limit"
            );
            error_reply(
                ServerErrorCode::Throttled,
                "request rate limit exceeded, retry after the given number of seconds",
                Some(throttled.retry_after_secs()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(per_second: u32) -> (RateLimit<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimit::with_clock(per_second, clock.clone()), clock)
    }

    #[test]
    fn a_burst_of_n_passes_and_the_next_request_is_throttled() {
        let (limit, _clock) = limit(5);
        for _ in 0..5 {
            assert_eq!(limit.check("web:alice"), Ok(()));
        }
        let throttled = limit.check("web:alice").unwrap_err();
        assert_eq!(throttled.wait, Duration::from_millis(200));
        assert_eq!(throttled.retry_after_secs(), 1);
    }

    #[test]
    fn another_requester_is_served_while_one_is_throttled() {
        let (limit, _clock) = limit(2);
        limit.check("web:alice").unwrap();
        limit.check("web:alice").unwrap();
        assert!(limit.check("web:alice").is_err());
        assert_eq!(limit.check("web:bob"), Ok(()));
        assert_eq!(limit.check("s2s:key-1"), Ok(()));
    }

    #[test]
    fn the_bucket_refills_at_n_per_second() {
        let (limit, clock) = limit(2);
        limit.check("web:alice").unwrap();
        limit.check("web:alice").unwrap();
        assert!(limit.check("web:alice").is_err());
        clock.advance(Duration::from_millis(499));
        assert!(limit.check("web:alice").is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limit.check("web:alice"), Ok(()));
        assert!(limit.check("web:alice").is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(limit.check("web:alice"), Ok(()));
        assert_eq!(limit.check("web:alice"), Ok(()));
        assert!(limit.check("web:alice").is_err());
    }

    #[test]
    fn zero_per_second_is_taken_as_one() {
        let (limit, clock) = limit(0);
        assert_eq!(limit.check("anonymous"), Ok(()));
        let throttled = limit.check("anonymous").unwrap_err();
        assert_eq!(throttled.wait, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limit.check("anonymous"), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let wait = |ms| Throttled {
            wait: Duration::from_millis(ms),
        };
        assert_eq!(wait(0).retry_after_secs(), 1);
        assert_eq!(wait(1).retry_after_secs(), 1);
        assert_eq!(wait(1000).retry_after_secs(), 1);
        assert_eq!(wait(1001).retry_after_secs(), 2);
        assert_eq!(wait(2500).retry_after_secs(), 3);
    }

    #[test]
    fn a_scaled_limit_is_a_second_of_server_time() {
        let clock = FakeRelativeClock::default();
        let limit =
            RateLimit::with_clock_and_scale(2, TimeScale::new(10.0).unwrap(), clock.clone());
        limit.check("web:alice").unwrap();
        limit.check("web:alice").unwrap();
        let throttled = limit.check("web:alice").unwrap_err();
        assert_eq!(
            throttled.wait,
            Duration::from_millis(50),
            "half a second / 10"
        );
        clock.advance(Duration::from_millis(50));
        assert_eq!(limit.check("web:alice"), Ok(()));
    }

    #[test]
    fn users_are_named_by_their_user_record_name() {
        let path = "/database/1/iCloud.com.example/development/private/zones/list";
        assert_eq!(
            user_of(&request(&format!("{path}?ckWebAuthToken=alice"), None)),
            web_token_user("alice")
        );
        assert_eq!(
            user_of(&request(
                &format!("{path}?ckWebAuthToken=alice"),
                Some("key-1")
            )),
            server_key_user("key-1")
        );
        assert_eq!(user_of(&request(path, None)), ANONYMOUS);
        assert!(!ANONYMOUS.starts_with('_'));
    }

    #[test]
    fn clones_share_the_same_buckets() {
        let (limit, _clock) = limit(1);
        let other = limit.clone();
        limit.check("web:alice").unwrap();
        assert!(other.check("web:alice").is_err());
    }

    #[test]
    fn idle_requesters_are_forgotten_without_losing_active_limits() {
        let (limit, clock) = limit(1);
        for i in 0..SWEEP_EVERY - 1 {
            limit.check(&format!("web:user-{i}")).unwrap();
        }
        clock.advance(Duration::from_secs(2));
        limit.check("web:alice").unwrap(); // this check sweeps the idle users away
        assert!(
            limit.limiter.len() < 10,
            "{} keys kept",
            limit.limiter.len()
        );
        assert!(limit.check("web:alice").is_err());
    }

    fn request(uri: &str, key_id: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder().uri(uri);
        if let Some(key_id) = key_id {
            builder = builder.header(KEY_ID_HEADER, key_id);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn requesters_are_told_apart_by_key_id_then_web_token_user() {
        let path = "/database/1/iCloud.com.example/development/private/records/modify";
        assert_eq!(
            requester_of(&request(
                &format!("{path}?ckAPIToken=api&ckWebAuthToken=alice%2Btoken"),
                None
            )),
            format!("web:{}", web_token_user("alice+token"))
        );
        assert_eq!(
            requester_of(&request(&format!("{path}?ckAPIToken=api"), Some("key-1"))),
            "s2s:key-1"
        );
        assert_eq!(
            requester_of(&request(
                &format!("{path}?ckWebAuthToken=alice"),
                Some("key-1")
            )),
            "s2s:key-1"
        );
        let rotated = crate::auth::rotated_web_token(&web_token_user("alice"));
        assert_eq!(
            requester_of(&request(&format!("{path}?ckWebAuthToken={rotated}"), None)),
            requester_of(&request(&format!("{path}?ckWebAuthToken=alice"), None)),
            "a rotated token counts against the same user"
        );
        assert_eq!(
            requester_of(&request(&format!("{path}?ckWebAuthToken="), None)),
            "anonymous"
        );
        assert_eq!(requester_of(&request(path, None)), "anonymous");
    }

    mod served {
        //! The middleware in front of a router. The limit is 1 request per second and each burst is two
        //! back-to-back in-process requests, so the second always falls within the same second.

        use super::*;
        use axum::Router;
        use axum::http::StatusCode;
        use axum::routing::any;
        use tower::ServiceExt as _;

        const PRIVATE: &str = "/database/1/iCloud.com.example/development/private/zones/list";

        fn app(limit: RateLimit) -> Router {
            Router::new()
                .route("/database/{*rest}", any(|| async { "ok" }))
                .route("/_dev/faults", any(|| async { "ok" }))
                .layer(axum::middleware::from_fn_with_state(limit, middleware))
        }

        async fn status_and_body(router: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
            let response = router.clone().oneshot(request(uri, None)).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, body.to_vec())
        }

        #[tokio::test]
        async fn a_second_request_within_the_second_is_throttled_with_a_retry_after() {
            let router = app(RateLimit::new(1));
            let alice = format!("{PRIVATE}?ckWebAuthToken=alice");
            assert_eq!(status_and_body(&router, &alice).await.0, StatusCode::OK);
            let (status, body) = status_and_body(&router, &alice).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(error["serverErrorCode"], "THROTTLED");
            assert!(error["retryAfter"].as_u64().is_some_and(|secs| secs >= 1));
            assert!(error["uuid"].is_string());

            let bob = format!("{PRIVATE}?ckWebAuthToken=bob");
            assert_eq!(status_and_body(&router, &bob).await.0, StatusCode::OK);
        }

        #[tokio::test]
        async fn dev_endpoints_are_never_limited() {
            let router = app(RateLimit::new(1));
            for _ in 0..5 {
                assert_eq!(
                    status_and_body(&router, "/_dev/faults").await.0,
                    StatusCode::OK
                );
            }
        }
    }
}
