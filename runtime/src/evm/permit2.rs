//! Permit2 `PermitWitnessTransferFrom` typed data, the x402 Permit2 proxies, and the x402 JSON
//! payload of the `upto` scheme and of `exact` over Permit2 (`extra.assetTransferMethod =
//! "permit2"`).
//!
//! The buyer approves the canonical Permit2 contract once ([`PERMIT2_ADDRESS`], an ERC-20
//! `approve`), then signs one `PermitWitnessTransferFrom` per payment. The spender is an x402
//! proxy ([`EXACT_PERMIT2_PROXY`] or [`UPTO_PERMIT2_PROXY`]) and the witness binds the recipient
//! (and, for `upto`, the facilitator allowed to settle), so nobody can redirect the funds. For
//! `exact` the signed amount is the price; for `upto` it is the **maximum**, and the facilitator
//! settles any amount up to it.

use super::{EvmError, checksum, parse_address, parse_uint256, recover_authorizer, sign_digest};
use alloy_primitives::{Address, B256, U256, address};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The canonical Permit2 contract (the same address on every EVM chain).
pub const PERMIT2_ADDRESS: Address = address!("000000000022D473030F116dDEE9F6B43aC78BA3");

/// The `x402ExactPermit2Proxy`: the spender of Permit2 `exact` payments.
pub const EXACT_PERMIT2_PROXY: Address = address!("402085c248EeA27D92E8b30b2C58ed07f9E20001");

/// The `x402UptoPermit2Proxy`: the spender of `upto` payments.
pub const UPTO_PERMIT2_PROXY: Address = address!("4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// `extra.assetTransferMethod` value that selects Permit2.
pub const ASSET_TRANSFER_METHOD_PERMIT2: &str = "permit2";

/// Typed data of Permit2 `exact` payments (witness `{to, validAfter}`).
pub mod exact_typed {
    alloy_sol_types::sol! {
        /// The token and (exact) amount a Permit2 signature allows.
        #[derive(Debug, PartialEq, Eq)]
        struct TokenPermissions {
            /// The ERC-20 token.
            address token;
            /// The amount, in atomic units.
            uint256 amount;
        }

        /// The x402 witness of an `exact` Permit2 payment.
        #[derive(Debug, PartialEq, Eq)]
        struct Witness {
            /// The recipient (the seller's `payTo`).
            address to;
            /// Not valid before this Unix time.
            uint256 validAfter;
        }

        /// Permit2's `PermitWitnessTransferFrom` with the x402 `exact` witness.
        #[derive(Debug, PartialEq, Eq)]
        struct PermitWitnessTransferFrom {
            /// Token and amount.
            TokenPermissions permitted;
            /// The x402 proxy allowed to move the funds.
            address spender;
            /// Permit2 unordered nonce.
            uint256 nonce;
            /// Not valid after this Unix time.
            uint256 deadline;
            /// The x402 witness.
            Witness witness;
        }
    }
}

/// Typed data of `upto` payments (witness `{to, facilitator, validAfter}`).
pub mod upto_typed {
    alloy_sol_types::sol! {
        /// The token and maximum amount a Permit2 signature allows.
        #[derive(Debug, PartialEq, Eq)]
        struct TokenPermissions {
            /// The ERC-20 token.
            address token;
            /// The maximum amount, in atomic units.
            uint256 amount;
        }

        /// The x402 witness of an `upto` payment.
        #[derive(Debug, PartialEq, Eq)]
        struct Witness {
            /// The recipient (the seller's `payTo`).
            address to;
            /// The only facilitator allowed to settle.
            address facilitator;
            /// Not valid before this Unix time.
            uint256 validAfter;
        }

        /// Permit2's `PermitWitnessTransferFrom` with the x402 `upto` witness.
        #[derive(Debug, PartialEq, Eq)]
        struct PermitWitnessTransferFrom {
            /// Token and maximum amount.
            TokenPermissions permitted;
            /// The x402 proxy allowed to move the funds.
            address spender;
            /// Permit2 unordered nonce.
            uint256 nonce;
            /// Not valid after this Unix time.
            uint256 deadline;
            /// The x402 witness.
            Witness witness;
        }
    }
}

/// Which x402 Permit2 flavour a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Permit2Kind {
    /// `exact` over Permit2: witness `{to, validAfter}`, spender [`EXACT_PERMIT2_PROXY`].
    Exact,
    /// `upto`: witness `{to, facilitator, validAfter}`, spender [`UPTO_PERMIT2_PROXY`].
    Upto,
}

