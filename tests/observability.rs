//! Observability: scripted payment flows, with the metrics (`pay402::metrics`) and the
//! `tracing` spans they produce asserted exactly.
//!
//! Each test installs its own metrics recorder (metrics-util's `DebuggingRecorder`) and a
//! span-capturing `tracing` layer for the current thread only, and runs on tokio's
//! current-thread runtime, so the server (a real axum server on 127.0.0.1), the client and
//! pay402 all record into this test's recorder and nothing else does.

mod support;

use async_trait::async_trait;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::metrics::{
    CHALLENGES_TOTAL, FACILITATOR_REQUEST_DURATION_SECONDS, PAYMENTS_TOTAL, SA_REQUEST_DURATION_SECONDS,
    SETTLEMENTS_TOTAL, STORE_CAS_CONFLICTS_TOTAL, STREAM_EVENTS_TOTAL, STREAM_PAUSES_TOTAL, VOUCHER_REJECTIONS_TOTAL,
};
use pay402::mpp::{
    CasOutcome, ChannelState, ChannelStore, ChargeIntent, EmbeddedSa, EvmMethod, InMemoryChannelStore, Mpp,
    MppChargeClient, PaySpec, SessionClient, SessionIntent, StoreError, Versioned, parse_www_authenticate,
};
use pay402::web::RequestContext;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, ExactEvmClientScheme, ExactEvmScheme, decode_payment_required_header,
    encode_payment_signature_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

// ------------------------------------------------------------------------------------------
// Span capture
// ------------------------------------------------------------------------------------------

/// One closed-or-open span: its name and every field recorded on it (at creation or later).
#[derive(Clone, Debug, Default)]
struct CapturedSpan {
    name: String,
    fields: BTreeMap<String, String>,
}

/// Every span and event field seen, in creation order.
#[derive(Clone, Default)]
struct Captured {
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    /// Every field value of every event (to check that no secret is logged).
    event_values: Arc<Mutex<Vec<String>>>,
}

struct FieldMap<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldMap<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The index of a span in `Captured::spans`, kept in the span's extensions.
struct SpanIndex(usize);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Captured {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut span = CapturedSpan { name: attrs.metadata().name().to_owned(), ..CapturedSpan::default() };
        attrs.record(&mut FieldMap(&mut span.fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(span);
        if let Some(s) = ctx.span(id) {
            s.extensions_mut().insert(SpanIndex(spans.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(s) = ctx.span(id) else { return };
        let Some(index) = s.extensions().get::<SpanIndex>().map(|i| i.0) else { return };
        values.record(&mut FieldMap(&mut self.spans.lock().unwrap()[index].fields));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldMap(&mut fields));
        self.event_values.lock().unwrap().extend(fields.into_values());
    }
}

impl Captured {
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.spans.lock().unwrap().iter().filter(|s| s.name == name).map(|s| s.fields.clone()).collect()
    }

    /// Every value recorded anywhere: span fields and event fields.
    fn all_values(&self) -> Vec<String> {
        let mut all: Vec<String> = self.spans.lock().unwrap().iter().flat_map(|s| s.fields.values().cloned()).collect();
        all.extend(self.event_values.lock().unwrap().iter().cloned());
        all
    }
}

// ------------------------------------------------------------------------------------------
// Metrics snapshot
// ------------------------------------------------------------------------------------------

/// The recorded metrics, keyed by `name{label=value,...}` (labels sorted).
struct Metrics {
    counters: BTreeMap<String, u64>,
    histograms: BTreeMap<String, usize>,
}

impl Metrics {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut counters = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => {
                    counters.insert(name, n);
                }
                DebugValue::Histogram(values) => {
                    assert!(values.iter().all(|v| v.into_inner() >= 0.0), "{name}: negative latency");
                    histograms.insert(name, values.len());
                }
                DebugValue::Gauge(_) => {}
            }
        }
        Self { counters, histograms }
    }

    fn counter(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    fn histogram_count(&self, key: &str) -> usize {
        self.histograms.get(key).copied().unwrap_or(0)
    }
}

