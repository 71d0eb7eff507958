//! EIP-712 typed data of the OKX EVM payment channel (MPP `session` intent, wire facts §9.6):
//! the payer's [`Voucher`], and the payee's [`SettleAuthorization`] / [`CloseAuthorization`],
//! all under the escrow contract's [`ChannelDomain`].
//!
//! Digests are `keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message))`; signatures are
//! 65 bytes `r‖s‖v` (`v` ∈ {27, 28}) sent as `0x` + lower-case hex. Voucher verification
//! ([`verify_voucher_signature`]) runs on every session request, so it hashes into stack
//! buffers (no heap allocation), reuses the domain separator of the previous call on the same
//! thread, and checks the signer with the [`recover`](mod@super::recover) backend chosen at build
//! time. The first voucher of a signer recovers its public key once; the key is then kept in a
//! bounded [`SignerKeyCache`] (process-wide for [`verify_voucher_signature`], or one of your own
//! with [`verify_voucher_signature_cached`]) and later vouchers are checked against it, which is
//! cheaper and accepts and refuses exactly the same signatures. The `_with` variants take a
//! backend explicitly; [`verify_voucher_signature_with`] always recovers (no cache).
//!
//! ```
//! use pay402_runtime::evm::{self, ChannelDomain};
//! use pay402_runtime::evm::{Signer, signer_from_hex};
//!
//! let payer = signer_from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
//! let domain = ChannelDomain::default(); // X Layer (196), default escrow
//! let channel_id = evm::channel_id_from_hex("0xabab").unwrap(); // left-padded to 32 bytes
//! let signature = evm::sign_voucher(&payer, &domain, channel_id, 1_000_000).unwrap();
//! evm::verify_voucher_signature(&domain, channel_id, 1_000_000, &signature, payer.address()).unwrap();
//! assert!(evm::verify_voucher_signature(&domain, channel_id, 999, &signature, payer.address()).is_err());
//! ```

use super::recover::{self, Backend, RecoverError, SignerKey};
use super::signer::{Signer, signature_hex};
use super::{EvmError, SECP256K1N_HALF};
use crate::chain::X_LAYER_CHAIN_ID;
use alloy_primitives::{Address, B128, B256, Keccak256, Signature, U256, address, b256, hex, keccak256};
use alloy_sol_types::{Eip712Domain, sol};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, PoisonError, RwLock};

/// The OKX payment-channel escrow contract on X Layer (the EIP-712 `verifyingContract`).
pub const DEFAULT_ESCROW_CONTRACT: Address = address!("0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b");

/// The EIP-712 domain name of the escrow contract.
pub const DEFAULT_DOMAIN_NAME: &str = "EVM Payment Channel";

/// The EIP-712 domain version of the escrow contract.
pub const DEFAULT_DOMAIN_VERSION: &str = "1";

/// The default `deadline` of settle/close authorizations: 2^256 − 1 (never expires; sent as the
/// 78-digit decimal string).
pub const DEFAULT_DEADLINE: U256 = U256::MAX;

/// The EIP-712 domain type string of the escrow contract.
pub const CHANNEL_DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";

/// The voucher type string.
pub const VOUCHER_TYPE: &str = "Voucher(bytes32 channelId,uint128 cumulativeAmount)";

/// The settle-authorization type string.
pub const SETTLE_AUTHORIZATION_TYPE: &str =
    "SettleAuthorization(bytes32 channelId,uint128 cumulativeAmount,uint256 nonce,uint256 deadline)";

/// The close-authorization type string.
pub const CLOSE_AUTHORIZATION_TYPE: &str =
    "CloseAuthorization(bytes32 channelId,uint128 cumulativeAmount,uint256 nonce,uint256 deadline)";

/// `keccak256(CHANNEL_DOMAIN_TYPE)`.
pub const CHANNEL_DOMAIN_TYPEHASH: B256 = b256!("0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f");

/// `keccak256(VOUCHER_TYPE)`.
pub const VOUCHER_TYPEHASH: B256 = b256!("0xe97c93f01d3ef8eaba1586553df13308f236815bf4ea49c7b696895d8f5ea68a");

/// `keccak256(SETTLE_AUTHORIZATION_TYPE)`.
pub const SETTLE_AUTHORIZATION_TYPEHASH: B256 =
    b256!("0xe770f70d6fd56150ce37d91208e1671a83000c526586c0e72730729aafc7824b");

