//! The supervisor: starts every component linked to itself and restarts a failed one, with backoff
//! and an intensity limit, re-pointing the component's [`crate::Mailbox`]es so handles stay valid.

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call_t,
};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A boxed, sendable future: what [`ChildSpec::start`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to start one supervised component: spawn its actors linked to the supervisor and attach
/// each to the [`crate::Mailbox`] its handle calls through.
///
/// A spec may start several actors that live and die together (the store and the queue share one
/// database file, reopened after an I/O error): when any of them fails, the supervisor stops the
/// others and starts the spec again.
pub trait ChildSpec: Send + Sync + 'static {
    /// The component's name in events and diagnostics (`"store"`, `"throttle"`, ...).
    fn name(&self) -> &'static str;

    /// Spawns the component's actors linked to `supervisor`, attaches them to their mailboxes and
    /// returns them. An error is a failed start: it counts as a restart and is retried with
    /// backoff.
    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>>;
}

impl ChildSpec for Box<dyn ChildSpec> {
    fn name(&self) -> &'static str {
        self.as_ref().name()
    }

    fn start(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<Vec<ActorCell>, String>> {
        self.as_ref().start(supervisor)
    }
}

/// When and how often the supervisor restarts a failed component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart; each further restart within `within` doubles it.
    pub backoff_min: Duration,
    /// The longest wait before a restart.
    pub backoff_max: Duration,
    /// The most restarts of one component within `within`; one more and the supervisor gives up
    /// on it ([`SupervisorEvent::GaveUp`]) and the engine halts with the reason.
    pub max_restarts: u32,
    /// The window the restarts are counted in.
    pub within: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// What the supervisor did, for the engine, telemetry and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A component failed; it is restarted after `after`.
    Restarting {
        /// The component.
        child: &'static str,
        /// Why it stopped (the actor's error or exit reason).
        reason: String,
        /// Restarts of this component within the policy's window, this one included.
        attempt: u32,
        /// The backoff before the restart.
        after: Duration,
    },
    /// A component is running again; its handles answer as before.
    Restarted {
        /// The component.
        child: &'static str,
        /// Restarts of this component within the policy's window.
        attempt: u32,
    },
    /// A component failed more often than the policy allows; it is not restarted again and the
    /// engine halts with this reason.
    GaveUp {
        /// The component.
        child: &'static str,
        /// Its last failure.
        reason: String,
    },
}

/// Whether a supervised component runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Its actors run.
    Running,
    /// It failed and waits for its restart.
    Restarting,
    /// The supervisor gave up on it.
    GaveUp,
}

/// One supervised component as diagnostics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildStatus {
    /// The component.
    pub child: &'static str,
    /// Whether it runs.
    pub state: ChildState,
    /// Restarts within the policy's window.
    pub recent_restarts: u32,
}

/// The supervisor's messages: its interface. [`SupervisorHandle`] builds them.
pub enum SupervisorMsg {
    /// Start a component under supervision.
    Start {
        /// How to start it (and restart it).
        spec: Arc<dyn ChildSpec>,
        /// Whether it started.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// A restart's backoff has passed (the supervisor sends this to itself).
    Restart {
        /// The component's index.
        child: usize,
    },
    /// Report every component's state.
    Children {
        /// The states, in start order.
        reply: RpcReplyPort<Vec<ChildStatus>>,
    },
}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorMsg::Start { spec, .. } => write!(f, "Start({})", spec.name()),
            SupervisorMsg::Restart { child } => write!(f, "Restart({child})"),
            SupervisorMsg::Children { .. } => f.write_str("Children"),
        }
    }
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cells: Vec<ActorCell>,
    state: ChildState,
    restarts: VecDeque<Instant>,
}

impl Child {
    fn recent_restarts(&mut self, now: Instant, within: Duration) -> u32 {
        while self
            .restarts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > within)
        {
            self.restarts.pop_front();
        }
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }
}

/// The supervisor actor. Never named; spawn it through [`SupervisorHandle::spawn`].
#[derive(Debug, Default)]
pub struct Supervisor;

/// What the supervisor starts with.
pub struct SupervisorArgs {
    policy: RestartPolicy,
    events: broadcast::Sender<SupervisorEvent>,
}

/// The supervisor's state: its components.
pub struct SupervisorState {
    policy: RestartPolicy,
    events: broadcast::Sender<SupervisorEvent>,
    children: Vec<Child>,
}

impl SupervisorState {
    fn emit(&self, event: SupervisorEvent) {
        match &event {
            SupervisorEvent::Restarting {
                child,
                reason,
                attempt,
                after,
            } => {
                tracing::warn!(child, reason, attempt, after_ms = %after.as_millis(), "component failed; restarting")
            }
            SupervisorEvent::Restarted { child, attempt } => {
                tracing::info!(child, attempt, "component restarted");
            }
            SupervisorEvent::GaveUp { child, reason } => {
                tracing::error!(child, reason, "component keeps failing; supervisor gave up");
            }
        }
        // Nobody listening is fine: the event was logged.
        let _ = self.events.send(event);
    }

