//! The `exact` EVM scheme's verify checklist (EIP-3009, wire facts §7), written once: the pure
//! steps every facilitator runs before its own ledger or chain steps.
//!
//! [`check_exact`] holds steps 1–10 plus the asset binding, in order, the first failure winning:
//!
//! | step | check | reason |
//! |---|---|---|
//! | 1 | `accepted.scheme` and the requirements' scheme are the checked scheme (`exact`, or `aggr_deferred`, whose authorization is the same EIP-3009 transfer signed by a session key) | [`reasons::UNSUPPORTED_SCHEME`] |
//! | 2 | `accepted.network` is the requirements' network | [`reasons::NETWORK_MISMATCH`] |
//! | 3 | the network is `eip155:<id>` and the facilitator serves it (and, on chain, the asset) | [`reasons::FAILED_TO_GET_NETWORK_CONFIG`] or the facilitator's own reason |
//! | 4 | `extra.name` / `extra.version` (the EIP-712 domain) are present | [`reasons::MISSING_EIP712_DOMAIN`] |
//! | — | the authorization's six fields are strings | [`reasons::INVALID_PAYLOAD`] |
//! | 5 | `authorization.to` is `payTo` | [`reasons::RECIPIENT_MISMATCH`] |
//! | 6 | `authorization.value` is exactly `amount` | [`reasons::VALUE_MISMATCH`] |
//! | 7 | `validBefore` ≥ now + [`VALID_BEFORE_BUFFER_SECONDS`] | [`reasons::VALID_BEFORE`] |
//! | 8 | `validAfter` ≤ now + the clock-skew allowance | [`reasons::VALID_AFTER`] |
//! | 9 | the signature is present, non-empty `0x` hex | [`reasons::INVALID_SIGNATURE`] |
//! | 10 | the typed data builds (`from`, `to`, `nonce`, asset parse) and the signature is `from`'s (ECDSA; contract wallets: the caller's ERC-1271 call) | [`reasons::FAILED_TO_VERIFY_SIGNATURE`], [`reasons::INVALID_SIGNATURE`] |
//! | 12 | `accepted.asset` is the requirements' asset | [`reasons::ASSET_MISMATCH`] |
//!
//! All arithmetic on the window is overflow-safe (saturating `U256`). The embedded facilitator
//! then adds its ledger steps (nonce unused, balance), the on-chain one its chain steps
//! (`authorizationState`, `balanceOf`, the `eth_call` simulation).

use super::types::{PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse};
use crate::chain::Network;
use crate::evm::{self, Address, B256, TransferWithAuthorization, U256};
use alloy_primitives::Bytes;
use alloy_sol_types::Eip712Domain;
use serde_json::Value;
use std::time::Duration;

/// The `invalidReason` / `errorReason` strings shared by pay402's `exact` facilitators (the
/// Python reference's constants).
pub mod reasons {
    /// `accepted.scheme` (or the requirements' scheme) is not the facilitator's scheme.
    pub const UNSUPPORTED_SCHEME: &str = "unsupported_scheme";
    /// `accepted.network` differs from the requirements' network.
    pub const NETWORK_MISMATCH: &str = "network_mismatch";
    /// The network is not `eip155:<id>` or not served by this facilitator.
    pub const FAILED_TO_GET_NETWORK_CONFIG: &str = "invalid_exact_evm_failed_to_get_network_config";
    /// `extra.name` / `extra.version` missing.
    pub const MISSING_EIP712_DOMAIN: &str = "missing_eip712_domain";
    /// The payload is not an EIP-3009 `{signature, authorization}` object of strings.
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    /// `authorization.to` is not `payTo`.
    pub const RECIPIENT_MISMATCH: &str = "invalid_exact_evm_payload_recipient_mismatch";
    /// `authorization.value` is not exactly `amount`.
    pub const VALUE_MISMATCH: &str = "invalid_exact_evm_payload_authorization_value_mismatch";
    /// `validBefore` is less than 6 s away.
    pub const VALID_BEFORE: &str = "invalid_exact_evm_payload_authorization_valid_before";
    /// `validAfter` is in the future (beyond the clock-skew allowance).
    pub const VALID_AFTER: &str = "invalid_exact_evm_payload_authorization_valid_after";
    /// The signature is missing, malformed, or not by `from`.
    pub const INVALID_SIGNATURE: &str = "invalid_exact_evm_payload_signature";
    /// The typed data could not be built (unparseable `from`, `to`, nonce or asset).
    pub const FAILED_TO_VERIFY_SIGNATURE: &str = "invalid_exact_evm_failed_to_verify_signature";
    /// The nonce was already used by this authorizer on this token.
    pub const NONCE_ALREADY_USED: &str = "invalid_exact_evm_nonce_already_used";
    /// `accepted.asset` differs from the requirements' asset.
    pub const ASSET_MISMATCH: &str = "invalid_exact_evm_asset_mismatch";
    /// The payer's balance is below the value.
    pub const INSUFFICIENT_BALANCE: &str = "invalid_exact_evm_insufficient_balance";
    /// The transfer failed (a ledger credit would overflow, or the transaction reverted).
    pub const TRANSACTION_FAILED: &str = "transaction_failed";
    /// `aggr_deferred` (pay402's embedded facilitator): `accepted.extra.sessionCert` is missing,
    /// not a valid pay402 development certificate ([`DevSessionCert`](crate::x402::DevSessionCert):
    /// not signed by its wallet, expired), or delegates to another key than the authorization's
    /// `from`.
    pub const INVALID_SESSION_CERT: &str = "invalid_aggr_deferred_session_cert";
}

