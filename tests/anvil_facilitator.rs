//! The self-hosted on-chain facilitator (`X402Facilitator` + `ExactEvmFacilitatorScheme`) on a
//! real node: anvil (chain id 196) with Circle's FiatTokenV2_2. Payments are settled on chain
//! in-process and through the HTTP facilitator server, by a pay402 axum seller and pay402's
//! x402 client; replays, expired and not-yet-valid authorizations, insufficient balances, wrong
//! EIP-712 domains, a facilitator without gas and concurrent settlements are checked against the
//! chain's state.

mod support;

use alloy::providers::Provider;
use pay402::evm::{self, Address, B256, PrivateKeySigner, TransferWithAuthorization, U256};
use pay402::x402::X402ResourceServer;
use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator, reasons, server};
use pay402::x402::{
    AssetAmount, ExactEvmClientScheme, ExactEvmScheme, FacilitatorClient, HttpFacilitatorClient, HttpFacilitatorConfig,
    PaymentPayload, PaymentRequirements, decode_payment_required_header, decode_payment_response_header,
};
use pay402::x402::{PaymentOption, RouteConfig};
use std::sync::Arc;
use support::anvil::{self, Chain};

/// Atomic price of the paid route (0.001 tokens).
const PRICE: u64 = 1000;

async fn facilitator_for(chain: &Chain, key: PrivateKeySigner) -> X402Facilitator {
    let exact = ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, key)
        .await
        .expect("facilitator scheme")
        .with_asset(chain.token);
    assert_eq!(exact.network().as_str(), "eip155:196");
    let network = exact.network().clone();
    X402Facilitator::new().register([network], exact)
}

/// A payment signed by `buyer` for `requirements` (system clock, random nonce).
fn payment(buyer: &PrivateKeySigner, requirements: &PaymentRequirements) -> PaymentPayload {
    payment_with(ExactEvmClientScheme::new(buyer.clone()), requirements)
}

fn payment_with(scheme: ExactEvmClientScheme, requirements: &PaymentRequirements) -> PaymentPayload {
    PaymentPayload {
        x402_version: 2,
        payload: scheme.sign_payload(requirements).expect("sign").to_json_object(),
        accepted: requirements.clone(),
        resource: None,
        extensions: None,
    }
}

fn nonce_of(payload: &PaymentPayload) -> B256 {
    evm::parse_bytes32(payload.payload["authorization"]["nonce"].as_str().expect("nonce")).expect("bytes32")
}

/// A funded buyer (tokens only, no ETH).
async fn buyer(chain: &Chain, tokens: u64) -> PrivateKeySigner {
    let key = anvil::fresh_key();
    chain.mint(key.address(), U256::from(tokens)).await;
    key
}

/// A seller's axum app: `GET /quote` costs [`PRICE`] of the chain's token, paid to `pay_to`.
fn seller(chain: &Chain, facilitator: impl FacilitatorClient, pay_to: Address) -> axum::Router {
    use pay402::axum::{X402HttpServer, X402Layer, X402Payment};
    let mut extra = serde_json::Map::new();
    extra.insert("name".into(), anvil::TOKEN_NAME.into());
    extra.insert("version".into(), anvil::TOKEN_VERSION.into());
    let price = AssetAmount { amount: PRICE.to_string(), asset: chain.token.to_checksum(None), extra };
    let option = PaymentOption::new("exact", price, "eip155:196", &pay_to.to_checksum(None));
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server).route("GET /quote", RouteConfig::new(option)).expect("route");
    axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "quote": "secret resource", "paid_by": p.payer() }))
            }),
        )
        .layer(X402Layer::new(x402))
}

/// What a buyer got: status, body, decoded PAYMENT-RESPONSE.
struct Bought {
    status: u16,
    body: String,
    settlement: Option<pay402::x402::SettleResponse>,
    /// The payment header sent (name, value), to retry with.
    payment: (String, String),
}

/// GET → 402 → pay with pay402's x402 client → GET with the payment.
async fn buy(url: &str, key: &PrivateKeySigner) -> Bought {
    use pay402::x402::X402Client;
    let http = reqwest::Client::new();
    let first = http.get(url).send().await.expect("GET");
    assert_eq!(first.status().as_u16(), 402);
    let required = first.headers().get("payment-required").expect("PAYMENT-REQUIRED").to_str().expect("ascii");
    let required = decode_payment_required_header(required).expect("decode 402");
    let client = X402Client::new().register("eip155:*", ExactEvmClientScheme::new(key.clone()));
    let (name, value) = client.create_payment_header(&required).await.expect("pay");
    let paid = http.get(url).header(name, value.clone()).send().await.expect("paid GET");
    let status = paid.status().as_u16();
    let settlement = paid
        .headers()
        .get("payment-response")
        .map(|v| decode_payment_response_header(v.to_str().expect("ascii")).expect("decode PAYMENT-RESPONSE"));
    Bought { status, body: paid.text().await.expect("body"), settlement, payment: (name.to_owned(), value) }
}

async fn receipt_ok(chain: &Chain, tx: &str) -> bool {
    let hash = evm::parse_bytes32(tx).expect("tx hash");
    chain.provider.get_transaction_receipt(hash).await.expect("receipt").expect("mined").status()
}

