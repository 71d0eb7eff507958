//! Metrics of the payment lifecycle, recorded through the [`metrics`] facade.
//!
//! pay402 records metrics without choosing an exporter: install any `metrics` recorder (for
//! example `metrics-exporter-prometheus`, see `examples/prometheus.rs`) and these series
//! appear; without a recorder, recording costs next to nothing.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`CHALLENGES_TOTAL`] | counter | `protocol`, `scheme` (x402) or `intent` (MPP) |
//! | [`PAYMENTS_TOTAL`] | counter | `protocol`, `scheme`/`intent`, `outcome` ([`PaymentOutcome`]) |
//! | [`SETTLEMENTS_TOTAL`] | counter | `protocol`, `scheme`/`intent`, `outcome` ([`SettlementOutcome`]) |
//! | [`VOUCHER_REJECTIONS_TOTAL`] | counter | `reason` (the `mpp_evm` problem slug, e.g. `session/delta-too-small`) |
//! | [`STORE_CAS_CONFLICTS_TOTAL`] | counter | none |
//! | [`STREAM_EVENTS_TOTAL`] | counter | `outcome` (`charged`, `resent`, `released`) |
//! | [`STREAM_PAUSES_TOTAL`] | counter | `outcome` (`paused`, `resumed`, `timed_out`) |
//! | [`FACILITATOR_REQUEST_DURATION_SECONDS`] | histogram | `operation` (`verify`, `settle`, `settle_status`, `supported`), `outcome` (`ok`, `error`) |
//! | [`SA_REQUEST_DURATION_SECONDS`] | histogram | `operation` (`charge_settle`, `charge_verify_hash`, `session_open`, `session_top_up`, `session_settle`, `session_close`), `outcome` |
//!
//! Label values come from small closed sets (no payer, amount, path or id), so the number of
//! series stays bounded whatever the traffic.
//!
//! ```
//! use pay402_runtime::metrics::{PAYMENTS_TOTAL, PaymentOutcome};
//!
//! assert_eq!(PAYMENTS_TOTAL, "pay402_payments_total");
//! assert_eq!(PaymentOutcome::Replayed.as_str(), "replayed");
//! ```

use std::future::Future;
use std::time::Instant;

/// Counter: 402 challenges sent (an unpaid request, or a refused payment answered with a fresh
/// challenge). Labels: `protocol`, `scheme` (x402) or `intent` (MPP).
pub const CHALLENGES_TOTAL: &str = "pay402_challenges_total";
/// Counter: payment attempts (requests carrying a payment) by outcome. Labels: `protocol`,
/// `scheme`/`intent`, `outcome` (see [`PaymentOutcome`]).
pub const PAYMENTS_TOTAL: &str = "pay402_payments_total";
/// Counter: settlements by outcome (x402 settle after the handler, MPP charge settled by the
/// SA, MPP session reservations committed or released). Labels: `protocol`, `scheme`/`intent`,
/// `outcome` (see [`SettlementOutcome`]).
pub const SETTLEMENTS_TOTAL: &str = "pay402_settlements_total";
/// Counter: MPP session vouchers refused, by `reason` (the `mpp_evm` problem slug, such as
/// `session/delta-too-small`, `session/invalid-signature`, `invalid-payload`).
pub const VOUCHER_REJECTIONS_TOTAL: &str = "pay402_voucher_rejections_total";
/// Counter: lost compare-and-swap races on MPP channel stores (each one is retried).
pub const STORE_CAS_CONFLICTS_TOTAL: &str = "pay402_store_cas_conflicts_total";
/// Counter: events of metered SSE streams (MPP sessions priced per event) by `outcome`:
/// `charged` (committed once handed to the connection), `resent` (re-sent free on a resume),
/// `released` (reserved but never delivered).
pub const STREAM_EVENTS_TOTAL: &str = "pay402_stream_events_total";
/// Counter: pauses of metered streams for want of a voucher, by `outcome`: `paused` (a
/// `402-need-voucher` sent), `resumed` (money arrived), `timed_out` (the stream ended).
pub const STREAM_PAUSES_TOTAL: &str = "pay402_stream_pauses_total";
/// Histogram (seconds): x402 facilitator calls. Labels: `operation`, `outcome` (`ok`/`error`).
pub const FACILITATOR_REQUEST_DURATION_SECONDS: &str = "pay402_facilitator_request_duration_seconds";
/// Histogram (seconds): MPP Settlement Agent calls. Labels: `operation`, `outcome` (`ok`/`error`).
pub const SA_REQUEST_DURATION_SECONDS: &str = "pay402_sa_request_duration_seconds";

/// The `protocol` label's value for x402.
pub const PROTOCOL_X402: &str = "x402";
/// The `protocol` label's value for MPP.
pub const PROTOCOL_MPP: &str = "mpp";

/// How a payment attempt ended (the `outcome` label of [`PAYMENTS_TOTAL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PaymentOutcome {
    /// Verified: the handler runs.
    Verified,
    /// Refused by verification (bad signature, expired, insufficient funds, wrong amount, …).
    Invalid,
    /// The payment (or MPP challenge) was already used.
    Replayed,
    /// The payment matches none of the route's requirements (or was issued for another route).
    NoMatch,
    /// Verification could not complete (facilitator/SA unreachable, store down): no decision.
    Error,
    /// An MPP session management action (`open`, `topUp`, `settle`, `close`) was answered.
    Management,
}

