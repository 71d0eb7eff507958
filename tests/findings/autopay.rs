//! Findings of the buyer SDK (`pay402::autopay`): F2 (deposits to untrusted escrows, deposits
//! outside the caps), F7 (decimals from the server), F8 (a refused retry released although
//! the signed payment left), L7 (payment headers across redirects), L8 (a fresh session price
//! above the per-request cap).
//!
//! Each test runs `AutoPay` against a malicious seller on 127.0.0.1 that answers hand-crafted
//! 402s and records every signed authorization, deposit and voucher it receives; the sums are
//! checked against the buyer's caps.

use crate::support::{self, accounts::PAYER, accounts::PAYER_KEY};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pay402::autopay::{Amount, AssetId, AutoPay, AutoPayError, AutoPayMiddleware, Protocol};
use pay402::chain::NetworkRegistry;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{Address, PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{Challenge, Credential, b64url_encode};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::{
    AnyPaymentPayload, FacilitatorClient, PaymentRequired, PaymentRequirements, decode_payment_signature_header,
    encode_payment_required_header,
};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};

/// OKX's escrow on X Layer (trusted by default).
const OKX_ESCROW: &str = "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b";
/// Another escrow contract the buyer chose to trust.
const OTHER_ESCROW: &str = "0x2222222222222222222222222222222222222222";
/// The attacker's own account.
const ATTACKER: &str = "0xBAD0000000000000000000000000000000000BAD";
/// A token the registry does not know.
const UNKNOWN_TOKEN: &str = "0x1111111111111111111111111111111111111111";
const SECRET: &str = "evil-seller";

fn u(v: u64) -> U256 {
    U256::from(v)
}

fn usdt0() -> AssetId {
    AssetId::x_layer_usdt0()
}

fn payer() -> PrivateKeySigner {
    signer_from_hex(PAYER_KEY).expect("key")
}

fn amount(text: &str) -> Amount {
    text.parse().expect("amount")
}

fn refusal(err: &reqwest_middleware::Error) -> AutoPayError {
    AutoPayError::from_middleware(err).cloned().unwrap_or_else(|| panic!("not an autopay error: {err}"))
}

/// What the malicious seller received, signed by the buyer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Signed {
    /// An `open` or `topUp` deposit authorization.
    Deposit { to: String, value: U256 },
    /// A session voucher (or close).
    Voucher { channel: String, cumulative: U256 },
    /// An MPP charge authorization.
    Charge { value: U256 },
    /// An x402 payment.
    X402 { value: U256, payload: Box<AnyPaymentPayload> },
}

impl Signed {
    /// Tokens this authorization can move out of the buyer's wallet (a voucher only spends a
    /// deposit already counted).
    fn moves(&self) -> U256 {
        match self {
            Self::Deposit { value, .. } | Self::Charge { value } | Self::X402 { value, .. } => *value,
            Self::Voucher { .. } => U256::ZERO,
        }
    }
}

fn uint(v: Option<&Value>) -> U256 {
    v.and_then(Value::as_str).and_then(|s| s.parse().ok()).expect("a decimal string")
}

