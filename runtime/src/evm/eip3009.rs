//! EIP-3009 `TransferWithAuthorization` typed data and its x402 JSON payload (wire facts §7).

use super::{EvmError, checksum, parse_address, parse_bytes32, parse_uint256, recover_authorizer, sign_digest};
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The EIP-712 domain type string used by EIP-3009 tokens.
pub const EIP712_DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";

/// The EIP-3009 primary type string.
pub const TRANSFER_WITH_AUTHORIZATION_TYPE: &str = "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";

sol! {
    /// The EIP-3009 `TransferWithAuthorization` message: `from` authorises moving `value` tokens
    /// to `to`, valid strictly between `validAfter` and `validBefore` (Unix seconds), once per
    /// `nonce`.
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        /// The payer (authorizer).
        address from;
        /// The recipient.
        address to;
        /// Atomic token amount.
        uint256 value;
        /// Not valid at or before this Unix time.
        uint256 validAfter;
        /// Not valid at or after this Unix time.
        uint256 validBefore;
        /// Unique 32-byte nonce (per authorizer and token).
        bytes32 nonce;
    }
}

/// The EIP-712 domain of an EIP-3009 token: `{name, version, chainId, verifyingContract}` (no
/// salt). For USD₮0 on X Layer: `eip3009_domain("USD₮0", "1", 196, token)`.
pub fn eip3009_domain(name: &str, version: &str, chain_id: u64, verifying_contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(name.to_owned())),
        Some(Cow::Owned(version.to_owned())),
        Some(U256::from(chain_id)),
        Some(verifying_contract),
        None,
    )
}

/// The EIP-712 signing digest `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message))`.
pub fn transfer_authorization_digest(domain: &Eip712Domain, message: &TransferWithAuthorization) -> B256 {
    message.eip712_signing_hash(domain)
}

/// `keccak256` of [`TRANSFER_WITH_AUTHORIZATION_TYPE`], as alloy encodes the type.
pub fn transfer_authorization_type_hash() -> B256 {
    keccak256(TransferWithAuthorization::eip712_encode_type().as_bytes())
}

/// `hashStruct(message)`: `keccak256(typeHash ‖ abi-encoded fields)`.
pub fn transfer_authorization_struct_hash(message: &TransferWithAuthorization) -> B256 {
    message.eip712_hash_struct()
}

/// Signs `message` under `domain`; returns the 65-byte `r‖s‖v` hex signature (`v` ∈ {27, 28}).
pub fn sign_transfer_authorization(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    message: &TransferWithAuthorization,
) -> Result<String, EvmError> {
    sign_digest(signer, &transfer_authorization_digest(domain, message))
}

/// Whether `signature` (65-byte `r‖s‖v` hex) is `message.from`'s EIP-712 signature of the
/// EIP-3009 `message` under `domain` (EOA recovery; malformed and high-`s` signatures are
/// refused).
pub fn verify_transfer_authorization(
    domain: &Eip712Domain,
    message: &TransferWithAuthorization,
    signature: &str,
) -> bool {
    let digest = transfer_authorization_digest(domain, message);
    recover_authorizer(&digest, signature).is_ok_and(|signer| signer == message.from)
}

/// The `authorization` object of an x402 EIP-3009 payload: every field a string. Key order:
/// `from`, `to`, `value`, `validAfter`, `validBefore`, `nonce`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Eip3009Authorization {
    /// Payer address (`0x` hex).
    pub from: String,
    /// Recipient address (`0x` hex).
    pub to: String,
    /// Atomic amount, decimal.
    pub value: String,
    /// Unix seconds, decimal.
    pub valid_after: String,
    /// Unix seconds, decimal.
    pub valid_before: String,
    /// 32-byte nonce, `0x` hex.
    pub nonce: String,
}

impl Eip3009Authorization {
    /// The wire form of `message`: `from`/`to` EIP-55 checksummed, numbers in decimal, the nonce
    /// as lower-case hex.
    pub fn from_message(message: &TransferWithAuthorization) -> Self {
        Self {
            from: checksum(&message.from),
            to: checksum(&message.to),
            value: message.value.to_string(),
            valid_after: message.validAfter.to_string(),
            valid_before: message.validBefore.to_string(),
            nonce: super::to_hex(message.nonce),
        }
    }

