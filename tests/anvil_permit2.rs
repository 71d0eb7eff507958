//! Permit2 payments (`upto` and `exact` over Permit2) through the self-hosted on-chain
//! facilitator (`X402Facilitator` + `ExactEvmFacilitatorScheme` + `UptoEvmFacilitator`, served
//! by `facilitator_evm::server` and called over HTTP), on a real node: anvil (chain id 196) with
//! Circle's FiatTokenV2_2 as the ERC-20, Uniswap's ORIGINAL Permit2 bytecode at its canonical
//! address, and the x402 exact / upto Permit2 proxies at theirs.
//!
//! The proxies are pay402's OWN test implementation written from the x402 specs
//! (`tests/contracts/X402Permit2Proxies.sol`, compiled with npm solc 0.8.30; no registry ships
//! the deployed originals): [`committed_proxies_are_what_solc_compiles`] checks the committed
//! JSON is what the compiler produces from the committed source. Every amount below is checked
//! on chain (balances, Permit2's nonce bitmap, block number, the facilitator's transaction
//! count), not only in the facilitator's answers.

mod support;

use alloy::network::TransactionBuilder;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use pay402::evm::permit2::{
    ASSET_TRANSFER_METHOD_PERMIT2, EXACT_PERMIT2_PROXY, PERMIT2_ADDRESS, Permit2Authorization, Permit2Kind,
    UPTO_PERMIT2_PROXY, permit2_domain, random_permit2_nonce,
};
use pay402::evm::{Address, PrivateKeySigner, U256};
use pay402::x402::facilitator_evm::reasons;
use pay402::x402::{
    FacilitatorClient, HttpFacilitatorClient, HttpFacilitatorConfig, PaymentPayload, PaymentRequirements,
    SettleResponse,
};
use support::anvil::{self, Chain};
use support::permit2;

/// The buyer's authorised maximum: 0.10 of a 6-decimal token.
const MAX: u64 = 100_000;
/// What the seller reports as used: 0.0347.
const USED: u64 = 34_700;
/// The price of the Permit2 `exact` route: 0.001.
const PRICE: u64 = 1_000;

/// A chain with Permit2 and the proxies, the facilitator's HTTP API over it, and its address.
struct Stack {
    chain: Chain,
    client: HttpFacilitatorClient,
    facilitator: Address,
    _server: support::Running,
}

async fn stack() -> Stack {
    let chain = Chain::start().await;
    permit2::deploy(&chain).await;
    let (server, facilitator) = permit2::serve_facilitator(&chain).await;
    let client = HttpFacilitatorClient::new(HttpFacilitatorConfig::new(&server.base)).expect("client");
    Stack { chain, client, facilitator, _server: server }
}