/// Decodes the payment a request carries, if any.
fn signed_of(headers: &HeaderMap) -> Option<(Signed, Option<String>)> {
    if let Some(h) = headers.get("payment-signature").or_else(|| headers.get("x-payment")) {
        let payload = decode_payment_signature_header(h.to_str().ok()?).expect("an x402 payment");
        let value = match &payload {
            AnyPaymentPayload::V2(p) => uint(p.payload.get("authorization").and_then(|a| a.get("value"))),
            AnyPaymentPayload::V1(p) => uint(p.payload.get("authorization").and_then(|a| a.get("value"))),
        };
        return Some((Signed::X402 { value, payload: Box::new(payload) }, None));
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = Credential::from_authorization_header(auth).expect("an MPP credential");
    let p = &credential.payload;
    let channel = p.get("channelId").and_then(Value::as_str).map(str::to_owned);
    let signed = match p.get("action").and_then(Value::as_str) {
        Some("open" | "topUp") => {
            let a = p.get("authorization").expect("a deposit authorization");
            Signed::Deposit {
                to: a.get("to").and_then(Value::as_str).expect("to").to_ascii_lowercase(),
                value: uint(a.get("value")),
            }
        }
        Some(_) => Signed::Voucher {
            channel: channel.clone().unwrap_or_default(),
            cumulative: uint(p.get("cumulativeAmount")),
        },
        None => Signed::Charge { value: uint(p.get("authorization").and_then(|a| a.get("value"))) },
    };
    let action = p.get("action").and_then(Value::as_str).map(str::to_owned);
    Some((signed, action.filter(|a| a == "open" || a == "topUp").and(channel)))
}

/// A session challenge (WWW-Authenticate value).
fn session_challenge(realm: &str, recipient: &str, escrow: &str, price: u64, suggested: Option<&str>) -> String {
    let mut request = json!({
        "amount": price.to_string(),
        "currency": X_LAYER_USDT0,
        "recipient": recipient,
        "methodDetails": {"chainId": 196, "escrowContract": escrow, "minVoucherDelta": "0", "feePayer": false},
    });
    if let Some(s) = suggested {
        request["suggestedDeposit"] = json!(s);
    }
    let Value::Object(request) = request else { unreachable!() };
    Challenge::new(SECRET, realm, "evm", "session", request, None, None, None, None)
        .to_www_authenticate()
        .expect("challenge header")
}

/// An MPP charge challenge in `currency`, with an optional `decimals` hint.
fn charge_challenge(currency: &str, price: &str, decimals: Option<u64>) -> String {
    let mut request: Map<String, Value> = Map::new();
    request.insert("amount".into(), json!(price));
    request.insert("currency".into(), json!(currency));
    request.insert("recipient".into(), json!(ATTACKER));
    request.insert("methodDetails".into(), json!({"chainId": 196, "feePayer": false}));
    if let Some(d) = decimals {
        request.insert("decimals".into(), json!(d));
    }
    Challenge::new(SECRET, "evil", "evm", "charge", request, None, None, None, None)
        .to_www_authenticate()
        .expect("challenge header")
}

/// x402 requirements for `price` of `asset`, paid to the attacker.
fn x402_requirements(asset: &str, price: u64) -> PaymentRequirements {
    let Value::Object(extra) = json!({"name": "USD\u{20ae}0", "version": "1"}) else { unreachable!() };
    PaymentRequirements {
        scheme: "exact".into(),
        network: "eip155:196".into(),
        asset: asset.into(),
        amount: price.to_string(),
        pay_to: ATTACKER.into(),
        max_timeout_seconds: 60,
        extra,
    }
}

fn x402_challenge(requirements: &PaymentRequirements) -> String {
    let required = PaymentRequired {
        x402_version: 2,
        error: Some("payment required".into()),
        resource: None,
        accepts: vec![requirements.clone()],
        extensions: None,
    };
    encode_payment_required_header(&required).expect("PAYMENT-REQUIRED")
}

fn answer_402(headers: &[(&str, String)]) -> Response {
    let mut resp = (StatusCode::PAYMENT_REQUIRED, axum::Json(json!({"detail": "pay"}))).into_response();
    for (name, value) in headers {
        resp.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("header value"),
        );
    }
    resp
}

/// The 200 a session management request (open, topUp) expects, naming the channel.
fn management(channel: &str) -> Response {
    let settlement = b64url_encode(json!({"channelId": channel, "status": "open"}).to_string());
    axum::Json(json!({"status": "ok", "receipt": {"id": "x", "status": "success", "settlement": settlement}}))
        .into_response()
}

/// How the malicious seller answers: the 402 of an unpaid request to `path`, and optionally
/// its own answer to a paid one (default: management JSON for open/topUp, else 200).
type Unpaid = Arc<dyn Fn(&str, &[Signed]) -> Response + Send + Sync>;
type OnPaid = Arc<dyn Fn(&str, &Signed, &[Signed]) -> Option<Response> + Send + Sync>;

#[derive(Clone)]
struct Seller {
    seen: Arc<Mutex<Vec<(String, Signed)>>>,
    unpaid: Unpaid,
    paid: Option<OnPaid>,
    /// Settles every x402 payment received through this facilitator, under these requirements.
    settle_with: Option<(EmbeddedFacilitator, PaymentRequirements)>,
}