    /// Parses the strings into the typed message.
    pub fn to_message(&self) -> Result<TransferWithAuthorization, EvmError> {
        Ok(TransferWithAuthorization {
            from: parse_address(&self.from)?,
            to: parse_address(&self.to)?,
            value: parse_uint256(&self.value)?,
            validAfter: parse_uint256(&self.valid_after)?,
            validBefore: parse_uint256(&self.valid_before)?,
            nonce: parse_bytes32(&self.nonce)?,
        })
    }

    /// The JSON object, keys in wire order.
    pub fn to_json_object(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("from".into(), Value::String(self.from.clone()));
        map.insert("to".into(), Value::String(self.to.clone()));
        map.insert("value".into(), Value::String(self.value.clone()));
        map.insert("validAfter".into(), Value::String(self.valid_after.clone()));
        map.insert("validBefore".into(), Value::String(self.valid_before.clone()));
        map.insert("nonce".into(), Value::String(self.nonce.clone()));
        map
    }
}

/// An x402 `exact` EIP-3009 payload: `{"signature": "0x…", "authorization": {…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip3009Payload {
    /// 65-byte `r‖s‖v` signature, `0x` hex.
    pub signature: String,
    /// The signed authorization.
    pub authorization: Eip3009Authorization,
}

impl Eip3009Payload {
    /// The JSON object, keys in wire order (`signature`, `authorization`).
    pub fn to_json_object(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("signature".into(), Value::String(self.signature.clone()));
        map.insert("authorization".into(), Value::Object(self.authorization.to_json_object()));
        map
    }

    /// Reads a payload object (all seven fields must be strings).
    pub fn from_json_object(object: &Map<String, Value>) -> Result<Self, EvmError> {
        serde_json::from_value(Value::Object(object.clone())).map_err(|e| EvmError::MalformedPayload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_strings_match_alloy() {
        assert_eq!(TransferWithAuthorization::eip712_encode_type(), TRANSFER_WITH_AUTHORIZATION_TYPE);
        let domain = eip3009_domain("USD\u{20ae}0", "1", 196, Address::ZERO);
        assert_eq!(domain.encode_type(), EIP712_DOMAIN_TYPE);
        assert_eq!(domain.type_hash(), keccak256(EIP712_DOMAIN_TYPE));
        assert_eq!(transfer_authorization_type_hash(), keccak256(TRANSFER_WITH_AUTHORIZATION_TYPE));
    }

    #[test]
    fn payload_json_round_trip_and_order() {
        let message = TransferWithAuthorization {
            from: Address::repeat_byte(0xab),
            to: Address::repeat_byte(0x11),
            value: U256::from(1000),
            validAfter: U256::ZERO,
            validBefore: U256::from(99),
            nonce: B256::repeat_byte(0x22),
        };
        let payload =
            Eip3009Payload { signature: "0x00".into(), authorization: Eip3009Authorization::from_message(&message) };
        let object = payload.to_json_object();
        let text = serde_json::to_string(&object).unwrap();
        assert!(text.starts_with(r#"{"signature":"0x00","authorization":{"from":"0xABaB"#), "{text}");
        assert!(text.contains(r#""value":"1000","validAfter":"0","validBefore":"99","nonce":"0x2222"#), "{text}");
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        let back = Eip3009Payload::from_json_object(&object).unwrap();
        assert_eq!(back, payload);
        assert_eq!(back.authorization.to_message().unwrap(), message);

        let mut broken = object;
        broken.remove("signature");
        assert!(matches!(Eip3009Payload::from_json_object(&broken), Err(EvmError::MalformedPayload(_))));
    }

    #[test]
    fn signature_check() {
        let signer: PrivateKeySigner =
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
        let token = Address::repeat_byte(0x77);
        let t = |value: u64| TransferWithAuthorization {
            from: signer.address(),
            to: Address::repeat_byte(0xbb),
            value: U256::from(value),
            validAfter: U256::ZERO,
            validBefore: U256::MAX,
            nonce: B256::repeat_byte(3),
        };
        let domain = eip3009_domain("USD\u{20ae}0", "1", 196, token);
        let message = t(5);
        let sig = sign_transfer_authorization(&signer, &domain, &message).unwrap();
        assert!(verify_transfer_authorization(&domain, &message, &sig));
        assert!(!verify_transfer_authorization(&eip3009_domain("USD\u{20ae}0", "2", 196, token), &message, &sig));
        assert!(!verify_transfer_authorization(&domain, &t(6), &sig));
        assert!(!verify_transfer_authorization(&domain, &message, "0x1234"));
    }
}
