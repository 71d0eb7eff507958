//! Chain data shared by every protocol: the CAIP-2 [`Network`] id, networks and their default
//! stablecoins (wire facts §6.1), and the X Layer constants — each defined once.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// A CAIP-2 network id as carried on the wire (`eip155:196`). v1 payloads may carry legacy
/// names (`base-sepolia`), so any string deserialises; [`Network::parse`] validates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Network(String);

impl Network {
    /// X Layer mainnet, `eip155:196`.
    pub const X_LAYER: &'static str = X_LAYER;

    /// Validates a CAIP-2 id (the same validator the macros use at compile time).
    pub fn parse(text: &str) -> Result<Self, pay402_core::Caip2Error> {
        pay402_core::Caip2::parse(text)?;
        Ok(Self(text.to_owned()))
    }

    /// The text, unchanged.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The EVM chain id of an `eip155:<id>` network.
    pub fn evm_chain_id(&self) -> Option<u64> {
        pay402_core::Caip2::parse(&self.0).ok()?.evm_chain_id()
    }

    /// True when `pattern` is this network or a wildcard (`eip155:*`) covering it.
    pub fn matches_pattern(&self, pattern: &str) -> bool {
        match pattern.strip_suffix(":*") {
            Some(ns) => self.0.split_once(':').is_some_and(|(n, _)| n == ns),
            None => pattern == self.0,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Network {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Network {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl PartialEq<str> for Network {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Network {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How a token is transferred by an `exact` payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferMethod {
    /// EIP-3009 `transferWithAuthorization` (the buyer signs `TransferWithAuthorization`).
    Eip3009,
    /// Permit2 `permitWitnessTransferFrom` through the x402 Permit2 proxy (tokens without
    /// EIP-3009; requirements carry `extra.assetTransferMethod = "permit2"`).
    Permit2,
}

/// A network's default asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetInfo {
    /// Token contract address, spelled as it is emitted in requirements.
    pub address: String,
    /// EIP-712 domain `name` (e.g. `USD₮0`).
    pub name: String,
    /// EIP-712 domain `version`.
    pub version: String,
    /// Token decimals.
    pub decimals: u8,
    /// Transfer method.
    pub transfer_method: TransferMethod,
}

/// X Layer mainnet's CAIP-2 id.
pub const X_LAYER: &str = "eip155:196";
/// X Layer's EVM chain id.
pub const X_LAYER_CHAIN_ID: u64 = 196;
/// USD₮0 on X Layer, lower-case as OKX's Python and Rust SDKs emit it.
pub const X_LAYER_USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
/// The EIP-712 domain name of USD₮0 (`USD` + U+20AE + `0`).
pub const X_LAYER_USDT0_NAME: &str = "USD\u{20ae}0";

/// A registry from network to default asset. [`NetworkRegistry::default`] holds the EIP-3009
/// stablecoins of OKX's Python SDK (X Layer first).
#[derive(Clone, Debug)]
pub struct NetworkRegistry {
    assets: HashMap<String, AssetInfo>,
}

fn asset(address: &str, name: &str, version: &str, decimals: u8) -> AssetInfo {
    AssetInfo {
        address: address.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        decimals,
        transfer_method: TransferMethod::Eip3009,
    }
}

impl Default for NetworkRegistry {
    fn default() -> Self {
        let mut r = Self::empty();
        r.register(X_LAYER, asset(X_LAYER_USDT0, X_LAYER_USDT0_NAME, "1", 6));
        r.register("eip155:8453", asset("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2", 6));
        r.register("eip155:84532", asset("0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2", 6));
        r.register("eip155:143", asset("0x754704Bc059F8C67012fEd69BC8A327a5aafb603", "USD Coin", "2", 6));
        r.register("eip155:988", asset("0x779Ded0c9e1022225f8E0630b35a9b54bE713736", "USDT0", "1", 6));
        r
    }
}

impl NetworkRegistry {
    /// A registry with no networks.
    pub fn empty() -> Self {
        Self { assets: HashMap::new() }
    }

    /// A registry with only the X Layer preset.
    pub fn x_layer() -> Self {
        let mut r = Self::empty();
        r.register(X_LAYER, asset(X_LAYER_USDT0, X_LAYER_USDT0_NAME, "1", 6));
        r
    }

    /// Sets (or replaces) a network's default asset.
    pub fn register(&mut self, network: impl Into<String>, info: AssetInfo) -> &mut Self {
        self.assets.insert(network.into(), info);
        self
    }

    /// The default asset of `network`.
    pub fn default_asset(&self, network: &Network) -> Option<&AssetInfo> {
        self.assets.get(network.as_str())
    }

    /// The asset info of `address` on `network` (only the default asset is known; the address
    /// comparison is case-insensitive).
    pub fn asset_info(&self, network: &Network, address: &str) -> Option<&AssetInfo> {
        self.default_asset(network).filter(|a| a.address.eq_ignore_ascii_case(address))
    }

    /// The process-wide registry used by schemes built with `new()`. Starts as
    /// [`NetworkRegistry::default`]; change it with [`NetworkRegistry::update_global`].
    pub fn global() -> Arc<NetworkRegistry> {
        global_cell().read().map(|g| Arc::clone(&g)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Edits the process-wide registry (affects schemes created afterwards).
    pub fn update_global(edit: impl FnOnce(&mut NetworkRegistry)) {
        let mut guard = global_cell().write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = (**guard).clone();
        edit(&mut next);
        *guard = Arc::new(next);
    }
}

fn global_cell() -> &'static RwLock<Arc<NetworkRegistry>> {
    static CELL: OnceLock<RwLock<Arc<NetworkRegistry>>> = OnceLock::new();
    CELL.get_or_init(|| RwLock::new(Arc::new(NetworkRegistry::default())))
}