impl Permit2Kind {
    /// The x402 proxy that must be the spender.
    pub fn proxy(self) -> Address {
        match self {
            Permit2Kind::Exact => EXACT_PERMIT2_PROXY,
            Permit2Kind::Upto => UPTO_PERMIT2_PROXY,
        }
    }
}

/// The EIP-712 domain of Permit2: `{name: "Permit2", chainId, verifyingContract}` (no version).
pub fn permit2_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(Some(Cow::Borrowed("Permit2")), None, Some(U256::from(chain_id)), Some(PERMIT2_ADDRESS), None)
}

/// One Permit2 authorization, parsed and typed (the `permit2Authorization` of an x402 payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2Authorization {
    /// The owner of the funds (the buyer).
    pub from: Address,
    /// The token.
    pub token: Address,
    /// The signed amount: the price (`exact`) or the maximum (`upto`).
    pub amount: U256,
    /// The spender (must be the kind's proxy).
    pub spender: Address,
    /// Permit2 unordered nonce.
    pub nonce: U256,
    /// Not valid after this Unix time.
    pub deadline: U256,
    /// The recipient.
    pub to: Address,
    /// The facilitator allowed to settle (`upto` only).
    pub facilitator: Option<Address>,
    /// Not valid before this Unix time.
    pub valid_after: U256,
}

impl Permit2Authorization {
    /// The kind this authorization's witness has (`facilitator` present → `upto`).
    pub fn kind(&self) -> Permit2Kind {
        if self.facilitator.is_some() { Permit2Kind::Upto } else { Permit2Kind::Exact }
    }

    /// The EIP-712 signing digest under Permit2's domain on `chain_id`.
    pub fn signing_hash(&self, chain_id: u64) -> B256 {
        let domain = permit2_domain(chain_id);
        match self.facilitator {
            None => exact_typed::PermitWitnessTransferFrom {
                permitted: exact_typed::TokenPermissions { token: self.token, amount: self.amount },
                spender: self.spender,
                nonce: self.nonce,
                deadline: self.deadline,
                witness: exact_typed::Witness { to: self.to, validAfter: self.valid_after },
            }
            .eip712_signing_hash(&domain),
            Some(facilitator) => upto_typed::PermitWitnessTransferFrom {
                permitted: upto_typed::TokenPermissions { token: self.token, amount: self.amount },
                spender: self.spender,
                nonce: self.nonce,
                deadline: self.deadline,
                witness: upto_typed::Witness { to: self.to, facilitator, validAfter: self.valid_after },
            }
            .eip712_signing_hash(&domain),
        }
    }

    /// Signs this authorization; returns the 65-byte `r‖s‖v` hex signature.
    pub fn sign(&self, signer: &PrivateKeySigner, chain_id: u64) -> Result<String, EvmError> {
        sign_digest(signer, &self.signing_hash(chain_id))
    }

    /// Whether `signature` (65-byte hex) recovers to `from` (EOA recovery; malformed and
    /// high-`s` signatures are refused). Smart-wallet (ERC-1271) owners are checked on chain.
    pub fn verify_signature(&self, signature: &str, chain_id: u64) -> bool {
        recover_authorizer(&self.signing_hash(chain_id), signature).is_ok_and(|who| who == self.from)
    }

