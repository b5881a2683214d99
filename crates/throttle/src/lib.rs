//! Pacing between CloudKit operations for skysync.
//!
//! The session holds one operation in flight and asks the throttle before dispatching the
//! next. The throttle combines:
//!
//! * an adaptive pacing delay `d` in `[d_min, d_max]` (defaults 0.25 s and 600 s): a
//!   throttle-class failure at least doubles it, a success shrinks it by a third, and there is
//!   no integral term that could wind up ([`PacingController`]);
//! * the server's `retryAfter` as a hard deadline, and jitter so that devices spread apart;
//! * per-operation retry counting, exhausted after `max_attempts` failures ([`RetryBudget`]);
//! * a governor quota as a hard cap on the request rate, whatever the controller says.
//!
//! [`Throttle`] is the plain state machine (time passed in); [`ThrottleHandle`] runs it as a
//! ractor actor. [`simulation`] replays skysync's policy against CloudSyncSession's two
//! policies and a naive client on the same simulated server.
//!
//! ```
//! use std::time::Duration;
//! use skysync_throttle::{Outcome, Permit, RetryVerdict, Throttle, ThrottleConfig};
//! use tokio::time::Instant;
//!
//! let config = ThrottleConfig { seed: Some(7), ..ThrottleConfig::default() };
//! let mut throttle = Throttle::new(&config)?;
//! let now = Instant::now();
//! assert_eq!(throttle.permit(now), Permit::Granted); // the first request goes at once
//!
//! // The server answers 429 THROTTLED with retryAfter 3 s.
//! let verdict = throttle.report(now, &Outcome::throttled(Some(Duration::from_secs(3)), "THROTTLED (429)"));
//! assert!(matches!(verdict, RetryVerdict::Retry { failures: 1, .. }));
//! assert_eq!(throttle.delay(), Duration::from_millis(500)); // doubled from 0.25 s
//!
//! // No permit before the deadline, whatever the delay says.
//! match throttle.permit(now + Duration::from_secs(1)) {
//!     Permit::Wait { until, .. } => assert!(until >= now + Duration::from_secs(3)),
//!     Permit::Granted => unreachable!("granted before retryAfter"),
//! }
//! # Ok::<(), skysync_throttle::ThrottleError>(())
//! ```
//!
//! As an actor, behind a cloneable handle; the caller sleeps, never the actor:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), skysync_throttle::ThrottleError> {
//! use std::time::Duration;
//! use skysync_throttle::{Outcome, ThrottleConfig, ThrottleHandle};
//!
//! let (throttle, _join) = ThrottleHandle::spawn(&ThrottleConfig::default()).await?;
//! throttle.acquire().await?; // the first request goes at once
//! throttle.report(Outcome::transient(None, "connection reset")).await?;
//! let waited = throttle.acquire().await?; // sleeps here, in the caller's task
//! assert!(waited >= Duration::from_millis(400)); // d = 0.5 s, jitter ±20 %
//! assert_eq!(throttle.diagnostics().await?.failures, 1);
//! # Ok(())
//! # }
//! ```

mod actor;
mod config;
mod error;
mod outcome;
mod pacing;
mod quota;
mod retry;
pub mod simulation;
mod throttle;

pub use actor::{
    DEFAULT_ACQUIRE_ROUNDS, DEFAULT_CALL_TIMEOUT, ThrottleActor, ThrottleHandle, ThrottleMessage,
};
pub use config::{MAX_DELAY_LIMIT, RETRY_AFTER_CAP, ThrottleConfig};
pub use error::{Result, ThrottleError};
pub use outcome::{FailureKind, LastError, Outcome};
pub use pacing::{PacingController, WaitCause};
pub use quota::{TokioClock, TokioInstant};
pub use retry::{RetryBudget, RetryVerdict};
pub use throttle::{Permit, Throttle, ThrottleDiagnostics};
