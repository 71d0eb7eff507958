//! The MPP `evm` **session** intent end to end over real HTTP, on axum (route table `MppLayer`
//! and the `#[pay(intent = "session")]` macro) and actix-web (`MppMiddleware`, and `#[get]` +
//! `#[pay(intent = "session")]`).
//!
//! The seller's [`SessionIntent`] talks to the Settlement Agent through [`OkxSaClient`], pointed
//! at a stand-in on 127.0.0.1 that re-checks every request on its own (`OK-ACCESS-*` headers,
//! the HMAC with the tests' own hmac/sha2/base64 code, the seconds-only timestamp, the compact
//! JSON body re-serialised byte for byte from the typed request) and delegates the work to an
//! [`EmbeddedSa`] (an in-memory escrow), so balances can be checked after every step.

mod support;

use axum::http::StatusCode;
use pay402::axum::{Credential, Mpp, Receipt, pay};
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelState, ChannelStore, EmbeddedSa, EvmMethod, ParsedChallenge, PaySpec, SessionClient, SessionIntent,
    b64url_decode, parse_www_authenticate,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
// The payee (Anvil account 1) signs settle/close authorizations.
use support::accounts::{ESCROW, OTHER_KEY, PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use support::session_sa::{SA_BASE, SaStandIn};
use support::{FRAMEWORKS, Framework, Running};

const MPP_SECRET: &str = "session-e2e-mpp-secret-at-least-32-bytes-long-hmac-key";
const REALM: &str = "api.example.com";
const FUNDS: u64 = 10_000_000;
const COST: u128 = 1000;
const PROBLEMS: &str = "https://paymentauth.org/problems/";

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

fn u(v: u64) -> U256 {
    U256::from(v)
}

// ---------------------------------------------------------------------------------------------
// The seller on both frameworks
// ---------------------------------------------------------------------------------------------

/// Handler runs of the `#[pay]` route (a plain fn cannot capture a counter).
static MACRO_CALLS: AtomicUsize = AtomicUsize::new(0);
/// The scenarios share [`MACRO_CALLS`]: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A metered call through the macro.
#[pay(amount = "0.001", intent = "session")]
async fn macro_metered(credential: Credential, receipt: Receipt) -> axum::Json<Value> {
    MACRO_CALLS.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"data": "metered", "channel": receipt.reference, "payer": credential.source}))
}

/// The same metered call through actix's `#[get]` + `#[pay]`.
#[actix_web::get("/macro")]
#[pay402::actix::pay(amount = "0.001", intent = "session")]
async fn actix_macro_metered(credential: Credential, receipt: Receipt) -> actix_web::HttpResponse {
    MACRO_CALLS.fetch_add(1, Ordering::SeqCst);
    actix_web::HttpResponse::Ok()
        .json(json!({"data": "metered", "channel": receipt.reference, "payer": credential.source}))
}

struct Seller {
    running: Running,
    standin: SaStandIn,
    sa: EmbeddedSa,
    intent: SessionIntent,
    calls: Arc<AtomicUsize>,
    http: reqwest::Client,
}

fn session_spec() -> PaySpec {
    PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() }
}

