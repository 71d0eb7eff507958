//! The x402 `upto` scheme, seller side: the buyer authorizes a **maximum** (Permit2
//! `PermitWitnessTransferFrom` through the x402 upto proxy) and the seller settles what the
//! request actually used, at most that maximum.
//!
//! * [`UptoEvmScheme`] builds the requirements of an `upto` route: `amount` = the maximum in
//!   atomic units, `extra.assetTransferMethod = "permit2"` and `extra.facilitatorAddress` copied
//!   from the facilitator's `/supported` kind (a facilitator that announces none cannot serve
//!   `upto`: the route answers the misconfiguration 500).
//! * [`UptoCharge`] is the handler's report of what it used (`set_amount("$0.0347")`,
//!   `set_atomic`, `set_fraction`, `none`), injected into `#[x402(scheme = "upto", …)]`
//!   handlers and extracted by the axum/actix extractors (or `X402Payment::upto_charge`).
//! * At completion, [`X402HttpServer::settle`](super::X402HttpServer::settle) asks [`plan`] what
//!   to settle: a charge refused earlier (above the maximum, malformed) withholds the handler's
//!   response (500, nothing settled, the authorization released); `0` settles nothing and calls
//!   no facilitator (`PAYMENT-RESPONSE` with `amount: "0"`, `transaction: ""`); no report
//!   settles the maximum (what OKX's and the official SDKs do without an override); otherwise
//!   the facilitator's `/settle` gets the requirements with `amount` = the reported amount.
//!
//! Invariant (SECURITY.md): the settled amount never exceeds the authorized maximum. It is
//! checked when the handler reports, again right before the facilitator call (here and in the
//! resource server's binding check), and on the facilitator's answer ([`check_settled`]).

use super::scheme::{ASSET_TRANSFER_METHOD_EXTRA, ExactEvmScheme, PriceError, SchemeNetworkServer};
use super::types::{AssetAmount, PaymentRequirements, Price, SettleResponse, SupportedKind, parse_atomic};
use crate::chain::{Network, NetworkRegistry};
use crate::evm::permit2::ASSET_TRANSFER_METHOD_PERMIT2;
use alloy_primitives::U256;
use pay402_core::{Decimal, MoneySyntax, Rounding, parse_money};
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The scheme name of `upto` on the wire.
pub const UPTO_SCHEME: &str = pay402_core::names::UPTO;

/// The `extra` key naming the facilitator allowed to settle an `upto` authorization (the
/// Permit2 witness's `facilitator`), copied from the facilitator's `/supported` kind.
pub const FACILITATOR_ADDRESS_EXTRA: &str = "facilitatorAddress";

/// The `errorReason` of the settlement failure sent when a facilitator answers a successful
/// `upto` settlement with an amount other than the one asked for (a contradiction: the
/// handler's response is withheld and the answer logged at error level).
pub const SETTLED_AMOUNT_MISMATCH: &str = "settlement_amount_mismatch";

/// Why an [`UptoCharge`] report was refused. Every refusal but [`NotUpto`](Self::NotUpto) also
/// poisons the charge: the handler's response is then withheld and nothing is settled (a report
/// that went wrong never falls back to the maximum).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UptoChargeError {
    /// The payment is not an `upto` payment: its price is fixed.
    #[error("the payment's scheme is `{0}`, not `upto`: its price is fixed and cannot be reported")]
    NotUpto(String),
    /// The report is above the authorized maximum.
    #[error("reported {reported} atomic units, above the authorized maximum of {max}")]
    AboveMax {
        /// The reported amount (atomic units).
        reported: U256,
        /// The authorized maximum (atomic units).
        max: U256,
    },
    /// The money text is not an amount the asset can carry exactly.
    #[error("invalid amount `{text}`: {reason}")]
    Amount {
        /// The text reported.
        text: String,
        /// Why.
        reason: String,
    },
    /// The asset's decimals are unknown, so a money text cannot be converted: report atomic
    /// units with [`UptoCharge::set_atomic`].
    #[error("the decimals of asset {asset} on {network} are unknown: report atomic units with set_atomic")]
    UnknownDecimals {
        /// The asset.
        asset: String,
        /// The network.
        network: String,
    },
    /// A fraction with a zero denominator or above one.
    #[error("invalid fraction {numerator}/{denominator}: the denominator must be positive and not below the numerator")]
    Fraction {
        /// The numerator.
        numerator: u128,
        /// The denominator.
        denominator: u128,
    },
    /// The charge was refused earlier; it stays refused.
    #[error("the charge was refused earlier ({0}); the response will not be released")]
    Poisoned(Box<UptoChargeError>),
}