// ------------------------------------------------------------------------------------------
// x402 over HTTP (axum)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn x402_flow_records_metrics_and_spans() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let captured = Captured::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let embedded = EmbeddedFacilitator::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().unwrap();
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).unwrap();
    let resource = X402ResourceServer::new(embedded.clone()).register("eip155:196", ExactEvmScheme::new());
    let route = |d: &str| RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)).description(d);
    let x402 = X402HttpServer::new(resource)
        .route("GET /quote", route("A stock quote"))
        .and_then(|s| s.route("GET /broken", route("Broken")))
        .unwrap();
    let app = axum::Router::new()
        .route("/quote", axum::routing::get(|| async { "AAPL 123.45" }))
        .route(
            "/broken",
            axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "handler failed") }),
        )
        .layer(pay402::axum::X402Layer::new(x402));
    let server = support::serve_axum(app).await;
    let http = reqwest::Client::new();
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer.clone()));
    let pay = |path: &'static str| {
        let (http, client, base) = (http.clone(), client.clone(), server.base.clone());
        async move {
            let unpaid = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(unpaid.status(), 402);
            let header = unpaid.headers()["payment-required"].to_str().unwrap().to_owned();
            let required = decode_payment_required_header(&header).unwrap();
            let payload = client.create_payment_payload(&required).await.unwrap();
            let AnyPaymentPayload::V2(payload) = payload else { panic!("v2") };
            payload
        }
    };

    // 1. Unpaid → 402; 2. paid → 200 and settled; 3. the same payment again → replay refused;
    // 4. a paid request whose handler fails → not settled (released).
    let payment = pay("/quote").await;
    let signature = payment.payload["signature"].as_str().unwrap().to_owned();
    let encoded = encode_payment_signature_header(&payment).unwrap();
    let paid = http.get(format!("{}/quote", server.base)).header("PAYMENT-SIGNATURE", &encoded).send().await.unwrap();
    assert_eq!(paid.status(), 200);
    let replay = http.get(format!("{}/quote", server.base)).header("PAYMENT-SIGNATURE", &encoded).send().await.unwrap();
    assert_eq!(replay.status(), 402);
    let broken_payment = encode_payment_signature_header(&pay("/broken").await).unwrap();
    let broken =
        http.get(format!("{}/broken", server.base)).header("PAYMENT-SIGNATURE", &broken_payment).send().await.unwrap();
    assert_eq!(broken.status(), 500);

    let m = Metrics::take(&snapshotter);
    // Two unpaid requests and one refused replay got a challenge.
    assert_eq!(m.counter(&format!("{CHALLENGES_TOTAL}{{protocol=x402,scheme=exact}}")), 3, "{:?}", m.counters);
    assert_eq!(m.counter(&format!("{PAYMENTS_TOTAL}{{outcome=verified,protocol=x402,scheme=exact}}")), 2);
    assert_eq!(m.counter(&format!("{PAYMENTS_TOTAL}{{outcome=replayed,protocol=x402,scheme=exact}}")), 1);
    assert_eq!(m.counter(&format!("{SETTLEMENTS_TOTAL}{{outcome=success,protocol=x402,scheme=exact}}")), 1);
    assert_eq!(m.counter(&format!("{SETTLEMENTS_TOTAL}{{outcome=released,protocol=x402,scheme=exact}}")), 1);
    assert_eq!(m.counter(&format!("{SETTLEMENTS_TOTAL}{{outcome=failed,protocol=x402,scheme=exact}}")), 0);
    let facilitator = |op: &str| format!("{FACILITATOR_REQUEST_DURATION_SECONDS}{{operation={op},outcome=ok}}");
    assert_eq!(m.histogram_count(&facilitator("supported")), 1, "{:?}", m.histograms);
    assert_eq!(m.histogram_count(&facilitator("verify")), 2);
    assert_eq!(m.histogram_count(&facilitator("settle")), 1);

    // Spans: one x402.request per request to a protected route, with the operator's fields.
    let requests = captured.named("x402.request");
    let outcomes: Vec<&str> = requests.iter().map(|s| s["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["challenge", "verified", "replayed", "challenge", "verified"]);
    let verified = &requests[1];
    assert_eq!(verified["route"], "A stock quote");
    assert_eq!(verified["path"], "/quote");
    assert_eq!(verified["scheme"], "exact");
    assert_eq!(verified["network"], "eip155:196");
    assert_eq!(verified["amount"], "1000");
    assert_eq!(verified["payer"], buyer.address().to_string());
    assert!(verified.contains_key("latency_ms"));
    let settles = captured.named("x402.settle");
    assert_eq!(settles.len(), 1);
    assert_eq!(settles[0]["outcome"], "success");
    assert_eq!(settles[0]["payer"], buyer.address().to_string());
    let tx = &settles[0]["transaction"];
    assert!(tx.starts_with("0x") && tx.len() == 66, "{tx}");
    let verifies = captured.named("x402.verify");
    assert_eq!(verifies.iter().map(|s| s["outcome"].as_str()).collect::<Vec<_>>(), ["valid", "valid"]);
    assert_eq!(captured.named("pay402.handler").len(), 2, "the handler runs for the two verified payments");

    // Never a secret: neither the payment header nor its signature is logged anywhere.
    for value in captured.all_values() {
        assert!(!value.contains(&signature), "signature logged: {value}");
        assert!(!value.contains(&encoded), "payment header logged: {value}");
    }
}

// ------------------------------------------------------------------------------------------
// MPP charge and session (driven through Mpp::process)
// ------------------------------------------------------------------------------------------

fn request(url: &str, authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().unwrap());
    }
    RequestContext::new(http::Method::GET, url.into(), headers)
}

