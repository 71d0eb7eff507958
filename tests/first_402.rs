//! 402 first: an unpaid request to a `#[x402]` / `#[pay]` handler gets the 402 challenge even
//! when another of the handler's extractors would reject it (a discovery crawler probing a POST
//! route with no body, or with a body that is not the handler's JSON), while a paying request
//! keeps the framework's rejection, and a rejected request is never verified and moves no money.
//! Real servers on 127.0.0.1 for axum and actix-web, real HTTP, real credentials from pay402's
//! buyer clients, the embedded facilitator and Settlement Agent.

mod support;

use async_trait::async_trait;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp, MppChargeClient, Receipt, parse_www_authenticate};
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, EmbeddedFacilitator, ExactEvmClientScheme, ExactEvmScheme,
    FacilitatorClient, FacilitatorError, PaymentPayload, PaymentRequirements, SettleResponse, SupportedResponse,
    VerifyResponse, X402Client, X402HttpServer, X402ResourceServer, decode_payment_required_header,
    decode_payment_response_header, encode_payment_signature_header,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
const REALM: &str = "api.example.com";
const MPP_SECRET: &str = "first-402-secret-at-least-32-bytes-long-hmac-key";

/// What a paid handler takes as its JSON body.
#[derive(serde::Deserialize)]
struct Order {
    item: String,
}

/// The embedded facilitator, counting the verify and settle calls it gets.
#[derive(Clone)]
struct Counting {
    inner: EmbeddedFacilitator,
    verified: Arc<AtomicUsize>,
    settled: Arc<AtomicUsize>,
}

#[async_trait]
impl FacilitatorClient for Counting {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        self.verified.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(p, r).await
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        self.settled.fetch_add(1, Ordering::SeqCst);
        self.inner.settle(p, r).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }
}

mod axum_handlers {
    use super::Order;
    use axum::Json;
    use axum::extract::FromRef;
    use pay402::axum::{Mpp, Receipt, X402HttpServer, X402Payment, pay, x402};

    #[derive(Clone)]
    pub(crate) struct State {
        pub(crate) x402: X402HttpServer,
        pub(crate) mpp: Mpp,
    }

    impl FromRef<State> for X402HttpServer {
        fn from_ref(s: &State) -> Self {
            s.x402.clone()
        }
    }

    impl FromRef<State> for Mpp {
        fn from_ref(s: &State) -> Self {
            s.mpp.clone()
        }
    }

    #[x402(price = "$0.001", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "An order")]
    pub(crate) async fn x402_order(payment: X402Payment, Json(order): Json<Order>) -> Json<serde_json::Value> {
        super::HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Json(serde_json::json!({ "item": order.item, "payer": payment.payer() }))
    }

    #[pay(amount = "0.01", intent = "charge", description = "An order")]
    pub(crate) async fn mpp_order(Json(order): Json<Order>, receipt: Receipt) -> Json<serde_json::Value> {
        super::HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Json(serde_json::json!({ "item": order.item, "reference": receipt.reference }))
    }
}

mod actix_handlers {
    use super::Order;
    use actix_web::{HttpResponse, post, web};
    use pay402::actix::{Receipt, X402Payment, pay, x402};

    #[post("/x402")]
    #[x402(price = "$0.001", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "An order")]
    pub(crate) async fn x402_order(order: web::Json<Order>, payment: X402Payment) -> HttpResponse {
        super::HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        HttpResponse::Ok().json(serde_json::json!({ "item": order.item, "payer": payment.payer() }))
    }

    #[pay(amount = "0.01", intent = "charge", description = "An order")]
    #[post("/mpp")]
    pub(crate) async fn mpp_order(receipt: Receipt, order: web::Json<Order>) -> HttpResponse {
        super::HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        HttpResponse::Ok().json(serde_json::json!({ "item": order.item, "reference": receipt.reference }))
    }
}

/// How many times a paid handler's body ran (all servers of this file; the tests below run one
/// at a time through [`LOCK`]).
static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// The tests share [`HANDLED`].
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fixture {
    running: Running,
    facilitator: Counting,
    sa: EmbeddedSa,
    buyer: PrivateKeySigner,
    http: reqwest::Client,
}

