//! The buyer side of the MPP `evm` charge intent (wire facts §8.5, §9.3): turn a `Payment`
//! challenge into a signed EIP-3009 credential.
//!
//! [`MppChargeClient`] reads the challenge `request` ([`ChargeRequest`]: `amount` in base units,
//! `currency`, `recipient`, `methodDetails.chainId` (default 196) and optional
//! `methodDetails.splits`), signs one `TransferWithAuthorization` for the recipient and one per
//! split, and answers with the credential
//!
//! ```text
//! {"challenge": <echo>, "payload": {"type": "transaction", "authorization": {"type": "eip-3009",
//!   "from", "to", "value", "validAfter", "validBefore", "nonce", "signature", "splits"?: [...]}},
//!  "source": "did:pkh:eip155:<chainId>:<address>"}
//! ```
//!
//! ```
//! use pay402_runtime::evm::PrivateKeySigner;
//! use pay402_runtime::mpp::{Challenge, MppChargeClient, parse_www_authenticate};
//! use serde_json::json;
//!
//! let request = json!({
//!     "amount": "10000",
//!     "currency": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
//!     "recipient": "0x1111111111111111111111111111111111111111",
//!     "methodDetails": {"chainId": 196, "feePayer": false},
//! });
//! let challenge = Challenge::new(
//!     "secret", "api.example.com", "evm", "charge",
//!     request.as_object().unwrap().clone(), None, None, None, None,
//! );
//! let header = challenge.to_www_authenticate().unwrap();
//!
//! let signer: PrivateKeySigner =
//!     "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
//! let client = MppChargeClient::new(signer);
//! let parsed = &parse_www_authenticate(&[&header]).unwrap()[0];
//! let credential = client.credential_for(parsed).unwrap();
//! assert_eq!(credential.payload["type"], "transaction");
//! assert_eq!(credential.payload["authorization"]["value"], "10000");
//! assert_eq!(
//!     credential.source.as_deref(),
//!     Some("did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
//! );
//! assert!(client.authorization_header_for(&[&header]).unwrap().starts_with("Payment "));
//! ```

use super::charge_request::{ChargeRequest, ChargeRequestError};
use super::credential::{Credential, did_pkh};
use super::error::MppError;
use super::expiry::parse_rfc3339;
use super::header::{ParsedChallenge, parse_www_authenticate};
use super::wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS};
use crate::evm::{self, Address, Eip712Domain, EvmError, Payer, PrivateKeySigner, U256, VALID_AFTER_SKEW_SECONDS};
use serde_json::{Map, Value};

/// The authorizations stay valid at least this long after the challenge expires.
const VALID_BEFORE_AFTER_EXPIRY_SECONDS: u64 = 120;
/// … and at least this long after "now".
const MIN_VALIDITY_SECONDS: u64 = 300;

