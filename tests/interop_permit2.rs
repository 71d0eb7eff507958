//! Byte compatibility of pay402's Permit2 payments (`upto`, and `exact` over Permit2) with the
//! official x402 Python SDK (PyPI `x402` 2.25, scripts/deps/42-x402-official.sh), run as a real
//! process (tests/interop/x402-official/permit2_peer.py):
//!
//! * payloads signed by pay402's [`UptoEvmClientScheme`] and [`ExactEvmClientScheme`] pass the
//!   SDK's own facilitator verification (its typed data, its ecrecover, its field checks; the
//!   chain reads are stubbed), and a payload altered after signing fails it;
//! * pay402's [`AutoPay`](pay402::autopay::AutoPay) pays the SDK's FastAPI `upto` seller (its
//!   facilitator: pay402's embedded one over HTTP) and is charged what the handler reported;
//! * payloads signed by the SDK's clients parse with [`Permit2Authorization::from_payload`],
//!   verify with [`Permit2Authorization::verify_signature`] and pass pay402's
//!   [`EmbeddedFacilitator`], which settles the upto one for less than its maximum.
//!
//! A missing venv fails these tests with the install command; they are never skipped.

#[path = "interop/peers.rs"]
mod peers;
mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::permit2::{EXACT_PERMIT2_PROXY, Permit2Authorization, UPTO_PERMIT2_PROXY};
use pay402::evm::{self, PrivateKeySigner, U256, signer_from_hex};
use pay402::x402::{
    EMBEDDED_FACILITATOR_ADDRESS, EmbeddedFacilitator, ExactEvmClientScheme, PaymentPayload, PaymentRequirements,
    SchemeNetworkClient, UptoEvmClientScheme,
};
use serde_json::{Value, json};

/// The Python buyer: Anvil test account 3 (a well-known test key, never funded anywhere real).
const PY_BUYER_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const PY_BUYER: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
/// The pay402 buyer: Anvil test account 4.
const BUYER_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

fn requirements(scheme: &str) -> PaymentRequirements {
    let mut extra = json!({"name": "USD\u{20ae}0", "version": "1", "assetTransferMethod": "permit2"});
    if scheme == "upto" {
        extra["facilitatorAddress"] = json!(evm::checksum(&EMBEDDED_FACILITATOR_ADDRESS));
    }
    serde_json::from_value(json!({
        "scheme": scheme,
        "network": "eip155:196",
        "asset": X_LAYER_USDT0,
        "amount": "100000",
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": extra,
    }))
    .expect("requirements")
}

async fn pay402_signs(scheme: &str) -> serde_json::Map<String, Value> {
    let signer: PrivateKeySigner = signer_from_hex(BUYER_KEY).expect("key");
    let r = requirements(scheme);
    if scheme == "upto" {
        UptoEvmClientScheme::new(signer).create_payment(&r, None).await.expect("signed")
    } else {
        ExactEvmClientScheme::new(signer).create_payment(&r, None).await.expect("signed")
    }
}

