//! Secret hygiene (issue 9 §5).
//!
//! * `Debug` (and `Display` where implemented) of every value that holds an OKX API secret or
//!   passphrase, an MPP secret key, a private key or a facilitator API-key header never shows
//!   the secret.
//! * A full flow — x402 through OKX's facilitator API, an MPP charge and a whole MPP session
//!   through OKX's Settlement Agent API (the local [`faults::FaultServer`] stand-in), plus a
//!   failing settlement — runs under a `tracing` subscriber at TRACE level for every target
//!   (pay402's and its dependencies', `log` records included); the captured output must not
//!   contain any secret, in plain text or hex.
//!
//! This file holds one test: it installs the global subscriber.

#[path = "support/faults.rs"]
mod faults;
mod support;

use faults::{Fault, FaultServer};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChargeIntent, EmbeddedSa, EvmMethod, InMemoryChannelStore, Mpp, MppChargeClient, PaySpec, SessionClient,
    SessionIntent, parse_www_authenticate,
};
use pay402::okx::sa::{OkxSaClient, OkxSaConfig};
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig, OkxSigner, TimestampFormat};
use pay402::web::RequestContext;
use pay402::x402::X402Client;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig,
    X402ResourceServer, decode_payment_required_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};

const API_KEY: &str = "apikey-5c1f9e0e-0b7d-4a43";
const API_SECRET: &str = "SECRET-HMAC-9d2b7f61c04e4a0f8e6b";
const PASSPHRASE: &str = "PASSPHRASE-3e7a0c55b1";
const MPP_SECRET: &str = "MPP-SECRET-a81f4c2d9e7b6053-at-least-32-bytes-long-hmac-key";
const FACILITATOR_TOKEN: &str = "Bearer FACILITATOR-TOKEN-77d1e0a9";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

/// Every secret in the forms it could leak in.
fn secrets() -> Vec<String> {
    let mut all =
        vec![API_SECRET.to_owned(), PASSPHRASE.to_owned(), MPP_SECRET.to_owned(), FACILITATOR_TOKEN.to_owned()];
    for key in [PAYER_KEY, PAYEE_KEY] {
        let hex = key.trim_start_matches("0x");
        all.push(hex.to_owned());
        all.push(hex.to_uppercase());
        // The key's bytes as a Rust byte-array `Debug` would print a prefix of them.
        let bytes: Vec<String> =
            (0..6).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex").to_string()).collect();
        all.push(format!("[{}", bytes.join(", ")));
    }
    all
}

fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(&s), "{what} shows a secret ({s}):\n{text}");
    }
}

fn creds() -> OkxCredentials {
    OkxCredentials::new(API_KEY, API_SECRET, PASSPHRASE)
}

/// Debug/Display of every config and client that holds a secret.
fn debug_output_redacts_every_secret() {
    let payer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let payee = signer_from_hex(PAYEE_KEY).expect("key");
    let mut shown: Vec<(&str, String)> = Vec::new();
    shown.push(("OkxCredentials", format!("{:?} {:#?}", creds(), creds())));
    shown.push(("OkxSigner", format!("{:?}", OkxSigner::new(creds(), TimestampFormat::Millis))));
    let fac_cfg = OkxFacilitatorConfig::new(creds()).base_url("http://127.0.0.1:9");
    shown.push(("OkxFacilitatorConfig", format!("{fac_cfg:?} {fac_cfg:#?}")));
    shown.push(("OkxFacilitatorClient", format!("{:?}", OkxFacilitatorClient::new(fac_cfg).expect("client"))));
    let sa_cfg = OkxSaConfig::new(creds()).base_url("http://127.0.0.1:9");
    shown.push(("OkxSaConfig", format!("{sa_cfg:?} {sa_cfg:#?}")));
    let sa_client = OkxSaClient::new(sa_cfg).expect("client");
    shown.push(("OkxSaClient", format!("{sa_client:?}")));
    let mut http_cfg = HttpFacilitatorConfig::new("http://127.0.0.1:9");
    http_cfg.headers.push(("Authorization".into(), FACILITATOR_TOKEN.into()));
    shown.push(("HttpFacilitatorConfig", format!("{http_cfg:?} {http_cfg:#?}")));
    shown.push(("HttpFacilitatorClient", format!("{:?}", HttpFacilitatorClient::new(http_cfg).expect("client"))));
    shown.push(("PrivateKeySigner", format!("{payer:?} {payer:#?}")));
    let intent = SessionIntent::new(sa_client.clone(), PAYEE).signer(Arc::new(payee.clone()));
    shown.push(("SessionIntent", format!("{intent:?}")));
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa_client)).with_session(intent);
    shown.push(("EvmMethod", format!("{method:?}")));
    let mpp = Mpp::new(method, "api.example.com", MPP_SECRET).expect("mpp");
    shown.push(("Mpp", format!("{mpp:?} {mpp:#?}")));
    shown.push(("SessionClient", format!("{:?}", SessionClient::new(payee))));
    shown.push(("MppChargeClient", format!("{:?}", MppChargeClient::new(payer.clone()))));
    let scheme = ExactEvmClientScheme::new(payer.clone());
    shown.push(("ExactEvmClientScheme", format!("{scheme:?}")));
    shown.push(("X402Client", format!("{:?}", X402Client::new().register("eip155:196", scheme))));
    for (what, text) in &shown {
        assert_clean(what, text);
    }
    // The redacted values are still recognisable as present.
    assert!(shown[0].1.contains("<redacted>"), "{}", shown[0].1);
    assert!(shown[0].1.contains(API_KEY), "the API key is an identifier and may be shown: {}", shown[0].1);
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn ctx(path: &str, authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header value"));
    }
    RequestContext::new(http::Method::GET, format!("http://api.example.com{path}"), headers)
}

