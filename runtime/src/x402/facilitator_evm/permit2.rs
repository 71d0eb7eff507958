//! Permit2 payments on chain: [`UptoEvmFacilitator`] (scheme `upto`) and the Permit2 path of
//! [`ExactEvmFacilitatorScheme`] (`exact` with `extra.assetTransferMethod = "permit2"`, or a
//! payload carrying `permit2Authorization`).
//!
//! Both verify a buyer-signed Permit2 `PermitWitnessTransferFrom` against the chain and settle it
//! through the x402 Permit2 proxy of their kind ([`evm::permit2::EXACT_PERMIT2_PROXY`],
//! [`evm::permit2::UPTO_PERMIT2_PROXY`]), sending the transaction from the facilitator's key with
//! the same machinery (nonce counter, gas ceiling, receipt wait, fail-closed outcomes) as EIP-3009
//! settlements.
//!
//! The checklist (in order; the first failure answers):
//!
//! | step | check | reason |
//! |---|---|---|
//! | 1 | scheme of the payload and requirements | `unsupported_scheme` |
//! | 2 | same network | `network_mismatch` |
//! | 3 | this chain, a configured asset | `invalid_exact_evm_failed_to_get_network_config`, `invalid_exact_evm_failed_to_get_asset_info` |
//! | 4 | a well-formed `{permit2Authorization, signature}` of the kind | `invalid_payload` |
//! | 5 | spender = the kind's proxy | `invalid_permit2_spender` |
//! | 6 | permitted token = asset (and the accepted asset) | `permit2_token_mismatch`, `invalid_exact_evm_asset_mismatch` |
//! | 7 | witness.to = payTo | `invalid_permit2_recipient_mismatch` |
//! | 8 | amount: verify `permitted = requirements.amount`; settle (upto) `requirements.amount ≤ permitted` | `permit2_amount_mismatch`, `invalid_upto_evm_payload_settlement_exceeds_amount` |
//! | 9 | upto: witness.facilitator = this facilitator | `upto_facilitator_mismatch` |
//! | 10 | deadline ≥ now + 6 s; validAfter ≤ now (+ clock skew) | `permit2_deadline_expired`, `permit2_not_yet_valid` |
//! | 11 | signature by `from` over Permit2's domain (ECDSA; ERC-1271 when `from` has code, as Permit2 does) | `invalid_permit2_signature` |
//! | 12 | Permit2 nonce unused (`nonceBitmap`), not being settled here | `invalid_exact_evm_nonce_already_used` |
//! | 13 | `allowance(from, Permit2) ≥ amount` | `permit2_allowance_required` |
//! | 14 | `balanceOf(from) ≥ amount` | `permit2_insufficient_balance` |
//! | 15 | `eth_call` of the proxy's `settle` from the facilitator | `invalid_exact_evm_transaction_simulation_failed` |
//!
//! At settle time an `upto` payment is re-verified against the SIGNED maximum
//! (`permitted.amount`), and `requirements.amount` is the amount to move. An amount of 0 passes
//! steps 1–12 and succeeds with `transaction: ""` and `amount: "0"`: nothing is sent and the
//! buyer's nonce stays unused.

use super::{ExactEvmFacilitatorScheme, InFlight, Read, SchemeNetworkFacilitator, reasons};
use crate::chain::Network;
use crate::evm::permit2::{ASSET_TRANSFER_METHOD_PERMIT2, PERMIT2_ADDRESS, Permit2Authorization, Permit2Kind};
use crate::evm::{self, Address, B256, U256};
use crate::x402::exact::{Rejection, VALID_BEFORE_BUFFER_SECONDS};
use crate::x402::types::JsonObject;
use crate::x402::{
    FacilitatorError, PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse, VerifyResponse,
    settle_status,
};
use alloy_primitives::Bytes;
use alloy_sol_types::{SolCall, sol};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

