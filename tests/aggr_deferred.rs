//! x402 `aggr_deferred` end to end, over HTTP with real components: the buyer
//! ([`AutoPay`] with an [`AggrDeferredEvmClientScheme`]) against axum sellers whose facilitator
//! is (a) pay402's embedded one (development session certificates, deferred batches in its
//! ledger), (b) a local OKX facilitator stand-in reached through [`OkxFacilitatorClient`] (HMAC
//! re-checked, the body's `aggr_deferred` shape checked), and (c) a facilitator that supports
//! only `exact`: the unsupported kind fails its own route (500), the `exact` route still pays.

mod support;

use async_trait::async_trait;
use axum::http::{HeaderMap, Method, StatusCode};
use pay402::autopay::{AssetId, AutoPay, AutoPayError, AutoPayMiddleware, AutoPayOutcome, PaymentDetail, Protocol};
use pay402::chain::{NetworkRegistry, X_LAYER_USDT0};
use pay402::evm::{self, PrivateKeySigner, U256, signer_from_hex};
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::x402::{
    AggrDeferredEvmClientScheme, AggrDeferredEvmScheme, AnyPaymentRequired, DevSessionCert, EmbeddedFacilitator,
    ExactEvmScheme, FacilitatorClient, FacilitatorError, PaymentOption, PaymentPayload, PaymentRequirements,
    RouteConfig, SettleResponse, SettleStatusResponse, SupportedResponse, VerifyResponse, X402Client, X402HttpServer,
    X402ResourceServer, decode_payment_required_header,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::Running;
use support::accounts::{OTHER_KEY, PAYEE, PAYER, PAYER_KEY};
use support::okx::{OkxKeys, TimestampFormat, check_okx_headers};

const FUNDS: u64 = 10_000_000;
/// The price of every route: 0.001 USD₮0.
const PRICE: u64 = 1000;

fn u(v: u64) -> U256 {
    U256::from(v)
}

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

fn usdt0() -> AssetId {
    AssetId::x_layer_usdt0()
}

fn aggr(price: &str) -> RouteConfig {
    RouteConfig::new(PaymentOption::new("aggr_deferred", price, "eip155:196", PAYEE))
}

/// An axum seller with `GET /exact` and `GET /aggr` over `facilitator`; counts handler runs.
async fn seller(facilitator: impl FacilitatorClient + 'static) -> (Running, X402HttpServer, Arc<AtomicUsize>) {
    let resource = X402ResourceServer::new(facilitator)
        .register("eip155:196", ExactEvmScheme::new())
        .register("eip155:196", AggrDeferredEvmScheme::new());
    let x402 = X402HttpServer::new(resource)
        .route("GET /exact", RouteConfig::new(PaymentOption::exact("$0.001", PAYEE)))
        .and_then(|s| s.route("GET /aggr", aggr("$0.001")))
        .expect("routes");
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = |path: &'static str| {
        let calls = Arc::clone(&calls);
        axum::routing::get(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(json!({ "data": path })) }
        })
    };
    let app = axum::Router::new()
        .route("/exact", handler("/exact"))
        .route("/aggr", handler("/aggr"))
        .layer(pay402::axum::X402Layer::new(x402.clone()));
    (support::serve_axum(app).await, x402, calls)
}

