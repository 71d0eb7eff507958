//! Permit2 and the x402 Permit2 proxies on the [`anvil`](super::anvil) chain.
//!
//! * Permit2 is Uniswap's ORIGINAL runtime bytecode (npm `@uniswap/v4-periphery` ships it
//!   precompiled; `scripts/deps/25-permit2.sh` extracts it to
//!   `.test-deps/permit2/Permit2.runtime.hex`, or `$PAY402_PERMIT2_RUNTIME`), put at its canonical
//!   address with `anvil_setCode`. Its cached EIP-712 domain is mainnet's (chain id 1), so on chain
//!   196 it rebuilds the separator for (196, its canonical address) — [`domain_separator`] lets the
//!   tests check that.
//! * The x402 exact and upto proxies are pay402's OWN test implementation written from the x402
//!   specs (`tests/contracts/X402Permit2Proxies.sol`, compiled with npm solc 0.8.30 into the
//!   committed `X402Permit2Proxies.json`): no registry ships the deployed originals. They are put at
//!   the canonical proxy addresses; they hold no state and no immutables.
//!
//! ```ignore
//! let chain = anvil::Chain::start().await;
//! permit2::deploy(&chain).await;                    // Permit2 + both proxies
//! permit2::approve(&chain, &buyer, U256::MAX).await // ERC-20 approve(PERMIT2) from the buyer
//! permit2::nonce_used(&chain, owner, nonce).await   // Permit2's unordered nonce bitmap
//! permit2::allowance(&chain, owner).await           // token.allowance(owner, PERMIT2)
//! ```
#![allow(dead_code)]

