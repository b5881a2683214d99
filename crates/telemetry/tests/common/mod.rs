//! An in-memory telemetry pipeline: spans and metrics go to the SDK's in-memory exporters, the
//! human log to a buffer, so a test reads back exactly what a dashboard and a log reader would see.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use skysync_telemetry::Metrics;
use tracing_subscriber::layer::SubscriberExt as _;

/// A log sink the fmt layer writes to.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

pub struct Pipeline {
    pub spans: InMemorySpanExporter,
    pub metrics_out: InMemoryMetricExporter,
    pub tracer_provider: SdkTracerProvider,
    pub meter_provider: SdkMeterProvider,
    pub metrics: Metrics,
    pub log: LogBuffer,
}

impl Pipeline {
    pub fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics_out = InMemoryMetricExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics_out.clone()).build())
            .build();
        let metrics = Metrics::with_meter(&meter_provider.meter("skysync"));
        Self {
            spans,
            metrics_out,
            tracer_provider,
            meter_provider,
            metrics,
            log: LogBuffer::default(),
        }
    }

    /// Runs `f` with a subscriber (fmt log to the buffer + OpenTelemetry layer) for this thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let log = self.log.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || log.clone()),
            )
            .with(
                tracing_opentelemetry::layer().with_tracer(self.tracer_provider.tracer("skysync")),
            )
            .with(tracing_subscriber::filter::LevelFilter::TRACE);
        tracing::subscriber::with_default(subscriber, f)
    }

    pub fn finished_spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    /// The latest export of every metric (cumulative).
    pub fn exported_metrics(&self) -> ResourceMetrics {
        self.meter_provider.force_flush().unwrap();
        self.metrics_out
            .get_finished_metrics()
            .unwrap()
            .pop()
            .expect("no metrics exported")
    }
}

pub fn attr<'a>(attributes: impl IntoIterator<Item = &'a KeyValue>, key: &str) -> Option<Value> {
    attributes
        .into_iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn has_attrs<'a>(
    attributes: impl IntoIterator<Item = &'a KeyValue>,
    want: &[(&str, &str)],
) -> bool {
    let attributes: Vec<&KeyValue> = attributes.into_iter().collect();
    want.iter().all(|(k, v)| {
        attributes
            .iter()
            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
    })
}

/// The sum of a u64 counter's data points whose attributes include `want`.
pub fn counter(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> u64 {
    let mut total = 0;
    for sm in rm.scope_metrics() {
        for m in sm.metrics().filter(|m| m.name() == name) {
            match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    total += sum
                        .data_points()
                        .filter(|dp| has_attrs(dp.attributes(), want))
                        .map(|dp| dp.value())
                        .sum::<u64>();
                }
                other => panic!("{name} is not a u64 counter: {other:?}"),
            }
        }
    }
    total
}

/// The count and sum of an f64 histogram's data points whose attributes include `want`.
pub fn histogram(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> (u64, f64) {
    let (mut count, mut sum) = (0, 0.0);
    for sm in rm.scope_metrics() {
        for m in sm.metrics().filter(|m| m.name() == name) {
            match m.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for dp in h
                        .data_points()
                        .filter(|dp| has_attrs(dp.attributes(), want))
                    {
                        count += dp.count();
                        sum += dp.sum();
                    }
                }
                other => panic!("{name} is not an f64 histogram: {other:?}"),
            }
        }
    }
    (count, sum)
}

/// The last value of a gauge (u64 or f64, as f64), if it was recorded.
pub fn gauge(rm: &ResourceMetrics, name: &str) -> Option<f64> {
    for sm in rm.scope_metrics() {
        if let Some(m) = sm.metrics().find(|m| m.name() == name) {
            return match m.data() {
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    g.data_points().last().map(|dp| dp.value() as f64)
                }
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    g.data_points().last().map(|dp| dp.value())
                }
                other => panic!("{name} is not a gauge: {other:?}"),
            };
        }
    }
    None
}
