//! Spending caps and the thread-safe spend ledger of [`AutoPayMiddleware`](super::AutoPayMiddleware).
//!
//! Caps are kept per [`AssetId`] (network + token). A payment first *reserves* its amount —
//! atomically checked against the per-request cap and against `spent + reserved + amount ≤
//! total` — and the reservation is then committed (the money may have moved) or released (it
//! certainly did not). Concurrent requests therefore never overshoot the total cap.

use super::AutoPayError;
use crate::evm::U256;
use crate::x402::networks::NetworkRegistry;
use crate::x402::types::Network;
use pay402_core::{Decimal, Rounding};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A token on a network: the CAIP-2 network and the token contract (compared
/// case-insensitively, kept lower-case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(Arc<AssetInner>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct AssetInner {
    network: Network,
    address: String,
}

impl AssetId {
    /// The token `address` on `network` (`eip155:196`).
    pub fn new(network: impl Into<Network>, address: &str) -> Self {
        Self(Arc::new(AssetInner { network: network.into(), address: address.trim().to_ascii_lowercase() }))
    }

    /// USD₮0 on X Layer (`eip155:196`, 6 decimals).
    pub fn x_layer_usdt0() -> Self {
        Self::new(crate::x402::networks::X_LAYER, crate::x402::networks::X_LAYER_USDT0)
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.0.network
    }

    /// The token contract, lower-case.
    pub fn address(&self) -> &str {
        &self.0.address
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.0.address, self.0.network)
    }
}

/// An amount of a token: exact atomic units, or an exact decimal in whole-token units converted
/// with the token's decimals (from the builder, the [`NetworkRegistry`] or the MPP challenge's
/// `decimals`). Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Amount {
    /// Atomic units (`1000` = 0.001 USD₮0).
    Atomic(U256),
    /// Whole-token units (`0.001` USD₮0); converting it refuses excess precision.
    Decimal(Decimal),
}

impl Amount {
    /// `units` atomic units (use [`Amount::Atomic`] for a [`U256`]).
    pub fn atomic(units: impl Into<u128>) -> Self {
        Self::Atomic(U256::from(units.into()))
    }

    /// A decimal in whole-token units (`"0.01"`): digits with an optional fraction, no sign,
    /// no exponent.
    pub fn decimal(text: &str) -> Result<Self, AutoPayError> {
        Decimal::parse(text.trim())
            .map(Self::Decimal)
            .map_err(|e| AutoPayError::InvalidAmount { text: text.to_owned(), reason: e.to_string() })
    }

    /// The amount in atomic units, given the token's decimals (needed for [`Amount::Decimal`]).
    pub fn to_atomic(&self, decimals: Option<u8>) -> Option<Result<U256, AutoPayError>> {
        match self {
            Self::Atomic(v) => Some(Ok(*v)),
            Self::Decimal(d) => decimals.map(|n| {
                d.to_atomic(n, Rounding::Exact)
                    .map(U256::from)
                    .map_err(|e| AutoPayError::InvalidAmount { text: d.to_string(), reason: e.to_string() })
            }),
        }
    }
}

impl FromStr for Amount {
    type Err = AutoPayError;

    /// Parses a decimal in whole-token units (see [`Amount::decimal`]).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::decimal(text)
    }
}

impl From<U256> for Amount {
    fn from(units: U256) -> Self {
        Self::Atomic(units)
    }
}

impl From<u64> for Amount {
    fn from(units: u64) -> Self {
        Self::Atomic(U256::from(units))
    }
}

/// The caps configured for one asset. An absent cap is unlimited; an asset with no
/// [`Limits`] at all is never paid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) per_request: Option<Amount>,
    pub(crate) total: Option<Amount>,
    pub(crate) decimals: Option<u8>,
    pub(crate) session_deposit: Option<Amount>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Ledger {
    spent: U256,
    reserved: U256,
}

/// The caps and the ledger. Shared by every clone of the middleware.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: HashMap<AssetId, Limits>,
    registry: Arc<NetworkRegistry>,
    ledger: Mutex<HashMap<AssetId, Ledger>>,
}

