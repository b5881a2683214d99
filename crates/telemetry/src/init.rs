//! `init`: a tracing subscriber with an optional OTLP/HTTP exporter for traces and metrics.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::names;

/// The standard variable naming the OTLP endpoint (base URL; `/v1/traces` and `/v1/metrics` are
/// appended).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable with extra OTLP request headers (`key=value,key2=value2`).
pub const HEADERS_VAR: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// The standard variable naming the service.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// The service name when neither the config nor [`SERVICE_NAME_VAR`] gives one.
pub const DEFAULT_SERVICE_NAME: &str = "skysync";
/// The log filter when neither the config nor `RUST_LOG` gives one.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// What is exported as spans and span events unless the config says otherwise: skysync down to
/// DEBUG (so every wait is on its operation's span, and every HTTP request is a child of it),
/// everything else from INFO.
pub const DEFAULT_EXPORT_FILTER: &str = "info,skysync=debug,skysync_transport=debug";

/// What [`init`] sets up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// The service name on every exported span and metric; else [`SERVICE_NAME_VAR`]; else
    /// [`DEFAULT_SERVICE_NAME`].
    pub service_name: Option<String>,
    /// The OTLP/HTTP base URL (`http://127.0.0.1:4318`); else [`ENDPOINT_VAR`]; with neither,
    /// nothing is exported and only the log goes to stderr.
    pub otlp_endpoint: Option<String>,
    /// Extra headers for every OTLP request (an API key for a hosted backend). Those in
    /// [`HEADERS_VAR`] are added too. Header values are never logged.
    pub otlp_headers: Vec<(String, String)>,
    /// Which events the stderr log shows (`EnvFilter` syntax); else `RUST_LOG`; else
    /// [`DEFAULT_LOG_FILTER`].
    pub log_filter: Option<String>,
    /// Which spans and events are exported (`EnvFilter` syntax); else [`DEFAULT_EXPORT_FILTER`].
    pub export_filter: Option<String>,
    /// How often metrics are exported.
    pub metric_interval: Duration,
    /// Whether to write the human-readable log to stderr at all.
    pub log_to_stderr: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: None,
            otlp_endpoint: None,
            otlp_headers: Vec::new(),
            log_filter: None,
            export_filter: None,
            metric_interval: Duration::from_secs(10),
            log_to_stderr: true,
        }
    }
}

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A filter string is not valid `EnvFilter` syntax: fix the config or `RUST_LOG`.
    #[error("the filter {filter:?} is not valid: {reason}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OTLP exporter could not be built (an endpoint that is not a URL, a bad header, a
    /// variable that is not UTF-8): fix the endpoint or the `OTEL_*` variables.
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global tracing subscriber is already installed: the app has its own, so skip `init` and
    /// let skysync emit through it (and the app's global meter provider).
    #[error("a global tracing subscriber is already installed; skip skysync_telemetry::init")]
    SubscriberAlreadySet,
}

/// Keeps the exporters alive; when dropped, flushes what is buffered and shuts the providers down.
///
/// Drop it last, at the end of `main`. Dropping blocks until the export finishes (each exporter
/// has its own thread and timeout), so drop it outside async code or on a multi-thread runtime.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the exporters down at once"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans and metrics are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports every finished span and the current metrics now. An error says which signal could
    /// not be exported; export goes on (the exporters try again at their next interval).
    pub fn flush(&self) -> Result<(), opentelemetry_sdk::error::OTelSdkError> {
        if let Some(provider) = &self.tracer_provider {
            provider.force_flush()?;
        }
        if let Some(provider) = &self.meter_provider {
            provider.force_flush()?;
        }
        Ok(())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(error) = provider.force_flush() {
                eprintln!("skysync telemetry: flushing spans failed: {error}");
            }
            if let Err(error) = provider.shutdown() {
                eprintln!("skysync telemetry: shutting the span exporter down failed: {error}");
            }
        }
        if let Some(provider) = self.meter_provider.take() {
            if let Err(error) = provider.force_flush() {
                eprintln!("skysync telemetry: flushing metrics failed: {error}");
            }
            if let Err(error) = provider.shutdown() {
                eprintln!("skysync telemetry: shutting the metric exporter down failed: {error}");
            }
        }
    }
}

