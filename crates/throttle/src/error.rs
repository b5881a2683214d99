//! The one error type of this crate.

/// Everything that can go wrong in `skysync-throttle`, each variant saying what the caller can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    /// A configuration value is out of its allowed range. Nothing was built; fix that one value
    /// (the message names it and the allowed range) and build again.
    #[error("invalid throttle configuration: `{field}` {problem}; fix this value and build again")]
    InvalidConfig {
        /// The name of the offending configuration field.
        field: &'static str,
        /// What is wrong with it and what range is allowed.
        problem: String,
    },

    /// The throttle actor could not be started. The throttle is not running; report the reason
    /// and retry the spawn (this normally only fails while the runtime is shutting down).
    #[error("the throttle actor could not start: {reason}; retry once the runtime is running")]
    Spawn {
        /// What ractor reported.
        reason: String,
    },

    /// The throttle actor did not answer a request: it has stopped, failed, is restarting, or did
    /// not reply within the call timeout (a local failure, never a cloud one). Do not dispatch on
    /// a missing permit; wait for the supervisor to restart the throttle and ask again.
    #[error(transparent)]
    Local(#[from] skysync_actors::LocalError),

    /// `acquire` waited the given number of rounds without ever being granted, because other
    /// callers sharing the same throttle kept taking the quota first. Nothing was dispatched;
    /// call `acquire` again, or give this caller its own throttle.
    #[error(
        "no permit after {rounds} rounds of waiting: other callers keep taking the quota; ask again"
    )]
    PermitStarved {
        /// How many times the caller waited for a promised instant and asked again.
        rounds: u32,
    },
}

/// Shorthand for results whose error is [`ThrottleError`].
pub type Result<T, E = ThrottleError> = std::result::Result<T, E>;