async fn python_verifies(scheme: &str, payload: &serde_json::Map<String, Value>) -> Value {
    let r = serde_json::to_string(&requirements(scheme)).expect("json");
    let p = serde_json::to_string(payload).expect("json");
    let facilitator = evm::checksum(&EMBEDDED_FACILITATOR_ADDRESS);
    peers::official_python("permit2_peer.py", &["verify", scheme, &r, &p, &facilitator]).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_facilitator_verifies_what_pay402_signs() {
    let buyer = evm::checksum(&signer_from_hex(BUYER_KEY).expect("key").address());
    for scheme in ["upto", "exact"] {
        let payload = pay402_signs(scheme).await;
        let out = python_verifies(scheme, &payload).await;
        assert_eq!(out["isValid"], true, "{scheme}: {out}");
        assert_eq!(out["payer"], buyer.as_str(), "{scheme}: {out}");

        // One unit more than was signed: the SDK's signature check refuses it.
        let mut altered = payload.clone();
        altered["permit2Authorization"]["permitted"]["amount"] = json!("100001");
        let mut r = requirements(scheme);
        r.amount = "100001".into();
        let rj = serde_json::to_string(&r).expect("json");
        let pj = serde_json::to_string(&altered).expect("json");
        let facilitator = evm::checksum(&EMBEDDED_FACILITATOR_ADDRESS);
        let out = peers::official_python("permit2_peer.py", &["verify", scheme, &rj, &pj, &facilitator]).await.json();
        assert_eq!(
            (out["isValid"].clone(), out["invalidReason"].clone()),
            (json!(false), json!("invalid_permit2_signature")),
            "{scheme}: {out}"
        );
    }
    // An upto payment bound to another facilitator: the SDK refuses it too.
    let payload = pay402_signs("upto").await;
    let r = serde_json::to_string(&requirements("upto")).expect("json");
    let p = serde_json::to_string(&payload).expect("json");
    let other = "0x000000000000000000000000000000000000dEaD";
    let out = peers::official_python("permit2_peer.py", &["verify", "upto", &r, &p, other]).await.json();
    assert_eq!(out["invalidReason"], "upto_facilitator_mismatch", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay402_verifies_and_settles_what_the_official_python_client_signs() {
    let facilitator = EmbeddedFacilitator::new().with_faucet(U256::from(1_000_000u64));
    for scheme in ["upto", "exact"] {
        let r = requirements(scheme);
        let rj = serde_json::to_string(&r).expect("json");
        let out = peers::official_python("permit2_peer.py", &["sign", scheme, &rj, PY_BUYER_KEY]).await.json();
        let payload = out.as_object().cloned().expect("a payload object");
        let (auth, signature) = Permit2Authorization::from_payload(&payload).expect("pay402 parses the SDK's payload");
        assert_eq!(auth.from, evm::parse_address(PY_BUYER).expect("address"), "{out}");
        assert_eq!(auth.amount, U256::from(100_000u64));
        assert_eq!(auth.spender, if scheme == "upto" { UPTO_PERMIT2_PROXY } else { EXACT_PERMIT2_PROXY });
        assert!(auth.verify_signature(&signature, 196), "{scheme}: the SDK's signature verifies in pay402");
        assert!(!auth.verify_signature(&signature, 1), "{scheme}: not under another chain's domain");
        // A re-serialised payload keeps the signature valid (the same typed data both ways).
        let (again, _) = Permit2Authorization::from_payload(&auth.to_payload(&signature)).expect("round trip");
        assert_eq!(again, auth);

        let paid = PaymentPayload { x402_version: 2, payload, accepted: r.clone(), resource: None, extensions: None };
        let verified = facilitator.verify_now(&paid, &r);
        assert!(verified.is_valid, "{scheme}: {verified:?}");
        let mut settle = r.clone();
        if scheme == "upto" {
            settle.amount = "34700".into();
        }
        let settled = facilitator.settle_now(&paid, &settle);
        assert!(settled.success, "{scheme}: {settled:?}");
    }
    // 34 700 (upto, of a 100 000 maximum) + 100 000 (exact).
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_134_700u64));
}

/// The buyer's one-time approval, as [`approve_calldata`] builds it, is a valid ERC-20 `approve`
/// on a real token (FiatToken v2.2 on anvil): afterwards `allowance(owner, PERMIT2)` — read with
/// [`allowance_calldata`] — is the approved amount; [`approve_permit2`] sends the same through a
/// provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_calldata_grants_permit2_an_allowance_on_chain() {
    use alloy::network::TransactionBuilder;
    use alloy::providers::Provider;
    use alloy::rpc::types::TransactionRequest;
    use pay402::evm::permit2::{allowance_calldata, approve_calldata};

    let chain = support::anvil::Chain::start().await;
    let allowance = || async {
        let tx = TransactionRequest::default().with_to(chain.token).with_input(allowance_calldata(chain.deployer));
        U256::from_be_slice(&chain.provider.call(tx).await.expect("eth_call allowance"))
    };
    assert_eq!(allowance().await, U256::ZERO);
    chain.send(chain.token, approve_calldata(U256::from(123_456u64))).await.expect("approve");
    assert_eq!(allowance().await, U256::from(123_456u64));
    chain.send(chain.token, approve_calldata(U256::MAX)).await.expect("approve unlimited");
    assert_eq!(allowance().await, U256::MAX);
    // The provider-based helper sends the same transaction.
    pay402::evm::permit2::approve_permit2(&chain.provider, chain.token, U256::from(7u64)).await.expect("approve");
    assert_eq!(allowance().await, U256::from(7u64));
}

