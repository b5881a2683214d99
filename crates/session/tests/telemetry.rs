//! The engine's telemetry through the in-memory exporters: a run with k transient failures, j
//! throttles with retryAfter and one fatal error exports exactly k + j retry events with their
//! waits, one halt with its reason, and metrics that add up; a supervised restart is exported; no
//! token appears in any exported attribute or log line. (One test: the providers are global.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use skysync_telemetry::names;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sum of a u64 counter's points whose attributes include `want`.
fn counter(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> u64 {
    let mut total = 0;
    for sm in rm.scope_metrics() {
        for m in sm.metrics().filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                total += sum
                    .data_points()
                    .filter(|dp| {
                        want.iter().all(|(k, v)| {
                            dp.attributes()
                                .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
                        })
                    })
                    .map(|dp| dp.value())
                    .sum::<u64>();
            }
        }
    }
    total
}

const SECRET_TOKEN: &str = "secret-web-auth-token-4711";
const K_TRANSIENT: u64 = 2;
const J_THROTTLED: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_waits_a_halt_and_a_restart_are_exported_and_no_secret_is() {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics_out = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics_out.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    let log = LogBuffer::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || sink.clone()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("skysync")))
        .with(tracing_subscriber::EnvFilter::new(
            "info,skysync=debug,skysync_session=debug",
        ));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = server().await;
    let a = Device::start(&server, SECRET_TOKEN).await;
    wait_quiet(&a).await;
    // k transient failures, j throttles with retryAfter, then a fatal error.
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "count": K_TRANSIENT, "serverErrorCode": "INTERNAL_ERROR"}),
    )
    .await;
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "count": J_THROTTLED, "serverErrorCode": "THROTTLED", "retryAfter": 1}),
    )
    .await;
    arm(
        &server,
        serde_json::json!({"operation": "records/modify", "serverErrorCode": "ACCESS_DENIED"}),
    )
    .await;
    a.engine.save(note("n1", "field value 9999")).await.unwrap();
    wait_for(&a, "the halt", |d| d.halt.is_some()).await;
    // A supervised restart.
    a.engine.components().conflict.actor().unwrap().kill();
    wait_for(&a, "the restart", |_| true).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    a.engine.shutdown().await;

    tracer_provider.force_flush().unwrap();
    meter_provider.force_flush().unwrap();
    let finished = spans.get_finished_spans().unwrap();
    let sends: Vec<_> = finished
        .iter()
        .filter(|s| {
            s.name == names::OP_SPAN
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == names::OP_KIND && kv.value.as_str() == "send")
        })
        .collect();
    let events = |name: &str| -> u64 {
        sends
            .iter()
            .flat_map(|s| s.events.iter())
            .filter(|e| e.name == name)
            .count() as u64
    };
    assert_eq!(events(names::RETRY_EVENT), K_TRANSIENT + J_THROTTLED);
    assert_eq!(events(names::HALT_EVENT), 1);
    assert!(
        events(names::WAIT_EVENT) >= K_TRANSIENT + J_THROTTLED,
        "every retry waits: {}",
        events(names::WAIT_EVENT)
    );
    assert_eq!(
        sends.len() as u64,
        K_TRANSIENT + J_THROTTLED + 1,
        "one span per attempt"
    );

    // Every HTTP request of a send is a child of its operation's span.
    let send_ids: Vec<_> = sends.iter().map(|s| s.span_context.span_id()).collect();
    let requests_in_sends = finished
        .iter()
        .filter(|s| {
            s.name == skysync_transport::client::REQUEST_SPAN
                && send_ids.contains(&s.parent_span_id)
        })
        .count() as u64;
    assert_eq!(
        requests_in_sends,
        K_TRANSIENT + J_THROTTLED + 1,
        "one request span under each send attempt"
    );

    let exported = metrics_out.get_finished_metrics().unwrap();
    let latest = exported.last().unwrap();
    assert_eq!(
        counter(latest, names::RETRIES, &[]),
        K_TRANSIENT + J_THROTTLED,
        "the retry counter adds up"
    );
    assert_eq!(
        counter(latest, names::RETRIES, &[(names::ERROR_CLASS, "throttled")]),
        J_THROTTLED
    );
    assert_eq!(
        counter(latest, names::HALTS, &[(names::HALT_REASON, "fatal")]),
        1
    );
    assert_eq!(
        counter(latest, names::RESTARTS, &[(names::COMPONENT, "conflict")]),
        1
    );

    // No token (nor a field value) in any exported attribute, event or log line.
    let log_text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(!log_text.is_empty());
    let mut everything = log_text;
    for span in &finished {
        for kv in &span.attributes {
            everything.push_str(&format!("{kv:?}"));
        }
        for event in span.events.iter() {
            everything.push_str(&format!("{event:?}"));
        }
    }
    assert!(!everything.contains(SECRET_TOKEN), "a token leaked");
    assert!(
        !everything.contains("field value 9999"),
        "a field value leaked"
    );
}
