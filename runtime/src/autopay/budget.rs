//! Spending caps and the thread-safe spend ledger of [`AutoPayMiddleware`](super::AutoPayMiddleware).
//!
//! Caps are kept per [`AssetId`] (network + token). A payment first *reserves* its amount —
//! atomically checked against the per-request cap and against `spent + reserved + amount ≤
//! total` — and the reservation is then committed (the money may have moved) or released (it
//! certainly did not). Concurrent requests therefore never overshoot the total cap.

use super::AutoPayError;
use crate::chain::Network;
use crate::chain::NetworkRegistry;
use crate::evm::U256;
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
        Self::new(crate::chain::X_LAYER, crate::chain::X_LAYER_USDT0)
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

/// How a token's amounts read for people: its decimals and symbol, known locally (the
/// builder's [`AutoPay::decimals`](super::AutoPay::decimals) or the [`NetworkRegistry`] — never
/// the seller's word). Refusals, outcomes and logs show amounts with it, atomic units alongside.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenUnits {
    /// The token's decimals, when known locally.
    pub decimals: Option<u8>,
    /// The token's symbol (the registry's EIP-712 domain name, e.g. `USD₮0`), when known.
    pub symbol: Option<String>,
}

impl TokenUnits {
    /// Units with `decimals` and `symbol`.
    pub fn new(decimals: Option<u8>, symbol: Option<String>) -> Self {
        Self { decimals, symbol }
    }

    /// `atomic` for people: `0.0015 USD₮0 (1500 atomic units)`; without known decimals
    /// `1500 atomic units`.
    pub fn show(&self, atomic: U256) -> String {
        match self.decimals {
            Some(decimals) => {
                let symbol = self.symbol.as_deref().unwrap_or("tokens");
                format!("{} {symbol} ({atomic} atomic units)", decimal_string(atomic, decimals))
            }
            None => format!("{atomic} atomic units"),
        }
    }
}

/// `atomic` as an exact decimal with `decimals` places, trailing zeros trimmed (`1500`, 6 →
/// `0.0015`). Never a float.
pub fn decimal_string(atomic: U256, decimals: u8) -> String {
    let width = usize::from(decimals) + 1;
    let digits = format!("{atomic:0>width$}");
    let (int, frac) = digits.split_at(digits.len() - usize::from(decimals));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") }
}

/// An amount of a token: exact atomic units, or an exact decimal in whole-token units converted
/// with the token's decimals (from the builder or the [`NetworkRegistry`], never from the
/// server). Never a float.
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
    pub(crate) max_deposit: Option<Amount>,
}

/// What has left (or is leaving) the process, per asset. Everything counts against the total
/// cap: `spent + reserved + escrowed ≤ total`.
#[derive(Clone, Copy, Debug, Default)]
struct Ledger {
    /// Payments and voucher increments (money a payee can claim).
    spent: U256,
    /// Payments and deposits being signed or sent.
    reserved: U256,
    /// Session deposits not (yet) covered by a voucher: the escrow holds them; the client cannot
    /// verify a refund, so they are never credited back.
    escrowed: U256,
}

impl Ledger {
    fn committed(&self) -> U256 {
        self.spent.saturating_add(self.reserved).saturating_add(self.escrowed)
    }
}

/// The caps and the ledger. Shared by every clone of the middleware.
#[derive(Debug)]
pub(crate) struct Budget {
    caps: HashMap<AssetId, Resolved>,
    units: HashMap<AssetId, Arc<TokenUnits>>,
    ledger: Mutex<HashMap<AssetId, Ledger>>,
}

/// Caps of one asset resolved to atomic units (at build time, with the builder's or the
/// registry's decimals only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    pub(crate) per_request: Option<U256>,
    pub(crate) total: Option<U256>,
    pub(crate) session_deposit: Option<U256>,
    /// The most one session deposit authorization (open or top-up) may transfer: the
    /// configured maximum, else the configured fixed deposit. None: sessions are not paid.
    pub(crate) max_deposit: Option<U256>,
}

/// What a [`Reservation`] is for, which decides where it goes when committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A payment: held in `reserved`, committed to `spent`.
    Payment,
    /// A session deposit: held in `reserved`, committed to `escrowed`.
    Deposit,
    /// A voucher increment, covered by an escrowed deposit: committed from `escrowed` to
    /// `spent` (it adds nothing to what left the process).
    Voucher,
}

