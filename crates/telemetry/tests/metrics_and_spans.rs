//! A scripted run through the in-memory exporters: k transient retries, j throttles with
//! `retryAfter` (each with its wait), one fatal halt, and a supervised restart export exactly those
//! events and metrics, on an `skysync.op` span with its attributes; and no secret reaches any
//! exported attribute or log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Pipeline, attr, counter, gauge, histogram};
use opentelemetry::Value;
use opentelemetry::trace::Status;
use skysync_telemetry::names::{self, values};
use skysync_telemetry::{OpAttributes, Redacted, op_span, record_outcome};

const K_TRANSIENT: usize = 3;
const J_THROTTLED: usize = 2;

/// One send operation: k transient failures, j throttles with retryAfter (and their waits), then
/// a fatal error that halts the engine.
fn scripted_run(p: &Pipeline) {
    p.run(|| {
        let span = op_span(OpAttributes {
            kind: values::op_kind::SEND,
            zone: Some("Notes"),
            batch_size: 200,
            attempt: 1,
            batch_id: 42,
        });
        let _entered = span.enter();
        for _ in 0..K_TRANSIENT {
            p.metrics
                .retry(values::op_kind::SEND, values::error_class::TRANSIENT, None);
            p.metrics
                .wait(values::wait_cause::BACKOFF, Duration::from_millis(250));
        }
        for _ in 0..J_THROTTLED {
            p.metrics.retry(
                values::op_kind::SEND,
                values::error_class::THROTTLED,
                Some(Duration::from_secs(3)),
            );
            p.metrics
                .wait(values::wait_cause::RETRY_AFTER, Duration::from_secs(3));
        }
        p.metrics.halt(values::halt_reason::FATAL);
        p.metrics.op_finished(
            values::op_kind::SEND,
            values::outcome::HALTED,
            Duration::from_millis(40),
        );
        record_outcome(&span, values::outcome::HALTED);
    });
}