/// A buyer holding `tokens`, who approved Permit2 for all of them when `approve`.
async fn buyer(chain: &Chain, tokens: u64, approve: bool) -> PrivateKeySigner {
    let key = anvil::fresh_key();
    chain.mint(key.address(), U256::from(tokens)).await;
    if approve {
        permit2::approve(chain, &key, U256::MAX).await;
    }
    key
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Requirements of `scheme` (`upto`: `amount` is the maximum) for the chain's token.
fn requirements(
    chain: &Chain,
    scheme: &str,
    pay_to: Address,
    amount: u64,
    facilitator: Address,
) -> PaymentRequirements {
    let mut extra = serde_json::Map::new();
    extra.insert("name".into(), anvil::TOKEN_NAME.into());
    extra.insert("version".into(), anvil::TOKEN_VERSION.into());
    extra.insert("assetTransferMethod".into(), ASSET_TRANSFER_METHOD_PERMIT2.into());
    if scheme == "upto" {
        extra.insert("facilitatorAddress".into(), facilitator.to_checksum(None).into());
    }
    PaymentRequirements {
        scheme: scheme.into(),
        network: chain.network().into(),
        asset: chain.token.to_checksum(None),
        amount: amount.to_string(),
        pay_to: pay_to.to_checksum(None),
        max_timeout_seconds: 300,
        extra,
    }
}

/// The authorization a correct buyer signs for `requirements` (facilitator named for `upto`).
fn authorization(buyer: &PrivateKeySigner, chain: &Chain, r: &PaymentRequirements) -> Permit2Authorization {
    let upto = r.scheme == "upto";
    let facilitator =
        upto.then(|| r.extra["facilitatorAddress"].as_str().expect("facilitatorAddress").parse().unwrap());
    Permit2Authorization {
        from: buyer.address(),
        token: chain.token,
        amount: r.amount_atomic().expect("amount"),
        spender: if upto { Permit2Kind::Upto.proxy() } else { Permit2Kind::Exact.proxy() },
        nonce: random_permit2_nonce(),
        deadline: U256::from(now() + 300),
        to: r.pay_to.parse().expect("payTo"),
        facilitator,
        valid_after: U256::from(now() - 600),
    }
}

fn signed(buyer: &PrivateKeySigner, auth: &Permit2Authorization, accepted: &PaymentRequirements) -> PaymentPayload {
    let signature = auth.sign(buyer, anvil::CHAIN_ID).expect("sign");
    PaymentPayload {
        x402_version: 2,
        payload: auth.to_payload(&signature),
        accepted: accepted.clone(),
        resource: None,
        extensions: None,
    }
}

/// `requirements` with `amount` replaced (the seller's settle-time requirements of `upto`).
fn with_amount(r: &PaymentRequirements, amount: u64) -> PaymentRequirements {
    PaymentRequirements { amount: amount.to_string(), ..r.clone() }
}

fn assert_refused(s: &SettleResponse, reason: &str) {
    assert!(!s.success, "{s:?}");
    assert_eq!(s.error_reason.as_deref(), Some(reason), "{s:?}");
    assert_eq!(s.transaction, "", "nothing was sent: {s:?}");
}

#[tokio::test]
async fn permit2_is_the_original_at_its_canonical_address_with_the_chain_196_domain() {
    let chain = Chain::start().await;
    permit2::deploy(&chain).await;
    assert_eq!(permit2::domain_separator(&chain).await, permit2_domain(196).separator());
    for at in [PERMIT2_ADDRESS, EXACT_PERMIT2_PROXY, UPTO_PERMIT2_PROXY] {
        assert!(!chain.provider.get_code_at(at).await.unwrap().is_empty(), "code at {at}");
    }
    // The bitmap and allowance helpers read real state: a fresh owner has neither.
    let owner = anvil::fresh_key().address();
    assert!(!permit2::nonce_used(&chain, owner, U256::from(5u8)).await);
    assert_eq!(permit2::allowance(&chain, owner).await, U256::ZERO);
}

#[test]
fn committed_proxies_are_what_solc_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("pay402-proxies-{}.json", std::process::id()));
    let status = std::process::Command::new("bash")
        .arg(root.join("tests/contracts/compile.sh"))
        .arg(&out)
        .status()
        .expect("run tests/contracts/compile.sh (needs node and .test-deps/solc: scripts/deps/25-permit2.sh)");
    assert!(status.success(), "compiling tests/contracts/X402Permit2Proxies.sol failed");
    let fresh = std::fs::read_to_string(&out).expect("compiled JSON");
    let _ = std::fs::remove_file(&out);
    let committed = std::fs::read_to_string(permit2::proxies_json_path()).expect("committed JSON");
    assert!(fresh.contains("\"compiler\": \"solc 0.8.30"), "compiled with solc 0.8.30");
    assert_eq!(fresh, committed, "tests/contracts/X402Permit2Proxies.json is stale: run tests/contracts/compile.sh");
}