/// x402 through the OKX facilitator API: one paid request, then one whose settlement fails.
async fn x402_flow(stand: &FaultServer) {
    let facilitator = OkxFacilitatorClient::new(
        OkxFacilitatorConfig::new(creds()).base_url(&stand.url).timeout(Duration::from_millis(500)),
    )
    .expect("facilitator");
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route("GET /paid", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .expect("route");
    let app = axum::Router::new()
        .route("/paid", axum::routing::get(|| async { "paid content" }))
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;
    let http = reqwest::Client::new();
    let url = format!("{}/paid", running.base);
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer));
    for (round, fault) in [(0, None), (1, Some(Fault::Status(503)))] {
        stand.clear_faults();
        if let Some(f) = fault {
            stand.set_fault("/settle", f);
        }
        let unpaid = http.get(&url).send().await.expect("unpaid");
        assert_eq!(unpaid.status(), 402);
        let header = unpaid.headers()["payment-required"].to_str().expect("ascii").to_owned();
        let required = decode_payment_required_header(&header).expect("challenge");
        let AnyPaymentRequired::V2(_) = &required else { panic!("v1") };
        let (name, value) = client.create_payment_header(&required).await.expect("payment");
        let paid = http.get(&url).header(name, value).send().await.expect("paid");
        // A settle answered 503 leaves the outcome unknown: 503 + Retry-After (issue 17).
        assert_eq!(paid.status(), if round == 0 { 200 } else { 503 });
    }
    stand.clear_faults();
}

/// MPP charge and a whole session through the OKX SA API, plus a failing charge.
async fn mpp_flow(stand: &FaultServer) {
    let sa_client =
        OkxSaClient::new(OkxSaConfig::new(creds()).base_url(&stand.url).timeout(Duration::from_millis(500)))
            .expect("SA client");
    let intent = SessionIntent::new(sa_client.clone(), PAYEE)
        .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("key")))
        .store(Arc::new(InMemoryChannelStore::new()));
    let method = EvmMethod::x_layer(PAYEE).with_charge(ChargeIntent::new(sa_client)).with_session(intent.clone());
    let mpp = Mpp::new(method, "api.example.com", MPP_SECRET).expect("mpp");
    let charge = PaySpec::charge("0.01");
    let session = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let challenge = |spec: PaySpec, path: &'static str| {
        let mpp = mpp.clone();
        async move {
            let resp = mpp.process(&ctx(path, None), &spec).await.expect_err("unpaid");
            let www = resp.headers["www-authenticate"].to_str().expect("ascii").to_owned();
            parse_www_authenticate(&[&www]).expect("challenge").remove(0)
        }
    };

    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    for fault in [None, Some(Fault::Garbage)] {
        stand.clear_faults();
        if let Some(f) = fault {
            stand.set_fault("/charge/settle", f);
        }
        let c = challenge(charge.clone(), "/premium").await;
        let header =
            MppChargeClient::new(buyer.clone()).credential_for(&c).expect("credential").to_authorization_header();
        let outcome = mpp.process(&ctx("/premium", Some(&header)), &charge).await;
        assert_eq!(outcome.is_ok(), fault.is_none());
    }
    stand.clear_faults();

    let client = SessionClient::new(signer_from_hex(PAYER_KEY).expect("key")).with_registry(NetworkRegistry::x_layer());
    let c = challenge(session.clone(), "/metered").await;
    let (channel, open) = client.open_header(&c, U256::from(5_000_000u64)).expect("open");
    let resp = mpp.process(&ctx("/metered", Some(&open)), &session).await.expect_err("management");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    for _ in 0..2 {
        let voucher = client.next_voucher(&c, &channel, U256::from(1000u64)).expect("voucher");
        let paid = mpp.process(&ctx("/metered", Some(&voucher)), &session).await.expect("served");
        paid.finish(http::StatusCode::OK).await.expect("commit");
    }
    let top_up = client.top_up_header(&c, &channel, U256::from(1_000_000u64)).expect("topUp");
    assert_eq!(mpp.process(&ctx("/metered", Some(&top_up)), &session).await.expect_err("management").status, 200);
    intent.settle_channel(&channel).await.expect("settle");
    let close = client.close_header(&c, &channel, U256::from(2000u64)).expect("close");
    assert_eq!(mpp.process(&ctx("/metered", Some(&close)), &session).await.expect_err("management").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_debug_output_or_logs() {
    debug_output_redacts_every_secret();

    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(20_000_000u64)).expect("fund");
    sa.fund(X_LAYER_USDT0, PAYER, U256::from(0u64)).expect("fund");
    let stand = FaultServer::start(sa);
    x402_flow(&stand).await;
    mpp_flow(&stand).await;
    drop(stand);

    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("UTF-8 logs");
    // The flows really logged at every level, including pay402's own spans and the HTTP stack.
    assert!(logs.lines().count() > 100, "too little captured:\n{logs}");
    for needle in ["TRACE", "DEBUG", "x402.settle", "mpp", "hyper"] {
        assert!(logs.contains(needle), "no `{needle}` in the captured logs");
    }
    for s in secrets() {
        if let Some(at) = logs.find(&s) {
            let line = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!("a secret ({s}) appears in the logs:\n{}", &logs[line..end]);
        }
    }
}
