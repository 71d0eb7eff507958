//! Signer recovery for channel signatures (MPP session vouchers, settle/close authorizations):
//! the public key is recovered once and hashed to an address, with a choice of two backends.
//!
//! * [`Backend::K256`] (always compiled, the default) — pure Rust on the `k256` crate. It
//!   computes `Q = r⁻¹·(s·R − z·G)` with one double-scalar multiplication and stops there:
//!   `k256`'s own `recover_from_prehash` (what alloy's `recover_address_from_prehash` calls)
//!   then *verifies* the signature against the key it just recovered, a second double-scalar
//!   multiplication that cannot fail — `R`'s x coordinate is `r` itself (never reduced, the
//!   recovery id is 0 or 1), so `u₁·G + u₂·Q = (z·G + r·Q)/s = R` holds by construction. Skipping
//!   it roughly doubles the throughput.
//! * `Backend::Secp256k1` (cargo feature `secp256k1`) — Bitcoin Core's libsecp256k1 (C), about
//!   three times faster again. With the feature enabled it becomes the [`Backend::DEFAULT`] used
//!   by voucher verification.
//!
//! Both enforce the same rules (wire facts §9.6, EIP-2): `r` and `s` in `[1, n)`, `s ≤ n/2`,
//! `R` on the curve, `Q` not the point at infinity; they return identical results on every input
//! (`tests/signature_backends.rs` checks a shared corpus of valid, wrong-signer, high-`s` and
//! malformed signatures against both, and against alloy).
//!
//! ```
//! use pay402_runtime::evm::recover::{self, Backend};
//! use pay402_runtime::evm::{self, B256, Signer, channel, signer_from_hex};
//!
//! let key = signer_from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
//! let digest = B256::repeat_byte(7);
//! let raw = key.sign_digest(&digest).unwrap(); // r‖s‖v
//! let signature = channel::parse_channel_signature(&evm::signature_hex(raw)).unwrap();
//! assert_eq!(recover::recover_address(Backend::K256, &digest, &signature), Ok(key.address()));
//! assert_eq!(recover::recover_address(Backend::DEFAULT, &digest, &signature), Ok(key.address()));
//! ```

use super::SECP256K1N_HALF;
use alloy_primitives::{Address, B256, Signature, keccak256};
use std::fmt;

/// A recovery backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Pure Rust (`k256`), recovery without the redundant verification.
    K256,
    /// libsecp256k1 (C), cargo feature `secp256k1`.
    #[cfg(feature = "secp256k1")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secp256k1")))]
    Secp256k1,
}

impl Backend {
    /// The backend voucher verification uses: [`Backend::Secp256k1`] when the `secp256k1`
    /// feature is enabled, else [`Backend::K256`].
    #[cfg(feature = "secp256k1")]
    pub const DEFAULT: Self = Self::Secp256k1;
    /// The backend voucher verification uses: `Backend::Secp256k1` when the `secp256k1`
    /// feature is enabled, else [`Backend::K256`].
    #[cfg(not(feature = "secp256k1"))]
    pub const DEFAULT: Self = Self::K256;

    /// Every backend compiled into this build.
    pub const ALL: &'static [Self] = &[
        Self::K256,
        #[cfg(feature = "secp256k1")]
        Self::Secp256k1,
    ];

    /// A short name (`k256`, `secp256k1`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::K256 => "k256",
            #[cfg(feature = "secp256k1")]
            Self::Secp256k1 => "secp256k1",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no signer could be recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// `s` is above n/2 (malleable, EIP-2).
    #[error("signature s value is not canonical (high s)")]
    HighS,
    /// `r` or `s` is zero or not below the group order, `r` is not the x coordinate of a curve
    /// point, or the recovered key is the point at infinity.
    #[error("no public key recovers from the signature")]
    Invalid,
}

/// Recovers the address that signed the 32-byte `digest` (raw ECDSA over the prehash, no
/// message prefix) with `backend`. The parity of `signature` selects `R`'s y coordinate.
pub fn recover_address(backend: Backend, digest: &B256, signature: &Signature) -> Result<Address, RecoverError> {
    if signature.s() > SECP256K1N_HALF {
        return Err(RecoverError::HighS);
    }
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&signature.r().to_be_bytes::<32>());
    s.copy_from_slice(&signature.s().to_be_bytes::<32>());
    let public = match backend {
        Backend::K256 => k256_backend::recover(digest, &r, &s, signature.v())?,
        #[cfg(feature = "secp256k1")]
        Backend::Secp256k1 => secp256k1_backend::recover(digest, &r, &s, signature.v())?,
    };
    Ok(address_of(&public))
}