#[tokio::test]
async fn mpp_charge_and_session_flows_record_metrics_and_spans() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let captured = Captured::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let secret = "observability-secret-never-logged";
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).unwrap();
    let payer = signer_from_hex(PAYER_KEY).unwrap();
    let session = SessionIntent::new(sa.clone(), PAYEE).signer(Arc::new(signer_from_hex(PAYEE_KEY).unwrap()));
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa.clone())).with_session(session);
    let mpp = Mpp::new(method, "api.example.com", secret).unwrap();

    // Charge: unpaid → challenge; paid → settled by the SA; the same credential again → replayed.
    let charge = PaySpec { description: Some("Premium".into()), ..PaySpec::charge("0.01") };
    let url = "http://api.example.com/premium";
    let challenge = mpp.process(&request(url, None), &charge).await.unwrap_err();
    assert_eq!(challenge.status, 402);
    let www = challenge.headers["www-authenticate"].to_str().unwrap().to_owned();
    let parsed = parse_www_authenticate(&[&www]).unwrap();
    let authorization =
        MppChargeClient::new(payer.clone()).credential_for(&parsed[0]).unwrap().to_authorization_header();
    let paid = mpp.process(&request(url, Some(&authorization)), &charge).await.unwrap();
    let reference = paid.receipt.reference.clone();
    assert!(paid.finish(http::StatusCode::OK).await.is_ok());
    let replayed = mpp.process(&request(url, Some(&authorization)), &charge).await.unwrap_err();
    assert_eq!(replayed.status, 402);

    // Session: open (management), a voucher served and committed, a voucher served whose
    // handler fails (released), a voucher below the highest one (refused: delta too small).
    let metered = PaySpec { intent: "session".into(), ..PaySpec::charge("0.001") };
    let url = "http://api.example.com/metered";
    let resp = mpp.process(&request(url, None), &metered).await.unwrap_err();
    let www = resp.headers["www-authenticate"].to_str().unwrap().to_owned();
    let c = parse_www_authenticate(&[&www]).unwrap().remove(0);
    let client = SessionClient::new(payer).with_registry(NetworkRegistry::x_layer());
    let (channel, open) = client.open_header(&c, U256::from(1_000_000u64)).unwrap();
    assert_eq!(mpp.process(&request(url, Some(&open)), &metered).await.unwrap_err().status, 200);
    let first = client.voucher_header(&c, &channel, U256::from(1000u64)).unwrap();
    mpp.process(&request(url, Some(&first)), &metered).await.unwrap().finish(http::StatusCode::OK).await.unwrap();
    let second = client.voucher_header(&c, &channel, U256::from(2000u64)).unwrap();
    mpp.process(&request(url, Some(&second)), &metered)
        .await
        .unwrap()
        .finish(http::StatusCode::from_u16(503).expect("status"))
        .await
        .unwrap();
    let lower = client.voucher_header(&c, &channel, U256::from(1500u64)).unwrap();
    assert_eq!(mpp.process(&request(url, Some(&lower)), &metered).await.unwrap_err().status, 402);

    let m = Metrics::take(&snapshotter);
    let key = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    assert_eq!(m.counter(&key(CHALLENGES_TOTAL, "intent=charge,protocol=mpp")), 2, "{:?}", m.counters);
    assert_eq!(m.counter(&key(CHALLENGES_TOTAL, "intent=session,protocol=mpp")), 2);
    assert_eq!(m.counter(&key(PAYMENTS_TOTAL, "intent=charge,outcome=verified,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(PAYMENTS_TOTAL, "intent=charge,outcome=replayed,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(PAYMENTS_TOTAL, "intent=session,outcome=management,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(PAYMENTS_TOTAL, "intent=session,outcome=verified,protocol=mpp")), 2);
    assert_eq!(m.counter(&key(PAYMENTS_TOTAL, "intent=session,outcome=invalid,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(SETTLEMENTS_TOTAL, "intent=charge,outcome=success,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(SETTLEMENTS_TOTAL, "intent=session,outcome=success,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(SETTLEMENTS_TOTAL, "intent=session,outcome=released,protocol=mpp")), 1);
    assert_eq!(m.counter(&key(VOUCHER_REJECTIONS_TOTAL, "reason=session/delta-too-small")), 1);
    assert_eq!(m.histogram_count(&key(SA_REQUEST_DURATION_SECONDS, "operation=charge_settle,outcome=ok")), 1);
    assert_eq!(m.histogram_count(&key(SA_REQUEST_DURATION_SECONDS, "operation=session_open,outcome=ok")), 1);

    let requests = captured.named("mpp.request");
    let outcomes: Vec<&str> = requests.iter().map(|s| s["outcome"].as_str()).collect();
    assert_eq!(
        outcomes,
        ["challenge", "verified", "replayed", "challenge", "management", "verified", "verified", "invalid"]
    );
    assert_eq!(requests[1]["intent"], "charge");
    assert_eq!(requests[1]["amount"], "0.01");
    assert_eq!(requests[1]["route"], "Premium");
    assert_eq!(requests[1]["reference"], reference);
    assert!(requests[1]["payer"].ends_with(PAYER), "{}", requests[1]["payer"]);
    assert_eq!(requests[5]["reference"], channel, "a voucher's reference is its channel");
    let sa_calls: Vec<(String, String)> =
        captured.named("mpp.sa").iter().map(|s| (s["operation"].clone(), s["outcome"].clone())).collect();
    assert_eq!(sa_calls, [("charge_settle".into(), "ok".into()), ("session_open".into(), "ok".into())]);
    assert!(captured.named("mpp.sa").iter().all(|s| s.contains_key("latency_ms")));
    for value in captured.all_values() {
        assert!(!value.contains(secret), "the MPP secret was logged: {value}");
        assert!(!value.contains(&authorization), "a credential was logged: {value}");
    }
}

// ------------------------------------------------------------------------------------------
// Channel store compare-and-swap conflicts
// ------------------------------------------------------------------------------------------

/// An in-memory store whose next compare-and-swap loses the race once.
struct Contended {
    inner: InMemoryChannelStore,
    conflict_next: AtomicBool,
}

#[async_trait]
impl ChannelStore for Contended {
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        self.inner.get(key).await
    }
    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, state).await
    }
    async fn compare_and_swap(&self, key: &str, version: u64, state: &ChannelState) -> Result<CasOutcome, StoreError> {
        if self.conflict_next.swap(false, Ordering::SeqCst) {
            let current = self.inner.get(key).await?.expect("the key exists");
            return Ok(CasOutcome::Conflict(Box::new(current)));
        }
        self.inner.compare_and_swap(key, version, state).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
}

/// Drains a paid stream of `n` events `t1…tn`: the ids of its data events and the names of the
/// payment events, in order.
async fn drain_stream(paid: pay402::mpp::MppPayment, n: u64) -> Vec<String> {
    use futures::StreamExt as _;
    let stream = paid.paid_stream().expect("a per-event payment");
    let events = futures::stream::iter((1..=n).map(|i| pay402::mpp::SseEvent::data(format!("t{i}"))));
    let bytes: Vec<u8> =
        stream.sse(events).into_frames().flat_map(|b| futures::stream::iter(b.to_vec())).collect().await;
    let text = String::from_utf8(bytes).unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)).map(str::to_owned);
            field("event: ").or_else(|| field("id: "))
        })
        .collect()
}

#[tokio::test]
async fn metered_streams_count_their_events_and_pauses() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    // Every test of this binary installs its own subscriber: a callsite first reached without
    // one could cache "no interest" for the tests running beside it.
    let captured = Captured::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).unwrap();
    let config = pay402::mpp::StreamConfig::default().voucher_timeout(std::time::Duration::from_millis(50));
    let session = SessionIntent::new(sa, PAYEE).stream_config(config);
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(session),
        "api.example.com",
        "stream-metrics-secret-at-least-32-bytes-long",
    )
    .unwrap();
    let spec = PaySpec::session("0.001").per_event();
    let url = "http://api.example.com/tokens";
    let resp = mpp.process(&request(url, None), &spec).await.unwrap_err();
    let c = parse_www_authenticate(&[resp.headers["www-authenticate"].to_str().unwrap()]).unwrap().remove(0);
    let client = SessionClient::new(signer_from_hex(PAYER_KEY).unwrap()).with_registry(NetworkRegistry::x_layer());
    let (channel, open) = client.open_header(&c, U256::from(1_000_000u64)).unwrap();
    assert_eq!(mpp.process(&request(url, Some(&open)), &spec).await.unwrap_err().status, 200);
    // Vouchers for three events of five: three charged, then a pause that times out.
    let voucher = client.voucher_header(&c, &channel, U256::from(3000u64)).unwrap();
    let paid = mpp.process(&request(url, Some(&voucher)), &spec).await.unwrap();
    assert_eq!(drain_stream(paid, 5).await, ["1", "2", "3", "402-need-voucher", "payment-receipt"]);
    // A resume after event 1 with the same voucher: events 2 and 3 again, free; then a pause.
    let mut resume = request(url, Some(&voucher));
    resume.headers.insert("last-event-id", "1".parse().unwrap());
    let paid = mpp.process(&resume, &spec).await.unwrap();
    assert_eq!(drain_stream(paid, 5).await, ["2", "3", "402-need-voucher", "payment-receipt"]);

    let m = Metrics::take(&snapshotter);
    let key = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    assert_eq!(m.counter(&key(STREAM_EVENTS_TOTAL, "outcome=charged")), 3, "{:?}", m.counters);
    assert_eq!(m.counter(&key(STREAM_EVENTS_TOTAL, "outcome=resent")), 2);
    assert_eq!(m.counter(&key(STREAM_EVENTS_TOTAL, "outcome=released")), 0);
    assert_eq!(m.counter(&key(STREAM_PAUSES_TOTAL, "outcome=paused")), 2);
    assert_eq!(m.counter(&key(STREAM_PAUSES_TOTAL, "outcome=timed_out")), 2);
    assert_eq!(m.counter(&key(STREAM_PAUSES_TOTAL, "outcome=resumed")), 0);
    let outcomes: Vec<String> = captured.named("mpp.request").iter().map(|s| s["outcome"].clone()).collect();
    assert_eq!(outcomes, ["challenge", "management", "verified", "verified"]);
}

