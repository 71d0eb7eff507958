//! Fault injection against every remote dependency (issue 9 §3): a stand-in for OKX's x402
//! facilitator and MPP Settlement Agent on 127.0.0.1 ([`faults::FaultServer`]) misbehaves in
//! each way of [`faults::ALL_FAULTS`] on one endpoint at a time, for each protocol path:
//!
//! | path | faulted endpoint | driven through |
//! |---|---|---|
//! | x402 verify | `/verify` | a real axum server with `X402Layer` + `OkxFacilitatorClient` |
//! | x402 settle | `/settle` | same |
//! | x402 settle-status polling | `/settle/status` (settle answers `timeout`) | same |
//! | MPP charge settle | `/charge/settle` | `Mpp::process` + `ChargeIntent` + `OkxSaClient` |
//! | session open / topUp / close | `/session/open`, `/session/topUp`, `/session/close` | `Mpp::process` + `SessionIntent` + `OkxSaClient` |
//! | session settle (merchant) | `/session/settle` | `SessionIntent::settle_channel` |
//!
//! For each (fault, path) the test checks: the buyer gets the documented status and error body;
//! the protected handler's body is never served unpaid; the hooks/events fire with the payload
//! (unknown outcomes reach `on_settle_failure` / `on_settlement_unknown` for reconciliation); the
//! seller's channel state is left as it was; and no task or connection leaks (the test runtime's
//! alive-task count and the stand-in's open-connection count return to their baseline once the
//! seller is dropped). Every row is printed; SECURITY.md holds the table.

#[path = "support/faults.rs"]
mod faults;
mod support;

use faults::{ALL_FAULTS, Fault, FaultServer, SettleAnswer, TX};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelStore, ChargeIntent, Credential, EmbeddedSa, EvmMethod, InMemoryChannelStore, Mpp, MppChargeClient,
    ParsedChallenge, PayError, PaySpec, SessionClient, SessionIntent, parse_www_authenticate,
};
use pay402::okx::sa::{OkxSaClient, OkxSaConfig};
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::web::RequestContext;
use pay402::x402::X402Client;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, SettleFailure, VerifyFailure, X402ResourceServer,
    decode_payment_required_header, decode_payment_response_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};

/// The OKX clients' per-call timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(400);
/// What the protected handler answers: must never reach an unpaid buyer.
const SECRET_BODY: &str = "the-protected-content-7f3a";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const API_KEY: &str = "fault-api-key";
const API_SECRET: &str = "fault-api-secret";
const PASSPHRASE: &str = "fault-passphrase";

fn creds() -> OkxCredentials {
    OkxCredentials::new(API_KEY, API_SECRET, PASSPHRASE)
}

fn sa_client(stand: &FaultServer) -> OkxSaClient {
    OkxSaClient::new(OkxSaConfig::new(creds()).base_url(&stand.url).timeout(TIMEOUT)).expect("SA client")
}

/// Waits (bounded) until the runtime's alive tasks are back to `baseline` and the stand-in has no
/// open connection; fails naming what leaked.
async fn assert_no_leaks(what: &str, baseline: usize, stand: &FaultServer) {
    assert!(stand.accepted_connections() > 0, "{what}: the stand-in was never called");
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..500 {
        if metrics.num_alive_tasks() <= baseline && stand.open_connections() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{what}: leak after teardown: {} alive tasks (baseline {baseline}), {} open stand-in connections",
        metrics.num_alive_tasks(),
        stand.open_connections()
    );
}

fn row(path: &str, fault: Fault, observed: &str) {
    println!("| {} | {path} | {observed} |", fault.name());
}

// ---------------------------------------------------------------------------------------------
// x402: verify, settle, settle-status polling
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum X402Path {
    Verify,
    Settle,
    StatusPolling,
}

#[derive(Default)]
struct X402Events {
    verify_failures: Vec<VerifyFailure>,
    settle_failures: Vec<(String, SettleFailure)>,
    after_settle: usize,
}