use super::anvil::Chain;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{BlockId, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use pay402::evm::permit2::{EXACT_PERMIT2_PROXY, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY, nonce_bitmap_position};
use std::path::PathBuf;

alloy::sol! {
    interface IPermit2View {
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
    }
    interface IErc20Approve {
        function approve(address spender, uint256 amount) external returns (bool);
        function allowance(address owner, address spender) external view returns (uint256);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The file holding Permit2's original runtime bytecode (hex), or a panic saying how to install it.
pub(crate) fn permit2_runtime_path() -> PathBuf {
    let path = std::env::var_os("PAY402_PERMIT2_RUNTIME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".test-deps/permit2/Permit2.runtime.hex"));
    assert!(
        path.is_file(),
        "Permit2 bytecode not found at {}: install it with `source scripts/install-test-deps.sh` \
         (scripts/deps/25-permit2.sh, npm @uniswap/v4-periphery@1.0.3)",
        path.display()
    );
    path
}

/// Permit2's original runtime bytecode.
pub(crate) fn permit2_runtime() -> Vec<u8> {
    let path = permit2_runtime_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let code = alloy::hex::decode(text.trim()).unwrap_or_else(|e| panic!("{}: not hex: {e}", path.display()));
    assert_eq!(code.len(), 9152, "Permit2's runtime code is 9152 bytes");
    code
}

/// The committed compiled proxies (`tests/contracts/X402Permit2Proxies.json`).
pub(crate) fn proxies_json_path() -> PathBuf {
    repo_root().join("tests/contracts/X402Permit2Proxies.json")
}

/// The runtime bytecode of the committed proxy `name` (`X402ExactPermit2Proxy`,
/// `X402UptoPermit2Proxy`).
pub(crate) fn proxy_runtime(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(proxies_json_path()).expect("tests/contracts/X402Permit2Proxies.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("proxies JSON");
    let hex = json["contracts"][name]["deployedBytecode"].as_str().unwrap_or_else(|| panic!("{name} in the JSON"));
    let code = alloy::hex::decode(hex).expect("proxy bytecode hex");
    assert!(!code.is_empty(), "{name} has runtime code");
    code
}

async fn set_code(chain: &Chain, at: Address, code: Vec<u8>) {
    let code = Bytes::from(code);
    let _: serde_json::Value =
        chain.provider.raw_request("anvil_setCode".into(), (at, code.clone())).await.expect("anvil_setCode");
    let installed = chain.provider.get_code_at(at).await.expect("eth_getCode");
    assert_eq!(installed, code, "code installed at {at}");
}

/// Installs Permit2 and both x402 proxies at their canonical addresses.
pub(crate) async fn deploy(chain: &Chain) {
    set_code(chain, PERMIT2_ADDRESS, permit2_runtime()).await;
    set_code(chain, EXACT_PERMIT2_PROXY, proxy_runtime("X402ExactPermit2Proxy")).await;
    set_code(chain, UPTO_PERMIT2_PROXY, proxy_runtime("X402UptoPermit2Proxy")).await;
}

async fn view<C: SolCall>(chain: &Chain, to: Address, call: C) -> C::Return {
    let tx = TransactionRequest::default().with_to(to).with_input(call.abi_encode());
    let out = chain.provider.call(tx).block(BlockId::latest()).await.expect("eth_call");
    C::abi_decode_returns(&out).expect("decode")
}

/// `DOMAIN_SEPARATOR()` of the Permit2 at the canonical address.
pub(crate) async fn domain_separator(chain: &Chain) -> B256 {
    view(chain, PERMIT2_ADDRESS, IPermit2View::DOMAIN_SEPARATORCall {}).await
}

/// Whether Permit2 marks `nonce` of `owner` used (its unordered nonce bitmap).
pub(crate) async fn nonce_used(chain: &Chain, owner: Address, nonce: U256) -> bool {
    let (word, bit) = nonce_bitmap_position(nonce);
    let bitmap = view(chain, PERMIT2_ADDRESS, IPermit2View::nonceBitmapCall { owner, wordPos: word }).await;
    bitmap.bit(usize::from(bit))
}

/// The token allowance `owner` granted Permit2.
pub(crate) async fn allowance(chain: &Chain, owner: Address) -> U256 {
    view(chain, chain.token, IErc20Approve::allowanceCall { owner, spender: PERMIT2_ADDRESS }).await
}

/// The buyer's one-time `approve(PERMIT2, amount)` on the token, sent from `buyer`'s own key
/// (funded with a little ETH for the gas first).
pub(crate) async fn approve(chain: &Chain, buyer: &PrivateKeySigner, amount: U256) {
    chain.fund_eth(buyer.address(), U256::from(10u64).pow(U256::from(16u64))).await;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(buyer.clone()))
        .connect_http(chain.rpc_url.parse().expect("rpc url"));
    let call = IErc20Approve::approveCall { spender: PERMIT2_ADDRESS, amount }.abi_encode();
    let tx = TransactionRequest::default().with_to(chain.token).with_input(call);
    let receipt = provider.send_transaction(tx).await.expect("approve: send").get_receipt().await.expect("receipt");
    assert!(receipt.status(), "approve reverted");
    assert_eq!(allowance(chain, buyer.address()).await, amount);
}

/// The one-time `approve(PERMIT2, amount)` sent by a contract (e.g. an ERC-1271 wallet): anvil
/// impersonates it and gives it ETH for the gas.
pub(crate) async fn approve_from_contract(chain: &Chain, contract: Address, amount: U256) {
    let eth = U256::from(10u64).pow(U256::from(18u64));
    let _: serde_json::Value =
        chain.provider.raw_request("anvil_setBalance".into(), (contract, eth)).await.expect("anvil_setBalance");
    let _: serde_json::Value =
        chain.provider.raw_request("anvil_impersonateAccount".into(), (contract,)).await.expect("impersonate");
    let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().expect("rpc url"));
    let call = IErc20Approve::approveCall { spender: PERMIT2_ADDRESS, amount }.abi_encode();
    let tx = TransactionRequest::default().with_from(contract).with_to(chain.token).with_input(call);
    let receipt = provider.send_transaction(tx).await.expect("approve: send").get_receipt().await.expect("receipt");
    assert!(receipt.status(), "approve reverted");
    let _: serde_json::Value = chain
        .provider
        .raw_request("anvil_stopImpersonatingAccount".into(), (contract,))
        .await
        .expect("stop impersonating");
    assert_eq!(allowance(chain, contract).await, amount);
}

/// pay402's on-chain facilitator for the chain's token — `exact` (EIP-3009 and Permit2) and
/// `upto`, both settling from dev account 9 — served over HTTP (`facilitator_evm::server`);
/// returns the server and the facilitator's settling address (its `facilitatorAddress`).
pub(crate) async fn serve_facilitator(chain: &Chain) -> (super::Running, Address) {
    use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, UptoEvmFacilitator, X402Facilitator, server};
    use std::sync::Arc;
    let key = chain.dev_key(9);
    let address = key.address();
    let exact = Arc::new(
        ExactEvmFacilitatorScheme::connect_http(&chain.rpc_url, key)
            .await
            .expect("facilitator")
            .with_asset(chain.token),
    );
    let network = exact.network().clone();
    let upto = UptoEvmFacilitator::new(Arc::clone(&exact));
    assert_eq!(upto.facilitator_address(), address, "upto settles from the exact scheme's key");
    let x402 = X402Facilitator::new().register_shared([network.clone()], exact).register([network], upto);
    (super::serve_axum(server::router(Arc::new(x402))).await, address)
}
