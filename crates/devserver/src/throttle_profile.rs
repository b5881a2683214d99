//! Throttling as CloudKit does it (`--throttle-profile cloudkit`): each user's database sustains
//! about one `records/modify` per 10–15 s with a small burst; beyond it, requests are answered
//! `429 THROTTLED` or `503 TRY_AGAIN_LATER` with a `retryAfter` of 10–80 s; and a client that comes
//! back before its `retryAfter` is locked out for longer and longer.
//!
//! The parameters are a [`ThrottleProfile`]; [`ProfileLimiter`] is the profile's state machine over
//! server time (pure: the caller passes `now`, so a simulation or a test can drive it without a
//! clock); [`middleware`] applies it to the dev server's CloudKit requests on the
//! [`ServerClock`], whose [`TimeScale`](crate::time_scale::TimeScale) makes the profile's seconds
//! pass faster.
//!
//! How it decides, per user's database (container, environment, database and user):
//! 1. A request that arrives while the database is under a penalty (before the `retryAfter` it was
//!    told has passed) is an offence: it is refused, and the penalty becomes a lock-out of
//!    [`ThrottleProfile::lockout`] × [`ThrottleProfile::lockout_growth`]^(offences − 1), at most
//!    [`ThrottleProfile::max_lockout`]. Offences are forgiven after
//!    [`ThrottleProfile::forgive_after`] without one. Every request to the database counts, paced or
//!    not.
//! 2. A `records/modify` is paced: the database admits one per its sustained interval (drawn once
//!    per database from [`ThrottleProfile::sustained_interval`]) with a burst of
//!    [`ThrottleProfile::burst`] (a GCRA). Over the rate, it is refused with a `retryAfter` drawn
//!    from [`ThrottleProfile::retry_after`] (never shorter than the time until the database admits
//!    again), which starts a penalty.
//! 3. Anything else is admitted.
//!
//! A client that waits as told is admitted when it comes back; a client that paces itself at one
//! `records/modify` per longest sustained interval is never refused. Random draws come from a
//! generator seeded with [`ThrottleProfile::seed`] and the database's identity, so the same requests
//! at the same server times always get the same answers.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use skysync_model::ServerErrorCode;
use skysync_model::wire::ErrorBody;

use crate::DevServerError;
use crate::faults::cloudkit_operation;
use crate::rate_limit::user_of;
use crate::reply::error_body_reply;
use crate::time_scale::ServerClock;

/// The one operation the profile paces; every other one is only subject to penalties.
pub const PACED_OPERATION: &str = "records/modify";

/// How many checks pass between sweeps that forget databases with nothing left to remember.
const SWEEP_EVERY: u64 = 4096;

/// The parameters of CloudKit-like throttling. All durations are server time (see
/// [`crate::time_scale`]). [`ThrottleProfile::cloudkit`] (also the `Default`) is what
/// `--throttle-profile cloudkit` runs.
///
/// ```
/// use std::time::Duration;
/// use skysync_devserver::throttle_profile::ThrottleProfile;
///
/// let profile = ThrottleProfile { seed: 7, ..ThrottleProfile::cloudkit() };
/// assert_eq!(profile.burst, 3);
/// assert_eq!(*profile.retry_after.end(), Duration::from_secs(80));
/// assert!(profile.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleProfile {
    /// The sustained pace of `records/modify` per database: one per this interval, drawn once per
    /// database, uniformly from the range (default 10–15 s).
    pub sustained_interval: RangeInclusive<Duration>,
    /// How many `records/modify` a rested database admits back to back (default 3).
    pub burst: u32,
    /// The `retryAfter` of a request over the pace, drawn uniformly from the range (default
    /// 10–80 s).
    pub retry_after: RangeInclusive<Duration>,
    /// The share of refusals answered `503 TRY_AGAIN_LATER` rather than `429 THROTTLED` (0 to 1,
    /// default 0.25); both carry a `retryAfter`.
    pub try_again_later_share: f64,
    /// The first lock-out of a client that came back before its `retryAfter` (default 60 s).
    pub lockout: Duration,
    /// Each further offence multiplies the lock-out by this (at least 1; default 2).
    pub lockout_growth: u32,
    /// The longest lock-out (default 1 hour).
    pub max_lockout: Duration,
    /// A database with no offence for this long starts again from the first lock-out (default 1
    /// hour).
    pub forgive_after: Duration,
    /// Seeds the random draws (intervals, `retryAfter`s, 429 or 503), mixed with each database's
    /// identity (default 0).
    pub seed: u64,
}