impl PaymentOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Invalid => "invalid",
            Self::Replayed => "replayed",
            Self::NoMatch => "no_match",
            Self::Error => "error",
            Self::Management => "management",
        }
    }
}

/// How a settlement ended (the `outcome` label of [`SETTLEMENTS_TOTAL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SettlementOutcome {
    /// Settled (or, for a session, the reservation was committed).
    Success,
    /// Accepted by the facilitator and still pending on chain (delivered).
    Pending,
    /// Refused: the handler's response was replaced by a 402.
    Failed,
    /// Outcome unknown (timeout, transport error): refused, fail closed.
    Unknown,
    /// Not settled because the handler answered ≥ 400 (the payment or reservation was released).
    Released,
}

impl SettlementOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Released => "released",
        }
    }
}

/// Counts one 402 challenge. `kind` is the x402 scheme or the MPP intent.
pub fn record_challenge(protocol: &'static str, kind: &str) {
    record_challenge_shared(protocol, ::metrics::SharedString::from_owned(kind.to_owned()));
}

/// [`record_challenge`] with a label value shared by reference count (the precomputed 402s).
pub(crate) fn record_challenge_shared(protocol: &'static str, kind: ::metrics::SharedString) {
    let label = if protocol == PROTOCOL_X402 { "scheme" } else { "intent" };
    ::metrics::counter!(CHALLENGES_TOTAL, "protocol" => protocol, label => kind).increment(1);
}

/// Counts one payment attempt. `kind` is the x402 scheme or the MPP intent.
pub fn record_payment(protocol: &'static str, kind: &str, outcome: PaymentOutcome) {
    let label = if protocol == PROTOCOL_X402 { "scheme" } else { "intent" };
    ::metrics::counter!(PAYMENTS_TOTAL, "protocol" => protocol, label => kind.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Counts one settlement. `kind` is the x402 scheme or the MPP intent.
pub fn record_settlement(protocol: &'static str, kind: &str, outcome: SettlementOutcome) {
    let label = if protocol == PROTOCOL_X402 { "scheme" } else { "intent" };
    ::metrics::counter!(
        SETTLEMENTS_TOTAL,
        "protocol" => protocol,
        label => kind.to_owned(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// Counts one refused session voucher.
pub fn record_voucher_rejection(reason: &'static str) {
    ::metrics::counter!(VOUCHER_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

/// Counts `n` events of metered streams with `outcome` (`charged`, `resent`, `released`).
pub(crate) fn record_stream_events(outcome: &'static str, n: u64) {
    ::metrics::counter!(STREAM_EVENTS_TOTAL, "outcome" => outcome).increment(n);
}

/// Counts a metered stream's pause event with `outcome` (`paused`, `resumed`, `timed_out`).
pub(crate) fn record_stream_pause(outcome: &'static str) {
    ::metrics::counter!(STREAM_PAUSES_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts one lost compare-and-swap race on a channel store.
pub fn record_store_cas_conflict() {
    ::metrics::counter!(STORE_CAS_CONFLICTS_TOTAL).increment(1);
}

/// Awaits a call to a remote payment service, then records its latency in `histogram` (labels
/// `operation` and `outcome`) and logs it (`debug`, in the current span) — the value is never
/// logged, only whether it was `Ok`.
pub(crate) async fn timed<T, E, F>(histogram: &'static str, operation: &'static str, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let result = call.await;
    let elapsed = start.elapsed();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ::metrics::histogram!(histogram, "operation" => operation, "outcome" => outcome).record(elapsed.as_secs_f64());
    tracing::debug!(
        operation,
        outcome,
        latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "pay402: remote call finished"
    );
    result
}

/// [`timed`] for a facilitator call.
pub(crate) async fn facilitator_call<T, E, F>(operation: &'static str, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    timed(FACILITATOR_REQUEST_DURATION_SECONDS, operation, call).await
}

/// [`timed`] for a Settlement Agent call, inside an `mpp.sa` span naming the operation and
/// recording its `outcome` (`ok`/`error`) and `latency_ms`.
pub(crate) async fn sa_call<T, E, F>(operation: &'static str, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    use tracing::Instrument as _;
    let span =
        tracing::info_span!("mpp.sa", operation, outcome = tracing::field::Empty, latency_ms = tracing::field::Empty);
    let start = Instant::now();
    let result = timed(SA_REQUEST_DURATION_SECONDS, operation, call).instrument(span.clone()).await;
    span.record("outcome", if result.is_ok() { "ok" } else { "error" });
    span.record("latency_ms", millis_since(start));
    result
}

/// Milliseconds since `start`, for span fields.
pub(crate) fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs a paid handler inside a `pay402.handler` span that records its latency.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) async fn handler<F: Future>(body: F) -> F::Output {
    use tracing::Instrument as _;
    let span = tracing::info_span!("pay402.handler", latency_ms = tracing::field::Empty);
    let start = Instant::now();
    let out = body.instrument(span.clone()).await;
    span.record("latency_ms", millis_since(start));
    out
}