#[tokio::test]
async fn pays_on_chain_through_the_http_facilitator_and_in_process() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();

    // The HTTP facilitator server, and a seller using HttpFacilitatorClient against it.
    let facilitator_http = support::serve_axum(server::router(Arc::new(facilitator.clone()))).await;
    let supported: serde_json::Value =
        reqwest::get(format!("{}/supported", facilitator_http.base)).await.expect("GET").json().await.expect("json");
    assert_eq!(supported["kinds"][0]["scheme"], "exact");
    assert_eq!(supported["kinds"][0]["network"], "eip155:196");
    assert_eq!(supported["kinds"][0]["x402Version"], 2);
    assert_eq!(supported["signers"]["eip155:*"][0], chain.dev_key(9).address().to_checksum(None));

    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&facilitator_http.base)).expect("client");
    let shop = support::serve_axum(seller(&chain, client, pay_to)).await;
    let bought = buy(&format!("{}/quote", shop.base), &key).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    assert!(bought.body.contains("secret resource"));
    let settled = bought.settlement.expect("PAYMENT-RESPONSE");
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.status.as_deref(), Some("success"));
    assert_eq!(settled.network.as_str(), "eip155:196");
    assert!(receipt_ok(&chain, &settled.transaction).await);
    assert_eq!(chain.balance(key.address()).await, U256::from(9 * PRICE));
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));

    // The settlement's status over HTTP.
    let status: serde_json::Value =
        reqwest::get(format!("{}/settle/status?txHash={}", facilitator_http.base, settled.transaction))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
    assert_eq!(status["status"], "success");

    // In-process: the seller uses the X402Facilitator directly.
    let shop = support::serve_axum(seller(&chain, facilitator.clone(), pay_to)).await;
    let bought = buy(&format!("{}/quote", shop.base), &key).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    let settled = bought.settlement.expect("PAYMENT-RESPONSE");
    assert!(settled.success && receipt_ok(&chain, &settled.transaction).await, "{settled:?}");
    assert_eq!(chain.balance(key.address()).await, U256::from(8 * PRICE));
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE));
}

#[tokio::test]
async fn replay_is_rejected_by_verify_and_by_the_chain() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&key, &requirements);

    assert!(facilitator.verify(&p, &requirements).await.expect("verify").is_valid);
    let settled = facilitator.settle(&p, &requirements).await.expect("settle");
    assert!(settled.success, "{settled:?}");
    assert!(chain.nonce_used(key.address(), nonce_of(&p)).await);

    let again = facilitator.verify(&p, &requirements).await.expect("verify");
    assert!(!again.is_valid);
    assert_eq!(again.invalid_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED));
    let again = facilitator.settle(&p, &requirements).await.expect("settle");
    assert!(!again.success);
    assert_eq!(again.error_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED));
    assert_eq!(again.transaction, "");

    // Straight to the token, bypassing the facilitator: the chain refuses it too.
    let err = chain.send(chain.token, direct_transfer(&p)).await.expect_err("replay must revert");
    assert!(err.contains("authorization is used or canceled"), "{err}");
    assert_eq!(chain.balance(key.address()).await, U256::from(9 * PRICE));
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
}

alloy::sol! {
    function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
}

/// `transferWithAuthorization(…, bytes signature)` calldata for a payment, to send directly.
fn direct_transfer(p: &PaymentPayload) -> Vec<u8> {
    use alloy::sol_types::SolCall;
    let a = &p.payload["authorization"];
    let field = |k: &str| a[k].as_str().expect("field");
    transferWithAuthorizationCall {
        from: evm::parse_address(field("from")).expect("from"),
        to: evm::parse_address(field("to")).expect("to"),
        value: evm::parse_uint256(field("value")).expect("value"),
        validAfter: evm::parse_uint256(field("validAfter")).expect("validAfter"),
        validBefore: evm::parse_uint256(field("validBefore")).expect("validBefore"),
        nonce: evm::parse_bytes32(field("nonce")).expect("nonce"),
        signature: p.payload["signature"].as_str().expect("signature").parse().expect("hex"),
    }
    .abi_encode()
}

#[tokio::test]
async fn expired_and_not_yet_valid_authorizations_are_rejected() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    let now = evm::system_unix_time();

    // Signed 1000 s ago with a 300 s window: validBefore is 700 s in the past.
    let expired = payment_with(ExactEvmClientScheme::new(key.clone()).with_clock(move || now - 1000), &requirements);
    let v = facilitator.verify(&expired, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::VALID_BEFORE), "{v:?}");
    let s = facilitator.settle(&expired, &requirements).await.expect("settle");
    assert_eq!(s.error_reason.as_deref(), Some(reasons::VALID_BEFORE), "{s:?}");
    let err = chain.send(chain.token, direct_transfer(&expired)).await.expect_err("expired must revert");
    assert!(err.contains("authorization is expired"), "{err}");

    // Signed as if 1000 s in the future: validAfter is ~400 s ahead.
    let early = payment_with(ExactEvmClientScheme::new(key.clone()).with_clock(move || now + 1000), &requirements);
    let v = facilitator.verify(&early, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::VALID_AFTER), "{v:?}");
    let err = chain.send(chain.token, direct_transfer(&early)).await.expect_err("not yet valid must revert");
    assert!(err.contains("authorization is not yet valid"), "{err}");
    assert_eq!(chain.balance(key.address()).await, U256::from(10 * PRICE));
}

#[tokio::test]
async fn insufficient_balance_is_rejected_before_sending() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, PRICE / 2).await;
    let requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    let p = payment(&key, &requirements);
    let v = facilitator.verify(&p, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INSUFFICIENT_BALANCE), "{v:?}");
    assert_eq!(v.payer.as_deref(), Some(key.address().to_checksum(None).as_str()));
    let nonce_before = chain.provider.get_transaction_count(chain.dev_key(9).address()).await.expect("nonce");
    let s = facilitator.settle(&p, &requirements).await.expect("settle");
    assert_eq!(s.error_reason.as_deref(), Some(reasons::INSUFFICIENT_BALANCE), "{s:?}");
    let nonce_after = chain.provider.get_transaction_count(chain.dev_key(9).address()).await.expect("nonce");
    assert_eq!(nonce_before, nonce_after, "no transaction was sent");
    assert_eq!(chain.balance(key.address()).await, U256::from(PRICE / 2));
}