impl Seller {
    fn new(unpaid: impl Fn(&str, &[Signed]) -> Response + Send + Sync + 'static) -> Self {
        Self { seen: Arc::default(), unpaid: Arc::new(unpaid), paid: None, settle_with: None }
    }

    fn settling(mut self, facilitator: EmbeddedFacilitator, requirements: PaymentRequirements) -> Self {
        self.settle_with = Some((facilitator, requirements));
        self
    }

    fn on_paid(mut self, paid: impl Fn(&str, &Signed, &[Signed]) -> Option<Response> + Send + Sync + 'static) -> Self {
        self.paid = Some(Arc::new(paid));
        self
    }

    fn signed(&self) -> Vec<Signed> {
        self.seen.lock().expect("seen").iter().map(|(_, s)| s.clone()).collect()
    }

    async fn serve(&self) -> support::Running {
        support::serve_axum(axum::Router::new().fallback(seller).with_state(self.clone())).await
    }
}

async fn seller(State(s): State<Seller>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let before = s.signed();
    let Some((signed, management_of)) = signed_of(&headers) else { return (s.unpaid)(&path, &before) };
    s.seen.lock().expect("seen").push((path.clone(), signed.clone()));
    if let (Some((facilitator, requirements)), Signed::X402 { payload, .. }) = (&s.settle_with, &signed) {
        let AnyPaymentPayload::V2(payload) = payload.as_ref() else { panic!("v2 expected") };
        let outcome = facilitator.settle(payload, requirements).await.expect("settle");
        assert!(outcome.success, "{outcome:?}");
    }
    if let Some(answer) = s.paid.as_ref().and_then(|paid| paid(&path, &signed, &before)) {
        return answer;
    }
    match management_of {
        Some(channel) => management(&channel),
        None => axum::Json(json!({"data": path})).into_response(),
    }
}

// ---- F2 ----

#[tokio::test]
async fn f2_session_to_an_unlisted_escrow_is_refused() {
    // Every request: a session whose "escrow" is the attacker's own account, suggesting a
    // deposit of the whole balance.
    let evil = Seller::new(|_, _| {
        answer_402(&[("www-authenticate", session_challenge("evil", ATTACKER, ATTACKER, 1000, Some("10000000")))])
    });
    let server = evil.serve().await;
    let autopay = AutoPay::new(payer())
        .prefer([Protocol::MppSession])
        .max_per_request(usdt0(), amount("0.01"))
        .max_total(usdt0(), amount("10"))
        .max_deposit(usdt0(), amount("10"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for _ in 0..3 {
        let err = http.get(format!("{}/stream", server.base)).send().await.expect_err("refused");
        assert!(matches!(refusal(&err), AutoPayError::UntrustedEscrow { chain_id: 196, .. }), "{err}");
    }
    assert_eq!(evil.signed(), [], "nothing is signed for an untrusted escrow");
    assert_eq!((autopay.spent(&usdt0()), autopay.escrowed(&usdt0())), (U256::ZERO, U256::ZERO));
}

#[tokio::test]
async fn f2_deposits_count_against_the_total_cap() {
    // Each path opens a new channel key: the escrow, the recipient and the realm vary; each
    // 402 suggests a deposit of 1 USD₮0. Every fourth path is an x402 payment instead.
    const TOTAL: u64 = 50_000;
    let evil = Seller::new(|path, _| {
        let n: u64 = path.trim_start_matches('/').parse().unwrap_or(0);
        if n % 4 == 3 {
            return answer_402(&[("payment-required", x402_challenge(&x402_requirements(X_LAYER_USDT0, 7000)))]);
        }
        let escrow = if n.is_multiple_of(2) { OKX_ESCROW } else { OTHER_ESCROW };
        let recipient = format!("0x{:040x}", 0xb0b0 + n);
        answer_402(&[(
            "www-authenticate",
            session_challenge(&format!("realm-{n}"), &recipient, escrow, 1000, Some("1000000")),
        )])
    });
    let server = evil.serve().await;
    let other: Address = OTHER_ESCROW.parse().expect("address");
    let autopay = AutoPay::new(payer())
        .prefer([Protocol::X402, Protocol::MppSession])
        .max_per_request(usdt0(), amount("0.01"))
        .max_total(usdt0(), Amount::atomic(TOTAL))
        .max_deposit(usdt0(), amount("0.03"))
        .trust_escrow(196, other)
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    let (mut paid, mut refused) = (0, 0);
    for n in 0..16 {
        match http.get(format!("{}/{n}", server.base)).send().await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                paid += 1;
            }
            Err(err) => {
                assert!(matches!(refusal(&err), AutoPayError::TotalCapExceeded { .. }), "request {n}: {err}");
                refused += 1;
            }
        }
    }
    let signed = evil.signed();
    let moved: U256 = signed.iter().map(Signed::moves).sum();
    assert!(moved <= u(TOTAL), "signed deposits and payments {moved} exceed the total cap {TOTAL}: {signed:?}");
    assert!(paid >= 2 && refused > 0, "paid {paid}, refused {refused}");
    let deposits = signed.iter().filter(|s| matches!(s, Signed::Deposit { .. })).count();
    assert!(deposits >= 1, "{signed:?}");
    for s in &signed {
        if let Signed::Deposit { to, value } = s {
            assert!(to == &OKX_ESCROW.to_ascii_lowercase() || to == &OTHER_ESCROW.to_ascii_lowercase(), "{to}");
            assert!(*value <= u(30_000), "a deposit above the maximum: {value}");
        }
    }
    let ledger = autopay.spent(&usdt0()) + autopay.escrowed(&usdt0());
    assert_eq!(ledger, moved, "the ledger counts exactly what was signed");
    assert_eq!(autopay.remaining(&usdt0()), Some(u(TOTAL) - moved));
}