/// One x402 scenario: returns (status, body, PAYMENT-RESPONSE decoded, handler runs, events).
async fn x402_scenario(
    stand: &FaultServer,
    path: X402Path,
) -> (u16, String, Option<pay402::x402::SettleResponse>, usize, Arc<Mutex<X402Events>>) {
    let events = Arc::new(Mutex::new(X402Events::default()));
    let facilitator =
        OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds()).base_url(&stand.url).timeout(TIMEOUT))
            .expect("facilitator client");
    let (e1, e2, e3) = (Arc::clone(&events), Arc::clone(&events), Arc::clone(&events));
    let server = X402ResourceServer::new(facilitator)
        .register("eip155:196", ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(50), Duration::from_millis(600))
        .on_verify_failure(move |_, failure| {
            e1.lock().expect("events").verify_failures.push(failure);
            async { None }
        })
        .on_settle_failure(move |ctx, failure| {
            let from = ctx.payload.claimed_payer().unwrap_or_default().to_owned();
            e2.lock().expect("events").settle_failures.push((from, failure));
            async { None }
        })
        .on_after_settle(move |_, _| {
            e3.lock().expect("events").after_settle += 1;
            async {}
        });
    let x402 = X402HttpServer::new(server)
        .route("GET /paid", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .expect("route");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let handler = move || {
        c.fetch_add(1, Ordering::SeqCst);
        async { SECRET_BODY }
    };
    let app = axum::Router::new().route("/paid", axum::routing::get(handler)).layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;
    let http = reqwest::Client::new();
    let url = format!("{}/paid", running.base);

    // The unpaid 402 (facilitator healthy: `/supported` is never faulted).
    let unpaid = http.get(&url).send().await.expect("unpaid request");
    assert_eq!(unpaid.status(), 402);
    let header = unpaid.headers()["payment-required"].to_str().expect("ascii").to_owned();
    let AnyPaymentRequired::V2(required) = decode_payment_required_header(&header).expect("challenge") else {
        panic!("v1 challenge")
    };
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer));
    let signature = client.create_payment_header(&AnyPaymentRequired::V2(required)).await.expect("payment header").1;

    let paid = http.get(&url).header("PAYMENT-SIGNATURE", signature).send().await.expect("paid request");
    let status = paid.status().as_u16();
    let response = paid
        .headers()
        .get("payment-response")
        .map(|v| decode_payment_response_header(v.to_str().expect("ascii")).expect("PAYMENT-RESPONSE decodes"));
    let body = paid.text().await.expect("body");
    let _ = path;
    drop(http);
    drop(running);
    (status, body, response, calls.load(Ordering::SeqCst), events)
}