    /// A component's actor stopped: stop its siblings and schedule the restart, or give up.
    async fn on_child_down(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
        reason: String,
    ) {
        let policy = self.policy;
        let Some(child) = self.children.get_mut(index) else {
            return;
        };
        let siblings = std::mem::take(&mut child.cells);
        child.state = ChildState::Restarting;
        let now = Instant::now();
        child.restarts.push_back(now);
        let attempt = child.recent_restarts(now, policy.within);
        let name = child.spec.name();
        for cell in siblings {
            // Already stopped actors answer at once; a stuck one is left to its own exit.
            let _ = cell
                .stop_and_wait(None, Some(Duration::from_secs(10)))
                .await;
        }
        if attempt > policy.max_restarts {
            if let Some(child) = self.children.get_mut(index) {
                child.state = ChildState::GaveUp;
            }
            self.emit(SupervisorEvent::GaveUp {
                child: name,
                reason,
            });
            return;
        }
        let shift = attempt.saturating_sub(1).min(20);
        let after = policy
            .backoff_min
            .saturating_mul(1u32 << shift)
            .min(policy.backoff_max);
        self.emit(SupervisorEvent::Restarting {
            child: name,
            reason,
            attempt,
            after,
        });
        myself.send_after(after, move || SupervisorMsg::Restart { child: index });
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            policy: args.policy,
            events: args.events,
            children: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start { spec, reply } => {
                let result = spec.start(myself.get_cell()).await;
                let answer = result.map(|cells| {
                    state.children.push(Child {
                        spec,
                        cells,
                        state: ChildState::Running,
                        restarts: VecDeque::new(),
                    });
                });
                // A caller that gave up waiting has dropped its port.
                let _ = reply.send(answer);
            }
            SupervisorMsg::Restart { child: index } => {
                let Some(child) = state.children.get(index) else {
                    return Ok(());
                };
                if child.state != ChildState::Restarting {
                    return Ok(());
                }
                let spec = Arc::clone(&child.spec);
                match spec.start(myself.get_cell()).await {
                    Ok(cells) => {
                        let attempt = match state.children.get_mut(index) {
                            Some(child) => {
                                child.cells = cells;
                                child.state = ChildState::Running;
                                child.recent_restarts(Instant::now(), state.policy.within)
                            }
                            None => 0,
                        };
                        state.emit(SupervisorEvent::Restarted {
                            child: spec.name(),
                            attempt,
                        });
                    }
                    Err(reason) => {
                        let reason = format!("restart failed: {reason}");
                        state.on_child_down(&myself, index, reason).await;
                    }
                }
            }
            SupervisorMsg::Children { reply } => {
                let now = Instant::now();
                let within = state.policy.within;
                let statuses = state
                    .children
                    .iter_mut()
                    .map(|c| ChildStatus {
                        child: c.spec.name(),
                        state: c.state,
                        recent_restarts: c.recent_restarts(now, within),
                    })
                    .collect();
                let _ = reply.send(statuses);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "stopped without a reason".into()),
            ),
            // A supervisor must not stop because a child started or a group changed.
            _ => return Ok(()),
        };
        let id = cell.get_id();
        let found = state.children.iter().position(|c| {
            c.state == ChildState::Running && c.cells.iter().any(|x| x.get_id() == id)
        });
        if let Some(index) = found {
            state.on_child_down(&myself, index, reason).await;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop in reverse start order: later components use earlier ones.
        for child in state.children.iter_mut().rev() {
            child.state = ChildState::GaveUp;
            for cell in std::mem::take(&mut child.cells) {
                let _ = cell
                    .stop_and_wait(None, Some(Duration::from_secs(30)))
                    .await;
            }
        }
        Ok(())
    }
}

/// Why a component could not be put under supervision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SuperviseError {
    /// The component's first start failed; nothing was left running. Fix the cause (the reason
    /// says what: a store file that does not open, a runtime shutting down) and start it again.
    #[error("could not start the {child}: {reason}")]
    StartFailed {
        /// The component.
        child: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The supervisor itself is not running (it was shut down) or did not answer in time.
    #[error("the supervisor is not running: {0}")]
    NotRunning(String),
}

/// The cloneable handle of a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    events: broadcast::Sender<SupervisorEvent>,
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

/// How long a start (opening a store file, say) may take before the caller gives up.
const START_TIMEOUT_MS: u64 = 60_000;

impl SupervisorHandle {
    /// Spawns an unnamed supervisor with `policy`.
    pub async fn spawn(
        policy: RestartPolicy,
    ) -> Result<(SupervisorHandle, JoinHandle<()>), SuperviseError> {
        let (events, _) = broadcast::channel(256);
        let args = SupervisorArgs {
            policy,
            events: events.clone(),
        };
        let (actor, join) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| SuperviseError::NotRunning(e.to_string()))?;
        Ok((SupervisorHandle { actor, events }, join))
    }

    /// The supervisor's actor, to link components to.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Starts a component under supervision: from now on it is restarted when it fails.
    pub async fn start(&self, spec: impl ChildSpec) -> Result<(), SuperviseError> {
        let name = spec.name();
        let spec: Arc<dyn ChildSpec> = Arc::new(spec);
        let answer = call_t!(
            self.actor,
            |reply| SupervisorMsg::Start { spec, reply },
            START_TIMEOUT_MS
        )
        .map_err(|e| SuperviseError::NotRunning(e.to_string()))?;
        answer.map_err(|reason| SuperviseError::StartFailed {
            child: name,
            reason,
        })
    }

    /// Every component's state, in start order.
    pub async fn children(&self) -> Result<Vec<ChildStatus>, SuperviseError> {
        call_t!(self.actor, |reply| SupervisorMsg::Children { reply }, 5_000)
            .map_err(|e| SuperviseError::NotRunning(e.to_string()))
    }

    /// The supervisor's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.events.subscribe()
    }

    /// Stops every component (last started first) and then the supervisor.
    pub async fn shutdown(&self) {
        // An error means it is already gone, which is what was asked for.
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(60)))
            .await;
    }
}
