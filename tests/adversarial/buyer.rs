//! Side B: a malicious seller against pay402's auto-paying client (`pay402::autopay` over
//! reqwest-middleware).
//!
//! A local axum server answers every request from the generated plan: 402s with x402 offers,
//! MPP charge and session challenges (random prices within and above the caps, decimals hints,
//! allowed and unknown tokens, OKX's escrow or an attacker's, `suggestedDeposit` up to huge,
//! recipients and realms varied per request so every 402 names a new channel), redirects to
//! another local origin, garbage, 200s — and a paid retry may be answered with a new 402
//! ("settled it myself, pay again"). The server decodes everything the client sends
//! (`PAYMENT-SIGNATURE` / `X-PAYMENT` and `Authorization: Payment` credentials) and the invariants
//! are checked on what was signed, never on the client's own accounting:
//!
//! * B1 — per asset, Σ signed payments (x402, charge) + Σ signed deposits (open, top-up) ≤ the total
//!   cap; each signed payment, and each voucher increment, ≤ the per-request cap;
//! * B2 — nothing is signed to an escrow outside the allowlist (OKX's) or in a token without a cap;
//! * B3 — caps are never computed with the server's `decimals` (an unregistered token whose
//!   true decimals the suite knows, 6, is offered with hints of 18 and 2);
//! * B4 — a payment header never reaches another origin.
//!
//! [`client`] is the one place that builds the AutoPay client: adapt it when the builder changes.

use super::common::Violation;
use crate::support::accounts::{ESCROW, PAYER_KEY, USDT0};
use crate::support::{self, Running};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pay402::autopay::{AssetId, AutoPay, Protocol};
use pay402::chain::NetworkRegistry;
use pay402::evm::signer_from_hex;
use pay402::mpp::{Challenge, Credential, b64url_decode};
use pay402::x402::{
    AnyPaymentPayload, PaymentRequired, PaymentRequirements, decode_payment_signature_header,
    encode_payment_required_header,
};
use proptest::prelude::*;
use reqwest_middleware::ClientWithMiddleware;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A token missing from the registry; its true decimals are 6.
pub(crate) const UNREG: &str = "0x5555555555555555555555555555555555555555";
/// A token the buyer has no cap for.
const UNKNOWN: &str = "0x6666666666666666666666666666666666666666";
/// An attacker's EOA posing as an escrow.
const ATTACKER_ESCROW: &str = "0xbad0000000000000000000000000000000000bad";
/// Per-request cap: 0.01 (6 decimals).
pub(crate) const PER_REQUEST: u128 = 10_000;
/// Total cap: 0.025 (6 decimals).
pub(crate) const TOTAL: u128 = 25_000;
const MPP_SECRET: &str = "malicious-seller-secret";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The buyer under test: USD₮0 and the unregistered token, 0.01 per request, 0.025 in total and
/// at most 0.025 per deposit, every protocol, over AutoPay's own reqwest client (which follows
/// redirects itself). **The one function to adapt** when the AutoPay API changes.
pub(crate) fn client() -> ClientWithMiddleware {
    let build = |with_decimals: bool| {
        let mut b = AutoPay::new(signer_from_hex(PAYER_KEY).expect("key"))
            .prefer([Protocol::MppSession, Protocol::X402, Protocol::MppCharge])
            .registry(NetworkRegistry::x_layer());
        for asset in [AssetId::x_layer_usdt0(), unreg()] {
            b = b
                .max_per_request(asset.clone(), "0.01".parse().expect("amount"))
                .max_total(asset.clone(), "0.025".parse().expect("amount"))
                .max_deposit(asset, "0.025".parse().expect("amount"));
        }
        if with_decimals {
            b = b.decimals(unreg(), 6);
        }
        b.build()
    };
    // A cap on an unregistered token may be accepted without its decimals (they then come from
    // the challenge: finding F7); where the builder requires them, they are given.
    let autopay = build(false).or_else(|_| build(true)).expect("autopay");
    autopay.client(reqwest::Client::builder()).expect("client")
}