sol! {
    /// Permit2's unordered-nonce bitmap.
    interface IPermit2Nonces {
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
    }

    /// The ERC-20 reads of the Permit2 checks.
    interface IErc20Reads {
        function allowance(address owner, address spender) external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
    }

    /// Permit2's `PermitTransferFrom` as the proxies take it.
    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    /// Token and signed amount.
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    /// The x402 `exact` witness.
    struct ExactWitness {
        address to;
        uint256 validAfter;
    }

    /// The x402 `upto` witness.
    struct UptoWitness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    /// The x402 exact Permit2 proxy.
    interface IExactPermit2Proxy {
        function settle(PermitTransferFrom permit, address owner, ExactWitness witness, bytes signature) external;
    }

    /// The x402 upto Permit2 proxy.
    interface IUptoPermit2Proxy {
        function settle(PermitTransferFrom permit, uint256 amount, address owner, UptoWitness witness, bytes signature) external;
    }
}

/// Whether a payment takes the Permit2 path of the `exact` scheme: the payload carries
/// `permit2Authorization`, or the requirements ask for `extra.assetTransferMethod = "permit2"`.
pub(super) fn selected(payload: &PaymentPayload, requirements: &PaymentRequirements) -> bool {
    Permit2Authorization::is_permit2_payload(&payload.payload)
        || requirements.extra.get("assetTransferMethod").and_then(Value::as_str) == Some(ASSET_TRANSFER_METHOD_PERMIT2)
}

/// Whether the check runs for `/verify` or for `/settle`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Verify,
    Settle,
}

/// A Permit2 payment that passed the checklist.
struct Checked {
    kind: Permit2Kind,
    auth: Permit2Authorization,
    signature: Bytes,
    /// The amount to move: the signed amount, or (upto, settle) `requirements.amount`.
    amount: U256,
    payer: String,
}

