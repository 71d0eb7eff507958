//! The low-level charge API ([`Mpp::charge`], the seed's `charge()`): a one-off charge built
//! from [`ChargeOptions`] (splits, memo, fee payer) instead of a route.

use super::challenge::Challenge;
use super::credential::Credential;
use super::error::MppError;
use super::method::PayError;
use super::payment::MppPayment;
use super::problem::MppErrorKind;
use super::receipt::Receipt;
use super::route::{self, Intent, to_base_units};
use super::server::{Granted, Mpp, Rejection};
use super::wire::MAX_SPLITS;
use crate::okx::sa::EvmPaymentError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One split of a low-level charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Human amount (converted with the method's decimals).
    pub amount: String,
    /// Recipient.
    pub recipient: String,
    /// Optional memo.
    pub memo: Option<String>,
}

/// Options of [`Mpp::charge`] (the seed's keyword arguments).
#[derive(Clone, Debug, Default)]
pub struct ChargeOptions {
    /// Token (default: the method's).
    pub currency: Option<String>,
    /// Payee (default: the method's).
    pub recipient: Option<String>,
    /// Challenge expiry, RFC 3339 (default: now + 5 min).
    pub expires: Option<String>,
    /// Challenge description (not bound into the request).
    pub description: Option<String>,
    /// 32-byte hex memo.
    pub memo: Option<String>,
    /// Splits (mutually exclusive with `fee_payer`).
    pub splits: Vec<Split>,
    /// The seller pays gas.
    pub fee_payer: bool,
    /// Chain id (default: the method's).
    pub chain_id: Option<u64>,
    /// Extra string fields of the request.
    pub extra: Option<BTreeMap<String, String>>,
}

/// The result of [`Mpp::charge`].
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ChargeOutcome {
    /// Payment required: send this challenge.
    Challenge(Challenge),
    /// Paid.
    Paid {
        /// The buyer's credential.
        credential: Credential,
        /// The receipt.
        receipt: Receipt,
    },
}

impl Mpp {
    /// The seed's low-level `charge()`: a challenge, or the verified credential and receipt.
    pub async fn charge(
        &self,
        authorization: Option<&str>,
        amount: &str,
        opts: ChargeOptions,
    ) -> Result<ChargeOutcome, PayError> {
        if !opts.splits.is_empty() && opts.fee_payer {
            return Err(PayError::Protocol(MppError::new(
                MppErrorKind::BadRequest,
                "splits and fee_payer are mutually exclusive",
            )));
        }
        if opts.splits.len() > MAX_SPLITS {
            return Err(PayError::Method(EvmPaymentError::InvalidSplit("at most 10 splits".into())));
        }
        let mut request =
            route::base_request(&self.inner.method, amount, opts.currency.as_deref(), opts.recipient.as_deref(), None)?;
        let mut details = Map::new();
        let chain_id = opts.chain_id.unwrap_or(self.inner.method.chain_id);
        details.insert("chainId".into(), Value::from(chain_id));
        if let Some(memo) = &opts.memo {
            let hex = memo.strip_prefix("0x").unwrap_or(memo);
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PayError::Protocol(MppError::new(
                    MppErrorKind::BadRequest,
                    "memo must be 32 bytes of hex",
                )));
            }
            details.insert("memo".into(), Value::String(memo.clone()));
        }
        if !opts.splits.is_empty() {
            let mut splits = Vec::new();
            for s in &opts.splits {
                let mut o = Map::new();
                o.insert("amount".into(), Value::String(to_base_units(&s.amount, self.inner.method.decimals)?));
                o.insert("recipient".into(), Value::String(s.recipient.clone()));
                if let Some(m) = &s.memo {
                    o.insert("memo".into(), Value::String(m.clone()));
                }
                splits.push(Value::Object(o));
            }
            details.insert("splits".into(), Value::Array(splits));
        }
        if opts.fee_payer {
            details.insert("feePayer".into(), Value::Bool(true));
        }
        request.insert("methodDetails".into(), Value::Object(details));
        if let Some(extra) = &opts.extra {
            request.insert(
                "extra".into(),
                Value::Object(extra.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
            );
        }
        let expires = opts.expires.clone().unwrap_or_else(|| route::expires_at(None));
        match self
            .verify_or_challenge(authorization, Intent::Charge.as_str(), request, opts.description.clone(), expires)
            .await
        {
            Ok(Granted::Paid(MppPayment { credential, receipt, .. })) => {
                Ok(ChargeOutcome::Paid { credential, receipt })
            }
            Ok(Granted::Management { .. } | Granted::Companion { .. }) => {
                Err(PayError::Method(EvmPaymentError::BadRequest("a session credential was sent to a charge".into())))
            }
            Err(Rejection { challenge, error: None }) => Ok(ChargeOutcome::Challenge(challenge)),
            Err(Rejection { error: Some(e), .. }) => Err(e),
        }
    }
}
