//! The x402 `upto` scheme, seller side, over HTTP: `#[x402(scheme = "upto", max = "$0.10")]`
//! on axum and actix and a route-table `PaymentOption::upto` route, against a local facilitator
//! stand-in (an axum app serving `/supported`, `/verify` and `/settle` that checks the Permit2
//! signature, the amounts and the named facilitator, and records every request). The buyer's
//! payment is a real Permit2 `PermitWitnessTransferFrom` for the upto proxy, signed here.
//!
//! For each route: the 402 offers `amount` = the maximum with `extra.assetTransferMethod =
//! "permit2"` and `extra.facilitatorAddress` from `/supported`; a handler reporting $0.0347
//! settles 34 700 units (and `PAYMENT-RESPONSE` says so); `none()` calls no `/settle` and
//! answers `amount: "0"`; $0.11 is refused (500, no body, no `/settle`, the authorization
//! reusable); not reporting settles the maximum; `set_fraction` settles its share, rounded down.

mod support;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use pay402::evm::permit2::{Permit2Authorization, UPTO_PERMIT2_PROXY, random_permit2_nonce};
use pay402::evm::{Address, PrivateKeySigner, U256};
use pay402::x402::{
    AnyPaymentRequired, HttpFacilitatorClient, HttpFacilitatorConfig, PaymentOption, PaymentPayload,
    PaymentRequirements, RouteConfig, UptoCharge, UptoEvmScheme, X402HttpServer, X402ResourceServer,
    decode_payment_required_header, decode_payment_response_header, encode_payment_signature_header,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
const FACILITATOR: &str = "0x2222222222222222222222222222222222222222";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
const TX: &str = "0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
const BODY: &str = "the metered answer";

// ---------------------------------------------------------------------------------------------
// The facilitator stand-in
// ---------------------------------------------------------------------------------------------

/// How `/settle` answers the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AmountAnswer {
    /// The amount asked for.
    Echo,
    /// No `amount` field.
    Omit,
    /// Another amount (a lying facilitator).
    Other(u64),
}

#[derive(Default)]
struct Recorded {
    verify: Vec<Value>,
    settle: Vec<Value>,
    problems: Vec<String>,
}

#[derive(Clone)]
struct StandIn {
    recorded: Arc<Mutex<Recorded>>,
    answer: Arc<Mutex<AmountAnswer>>,
    /// How many `/settle` calls still answer 502 (an unknown outcome for the seller).
    fail_settles: Arc<Mutex<usize>>,
    announce: bool,
}

impl StandIn {
    fn settled_amounts(&self) -> Vec<String> {
        let recorded = self.recorded.lock().expect("recorded");
        assert!(recorded.problems.is_empty(), "the stand-in refused requests: {:#?}", recorded.problems);
        recorded.settle.iter().map(|b| b["paymentRequirements"]["amount"].as_str().unwrap_or("?").to_owned()).collect()
    }

    fn verifies(&self) -> usize {
        self.recorded.lock().expect("recorded").verify.len()
    }
}

/// Checks a `/verify` or `/settle` body as a facilitator would: a Permit2 upto authorization
/// signed by its `from`, for the upto proxy, naming this facilitator, paying `payTo` in the
/// asset; at verify `permitted.amount` = the requirements' amount, at settle at most it.
fn check(body: &Value, settling: bool) -> Result<(), String> {
    let req: PaymentRequirements =
        serde_json::from_value(body["paymentRequirements"].clone()).map_err(|e| format!("requirements: {e}"))?;
    let payload: PaymentPayload =
        serde_json::from_value(body["paymentPayload"].clone()).map_err(|e| format!("payload: {e}"))?;
    let (auth, signature) = Permit2Authorization::from_payload(&payload.payload).map_err(|e| e.to_string())?;
    let amount = U256::from_str_radix(&req.amount, 10).map_err(|e| e.to_string())?;
    let problems = [
        (auth.verify_signature(&signature, 196), "signature"),
        (auth.spender == UPTO_PERMIT2_PROXY, "spender"),
        (auth.facilitator == Some(FACILITATOR.parse::<Address>().expect("address")), "facilitator"),
        (auth.to == req.pay_to.parse::<Address>().expect("payTo"), "recipient"),
        (auth.token == req.asset.parse::<Address>().expect("asset"), "token"),
        (if settling { amount <= auth.amount } else { amount == auth.amount }, "amount"),
        (req.scheme == "upto" && req.extra.get("facilitatorAddress") == Some(&json!(FACILITATOR)), "extra"),
    ];
    match problems.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err(format!("bad {what}: {body}")),
        None => Ok(()),
    }
}

