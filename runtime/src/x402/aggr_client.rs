//! The buyer half of the x402 `aggr_deferred` EVM scheme: [`AggrDeferredEvmClientScheme`].
//!
//! The payment format follows OKX's public TypeScript SDK (`@okxweb3/x402-evm`, the deferred
//! client scheme): a **session key** signs an EIP-3009 `TransferWithAuthorization` and the
//! session certificate travels in `accepted.extra.sessionCert`. OKX's facilitator checks the
//! certificate (issued by OKX's Agentic Wallet), answers the settle at once and settles in
//! batches on chain; pay402's [`EmbeddedFacilitator`](super::EmbeddedFacilitator) does the same
//! in its ledger with pay402's development certificates ([`DevSessionCert`]).

use super::client::{ClientError, SchemeNetworkClient, SchemePayment};
use super::session_cert::DevSessionCert;
use super::types::{JsonObject, PaymentRequirements, ResourceInfo};
use crate::evm::{self, Payer, PrivateKeySigner, Signer, U256};
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// How long the certificate of [`AggrDeferredEvmClientScheme::development`] is valid.
pub const DEV_SESSION_CERT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// How far before "now" an `aggr_deferred` authorization becomes valid (OKX's TS SDK: 5 s).
pub const AGGR_DEFERRED_VALID_AFTER_SKEW_SECONDS: u64 = 5;

/// The buyer half of the `aggr_deferred` EVM scheme (EIP-3009 tokens such as USD₮0 on X Layer).
///
/// For each payment the **session key** signs a `TransferWithAuthorization` (`from` = the
/// session key's address, `to` = `payTo`, `value` = `amount`, `validAfter` = now − 5 s,
/// `validBefore` = now + `maxTimeoutSeconds`, a random 32-byte nonce) under the EIP-712 domain
/// `{name: extra.name, version: extra.version, chainId, verifyingContract: asset}`. The payment
/// is `payload: {authorization, signature}`; the session certificate is merged into
/// `accepted.extra.sessionCert`, and the scheme adds the extension `{"scheme": "aggr_deferred"}`
/// (merged with the challenge's extensions as `@x402/core`'s client does). This is exactly the
/// wire of OKX's public TypeScript SDK. (OKX's HTTP API reference describes
/// `authorization.from` as the buyer's AA wallet; the TS SDK, followed here, sends the session
/// key's address, which is what the signature recovers to.)
///
/// The session certificate is **opaque** to this type: in production it is issued by OKX's
/// Agentic Wallet for its session key ([`AggrDeferredEvmClientScheme::new`]); for development,
/// [`AggrDeferredEvmClientScheme::development`] makes a fresh session key and a pay402
/// [`DevSessionCert`] signed by the wallet, which pay402's embedded facilitator checks (OKX's
/// facilitator does not accept it).
///
/// ```
/// use pay402_runtime::evm::PrivateKeySigner;
/// use pay402_runtime::x402::{AggrDeferredEvmClientScheme, ExactEvmClientScheme, X402Client};
///
/// let wallet = PrivateKeySigner::random();
/// let client = X402Client::new()
///     .register("eip155:*", ExactEvmClientScheme::new(wallet.clone()))
///     .register("eip155:*", AggrDeferredEvmClientScheme::development(&wallet).unwrap());
/// assert!(client.supports("aggr_deferred", &"eip155:196".into()));
/// ```
#[derive(Clone)]
pub struct AggrDeferredEvmClientScheme {
    payer: Payer,
    session_cert: String,
}

impl fmt::Debug for AggrDeferredEvmClientScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggrDeferredEvmClientScheme")
            .field("session_key", &self.payer.address())
            .finish_non_exhaustive()
    }
}

impl AggrDeferredEvmClientScheme {
    /// A scheme signing with the session key `session_key`, carrying `session_cert` (opaque:
    /// in production the certificate OKX's Agentic Wallet issued for this session key).
    pub fn new(session_key: impl Signer + 'static, session_cert: impl Into<String>) -> Self {
        Self { payer: Payer::new(session_key), session_cert: session_cert.into() }
    }