/// Caps of one asset resolved to atomic units.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    pub(crate) per_request: Option<U256>,
    pub(crate) total: Option<U256>,
    pub(crate) session_deposit: Option<U256>,
}

impl Budget {
    pub(crate) fn new(limits: HashMap<AssetId, Limits>, registry: Arc<NetworkRegistry>) -> Self {
        Self { limits, registry, ledger: Mutex::new(HashMap::new()) }
    }

    fn ledger(&self) -> MutexGuard<'_, HashMap<AssetId, Ledger>> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token's decimals: the builder's, else the registry's, else `hint` (an MPP
    /// challenge's `decimals`).
    fn decimals(&self, asset: &AssetId, limits: &Limits, hint: Option<u8>) -> Option<u8> {
        limits
            .decimals
            .or_else(|| self.registry.asset_info(asset.network(), asset.address()).map(|a| a.decimals))
            .or(hint)
    }

    /// Resolves the caps of `asset` to atomic units.
    pub(crate) fn resolve(&self, asset: &AssetId, decimals_hint: Option<u8>) -> Result<Resolved, AutoPayError> {
        let limits = self.limits.get(asset).ok_or_else(|| AutoPayError::AssetNotAllowed { asset: asset.clone() })?;
        let decimals = self.decimals(asset, limits, decimals_hint);
        let resolve = |a: &Option<Amount>| -> Result<Option<U256>, AutoPayError> {
            match a {
                None => Ok(None),
                Some(a) => a
                    .to_atomic(decimals)
                    .ok_or_else(|| AutoPayError::UnknownDecimals { asset: asset.clone() })?
                    .map(Some),
            }
        };
        Ok(Resolved {
            per_request: resolve(&limits.per_request)?,
            total: resolve(&limits.total)?,
            session_deposit: resolve(&limits.session_deposit)?,
        })
    }

    /// Checks `amount` against the caps of `asset` and reserves it.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        asset: &AssetId,
        amount: U256,
        decimals_hint: Option<u8>,
    ) -> Result<Reservation, AutoPayError> {
        let caps = self.resolve(asset, decimals_hint)?;
        if let Some(cap) = caps.per_request
            && amount > cap
        {
            return Err(AutoPayError::OverCap { asset: asset.clone(), requested: amount, cap });
        }
        let mut ledger = self.ledger();
        let entry = ledger.entry(asset.clone()).or_default();
        if let Some(cap) = caps.total {
            let committed = entry.spent.saturating_add(entry.reserved);
            if committed.checked_add(amount).is_none_or(|after| after > cap) {
                return Err(AutoPayError::TotalCapExceeded {
                    asset: asset.clone(),
                    requested: amount,
                    spent: committed,
                    cap,
                });
            }
        }
        entry.reserved = entry.reserved.saturating_add(amount);
        Ok(Reservation { budget: Arc::clone(self), asset: asset.clone(), amount, settled: false })
    }

    /// What may still be committed on `asset` (None: no total cap).
    pub(crate) fn headroom(&self, asset: &AssetId, decimals_hint: Option<u8>) -> Result<Option<U256>, AutoPayError> {
        let caps = self.resolve(asset, decimals_hint)?;
        let ledger = self.ledger();
        let entry = ledger.get(asset).copied().unwrap_or_default();
        Ok(caps.total.map(|cap| cap.saturating_sub(entry.spent.saturating_add(entry.reserved))))
    }

    pub(crate) fn spent(&self, asset: &AssetId) -> U256 {
        self.ledger().get(asset).map_or(U256::ZERO, |l| l.spent)
    }

    pub(crate) fn reserved(&self, asset: &AssetId) -> U256 {
        self.ledger().get(asset).map_or(U256::ZERO, |l| l.reserved)
    }

    fn settle(&self, asset: &AssetId, amount: U256, commit: bool) {
        let mut ledger = self.ledger();
        let entry = ledger.entry(asset.clone()).or_default();
        entry.reserved = entry.reserved.saturating_sub(amount);
        if commit {
            entry.spent = entry.spent.saturating_add(amount);
        }
    }
}

