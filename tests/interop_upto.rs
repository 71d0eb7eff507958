//! Pay per use with the official x402 packages, both ways, as real processes:
//!
//! * their clients — PyPI `x402` 2.25 (`UptoEvmClientScheme`, `ExactEvmClientScheme` over Permit2;
//!   tests/interop/x402-official/pay_upto.py) and npm `@x402/evm` 2.27 (its `upto` and `exact`
//!   client schemes; tests/interop/node/x402_fetch_pay_upto.cjs) — pay pay402's `upto` examples
//!   (`axum_x402_upto`, `actix_x402_upto`: `words=37` settles 3 700 base units, `words=0`
//!   nothing, `words=101` is refused without a body or a settlement) and a pay402 route selling
//!   `exact` over Permit2;
//! * their facilitator (PyPI `x402` 2.25's `UptoEvmFacilitatorScheme` and Permit2 `exact`, over
//!   its web3 signer; tests/interop/x402-official/facilitate_upto.py) verifies and settles on
//!   anvil — Uniswap's original Permit2 and pay402's test proxies — payloads pay402's clients
//!   signed, and exactly the settled amounts move on chain.
//!
//! pay402's clients paying their `upto` seller: tests/interop_permit2.rs. A missing peer fails
//! these tests with the install command; they are never skipped.

#[path = "interop/peers.rs"]
mod peers;
mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{self, PrivateKeySigner, U256, signer_from_hex};
use pay402::x402::{
    EmbeddedFacilitator, ExactEvmClientScheme, ExactEvmScheme, PaymentOption, PaymentPayload, PaymentRequirements,
    RouteConfig, SchemeNetworkClient, UptoEvmClientScheme, X402HttpServer, X402ResourceServer,
};
use serde_json::{Value, json};
use support::anvil::{self, Chain};
use support::permit2;

/// The Python / Node buyer: Anvil test account 5 (a well-known test key, never funded anywhere
/// real); the development faucet funds it and approves Permit2 for it.
const PEER_BUYER_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
/// The development payee of the examples (`pay402::setup::DEVELOPMENT_PAY_TO`).
const DEV_PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

async fn python_pays(url: &str, cap: &str) -> Value {
    peers::official_python("pay_upto.py", &[url, PEER_BUYER_KEY, X_LAYER_USDT0, cap]).await.json()
}

async fn node_pays(url: &str, cap: &str) -> Value {
    peers::node("x402_fetch_pay_upto.cjs", &[url, PEER_BUYER_KEY, &format!("eip155:196:{X_LAYER_USDT0}:{cap}")])
        .await
        .json()
}

