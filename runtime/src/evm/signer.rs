//! The [`Signer`] abstraction: something that signs raw 32-byte digests with a secp256k1 key
//! (no EIP-191 prefix), as the MPP session intent needs for `SettleAuthorization` /
//! `CloseAuthorization` (wire facts §9.4–§9.6), plus key loading that never leaks key material.
//!
//! ```
//! use pay402_runtime::evm::{B256, Signer, signature_hex, signer_from_hex};
//!
//! // With or without `0x`.
//! let signer = signer_from_hex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
//! assert_eq!(signer.address_checksummed(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
//! let signature = Signer::sign_digest(&signer, &B256::repeat_byte(7)).unwrap();
//! assert!(matches!(signature[64], 27 | 28));
//! assert_eq!(signature_hex(signature).len(), 2 + 130);
//! assert!(signer_from_hex("0x00").is_err());
//! ```

use super::{EvmError, checksum, to_hex};
use alloy_primitives::{Address, B256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use std::sync::Arc;

/// Signs raw 32-byte digests (no prefixing) with a secp256k1 key.
///
/// Implementations must return the 65-byte signature `r(32) ‖ s(32) ‖ v(1)` with `v` ∈ {27, 28}
/// and a low `s` (s ≤ n/2, EIP-2), which is what the OKX Settlement Agent and the escrow
/// contract accept. [`PrivateKeySigner`] implements it (RFC 6979 deterministic signatures); a
/// remote signer (KMS, HSM) can implement it too.
pub trait Signer: Send + Sync {
    /// Signs `digest` as is; returns `r‖s‖v` with `v` ∈ {27, 28} and low `s`.
    fn sign_digest(&self, digest: &B256) -> Result<[u8; 65], EvmError>;

    /// The signing key's address.
    fn address(&self) -> Address;

    /// The signing key's address, `0x` + EIP-55 checksummed hex.
    fn address_checksummed(&self) -> String {
        checksum(&self.address())
    }
}

impl Signer for PrivateKeySigner {
    fn sign_digest(&self, digest: &B256) -> Result<[u8; 65], EvmError> {
        let signature = self.sign_hash_sync(digest).map_err(|e| EvmError::Signing(e.to_string()))?;
        // k256 already signs low-s; normalising keeps the contract explicit (it flips `v` too).
        Ok(signature.normalized_s().as_bytes())
    }

    fn address(&self) -> Address {
        PrivateKeySigner::address(self)
    }
}

/// Forwards `Signer` through a pointer type (`&S`, `Box<S>`, `Arc<S>`).
macro_rules! forward_signer {
    ($($ptr:ty),+) => {$(
        impl<S: Signer + ?Sized> Signer for $ptr {
            fn sign_digest(&self, digest: &B256) -> Result<[u8; 65], EvmError> {
                (**self).sign_digest(digest)
            }

            fn address(&self) -> Address {
                (**self).address()
            }

            fn address_checksummed(&self) -> String {
                (**self).address_checksummed()
            }
        }
    )+};
}

forward_signer!(&S, Box<S>, Arc<S>);

/// Loads a secp256k1 private key from 64 hex digits, with or without a `0x` / `0X` prefix
/// (surrounding ASCII whitespace, e.g. the newline of a key file, is ignored).
///
/// Fails with [`EvmError::InvalidPrivateKey`] when the text is not 32 bytes of hex, or the
/// scalar is zero or not below the curve order. The error never contains the input.
pub fn signer_from_hex(key: &str) -> Result<PrivateKeySigner, EvmError> {
    let key = key.trim_ascii();
    let digits = key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")).unwrap_or(key);
    if digits.len() != 64 {
        return Err(EvmError::InvalidPrivateKey("expected 32 bytes (64 hex digits)"));
    }
    let mut bytes = B256::ZERO;
    alloy_primitives::hex::decode_to_slice(digits, bytes.as_mut_slice())
        .map_err(|_| EvmError::InvalidPrivateKey("not hexadecimal"))?;
    let signer = PrivateKeySigner::from_bytes(&bytes)
        .map_err(|_| EvmError::InvalidPrivateKey("not a valid secp256k1 scalar (zero or not below the curve order)"));
    bytes.as_mut_slice().fill(0);
    signer
}

/// A 65-byte signature as `0x` + lower-case hex (132 characters), the wire form of
/// `payeeSignature` / `voucherSignature`.
pub fn signature_hex(signature: [u8; 65]) -> String {
    to_hex(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::{SECP256K1N_HALF, U256, recover_authorizer};

    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn loads_keys_with_or_without_prefix() {
        let plain = signer_from_hex(KEY).unwrap();
        let prefixed = signer_from_hex(&format!("0x{KEY}")).unwrap();
        let upper = signer_from_hex(&format!("0X{}", KEY.to_uppercase())).unwrap();
        let padded = signer_from_hex(&format!(" 0x{KEY}\n")).unwrap();
        assert_eq!(plain.address(), prefixed.address());
        assert_eq!(plain.address(), upper.address());
        assert_eq!(plain.address(), padded.address());
        assert_eq!(Signer::address_checksummed(&plain), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    }

    #[test]
    fn rejects_bad_keys_without_echoing_them() {
        let order = SECP256K1N_HALF * U256::from(2) + U256::from(1);
        let bad = [
            String::new(),
            "0x".into(),
            KEY[..62].into(),
            format!("{KEY}00"),
            format!("0x{}zz", &KEY[..62]),
            format!("0x0x{}", &KEY[..62]),
            "0".repeat(64),
            format!("{order:064x}"),
            format!("{:064x}", U256::MAX),
        ];
        for key in bad {
            let err = signer_from_hex(&key).unwrap_err();
            assert!(matches!(err, EvmError::InvalidPrivateKey(_)), "{err:?}");
            let shown = format!("{err} {err:?}");
            if key.len() > 8 {
                assert!(!shown.contains(&key[key.len() - 8..]), "{shown}");
            }
        }
        // n - 1 is the largest valid key.
        assert!(signer_from_hex(&format!("{:064x}", order - U256::from(1))).is_ok());
    }

    #[test]
    fn signs_low_s_with_v_27_or_28_through_any_pointer() {
        let signer = signer_from_hex(KEY).unwrap();
        let digest = B256::repeat_byte(0x42);
        let raw = Signer::sign_digest(&signer, &digest).unwrap();
        assert!(matches!(raw[64], 27 | 28));
        assert!(U256::from_be_slice(&raw[32..64]) <= SECP256K1N_HALF);
        let hex = signature_hex(raw);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(recover_authorizer(&digest, &hex).unwrap(), signer.address());

        let boxed: Box<dyn Signer> = Box::new(signer.clone());
        let shared: Arc<dyn Signer> = Arc::new(signer.clone());
        assert_eq!(boxed.sign_digest(&digest).unwrap(), raw);
        assert_eq!(shared.sign_digest(&digest).unwrap(), raw);
        assert_eq!((&signer as &dyn Signer).address(), shared.address());
        assert_eq!(boxed.address_checksummed(), shared.address_checksummed());
        // The free function agrees with the trait.
        assert_eq!(crate::evm::sign_digest(&signer, &digest).unwrap(), hex);
    }
}