/// An amount held against the caps until it is committed (spent) or released. Dropping an
/// unsettled reservation releases it.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    asset: AssetId,
    amount: U256,
    settled: bool,
}

impl Reservation {
    pub(crate) fn amount(&self) -> U256 {
        self.amount
    }

    /// The money may have moved: count it as spent.
    pub(crate) fn commit(mut self) {
        self.settled = true;
        self.budget.settle(&self.asset, self.amount, true);
    }

    /// The money certainly did not move.
    pub(crate) fn release(mut self) {
        self.settled = true;
        self.budget.settle(&self.asset, self.amount, false);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.settle(&self.asset, self.amount, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_request: Option<&str>, total: Option<&str>) -> Arc<Budget> {
        let limits = Limits {
            per_request: per_request.map(|a| Amount::decimal(a).unwrap()),
            total: total.map(|a| Amount::decimal(a).unwrap()),
            ..Limits::default()
        };
        Arc::new(Budget::new(HashMap::from([(AssetId::x_layer_usdt0(), limits)]), Arc::new(NetworkRegistry::x_layer())))
    }

    #[test]
    fn caps_reserve_commit_release() {
        let b = budget(Some("0.01"), Some("0.025"));
        let usdt = AssetId::x_layer_usdt0();
        assert_eq!(
            b.reserve(&usdt, U256::from(10_001u64), None).unwrap_err(),
            AutoPayError::OverCap { asset: usdt.clone(), requested: U256::from(10_001u64), cap: U256::from(10_000u64) }
        );
        let r1 = b.reserve(&usdt, U256::from(10_000u64), None).unwrap();
        let r2 = b.reserve(&usdt, U256::from(10_000u64), None).unwrap();
        assert!(matches!(
            b.reserve(&usdt, U256::from(10_000u64), None),
            Err(AutoPayError::TotalCapExceeded { spent, cap, .. }) if spent == U256::from(20_000u64) && cap == U256::from(25_000u64)
        ));
        assert_eq!(b.headroom(&usdt, None).unwrap(), Some(U256::from(5000u64)));
        r1.commit();
        r2.release();
        assert_eq!((b.spent(&usdt), b.reserved(&usdt)), (U256::from(10_000u64), U256::ZERO));
        drop(b.reserve(&usdt, U256::from(10_000u64), None).unwrap());
        assert_eq!(b.reserved(&usdt), U256::ZERO, "a dropped reservation is released");
        b.reserve(&usdt, U256::from(10_000u64), None).unwrap().commit();
        assert!(b.reserve(&usdt, U256::from(5001u64), None).is_err());
        b.reserve(&usdt, U256::from(5000u64), None).unwrap().commit();
        assert_eq!(b.spent(&usdt), U256::from(25_000u64));
    }

    #[test]
    fn unknown_assets_and_decimals() {
        let b = budget(None, None);
        let other = AssetId::new("eip155:196", "0x1111111111111111111111111111111111111111");
        assert_eq!(
            b.reserve(&other, U256::from(1u64), None).unwrap_err(),
            AutoPayError::AssetNotAllowed { asset: other.clone() }
        );
        let limits = Limits { per_request: Some(Amount::decimal("1.5").unwrap()), ..Limits::default() };
        let b = Arc::new(Budget::new(HashMap::from([(other.clone(), limits)]), Arc::new(NetworkRegistry::x_layer())));
        assert_eq!(
            b.reserve(&other, U256::from(1u64), None).unwrap_err(),
            AutoPayError::UnknownDecimals { asset: other.clone() }
        );
        // The MPP challenge's decimals resolve the cap: 1.5 × 10^2.
        assert!(b.reserve(&other, U256::from(150u64), Some(2)).is_ok());
        assert!(matches!(b.reserve(&other, U256::from(151u64), Some(2)), Err(AutoPayError::OverCap { .. })));
        assert!(Amount::decimal("0.0000001").unwrap().to_atomic(Some(6)).unwrap().is_err());
        assert!(Amount::decimal("-1").is_err() && "1e3".parse::<Amount>().is_err());
        assert_eq!(AssetId::new("eip155:196", " 0xABC "), AssetId::new("eip155:196", "0xabc"));
    }
}
