//! MPP `charge` end to end on axum and actix-web: real servers on 127.0.0.1, real HTTP, real
//! EIP-3009 credentials from pay402's charge client, the embedded Settlement Agent's ledger.

mod support;

use base64::Engine as _;
use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::mpp::{
    ChargeIntent, Credential, EmbeddedSa, EvmMethod, Mpp, MppChargeClient, PaySpec, Receipt, parse_www_authenticate,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{FRAMEWORKS, Framework, Running};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const OTHER: &str = "0x3333333333333333333333333333333333333333";
const BUYER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

struct Fixture {
    running: Running,
    sa: EmbeddedSa,
    calls: Arc<AtomicUsize>,
    client: MppChargeClient,
    http: reqwest::Client,
}

fn mpp(sa: &EmbeddedSa) -> Mpp {
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.clone()));
    Mpp::new(method, "api.example.com", "test-mpp-secret-at-least-32-bytes-long-hmac-key")
        .expect("mpp")
        .route("GET /premium", PaySpec::charge("0.01").description("One premium API call"))
        .and_then(|m| m.route("GET /cheap", PaySpec::charge("0.001")))
        .and_then(|m| m.route("GET /short", PaySpec::charge("0.01").expires_in(Duration::from_secs(1))))
        .expect("routes")
}

async fn start(fw: Framework) -> Fixture {
    let sa = EmbeddedSa::new();
    let buyer: PrivateKeySigner = BUYER_KEY.parse().expect("key");
    sa.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let mpp = mpp(&sa);
    let calls = Arc::new(AtomicUsize::new(0));
    let running = match fw {
        Framework::Axum => {
            let c = Arc::clone(&calls);
            let handler = move |credential: Credential, receipt: Receipt| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(
                        serde_json::json!({ "data": "premium", "reference": receipt.reference, "payer": credential.source }),
                    )
                }
            };
            let app = axum::Router::new()
                .route("/premium", axum::routing::get(handler.clone()))
                .route("/cheap", axum::routing::get(handler.clone()))
                .route("/short", axum::routing::get(handler))
                .layer(pay402::axum::MppLayer::new(mpp));
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::{HttpResponse, web};
            let c = Arc::clone(&calls);
            support::serve_actix(move || {
                let c = Arc::clone(&c);
                let handler = move |credential: Credential, receipt: Receipt| {
                    c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        HttpResponse::Ok().json(
                            serde_json::json!({ "data": "premium", "reference": receipt.reference, "payer": credential.source }),
                        )
                    }
                };
                actix_web::App::new()
                    .wrap(pay402::actix::MppMiddleware::new(mpp.clone()))
                    .route("/premium", web::get().to(handler.clone()))
                    .route("/cheap", web::get().to(handler.clone()))
                    .route("/short", web::get().to(handler))
            })
        }
    };
    Fixture { running, sa, calls, client: MppChargeClient::new(buyer), http: reqwest::Client::new() }
}

impl Fixture {
    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.running.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.expect("request")
    }

    /// GET → 402 → an `Authorization: Payment …` paying the challenge.
    async fn pay(&self, path: &str) -> String {
        let resp = self.get(path, None).await;
        assert_eq!(resp.status(), 402);
        let www: Vec<&str> = resp.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
        self.client.authorization_header_for(&www).expect("credential")
    }

    fn buyer_balance(&self) -> U256 {
        self.sa.balance(X_LAYER_USDT0, &self.client.address().to_string())
    }
}

fn problem(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("problem JSON")
}

/// Re-encodes a credential after `edit`.
fn tamper(authorization: &str, edit: impl FnOnce(&mut Credential)) -> String {
    let mut c = Credential::from_authorization_header(authorization).expect("decodes");
    edit(&mut c);
    c.to_authorization_header()
}

