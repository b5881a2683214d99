//! The local error: a component inside this process did not answer.

use std::time::Duration;

/// A failure inside this process: a component actor that did not answer, has stopped, or is being
/// restarted. It is never a cloud error: it is not counted as a failed attempt, never fed to the
/// throttle, and never a reason to halt. The session waits for the supervisor's restart and redoes
/// the operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The component did not answer within the call's time limit. For a write, whether it took
    /// effect is unknown: read back before redoing it (every skysync operation is safe to redo).
    #[error("the {component} did not answer `{operation}` within {timeout:?}")]
    TimedOut {
        /// The component (`"store"`, `"queue"`, `"throttle"`, `"transport"`, `"conflict"`).
        component: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The component's actor is gone and no replacement was attached within the call's time
    /// limit (it is being restarted, the supervisor gave up, or the engine is shutting down).
    /// Nothing of the operation happened. Retry once the supervisor reports it running.
    #[error("the {component} is not running (`{operation}`)")]
    Unavailable {
        /// The component.
        component: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
    },
    /// The component took the request and stopped before answering (it failed, or was stopped):
    /// whether the operation took effect is unknown. Redo it after the restart.
    #[error("the {component} stopped while handling `{operation}`; its outcome is unknown")]
    Lost {
        /// The component.
        component: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
    },
}

impl LocalError {
    /// The component that failed to answer.
    pub fn component(&self) -> &'static str {
        match self {
            LocalError::TimedOut { component, .. }
            | LocalError::Unavailable { component, .. }
            | LocalError::Lost { component, .. } => component,
        }
    }
}
