//! What an MPP route sells: the [`PaySpec`] a user writes (or `#[pay]` builds as a
//! [`StaticPaySpec`]), the [`Intent`] it names, and its [`RouteTerms`] — the spec resolved once
//! against the coordinator's method (price in base units, the request object every challenge
//! carries and its canonical JSON, which every credential's echo is compared with).

use super::encoding::canonical_json_object;
use super::error::MppError;
use super::expiry::{DEFAULT_CHALLENGE_TTL, python_isoformat_z};
use super::method::EvmMethod;
use super::method::PayError;
use super::problem::MppErrorKind;
use super::wire::{CHARGE_INTENT, SESSION_INTENT};
use crate::okx::sa::EvmPaymentError;
use alloy_primitives::U256;
use pay402_core::{Decimal, MoneySyntax, Rounding, parse_money};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use time::OffsetDateTime;

/// An MPP intent: what a route sells and what a credential pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Intent {
    /// `charge`: one payment per request, settled before the handler runs.
    Charge,
    /// `session`: a payment channel; each request spends a voucher's increment.
    Session,
}

impl Intent {
    /// The wire name (`charge`, `session`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Charge => CHARGE_INTENT,
            Self::Session => SESSION_INTENT,
        }
    }

    /// The intent named `text` (exact, case-sensitive wire name), if pay402 serves it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            CHARGE_INTENT => Some(Self::Charge),
            SESSION_INTENT => Some(Self::Session),
            _ => None,
        }
    }

    /// The refusal of a route whose intent the coordinator's method does not configure.
    pub(crate) fn not_configured(self) -> PayError {
        PayError::Method(EvmPaymentError::BadRequest(format!("the {} intent is not configured", self.as_str())))
    }

    /// The refusal of a route naming an intent pay402 does not serve.
    pub(crate) fn unknown(text: &str) -> PayError {
        PayError::Method(EvmPaymentError::BadRequest(format!("the `{text}` intent is not configured")))
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one payment of a `session` route pays for: a request (the default), or one event of a
/// metered Server-Sent Events stream ([`PaidStream`](super::PaidStream)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Per {
    /// The price is charged once per request (`#[pay(per = "request")]`, the default).
    #[default]
    Request,
    /// The price is charged per data event of a metered SSE stream (`#[pay(per = "event")]`):
    /// each event is reserved on the channel before it is sent and committed once handed to the
    /// connection; the route's requests carry `unitType: "event"`.
    Event,
}

impl Per {
    /// The attribute value (`request`, `event`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Event => "event",
        }
    }
}

/// What a route charges (the `#[pay]` keys; the seed's `pay()` arguments and the router's
/// `MppRouteConfig`). The realm is the coordinator's: a route that needs another realm uses
/// another [`Mpp`](super::Mpp).
#[derive(Clone, Debug, Default)]
pub struct PaySpec {
    /// Human amount, e.g. `"0.00001"` (per request for sessions).
    pub amount: String,
    /// `charge` or `session`.
    pub intent: String,
    /// Token (default: the method's).
    pub currency: Option<String>,
    /// Payee (default: the method's).
    pub recipient: Option<String>,
    /// Description (in the request and the challenge).
    pub description: Option<String>,
    /// Challenge lifetime (default 5 min; 1 hour for a route priced per event, whose stream
    /// takes companion vouchers and resumes under its challenge while it lives:
    /// [`STREAM_CHALLENGE_TTL`]).
    pub expires_in: Option<Duration>,
    /// Chain id override (ignored when the intent provides one, as in OKX's SDK).
    pub chain_id: Option<u64>,
    /// Session billing unit (`unitType`).
    pub unit_type: Option<String>,
    /// Suggested session deposit, base units (`suggestedDeposit`).
    pub suggested_deposit: Option<String>,
    /// Extra string fields of the request.
    pub extra: Option<BTreeMap<String, String>>,
    /// Token decimals for this route's human amount (default: the method's). OKX's Python
    /// `MppRouteConfig.decimals` is accepted but ignored; pay402 honours it.
    pub decimals: Option<u8>,
    /// Merchant reference put into the receipt's `externalId` when the settlement does not
    /// provide one (Python's `MppRouteConfig.external_id` is unused).
    pub external_id: Option<String>,
    /// What one price pays for (session routes): a request, or one event of a stream.
    pub per: Per,
}

impl PaySpec {
    /// A charge of `amount` (human units).
    pub fn charge(amount: impl Into<String>) -> Self {
        Self { amount: amount.into(), intent: "charge".into(), ..Self::default() }
    }

    /// A session route charging `amount` (human units) per request.
    pub fn session(amount: impl Into<String>) -> Self {
        Self { amount: amount.into(), intent: "session".into(), ..Self::default() }
    }

    /// Charges the price per data event of a metered SSE stream instead of per request (see
    /// [`Per::Event`]; session routes only).
    pub fn per_event(mut self) -> Self {
        self.per = Per::Event;
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Sets the recipient.
    pub fn recipient(mut self, r: impl Into<String>) -> Self {
        self.recipient = Some(r.into());
        self
    }

    /// Sets the challenge lifetime.
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = Some(d);
        self
    }
}