    /// The x402 payload `{permit2Authorization, signature}` with this authorization.
    pub fn to_payload(&self, signature: &str) -> Map<String, Value> {
        let wire = Permit2Payload {
            signature: Some(signature.to_owned()),
            permit2_authorization: Permit2AuthorizationWire {
                from: checksum(&self.from),
                permitted: TokenPermissionsWire { token: checksum(&self.token), amount: self.amount.to_string() },
                spender: checksum(&self.spender),
                nonce: self.nonce.to_string(),
                deadline: self.deadline.to_string(),
                witness: WitnessWire {
                    to: checksum(&self.to),
                    facilitator: self.facilitator.as_ref().map(checksum),
                    valid_after: self.valid_after.to_string(),
                },
            },
        };
        match serde_json::to_value(wire) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Parses the x402 payload object (`{permit2Authorization, signature}`): every field must be
    /// present and well formed. Returns the authorization and the signature.
    pub fn from_payload(payload: &Map<String, Value>) -> Result<(Self, String), EvmError> {
        let wire: Permit2Payload = serde_json::from_value(Value::Object(payload.clone()))
            .map_err(|e| EvmError::MalformedPayload(format!("permit2 payload: {e}")))?;
        let signature =
            wire.signature.ok_or_else(|| EvmError::MalformedPayload("permit2 payload: missing signature".into()))?;
        let a = wire.permit2_authorization;
        let auth = Permit2Authorization {
            from: parse_address(&a.from)?,
            token: parse_address(&a.permitted.token)?,
            amount: parse_uint256(&a.permitted.amount)?,
            spender: parse_address(&a.spender)?,
            nonce: parse_nonce(&a.nonce)?,
            deadline: parse_uint256(&a.deadline)?,
            to: parse_address(&a.witness.to)?,
            facilitator: a.witness.facilitator.as_deref().map(parse_address).transpose()?,
            valid_after: parse_uint256(&a.witness.valid_after)?,
        };
        Ok((auth, signature))
    }

    /// Whether `payload` is a Permit2 payload (has `permit2Authorization`), whatever its validity.
    pub fn is_permit2_payload(payload: &Map<String, Value>) -> bool {
        payload.contains_key("permit2Authorization")
    }
}

/// A Permit2 nonce: decimal (Python's peers) or a `0x` hex uint256 (the spec's example).
fn parse_nonce(text: &str) -> Result<U256, EvmError> {
    match text.strip_prefix("0x") {
        Some(digits) if !digits.is_empty() && digits.len() <= 64 => U256::from_str_radix(digits, 16)
            .map_err(|_| EvmError::InvalidHex { what: "nonce", text: text.chars().take(80).collect() }),
        Some(_) => Err(EvmError::InvalidHex { what: "nonce", text: text.chars().take(80).collect() }),
        None => parse_uint256(text),
    }
}

/// A random Permit2 nonce (256 random bits; Permit2 nonces are unordered).
pub fn random_permit2_nonce() -> U256 {
    U256::from_be_bytes(B256::random().0)
}

/// Permit2's unordered-nonce bitmap position of `nonce`: `(wordPos, bitPos)` (`nonceBitmap(owner,
/// wordPos)` has bit `bitPos` set once the nonce is used).
pub fn nonce_bitmap_position(nonce: U256) -> (U256, u8) {
    let word = nonce >> 8;
    let bit = (nonce & U256::from(0xffu8)).to::<u8>();
    (word, bit)
}

/// The selector of ERC-20 `approve(address,uint256)`.
pub const ERC20_APPROVE_SELECTOR: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];

/// The selector of ERC-20 `allowance(address,address)`.
pub const ERC20_ALLOWANCE_SELECTOR: [u8; 4] = [0xdd, 0x62, 0xed, 0x3e];