    /// A development scheme for `wallet`: a fresh random session key and a pay402
    /// [`DevSessionCert`] signed by `wallet`, valid for [`DEV_SESSION_CERT_LIFETIME`] from now.
    /// Payments made with it are charged to `wallet` by pay402's embedded facilitator.
    pub fn development(wallet: &dyn Signer) -> Result<Self, ClientError> {
        Self::development_until(wallet, evm::system_unix_time().saturating_add(DEV_SESSION_CERT_LIFETIME.as_secs()))
    }

    /// [`development`](Self::development) with the certificate's expiry (Unix seconds).
    pub fn development_until(wallet: &dyn Signer, expires_at: u64) -> Result<Self, ClientError> {
        let session_key = PrivateKeySigner::random();
        let cert = DevSessionCert::issue(wallet, session_key.address(), expires_at)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        Ok(Self::new(session_key, cert))
    }

    evm::payer_seams!();

    /// The session certificate sent in `accepted.extra.sessionCert`.
    pub fn session_cert(&self) -> &str {
        &self.session_cert
    }

    /// Signs the payload `{authorization, signature}` for `requirements` (synchronous core of
    /// [`SchemeNetworkClient::create_payment`]).
    pub fn sign_payload(&self, requirements: &PaymentRequirements) -> Result<JsonObject, ClientError> {
        let bad = ClientError::BadRequirements;
        if requirements.scheme != "aggr_deferred" {
            return Err(bad(format!("scheme `{}` is not `aggr_deferred`", requirements.scheme)));
        }
        let chain_id = evm::chain_id_of(requirements.network.as_str()).map_err(|e| bad(e.to_string()))?;
        let text = |key: &str| requirements.extra.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (Some(name), Some(version)) = (text("name"), text("version")) else {
            return Err(bad("EIP-712 domain parameters (name, version) required in payment requirements".to_owned()));
        };
        let asset = evm::parse_address(&requirements.asset).map_err(|e| bad(format!("asset: {e}")))?;
        let to = evm::parse_address(&requirements.pay_to).map_err(|e| bad(format!("payTo: {e}")))?;
        let value = evm::parse_uint256(&requirements.amount).map_err(|e| bad(format!("amount: {e}")))?;

        let now = self.payer.now();
        let window = (
            U256::from(now.saturating_sub(AGGR_DEFERRED_VALID_AFTER_SKEW_SECONDS)),
            U256::from(now).saturating_add(U256::from(requirements.max_timeout_seconds)),
        );
        let domain = evm::eip3009_domain(name, version, chain_id, asset);
        let (message, signature) =
            self.payer.sign_transfer(&domain, to, value, window).map_err(|e| ClientError::Signing(e.to_string()))?;
        let mut authorization = evm::Eip3009Authorization::from_message(&message);
        authorization.value = requirements.amount.clone();
        let mut payload = JsonObject::new();
        payload.insert("authorization".into(), Value::Object(authorization.to_json_object()));
        payload.insert("signature".into(), Value::String(signature));
        Ok(payload)
    }
}

#[async_trait]
impl SchemeNetworkClient for AggrDeferredEvmClientScheme {
    fn scheme(&self) -> &str {
        "aggr_deferred"
    }

    async fn create_payment(
        &self,
        requirements: &PaymentRequirements,
        _resource: Option<&ResourceInfo>,
    ) -> Result<JsonObject, ClientError> {
        self.sign_payload(requirements)
    }

