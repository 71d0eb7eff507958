//! x402 `upto` end to end on a real chain, through HTTP: an axum seller whose handler carries
//! `#[x402(scheme = "upto", max = "$0.10")]`, pay402's self-hosted on-chain facilitator served
//! over HTTP, and pay402's buyers (`AutoPay`, `X402Client`), on anvil (chain id 196) with
//! Circle's FiatTokenV2_2 as the 6-decimal token, Uniswap's original Permit2 at its canonical
//! address and pay402's test x402 Permit2 proxies at theirs (tests/support/permit2.rs).
//!
//! The Must show of pay per use: the buyer authorizes 0.10, the handler reports 0.0347 and
//! exactly 34 700 base units move; a report of `0` sends no transaction; a report of 0.11 settles
//! nothing and releases no body; a replayed authorization is refused — by the seller that saw it,
//! and by a fresh seller process through the facilitator and the chain (Permit2's nonce bitmap).
//! Every amount is checked on chain, not only in the answers.

mod support;

use alloy::providers::Provider;
use axum::extract::Query;
use pay402::autopay::{AssetId, AutoPay, AutoPayOutcome, Protocol};
use pay402::axum::{UptoCharge, X402HttpServer, x402};
use pay402::chain::{AssetInfo, NetworkRegistry, TransferMethod};
use pay402::evm::{Address, PrivateKeySigner, U256};
use pay402::x402::{
    ExactEvmScheme, HttpFacilitatorClient, HttpFacilitatorConfig, UptoEvmClientScheme, UptoEvmScheme, X402Client,
    X402ResourceServer, decode_payment_required_header, decode_payment_response_header,
};
use support::anvil::{self, Chain};
use support::permit2;

/// The buyer's authorized maximum on this route: $0.10 of a 6-decimal token.
const MAX: u64 = 100_000;

#[derive(serde::Deserialize)]
struct Usage {
    /// What the handler reports, as money text (`0.0347`), or `none`.
    charge: String,
}

/// Reports `?charge=` and answers the paid content. A refused report is deliberately ignored
/// here: pay402 itself must then withhold this body and settle nothing.
#[x402(scheme = "upto", max = "$0.10", description = "Metered work")]
async fn metered(charge: UptoCharge, Query(u): Query<Usage>) -> axum::Json<serde_json::Value> {
    let reported = match u.charge.as_str() {
        "none" => charge.none(),
        money => charge.set_amount(&format!("${money}")),
    };
    axum::Json(serde_json::json!({ "content": "the metered result", "reported": reported.is_ok() }))
}

/// The chain's token is the network's default asset (so `$0.10` is 100 000 of its base units).
fn register_token(chain: &Chain) {
    NetworkRegistry::update_global(|r| {
        r.register(
            chain.network(),
            AssetInfo {
                address: chain.token.to_checksum(None),
                name: anvil::TOKEN_NAME.into(),
                version: anvil::TOKEN_VERSION.into(),
                decimals: 6,
                transfer_method: TransferMethod::Permit2,
            },
        );
    });
}

/// A seller process: the macro route at `/metered`, settling through the facilitator at `base`.
async fn seller(facilitator_base: &str, pay_to: Address) -> support::Running {
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(facilitator_base)).expect("client");
    let server = X402ResourceServer::new(client)
        .register("eip155:196", ExactEvmScheme::new())
        .register("eip155:196", UptoEvmScheme::new());
    let x402 = X402HttpServer::new(server).pay_to(pay_to.to_checksum(None));
    let ready = x402.initialize().await.expect("initialize");
    assert!(x402.unsupported_kinds().is_empty(), "{ready:?}");
    support::serve_axum(axum::Router::new().route("/metered", axum::routing::get(metered)).with_state(x402)).await
}

/// A buyer holding 1.0 of the token, who approved Permit2 once.
async fn buyer(chain: &Chain) -> PrivateKeySigner {
    let key = anvil::fresh_key();
    chain.mint(key.address(), U256::from(1_000_000u64)).await;
    permit2::approve(chain, &key, U256::MAX).await;
    key
}