/// A buyer paying up to 0.01 USD₮0 per request and 1 in total, `exact` with the wallet and
/// `aggr_deferred` with `scheme`.
fn buyer(scheme: AggrDeferredEvmClientScheme) -> AutoPayMiddleware {
    AutoPay::new(key(PAYER_KEY))
        .prefer([Protocol::X402])
        .aggr_deferred(scheme)
        .max_per_request(usdt0(), "0.01".parse().expect("amount"))
        .max_total(usdt0(), "1".parse().expect("amount"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay")
}

fn outcome(resp: &reqwest::Response) -> AutoPayOutcome {
    resp.extensions().get::<AutoPayOutcome>().cloned().expect("an AutoPayOutcome on the response")
}

fn settlement_of(paid: &AutoPayOutcome) -> (String, SettleResponse) {
    let PaymentDetail::X402 { requirements, settlement } = &paid.detail else { panic!("{paid:?}") };
    (requirements.scheme.clone(), settlement.clone().expect("a decoded PAYMENT-RESPONSE"))
}

// ---------------------------------------------------------------------------------------------
// (a) the embedded facilitator
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn autopay_pays_aggr_deferred_and_exact_against_the_embedded_facilitator() {
    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, PAYER, u(FUNDS)).expect("fund");
    let (app, _, calls) = seller(facilitator.clone()).await;
    let wallet = key(PAYER_KEY);
    let autopay = buyer(AggrDeferredEvmClientScheme::development(&wallet).expect("dev scheme"));
    let http = autopay.client(reqwest::Client::builder()).expect("client");

    // aggr_deferred: accepted at once, the wallet's funds reserved, nothing moved yet.
    let resp = http.get(format!("{}/aggr", app.base)).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let paid = outcome(&resp);
    assert_eq!((paid.protocol, paid.amount), (Protocol::X402, u(PRICE)));
    let (scheme, settled) = settlement_of(&paid);
    assert_eq!(scheme, "aggr_deferred");
    assert!(settled.success, "{settled:?}");
    assert_eq!((settled.status.as_deref(), settled.transaction.as_str()), (Some("success"), ""));
    assert_eq!(settled.payer.as_deref(), Some(PAYER), "the wallet pays, not the session key");
    assert_eq!(resp.json::<Value>().await.expect("json")["data"], "/aggr");
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
    assert_eq!(facilitator.pending_deferred(), 1);
    assert_eq!(facilitator.reserved(X_LAYER_USDT0, PAYER), u(PRICE));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYER), u(FUNDS));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYEE), U256::ZERO);

    // exact: settled at once, with its own transaction.
    let resp = http.get(format!("{}/exact", app.base)).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let (scheme, settled) = settlement_of(&outcome(&resp));
    assert_eq!(scheme, "exact");
    assert!(settled.transaction.starts_with("0x") && settled.transaction.len() == 66, "{settled:?}");
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYER), u(FUNDS - PRICE));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYEE), u(PRICE));

    // The batch flush moves the reserved funds to the payee under one batch transaction.
    let batches = facilitator.flush_deferred();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].payments, batches[0].payers.clone()), (1, vec![PAYER.to_owned()]));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYER), u(FUNDS - 2 * PRICE));
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYEE), u(2 * PRICE));
    assert_eq!(facilitator.reserved(X_LAYER_USDT0, PAYER), U256::ZERO);
    let status = facilitator.settle_status(&batches[0].transaction).await.expect("status");
    assert!(status.success, "{status:?}");
    assert_eq!(status.payer.as_deref(), Some(PAYER));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(autopay.spent(&usdt0()), u(2 * PRICE));
}

/// The claims of a genuine certificate for `session` with the signature of another key.
fn forged_cert(session: &PrivateKeySigner) -> String {
    let genuine =
        DevSessionCert::issue(&key(PAYER_KEY), session.address(), evm::system_unix_time() + 3600).expect("issue");
    let by_other =
        DevSessionCert::issue(&key(OTHER_KEY), session.address(), evm::system_unix_time() + 3600).expect("issue");
    let claims = genuine.split('.').next().expect("claims");
    let signature = by_other.split('.').nth(1).expect("signature");
    format!("{claims}.{signature}")
}

/// A scheme whose certificate is bad in the way `why` says.
fn scheme_again(
    why: &str,
    wallet: &PrivateKeySigner,
    session: &PrivateKeySigner,
    another_session: &PrivateKeySigner,
) -> AggrDeferredEvmClientScheme {
    match why {
        "signed by another key" => AggrDeferredEvmClientScheme::new(session.clone(), forged_cert(session)),
        "expired" => AggrDeferredEvmClientScheme::development_until(wallet, 1_000).expect("dev scheme"),
        _ => {
            let cert = DevSessionCert::issue(wallet, another_session.address(), evm::system_unix_time() + 3600);
            AggrDeferredEvmClientScheme::new(session.clone(), cert.expect("issue"))
        }
    }
}

fn header<'r>(resp: &'r reqwest::Response, name: &str) -> &'r str {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn forged_expired_and_mismatched_certificates_are_refused_before_the_handler() {
    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, PAYER, u(FUNDS)).expect("fund");
    let (app, _, calls) = seller(facilitator.clone()).await;
    let wallet = key(PAYER_KEY);
    let session = PrivateKeySigner::random();
    let another_session = PrivateKeySigner::random();
    for why in ["signed by another key", "expired", "session key mismatch"] {
        let autopay = buyer(scheme_again(why, &wallet, &session, &another_session));
        let http = autopay.client(reqwest::Client::builder()).expect("client");
        let err = http.get(format!("{}/aggr", app.base)).send().await.expect_err(why);
        let refusal = AutoPayError::from_middleware(&err).cloned().unwrap_or_else(|| panic!("{why}: {err}"));
        assert_eq!(
            refusal,
            AutoPayError::PaymentRejected {
                protocol: Protocol::X402,
                status: 402,
                reason: "invalid_aggr_deferred_session_cert".into()
            },
            "{why}"
        );
        // The same refusal, without AutoPay: a fresh 402 naming the reason.
        let client = X402Client::new().register("eip155:*", scheme_again(why, &wallet, &session, &another_session));
        let unpaid = reqwest::get(format!("{}/aggr", app.base)).await.expect("unpaid");
        let required = decode_payment_required_header(header(&unpaid, "payment-required")).expect("decodes");
        let (name, value) = client.create_payment_header(&required).await.expect("signs");
        let resp =
            reqwest::Client::new().get(format!("{}/aggr", app.base)).header(name, value).send().await.expect("paid");
        assert_eq!(resp.status(), 402, "{why}");
        let AnyPaymentRequired::V2(again) =
            decode_payment_required_header(header(&resp, "payment-required")).expect("decodes")
        else {
            panic!("{why}: not a v2 challenge")
        };
        assert_eq!(again.error.as_deref(), Some("invalid_aggr_deferred_session_cert"), "{why}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(facilitator.pending_deferred(), 0);
    assert_eq!(facilitator.reserved(X_LAYER_USDT0, PAYER), U256::ZERO);
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYER), u(FUNDS));
}