impl Default for ThrottleProfile {
    fn default() -> Self {
        ThrottleProfile::cloudkit()
    }
}

impl ThrottleProfile {
    /// What field reports of CloudKit Web Services describe: about one `records/modify` per 10–15 s
    /// sustained, a burst of 3, `retryAfter` of 10–80 s, lock-outs from 60 s doubling up to an hour.
    pub fn cloudkit() -> ThrottleProfile {
        ThrottleProfile {
            sustained_interval: Duration::from_secs(10)..=Duration::from_secs(15),
            burst: 3,
            retry_after: Duration::from_secs(10)..=Duration::from_secs(80),
            try_again_later_share: 0.25,
            lockout: Duration::from_secs(60),
            lockout_growth: 2,
            max_lockout: Duration::from_secs(3600),
            forgive_after: Duration::from_secs(3600),
            seed: 0,
        }
    }

    /// Checks the parameters; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), DevServerError> {
        let invalid = |setting: &'static str, reason: String| {
            Err(DevServerError::InvalidSetting { setting, reason })
        };
        let range_ok = |range: &RangeInclusive<Duration>| {
            !range.start().is_zero() && range.start() <= range.end()
        };
        if !range_ok(&self.sustained_interval) {
            return invalid(
                "sustained_interval",
                format!(
                    "{:?} must start above zero and not end before it starts",
                    self.sustained_interval
                ),
            );
        }
        if self.burst == 0 {
            return invalid("burst", "is zero; it must be at least 1".into());
        }
        if !range_ok(&self.retry_after) {
            return invalid(
                "retry_after",
                format!(
                    "{:?} must start above zero and not end before it starts",
                    self.retry_after
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.try_again_later_share) {
            return invalid(
                "try_again_later_share",
                format!("is {}; it must be from 0 to 1", self.try_again_later_share),
            );
        }
        if self.lockout.is_zero() || self.max_lockout < self.lockout {
            return invalid(
                "lockout",
                format!(
                    "({:?}) must be above zero and at most max_lockout ({:?})",
                    self.lockout, self.max_lockout
                ),
            );
        }
        if self.lockout_growth == 0 {
            return invalid(
                "lockout_growth",
                "is zero; it must be at least 1 (1 keeps every lock-out equal)".into(),
            );
        }
        Ok(())
    }

    /// The lock-out after the `offences`-th early request (1 for the first).
    pub fn lockout_for(&self, offences: u32) -> Duration {
        let mut lockout = self.lockout;
        for _ in 1..offences {
            lockout = lockout.saturating_mul(self.lockout_growth);
            if lockout >= self.max_lockout {
                break;
            }
        }
        lockout.min(self.max_lockout)
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleCause {
    /// The database's `records/modify` pace was exceeded.
    OverPace,
    /// The client came back before its `retryAfter`: this is its `offences`-th early request since
    /// it was last forgiven.
    CameBackEarly {
        /// Early requests so far (1 for the first).
        offences: u32,
    },
}

/// A refusal: what to answer and how long the client must stay away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleRefusal {
    /// `THROTTLED` (429) or `TRY_AGAIN_LATER` (503).
    pub code: ServerErrorCode,
    /// How long (server time) until the database admits this client again.
    pub retry_after: Duration,
    /// Why.
    pub cause: ThrottleCause,
}

/// What the profile decides about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottleVerdict {
    /// Serve it.
    Admit,
    /// Refuse it.
    Refuse(ThrottleRefusal),
}