/// What the chain says: block number, the buyer's and the payee's balances.
async fn state(chain: &Chain, buyer: Address, pay_to: Address) -> (u64, U256, U256) {
    (chain.provider.get_block_number().await.expect("block"), chain.balance(buyer).await, chain.balance(pay_to).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upto_settles_what_the_handler_used_never_more_and_once() {
    let chain = Chain::start().await;
    permit2::deploy(&chain).await;
    register_token(&chain);
    let (facilitator_http, facilitator_address) = permit2::serve_facilitator(&chain).await;
    let pay_to = anvil::fresh_key().address();
    let shop = seller(&facilitator_http.base, pay_to).await;
    let key = buyer(&chain).await;
    let me = key.address();
    let asset = AssetId::new(chain.network(), &chain.token.to_checksum(None));
    let autopay = AutoPay::new(key.clone())
        .prefer([Protocol::X402])
        .max_per_request(asset.clone(), "0.10".parse().expect("cap"))
        .max_total(asset.clone(), "1".parse().expect("cap"))
        .build()
        .expect("autopay");
    let http = autopay.client(pay402::reqwest::Client::builder()).expect("client");

    // The 402: the maximum, over Permit2, naming the facilitator that will settle.
    let unpaid = reqwest::get(format!("{}/metered?charge=0.0347", shop.base)).await.expect("GET");
    assert_eq!(unpaid.status(), 402);
    let required = match decode_payment_required_header(unpaid.headers()["payment-required"].to_str().expect("ascii"))
        .expect("402")
    {
        pay402::x402::AnyPaymentRequired::V2(required) => required,
        other => panic!("a v2 402: {other:?}"),
    };
    let offer = required.accepts.iter().find(|a| a.scheme == "upto").expect("an upto offer");
    assert_eq!(offer.amount, MAX.to_string());
    assert_eq!(offer.extra["assetTransferMethod"], "permit2");
    assert_eq!(
        offer.extra["facilitatorAddress"].as_str().map(str::to_lowercase),
        Some(facilitator_address.to_string().to_lowercase())
    );

    // 0.0347 of the authorized 0.10: exactly 34 700 base units move.
    let before = state(&chain, me, pay_to).await;
    let paid = http.get(format!("{}/metered?charge=0.0347", shop.base)).send().await.expect("paid GET");
    assert_eq!(paid.status(), 200);
    let outcome = paid.extensions().get::<AutoPayOutcome>().cloned().expect("paid");
    let settled = decode_payment_response_header(paid.headers()["payment-response"].to_str().expect("ascii"))
        .expect("PAYMENT-RESPONSE");
    assert!(paid.text().await.expect("body").contains("the metered result"));
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.amount.as_deref(), Some("34700"));
    assert_eq!((outcome.amount, outcome.authorized), (U256::from(34_700u64), U256::from(MAX)));
    let after = state(&chain, me, pay_to).await;
    assert_eq!(before.1 - after.1, U256::from(34_700u64), "the buyer paid exactly what was used");
    assert_eq!(after.2 - before.2, U256::from(34_700u64), "the payee got exactly that");
    let receipt = chain
        .provider
        .get_transaction_receipt(settled.transaction.parse().expect("tx hash"))
        .await
        .expect("receipt")
        .expect("mined");
    assert!(receipt.status());
    assert_eq!(autopay.spent(&asset), U256::from(34_700u64), "the budget keeps what was settled, frees the rest");

    // A report of 0: success, no transaction, nothing moves, the Permit2 nonce stays unused.
    let before = state(&chain, me, pay_to).await;
    let free = http.get(format!("{}/metered?charge=none", shop.base)).send().await.expect("GET");
    assert_eq!(free.status(), 200);
    let settled = decode_payment_response_header(free.headers()["payment-response"].to_str().expect("ascii"))
        .expect("PAYMENT-RESPONSE");
    assert!(settled.success);
    assert_eq!((settled.amount.as_deref(), settled.transaction.as_str()), (Some("0"), ""));
    assert_eq!(state(&chain, me, pay_to).await, before, "no block, no transfer");

    // A report above the maximum: no body, nothing settled, nothing moves.
    let over = http.get(format!("{}/metered?charge=0.11", shop.base)).send().await.expect("GET");
    assert_eq!(over.status(), 500);
    assert!(over.headers().get("payment-response").is_none());
    assert!(!over.text().await.expect("body").contains("the metered result"), "the handler's body is withheld");
    assert_eq!(state(&chain, me, pay_to).await, before, "no block, no transfer");

    // A replayed authorization: signed once, settled once; the same seller refuses the resend,
    // and so does a fresh seller process (its own replay store) — through the chain.
    let client = X402Client::new().register("eip155:*", UptoEvmClientScheme::new(key.clone()));
    let url = format!("{}/metered?charge=0.01", shop.base);
    let first = reqwest::get(&url).await.expect("GET");
    let required =
        decode_payment_required_header(first.headers()["payment-required"].to_str().expect("ascii")).expect("402");
    let (name, value) = client.create_payment_header(&required).await.expect("sign");
    let before = state(&chain, me, pay_to).await;
    let once = reqwest::Client::new().get(&url).header(name, &value).send().await.expect("paid GET");
    assert_eq!(once.status(), 200);
    let after_once = state(&chain, me, pay_to).await;
    assert_eq!(before.1 - after_once.1, U256::from(10_000u64));
    let again = reqwest::Client::new().get(&url).header(name, &value).send().await.expect("resend");
    assert_ne!(again.status(), 200, "the same seller refuses a resend");
    let other_shop = seller(&facilitator_http.base, pay_to).await;
    let elsewhere = reqwest::Client::new()
        .get(format!("{}/metered?charge=0.01", other_shop.base))
        .header(name, &value)
        .send()
        .await
        .expect("replay");
    assert_eq!(elsewhere.status(), 402, "a fresh seller: the facilitator refuses a used Permit2 nonce");
    assert!(!elsewhere.text().await.expect("body").contains("the metered result"));
    assert_eq!(state(&chain, me, pay_to).await.1, after_once.1, "the replay moved nothing");
}

/// A buyer that never approved Permit2 gets 412 Precondition Failed (`permit2_allowance_required`
/// in PAYMENT-REQUIRED) and nothing moves; after the one-time approval with
/// `pay402::evm::permit2::approve_permit2`, the same request is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_without_the_permit2_allowance_gets_412_then_approves_once() {
    use alloy::network::EthereumWallet;
    use alloy::providers::ProviderBuilder;

    let chain = Chain::start().await;
    permit2::deploy(&chain).await;
    register_token(&chain);
    let (facilitator_http, _) = permit2::serve_facilitator(&chain).await;
    let pay_to = anvil::fresh_key().address();
    let shop = seller(&facilitator_http.base, pay_to).await;
    let key = anvil::fresh_key();
    chain.mint(key.address(), U256::from(1_000_000u64)).await;
    let url = format!("{}/metered?charge=0.02", shop.base);
    let client = X402Client::new().register("eip155:*", UptoEvmClientScheme::new(key.clone()));

    let pay = |client: X402Client, url: String| async move {
        let first = reqwest::get(&url).await.expect("GET");
        let required =
            decode_payment_required_header(first.headers()["payment-required"].to_str().expect("ascii")).expect("402");
        let (name, value) = client.create_payment_header(&required).await.expect("sign");
        reqwest::Client::new().get(&url).header(name, value).send().await.expect("paid GET")
    };
    let refused = pay(client.clone(), url.clone()).await;
    assert_eq!(refused.status(), 412, "Precondition Failed: approve Permit2 first");
    let required = match decode_payment_required_header(refused.headers()["payment-required"].to_str().expect("ascii"))
        .expect("PAYMENT-REQUIRED")
    {
        pay402::x402::AnyPaymentRequired::V2(required) => required,
        other => panic!("v2: {other:?}"),
    };
    assert_eq!(required.error.as_deref(), Some("permit2_allowance_required"));
    assert!(!refused.text().await.expect("body").contains("the metered result"));
    assert_eq!(chain.balance(key.address()).await, U256::from(1_000_000u64), "nothing moved");

    // The one-time approval, sent by the buyer's own wallet (it needs a little gas).
    chain.fund_eth(key.address(), U256::from(10u64).pow(U256::from(16u64))).await;
    let wallet = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key.clone()))
        .connect_http(chain.rpc_url.parse().expect("rpc url"));
    pay402::evm::permit2::approve_permit2(&wallet, chain.token, U256::MAX).await.expect("approve");
    assert_eq!(permit2::allowance(&chain, key.address()).await, U256::MAX);

    let paid = pay(client, url).await;
    assert_eq!(paid.status(), 200);
    assert_eq!(chain.balance(key.address()).await, U256::from(1_000_000u64 - 20_000), "0.02 moved");
    assert_eq!(chain.balance(pay_to).await, U256::from(20_000u64));
}