/// pay402's auto-pay client pays the official SDK's `upto` seller (FastAPI middleware, upto
/// server scheme, `set_settlement_overrides` of 100 atomic units per word), whose facilitator is
/// pay402's embedded facilitator over HTTP: the SDK fills `facilitatorAddress` from its
/// `/supported`, the buyer authorises the 0.01 maximum and is charged exactly what was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopay_pays_the_official_python_upto_seller() {
    use pay402::autopay::{AssetId, AutoPay, AutoPayOutcome};
    use std::sync::Arc;

    let embedded = EmbeddedFacilitator::new().with_faucet(U256::from(1_000_000u64));
    let facilitator =
        support::serve_axum(pay402::x402::facilitator_evm::server::router(Arc::new(embedded.clone()))).await;
    let python = peers::deps_dir().join("venv-x402/bin/python");
    assert!(python.is_file(), "the official x402 Python SDK is not installed (scripts/deps/42-x402-official.sh)");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(peers::script("x402-official", "upto_seller.py")).args([
        facilitator.base.as_str(),
        PAY_TO,
        X_LAYER_USDT0,
        "10000",
        "USD\u{20ae}0",
        "1",
    ]);
    let (seller, url) = peers::start_announced(cmd, "upto_seller");

    let buyer: PrivateKeySigner = signer_from_hex(BUYER_KEY).expect("key");
    let usdt0 = AssetId::x_layer_usdt0();
    let autopay = AutoPay::new(buyer.clone())
        .max_per_request(usdt0.clone(), "0.01".parse().expect("amount"))
        .max_total(usdt0.clone(), "1".parse().expect("amount"))
        .build()
        .expect("autopay");
    let http = autopay.client(reqwest::Client::builder().timeout(peers::PEER_TIMEOUT)).expect("client");
    for (words, charged) in [(37u64, 3_700u64), (5, 500), (0, 0)] {
        let resp = http.get(format!("{url}?words={words}")).send().await.expect("request");
        assert_eq!(resp.status(), 200, "words={words}\n--- seller\n{}", seller.log());
        let outcome = resp.extensions().get::<AutoPayOutcome>().cloned().expect("an outcome");
        assert_eq!((outcome.amount, outcome.authorized), (U256::from(charged), U256::from(10_000u64)), "{words}");
    }
    assert_eq!(autopay.spent(&usdt0), U256::from(4_200u64));
    assert_eq!(embedded.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_004_200u64));
    assert_eq!(embedded.balance(X_LAYER_USDT0, &buyer.address().to_string()), U256::from(995_800u64));
    // A maximum above the buyer's cap is not paid at all.
    let strict =
        AutoPay::new(buyer).max_per_request(usdt0.clone(), "0.005".parse().expect("amount")).build().expect("autopay");
    let http = strict.client(reqwest::Client::builder().timeout(peers::PEER_TIMEOUT)).expect("client");
    let err = http.get(format!("{url}?words=1")).send().await.expect_err("refused");
    assert!(
        matches!(
            pay402::autopay::AutoPayError::from_middleware(&err),
            Some(pay402::autopay::AutoPayError::OverCap { .. })
        ),
        "{err}"
    );
    // Three settle calls (the SDK asks the facilitator to settle 0 too: success, no transfer).
    assert_eq!(embedded.settlement_count(), 3);
    assert_eq!(embedded.settlements()[2].amount.as_deref(), Some("0"));
    assert_eq!(embedded.settlements()[2].transaction, "");
}