/// `keccak256(CLOSE_AUTHORIZATION_TYPE)`.
pub const CLOSE_AUTHORIZATION_TYPEHASH: B256 =
    b256!("0x2927c9b6c7c7351a28bdb714bc3cad978db4e5644eb85cd68583d41353ae4474");

sol! {
    /// The payer's voucher: the channel may pay out up to `cumulativeAmount` in total.
    #[derive(Debug, PartialEq, Eq)]
    struct Voucher {
        /// The channel (escrow) id.
        bytes32 channelId;
        /// Total amount authorised so far (base units).
        uint128 cumulativeAmount;
    }

    /// The payee's authorization to settle `cumulativeAmount` on chain, keeping the channel open.
    #[derive(Debug, PartialEq, Eq)]
    struct SettleAuthorization {
        /// The channel (escrow) id.
        bytes32 channelId;
        /// The voucher amount being settled.
        uint128 cumulativeAmount;
        /// Replay-protection nonce (from a [`NonceProvider`]).
        uint256 nonce;
        /// Unix time after which the authorization is void.
        uint256 deadline;
    }

    /// The payee's authorization to close the channel at `cumulativeAmount`.
    #[derive(Debug, PartialEq, Eq)]
    struct CloseAuthorization {
        /// The channel (escrow) id.
        bytes32 channelId;
        /// The final voucher amount.
        uint128 cumulativeAmount;
        /// Replay-protection nonce (from a [`NonceProvider`]).
        uint256 nonce;
        /// Unix time after which the authorization is void.
        uint256 deadline;
    }
}

/// The escrow contract's EIP-712 domain `{name, version, chainId, verifyingContract}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelDomain {
    /// Domain name ([`DEFAULT_DOMAIN_NAME`]).
    pub name: String,
    /// Domain version ([`DEFAULT_DOMAIN_VERSION`]).
    pub version: String,
    /// EVM chain id (196 on X Layer).
    pub chain_id: u64,
    /// The escrow contract (`verifyingContract`).
    pub escrow: Address,
}

impl Default for ChannelDomain {
    /// X Layer (chain 196), [`DEFAULT_ESCROW_CONTRACT`], default name and version.
    fn default() -> Self {
        Self::new(X_LAYER_CHAIN_ID, DEFAULT_ESCROW_CONTRACT)
    }
}

impl ChannelDomain {
    /// The default name and version on `chain_id` with `escrow` as the verifying contract.
    pub fn new(chain_id: u64, escrow: Address) -> Self {
        Self { name: DEFAULT_DOMAIN_NAME.to_owned(), version: DEFAULT_DOMAIN_VERSION.to_owned(), chain_id, escrow }
    }

    /// The alloy [`Eip712Domain`] (no salt), for use with [`alloy_sol_types::SolStruct`].
    pub fn eip712_domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(Cow::Owned(self.name.clone())),
            Some(Cow::Owned(self.version.clone())),
            Some(U256::from(self.chain_id)),
            Some(self.escrow),
            None,
        )
    }

    /// The domain separator `keccak256(typeHash ‖ keccak(name) ‖ keccak(version) ‖ chainId ‖
    /// verifyingContract)`, computed without allocating.
    pub fn domain_separator(&self) -> B256 {
        let mut hasher = Keccak256::new();
        hasher.update(CHANNEL_DOMAIN_TYPEHASH);
        hasher.update(keccak256(self.name.as_bytes()));
        hasher.update(keccak256(self.version.as_bytes()));
        hasher.update(U256::from(self.chain_id).to_be_bytes::<32>());
        hasher.update(self.escrow.into_word());
        hasher.finalize()
    }
}

/// Parses a channel id: hex digits with an optional `0x` / `0X` prefix, an even number of them,
/// at most 32 bytes, left-padded with zeros to 32 bytes (`0xabab` ⇒ `0x00…00abab`).
pub fn channel_id_from_hex(text: &str) -> Result<B256, EvmError> {
    const WHAT: &str = "channelId";
    let invalid = || EvmError::InvalidHex { what: WHAT, text: text.chars().take(80).collect() };
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let len = digits.len() / 2;
    if len > 32 {
        return Err(EvmError::InvalidLength { what: WHAT, expected: 32, actual: len });
    }
    let mut id = B256::ZERO;
    hex::decode_to_slice(digits, &mut id[32 - len..]).map_err(|_| invalid())?;
    Ok(id)
}

