//! EVM building blocks for x402 `exact` payments: EIP-712 / EIP-3009 typed data, ECDSA signing
//! and recovery, and strict parsers for the hex and decimal strings carried in JSON payloads.
//!
//! Everything here is offline and synchronous. The EIP-3009 `TransferWithAuthorization` message
//! ([`TransferWithAuthorization`]) is hashed under an [`Eip712Domain`] built by
//! [`eip3009_domain`]; [`sign_digest`] produces the 65-byte `r‖s‖v` hex string (`v` ∈ {27, 28})
//! that x402 payloads carry, and [`recover_authorizer`] recovers the signer while rejecting
//! malformed and malleable (high-`s`, EIP-2) signatures.
//!
//! ```
//! use pay402_runtime::evm::{self, PrivateKeySigner, TransferWithAuthorization, U256, B256};
//!
//! let signer: PrivateKeySigner =
//!     "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
//! let token = evm::parse_address("0x779ded0c9e1022225f8e0630b35a9b54be713736").unwrap();
//! let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, token);
//! let message = TransferWithAuthorization {
//!     from: signer.address(),
//!     to: evm::parse_address("0x1111111111111111111111111111111111111111").unwrap(),
//!     value: U256::from(1000),
//!     validAfter: U256::ZERO,
//!     validBefore: U256::from(1_767_225_600u64),
//!     nonce: B256::repeat_byte(0x22),
//! };
//! let digest = evm::transfer_authorization_digest(&domain, &message);
//! let signature = evm::sign_digest(&signer, &digest).unwrap();
//! assert_eq!(evm::recover_authorizer(&digest, &signature).unwrap(), signer.address());
//! ```

mod channel;
mod eip3009;
mod ledger;
#[cfg(feature = "client")]
mod payer;
pub mod permit2;
pub mod recover;
mod signer;

pub use alloy_primitives::{Address, B256, Signature, U256, keccak256};
pub use alloy_signer_local::PrivateKeySigner;
pub use alloy_sol_types::Eip712Domain;
pub use channel::{
    CHANNEL_DOMAIN_TYPE, CHANNEL_DOMAIN_TYPEHASH, CLOSE_AUTHORIZATION_TYPE, CLOSE_AUTHORIZATION_TYPEHASH,
    ChannelDomain, ChannelSignatureError, CloseAuthorization, DEFAULT_DEADLINE, DEFAULT_DOMAIN_NAME,
    DEFAULT_DOMAIN_VERSION, DEFAULT_ESCROW_CONTRACT, FixedNonceProvider, NonceProvider, RandomNonceProvider,
    SETTLE_AUTHORIZATION_TYPE, SETTLE_AUTHORIZATION_TYPEHASH, SettleAuthorization, SignerKeyCache, VOUCHER_TYPE,
    VOUCHER_TYPEHASH, Voucher, channel_id_from_hex, close_authorization_digest, close_authorization_struct_hash,
    derive_channel_id, eip712_digest, parse_channel_signature, recover_channel_signer, recover_channel_signer_with,
    recover_voucher_signer, recover_voucher_signer_with, settle_authorization_digest, settle_authorization_struct_hash,
    sign_close_authorization, sign_settle_authorization, sign_voucher, verify_voucher_signature,
    verify_voucher_signature_cached, verify_voucher_signature_with, voucher_digest, voucher_struct_hash,
};
pub use eip3009::{
    EIP712_DOMAIN_TYPE, Eip3009Authorization, Eip3009Payload, TRANSFER_WITH_AUTHORIZATION_TYPE,
    TransferWithAuthorization, eip3009_domain, sign_transfer_authorization, transfer_authorization_digest,
    transfer_authorization_struct_hash, transfer_authorization_type_hash, verify_transfer_authorization,
};
pub use ledger::{LedgerError, TokenLedger, transaction_hash};
#[cfg(feature = "client")]
pub(crate) use payer::payer_seams;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use payer::{Payer, VALID_AFTER_SKEW_SECONDS};
pub use signer::{Signer, signature_hex, signer_from_hex};

use alloy_primitives::{hex, uint};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Half the secp256k1 group order: signatures with a larger `s` are malleable (EIP-2).
pub const SECP256K1N_HALF: U256 = uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// A source of Unix time in seconds (replaceable in tests).
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The current Unix time in seconds (0 if the system clock is before 1970).
pub fn system_unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The system clock as a [`UnixClock`].
pub fn system_clock() -> UnixClock {
    Arc::new(system_unix_time)
}