async fn x402_matrix(path: X402Path) {
    for fault in ALL_FAULTS {
        let baseline = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let stand = FaultServer::start(EmbeddedSa::new());
        let endpoint = match path {
            X402Path::Verify => "/verify",
            X402Path::Settle => "/settle",
            X402Path::StatusPolling => {
                stand.settle_answer(SettleAnswer::Timeout);
                "/settle/status"
            }
        };
        stand.set_fault(endpoint, fault);
        let (status, body, response, handler_runs, events) = x402_scenario(&stand, path).await;
        let what = format!("x402 {path:?} / {fault:?}");
        assert!(!body.contains(SECRET_BODY), "{what}: the protected body reached an unpaid buyer: {body}");
        let ev = std::mem::take(&mut *events.lock().expect("events"));
        match path {
            X402Path::Verify => {
                // No verdict: the handler never runs, no settlement is attempted, the buyer gets
                // 504 (timeout) or 502 (anything else) with a JSON error body.
                let want = if matches!(fault, Fault::Hang | Fault::Drip | Fault::SlowSuccess) { 504 } else { 502 };
                assert_eq!(status, want, "{what}: {body}");
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
                assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
                assert_eq!(handler_runs, 0, "{what}");
                assert!(response.is_none(), "{what}");
                assert_eq!(ev.verify_failures.len(), 1, "{what}: the verify-failure hook sees the error");
                assert!(matches!(ev.verify_failures[0], VerifyFailure::Error(_)), "{what}");
                assert!(!stand.calls().iter().any(|c| c.ends_with("/settle")), "{what}: settled unverified");
                row("x402 verify", fault, &format!("{status} `{{\"error\":…}}`, handler not run, verify-failure hook"));
            }
            X402Path::Settle => {
                // Settle-after-handler: the handler ran, its body is withheld; the outcome is
                // unknown, so the buyer gets 503 + Retry-After (never a new 402 inviting a second
                // payment) and no PAYMENT-RESPONSE; the payment is recorded as pending and the
                // seller's settle-failure hook gets the payment (payer) and the error.
                assert_eq!(status, 503, "{what}: {body}");
                assert_eq!(handler_runs, 1, "{what}");
                assert!(response.is_none(), "{what}: {response:?}");
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
                assert_eq!(json["status"], "pending", "{what}: {body}");
                assert_eq!(ev.settle_failures.len(), 1, "{what}");
                let (payer, failure) = &ev.settle_failures[0];
                assert_eq!(payer.to_lowercase(), PAYER.to_lowercase(), "{what}");
                assert!(matches!(failure, SettleFailure::Error(_)), "{what}: {failure:?}");
                assert_eq!(ev.after_settle, 0, "{what}");
                row(
                    "x402 settle",
                    fault,
                    "503 + Retry-After `{\"status\":\"pending\"}`, recorded pending (retry with the same payment), handler body withheld, settle-failure hook (payload + error)",
                );
            }
            X402Path::StatusPolling => {
                // Settle said `timeout`; every status query misbehaves until the poll deadline:
                // the outcome stays unknown ⇒ 503 + Retry-After naming the transaction (recorded
                // pending, reconciled in the background), and the settle-failure hook gets
                // Timeout{transaction}.
                assert_eq!(status, 503, "{what}: {body}");
                assert_eq!(handler_runs, 1, "{what}");
                assert!(response.is_none(), "{what}: {response:?}");
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
                assert_eq!(json["transaction"], TX, "{what}: {body}");
                assert_eq!(ev.settle_failures.len(), 1, "{what}");
                assert_eq!(
                    ev.settle_failures[0].1,
                    SettleFailure::Timeout { transaction: TX.to_owned() },
                    "{what}: the hook gets the transaction to reconcile"
                );
                assert!(stand.calls().iter().any(|c| c.contains("/settle/status?txHash=")), "{what}: no poll");
                row(
                    "x402 settle-status polling",
                    fault,
                    "503 + Retry-After `{\"status\":\"pending\",\"transaction\":…}`, recorded pending, handler body withheld, settle-failure hook Timeout{transaction}",
                );
            }
        }
        assert_no_leaks(&what, baseline, &stand).await;
    }
}

#[tokio::test]
async fn x402_verify_faults() {
    x402_matrix(X402Path::Verify).await;
}

#[tokio::test]
async fn x402_settle_faults() {
    x402_matrix(X402Path::Settle).await;
}

#[tokio::test]
async fn x402_settle_status_polling_faults() {
    x402_matrix(X402Path::StatusPolling).await;
}

// ---------------------------------------------------------------------------------------------
// MPP charge settle
// ---------------------------------------------------------------------------------------------

type Unknown = Arc<Mutex<Vec<(Credential, String)>>>;

fn ctx(authorization: Option<&str>) -> RequestContext {
    let mut headers = http::HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a.parse().expect("header value"));
    }
    RequestContext::new(http::Method::GET, "http://api.example.com/premium".into(), headers)
}

fn watch_unknown(mpp: Mpp) -> (Mpp, Unknown, Arc<AtomicUsize>) {
    let unknown: Unknown = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let (u, f) = (Arc::clone(&unknown), Arc::clone(&failed));
    let mpp = mpp
        .on_settlement_unknown(move |credential, error| {
            u.lock().expect("unknown").push((credential.clone(), error.to_string()));
        })
        .on_payment_failed(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
        });
    (mpp, unknown, failed)
}

async fn challenge_of(mpp: &Mpp, spec: &PaySpec) -> ParsedChallenge {
    let resp = mpp.process(&ctx(None), spec).await.expect_err("unpaid");
    assert_eq!(resp.status, 402);
    let www = resp.headers.get("www-authenticate").expect("challenge").to_str().expect("ascii").to_owned();
    parse_www_authenticate(&[&www]).expect("challenge parses").remove(0)
}

