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
//! Once a signer's key is known (a [`SignerKey`], from [`recover_key`]), later signatures can be
//! checked against it with [`signed_by`] instead of being recovered again. [`signed_by`] accepts
//! exactly the signatures whose recovery gives the key's address — so, unlike a plain ECDSA
//! verification (`k256`'s `verify_prehash`, libsecp256k1's `verify_ecdsa`), which compares x
//! coordinates only, it refuses a valid `(r, s)` sent with the wrong parity `v`. With `k256` it
//! computes `u₁·G + u₂·Q` and requires exactly `R` (x coordinate `r`, parity `v`), skipping the
//! square root that lifts `r` to `R` and the Keccak of the key; with libsecp256k1, whose
//! verification cannot see the parity, it recovers and compares the key, skipping only the
//! serialization and the Keccak. (`r` and `s` are public, so both invert them in variable time.)
//!
//! Both enforce the same rules (wire facts §9.6, EIP-2): `r` and `s` in `[1, n)`, `s ≤ n/2`,
//! `R` on the curve, `Q` not the point at infinity; they return identical results on every input
//! (`tests/signature_backends.rs` checks a shared corpus of valid, wrong-signer, high-`s` and
//! malformed signatures against both, and against alloy).
//!
//! ```
//! use pay402_runtime::evm::recover::{self, Backend};
//! use pay402_runtime::evm::{self, B256, Signer, signer_from_hex};
//!
//! let key = signer_from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
//! let digest = B256::repeat_byte(7);
//! let raw = key.sign_digest(&digest).unwrap(); // r‖s‖v
//! let signature = evm::parse_channel_signature(&evm::signature_hex(raw)).unwrap();
//! assert_eq!(recover::recover_address(Backend::K256, &digest, &signature), Ok(key.address()));
//! assert_eq!(recover::recover_address(Backend::DEFAULT, &digest, &signature), Ok(key.address()));
//!
//! let known = recover::recover_key(Backend::DEFAULT, &digest, &signature).unwrap();
//! let next = B256::repeat_byte(8);
//! let later = evm::parse_channel_signature(&evm::signature_hex(key.sign_digest(&next).unwrap())).unwrap();
//! assert!(recover::signed_by(Backend::DEFAULT, &next, &later, &known));
//! assert!(!recover::signed_by(Backend::DEFAULT, &digest, &later, &known));
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
    recover_public(backend, digest, signature).map(|public| address_of(&public))
}

/// Recovers the key that signed `digest`, as [`recover_address`] does, and keeps it for
/// [`signed_by`].
pub fn recover_key(backend: Backend, digest: &B256, signature: &Signature) -> Result<SignerKey, RecoverError> {
    SignerKey::from_public(&recover_public(backend, digest, signature)?)
}

/// Whether `key` signed `digest`: exactly when [`recover_address`] with the same arguments
/// would return `Ok(key.address())`, but cheaper (see the [module docs](self)).
pub fn signed_by(backend: Backend, digest: &B256, signature: &Signature, key: &SignerKey) -> bool {
    let Some((r, s)) = canonical_scalars(signature) else { return false };
    match backend {
        Backend::K256 => k256_backend::signed_by(digest, &r, &s, signature.v(), &key.k256),
        #[cfg(feature = "secp256k1")]
        Backend::Secp256k1 => secp256k1_backend::signed_by(digest, &r, &s, signature.v(), &key.secp256k1),
    }
}

/// `r` and `s` as big-endian bytes, or `None` when `s` is above n/2.
fn canonical_scalars(signature: &Signature) -> Option<([u8; 32], [u8; 32])> {
    (signature.s() <= SECP256K1N_HALF).then(|| (signature.r().to_be_bytes::<32>(), signature.s().to_be_bytes::<32>()))
}