/// `keccak256(0x19 0x01 ‖ domainSeparator ‖ structHash)`.
pub fn eip712_digest(domain_separator: &B256, struct_hash: &B256) -> B256 {
    let mut buf = [0u8; 66];
    buf[0] = 0x19;
    buf[1] = 0x01;
    buf[2..34].copy_from_slice(domain_separator.as_slice());
    buf[34..].copy_from_slice(struct_hash.as_slice());
    keccak256(buf)
}

/// `hashStruct(Voucher{channelId, cumulativeAmount})`.
pub fn voucher_struct_hash(channel_id: B256, cumulative: u128) -> B256 {
    let mut buf = [0u8; 96];
    buf[..32].copy_from_slice(VOUCHER_TYPEHASH.as_slice());
    buf[32..64].copy_from_slice(channel_id.as_slice());
    buf[80..].copy_from_slice(&cumulative.to_be_bytes());
    keccak256(buf)
}

/// `hashStruct` of a settle/close authorization with the given type hash.
fn authorization_struct_hash(typehash: &B256, channel_id: B256, cumulative: u128, nonce: U256, deadline: U256) -> B256 {
    let mut buf = [0u8; 160];
    buf[..32].copy_from_slice(typehash.as_slice());
    buf[32..64].copy_from_slice(channel_id.as_slice());
    buf[80..96].copy_from_slice(&cumulative.to_be_bytes());
    buf[96..128].copy_from_slice(&nonce.to_be_bytes::<32>());
    buf[128..].copy_from_slice(&deadline.to_be_bytes::<32>());
    keccak256(buf)
}

/// `hashStruct(SettleAuthorization{channelId, cumulativeAmount, nonce, deadline})`.
pub fn settle_authorization_struct_hash(channel_id: B256, cumulative: u128, nonce: U256, deadline: U256) -> B256 {
    authorization_struct_hash(&SETTLE_AUTHORIZATION_TYPEHASH, channel_id, cumulative, nonce, deadline)
}

/// `hashStruct(CloseAuthorization{channelId, cumulativeAmount, nonce, deadline})`.
pub fn close_authorization_struct_hash(channel_id: B256, cumulative: u128, nonce: U256, deadline: U256) -> B256 {
    authorization_struct_hash(&CLOSE_AUTHORIZATION_TYPEHASH, channel_id, cumulative, nonce, deadline)
}

/// The EIP-712 signing digest of a [`Voucher`].
pub fn voucher_digest(domain: &ChannelDomain, channel_id: B256, cumulative: u128) -> B256 {
    eip712_digest(&domain.domain_separator(), &voucher_struct_hash(channel_id, cumulative))
}

/// The EIP-712 signing digest of a [`SettleAuthorization`].
pub fn settle_authorization_digest(
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
) -> B256 {
    eip712_digest(
        &domain.domain_separator(),
        &settle_authorization_struct_hash(channel_id, cumulative, nonce, deadline),
    )
}

/// The EIP-712 signing digest of a [`CloseAuthorization`].
pub fn close_authorization_digest(
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
) -> B256 {
    eip712_digest(&domain.domain_separator(), &close_authorization_struct_hash(channel_id, cumulative, nonce, deadline))
}

/// Signs a [`Voucher`] (the payer's side; used by clients and tests). Returns `0x` hex `r‖s‖v`.
pub fn sign_voucher(
    signer: &dyn Signer,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
) -> Result<String, EvmError> {
    signer.sign_digest(&voucher_digest(domain, channel_id, cumulative)).map(signature_hex)
}

/// Signs a [`SettleAuthorization`] as the payee. Returns `0x` hex `r‖s‖v` (`payeeSignature`).
pub fn sign_settle_authorization(
    signer: &dyn Signer,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
) -> Result<String, EvmError> {
    signer.sign_digest(&settle_authorization_digest(domain, channel_id, cumulative, nonce, deadline)).map(signature_hex)
}

/// Signs a [`CloseAuthorization`] as the payee. Returns `0x` hex `r‖s‖v` (`payeeSignature`).
pub fn sign_close_authorization(
    signer: &dyn Signer,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
) -> Result<String, EvmError> {
    signer.sign_digest(&close_authorization_digest(domain, channel_id, cumulative, nonce, deadline)).map(signature_hex)
}