#[tokio::test]
async fn wrong_domain_name_or_version_and_mismatches_are_rejected() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();

    // The buyer signs exactly what the requirements say; the token's domain differs.
    let mut wrong_name = chain.requirements(pay_to, PRICE);
    wrong_name.extra.insert("name".into(), "USD Coin".into());
    let v = facilitator.verify(&payment(&key, &wrong_name), &wrong_name).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::TOKEN_NAME_MISMATCH), "{v:?}");

    let mut wrong_version = chain.requirements(pay_to, PRICE);
    wrong_version.extra.insert("version".into(), "1".into());
    let s = facilitator.settle(&payment(&key, &wrong_version), &wrong_version).await.expect("settle");
    assert_eq!(s.error_reason.as_deref(), Some(reasons::TOKEN_VERSION_MISMATCH), "{s:?}");

    // Signed under the right domain but checked against other requirements.
    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&key, &requirements);
    let mut other_amount = requirements.clone();
    other_amount.amount = (PRICE + 1).to_string();
    let v = facilitator.verify(&p, &other_amount).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::VALUE_MISMATCH));
    let mut other_payee = requirements.clone();
    other_payee.pay_to = anvil::fresh_key().address().to_checksum(None);
    let v = facilitator.verify(&p, &other_payee).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::RECIPIENT_MISMATCH));
    let mut other_asset = p.clone();
    other_asset.accepted.asset = pay_to.to_checksum(None);
    let v = facilitator.verify(&other_asset, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::ASSET_MISMATCH));
    // Another chain: not registered with this facilitator.
    let mut base = requirements.clone();
    base.network = "eip155:8453".into();
    let mut on_base = p.clone();
    on_base.accepted.network = "eip155:8453".into();
    let v = facilitator.verify(&on_base, &base).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::UNSUPPORTED_SCHEME));
    // Signed by someone else.
    let mut forged = p.clone();
    let other = payment(&anvil::fresh_key(), &requirements);
    forged.payload.insert("signature".into(), other.payload["signature"].clone());
    let v = facilitator.verify(&forged, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_SIGNATURE));
    // The original is still good, and nothing moved.
    assert!(facilitator.verify(&p, &requirements).await.expect("verify").is_valid);
    assert_eq!(chain.balance(key.address()).await, U256::from(10 * PRICE));
}

#[tokio::test]
async fn facilitator_without_gas_fails_typed_and_the_buyer_gets_nothing() {
    let chain = Chain::start().await;
    let broke = anvil::fresh_key();
    let facilitator = facilitator_for(&chain, broke.clone()).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();

    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&key, &requirements);
    assert!(facilitator.verify(&p, &requirements).await.expect("verify").is_valid);
    let s = facilitator.settle(&p, &requirements).await.expect("settle");
    assert!(!s.success);
    assert_eq!(s.error_reason.as_deref(), Some(reasons::FACILITATOR_INSUFFICIENT_GAS), "{s:?}");
    assert!(s.error_message.as_deref().is_some_and(|m| m.contains("wei")), "{s:?}");

    // Through a seller: the handler's resource is withheld (402 with a failed PAYMENT-RESPONSE).
    let shop = support::serve_axum(seller(&chain, facilitator, pay_to)).await;
    let bought = buy(&format!("{}/quote", shop.base), &key).await;
    assert_eq!(bought.status, 402, "{}", bought.body);
    assert!(!bought.body.contains("secret resource"), "{}", bought.body);
    let settled = bought.settlement.expect("PAYMENT-RESPONSE");
    assert!(!settled.success);
    assert_eq!(settled.error_reason.as_deref(), Some(reasons::FACILITATOR_INSUFFICIENT_GAS));
    assert_eq!(chain.balance(key.address()).await, U256::from(10 * PRICE));
    assert_eq!(chain.balance(pay_to).await, U256::ZERO);
    assert_eq!(chain.provider.get_transaction_count(broke.address()).await.expect("nonce"), 0);
}

#[tokio::test]
async fn concurrent_settlements_from_one_key_all_land() {
    const N: usize = 8;
    let chain = Chain::start().await;
    let facilitator_key = anvil::fresh_key();
    chain.fund_eth(facilitator_key.address(), U256::from(10u128.pow(18))).await;
    let facilitator = facilitator_for(&chain, facilitator_key.clone()).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let mut payments = Vec::new();
    for _ in 0..N {
        let key = buyer(&chain, PRICE).await;
        payments.push(payment(&key, &requirements));
    }
    // One buyer paying N times concurrently (distinct nonces) as well.
    let frequent = buyer(&chain, N as u64 * PRICE).await;
    for _ in 0..N {
        payments.push(payment(&frequent, &requirements));
    }
    let settles = payments.iter().map(|p| facilitator.settle(p, &requirements));
    let results = futures::future::join_all(settles).await;
    let mut hashes = std::collections::HashSet::new();
    for result in results {
        let settled = result.expect("settle");
        assert!(settled.success, "{settled:?}");
        assert!(receipt_ok(&chain, &settled.transaction).await);
        hashes.insert(settled.transaction);
    }
    assert_eq!(hashes.len(), 2 * N);
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * N as u64 * PRICE));
    assert_eq!(chain.balance(frequent.address()).await, U256::ZERO);
    let sent = chain.provider.get_transaction_count(facilitator_key.address()).await.expect("nonce");
    assert_eq!(sent, 2 * N as u64);
}

#[tokio::test]
async fn concurrent_settles_of_one_authorization_settle_once() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&key, &requirements);
    let results = futures::future::join_all((0..4).map(|_| facilitator.settle(&p, &requirements))).await;
    let wins = results.iter().filter(|r| r.as_ref().expect("settle").success).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in results.iter().map(|r| r.as_ref().expect("settle")).filter(|r| !r.success) {
        let reason = r.error_reason.as_deref();
        // Usually the nonce is seen used (at verify, or when a failed simulation is diagnosed);
        // a loser whose gas estimation runs just after the winner's transaction lands reports a
        // failed simulation. Either way nothing is sent twice.
        let losing = [reasons::NONCE_ALREADY_USED, reasons::TRANSACTION_FAILED, reasons::SIMULATION_FAILED];
        assert!(reason.is_some_and(|r| losing.contains(&r)), "{r:?}");
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
}