/// Why an EVM value could not be parsed, signed or recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvmError {
    /// The text is not `0x`-prefixed hexadecimal.
    #[error("{what} is not 0x-prefixed hex: {text:?}")]
    InvalidHex {
        /// What was being parsed (`address`, `bytes32`, `signature`).
        what: &'static str,
        /// The offending text (truncated to 80 characters).
        text: String,
    },
    /// The hex decodes to the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// What was being parsed.
        what: &'static str,
        /// Expected byte length.
        expected: usize,
        /// Actual byte length.
        actual: usize,
    },
    /// The text is not a decimal uint256 (digits only, at most 2^256 − 1).
    #[error("not a decimal uint256: {0:?}")]
    InvalidUint(String),
    /// The signature's recovery byte is not 0, 1, 27 or 28.
    #[error("invalid signature recovery byte {0}")]
    InvalidRecoveryId(u8),
    /// The signature's `s` is in the upper half of the curve order (malleable, EIP-2).
    #[error("signature s value is not canonical (high s)")]
    HighS,
    /// Public-key recovery failed (r or s zero or out of range, no point on the curve).
    #[error("cannot recover the signer: {0}")]
    Recovery(String),
    /// The signer failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The network is not an `eip155:<chain id>` CAIP-2 id.
    #[error("not an eip155 network: {0:?}")]
    InvalidNetwork(String),
    /// A JSON payload lacks a field or has the wrong shape.
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// An arithmetic result does not fit in a uint256.
    #[error("uint256 overflow")]
    Overflow,
    /// A private key could not be loaded (the reason never contains key material).
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(&'static str),
}

fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Decodes `0x`-prefixed hex (either case) of exactly `N` bytes.
fn parse_fixed<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], EvmError> {
    let bytes = parse_hex_bytes(what, text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| EvmError::InvalidLength {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

/// Decodes `0x`-prefixed hex of any length (the `0x` is required; digits of either case).
fn parse_hex_bytes(what: &'static str, text: &str) -> Result<Vec<u8>, EvmError> {
    let invalid = || EvmError::InvalidHex { what, text: excerpt(text) };
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or_else(invalid)?;
    hex::decode(digits).map_err(|_| invalid())
}

/// Parses a `0x`-prefixed 20-byte address. Any letter case is accepted (the EIP-55 checksum is
/// not enforced, as payload comparisons are case-insensitive).
pub fn parse_address(text: &str) -> Result<Address, EvmError> {
    parse_fixed::<20>("address", text).map(Address::from)
}

/// Parses a `0x`-prefixed 32-byte value (an EIP-3009 nonce).
pub fn parse_bytes32(text: &str) -> Result<B256, EvmError> {
    parse_fixed::<32>("bytes32", text).map(B256::from)
}

/// Parses a decimal uint256 (ASCII digits only: no sign, no spaces, no `0x`, at most 2^256 − 1).
pub fn parse_uint256(text: &str) -> Result<U256, EvmError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EvmError::InvalidUint(excerpt(text)));
    }
    U256::from_str_radix(text, 10).map_err(|_| EvmError::InvalidUint(excerpt(text)))
}

/// The EVM chain id of a CAIP-2 `eip155:<id>` network.
pub fn chain_id_of(network: &str) -> Result<u64, EvmError> {
    let invalid = || EvmError::InvalidNetwork(excerpt(network));
    let id = network.strip_prefix("eip155:").ok_or_else(invalid)?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || (id.len() > 1 && id.starts_with('0')) {
        return Err(invalid());
    }
    id.parse::<u64>().map_err(|_| invalid())
}

/// The EIP-55 checksummed spelling of `address`.
pub fn checksum(address: &Address) -> String {
    address.to_checksum(None)
}

/// Lower-case `0x` hex of `bytes`.
pub fn to_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode_prefixed(bytes)
}

/// Signs a 32-byte digest (no prefixing) and returns the 65-byte signature `r‖s‖v` as
/// lower-case `0x` hex with `v` ∈ {27, 28}. Signing is RFC 6979 deterministic and low-`s`.
pub fn sign_digest(signer: &PrivateKeySigner, digest: &B256) -> Result<String, EvmError> {
    Signer::sign_digest(signer, digest).map(signature_hex)
}

/// Parses a 65-byte `r‖s‖v` hex signature, accepting `v` ∈ {0, 1, 27, 28} and rejecting
/// high-`s` (EIP-2) signatures.
pub fn parse_signature(signature_hex: &str) -> Result<Signature, EvmError> {
    let bytes = parse_hex_bytes("signature", signature_hex)?;
    let raw = <[u8; 65]>::try_from(bytes.as_slice()).map_err(|_| EvmError::InvalidLength {
        what: "signature",
        expected: 65,
        actual: bytes.len(),
    })?;
    let parity = match raw[64] {
        0 | 27 => false,
        1 | 28 => true,
        v => return Err(EvmError::InvalidRecoveryId(v)),
    };
    let signature = Signature::new(U256::from_be_slice(&raw[..32]), U256::from_be_slice(&raw[32..64]), parity);
    if signature.s() > SECP256K1N_HALF {
        return Err(EvmError::HighS);
    }
    Ok(signature)
}

