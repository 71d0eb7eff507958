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

use super::credential::{Credential, did_pkh};
use super::error::MppError;
use super::expiry::parse_rfc3339;
use super::header::{ParsedChallenge, parse_www_authenticate};
use super::wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS};
use crate::chain::Network;
use crate::chain::{AssetInfo, NetworkRegistry, X_LAYER_CHAIN_ID};
use crate::evm::{self, Address, B256, EvmError, PrivateKeySigner, TransferWithAuthorization, U256, UnixClock};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// The chain id when the request's `methodDetails.chainId` is absent (X Layer).
pub const DEFAULT_CHARGE_CHAIN_ID: u64 = X_LAYER_CHAIN_ID;

/// How far before "now" the authorizations become valid (clock-skew allowance).
pub const CHARGE_VALID_AFTER_SKEW_SECONDS: u64 = 600;
/// The authorizations stay valid at least this long after the challenge expires.
pub const CHARGE_VALID_BEFORE_AFTER_EXPIRY_SECONDS: u64 = 120;
/// … and at least this long after "now".
pub const CHARGE_MIN_VALIDITY_SECONDS: u64 = 300;

/// A field of a charge `request` is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request field `{field}`: {reason}")]
pub struct ChargeRequestError {
    /// The field path (e.g. `methodDetails.splits[1].amount`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn request_error(field: impl Into<String>, reason: impl Into<String>) -> ChargeRequestError {
    ChargeRequestError { field: field.into(), reason: reason.into() }
}

/// One split of a charge: part of the amount paid to another recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeSplit {
    /// Base units.
    pub amount: U256,
    /// The split's recipient.
    pub recipient: Address,
    /// The recipient as written in the request.
    pub recipient_text: String,
    /// Optional memo.
    pub memo: Option<String>,
}

/// The decoded `request` of an `evm` charge challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The total price in base units (recipient plus splits).
    pub amount: U256,
    /// The token contract.
    pub currency: Address,
    /// The token as written in the request.
    pub currency_text: String,
    /// The payee.
    pub recipient: Address,
    /// The payee as written in the request.
    pub recipient_text: String,
    /// `methodDetails.chainId` (default [`DEFAULT_CHARGE_CHAIN_ID`]).
    pub chain_id: u64,
    /// `methodDetails.splits` (or a top-level `splits` when `methodDetails` has none).
    pub splits: Vec<ChargeSplit>,
}

impl ChargeRequest {
    /// Reads a decoded challenge request. `amount` is a decimal string (a JSON integer is also
    /// accepted), `currency`/`recipient` are `0x` addresses, `methodDetails.chainId` a JSON
    /// integer or decimal string, each split `{"amount", "recipient", "memo"?}`. Unknown keys
    /// are ignored.
    pub fn from_request(request: &Map<String, Value>) -> Result<Self, ChargeRequestError> {
        let amount = uint_field(request, "amount", "amount")?;
        let (currency, currency_text) = address_field(request, "currency", "currency")?;
        let (recipient, recipient_text) = address_field(request, "recipient", "recipient")?;
        let details = match request.get("methodDetails") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(request_error("methodDetails", "must be a JSON object")),
        };
        let chain_id = match details.and_then(|d| d.get("chainId")) {
            None | Some(Value::Null) => DEFAULT_CHARGE_CHAIN_ID,
            Some(Value::Number(n)) => {
                n.as_u64().ok_or_else(|| request_error("methodDetails.chainId", "must be a non-negative integer"))?
            }
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map_err(|_| request_error("methodDetails.chainId", "is out of range"))?
            }
            Some(_) => return Err(request_error("methodDetails.chainId", "must be an integer")),
        };
        let (splits_path, splits_value) = match details.and_then(|d| d.get("splits")) {
            Some(v) if !v.is_null() => ("methodDetails.splits", Some(v)),
            _ => ("splits", request.get("splits").filter(|v| !v.is_null())),
        };
        let splits = match splits_value {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("{splits_path}[{i}]");
                    let split = item.as_object().ok_or_else(|| request_error(&path, "must be a JSON object"))?;
                    let amount = uint_field(split, "amount", &format!("{path}.amount"))?;
                    let (recipient, recipient_text) = address_field(split, "recipient", &format!("{path}.recipient"))?;
                    let memo = match split.get("memo") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(_) => return Err(request_error(format!("{path}.memo"), "must be a string")),
                    };
                    Ok(ChargeSplit { amount, recipient, recipient_text, memo })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(request_error(splits_path, "must be a JSON array")),
        };
        Ok(Self { amount, currency, currency_text, recipient, recipient_text, chain_id, splits })
    }

    /// The CAIP-2 network, `eip155:<chainId>`.
    pub fn network(&self) -> Network {
        Network::from(format!("eip155:{}", self.chain_id))
    }

    /// Σ split amounts (`None` on overflow).
    pub fn splits_total(&self) -> Option<U256> {
        self.splits.iter().try_fold(U256::ZERO, |acc, s| acc.checked_add(s.amount))
    }

    /// The token's EIP-712 name/version from `registry`: the default asset of
    /// [`Self::network`] when its address is the request's `currency`.
    pub fn token_info<'r>(&self, registry: &'r NetworkRegistry) -> Option<&'r AssetInfo> {
        registry.asset_info(&self.network(), &self.currency_text)
    }
}