/// The problem body of a refusal: (status, title).
fn problem(resp: &pay402::web::PaymentHttpResponse) -> (u16, String) {
    let body: Value =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&resp.body)));
    (resp.status.as_u16(), body["title"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn mpp_charge_settle_faults() {
    for fault in ALL_FAULTS {
        let baseline = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let sa = EmbeddedSa::new();
        let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
        sa.fund(X_LAYER_USDT0, PAYER, U256::from(1_000_000u64)).expect("fund");
        let stand = FaultServer::start(sa.clone());
        stand.set_fault("/charge/settle", fault);
        let what = format!("MPP charge / {fault:?}");
        let (status, title) = {
            let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa_client(&stand)));
            let (mpp, unknown, failed) = watch_unknown(
                Mpp::new(method, "api.example.com", "fault-mpp-at-least-32-bytes-long-hmac-key").expect("mpp"),
            );
            let spec = PaySpec::charge("0.01");
            let c = challenge_of(&mpp, &spec).await;
            let credential = MppChargeClient::new(buyer).credential_for(&c).expect("credential");
            let header = credential.to_authorization_header();
            let resp = mpp.process(&ctx(Some(&header)), &spec).await.expect_err("never served");
            let (status, title) = problem(&resp);
            assert!(!String::from_utf8_lossy(&resp.body).contains(SECRET_BODY));
            assert!(resp.headers.get("payment-receipt").is_none(), "{what}");
            // The outcome is unknown: the reconciliation event has the buyer's credential.
            let seen = unknown.lock().expect("unknown").clone();
            assert_eq!(seen.len(), 1, "{what}: {seen:?}");
            assert_eq!(seen[0].0, credential, "{what}");
            assert_eq!(failed.load(Ordering::SeqCst), 1, "{what}");
            assert_eq!(resp.headers["retry-after"], "2", "{what}");
            assert!(resp.headers.get("www-authenticate").is_none(), "{what}: no new challenge");
            // The stand-in's SA did charge before misbehaving. Once it is healthy again, the same
            // credential is re-submitted; the SA refuses the used authorization, which proves
            // nothing: still 503, never a new challenge inviting a second authorization.
            stand.clear_faults();
            let again = mpp.process(&ctx(Some(&header)), &spec).await.expect_err("still unknown");
            assert_eq!(again.status.as_u16(), 503, "{what}");
            assert!(again.headers.get("www-authenticate").is_none(), "{what}");
            assert_eq!(sa.charge_count(), 1, "{what}: charged once");
            (status, title)
        };
        assert_eq!((status, title.as_str()), (503, "InternalSAError"), "{what}");
        row(
            "MPP charge settle",
            fault,
            "503 + Retry-After, problem `InternalSAError`, no receipt, not served; on_settlement_unknown(credential); a retry with the same credential is re-submitted (still 503 unless it settles), never a new challenge",
        );
        assert_no_leaks(&what, baseline, &stand).await;
    }
}

// ---------------------------------------------------------------------------------------------
// MPP sessions: open, topUp, settle (merchant), close
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionPath {
    Open,
    TopUp,
    Settle,
    Close,
}

const COST: u128 = 1000;

#[tokio::test]
async fn session_open_faults() {
    session_matrix(SessionPath::Open).await;
}

#[tokio::test]
async fn session_top_up_faults() {
    session_matrix(SessionPath::TopUp).await;
}

#[tokio::test]
async fn session_settle_faults() {
    session_matrix(SessionPath::Settle).await;
}

#[tokio::test]
async fn session_close_faults() {
    session_matrix(SessionPath::Close).await;
}