impl Budget {
    /// Resolves every cap to atomic units. Decimals come from the builder, else the registry —
    /// never from a counterparty: a decimal cap of a token with unknown decimals is a
    /// [`AutoPayError::UnknownDecimals`] build error (finding F7).
    pub(crate) fn new(limits: &HashMap<AssetId, Limits>, registry: &NetworkRegistry) -> Result<Self, AutoPayError> {
        let mut caps = HashMap::new();
        let mut units = HashMap::new();
        for (asset, limits) in limits {
            let info = registry.asset_info(asset.network(), asset.address());
            let decimals = limits.decimals.or_else(|| info.map(|a| a.decimals));
            // The registry's symbol only when its decimals are the ones in use.
            let symbol = info.filter(|a| Some(a.decimals) == decimals).map(|a| a.name.clone());
            units.insert(asset.clone(), Arc::new(TokenUnits { decimals, symbol }));
            let resolve = |a: &Option<Amount>| -> Result<Option<U256>, AutoPayError> {
                match a {
                    None => Ok(None),
                    Some(a) => a
                        .to_atomic(decimals)
                        .ok_or_else(|| AutoPayError::UnknownDecimals { asset: asset.clone() })?
                        .map(Some),
                }
            };
            let session_deposit = resolve(&limits.session_deposit)?;
            let max_deposit = resolve(&limits.max_deposit)?;
            if let (Some(fixed), Some(max)) = (session_deposit, max_deposit)
                && fixed > max
            {
                return Err(AutoPayError::Config(format!(
                    "the session deposit of {asset} ({fixed}) is above its maximum deposit ({max})"
                )));
            }
            let resolved = Resolved {
                per_request: resolve(&limits.per_request)?,
                total: resolve(&limits.total)?,
                session_deposit,
                max_deposit: max_deposit.or(session_deposit),
            };
            if let (Some(one), Some(all)) = (resolved.per_request, resolved.total)
                && one > all
            {
                return Err(AutoPayError::Config(format!(
                    "the per-request cap of {asset} ({one}) is above its total cap ({all})"
                )));
            }
            caps.insert(asset.clone(), resolved);
        }
        Ok(Self { caps, units, ledger: Mutex::new(HashMap::new()) })
    }

    /// How amounts of `asset` read for people.
    pub(crate) fn units(&self, asset: &AssetId) -> Arc<TokenUnits> {
        self.units.get(asset).cloned().unwrap_or_default()
    }

    fn ledger(&self) -> MutexGuard<'_, HashMap<AssetId, Ledger>> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resolved caps of `asset` ([`AutoPayError::AssetNotAllowed`] without any).
    pub(crate) fn caps(&self, asset: &AssetId) -> Result<Resolved, AutoPayError> {
        self.caps.get(asset).copied().ok_or_else(|| AutoPayError::AssetNotAllowed { asset: asset.clone() })
    }

    fn check_per_request(&self, asset: &AssetId, caps: &Resolved, amount: U256) -> Result<(), AutoPayError> {
        match caps.per_request {
            Some(cap) if amount > cap => {
                Err(AutoPayError::OverCap { asset: asset.clone(), requested: amount, cap, units: self.units(asset) })
            }
            _ => Ok(()),
        }
    }

    /// Checks that one request may cost `amount` of `asset` (the per-request cap), reserving
    /// nothing.
    pub(crate) fn check_request(&self, asset: &AssetId, amount: U256) -> Result<(), AutoPayError> {
        let caps = self.caps(asset)?;
        self.check_per_request(asset, &caps, amount)
    }

    /// Holds `amount` against the total cap (`spent + reserved + escrowed + amount ≤ total`).
    fn hold(
        self: &Arc<Self>,
        asset: &AssetId,
        caps: &Resolved,
        amount: U256,
        kind: Kind,
    ) -> Result<Reservation, AutoPayError> {
        let mut ledger = self.ledger();
        let entry = ledger.entry(asset.clone()).or_default();
        if let Some(cap) = caps.total {
            let committed = entry.committed();
            if committed.checked_add(amount).is_none_or(|after| after > cap) {
                return Err(AutoPayError::TotalCapExceeded {
                    asset: asset.clone(),
                    requested: amount,
                    spent: committed,
                    cap,
                    units: self.units(asset),
                });
            }
        }
        entry.reserved = entry.reserved.saturating_add(amount);
        Ok(Reservation { budget: Arc::clone(self), asset: asset.clone(), amount, kind, settled: false })
    }

