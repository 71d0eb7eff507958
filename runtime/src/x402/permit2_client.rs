//! The buyer half of the Permit2 payments: [`UptoEvmClientScheme`] (the `upto` scheme) and the
//! Permit2 branch of [`ExactEvmClientScheme`](super::ExactEvmClientScheme) (`exact` with
//! `extra.assetTransferMethod = "permit2"`).
//!
//! Both sign one Permit2 `PermitWitnessTransferFrom`
//! ([`Permit2Authorization`](crate::evm::permit2::Permit2Authorization)) under Permit2's EIP-712
//! domain. The buyer must have approved the Permit2 contract once on the token
//! ([`approve_calldata`](crate::evm::permit2::approve_calldata)); a facilitator answers
//! `permit2_allowance_required` otherwise.

use super::client::{ClientError, ExactEvmClientScheme, SchemeNetworkClient};
use super::types::{JsonObject, PaymentRequirements, ResourceInfo};
use crate::evm::permit2::{ASSET_TRANSFER_METHOD_PERMIT2, Permit2Authorization, Permit2Kind};
use crate::evm::{self, Payer, Signer, U256, VALID_AFTER_SKEW_SECONDS};
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;

/// The buyer half of the x402 `upto` EVM scheme (pay per use, up to a maximum).
///
/// For each payment it signs a Permit2 `PermitWitnessTransferFrom` of the **maximum**
/// (`requirements.amount`) of `asset`, spender the x402 upto proxy
/// ([`UPTO_PERMIT2_PROXY`](crate::evm::permit2::UPTO_PERMIT2_PROXY)), witness `{to: payTo,
/// facilitator: extra.facilitatorAddress, validAfter: now − 600 s (clamped at 0)}`, deadline now +
/// `maxTimeoutSeconds`, a random 256-bit Permit2 nonce. The seller then settles any amount up to
/// that maximum, through that facilitator only. Refused (nothing signed, a
/// [`ClientError::BadRequirements`]): an offer without a valid non-zero
/// `extra.facilitatorAddress`, a malformed `asset`, `payTo` or `amount`, a non-positive
/// `maxTimeoutSeconds`, an `extra.assetTransferMethod` other than `permit2`.
///
/// Budgets: whoever holds the signature may take up to the maximum, so a buyer's caps must
/// apply to it ([`AutoPay`](crate::autopay::AutoPay) does).
///
/// ```
/// use pay402_runtime::evm::PrivateKeySigner;
/// use pay402_runtime::x402::{ExactEvmClientScheme, UptoEvmClientScheme, X402Client};
///
/// let wallet = PrivateKeySigner::random();
/// let client = X402Client::new()
///     .register("eip155:*", ExactEvmClientScheme::new(wallet.clone()))
///     .register("eip155:*", UptoEvmClientScheme::new(wallet));
/// assert!(client.supports("upto", &"eip155:196".into()));
/// ```
#[derive(Clone)]
pub struct UptoEvmClientScheme {
    payer: Payer,
}

impl fmt::Debug for UptoEvmClientScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UptoEvmClientScheme").field("payer", &self.payer.address()).finish_non_exhaustive()
    }
}

impl UptoEvmClientScheme {
    /// A scheme signing with `signer`, the system clock and random Permit2 nonces.
    pub fn new(signer: impl Signer + 'static) -> Self {
        Self { payer: Payer::new(signer) }
    }

    evm::payer_seams!();

    /// Signs the payload `{permit2Authorization, signature}` for `requirements` (synchronous
    /// core of [`SchemeNetworkClient::create_payment`]).
    pub fn sign_payload(&self, requirements: &PaymentRequirements) -> Result<JsonObject, ClientError> {
        sign_permit2(&self.payer, requirements, Permit2Kind::Upto)
    }
}

#[async_trait]
impl SchemeNetworkClient for UptoEvmClientScheme {
    fn scheme(&self) -> &str {
        "upto"
    }

    async fn create_payment(
        &self,
        requirements: &PaymentRequirements,
        _resource: Option<&ResourceInfo>,
    ) -> Result<JsonObject, ClientError> {
        self.sign_payload(requirements)
    }
}

/// `exact`: an EIP-3009 payload ([`ExactEvmClientScheme::sign_payload`]), or a Permit2 one when
/// `extra.assetTransferMethod` is `permit2`.
#[async_trait]
impl SchemeNetworkClient for ExactEvmClientScheme {
    fn scheme(&self) -> &str {
        "exact"
    }