#[tokio::test]
async fn unpaid_gets_a_parsable_challenge() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let resp = f.get("/premium", None).await;
        assert_eq!(resp.status(), 402, "{fw:?}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let www = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
        let parsed = parse_www_authenticate(&[&www]).expect("parses");
        assert_eq!(parsed.len(), 1);
        let c = &parsed[0];
        assert_eq!((c.realm.as_str(), c.method.as_str(), c.intent.as_str()), ("api.example.com", "evm", "charge"));
        assert!(c.verify_id("test-mpp-secret-at-least-32-bytes-long-hmac-key"));
        assert_eq!(c.request["amount"], "10000");
        assert_eq!(c.request["currency"], X_LAYER_USDT0);
        assert_eq!(c.request["recipient"], PAY_TO);
        assert_eq!(c.request["description"], "One premium API call");
        assert_eq!(c.request["methodDetails"], serde_json::json!({ "chainId": 196, "feePayer": false }));
        let body = problem(&resp.text().await.unwrap());
        assert_eq!(body["type"], "https://paymentauth.org/problems/payment-required");
        assert_eq!(body["challengeId"], c.id.as_str());
        assert_eq!(body["detail"], "Payment is required for \"api.example.com\" (One premium API call).");
    }
}

#[tokio::test]
async fn paid_request_gets_a_receipt_and_moves_the_ledger() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let before = f.buyer_balance();
        let auth = f.pay("/premium").await;
        let resp = f.get("/premium", Some(&auth)).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        let receipt =
            Receipt::from_payment_receipt(resp.headers()["payment-receipt"].to_str().unwrap()).expect("receipt");
        assert_eq!((receipt.status.as_str(), receipt.method.as_str()), ("success", "evm"));
        assert!(receipt.reference.starts_with("0x"));
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["reference"], receipt.reference.as_str());
        assert_eq!(f.buyer_balance(), before - U256::from(10_000u64), "{fw:?}");
        assert_eq!(f.sa.balance(X_LAYER_USDT0, PAY_TO), U256::from(10_000u64));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn bad_credentials_get_their_problem_and_never_reach_the_handler() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let before = f.buyer_balance();
        let mut cases: Vec<(String, u16, &str)> = Vec::new();
        // A forged challenge id.
        let forged = tamper(&f.pay("/premium").await, |c| c.challenge.id = format!("{}x", &c.challenge.id[1..]));
        cases.push((forged, 402, "invalid-challenge"));
        // A credential for the cheaper route presented to the expensive one.
        cases.push((f.pay("/cheap").await, 402, "invalid-challenge"));
        // An authorization paying someone else.
        let wrong_recipient = tamper(&f.pay("/premium").await, |c| {
            let auth = c.payload.get_mut("authorization").and_then(|a| a.as_object_mut()).expect("authorization");
            auth.insert("to".into(), OTHER.into());
        });
        cases.push((wrong_recipient, 402, "verification-failed"));
        // Malformed base64 and malformed JSON.
        cases.push(("Payment !!!not-base64!!!".into(), 402, "malformed-credential"));
        let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{not json");
        cases.push((format!("Payment {not_json}"), 402, "malformed-credential"));
        for (auth, status, slug) in cases {
            let resp = f.get("/premium", Some(&auth)).await;
            assert_eq!(resp.status().as_u16(), status, "{fw:?} {slug}");
            assert!(resp.headers().get("payment-receipt").is_none());
            assert!(resp.headers().get("www-authenticate").is_some(), "{fw:?} {slug}: a fresh challenge");
            let body = problem(&resp.text().await.unwrap());
            assert!(body["type"].as_str().unwrap().ends_with(slug), "{fw:?}: {body}");
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 0, "{fw:?}");
        assert_eq!(f.buyer_balance(), before);
    }
}

#[tokio::test]
async fn replayed_and_expired_credentials_are_refused() {
    for fw in FRAMEWORKS {
        let f = start(fw).await;
        let auth = f.pay("/premium").await;
        assert_eq!(f.get("/premium", Some(&auth)).await.status(), 200);
        let again = f.get("/premium", Some(&auth)).await;
        assert_eq!(again.status(), 402, "{fw:?}");
        let body = problem(&again.text().await.unwrap());
        assert_eq!(body["type"], "https://paymentauth.org/problems/invalid-challenge");
        assert_eq!(body["detail"], "challenge already used");
        // A challenge that lives one second, paid after it expired.
        let auth = f.pay("/short").await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let late = f.get("/short", Some(&auth)).await;
        assert_eq!(late.status(), 402, "{fw:?}");
        let body = problem(&late.text().await.unwrap());
        assert_eq!(body["type"], "https://paymentauth.org/problems/payment-expired", "{fw:?}");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "{fw:?}");
        assert_eq!(f.sa.charge_count(), 1);
    }
}

