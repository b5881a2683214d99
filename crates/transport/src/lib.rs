//! The CloudKit Web Services transport of skysync: the [`CloudDatabase`] trait, its HTTP client
//! [`CloudKitClient`], authentication ([`Auth`]: API token + web auth token, or a server-to-server
//! [`ServerKey`]), zone-change notifications, and the [`TransportActor`] with its cloneable
//! [`TransportHandle`].
//!
//! Every operation answers with the model's typed [`skysync_model::CloudError`], whose
//! [`class`](skysync_model::CloudError::class) tells the session what to do (retry, split, resolve,
//! recreate the zone, refetch, park, halt). Item-level failures of a batch come back one per item
//! ([`ModifyOutcome`], [`LookupOutcome`]), also when CloudKit fails a whole atomic batch with HTTP 400.
//! Answers that are not CloudKit JSON (a proxy's HTML page, a cut-off body) are transient errors
//! saying what arrived. An answer over the response size cap ([`Limits::max_response_bytes`]) is
//! refused as [`skysync_model::CloudError::ResponseTooLarge`] (transient too) the moment its
//! declared length or the bytes read pass the cap: a server that streams for ever costs at most the
//! cap in memory. Tokens and keys never appear in logs, spans, errors or `Debug` output.
//!
//! # Example
//!
//! ```no_run
//! use skysync_model::{PendingChange, Record, RecordId, ZoneId};
//! use skysync_transport::{
//!     Auth, CloudDatabase, CloudKitClient, DatabaseScope, HandleOptions, ModifyBatch,
//!     ModifyOutcome, TransportHandle,
//! };
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Auth::web("my-api-token", "the-user's-web-auth-token")
//!     .with_rotation_callback(Arc::new(|token| {
//!         // Persist `token.expose()` for the next launch.
//!         let _ = token;
//!     }));
//! let client = CloudKitClient::builder("iCloud.com.example.Notes", auth)
//!     .database(DatabaseScope::Private)
//!     .build()?;
//!
//! let zone = ZoneId::new("Notes");
//! client.ensure_zones(vec![zone.clone()]).await?;
//!
//! // The session talks to the transport through its actor.
//! let (transport, _join) = TransportHandle::spawn(client, HandleOptions::default()).await?;
//! let note = Record::new(RecordId::new(zone.clone(), "n1"), "Note").with("title", "Groceries");
//! let batch = ModifyBatch::new(zone.clone(), vec![PendingChange::Save(note)])?;
//! for outcome in transport.modify_records(batch).await? {
//!     match outcome {
//!         ModifyOutcome::Saved { system, .. } => println!("saved as {}", system.change_tag),
//!         other => println!("needs attention: {:?}", other.class()),
//!     }
//! }
//! let page = transport.fetch_zone_changes(zone, None).await?;
//! println!("{} changed, more coming: {}", page.changed.len(), page.more_coming);
//! # Ok(()) }
//! ```
//!
//! The pure parts run anywhere; for instance, the string a server-to-server request signs:
//!
//! ```
//! use skysync_transport::auth::string_to_sign;
//! let text = string_to_sign("2016-01-25T22:15:43Z", Some(b"{}"), "/database/1/iCloud.a/development/public/records/query");
//! assert_eq!(text, "2016-01-25T22:15:43Z:RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=:/database/1/iCloud.a/development/public/records/query");
//! ```

pub mod actor;
pub mod answers;
pub mod auth;
pub mod client;
pub mod config;
mod courier;
pub mod database;
pub mod error;
mod response;

pub use actor::{
    HandleOptions, RequestError, TransportActor, TransportHandle, TransportMessage, TransportSpec,
};
pub use auth::{ApiToken, Auth, RequestSignature, ServerKey, TokenRotationCallback, WebAuthToken};
pub use client::{CloudKitClient, CloudKitClientBuilder};
pub use config::{APPLE_BASE_URL, DatabaseScope, Environment, Limits};
pub use database::{
    CloudDatabase, DatabaseChangesPage, LookupOutcome, ModifyBatch, ModifyOutcome, ZoneChanged,
    ZoneChangesPage, ZoneNotifications, zone_subscription,
};
pub use error::TransportError;