/// Why a channel signature was refused (wire facts §9.6; the session intent maps every variant
/// to `InvalidSignatureError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelSignatureError {
    /// Not 65 bytes of hex, or the recovery byte is not 0, 1, 27 or 28.
    #[error("malformed signature: expected 65 bytes r||s||v as hex with v in {{0, 1, 27, 28}}")]
    Malformed,
    /// `s` is above n/2 (malleable, EIP-2).
    #[error("signature s value is not canonical (high s)")]
    HighS,
    /// No public key recovers from the signature (r or s zero or out of range, r not on the
    /// curve).
    #[error("cannot recover the signer from the signature")]
    Recovery,
    /// The signature is valid but was made by another key.
    #[error("signature was made by {recovered}, not the expected signer")]
    SignerMismatch {
        /// The address that actually signed.
        recovered: Address,
    },
}

/// Parses a channel signature per §9.6 without allocating: hex with an optional `0x`, exactly 65
/// bytes (else [`Malformed`](ChannelSignatureError::Malformed)), `s` ≤ n/2 (else
/// [`HighS`](ChannelSignatureError::HighS)), `v` ≥ 27 normalised by −27 and then 0 or 1.
pub fn parse_channel_signature(signature_hex: &str) -> Result<Signature, ChannelSignatureError> {
    let digits = signature_hex.strip_prefix("0x").or_else(|| signature_hex.strip_prefix("0X")).unwrap_or(signature_hex);
    if digits.len() != 130 {
        return Err(ChannelSignatureError::Malformed);
    }
    let mut raw = [0u8; 65];
    hex::decode_to_slice(digits, &mut raw).map_err(|_| ChannelSignatureError::Malformed)?;
    let v = if raw[64] >= 27 { raw[64] - 27 } else { raw[64] };
    let parity = match v {
        0 => false,
        1 => true,
        _ => return Err(ChannelSignatureError::Malformed),
    };
    let signature = Signature::from_bytes_and_parity(&raw, parity);
    if signature.s() > SECP256K1N_HALF {
        return Err(ChannelSignatureError::HighS);
    }
    Ok(signature)
}

/// Recovers the signer of `digest` (raw EOA recovery, no prefix) from a §9.6 signature, with the
/// [default backend](Backend::DEFAULT).
pub fn recover_channel_signer(digest: &B256, signature_hex: &str) -> Result<Address, ChannelSignatureError> {
    recover_channel_signer_with(Backend::DEFAULT, digest, signature_hex)
}

/// [`recover_channel_signer`] with an explicit recovery [`Backend`].
pub fn recover_channel_signer_with(
    backend: Backend,
    digest: &B256,
    signature_hex: &str,
) -> Result<Address, ChannelSignatureError> {
    let signature = parse_channel_signature(signature_hex)?;
    recover::recover_address(backend, digest, &signature).map_err(from_recover_error)
}

fn from_recover_error(e: RecoverError) -> ChannelSignatureError {
    match e {
        RecoverError::HighS => ChannelSignatureError::HighS,
        _ => ChannelSignatureError::Recovery,
    }
}

/// Recovers the signer of a [`Voucher`] signature (default backend).
pub fn recover_voucher_signer(
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    signature_hex: &str,
) -> Result<Address, ChannelSignatureError> {
    recover_voucher_signer_with(Backend::DEFAULT, domain, channel_id, cumulative, signature_hex)
}

/// [`recover_voucher_signer`] with an explicit recovery [`Backend`].
pub fn recover_voucher_signer_with(
    backend: Backend,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    signature_hex: &str,
) -> Result<Address, ChannelSignatureError> {
    // Parse first: a malformed signature costs no hashing.
    let signature = parse_channel_signature(signature_hex)?;
    recover::recover_address(backend, &voucher_digest(domain, channel_id, cumulative), &signature)
        .map_err(from_recover_error)
}

/// Checks that `signature_hex` is `expected_signer`'s signature of
/// `Voucher{channelId, cumulativeAmount}` under `domain` (wire facts §9.6): exactly 65 bytes,
/// low `s`, `v` ∈ {0, 1, 27, 28}, and the recovered address equals `expected_signer`. Uses the
/// [default recovery backend](Backend::DEFAULT) and the process-wide
/// [`SignerKeyCache::shared`]: the results are those of [`verify_voucher_signature_with`].
pub fn verify_voucher_signature(
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    signature_hex: &str,
    expected_signer: Address,
) -> Result<(), ChannelSignatureError> {
    verify_voucher_signature_cached(
        SignerKeyCache::shared(),
        Backend::DEFAULT,
        domain,
        channel_id,
        cumulative,
        signature_hex,
        expected_signer,
    )
}

