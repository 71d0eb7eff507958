//! The low-level `Mpp::charge` API (the seed's keyword arguments), `from_env`, and events.

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::mpp::{
    ChargeIntent, ChargeOptions, ChargeOutcome, EmbeddedSa, EvmMethod, Mpp, MppChargeClient, MppConfigError, PayError,
    Split, parse_www_authenticate,
};
use std::sync::{Arc, Mutex};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const PARTNER: &str = "0x4444444444444444444444444444444444444444";
const KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";

fn setup() -> (Mpp, EmbeddedSa, MppChargeClient, Arc<Mutex<Vec<String>>>) {
    let sa = EmbeddedSa::new();
    let buyer: PrivateKeySigner = KEY.parse().expect("key");
    sa.fund(X_LAYER_USDT0, &buyer.address().to_string(), U256::from(1_000_000u64)).expect("fund");
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let (e1, e2, e3) = (Arc::clone(&events), Arc::clone(&events), Arc::clone(&events));
    let method = EvmMethod::x_layer(PAY_TO).with_charge(ChargeIntent::new(sa.clone()));
    let mpp = Mpp::new(method, "api.example.com", "secret-at-least-32-bytes-long-hmac-key")
        .expect("mpp")
        .on_challenge_created(move |c| e1.lock().unwrap().push(format!("challenge {}", c.intent)))
        .on_payment_success(move |_, r| e2.lock().unwrap().push(format!("success {}", r.method)))
        .on_payment_failed(move |e| e3.lock().unwrap().push(format!("failed {}", e.status())));
    (mpp, sa, MppChargeClient::new(buyer), events)
}

async fn pay(
    mpp: &Mpp,
    client: &MppChargeClient,
    amount: &str,
    opts: ChargeOptions,
) -> Result<ChargeOutcome, PayError> {
    let ChargeOutcome::Challenge(challenge) = mpp.charge(None, amount, opts.clone()).await? else {
        panic!("no credential must give a challenge")
    };
    let www = challenge.to_www_authenticate().expect("header");
    let parsed = parse_www_authenticate(&[&www]).expect("parses");
    let auth = client.credential_for(&parsed[0]).expect("credential").to_authorization_header();
    mpp.charge(Some(&auth), amount, opts).await
}

#[tokio::test]
async fn charge_challenges_then_settles_and_fires_events() {
    let (mpp, sa, client, events) = setup();
    let out = pay(&mpp, &client, "0.25", ChargeOptions::default()).await.expect("paid");
    let ChargeOutcome::Paid { receipt, credential } = out else { panic!("paid") };
    assert_eq!(receipt.status, "success");
    assert!(credential.source.is_some());
    assert_eq!(sa.balance(X_LAYER_USDT0, PAY_TO), U256::from(250_000u64));
    let events = events.lock().unwrap().clone();
    assert_eq!(events, ["challenge charge", "success evm"].map(String::from));
}

#[tokio::test]
async fn charge_with_splits_pays_each_recipient() {
    let (mpp, sa, client, _) = setup();
    let opts = ChargeOptions {
        splits: vec![Split { amount: "0.05".into(), recipient: PARTNER.into(), memo: None }],
        ..ChargeOptions::default()
    };
    pay(&mpp, &client, "0.2", opts).await.expect("paid");
    assert_eq!(sa.balance(X_LAYER_USDT0, PAY_TO), U256::from(150_000u64));
    assert_eq!(sa.balance(X_LAYER_USDT0, PARTNER), U256::from(50_000u64));
}