#[tokio::test]
async fn contract_wallets_pay_with_erc1271_signatures() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let owner = anvil::fresh_key();
    let wallet = chain.deploy_erc1271_wallet(owner.address()).await;
    chain.mint(wallet, U256::from(10 * PRICE)).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);

    let sign = |signer: &PrivateKeySigner, nonce: u8| {
        let now = evm::system_unix_time();
        let message = TransferWithAuthorization {
            from: wallet,
            to: pay_to,
            value: U256::from(PRICE),
            validAfter: U256::from(now - 60),
            validBefore: U256::from(now + 300),
            nonce: B256::repeat_byte(nonce),
        };
        let domain = evm::eip3009_domain(anvil::TOKEN_NAME, anvil::TOKEN_VERSION, chain.chain_id, chain.token);
        let signature = evm::sign_transfer_authorization(signer, &domain, &message).expect("sign");
        let payload =
            evm::Eip3009Payload { signature, authorization: evm::Eip3009Authorization::from_message(&message) };
        PaymentPayload {
            x402_version: 2,
            payload: payload.to_json_object(),
            accepted: requirements.clone(),
            resource: None,
            extensions: None,
        }
    };

    let forged = sign(&anvil::fresh_key(), 1);
    let v = facilitator.verify(&forged, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_SIGNATURE), "{v:?}");

    let p = sign(&owner, 2);
    let v = facilitator.verify(&p, &requirements).await.expect("verify");
    assert!(v.is_valid, "{v:?}");
    assert_eq!(v.payer.as_deref(), Some(wallet.to_checksum(None).as_str()));
    let s = facilitator.settle(&p, &requirements).await.expect("settle");
    assert!(s.success && receipt_ok(&chain, &s.transaction).await, "{s:?}");
    assert_eq!(chain.balance(wallet).await, U256::from(9 * PRICE));
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
}

#[tokio::test]
async fn the_http_server_answers_typed_json_errors() {
    let chain = Chain::start().await;
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let srv = support::serve_axum(server::router(Arc::new(facilitator))).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, content_type: &str| {
        http.post(format!("{}{path}", srv.base)).header("content-type", content_type).body(body).send()
    };
    let expect = |status: u16, code: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status().as_u16(), status);
            let body: serde_json::Value = resp.json().await.expect("JSON error body");
            assert_eq!(body["error"], code, "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        }
    };
    expect(400, "invalid_request")(post("/verify", b"{".to_vec(), "application/json").await.expect("POST")).await;
    expect(415, "unsupported_media_type")(post("/settle", b"{}".to_vec(), "text/plain").await.expect("POST")).await;
    expect(413, "body_too_large")(
        post("/verify", vec![b' '; server::MAX_BODY_BYTES + 1], "application/json").await.expect("POST"),
    )
    .await;

    let key = buyer(&chain, 10 * PRICE).await;
    let requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    let p = payment(&key, &requirements);
    let body = |version: u32| {
        serde_json::to_vec(&serde_json::json!({
            "x402Version": version, "paymentPayload": p, "paymentRequirements": requirements,
        }))
        .expect("json")
    };
    expect(400, "invalid_x402_version")(post("/verify", body(1), "application/json").await.expect("POST")).await;
    let ok: serde_json::Value =
        post("/verify", body(2), "application/json; charset=utf-8").await.expect("POST").json().await.expect("json");
    assert_eq!(ok["isValid"], true, "{ok}");
    let status = http.get(format!("{}/settle/status", srv.base)).send().await.expect("GET");
    expect(400, "invalid_request")(status).await;
    let unknown = format!("0x{}", "ab".repeat(32));
    let status: serde_json::Value = http
        .get(format!("{}/settle/status?txHash={unknown}", srv.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "failed");
    assert_eq!(status["errorReason"], reasons::TRANSACTION_NOT_FOUND);
}

/// `target/<profile>/examples/<name>` next to this test binary (cargo test builds examples).
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds examples)", path.display());
    path
}

#[test]
fn the_demo_settles_on_anvil() {
    let output = std::process::Command::new(example("demo"))
        .arg("--anvil")
        .env("PAY402_ANVIL", anvil::anvil_path())
        .env("PAY402_FIATTOKEN_ARTIFACTS", anvil::artifacts_dir())
        .env_remove("PAY402_BUYER_KEY")
        .env_remove("PAY402_PAY_TO")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo --anvil failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("listening on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("-> 200"), "{stdout}");
    assert!(stdout.contains("\"transaction\": \"0x"), "{stdout}");
    assert!(stdout.contains("on chain: buyer 5000000 -> 4999000, payee 0 -> 1000"), "{stdout}");
    assert!(stdout.ends_with("402 -> payment -> 200: settled on chain\n"), "{stdout}");
}

/// The bearer token the facilitator example is started with in these tests.
const EXAMPLE_TOKEN: &str = "f12-example-token-0123456789abcdef";

/// `examples/facilitator.rs` serves the chain's network and settles a payment; without its
/// environment (RPC URL, key, bearer token) it fails with a message naming the missing variable.
#[tokio::test]
async fn the_facilitator_example_serves_the_chain() {
    use std::io::{BufRead, BufReader};
    let missing = std::process::Command::new(example("facilitator"))
        .env_remove("PAY402_RPC_URL")
        .env_remove("PAY402_FACILITATOR_KEY")
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("PAY402_RPC_URL is not set"));
    // Without a token (and without the explicit opt-out) it refuses to serve.
    let unauthenticated = std::process::Command::new(example("facilitator"))
        .env("PAY402_RPC_URL", "http://127.0.0.1:9")
        .env("PAY402_FACILITATOR_KEY", alloy::hex::encode_prefixed(anvil::fresh_key().to_bytes()))
        .env_remove("PAY402_FACILITATOR_TOKEN")
        .env_remove("PAY402_FACILITATOR_NO_AUTH")
        .output()
        .expect("run");
    assert!(!unauthenticated.status.success());
    assert!(String::from_utf8_lossy(&unauthenticated.stderr).contains("PAY402_FACILITATOR_TOKEN is not set"));

    let chain = Chain::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let key = chain.dev_key(8);
    let mut child = std::process::Command::new(example("facilitator"))
        .env("PAY402_RPC_URL", &chain.rpc_url)
        .env("PAY402_FACILITATOR_KEY", alloy::hex::encode_prefixed(key.to_bytes()))
        .env("PAY402_FACILITATOR_TOKEN", EXAMPLE_TOKEN)
        .env("PAY402_FACILITATOR_ASSETS", chain.token.to_checksum(None))
        .env_remove("PAY402_FACILITATOR_NO_AUTH")
        .env_remove("PAY402_FACILITATOR_MAX_GAS")
        .env("PAY402_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let child = Kill(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("first line");
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(first.trim_end(), format!("listening on {base}"));

    let client =
        HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&base).bearer_token(EXAMPLE_TOKEN)).expect("client");
    let supported = client.supported().await.expect("supported");
    assert!(supported.kinds.iter().any(|k| k.covers("exact", &"eip155:196".into())));
    let buyer_key = buyer(&chain, PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&buyer_key, &requirements);
    assert!(client.verify(&p, &requirements).await.expect("verify").is_valid);
    let settled = client.settle(&p, &requirements).await.expect("settle");
    assert!(settled.success && receipt_ok(&chain, &settled.transaction).await, "{settled:?}");
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    // Without the token: 401.
    let anonymous = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&base)).expect("client");
    let refused = anonymous.settle(&p, &requirements).await.expect_err("401");
    assert!(matches!(refused, pay402::x402::FacilitatorError::Http { status: 401, .. }), "{refused:?}");
    drop(child);
}