async fn supported(State(s): State<StandIn>) -> axum::Json<Value> {
    let extra = if s.announce { json!({"facilitatorAddress": FACILITATOR}) } else { json!({}) };
    axum::Json(json!({"kinds": [
        {"x402Version": 2, "scheme": "exact", "network": "eip155:196"},
        {"x402Version": 2, "scheme": "upto", "network": "eip155:196", "extra": extra},
    ], "extensions": [], "signers": {}}))
}

async fn verify(State(s): State<StandIn>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    let mut recorded = s.recorded.lock().expect("recorded");
    recorded.verify.push(body.clone());
    match check(&body, false) {
        Ok(()) => axum::Json(
            json!({"isValid": true, "payer": body["paymentPayload"]["payload"]["permit2Authorization"]["from"]}),
        ),
        Err(problem) => {
            recorded.problems.push(problem);
            axum::Json(json!({"isValid": false, "invalidReason": "invalid_payload"}))
        }
    }
}

async fn settle(
    State(s): State<StandIn>,
    axum::Json(body): axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let mut recorded = s.recorded.lock().expect("recorded");
    recorded.settle.push(body.clone());
    let mut failing = s.fail_settles.lock().expect("fail_settles");
    if *failing > 0 {
        *failing -= 1;
        return (axum::http::StatusCode::BAD_GATEWAY, axum::Json(json!({"error": "upstream"})));
    }
    if let Err(problem) = check(&body, true) {
        recorded.problems.push(problem);
        let refused =
            json!({"success": false, "errorReason": "invalid_payload", "transaction": "", "network": "eip155:196"});
        return (axum::http::StatusCode::OK, axum::Json(refused));
    }
    let mut answer = json!({"success": true, "transaction": TX, "network": "eip155:196",
        "payer": body["paymentPayload"]["payload"]["permit2Authorization"]["from"]});
    match *s.answer.lock().expect("answer") {
        AmountAnswer::Echo => answer["amount"] = body["paymentRequirements"]["amount"].clone(),
        AmountAnswer::Omit => {}
        AmountAnswer::Other(n) => answer["amount"] = json!(n.to_string()),
    }
    (axum::http::StatusCode::OK, axum::Json(answer))
}

async fn start_facilitator(announce: bool) -> (StandIn, Running) {
    let state = StandIn {
        recorded: Default::default(),
        answer: Arc::new(Mutex::new(AmountAnswer::Echo)),
        fail_settles: Default::default(),
        announce,
    };
    let app = axum::Router::new()
        .route("/supported", get(supported))
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .with_state(state.clone());
    (state, support::serve_axum(app).await)
}

// ---------------------------------------------------------------------------------------------
// The seller
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Report {
    how: String,
}

/// What the handler reports, from `?how=`: `amount:0.0347`, `atomic:5`, `fraction:37:100`,
/// `none`, `skip` (nothing). A refused report is ignored by the handler on purpose: the server
/// must withhold the response anyway.
fn report(charge: &UptoCharge, how: &str) -> String {
    let parts: Vec<&str> = how.split(':').collect();
    let result = match parts.as_slice() {
        ["amount", money] => charge.set_amount(&format!("${money}")).map(Some),
        ["atomic", n] => charge.set_atomic(U256::from(n.parse::<u64>().expect("atomic"))).map(Some),
        ["fraction", n, d] => charge.set_fraction(n.parse().expect("n"), d.parse().expect("d")).map(Some),
        ["none"] => charge.none().map(Some),
        _ => Ok(None),
    };
    format!("{BODY} ({how}: {result:?})")
}

mod axum_handlers {
    use super::{Report, report};
    use axum::extract::Query;
    use pay402::axum::{UptoCharge, x402};