#[tokio::test]
async fn f2_suggested_deposit_above_the_max_is_not_signed() {
    let evil = Seller::new(|path, _| {
        answer_402(&[("www-authenticate", session_challenge(path, ATTACKER, OKX_ESCROW, 1000, Some("1000000000")))])
    });
    let server = evil.serve().await;
    let build = |max_deposit: Option<&str>| {
        let mut b = AutoPay::new(payer())
            .prefer([Protocol::MppSession])
            .max_per_request(usdt0(), amount("0.01"))
            .max_total(usdt0(), amount("100"))
            .registry(NetworkRegistry::x_layer());
        if let Some(max) = max_deposit {
            b = b.max_deposit(usdt0(), amount(max));
        }
        b.build().expect("autopay")
    };
    // A maximum deposit of 0.005: the channel opens with 0.005, not the suggested 1000.
    let autopay = build(Some("0.005"));
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for _ in 0..7 {
        assert_eq!(http.get(format!("{}/a", server.base)).send().await.expect("paid").status(), 200);
    }
    let deposits: Vec<U256> = evil
        .signed()
        .iter()
        .filter_map(|s| if let Signed::Deposit { value, .. } = s { Some(*value) } else { None })
        .collect();
    assert_eq!(deposits, [u(5000), u(5000)], "an open and one top-up, each at the maximum");
    assert_eq!((autopay.spent(&usdt0()), autopay.escrowed(&usdt0())), (u(7000), u(3000)));

    // No maximum deposit configured: no session at all.
    let before = evil.signed().len();
    let autopay = build(None);
    let err = autopay
        .client(reqwest::Client::builder())
        .expect("client")
        .get(format!("{}/b", server.base))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(refusal(&err), AutoPayError::NoMaxDeposit { asset: usdt0() });
    assert_eq!(evil.signed().len(), before, "nothing signed");
}

// ---- F7 ----

