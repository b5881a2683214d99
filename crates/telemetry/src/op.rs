//! The `skysync.op` span: one per operation the session runs.

use tracing::Span;

use crate::names;

/// What an operation span says about its operation when it starts.
#[derive(Clone, Copy, Debug)]
pub struct OpAttributes<'a> {
    /// The operation's kind ([`names::values::op_kind`]).
    pub kind: &'static str,
    /// The zone it works on, if one (a zone the app named: a small, fixed set).
    pub zone: Option<&'a str>,
    /// How many changes or records it carries.
    pub batch_size: usize,
    /// Which attempt at the same operation this is, from 1.
    pub attempt: u32,
    /// The session's batch id, the same number the engine's events and diagnostics show.
    pub batch_id: u64,
}

/// A new [`names::OP_SPAN`] span (level INFO, target `skysync`) with the operation's attributes
/// and an empty [`names::OUTCOME`] to fill with [`record_outcome`]. Enter it (or `.instrument` the
/// operation's future with it) so that the retry, wait and halt events of the operation land on it.
///
/// Numbers are recorded as `i64`: tracing-opentelemetry exports a `u64` field as a string.
pub fn op_span(op: OpAttributes<'_>) -> Span {
    let span = tracing::info_span!(
        target: "skysync",
        names::OP_SPAN,
        { names::OP_KIND } = op.kind,
        { names::ZONE } = tracing::field::Empty,
        { names::BATCH_SIZE } = i64::try_from(op.batch_size).unwrap_or(i64::MAX),
        { names::ATTEMPT } = i64::from(op.attempt),
        { names::BATCH_ID } = i64::try_from(op.batch_id).unwrap_or(i64::MAX),
        { names::OUTCOME } = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(zone) = op.zone {
        span.record(names::ZONE, zone);
    }
    span
}

/// Records how the operation of `span` ended ([`names::values::outcome`]). Outcomes other than
/// `ok` and `partial` also mark the exported span's status as an error, so trace viewers flag it.
pub fn record_outcome(span: &Span, outcome: &'static str) {
    span.record(names::OUTCOME, outcome);
    let failed = !matches!(
        outcome,
        names::values::outcome::OK | names::values::outcome::PARTIAL
    );
    span.record("otel.status_code", if failed { "ERROR" } else { "OK" });
}