fn unreg() -> AssetId {
    AssetId::new("eip155:196", UNREG)
}

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Usdt0,
    /// Unregistered, true decimals 6.
    Unreg,
    /// No cap configured.
    Unknown,
}

impl Token {
    fn address(self) -> &'static str {
        match self {
            Self::Usdt0 => USDT0,
            Self::Unreg => UNREG,
            Self::Unknown => UNKNOWN,
        }
    }
}

/// One payment option of a 402.
#[derive(Clone, Debug)]
pub(crate) enum Offer {
    X402 {
        amount: u128,
        token: Token,
    },
    Charge {
        amount: u128,
        token: Token,
        decimals: Option<u8>,
        recipient: u8,
    },
    Session {
        amount: u128,
        token: Token,
        decimals: Option<u8>,
        attacker_escrow: bool,
        suggested: Option<u128>,
        recipient: u8,
        realm: u8,
    },
}

/// How the malicious server answers one request.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    PaymentRequired(Vec<Offer>),
    /// 402 with unparseable payment headers.
    Garbage,
    /// 307 to the same path on another origin.
    Redirect,
    Ok,
}

/// One client request and the server's answers to the requests it causes.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) path: u8,
    pub(crate) replies: Vec<Reply>,
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => 1u128..=PER_REQUEST,
        3 => PER_REQUEST * 3 / 4..=PER_REQUEST,
        2 => PER_REQUEST + 1..=10 * PER_REQUEST,
        1 => Just(10u128.pow(24)),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![5 => Just(Token::Usdt0), 2 => Just(Token::Unreg), 1 => Just(Token::Unknown)]
}

fn decimals() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(18u8)), 1 => Just(Some(2u8)), 1 => Just(Some(6u8))]
}

/// Which offers the plan uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offers {
    pub(crate) x402: bool,
    pub(crate) charge: bool,
    pub(crate) session: bool,
    pub(crate) tricks: bool,
}

impl Offers {
    pub(crate) const ALL: Self = Self { x402: true, charge: true, session: true, tricks: true };
}

fn offer(o: Offers) -> BoxedStrategy<Offer> {
    let mut v: Vec<(u32, BoxedStrategy<Offer>)> = Vec::new();
    if o.x402 {
        v.push((3, (amount(), token()).prop_map(|(amount, token)| Offer::X402 { amount, token }).boxed()));
    }
    if o.charge {
        v.push((
            2,
            (amount(), token(), decimals(), 0u8..3)
                .prop_map(|(amount, token, decimals, recipient)| Offer::Charge { amount, token, decimals, recipient })
                .boxed(),
        ));
    }
    if o.session {
        let suggested = prop_oneof![
            2 => Just(None),
            2 => (1u128..=TOTAL).prop_map(Some),
            1 => Just(Some(10u128.pow(30))),
        ];
        v.push((
            2,
            (amount(), token(), decimals(), any::<bool>(), suggested, 0u8..3, 0u8..3)
                .prop_map(|(amount, token, decimals, attacker_escrow, suggested, recipient, realm)| Offer::Session {
                    amount,
                    token,
                    decimals,
                    attacker_escrow,
                    suggested,
                    recipient,
                    realm,
                })
                .boxed(),
        ));
    }
    prop::strategy::Union::new_weighted(v).boxed()
}

fn reply(o: Offers) -> BoxedStrategy<Reply> {
    let offers = prop::collection::vec(offer(o), 1..3).prop_map(Reply::PaymentRequired);
    if o.tricks {
        prop_oneof![
            6 => offers,
            1 => Just(Reply::Garbage),
            1 => Just(Reply::Redirect),
            2 => Just(Reply::Ok),
        ]
        .boxed()
    } else {
        prop_oneof![4 => offers, 1 => Just(Reply::Ok)].boxed()
    }
}