fn uint_field(m: &Map<String, Value>, key: &str, path: &str) -> Result<U256, ChargeRequestError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(request_error(path, "is missing")),
        Some(Value::String(s)) => evm::parse_uint256(s).map_err(|e| request_error(path, e.to_string())),
        Some(Value::Number(n)) => {
            n.as_u64().map(U256::from).ok_or_else(|| request_error(path, "must be a non-negative integer"))
        }
        Some(_) => Err(request_error(path, "must be a decimal string")),
    }
}

fn address_field(m: &Map<String, Value>, key: &str, path: &str) -> Result<(Address, String), ChargeRequestError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(request_error(path, "is missing")),
        Some(Value::String(s)) => {
            evm::parse_address(s).map(|a| (a, s.clone())).map_err(|e| request_error(path, e.to_string()))
        }
        Some(_) => Err(request_error(path, "must be a 0x address string")),
    }
}

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

type NonceSource = Arc<dyn Fn() -> B256 + Send + Sync>;

/// Answers MPP `evm` charge challenges with signed EIP-3009 credentials.
///
/// For a request of `amount` with splits `s₁…sₙ` it signs `n + 1` authorizations from the
/// signer's address: `amount − Σsᵢ` to `recipient`, and `sᵢ.amount` to `sᵢ.recipient`, each with
/// its own random 32-byte nonce, all valid from now − 600 s (clamped at 0) until
/// max(challenge `expires` + 120 s, now + 300 s). The EIP-712 domain is
/// `{name, version}` of the token from the [`NetworkRegistry`] (the process-wide one unless
/// [`Self::with_registry`]), `chainId`, `verifyingContract = currency`.
#[derive(Clone)]
pub struct MppChargeClient {
    signer: PrivateKeySigner,
    clock: UnixClock,
    nonces: NonceSource,
    registry: Option<Arc<NetworkRegistry>>,
}

impl fmt::Debug for MppChargeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MppChargeClient").field("address", &self.signer.address()).finish_non_exhaustive()
    }
}

