//! `init` with an OTLP endpoint exports spans and metrics over HTTP/protobuf to a collector of our
//! own on 127.0.0.1, which decodes the bodies and checks the names arrived. This is the only test
//! in this binary: `init` installs process-wide globals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use skysync_telemetry::names::{self, values};
use skysync_telemetry::{Metrics, OpAttributes, TelemetryConfig, op_span, record_outcome};

/// What the collector received: span names, span event names, metric names, service names and
/// whether the configured header came along.
#[derive(Default, Debug)]
struct Received {
    spans: Vec<String>,
    span_events: Vec<String>,
    metrics: Vec<String>,
    services: Vec<String>,
    headers_seen: usize,
    requests: usize,
}

type Shared = Arc<Mutex<Received>>;

fn note_header(received: &mut Received, headers: &HeaderMap) {
    received.requests += 1;
    if headers.get("x-skysync-test").is_some_and(|v| v == "on")
        && headers
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf")
    {
        received.headers_seen += 1;
    }
}

fn service_names<'a>(
    resources: impl Iterator<Item = Option<&'a opentelemetry_proto::tonic::resource::v1::Resource>>,
) -> Vec<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    resources
        .flatten()
        .flat_map(|r| r.attributes.iter())
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

async fn traces(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut received = shared.lock().unwrap();
    note_header(&mut received, &headers);
    let services = service_names(request.resource_spans.iter().map(|r| r.resource.as_ref()));
    received.services.extend(services);
    for span in request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        received.spans.push(span.name.clone());
        received
            .span_events
            .extend(span.events.iter().map(|e| e.name.clone()));
    }
    ""
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> &'static str {
    let request = ExportMetricsServiceRequest::decode(body).unwrap();
    let mut received = shared.lock().unwrap();
    note_header(&mut received, &headers);
    for metric in request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        received.metrics.push(metric.name.clone());
    }
    ""
}

/// Starts the collector on its own thread and runtime (the guard's drop blocks the caller while
/// the exporters send), and returns its address.
fn start_collector(shared: Shared) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/v1/traces", post(traces))
                .route("/v1/metrics", post(metrics))
                .with_state(shared);
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn spans_and_metrics_arrive_at_an_otlp_http_collector() {
    let shared = Shared::default();
    let addr = start_collector(shared.clone());

    let guard = skysync_telemetry::init(TelemetryConfig {
        service_name: Some("skysync-otlp-test".into()),
        otlp_endpoint: Some(format!("http://{addr}")),
        otlp_headers: vec![("x-skysync-test".into(), "on".into())],
        log_to_stderr: false,
        metric_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    assert!(guard.exporting());

    let metrics = Metrics::new();
    {
        let span = op_span(OpAttributes {
            kind: values::op_kind::SEND,
            zone: Some("Notes"),
            batch_size: 10,
            attempt: 1,
            batch_id: 1,
        });
        let _entered = span.enter();
        metrics.retry(
            values::op_kind::SEND,
            values::error_class::THROTTLED,
            Some(Duration::from_secs(2)),
        );
        metrics.wait(values::wait_cause::RETRY_AFTER, Duration::from_secs(2));
        metrics.records_sent(10);
        record_outcome(&span, values::outcome::OK);
    }
    drop(guard); // flushes and shuts the exporters down

    // Bounded wait: the exports are done when the guard is dropped, but allow a little slack.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let r = shared.lock().unwrap();
            let spans_in = r.spans.iter().any(|s| s == names::OP_SPAN);
            let metrics_in = r.metrics.iter().any(|m| m == names::RETRIES);
            if spans_in && metrics_in {
                assert!(
                    r.span_events.iter().any(|e| e == names::RETRY_EVENT),
                    "{r:?}"
                );
                assert!(
                    r.span_events.iter().any(|e| e == names::WAIT_EVENT),
                    "{r:?}"
                );
                for name in [names::BACKOFF_DURATION, names::RECORDS_SENT] {
                    assert!(r.metrics.iter().any(|m| m == name), "{name}: {r:?}");
                }
                assert!(r.services.iter().all(|s| s == "skysync-otlp-test"), "{r:?}");
                assert!(!r.services.is_empty(), "{r:?}");
                assert_eq!(
                    r.headers_seen, r.requests,
                    "every request carries the header: {r:?}"
                );
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived in time: {:?}",
            shared.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