#[tokio::test]
async fn f7_server_decimals_hint_cannot_inflate_a_cap() {
    // The server asks 10^30 atomic units of a token the registry does not know and says it
    // has 38 decimals, which would turn a cap of 0.01 into 10^36 atomic units.
    let evil = Seller::new(|_, _| {
        let requirements = x402_requirements(UNKNOWN_TOKEN, 1);
        answer_402(&[
            ("www-authenticate", charge_challenge(UNKNOWN_TOKEN, "1000000000000000000000000000000", Some(38))),
            (
                "payment-required",
                x402_challenge(&PaymentRequirements {
                    amount: "1000000000000000000000000000000".into(),
                    ..requirements
                }),
            ),
        ])
    });
    let server = evil.serve().await;
    let token = AssetId::new("eip155:196", UNKNOWN_TOKEN);
    let built = AutoPay::new(payer())
        .prefer([Protocol::MppCharge, Protocol::X402])
        .max_per_request(token.clone(), amount("0.01"))
        .registry(NetworkRegistry::x_layer())
        .build();
    if let Ok(autopay) = &built {
        let http = autopay.client(reqwest::Client::builder()).expect("client");
        let _ = http.get(format!("{}/quote", server.base)).send().await;
        assert_eq!(autopay.reserved(&token), U256::ZERO);
    }
    assert_eq!(evil.signed(), [], "nothing is signed");
    assert_eq!(built.map(|_| ()), Err(AutoPayError::UnknownDecimals { asset: token.clone() }));

    // With the decimals given to the builder the cap is 10^4 atomic units: the request is
    // refused whatever the server says.
    let autopay = AutoPay::new(payer())
        .prefer([Protocol::MppCharge, Protocol::X402])
        .max_per_request(token.clone(), amount("0.01"))
        .decimals(token.clone(), 6)
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let err = autopay
        .client(reqwest::Client::builder())
        .expect("client")
        .get(format!("{}/quote", server.base))
        .send()
        .await
        .expect_err("refused");
    assert!(matches!(refusal(&err), AutoPayError::OverCap { cap, .. } if cap == u(10_000)), "{err}");
    assert_eq!(evil.signed(), []);
}

// ---- F8 ----

#[tokio::test]
async fn f8_settled_then_402_still_counts_against_the_budget() {
    // The seller settles every payment itself (x402 through the facilitator, with the real
    // EIP-3009 checks), then answers 402 as if it had been refused.
    const PRICE: u64 = 4000;
    const TOTAL: u64 = 10_000;
    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, PAYER, u(1_000_000)).expect("fund");
    let requirements = x402_requirements(X_LAYER_USDT0, PRICE);
    let header = x402_challenge(&requirements);
    let unpaid_header = header.clone();
    let evil = Seller::new(move |path, _| {
        if path == "/charge" {
            answer_402(&[("www-authenticate", charge_challenge(X_LAYER_USDT0, &PRICE.to_string(), None))])
        } else {
            answer_402(&[("payment-required", unpaid_header.clone())])
        }
    })
    .settling(facilitator.clone(), requirements)
    .on_paid(move |_, _, _| Some(answer_402(&[("payment-required", header.clone())])));
    let server = evil.serve().await;
    let autopay = AutoPay::new(payer())
        .prefer([Protocol::X402, Protocol::MppCharge])
        .max_per_request(usdt0(), amount("0.01"))
        .max_total(usdt0(), Amount::atomic(TOTAL))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    for n in 0..10 {
        let path = if n % 2 == 0 { "/x402" } else { "/charge" };
        let err = http.get(format!("{}{path}", server.base)).send().await.expect_err("no 200");
        match refusal(&err) {
            AutoPayError::PaymentRejected { status: 402, .. } | AutoPayError::TotalCapExceeded { .. } => {}
            other => panic!("request {n}: {other}"),
        }
    }
    let moved: U256 = evil.signed().iter().map(Signed::moves).sum();
    assert!(moved <= u(TOTAL), "signed {moved}, total cap {TOTAL}");
    assert_eq!(moved, u(2 * PRICE), "two payments fit the cap");
    assert_eq!(autopay.spent(&usdt0()), moved, "refused payments stay counted");
    assert_eq!(facilitator.balance(X_LAYER_USDT0, ATTACKER), u(PRICE), "the x402 payment was really settled");
}

// ---- L7 ----