pub(crate) fn sequence(o: Offers, max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = (0u8..3, prop::collection::vec(reply(o), 1..4)).prop_map(|(path, replies)| Step { path, replies });
    prop::collection::vec(step, 1..max_len)
}

// ---------------------------------------------------------------------------------------------
// The malicious server and what it saw
// ---------------------------------------------------------------------------------------------

/// A signed thing the client sent.
#[derive(Clone, Debug)]
enum Signed {
    /// x402 or MPP charge: a transfer of `value` of `asset` (nonce identifies it).
    Payment { protocol: &'static str, asset: String, value: u128, nonce: String },
    /// Session deposit (open or top-up) to `to`.
    Deposit { asset: String, value: u128, nonce: String, to: String },
    /// A voucher for `cumulative` on `channel`.
    Voucher { asset: String, channel: String, cumulative: u128 },
}

#[derive(Default)]
struct Seen {
    queue: VecDeque<Reply>,
    signed: Vec<Signed>,
    /// Requests with a payment header that reached the other origin.
    leaked: Vec<String>,
    /// Undecodable payment headers.
    undecodable: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn parse_u128(v: &Value) -> u128 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(u128::MAX)
}

/// Decodes a request's payment, if any.
fn decode(h: &HeaderMap) -> Result<Option<Signed>, String> {
    if let Some(p) = header(h, "payment-signature").or_else(|| header(h, "x-payment")) {
        let payload = decode_payment_signature_header(&p).map_err(|e| e.to_string())?;
        let (asset, payload) = match payload {
            AnyPaymentPayload::V2(p) => (p.accepted.asset.clone(), p.payload),
            AnyPaymentPayload::V1(p) => (String::new(), p.payload),
        };
        let a = &payload["authorization"];
        return Ok(Some(Signed::Payment {
            protocol: "x402",
            asset: asset.to_ascii_lowercase(),
            value: parse_u128(&a["value"]),
            nonce: a["nonce"].as_str().unwrap_or_default().to_owned(),
        }));
    }
    let Some(auth) = header(h, "authorization") else { return Ok(None) };
    let c = Credential::from_authorization_header(&auth).map_err(|e| e.to_string())?;
    let request: Value =
        b64url_decode(&c.challenge.request).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    let asset = request["currency"].as_str().unwrap_or_default().to_ascii_lowercase();
    let p = &c.payload;
    let a = &p.get("authorization").cloned().unwrap_or(Value::Null);
    let transfer = |a: &Value| {
        (
            parse_u128(&a["value"]),
            a["nonce"].as_str().unwrap_or_default().to_owned(),
            a["to"].as_str().unwrap_or_default().to_ascii_lowercase(),
        )
    };
    Ok(Some(match p.get("action").and_then(Value::as_str) {
        None => {
            let (value, nonce, _) = transfer(a);
            Signed::Payment { protocol: "mpp-charge", asset, value, nonce }
        }
        Some("open" | "topUp") => {
            let (value, nonce, to) = transfer(a);
            Signed::Deposit { asset, value, nonce, to }
        }
        Some(_) => Signed::Voucher {
            asset,
            channel: p.get("channelId").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase(),
            cumulative: p.get("cumulativeAmount").map_or(0, parse_u128),
        },
    }))
}

fn x402_header(amount: u128, token: Token) -> String {
    let requirements: PaymentRequirements = serde_json::from_value(json!({
        "scheme": "exact", "network": "eip155:196", "asset": token.address(), "amount": amount.to_string(),
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 300,
        "extra": {"name": "USD₮0", "version": "1"}
    }))
    .expect("requirements");
    let required = PaymentRequired {
        x402_version: 2,
        error: Some("Payment required".into()),
        resource: None,
        accepts: vec![requirements],
        extensions: None,
    };
    encode_payment_required_header(&required).expect("encodes")
}

fn recipient(i: u8) -> String {
    format!("0x{:040x}", 0x7000 + u32::from(i))
}

fn mpp_header(intent: &str, realm: String, request: Value) -> String {
    let Value::Object(request) = request else { unreachable!("an object") };
    Challenge::new(MPP_SECRET, realm, "evm", intent, request, None, None, None, None)
        .to_www_authenticate()
        .expect("challenge")
}

fn payment_required(offers: &[Offer]) -> Response {
    let mut resp = (StatusCode::PAYMENT_REQUIRED, axum::Json(json!({}))).into_response();
    let h = resp.headers_mut();
    for o in offers {
        match o {
            Offer::X402 { amount, token } => {
                h.insert("payment-required", x402_header(*amount, *token).parse().expect("header"));
            }
            Offer::Charge { amount, token, decimals, recipient: r } => {
                let mut req = json!({"amount": amount.to_string(), "currency": token.address(), "recipient": recipient(*r),
                    "methodDetails": {"chainId": 196}});
                if let Some(d) = decimals {
                    req["decimals"] = json!(d);
                }
                h.append("www-authenticate", mpp_header("charge", "seller.test".into(), req).parse().expect("header"));
            }
            Offer::Session { amount, token, decimals, attacker_escrow, suggested, recipient: r, realm } => {
                let escrow = if *attacker_escrow { ATTACKER_ESCROW } else { ESCROW };
                let mut req = json!({"amount": amount.to_string(), "currency": token.address(), "recipient": recipient(*r),
                    "methodDetails": {"chainId": 196, "escrowContract": escrow}});
                if let Some(d) = decimals {
                    req["decimals"] = json!(d);
                }
                if let Some(s) = suggested {
                    req["suggestedDeposit"] = json!(s.to_string());
                }
                h.append(
                    "www-authenticate",
                    mpp_header("session", format!("realm{realm}.test"), req).parse().expect("header"),
                );
            }
        }
    }
    resp
}

async fn malicious(
    axum::extract::State((seen, other)): axum::extract::State<(Shared, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let decoded = decode(&headers);
    let mut st = lock(&seen);
    let management = match &decoded {
        Ok(Some(s)) => {
            st.signed.push(s.clone());
            matches!(s, Signed::Deposit { .. })
        }
        Ok(None) => false,
        Err(e) => {
            st.undecodable.push(e.clone());
            false
        }
    };
    if management {
        // Accept every open/top-up: the attacker wants the deposit authorization.
        let channel = Credential::from_authorization_header(&header(&headers, "authorization").unwrap_or_default())
            .ok()
            .and_then(|c| c.payload.get("channelId").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let settlement = pay402::mpp::b64url_encode(json!({"channelId": channel}).to_string().as_bytes());
        return axum::Json(json!({"status": "ok", "receipt": {"settlement": settlement}})).into_response();
    }
    match st.queue.pop_front().unwrap_or(Reply::Ok) {
        Reply::Ok => (StatusCode::OK, "content").into_response(),
        Reply::Garbage => (
            StatusCode::PAYMENT_REQUIRED,
            [("payment-required", "!!not-base64"), ("www-authenticate", "Payment id=\"\", request=\"%%%\"")],
            "{}",
        )
            .into_response(),
        Reply::Redirect => {
            (StatusCode::TEMPORARY_REDIRECT, [("location", format!("{other}{}", uri.path()))], "").into_response()
        }
        Reply::PaymentRequired(offers) => payment_required(&offers),
    }
}

async fn other_origin(
    axum::extract::State(seen): axum::extract::State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    for name in ["payment-signature", "x-payment", "authorization"] {
        if headers.contains_key(name) {
            lock(&seen).leaked.push(format!("{name} reached the other origin at {}", uri.path()));
        }
    }
    (StatusCode::OK, "other origin").into_response()
}

/// The malicious server, its neighbour origin and their records.
pub(crate) struct Seller {
    _servers: [Running; 2],
    base: String,
    seen: Shared,
}

impl Seller {
    pub(crate) async fn start() -> Self {
        let seen: Shared = Arc::default();
        let other = support::serve_axum(axum::Router::new().fallback(other_origin).with_state(Arc::clone(&seen))).await;
        let main = support::serve_axum(
            axum::Router::new().fallback(malicious).with_state((Arc::clone(&seen), other.base.clone())),
        )
        .await;
        Self { base: main.base.clone(), _servers: [main, other], seen }
    }

    /// Runs one sequence with a fresh client; returns the violations.
    pub(crate) async fn run(&self, steps: &[Step]) -> Vec<Violation> {
        *lock(&self.seen) = Seen::default();
        let http = client();
        for s in steps {
            lock(&self.seen).queue = s.replies.iter().cloned().collect();
            let url = format!("{}/p{}", self.base, s.path);
            let _ = tokio::time::timeout(Duration::from_secs(10), http.get(url).send()).await;
        }
        let seen = std::mem::take(&mut *lock(&self.seen));
        check(&seen)
    }
}

fn check(seen: &Seen) -> Vec<Violation> {
    let mut v = Vec::new();
    let allowed_assets = [USDT0.to_ascii_lowercase(), UNREG.to_ascii_lowercase()];
    let tag = |asset: &str| if asset == UNREG.to_ascii_lowercase() { "B3" } else { "B1" };
    // Per asset: (signed payments, signed deposits).
    let mut exposure: HashMap<String, (u128, u128)> = HashMap::new();
    let mut counted: HashSet<String> = HashSet::new();
    let mut vouchers: HashMap<String, u128> = HashMap::new();
    for s in &seen.signed {
        let asset = match s {
            Signed::Payment { asset, .. } | Signed::Deposit { asset, .. } | Signed::Voucher { asset, .. } => asset,
        };
        if !allowed_assets.contains(asset) {
            v.push(Violation::new("B2", format!("signed in token {asset}, which has no cap: {s:?}")));
        }
        match s {
            Signed::Payment { protocol, value, nonce, .. } => {
                if *value > PER_REQUEST {
                    v.push(Violation::new(
                        tag(asset),
                        format!("signed a {protocol} payment of {value} > per-request cap {PER_REQUEST} in {asset}"),
                    ));
                }
                if counted.insert(nonce.clone()) {
                    let e = exposure.entry(asset.clone()).or_default();
                    e.0 = e.0.saturating_add(*value);
                }
            }
            Signed::Deposit { value, nonce, to, .. } => {
                if *to != ESCROW.to_ascii_lowercase() {
                    v.push(Violation::new(
                        "B2",
                        format!("signed a deposit of {value} {asset} to {to}, which is not an allowlisted escrow"),
                    ));
                }
                if counted.insert(nonce.clone()) {
                    let e = exposure.entry(asset.clone()).or_default();
                    e.1 = e.1.saturating_add(*value);
                }
            }
            Signed::Voucher { channel, cumulative, .. } => {
                let before = vouchers.get(channel).copied().unwrap_or(0);
                if *cumulative > before {
                    let step = cumulative - before;
                    if step > PER_REQUEST {
                        v.push(Violation::new(
                            tag(asset),
                            format!(
                                "signed a voucher raising channel {channel} by {step} > per-request cap {PER_REQUEST}"
                            ),
                        ));
                    }
                    vouchers.insert(channel.clone(), *cumulative);
                }
            }
        }
    }
    for (asset, (payments, deposits)) in exposure {
        let total = payments.saturating_add(deposits);
        if total > TOTAL {
            let what = match (payments > 0, deposits > 0) {
                (true, false) => "payments only",
                (false, true) => "deposits only",
                _ => "payments and deposits",
            };
            v.push(Violation::new(
                "B1",
                format!("signed {what}: {payments} + {deposits} = {total} {asset} > total cap {TOTAL}"),
            ));
        }
    }
    for leak in &seen.leaked {
        v.push(Violation::new("B4", leak.clone()));
    }
    v
}
