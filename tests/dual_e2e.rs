//! One route, both protocols, end to end on axum and actix-web: real servers on 127.0.0.1, real
//! HTTP, the embedded facilitator's and the embedded Settlement Agent's ledgers. Every scenario
//! runs against the route-table router (`PaymentRouterLayer` / `PaymentRouterMiddleware`) and
//! against a handler carrying both `#[x402]` and `#[pay]`; a last test checks that both answer
//! identically.

mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{B256, PrivateKeySigner, U256};
use pay402::mpp::{
    ChargeIntent, Credential, EmbeddedSa, EvmMethod, Mpp, MppChargeClient, PaySpec, parse_www_authenticate,
};
use pay402::router::{MppAdapter, Paid, PaymentRouter, RouteProtocols, X402Adapter};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402Client;
use pay402::x402::X402ResourceServer;
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, ExactEvmClientScheme, ExactEvmScheme, PaymentRequired,
    decode_payment_required_header, decode_payment_response_header, encode_payment_signature_header,
};
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const BUYER_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
const MPP_SECRET: &str = "test-dual-secret-at-least-32-bytes-long-hmac-key";
const REALM: &str = "api.example.com";

/// What the handlers answer: which protocol paid, and who.
fn body_of(paid: &Paid) -> serde_json::Value {
    match paid {
        Paid::X402(payment) => serde_json::json!({ "paid": "x402", "payer": payment.payer() }),
        Paid::Mpp { credential, .. } => serde_json::json!({ "paid": "mpp", "payer": credential.source }),
        Paid::Other { adapter } => serde_json::json!({ "paid": adapter }),
    }
}

mod axum_handlers {
    use pay402::axum::{Mpp, Paid, X402HttpServer, pay, x402};

    #[derive(Clone)]
    pub(crate) struct State {
        pub(crate) x402: X402HttpServer,
        pub(crate) mpp: Mpp,
    }

    impl axum::extract::FromRef<State> for X402HttpServer {
        fn from_ref(s: &State) -> Self {
            s.x402.clone()
        }
    }

    impl axum::extract::FromRef<State> for Mpp {
        fn from_ref(s: &State) -> Self {
            s.mpp.clone()
        }
    }

    #[x402(price = "$0.01", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "A quote")]
    #[pay(amount = "0.01", description = "A quote")]
    pub(crate) async fn quote(paid: Paid) -> axum::Json<serde_json::Value> {
        axum::Json(super::body_of(&paid))
    }
}

mod actix_handlers {
    use pay402::actix::{Paid, pay, x402};

    #[pay(amount = "0.01", description = "A quote")]
    #[actix_web::get("/quote")]
    #[x402(price = "$0.01", pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", description = "A quote")]
    pub(crate) async fn quote(paid: Paid) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok().json(super::body_of(&paid))
    }
}

/// How the route is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Table,
    Macro,
}

const MODES: [Mode; 2] = [Mode::Table, Mode::Macro];

struct Fixture {
    running: Running,
    facilitator: EmbeddedFacilitator,
    sa: EmbeddedSa,
    buyer: PrivateKeySigner,
    http: reqwest::Client,
}

fn router(x402: X402HttpServer, mpp: Mpp) -> PaymentRouter {
    let protocols = RouteProtocols::new()
        .x402(RouteConfig::new(PaymentOption::exact("$0.01", PAY_TO)).description("A quote"))
        .mpp(PaySpec::charge("0.01").description("A quote"));
    PaymentRouter::new()
        .adapter(X402Adapter::new(x402))
        .adapter(MppAdapter::new(mpp))
        .route("GET /quote", protocols)
        .expect("route")
}