async fn start(fw: Framework) -> Fixture {
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let facilitator = Counting { inner: embedded, verified: Arc::default(), settled: Arc::default() };
    let sa = EmbeddedSa::new();
    sa.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let x402 =
        X402HttpServer::new(X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new()));
    let mpp = Mpp::new(EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.clone())), REALM, MPP_SECRET)
        .expect("mpp");
    let running = match fw {
        Framework::Axum => {
            use axum::routing::post;
            let app = axum::Router::new()
                .route("/x402", post(axum_handlers::x402_order))
                .route("/mpp", post(axum_handlers::mpp_order))
                .with_state(axum_handlers::State { x402, mpp });
            support::serve_axum(app).await
        }
        Framework::Actix => {
            let (x402, mpp) = (actix_web::web::Data::new(x402), actix_web::web::Data::new(mpp));
            support::serve_actix(move || {
                actix_web::App::new()
                    .app_data(x402.clone())
                    .app_data(mpp.clone())
                    .service(actix_handlers::x402_order)
                    .service(actix_handlers::mpp_order)
            })
        }
    };
    HANDLED.store(0, Ordering::SeqCst);
    Fixture { running, facilitator, sa, buyer, http: reqwest::Client::new() }
}

/// A request body.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// No body and no `Content-Type`.
    Empty,
    /// `Content-Type: application/json` and a body that is not JSON.
    Invalid,
    /// `Content-Type: application/json` and an `Order`.
    Valid,
}

impl Fixture {
    async fn post(&self, path: &str, body: Body, header: Option<(&str, &str)>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.running.base));
        req = match body {
            Body::Empty => req,
            Body::Invalid => req.header("content-type", "application/json").body("{not json"),
            Body::Valid => req.header("content-type", "application/json").body(r#"{"item":"tea"}"#),
        };
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        req.send().await.expect("request")
    }

    fn verified(&self) -> usize {
        self.facilitator.verified.load(Ordering::SeqCst)
    }

    fn settled(&self) -> usize {
        self.facilitator.settled.load(Ordering::SeqCst)
    }

    fn x402_balance(&self) -> U256 {
        self.facilitator.inner.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }

    fn mpp_balance(&self) -> U256 {
        self.sa.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }

    /// A valid `PAYMENT-SIGNATURE` value paying the x402 route's challenge.
    async fn x402_payment(&self) -> String {
        let challenge = self.post("/x402", Body::Empty, None).await;
        let AnyPaymentRequired::V2(required) = x402_challenge(&challenge) else { panic!("v2 expected") };
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(self.buyer.clone()));
        let AnyPaymentPayload::V2(p) =
            client.create_payment_payload(&AnyPaymentRequired::V2(required)).await.expect("pays")
        else {
            panic!("v2 expected")
        };
        encode_payment_signature_header(&p).expect("encodes")
    }

    /// A valid `Authorization: Payment …` value paying the MPP route's challenge.
    async fn mpp_credential(&self) -> String {
        let challenge = self.post("/mpp", Body::Empty, None).await;
        let www = mpp_challenge(&challenge);
        let refs: Vec<&str> = www.iter().map(String::as_str).collect();
        MppChargeClient::new(self.buyer.clone()).authorization_header_for(&refs).expect("credential")
    }
}

/// The decoded `PAYMENT-REQUIRED` challenge of a 402.
fn x402_challenge(resp: &reqwest::Response) -> AnyPaymentRequired {
    assert_eq!(resp.status(), 402, "the x402 challenge");
    let header = resp.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    decode_payment_required_header(header).expect("PAYMENT-REQUIRED decodes")
}

/// The `WWW-Authenticate: Payment …` challenges of a 402, checked to parse as MPP challenges.
fn mpp_challenge(resp: &reqwest::Response) -> Vec<String> {
    assert_eq!(resp.status(), 402, "the MPP challenge");
    let www: Vec<String> =
        resp.headers().get_all("www-authenticate").iter().map(|v| v.to_str().expect("ascii").to_owned()).collect();
    assert!(!www.is_empty() && www.iter().all(|w| w.starts_with("Payment ")), "{www:?}");
    let refs: Vec<&str> = www.iter().map(String::as_str).collect();
    let parsed = parse_www_authenticate(&refs).expect("WWW-Authenticate parses");
    assert_eq!((parsed[0].realm.as_str(), parsed[0].intent.as_str()), (REALM, "charge"));
    assert_eq!(parsed[0].request["amount"], "10000");
    www
}