async fn session_matrix(path: SessionPath) {
    for fault in ALL_FAULTS {
        let baseline = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
        sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
        let stand = FaultServer::start(sa.clone());
        let what = format!("session {path:?} / {fault:?}");
        {
            let store = Arc::new(InMemoryChannelStore::new());
            let intent = SessionIntent::new(sa_client(&stand), PAYEE)
                .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("payee key")))
                .store(Arc::clone(&store) as Arc<dyn ChannelStore>);
            let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
            let (mpp, unknown, _) = watch_unknown(
                Mpp::new(method, "api.example.com", "fault-mpp-at-least-32-bytes-long-hmac-key").expect("mpp"),
            );
            let spec = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
            let client = SessionClient::new(signer_from_hex(PAYER_KEY).expect("payer key"))
                .with_registry(NetworkRegistry::x_layer());
            let c = challenge_of(&mpp, &spec).await;

            let (channel, open_header) = client.open_header(&c, U256::from(5_000_000u64)).expect("open");
            if path == SessionPath::Open {
                stand.set_fault("/session/open", fault);
            }
            let resp = mpp.process(&ctx(Some(&open_header)), &spec).await.expect_err("management answer");
            if path == SessionPath::Open {
                let (status, title) = problem(&resp);
                assert_eq!((status, title.as_str()), (503, "InternalSAError"), "{what}");
                assert!(
                    store.get(&channel).await.expect("store").is_none(),
                    "{what}: no channel before the SA answers"
                );
                let seen = unknown.lock().expect("unknown").clone();
                assert_eq!(seen.len(), 1, "{what}");
                assert_eq!(seen[0].0.payload["action"], "open", "{what}");
                // A voucher on the unknown channel is not served.
                let voucher = client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
                let refused = mpp.process(&ctx(Some(&voucher)), &spec).await.expect_err("not served");
                assert_eq!(problem(&refused).0, 410, "{what}");
                row(
                    "session open",
                    fault,
                    "503 + Retry-After, problem `InternalSAError`; channel not stored, vouchers on it refused (410); on_settlement_unknown(open credential)",
                );
                drop((mpp, intent));
                assert_no_leaks(&what, baseline, &stand).await;
                continue;
            }
            assert_eq!(resp.status, 200, "{what}: {}", String::from_utf8_lossy(&resp.body));
            // One paid request.
            let voucher = client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
            let paid = mpp.process(&ctx(Some(&voucher)), &spec).await.expect("voucher served");
            paid.finish(http::StatusCode::OK).await.expect("commit");
            let before = store.get(&channel).await.expect("store").expect("channel").value;
            assert_eq!((before.spent, before.highest_voucher_amount, before.deposit), (COST, COST, 5_000_000));

            match path {
                SessionPath::Open => unreachable!(),
                SessionPath::TopUp => {
                    stand.set_fault("/session/topUp", fault);
                    let header = client.top_up_header(&c, &channel, U256::from(1_000_000u64)).expect("topUp");
                    let resp = mpp.process(&ctx(Some(&header)), &spec).await.expect_err("management answer");
                    let (status, title) = problem(&resp);
                    assert_eq!((status, title.as_str()), (503, "InternalSAError"), "{what}");
                    let seen = unknown.lock().expect("unknown").clone();
                    assert_eq!(seen.len(), 1, "{what}");
                    assert_eq!(seen[0].0.payload["action"], "topUp", "{what}");
                    row(
                        "session topUp",
                        fault,
                        "503 + Retry-After, problem `InternalSAError`; stored deposit unchanged; on_settlement_unknown(topUp credential)",
                    );
                }
                SessionPath::Settle => {
                    stand.set_fault("/session/settle", fault);
                    let err = intent.settle_channel(&channel).await.expect_err("unknown outcome");
                    assert!(matches!(err, PayError::Unknown(_)), "{what}: {err:?}");
                    assert_eq!(err.status(), 500, "{what}");
                    row(
                        "session settle (merchant)",
                        fault,
                        "`settle_channel` → Err(PayError::Unknown) (HTTP 500 class) to the merchant; channel state unchanged",
                    );
                }
                SessionPath::Close => {
                    stand.set_fault("/session/close", fault);
                    let header = client.close_header(&c, &channel, U256::from(COST)).expect("close");
                    let resp = mpp.process(&ctx(Some(&header)), &spec).await.expect_err("management answer");
                    let (status, title) = problem(&resp);
                    assert_eq!((status, title.as_str()), (503, "InternalSAError"), "{what}");
                    let seen = unknown.lock().expect("unknown").clone();
                    assert_eq!(seen.len(), 1, "{what}");
                    assert_eq!(seen[0].0.payload["action"], "close", "{what}");
                    row(
                        "session close",
                        fault,
                        "503 + Retry-After, problem `InternalSAError`; channel kept in the store, closing: further vouchers 410 (merchant can retry `close_channel`); on_settlement_unknown(close credential)",
                    );
                }
            }
            // The seller's view of the channel is exactly as before the failed call.
            let after = store.get(&channel).await.expect("store").expect("channel kept");
            assert_eq!(after.value.spent, before.spent, "{what}");
            assert_eq!(after.value.deposit, before.deposit, "{what}");
            assert_eq!(after.value.highest_voucher_amount, before.highest_voucher_amount, "{what}");
            assert_eq!(after.value.reserved, 0, "{what}");
            // Nothing more is served than was paid for: a replay of the first voucher is refused
            // (402; 410 once a close is under way — the channel is closing, whatever the SA did).
            let replay = mpp.process(&ctx(Some(&voucher)), &spec).await.expect_err("replay refused");
            let want = if path == SessionPath::Close { 410 } else { 402 };
            assert_eq!(problem(&replay).0, want, "{what}");
            drop((mpp, intent));
        }
        assert_no_leaks(&what, baseline, &stand).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Resource limits on buyer input (issue 9 §2)