async fn start(fw: Framework) -> Seller {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, u(FUNDS)).expect("fund");
    let standin = SaStandIn::start(sa.clone()).await;
    let intent = SessionIntent::new(standin.client(), PAYEE).signer(Arc::new(key(PAYEE_KEY)));
    let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
    let mpp = Mpp::new(method, REALM, MPP_SECRET)
        .expect("mpp")
        .route("GET /metered", session_spec())
        .and_then(|m| m.route("GET /broken", session_spec()))
        .expect("routes");
    let calls = Arc::new(AtomicUsize::new(0));
    let running = match fw {
        Framework::Axum => {
            let c = Arc::clone(&calls);
            let metered = move |credential: Credential, receipt: Receipt| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(json!({"data": "metered", "channel": receipt.reference, "payer": credential.source}))
                }
            };
            let c = Arc::clone(&calls);
            let broken = move |_: Credential| {
                c.fetch_add(1, Ordering::SeqCst);
                async move { (StatusCode::INTERNAL_SERVER_ERROR, "handler failed") }
            };
            let app = axum::Router::new()
                .route("/metered", axum::routing::get(metered))
                .route("/broken", axum::routing::get(broken))
                .route("/macro", axum::routing::get(macro_metered))
                .layer(pay402::axum::MppLayer::new(mpp.clone()))
                .with_state(mpp);
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::{HttpResponse, web};
            let c = Arc::clone(&calls);
            let data = web::Data::new(mpp.clone());
            support::serve_actix(move || {
                let (c1, c2) = (Arc::clone(&c), Arc::clone(&c));
                actix_web::App::new()
                    .app_data(data.clone())
                    .service(actix_macro_metered)
                    .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                    .route(
                        "/metered",
                        web::get().to(move |credential: Credential, receipt: Receipt| {
                            c1.fetch_add(1, Ordering::SeqCst);
                            async move {
                                HttpResponse::Ok().json(
                                    json!({"data": "metered", "channel": receipt.reference, "payer": credential.source}),
                                )
                            }
                        }),
                    )
                    .route(
                        "/broken",
                        web::get().to(move |_: Credential| {
                            c2.fetch_add(1, Ordering::SeqCst);
                            async move { HttpResponse::InternalServerError().body("handler failed") }
                        }),
                    )
            })
        }
    };
    Seller { running, standin, sa, intent, calls, http: reqwest::Client::new() }
}

/// The paths under test on a framework: the route table and `#[pay]`.
fn paid_paths(_fw: Framework) -> &'static [&'static str] {
    &["/metered", "/macro"]
}

impl Seller {
    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.running.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.expect("request")
    }

    async fn challenge(&self, path: &str) -> ParsedChallenge {
        let resp = self.get(path, None).await;
        assert_eq!(resp.status(), 402, "{path}");
        let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        let c = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        assert!(c.verify_id(MPP_SECRET));
        c
    }

    fn handler_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst) + MACRO_CALLS.load(Ordering::SeqCst)
    }

    async fn state(&self, channel: &str) -> ChannelState {
        self.intent.channel_store().get(channel).await.expect("store").expect("channel in the store").value
    }

    /// (payer, escrow, payee) balances.
    fn balances(&self) -> (U256, U256, U256) {
        (self.sa.balance(USDT0, PAYER), self.sa.balance(USDT0, ESCROW), self.sa.balance(USDT0, PAYEE))
    }

    /// A management action: HTTP 200 JSON, handler not run; returns the decoded settlement.
    async fn manage(&self, path: &str, authorization: &str, challenge_id: &str) -> Value {
        let before = self.handler_calls();
        let resp = self.get(path, Some(authorization)).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(resp.headers().get("payment-receipt").is_none());
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
        assert_eq!(body["status"], "ok");
        let receipt = &body["receipt"];
        assert_eq!(
            (&receipt["id"], &receipt["status"], &receipt["method"], &receipt["intent"]),
            (&json!(challenge_id), &json!("success"), &json!("evm"), &json!("session"))
        );
        assert_eq!(self.handler_calls(), before, "{path}: a management action never runs the handler");
        let settlement = b64url_decode(receipt["settlement"].as_str().expect("settlement")).expect("base64url");
        serde_json::from_slice(&settlement).expect("settlement JSON")
    }

    /// A voucher request served by the handler: 200 and its `Payment-Receipt`.
    async fn paid(&self, path: &str, authorization: &str) -> pay402::mpp::Receipt {
        let before = self.handler_calls();
        let resp = self.get(path, Some(authorization)).await;
        assert_eq!(resp.status(), 200, "{path}");
        let receipt =
            pay402::mpp::Receipt::from_payment_receipt(resp.headers()["payment-receipt"].to_str().expect("ascii"))
                .expect("receipt");
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
        assert_eq!(body["data"], "metered");
        assert_eq!(body["channel"], receipt.reference.as_str());
        assert_eq!(self.handler_calls(), before + 1, "{path}");
        receipt
    }

    /// A refused request: status and problem `type`; the handler is not run.
    async fn refused(&self, path: &str, authorization: &str) -> (u16, String) {
        let before = self.handler_calls();
        let resp = self.get(path, Some(authorization)).await;
        let status = resp.status().as_u16();
        assert!(resp.headers().get("payment-receipt").is_none());
        if status == 402 {
            assert!(resp.headers().get("www-authenticate").is_some(), "{path}: a fresh challenge with a 402");
        }
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("problem JSON");
        assert_eq!(self.handler_calls(), before, "{path}: a refused voucher never runs the handler");
        assert_eq!(body["status"], status);
        (status, body["type"].as_str().unwrap_or_default().to_owned())
    }
}