#[tokio::test]
async fn unpaid_requests_get_the_402_before_the_body_is_rejected() {
    let _serial = LOCK.lock().await;
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        for body in [Body::Invalid, Body::Empty] {
            let x402 = f.post("/x402", body, None).await;
            let AnyPaymentRequired::V2(required) = x402_challenge(&x402) else { panic!("{fw:?} {body:?}: v2") };
            assert_eq!(required.accepts.len(), 1, "{fw:?} {body:?}");
            assert_eq!(required.accepts[0].pay_to, PAY_TO, "{fw:?} {body:?}");
            let url = required.resource.map(|r| r.url).unwrap_or_default();
            assert!(url.ends_with("/x402"), "{fw:?} {body:?}: {url}");

            let mpp = f.post("/mpp", body, None).await;
            mpp_challenge(&mpp);
            let problem: serde_json::Value = serde_json::from_str(&mpp.text().await.expect("body")).expect("JSON");
            assert_eq!(problem["type"], "https://paymentauth.org/problems/payment-required", "{fw:?} {body:?}");
        }
        // An MPP credential does not pay the x402 route (nor the reverse): still 402 first.
        let x402 = f.post("/x402", Body::Invalid, Some(("authorization", "Payment abc"))).await;
        x402_challenge(&x402);
        let mpp = f.post("/mpp", Body::Invalid, Some(("payment-signature", "abc"))).await;
        mpp_challenge(&mpp);
        assert_eq!((f.verified(), f.settled(), HANDLED.load(Ordering::SeqCst)), (0, 0, 0), "{fw:?}");
    }
}

#[tokio::test]
async fn a_paid_x402_request_with_a_bad_body_gets_the_rejection_and_is_never_verified() {
    let _serial = LOCK.lock().await;
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let before = f.x402_balance();
        let payment = f.x402_payment().await;
        let rejected = f.post("/x402", Body::Invalid, Some(("payment-signature", &payment))).await;
        assert_eq!(rejected.status(), 400, "{fw:?}: the framework's JSON rejection");
        assert!(rejected.headers().get("payment-required").is_none(), "{fw:?}: not a challenge");
        assert!(rejected.headers().get("payment-response").is_none(), "{fw:?}: nothing settled");
        assert_eq!((f.verified(), f.settled(), HANDLED.load(Ordering::SeqCst)), (0, 0, 0), "{fw:?}");
        assert_eq!(f.facilitator.inner.settlement_count(), 0, "{fw:?}");
        assert_eq!(f.x402_balance(), before, "{fw:?}: a rejected body moves no money");

        // The same payment was good: with a valid body it is verified, runs the handler, settles.
        let paid = f.post("/x402", Body::Valid, Some(("payment-signature", &payment))).await;
        assert_eq!(paid.status(), 200, "{fw:?}");
        let settled = paid.headers().get("payment-response").expect("PAYMENT-RESPONSE").to_str().expect("ascii");
        assert!(decode_payment_response_header(settled).expect("decodes").success, "{fw:?}");
        let body: serde_json::Value = serde_json::from_str(&paid.text().await.expect("body")).expect("JSON");
        assert_eq!(body["item"], "tea", "{fw:?}");
        assert_eq!((f.verified(), f.settled(), HANDLED.load(Ordering::SeqCst)), (1, 1, 1), "{fw:?}");
        assert_eq!(f.x402_balance(), before - U256::from(1_000u64), "{fw:?}");
    }
}

#[tokio::test]
async fn a_paid_mpp_request_with_a_bad_body_gets_the_rejection_and_is_never_charged() {
    let _serial = LOCK.lock().await;
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let before = f.mpp_balance();
        let credential = f.mpp_credential().await;
        let rejected = f.post("/mpp", Body::Invalid, Some(("authorization", &credential))).await;
        assert_eq!(rejected.status(), 400, "{fw:?}: the framework's JSON rejection");
        assert!(rejected.headers().get("www-authenticate").is_none(), "{fw:?}: not a challenge");
        assert!(rejected.headers().get("payment-receipt").is_none(), "{fw:?}: nothing charged");
        assert_eq!((f.sa.charge_count(), HANDLED.load(Ordering::SeqCst)), (0, 0), "{fw:?}");
        assert_eq!(f.mpp_balance(), before, "{fw:?}: a rejected body moves no money");

        // The same credential was good: with a valid body it is charged and runs the handler.
        let paid = f.post("/mpp", Body::Valid, Some(("authorization", &credential))).await;
        assert_eq!(paid.status(), 200, "{fw:?}");
        let receipt = paid.headers().get("payment-receipt").expect("Payment-Receipt").to_str().expect("ascii");
        let receipt = Receipt::from_payment_receipt(receipt).expect("receipt");
        let body: serde_json::Value = serde_json::from_str(&paid.text().await.expect("body")).expect("JSON");
        assert_eq!(
            (body["item"].as_str(), body["reference"].as_str()),
            (Some("tea"), Some(receipt.reference.as_str()))
        );
        assert_eq!((f.sa.charge_count(), HANDLED.load(Ordering::SeqCst)), (1, 1), "{fw:?}");
        assert_eq!(f.mpp_balance(), before - U256::from(10_000u64), "{fw:?}");
    }
}