/// The calldata of the buyer's one-time ERC-20 `approve(PERMIT2_ADDRESS, amount)`: send it (a
/// transaction from the buyer's wallet **to the token contract**, no value) once per token before
/// paying `upto` or Permit2 `exact` offers. `U256::MAX` approves without limit (the usual choice:
/// every payment still needs its own signature, bound to one recipient, amount and deadline).
///
/// Without it a facilitator refuses the payment with `permit2_allowance_required` (the seller
/// answers HTTP 412 with that `invalidReason`).
///
/// ```
/// use pay402_runtime::evm::U256;
/// use pay402_runtime::evm::permit2::approve_calldata;
///
/// let data = approve_calldata(U256::MAX);
/// assert_eq!(data.len(), 4 + 32 + 32);
/// assert_eq!(&data[..4], &[0x09, 0x5e, 0xa7, 0xb3]); // approve(address,uint256)
/// ```
pub fn approve_calldata(amount: U256) -> Vec<u8> {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&ERC20_APPROVE_SELECTOR);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(PERMIT2_ADDRESS.as_slice());
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    data
}

/// The calldata of ERC-20 `allowance(owner, PERMIT2_ADDRESS)` (an `eth_call` to the token): how
/// much Permit2 may still move from `owner`.
pub fn allowance_calldata(owner: Address) -> Vec<u8> {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&ERC20_ALLOWANCE_SELECTOR);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(owner.as_slice());
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(PERMIT2_ADDRESS.as_slice());
    data
}

/// Why [`approve_permit2`] did not grant the allowance.
#[cfg(feature = "chain")]
#[cfg_attr(docsrs, doc(cfg(feature = "chain")))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApproveError {
    /// The node refused the transaction or its receipt could not be read.
    #[error("the approve transaction failed: {0}")]
    Rpc(String),
    /// The transaction was mined and reverted.
    #[error("the approve transaction {0} reverted")]
    Reverted(B256),
}

