//! The `request` of an MPP `evm` challenge (intents `charge` and `session`; wire facts §8.5,
//! §9.3): amount, currency, recipient, `methodDetails.chainId` and splits, decoded once into
//! [`ChargeRequest`]. Both sides read it: the buyer clients to sign, the embedded Settlement
//! Agent to check.

use crate::chain::{AssetInfo, Network, NetworkRegistry, X_LAYER_CHAIN_ID};
use crate::evm::{self, Address, Eip712Domain, U256};
use serde_json::{Map, Value};

/// The chain id when the request's `methodDetails.chainId` is absent (X Layer).
pub const DEFAULT_CHARGE_CHAIN_ID: u64 = X_LAYER_CHAIN_ID;

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

    /// The token's EIP-3009 EIP-712 domain (`{name, version}` from [`Self::token_info`],
    /// `chainId`, `verifyingContract = currency`); `None` when `registry` does not know the token.
    pub fn token_domain(&self, registry: &NetworkRegistry) -> Option<Eip712Domain> {
        let token = self.token_info(registry)?;
        Some(evm::eip3009_domain(&token.name, &token.version, self.chain_id, self.currency))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
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
        let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, r.currency);
        assert_eq!(r.token_domain(&NetworkRegistry::x_layer()), Some(domain));
        assert_eq!(r.token_domain(&NetworkRegistry::empty()), None);
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
}
