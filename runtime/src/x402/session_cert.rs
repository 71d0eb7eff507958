//! [`DevSessionCert`]: pay402's **development** session certificate for the x402
//! `aggr_deferred` scheme — a wallet's signed delegation to a session key.
//!
//! See [`DevSessionCert`] for the format.
//!
//! ```
//! use pay402_runtime::evm::PrivateKeySigner;
//! use pay402_runtime::x402::DevSessionCert;
//!
//! let wallet = PrivateKeySigner::random();
//! let session = PrivateKeySigner::random();
//! let cert = DevSessionCert::issue(&wallet, session.address(), 2_000_000_000).unwrap();
//! let checked = DevSessionCert::verify(&cert, 1_900_000_000).unwrap();
//! assert_eq!((checked.wallet, checked.session_key), (wallet.address(), session.address()));
//! assert!(DevSessionCert::verify(&cert, 2_000_000_000).is_err()); // expired
//! ```

use crate::evm::{self, Address, Signer};
use alloy_primitives::eip191_hash_message;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The only claims version [`DevSessionCert`] issues and accepts.
pub const DEV_SESSION_CERT_VERSION: u32 = 1;

/// Largest certificate [`DevSessionCert::verify`] decodes (bytes).
const MAX_CERT_BYTES: usize = 2048;

/// Why a development session certificate was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionCertError {
    /// Not `base64url(claims).signature`, or the claims are not the expected JSON.
    #[error("malformed session certificate")]
    Malformed,
    /// A claims version other than [`DEV_SESSION_CERT_VERSION`].
    #[error("unsupported session certificate version {0}")]
    Version(u32),
    /// The signature is not the wallet's.
    #[error("the session certificate is not signed by its wallet")]
    BadSignature,
    /// `expiresAt` is not in the future.
    #[error("the session certificate expired at {0}")]
    Expired(u64),
    /// The wallet could not sign.
    #[error("cannot sign the session certificate: {0}")]
    Signing(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Claims {
    v: u32,
    wallet: String,
    session_key: String,
    expires_at: u64,
}

/// A verified development session certificate: `wallet` delegated payments to `session_key`
/// until `expires_at`.
///
/// In production the session certificate of `aggr_deferred` is issued by OKX's Agentic Wallet
/// and checked by OKX's facilitator inside its TEE; its content is opaque to pay402 (the buyer
/// copies it into `accepted.extra.sessionCert`, the seller forwards it). To let any process pay
/// and any [`EmbeddedFacilitator`](super::EmbeddedFacilitator) settle `aggr_deferred` without
/// OKX and without a shared secret, pay402 defines this format of its own (it is **not** OKX's):
///
/// ```text
/// cert   = base64url(claims) "." signature
/// claims = {"v":1,"wallet":"0x…","sessionKey":"0x…","expiresAt":<unix seconds>}   (UTF-8 JSON)
/// signature = 0x-hex r‖s‖v of the wallet over EIP-191 personal_sign(claims bytes)
/// ```
///
/// (`base64url` without padding; the signature covers the exact bytes that were encoded.) The
/// facilitator recovers the signer of the claims, requires it to be `wallet`, requires
/// `sessionKey` to be the authorization's `from` and `expiresAt` to be in the future, and then
/// charges `wallet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevSessionCert {
    /// The wallet that signed the delegation (the payer of every payment the session key signs).
    pub wallet: Address,
    /// The delegated session key.
    pub session_key: Address,
    /// Unix seconds after which the certificate is refused.
    pub expires_at: u64,
}

impl DevSessionCert {
    /// Makes a certificate string: `wallet` delegates to `session_key` until `expires_at` (Unix
    /// seconds).
    pub fn issue(wallet: &dyn Signer, session_key: Address, expires_at: u64) -> Result<String, SessionCertError> {
        let claims = Claims {
            v: DEV_SESSION_CERT_VERSION,
            wallet: wallet.address_checksummed(),
            session_key: evm::checksum(&session_key),
            expires_at,
        };
        let bytes = serde_json::to_vec(&claims).map_err(|e| SessionCertError::Signing(e.to_string()))?;
        let signature =
            wallet.sign_digest(&eip191_hash_message(&bytes)).map_err(|e| SessionCertError::Signing(e.to_string()))?;
        Ok(format!("{}.{}", URL_SAFE_NO_PAD.encode(&bytes), evm::signature_hex(signature)))
    }

    /// Decodes `cert` and checks it at `now` (Unix seconds): version, the wallet's signature,
    /// expiry. Does not check the session key against a payment (the caller does).
    pub fn verify(cert: &str, now: u64) -> Result<Self, SessionCertError> {
        if cert.len() > MAX_CERT_BYTES {
            return Err(SessionCertError::Malformed);
        }
        let (encoded, signature) = cert.split_once('.').ok_or(SessionCertError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| SessionCertError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| SessionCertError::Malformed)?;
        if claims.v != DEV_SESSION_CERT_VERSION {
            return Err(SessionCertError::Version(claims.v));
        }
        let wallet = evm::parse_address(&claims.wallet).map_err(|_| SessionCertError::Malformed)?;
        let session_key = evm::parse_address(&claims.session_key).map_err(|_| SessionCertError::Malformed)?;
        let signer = evm::recover_authorizer(&eip191_hash_message(&bytes), signature)
            .map_err(|_| SessionCertError::BadSignature)?;
        if signer != wallet {
            return Err(SessionCertError::BadSignature);
        }
        if claims.expires_at <= now {
            return Err(SessionCertError::Expired(claims.expires_at));
        }
        Ok(Self { wallet, session_key, expires_at: claims.expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::PrivateKeySigner;

    fn key(byte: u8) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&[byte; 32].into()).unwrap()
    }

    #[test]
    fn round_trip_and_refusals() {
        let (wallet, session, other) = (key(1), key(2), key(3));
        let cert = DevSessionCert::issue(&wallet, session.address(), 1_000).unwrap();
        let ok = DevSessionCert::verify(&cert, 999).unwrap();
        assert_eq!(ok, DevSessionCert { wallet: wallet.address(), session_key: session.address(), expires_at: 1_000 });
        assert_eq!(DevSessionCert::verify(&cert, 1_000), Err(SessionCertError::Expired(1_000)));

        // Signed by another key than the wallet it names.
        let (claims, _) = cert.split_once('.').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(claims).unwrap();
        let forged_sig = evm::signature_hex(other.sign_digest(&eip191_hash_message(&bytes)).unwrap());
        assert_eq!(DevSessionCert::verify(&format!("{claims}.{forged_sig}"), 0), Err(SessionCertError::BadSignature));

        // Edited claims (a later expiry) no longer match the signature.
        let text = String::from_utf8(bytes).unwrap().replace("1000", "9000");
        let (_, sig) = cert.split_once('.').unwrap();
        let edited = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(text.as_bytes()));
        assert_eq!(DevSessionCert::verify(&edited, 0), Err(SessionCertError::BadSignature));

        for junk in ["", "abc", "abc.0x12", &"a".repeat(MAX_CERT_BYTES + 1)] {
            assert_eq!(DevSessionCert::verify(junk, 0), Err(SessionCertError::Malformed), "{junk}");
        }
        let v2 =
            format!("{}.{sig}", URL_SAFE_NO_PAD.encode(br#"{"v":2,"wallet":"0x0","sessionKey":"0x0","expiresAt":1}"#));
        assert_eq!(DevSessionCert::verify(&v2, 0), Err(SessionCertError::Version(2)));
    }
}