/// The uncompressed public key `x‖y` that signed `digest`.
fn recover_public(backend: Backend, digest: &B256, signature: &Signature) -> Result<[u8; 64], RecoverError> {
    let (r, s) = canonical_scalars(signature).ok_or(RecoverError::HighS)?;
    match backend {
        Backend::K256 => k256_backend::recover(digest, &r, &s, signature.v()),
        #[cfg(feature = "secp256k1")]
        Backend::Secp256k1 => secp256k1_backend::recover(digest, &r, &s, signature.v()),
    }
}

/// A signer's public key with its address, parsed once for every backend, so that later
/// signatures can be checked with [`signed_by`] instead of recovered. Obtained only from
/// [`recover_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerKey {
    address: Address,
    k256: alloy_signer::k256::AffinePoint,
    #[cfg(feature = "secp256k1")]
    secp256k1: secp256k1::PublicKey,
}

impl SignerKey {
    /// The key's address (the last 20 bytes of the Keccak-256 of `x‖y`).
    pub const fn address(&self) -> Address {
        self.address
    }

    fn from_public(public: &[u8; 64]) -> Result<Self, RecoverError> {
        Ok(Self {
            address: address_of(public),
            k256: k256_backend::parse(public).ok_or(RecoverError::Invalid)?,
            #[cfg(feature = "secp256k1")]
            secp256k1: secp256k1_backend::parse(public).ok_or(RecoverError::Invalid)?,
        })
    }
}

/// The address of an uncompressed public key `x‖y` (64 bytes): the last 20 bytes of its
/// Keccak-256.
fn address_of(public: &[u8; 64]) -> Address {
    Address::from_slice(&keccak256(public)[12..])
}

mod k256_backend {
    use super::RecoverError;
    use alloy_primitives::B256;
    use alloy_signer::k256::elliptic_curve::ops::{Invert, LinearCombination, Reduce};
    use alloy_signer::k256::elliptic_curve::point::{AffineCoordinates, DecompressPoint};
    use alloy_signer::k256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
    use alloy_signer::k256::elliptic_curve::subtle::Choice;
    use alloy_signer::k256::elliptic_curve::{Group, PrimeField};
    use alloy_signer::k256::{AffinePoint, EncodedPoint, FieldBytes, ProjectivePoint, Scalar, U256};

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
        // r is public: the variable-time inversion is safe and several times faster.
        let r_inv: Option<Scalar> = r_scalar.invert_vartime().into();
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

    /// The point `x‖y`, if it is on the curve.
    pub(super) fn parse(public: &[u8; 64]) -> Option<AffinePoint> {
        AffinePoint::from_encoded_point(&EncodedPoint::from_untagged_bytes(public.into())).into()
    }

    /// Whether recovery would give `key`: `u₁·G + u₂·Q` (`u₁ = z/s`, `u₂ = r/s`) must be
    /// exactly the point recovery lifts `r` to — x coordinate `r` itself and y parity `odd_y` —
    /// for then recovery's `r⁻¹·(s·R − z·G)` is `Q`; conversely recovery giving `Q` means that
    /// point is `R`.
    pub(super) fn signed_by(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool, key: &AffinePoint) -> bool {
        let (Some(r_scalar), Some(s_scalar)) = (nonzero_scalar(r), nonzero_scalar(s)) else {
            return false;
        };
        let s_inv: Option<Scalar> = s_scalar.invert_vartime().into();
        let Some(s_inv) = s_inv else { return false };
        let z = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(digest.0));
        let big_r = ProjectivePoint::lincomb(
            &ProjectivePoint::GENERATOR,
            &(z * s_inv),
            &ProjectivePoint::from(*key),
            &(r_scalar * s_inv),
        );
        if bool::from(big_r.is_identity()) {
            return false;
        }
        let big_r = big_r.to_affine();
        big_r.x() == FieldBytes::from(*r) && bool::from(big_r.y_is_odd()) == odd_y
    }
}

