//! [`Payer`]: what every buyer signs payments with — the key, a clock, a nonce source and the
//! token registry. The x402 `exact` scheme client and the MPP charge and session clients each
//! hold one, so their test seams (`with_clock`, `with_nonce_source`, `with_registry`) are written
//! once, here.
//!
//! ```
//! use pay402_runtime::evm::{self, B256, Payer, PrivateKeySigner, U256};
//!
//! let signer: PrivateKeySigner =
//!     "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
//! let payer = Payer::new(signer).with_clock(|| 1_000).with_nonce_source(|| B256::repeat_byte(7));
//! let token = evm::parse_address("0x779ded0c9e1022225f8e0630b35a9b54be713736").unwrap();
//! let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, token);
//! let (message, signature) = payer.sign_transfer(&domain, token, U256::from(5), (U256::ZERO, U256::from(1_300))).unwrap();
//! assert_eq!((payer.now(), message.nonce), (1_000, B256::repeat_byte(7)));
//! let digest = evm::transfer_authorization_digest(&domain, &message);
//! assert_eq!(evm::recover_authorizer(&digest, &signature).unwrap(), payer.address());
//! ```

use super::{
    Address, B256, Eip712Domain, EvmError, Signer, TransferWithAuthorization, U256, UnixClock, signature_hex,
    system_clock, transfer_authorization_digest,
};
use crate::chain::NetworkRegistry;
use std::fmt;
use std::sync::Arc;

/// How far before "now" a buyer's EIP-3009 authorization becomes valid (clock-skew allowance, as
/// OKX's and Coinbase's clients do): x402 `exact` payments, MPP charges and session deposits.
pub const VALID_AFTER_SKEW_SECONDS: u64 = 600;

type NonceSource = Arc<dyn Fn() -> B256 + Send + Sync>;

/// A buyer's signing kit: the key ([`Signer`]), a Unix clock, a source of 32-byte nonces (EIP-3009
/// nonces, channel salts) and the [`NetworkRegistry`] that names the tokens' EIP-712 domains.
///
/// By default: the system clock, random nonces and the process-wide [`NetworkRegistry::global`]
/// (read at each use). `Debug` shows the address only, never key material.
#[derive(Clone)]
pub struct Payer {
    signer: Arc<dyn Signer>,
    clock: UnixClock,
    nonces: NonceSource,
    registry: Option<Arc<NetworkRegistry>>,
}

impl fmt::Debug for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payer").field("address", &self.signer.address()).finish_non_exhaustive()
    }
}

impl Payer {
    /// Signs with `signer`, the system clock, random nonces and the process-wide registry.
    pub fn new(signer: impl Signer + 'static) -> Self {
        Self { signer: Arc::new(signer), clock: system_clock(), nonces: Arc::new(B256::random), registry: None }
    }

    /// Replaces the clock (Unix seconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces the source of 32-byte nonces (one per EIP-3009 authorization, one per channel
    /// salt), for tests.
    pub fn with_nonce_source(mut self, nonces: impl Fn() -> B256 + Send + Sync + 'static) -> Self {
        self.nonces = Arc::new(nonces);
        self
    }

    /// Uses `registry` for the tokens' EIP-712 name and version.
    pub fn with_registry(mut self, registry: NetworkRegistry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// The payer address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The current Unix time in seconds.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// A fresh 32-byte nonce.
    pub fn nonce(&self) -> B256 {
        (self.nonces)()
    }

    /// The token registry: the configured one, else the process-wide one.
    pub fn registry(&self) -> Arc<NetworkRegistry> {
        self.registry.clone().unwrap_or_else(NetworkRegistry::global)
    }

    /// Signs `digest` as is; the 65-byte `r‖s‖v` signature as lower-case `0x` hex.
    pub fn sign_digest(&self, digest: &B256) -> Result<String, EvmError> {
        self.signer.sign_digest(digest).map(signature_hex)
    }

    /// Signs an EIP-3009 `TransferWithAuthorization` of `value` from this payer to `to` under
    /// `domain`, valid strictly between `valid_after` and `valid_before` (Unix seconds), with a
    /// fresh nonce. Returns the message and its `0x` hex signature.
    pub fn sign_transfer(
        &self,
        domain: &Eip712Domain,
        to: Address,
        value: U256,
        (valid_after, valid_before): (U256, U256),
    ) -> Result<(TransferWithAuthorization, String), EvmError> {
        let message = TransferWithAuthorization {
            from: self.address(),
            to,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce: self.nonce(),
        };
        let signature = self.sign_digest(&transfer_authorization_digest(domain, &message))?;
        Ok((message, signature))
    }
}

/// The inherent test seams of a buyer type holding a `payer: Payer` field: `with_clock`,
/// `with_nonce_source`, `address`, and (with `registry`) `with_registry`.
macro_rules! payer_seams {
    () => {
        /// Replaces the clock (Unix seconds), for tests.
        pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
            self.payer = self.payer.with_clock(clock);
            self
        }

        /// Replaces the source of 32-byte nonces (one per EIP-3009 authorization, one per
        /// channel salt), for tests.
        pub fn with_nonce_source(mut self, nonces: impl Fn() -> $crate::evm::B256 + Send + Sync + 'static) -> Self {
            self.payer = self.payer.with_nonce_source(nonces);
            self
        }

        /// The payer address.
        pub fn address(&self) -> $crate::evm::Address {
            self.payer.address()
        }
    };
    (registry) => {
        $crate::evm::payer_seams!();

        /// Uses `registry` for the tokens' EIP-712 name and version.
        pub fn with_registry(mut self, registry: $crate::chain::NetworkRegistry) -> Self {
            self.payer = self.payer.with_registry(registry);
            self
        }
    };
}
pub(crate) use payer_seams;