impl MppChargeClient {
    /// A client signing with `signer`, the system clock, random nonces and the process-wide
    /// [`NetworkRegistry::global`] (read at each call).
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self { signer, clock: evm::system_clock(), nonces: Arc::new(B256::random), registry: None }
    }

    /// Replaces the clock (Unix seconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces the nonce source (called once per authorization), for tests.
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

    fn registry(&self) -> Arc<NetworkRegistry> {
        self.registry.clone().unwrap_or_else(NetworkRegistry::global)
    }

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
        let registry = self.registry();
        let token = request.token_info(&registry).ok_or_else(|| ChargeClientError::UnsupportedToken {
            chain_id: request.chain_id,
            currency: request.currency_text.clone(),
        })?;
        let domain = evm::eip3009_domain(&token.name, &token.version, request.chain_id, request.currency);

        let now = (self.clock)();
        let expires_at = match &challenge.expires {
            None => None,
            Some(text) => {
                let at = parse_rfc3339(text).map_err(|_| ChargeClientError::InvalidExpiry(text.clone()))?;
                if at.unix_timestamp() < i64::try_from(now).unwrap_or(i64::MAX) {
                    return Err(ChargeClientError::ChallengeExpired(text.clone()));
                }
                Some(u64::try_from(at.unix_timestamp()).unwrap_or(0))
            }
        };
        let valid_after = U256::from(now.saturating_sub(CHARGE_VALID_AFTER_SKEW_SECONDS));
        let min_before = U256::from(now) + U256::from(CHARGE_MIN_VALIDITY_SECONDS);
        let valid_before = match expires_at {
            Some(at) => min_before.max(U256::from(at) + U256::from(CHARGE_VALID_BEFORE_AFTER_EXPIRY_SECONDS)),
            None => min_before,
        };

        let from = self.signer.address();
        let sign = |to: Address, to_text: &str, value: U256| -> Result<Map<String, Value>, ChargeClientError> {
            let message = TransferWithAuthorization {
                from,
                to,
                value,
                validAfter: valid_after,
                validBefore: valid_before,
                nonce: (self.nonces)(),
            };
            let signature = evm::sign_transfer_authorization(&self.signer, &domain, &message)
                .map_err(ChargeClientError::Signing)?;
            Ok(authorization_object(&message, to_text, signature))
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
        Ok(Credential::new(challenge.to_echo(), payload, Some(did_pkh(request.chain_id, &from))))
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

/// `{"type":"eip-3009","from","to","value","validAfter","validBefore","nonce","signature"}`:
/// `from` EIP-55, `to` as the request spells it, numbers decimal, nonce lower-case hex.
fn authorization_object(message: &TransferWithAuthorization, to_text: &str, signature: String) -> Map<String, Value> {
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
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::Challenge;
    use serde_json::json;
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
    fn request_parsing_defaults() {
        let r =
            ChargeRequest::from_request(&obj(json!({"amount": 5, "currency": USDT0, "recipient": PAY_TO}))).unwrap();
        assert_eq!((r.amount, r.chain_id, r.splits.len()), (U256::from(5), 196, 0));
        assert_eq!(r.network().as_str(), "eip155:196");
        let r = ChargeRequest::from_request(&obj(json!({
            "amount": "5", "currency": USDT0, "recipient": PAY_TO,
            "methodDetails": {"chainId": "196"}, "splits": [{"amount": "2", "recipient": PAY_TO, "memo": "m"}]
        })))
        .unwrap();
        assert_eq!(r.splits[0].memo.as_deref(), Some("m"));
        assert_eq!(r.splits_total(), Some(U256::from(2)));
        assert!(r.token_info(&NetworkRegistry::x_layer()).is_some());
        for bad in [
            json!({"amount": "5", "currency": USDT0, "recipient": PAY_TO, "methodDetails": []}),
            json!({"amount": "5", "currency": USDT0, "recipient": PAY_TO, "methodDetails": {"chainId": -1}}),
            json!({"amount": "5", "currency": USDT0, "recipient": PAY_TO, "methodDetails": {"splits": {}}}),
            json!({"amount": "-5", "currency": USDT0, "recipient": PAY_TO}),
            json!({"amount": "5", "currency": 7, "recipient": PAY_TO}),
        ] {
            assert!(ChargeRequest::from_request(&obj(bad.clone())).is_err(), "{bad}");
        }
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