/// The address of an uncompressed public key `x‖y` (64 bytes): the last 20 bytes of its
/// Keccak-256.
fn address_of(public: &[u8; 64]) -> Address {
    Address::from_slice(&keccak256(public)[12..])
}

mod k256_backend {
    use super::RecoverError;
    use alloy_primitives::B256;
    use alloy_signer::k256::elliptic_curve::ops::{LinearCombination, Reduce};
    use alloy_signer::k256::elliptic_curve::point::DecompressPoint;
    use alloy_signer::k256::elliptic_curve::sec1::ToEncodedPoint;
    use alloy_signer::k256::elliptic_curve::subtle::Choice;
    use alloy_signer::k256::elliptic_curve::{Group, PrimeField};
    use alloy_signer::k256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar, U256};

    /// A scalar in `[1, n)`, or `None`.
    fn nonzero_scalar(bytes: &[u8; 32]) -> Option<Scalar> {
        let scalar: Option<Scalar> = Scalar::from_repr(FieldBytes::from(*bytes)).into();
        scalar.filter(|s| !bool::from(s.is_zero()))
    }

    pub(super) fn recover(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool) -> Result<[u8; 64], RecoverError> {
        let r_scalar = nonzero_scalar(r).ok_or(RecoverError::Invalid)?;
        let s_scalar = nonzero_scalar(s).ok_or(RecoverError::Invalid)?;
        // r < n < p, so r is a field element; no point ⇒ not a signature.
        let big_r: Option<AffinePoint> =
            AffinePoint::decompress(&FieldBytes::from(*r), Choice::from(u8::from(odd_y))).into();
        let big_r = big_r.ok_or(RecoverError::Invalid)?;
        let z = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(digest.0));
        let r_inv: Option<Scalar> = r_scalar.invert().into();
        let r_inv = r_inv.ok_or(RecoverError::Invalid)?;
        let u1 = -(r_inv * z);
        let u2 = r_inv * s_scalar;
        let q = ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, &u1, &ProjectivePoint::from(big_r), &u2);
        if bool::from(q.is_identity()) {
            return Err(RecoverError::Invalid);
        }
        let encoded = q.to_affine().to_encoded_point(false);
        let mut public = [0u8; 64];
        public.copy_from_slice(encoded.as_bytes().get(1..65).ok_or(RecoverError::Invalid)?);
        Ok(public)
    }
}

#[cfg(feature = "secp256k1")]
mod secp256k1_backend {
    use super::RecoverError;
    use alloy_primitives::B256;
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    use secp256k1::{Message, Secp256k1, VerifyOnly};
    use std::sync::LazyLock;

    /// One verification context for the process (building one allocates and precomputes).
    static CONTEXT: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

    pub(super) fn recover(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool) -> Result<[u8; 64], RecoverError> {
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(r);
        compact[32..].copy_from_slice(s);
        let id = if odd_y { RecoveryId::One } else { RecoveryId::Zero };
        // Refuses r or s ≥ n; recovery refuses r = 0, s = 0 and r off the curve.
        let signature = RecoverableSignature::from_compact(&compact, id).map_err(|_| RecoverError::Invalid)?;
        let key =
            CONTEXT.recover_ecdsa(Message::from_digest(digest.0), &signature).map_err(|_| RecoverError::Invalid)?;
        let uncompressed = key.serialize_uncompressed();
        let mut public = [0u8; 64];
        public.copy_from_slice(&uncompressed[1..]);
        Ok(public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::channel::parse_channel_signature;
    use crate::evm::{Signer, signature_hex, signer_from_hex};
    use alloy_primitives::{U256, uint};

    const N: U256 = uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);

    #[test]
    fn every_backend_matches_alloy() {
        let key = signer_from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        for i in 0u8..16 {
            let digest = keccak256([i]);
            let sig = parse_channel_signature(&signature_hex(key.sign_digest(&digest).unwrap())).unwrap();
            for &backend in Backend::ALL {
                assert_eq!(recover_address(backend, &digest, &sig), Ok(key.address()), "{backend}");
            }
            let high = Signature::new(sig.r(), N - sig.s(), !sig.v());
            for &backend in Backend::ALL {
                assert_eq!(recover_address(backend, &digest, &high), Err(RecoverError::HighS), "{backend}");
            }
            let zero_r = Signature::new(U256::ZERO, sig.s(), sig.v());
            for &backend in Backend::ALL {
                assert_eq!(recover_address(backend, &digest, &zero_r), Err(RecoverError::Invalid), "{backend}");
            }
        }
    }
}