    /// Checks a payment of `amount` against the caps of `asset` and reserves it.
    pub(crate) fn reserve(self: &Arc<Self>, asset: &AssetId, amount: U256) -> Result<Reservation, AutoPayError> {
        let caps = self.caps(asset)?;
        self.check_per_request(asset, &caps, amount)?;
        self.hold(asset, &caps, amount, Kind::Payment)
    }

    /// A voucher increment of `amount`: checked against the per-request cap only, because the
    /// escrowed deposit that covers it was counted when it was signed (the caller makes sure
    /// the channel's deposit covers the voucher). Committing moves it from escrowed to spent.
    pub(crate) fn reserve_voucher(
        self: &Arc<Self>,
        asset: &AssetId,
        amount: U256,
    ) -> Result<Reservation, AutoPayError> {
        if crate::reverts::is_reverted(crate::reverts::Fix::F2EscrowAllowlist) {
            // Without F2's deposit accounting, vouchers were the payments.
            return self.reserve(asset, amount);
        }
        let caps = self.caps(asset)?;
        self.check_per_request(asset, &caps, amount)?;
        Ok(Reservation { budget: Arc::clone(self), asset: asset.clone(), amount, kind: Kind::Voucher, settled: false })
    }

    /// A session deposit (open or top-up) of `amount`: at most the maximum deposit, and counted
    /// against the total cap like a payment (finding F2). Committed, it stays counted as
    /// escrowed until vouchers spend it.
    pub(crate) fn reserve_deposit(
        self: &Arc<Self>,
        asset: &AssetId,
        amount: U256,
    ) -> Result<Reservation, AutoPayError> {
        let caps = self.caps(asset)?;
        if crate::reverts::is_reverted(crate::reverts::Fix::F2EscrowAllowlist) {
            return Ok(Reservation {
                budget: Arc::clone(self),
                asset: asset.clone(),
                amount,
                kind: Kind::Voucher,
                settled: true,
            });
        }
        match caps.max_deposit {
            None => return Err(AutoPayError::NoMaxDeposit { asset: asset.clone() }),
            Some(max) if amount > max => {
                return Err(AutoPayError::DepositAboveMax {
                    asset: asset.clone(),
                    requested: amount,
                    max,
                    units: self.units(asset),
                });
            }
            Some(_) => {}
        }
        self.hold(asset, &caps, amount, Kind::Deposit)
    }

    /// What may still be committed on `asset` (None: no total cap).
    pub(crate) fn headroom(&self, asset: &AssetId) -> Result<Option<U256>, AutoPayError> {
        let caps = self.caps(asset)?;
        let ledger = self.ledger();
        let entry = ledger.get(asset).copied().unwrap_or_default();
        Ok(caps.total.map(|cap| cap.saturating_sub(entry.committed())))
    }

    pub(crate) fn spent(&self, asset: &AssetId) -> U256 {
        self.ledger().get(asset).map_or(U256::ZERO, |l| l.spent)
    }

    pub(crate) fn reserved(&self, asset: &AssetId) -> U256 {
        self.ledger().get(asset).map_or(U256::ZERO, |l| l.reserved)
    }

    pub(crate) fn escrowed(&self, asset: &AssetId) -> U256 {
        self.ledger().get(asset).map_or(U256::ZERO, |l| l.escrowed)
    }

    fn settle(&self, asset: &AssetId, amount: U256, kind: Kind, commit: bool) {
        let mut ledger = self.ledger();
        let entry = ledger.entry(asset.clone()).or_default();
        match (kind, commit) {
            (Kind::Payment, true) => {
                entry.reserved = entry.reserved.saturating_sub(amount);
                entry.spent = entry.spent.saturating_add(amount);
            }
            (Kind::Deposit, true) => {
                entry.reserved = entry.reserved.saturating_sub(amount);
                entry.escrowed = entry.escrowed.saturating_add(amount);
            }
            (Kind::Payment | Kind::Deposit, false) => entry.reserved = entry.reserved.saturating_sub(amount),
            (Kind::Voucher, true) => {
                entry.escrowed = entry.escrowed.saturating_sub(amount);
                entry.spent = entry.spent.saturating_add(amount);
            }
            (Kind::Voucher, false) => {}
        }
    }
}