#[tokio::test]
async fn charge_validates_its_options() {
    let (mpp, _, _, events) = setup();
    let split = Split { amount: "0.01".into(), recipient: PARTNER.into(), memo: None };
    let both = ChargeOptions { splits: vec![split.clone()], fee_payer: true, ..ChargeOptions::default() };
    assert_eq!(mpp.charge(None, "1", both).await.unwrap_err().status(), 400);
    let eleven = ChargeOptions { splits: vec![split; 11], ..ChargeOptions::default() };
    assert_eq!(mpp.charge(None, "1", eleven).await.unwrap_err().status(), 400);
    let bad_memo = ChargeOptions { memo: Some("0x1234".into()), ..ChargeOptions::default() };
    assert_eq!(mpp.charge(None, "1", bad_memo).await.unwrap_err().status(), 400);
    let memo = format!("0x{}", "ab".repeat(32));
    let ok = ChargeOptions { memo: Some(memo.clone()), fee_payer: true, ..ChargeOptions::default() };
    let ChargeOutcome::Challenge(c) = mpp.charge(None, "1", ok).await.unwrap() else { panic!("challenge") };
    assert_eq!(c.request["methodDetails"]["memo"], memo.as_str());
    assert_eq!(c.request["methodDetails"]["feePayer"], true);
    assert_eq!(c.request["amount"], "1000000");
    for bad in ["-1", "abc", "0", "0.0000001"] {
        assert_eq!(mpp.charge(None, bad, ChargeOptions::default()).await.unwrap_err().status(), 400, "{bad}");
    }
    // A wrong credential fires the failure event.
    let _ = mpp.charge(Some("Payment !!!"), "1", ChargeOptions::default()).await;
    assert!(events.lock().unwrap().iter().any(|e| e == "failed 402"));
}

#[test]
fn constructor_errors_are_clear() {
    let method = EvmMethod::x_layer(PAY_TO);
    // An empty or short secret is refused, with the fix (challenge ids are HMACs under it).
    for short in ["", "s", "a-31-byte-secret-is-too-short!!"] {
        let err = Mpp::new(method.clone(), "realm", short).unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes") && err.contains("openssl rand -hex 32"), "{err}");
    }
    assert!(Mpp::new(method.clone(), "realm", "a-32-byte-secret-is-long-enough!").is_ok());
    // `from_env` names every missing variable at once (the test environment sets neither).
    if std::env::var("MPP_REALM").is_err() && std::env::var("MPP_SECRET_KEY").is_err() {
        let err = Mpp::from_env(method).unwrap_err();
        assert_eq!(err, MppConfigError::MissingEnv(vec!["MPP_REALM", "MPP_SECRET_KEY"]));
        assert_eq!(err.to_string(), "environment variables MPP_REALM and MPP_SECRET_KEY are not set");
    }
    let debug =
        format!("{:?}", Mpp::new(EvmMethod::x_layer(PAY_TO), "r", "top-secret-value-at-least-32-bytes-long").unwrap());
    assert!(!debug.contains("top-secret-value"), "{debug}");
}

#[tokio::test]
async fn route_decimals_and_external_id_are_honoured() {
    use pay402::mpp::{PaySpec, Receipt};
    use pay402::web::RequestContext;
    let (mpp, _sa, client, _) = setup();
    let spec = PaySpec { decimals: Some(4), external_id: Some("order-7".into()), ..PaySpec::charge("0.5") };
    let request = mpp.pay_request(&spec).expect("request");
    assert_eq!(request["amount"], "5000", "0.5 with 4 decimals");
    let ctx = |auth: Option<&str>| {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert("authorization", a.parse().unwrap());
        }
        RequestContext::new(http::Method::GET, "http://127.0.0.1/x".into(), h)
    };
    let unpaid = mpp.process(&ctx(None), &spec).await.expect_err("402");
    let www = unpaid.headers["www-authenticate"].to_str().unwrap().to_owned();
    let auth = client.authorization_header_for(&[&www]).expect("credential");
    let paid = mpp.process(&ctx(Some(&auth)), &spec).await.expect("paid");
    assert_eq!(paid.receipt.external_id.as_deref(), Some("order-7"));
    let headers = paid.finish(http::StatusCode::OK).await.expect("receipt headers");
    let receipt = Receipt::from_payment_receipt(headers["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(receipt.external_id.as_deref(), Some("order-7"));
}