/// With mining paused: a settlement still pending at the receipt deadline is answered
/// `success: true, status: "timeout"` with its hash (sellers then poll settle status, which
/// follows the chain); a dropped one is a failure, and the facilitator re-reads its account
/// nonce so later settlements still land.
#[tokio::test]
async fn pending_settlements_time_out_and_dropped_ones_fail() {
    use std::time::Duration;
    let chain = Chain::start().await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let settler = chain.dev_key(9).address();
    let exact = ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, chain.dev_key(9))
        .await
        .expect("scheme")
        .with_asset(chain.token)
        .with_receipt_timeout(Duration::from_millis(1500))
        .with_poll_interval(Duration::from_millis(100));
    let facilitator = X402Facilitator::new().register(["eip155:196"], exact);
    let rpc = |method: &'static str, params: serde_json::Value| {
        let provider = chain.provider.clone();
        async move { provider.raw_request::<_, serde_json::Value>(method.into(), params).await.expect(method) }
    };
    rpc("evm_setAutomine", serde_json::json!([false])).await;

    // 1. Pending at the deadline.
    let p = payment(&key, &requirements);
    let s = facilitator.settle(&p, &requirements).await.expect("settle");
    assert!(s.success, "{s:?}");
    assert_eq!(s.status.as_deref(), Some("timeout"));
    assert_eq!(s.transaction.len(), 66);
    let status = facilitator.settle_status(&s.transaction).await.expect("status");
    assert_eq!(status.status.as_deref(), Some("pending"));
    assert_eq!(chain.balance(pay_to).await, U256::ZERO);
    rpc("evm_mine", serde_json::json!([])).await;
    let status = facilitator.settle_status(&s.transaction).await.expect("status");
    assert_eq!((status.success, status.status.as_deref()), (true, Some("success")));
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));

    // 2. Dropped from the mempool while the facilitator waits.
    let p2 = payment(&key, &requirements);
    let dropper = async {
        loop {
            let pending = chain.provider.get_transaction_count(settler).pending().await.expect("pending nonce");
            let mined = chain.provider.get_transaction_count(settler).await.expect("nonce");
            if pending > mined {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rpc("anvil_dropAllTransactions", serde_json::json!([])).await;
    };
    let (s2, ()) = tokio::join!(facilitator.settle(&p2, &requirements), dropper);
    let s2 = s2.expect("settle");
    assert!(!s2.success, "{s2:?}");
    assert_eq!(s2.error_reason.as_deref(), Some(reasons::TRANSACTION_FAILED));
    assert!(s2.error_message.as_deref().is_some_and(|m| m.contains("dropped")), "{s2:?}");
    let status = facilitator.settle_status(&s2.transaction).await.expect("status");
    assert_eq!(status.error_reason.as_deref(), Some(reasons::TRANSACTION_NOT_FOUND));
    assert!(!chain.nonce_used(key.address(), nonce_of(&p2)).await);

    // 3. Mining again: the dropped authorization and a new one both settle (no nonce gap).
    rpc("evm_setAutomine", serde_json::json!([true])).await;
    for p in [p2, payment(&key, &requirements)] {
        let s = facilitator.settle(&p, &requirements).await.expect("settle");
        assert!(s.success && s.status.as_deref() == Some("success"), "{s:?}");
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(3 * PRICE));
}

/// Two facilitator instances (think: two processes) sharing one key: each one's cached nonce
/// goes stale when the other sends; the node's `nonce too low` makes it re-read and resend.
#[tokio::test]
async fn two_facilitators_sharing_a_key_recover_from_stale_nonces() {
    let chain = Chain::start().await;
    let first = facilitator_for(&chain, chain.dev_key(9)).await;
    let second = facilitator_for(&chain, chain.dev_key(9)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    for facilitator in [&first, &second, &first, &second, &first] {
        let s = facilitator.settle(&payment(&key, &requirements), &requirements).await.expect("settle");
        assert!(s.success && receipt_ok(&chain, &s.transaction).await, "{s:?}");
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(5 * PRICE));
    assert_eq!(chain.provider.get_transaction_count(chain.dev_key(9).address()).await.expect("nonce"), 5);
}

/// The in-process facilitator, mining a block (when `mine`) whenever the seller asks for a
/// settlement's status: with mining paused, settlements are pending until the seller polls.
struct MinesOnStatus {
    inner: X402Facilitator,
    provider: alloy::providers::DynProvider,
    mine: bool,
}

#[async_trait::async_trait]
impl FacilitatorClient for MinesOnStatus {
    async fn verify(
        &self,
        p: &PaymentPayload,
        r: &PaymentRequirements,
    ) -> Result<pay402::x402::VerifyResponse, pay402::x402::FacilitatorError> {
        self.inner.verify(p, r).await
    }
    async fn settle(
        &self,
        p: &PaymentPayload,
        r: &PaymentRequirements,
    ) -> Result<pay402::x402::SettleResponse, pay402::x402::FacilitatorError> {
        self.inner.settle(p, r).await
    }
    async fn supported(&self) -> Result<pay402::x402::SupportedResponse, pay402::x402::FacilitatorError> {
        self.inner.supported().await
    }
    async fn settle_status(
        &self,
        tx: &str,
    ) -> Result<pay402::x402::SettleStatusResponse, pay402::x402::FacilitatorError> {
        if self.mine {
            self.provider
                .raw_request::<_, serde_json::Value>("evm_mine".into(), serde_json::json!([]))
                .await
                .expect("mine");
        }
        self.inner.settle_status(tx).await
    }
}

/// A seller whose settlement is still pending at the facilitator's deadline: it polls the
/// in-process facilitator's settle status, which follows the chain — delivered once mined,
/// withheld while it is not (503 + Retry-After: its outcome is unknown, so no new challenge), and
/// delivered to the buyer's retry with the same payment once it is — one transfer in all.
#[tokio::test]
async fn sellers_recover_pending_settlements_through_settle_status_and_fail_closed_otherwise() {
    let chain = Chain::start().await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let exact = ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, chain.dev_key(9))
        .await
        .expect("scheme")
        .with_asset(chain.token)
        .with_receipt_timeout(std::time::Duration::ZERO);
    let inner = X402Facilitator::new().register(["eip155:196"], exact);
    chain
        .provider
        .raw_request::<_, serde_json::Value>("evm_setAutomine".into(), serde_json::json!([false]))
        .await
        .expect("automine off");

    let mining = MinesOnStatus { inner: inner.clone(), provider: chain.provider.clone(), mine: true };
    let shop = support::serve_axum(seller(&chain, mining, pay_to)).await;
    let bought = buy(&format!("{}/quote", shop.base), &key).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    assert!(bought.body.contains("secret resource"));
    let settled = bought.settlement.expect("PAYMENT-RESPONSE");
    assert_eq!((settled.success, settled.status.as_deref()), (true, Some("success")), "{settled:?}");
    assert!(receipt_ok(&chain, &settled.transaction).await);
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));

    let stuck = MinesOnStatus { inner, provider: chain.provider.clone(), mine: false };
    let shop = support::serve_axum(seller(&chain, stuck, pay_to)).await;
    let url = format!("{}/quote", shop.base);
    let bought = buy(&url, &key).await;
    assert_eq!(bought.status, 503, "{}", bought.body);
    assert!(!bought.body.contains("secret resource"));
    assert!(bought.settlement.is_none(), "no PAYMENT-RESPONSE while the outcome is unknown");
    let pending: serde_json::Value = serde_json::from_str(&bought.body).expect("JSON body");
    let tx = pending["transaction"].as_str().expect("the transaction is named").to_owned();
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));

    // The transaction is mined; the buyer retries with the same payment: delivered, with the
    // recorded settlement, and nothing is settled again.
    chain.provider.raw_request::<_, serde_json::Value>("evm_mine".into(), serde_json::json!([])).await.expect("mine");
    let http = reqwest::Client::new();
    let (name, value) = &bought.payment;
    let retry = http.get(&url).header(name, value).send().await.expect("retry");
    assert_eq!(retry.status(), 200);
    let settled = decode_payment_response_header(
        retry.headers().get("payment-response").expect("PAYMENT-RESPONSE").to_str().expect("ascii"),
    )
    .expect("decodes");
    assert_eq!((settled.success, settled.transaction.as_str()), (true, tx.as_str()));
    assert!(retry.text().await.expect("body").contains("secret resource"));
    assert!(receipt_ok(&chain, &tx).await);
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE), "one transfer for this payment");
    // Delivered once: a further copy is a replay.
    let again = http.get(&url).header(name, value).send().await.expect("replay");
    assert_eq!(again.status(), 402);
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE));
}