/// Sends the buyer's one-time `approve(PERMIT2_ADDRESS, amount)` to `token` through `provider`
/// (an alloy provider whose wallet is the buyer's: the transaction is sent **from** it) and waits
/// for the receipt; returns the transaction hash. The same transaction as [`approve_calldata`],
/// for callers that already have a provider (feature `chain`).
#[cfg(feature = "chain")]
#[cfg_attr(docsrs, doc(cfg(feature = "chain")))]
pub async fn approve_permit2<P: alloy::providers::Provider>(
    provider: &P,
    token: Address,
    amount: U256,
) -> Result<B256, ApproveError> {
    use alloy::network::TransactionBuilder;
    let tx = alloy::rpc::types::TransactionRequest::default().with_to(token).with_input(approve_calldata(amount));
    let pending = provider.send_transaction(tx).await.map_err(|e| ApproveError::Rpc(e.to_string()))?;
    let receipt = pending.get_receipt().await.map_err(|e| ApproveError::Rpc(e.to_string()))?;
    if receipt.status() { Ok(receipt.transaction_hash) } else { Err(ApproveError::Reverted(receipt.transaction_hash)) }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Permit2Payload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    permit2_authorization: Permit2AuthorizationWire,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Permit2AuthorizationWire {
    from: String,
    permitted: TokenPermissionsWire,
    spender: String,
    #[serde(deserialize_with = "uint_text")]
    nonce: String,
    #[serde(deserialize_with = "uint_text")]
    deadline: String,
    witness: WitnessWire,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenPermissionsWire {
    token: String,
    #[serde(deserialize_with = "uint_text")]
    amount: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WitnessWire {
    to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    facilitator: Option<String>,
    #[serde(deserialize_with = "uint_text")]
    valid_after: String,
}

/// A uint256 field: a decimal or `0x` string (peers send strings), or a JSON integer.
fn uint_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected an unsigned integer string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(facilitator: Option<Address>) -> Permit2Authorization {
        Permit2Authorization {
            from: Address::repeat_byte(0x11),
            token: Address::repeat_byte(0x22),
            amount: U256::from(100_000u64),
            spender: if facilitator.is_some() { UPTO_PERMIT2_PROXY } else { EXACT_PERMIT2_PROXY },
            nonce: U256::from(7u64),
            deadline: U256::from(2_000_000_000u64),
            to: Address::repeat_byte(0x33),
            facilitator,
            valid_after: U256::ZERO,
        }
    }

    #[test]
    fn type_strings_are_permit2_witness_types() {
        assert_eq!(
            exact_typed::PermitWitnessTransferFrom::eip712_encode_type(),
            "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)"
        );
        assert_eq!(
            upto_typed::PermitWitnessTransferFrom::eip712_encode_type(),
            "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)"
        );
    }

    #[test]
    fn sign_round_trips_through_the_payload() {
        let signer = PrivateKeySigner::random();
        for facilitator in [None, Some(Address::repeat_byte(0x44))] {
            let mut auth = sample(facilitator);
            auth.from = signer.address();
            let sig = auth.sign(&signer, 196).unwrap();
            let payload = auth.to_payload(&sig);
            let (back, sig2) = Permit2Authorization::from_payload(&payload).unwrap();
            assert_eq!(back, auth);
            assert!(back.verify_signature(&sig2, 196));
            assert!(!back.verify_signature(&sig2, 1), "another chain's domain");
            let mut other = back.clone();
            other.amount += U256::from(1u8);
            assert!(!other.verify_signature(&sig2, 196), "a changed amount");
        }
        assert_eq!(sample(Some(Address::ZERO)).kind(), Permit2Kind::Upto);
        assert_eq!(sample(None).kind(), Permit2Kind::Exact);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let signer = PrivateKeySigner::random();
        let auth = sample(None);
        let sig = auth.sign(&signer, 196).unwrap();
        let mut payload = auth.to_payload(&sig);
        payload.remove("signature");
        assert!(Permit2Authorization::from_payload(&payload).is_err());
        let mut payload = auth.to_payload(&sig);
        payload["permit2Authorization"]["permitted"]["amount"] = Value::from("-1");
        assert!(Permit2Authorization::from_payload(&payload).is_err());
        let mut payload = auth.to_payload(&sig);
        payload["permit2Authorization"]["extra"] = Value::from(1);
        assert!(Permit2Authorization::from_payload(&payload).is_err(), "unknown fields");
    }

    #[test]
    fn nonces_are_decimal_or_hex() {
        assert_eq!(parse_nonce("255").unwrap(), U256::from(255u16));
        assert_eq!(parse_nonce("0xff").unwrap(), U256::from(255u16));
        assert!(parse_nonce("0x").is_err());
        assert!(parse_nonce(&format!("0x{}", "f".repeat(65))).is_err());
        assert!(parse_nonce("-1").is_err());
    }

    #[test]
    fn approve_and_allowance_calldata_are_the_erc20_abi() {
        assert_eq!(&alloy_primitives::keccak256("approve(address,uint256)")[..4], &ERC20_APPROVE_SELECTOR);
        assert_eq!(&alloy_primitives::keccak256("allowance(address,address)")[..4], &ERC20_ALLOWANCE_SELECTOR);
        let data = approve_calldata(U256::from(0x1234u32));
        assert_eq!(
            alloy_primitives::hex::encode(&data[4..36]),
            format!("{:0>64}", "000000000022d473030f116ddee9f6b43ac78ba3")
        );
        assert_eq!(U256::from_be_slice(&data[36..]), U256::from(0x1234u32));
        let owner = Address::repeat_byte(0xab);
        let data = allowance_calldata(owner);
        assert_eq!((&data[16..36], &data[48..68]), (owner.as_slice(), PERMIT2_ADDRESS.as_slice()));
    }

    #[test]
    fn nonce_positions() {
        assert_eq!(nonce_bitmap_position(U256::from(0x1ffu32)), (U256::from(1u8), 0xff));
    }
}