#[tokio::test]
async fn upto_settles_exactly_the_reported_amount_and_a_replay_is_refused() {
    let s = stack().await;
    let supported = s.client.supported().await.expect("supported");
    let kind = supported.kinds.iter().find(|k| k.scheme == "upto").expect("upto in /supported");
    let announced = kind.extra.as_ref().and_then(|e| e["facilitatorAddress"].as_str()).expect("facilitatorAddress");
    assert_eq!(announced, s.facilitator.to_checksum(None));

    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    let p = signed(&buyer, &auth, &r);
    let v = s.client.verify(&p, &r).await.expect("verify");
    assert!(v.is_valid, "{v:?}");
    assert_eq!(v.payer.as_deref(), Some(buyer.address().to_checksum(None).as_str()));

    let settled = s.client.settle(&p, &with_amount(&r, USED)).await.expect("settle");
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.amount.as_deref(), Some("34700"));
    assert!(settled.transaction.starts_with("0x") && settled.transaction.len() == 66, "{settled:?}");
    assert_eq!(s.chain.balance(pay_to).await, U256::from(USED));
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(1_000_000 - USED));
    assert!(permit2::nonce_used(&s.chain, buyer.address(), auth.nonce).await);

    // The same authorization again: refused at verify and at settle, nothing moves.
    let v = s.client.verify(&p, &r).await.expect("verify replay");
    assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::NONCE_ALREADY_USED)));
    let replay = s.client.settle(&p, &with_amount(&r, USED)).await.expect("settle replay");
    assert_refused(&replay, reasons::NONCE_ALREADY_USED);
    assert_eq!(s.chain.balance(pay_to).await, U256::from(USED));
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(1_000_000 - USED));
}

#[tokio::test]
async fn upto_zero_sends_nothing_and_leaves_the_nonce_unused() {
    let s = stack().await;
    let buyer = buyer(&s.chain, MAX, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    let p = signed(&buyer, &auth, &r);
    let block = s.chain.provider.get_block_number().await.unwrap();
    let sent = s.chain.provider.get_transaction_count(s.facilitator).await.unwrap();

    let settled = s.client.settle(&p, &with_amount(&r, 0)).await.expect("settle 0");
    assert!(settled.success, "{settled:?}");
    assert_eq!((settled.transaction.as_str(), settled.amount.as_deref()), ("", Some("0")));
    assert_eq!(s.chain.provider.get_block_number().await.unwrap(), block, "no block was mined");
    assert_eq!(s.chain.provider.get_transaction_count(s.facilitator).await.unwrap(), sent, "no transaction");
    assert!(!permit2::nonce_used(&s.chain, buyer.address(), auth.nonce).await);
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(MAX));
    assert_eq!(s.chain.balance(pay_to).await, U256::ZERO);
}

#[tokio::test]
async fn upto_above_the_maximum_is_refused_and_nothing_moves() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    let p = signed(&buyer, &auth, &r);
    let sent = s.chain.provider.get_transaction_count(s.facilitator).await.unwrap();

    let refused = s.client.settle(&p, &with_amount(&r, 110_000)).await.expect("settle above max");
    assert_refused(&refused, reasons::UPTO_SETTLEMENT_EXCEEDS_AMOUNT);
    // At verify the requirements' amount must be the signed maximum itself.
    let v = s.client.verify(&p, &with_amount(&r, 110_000)).await.expect("verify");
    assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::PERMIT2_AMOUNT_MISMATCH)));
    let v = s.client.verify(&p, &with_amount(&r, USED)).await.expect("verify");
    assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::PERMIT2_AMOUNT_MISMATCH)));

    assert_eq!(s.chain.provider.get_transaction_count(s.facilitator).await.unwrap(), sent, "no transaction");
    assert_eq!(s.chain.balance(pay_to).await, U256::ZERO);
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(1_000_000u64));
    assert!(!permit2::nonce_used(&s.chain, buyer.address(), auth.nonce).await);

    // The proxy itself refuses more than the signed maximum, even from the named facilitator.
    let signature = p.payload["signature"].as_str().expect("signature");
    let above = upto_settle_calldata(&auth, signature, U256::from(110_000u64));
    let tx = TransactionRequest::default().with_from(s.facilitator).with_to(UPTO_PERMIT2_PROXY).with_input(above);
    assert!(s.chain.provider.call(tx).await.is_err(), "the proxy reverts above the maximum");
    // The maximum itself settles.
    let checked = s.client.settle(&p, &with_amount(&r, MAX)).await.expect("settle the max");
    assert!(checked.success && checked.amount.as_deref() == Some("100000"), "{checked:?}");
    assert_eq!(s.chain.balance(pay_to).await, U256::from(MAX));
}

