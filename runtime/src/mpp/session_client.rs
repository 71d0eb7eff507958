//! The buyer side of the MPP `evm` **session** intent (wire facts §9.5-§9.6): open a payment
//! channel with an EIP-3009 deposit, pay each request with a signed cumulative voucher, top the
//! deposit up, close.
//!
//! [`SessionClient`] answers `evm`/`session` challenges ([`ParsedChallenge`]) with
//! `Authorization: Payment …` header values and remembers, per channel, the cumulative amount it
//! has signed so far ([`SessionClient::next_voucher`] adds a request's price to it).
//!
//! Channel ids are pay402's derivation ([`derive_channel_id`]):
//! `keccak256(abi.encode(address payer, address payee, address token, bytes32 salt,
//! uint256 chainId, address escrow))` with a random 32-byte salt; the salt travels in the
//! `open` payload so the Settlement Agent (and [`EmbeddedSa`](super::EmbeddedSa)) can
//! recompute it.

use super::charge_client::{ExpiryError, authorization_window, signed_transfer};
use super::charge_request::{ChargeRequest, ChargeRequestError};
use super::credential::{Credential, did_pkh};
use super::header::ParsedChallenge;
use super::wire::{EVM_METHOD, SESSION_INTENT};
use crate::evm::{self, Address, B256, EvmError, Payer, Signer, U256, derive_channel_id};
use crate::evm::{ChannelDomain, DEFAULT_ESCROW_CONTRACT, channel_id_from_hex, voucher_digest};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Why no session credential could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionClientError {
    /// The challenge is not `method="evm"`, `intent="session"`.
    #[error("unsupported challenge: method `{method}`, intent `{intent}` (expected evm/session)")]
    UnsupportedChallenge {
        /// The challenge's method.
        method: String,
        /// The challenge's intent.
        intent: String,
    },
    /// The challenge `request` is missing a field or has a malformed one.
    #[error("bad session request: {0}")]
    InvalidRequest(#[from] ChargeRequestError),
    /// The registry knows no EIP-3009 token `currency` on the chain.
    #[error("unsupported token {currency} on chain {chain_id}")]
    UnsupportedToken {
        /// The chain id.
        chain_id: u64,
        /// The token.
        currency: String,
    },
    /// The channel id is not 32 bytes of hex.
    #[error("invalid channel id: {0}")]
    InvalidChannel(EvmError),
    /// A voucher amount does not fit in uint128, or the cumulative amount would overflow.
    #[error("voucher amount out of range")]
    AmountOutOfRange,
    /// The challenge `expires` is not RFC 3339, or is past.
    #[error("challenge expiry {0:?} is invalid or past")]
    Expired(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(EvmError),
}

/// The session request fields a client needs.
struct SessionTerms {
    request: ChargeRequest,
    escrow: Address,
    escrow_text: String,
}

/// Answers MPP `evm` session challenges; tracks the cumulative voucher amount per channel.
///
/// Deposit authorizations (open, top-up) are EIP-3009 transfers from the signer to the escrow
/// contract (`methodDetails.escrowContract`, default the OKX escrow), valid from now − 600 s
/// until max(challenge `expires` + 120 s, now + 300 s) — like [`MppChargeClient`](super::MppChargeClient).
/// Vouchers are EIP-712 `Voucher{channelId, cumulativeAmount}` signatures under the escrow's
/// domain (`EVM Payment Channel`/`1`, chain id, escrow). Every credential carries
/// `source = did:pkh:eip155:<chainId>:<address>`.
#[derive(Clone, Debug)]
pub struct SessionClient {
    payer: Payer,
    cumulative: Arc<Mutex<HashMap<B256, u128>>>,
}

impl SessionClient {
    /// A client signing with `signer`, the system clock, random nonces and salts, and the
    /// process-wide [`NetworkRegistry::global`](crate::chain::NetworkRegistry::global).
    pub fn new(signer: impl Signer + 'static) -> Self {
        Self { payer: Payer::new(signer), cumulative: Arc::default() }
    }

    evm::payer_seams!(registry);

    /// The cumulative amount signed so far on `channel_id` (None for an unknown channel).
    pub fn cumulative(&self, channel_id: &str) -> Option<U256> {
        let id = channel_id_from_hex(channel_id).ok()?;
        self.amounts().get(&id).map(|a| U256::from(*a))
    }

    fn amounts(&self) -> std::sync::MutexGuard<'_, HashMap<B256, u128>> {
        self.cumulative.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn terms(challenge: &ParsedChallenge) -> Result<SessionTerms, SessionClientError> {
        if challenge.method != EVM_METHOD || challenge.intent != SESSION_INTENT {
            return Err(SessionClientError::UnsupportedChallenge {
                method: challenge.method.clone(),
                intent: challenge.intent.clone(),
            });
        }
        let request = ChargeRequest::from_request(&challenge.request)?;
        let escrow_text = match challenge.request.get("methodDetails").and_then(|d| d.get("escrowContract")) {
            Some(Value::String(s)) => s.clone(),
            _ => evm::checksum(&DEFAULT_ESCROW_CONTRACT),
        };
        let escrow = evm::parse_address(&escrow_text).map_err(|e| {
            SessionClientError::InvalidRequest(ChargeRequestError {
                field: "methodDetails.escrowContract".into(),
                reason: e.to_string(),
            })
        })?;
        Ok(SessionTerms { request, escrow, escrow_text })
    }

    /// The chain id and the escrow contract that deposits answering `challenge` go to:
    /// `methodDetails.escrowContract`, else OKX's escrow ([`DEFAULT_ESCROW_CONTRACT`]). Check it
    /// against the escrows you trust before opening a channel.
    pub fn escrow_of(challenge: &ParsedChallenge) -> Result<(u64, Address), SessionClientError> {
        let terms = Self::terms(challenge)?;
        Ok((terms.request.chain_id, terms.escrow))
    }

    fn domain(terms: &SessionTerms) -> ChannelDomain {
        ChannelDomain::new(terms.request.chain_id, terms.escrow)
    }

    fn header(&self, challenge: &ParsedChallenge, chain_id: u64, payload: Map<String, Value>) -> String {
        Credential::new(challenge.to_echo(), payload, Some(did_pkh(chain_id, &self.address())))
            .to_authorization_header()
    }

    /// A signed EIP-3009 deposit authorization (payer → escrow) as the payload object.
    fn deposit_authorization(
        &self,
        challenge: &ParsedChallenge,
        terms: &SessionTerms,
        value: U256,
    ) -> Result<Map<String, Value>, SessionClientError> {
        let request = &terms.request;
        let domain = request.token_domain(&self.payer.registry()).ok_or_else(|| {
            SessionClientError::UnsupportedToken { chain_id: request.chain_id, currency: request.currency_text.clone() }
        })?;
        let window = authorization_window(self.payer.now(), challenge.expires.as_deref())
            .map_err(|(ExpiryError::Invalid(text) | ExpiryError::Past(text))| SessionClientError::Expired(text))?;
        signed_transfer(&self.payer, &domain, window, (terms.escrow, &terms.escrow_text), value)
            .map_err(SessionClientError::Signing)
    }

    /// Opens a channel with `deposit` (base units): returns the new channel id and the
    /// `Authorization` header value. Payload: `{"action":"open","type":"transaction",
    /// "channelId","authorization":{…,"signature"},"salt","cumulativeAmount":"0"}`.
    pub fn open_header(
        &self,
        challenge: &ParsedChallenge,
        deposit: U256,
    ) -> Result<(String, String), SessionClientError> {
        let terms = Self::terms(challenge)?;
        let salt = self.payer.nonce();
        let r = &terms.request;
        let id = derive_channel_id(self.address(), r.recipient, r.currency, salt, r.chain_id, terms.escrow);
        let authorization = self.deposit_authorization(challenge, &terms, deposit)?;
        let channel_id = evm::to_hex(id);
        let mut payload = Map::new();
        payload.insert("action".into(), Value::String("open".into()));
        payload.insert("type".into(), Value::String("transaction".into()));
        payload.insert("channelId".into(), Value::String(channel_id.clone()));
        payload.insert("authorization".into(), Value::Object(authorization));
        payload.insert("salt".into(), Value::String(evm::to_hex(salt)));
        payload.insert("cumulativeAmount".into(), Value::String("0".into()));
        self.amounts().insert(id, 0);
        Ok((channel_id, self.header(challenge, r.chain_id, payload)))
    }

    /// Signs a voucher for `cumulative` on `channel_id` (and remembers it as the channel's
    /// cumulative amount). Payload: `{"action":"voucher","channelId","cumulativeAmount",
    /// "signature"}`.
    pub fn voucher_header(
        &self,
        challenge: &ParsedChallenge,
        channel_id: &str,
        cumulative: U256,
    ) -> Result<String, SessionClientError> {
        self.signed_voucher(challenge, channel_id, cumulative, "voucher")
    }

    /// The next voucher: the channel's cumulative amount plus `cost`.
    pub fn next_voucher(
        &self,
        challenge: &ParsedChallenge,
        channel_id: &str,
        cost: U256,
    ) -> Result<String, SessionClientError> {
        let id = channel_id_from_hex(channel_id).map_err(SessionClientError::InvalidChannel)?;
        let current = self.amounts().get(&id).copied().unwrap_or(0);
        let next = U256::from(current).checked_add(cost).ok_or(SessionClientError::AmountOutOfRange)?;
        self.voucher_header(challenge, channel_id, next)
    }

    /// Closes `channel_id` with a final voucher for `cumulative`. Payload: `{"action":"close",
    /// "channelId","cumulativeAmount","signature"}`.
    pub fn close_header(
        &self,
        challenge: &ParsedChallenge,
        channel_id: &str,
        cumulative: U256,
    ) -> Result<String, SessionClientError> {
        self.signed_voucher(challenge, channel_id, cumulative, "close")
    }

    fn signed_voucher(
        &self,
        challenge: &ParsedChallenge,
        channel_id: &str,
        cumulative: U256,
        action: &str,
    ) -> Result<String, SessionClientError> {
        let terms = Self::terms(challenge)?;
        let id = channel_id_from_hex(channel_id).map_err(SessionClientError::InvalidChannel)?;
        let amount = u128::try_from(cumulative).map_err(|_| SessionClientError::AmountOutOfRange)?;
        let signature = self
            .payer
            .sign_digest(&voucher_digest(&Self::domain(&terms), id, amount))
            .map_err(SessionClientError::Signing)?;
        let mut payload = Map::new();
        payload.insert("action".into(), Value::String(action.into()));
        payload.insert("channelId".into(), Value::String(evm::to_hex(id)));
        payload.insert("cumulativeAmount".into(), Value::String(amount.to_string()));
        payload.insert("signature".into(), Value::String(signature));
        let mut amounts = self.amounts();
        let entry = amounts.entry(id).or_insert(0);
        *entry = (*entry).max(amount);
        drop(amounts);
        Ok(self.header(challenge, terms.request.chain_id, payload))
    }

    /// Adds `amount` to the deposit of `channel_id`. Payload: `{"action":"topUp",
    /// "type":"transaction","channelId","authorization":{…},"additionalDeposit"}`.
    pub fn top_up_header(
        &self,
        challenge: &ParsedChallenge,
        channel_id: &str,
        amount: U256,
    ) -> Result<String, SessionClientError> {
        let terms = Self::terms(challenge)?;
        let id = channel_id_from_hex(channel_id).map_err(SessionClientError::InvalidChannel)?;
        let authorization = self.deposit_authorization(challenge, &terms, amount)?;
        let mut payload = Map::new();
        payload.insert("action".into(), Value::String("topUp".into()));
        payload.insert("type".into(), Value::String("transaction".into()));
        payload.insert("channelId".into(), Value::String(evm::to_hex(id)));
        payload.insert("authorization".into(), Value::Object(authorization));
        payload.insert("additionalDeposit".into(), Value::String(amount.to_string()));
        Ok(self.header(challenge, terms.request.chain_id, payload))
    }
}