/// Why no credential could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChargeClientError {
    /// The challenge is not `method="evm"`, `intent="charge"`.
    #[error("unsupported challenge: method `{method}`, intent `{intent}` (expected evm/charge)")]
    UnsupportedChallenge {
        /// The challenge's method.
        method: String,
        /// The challenge's intent.
        intent: String,
    },
    /// The `WWW-Authenticate` values hold no `evm` charge challenge.
    #[error("no evm charge challenge among the offered Payment challenges")]
    NoChargeChallenge,
    /// The `WWW-Authenticate` values could not be parsed.
    #[error("cannot parse the challenge: {0}")]
    Header(MppError),
    /// The challenge `request` is missing a field or has a malformed one.
    #[error("bad charge request: {0}")]
    InvalidRequest(#[from] ChargeRequestError),
    /// The registry knows no EIP-3009 token `currency` on the chain (its EIP-712 domain name
    /// and version are unknown).
    #[error("unsupported token {currency} on chain {chain_id}")]
    UnsupportedToken {
        /// The chain id.
        chain_id: u64,
        /// The token.
        currency: String,
    },
    /// More than [`MAX_SPLITS`] splits.
    #[error("{count} splits, at most {max} are allowed")]
    TooManySplits {
        /// How many the request has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The splits add up to more than the amount.
    #[error("the splits total {splits}, more than the amount {amount}")]
    SplitsExceedAmount {
        /// Σ split amounts (saturated at 2^256 − 1).
        splits: U256,
        /// The amount.
        amount: U256,
    },
    /// The challenge `expires` is not RFC 3339.
    #[error("challenge expiry {0:?} is not RFC 3339")]
    InvalidExpiry(String),
    /// The challenge expired before it was answered.
    #[error("the challenge expired at {0}")]
    ChallengeExpired(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(EvmError),
}

/// Answers MPP `evm` charge challenges with signed EIP-3009 credentials.
///
/// For a request of `amount` with splits `s₁…sₙ` it signs `n + 1` authorizations from the
/// signer's address: `amount − Σsᵢ` to `recipient`, and `sᵢ.amount` to `sᵢ.recipient`, each with
/// its own random 32-byte nonce, all valid from now − 600 s (clamped at 0) until
/// max(challenge `expires` + 120 s, now + 300 s). The EIP-712 domain is
/// `{name, version}` of the token from the [`NetworkRegistry`](crate::chain::NetworkRegistry)
/// (the process-wide one unless [`Self::with_registry`]), `chainId`, `verifyingContract = currency`.
#[derive(Clone, Debug)]
pub struct MppChargeClient {
    payer: Payer,
}

impl MppChargeClient {
    /// A client signing with `signer`, the system clock, random nonces and the process-wide
    /// [`NetworkRegistry::global`](crate::chain::NetworkRegistry::global) (read at each call).
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self { payer: Payer::new(signer) }
    }

    evm::payer_seams!(registry);

    /// Builds the credential answering `challenge` (which must be `evm`/`charge`). The echo is
    /// [`ParsedChallenge::to_echo`] (the `request` string verbatim); `source` is
    /// `did:pkh:eip155:<chainId>:<EIP-55 address>`.
    pub fn credential_for(&self, challenge: &ParsedChallenge) -> Result<Credential, ChargeClientError> {
        if challenge.method != EVM_METHOD || challenge.intent != CHARGE_INTENT {
            return Err(ChargeClientError::UnsupportedChallenge {
                method: challenge.method.clone(),
                intent: challenge.intent.clone(),
            });
        }
        let request = ChargeRequest::from_request(&challenge.request)?;
        if request.splits.len() > MAX_SPLITS {
            return Err(ChargeClientError::TooManySplits { count: request.splits.len(), max: MAX_SPLITS });
        }
        let splits_total = request.splits_total().unwrap_or(U256::MAX);
        let primary_value = request
            .amount
            .checked_sub(splits_total)
            .ok_or(ChargeClientError::SplitsExceedAmount { splits: splits_total, amount: request.amount })?;
        let domain = request.token_domain(&self.payer.registry()).ok_or_else(|| {
            ChargeClientError::UnsupportedToken { chain_id: request.chain_id, currency: request.currency_text.clone() }
        })?;
        let window = authorization_window(self.payer.now(), challenge.expires.as_deref()).map_err(|e| match e {
            ExpiryError::Invalid(text) => ChargeClientError::InvalidExpiry(text),
            ExpiryError::Past(text) => ChargeClientError::ChallengeExpired(text),
        })?;
        let sign = |to: Address, to_text: &str, value: U256| {
            signed_transfer(&self.payer, &domain, window, (to, to_text), value).map_err(ChargeClientError::Signing)
        };
        let mut authorization = sign(request.recipient, &request.recipient_text, primary_value)?;
        if !request.splits.is_empty() {
            let splits = request
                .splits
                .iter()
                .map(|s| sign(s.recipient, &s.recipient_text, s.amount).map(Value::Object))
                .collect::<Result<Vec<_>, _>>()?;
            authorization.insert("splits".to_owned(), Value::Array(splits));
        }
        let mut payload = Map::new();
        payload.insert("type".to_owned(), Value::String("transaction".to_owned()));
        payload.insert("authorization".to_owned(), Value::Object(authorization));
        Ok(Credential::new(challenge.to_echo(), payload, Some(did_pkh(request.chain_id, &self.payer.address()))))
    }

    /// The `Authorization` header value (`Payment <base64url>`) answering the first `evm`
    /// charge challenge among the `WWW-Authenticate` values (one entry per header line).
    pub fn authorization_header_for(&self, www_authenticate_values: &[&str]) -> Result<String, ChargeClientError> {
        let challenges = parse_www_authenticate(www_authenticate_values).map_err(ChargeClientError::Header)?;
        let challenge = challenges
            .iter()
            .find(|c| c.method == EVM_METHOD && c.intent == CHARGE_INTENT)
            .ok_or(ChargeClientError::NoChargeChallenge)?;
        Ok(self.credential_for(challenge)?.to_authorization_header())
    }
}

/// Why a challenge's `expires` gives no authorization window.
pub(super) enum ExpiryError {
    /// Not RFC 3339.
    Invalid(String),
    /// Already past.
    Past(String),
}

/// The validity window `(validAfter, validBefore)` of the EIP-3009 authorizations answering a
/// challenge that `expires` at that time (RFC 3339), signed at `now`: from now − 600 s (clamped
/// at 0) until max(`expires` + 120 s, now + 300 s).
pub(super) fn authorization_window(now: u64, expires: Option<&str>) -> Result<(U256, U256), ExpiryError> {
    let min_before = U256::from(now) + U256::from(MIN_VALIDITY_SECONDS);
    let valid_before = match expires {
        None => min_before,
        Some(text) => {
            let at = parse_rfc3339(text).map_err(|_| ExpiryError::Invalid(text.to_owned()))?;
            if at.unix_timestamp() < i64::try_from(now).unwrap_or(i64::MAX) {
                return Err(ExpiryError::Past(text.to_owned()));
            }
            let at = u64::try_from(at.unix_timestamp()).unwrap_or(0);
            min_before.max(U256::from(at) + U256::from(VALID_BEFORE_AFTER_EXPIRY_SECONDS))
        }
    };
    Ok((U256::from(now.saturating_sub(VALID_AFTER_SKEW_SECONDS)), valid_before))
}

/// Signs an EIP-3009 transfer of `value` from `payer` to `to` (an address and its spelling in the
/// request) and returns its wire object
/// `{"type":"eip-3009","from","to","value","validAfter","validBefore","nonce","signature"}`:
/// `from` EIP-55, `to` as the request spells it, numbers decimal, nonce lower-case hex. A charge
/// pays the recipient and each split this way; a session deposit pays the escrow.
pub(super) fn signed_transfer(
    payer: &Payer,
    domain: &Eip712Domain,
    window: (U256, U256),
    (to, to_text): (Address, &str),
    value: U256,
) -> Result<Map<String, Value>, EvmError> {
    let (message, signature) = payer.sign_transfer(domain, to, value, window)?;
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), Value::String(v));
    };
    put("type", crate::okx::sa::EIP3009_AUTHORIZATION_TYPE.to_owned());
    put("from", evm::checksum(&message.from));
    put("to", to_text.to_owned());
    put("value", message.value.to_string());
    put("validAfter", message.validAfter.to_string());
    put("validBefore", message.validBefore.to_string());
    put("nonce", evm::to_hex(message.nonce));
    put("signature", signature);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::NetworkRegistry;
    use crate::evm::B256;
    use crate::mpp::Challenge;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const NOW: u64 = 1_774_864_800; // 2026-03-30T10:00:00Z

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn client() -> MppChargeClient {
        let counter = Arc::new(AtomicU8::new(1));
        MppChargeClient::new(KEY.parse().unwrap())
            .with_clock(|| NOW)
            .with_nonce_source(move || B256::repeat_byte(counter.fetch_add(1, Ordering::SeqCst)))
            .with_registry(NetworkRegistry::x_layer())
    }

    fn parsed(request: Value, expires: Option<&str>, method: &str, intent: &str) -> ParsedChallenge {
        let c = Challenge::new(
            "s",
            "api.example.com",
            method,
            intent,
            obj(request),
            expires.map(Into::into),
            None,
            None,
            None,
        );
        parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap().remove(0)
    }

    fn request(amount: &str, splits: Option<Value>) -> Value {
        let mut details = json!({"chainId": 196, "feePayer": false});
        if let Some(s) = splits {
            details["splits"] = s;
        }
        json!({"amount": amount, "currency": USDT0, "recipient": PAY_TO, "methodDetails": details})
    }

    #[test]
    fn signs_primary_and_splits() {
        let splits = json!([
            {"amount": "1000", "recipient": "0x2222222222222222222222222222222222222222", "memo": "fee"},
            {"amount": "500", "recipient": "0x3333333333333333333333333333333333333333"}
        ]);
        let c = parsed(request("10000", Some(splits)), Some("2026-03-30T10:05:00Z"), "evm", "charge");
        let cred = client().credential_for(&c).unwrap();
        assert_eq!(cred.challenge, c.to_echo());
        let auth = cred.payload["authorization"].as_object().unwrap();
        assert_eq!(auth["type"], "eip-3009");
        assert_eq!(auth["from"], "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(auth["to"], PAY_TO);
        assert_eq!(auth["value"], "8500");
        assert_eq!(auth["validAfter"], (NOW - 600).to_string());
        // expires (NOW + 300) + 120 beats now + 300.
        assert_eq!(auth["validBefore"], (NOW + 420).to_string());
        assert_eq!(auth["nonce"], evm::to_hex(B256::repeat_byte(1)));
        let splits = auth["splits"].as_array().unwrap();
        assert_eq!(splits.len(), 2);
        assert_eq!(splits[0]["value"], "1000");
        assert_eq!(splits[1]["to"], "0x3333333333333333333333333333333333333333");
        assert_eq!(splits[1]["nonce"], evm::to_hex(B256::repeat_byte(3)));
        assert!(splits[0].get("splits").is_none());

        // Every signature recovers to the payer over its own authorization.
        let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, evm::parse_address(USDT0).unwrap());
        for a in std::iter::once(auth).chain(splits.iter().filter_map(Value::as_object)) {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            let message = evm::Eip3009Authorization {
                from: s("from"),
                to: s("to"),
                value: s("value"),
                valid_after: s("validAfter"),
                valid_before: s("validBefore"),
                nonce: s("nonce"),
            }
            .to_message()
            .unwrap();
            assert!(evm::verify_transfer_authorization(&domain, &message, &s("signature")));
        }
    }

    #[test]
    fn window_without_expiry_and_early_clock() {
        let c = parsed(request("1", None), None, "evm", "charge");
        let cred = client().with_clock(|| 100).credential_for(&c).unwrap();
        let auth = &cred.payload["authorization"];
        assert_eq!((auth["validAfter"].as_str(), auth["validBefore"].as_str()), (Some("0"), Some("400")));
        assert!(auth.get("splits").is_none());
    }

    #[test]
    fn refusals() {
        let cl = client();
        let err = |c: &ParsedChallenge| cl.credential_for(c).unwrap_err();
        assert!(matches!(
            err(&parsed(request("1", None), None, "tempo", "charge")),
            ChargeClientError::UnsupportedChallenge { .. }
        ));
        assert!(matches!(
            err(&parsed(request("1", None), None, "evm", "session")),
            ChargeClientError::UnsupportedChallenge { .. }
        ));
        let over = json!([{"amount": "6", "recipient": PAY_TO}, {"amount": "5", "recipient": PAY_TO}]);
        assert_eq!(
            err(&parsed(request("10", Some(over)), None, "evm", "charge")),
            ChargeClientError::SplitsExceedAmount { splits: U256::from(11), amount: U256::from(10) }
        );
        let many = Value::Array(vec![json!({"amount": "1", "recipient": PAY_TO}); 11]);
        assert_eq!(
            err(&parsed(request("100", Some(many)), None, "evm", "charge")),
            ChargeClientError::TooManySplits { count: 11, max: 10 }
        );
        assert!(matches!(
            err(&parsed(request("1", None), Some("2026-03-30T09:59:59Z"), "evm", "charge")),
            ChargeClientError::ChallengeExpired(_)
        ));
        assert!(matches!(
            err(&parsed(request("1", None), Some("soon"), "evm", "charge")),
            ChargeClientError::InvalidExpiry(_)
        ));
        let mut other_chain = request("1", None);
        other_chain["methodDetails"]["chainId"] = json!(1);
        assert!(matches!(
            err(&parsed(other_chain, None, "evm", "charge")),
            ChargeClientError::UnsupportedToken { chain_id: 1, .. }
        ));
        let mut bad = request("1", None);
        bad["amount"] = json!("1.5");
        assert!(matches!(
            err(&parsed(bad, None, "evm", "charge")),
            ChargeClientError::InvalidRequest(ChargeRequestError { ref field, .. }) if field == "amount"
        ));
        let mut bad = request("1", None);
        bad.as_object_mut().unwrap().remove("recipient");
        assert!(matches!(err(&parsed(bad, None, "evm", "charge")), ChargeClientError::InvalidRequest(_)));
        let bad = request("1", Some(json!([{"amount": "1", "recipient": "0x12"}])));
        assert!(matches!(
            err(&parsed(bad, None, "evm", "charge")),
            ChargeClientError::InvalidRequest(ChargeRequestError { ref field, .. })
                if field == "methodDetails.splits[0].recipient"
        ));
    }

    #[test]
    fn header_picks_the_first_evm_charge() {
        let session = Challenge::new("s", "r", "evm", "session", obj(request("1", None)), None, None, None, None);
        let charge = Challenge::new("s", "r", "evm", "charge", obj(request("7", None)), None, None, None, None);
        let line = format!(
            "Bearer realm=\"x\", {}, {}",
            session.to_www_authenticate().unwrap(),
            charge.to_www_authenticate().unwrap()
        );
        let header = client().authorization_header_for(&[&line]).unwrap();
        let cred = Credential::from_authorization_header(&header).unwrap();
        assert_eq!(cred.challenge.id, charge.id);
        assert_eq!(cred.payload["authorization"]["value"], "7");
        assert_eq!(
            client().authorization_header_for(&[&session.to_www_authenticate().unwrap()]),
            Err(ChargeClientError::NoChargeChallenge)
        );
        assert!(matches!(client().authorization_header_for(&["Payment id=\"x\""]), Err(ChargeClientError::Header(_))));
    }
}