/// What the handler reported so far.
#[derive(Debug, Default)]
struct Reported {
    amount: Option<U256>,
    poisoned: Option<UptoChargeError>,
}

struct ChargeInner {
    scheme: String,
    max: U256,
    decimals: Option<u8>,
    asset: String,
    network: String,
    reported: Mutex<Reported>,
}

/// The usage report of one `upto` payment: what the handler used, at most the authorized
/// maximum. Cheap to clone (shared with the payment's completion).
///
/// Report once or several times (the last report counts); a refused report (above the maximum,
/// malformed) poisons the charge for good. Not reporting settles the maximum.
///
/// ```no_run
/// # use pay402_runtime::x402::UptoCharge;
/// # fn handler(charge: UptoCharge, words: u32) -> Result<(), pay402_runtime::x402::UptoChargeError> {
/// // $0.0001 per word, exact: "words=37" charges $0.0037.
/// charge.set_atomic(pay402_runtime::evm::U256::from(words) * pay402_runtime::evm::U256::from(100))?;
/// // or: charge.set_amount("$0.0037")?; charge.set_fraction(37, 100)?; charge.none()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct UptoCharge(Arc<ChargeInner>);

impl fmt::Debug for UptoCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reported = self.0.reported.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("UptoCharge")
            .field("scheme", &self.0.scheme)
            .field("max", &self.0.max)
            .field("reported", &reported.amount)
            .field("poisoned", &reported.poisoned)
            .finish()
    }
}

impl UptoCharge {
    /// The charge of a payment that matched `requirements` (its `amount` is the maximum).
    pub(super) fn for_requirements(requirements: &PaymentRequirements) -> Self {
        let decimals =
            NetworkRegistry::global().asset_info(&requirements.network, &requirements.asset).map(|i| i.decimals);
        Self(Arc::new(ChargeInner {
            scheme: requirements.scheme.clone(),
            // The seller's own requirements; an unreadable maximum allows nothing but zero.
            max: parse_atomic(&requirements.amount).unwrap_or(U256::ZERO),
            decimals,
            asset: requirements.asset.clone(),
            network: requirements.network.to_string(),
            reported: Mutex::new(Reported::default()),
        }))
    }

    /// Whether the payment is an `upto` payment (otherwise every report is refused with
    /// [`UptoChargeError::NotUpto`]).
    pub fn is_upto(&self) -> bool {
        self.0.scheme == UPTO_SCHEME
    }

    /// The authorized maximum in atomic units of the asset.
    pub fn max_atomic(&self) -> U256 {
        self.0.max
    }

    /// The authorized maximum in the asset's units (`0.1` for $0.10 of a 6-decimal token);
    /// `None` when the asset's decimals are unknown.
    pub fn max(&self) -> Option<Decimal> {
        let decimals = self.0.decimals?;
        let raw = Decimal::new(u128::try_from(self.0.max).ok()?, u32::from(decimals)).ok()?;
        // In normal form (no trailing zeros), as parsed amounts are.
        Decimal::parse(&raw.to_string()).ok()
    }

    /// The amount reported so far (atomic units), if any.
    pub fn reported(&self) -> Option<U256> {
        self.0.reported.lock().unwrap_or_else(PoisonError::into_inner).amount
    }

    /// Whether a report was refused (the response will be withheld, nothing settled).
    pub fn is_poisoned(&self) -> bool {
        self.0.reported.lock().unwrap_or_else(PoisonError::into_inner).poisoned.is_some()
    }

    /// Reports `amount` atomic units. Above the maximum → [`UptoChargeError::AboveMax`], and the
    /// charge is poisoned.
    pub fn set_atomic(&self, amount: U256) -> Result<U256, UptoChargeError> {
        self.report(
            |max| if amount > max { Err(UptoChargeError::AboveMax { reported: amount, max }) } else { Ok(amount) },
        )
    }