/// Installs the global tracing subscriber (an `EnvFilter`ed fmt log to stderr, plus a
/// tracing-opentelemetry layer when exporting) and, when an OTLP endpoint is configured (see
/// [`TelemetryConfig::otlp_endpoint`]), OTLP/HTTP (protobuf) exporters for traces and metrics,
/// installed as the global tracer and meter providers.
///
/// An app with its own subscriber and meter provider skips this: skysync only emits through
/// `tracing` and `opentelemetry::global::meter`.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let log_filter = match &config.log_filter {
        Some(filter) => parse_filter(filter)?,
        None => match std::env::var("RUST_LOG") {
            Ok(filter) if !filter.is_empty() => parse_filter(&filter)?,
            _ => parse_filter(DEFAULT_LOG_FILTER)?,
        },
    };
    let export_filter = parse_filter(
        config
            .export_filter
            .as_deref()
            .unwrap_or(DEFAULT_EXPORT_FILTER),
    )?;

    let endpoint = config
        .otlp_endpoint
        .clone()
        .filter(|e| !e.is_empty())
        .map(Endpoint::Given)
        .or_else(|| {
            std::env::var(ENDPOINT_VAR)
                .ok()
                .filter(|e| !e.is_empty())
                .map(|_| Endpoint::FromEnvironment)
        });

    let (tracer_provider, meter_provider) = match endpoint {
        Some(endpoint) => {
            let resource = resource(&config);
            let (tracer, meter) = exporters(&config, &endpoint, resource)?;
            (Some(tracer), Some(meter))
        }
        None => (None, None),
    };

    let fmt_layer = config.log_to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
    });
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(names::METER))
            .with_filter(export_filter)
    });
    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();

    let guard = TelemetryGuard {
        tracer_provider,
        meter_provider,
    };
    if installed.is_err() {
        // The guard drops here and shuts its exporters down; the app's globals stay as they were.
        return Err(TelemetryError::SubscriberAlreadySet);
    }
    if let (Some(tracer), Some(meter)) = (&guard.tracer_provider, &guard.meter_provider) {
        opentelemetry::global::set_tracer_provider(tracer.clone());
        opentelemetry::global::set_meter_provider(meter.clone());
    }
    Ok(guard)
}

/// Where the OTLP exporters send to.
enum Endpoint {
    /// A base URL from the config.
    Given(String),
    /// [`ENDPOINT_VAR`], which the exporter reads (and appends the signal's path to) itself.
    FromEnvironment,
}

fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(filter).map_err(|error| TelemetryError::InvalidFilter {
        filter: filter.to_owned(),
        reason: error.to_string(),
    })
}

fn resource(config: &TelemetryConfig) -> Resource {
    let name = config
        .service_name
        .clone()
        .or_else(|| {
            std::env::var(SERVICE_NAME_VAR)
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Resource::builder().with_service_name(name).build()
}

/// The signal's URL under a base URL given in the config (the exporter appends nothing to an
/// endpoint given in code).
fn signal_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn exporters(
    config: &TelemetryConfig,
    endpoint: &Endpoint,
    resource: Resource,
) -> Result<(SdkTracerProvider, SdkMeterProvider), TelemetryError> {
    let headers: std::collections::HashMap<String, String> =
        config.otlp_headers.iter().cloned().collect();

    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_headers(headers.clone());
    let mut metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_headers(headers);
    if let Endpoint::Given(base) = endpoint {
        spans = spans.with_endpoint(signal_url(base, "/v1/traces"));
        metrics = metrics.with_endpoint(signal_url(base, "/v1/metrics"));
    }

    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans.build()?)
        .with_resource(resource.clone())
        .build();
    let reader = PeriodicReader::builder(metrics.build()?)
        .with_interval(config.metric_interval)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build();
    Ok((tracer_provider, meter_provider))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_before_anything_is_installed() {
        let error = init(TelemetryConfig {
            log_filter: Some("skysync=[".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(error, TelemetryError::InvalidFilter { ref filter, .. } if filter == "skysync=["),
            "{error}"
        );
    }

    #[test]
    fn signal_paths_go_under_the_base_url() {
        assert_eq!(
            signal_url("http://127.0.0.1:4318/", "/v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://collector:4318", "/v1/metrics"),
            "http://collector:4318/v1/metrics"
        );
    }
}