impl Checked {
    /// The proxy's `settle` calldata.
    fn calldata(&self) -> Bytes {
        let a = &self.auth;
        let permit = PermitTransferFrom {
            permitted: TokenPermissions { token: a.token, amount: a.amount },
            nonce: a.nonce,
            deadline: a.deadline,
        };
        match (self.kind, a.facilitator) {
            (Permit2Kind::Upto, Some(facilitator)) => IUptoPermit2Proxy::settleCall {
                permit,
                amount: self.amount,
                owner: a.from,
                witness: UptoWitness { to: a.to, facilitator, validAfter: a.valid_after },
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
            _ => IExactPermit2Proxy::settleCall {
                permit,
                owner: a.from,
                witness: ExactWitness { to: a.to, validAfter: a.valid_after },
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }

    /// The in-flight key: Permit2 nonces are per owner, whatever the token.
    fn key(&self) -> (Address, Address, B256) {
        (PERMIT2_ADDRESS, self.auth.from, B256::from(self.auth.nonce))
    }
}

/// The scheme name of a kind.
fn scheme_name(kind: Permit2Kind) -> &'static str {
    match kind {
        Permit2Kind::Upto => "upto",
        _ => "exact",
    }
}

/// Steps 1–10: no chain access.
fn check_pure(
    engine: &ExactEvmFacilitatorScheme,
    kind: Permit2Kind,
    phase: Phase,
    payload: &PaymentPayload,
    requirements: &PaymentRequirements,
) -> Result<Checked, Rejection> {
    let parsed = Permit2Authorization::from_payload(&payload.payload);
    let payer = parsed.as_ref().ok().map(|(auth, _)| evm::checksum(&auth.from));
    let reject = |reason: &'static str| Rejection { reason, payer: payer.clone(), message: None };
    // 1–3
    let scheme = scheme_name(kind);
    if payload.accepted.scheme != scheme || requirements.scheme != scheme {
        return Err(reject(reasons::UNSUPPORTED_SCHEME));
    }
    if payload.accepted.network != requirements.network {
        return Err(reject(reasons::NETWORK_MISMATCH));
    }
    if evm::chain_id_of(requirements.network.as_str()).ok() != Some(engine.chain_id()) {
        return Err(reject(reasons::FAILED_TO_GET_NETWORK_CONFIG));
    }
    let Some(asset) = evm::parse_address(&requirements.asset).ok().filter(|a| engine.accepts_asset(*a)) else {
        tracing::debug!(asset = %requirements.asset, "x402 facilitator: asset not configured; refused");
        return Err(reject(reasons::FAILED_TO_GET_ASSET_INFO));
    };
    // 4
    let Ok((auth, signature_hex)) = parsed else {
        return Err(reject(reasons::INVALID_PAYLOAD));
    };
    if auth.kind() != kind {
        return Err(reject(reasons::INVALID_PAYLOAD));
    }
    // 5–7
    if auth.spender != kind.proxy() {
        return Err(reject(reasons::INVALID_PERMIT2_SPENDER));
    }
    if auth.token != asset {
        return Err(reject(reasons::PERMIT2_TOKEN_MISMATCH));
    }
    if !payload.accepted.asset.eq_ignore_ascii_case(&requirements.asset) {
        return Err(reject(reasons::ASSET_MISMATCH));
    }
    if evm::parse_address(&requirements.pay_to).ok() != Some(auth.to) {
        return Err(reject(reasons::INVALID_PERMIT2_RECIPIENT_MISMATCH));
    }
    // 8
    let Some(required) = requirements.amount_atomic() else {
        return Err(reject(reasons::PERMIT2_AMOUNT_MISMATCH));
    };
    let amount = match (kind, phase) {
        (Permit2Kind::Upto, Phase::Settle) if required > auth.amount => {
            return Err(reject(reasons::UPTO_SETTLEMENT_EXCEEDS_AMOUNT));
        }
        (Permit2Kind::Upto, Phase::Settle) => required,
        _ if required != auth.amount => return Err(reject(reasons::PERMIT2_AMOUNT_MISMATCH)),
        _ => auth.amount,
    };
    // 9
    if kind == Permit2Kind::Upto && auth.facilitator != Some(engine.address()) {
        return Err(reject(reasons::UPTO_FACILITATOR_MISMATCH));
    }
    // 10
    let now = U256::from(engine.now());
    if auth.deadline < now.saturating_add(U256::from(VALID_BEFORE_BUFFER_SECONDS)) {
        return Err(reject(reasons::PERMIT2_DEADLINE_EXPIRED));
    }
    if auth.valid_after > now.saturating_add(U256::from(engine.clock_skew().as_secs())) {
        return Err(reject(reasons::PERMIT2_NOT_YET_VALID));
    }
    let Ok(signature) = signature_hex.parse::<Bytes>() else {
        return Err(reject(reasons::INVALID_PERMIT2_SIGNATURE));
    };
    let payer = evm::checksum(&auth.from);
    Ok(Checked { kind, auth, signature: normalize_v(signature), amount, payer })
}

/// Permit2 `ecrecover`s `v` as given: a 65-byte signature with `v` in {0, 1} gets 27 added.
fn normalize_v(signature: Bytes) -> Bytes {
    match signature.get(64) {
        Some(v @ (0 | 1)) if signature.len() == 65 => {
            let mut bytes = signature.to_vec();
            bytes[64] = v + 27;
            bytes.into()
        }
        _ => signature,
    }
}

/// The whole checklist (steps 13–15 are skipped for an `upto` settlement of 0: nothing will
/// move). `Err` only when the node could not be asked.
async fn check(
    engine: &ExactEvmFacilitatorScheme,
    kind: Permit2Kind,
    phase: Phase,
    payload: &PaymentPayload,
    requirements: &PaymentRequirements,
) -> Result<Result<Checked, Rejection>, FacilitatorError> {
    let checked = match check_pure(engine, kind, phase, payload, requirements) {
        Ok(checked) => checked,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let payer = Some(checked.payer.clone());
    let reject = |reason: &'static str| Rejection { reason, payer: payer.clone(), message: None };
    let (from, token, amount) = (checked.auth.from, checked.auth.token, checked.amount);
    // 11. The signature, as Permit2 checks it: ERC-1271 for a `from` with code, else ECDSA.
    let digest = checked.auth.signing_hash(engine.chain_id());
    let valid = if engine.has_code(from).await? {
        engine.erc1271_valid(from, digest, &checked.signature).await?
    } else {
        checked.auth.verify_signature(&evm::to_hex(&checked.signature), engine.chain_id())
    };
    if !valid {
        return Ok(Err(reject(reasons::INVALID_PERMIT2_SIGNATURE)));
    }
    // 12. nonce unused (on chain, and not being settled right now)
    match nonce_used(engine, from, checked.auth.nonce).await? {
        Read::Value(false) if !InFlight::contains(engine, &checked.key()) => {}
        Read::Value(_) => return Ok(Err(reject(reasons::NONCE_ALREADY_USED))),
        Read::Reverted(message) => {
            return Ok(Err(Rejection { message: Some(message), ..reject(reasons::SIMULATION_FAILED) }));
        }
    }
    if amount.is_zero() && kind == Permit2Kind::Upto && phase == Phase::Settle {
        return Ok(Ok(checked));
    }
    // 13. allowance to Permit2
    let allowance = IErc20Reads::allowanceCall { owner: from, spender: PERMIT2_ADDRESS };
    match engine.view(token, allowance, "allowance").await? {
        Read::Value(granted) if granted >= amount => {}
        Read::Value(_) => return Ok(Err(reject(reasons::PERMIT2_ALLOWANCE_REQUIRED))),
        Read::Reverted(message) => {
            return Ok(Err(Rejection { message: Some(message), ..reject(reasons::SIMULATION_FAILED) }));
        }
    }
    // 14. balance
    match engine.view(token, IErc20Reads::balanceOfCall { account: from }, "balanceOf").await? {
        Read::Value(balance) if balance >= amount => {}
        Read::Value(_) => return Ok(Err(reject(reasons::PERMIT2_INSUFFICIENT_BALANCE))),
        Read::Reverted(message) => {
            return Ok(Err(Rejection { message: Some(message), ..reject(reasons::SIMULATION_FAILED) }));
        }
    }
    // 15. simulation of the proxy's settle from the facilitator's account
    if let Read::Reverted(revert) = engine.read(kind.proxy(), checked.calldata().to_vec(), "simulation").await? {
        // A concurrent settlement of the same payment may have won the race meanwhile.
        let reason = match nonce_used(engine, from, checked.auth.nonce).await? {
            Read::Value(true) => reasons::NONCE_ALREADY_USED,
            _ => reasons::SIMULATION_FAILED,
        };
        return Ok(Err(Rejection { message: Some(revert), ..reject(reason) }));
    }
    Ok(Ok(checked))
}

/// Permit2's `nonceBitmap` bit of `(owner, nonce)`.
async fn nonce_used(
    engine: &ExactEvmFacilitatorScheme,
    owner: Address,
    nonce: U256,
) -> Result<Read<bool>, FacilitatorError> {
    let (word, bit) = evm::permit2::nonce_bitmap_position(nonce);
    let call = IPermit2Nonces::nonceBitmapCall { owner, wordPos: word };
    Ok(match engine.view(PERMIT2_ADDRESS, call, "nonceBitmap").await? {
        Read::Value(bitmap) => Read::Value(bitmap.bit(usize::from(bit))),
        Read::Reverted(message) => Read::Reverted(message),
    })
}

/// `/verify` of a Permit2 payment of `kind`.
pub(super) async fn verify(
    engine: &ExactEvmFacilitatorScheme,
    kind: Permit2Kind,
    payload: &PaymentPayload,
    requirements: &PaymentRequirements,
) -> Result<VerifyResponse, FacilitatorError> {
    Ok(match check(engine, kind, Phase::Verify, payload, requirements).await? {
        Ok(checked) => VerifyResponse::valid(checked.payer),
        Err(rejection) => Rejection::into_verify(rejection),
    })
}

/// `/settle` of a Permit2 payment of `kind`: re-verifies, then sends the proxy's `settle`
/// (nothing for an `upto` amount of 0). An `upto` answer carries the settled `amount`.
pub(super) async fn settle(
    engine: &ExactEvmFacilitatorScheme,
    kind: Permit2Kind,
    payload: &PaymentPayload,
    requirements: &PaymentRequirements,
) -> Result<SettleResponse, FacilitatorError> {
    let network = requirements.network.clone();
    let checked = match check(engine, kind, Phase::Settle, payload, requirements).await? {
        Ok(checked) => checked,
        Err(rejection) => return Ok(Rejection::into_settle(rejection, network)),
    };
    let settled_amount = (kind == Permit2Kind::Upto).then(|| checked.amount.to_string());
    if checked.amount.is_zero() && kind == Permit2Kind::Upto {
        tracing::debug!(payer = %checked.payer, "x402 facilitator: upto settlement of 0; nothing sent");
        return Ok(zero_settlement(checked.payer, network));
    }
    let Some(_in_flight) = InFlight::claim(engine, checked.key()) else {
        return Ok(SettleResponse::failure(reasons::NONCE_ALREADY_USED, network, Some(checked.payer), String::new()));
    };
    let mut response = match engine.send(kind.proxy(), checked.calldata(), &checked.payer).await? {
        Ok(hash) => engine.await_receipt(hash, checked.payer, network).await?,
        Err(rejection) => {
            tracing::warn!(reason = rejection.reason, "x402 facilitator: Permit2 settlement not sent");
            return Ok(Rejection::into_settle(rejection, network));
        }
    };
    if response.success {
        response.amount = settled_amount;
    }
    Ok(response)
}

/// The successful `upto` settlement of 0: no transaction.
fn zero_settlement(payer: String, network: Network) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        status: Some(settle_status::SUCCESS.to_owned()),
        payer: Some(payer),
        transaction: String::new(),
        network,
        amount: Some("0".to_owned()),
    }
}

/// The `upto` scheme's facilitator on one EVM chain: Permit2 authorisations of a MAXIMUM, settled
/// for the actual amount through the x402 upto Permit2 proxy (see the module's checklist).
///
/// It settles with the key, chain, accepted assets, clock, gas ceiling and transaction nonce
/// counter of the [`ExactEvmFacilitatorScheme`] it shares, so `exact` and `upto` settlements from
/// one key never collide. `/supported` announces `extra.facilitatorAddress` (that key's address):
/// buyers name it in the witness, and only it can settle their authorisation.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pay402_runtime::x402::facilitator_evm::{ExactEvmFacilitatorScheme, UptoEvmFacilitator, X402Facilitator};
/// use std::sync::Arc;
///
/// let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse()?;
/// let exact = Arc::new(ExactEvmFacilitatorScheme::connect_http("http://127.0.0.1:8545", key).await?);
/// let network = exact.network().clone();
/// let upto = UptoEvmFacilitator::new(Arc::clone(&exact));
/// let facilitator = X402Facilitator::new().register_shared([network.clone()], exact).register([network], upto);
/// # let _ = facilitator; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct UptoEvmFacilitator {
    engine: Arc<ExactEvmFacilitatorScheme>,
}