#[test]
fn a_scripted_run_exports_exactly_its_retries_waits_and_halt() {
    let p = Pipeline::new();
    scripted_run(&p);

    let spans = p.finished_spans();
    assert_eq!(spans.len(), 1, "one operation, one span");
    let span = &spans[0];
    assert_eq!(span.name, names::OP_SPAN);
    assert_eq!(
        attr(&span.attributes, names::OP_KIND),
        Some(Value::from("send"))
    );
    assert_eq!(
        attr(&span.attributes, names::ZONE),
        Some(Value::from("Notes"))
    );
    assert_eq!(
        attr(&span.attributes, names::BATCH_SIZE),
        Some(Value::I64(200))
    );
    assert_eq!(attr(&span.attributes, names::ATTEMPT), Some(Value::I64(1)));
    assert_eq!(
        attr(&span.attributes, names::BATCH_ID),
        Some(Value::I64(42))
    );
    assert_eq!(
        attr(&span.attributes, names::OUTCOME),
        Some(Value::from("halted"))
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );

    let events_named = |name: &str| span.events.iter().filter(|e| e.name == name).count();
    assert_eq!(events_named(names::RETRY_EVENT), K_TRANSIENT + J_THROTTLED);
    assert_eq!(events_named(names::WAIT_EVENT), K_TRANSIENT + J_THROTTLED);
    assert_eq!(events_named(names::HALT_EVENT), 1);
    let throttled: Vec<_> = span
        .events
        .iter()
        .filter(|e| {
            e.name == names::RETRY_EVENT
                && attr(&e.attributes, names::ERROR_CLASS) == Some(Value::from("throttled"))
        })
        .collect();
    assert_eq!(throttled.len(), J_THROTTLED);
    for e in throttled {
        assert_eq!(
            attr(&e.attributes, names::RETRY_AFTER_MS),
            Some(Value::I64(3000))
        );
    }
    let halt = span
        .events
        .iter()
        .find(|e| e.name == names::HALT_EVENT)
        .unwrap();
    assert_eq!(
        attr(&halt.attributes, names::HALT_REASON),
        Some(Value::from("fatal"))
    );

    let rm = p.exported_metrics();
    let send = (names::OP_KIND, "send");
    assert_eq!(
        counter(&rm, names::RETRIES, &[send]),
        (K_TRANSIENT + J_THROTTLED) as u64
    );
    assert_eq!(
        counter(
            &rm,
            names::RETRIES,
            &[send, (names::ERROR_CLASS, "transient")]
        ),
        K_TRANSIENT as u64
    );
    assert_eq!(
        counter(
            &rm,
            names::RETRIES,
            &[send, (names::ERROR_CLASS, "throttled")]
        ),
        J_THROTTLED as u64
    );
    let (backoffs, backoff_secs) = histogram(
        &rm,
        names::BACKOFF_DURATION,
        &[(names::WAIT_CAUSE, "backoff")],
    );
    assert_eq!(backoffs, K_TRANSIENT as u64);
    assert!((backoff_secs - 0.25 * K_TRANSIENT as f64).abs() < 1e-9);
    let (after, after_secs) = histogram(
        &rm,
        names::BACKOFF_DURATION,
        &[(names::WAIT_CAUSE, "retry_after")],
    );
    assert_eq!(after, J_THROTTLED as u64);
    assert!((after_secs - 3.0 * J_THROTTLED as f64).abs() < 1e-9);
    assert_eq!(
        histogram(&rm, names::BACKOFF_DURATION, &[]).0,
        (K_TRANSIENT + J_THROTTLED) as u64
    );
    assert_eq!(
        counter(&rm, names::HALTS, &[(names::HALT_REASON, "fatal")]),
        1
    );
    assert_eq!(counter(&rm, names::HALTS, &[]), 1);
    assert_eq!(gauge(&rm, names::HALTED), Some(1.0));
    assert_eq!(
        histogram(&rm, names::OP_DURATION, &[send, (names::OUTCOME, "halted")]).0,
        1
    );

    // The log reader sees the same names.
    let log = p.log.text();
    let lines_with = |event: &str| log.matches(&format!(": {event} ")).count();
    assert_eq!(
        lines_with(names::RETRY_EVENT),
        K_TRANSIENT + J_THROTTLED,
        "{log}"
    );
    assert_eq!(
        lines_with(names::WAIT_EVENT),
        K_TRANSIENT + J_THROTTLED,
        "{log}"
    );
    assert_eq!(lines_with(names::HALT_EVENT), 1, "{log}");
}

#[test]
fn restarts_parks_conflicts_records_and_gauges_are_exported() {
    let p = Pipeline::new();
    p.run(|| {
        p.metrics.restart(values::component::STORE);
        p.metrics.restart(values::component::TRANSPORT);
        p.metrics.parked(values::park_reason::DELETED_ON_SERVER);
        p.metrics.conflict_resolved(values::resolution::SEND);
        p.metrics.conflict_resolved(values::resolution::SEND);
        p.metrics
            .conflict_resolved(values::resolution::ACCEPT_SERVER);
        p.metrics.records_sent(200);
        p.metrics.records_sent(150);
        p.metrics.records_received(75);
        p.metrics.queue_depth(500);
        p.metrics.queue_depth(150);
        p.metrics.open_conflicts(2);
        p.metrics.throttle_rate(4.5);
        p.metrics.throttle_ceiling(8.0);
        p.metrics.halt(values::halt_reason::EXHAUSTED);
        p.metrics.resumed();
    });
    let rm = p.exported_metrics();
    assert_eq!(
        counter(&rm, names::RESTARTS, &[(names::COMPONENT, "store")]),
        1
    );
    assert_eq!(
        counter(&rm, names::RESTARTS, &[(names::COMPONENT, "transport")]),
        1
    );
    assert_eq!(
        counter(
            &rm,
            names::PARKED,
            &[(names::PARK_REASON, "deleted_on_server")]
        ),
        1
    );
    assert_eq!(
        counter(&rm, names::CONFLICTS, &[(names::RESOLUTION, "Send")]),
        2
    );
    assert_eq!(
        counter(
            &rm,
            names::CONFLICTS,
            &[(names::RESOLUTION, "AcceptServer")]
        ),
        1
    );
    assert_eq!(counter(&rm, names::RECORDS_SENT, &[]), 350);
    assert_eq!(counter(&rm, names::RECORDS_RECEIVED, &[]), 75);
    assert_eq!(
        gauge(&rm, names::QUEUE_DEPTH),
        Some(150.0),
        "the last value recorded"
    );
    assert_eq!(gauge(&rm, names::OPEN_CONFLICTS), Some(2.0));
    assert_eq!(gauge(&rm, names::THROTTLE_RATE), Some(4.5));
    assert_eq!(gauge(&rm, names::THROTTLE_CEILING), Some(8.0));
    assert_eq!(
        gauge(&rm, names::HALTED),
        Some(0.0),
        "resumed after the halt"
    );

    let log = p.log.text();
    assert_eq!(log.matches(names::RESTART_EVENT).count(), 2, "{log}");
    assert!(log.contains("skysync.component=\"store\""), "{log}");
}