/// The facilitator's clock 3 s behind the payer's: a just-valid authorization passes with the
/// default 5 s allowance and settles (the chain's clock agrees), and is refused with none.
#[tokio::test]
async fn clock_skew_allowance_on_valid_after() {
    let chain = Chain::start().await;
    let key = buyer(&chain, 10 * PRICE).await;
    let requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    let scheme = |skew: u64| {
        let rpc = chain.rpc_url.clone();
        let signer = chain.dev_key(9);
        let token = chain.token;
        async move {
            let exact = ExactEvmFacilitatorScheme::connect_http(&rpc, signer).await.expect("scheme").with_asset(token);
            exact.with_clock(|| evm::system_unix_time() - 3).with_clock_skew(std::time::Duration::from_secs(skew))
        }
    };
    // The client backdates validAfter by 600 s: signing "599 s from now" makes it now − 1.
    let now = evm::system_unix_time();
    let p = payment_with(ExactEvmClientScheme::new(key.clone()).with_clock(move || now + 599), &requirements);

    let strict = X402Facilitator::new().register(["eip155:196"], scheme(0).await);
    let v = strict.verify(&p, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::VALID_AFTER), "{v:?}");

    let lenient = X402Facilitator::new().register(["eip155:196"], scheme(5).await);
    assert!(lenient.verify(&p, &requirements).await.expect("verify").is_valid);
    let s = lenient.settle(&p, &requirements).await.expect("settle");
    assert!(s.success, "{s:?}");

    // Early shape checks of the same scheme.
    let mut no_domain = requirements.clone();
    no_domain.extra.remove("version");
    let v = lenient.verify(&p, &no_domain).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::MISSING_EIP712_DOMAIN));
    let mut no_authorization = p.clone();
    no_authorization.payload.remove("authorization");
    let v = lenient.verify(&no_authorization, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PAYLOAD));
    let mut elsewhere = p.clone();
    elsewhere.accepted.network = "eip155:1".into();
    let v = lenient.verify(&elsewhere, &requirements).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::NETWORK_MISMATCH));
}