fn client() -> SessionClient {
    SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer())
}

/// The receipt of a voucher request, field by field.
fn assert_voucher_receipt(r: &pay402::mpp::Receipt, channel: &str, cumulative: u128, remaining: u128, deposit: u128) {
    assert_eq!((r.status.as_str(), r.method.as_str(), r.reference.as_str()), ("success", "evm", channel));
    assert!(r.external_id.is_none());
    let extra: BTreeMap<String, Value> = r.extra.clone().expect("extra").into_iter().collect();
    let want: BTreeMap<String, Value> = [
        ("intent", json!("session")),
        ("channelId", json!(channel)),
        ("cumulativeAmount", json!(cumulative.to_string())),
        ("reserved", json!(COST.to_string())),
        ("voucherCredit", json!(remaining.to_string())),
        ("depositAvailable", json!((deposit - cumulative + remaining).to_string())),
        ("deposit", json!(deposit.to_string())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(extra, want);
}

fn books(s: &ChannelState) -> (u128, u128, u128, u64, u128) {
    (s.deposit, s.highest_voucher_amount, s.spent, s.units, s.reserved)
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn whole_channel_lifecycle_over_http() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        for &path in paid_paths(fw) {
            let what = format!("{fw:?} {path}");
            let seller = start(fw).await;
            let buyer = client();
            let c = seller.challenge(path).await;
            assert_eq!((c.realm.as_str(), c.method.as_str(), c.intent.as_str()), (REALM, "evm", "session"), "{what}");
            assert_eq!(c.request["amount"], "1000");
            assert_eq!(c.request["recipient"], PAYEE);
            assert_eq!(
                c.request["methodDetails"],
                json!({"chainId": 196, "escrowContract": ESCROW, "feePayer": false, "minVoucherDelta": "0"})
            );

            // open
            let (channel, open) = buyer.open_header(&c, u(5_000_000)).expect("open");
            let result = seller.manage(path, &open, &c.id).await;
            let reference = result["reference"].as_str().expect("reference").to_owned();
            assert!(reference.starts_with("0x") && reference.len() == 66, "{what}: {reference}");
            assert_eq!(
                result,
                json!({"channelId": channel, "cumulativeAmount": "0", "escrowContract": ESCROW, "status": "open",
                       "reference": reference}),
                "{what}"
            );
            assert_eq!(books(&seller.state(&channel).await), (5_000_000, 0, 0, 0, 0), "{what}");
            assert_eq!(seller.balances(), (u(FUNDS - 5_000_000), u(5_000_000), u(0)), "{what}");
            let handler_calls = seller.handler_calls();

            // N paid requests, each a fresh voucher.
            for i in 1..=3u128 {
                let header = buyer.next_voucher(&c, &channel, U256::from(COST)).expect("voucher");
                let receipt = seller.paid(path, &header).await;
                assert_voucher_receipt(&receipt, &channel, i * COST, 0, 5_000_000);
                let units = u64::try_from(i).expect("small");
                assert_eq!(books(&seller.state(&channel).await), (5_000_000, i * COST, i * COST, units, 0), "{what}");
            }
            // A voucher signed ahead (3000 over the highest) leaves a remaining balance.
            let ahead = buyer.voucher_header(&c, &channel, U256::from(6000u64)).expect("voucher");
            let receipt = seller.paid(path, &ahead).await;
            assert_voucher_receipt(&receipt, &channel, 6000, 2000, 5_000_000);
            assert_eq!(books(&seller.state(&channel).await), (5_000_000, 6000, 4000, 4, 0), "{what}");
            assert_eq!(seller.balances(), (u(FUNDS - 5_000_000), u(5_000_000), u(0)), "vouchers move no tokens");
            assert_eq!(seller.handler_calls(), handler_calls + 4, "{what}");

            // topUp
            let c2 = seller.challenge(path).await;
            let top_up = buyer.top_up_header(&c2, &channel, u(1_000_000)).expect("topUp");
            let result = seller.manage(path, &top_up, &c2.id).await;
            assert_eq!(
                (&result["channelId"], &result["cumulativeAmount"], &result["status"]),
                (&json!(channel), &json!("6000"), &json!("open")),
                "{what}"
            );
            assert_eq!(books(&seller.state(&channel).await), (6_000_000, 6000, 4000, 4, 0), "{what}");
            assert_eq!(seller.balances(), (u(FUNDS - 6_000_000), u(6_000_000), u(0)), "{what}");

            // More requests: the first two are covered by the voucher signed ahead.
            for (i, (cumulative, remaining)) in [(6000u128, 1000u128), (6000, 0), (7000, 0)].into_iter().enumerate() {
                let header = buyer.voucher_header(&c2, &channel, U256::from(cumulative)).expect("voucher");
                let header = if i == 1 {
                    // The same voucher under a third challenge (each challenge pays once).
                    buyer.voucher_header(&seller.challenge(path).await, &channel, U256::from(cumulative)).unwrap()
                } else {
                    header
                };
                let receipt = seller.paid(path, &header).await;
                assert_voucher_receipt(&receipt, &channel, cumulative, remaining, 6_000_000);
            }
            assert_eq!(books(&seller.state(&channel).await), (6_000_000, 7000, 7000, 7, 0), "{what}");

            // The merchant settles: the payee is paid the highest voucher, the channel stays.
            let settled = seller.intent.settle_channel(&channel).await.expect("settle");
            assert_eq!((settled.cumulative_amount.as_str(), settled.status.as_str()), ("7000", "open"));
            assert_eq!(seller.balances(), (u(FUNDS - 6_000_000), u(6_000_000 - 7000), u(7000)), "{what}");
            assert_eq!(books(&seller.state(&channel).await), (6_000_000, 7000, 7000, 7, 0), "{what}");
            let status = seller.sa.session_status_now(&channel).expect("status");
            assert_eq!((status.settled_on_chain.as_str(), status.session_status.as_str()), ("7000", "OPEN"));

            // One more request after settling, then the buyer closes at the highest voucher.
            let header = buyer.next_voucher(&c2, &channel, U256::from(COST)).expect("voucher");
            assert_voucher_receipt(&seller.paid(path, &header).await, &channel, 8000, 0, 6_000_000);
            let close = buyer.close_header(&c2, &channel, U256::from(8000u64)).expect("close");
            let result = seller.manage(path, &close, &c2.id).await;
            assert_eq!((&result["cumulativeAmount"], &result["status"]), (&json!("8000"), &json!("closed")), "{what}");
            assert!(seller.intent.channel_store().get(&channel).await.expect("store").is_none(), "{what}");
            assert_eq!(seller.balances(), (u(FUNDS - 8000), u(0), u(8000)), "{what}");
            let status = seller.sa.session_status_now(&channel).expect("status");
            assert_eq!((status.session_status.as_str(), status.remaining_balance.as_str()), ("CLOSED", "0"));

            // Nothing is served on a closed channel.
            let after = buyer.next_voucher(&c2, &channel, U256::from(COST)).expect("voucher");
            let (status, kind) = seller.refused(path, &after).await;
            assert_eq!((status, kind), (410, format!("{PROBLEMS}session/channel-not-found")), "{what}");
            assert_eq!(seller.handler_calls(), handler_calls + 8, "{what}");

            // The SA saw exactly the management calls (vouchers need none).
            let calls = seller.standin.calls();
            let want: Vec<String> =
                ["open", "topUp", "settle", "close"].iter().map(|a| format!("{SA_BASE}/session/{a}")).collect();
            assert_eq!(calls, want, "{what}");
        }
    }
}

/// Re-encodes a credential after editing its payload.
fn with_payload(header: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut c = pay402::mpp::Credential::from_authorization_header(header).expect("credential");
    edit(&mut c.payload);
    c.to_authorization_header()
}

#[tokio::test]
async fn bad_vouchers_and_failing_handlers_over_http() {
    let _serial = SERIAL.lock().await;
    for fw in FRAMEWORKS {
        for &path in paid_paths(fw) {
            let what = format!("{fw:?} {path}");
            let seller = start(fw).await;
            let buyer = client();
            let stranger = SessionClient::new(key(OTHER_KEY)).with_registry(NetworkRegistry::x_layer());
            let c = seller.challenge(path).await;
            let (channel, open) = buyer.open_header(&c, u(1_000_000)).expect("open");
            seller.manage(path, &open, &c.id).await;
            let first = buyer.voucher_header(&c, &channel, U256::from(1000u64)).expect("voucher");
            assert_voucher_receipt(&seller.paid(path, &first).await, &channel, 1000, 0, 1_000_000);
            let before = seller.state(&channel).await;
            let funds = seller.balances();

            let good = buyer.voucher_header(&c, &channel, U256::from(2000u64)).expect("voucher");
            let cases: Vec<(&str, String, u16, &str)> = vec![
                (
                    "wrong signer",
                    stranger.voucher_header(&c, &channel, U256::from(2000u64)).unwrap(),
                    402,
                    "session/signer-mismatch",
                ),
                (
                    "equal cumulative, not a replay",
                    stranger.voucher_header(&c, &channel, U256::from(1000u64)).unwrap(),
                    402,
                    "session/delta-too-small",
                ),
                (
                    "above the deposit",
                    buyer.voucher_header(&c, &channel, U256::from(1_000_001u64)).unwrap(),
                    402,
                    "session/amount-exceeds-deposit",
                ),
                (
                    "malformed signature",
                    with_payload(&good, |p| {
                        p.insert("signature".into(), Value::String("0x1234".into()));
                    }),
                    402,
                    "session/invalid-signature",
                ),
                ("replay under the same challenge", first.clone(), 402, "invalid-payload"),
            ];
            for (case, header, status, slug) in cases {
                let got = seller.refused(path, &header).await;
                assert_eq!(got, (status, format!("{PROBLEMS}{slug}")), "{what}: {case}");
                assert_eq!(seller.state(&channel).await, before, "{what}: {case}: the channel changed");
                assert_eq!(seller.balances(), funds, "{what}: {case}: tokens moved");
            }

            // A failing handler is not charged; the voucher still counts and the next works.
            if path == "/metered" {
                let calls = seller.handler_calls();
                let header = buyer.voucher_header(&c, &channel, U256::from(2000u64)).expect("voucher");
                let resp = seller.get("/broken", Some(&header)).await;
                assert_eq!(resp.status(), 500, "{what}");
                assert!(resp.headers().get("payment-receipt").is_none(), "{what}");
                assert_eq!(seller.handler_calls(), calls + 1);
                assert_eq!(books(&seller.state(&channel).await), (1_000_000, 2000, 1000, 1, 0), "{what}");
                // The same request retried succeeds and is charged once.
                assert_voucher_receipt(&seller.paid(path, &header).await, &channel, 2000, 0, 1_000_000);
                assert_eq!(books(&seller.state(&channel).await), (1_000_000, 2000, 2000, 2, 0), "{what}");
            }
            let next = buyer.voucher_header(&c, &channel, U256::from(3000u64)).expect("voucher");
            let spent = seller.state(&channel).await.spent;
            assert_voucher_receipt(&seller.paid(path, &next).await, &channel, 3000, 3000 - spent - COST, 1_000_000);
            assert_eq!(seller.state(&channel).await.spent, spent + COST, "{what}");

            // After close: 410, the handler not run.
            let close = buyer.close_header(&c, &channel, U256::from(3000u64)).expect("close");
            seller.manage(path, &close, &c.id).await;
            let late = buyer.voucher_header(&c, &channel, U256::from(4000u64)).expect("voucher");
            assert_eq!(
                seller.refused(path, &late).await,
                (410, format!("{PROBLEMS}session/channel-not-found")),
                "{what}: after close"
            );
            assert_eq!(seller.balances(), (u(FUNDS - 3000), u(0), u(3000)), "{what}");
        }
    }
}