#[tokio::test]
async fn a_buyer_without_the_permit2_allowance_gets_permit2_allowance_required() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, false).await;
    let pay_to = anvil::fresh_key().address();
    for (scheme, amount) in [("upto", MAX), ("exact", PRICE)] {
        let r = requirements(&s.chain, scheme, pay_to, amount, s.facilitator);
        let p = signed(&buyer, &authorization(&buyer, &s.chain, &r), &r);
        let v = s.client.verify(&p, &r).await.expect("verify");
        assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::PERMIT2_ALLOWANCE_REQUIRED)));
        let settle_r = if scheme == "upto" { with_amount(&r, USED) } else { r.clone() };
        assert_refused(&s.client.settle(&p, &settle_r).await.expect("settle"), reasons::PERMIT2_ALLOWANCE_REQUIRED);
    }
    // Once approved (the buyer's one-time transaction), the same kind of payment goes through.
    permit2::approve(&s.chain, &buyer, U256::from(MAX)).await;
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let p = signed(&buyer, &authorization(&buyer, &s.chain, &r), &r);
    assert!(s.client.settle(&p, &with_amount(&r, USED)).await.expect("settle").success);
    assert_eq!(s.chain.balance(pay_to).await, U256::from(USED));
}

#[tokio::test]
async fn a_witness_naming_another_facilitator_is_refused_here_and_by_the_proxy() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    let other = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, other);
    let auth = authorization(&buyer, &s.chain, &r);
    assert_eq!(auth.facilitator, Some(other));
    let p = signed(&buyer, &auth, &r);
    let v = s.client.verify(&p, &r).await.expect("verify");
    assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::UPTO_FACILITATOR_MISMATCH)));
    assert_refused(
        &s.client.settle(&p, &with_amount(&r, USED)).await.expect("settle"),
        reasons::UPTO_FACILITATOR_MISMATCH,
    );

    // On chain: a settle of a valid authorization naming our facilitator, sent by anyone else
    // (dev account 0), reverts in the proxy.
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    let signature = auth.sign(&buyer, anvil::CHAIN_ID).expect("sign");
    let calldata = upto_settle_calldata(&auth, &signature, U256::from(USED));
    assert!(s.chain.send(UPTO_PERMIT2_PROXY, calldata.clone()).await.is_err(), "only the named facilitator");
    // The facilitator's own simulation of the very same call succeeds.
    let tx = TransactionRequest::default().with_from(s.facilitator).with_to(UPTO_PERMIT2_PROXY).with_input(calldata);
    s.chain.provider.call(tx).await.expect("the named facilitator may settle");
    assert_eq!(s.chain.balance(pay_to).await, U256::ZERO);
    assert!(!permit2::nonce_used(&s.chain, buyer.address(), auth.nonce).await);
}