    async fn create_payment(
        &self,
        requirements: &PaymentRequirements,
        _resource: Option<&ResourceInfo>,
    ) -> Result<JsonObject, ClientError> {
        if transfer_method(requirements)? == Some(ASSET_TRANSFER_METHOD_PERMIT2) {
            return sign_permit2(&self.payer, requirements, Permit2Kind::Exact);
        }
        self.sign_payload(requirements).map(|p| p.to_json_object())
    }
}

/// `extra.assetTransferMethod` of `requirements`, when present (`Err` when not a string).
fn transfer_method(requirements: &PaymentRequirements) -> Result<Option<&str>, ClientError> {
    match requirements.extra.get("assetTransferMethod") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(method)) => Ok(Some(method.as_str())),
        Some(other) => Err(ClientError::BadRequirements(format!("extra.assetTransferMethod is not a string: {other}"))),
    }
}

/// Signs a Permit2 payment of `kind` for `requirements` with `payer`: checks everything first,
/// signs nothing on a refusal.
fn sign_permit2(
    payer: &Payer,
    requirements: &PaymentRequirements,
    kind: Permit2Kind,
) -> Result<JsonObject, ClientError> {
    let bad = ClientError::BadRequirements;
    let scheme = match kind {
        Permit2Kind::Upto => "upto",
        _ => "exact",
    };
    if requirements.scheme != scheme {
        return Err(bad(format!("scheme `{}` is not `{scheme}`", requirements.scheme)));
    }
    match transfer_method(requirements)? {
        Some(ASSET_TRANSFER_METHOD_PERMIT2) => {}
        // `upto` is Permit2 by definition; `exact` reaches here only when it says so.
        None if kind == Permit2Kind::Upto => {}
        other => {
            return Err(bad(format!("unsupported extra.assetTransferMethod {other:?} (expected \"permit2\")")));
        }
    }
    let chain_id = evm::chain_id_of(requirements.network.as_str()).map_err(|e| bad(e.to_string()))?;
    let token = evm::parse_address(&requirements.asset).map_err(|e| bad(format!("asset: {e}")))?;
    let to = evm::parse_address(&requirements.pay_to).map_err(|e| bad(format!("payTo: {e}")))?;
    let amount = evm::parse_uint256(&requirements.amount).map_err(|e| bad(format!("amount: {e}")))?;
    if requirements.max_timeout_seconds == 0 {
        return Err(bad("maxTimeoutSeconds must be positive".to_owned()));
    }
    let facilitator = match kind {
        Permit2Kind::Upto => {
            let text = requirements.extra.get("facilitatorAddress").and_then(Value::as_str).ok_or_else(|| {
                bad("an upto offer needs extra.facilitatorAddress (the facilitator allowed to settle)".to_owned())
            })?;
            let address = evm::parse_address(text).map_err(|e| bad(format!("extra.facilitatorAddress: {e}")))?;
            if address.is_zero() {
                return Err(bad("extra.facilitatorAddress is the zero address".to_owned()));
            }
            Some(address)
        }
        _ => None,
    };
    let now = payer.now();
    let auth = Permit2Authorization {
        from: payer.address(),
        token,
        amount,
        spender: kind.proxy(),
        nonce: U256::from_be_bytes(payer.nonce().0),
        deadline: U256::from(now).saturating_add(U256::from(requirements.max_timeout_seconds)),
        to,
        facilitator,
        valid_after: U256::from(now.saturating_sub(VALID_AFTER_SKEW_SECONDS)),
    };
    let signature = payer.sign_digest(&auth.signing_hash(chain_id)).map_err(|e| ClientError::Signing(e.to_string()))?;
    Ok(auth.to_payload(&signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::permit2::{EXACT_PERMIT2_PROXY, UPTO_PERMIT2_PROXY};
    use crate::evm::{Address, B256, PrivateKeySigner};
    use serde_json::json;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const FACILITATOR: &str = "0x2222222222222222222222222222222222222222";
    const TOKEN: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";

    fn req(scheme: &str) -> PaymentRequirements {
        let mut extra = json!({"name": "USD\u{20ae}0", "version": "1", "assetTransferMethod": "permit2"});
        if scheme == "upto" {
            extra["facilitatorAddress"] = json!(FACILITATOR);
        }
        PaymentRequirements {
            scheme: scheme.into(),
            network: "eip155:196".into(),
            asset: TOKEN.into(),
            amount: "100000".into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: extra.as_object().cloned().unwrap(),
        }
    }

    fn upto() -> UptoEvmClientScheme {
        UptoEvmClientScheme::new(KEY.parse::<PrivateKeySigner>().unwrap())
            .with_clock(|| 1_000_000)
            .with_nonce_source(|| B256::repeat_byte(0x01))
    }

    #[test]
    fn upto_signs_the_maximum_for_the_named_facilitator() {
        let payload = upto().sign_payload(&req("upto")).unwrap();
        let (auth, signature) = Permit2Authorization::from_payload(&payload).unwrap();
        assert_eq!(auth.from, upto().address());
        assert_eq!(auth.amount, U256::from(100_000u64));
        assert_eq!(auth.spender, UPTO_PERMIT2_PROXY);
        assert_eq!(auth.to, evm::parse_address(PAY_TO).unwrap());
        assert_eq!(auth.facilitator, Some(evm::parse_address(FACILITATOR).unwrap()));
        assert_eq!(auth.token, evm::parse_address(TOKEN).unwrap());
        assert_eq!((auth.deadline, auth.valid_after), (U256::from(1_000_300u64), U256::from(999_400u64)));
        assert_eq!(auth.nonce, U256::from_be_bytes(B256::repeat_byte(0x01).0));
        assert!(auth.verify_signature(&signature, 196));
        assert!(!auth.verify_signature(&signature, 1));
        // The wire: strings, checksummed addresses, the witness with its facilitator.
        assert_eq!(payload["permit2Authorization"]["witness"]["facilitator"], FACILITATOR);
        assert_eq!(payload["permit2Authorization"]["permitted"]["amount"], "100000");
    }

    #[test]
    fn exact_over_permit2_signs_with_the_exact_witness() {
        let scheme = ExactEvmClientScheme::new(KEY.parse().unwrap()).with_clock(|| 5);
        let r = req("exact");
        let payload = tokio_test_block(scheme.create_payment(&r, None)).unwrap();
        let (auth, signature) = Permit2Authorization::from_payload(&payload).unwrap();
        assert_eq!((auth.spender, auth.facilitator, auth.valid_after), (EXACT_PERMIT2_PROXY, None, U256::ZERO));
        assert_eq!(auth.deadline, U256::from(305u64));
        assert!(auth.verify_signature(&signature, 196));
        // An unknown transfer method is refused; EIP-3009 (or none) keeps the EIP-3009 payload.
        let mut other = req("exact");
        other.extra.insert("assetTransferMethod".into(), json!("permit3"));
        assert!(matches!(tokio_test_block(scheme.create_payment(&other, None)), Err(ClientError::BadRequirements(_))));
        other.extra.insert("assetTransferMethod".into(), json!("eip3009"));
        assert!(tokio_test_block(scheme.create_payment(&other, None)).unwrap().contains_key("authorization"));
    }

    fn tokio_test_block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn upto_refuses_bad_offers_before_signing() {
        type Mutation = Box<dyn Fn(&mut PaymentRequirements)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("no facilitator", Box::new(|r| drop(r.extra.remove("facilitatorAddress")))),
            ("facilitator not a string", Box::new(|r| drop(r.extra.insert("facilitatorAddress".into(), json!(7))))),
            ("facilitator malformed", Box::new(|r| drop(r.extra.insert("facilitatorAddress".into(), json!("0x12"))))),
            (
                "facilitator zero",
                Box::new(|r| drop(r.extra.insert("facilitatorAddress".into(), json!(Address::ZERO.to_string())))),
            ),
            ("asset", Box::new(|r| r.asset = "usdt".into())),
            ("payTo", Box::new(|r| r.pay_to = "0x12".into())),
            ("amount", Box::new(|r| r.amount = "0.1".into())),
            ("negative amount", Box::new(|r| r.amount = "-1".into())),
            ("network", Box::new(|r| r.network = "solana:1".into())),
            ("scheme", Box::new(|r| r.scheme = "exact".into())),
            ("timeout", Box::new(|r| r.max_timeout_seconds = 0)),
            ("method", Box::new(|r| drop(r.extra.insert("assetTransferMethod".into(), json!("eip3009"))))),
            ("method type", Box::new(|r| drop(r.extra.insert("assetTransferMethod".into(), json!(1))))),
        ];
        let signed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (why, mutate) in cases {
            let mut r = req("upto");
            mutate(&mut r);
            let counter = signed.clone();
            let scheme = upto().with_nonce_source(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                B256::ZERO
            });
            assert!(matches!(scheme.sign_payload(&r), Err(ClientError::BadRequirements(_))), "{why}");
        }
        assert_eq!(signed.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was signed");
        // Without assetTransferMethod an upto offer is still Permit2.
        let mut r = req("upto");
        r.extra.remove("assetTransferMethod");
        assert!(upto().sign_payload(&r).is_ok());
    }
}