/// [`verify_voucher_signature`] with an explicit [`Backend`] and key cache: when `keys` holds
/// `expected_signer`'s key the signature is checked against it ([`recover::signed_by`]);
/// otherwise, or when that check fails, the signer is recovered as in
/// [`verify_voucher_signature_with`] — which therefore decides every refusal and its error — and
/// a successful recovery stores the key in `keys`.
pub fn verify_voucher_signature_cached(
    keys: &SignerKeyCache,
    backend: Backend,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    signature_hex: &str,
    expected_signer: Address,
) -> Result<(), ChannelSignatureError> {
    // Parse first: a malformed signature costs no hashing.
    let signature = parse_channel_signature(signature_hex)?;
    let digest = eip712_digest(&thread_domain_separator(domain), &voucher_struct_hash(channel_id, cumulative));
    if let Some(key) = keys.get(&expected_signer)
        && recover::signed_by(backend, &digest, &signature, &key)
    {
        return Ok(());
    }
    let key = recover::recover_key(backend, &digest, &signature).map_err(from_recover_error)?;
    if key.address() != expected_signer {
        return Err(ChannelSignatureError::SignerMismatch { recovered: key.address() });
    }
    keys.insert(key);
    Ok(())
}

/// `domain.domain_separator()`, remembered per thread for the last domain asked (a server
/// verifies vouchers under one escrow domain, so this saves three Keccak-256 per voucher).
fn thread_domain_separator(domain: &ChannelDomain) -> B256 {
    thread_local! {
        static LAST: RefCell<Option<(ChannelDomain, B256)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else { return domain.domain_separator() };
        match &*last {
            Some((known, separator)) if known == domain => *separator,
            _ => {
                let separator = domain.domain_separator();
                *last = Some((domain.clone(), separator));
                separator
            }
        }
    })
}

/// A bounded map from signer address to public key ([`SignerKey`]), filled by
/// [`verify_voucher_signature_cached`] after a signer's first successful recovery. Only a key
/// that recovered to an address is stored under it, so a stale or evicted entry costs one
/// recovery, never a wrong answer. When full, inserting a new signer evicts an arbitrary one.
/// Safe to share between threads.
pub struct SignerKeyCache {
    capacity: usize,
    keys: RwLock<HashMap<Address, SignerKey>>,
}