/// The upto proxy's `settle` calldata for `auth` (as the x402 SDKs encode it).
fn upto_settle_calldata(auth: &Permit2Authorization, signature: &str, amount: U256) -> Vec<u8> {
    use alloy::sol_types::SolCall;
    alloy::sol! {
        struct TokenPermissions { address token; uint256 amount; }
        struct PermitTransferFrom { TokenPermissions permitted; uint256 nonce; uint256 deadline; }
        struct Witness { address to; address facilitator; uint256 validAfter; }
        function settle(PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature);
    }
    settleCall {
        permit: PermitTransferFrom {
            permitted: TokenPermissions { token: auth.token, amount: auth.amount },
            nonce: auth.nonce,
            deadline: auth.deadline,
        },
        amount,
        owner: auth.from,
        witness: Witness { to: auth.to, facilitator: auth.facilitator.expect("upto"), validAfter: auth.valid_after },
        signature: signature.parse().expect("hex"),
    }
    .abi_encode()
}

#[tokio::test]
async fn expired_and_not_yet_valid_authorizations_are_refused() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    for scheme in ["upto", "exact"] {
        let amount = if scheme == "upto" { MAX } else { PRICE };
        let r = requirements(&s.chain, scheme, pay_to, amount, s.facilitator);
        let settle_r = if scheme == "upto" { with_amount(&r, USED) } else { r.clone() };
        let mut expired = authorization(&buyer, &s.chain, &r);
        expired.deadline = U256::from(now() - 1);
        let p = signed(&buyer, &expired, &r);
        let v = s.client.verify(&p, &r).await.expect("verify");
        assert_eq!((v.is_valid, v.invalid_reason.as_deref()), (false, Some(reasons::PERMIT2_DEADLINE_EXPIRED)));
        assert_refused(&s.client.settle(&p, &settle_r).await.expect("settle"), reasons::PERMIT2_DEADLINE_EXPIRED);

        let mut early = authorization(&buyer, &s.chain, &r);
        early.valid_after = U256::from(now() + 3600);
        let p = signed(&buyer, &early, &r);
        assert_refused(&s.client.settle(&p, &settle_r).await.expect("settle"), reasons::PERMIT2_NOT_YET_VALID);
    }
    assert_eq!(s.chain.balance(pay_to).await, U256::ZERO);
}

#[tokio::test]
async fn tampered_payloads_are_refused() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    let signature = auth.sign(&buyer, anvil::CHAIN_ID).expect("sign");
    let payload = |a: &Permit2Authorization| PaymentPayload {
        x402_version: 2,
        payload: a.to_payload(&signature),
        accepted: r.clone(),
        resource: None,
        extensions: None,
    };
    // The signed maximum raised after signing.
    let mut raised = auth.clone();
    raised.amount = U256::from(MAX * 2);
    let v = s.client.verify(&payload(&raised), &with_amount(&r, MAX * 2)).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PERMIT2_SIGNATURE));
    // Another recipient, and the exact proxy as spender.
    let mut redirected = auth.clone();
    redirected.to = anvil::fresh_key().address();
    let v = s.client.verify(&payload(&redirected), &r).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PERMIT2_RECIPIENT_MISMATCH));
    let mut spender = auth.clone();
    spender.spender = EXACT_PERMIT2_PROXY;
    let v = s.client.verify(&payload(&spender), &r).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PERMIT2_SPENDER));
    // Another signer.
    let stranger = anvil::fresh_key();
    let forged =
        PaymentPayload { payload: auth.to_payload(&auth.sign(&stranger, anvil::CHAIN_ID).unwrap()), ..payload(&auth) };
    let v = s.client.verify(&forged, &r).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PERMIT2_SIGNATURE));
    // The genuine one is valid.
    assert!(s.client.verify(&payload(&auth), &r).await.expect("verify").is_valid);
    assert_eq!(s.chain.balance(pay_to).await, U256::ZERO);
}