#[cfg(feature = "secp256k1")]
mod secp256k1_backend {
    use super::RecoverError;
    use alloy_primitives::B256;
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    use secp256k1::{Message, PublicKey, Secp256k1, VerifyOnly};
    use std::sync::LazyLock;

    /// One verification context for the process (building one allocates and precomputes).
    static CONTEXT: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

    fn recover_key(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool) -> Result<PublicKey, secp256k1::Error> {
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(r);
        compact[32..].copy_from_slice(s);
        let id = if odd_y { RecoveryId::One } else { RecoveryId::Zero };
        // Refuses r or s ≥ n; recovery refuses r = 0, s = 0 and r off the curve.
        let signature = RecoverableSignature::from_compact(&compact, id)?;
        CONTEXT.recover_ecdsa(Message::from_digest(digest.0), &signature)
    }

    pub(super) fn recover(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool) -> Result<[u8; 64], RecoverError> {
        let key = recover_key(digest, r, s, odd_y).map_err(|_| RecoverError::Invalid)?;
        let uncompressed = key.serialize_uncompressed();
        let mut public = [0u8; 64];
        public.copy_from_slice(&uncompressed[1..]);
        Ok(public)
    }

    /// The key `x‖y`, if it is on the curve.
    pub(super) fn parse(public: &[u8; 64]) -> Option<PublicKey> {
        let mut tagged = [4u8; 65];
        tagged[1..].copy_from_slice(public);
        PublicKey::from_slice(&tagged).ok()
    }

    /// Whether recovery gives `key`. libsecp256k1's verification is faster but ignores the
    /// parity `v` that recovery depends on, so this recovers and compares the keys, skipping
    /// only the serialization and the Keccak.
    pub(super) fn signed_by(digest: &B256, r: &[u8; 32], s: &[u8; 32], odd_y: bool, key: &PublicKey) -> bool {
        recover_key(digest, r, s, odd_y).is_ok_and(|recovered| recovered == *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::parse_channel_signature;
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

    #[test]
    fn signed_by_accepts_exactly_what_recovers_to_the_key() {
        let key = signer_from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        let first = keccak256([0xffu8]);
        let sig = parse_channel_signature(&signature_hex(key.sign_digest(&first).unwrap())).unwrap();
        for &backend in Backend::ALL {
            let known = recover_key(backend, &first, &sig).unwrap();
            assert_eq!(known.address(), key.address());
            for &other in Backend::ALL {
                assert_eq!(recover_key(other, &first, &sig).as_ref(), Ok(&known), "{backend} vs {other}");
            }
            for i in 0u8..16 {
                let digest = keccak256([i]);
                let sig = parse_channel_signature(&signature_hex(key.sign_digest(&digest).unwrap())).unwrap();
                let candidates = [
                    sig,
                    Signature::new(sig.r(), sig.s(), !sig.v()), // the other R: another key
                    Signature::new(sig.r(), N - sig.s(), !sig.v()), // high s
                    Signature::new(sig.r(), N - sig.s(), sig.v()), // high s
                    Signature::new(U256::ZERO, sig.s(), sig.v()), // r = 0
                    Signature::new(sig.r(), U256::ZERO, sig.v()), // s = 0
                    Signature::new(N, sig.s(), sig.v()),        // r = n
                    Signature::new(U256::from(5u8), sig.s(), sig.v()), // no point has x = 5
                ];
                for candidate in candidates {
                    let recovered = recover_address(backend, &digest, &candidate);
                    assert_eq!(signed_by(backend, &digest, &candidate, &known), recovered == Ok(key.address()));
                    // Against another digest the same signature recovers someone else.
                    let wrong = keccak256([i, 1]);
                    assert!(!signed_by(backend, &wrong, &candidate, &known));
                }
                assert!(signed_by(backend, &digest, &sig, &known), "{backend}");
                assert!(!signed_by(backend, &digest, &candidates[1], &known), "{backend}: parity is checked");
            }
        }
    }
}