    /// Reports a money amount (`"$0.0347"`, `"0.0347"`), converted exactly with the asset's
    /// decimals: more fractional digits than the asset has, a negative or malformed amount, an
    /// asset of unknown decimals, or an amount above the maximum is refused and poisons the
    /// charge.
    pub fn set_amount(&self, money: &str) -> Result<U256, UptoChargeError> {
        let decimals = self.0.decimals;
        let (asset, network) = (&self.0.asset, &self.0.network);
        self.report(|max| {
            let invalid = |reason: String| UptoChargeError::Amount { text: money.to_owned(), reason };
            let value = parse_money(money, MoneySyntax::Lenient, true).map_err(|e| invalid(e.to_string()))?;
            let decimals = decimals
                .ok_or_else(|| UptoChargeError::UnknownDecimals { asset: asset.clone(), network: network.clone() })?;
            let amount = U256::from(value.to_atomic(decimals, Rounding::Exact).map_err(|e| invalid(e.to_string()))?);
            if amount > max { Err(UptoChargeError::AboveMax { reported: amount, max }) } else { Ok(amount) }
        })
    }

    /// Reports `numerator / denominator` of the maximum, rounded down, in exact integer
    /// arithmetic (`set_fraction(37, 100)` of 100 000 units is 37 000). A zero denominator or a
    /// fraction above one is refused and poisons the charge.
    pub fn set_fraction(&self, numerator: u128, denominator: u128) -> Result<U256, UptoChargeError> {
        self.report(|max| {
            if denominator == 0 || numerator > denominator {
                return Err(UptoChargeError::Fraction { numerator, denominator });
            }
            Ok(fraction_of(max, numerator, denominator))
        })
    }

    /// Reports that nothing was used: nothing is settled and no facilitator is called.
    pub fn none(&self) -> Result<U256, UptoChargeError> {
        self.set_atomic(U256::ZERO)
    }