/// An amount held against the caps until it is committed (it left the process) or released
/// (it certainly did not). Dropping an unsettled reservation releases it.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    asset: AssetId,
    amount: U256,
    kind: Kind,
    settled: bool,
}

impl Reservation {
    pub(crate) fn amount(&self) -> U256 {
        self.amount
    }

    /// The signed payment, deposit or voucher left the process: count it.
    pub(crate) fn commit(mut self) {
        if !self.settled {
            self.settled = true;
            self.budget.settle(&self.asset, self.amount, self.kind, true);
        }
    }

    /// A payment that left the process but settled for `settled` ≤ the reserved amount (an
    /// `upto` payment): `settled` is counted as spent and the rest released. A `settled` above
    /// the reservation (never trusted) commits the whole reservation.
    pub(crate) fn commit_settled(mut self, settled: U256) {
        if self.settled {
            return;
        }
        self.settled = true;
        if self.kind != Kind::Payment || settled >= self.amount {
            self.budget.settle(&self.asset, self.amount, self.kind, true);
            return;
        }
        self.budget.settle(&self.asset, settled, self.kind, true);
        self.budget.settle(&self.asset, self.amount - settled, self.kind, false);
    }

    /// Nothing was sent.
    pub(crate) fn release(mut self) {
        if !self.settled {
            self.settled = true;
            self.budget.settle(&self.asset, self.amount, self.kind, false);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.settle(&self.asset, self.amount, self.kind, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_of(limits: Limits) -> Arc<Budget> {
        let limits = HashMap::from([(AssetId::x_layer_usdt0(), limits)]);
        Arc::new(Budget::new(&limits, &NetworkRegistry::x_layer()).unwrap())
    }

    fn budget(per_request: Option<&str>, total: Option<&str>) -> Arc<Budget> {
        budget_of(Limits {
            per_request: per_request.map(|a| Amount::decimal(a).unwrap()),
            total: total.map(|a| Amount::decimal(a).unwrap()),
            ..Limits::default()
        })
    }

    #[test]
    fn caps_reserve_commit_release() {
        let b = budget(Some("0.01"), Some("0.025"));
        let usdt = AssetId::x_layer_usdt0();
        assert_eq!(
            b.reserve(&usdt, U256::from(10_001u64)).unwrap_err(),
            AutoPayError::OverCap {
                asset: usdt.clone(),
                requested: U256::from(10_001u64),
                cap: U256::from(10_000u64),
                units: Arc::new(TokenUnits::new(Some(6), Some("USD\u{20ae}0".into())))
            }
        );
        let r1 = b.reserve(&usdt, U256::from(10_000u64)).unwrap();
        let r2 = b.reserve(&usdt, U256::from(10_000u64)).unwrap();
        assert!(matches!(
            b.reserve(&usdt, U256::from(10_000u64)),
            Err(AutoPayError::TotalCapExceeded { spent, cap, .. }) if spent == U256::from(20_000u64) && cap == U256::from(25_000u64)
        ));
        assert_eq!(b.headroom(&usdt).unwrap(), Some(U256::from(5000u64)));
        r1.commit();
        r2.release();
        assert_eq!((b.spent(&usdt), b.reserved(&usdt)), (U256::from(10_000u64), U256::ZERO));
        drop(b.reserve(&usdt, U256::from(10_000u64)).unwrap());
        assert_eq!(b.reserved(&usdt), U256::ZERO, "a dropped reservation is released");
        b.reserve(&usdt, U256::from(10_000u64)).unwrap().commit();
        assert!(b.reserve(&usdt, U256::from(5001u64)).is_err());
        b.reserve(&usdt, U256::from(5000u64)).unwrap().commit();
        assert_eq!(b.spent(&usdt), U256::from(25_000u64));
    }

    #[test]
    fn an_upto_reservation_commits_what_settled_and_releases_the_rest() {
        let b = budget(Some("0.1"), Some("0.2"));
        let usdt = AssetId::x_layer_usdt0();
        b.reserve(&usdt, U256::from(100_000u64)).unwrap().commit_settled(U256::from(34_700u64));
        assert_eq!((b.spent(&usdt), b.reserved(&usdt)), (U256::from(34_700u64), U256::ZERO));
        assert_eq!(b.headroom(&usdt).unwrap(), Some(U256::from(165_300u64)));
        // Above the reservation: the whole reservation, never more.
        b.reserve(&usdt, U256::from(100_000u64)).unwrap().commit_settled(U256::from(100_001u64));
        assert_eq!(b.spent(&usdt), U256::from(134_700u64));
        b.reserve(&usdt, U256::from(1000u64)).unwrap().commit_settled(U256::ZERO);
        assert_eq!((b.spent(&usdt), b.reserved(&usdt)), (U256::from(134_700u64), U256::ZERO));
    }

    #[test]
    fn deposits_count_against_the_total_and_vouchers_spend_them() {
        let usdt = AssetId::x_layer_usdt0();
        let b = budget_of(Limits {
            per_request: Some(Amount::atomic(1000u64)),
            total: Some(Amount::atomic(5000u64)),
            max_deposit: Some(Amount::atomic(3000u64)),
            ..Limits::default()
        });
        assert!(matches!(b.reserve_deposit(&usdt, U256::from(3001u64)), Err(AutoPayError::DepositAboveMax { .. })));
        b.reserve_deposit(&usdt, U256::from(3000u64)).unwrap().commit();
        assert_eq!((b.escrowed(&usdt), b.headroom(&usdt).unwrap()), (U256::from(3000u64), Some(U256::from(2000u64))));
        // A voucher moves escrowed money to spent: what left the process is unchanged.
        assert!(matches!(b.reserve_voucher(&usdt, U256::from(1001u64)), Err(AutoPayError::OverCap { .. })));
        b.reserve_voucher(&usdt, U256::from(1000u64)).unwrap().commit();
        assert_eq!((b.spent(&usdt), b.escrowed(&usdt)), (U256::from(1000u64), U256::from(2000u64)));
        assert_eq!(b.headroom(&usdt).unwrap(), Some(U256::from(2000u64)));
        // A second channel's deposit gets only what is left of the total.
        assert!(matches!(b.reserve_deposit(&usdt, U256::from(2001u64)), Err(AutoPayError::TotalCapExceeded { .. })));
        drop(b.reserve_deposit(&usdt, U256::from(2000u64)).unwrap());
        assert_eq!(b.headroom(&usdt).unwrap(), Some(U256::from(2000u64)), "a deposit never sent is released");
        // Without a maximum deposit, sessions are not paid.
        let b = budget(None, None);
        assert!(matches!(b.reserve_deposit(&usdt, U256::from(1u64)), Err(AutoPayError::NoMaxDeposit { .. })));
    }

    #[test]
    fn unknown_assets_and_decimals() {
        let b = budget(None, None);
        let other = AssetId::new("eip155:196", "0x1111111111111111111111111111111111111111");
        assert_eq!(
            b.reserve(&other, U256::from(1u64)).unwrap_err(),
            AutoPayError::AssetNotAllowed { asset: other.clone() }
        );
        // A decimal cap of a token the registry does not know needs the builder's decimals.
        let limits = Limits { per_request: Some(Amount::decimal("1.5").unwrap()), ..Limits::default() };
        let registry = NetworkRegistry::x_layer();
        assert_eq!(
            Budget::new(&HashMap::from([(other.clone(), limits.clone())]), &registry).unwrap_err(),
            AutoPayError::UnknownDecimals { asset: other.clone() }
        );
        let limits = Limits { decimals: Some(2), ..limits };
        let b = Arc::new(Budget::new(&HashMap::from([(other.clone(), limits)]), &registry).unwrap());
        assert!(b.reserve(&other, U256::from(150u64)).is_ok());
        assert!(matches!(b.reserve(&other, U256::from(151u64)), Err(AutoPayError::OverCap { .. })));
        // Atomic caps need no decimals.
        let limits = Limits { per_request: Some(Amount::atomic(7u64)), ..Limits::default() };
        assert!(Budget::new(&HashMap::from([(other.clone(), limits)]), &registry).is_ok());
        assert!(Amount::decimal("0.0000001").unwrap().to_atomic(Some(6)).unwrap().is_err());
        assert!(Amount::decimal("-1").is_err() && "1e3".parse::<Amount>().is_err());
        assert_eq!(AssetId::new("eip155:196", " 0xABC "), AssetId::new("eip155:196", "0xabc"));
    }
}
