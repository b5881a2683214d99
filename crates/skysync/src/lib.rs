//! skysync: an offline-first sync engine for Rust apps.
//!
//! The app saves and deletes records locally (durable when the call returns); skysync sends them to
//! CloudKit through CloudKit Web Services with one operation in flight, fetches what other devices
//! changed, resolves conflicts, and tells the app what it is doing. No change is lost, no deletion
//! comes back, and every retry, wait and halt is visible ([`Engine::diagnostics`],
//! [`Engine::events`], [`Engine::status`]).
//!
//! This crate is what an app adds: it re-exports the [`Engine`] and the vocabulary it speaks.
//!
//! ```no_run
//! use skysync::{Engine, Record, RecordId, ZoneId};
//!
//! # async fn app() -> Result<(), skysync::EngineError> {
//! let notes = ZoneId::new("Notes");
//! let engine = Engine::builder("notes.redb")
//!     .dev_server("http://127.0.0.1:8787", "my-web-auth-token")? // or .cloudkit(client)
//!     .zones([notes.clone()])
//!     .build()
//!     .await?;
//! let id = RecordId::new(notes, "n1");
//! engine.save(Record::new(id.clone(), "Note").with("title", "Groceries")).await?;
//! assert!(engine.get(id).await?.is_some()); // durable and readable at once, synced soon
//! println!("{}", engine.diagnostics().await?.status); // Idle, Uploading, Waiting, ...
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

pub use skysync_conflict::{
    ClientWins, ConflictResolver, Custom, EditCount, LastWriterWinsByClock,
    LastWriterWinsByServerTime, ServerWins, ThreeWayMerge,
};
pub use skysync_model::typed::{self, RecordType, TypedError};
pub use skysync_model::{
    ChangeTag, ChangeToken, FieldValue, ParkReason, Record, RecordId, Resolution, ZoneId,
};
pub use skysync_session::{
    AccountChangePolicy, Diagnostics, Engine, EngineBuilder, EngineError, Halt, HaltReason,
    MisbehaviorKind, SchemaGuard, ServerMisbehavior, SessionConfig, Status, SyncEvent,
};
pub use skysync_throttle::ThrottleConfig;
pub use skysync_transport::{Auth, CloudKitClient, DatabaseScope, Environment};