// ---------------------------------------------------------------------------------------------

/// An x402 payment header over [`pay402::x402::MAX_HEADER_BYTES`] is refused with 431 and a JSON
/// body naming the limit, before any facilitator call; one just under the limit that is garbage
/// gets the ordinary unpaid 402.
#[tokio::test]
async fn oversize_x402_payment_header_is_431() {
    let stand = FaultServer::start(EmbeddedSa::new());
    let facilitator =
        OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds()).base_url(&stand.url).timeout(TIMEOUT))
            .expect("facilitator client");
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route("GET /paid", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .expect("route");
    let app = axum::Router::new()
        .route("/paid", axum::routing::get(|| async { SECRET_BODY }))
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;
    let http = reqwest::Client::new();
    let url = format!("{}/paid", running.base);
    for name in ["PAYMENT-SIGNATURE", "X-PAYMENT"] {
        let big = "A".repeat(pay402::x402::MAX_HEADER_BYTES + 4);
        let resp = http.get(&url).header(name, big).send().await.expect("request");
        assert_eq!(resp.status(), 431, "{name}");
        let body: Value = resp.json().await.expect("JSON body");
        let error = body["error"].as_str().expect("error text");
        assert!(error.contains("65536-byte limit"), "{error}");
        let small = "A".repeat(pay402::x402::MAX_HEADER_BYTES);
        let resp = http.get(&url).header(name, small).send().await.expect("request");
        assert_eq!(resp.status(), 402, "{name}: undecodable but within the limit ⇒ unpaid");
    }
    assert!(!stand.calls().iter().any(|c| c.ends_with("/verify")), "no facilitator call for refused headers");
}

/// An MPP credential over the limit is a malformed credential (402 problem naming the limit,
/// with a fresh challenge) — pympp's error family has no 431 — and never reaches the SA.
#[tokio::test]
async fn oversize_mpp_credential_is_a_malformed_credential() {
    let stand = FaultServer::start(EmbeddedSa::new());
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa_client(&stand)));
    let mpp = Mpp::new(method, "api.example.com", "fault-mpp-at-least-32-bytes-long-hmac-key").expect("mpp");
    let spec = PaySpec::charge("0.01");
    let big = format!("Payment {}", "A".repeat(pay402::mpp::MAX_CREDENTIAL_B64_BYTES + 1));
    let resp = mpp.process(&ctx(Some(&big)), &spec).await.expect_err("refused");
    let body: Value = serde_json::from_slice(&resp.body).expect("problem JSON");
    assert_eq!(resp.status, 402);
    assert_eq!(body["type"], "https://paymentauth.org/problems/malformed-credential");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("-byte limit")), "{body}");
    assert!(resp.headers.get("www-authenticate").is_some(), "a fresh challenge");
    assert!(stand.calls().is_empty(), "the SA is never called");
}