impl UptoEvmFacilitator {
    /// An `upto` facilitator settling through `engine`'s account and chain.
    pub fn new(engine: Arc<ExactEvmFacilitatorScheme>) -> Self {
        Self { engine }
    }

    /// The facilitator address buyers must name in the witness (the settlement account).
    pub fn facilitator_address(&self) -> Address {
        self.engine.address()
    }

    /// The shared `exact` scheme (account, chain, assets).
    pub fn engine(&self) -> &Arc<ExactEvmFacilitatorScheme> {
        &self.engine
    }
}

#[async_trait]
impl SchemeNetworkFacilitator for UptoEvmFacilitator {
    fn scheme(&self) -> &str {
        "upto"
    }

    fn supported_extra(&self, network: &Network) -> Option<JsonObject> {
        let _ = network;
        let mut extra = JsonObject::new();
        extra.insert("facilitatorAddress".into(), Value::String(evm::checksum(&self.engine.address())));
        Some(extra)
    }

    fn signers(&self) -> (String, Vec<String>) {
        self.engine.signers()
    }

    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        verify(&self.engine, Permit2Kind::Upto, payload, requirements).await
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, FacilitatorError> {
        settle(&self.engine, Permit2Kind::Upto, payload, requirements).await
    }

    async fn settle_status(&self, tx_hash: &str) -> Result<Option<SettleStatusResponse>, FacilitatorError> {
        self.engine.settle_status(tx_hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_is_normalised_for_ecrecover() {
        let mut sig = vec![7u8; 65];
        sig[64] = 1;
        assert_eq!(normalize_v(sig.clone().into())[64], 28);
        sig[64] = 27;
        assert_eq!(normalize_v(sig.clone().into())[64], 27);
        let compact = Bytes::from(vec![0u8; 64]);
        assert_eq!(normalize_v(compact.clone()), compact);
    }
}