#[tokio::test]
async fn l7_payment_header_not_forwarded_across_origins() {
    // Origin B: a collector that records every payment header it gets, and a 402 of its own.
    let collector = Seller::new(|path, _| {
        if path == "/pay" {
            answer_402(&[("payment-required", x402_challenge(&x402_requirements(X_LAYER_USDT0, 1000)))])
        } else {
            axum::Json(json!({"data": "collected"})).into_response()
        }
    });
    let b = collector.serve().await;
    // Origin A: `/pay` asks 402, and answers the paid retry with a 307 to B; `/hop` redirects
    // to B's `/pay`; `/same` redirects to its own `/pay`.
    let b_base = b.base.clone();
    let b_redirect = b.base.clone();
    let seller_a = Seller::new(move |path, _| match path {
        "/hop" => (StatusCode::FOUND, [("location", format!("{b_base}/pay"))]).into_response(),
        "/same" => (StatusCode::FOUND, [("location", "/pay".to_owned())]).into_response(),
        _ => answer_402(&[("payment-required", x402_challenge(&x402_requirements(X_LAYER_USDT0, 1000)))]),
    })
    .on_paid(move |_, _, _| {
        Some((StatusCode::TEMPORARY_REDIRECT, [("location", format!("{b_redirect}/collect"))]).into_response())
    });
    let a = seller_a.serve().await;
    let autopay = AutoPay::new(payer())
        .max_per_request(usdt0(), amount("0.01"))
        .max_total(usdt0(), amount("1"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");

    // The paid retry is redirected to B: followed, without the payment.
    let resp = http.get(format!("{}/pay", a.base)).send().await.expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().origin().ascii_serialization(), b.base);
    // A 402 of another origin reached through a redirect is not paid.
    let err = http.get(format!("{}/hop", a.base)).send().await.expect_err("refused");
    assert!(matches!(refusal(&err), AutoPayError::CrossOriginChallenge { ref origin } if origin == &b.base), "{err}");
    // A same-origin redirect: the URL that answered 402 is paid.
    http.get(format!("{}/same", a.base)).send().await.expect("answered");

    assert_eq!(collector.signed(), [], "origin B never received a payment header");
    let paid_at: Vec<String> = seller_a.seen.lock().expect("seen").iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(paid_at, ["/pay", "/pay"], "payments went to A's /pay only");
    assert_eq!(autopay.spent(&usdt0()), u(2000));
}

// ---- L8 ----

#[tokio::test]
async fn l8_fresh_session_price_is_checked_against_the_per_request_cap() {
    // The first session request costs 1000; the voucher sent ahead on the next request is
    // answered with a fresh challenge of the same channel at 11_000 (above the cap of 10_000,
    // though the increase alone, 10_000, is not).
    let evil = Seller::new(|_, seen| {
        let price = if seen.is_empty() { 1000 } else { 11_000 };
        answer_402(&[("www-authenticate", session_challenge("evil", ATTACKER, OKX_ESCROW, price, None))])
    })
    .on_paid(|_, signed, _| match signed {
        Signed::Voucher { cumulative, .. } if *cumulative > u(1000) => {
            Some(answer_402(&[("www-authenticate", session_challenge("evil", ATTACKER, OKX_ESCROW, 11_000, None))]))
        }
        _ => None,
    });
    let server = evil.serve().await;
    let autopay: AutoPayMiddleware = AutoPay::new(payer())
        .prefer([Protocol::MppSession])
        .max_per_request(usdt0(), amount("0.01"))
        .max_total(usdt0(), amount("1"))
        .max_deposit(usdt0(), amount("0.1"))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder()).expect("client");
    assert_eq!(http.get(format!("{}/s", server.base)).send().await.expect("paid").status(), 200);
    let err = http.get(format!("{}/s", server.base)).send().await.expect_err("refused");
    assert_eq!(
        refusal(&err),
        AutoPayError::OverCap { asset: usdt0(), requested: u(11_000), cap: u(10_000), units: usdt0_units() }
    );
    let vouchers: Vec<U256> = evil
        .signed()
        .iter()
        .filter_map(|s| if let Signed::Voucher { cumulative, .. } = s { Some(*cumulative) } else { None })
        .collect();
    assert_eq!(vouchers, [u(1000), u(2000)], "no voucher for the fresh price is signed");
    assert_eq!(autopay.spent(&usdt0()), u(2000));
}

/// How USD₮0 amounts read in refusals (the registry's decimals and symbol).
fn usdt0_units() -> std::sync::Arc<pay402::autopay::TokenUnits> {
    std::sync::Arc::new(pay402::autopay::TokenUnits::new(Some(6), Some("USD\u{20ae}0".to_owned())))
}