/// `validBefore` must be at least this many seconds in the future (Python's buffer).
pub const VALID_BEFORE_BUFFER_SECONDS: u64 = 6;

/// Default allowance for a facilitator's clock running behind the payer's: how far in the
/// future `validAfter` may be and still verify.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// A refused payment: the reason, the payer the payload claims, and an optional human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) reason: &'static str,
    pub(crate) payer: Option<String>,
    pub(crate) message: Option<String>,
}

impl Rejection {
    /// The `isValid: false` answer.
    pub(crate) fn into_verify(self) -> VerifyResponse {
        let mut response = VerifyResponse::invalid(self.reason, self.payer);
        response.invalid_message = self.message;
        response
    }

    /// The `success: false` answer on `network` (no transaction).
    pub(crate) fn into_settle(self, network: Network) -> SettleResponse {
        let mut response = SettleResponse::failure(self.reason, network, self.payer, String::new());
        response.error_message = self.message;
        response
    }
}

/// Who may have signed the authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signers {
    /// Externally-owned accounts only: a signature that does not recover to `from` is refused.
    Eoa,
    /// Also contract wallets: a signature that does not recover to `from` passes with
    /// [`CheckedTransfer::signed_by_from`] false, for the caller's ERC-1271 check (the on-chain
    /// facilitator, feature `chain`).
    #[cfg_attr(not(feature = "chain"), allow(dead_code))]
    EoaOrContract,
}

/// The facilitator-specific inputs of [`check_exact`].
pub(crate) struct ExactPolicy<'a> {
    /// Step 1: the scheme checked (`exact`; `aggr_deferred` for the embedded facilitator's
    /// deferred scheme, whose payload is the same EIP-3009 authorization).
    pub(crate) scheme: &'a str,
    /// Now, in Unix seconds.
    pub(crate) now: u64,
    /// How far in the future `validAfter` may be.
    pub(crate) clock_skew: Duration,
    /// Step 3: whether the facilitator serves this chain id (and asset) for `requirements`, or
    /// the reason it does not.
    pub(crate) serves: &'a (dyn Fn(u64, &PaymentRequirements) -> Result<(), &'static str> + Sync),
    /// Step 10's signer kinds.
    pub(crate) signers: Signers,
}

/// An authorization that passed [`check_exact`]. The domain, signature and signer fields serve
/// the on-chain facilitator (feature `chain`); the embedded one needs only the transfer.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "chain"), allow(dead_code))]
pub(crate) struct CheckedTransfer<'a> {
    /// The chain id of the requirements' network.
    pub(crate) chain_id: u64,
    /// The token (the requirements' asset).
    pub(crate) token: Address,
    /// The signed EIP-3009 message.
    pub(crate) message: TransferWithAuthorization,
    /// The token's EIP-712 domain.
    pub(crate) domain: Eip712Domain,
    /// `extra.name` and `extra.version`.
    pub(crate) name: &'a str,
    /// See `name`.
    pub(crate) version: &'a str,
    /// The signature bytes.
    pub(crate) signature: Bytes,
    /// The signature is a 65-byte ECDSA signature by `from` (always true with [`Signers::Eoa`]).
    pub(crate) signed_by_from: bool,
    /// `from`, as sent.
    pub(crate) payer: String,
}

impl CheckedTransfer<'_> {
    /// The EIP-712 digest the signature signs.
    #[cfg_attr(not(feature = "chain"), allow(dead_code))]
    pub(crate) fn digest(&self) -> B256 {
        evm::transfer_authorization_digest(&self.domain, &self.message)
    }
}

