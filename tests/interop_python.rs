//! Interop with OKX's own Python SDK, installed from PyPI (`okxweb3-app-x402` 0.1.1,
//! `okxweb3-app-mpp` 0.1.0, `pympp` 0.15.1; scripts/deps/40-python-peers.sh) and run as real
//! processes from tests/interop/python/:
//!
//! * OKX's x402 client pays pay402 axum servers: an in-test one whose embedded facilitator is
//!   inspected, the `axum_x402` example binary, and one settling on anvil through pay402's HTTP
//!   facilitator example; it decodes pay402's settlement-failure answer;
//! * OKX's FastAPI x402 middleware, verifying and settling through pay402's HTTP facilitator on
//!   anvil, is paid by pay402's auto-pay client (and refuses a replay with the facilitator's
//!   reason);
//! * OKX's MPP `FileStore` and pay402's [`FileStore`] share a channel directory: each reads the
//!   other's files, byte for byte, including interleaved writes and a live pay402 session
//!   server.
//!
//! A missing venv fails these tests with the install command; they are never skipped.

#[path = "interop/peers.rs"]
mod peers;
mod support;

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::U256;
use pay402::mpp::{CasOutcome, ChannelState, ChannelStore, FileStore, UpdateOutcome};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer, X402Payment};
use peers::{OnChain, Recording, eq_addr, start_example};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The merchant of the in-test server (Anvil test account 2).
const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
/// The Python buyer: Anvil test account 3 (a well-known test key, never funded anywhere real).
const PY_BUYER_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const PY_BUYER: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okx_python_x402_client_pays_a_pay402_axum_server() {
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, PY_BUYER, U256::from(10_000u64)).expect("fund");
    let facilitator = Recording::new(embedded.clone());
    let server = X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route(
            "GET /report",
            RouteConfig::new(PaymentOption::exact("$0.0025", PAY_TO))
                .description("A market report")
                .mime_type("application/json"),
        )
        .expect("route");
    let app = axum::Router::new()
        .route(
            "/report",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(json!({ "report": "OKB up", "paid_by": p.payer() }))
            }),
        )
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;
    let url = format!("{}/report", running.base);

    let out = peers::python("x402_pay.py", &[&url, PY_BUYER_KEY]).await.json();

    // What the Python SDK parsed from pay402's 402 and signed.
    assert!(eq_addr(&out["payer"], PY_BUYER), "{out}");
    let accepted = &out["paymentRequired"]["accepts"][0];
    assert_eq!(accepted["scheme"], "exact", "{out}");
    assert_eq!(accepted["network"], "eip155:196", "{out}");
    assert_eq!(accepted["asset"], X_LAYER_USDT0, "{out}");
    assert_eq!(accepted["amount"], "2500", "{out}");
    assert_eq!(accepted["extra"]["name"], "USD₮0", "{out}");
    assert_eq!(out["paymentRequired"]["resource"]["url"], url.as_str(), "{out}");
    let authorization = &out["paymentPayload"]["payload"]["authorization"];
    assert_eq!(authorization["value"], "2500", "{out}");
    assert!(eq_addr(&authorization["to"], PAY_TO), "{out}");

    // Served, and the PAYMENT-RESPONSE as the Python SDK decoded it; verified and settled once.
    assert_eq!(out["body"]["report"], "OKB up", "{out}");
    peers::assert_paid_and_settled(&out, &facilitator, &embedded, (PY_BUYER, PAY_TO), (10_000, 2_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okx_python_x402_client_pays_the_axum_x402_example() {
    let (_server, url) = start_example("axum_x402", &[]);
    let out = peers::python("x402_pay.py", &[&url, PY_BUYER_KEY]).await.json();
    assert_eq!(out["status"], 200, "{out}");
    assert!(eq_addr(&out["body"]["paid_by"], PY_BUYER), "{out}");
    assert_eq!(out["paymentRequired"]["accepts"][0]["amount"], "1000", "{out}");
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{out}");
    assert!(eq_addr(&settled["payer"], PY_BUYER), "{out}");
    assert!(settled["transaction"].as_str().is_some_and(|t| t.starts_with("0x") && t.len() == 66), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okx_python_x402_client_pays_a_pay402_axum_server_settled_on_chain() {
    use support::anvil;
    let on_chain = OnChain::start().await;
    let buyer = anvil::fresh_key();
    on_chain.chain.mint(buyer.address(), U256::from(10_000u64)).await;
    let pay_to = anvil::fresh_key().address();
    let x402 = X402HttpServer::new(on_chain.resource_server())
        .route("GET /report", RouteConfig::new(on_chain.option(2500, &pay_to.to_checksum(None))))
        .expect("route");
    let app = axum::Router::new()
        .route(
            "/report",
            axum::routing::get(|p: X402Payment| async move { axum::Json(json!({ "paid_by": p.payer() })) }),
        )
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;

    let key = alloy::hex::encode_prefixed(buyer.to_bytes());
    let out = peers::python("x402_pay.py", &[&format!("{}/report", running.base), &key]).await.json();
    assert_eq!(out["status"], 200, "{out}\n--- facilitator\n{}", on_chain.log());
    assert_eq!(out["paymentRequired"]["accepts"][0]["asset"], on_chain.token().as_str(), "{out}");
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{out}");
    assert!(eq_addr(&settled["payer"], &buyer.address().to_string()), "{out}");
    on_chain.assert_mined_ok(settled["transaction"].as_str().expect("transaction")).await;
    let nonce: alloy::primitives::B256 =
        out["paymentPayload"]["payload"]["authorization"]["nonce"].as_str().expect("nonce").parse().expect("bytes32");
    assert!(on_chain.chain.nonce_used(buyer.address(), nonce).await);
    assert_eq!(on_chain.chain.balance(buyer.address()).await, U256::from(7_500u64));
    assert_eq!(on_chain.chain.balance(pay_to).await, U256::from(2_500u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okx_python_x402_client_decodes_a_pay402_settlement_failure() {
    let embedded = EmbeddedFacilitator::new();
    embedded.fund(X_LAYER_USDT0, PY_BUYER, U256::from(10_000u64)).expect("fund");
    let facilitator = support::FlakyFacilitator::new(embedded.clone());
    facilitator.set(support::SettleMode::Fail);
    let server = X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server)
        .route("GET /report", RouteConfig::new(PaymentOption::exact("$0.0025", PAY_TO)))
        .expect("route");
    let app = axum::Router::new()
        .route("/report", axum::routing::get(|| async { "delivered" }))
        .layer(pay402::axum::X402Layer::new(x402));
    let running = support::serve_axum(app).await;

    let out = peers::python("x402_pay.py", &[&format!("{}/report", running.base), PY_BUYER_KEY]).await.json();
    // pay402 answers a failed settlement with 402 and a failure PAYMENT-RESPONSE (the form
    // Python's middleware intends, wire facts §4.7), which OKX's client decodes.
    assert_eq!(out["status"], 402, "{out}");
    let failed = &out["paymentResponse"];
    assert_eq!(failed["success"], false, "{out}");
    assert_eq!(failed["errorReason"], "insufficient_funds", "{out}");
    assert_eq!(failed["network"], "eip155:196", "{out}");
    assert!(embedded.settlements().is_empty());
    assert_eq!(embedded.balance(X_LAYER_USDT0, PY_BUYER), U256::from(10_000u64));
}

// ---- FileStore ----

const CHANNEL: &str = "0xabababababababababababababababababababababababababababababababab";
const PAYER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const ESCROW: &str = "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b";

/// A store directory unique to this test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("pay402-interop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp dir")
    }

    fn file(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.0.join(format!("{key}.json"))).expect("channel file")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 65-byte signature whose base64 has `+` and `/` (the standard alphabet matters).
fn signature(seed: u8) -> String {
    let bytes: Vec<u8> = (0..65u8).map(|i| seed.wrapping_add(i.wrapping_mul(37)) | 0x80).collect();
    format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A channel state as `mpp_evm.ChannelState(**fields)` takes it.
fn python_fields(voucher: &str, spent: &str, units: u64) -> Value {
    json!({
        "channel_id": CHANNEL,
        "chain_id": 196,
        "escrow_contract": ESCROW,
        "payer": PAYER,
        "payee": PAYEE,
        "token": X_LAYER_USDT0,
        "authorized_signer": PAYER,
        "deposit": "1000000000000000000000000000000",
        "highest_voucher_amount": voucher,
        "highest_voucher_signature": signature(1),
        "min_voucher_delta": "1000",
        "spent": spent,
        "units": units,
        "finalized": false,
        "close_requested_at": 0,
        "created_at": "2026-11-24T06:57:43Z",
    })
}

/// Runs `filestore_peer.py DIR COMMAND KEY [ARG]`.
async fn py_store(dir: &TempDir, command: &str, arg: Option<&str>) -> peers::PeerOutput {
    let mut args = vec![dir.path(), command, CHANNEL];
    args.extend(arg);
    peers::python("filestore_peer.py", &args).await
}

/// Python's in-memory view of `state` (amounts as decimal strings, signature as 0x-hex).
fn as_python_sees_it(state: &ChannelState) -> Value {
    json!({
        "channel_id": state.channel_id,
        "chain_id": state.chain_id,
        "escrow_contract": state.escrow_contract,
        "payer": state.payer,
        "payee": state.payee,
        "token": state.token,
        "authorized_signer": state.authorized_signer,
        "deposit": state.deposit.to_string(),
        "highest_voucher_amount": state.highest_voucher_amount.to_string(),
        "highest_voucher_signature": state.highest_voucher_signature,
        "min_voucher_delta": state.min_voucher_delta.to_string(),
        "spent": state.spent.to_string(),
        "units": state.units,
        "finalized": state.finalized,
        "close_requested_at": state.close_requested_at,
        "created_at": state.created_at,
        "available": (state.highest_voucher_amount - state.spent).to_string(),
    })
}

fn store(dir: &TempDir) -> FileStore {
    FileStore::new(Path::new(&dir.0)).expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay402_reads_python_filestore_channels_byte_exactly() {
    let dir = TempDir::new("fs-read");
    // Amounts beyond u64, and a signature Python stores as standard base64.
    let fields = python_fields("600000000000000000000000000000", "123456789012345678901234567", 7);
    let written = py_store(&dir, "write", Some(&fields.to_string())).await.json();
    let bytes = dir.file(CHANNEL);

    let read = store(&dir).get(CHANNEL).await.expect("get").expect("present").value;
    assert_eq!(read.deposit, 10u128.pow(30));
    assert_eq!(read.highest_voucher_amount, 6 * 10u128.pow(29));
    assert_eq!(read.spent, 123_456_789_012_345_678_901_234_567);
    assert_eq!(read.highest_voucher_signature, signature(1));
    assert_eq!(read.reserved, 0);
    assert_eq!(as_python_sees_it(&read), written, "the same state on both sides");
    // pay402 would write exactly the bytes Python wrote.
    assert_eq!(
        String::from_utf8(read.to_json_bytes().expect("encode")).expect("utf8"),
        String::from_utf8(bytes).expect("utf8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_pay402_filestore_writes_byte_exactly() {
    let dir = TempDir::new("fs-write");
    let fields = python_fields("5000000", "0", 0);
    py_store(&dir, "write", Some(&fields.to_string())).await.json();
    let store = store(&dir);

    // pay402 accepts a higher voucher and charges a request.
    let outcome = store
        .update(CHANNEL, |s| {
            let mut next = s.clone();
            next.highest_voucher_amount = 9_000_000;
            next.highest_voucher_signature = signature(2);
            next.spent += 250;
            next.units += 1;
            Ok::<_, Infallible>(Some(next))
        })
        .await
        .expect("update");
    let UpdateOutcome::Updated(updated) = outcome else { panic!("{outcome:?}") };
    let ours = dir.file(CHANNEL);

    let seen = py_store(&dir, "read", None).await.json();
    assert_eq!(seen, as_python_sees_it(&updated.value));
    assert_eq!(seen["available"], "8999750");
    assert_eq!(seen["highest_voucher_signature"], signature(2).as_str());
    // Python re-serialising pay402's file reproduces it byte for byte.
    py_store(&dir, "rewrite", None).await.json();
    assert_eq!(String::from_utf8(dir.file(CHANNEL)).expect("utf8"), String::from_utf8(ours).expect("utf8"));
    assert_eq!(store.get(CHANNEL).await.expect("get").expect("present").version, updated.version);

    // A channel pay402 creates is readable by Python too.
    let other = "0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    let mut fresh = ChannelState::new(other, 196, ESCROW, PAYER, PAYEE);
    fresh.deposit = u128::MAX;
    assert!(store.put_if_absent(other, &fresh).await.expect("put"));
    let seen = peers::python("filestore_peer.py", &[dir.path(), "read", other]).await.json();
    assert_eq!(seen, as_python_sees_it(&fresh));
    assert_eq!(seen["deposit"], u128::MAX.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_python_and_pay402_writes_lose_nothing() {
    let dir = TempDir::new("fs-interleaved");
    py_store(&dir, "write", Some(&python_fields("1000000", "0", 0).to_string())).await.json();
    let store = store(&dir);
    let before = store.get(CHANNEL).await.expect("get").expect("present");

    // Python charges 100 between pay402's read and its write.
    let python = py_store(&dir, "deduct", Some("100")).await.json();
    assert_eq!(python["spent"], "100");
    assert_eq!(python["units"], 1);

    // pay402's stale compare-and-swap is refused and shows Python's state; nothing is overwritten.
    let mut stale = before.value.clone();
    stale.spent = 250;
    stale.units = 1;
    let outcome = store.compare_and_swap(CHANNEL, before.version, &stale).await.expect("cas");
    let CasOutcome::Conflict(current) = outcome else { panic!("expected a conflict, got {outcome:?}") };
    assert_eq!((current.value.spent, current.value.units), (100, 1));
    assert_eq!(py_store(&dir, "read", None).await.json()["spent"], "100");

    // A read-modify-write on the current state keeps both charges.
    let outcome = store
        .update(CHANNEL, |s| {
            let mut next = s.clone();
            next.spent += 250;
            next.units += 1;
            Ok::<_, Infallible>(Some(next))
        })
        .await
        .expect("update");
    assert!(matches!(outcome, UpdateOutcome::Updated(_)), "{outcome:?}");
    let seen = py_store(&dir, "read", None).await.json();
    assert_eq!((seen["spent"].as_str(), seen["units"].as_u64()), (Some("350"), Some(2)), "{seen}");
    assert_eq!(seen["available"], "999650");

    // Python refuses to overdraw, and writes nothing.
    let refused = py_store(&dir, "deduct", Some("999651")).await;
    assert!(!refused.success, "{}", refused.stdout);
    assert!(refused.stdout.contains("InsufficientBalanceError"), "{}", refused.stdout);
    assert_eq!(store.get(CHANNEL).await.expect("get").expect("present").value.spent, 350);

    // pay402's `reserved` extension key: Python reads past it, and drops it when it rewrites the
    // file (why mixed Python/pay402 writers must not use reservations, see ChannelState docs).
    store
        .update(CHANNEL, |s| {
            let mut next = s.clone();
            assert!(next.reserve(500));
            Ok::<_, Infallible>(Some(next))
        })
        .await
        .expect("reserve");
    assert!(String::from_utf8(dir.file(CHANNEL)).expect("utf8").contains("\"reserved\": 500"));
    assert_eq!(py_store(&dir, "read", None).await.json()["spent"], "350");
    assert_eq!(py_store(&dir, "deduct", Some("1")).await.json()["spent"], "351");
    let after = store.get(CHANNEL).await.expect("get").expect("present").value;
    assert_eq!((after.spent, after.units, after.reserved), (351, 3, 0));
}

// ---- FastAPI middleware ↔ pay402 facilitator ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okx_fastapi_middleware_settles_through_the_pay402_facilitator_paid_by_pay402_autopay() {
    use pay402::autopay::{Amount, AssetId, AutoPay, AutoPayOutcome, PaymentDetail, Protocol};
    use pay402::x402::{AnyPaymentRequired, decode_payment_required_header, decode_payment_response_header};
    use support::anvil::{self, TOKEN_NAME, TOKEN_VERSION};

    // A real chain with a real EIP-3009 token, and pay402's HTTP facilitator example on it.
    let on_chain = OnChain::start().await;
    let chain = &on_chain.chain;
    let buyer = anvil::fresh_key();
    chain.mint(buyer.address(), U256::from(10_000u64)).await;
    let pay_to = anvil::fresh_key().address().to_checksum(None);
    let token = on_chain.token();

    // OKX's FastAPI middleware selling GET /weather for 2500 atomic units, settling through it.
    let mut cmd = std::process::Command::new(peers::venv_python());
    cmd.arg(peers::script("python", "fastapi_seller.py")).args([
        on_chain.facilitator_url.as_str(),
        &pay_to,
        &token,
        "2500",
        TOKEN_NAME,
        TOKEN_VERSION,
        on_chain.facilitator_token.as_str(),
    ]);
    let (seller, url) = peers::start_announced(cmd, "fastapi_seller");
    let logs = || format!("--- FastAPI seller\n{}\n--- facilitator\n{}", seller.log(), on_chain.log());

    // Its challenge, as pay402 decodes it.
    let unpaid = peers::http().get(&url).send().await.expect("request");
    assert_eq!(unpaid.status(), 402, "{}", logs());
    let header = unpaid.headers()["payment-required"].to_str().expect("ascii").to_owned();
    let AnyPaymentRequired::V2(required) = decode_payment_required_header(&header).expect("decodes") else {
        panic!("v2 expected")
    };
    let offer = &required.accepts[0];
    assert_eq!((offer.scheme.as_str(), offer.network.to_string()), ("exact", "eip155:196".to_owned()));
    assert_eq!(
        (offer.asset.as_str(), offer.amount.as_str(), offer.pay_to.as_str()),
        (token.as_str(), "2500", pay_to.as_str())
    );
    assert_eq!(offer.extra["name"], TOKEN_NAME);
    assert_eq!(offer.extra["version"], TOKEN_VERSION);

    // pay402's auto-pay client pays it, within a cap on exactly this token.
    let asset = AssetId::new("eip155:196", &token);
    let autopay = AutoPay::new(buyer.clone())
        .prefer([Protocol::X402])
        .max_per_request(asset.clone(), Amount::atomic(2500u64))
        .build()
        .expect("autopay");
    let http = reqwest::Client::builder().timeout(peers::PEER_TIMEOUT);
    let paid = autopay.client(http).expect("client").get(&url).send().await.expect("paid request");
    assert_eq!(paid.status(), 200, "{}", logs());
    let outcome = paid.extensions().get::<AutoPayOutcome>().cloned().expect("payment outcome");
    let settled = decode_payment_response_header(paid.headers()["payment-response"].to_str().expect("ascii"))
        .expect("PAYMENT-RESPONSE decodes");
    let body: Value = paid.json().await.expect("JSON body");
    assert!(eq_addr(&body["paid_by"], &buyer.address().to_string()), "{body}");
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.network.to_string(), "eip155:196");
    assert_eq!(outcome.amount, U256::from(2500u64));
    let PaymentDetail::X402 { settlement: Some(seen), .. } = &outcome.detail else { panic!("{outcome:?}") };
    assert_eq!(seen.transaction, settled.transaction);
    assert_eq!(autopay.spent(&asset), U256::from(2500u64));

    // Settled on chain by pay402's facilitator: the transaction succeeded and the money moved.
    on_chain.assert_mined_ok(&settled.transaction).await;
    assert_eq!(chain.balance(buyer.address()).await, U256::from(7_500u64));
    assert_eq!(chain.balance(pay_to.parse().expect("address")).await, U256::from(2_500u64));

    // A payment signed by pay402's x402 client, sent twice: served once; the replay is refused
    // by pay402's facilitator (nonce used on chain) and the middleware re-challenges with that
    // reason, charging nothing.
    let client =
        pay402::x402::X402Client::new().register("eip155:196", pay402::x402::ExactEvmClientScheme::new(buyer.clone()));
    let (name, value) = client.create_payment_header(&AnyPaymentRequired::V2(required)).await.expect("signs");
    let once = peers::http().get(&url).header(name, value.clone()).send().await.expect("request");
    assert_eq!(once.status(), 200, "{}", logs());
    let again = peers::http().get(&url).header(name, value).send().await.expect("request");
    assert_eq!(again.status(), 402, "{}", logs());
    let header = again.headers()["payment-required"].to_str().expect("ascii").to_owned();
    let AnyPaymentRequired::V2(refused) = decode_payment_required_header(&header).expect("decodes") else {
        panic!("v2 expected")
    };
    assert_eq!(refused.error.as_deref(), Some("invalid_exact_evm_nonce_already_used"));
    assert_eq!(chain.balance(buyer.address()).await, U256::from(5_000u64));
    assert_eq!(chain.balance(pay_to.parse().expect("address")).await, U256::from(5_000u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay402_session_server_and_python_share_live_channel_files() {
    use pay402::axum::{MppLayer, Receipt};
    use pay402::evm::PrivateKeySigner;
    use pay402::mpp::{EmbeddedSa, EvmMethod, Mpp, PaySpec, SessionClient, SessionIntent, parse_www_authenticate};

    let dir = TempDir::new("fs-session");
    let store = Arc::new(store(&dir));
    let payee: PrivateKeySigner =
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse().expect("key");
    let sa = EmbeddedSa::new().with_faucet(U256::from(1_000_000_000u64));
    let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(payee)).store(store.clone());
    let mpp = Mpp::new(
        EvmMethod::x_layer(PAYEE).with_session(intent),
        "interop.test",
        "interop-secret-at-least-32-bytes-long-hmac-key",
    )
    .expect("mpp")
    .route("GET /metered", PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() })
    .expect("route");
    let app = axum::Router::new()
        .route(
            "/metered",
            axum::routing::get(|r: Receipt| async move { axum::Json(json!({ "channel": r.reference })) }),
        )
        .layer(MppLayer::new(mpp));
    let running = support::serve_axum(app).await;
    let url = format!("{}/metered", running.base);
    let http = peers::http();

    // A buyer opens a channel on the pay402 server and pays two requests with vouchers.
    let first = http.get(&url).send().await.expect("request");
    assert_eq!(first.status(), 402);
    let www = first.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
    let buyer: PrivateKeySigner = PY_BUYER_KEY.parse().expect("key");
    let client = SessionClient::new(buyer);
    let (channel, open) = client.open_header(&challenge, U256::from(1_000_000u64)).expect("open");
    let paid = |auth: String| {
        let req = http.get(&url).header("authorization", auth);
        async move {
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
        }
    };
    paid(open).await;
    for _ in 0..2 {
        paid(client.next_voucher(&challenge, &channel, U256::from(1000u64)).expect("voucher")).await;
    }

    // Python's mpp_evm reads the live channel file as pay402 left it.
    let seen = peers::python("filestore_peer.py", &[dir.path(), "read", &channel]).await.json();
    let ours = store.get(&channel).await.expect("get").expect("channel").value;
    assert_eq!(seen, as_python_sees_it(&ours));
    assert_eq!((seen["deposit"].as_str(), seen["highest_voucher_amount"].as_str()), (Some("1000000"), Some("2000")));
    assert_eq!((seen["spent"].as_str(), seen["units"].as_u64()), (Some("2000"), Some(2)), "{seen}");
    assert!(eq_addr(&seen["payer"], PY_BUYER), "{seen}");
    assert!(seen["highest_voucher_signature"].as_str().is_some_and(|s| s.len() == 132), "{seen}");

    // The buyer's next voucher leaves 500 in the channel (3500 vouched, 3000 spent); a Python
    // worker serving the same channel charges it (mpp_evm's deduct_from_channel) …
    paid(client.next_voucher(&challenge, &channel, U256::from(1500u64)).expect("voucher")).await;
    let python = peers::python("filestore_peer.py", &[dir.path(), "deduct", &channel, "500"]).await.json();
    assert_eq!((python["spent"].as_str(), python["units"].as_u64()), (Some("3500"), Some(4)), "{python}");
    assert_eq!(python["available"], "0", "{python}");
    // … and the pay402 server's next charge builds on Python's write instead of overwriting it.
    paid(client.next_voucher(&challenge, &channel, U256::from(1000u64)).expect("voucher")).await;
    let seen = peers::python("filestore_peer.py", &[dir.path(), "read", &channel]).await.json();
    assert_eq!(seen["highest_voucher_amount"], "4500", "{seen}");
    assert_eq!((seen["spent"].as_str(), seen["units"].as_u64()), (Some("4500"), Some(5)), "{seen}");
}