    /// Checks and records one report.
    fn report(&self, amount: impl FnOnce(U256) -> Result<U256, UptoChargeError>) -> Result<U256, UptoChargeError> {
        if !self.is_upto() {
            return Err(UptoChargeError::NotUpto(self.0.scheme.clone()));
        }
        let mut reported = self.0.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(earlier) = &reported.poisoned {
            return Err(UptoChargeError::Poisoned(Box::new(earlier.clone())));
        }
        match amount(self.0.max) {
            Ok(amount) => {
                reported.amount = Some(amount);
                Ok(amount)
            }
            Err(e) => {
                tracing::error!(error = %e, max = %self.0.max, "x402 upto: the handler's charge is refused; its response will be withheld");
                reported.amount = None;
                reported.poisoned = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// `floor(max × numerator / denominator)` without overflow (`numerator ≤ denominator`, both
/// below 2¹²⁸): `(max / d) × n + ((max mod d) × n) / d`.
fn fraction_of(max: U256, numerator: u128, denominator: u128) -> U256 {
    let (n, d) = (U256::from(numerator), U256::from(denominator));
    (max / d) * n + (max % d) * n / d
}

/// What the completion of a payment settles.
#[derive(Debug)]
pub(super) enum Plan {
    /// Not an `upto` payment: the requirements as matched.
    Fixed,
    /// The charge was refused: withhold the response, settle nothing, release the payment.
    Refuse(UptoChargeError),
    /// Zero: settle nothing and call no facilitator.
    Zero(SettleResponse),
    /// Settle these requirements (`amount` = the reported amount, or the maximum).
    Settle(PaymentRequirements),
}

/// What to settle for a payment that matched `requirements`, whose buyer authorized
/// `authorized` (its `accepted.amount`), given its `charge`; `payer` goes in a zero settlement's
/// response.
pub(super) fn plan(
    requirements: &PaymentRequirements,
    authorized: &str,
    charge: &UptoCharge,
    payer: Option<&str>,
) -> Plan {
    if requirements.scheme != UPTO_SCHEME {
        return Plan::Fixed;
    }
    let reported = charge.0.reported.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = &reported.poisoned {
        return Plan::Refuse(e.clone());
    }
    // Not reported: the maximum (documented; what peers do without an override).
    let amount = reported.amount.unwrap_or(charge.0.max);
    // The invariant, again, right before the facilitator call: never above what the buyer
    // authorized (the payload's `accepted` copy, which bound to the seller's maximum).
    let authorized = parse_atomic(authorized).unwrap_or(U256::ZERO).min(charge.0.max);
    if amount > authorized {
        return Plan::Refuse(UptoChargeError::AboveMax { reported: amount, max: authorized });
    }
    if amount.is_zero() {
        let mut zero =
            SettleResponse::failure("", requirements.network.clone(), payer.map(str::to_owned), String::new());
        zero.success = true;
        zero.error_reason = None;
        zero.amount = Some("0".to_owned());
        return Plan::Zero(zero);
    }
    Plan::Settle(PaymentRequirements { amount: amount.to_string(), ..requirements.clone() })
}

/// Checks a successful settlement's answer against the `upto` amount asked for: a missing
/// `amount` is filled in with it; another amount is a contradiction — the answer becomes a
/// failure ([`SETTLED_AMOUNT_MISMATCH`]; the handler's response is withheld) and is logged at
/// error level with both amounts and the transaction. Other schemes are left as they are.
pub(super) fn check_settled(asked: &PaymentRequirements, mut response: SettleResponse) -> SettleResponse {
    if asked.scheme != UPTO_SCHEME || !response.success {
        return response;
    }
    match response.amount.as_deref() {
        None => response.amount = Some(asked.amount.clone()),
        Some(answered) if parse_atomic(answered).is_some_and(|a| Some(a) == parse_atomic(&asked.amount)) => {
            response.amount = Some(asked.amount.clone());
        }
        Some(answered) => {
            tracing::error!(
                asked = %asked.amount,
                answered,
                transaction = %response.transaction,
                "x402 upto: the facilitator settled another amount than asked; response withheld, reconcile this transaction"
            );
            response.success = false;
            response.status = None;
            response.error_reason = Some(SETTLED_AMOUNT_MISMATCH.to_owned());
        }
    }
    response
}

/// Fills in the settled `amount` of a reconciled `upto` settlement (the recorded settle-time
/// requirements carry it; status queries do not).
pub(super) fn with_settled_amount(requirements: &PaymentRequirements, mut response: SettleResponse) -> SettleResponse {
    if requirements.scheme == UPTO_SCHEME && response.success && response.amount.is_none() {
        response.amount = Some(requirements.amount.clone());
    }
    response
}

/// The `upto` EVM scheme, server side: prices like [`ExactEvmScheme`] (the route's `max` is the
/// price), then requires Permit2 and names the facilitator: `extra.assetTransferMethod =
/// "permit2"` and `extra.facilitatorAddress` from the facilitator's `/supported` kind. Building
/// requirements without one fails ([`PriceError::MissingFacilitatorAddress`]), so the route
/// answers the misconfiguration 500.
#[derive(Clone, Debug, Default)]
pub struct UptoEvmScheme {
    inner: ExactEvmScheme,
}

impl UptoEvmScheme {
    /// A scheme over the process-wide registry.
    pub fn new() -> Self {
        Self { inner: ExactEvmScheme::new() }
    }

    /// Wraps a configured [`ExactEvmScheme`] (its money parsers and policies apply to `max`).
    pub fn from_exact(inner: ExactEvmScheme) -> Self {
        Self { inner }
    }
}

impl SchemeNetworkServer for UptoEvmScheme {
    fn scheme(&self) -> &str {
        UPTO_SCHEME
    }

    fn parse_price(&self, price: &Price, network: &Network) -> Result<AssetAmount, PriceError> {
        self.inner.parse_price(price, network)
    }

    fn enhance_payment_requirements(
        &self,
        requirements: PaymentRequirements,
        supported_kind: Option<&SupportedKind>,
        extension_keys: &[String],
    ) -> Result<PaymentRequirements, PriceError> {
        let mut req = self.inner.enhance_payment_requirements(requirements, supported_kind, extension_keys)?;
        let facilitator = supported_kind
            .and_then(|k| k.extra.as_ref())
            .and_then(|extra| extra.get(FACILITATOR_ADDRESS_EXTRA))
            .and_then(Value::as_str)
            .filter(|a| pay402_core::EvmAddress::parse(a).is_ok())
            .ok_or_else(|| PriceError::MissingFacilitatorAddress { network: req.network.to_string() })?;
        req.extra.insert(FACILITATOR_ADDRESS_EXTRA.into(), Value::String(facilitator.to_owned()));
        req.extra.insert(ASSET_TRANSFER_METHOD_EXTRA.into(), Value::String(ASSET_TRANSFER_METHOD_PERMIT2.into()));
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(scheme: &str, max: &str) -> UptoCharge {
        UptoCharge::for_requirements(&PaymentRequirements {
            scheme: scheme.into(),
            network: "eip155:196".into(),
            asset: "0x779Ded0c9e1022225f8E0630b35a9b54bE713736".into(),
            amount: max.into(),
            pay_to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            max_timeout_seconds: 60,
            extra: Default::default(),
        })
    }

    #[test]
    fn reports_convert_exactly() {
        let c = charge("upto", "100000");
        assert_eq!(c.max().unwrap().to_string(), "0.1");
        assert_eq!(c.set_amount("$0.0347").unwrap(), U256::from(34_700));
        assert_eq!(c.set_fraction(37, 100).unwrap(), U256::from(37_000));
        assert_eq!(c.set_fraction(1, 3).unwrap(), U256::from(33_333));
        assert_eq!(c.none().unwrap(), U256::ZERO);
        assert_eq!(c.set_atomic(U256::from(100_000)).unwrap(), U256::from(100_000));
        assert_eq!(c.reported(), Some(U256::from(100_000)));
        assert!(!c.is_poisoned());
    }

    #[test]
    fn fractions_of_huge_maximums_do_not_overflow() {
        assert_eq!(fraction_of(U256::MAX, u128::MAX, u128::MAX), U256::MAX);
        assert_eq!(fraction_of(U256::MAX, 1, 2), U256::MAX / U256::from(2));
        assert_eq!(fraction_of(U256::from(10), 2, 3), U256::from(6));
    }

    #[test]
    fn refusals_poison() {
        for report in [
            (|c: &UptoCharge| c.set_amount("$0.11")) as fn(&UptoCharge) -> Result<U256, UptoChargeError>,
            |c| c.set_amount("$0.0000001"),
            |c| c.set_amount("ten"),
            |c| c.set_amount("-1"),
            |c| c.set_fraction(1, 0),
            |c| c.set_fraction(3, 2),
            |c| c.set_atomic(U256::from(100_001)),
        ] {
            let c = charge("upto", "100000");
            c.set_amount("$0.01").unwrap();
            assert!(report(&c).is_err());
            assert!(c.is_poisoned());
            assert_eq!(c.reported(), None);
            assert!(matches!(c.none(), Err(UptoChargeError::Poisoned(_))));
        }
    }

    #[test]
    fn fixed_schemes_refuse_reports_without_poisoning() {
        let c = charge("exact", "1000");
        assert_eq!(c.set_amount("$0.001"), Err(UptoChargeError::NotUpto("exact".into())));
        assert!(!c.is_poisoned() && !c.is_upto());
    }

    #[test]
    fn settled_amounts_are_checked() {
        let asked = PaymentRequirements { amount: "34700".into(), ..charge_req() };
        let ok =
            SettleResponse { amount: None, ..SettleResponse::failure("", "eip155:196".into(), None, "0xt".into()) };
        let ok = SettleResponse { success: true, error_reason: None, ..ok };
        assert_eq!(check_settled(&asked, ok.clone()).amount.as_deref(), Some("34700"));
        let other = check_settled(&asked, SettleResponse { amount: Some("100000".into()), ..ok.clone() });
        assert!(!other.success);
        assert_eq!(other.error_reason.as_deref(), Some(SETTLED_AMOUNT_MISMATCH));
        let exact = PaymentRequirements { scheme: "exact".into(), ..asked };
        assert_eq!(check_settled(&exact, ok).amount, None);
    }

    fn charge_req() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "upto".into(),
            network: "eip155:196".into(),
            asset: "0x779Ded0c9e1022225f8E0630b35a9b54bE713736".into(),
            amount: "100000".into(),
            pay_to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            max_timeout_seconds: 60,
            extra: Default::default(),
        }
    }
}