/// A route described by `#[pay(...)]` literals (validated at compile time). Built once.
#[derive(Debug)]
pub struct StaticPaySpec {
    amount: &'static str,
    intent: &'static str,
    currency: Option<&'static str>,
    recipient: Option<&'static str>,
    description: Option<&'static str>,
    expires_in_secs: Option<u64>,
    chain_id: Option<u64>,
    unit_type: Option<&'static str>,
    suggested_deposit: Option<&'static str>,
    per: Per,
    spec: OnceLock<Arc<PaySpec>>,
}

impl StaticPaySpec {
    /// A route charging `amount` (in the currency's units), with the defaults of a bare
    /// `#[pay(amount = "…")]`: the `charge` intent, and every other key left to the `Mpp`
    /// server's defaults. Each other key of the attribute is set by the `const fn` setter of its
    /// name (`StaticPaySpec::new("0.01").recipient("0x…")`), so the macro names each value it emits.
    pub const fn new(amount: &'static str) -> Self {
        Self {
            amount,
            intent: "charge",
            currency: None,
            recipient: None,
            description: None,
            expires_in_secs: None,
            chain_id: None,
            unit_type: None,
            suggested_deposit: None,
            per: Per::Request,
            spec: OnceLock::new(),
        }
    }

    const_setters! {
        /// Sets `intent` (`charge` or `session`).
        intent: &'static str,
        /// Sets `currency` (the token's address).
        currency: Option<&'static str>,
        /// Sets `recipient`.
        recipient: Option<&'static str>,
        /// Sets `description`.
        description: Option<&'static str>,
        /// Sets the challenge lifetime (the attribute's `expires_in`), in seconds.
        expires_in_secs: Option<u64>,
        /// Sets `chain_id`.
        chain_id: Option<u64>,
        /// Sets `unit_type` (the billing unit).
        unit_type: Option<&'static str>,
        /// Sets `suggested_deposit` (in base units).
        suggested_deposit: Option<&'static str>,
        /// Sets what one price pays for (`per`).
        per: Per,
    }

    /// The route's spec.
    pub fn spec(&self) -> Arc<PaySpec> {
        Arc::clone(self.spec.get_or_init(|| {
            Arc::new(PaySpec {
                amount: self.amount.to_owned(),
                intent: self.intent.to_owned(),
                currency: self.currency.map(str::to_owned),
                recipient: self.recipient.map(str::to_owned),
                description: self.description.map(str::to_owned),
                expires_in: self.expires_in_secs.map(Duration::from_secs),
                chain_id: self.chain_id,
                unit_type: self.unit_type.map(str::to_owned),
                suggested_deposit: self.suggested_deposit.map(str::to_owned),
                extra: None,
                decimals: None,
                external_id: None,
                per: self.per,
            })
        }))
    }
}

/// A route's terms, resolved once from its [`PaySpec`] against the coordinator's method: the
/// typed intent, the price in base units, and the request object its challenges carry with its
/// canonical JSON (the bytes a credential's echo must match). Built by [`Mpp::route_terms`](super::Mpp::route_terms);
/// JSON is rendered again only for challenges.
#[derive(Debug)]
pub struct RouteTerms {
    pub(super) intent: Intent,
    pub(super) amount: U256,
    pub(super) request: Arc<Map<String, Value>>,
    pub(super) canonical_request: String,
    pub(super) per: Per,
}

impl RouteTerms {
    /// The intent.
    pub fn intent(&self) -> Intent {
        self.intent
    }

    /// The price per request, in the token's base units.
    pub fn amount(&self) -> U256 {
        self.amount
    }

    /// The request object every challenge of the route carries.
    pub fn request(&self) -> &Map<String, Value> {
        &self.request
    }

    /// What one price pays for.
    pub fn per(&self) -> Per {
        self.per
    }
}

/// Most routes whose [`RouteTerms`] a coordinator keeps.
pub(super) const MAX_CACHED_ROUTES: usize = 4096;

/// The resolved terms of the shared routes a coordinator served, by the address of their `Arc`
/// (held, so the address is never reused while cached).
pub(super) type RouteTermsCache = Mutex<HashMap<usize, (Arc<PaySpec>, Arc<RouteTerms>)>>;

/// A base-unit amount: decimal digits only (no sign, no `0x`, no fraction), fitting 256 bits.
pub(super) fn base_units(text: &str) -> Option<U256> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(text, 10).ok()
}

/// Converts a human amount into base units, exactly.
pub(crate) fn to_base_units(amount: &str, decimals: u8) -> Result<String, MppError> {
    let value: Decimal = parse_money(amount, MoneySyntax::Lenient, false)
        .map_err(|e| MppError::new(MppErrorKind::BadRequest, format!("invalid amount `{amount}`: {e}")))?;
    value
        .to_atomic(decimals, Rounding::Exact)
        .map(|a| a.to_string())
        .map_err(|e| MppError::new(MppErrorKind::BadRequest, format!("invalid amount `{amount}`: {e}")))
}