    #[x402(scheme = "upto", max = "$0.10", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C")]
    pub(crate) async fn metered(charge: UptoCharge, Query(q): Query<Report>) -> String {
        report(&charge, &q.how)
    }
}

mod actix_handlers {
    use super::{Report, report};
    use pay402::actix::{UptoCharge, x402};

    #[actix_web::get("/metered")]
    #[x402(scheme = "upto", max = "$0.10", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C")]
    pub(crate) async fn metered(q: actix_web::web::Query<Report>, charge: UptoCharge) -> String {
        report(&charge, &q.how)
    }
}

/// The seller's three shapes of one upto route.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Macro(Framework),
    Table,
}

const SHAPES: [Shape; 3] = [Shape::Macro(FRAMEWORKS[0]), Shape::Macro(FRAMEWORKS[1]), Shape::Table];

fn seller(facilitator_url: &str, table: bool) -> X402HttpServer {
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(facilitator_url)).expect("client");
    let server = X402ResourceServer::new(client).register("eip155:196", UptoEvmScheme::new());
    let http = X402HttpServer::new(server).pay_to(PAY_TO);
    if table {
        http.route("GET /metered", RouteConfig::new(PaymentOption::upto("$0.10", PAY_TO))).expect("route")
    } else {
        http
    }
}