async fn start(fw: Framework, mode: Mode) -> Fixture {
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    let facilitator = EmbeddedFacilitator::new();
    facilitator.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let sa = EmbeddedSa::new();
    sa.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let server = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server);
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.clone()));
    let mpp = Mpp::new(method, REALM, MPP_SECRET).expect("mpp");
    let running = match (fw, mode) {
        (Framework::Axum, Mode::Table) => {
            let handler = |paid: Paid| async move { axum::Json(body_of(&paid)) };
            let app = axum::Router::new()
                .route("/quote", axum::routing::get(handler))
                .route("/free", axum::routing::get(|| async { "free" }))
                .layer(pay402::axum::PaymentRouterLayer::new(router(x402, mpp)));
            support::serve_axum(app).await
        }
        (Framework::Axum, Mode::Macro) => {
            let app = axum::Router::new()
                .route("/quote", axum::routing::get(axum_handlers::quote))
                .route("/free", axum::routing::get(|| async { "free" }))
                .with_state(axum_handlers::State { x402, mpp });
            support::serve_axum(app).await
        }
        (Framework::Actix, Mode::Table) => {
            let router = router(x402, mpp);
            support::serve_actix(move || {
                actix_web::App::new()
                    .wrap(pay402::actix::PaymentRouterMiddleware::new(router.clone()))
                    .route(
                        "/quote",
                        actix_web::web::get()
                            .to(|paid: Paid| async move { actix_web::HttpResponse::Ok().json(body_of(&paid)) }),
                    )
                    .route("/free", actix_web::web::get().to(|| async { "free" }))
            })
        }
        (Framework::Actix, Mode::Macro) => {
            let (x402, mpp) = (actix_web::web::Data::new(x402), actix_web::web::Data::new(mpp));
            support::serve_actix(move || {
                actix_web::App::new()
                    .app_data(x402.clone())
                    .app_data(mpp.clone())
                    .service(actix_handlers::quote)
                    .route("/free", actix_web::web::get().to(|| async { "free" }))
            })
        }
    };
    Fixture { running, facilitator, sa, buyer, http: reqwest::Client::new() }
}