    async fn create_payment_parts(
        &self,
        requirements: &PaymentRequirements,
        _resource: Option<&ResourceInfo>,
    ) -> Result<SchemePayment, ClientError> {
        let mut extensions = JsonObject::new();
        extensions.insert("scheme".into(), Value::String("aggr_deferred".into()));
        let mut accepted_extra = JsonObject::new();
        accepted_extra.insert("sessionCert".into(), Value::String(self.session_cert.clone()));
        Ok(SchemePayment::new(self.sign_payload(requirements)?)
            .with_extensions(extensions)
            .with_accepted_extra(accepted_extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::B256;
    use crate::x402::types::{AnyPaymentPayload, AnyPaymentRequired, PaymentRequired};
    use crate::x402::{X402_VERSION, X402Client};
    use serde_json::json;

    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const ASSET: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";

    fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "aggr_deferred".into(),
            network: "eip155:196".into(),
            asset: ASSET.into(),
            amount: "1000".into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap(),
        }
    }

    fn keys() -> (PrivateKeySigner, PrivateKeySigner) {
        (PrivateKeySigner::from_bytes(&[7; 32].into()).unwrap(), PrivateKeySigner::from_bytes(&[8; 32].into()).unwrap())
    }

    #[tokio::test]
    async fn okx_wire_shape() {
        let (wallet, session) = keys();
        let cert = DevSessionCert::issue(&wallet, session.address(), 2_000_000).unwrap();
        let scheme = AggrDeferredEvmClientScheme::new(session.clone(), cert.clone())
            .with_clock(|| 1_000_000)
            .with_nonce_source(|| B256::repeat_byte(0x33));
        let mut declared = JsonObject::new();
        declared.insert("bazaar".into(), json!({"info": {"a": 1}}));
        declared.insert("scheme".into(), json!({"server": true}));
        let challenge = AnyPaymentRequired::V2(PaymentRequired {
            x402_version: X402_VERSION,
            error: None,
            resource: None,
            accepts: vec![requirements()],
            extensions: Some(declared),
        });
        let client = X402Client::new().register("eip155:*", scheme);
        let AnyPaymentPayload::V2(p) = client.create_payment_payload(&challenge).await.unwrap() else { panic!() };
        let keys: Vec<&String> = p.payload.keys().collect();
        assert_eq!(keys, ["authorization", "signature"]);
        let a = &p.payload["authorization"];
        assert_eq!(a["from"], evm::checksum(&session.address()));
        assert_eq!(a["to"], evm::checksum(&evm::parse_address(PAY_TO).unwrap()));
        assert_eq!((a["value"].as_str(), a["validAfter"].as_str()), (Some("1000"), Some("999995")));
        assert_eq!(a["validBefore"], "1000300");
        assert_eq!(a["nonce"], format!("0x{}", "33".repeat(32)));
        // The session key signed it.
        let auth = evm::Eip3009Authorization {
            from: a["from"].as_str().unwrap().into(),
            to: a["to"].as_str().unwrap().into(),
            value: "1000".into(),
            valid_after: "999995".into(),
            valid_before: "1000300".into(),
            nonce: a["nonce"].as_str().unwrap().into(),
        };
        let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, evm::parse_address(ASSET).unwrap());
        let digest = evm::transfer_authorization_digest(&domain, &auth.to_message().unwrap());
        assert_eq!(
            evm::recover_authorizer(&digest, p.payload["signature"].as_str().unwrap()).unwrap(),
            session.address()
        );
        // sessionCert merged into accepted.extra; the rest of accepted verbatim.
        assert_eq!(p.accepted.extra["sessionCert"], cert);
        assert_eq!(p.accepted.extra["name"], "USD\u{20ae}0");
        assert_eq!(PaymentRequirements { extra: requirements().extra, ..p.accepted.clone() }, requirements());
        // A non-object on either side: the scheme's value replaces the server's (@x402/core).
        let ext = p.extensions.unwrap();
        assert_eq!(ext["scheme"], "aggr_deferred");
        assert_eq!(ext["bazaar"], json!({"info": {"a": 1}}));
    }

    #[test]
    fn development_certificate_names_the_wallet() {
        let (wallet, _) = keys();
        let scheme = AggrDeferredEvmClientScheme::development(&wallet).unwrap();
        let cert = DevSessionCert::verify(scheme.session_cert(), evm::system_unix_time()).unwrap();
        assert_eq!((cert.wallet, cert.session_key), (wallet.address(), scheme.address()));
        assert_ne!(scheme.address(), wallet.address());
        let mut r = requirements();
        r.scheme = "exact".into();
        assert!(matches!(scheme.sign_payload(&r), Err(ClientError::BadRequirements(_))));
        let mut r = requirements();
        r.extra.remove("name");
        assert!(matches!(scheme.sign_payload(&r), Err(ClientError::BadRequirements(_))));
        assert!(!format!("{scheme:?}").contains(scheme.session_cert()));
    }
}