async fn start_seller(shape: Shape, facilitator_url: &str) -> Running {
    match shape {
        Shape::Macro(Framework::Axum) => {
            let app = axum::Router::new()
                .route("/metered", get(axum_handlers::metered))
                .with_state(seller(facilitator_url, false));
            support::serve_axum(app).await
        }
        Shape::Macro(Framework::Actix) => {
            let data = actix_web::web::Data::new(seller(facilitator_url, false));
            support::serve_actix(move || actix_web::App::new().app_data(data.clone()).service(actix_handlers::metered))
        }
        Shape::Table => {
            let app = axum::Router::new()
                .route(
                    "/metered",
                    get(|charge: UptoCharge, Query(q): Query<Report>| async move { report(&charge, &q.how) }),
                )
                .layer(pay402::axum::X402Layer::new(seller(facilitator_url, true)));
            support::serve_axum(app).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The buyer
// ---------------------------------------------------------------------------------------------

/// The 402 of `url`: its one `upto` offer.
async fn offer(http: &reqwest::Client, url: &str) -> PaymentRequirements {
    let resp = http.get(url).send().await.expect("request");
    assert_eq!(resp.status(), 402, "{url}");
    let header = resp.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    let AnyPaymentRequired::V2(required) = decode_payment_required_header(header).expect("decodes") else {
        panic!("v2 challenge")
    };
    assert_eq!(required.accepts.len(), 1);
    required.accepts[0].clone()
}

/// A Permit2 upto authorization of the whole offer, signed by the buyer, as a header value.
fn pay(offer: &PaymentRequirements) -> String {
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let facilitator = offer.extra["facilitatorAddress"].as_str().expect("facilitatorAddress");
    let auth = Permit2Authorization {
        from: buyer.address(),
        token: offer.asset.parse().expect("asset"),
        amount: U256::from_str_radix(&offer.amount, 10).expect("amount"),
        spender: UPTO_PERMIT2_PROXY,
        nonce: random_permit2_nonce(),
        deadline: U256::from(now + 300),
        to: offer.pay_to.parse().expect("payTo"),
        facilitator: Some(facilitator.parse().expect("facilitator")),
        valid_after: U256::ZERO,
    };
    let signature = auth.sign(&buyer, 196).expect("signs");
    let payload = PaymentPayload {
        x402_version: 2,
        payload: auth.to_payload(&signature),
        accepted: offer.clone(),
        resource: None,
        extensions: None,
    };
    encode_payment_signature_header(&payload).expect("encodes")
}

/// A paid request: status, body, and the settled `amount` and transaction of `PAYMENT-RESPONSE`.
async fn paid(http: &reqwest::Client, url: &str, payment: &str) -> (u16, String, Option<(Option<String>, String)>) {
    let resp = http.get(url).header("payment-signature", payment).send().await.expect("request");
    let status = resp.status().as_u16();
    let settled = resp.headers().get("payment-response").map(|v| {
        let r = decode_payment_response_header(v.to_str().expect("ascii")).expect("decodes");
        assert!(r.success, "{r:?}");
        (r.amount, r.transaction)
    });
    (status, resp.text().await.expect("body"), settled)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_challenge_offers_the_maximum_over_permit2_naming_the_facilitator() {
    let (_facilitator, f) = start_facilitator(true).await;
    for shape in SHAPES {
        let seller = start_seller(shape, &f.base).await;
        let offer = offer(&reqwest::Client::new(), &format!("{}/metered?how=none", seller.base)).await;
        assert_eq!((offer.scheme.as_str(), offer.amount.as_str()), ("upto", "100000"), "{shape:?}");
        assert_eq!(offer.asset.to_ascii_lowercase(), USDT0, "{shape:?}");
        assert_eq!(offer.extra["assetTransferMethod"], json!("permit2"), "{shape:?}");
        assert_eq!(offer.extra["facilitatorAddress"], json!(FACILITATOR), "{shape:?}");
        assert!(offer.extra.contains_key("name") && offer.extra.contains_key("version"), "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_amount_is_settled_and_announced() {
    for shape in SHAPES {
        let (facilitator, f) = start_facilitator(true).await;
        let seller = start_seller(shape, &f.base).await;
        let http = reqwest::Client::new();
        let url = format!("{}/metered?how=amount:0.0347", seller.base);
        let payment = pay(&offer(&http, &url).await);
        let (status, body, settled) = paid(&http, &url, &payment).await;
        assert_eq!(status, 200, "{shape:?}: {body}");
        assert!(body.starts_with(BODY), "{shape:?}: {body}");
        assert_eq!(settled, Some((Some("34700".to_owned()), TX.to_owned())), "{shape:?}");
        assert_eq!(facilitator.settled_amounts(), ["34700"], "{shape:?}");
        assert_eq!(facilitator.verifies(), 1, "{shape:?}");
        // The authorization is spent: sending it again is a replay.
        let (again, _, _) = paid(&http, &url, &payment).await;
        assert_eq!(again, 402, "{shape:?}");
        assert_eq!(facilitator.settled_amounts(), ["34700"], "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_settles_nothing_and_calls_no_facilitator() {
    for shape in SHAPES {
        let (facilitator, f) = start_facilitator(true).await;
        let seller = start_seller(shape, &f.base).await;
        let http = reqwest::Client::new();
        let url = format!("{}/metered?how=none", seller.base);
        let payment = pay(&offer(&http, &url).await);
        let (status, body, settled) = paid(&http, &url, &payment).await;
        assert_eq!(status, 200, "{shape:?}: {body}");
        assert!(body.starts_with(BODY), "{shape:?}");
        assert_eq!(settled, Some((Some("0".to_owned()), String::new())), "{shape:?}");
        assert!(facilitator.settled_amounts().is_empty(), "{shape:?}");
        // The authorization stays consumed.
        let (again, _, _) = paid(&http, &url, &payment).await;
        assert_eq!(again, 402, "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_maximum_releases_nothing_and_settles_nothing() {
    for shape in SHAPES {
        let (facilitator, f) = start_facilitator(true).await;
        let seller = start_seller(shape, &f.base).await;
        let http = reqwest::Client::new();
        let over = format!("{}/metered?how=amount:0.11", seller.base);
        let payment = pay(&offer(&http, &over).await);
        let resp = http.get(&over).header("payment-signature", &payment).send().await.expect("request");
        assert_eq!(resp.status(), 500, "{shape:?}");
        assert!(resp.headers().get("payment-response").is_none(), "{shape:?}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains(BODY), "{shape:?}: the handler's body leaked: {body}");
        assert!(facilitator.settled_amounts().is_empty(), "{shape:?}");
        // No money moved and the authorization was not used: it pays a correct request.
        let fine = format!("{}/metered?how=atomic:5", seller.base);
        let (status, _, settled) = paid(&http, &fine, &payment).await;
        assert_eq!((status, settled), (200, Some((Some("5".to_owned()), TX.to_owned()))), "{shape:?}");
        assert_eq!(facilitator.settled_amounts(), ["5"], "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_report_settles_the_maximum_and_fractions_round_down() {
    for shape in SHAPES {
        let (facilitator, f) = start_facilitator(true).await;
        // A facilitator that does not echo the amount: PAYMENT-RESPONSE says what was asked.
        *facilitator.answer.lock().expect("answer") = AmountAnswer::Omit;
        let seller = start_seller(shape, &f.base).await;
        let http = reqwest::Client::new();
        for (how, want) in [("skip", "100000"), ("fraction:1:3", "33333"), ("fraction:37:100", "37000")] {
            let url = format!("{}/metered?how={how}", seller.base);
            let payment = pay(&offer(&http, &url).await);
            let (status, body, settled) = paid(&http, &url, &payment).await;
            assert_eq!(status, 200, "{shape:?} {how}: {body}");
            assert_eq!(settled, Some((Some(want.to_owned()), TX.to_owned())), "{shape:?} {how}");
        }
        assert_eq!(facilitator.settled_amounts(), ["100000", "33333", "37000"], "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_settling_another_amount_is_refused() {
    let (facilitator, f) = start_facilitator(true).await;
    *facilitator.answer.lock().expect("answer") = AmountAnswer::Other(100_000);
    let seller = start_seller(Shape::Macro(Framework::Axum), &f.base).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metered?how=amount:0.0347", seller.base);
    let payment = pay(&offer(&http, &url).await);
    let resp = http.get(&url).header("payment-signature", &payment).send().await.expect("request");
    assert_eq!(resp.status(), 402);
    let header = resp.headers().get("payment-response").expect("PAYMENT-RESPONSE").to_str().expect("ascii");
    let failure = decode_payment_response_header(header).expect("decodes");
    assert!(!failure.success);
    assert_eq!(failure.error_reason.as_deref(), Some(pay402::x402::SETTLED_AMOUNT_MISMATCH));
    assert!(!resp.text().await.expect("body").contains(BODY));
    assert_eq!(facilitator.settled_amounts(), ["34700"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_without_facilitator_address_cannot_serve_upto() {
    // The route table only: an attribute's route is a process-wide `static` whose requirements,
    // once built by another test's server in this process, are reused.
    let (facilitator, f) = start_facilitator(false).await;
    let seller = start_seller(Shape::Table, &f.base).await;
    let resp = reqwest::Client::new().get(format!("{}/metered?how=none", seller.base)).send().await.expect("req");
    assert_eq!(resp.status(), 500, "the misconfigured route answers 500");
    assert!(resp.headers().get("payment-required").is_none());
    assert_eq!(facilitator.verifies(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_is_resettled_with_the_reported_amount_never_the_maximum() {
    for shape in SHAPES {
        let (facilitator, f) = start_facilitator(true).await;
        // The first /settle answers 502 (outcome unknown); the facilitator never echoes amounts.
        *facilitator.fail_settles.lock().expect("fail_settles") = 1;
        *facilitator.answer.lock().expect("answer") = AmountAnswer::Omit;
        let seller = start_seller(shape, &f.base).await;
        let http = reqwest::Client::new();
        let url = format!("{}/metered?how=amount:0.0347", seller.base);
        let payment = pay(&offer(&http, &url).await);
        let first = http.get(&url).header("payment-signature", &payment).send().await.expect("request");
        assert_eq!(first.status(), 503, "{shape:?}: an unknown outcome is pending, never a fresh 402");
        assert!(!first.text().await.expect("body").contains(BODY), "{shape:?}");
        // The buyer retries with the same payment: the recorded settle-time requirements are
        // re-settled (34 700 units, not the maximum) and the first response is delivered.
        let (status, body, settled) = paid(&http, &url, &payment).await;
        assert_eq!(status, 200, "{shape:?}: {body}");
        assert!(body.starts_with(BODY), "{shape:?}");
        assert_eq!(settled, Some((Some("34700".to_owned()), TX.to_owned())), "{shape:?}");
        assert_eq!(facilitator.settled_amounts(), ["34700", "34700"], "{shape:?}");
    }
}
