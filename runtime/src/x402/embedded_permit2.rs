//! The Permit2 payments of the [`EmbeddedFacilitator`]: `upto` and `exact` with
//! `extra.assetTransferMethod = "permit2"`, over the in-memory ledger (a child module of
//! `embedded.rs`, which dispatches here).
//!
//! The ledger plays the token's and Permit2's parts: the owner's ERC-20 allowance to Permit2
//! (the faucet grants an unlimited one, like a wallet that approved once; otherwise
//! [`EmbeddedFacilitator::approve_permit2`]), Permit2's unordered nonces (per owner, each usable
//! once) and the balances. The checks follow the official Python facilitator's order; the reason
//! strings are its ([`permit2_reasons`](super::permit2_reasons)).

use super::{EmbeddedFacilitator, Ledger};
use crate::chain::Network;
use crate::evm::permit2::{ASSET_TRANSFER_METHOD_PERMIT2, Permit2Authorization, Permit2Kind};
use crate::evm::{self, Address, B256, U256, transaction_hash};
use crate::x402::exact::{Rejection, VALID_BEFORE_BUFFER_SECONDS, reasons};
use crate::x402::types::{
    JsonObject, PaymentPayload, PaymentRequirements, SettleResponse, SupportedKind, VerifyResponse, X402_VERSION,
    settle_status,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The reason strings of refused Permit2 payments (`upto` and Permit2 `exact`), as the official
/// x402 SDKs spell them.
pub mod permit2_reasons {
    /// The owner has not approved the Permit2 contract on the token for the amount (a seller
    /// answers HTTP 412): the buyer must send `approve(PERMIT2, amount)` once
    /// ([`approve_calldata`](crate::evm::permit2::approve_calldata)).
    pub const ALLOWANCE_REQUIRED: &str = "permit2_allowance_required";
    /// The signature does not recover to `from`.
    pub const INVALID_SIGNATURE: &str = "invalid_permit2_signature";
    /// The deadline has passed (or is within the settlement buffer).
    pub const DEADLINE_EXPIRED: &str = "permit2_deadline_expired";
    /// `witness.validAfter` is in the future.
    pub const NOT_YET_VALID: &str = "permit2_not_yet_valid";
    /// `permitted.amount` differs from the requirements' amount.
    pub const AMOUNT_MISMATCH: &str = "permit2_amount_mismatch";
    /// `permitted.token` is not the requirements' asset.
    pub const TOKEN_MISMATCH: &str = "permit2_token_mismatch";
    /// The spender is not the x402 proxy of the scheme.
    pub const INVALID_SPENDER: &str = "invalid_permit2_spender";
    /// `witness.to` is not the requirements' `payTo`.
    pub const RECIPIENT_MISMATCH: &str = "invalid_permit2_recipient_mismatch";
    /// The owner's balance does not cover the amount (`upto`).
    pub const INSUFFICIENT_BALANCE: &str = "permit2_insufficient_balance";
    /// The Permit2 nonce was already used.
    pub const INVALID_NONCE: &str = "permit2_invalid_nonce";
    /// `witness.facilitator` is not this facilitator (`upto`).
    pub const UPTO_FACILITATOR_MISMATCH: &str = "upto_facilitator_mismatch";
    /// The settled amount is above `permitted.amount` (`upto`).
    pub const UPTO_SETTLEMENT_EXCEEDS_AMOUNT: &str = "invalid_upto_evm_payload_settlement_exceeds_amount";
    /// The payment or the requirements are not `upto` (`upto`).
    pub const UPTO_INVALID_SCHEME: &str = "invalid_upto_evm_scheme";
    /// The payment's network is not the requirements' (`upto`).
    pub const UPTO_NETWORK_MISMATCH: &str = "invalid_upto_evm_network_mismatch";
    /// This facilitator does not serve the network (`upto`).
    pub const UPTO_FAILED_TO_GET_NETWORK_CONFIG: &str = "invalid_upto_evm_failed_to_get_network_config";
}

use permit2_reasons as r;

/// The address the embedded facilitator settles `upto` payments as (announced in `/supported`
/// as `extra.facilitatorAddress`, bound by the buyer's signature in `witness.facilitator`):
/// the last 20 bytes of `keccak256("pay402 embedded facilitator")`. Nobody holds its key; the
/// embedded facilitator moves ledger balances, never sends a transaction.
pub const EMBEDDED_FACILITATOR_ADDRESS: Address =
    evm::Address::new(alloy_primitives::hex!("90542317178e8C9F8233FB091CD66c6a20394fD7"));

/// The Permit2 part of the embedded ledger.
#[derive(Debug, Default)]
pub(super) struct Permit2State {
    /// (token, owner) → the ERC-20 allowance granted to Permit2 (absent: unlimited when the
    /// faucet is on, else zero).
    allowances: HashMap<(Address, Address), U256>,
    /// (owner, nonce) used: Permit2 nonces are per owner, across tokens.
    used_nonces: HashSet<(Address, U256)>,
}

/// Which Permit2 payment `requirements` ask for, if any.
pub(super) fn kind_of(requirements: &PaymentRequirements) -> Option<Permit2Kind> {
    match requirements.scheme.as_str() {
        "upto" => Some(Permit2Kind::Upto),
        "exact"
            if requirements.extra.get("assetTransferMethod").and_then(Value::as_str)
                == Some(ASSET_TRANSFER_METHOD_PERMIT2) =>
        {
            Some(Permit2Kind::Exact)
        }
        _ => None,
    }
}

/// A Permit2 payment that passed the checks.
struct Checked {
    auth: Permit2Authorization,
    chain_id: u64,
    payer: String,
    /// What moves at settlement (the requirements' amount).
    amount: U256,
}

impl Ledger {
    fn permit2_allowance(&self, token: Address, owner: Address) -> U256 {
        match self.permit2.allowances.get(&(token, owner)) {
            Some(allowance) => *allowance,
            None if self.faucet > U256::ZERO => U256::MAX,
            None => U256::ZERO,
        }
    }
}

impl EmbeddedFacilitator {
    /// Uses `address` as this facilitator's `upto` settlement address (default
    /// [`EMBEDDED_FACILITATOR_ADDRESS`]): announced in `/supported`, and the only
    /// `witness.facilitator` accepted.
    pub fn with_facilitator_address(mut self, address: Address) -> Self {
        self.facilitator = address;
        self
    }

    /// The address this facilitator settles `upto` payments as.
    pub fn facilitator_address(&self) -> Address {
        self.facilitator
    }

    /// The ledger's form of the buyer's one-time `approve(PERMIT2, amount)` on token `asset`:
    /// Permit2 may move up to `amount` from `owner` (`U256::MAX`: unlimited, never decreased).
    /// Without it (and without a faucet, which approves unlimited for every account) Permit2
    /// payments are refused with `permit2_allowance_required`.
    pub fn approve_permit2(&self, asset: &str, owner: &str, amount: U256) -> Result<(), evm::EvmError> {
        let key = (evm::parse_address(asset)?, evm::parse_address(owner)?);
        self.lock().permit2.allowances.insert(key, amount);
        Ok(())
    }

    /// What Permit2 may still move from `owner` in token `asset` (zero for unparseable addresses).
    pub fn permit2_allowance(&self, asset: &str, owner: &str) -> U256 {
        let (Ok(asset), Ok(owner)) = (evm::parse_address(asset), evm::parse_address(owner)) else {
            return U256::ZERO;
        };
        self.lock().permit2_allowance(asset, owner)
    }

    /// Whether `owner` already used the Permit2 nonce `nonce`.
    pub fn is_permit2_nonce_used(&self, owner: &str, nonce: U256) -> bool {
        let Ok(owner) = evm::parse_address(owner) else { return false };
        self.lock().permit2.used_nonces.contains(&(owner, nonce))
    }

    /// The `/supported` kind of `upto` on `network`, with `extra.facilitatorAddress`.
    pub(super) fn upto_kind(&self, network: &Network) -> SupportedKind {
        let mut extra = JsonObject::new();
        extra.insert("facilitatorAddress".into(), Value::String(evm::checksum(&self.facilitator)));
        SupportedKind {
            x402_version: X402_VERSION,
            scheme: "upto".into(),
            network: network.clone(),
            extra: Some(extra),
        }
    }

    /// Verifies a Permit2 payment: `permitted.amount` must equal the requirements' amount.
    pub(super) fn verify_permit2(
        &self,
        ledger: &Ledger,
        kind: Permit2Kind,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> VerifyResponse {
        match self.check_permit2(ledger, kind, payload, requirements, false) {
            Ok(c) => VerifyResponse::valid(c.payer),
            Err(rejection) => rejection.into_verify(),
        }
    }

    /// Re-verifies and settles a Permit2 payment. `upto`: the requirements' amount is what the
    /// seller settles, checked against `permitted.amount`; zero succeeds with no transfer and an
    /// empty transaction (the nonce is consumed all the same: the authorization is spent).
    pub(super) fn settle_permit2(
        &self,
        ledger: &mut Ledger,
        kind: Permit2Kind,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> SettleResponse {
        let network = requirements.network.clone();
        let c = match self.check_permit2(ledger, kind, payload, requirements, true) {
            Ok(c) => c,
            Err(rejection) => return rejection.into_settle(network),
        };
        let (token, from, to, nonce) = (c.auth.token, c.auth.from, c.auth.to, c.auth.nonce);
        let transaction = if c.amount.is_zero() {
            String::new()
        } else {
            if ledger.transfer(token, from, to, c.amount).is_none() {
                let payer = Some(c.payer);
                return SettleResponse::failure(reasons::TRANSACTION_FAILED, network, payer, String::new());
            }
            let allowance = ledger.permit2_allowance(token, from);
            if allowance != U256::MAX {
                ledger.permit2.allowances.insert((token, from), allowance.saturating_sub(c.amount));
            }
            transaction_hash(c.chain_id, token, from, B256::from(nonce))
        };
        ledger.permit2.used_nonces.insert((from, nonce));
        let response = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            status: Some(settle_status::SUCCESS.to_owned()),
            payer: Some(c.payer),
            transaction,
            network,
            amount: (kind == Permit2Kind::Upto).then(|| c.amount.to_string()),
        };
        ledger.settlements.push(response.clone());
        tracing::debug!(amount = %c.amount, ?kind, "embedded facilitator settled a Permit2 payment");
        response
    }

    /// The checklist, in the Python facilitator's order: scheme, network, payload, spender,
    /// recipient, facilitator (`upto`), deadline, validAfter, amount, token, signature; then the
    /// ledger: allowance, balance, nonce.
    fn check_permit2(
        &self,
        ledger: &Ledger,
        kind: Permit2Kind,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
        settling: bool,
    ) -> Result<Checked, Rejection> {
        let upto = kind == Permit2Kind::Upto;
        let refuse = |reason: &'static str, payer: Option<&str>| Rejection {
            reason,
            payer: payer.map(str::to_owned),
            message: None,
        };
        if payload.accepted.scheme != requirements.scheme {
            return Err(refuse(if upto { r::UPTO_INVALID_SCHEME } else { reasons::UNSUPPORTED_SCHEME }, None));
        }
        if payload.accepted.network != requirements.network {
            return Err(refuse(if upto { r::UPTO_NETWORK_MISMATCH } else { reasons::NETWORK_MISMATCH }, None));
        }
        let chain_id = match evm::chain_id_of(requirements.network.as_str()) {
            Ok(id) if self.networks.contains(&requirements.network) => id,
            _ => {
                let reason =
                    if upto { r::UPTO_FAILED_TO_GET_NETWORK_CONFIG } else { reasons::FAILED_TO_GET_NETWORK_CONFIG };
                return Err(refuse(reason, None));
            }
        };
        let (auth, signature) = Permit2Authorization::from_payload(&payload.payload).map_err(|e| {
            tracing::debug!(error = %e, "embedded facilitator: malformed Permit2 payload");
            refuse(reasons::INVALID_PAYLOAD, None)
        })?;
        let payer = evm::checksum(&auth.from);
        let reject = |reason: &'static str| refuse(reason, Some(&payer));
        if auth.kind() != kind {
            return Err(reject(reasons::INVALID_PAYLOAD));
        }
        if auth.spender != kind.proxy() {
            return Err(reject(r::INVALID_SPENDER));
        }
        if evm::parse_address(&requirements.pay_to).ok() != Some(auth.to) {
            return Err(reject(r::RECIPIENT_MISMATCH));
        }
        if upto && auth.facilitator != Some(self.facilitator) {
            return Err(reject(r::UPTO_FACILITATOR_MISMATCH));
        }
        let now = (self.clock)();
        if auth.deadline < U256::from(now).saturating_add(U256::from(VALID_BEFORE_BUFFER_SECONDS)) {
            return Err(reject(r::DEADLINE_EXPIRED));
        }
        if auth.valid_after > U256::from(now).saturating_add(U256::from(self.clock_skew.as_secs())) {
            return Err(reject(r::NOT_YET_VALID));
        }
        let Ok(required) = evm::parse_uint256(&requirements.amount) else {
            return Err(reject(reasons::INVALID_PAYLOAD));
        };
        // Verify (and settle `exact`): the signed amount is the price or the maximum asked.
        // Settle `upto`: the requirements carry the amount to settle, at most the signed maximum.
        if upto && settling {
            if required > auth.amount {
                return Err(reject(r::UPTO_SETTLEMENT_EXCEEDS_AMOUNT));
            }
        } else if auth.amount != required {
            return Err(reject(r::AMOUNT_MISMATCH));
        }
        if evm::parse_address(&requirements.asset).ok() != Some(auth.token) {
            return Err(reject(r::TOKEN_MISMATCH));
        }
        if !auth.verify_signature(&signature, chain_id) {
            return Err(reject(r::INVALID_SIGNATURE));
        }
        let key = (auth.token, auth.from);
        if ledger.permit2_allowance(auth.token, auth.from) < required {
            return Err(reject(r::ALLOWANCE_REQUIRED));
        }
        if ledger.available(&key) < required {
            return Err(reject(if upto { r::INSUFFICIENT_BALANCE } else { reasons::INSUFFICIENT_BALANCE }));
        }
        if ledger.permit2.used_nonces.contains(&(auth.from, auth.nonce)) {
            return Err(reject(r::INVALID_NONCE));
        }
        Ok(Checked { auth, chain_id, payer, amount: required })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::X_LAYER_USDT0;
    use crate::evm::PrivateKeySigner;
    use crate::evm::permit2::{EXACT_PERMIT2_PROXY, UPTO_PERMIT2_PROXY};
    use crate::x402::{ExactEvmClientScheme, FacilitatorClient, UptoEvmClientScheme};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";

    fn buyer() -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&[0x51; 32].into()).unwrap()
    }

    fn requirements(scheme: &str, amount: &str) -> PaymentRequirements {
        let mut extra = json!({"name": "USD\u{20ae}0", "version": "1", "assetTransferMethod": "permit2"});
        if scheme == "upto" {
            extra["facilitatorAddress"] = json!(evm::checksum(&EMBEDDED_FACILITATOR_ADDRESS));
        }
        PaymentRequirements {
            scheme: scheme.into(),
            network: "eip155:196".into(),
            asset: X_LAYER_USDT0.into(),
            amount: amount.into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: extra.as_object().cloned().unwrap(),
        }
    }

    /// A payment signed by the buyer at `NOW` with Permit2 nonce `nonce`.
    fn payment(r: &PaymentRequirements, nonce: u8) -> PaymentPayload {
        let source = move || B256::repeat_byte(nonce);
        let payload = if r.scheme == "upto" {
            UptoEvmClientScheme::new(buyer()).with_clock(|| NOW).with_nonce_source(source).sign_payload(r).unwrap()
        } else {
            let scheme = ExactEvmClientScheme::new(buyer()).with_clock(|| NOW).with_nonce_source(source);
            let sign = crate::x402::SchemeNetworkClient::create_payment(&scheme, r, None);
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(sign).unwrap()
        };
        PaymentPayload { x402_version: 2, payload, accepted: r.clone(), resource: None, extensions: None }
    }

    fn facilitator() -> EmbeddedFacilitator {
        EmbeddedFacilitator::new().with_clock(|| NOW).with_faucet(U256::from(1_000_000u64))
    }

    fn payer() -> String {
        evm::checksum(&buyer().address())
    }

    #[test]
    fn upto_settles_the_reported_amount_once() {
        let f = facilitator();
        let max = requirements("upto", "100000");
        let p = payment(&max, 1);
        assert_eq!(f.verify_now(&p, &max), VerifyResponse::valid(payer()));
        // The seller settles what was used: 34 700 of the 100 000 authorised.
        let used = requirements("upto", "34700");
        let settled = f.settle_now(&p, &used);
        assert!(settled.success, "{settled:?}");
        assert_eq!(settled.amount.as_deref(), Some("34700"));
        assert_eq!(settled.transaction.len(), 66);
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_034_700u64));
        assert_eq!(f.balance(X_LAYER_USDT0, &payer()), U256::from(965_300u64));
        assert!(f.is_permit2_nonce_used(&payer(), U256::from_be_bytes(B256::repeat_byte(1).0)));
        // Replayed: refused, nothing moves.
        let again = f.settle_now(&p, &used);
        assert_eq!(again.error_reason.as_deref(), Some(r::INVALID_NONCE));
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_034_700u64));
        assert_eq!(f.verify_now(&p, &max).invalid_reason.as_deref(), Some(r::INVALID_NONCE));
    }

    #[test]
    fn upto_zero_moves_nothing_and_above_the_maximum_is_refused() {
        let f = facilitator();
        let max = requirements("upto", "100000");
        let p = payment(&max, 2);
        let over = f.settle_now(&p, &requirements("upto", "100001"));
        assert_eq!(over.error_reason.as_deref(), Some(r::UPTO_SETTLEMENT_EXCEEDS_AMOUNT));
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000_000u64));
        let zero = f.settle_now(&p, &requirements("upto", "0"));
        assert!(zero.success, "{zero:?}");
        assert_eq!((zero.transaction.as_str(), zero.amount.as_deref()), ("", Some("0")));
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000_000u64));
        assert_eq!(f.balance(X_LAYER_USDT0, &payer()), U256::from(1_000_000u64));
        // The authorization is spent: it cannot be settled again for more.
        let later = f.settle_now(&p, &requirements("upto", "5"));
        assert_eq!(later.error_reason.as_deref(), Some(r::INVALID_NONCE));
        // The full maximum settles too.
        let p = payment(&max, 3);
        let full = f.settle_now(&p, &max);
        assert_eq!(full.amount.as_deref(), Some("100000"));
    }

    #[test]
    fn exact_over_permit2_verifies_and_settles_the_price() {
        let f = facilitator();
        let r = requirements("exact", "1000");
        let p = payment(&r, 4);
        assert_eq!(p.payload["permit2Authorization"]["spender"], evm::checksum(&EXACT_PERMIT2_PROXY));
        assert_eq!(f.verify_now(&p, &r), VerifyResponse::valid(payer()));
        let settled = f.settle_now(&p, &r);
        assert!(settled.success && settled.amount.is_none(), "{settled:?}");
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_001_000u64));
        // An exact settle must be for the signed price.
        let p = payment(&r, 5);
        let less = f.settle_now(&p, &requirements("exact", "999"));
        assert_eq!(less.error_reason.as_deref(), Some(r::AMOUNT_MISMATCH));
        assert_eq!(f.settlement_count(), 1);
    }

    #[test]
    fn allowance_is_required_without_the_faucet() {
        let f = EmbeddedFacilitator::new().with_clock(|| NOW);
        f.fund(X_LAYER_USDT0, &payer(), U256::from(200_000u64)).unwrap();
        let max = requirements("upto", "100000");
        let p = payment(&max, 6);
        assert_eq!(f.permit2_allowance(X_LAYER_USDT0, &payer()), U256::ZERO);
        assert_eq!(f.verify_now(&p, &max).invalid_reason.as_deref(), Some(r::ALLOWANCE_REQUIRED));
        f.approve_permit2(X_LAYER_USDT0, &payer(), U256::from(99_999u64)).unwrap();
        assert_eq!(f.verify_now(&p, &max).invalid_reason.as_deref(), Some(r::ALLOWANCE_REQUIRED));
        f.approve_permit2(X_LAYER_USDT0, &payer(), U256::from(150_000u64)).unwrap();
        assert!(f.verify_now(&p, &max).is_valid);
        assert!(f.settle_now(&p, &requirements("upto", "60000")).success);
        // The allowance is used up as Permit2 moves funds.
        assert_eq!(f.permit2_allowance(X_LAYER_USDT0, &payer()), U256::from(90_000u64));
        let p = payment(&max, 7);
        assert_eq!(f.verify_now(&p, &max).invalid_reason.as_deref(), Some(r::ALLOWANCE_REQUIRED));
        // The balance is checked too.
        f.approve_permit2(X_LAYER_USDT0, &payer(), U256::MAX).unwrap();
        assert_eq!(
            f.verify_now(&payment(&requirements("upto", "170000"), 8), &requirements("upto", "170000"))
                .invalid_reason
                .as_deref(),
            Some(r::INSUFFICIENT_BALANCE)
        );
    }

    #[test]
    fn refusals_in_order() {
        let f = facilitator();
        type Mutation = Box<dyn Fn(&mut PaymentPayload, &mut PaymentRequirements)>;
        let set = |p: &mut PaymentPayload, path: &[&str], v: Value| {
            let mut node = &mut p.payload["permit2Authorization"];
            for key in path {
                node = &mut node[*key];
            }
            *node = v;
        };
        let cases: Vec<(&str, Mutation)> = vec![
            (r::UPTO_INVALID_SCHEME, Box::new(|p, _| p.accepted.scheme = "exact".into())),
            (r::UPTO_NETWORK_MISMATCH, Box::new(|p, _| p.accepted.network = "eip155:8453".into())),
            (
                r::UPTO_FAILED_TO_GET_NETWORK_CONFIG,
                Box::new(|p, r| {
                    p.accepted.network = "eip155:8453".into();
                    r.network = "eip155:8453".into();
                }),
            ),
            (reasons::INVALID_PAYLOAD, Box::new(|p, _| drop(p.payload.remove("signature")))),
            (reasons::INVALID_PAYLOAD, Box::new(move |p, _| set(p, &["witness", "facilitator"], Value::Null))),
            (
                r::INVALID_SPENDER,
                Box::new(move |p, _| set(p, &["spender"], json!(evm::checksum(&EXACT_PERMIT2_PROXY)))),
            ),
            (r::RECIPIENT_MISMATCH, Box::new(|_, r| r.pay_to = "0x2222222222222222222222222222222222222222".into())),
            (r::UPTO_FACILITATOR_MISMATCH, Box::new(move |p, _| set(p, &["witness", "facilitator"], json!(PAY_TO)))),
            (r::DEADLINE_EXPIRED, Box::new(move |p, _| set(p, &["deadline"], json!((NOW + 5).to_string())))),
            (r::NOT_YET_VALID, Box::new(move |p, _| set(p, &["witness", "validAfter"], json!((NOW + 1).to_string())))),
            (r::AMOUNT_MISMATCH, Box::new(|_, r| r.amount = "99999".into())),
            (r::TOKEN_MISMATCH, Box::new(|_, r| r.asset = PAY_TO.into())),
            (r::INVALID_SIGNATURE, Box::new(move |p, _| set(p, &["nonce"], json!("12")))),
            (r::INVALID_SIGNATURE, Box::new(|p, _| drop(p.payload.insert("signature".into(), json!("0x1234"))))),
        ];
        for (expected, mutate) in cases {
            let mut r = requirements("upto", "100000");
            let mut p = payment(&r, 9);
            mutate(&mut p, &mut r);
            let v = f.verify_now(&p, &r);
            assert_eq!(v.invalid_reason.as_deref(), Some(expected), "{v:?}");
            if expected == r::AMOUNT_MISMATCH {
                // At settlement an upto amount below the maximum is the normal case.
                continue;
            }
            let s = f.settle_now(&p, &r);
            assert_eq!(s.error_reason.as_deref(), Some(expected), "{s:?}");
        }
        assert_eq!(f.settlement_count(), 0);
        assert_eq!(f.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000_000u64));
        // Another facilitator address is a mismatch for payments bound to the default one.
        let other = facilitator().with_facilitator_address(Address::repeat_byte(0x42));
        let r = requirements("upto", "100000");
        let v = other.verify_now(&payment(&r, 10), &r);
        assert_eq!(v.invalid_reason.as_deref(), Some(r::UPTO_FACILITATOR_MISMATCH));
        // An exact payment's spender must be the exact proxy.
        let r = requirements("exact", "1000");
        let mut p = payment(&r, 11);
        set(&mut p, &["spender"], json!(evm::checksum(&UPTO_PERMIT2_PROXY)));
        assert_eq!(f.verify_now(&p, &r).invalid_reason.as_deref(), Some(r::INVALID_SPENDER));
    }

    #[tokio::test]
    async fn supported_announces_upto_with_the_facilitator_address() {
        let f = facilitator();
        let kinds = f.supported().await.unwrap().kinds;
        let upto = kinds.iter().find(|k| k.scheme == "upto").expect("an upto kind");
        let address = upto.extra.as_ref().and_then(|e| e.get("facilitatorAddress")).and_then(Value::as_str);
        assert_eq!(address, Some(evm::checksum(&f.facilitator_address()).as_str()));
        assert_eq!(f.facilitator_address(), EMBEDDED_FACILITATOR_ADDRESS);
        let derived = &alloy_primitives::keccak256("pay402 embedded facilitator")[12..];
        assert_eq!(EMBEDDED_FACILITATOR_ADDRESS.as_slice(), derived);
    }
}