/// Recovers the address that signed `digest` (EOA recovery, no prefixing). Rejects signatures
/// that are not exactly 65 bytes of `0x` hex, have a recovery byte outside {0, 1, 27, 28}, or a
/// high `s`.
pub fn recover_authorizer(digest: &B256, signature_hex: &str) -> Result<Address, EvmError> {
    let signature = parse_signature(signature_hex)?;
    signature.recover_address_from_prehash(digest).map_err(|e| EvmError::Recovery(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn signer() -> PrivateKeySigner {
        KEY.parse().unwrap()
    }

    #[test]
    fn parses_addresses_any_case() {
        let lower = parse_address("0x779ded0c9e1022225f8e0630b35a9b54be713736").unwrap();
        let mixed = parse_address("0x779Ded0c9e1022225f8E0630b35a9b54bE713736").unwrap();
        assert_eq!(lower, mixed);
        assert_eq!(checksum(&lower), "0x779Ded0c9e1022225f8E0630b35a9b54bE713736");
        assert!(matches!(parse_address("779ded0c9e1022225f8e0630b35a9b54be713736"), Err(EvmError::InvalidHex { .. })));
        assert!(matches!(parse_address("0x779ded"), Err(EvmError::InvalidLength { expected: 20, actual: 3, .. })));
        assert!(matches!(
            parse_address("0xzz9ded0c9e1022225f8e0630b35a9b54be713736"),
            Err(EvmError::InvalidHex { .. })
        ));
    }

    #[test]
    fn parses_bytes32_and_uint() {
        assert_eq!(parse_bytes32(&format!("0x{}", "22".repeat(32))).unwrap(), B256::repeat_byte(0x22));
        assert!(parse_bytes32(&format!("0x{}", "22".repeat(31))).is_err());
        assert_eq!(parse_uint256("1000").unwrap(), U256::from(1000));
        assert_eq!(parse_uint256("0").unwrap(), U256::ZERO);
        assert_eq!(parse_uint256(&U256::MAX.to_string()).unwrap(), U256::MAX);
        for bad in ["", "-1", "+1", "1.0", " 1", "0x10", "1e3"] {
            assert!(parse_uint256(bad).is_err(), "{bad}");
        }
        let too_big = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert!(parse_uint256(too_big).is_err());
    }

    #[test]
    fn chain_ids() {
        assert_eq!(chain_id_of("eip155:196").unwrap(), 196);
        for bad in ["eip155:", "eip155:x", "solana:1", "eip155:01", "196"] {
            assert!(chain_id_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_and_recover_round_trip() {
        let digest = B256::repeat_byte(7);
        let sig = sign_digest(&signer(), &digest).unwrap();
        assert_eq!(sig.len(), 2 + 130);
        assert!(sig.ends_with("1b") || sig.ends_with("1c"));
        assert_eq!(recover_authorizer(&digest, &sig).unwrap(), signer().address());
        // v as 0/1 is accepted too.
        let mut raw = hex::decode(&sig[2..]).unwrap();
        raw[64] -= 27;
        assert_eq!(recover_authorizer(&digest, &to_hex(&raw)).unwrap(), signer().address());
    }

    #[test]
    fn rejects_bad_signatures() {
        let digest = B256::repeat_byte(7);
        let sig = sign_digest(&signer(), &digest).unwrap();
        let raw = hex::decode(&sig[2..]).unwrap();

        assert!(matches!(recover_authorizer(&digest, &sig[2..]), Err(EvmError::InvalidHex { .. })));
        assert!(matches!(recover_authorizer(&digest, "0xnothex"), Err(EvmError::InvalidHex { .. })));
        assert!(matches!(
            recover_authorizer(&digest, &to_hex(&raw[..64])),
            Err(EvmError::InvalidLength { expected: 65, actual: 64, .. })
        ));
        let mut long = raw.clone();
        long.push(0);
        assert!(matches!(recover_authorizer(&digest, &to_hex(&long)), Err(EvmError::InvalidLength { .. })));

        let mut bad_v = raw.clone();
        bad_v[64] = 29;
        assert_eq!(recover_authorizer(&digest, &to_hex(&bad_v)), Err(EvmError::InvalidRecoveryId(29)));

        // The malleable twin (n - s, flipped parity) recovers the same key but is refused.
        let parsed = parse_signature(&sig).unwrap();
        let order = SECP256K1N_HALF * U256::from(2) + U256::from(1);
        let twin = Signature::new(parsed.r(), order - parsed.s(), !parsed.v());
        assert_eq!(twin.recover_address_from_prehash(&digest).unwrap(), signer().address());
        assert_eq!(recover_authorizer(&digest, &to_hex(twin.as_bytes())), Err(EvmError::HighS));

        // r = 0 cannot be recovered.
        let mut zero_r = raw;
        zero_r[..32].fill(0);
        assert!(matches!(recover_authorizer(&digest, &to_hex(&zero_r)), Err(EvmError::Recovery(_))));
    }

    #[test]
    fn another_digest_recovers_someone_else() {
        let sig = sign_digest(&signer(), &B256::repeat_byte(1)).unwrap();
        let other = recover_authorizer(&B256::repeat_byte(2), &sig);
        assert!(other.map(|a| a != signer().address()).unwrap_or(true));
    }
}