/// What the profile remembers about one database.
#[derive(Debug)]
struct DatabasePace {
    /// This database's sustained interval between `records/modify`.
    interval: Duration,
    /// The GCRA's theoretical arrival time of the next `records/modify`.
    next_arrival: Duration,
    /// No request before this (a `retryAfter` or a lock-out in force).
    penalty_until: Duration,
    /// Early requests since the last forgiveness.
    offences: u32,
    /// When the latest early request came.
    last_offence: Option<Duration>,
    /// This database's random draws.
    rng: StdRng,
}

impl DatabasePace {
    fn new(profile: &ThrottleProfile, database: &str) -> DatabasePace {
        let mut hasher = Sha256::new();
        hasher.update(profile.seed.to_be_bytes());
        hasher.update(database.as_bytes());
        let digest = hasher.finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest);
        let mut rng = StdRng::from_seed(seed);
        let interval = draw(&mut rng, &profile.sustained_interval);
        DatabasePace {
            interval,
            next_arrival: Duration::ZERO,
            penalty_until: Duration::ZERO,
            offences: 0,
            last_offence: None,
            rng,
        }
    }

    /// Whether there is nothing left to remember at `now` (a fresh state would decide the same).
    fn is_idle(&self, profile: &ThrottleProfile, now: Duration) -> bool {
        self.next_arrival <= now
            && self.penalty_until <= now
            && self
                .last_offence
                .is_none_or(|at| at.saturating_add(profile.forgive_after) <= now)
    }
}

/// A duration drawn uniformly from `range` (to the millisecond).
fn draw(rng: &mut StdRng, range: &RangeInclusive<Duration>) -> Duration {
    let low = u64::try_from(range.start().as_millis()).unwrap_or(u64::MAX);
    let high = u64::try_from(range.end().as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(low.min(high)..=high))
}

/// `duration` rounded up to whole seconds.
fn whole_seconds_up(duration: Duration) -> Duration {
    if duration.subsec_nanos() == 0 {
        duration
    } else {
        Duration::from_secs(duration.as_secs().saturating_add(1))
    }
}

/// The profile's decisions for every database it has seen. Cloning shares the same state.
///
/// ```
/// use std::time::Duration;
/// use skysync_devserver::throttle_profile::{ProfileLimiter, ThrottleProfile, ThrottleVerdict};
///
/// let limiter = ProfileLimiter::new(ThrottleProfile::cloudkit()).unwrap();
/// let now = Duration::from_secs(100);
/// for _ in 0..3 {
///     assert_eq!(limiter.check("alice's database", true, now), ThrottleVerdict::Admit);
/// }
/// let ThrottleVerdict::Refuse(refusal) = limiter.check("alice's database", true, now) else {
///     panic!("a fourth request at once is over the burst");
/// };
/// assert!(refusal.retry_after >= Duration::from_secs(10));
/// assert_eq!(limiter.check("bob's database", true, now), ThrottleVerdict::Admit);
/// ```
#[derive(Clone, Debug)]
pub struct ProfileLimiter {
    profile: Arc<ThrottleProfile>,
    databases: Arc<Mutex<HashMap<String, DatabasePace>>>,
    checks: Arc<AtomicU64>,
}

