//! Pacing between CloudKit operations for skysync.
//!
//! The session holds one operation in flight and asks the throttle before starting the next.
//! The throttle combines:
//!
//! * a **rate** in operation starts per second, measured start to start, that learns the
//!   server's capacity instead of oscillating around it ([`RateController`]): slow start until
//!   the first throttle, then a learned ceiling, a cubic climb back to it and rare probes above
//!   it, so that a steady state costs at most about one throttle per probing period;
//! * the server's `retryAfter` as a hard deadline, plus jitter so that devices spread apart;
//! * separate capped exponential backoffs for transient failures and offline probing, which
//!   leave the learned rate alone ([`Backoff`]);
//! * retry counting per operation, exhausted after `max_attempts` counted failures
//!   ([`RetryBudget`]); offline is never counted;
//! * a governor quota as a hard cap on the request rate, above any rate the controller reaches;
//! * a [`PacingMemory`](skysync_model::PacingMemory) to save in the store and restore from, so
//!   that a restart neither relearns the rate nor starts during a penalty.
//!
//! [`Throttle`] is the plain state machine (time passed in); [`ThrottleHandle`] runs it as a
//! ractor actor. [`simulation`] measures it against CloudSyncSession's two policies, the law
//! it replaced and a naive client on the same simulated server.
//!
//! ```
//! use std::time::Duration;
//! use skysync_throttle::{OperationId, Outcome, Permit, RetryVerdict, Throttle, ThrottleConfig, WaitCause};
//! use tokio::time::Instant;
//!
//! let config = ThrottleConfig { seed: Some(7), ..ThrottleConfig::default() };
//! let mut throttle = Throttle::new(&config)?;
//! let send = OperationId::new("send zone Notes");
//! let now = Instant::now();
//! assert_eq!(throttle.permit(now), Permit::Granted); // the first start goes at once
//!
//! // The server answers 429 THROTTLED with retryAfter 3 s.
//! let verdict = throttle.report(now, &send, &Outcome::throttled(Some(Duration::from_secs(3)), "THROTTLED (HTTP 429)"));
//! assert!(matches!(verdict, RetryVerdict::Retry { failures: 1, .. }));
//! assert!(throttle.rate_controller().ceiling().is_some()); // a ceiling is learned
//!
//! // No start before the deadline, whatever the rate says.
//! match throttle.permit(now + Duration::from_secs(1)) {
//!     Permit::Wait { until, cause } => {
//!         assert_eq!(cause, WaitCause::RetryAfter);
//!         assert!(until >= now + Duration::from_secs(3));
//!     }
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
//! use skysync_throttle::{OperationId, Outcome, ThrottleConfig, ThrottleHandle, WaitCause};
//!
//! // No memory saved yet: slow start.
//! let (throttle, _join) = ThrottleHandle::spawn(&ThrottleConfig::default(), None).await?;
//! throttle.acquire().await?; // the first start goes at once
//! throttle.report(OperationId::new("batch 1"), Outcome::transient(None, "connection lost")).await?;
//! let diagnostics = throttle.diagnostics().await?;
//! assert_eq!(diagnostics.waiting_for, Some(WaitCause::Pacing)); // 2 s at the initial rate
//! assert_eq!(diagnostics.failures, 1);
//! let waited = throttle.acquire().await?; // sleeps here, in the caller's task
//! assert!(waited >= Duration::from_millis(1900));
//! let saved = throttle.memory().await?; // for the store's sync metadata
//! assert_eq!(saved.ceiling_per_sec, None); // a transient failure teaches no ceiling
//! # Ok(())
//! # }
//! ```

mod actor;
mod backoff;
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
    ThrottleSpec,
};
pub use backoff::Backoff;
pub use config::{MAX_DELAY_LIMIT, RETRY_AFTER_CAP, ThrottleConfig};
pub use error::{Result, ThrottleError};
pub use outcome::{FailureKind, LastError, OperationId, Outcome};
pub use pacing::{PacingPhase, RateController, RateSignal, WaitCause};
pub use quota::{TokioClock, TokioInstant};
pub use retry::{MAX_TRACKED_OPERATIONS, RetryBudget, RetryVerdict};
pub use throttle::{Permit, Throttle, ThrottleDiagnostics};