/// The `exact` checklist (steps 1–10 and 12, see the module table), pure: no ledger, no chain.
pub(crate) fn check_exact<'a>(
    payload: &PaymentPayload,
    requirements: &'a PaymentRequirements,
    policy: &ExactPolicy<'_>,
) -> Result<CheckedTransfer<'a>, Rejection> {
    let authorization = payload.payload.get("authorization").and_then(Value::as_object);
    let field = |name: &str| authorization.and_then(|a| a.get(name)).and_then(Value::as_str);
    let payer = field("from").map(str::to_owned);
    let reject = |reason: &'static str| Rejection { reason, payer: payer.clone(), message: None };

    // 1. scheme
    if payload.accepted.scheme != policy.scheme || requirements.scheme != policy.scheme {
        return Err(reject(reasons::UNSUPPORTED_SCHEME));
    }
    // 2. network
    if payload.accepted.network != requirements.network {
        return Err(reject(reasons::NETWORK_MISMATCH));
    }
    // 3. chain id, served by this facilitator
    let chain_id =
        evm::chain_id_of(requirements.network.as_str()).map_err(|_| reject(reasons::FAILED_TO_GET_NETWORK_CONFIG))?;
    (policy.serves)(chain_id, requirements).map_err(reject)?;
    // 4. EIP-712 domain
    let extra = |key: &str| requirements.extra.get(key).and_then(Value::as_str);
    let (Some(name), Some(version)) = (extra("name"), extra("version")) else {
        return Err(reject(reasons::MISSING_EIP712_DOMAIN));
    };
    // Payload shape: an authorization object whose six fields are strings.
    let (Some(from), Some(to), Some(value), Some(valid_after), Some(valid_before), Some(nonce)) =
        (field("from"), field("to"), field("value"), field("validAfter"), field("validBefore"), field("nonce"))
    else {
        return Err(reject(reasons::INVALID_PAYLOAD));
    };
    // 5. recipient
    if !to.eq_ignore_ascii_case(&requirements.pay_to) {
        return Err(reject(reasons::RECIPIENT_MISMATCH));
    }
    // 6. value, exactly
    let value = evm::parse_uint256(value)
        .ok()
        .filter(|v| Some(*v) == requirements.amount_atomic())
        .ok_or_else(|| reject(reasons::VALUE_MISMATCH))?;
    // 7–8. validity window (saturating: no overflow near U256::MAX)
    let now = U256::from(policy.now);
    let valid_before = evm::parse_uint256(valid_before)
        .ok()
        .filter(|vb| *vb >= now.saturating_add(U256::from(VALID_BEFORE_BUFFER_SECONDS)))
        .ok_or_else(|| reject(reasons::VALID_BEFORE))?;
    let latest_valid_after = now.saturating_add(U256::from(policy.clock_skew.as_secs()));
    let valid_after = evm::parse_uint256(valid_after)
        .ok()
        .filter(|va| *va <= latest_valid_after)
        .ok_or_else(|| reject(reasons::VALID_AFTER))?;
    // 9. signature present and hex
    let signature_hex = payload
        .payload
        .get("signature")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| reject(reasons::INVALID_SIGNATURE))?;
    let signature = signature_hex.parse::<Bytes>().map_err(|_| reject(reasons::INVALID_SIGNATURE))?;
    // 10. the typed data, and the signature by `from` over it
    let (Ok(from_address), Ok(to_address), Ok(nonce), Ok(token)) = (
        evm::parse_address(from),
        evm::parse_address(to),
        evm::parse_bytes32(nonce),
        evm::parse_address(&requirements.asset),
    ) else {
        return Err(reject(reasons::FAILED_TO_VERIFY_SIGNATURE));
    };
    let message = TransferWithAuthorization {
        from: from_address,
        to: to_address,
        value,
        validAfter: valid_after,
        validBefore: valid_before,
        nonce,
    };
    let domain = evm::eip3009_domain(name, version, chain_id, token);
    let signed_by_from = evm::verify_transfer_authorization(&domain, &message, signature_hex);
    if !signed_by_from && policy.signers == Signers::Eoa {
        return Err(reject(reasons::INVALID_SIGNATURE));
    }
    // 12. asset
    if !payload.accepted.asset.eq_ignore_ascii_case(&requirements.asset) {
        return Err(reject(reasons::ASSET_MISMATCH));
    }
    Ok(CheckedTransfer {
        chain_id,
        token,
        message,
        domain,
        name,
        version,
        signature,
        signed_by_from,
        payer: from.to_owned(),
    })
}

#[cfg(test)]
pub(super) mod tests;