// ---------------------------------------------------------------------------------------------
// (b) OKX's facilitator (a local stand-in)
// ---------------------------------------------------------------------------------------------

const API_KEY: &str = "aggr-api-key";
const SECRET: &str = "aggr-secret";
const PASSPHRASE: &str = "aggr-passphrase";
/// An opaque certificate, as OKX's Agentic Wallet would issue (pay402 never parses it).
const OKX_CERT: &str = "b2t4LWFnZW50aWMtd2FsbGV0LXNlc3Npb24tY2VydA==";

#[derive(Default)]
struct StandInLog {
    /// (path, requirements scheme) of each accepted POST.
    calls: Vec<(String, String)>,
    problems: Vec<String>,
}

/// The stand-in's checks of a verify or settle body: `aggr_deferred` requirements, the session
/// certificate in `paymentPayload.accepted.extra`, an EIP-3009 authorization signed by `from`.
fn check_aggr_body(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let requirements = &body["paymentRequirements"];
    let payload = &body["paymentPayload"];
    if requirements["scheme"] != "aggr_deferred" || payload["accepted"]["scheme"] != "aggr_deferred" {
        problems.push(format!("not aggr_deferred: {body}"));
    }
    if payload["accepted"]["extra"]["sessionCert"] != OKX_CERT {
        problems.push(format!("no sessionCert in paymentPayload.accepted.extra: {body}"));
    }
    if requirements["extra"].get("sessionCert").is_some() {
        problems.push("sessionCert in paymentRequirements.extra".to_owned());
    }
    if payload["extensions"]["scheme"] != "aggr_deferred" {
        problems.push(format!("no aggr_deferred extension: {}", payload["extensions"]));
    }
    let a = &payload["payload"]["authorization"];
    let fields = ["from", "to", "value", "validAfter", "validBefore", "nonce"];
    if fields.iter().any(|f| !a[f].is_string()) {
        problems.push(format!("authorization shape: {a}"));
        return problems;
    }
    let signature = payload["payload"]["signature"].as_str().unwrap_or_default();
    if signature.len() != 132 || !signature.starts_with("0x") {
        problems.push(format!("signature shape: {signature}"));
    }
    let text = |f: &str| a[f].as_str().unwrap_or_default().to_owned();
    let authorization = evm::Eip3009Authorization {
        from: text("from"),
        to: text("to"),
        value: text("value"),
        valid_after: text("validAfter"),
        valid_before: text("validBefore"),
        nonce: text("nonce"),
    };
    let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, evm::parse_address(X_LAYER_USDT0).expect("asset"));
    let signed = authorization.to_message().is_ok_and(|m| evm::verify_transfer_authorization(&domain, &m, signature));
    if !signed || !authorization.to.eq_ignore_ascii_case(PAYEE) || authorization.value != "1000" {
        problems.push(format!("authorization not signed by from, or not the requirements': {a}"));
    }
    problems
}

async fn okx_stand_in(log: Arc<Mutex<StandInLog>>) -> Running {
    let handle = move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
        let log = Arc::clone(&log);
        async move {
            let path = uri.path().to_owned();
            let keys = OkxKeys { api_key: API_KEY, secret: SECRET, passphrase: PASSPHRASE };
            let mut problems = check_okx_headers(&keys, TimestampFormat::Millis, &method, &path, &headers, &body);
            let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
            let data = match (method.as_str(), path.as_str()) {
                ("GET", "/api/v6/pay/x402/supported") => json!({"kinds": [
                    {"x402Version": 2, "scheme": "exact", "network": "eip155:196"},
                    {"x402Version": 2, "scheme": "aggr_deferred", "network": "eip155:196"},
                ], "extensions": [], "signers": {}}),
                ("POST", "/api/v6/pay/x402/verify") => {
                    problems.extend(check_aggr_body(&parsed));
                    json!({"isValid": true, "payer": PAYER})
                }
                ("POST", "/api/v6/pay/x402/settle") => {
                    problems.extend(check_aggr_body(&parsed));
                    // OKX's aggr_deferred intake: success at once, the transaction comes later.
                    json!({"success": true, "status": "success", "payer": PAYER, "transaction": "", "network": "eip155:196"})
                }
                _ => {
                    problems.push(format!("unexpected {method} {path}"));
                    Value::Null
                }
            };
            let mut log = log.lock().expect("stand-in log");
            if method == Method::POST {
                let scheme = parsed["paymentRequirements"]["scheme"].as_str().unwrap_or_default().to_owned();
                log.calls.push((path.clone(), scheme));
            }
            if !problems.is_empty() {
                log.problems.extend(problems.iter().cloned());
                let body = json!({"code": 50113, "msg": problems.join("; ")}).to_string();
                return (StatusCode::UNAUTHORIZED, body);
            }
            (StatusCode::OK, json!({"code": 0, "msg": "", "data": data}).to_string())
        }
    };
    support::serve_axum(axum::Router::new().fallback(handle)).await
}