/// The `amount`/`currency`/`recipient` part of a request, with the method's defaults.
pub(super) fn base_request(
    method: &EvmMethod,
    amount: &str,
    currency: Option<&str>,
    recipient: Option<&str>,
    decimals: Option<u8>,
) -> Result<Map<String, Value>, MppError> {
    let m = method;
    let mut r = Map::new();
    r.insert("amount".into(), Value::String(to_base_units(amount, decimals.unwrap_or(m.decimals))?));
    r.insert("currency".into(), Value::String(currency.unwrap_or(&m.currency).to_owned()));
    r.insert("recipient".into(), Value::String(recipient.unwrap_or(&m.recipient).to_owned()));
    Ok(r)
}

/// The request object a route's challenge carries (OKX's `pay()` form, §8.8).
pub(super) fn pay_request(method: &EvmMethod, spec: &PaySpec) -> Result<Map<String, Value>, PayError> {
    let mut r = base_request(method, &spec.amount, spec.currency.as_deref(), spec.recipient.as_deref(), spec.decimals)?;
    let details = match Intent::parse(&spec.intent) {
        Some(Intent::Charge) => match &method.charge {
            Some(c) => c.challenge_method_details(),
            None => return Err(Intent::Charge.not_configured()),
        },
        Some(Intent::Session) => match &method.session {
            Some(s) => s.challenge_method_details(),
            None => return Err(Intent::Session.not_configured()),
        },
        None => return Err(Intent::unknown(&spec.intent)),
    };
    if let Some(d) = &spec.description {
        r.insert("description".into(), Value::String(d.clone()));
    }
    if let Some(u) = &spec.unit_type {
        r.insert("unitType".into(), Value::String(u.clone()));
    } else if spec.per == Per::Event {
        r.insert("unitType".into(), Value::String(Per::Event.as_str().into()));
    }
    if let Some(s) = &spec.suggested_deposit {
        r.insert("suggestedDeposit".into(), Value::String(s.clone()));
    }
    if let Some(extra) = &spec.extra {
        r.insert(
            "extra".into(),
            Value::Object(extra.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
        );
    }
    r.insert("methodDetails".into(), Value::Object(details));
    Ok(r)
}

/// A route's terms (see [`RouteTerms`]): the intent typed, the price in base units and the
/// request built once. `Err` is a configuration error (an intent the method does not serve, a
/// price that is not an exact amount of the token).
pub(super) fn resolve(method: &EvmMethod, spec: &PaySpec) -> Result<RouteTerms, PayError> {
    let intent = Intent::parse(&spec.intent).ok_or_else(|| Intent::unknown(&spec.intent))?;
    // The one rule (pay402-core), which `#[pay]` checks at compile time.
    pay402_core::names::check_per_intent(spec.per.as_str(), Some(intent.as_str()))
        .map_err(|e| PayError::Method(EvmPaymentError::BadRequest(e)))?;
    let request = pay_request(method, spec)?;
    let amount = request.get("amount").and_then(Value::as_str).and_then(base_units).ok_or_else(|| {
        PayError::Protocol(MppError::new(MppErrorKind::BadRequest, "the route's amount is not a base-unit integer"))
    })?;
    let canonical_request = canonical_json_object(&request);
    Ok(RouteTerms { intent, amount, request: Arc::new(request), canonical_request, per: spec.per })
}

/// The default challenge lifetime of a route priced per event ([`Per::Event`]): one hour. A
/// metered stream's companion vouchers and resumes carry its challenge, which must still be
/// valid, so the challenge bounds how long the stream can be paid for; a route's own
/// `expires_in` overrides it.
pub const STREAM_CHALLENGE_TTL: Duration = Duration::from_secs(3600);

impl PaySpec {
    /// The challenge lifetime this route's challenges get: its `expires_in`, else
    /// [`STREAM_CHALLENGE_TTL`] for a route priced per event, else the default (5 minutes).
    pub fn challenge_ttl(&self) -> Option<Duration> {
        self.expires_in.or((self.per == Per::Event).then_some(STREAM_CHALLENGE_TTL))
    }
}

/// The challenge's `expires`: now + `ttl` (default [`DEFAULT_CHALLENGE_TTL`]). A `ttl` that
/// does not fit (overflows the date range) fails closed to the default, never panics (L9).
pub(super) fn expires_at(ttl: Option<Duration>) -> String {
    let now = OffsetDateTime::now_utc();
    let at = match ttl {
        None => now.checked_add(DEFAULT_CHALLENGE_TTL),
        Some(d) => time::Duration::try_from(d).ok().and_then(|t| now.checked_add(t)).or_else(|| {
            tracing::error!(expires_in = ?d, "mpp: expires_in out of range; using the default challenge lifetime");
            now.checked_add(DEFAULT_CHALLENGE_TTL)
        }),
    };
    python_isoformat_z(at.unwrap_or(now))
}