impl ProfileLimiter {
    /// A limiter running `profile` (checked with [`ThrottleProfile::validate`]).
    pub fn new(profile: ThrottleProfile) -> Result<ProfileLimiter, DevServerError> {
        profile.validate()?;
        Ok(ProfileLimiter {
            profile: Arc::new(profile),
            databases: Arc::new(Mutex::new(HashMap::new())),
            checks: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The profile it runs.
    pub fn profile(&self) -> &ThrottleProfile {
        &self.profile
    }

    /// Decides about one request to `database` (any string that names one user's database) at
    /// server time `now`; `paced` says whether it is a `records/modify`. Times must not go
    /// backwards for one database.
    pub fn check(&self, database: &str, paced: bool, now: Duration) -> ThrottleVerdict {
        let profile = &*self.profile;
        let mut databases = self.lock();
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            databases.retain(|_, pace| !pace.is_idle(profile, now));
        }
        let pace = databases
            .entry(database.to_owned())
            .or_insert_with(|| DatabasePace::new(profile, database));
        if pace
            .last_offence
            .is_some_and(|at| at.saturating_add(profile.forgive_after) <= now)
        {
            pace.offences = 0;
            pace.last_offence = None;
        }
        if now < pace.penalty_until {
            pace.offences = pace.offences.saturating_add(1);
            pace.last_offence = Some(now);
            let locked_until = now.saturating_add(profile.lockout_for(pace.offences));
            pace.penalty_until = pace.penalty_until.max(locked_until);
            return ThrottleVerdict::Refuse(ThrottleRefusal {
                code: refusal_code(profile, &mut pace.rng),
                retry_after: pace.penalty_until.saturating_sub(now),
                cause: ThrottleCause::CameBackEarly {
                    offences: pace.offences,
                },
            });
        }
        if !paced {
            return ThrottleVerdict::Admit;
        }
        let tolerance = pace
            .interval
            .saturating_mul(profile.burst.saturating_sub(1));
        if pace.next_arrival <= now.saturating_add(tolerance) {
            pace.next_arrival = pace.next_arrival.max(now).saturating_add(pace.interval);
            return ThrottleVerdict::Admit;
        }
        let until_admitted = pace
            .next_arrival
            .saturating_sub(tolerance)
            .saturating_sub(now);
        let retry_after =
            draw(&mut pace.rng, &profile.retry_after).max(whole_seconds_up(until_admitted));
        pace.penalty_until = now.saturating_add(retry_after);
        ThrottleVerdict::Refuse(ThrottleRefusal {
            code: refusal_code(profile, &mut pace.rng),
            retry_after,
            cause: ThrottleCause::OverPace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, DatabasePace>> {
        // Each check leaves every entry whole before it returns, so a poisoned map is still usable.
        self.databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn refusal_code(profile: &ThrottleProfile, rng: &mut StdRng) -> ServerErrorCode {
    if rng.random_bool(profile.try_again_later_share) {
        ServerErrorCode::TryAgainLater
    } else {
        ServerErrorCode::Throttled
    }
}

/// The profile as the server runs it: the limiter and the server's clock.
#[derive(Clone, Debug)]
pub struct ProfileThrottle {
    /// The decisions.
    pub limiter: ProfileLimiter,
    /// Server time.
    pub clock: ServerClock,
}

/// The database a CloudKit request path names, as `container/environment/database`, or `None` for
/// a path outside `/database/1/…`.
fn database_of(path: &str) -> Option<String> {
    let mut segments = path.trim_matches('/').split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("database"), Some(_version), Some(container), Some(environment), Some(database)) => {
            Some(format!("{container}/{environment}/{database}"))
        }
        _ => None,
    }
}

/// Applies the profile to `/database/…` requests (the device endpoints and `/_dev/` are never
/// throttled), answering a refusal with its code, a `retryAfter` in real whole seconds and the same
/// `Retry-After` header. The response carries the [`ThrottleCause`] as an extension.
pub async fn middleware(
    State(throttle): State<ProfileThrottle>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let (Some(database), Some(operation)) = (database_of(path), cloudkit_operation(path)) else {
        return next.run(request).await;
    };
    let key = format!("{}@{database}", user_of(&request));
    let paced = operation == PACED_OPERATION;
    let refusal = match throttle.limiter.check(&key, paced, throttle.clock.now()) {
        ThrottleVerdict::Admit => return next.run(request).await,
        ThrottleVerdict::Refuse(refusal) => refusal,
    };
    let retry_after = throttle.clock.scale().retry_after_secs(refusal.retry_after);
    let reason = match refusal.cause {
        ThrottleCause::OverPace => {
            "request rate exceeded for this database; retry after the given number of seconds"
        }
        ThrottleCause::CameBackEarly { .. } => {
            "requests kept coming before retryAfter had passed; locked out for the given number \
             of seconds"
        }
    };
    tracing::debug!(
        retry_after,
        operation = %operation,
        cause = ?refusal.cause,
        "request refused by the throttle profile"
    );
    let mut response = error_body_reply(ErrorBody {
        uuid: Some(uuid::Uuid::new_v4().to_string()),
        server_error_code: refusal.code,
        reason: Some(reason.to_owned()),
        retry_after: Some(retry_after),
        redirect_url: None,
    });
    response.extensions_mut().insert(refusal.cause);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn limiter(profile: ThrottleProfile) -> ProfileLimiter {
        ProfileLimiter::new(profile).unwrap()
    }

    /// A profile with fixed numbers: 10 s pace, burst 2, retryAfter 20 s, lock-outs 60 s × 2 up
    /// to 300 s, forgiven after 600 s.
    fn fixed() -> ThrottleProfile {
        ThrottleProfile {
            sustained_interval: secs(10)..=secs(10),
            burst: 2,
            retry_after: secs(20)..=secs(20),
            try_again_later_share: 0.0,
            lockout: secs(60),
            lockout_growth: 2,
            max_lockout: secs(300),
            forgive_after: secs(600),
            seed: 1,
        }
    }

    fn refusal(verdict: ThrottleVerdict) -> ThrottleRefusal {
        match verdict {
            ThrottleVerdict::Refuse(refusal) => refusal,
            ThrottleVerdict::Admit => panic!("expected a refusal"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_pace_holds_and_the_refusal_starts_a_penalty() {
        let limiter = limiter(fixed());
        assert_eq!(limiter.check("db", true, secs(0)), ThrottleVerdict::Admit);
        assert_eq!(limiter.check("db", true, secs(0)), ThrottleVerdict::Admit);
        let refused = refusal(limiter.check("db", true, secs(1)));
        assert_eq!(refused.code, ServerErrorCode::Throttled);
        assert_eq!(refused.retry_after, secs(20));
        assert_eq!(refused.cause, ThrottleCause::OverPace);
        // Waiting as told: admitted at the end of the penalty.
        assert_eq!(limiter.check("db", true, secs(21)), ThrottleVerdict::Admit);
    }

    #[test]
    fn a_client_pacing_at_the_sustained_interval_is_never_refused() {
        let limiter = limiter(ThrottleProfile::cloudkit());
        for i in 0..1000 {
            assert_eq!(
                limiter.check("db", true, secs(15 * i)),
                ThrottleVerdict::Admit,
                "request {i}"
            );
        }
    }

    #[test]
    fn coming_back_early_locks_out_for_growing_periods_up_to_the_maximum() {
        let limiter = limiter(fixed());
        limiter.check("db", true, secs(0));
        limiter.check("db", true, secs(0));
        refusal(limiter.check("db", true, secs(0))); // penalty until 20 s
        let mut lockouts = Vec::new();
        let mut now = secs(1);
        for _ in 0..6 {
            let refused = refusal(limiter.check("db", false, now));
            lockouts.push(refused.retry_after);
            now += secs(1);
        }
        // Each early request starts a lock-out at least as long as the growing lock-out.
        assert_eq!(
            lockouts,
            [
                secs(60),
                secs(120),
                secs(240),
                secs(300),
                secs(300),
                secs(300)
            ]
        );
        assert_eq!(
            refusal(limiter.check("db", true, now)).cause,
            ThrottleCause::CameBackEarly { offences: 7 }
        );
    }

    #[test]
    fn a_lock_out_never_shortens_a_longer_penalty_in_force() {
        let limiter = limiter(ThrottleProfile {
            retry_after: secs(500)..=secs(500),
            ..fixed()
        });
        limiter.check("db", true, secs(0));
        limiter.check("db", true, secs(0));
        refusal(limiter.check("db", true, secs(0)));
        let early = refusal(limiter.check("db", true, secs(100)));
        assert_eq!(early.retry_after, secs(400), "the 500 s penalty still runs");
    }

    #[test]
    fn offences_are_forgiven_after_a_quiet_spell() {
        let limiter = limiter(fixed());
        limiter.check("db", true, secs(0));
        limiter.check("db", true, secs(0));
        refusal(limiter.check("db", true, secs(0)));
        assert_eq!(
            refusal(limiter.check("db", true, secs(1))).retry_after,
            secs(60)
        );
        assert_eq!(
            refusal(limiter.check("db", true, secs(2))).retry_after,
            secs(120)
        );
        // Penalty until 122 s; quiet until well after forgive_after (600 s after the last offence).
        let later = secs(2 + 600);
        assert_eq!(limiter.check("db", true, later), ThrottleVerdict::Admit);
        assert_eq!(limiter.check("db", true, later), ThrottleVerdict::Admit);
        refusal(limiter.check("db", true, later));
        assert_eq!(
            refusal(limiter.check("db", true, later + secs(1))).retry_after,
            secs(60),
            "the first lock-out again"
        );
    }

    #[test]
    fn unpaced_requests_pass_unless_a_penalty_is_in_force() {
        let limiter = limiter(fixed());
        for _ in 0..50 {
            assert_eq!(limiter.check("db", false, secs(0)), ThrottleVerdict::Admit);
        }
        limiter.check("db", true, secs(0));
        limiter.check("db", true, secs(0));
        refusal(limiter.check("db", true, secs(0)));
        assert!(matches!(
            refusal(limiter.check("db", false, secs(5))).cause,
            ThrottleCause::CameBackEarly { offences: 1 }
        ));
    }

    #[test]
    fn databases_are_throttled_apart() {
        let limiter = limiter(fixed());
        limiter.check("alice", true, secs(0));
        limiter.check("alice", true, secs(0));
        refusal(limiter.check("alice", true, secs(0)));
        assert_eq!(limiter.check("bob", true, secs(0)), ThrottleVerdict::Admit);
    }

    #[test]
    fn retry_after_is_drawn_from_its_range_and_the_code_from_the_share() {
        let limiter = limiter(ThrottleProfile {
            try_again_later_share: 0.5,
            ..ThrottleProfile::cloudkit()
        });
        let mut codes = std::collections::BTreeSet::new();
        for i in 0..200 {
            let database = format!("db-{i}");
            for _ in 0..3 {
                limiter.check(&database, true, secs(0));
            }
            let refused = refusal(limiter.check(&database, true, secs(0)));
            assert!(
                (secs(10)..=secs(80)).contains(&refused.retry_after),
                "{refused:?}"
            );
            codes.insert(refused.code.as_str().to_owned());
        }
        assert_eq!(
            codes.into_iter().collect::<Vec<_>>(),
            ["THROTTLED", "TRY_AGAIN_LATER"]
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_answers_and_another_seed_others() {
        let run = |seed: u64| {
            let limiter = limiter(ThrottleProfile {
                seed,
                ..ThrottleProfile::cloudkit()
            });
            (0..60)
                .map(|i| limiter.check("db", true, secs(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn bad_profiles_are_refused_naming_the_setting() {
        let base = ThrottleProfile::cloudkit();
        for (bad, setting) in [
            (
                ThrottleProfile {
                    burst: 0,
                    ..base.clone()
                },
                "burst",
            ),
            (
                ThrottleProfile {
                    sustained_interval: secs(0)..=secs(1),
                    ..base.clone()
                },
                "sustained_interval",
            ),
            (
                ThrottleProfile {
                    retry_after: secs(9)..=secs(8),
                    ..base.clone()
                },
                "retry_after",
            ),
            (
                ThrottleProfile {
                    try_again_later_share: 1.5,
                    ..base.clone()
                },
                "try_again_later_share",
            ),
            (
                ThrottleProfile {
                    max_lockout: secs(1),
                    ..base.clone()
                },
                "lockout",
            ),
            (
                ThrottleProfile {
                    lockout_growth: 0,
                    ..base.clone()
                },
                "lockout_growth",
            ),
        ] {
            match ProfileLimiter::new(bad) {
                Err(DevServerError::InvalidSetting { setting: named, .. }) => {
                    assert_eq!(named, setting);
                }
                other => panic!("{setting}: {other:?}"),
            }
        }
    }

    #[test]
    fn lockouts_grow_by_the_factor_and_stop_at_the_maximum() {
        let profile = fixed();
        assert_eq!(profile.lockout_for(1), secs(60));
        assert_eq!(profile.lockout_for(2), secs(120));
        assert_eq!(profile.lockout_for(3), secs(240));
        assert_eq!(profile.lockout_for(4), secs(300));
        assert_eq!(profile.lockout_for(u32::MAX), secs(300));
    }

    #[test]
    fn the_database_is_read_from_database_paths_only() {
        assert_eq!(
            database_of("/database/1/iCloud.c/development/private/records/modify").as_deref(),
            Some("iCloud.c/development/private")
        );
        assert_eq!(
            database_of("/device/1/iCloud.c/development/tokens/create"),
            None
        );
        assert_eq!(database_of("/_dev/stats"), None);
    }

    mod served {
        //! The middleware in front of a router, on tokio's paused clock.

        use super::*;
        use crate::time_scale::TimeScale;
        use axum::Router;
        use axum::http::StatusCode;
        use axum::routing::any;
        use tower::ServiceExt as _;

        const MODIFY: &str =
            "/database/1/iCloud.c/development/private/records/modify?ckWebAuthToken=alice";
        const LIST: &str =
            "/database/1/iCloud.c/development/private/zones/list?ckWebAuthToken=alice";

        fn app(scale: f64) -> Router {
            let throttle = ProfileThrottle {
                limiter: ProfileLimiter::new(fixed()).unwrap(),
                clock: ServerClock::start(TimeScale::new(scale).unwrap()),
            };
            Router::new()
                .route("/database/{*rest}", any(|| async { "ok" }))
                .route("/device/{*rest}", any(|| async { "ok" }))
                .layer(axum::middleware::from_fn_with_state(throttle, middleware))
        }

        async fn send(router: &Router, uri: &str) -> Response {
            let request = axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            router.clone().oneshot(request).await.unwrap()
        }

        #[tokio::test(start_paused = true)]
        async fn a_refusal_carries_retry_after_in_real_seconds_in_body_and_header() {
            let router = app(10.0);
            assert_eq!(send(&router, MODIFY).await.status(), StatusCode::OK);
            assert_eq!(send(&router, MODIFY).await.status(), StatusCode::OK);
            let refused = send(&router, MODIFY).await;
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                refused.headers()["retry-after"],
                "2",
                "20 s at ten times the speed"
            );
            assert_eq!(
                refused.extensions().get::<ThrottleCause>(),
                Some(&ThrottleCause::OverPace)
            );
            let body = axum::body::to_bytes(refused.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["serverErrorCode"], "THROTTLED");
            assert_eq!(body["retryAfter"], 2);

            // Early (1 real second = 10 server seconds): locked out; the list counts too.
            tokio::time::advance(Duration::from_secs(1)).await;
            let early = send(&router, LIST).await;
            assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(early.headers()["retry-after"], "6", "a 60 s lock-out");

            // Waiting as told: served.
            tokio::time::advance(Duration::from_secs(6)).await;
            assert_eq!(send(&router, MODIFY).await.status(), StatusCode::OK);
        }

        #[tokio::test(start_paused = true)]
        async fn device_endpoints_and_other_users_are_not_held_back() {
            let router = app(1.0);
            for _ in 0..3 {
                send(&router, MODIFY).await;
            }
            assert_eq!(
                send(
                    &router,
                    "/device/1/iCloud.c/development/tokens/create?ckWebAuthToken=alice"
                )
                .await
                .status(),
                StatusCode::OK
            );
            assert_eq!(
                send(
                    &router,
                    "/database/1/iCloud.c/development/private/records/modify?ckWebAuthToken=bob"
                )
                .await
                .status(),
                StatusCode::OK
            );
            assert_eq!(
                send(
                    &router,
                    "/database/1/iCloud.c/development/public/records/modify?ckWebAuthToken=alice"
                )
                .await
                .status(),
                StatusCode::OK,
                "alice's public database is another database"
            );
        }
    }
}