#[tokio::test]
async fn autopay_pays_aggr_deferred_through_the_okx_facilitator_client() {
    let log = Arc::new(Mutex::new(StandInLog::default()));
    let okx = okx_stand_in(Arc::clone(&log)).await;
    let config =
        OkxFacilitatorConfig::new(OkxCredentials::new(API_KEY, SECRET, PASSPHRASE)).base_url(okx.base.as_str());
    let (app, x402, calls) = seller(OkxFacilitatorClient::new(config).expect("OKX client")).await;
    assert!(x402.initialize().await.expect("initialize").is_complete());

    let session = PrivateKeySigner::random();
    let autopay = buyer(AggrDeferredEvmClientScheme::new(session, OKX_CERT));
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let resp = http.get(format!("{}/aggr", app.base)).send().await.expect("request");
    let problems = log.lock().expect("log").problems.clone();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(resp.status(), 200);
    let (scheme, settled) = settlement_of(&outcome(&resp));
    assert_eq!(scheme, "aggr_deferred");
    assert!(settled.success && settled.transaction.is_empty(), "{settled:?}");
    assert_eq!(settled.payer.as_deref(), Some(PAYER));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let seen = log.lock().expect("log").calls.clone();
    let want = |path: &str| (format!("/api/v6/pay/x402/{path}"), "aggr_deferred".to_owned());
    assert_eq!(seen, [want("verify"), want("settle")]);
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
}

// ---------------------------------------------------------------------------------------------
// (c) a facilitator that supports only `exact`
// ---------------------------------------------------------------------------------------------

/// The embedded facilitator, advertising only its `exact` kinds.
#[derive(Clone)]
struct ExactOnly(EmbeddedFacilitator);

#[async_trait]
impl FacilitatorClient for ExactOnly {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        self.0.verify(payload, requirements).await
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        self.0.settle(payload, requirements).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let mut supported = self.0.supported().await?;
        supported.kinds.retain(|k| k.scheme == "exact");
        Ok(supported)
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        self.0.settle_status(tx_hash).await
    }

    fn name(&self) -> &str {
        "exact-only"
    }
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
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

#[tokio::test]
async fn an_unsupported_kind_fails_only_its_own_route() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    // This test's runtime is current-thread: the server's tasks log into this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, PAYER, u(FUNDS)).expect("fund");
    let (app, x402, calls) = seller(ExactOnly(facilitator.clone())).await;
    let report = x402.initialize().await.expect("initialize does not fail");
    let unsupported = vec![("aggr_deferred".to_owned(), "eip155:196".to_owned())];
    assert_eq!(report.unsupported, unsupported);
    assert!(!report.is_complete());
    assert_eq!(x402.unsupported_kinds(), unsupported);

    let autopay = buyer(AggrDeferredEvmClientScheme::development(&key(PAYER_KEY)).expect("dev scheme"));
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let resp = http.get(format!("{}/exact", app.base)).send().await.expect("request");
    assert_eq!(resp.status(), 200, "the exact route still pays");
    for _ in 0..2 {
        let resp = http.get(format!("{}/aggr", app.base)).send().await.expect("request");
        assert_eq!(resp.status(), 500, "the unsupported route answers 500, not 502");
    }
    let resp = http.get(format!("{}/exact", app.base)).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAYEE), u(2 * PRICE));

    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
    let at_init = logs.lines().filter(|l| l.contains("ERROR") && l.contains("no facilitator supports these")).count();
    assert_eq!(at_init, 1, "{logs}");
    let per_route: Vec<&str> = logs.lines().filter(|l| l.contains("cannot build its payment challenge")).collect();
    assert_eq!(per_route.len(), 1, "logged once: {logs}");
    assert!(per_route[0].contains("ERROR") && per_route[0].contains("aggr_deferred"), "{logs}");
}
