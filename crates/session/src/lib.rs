//! The sync engine of skysync: the session that keeps exactly one operation in flight, the
//! supervisor that restarts what fails, and the [`Engine`] an app embeds.
//!
//! # Actors
//!
//! ```text
//!  app ── Engine ──▶ Session ──▶ Queue      (next batch, park)
//!                      │  ├───▶ Store      (local commits, fetched pages, confirmations, conflicts)
//!                      │  ├───▶ Throttle   (permit, outcome)
//!                      │  ├───▶ Transport  (users, zones, subscriptions, changes, modify, lookup)
//!                      │  └───▶ Conflict   (resolve)
//!                      └── events, status ▶ app
//!  Supervisor: store+queue, throttle, transport, conflict; restarts a failed one behind the same
//!  handles, with backoff and an intensity limit (past it the engine halts).
//! ```
//!
//! The session decides the next operation in this order: who is signed in, the zones, their
//! subscriptions, lookups of conflicting records, fetches (the database's changes, then each
//! changed zone page by page), then sends (one zone's batch at a time). Each waits for the
//! throttle's permit. Every error is handled as `docs/design.md`'s table says; a halt keeps every
//! pending change. See [`Engine`] for an example.

mod config;
mod engine;
mod session;
mod types;

pub use config::{AccountChangePolicy, SchemaGuard, SessionConfig};
pub use engine::{Engine, EngineBuilder, EngineError};
pub use session::{Completion, Components, SessionActor, SessionArgs, SessionMsg, SessionState};
pub use types::{
    Diagnostics, Halt, HaltReason, MisbehaviorKind, OperationKind, OperationSummary,
    ServerMisbehavior, Status, SyncEvent,
};