impl Fixture {
    async fn get(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(format!("{}/quote", self.running.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    fn x402_balance(&self) -> U256 {
        self.facilitator.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }

    fn mpp_balance(&self) -> U256 {
        self.sa.balance(X_LAYER_USDT0, &self.buyer.address().to_string())
    }

    /// A fresh unpaid 402.
    async fn challenge(&self) -> reqwest::Response {
        let resp = self.get(&[]).await;
        assert_eq!(resp.status(), 402);
        resp
    }

    /// A valid `PAYMENT-SIGNATURE` value.
    async fn x402_payment(&self) -> String {
        let required = required_of(&self.challenge().await);
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(self.buyer.clone()));
        let AnyPaymentPayload::V2(p) =
            client.create_payment_payload(&AnyPaymentRequired::V2(required)).await.expect("pays")
        else {
            panic!("v2")
        };
        encode_payment_signature_header(&p).expect("encodes")
    }

    /// A valid `Authorization: Payment …` value.
    async fn mpp_payment(&self) -> String {
        let www = www_of(&self.challenge().await);
        let refs: Vec<&str> = www.iter().map(String::as_str).collect();
        MppChargeClient::new(self.buyer.clone()).authorization_header_for(&refs).expect("credential")
    }
}

fn required_of(resp: &reqwest::Response) -> PaymentRequired {
    let header = resp.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    match decode_payment_required_header(header).expect("decodes") {
        AnyPaymentRequired::V2(r) => r,
        AnyPaymentRequired::V1(_) => panic!("v2 expected"),
    }
}

fn www_of(resp: &reqwest::Response) -> Vec<String> {
    resp.headers().get_all("www-authenticate").iter().map(|v| v.to_str().expect("ascii").to_owned()).collect()
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&resp.text().await.expect("body")).expect("JSON body")
}

#[tokio::test]
async fn unpaid_gets_one_402_with_both_challenges() {
    for fw in FRAMEWORKS {
        for mode in MODES {
            let f = start(fw, mode).await;
            let resp = f.get(&[]).await;
            assert_eq!(resp.status(), 402, "{fw:?} {mode:?}");
            let content_types: Vec<_> = resp.headers().get_all("content-type").iter().collect();
            assert_eq!(content_types, ["application/problem+json"], "{fw:?} {mode:?}");
            let cache: Vec<_> = resp.headers().get_all("cache-control").iter().collect();
            assert_eq!(cache, ["no-store"], "{fw:?} {mode:?}");
            let www = www_of(&resp);
            let refs: Vec<&str> = www.iter().map(String::as_str).collect();
            let challenges = parse_www_authenticate(&refs).expect("WWW-Authenticate parses");
            assert_eq!(challenges.len(), 1, "{fw:?} {mode:?}");
            let c = &challenges[0];
            assert_eq!((c.realm.as_str(), c.method.as_str(), c.intent.as_str()), (REALM, "evm", "charge"));
            assert!(c.verify_id(MPP_SECRET));
            assert_eq!(c.request["amount"], "10000");
            assert_eq!(c.request["recipient"], PAY_TO);
            assert_eq!(c.request["description"], "A quote");
            let required = required_of(&resp);
            let a = &required.accepts[0];
            assert_eq!((a.scheme.as_str(), a.network.as_str(), a.amount.as_str()), ("exact", "eip155:196", "10000"));
            assert_eq!((a.asset.as_str(), a.pay_to.as_str()), (X_LAYER_USDT0, PAY_TO));
            assert_eq!(required.resource.expect("resource").description.as_deref(), Some("A quote"));
            let body = json_of(resp).await;
            assert_eq!(body["type"], "https://paymentauth.org/problems/payment-required", "{fw:?} {mode:?}");
            assert_eq!(body["challengeId"], c.id.as_str());
            // Other routes are untouched.
            let free = f.http.get(format!("{}/free", f.running.base)).send().await.unwrap();
            assert_eq!(free.text().await.unwrap(), "free");
        }
    }
}

#[tokio::test]
async fn x402_pays_and_only_x402_settles() {
    for fw in FRAMEWORKS {
        for mode in MODES {
            let f = start(fw, mode).await;
            let (x402_before, mpp_before) = (f.x402_balance(), f.mpp_balance());
            let signature = f.x402_payment().await;
            let resp = f.get(&[("PAYMENT-SIGNATURE", &signature)]).await;
            assert_eq!(resp.status(), 200, "{fw:?} {mode:?}");
            let settled = decode_payment_response_header(resp.headers()["payment-response"].to_str().unwrap())
                .expect("PAYMENT-RESPONSE decodes");
            assert!(settled.success);
            assert!(resp.headers().get("payment-receipt").is_none(), "{fw:?} {mode:?}");
            let body = json_of(resp).await;
            assert_eq!(body["paid"], "x402", "{fw:?} {mode:?}");
            assert_eq!(body["payer"], f.buyer.address().to_string());
            assert_eq!(f.x402_balance(), x402_before - U256::from(10_000u64), "{fw:?} {mode:?}");
            assert_eq!(f.facilitator.settlement_count(), 1);
            assert_eq!((f.mpp_balance(), f.sa.charge_count()), (mpp_before, 0), "{fw:?} {mode:?}: MPP untouched");
        }
    }
}

#[tokio::test]
async fn mpp_pays_and_only_mpp_settles() {
    for fw in FRAMEWORKS {
        for mode in MODES {
            let f = start(fw, mode).await;
            let (x402_before, mpp_before) = (f.x402_balance(), f.mpp_balance());
            let authorization = f.mpp_payment().await;
            let resp = f.get(&[("authorization", &authorization)]).await;
            assert_eq!(resp.status(), 200, "{fw:?} {mode:?}");
            assert!(resp.headers().contains_key("payment-receipt"), "{fw:?} {mode:?}");
            assert!(resp.headers().get("payment-response").is_none(), "{fw:?} {mode:?}");
            let body = json_of(resp).await;
            assert_eq!(body["paid"], "mpp", "{fw:?} {mode:?}");
            assert_eq!(f.mpp_balance(), mpp_before - U256::from(10_000u64), "{fw:?} {mode:?}");
            assert_eq!(f.sa.charge_count(), 1);
            assert_eq!((f.x402_balance(), f.facilitator.settlement_count()), (x402_before, 0), "{fw:?} {mode:?}");
        }
    }
}

#[tokio::test]
async fn both_credentials_go_to_mpp_and_settle_once() {
    for fw in FRAMEWORKS {
        for mode in MODES {
            let f = start(fw, mode).await;
            let (x402_before, mpp_before) = (f.x402_balance(), f.mpp_balance());
            let signature = f.x402_payment().await;
            let authorization = f.mpp_payment().await;
            let resp = f.get(&[("PAYMENT-SIGNATURE", &signature), ("authorization", &authorization)]).await;
            assert_eq!(resp.status(), 200, "{fw:?} {mode:?}");
            assert!(resp.headers().contains_key("payment-receipt"));
            assert!(resp.headers().get("payment-response").is_none());
            assert_eq!(json_of(resp).await["paid"], "mpp", "{fw:?} {mode:?}");
            assert_eq!((f.sa.charge_count(), f.mpp_balance()), (1, mpp_before - U256::from(10_000u64)));
            assert_eq!((f.facilitator.settlement_count(), f.x402_balance()), (0, x402_before), "{fw:?} {mode:?}");
        }
    }
}

#[tokio::test]
async fn each_protocol_fails_with_its_own_error() {
    for fw in FRAMEWORKS {
        for mode in MODES {
            let f = start(fw, mode).await;
            // x402: an authorization whose value differs from what was signed.
            let signature = f.x402_payment().await;
            let AnyPaymentPayload::V2(mut payload) =
                pay402::x402::decode_payment_signature_header(&signature).expect("decodes")
            else {
                panic!("v2")
            };
            payload
                .payload
                .get_mut("authorization")
                .and_then(|a| a.as_object_mut())
                .expect("authorization")
                .insert("value".into(), "999".into());
            let tampered = encode_payment_signature_header(&payload).expect("encodes");
            let resp = f.get(&[("PAYMENT-SIGNATURE", &tampered)]).await;
            assert_eq!(resp.status(), 402, "{fw:?} {mode:?}");
            assert_eq!(
                required_of(&resp).error.as_deref(),
                Some("invalid_exact_evm_payload_authorization_value_mismatch"),
                "{fw:?} {mode:?}"
            );
            assert!(resp.headers().get("www-authenticate").is_none(), "{fw:?} {mode:?}: x402's own error");
            // MPP: a forged challenge id.
            let authorization = f.mpp_payment().await;
            let mut credential = Credential::from_authorization_header(&authorization).expect("decodes");
            credential.challenge.id = format!("{}x", &credential.challenge.id[1..]);
            let resp = f.get(&[("authorization", &credential.to_authorization_header())]).await;
            assert_eq!(resp.status(), 402, "{fw:?} {mode:?}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            assert!(resp.headers().get("payment-required").is_none(), "{fw:?} {mode:?}: MPP's own error");
            let body = json_of(resp).await;
            assert_eq!(body["type"], "https://paymentauth.org/problems/invalid-challenge", "{fw:?} {mode:?}");
            assert_eq!((f.facilitator.settlement_count(), f.sa.charge_count()), (0, 0), "{fw:?} {mode:?}");
        }
    }
}

/// A deterministic x402 payment: fixed clock and nonce, so both servers see the same bytes.
async fn deterministic_payment(required: &PaymentRequired, nonce: u8, now: u64) -> String {
    let scheme = ExactEvmClientScheme::new(BUYER_KEY.parse().expect("key"))
        .with_clock(move || now)
        .with_nonce_source(move || B256::repeat_byte(nonce));
    let client = X402Client::new().register("eip155:196", scheme);
    let AnyPaymentPayload::V2(mut p) =
        client.create_payment_payload(&AnyPaymentRequired::V2(required.clone())).await.expect("pays")
    else {
        panic!("v2")
    };
    // The same resource URL for both servers (it is not part of what is verified).
    p.resource = None;
    encode_payment_signature_header(&p).expect("encodes")
}

/// Everything of a response that must match, with the server's base URL replaced. MPP parts
/// that depend on the time (challenge ids, receipts' references) are reduced to their presence
/// and the problem type.
async fn normalise(resp: reqwest::Response, base: &str) -> Vec<String> {
    let mut out = vec![format!("status {}", resp.status().as_u16())];
    for name in ["content-type", "cache-control", "access-control-expose-headers"] {
        let values: Vec<_> =
            resp.headers().get_all(name).iter().map(|v| v.to_str().unwrap_or("?").to_owned()).collect();
        out.push(format!("{name}: {values:?}"));
    }
    for name in ["www-authenticate", "payment-receipt"] {
        out.push(format!("{name}: {}", resp.headers().get_all(name).iter().count()));
    }
    if let Some(h) = resp.headers().get("payment-required") {
        let AnyPaymentRequired::V2(r) = decode_payment_required_header(h.to_str().unwrap()).expect("decodes") else {
            panic!("v2")
        };
        out.push(serde_json::to_string(&r).unwrap().replace(base, "BASE"));
    }
    if let Some(h) = resp.headers().get("payment-response") {
        out.push(serde_json::to_string(&decode_payment_response_header(h.to_str().unwrap()).unwrap()).unwrap());
    }
    let problem = resp.headers().get("content-type").is_some_and(|c| c == "application/problem+json");
    let text = resp.text().await.unwrap();
    if problem {
        let body: serde_json::Value = serde_json::from_str(&text).expect("problem JSON");
        out.push(format!("problem {} {}", body["type"], body["status"]));
    } else {
        out.push(text.replace(base, "BASE"));
    }
    out
}

/// The scripted sequence: unpaid, garbage, x402 paid, replayed, tampered; MPP paid, replayed,
/// forged.
async fn script(f: &Fixture, now: u64) -> Vec<Vec<String>> {
    let base = f.running.base.as_str();
    let mut seen = Vec::new();
    let unpaid = f.get(&[]).await;
    let required = required_of(&unpaid);
    seen.push(normalise(unpaid, base).await);
    seen.push(normalise(f.get(&[("payment-signature", "%%%")]).await, base).await);
    let good = deterministic_payment(&required, 7, now).await;
    seen.push(normalise(f.get(&[("payment-signature", &good)]).await, base).await);
    seen.push(normalise(f.get(&[("payment-signature", &good)]).await, base).await);
    let tampered = deterministic_payment(&required, 8, now).await.replace('A', "B");
    seen.push(normalise(f.get(&[("payment-signature", &tampered)]).await, base).await);
    let authorization = f.mpp_payment().await;
    seen.push(normalise(f.get(&[("authorization", &authorization)]).await, base).await);
    seen.push(normalise(f.get(&[("authorization", &authorization)]).await, base).await);
    let mut credential = Credential::from_authorization_header(&f.mpp_payment().await).expect("decodes");
    credential.challenge.id = format!("{}x", &credential.challenge.id[1..]);
    seen.push(normalise(f.get(&[("authorization", &credential.to_authorization_header())]).await, base).await);
    seen
}

#[tokio::test]
async fn stacked_macros_and_route_table_answer_identically() {
    for fw in FRAMEWORKS {
        let by_macro = start(fw, Mode::Macro).await;
        let by_table = start(fw, Mode::Table).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let a = script(&by_macro, now).await;
        let b = script(&by_table, now).await;
        assert_eq!(a.len(), 8);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{fw:?}: response {i} differs between the stacked macros and the route table");
        }
        let statuses: Vec<&str> = a.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            statuses,
            [
                "status 402",
                "status 402",
                "status 200",
                "status 402",
                "status 402",
                "status 200",
                "status 402",
                "status 402"
            ],
            "{fw:?}: {a:?}"
        );
        for f in [&by_macro, &by_table] {
            assert_eq!((f.facilitator.settlement_count(), f.sa.charge_count()), (1, 1), "{fw:?}");
        }
    }
}