mod pay_axum {
    use pay402::axum::{Credential, Receipt, pay};

    #[pay(amount = "0.01", description = "One premium API call")]
    pub(crate) async fn premium(credential: Credential, receipt: Receipt) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({ "data": "premium", "reference": receipt.reference, "payer": credential.source }))
    }
}

mod pay_actix {
    use pay402::actix::{Credential, Receipt, pay};

    #[actix_web::get("/premium")]
    #[pay(amount = "0.01", description = "One premium API call")]
    pub(crate) async fn premium(credential: Credential, receipt: Receipt) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok()
            .json(serde_json::json!({ "data": "premium", "reference": receipt.reference, "payer": credential.source }))
    }
}

/// A `#[pay]` server with the same method, realm and secret as [`mpp`].
async fn start_macro(fw: Framework, sa: &EmbeddedSa) -> Running {
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.clone()));
    let mpp = Mpp::new(method, "api.example.com", "test-mpp-secret-at-least-32-bytes-long-hmac-key").expect("mpp");
    match fw {
        Framework::Axum => {
            support::serve_axum(
                axum::Router::new().route("/premium", axum::routing::get(pay_axum::premium)).with_state(mpp),
            )
            .await
        }
        Framework::Actix => {
            let data = actix_web::web::Data::new(mpp);
            support::serve_actix(move || actix_web::App::new().app_data(data.clone()).service(pay_actix::premium))
        }
    }
}

/// Status, content type, problem type/detail, and the challenge's request of a response.
async fn shape(resp: reqwest::Response) -> (u16, String, String, String, String) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let request = resp
        .headers()
        .get("www-authenticate")
        .map(|w| serde_json::to_string(&parse_www_authenticate(&[w.to_str().unwrap()]).unwrap()[0].request).unwrap())
        .unwrap_or_default();
    let has_receipt = resp.headers().contains_key("payment-receipt");
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or_default();
    let kind = body["type"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("receipt={has_receipt} data={}", body["data"]));
    (status, ct, kind, body["detail"].as_str().unwrap_or_default().to_owned(), request)
}

#[tokio::test]
async fn pay_macro_answers_like_the_route_table() {
    for fw in FRAMEWORKS {
        let table = start(fw).await;
        let sa = EmbeddedSa::new();
        sa.fund(X_LAYER_USDT0, &table.client.address().to_string(), U256::from(1_000_000u64)).expect("fund");
        let by_macro = start_macro(fw, &sa).await;
        let get = |base: &str, auth: Option<String>| {
            let mut req = table.http.get(format!("{base}/premium"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        let www = |r: &reqwest::Response| -> Vec<String> {
            r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
        };
        let mut shapes = Vec::new();
        for base in [&table.running.base, &by_macro.base] {
            let unpaid = get(base, None).await.unwrap();
            let challenge = www(&unpaid);
            let mut seen = vec![shape(unpaid).await];
            let refs: Vec<&str> = challenge.iter().map(String::as_str).collect();
            let auth = table.client.authorization_header_for(&refs).expect("credential");
            seen.push(shape(get(base, Some(auth.clone())).await.unwrap()).await);
            seen.push(shape(get(base, Some(auth)).await.unwrap()).await);
            seen.push(shape(get(base, Some("Payment %%%".into())).await.unwrap()).await);
            shapes.push(seen);
        }
        assert_eq!(shapes[0], shapes[1], "{fw:?}: #[pay] and the route table differ");
        assert_eq!(shapes[0][1].0, 200, "{fw:?}");
        assert_eq!(shapes[0][2].2, "https://paymentauth.org/problems/invalid-challenge", "{fw:?}: replay refused");
        assert_eq!(sa.charge_count(), 1, "{fw:?}: the macro server charged once");
    }
}