/// What a peer client got from one `?words=N` request of an upto example.
fn assert_settled(out: &Value, words: u64, what: &str) {
    assert_eq!(out["status"], 200, "{what} words={words}: {out}");
    let payload = &out["paymentPayload"];
    assert_eq!(payload["accepted"]["scheme"], "upto", "{what}: {out}");
    assert_eq!(payload["accepted"]["amount"], "10000", "{what}: the maximum, $0.01");
    let auth = &payload["payload"]["permit2Authorization"];
    assert_eq!(auth["permitted"]["amount"], "10000", "{what}: signs the maximum");
    assert!(peers::eq_addr(&auth["spender"], &evm::checksum(&evm::permit2::UPTO_PERMIT2_PROXY)), "{what}: {auth}");
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{what}: {out}");
    assert_eq!(settled["amount"], (100 * words).to_string(), "{what}: exactly what was used");
    if words == 0 {
        assert_eq!(settled["transaction"], "", "{what}: nothing is sent for 0");
    } else {
        assert!(settled["transaction"].as_str().is_some_and(|t| t.starts_with("0x")), "{what}: {out}");
    }
    assert_eq!(out["body"]["words"], words, "{what}: the paid body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_pay_the_upto_examples() {
    for example in ["axum_x402_upto", "actix_x402_upto"] {
        let (server, url) = peers::start_example(example, &[]);
        assert!(url.ends_with("/summarize"), "{url}");
        for words in [37u64, 0] {
            let out = python_pays(&format!("{url}?words={words}"), "10000").await;
            assert_settled(&out, words, &format!("python → {example}\n{}", server.log()));
        }
        let out = node_pays(&format!("{url}?words=37"), "10000").await;
        assert_settled(&out, 37, &format!("node → {example}\n{}", server.log()));
        // 101 words cost more than the $0.01 maximum: refused, no summary, nothing settled.
        let out = python_pays(&format!("{url}?words=101"), "10000").await;
        assert_eq!(out["status"], 422, "{example}: {out}");
        assert!(out["paymentResponse"].is_null(), "{example}: nothing settled: {out}");
        assert!(!out.to_string().contains("lorem"), "{example}: no summary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_pay_exact_over_permit2() {
    let embedded = EmbeddedFacilitator::new().with_faucet(U256::from(1_000_000u64));
    let mut extra = serde_json::Map::new();
    extra.insert("assetTransferMethod".into(), "permit2".into());
    let route = RouteConfig::new(PaymentOption::exact("$0.001", DEV_PAY_TO).extra(extra));
    let server = X402ResourceServer::new(embedded.clone()).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server).route("GET /quote", route).expect("route");
    x402.initialize().await.expect("initialize");
    let app = axum::Router::new()
        .route("/quote", axum::routing::get(|| async { axum::Json(json!({ "quote": "paid over Permit2" })) }))
        .layer(pay402::axum::X402Layer::new(x402));
    let shop = support::serve_axum(app).await;
    let url = format!("{}/quote", shop.base);
    let buyer = signer_from_hex(PEER_BUYER_KEY).expect("key").address().to_string();

    for (n, peer) in ["python", "node"].into_iter().enumerate() {
        let out = if peer == "python" { python_pays(&url, "1000").await } else { node_pays(&url, "1000").await };
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"]["quote"], "paid over Permit2");
        let payload = &out["paymentPayload"];
        assert_eq!(payload["accepted"]["extra"]["assetTransferMethod"], "permit2", "{out}");
        let auth = &payload["payload"]["permit2Authorization"];
        assert!(peers::eq_addr(&auth["spender"], &evm::checksum(&evm::permit2::EXACT_PERMIT2_PROXY)), "{auth}");
        assert_eq!(auth["permitted"]["amount"], "1000");
        assert_eq!(out["paymentResponse"]["success"], true, "{out}");
        let paid = 1_000u64 * (n as u64 + 1);
        assert_eq!(
            embedded.balance(X_LAYER_USDT0, &buyer),
            U256::from(1_000_000 - paid),
            "exactly the price: {out}\n{:?}",
            embedded.settlements()
        );
        assert_eq!(embedded.balance(X_LAYER_USDT0, DEV_PAY_TO), U256::from(1_000_000 + paid));
    }
}

/// The chain's token in requirements pay402's clients sign: `upto` names `facilitator`.
fn requirements(chain: &Chain, scheme: &str, amount: u64, pay_to: &str, facilitator: &str) -> PaymentRequirements {
    let mut extra = json!({
        "name": anvil::TOKEN_NAME,
        "version": anvil::TOKEN_VERSION,
        "assetTransferMethod": "permit2",
    });
    if scheme == "upto" {
        extra["facilitatorAddress"] = json!(facilitator);
    }
    serde_json::from_value(json!({
        "scheme": scheme,
        "network": chain.network(),
        "asset": chain.token.to_checksum(None),
        "amount": amount.to_string(),
        "payTo": pay_to,
        "maxTimeoutSeconds": 300,
        "extra": extra,
    }))
    .expect("requirements")
}

async fn signed(client: &dyn SchemeNetworkClient, r: &PaymentRequirements) -> PaymentPayload {
    let payment = client.create_payment(r, None).await.expect("signed");
    PaymentPayload { x402_version: 2, payload: payment, accepted: r.clone(), resource: None, extensions: None }
}

async fn python_facilitates(chain: &Chain, key: &PrivateKeySigner, request: Value) -> Value {
    let key_hex = format!("0x{}", alloy::hex::encode(key.to_bytes()));
    let input = std::env::temp_dir().join(format!("pay402-facilitate-{}-{}.json", std::process::id(), rand_suffix()));
    std::fs::write(&input, request.to_string()).expect("request file");
    let input_text = input.to_string_lossy().into_owned();
    let out = peers::official_python("facilitate_upto.py", &[chain.rpc_url.as_str(), key_hex.as_str(), &input_text])
        .await
        .json();
    let _ = std::fs::remove_file(&input);
    out
}

fn rand_suffix() -> u64 {
    let random = evm::B256::random();
    u64::from_be_bytes(random.0[..8].try_into().expect("8 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_facilitator_settles_on_chain_what_pay402_signed() {
    let chain = Chain::start().await;
    permit2::deploy(&chain).await;
    let facilitator_key = chain.dev_key(8);
    let facilitator = facilitator_key.address().to_checksum(None);
    let buyer = anvil::fresh_key();
    chain.mint(buyer.address(), U256::from(1_000_000u64)).await;
    permit2::approve(&chain, &buyer, U256::MAX).await;
    let pay_to = anvil::fresh_key().address();
    let pay_to_text = pay_to.to_checksum(None);

    // upto: pay402 signs the 0.10 maximum for the official facilitator; it settles 0.0347.
    let r = requirements(&chain, "upto", 100_000, &pay_to_text, &facilitator);
    let payload = signed(&UptoEvmClientScheme::new(buyer.clone()), &r).await;
    let out = python_facilitates(
        &chain,
        &facilitator_key,
        json!({ "paymentPayload": payload, "paymentRequirements": r, "settleAmount": "34700" }),
    )
    .await;
    assert!(peers::eq_addr(&out["facilitatorAddress"], &facilitator), "{out}");
    assert_eq!(out["verify"]["isValid"], true, "{out}");
    assert_eq!(out["settle"]["success"], true, "{out}");
    assert_eq!(chain.balance(buyer.address()).await, U256::from(1_000_000u64 - 34_700));
    assert_eq!(chain.balance(pay_to).await, U256::from(34_700u64), "exactly the settled amount moved");
    let nonce = evm::permit2::Permit2Authorization::from_payload(&payload.payload).expect("parse").0.nonce;
    assert!(permit2::nonce_used(&chain, buyer.address(), nonce).await, "Permit2 spent the nonce");

    // The same authorization again: the official facilitator refuses it (the nonce is used).
    let again = python_facilitates(
        &chain,
        &facilitator_key,
        json!({ "paymentPayload": payload, "paymentRequirements": r, "settleAmount": "34700" }),
    )
    .await;
    assert!(again["verify"]["isValid"] == false || again["settle"]["success"] == false, "{again}");
    assert_eq!(chain.balance(pay_to).await, U256::from(34_700u64), "the replay moved nothing");

    // exact over Permit2: pay402 signs the price; the official facilitator settles it.
    let r = requirements(&chain, "exact", 1_000, &pay_to_text, &facilitator);
    let payload = signed(&ExactEvmClientScheme::new(buyer.clone()), &r).await;
    let out = python_facilitates(
        &chain,
        &facilitator_key,
        json!({ "paymentPayload": payload, "paymentRequirements": r, "settleAmount": null }),
    )
    .await;
    assert_eq!(out["verify"]["isValid"], true, "{out}");
    assert_eq!(out["settle"]["success"], true, "{out}");
    assert_eq!(chain.balance(pay_to).await, U256::from(35_700u64), "exactly the price moved");
}
