//! skysync's telemetry: the name of every span, event and metric the engine emits ([`names`]), the
//! instruments behind the metrics ([`Metrics`]), the `skysync.op` span ([`op_span`]), a retry-loop
//! detector ([`LoopDetector`]), redaction of credentials ([`redact`]), and an optional [`init`]
//! that installs a tracing subscriber with an OTLP/HTTP exporter for traces and metrics.
//!
//! skysync only ever emits through `tracing` and the global OpenTelemetry meter
//! (`opentelemetry::global::meter("skysync")`). An app with its own subscriber and meter provider
//! needs nothing from here but the names; an app without calls [`init`] once at start and keeps
//! the [`TelemetryGuard`] until it exits:
//!
//! ```no_run
//! let _telemetry = skysync_telemetry::init(skysync_telemetry::TelemetryConfig {
//!     otlp_endpoint: Some("http://127.0.0.1:4318".into()),
//!     ..Default::default()
//! })?;
//! let metrics = skysync_telemetry::Metrics::new();
//! metrics.queue_depth(12);
//! # Ok::<(), skysync_telemetry::TelemetryError>(())
//! ```
//!
//! Nothing recorded through this crate carries a token, a key, a signature or a record's field
//! value: labels are `&'static str` from [`names::values`], and any text that may carry a
//! credential goes through [`redact`].

mod init;
mod loops;
mod metrics;
pub mod names;
mod op;
mod redact;

pub use init::{
    DEFAULT_EXPORT_FILTER, DEFAULT_LOG_FILTER, DEFAULT_SERVICE_NAME, ENDPOINT_VAR, HEADERS_VAR,
    SERVICE_NAME_VAR, TelemetryConfig, TelemetryError, TelemetryGuard, init,
};
pub use loops::{LoopDetector, LoopReport};
pub use metrics::Metrics;
pub use op::{OpAttributes, op_span, record_outcome};
pub use redact::{REDACTED, Redacted, redact};