/// The same recovery over HTTP: the seller reaches the facilitator server through
/// `HttpFacilitatorClient`, whose `settle_status` calls `GET /settle/status?txHash=`.
#[tokio::test]
async fn sellers_recover_pending_settlements_over_http_settle_status() {
    let chain = Chain::start().await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let exact = ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, chain.dev_key(9))
        .await
        .expect("scheme")
        .with_asset(chain.token)
        .with_receipt_timeout(std::time::Duration::ZERO);
    let inner = X402Facilitator::new().register(["eip155:196"], exact);
    chain
        .provider
        .raw_request::<_, serde_json::Value>("evm_setAutomine".into(), serde_json::json!([false]))
        .await
        .expect("automine off");
    let mining = MinesOnStatus { inner, provider: chain.provider.clone(), mine: true };
    let facilitator = support::serve_axum(server::router(Arc::new(mining))).await;
    let client =
        HttpFacilitatorClient::new(HttpFacilitatorConfig::new(facilitator.base.clone())).expect("facilitator client");

    let shop = support::serve_axum(seller(&chain, client, pay_to)).await;
    let bought = buy(&format!("{}/quote", shop.base), &key).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    let settled = bought.settlement.expect("PAYMENT-RESPONSE");
    assert_eq!((settled.success, settled.status.as_deref()), (true, Some("success")), "{settled:?}");
    assert!(receipt_ok(&chain, &settled.transaction).await);
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
}

// ---- F12: the facilitator's gas is not anyone's to burn ----

/// Deploys `runtime` (raw EVM bytecode) behind a minimal init code, from dev account 0.
async fn deploy_runtime(chain: &Chain, runtime: &[u8]) -> Address {
    use alloy::network::TransactionBuilder;
    let len = u8::try_from(runtime.len()).expect("runtime under 256 bytes");
    // PUSH1 len, DUP1, PUSH1 11, PUSH1 0, CODECOPY, PUSH1 0, RETURN; then the runtime.
    let mut code = vec![0x60, len, 0x80, 0x60, 0x0b, 0x60, 0x00, 0x39, 0x60, 0x00, 0xf3];
    code.extend_from_slice(runtime);
    let tx = alloy::rpc::types::TransactionRequest::default().with_deploy_code(code);
    let receipt = chain.provider.send_transaction(tx).await.expect("deploy").get_receipt().await.expect("receipt");
    assert!(receipt.status(), "deploy reverted");
    receipt.contract_address.expect("contract address")
}

/// A fake EIP-3009 token: `authorizationState` answers `false`, `balanceOf` answers 2²⁵⁶−1,
/// and every other call (`transferWithAuthorization` included) loops `iterations` times
/// (26 gas each) and succeeds. It passes every check of verify, so without an asset allowlist
/// each settle makes the facilitator pay for the loop.
async fn deploy_fake_token(chain: &Chain, iterations: u32) -> Address {
    use alloy::sol_types::SolCall;
    alloy::sol! {
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
    }
    let [_, n2, n1, n0] = iterations.to_be_bytes();
    let mut code = vec![0x60, 0x00, 0x35, 0x60, 0xe0, 0x1c, 0x80, 0x63]; // selector; DUP1; PUSH4
    code.extend_from_slice(&authorizationStateCall::SELECTOR);
    code.extend_from_slice(&[0x14, 0x60, 0x27, 0x57, 0x63]); // EQ; JUMPI(0x27); PUSH4
    code.extend_from_slice(&balanceOfCall::SELECTOR);
    code.extend_from_slice(&[0x14, 0x60, 0x2d, 0x57]); // EQ; JUMPI(0x2d)
    code.extend_from_slice(&[0x62, n2, n1, n0]); // PUSH3 iterations
    code.extend_from_slice(&[0x5b, 0x60, 0x01, 0x90, 0x03, 0x80, 0x60, 0x1d, 0x57, 0x00]); // loop; STOP
    code.extend_from_slice(&[0x5b, 0x60, 0x20, 0x60, 0x00, 0xf3]); // 0x27: RETURN 32 zero bytes
    code.extend_from_slice(&[0x5b, 0x60, 0x00, 0x19, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]); // 0x2d: max
    deploy_runtime(chain, &code).await
}

/// The facilitator account's (ETH balance, nonce).
async fn gas_account(chain: &Chain, who: Address) -> (U256, u64) {
    (chain.eth_balance(who).await, chain.provider.get_transaction_count(who).await.expect("nonce"))
}

/// Requirements and a validly signed payment (by a buyer with no tokens and no ETH) in `asset`.
fn payment_in(chain: &Chain, asset: Address) -> (PaymentPayload, PaymentRequirements) {
    let mut requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    requirements.asset = asset.to_checksum(None);
    (payment(&anvil::fresh_key(), &requirements), requirements)
}

async fn post_json(url: String, body: &serde_json::Value, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    (response.status().as_u16(), response.json().await.expect("JSON answer"))
}

fn settle_body(p: &PaymentPayload, r: &PaymentRequirements) -> serde_json::Value {
    serde_json::json!({ "x402Version": 2, "paymentPayload": p, "paymentRequirements": r })
}

/// F12: a payment in an asset the facilitator was not configured for is refused at verify and
/// settle (`invalid_exact_evm_failed_to_get_asset_info`) and costs the facilitator nothing: a
/// cheap fake EIP-3009 token that would otherwise settle "successfully", and a contract whose
/// every call loops until out of gas, each posted to `/settle` many times.
#[tokio::test]
async fn f12_unlisted_asset_is_refused_without_spending_gas() {
    let chain = Chain::start().await;
    let settler = chain.dev_key(9).address();
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await; // allowlists chain.token only
    let srv = support::serve_axum(server::router(Arc::new(facilitator))).await;
    let fake = deploy_fake_token(&chain, 1_000).await; // ~50k gas per settlement
    let looping = deploy_runtime(&chain, &[0x5b, 0x60, 0x00, 0x56]).await; // JUMPDEST PUSH1 0 JUMP
    let before = gas_account(&chain, settler).await;

    for asset in [fake, looping] {
        for _ in 0..10 {
            let (p, r) = payment_in(&chain, asset);
            let (status, verified) = post_json(format!("{}/verify", srv.base), &settle_body(&p, &r), None).await;
            assert_eq!((status, &verified["isValid"]), (200, &serde_json::json!(false)), "{verified}");
            assert_eq!(verified["invalidReason"], reasons::FAILED_TO_GET_ASSET_INFO, "{verified}");
            let (status, settled) = post_json(format!("{}/settle", srv.base), &settle_body(&p, &r), None).await;
            assert_eq!((status, &settled["success"]), (200, &serde_json::json!(false)), "{settled}");
            assert_eq!(settled["errorReason"], reasons::FAILED_TO_GET_ASSET_INFO, "{settled}");
            assert_eq!(settled["transaction"], "", "{settled}");
        }
    }
    assert_eq!(gas_account(&chain, settler).await, before, "the facilitator spent gas on unlisted assets");
}