#[tokio::test]
async fn permit2_exact_pays_exactly_the_price_and_a_replay_is_refused() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 10 * PRICE, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "exact", pay_to, PRICE, s.facilitator);
    let auth = authorization(&buyer, &s.chain, &r);
    assert_eq!((auth.spender, auth.facilitator), (EXACT_PERMIT2_PROXY, None));
    let p = signed(&buyer, &auth, &r);
    let v = s.client.verify(&p, &r).await.expect("verify");
    assert!(v.is_valid, "{v:?}");
    // exact moves the price, no less: a settle-time amount other than the signed one is refused.
    assert_refused(
        &s.client.settle(&p, &with_amount(&r, PRICE / 2)).await.expect("settle"),
        reasons::PERMIT2_AMOUNT_MISMATCH,
    );

    let settled = s.client.settle(&p, &r).await.expect("settle");
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.amount, None, "exact settlements carry no amount");
    assert_eq!(s.chain.balance(pay_to).await, U256::from(PRICE));
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(9 * PRICE));
    assert!(permit2::nonce_used(&s.chain, buyer.address(), auth.nonce).await);

    assert_refused(&s.client.settle(&p, &r).await.expect("replay"), reasons::NONCE_ALREADY_USED);
    assert_eq!(s.chain.balance(pay_to).await, U256::from(PRICE));
    // An upto payload offered to the exact kind (or the reverse) is not a valid payload.
    let upto_r = requirements(&s.chain, "upto", pay_to, PRICE, s.facilitator);
    let upto_p = signed(&buyer, &authorization(&buyer, &s.chain, &upto_r), &upto_r);
    let mismatched = PaymentPayload { accepted: r.clone(), ..upto_p };
    let v = s.client.verify(&mismatched, &r).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PAYLOAD));
}

#[tokio::test]
async fn concurrent_settles_of_one_upto_authorization_move_the_funds_once() {
    let s = stack().await;
    let buyer = buyer(&s.chain, 1_000_000, true).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let p = signed(&buyer, &authorization(&buyer, &s.chain, &r), &r);
    let settle_r = with_amount(&r, USED);
    let attempts = (0..4).map(|_| s.client.settle(&p, &settle_r));
    let outcomes = futures::future::join_all(attempts).await;
    let successes = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|s| s.success)).count();
    assert_eq!(successes, 1, "{outcomes:?}");
    for outcome in &outcomes {
        let outcome = outcome.as_ref().expect("answered");
        if !outcome.success {
            assert_eq!(outcome.error_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED), "{outcome:?}");
        }
    }
    assert_eq!(s.chain.balance(pay_to).await, U256::from(USED));
    assert_eq!(s.chain.balance(buyer.address()).await, U256::from(1_000_000 - USED));
}

#[tokio::test]
async fn a_contract_wallet_owner_pays_with_an_erc1271_signature() {
    let s = stack().await;
    let owner = anvil::fresh_key();
    let wallet = s.chain.deploy_erc1271_wallet(owner.address()).await;
    s.chain.mint(wallet, U256::from(1_000_000u64)).await;
    permit2::approve_from_contract(&s.chain, wallet, U256::MAX).await;
    let pay_to = anvil::fresh_key().address();
    let r = requirements(&s.chain, "upto", pay_to, MAX, s.facilitator);
    let mut auth = authorization(&owner, &s.chain, &r);
    auth.from = wallet;
    // Signed by a stranger: the wallet's isValidSignature refuses it.
    let forged = signed(&anvil::fresh_key(), &auth, &r);
    let v = s.client.verify(&forged, &r).await.expect("verify");
    assert_eq!(v.invalid_reason.as_deref(), Some(reasons::INVALID_PERMIT2_SIGNATURE));
    // Signed by the wallet's owner: valid through ERC-1271, and Permit2 settles it.
    let p = signed(&owner, &auth, &r);
    let v = s.client.verify(&p, &r).await.expect("verify");
    assert!(v.is_valid, "{v:?}");
    let settled = s.client.settle(&p, &with_amount(&r, USED)).await.expect("settle");
    assert!(settled.success, "{settled:?}");
    assert_eq!(s.chain.balance(pay_to).await, U256::from(USED));
    assert_eq!(s.chain.balance(wallet).await, U256::from(1_000_000 - USED));
}