#[tokio::test]
async fn store_cas_conflicts_are_counted_and_traced() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let captured = Captured::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let store = Contended { inner: InMemoryChannelStore::new(), conflict_next: AtomicBool::new(false) };
    let state = ChannelState { deposit: 1000, ..ChannelState::default() };
    assert!(store.put_if_absent("0xchannel", &state).await.unwrap());
    store.conflict_next.store(true, Ordering::SeqCst);
    let outcome = store
        .update("0xchannel", |s| -> Result<_, ()> { Ok(Some(ChannelState { spent: s.spent + 1, ..s.clone() })) })
        .await
        .unwrap();
    assert!(matches!(outcome, pay402::mpp::UpdateOutcome::Updated(_)));
    assert_eq!(store.get("0xchannel").await.unwrap().unwrap().value.spent, 1);

    let m = Metrics::take(&snapshotter);
    assert_eq!(m.counter(&format!("{STORE_CAS_CONFLICTS_TOTAL}{{}}")), 1, "{:?}", m.counters);
    assert!(captured.event_values.lock().unwrap().iter().any(|v| v.contains("compare-and-swap conflict")));
}

// ------------------------------------------------------------------------------------------
// The Prometheus example
// ------------------------------------------------------------------------------------------

/// A running example server, killed on drop.
struct Example(std::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the Prometheus sample `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        let matches = series_name == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn the_prometheus_example_exports_the_payment_metrics() {
    use std::io::BufRead as _;
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>").join("examples/prometheus");
    assert!(path.exists(), "{} is not built (cargo test builds the examples)", path.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(&path)
        .env("PAY402_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("OKX_API_KEY")
        .env_remove("OKX_SECRET_KEY")
        .env_remove("OKX_PASSPHRASE")
        .env_remove("PAY402_PAY_TO")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the example");
    let stdout = child.stdout.take().expect("stdout");
    let _example = Example(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("first line");
    let url = format!("http://127.0.0.1:{port}/quote");
    assert_eq!(line.trim_end(), format!("listening on {url}"));

    // Unpaid → 402; paid → 200 (the example's embedded facilitator funds any wallet).
    let http = reqwest::Client::new();
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 402);
    let required = decode_payment_required_header(first.headers()["payment-required"].to_str().unwrap()).unwrap();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().unwrap();
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer));
    let (name, value) = client.create_payment_header(&required).await.unwrap();
    assert_eq!(http.get(&url).header(name, value).send().await.unwrap().status(), 200);

    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    let x402 = [("protocol", "x402"), ("scheme", "exact")];
    assert_eq!(sample(&text, CHALLENGES_TOTAL, &x402), Some(1.0), "{text}");
    assert_eq!(sample(&text, PAYMENTS_TOTAL, &[x402[0], x402[1], ("outcome", "verified")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, SETTLEMENTS_TOTAL, &[x402[0], x402[1], ("outcome", "success")]), Some(1.0), "{text}");
    let settle_count = format!("{FACILITATOR_REQUEST_DURATION_SECONDS}_count");
    assert_eq!(sample(&text, &settle_count, &[("operation", "settle"), ("outcome", "ok")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, &settle_count, &[("operation", "verify"), ("outcome", "ok")]), Some(1.0), "{text}");
}