/// Cheaper-route reuse (SECURITY.md threat model): an x402 payment made for a cheaper route and
/// presented to a dearer one is refused locally — 402 "No matching payment requirements", no
/// facilitator call, handler not run.
#[tokio::test]
async fn x402_payment_for_a_cheaper_route_is_refused() {
    let stand = FaultServer::start(EmbeddedSa::new());
    let facilitator =
        OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds()).base_url(&stand.url).timeout(TIMEOUT))
            .expect("facilitator client");
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route("GET /cheap", RouteConfig::new(PaymentOption::exact("$0.001", PAY_TO)))
        .and_then(|s| s.route("GET /premium", RouteConfig::new(PaymentOption::exact("$0.01", PAY_TO))))
        .expect("routes");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let handler = move || {
        c.fetch_add(1, Ordering::SeqCst);
        async { SECRET_BODY }
    };
    let app = axum::Router::new()
        .route("/cheap", axum::routing::get(handler.clone()))
        .route("/premium", axum::routing::get(handler))
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;
    let http = reqwest::Client::new();
    let unpaid = http.get(format!("{}/cheap", running.base)).send().await.expect("unpaid");
    let header = unpaid.headers()["payment-required"].to_str().expect("ascii").to_owned();
    let required = decode_payment_required_header(&header).expect("challenge");
    let buyer: PrivateKeySigner = PAYER_KEY.parse().expect("key");
    let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer));
    let (name, value) = client.create_payment_header(&required).await.expect("payment");
    let resp = http.get(format!("{}/premium", running.base)).header(name, value).send().await.expect("request");
    assert_eq!(resp.status(), 402);
    let challenge = resp.headers()["payment-required"].to_str().expect("ascii").to_owned();
    let AnyPaymentRequired::V2(again) = decode_payment_required_header(&challenge).expect("challenge") else {
        panic!("v1 challenge")
    };
    assert_eq!(again.error.as_deref(), Some("No matching payment requirements"));
    assert!(!resp.text().await.expect("body").contains(SECRET_BODY));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(!stand.calls().iter().any(|c| c.ends_with("/verify")), "refused before the facilitator");
}

// ---------------------------------------------------------------------------------------------
// Lying remotes (SECURITY.md: facilitator compromise)
// ---------------------------------------------------------------------------------------------

/// A facilitator whose settle answer contradicts itself (`success: true`, status `failed`) does
/// not get the handler's body served: 402 with a failure PAYMENT-RESPONSE, settle-failure hook.
#[tokio::test]
async fn x402_contradictory_settle_answer_fails_closed() {
    let stand = FaultServer::start(EmbeddedSa::new());
    stand.set_fault("/settle", Fault::Lie);
    let (status, body, response, handler_runs, events) = x402_scenario(&stand, X402Path::Settle).await;
    assert_eq!(status, 402, "{body}");
    assert!(!body.contains(SECRET_BODY));
    assert_eq!(handler_runs, 1);
    let r = response.expect("PAYMENT-RESPONSE");
    assert!(!r.success, "{r:?}");
    assert_eq!(r.transaction, TX);
    let ev = events.lock().expect("events");
    assert!(matches!(ev.settle_failures.as_slice(), [(_, SettleFailure::Failed(_))]), "{:?}", ev.settle_failures);
    assert_eq!(ev.after_settle, 0);
}

/// An SA whose session-open receipt names another channel: the open is refused as an unknown
/// outcome (503 + Retry-After, reported for reconciliation), nothing is stored, and no voucher is served.
#[tokio::test]
async fn session_open_receipt_for_another_channel_fails_closed() {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
    let stand = FaultServer::start(sa);
    stand.set_fault("/session/open", Fault::Lie);
    let store = Arc::new(InMemoryChannelStore::new());
    let intent = SessionIntent::new(sa_client(&stand), PAYEE)
        .signer(Arc::new(signer_from_hex(PAYEE_KEY).expect("payee key")))
        .store(Arc::clone(&store) as Arc<dyn ChannelStore>);
    let (mpp, unknown, _) = watch_unknown(
        Mpp::new(
            EvmMethod::x_layer(PAYEE).with_session(intent),
            "api.example.com",
            "fault-mpp-at-least-32-bytes-long-hmac-key",
        )
        .expect("mpp"),
    );
    let spec = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let client =
        SessionClient::new(signer_from_hex(PAYER_KEY).expect("payer key")).with_registry(NetworkRegistry::x_layer());
    let c = challenge_of(&mpp, &spec).await;
    let (channel, open) = client.open_header(&c, U256::from(5_000_000u64)).expect("open");
    let resp = mpp.process(&ctx(Some(&open)), &spec).await.expect_err("refused");
    assert_eq!(problem(&resp), (503, "InternalSAError".to_owned()));
    // The reason ("the SA reported another channel id") is logged; buyers get the generic detail (L4).
    let body: Value = serde_json::from_slice(&resp.body).expect("problem");
    assert_eq!(body["detail"], "InternalSAError");
    assert!(store.get(&channel).await.expect("store").is_none());
    assert_eq!(unknown.lock().expect("unknown").len(), 1);
    let voucher = client.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
    assert!(mpp.process(&ctx(Some(&voucher)), &spec).await.is_err(), "no voucher is served");
}