impl SignerKeyCache {
    /// The capacity of [`SignerKeyCache::default`] and of the [shared](Self::shared) cache:
    /// 4096 signers (under 2 MiB: about 200 bytes a hash-table slot, at most 8192 slots).
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// An empty cache holding at most `capacity` signers (0 disables caching).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity, keys: RwLock::new(HashMap::new()) }
    }

    /// The process-wide cache used by [`verify_voucher_signature`].
    pub fn shared() -> &'static Self {
        static SHARED: LazyLock<SignerKeyCache> = LazyLock::new(SignerKeyCache::default);
        &SHARED
    }

    /// The most signers it holds.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many signers it holds.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether it holds no signer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of `signer`, if known.
    pub fn get(&self, signer: &Address) -> Option<SignerKey> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).get(signer).cloned()
    }

    /// Stores `key` under its address, evicting an arbitrary signer when full.
    pub fn insert(&self, key: SignerKey) {
        if self.capacity == 0 {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= self.capacity
            && !keys.contains_key(&key.address())
            && let Some(evicted) = keys.keys().next().copied()
        {
            keys.remove(&evicted);
        }
        keys.insert(key.address(), key);
    }

    /// Forgets every signer.
    pub fn clear(&self) {
        self.keys.write().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl Default for SignerKeyCache {
    /// An empty cache of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) signers.
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for SignerKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKeyCache").field("capacity", &self.capacity).field("len", &self.len()).finish()
    }
}

/// [`verify_voucher_signature`] with an explicit recovery [`Backend`] and no key cache: the
/// signer is recovered every time (the path of a signer's first voucher).
pub fn verify_voucher_signature_with(
    backend: Backend,
    domain: &ChannelDomain,
    channel_id: B256,
    cumulative: u128,
    signature_hex: &str,
    expected_signer: Address,
) -> Result<(), ChannelSignatureError> {
    let recovered = recover_voucher_signer_with(backend, domain, channel_id, cumulative, signature_hex)?;
    if recovered == expected_signer { Ok(()) } else { Err(ChannelSignatureError::SignerMismatch { recovered }) }
}

/// Allocates the `nonce` of settle/close authorizations.
pub trait NonceProvider: Send + Sync {
    /// A nonce for an authorization by `payee` on `channel_id`.
    fn allocate(&self, payee: Address, channel_id: B256) -> U256;
}

/// The default [`NonceProvider`]: a random UUIDv4 read as a 128-bit integer (122 random bits, as
/// the Python SDK's `UuidNonceProvider`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomNonceProvider;

impl NonceProvider for RandomNonceProvider {
    fn allocate(&self, _payee: Address, _channel_id: B256) -> U256 {
        let mut uuid = B128::random();
        uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
        uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
        U256::from_be_slice(uuid.as_slice())
    }
}

/// A [`NonceProvider`] that always returns the same nonce (tests, golden vectors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedNonceProvider(pub U256);

impl NonceProvider for FixedNonceProvider {
    fn allocate(&self, _payee: Address, _channel_id: B256) -> U256 {
        self.0
    }
}

/// pay402's channel id: `keccak256(abi.encode(payer, payee, token, salt, chainId, escrow))`
/// (six 32-byte words: addresses left-padded, the salt as is, the chain id big-endian).
pub fn derive_channel_id(
    payer: Address,
    payee: Address,
    token: Address,
    salt: B256,
    chain_id: u64,
    escrow: Address,
) -> B256 {
    let mut buf = [0u8; 192];
    buf[12..32].copy_from_slice(payer.as_slice());
    buf[44..64].copy_from_slice(payee.as_slice());
    buf[76..96].copy_from_slice(token.as_slice());
    buf[96..128].copy_from_slice(salt.as_slice());
    buf[128..160].copy_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    buf[172..192].copy_from_slice(escrow.as_slice());
    keccak256(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::{parse_bytes32, signer_from_hex};
    use alloy_sol_types::SolStruct;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn id() -> B256 {
        B256::repeat_byte(0xab)
    }

    #[test]
    fn constants_match_alloy_eip712() {
        let domain = ChannelDomain::default();
        let alloy = domain.eip712_domain();
        assert_eq!(alloy.encode_type(), CHANNEL_DOMAIN_TYPE);
        assert_eq!(alloy.type_hash(), CHANNEL_DOMAIN_TYPEHASH);
        assert_eq!(domain.domain_separator(), alloy.separator());
        assert_eq!(Voucher::eip712_encode_type(), VOUCHER_TYPE);
        assert_eq!(SettleAuthorization::eip712_encode_type(), SETTLE_AUTHORIZATION_TYPE);
        assert_eq!(CloseAuthorization::eip712_encode_type(), CLOSE_AUTHORIZATION_TYPE);
        for (ty, hash) in [
            (VOUCHER_TYPE, VOUCHER_TYPEHASH),
            (SETTLE_AUTHORIZATION_TYPE, SETTLE_AUTHORIZATION_TYPEHASH),
            (CLOSE_AUTHORIZATION_TYPE, CLOSE_AUTHORIZATION_TYPEHASH),
            (CHANNEL_DOMAIN_TYPE, CHANNEL_DOMAIN_TYPEHASH),
        ] {
            assert_eq!(keccak256(ty), hash, "{ty}");
        }
    }

    #[test]
    fn hand_rolled_hashes_match_alloy() {
        let domain =
            ChannelDomain { name: "n".into(), version: "9".into(), chain_id: 1, escrow: Address::repeat_byte(1) };
        let alloy = domain.eip712_domain();
        assert_eq!(domain.domain_separator(), alloy.separator());
        for (cumulative, nonce, deadline) in [
            (0u128, U256::ZERO, U256::ZERO),
            (u128::MAX, U256::MAX, DEFAULT_DEADLINE),
            (1_000_000, U256::from(7), U256::from(9)),
        ] {
            let voucher = Voucher { channelId: id(), cumulativeAmount: cumulative };
            assert_eq!(voucher_struct_hash(id(), cumulative), voucher.eip712_hash_struct());
            assert_eq!(voucher_digest(&domain, id(), cumulative), voucher.eip712_signing_hash(&alloy));
            let settle = SettleAuthorization { channelId: id(), cumulativeAmount: cumulative, nonce, deadline };
            assert_eq!(
                settle_authorization_digest(&domain, id(), cumulative, nonce, deadline),
                settle.eip712_signing_hash(&alloy)
            );
            let close = CloseAuthorization { channelId: id(), cumulativeAmount: cumulative, nonce, deadline };
            assert_eq!(
                close_authorization_digest(&domain, id(), cumulative, nonce, deadline),
                close.eip712_signing_hash(&alloy)
            );
            assert_ne!(
                settle_authorization_digest(&domain, id(), cumulative, nonce, deadline),
                close_authorization_digest(&domain, id(), cumulative, nonce, deadline)
            );
        }
    }

    #[test]
    fn channel_ids() {
        assert_eq!(channel_id_from_hex(&format!("0x{}", "ab".repeat(32))).unwrap(), id());
        assert_eq!(channel_id_from_hex(&"AB".repeat(32)).unwrap(), id());
        let short = channel_id_from_hex("0xabcd").unwrap();
        assert_eq!(short, parse_bytes32(&format!("0x{}abcd", "00".repeat(30))).unwrap());
        assert!(matches!(
            channel_id_from_hex(&format!("0x{}", "ab".repeat(33))),
            Err(EvmError::InvalidLength { expected: 32, actual: 33, .. })
        ));
        for bad in ["", "0x", "0xabc", "0xzz", "0x0xab", "ab cd"] {
            assert!(matches!(channel_id_from_hex(bad), Err(EvmError::InvalidHex { .. })), "{bad}");
        }
    }

    #[test]
    fn sign_and_verify() {
        let signer = signer_from_hex(KEY).unwrap();
        let domain = ChannelDomain::default();
        let sig = sign_voucher(&signer, &domain, id(), 5).unwrap();
        assert_eq!(verify_voucher_signature(&domain, id(), 5, &sig, signer.address()), Ok(()));
        assert_eq!(verify_voucher_signature(&domain, id(), 5, &sig[2..], signer.address()), Ok(()));
        let other = ChannelDomain::new(1, DEFAULT_ESCROW_CONTRACT);
        assert!(matches!(
            verify_voucher_signature(&other, id(), 5, &sig, signer.address()),
            Err(ChannelSignatureError::SignerMismatch { .. })
        ));
        assert_eq!(
            verify_voucher_signature(&domain, id(), 5, "0xzz", signer.address()),
            Err(ChannelSignatureError::Malformed)
        );
        let mut bad_v = sig.clone();
        bad_v.replace_range(130.., "1d");
        assert_eq!(
            verify_voucher_signature(&domain, id(), 5, &bad_v, signer.address()),
            Err(ChannelSignatureError::Malformed)
        );
        bad_v.replace_range(130.., "02");
        assert_eq!(
            verify_voucher_signature(&domain, id(), 5, &bad_v, signer.address()),
            Err(ChannelSignatureError::Malformed)
        );
        // s = 0 passes the low-s check but cannot be recovered.
        let mut zero_s = sig.clone();
        zero_s.replace_range(66..130, &"0".repeat(64));
        assert_eq!(recover_channel_signer(&B256::ZERO, &zero_s), Err(ChannelSignatureError::Recovery));

        let settle = sign_settle_authorization(&signer, &domain, id(), 5, U256::from(1), DEFAULT_DEADLINE).unwrap();
        let digest = settle_authorization_digest(&domain, id(), 5, U256::from(1), DEFAULT_DEADLINE);
        assert_eq!(recover_channel_signer(&digest, &settle), Ok(signer.address()));
        let close = sign_close_authorization(&signer, &domain, id(), 5, U256::from(1), DEFAULT_DEADLINE).unwrap();
        assert_ne!(close, settle);
    }

    #[test]
    fn key_cache_is_bounded_and_only_fills_on_success() {
        let domain = ChannelDomain::default();
        let keys = [KEY, "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"]
            .map(|k| signer_from_hex(k).unwrap());
        let cache = SignerKeyCache::with_capacity(1);
        assert!(cache.is_empty());
        let sig = sign_voucher(&keys[0], &domain, id(), 5).unwrap();
        // A refusal stores nothing.
        assert!(matches!(
            verify_voucher_signature_cached(&cache, Backend::DEFAULT, &domain, id(), 6, &sig, keys[0].address()),
            Err(ChannelSignatureError::SignerMismatch { .. })
        ));
        assert!(cache.is_empty());
        for _ in 0..2 {
            assert_eq!(
                verify_voucher_signature_cached(&cache, Backend::DEFAULT, &domain, id(), 5, &sig, keys[0].address()),
                Ok(())
            );
            assert_eq!(cache.get(&keys[0].address()).map(|k| k.address()), Some(keys[0].address()));
        }
        let other = sign_voucher(&keys[1], &domain, id(), 5).unwrap();
        assert_eq!(
            verify_voucher_signature_cached(&cache, Backend::DEFAULT, &domain, id(), 5, &other, keys[1].address()),
            Ok(())
        );
        assert_eq!(cache.len(), 1, "capacity 1 evicts");
        assert!(cache.get(&keys[1].address()).is_some());
        // With the key cached, another signer's voucher is still refused with the recovered address.
        assert_eq!(
            verify_voucher_signature_cached(&cache, Backend::DEFAULT, &domain, id(), 5, &sig, keys[1].address()),
            Err(ChannelSignatureError::SignerMismatch { recovered: keys[0].address() })
        );
        cache.clear();
        assert!(cache.is_empty());
        let off = SignerKeyCache::with_capacity(0);
        assert_eq!(
            verify_voucher_signature_cached(&off, Backend::DEFAULT, &domain, id(), 5, &sig, keys[0].address()),
            Ok(())
        );
        assert!(off.is_empty());
        // The per-thread separator follows the domain asked.
        let moved = ChannelDomain::new(1, DEFAULT_ESCROW_CONTRACT);
        let moved_sig = sign_voucher(&keys[0], &moved, id(), 5).unwrap();
        for (d, s) in [(&domain, &sig), (&moved, &moved_sig), (&domain, &sig)] {
            assert_eq!(thread_domain_separator(d), d.domain_separator());
            assert_eq!(verify_voucher_signature(d, id(), 5, s, keys[0].address()), Ok(()));
        }
        assert!(verify_voucher_signature(&moved, id(), 5, &sig, keys[0].address()).is_err());
    }

    #[test]
    fn key_cache_is_shared_between_threads() {
        let domain = ChannelDomain::default();
        let signers = [KEY, "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"]
            .map(|k| signer_from_hex(k).unwrap());
        // Two signers through a one-slot cache: every thread keeps evicting the other's key.
        let cache = SignerKeyCache::with_capacity(1);
        std::thread::scope(|scope| {
            for t in 0..4u128 {
                let (cache, domain, signers) = (&cache, &domain, &signers);
                scope.spawn(move || {
                    for i in 0..6u128 {
                        let (signer, other) = (&signers[((t + i) % 2) as usize], &signers[((t + i + 1) % 2) as usize]);
                        let amount = 100 * t + i;
                        let sig = sign_voucher(signer, domain, id(), amount).unwrap();
                        let check = |who: Address| {
                            verify_voucher_signature_cached(cache, Backend::DEFAULT, domain, id(), amount, &sig, who)
                        };
                        assert_eq!(check(signer.address()), Ok(()));
                        assert_eq!(
                            check(other.address()),
                            Err(ChannelSignatureError::SignerMismatch { recovered: signer.address() })
                        );
                    }
                });
            }
        });
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn nonce_providers() {
        let fixed = FixedNonceProvider(U256::from(123_456_789u64));
        assert_eq!(fixed.allocate(Address::ZERO, id()), U256::from(123_456_789u64));
        let random = RandomNonceProvider;
        let (a, b) = (random.allocate(Address::ZERO, id()), random.allocate(Address::ZERO, id()));
        assert_ne!(a, b);
        for n in [a, b] {
            assert!(n < U256::from(1u8) << 128);
            let bytes = n.to_be_bytes::<32>();
            assert_eq!(bytes[16 + 6] >> 4, 4);
            assert_eq!(bytes[16 + 8] >> 6, 0b10);
        }
        let dynamic: &dyn NonceProvider = &fixed;
        assert_eq!(dynamic.allocate(Address::ZERO, B256::ZERO), fixed.0);
    }

    #[test]
    fn channel_id_is_abi_encoded() {
        let (payer, payee, token, escrow) = (
            address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            Address::repeat_byte(0x11),
            address!("0x779ded0c9e1022225f8e0630b35a9b54be713736"),
            DEFAULT_ESCROW_CONTRACT,
        );
        let salt = B256::repeat_byte(0x33);
        let mut manual = Vec::new();
        for a in [payer, payee, token] {
            manual.extend_from_slice(a.into_word().as_slice());
        }
        manual.extend_from_slice(salt.as_slice());
        manual.extend_from_slice(&U256::from(196u64).to_be_bytes::<32>());
        manual.extend_from_slice(escrow.into_word().as_slice());
        assert_eq!(derive_channel_id(payer, payee, token, salt, 196, escrow), keccak256(manual));
        assert_ne!(
            derive_channel_id(payer, payee, token, salt, 1, escrow),
            derive_channel_id(payer, payee, token, salt, 196, escrow)
        );
    }
}