/// F12: even an allowlisted asset cannot make a settlement cost more than the gas ceiling: a
/// token whose `transferWithAuthorization` burns ~5M gas passes verify, but its settlement is
/// refused (`invalid_exact_evm_settlement_gas_above_ceiling`) and nothing is sent. A real
/// FiatTokenV2_2 settlement fits under the default ceiling with room to spare.
#[tokio::test]
async fn f12_gas_above_the_ceiling_is_refused() {
    use pay402::x402::facilitator_evm::DEFAULT_MAX_SETTLEMENT_GAS;
    let chain = Chain::start().await;
    let settler = chain.dev_key(9).address();
    let burner = deploy_fake_token(&chain, 196_608).await; // ~5.1M gas
    let exact = ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, chain.dev_key(9))
        .await
        .expect("scheme")
        .with_asset(chain.token)
        .with_asset(burner);
    assert_eq!(exact.max_settlement_gas(), DEFAULT_MAX_SETTLEMENT_GAS);
    let facilitator = X402Facilitator::new().register(["eip155:196"], exact);
    let srv = support::serve_axum(server::router(Arc::new(facilitator.clone()))).await;
    let before = gas_account(&chain, settler).await;

    for _ in 0..5 {
        let (p, r) = payment_in(&chain, burner);
        let (status, settled) = post_json(format!("{}/settle", srv.base), &settle_body(&p, &r), None).await;
        assert_eq!((status, &settled["success"]), (200, &serde_json::json!(false)), "{settled}");
        assert_eq!(settled["errorReason"], reasons::GAS_ABOVE_CEILING, "{settled}");
        assert_eq!(settled["transaction"], "", "{settled}");
    }
    assert_eq!(gas_account(&chain, settler).await, before, "the facilitator sent a transaction above the ceiling");

    // A real FiatTokenV2_2 settlement (EOA signature, payee without a balance: the costliest
    // EOA case) lands, and its gas limit (estimate + 20 %) is under half the default ceiling.
    let key = buyer(&chain, 10 * PRICE).await;
    let requirements = chain.requirements(anvil::fresh_key().address(), PRICE);
    let s = facilitator.settle(&payment(&key, &requirements), &requirements).await.expect("settle");
    assert!(s.success && receipt_ok(&chain, &s.transaction).await, "{s:?}");
    let hash = evm::parse_bytes32(&s.transaction).expect("hash");
    let tx = chain.provider.get_transaction_by_hash(hash).await.expect("tx").expect("known");
    let receipt = chain.provider.get_transaction_receipt(hash).await.expect("receipt").expect("mined");
    let gas_limit = alloy::consensus::Transaction::gas_limit(&tx);
    eprintln!("FiatTokenV2_2 transferWithAuthorization: gas used {}, limit {gas_limit}", receipt.gas_used);
    assert!(gas_limit <= DEFAULT_MAX_SETTLEMENT_GAS / 2, "gas limit {gas_limit}");
}

/// F12: [`server::router_with_token`] answers 401 on `/verify`, `/settle` and `/settle/status`
/// without the bearer token (or with another one), before anything is verified or sent;
/// `HttpFacilitatorConfig::bearer_token` makes a seller's client send it.
#[tokio::test]
async fn f12_settle_without_the_token_is_401() {
    const TOKEN: &str = "f12-test-token-0123456789abcdef";
    let chain = Chain::start().await;
    let settler = chain.dev_key(9).address();
    let facilitator = facilitator_for(&chain, chain.dev_key(9)).await;
    let token = server::BearerToken::new(TOKEN).expect("token");
    let srv = support::serve_axum(server::router_with_token(Arc::new(facilitator), token)).await;
    let key = buyer(&chain, 10 * PRICE).await;
    let pay_to = anvil::fresh_key().address();
    let requirements = chain.requirements(pay_to, PRICE);
    let p = payment(&key, &requirements);
    let body = settle_body(&p, &requirements);
    let before = gas_account(&chain, settler).await;

    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        for path in ["/verify", "/settle"] {
            let (status, answer) = post_json(format!("{}{path}", srv.base), &body, token).await;
            assert_eq!((status, answer["error"].as_str()), (401, Some("unauthorized")), "{path} {token:?}: {answer}");
        }
    }
    let http = reqwest::Client::new();
    let unauthorized = http.get(format!("{}/settle/status?txHash=0x{}", srv.base, "ab".repeat(32))).send().await;
    let unauthorized = unauthorized.expect("GET");
    assert_eq!(unauthorized.status().as_u16(), 401);
    assert_eq!(unauthorized.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let basic = http.post(format!("{}/settle", srv.base)).basic_auth("x", Some(TOKEN)).json(&body).send().await;
    assert_eq!(basic.expect("POST").status().as_u16(), 401);
    // Nothing was settled, nothing was spent.
    assert!(!chain.nonce_used(key.address(), nonce_of(&p)).await);
    assert_eq!(gas_account(&chain, settler).await, before);

    // A seller's client without the token gets a 401 error (fails closed); with it, it settles.
    let anonymous = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&srv.base)).expect("client");
    let refused = anonymous.settle(&p, &requirements).await.expect_err("401");
    assert!(matches!(refused, pay402::x402::FacilitatorError::Http { status: 401, .. }), "{refused:?}");
    assert!(anonymous.supported().await.is_ok(), "/supported stays public");
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&srv.base).bearer_token(TOKEN)).expect("client");
    assert!(client.verify(&p, &requirements).await.expect("verify").is_valid);
    let settled = client.settle(&p, &requirements).await.expect("settle");
    assert!(settled.success && receipt_ok(&chain, &settled.transaction).await, "{settled:?}");
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    let status = client.settle_status(&settled.transaction).await.expect("settle status");
    assert_eq!(status.status.as_deref(), Some("success"));
}