#[test]
fn every_named_metric_is_an_instrument() {
    let p = Pipeline::new();
    p.run(|| {
        let report = skysync_telemetry::LoopReport {
            key: "send",
            failures: 6,
            window: Duration::from_secs(60),
        };
        p.metrics.retry("send", "transient", None);
        p.metrics.wait("pacing", Duration::from_millis(5));
        p.metrics.halt("fatal");
        p.metrics.restart("store");
        p.metrics.parked("rejected");
        p.metrics.conflict_resolved("Send");
        p.metrics
            .op_finished("send", "ok", Duration::from_millis(3));
        p.metrics.records_sent(1);
        p.metrics.records_received(1);
        p.metrics.queue_depth(1);
        p.metrics.open_conflicts(1);
        p.metrics.throttle_rate(1.0);
        p.metrics.throttle_ceiling(1.0);
        p.metrics.loop_detected("send", &report);
    });
    let rm = p.exported_metrics();
    let exported: Vec<String> = rm
        .scope_metrics()
        .flat_map(|sm| sm.metrics().map(|m| m.name().to_owned()))
        .collect();
    for name in names::ALL_METRICS {
        assert!(
            exported.iter().any(|n| n == name),
            "{name} not exported: {exported:?}"
        );
    }
    assert_eq!(counter(&rm, names::LOOPS, &[(names::OP_KIND, "send")]), 1);
}

#[test]
fn no_secret_reaches_an_exported_attribute_or_a_log_line() {
    const WEB_TOKEN: &str = "106__54__SECRETwebAuthTOKEN";
    const API_TOKEN: &str = "SECRETapiTOKEN0123";
    const SIGNATURE: &str = "MEUCIQSECRETsignature==";
    let p = Pipeline::new();
    p.run(|| {
        let span = op_span(OpAttributes {
            kind: values::op_kind::FETCH_ZONE,
            zone: Some("Notes"),
            batch_size: 0,
            attempt: 2,
            batch_id: 7,
        });
        let _entered = span.enter();
        let url = format!(
            "https://api.apple-cloudkit.com/database/1/iCloud.x/development/private/changes/zone?ckAPIToken={API_TOKEN}&ckWebAuthToken={WEB_TOKEN}"
        );
        let failure = format!(
            "request to {url} failed: 401 (X-Apple-CloudKit-Request-SignatureV1: {SIGNATURE}; Authorization: Bearer {WEB_TOKEN})"
        );
        tracing::warn!(error = %Redacted(&failure), url = %Redacted(&url), "operation failed");
        p.metrics.retry(
            values::op_kind::FETCH_ZONE,
            values::error_class::TRANSIENT,
            None,
        );
        record_outcome(&span, values::outcome::RETRY);
    });
    let spans = format!("{:?}", p.finished_spans());
    let metrics = format!("{:?}", p.exported_metrics());
    let log = p.log.text();
    assert!(
        log.contains("operation failed"),
        "the event was logged: {log}"
    );
    assert!(
        spans.contains("[redacted]"),
        "the event was exported: {spans}"
    );
    for secret in [WEB_TOKEN, API_TOKEN, SIGNATURE] {
        assert!(!spans.contains(secret), "{secret} in spans: {spans}");
        assert!(!metrics.contains(secret), "{secret} in metrics");
        assert!(!log.contains(secret), "{secret} in log: {log}");
    }
}
