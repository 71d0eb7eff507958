//! The configuration of a protected x402 route: its accepted [`PaymentOption`]s (each with a
//! static or per-request [`PriceSource`] / [`PayToSource`]), the [`RouteConfig`] around them,
//! and [`StaticRoute`], the route an `#[x402(...)]` attribute describes.
//!
//! The routes are served by [`X402HttpServer`](super::X402HttpServer).

use super::types::{JsonObject, PaymentRequirements, Price, SettleResponse};
use crate::chain::Network;
use crate::web::{BoxFuture, HttpBody, PaymentHttpResponse, RequestContext};
use http::StatusCode;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why a dynamic price or payee callback ([`PaymentOption::dynamic_price`],
/// [`PaymentOption::dynamic_pay_to`]) gave no answer. The request is answered with a generic 500
/// (`Failed to process request`); the error itself is only logged.
///
/// Built from any error, or from a message: `Err("no merchant".into())`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DynamicRouteError(Box<dyn std::error::Error + Send + Sync>);

impl DynamicRouteError {
    /// Wraps an error (or a `String` / `&str` message).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl From<String> for DynamicRouteError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for DynamicRouteError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// A computed price: called per request, bounded by the route's hook timeout.
pub type DynamicPrice = Arc<dyn Fn(&RequestContext) -> BoxFuture<Result<Price, DynamicRouteError>> + Send + Sync>;
/// A computed payee: called per request, bounded by the route's hook timeout.
pub type DynamicPayTo = Arc<dyn Fn(&RequestContext) -> BoxFuture<Result<String, DynamicRouteError>> + Send + Sync>;
/// Replaces the unpaid 402's body (API clients only).
pub type UnpaidBodyFn = Arc<dyn Fn(&RequestContext) -> HttpBody + Send + Sync>;
/// Replaces the body of the 402 sent when settlement fails.
pub type SettleFailedBodyFn = Arc<dyn Fn(&RequestContext, &SettleResponse) -> HttpBody + Send + Sync>;

/// Where an option's price comes from.
#[derive(Clone)]
pub enum PriceSource {
    /// Fixed.
    Static(Price),
    /// Computed per request.
    Dynamic(DynamicPrice),
}

/// Where an option's payee comes from.
#[derive(Clone)]
pub enum PayToSource {
    /// Fixed.
    Static(String),
    /// Computed per request.
    Dynamic(DynamicPayTo),
    /// The server's configured payee ([`X402HttpServer::pay_to`](super::X402HttpServer::pay_to)).
    Default,
}

/// One accepted way to pay for a route.
#[derive(Clone)]
pub struct PaymentOption {
    /// Scheme (`exact`, `aggr_deferred`, `upto`).
    pub scheme: String,
    /// Payee.
    pub pay_to: PayToSource,
    /// Price (for `upto`: the maximum a request may cost).
    pub price: PriceSource,
    /// Network.
    pub network: Network,
    /// Authorization lifetime (default 300 s).
    pub max_timeout_seconds: Option<u64>,
    /// Extras merged over the price's extras.
    pub extra: JsonObject,
}

impl fmt::Debug for PaymentOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let price = match &self.price {
            PriceSource::Static(p) => format!("{p:?}"),
            PriceSource::Dynamic(_) => "<dynamic>".into(),
        };
        let pay_to = match &self.pay_to {
            PayToSource::Static(p) => p.clone(),
            PayToSource::Dynamic(_) => "<dynamic>".into(),
            PayToSource::Default => "<default>".into(),
        };
        f.debug_struct("PaymentOption")
            .field("scheme", &self.scheme)
            .field("network", &self.network)
            .field("price", &price)
            .field("pay_to", &pay_to)
            .finish_non_exhaustive()
    }
}

impl PaymentOption {
    /// An option with a static price and payee.
    pub fn new(scheme: &str, price: impl Into<Price>, network: &str, pay_to: &str) -> Self {
        Self {
            scheme: scheme.to_owned(),
            pay_to: PayToSource::Static(pay_to.to_owned()),
            price: PriceSource::Static(price.into()),
            network: Network::from(network),
            max_timeout_seconds: None,
            extra: JsonObject::new(),
        }
    }

    /// `exact` on X Layer (`eip155:196`).
    pub fn exact(price: impl Into<Price>, pay_to: &str) -> Self {
        Self::new("exact", price, crate::chain::X_LAYER, pay_to)
    }

    /// `upto` on X Layer (`eip155:196`): the buyer authorizes up to `max` and the handler
    /// reports what it used with [`UptoCharge`](super::UptoCharge) (not reported: `max` is
    /// settled). The requirements carry `max` as their `amount`. Register
    /// [`UptoEvmScheme`](super::UptoEvmScheme) for the network (as
    /// [`Setup`](crate::setup::Setup) does) and use a facilitator whose `/supported` `upto`
    /// kind announces `extra.facilitatorAddress`.
    pub fn upto(max: impl Into<Price>, pay_to: &str) -> Self {
        Self::new(pay402_core::names::UPTO, max, crate::chain::X_LAYER, pay_to)
    }

    /// Computes the price per request. The callback's error ([`DynamicRouteError`], e.g.
    /// `Err("no quote".into())`) answers the request with a 500 and is logged.
    pub fn dynamic_price<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(&RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Price, DynamicRouteError>> + Send + 'static,
    {
        self.price = PriceSource::Dynamic(Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    /// Computes the payee per request (errors as in [`Self::dynamic_price`]).
    pub fn dynamic_pay_to<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(&RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, DynamicRouteError>> + Send + 'static,
    {
        self.pay_to = PayToSource::Dynamic(Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    /// Uses the server's configured payee.
    pub fn default_pay_to(mut self) -> Self {
        self.pay_to = PayToSource::Default;
        self
    }

    /// Sets `maxTimeoutSeconds`.
    pub fn max_timeout_seconds(mut self, seconds: u64) -> Self {
        self.max_timeout_seconds = Some(seconds);
        self
    }

    /// Sets extras (merged over the price's EIP-712 extras).
    pub fn extra(mut self, extra: JsonObject) -> Self {
        self.extra = extra;
        self
    }

    pub(super) fn is_static(&self) -> bool {
        matches!(self.price, PriceSource::Static(_)) && matches!(self.pay_to, PayToSource::Static(_))
    }
}

/// What a retry of a payment settled earlier gets ([`RouteConfig::on_retry`]).
///
/// With x402 the handler runs *before* settlement, so when a settlement's outcome is unknown the
/// handler has already run once (its side effects happened) and its response was withheld.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDelivery {
    /// The response the handler produced for this payment, recorded when a retry may need it
    /// (its settlement became unknown, or it settled under a payment identifier): the handler
    /// does not run again. A response that was not recorded — streamed, larger than
    /// [`MAX_RECORDED_BODY_BYTES`](crate::web::MAX_RECORDED_BODY_BYTES), or refused by a full
    /// store — falls back to running the handler again. The default: right for handlers with
    /// side effects (`POST /orders`).
    #[default]
    RecordedResponse,
    /// The handler runs again for the retry (nothing is recorded): for idempotent handlers
    /// whose responses should be fresh, or too large to keep.
    RerunHandler,
}

/// Configuration of one protected route.
#[derive(Clone, Default)]
pub struct RouteConfig {
    /// Accepted payment options, in preference order.
    pub accepts: Vec<PaymentOption>,
    /// Resource URL override (default: the request's full URL).
    pub resource: Option<String>,
    /// Description (`""` when unset).
    pub description: Option<String>,
    /// MIME type (`""` when unset).
    pub mime_type: Option<String>,
    /// Browser paywall HTML, served instead of the default page (to requests preferring
    /// `text/html`, as the body of the same 402, challenge headers kept) with its
    /// `{{price}}`-style placeholders filled in, HTML-escaped
    /// ([`render_custom`](super::paywall::render_custom)). Served as written otherwise: pay402
    /// adds no `Content-Security-Policy` to a page it did not write. On a dual route
    /// (`PaymentRouter`) it replaces the page offering both protocols.
    pub custom_paywall_html: Option<String>,
    /// Body of the unpaid 402 for API clients.
    pub unpaid_response_body: Option<UnpaidBodyFn>,
    /// Body of the 402 sent when settlement fails.
    pub settlement_failed_response_body: Option<SettleFailedBodyFn>,
    /// `extensions` of the challenge.
    pub extensions: Option<JsonObject>,
    /// Bound on dynamic price/payee callbacks (default: none).
    pub hook_timeout: Option<Duration>,
    /// The `payment-identifier` extension: `Some(required)` when declared
    /// ([`RouteConfig::payment_identifier`]).
    pub(super) payment_identifier: Option<bool>,
    /// What a retry of a payment settled earlier gets ([`RouteConfig::on_retry`]).
    pub(super) retry_delivery: RetryDelivery,
    pub(super) static_accepts: Arc<OnceLock<Vec<PaymentRequirements>>>,
    pub(super) unpaid_challenge: super::unpaid_cache::UnpaidSlot,
}

impl fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteConfig")
            .field("accepts", &self.accepts)
            .field("resource", &self.resource)
            .field("description", &self.description)
            .field("mime_type", &self.mime_type)
            .finish_non_exhaustive()
    }
}

impl RouteConfig {
    /// A route accepting one option.
    pub fn new(option: PaymentOption) -> Self {
        Self::with_accepts(vec![option])
    }

    /// A route accepting several options.
    pub fn with_accepts(accepts: Vec<PaymentOption>) -> Self {
        Self { accepts, ..Self::default() }
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Sets the MIME type.
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.mime_type = Some(m.into());
        self
    }

    /// Sets the resource URL.
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }

    /// Sets the browser paywall HTML.
    pub fn custom_paywall_html(mut self, html: impl Into<String>) -> Self {
        self.custom_paywall_html = Some(html.into());
        self
    }

    /// Sets the unpaid 402 body.
    pub fn unpaid_response_body(mut self, f: impl Fn(&RequestContext) -> HttpBody + Send + Sync + 'static) -> Self {
        self.unpaid_response_body = Some(Arc::new(f));
        self
    }

    /// Sets the settlement-failure 402 body.
    pub fn settlement_failed_response_body(
        mut self,
        f: impl Fn(&RequestContext, &SettleResponse) -> HttpBody + Send + Sync + 'static,
    ) -> Self {
        self.settlement_failed_response_body = Some(Arc::new(f));
        self
    }

    /// Sets the challenge's `extensions`.
    pub fn extensions(mut self, e: JsonObject) -> Self {
        self.extensions = Some(e);
        if let Some(required) = self.payment_identifier {
            self = self.payment_identifier(required);
        }
        self
    }

    /// Declares the x402 `payment-identifier` extension (see [`super::payment_identifier`]):
    /// its 402 advertises it (`required` or optional), and a payment carrying an id is
    /// idempotent — a resend of a settled id gets the recorded response with the recorded
    /// `PAYMENT-RESPONSE` (no second verification or settlement; see [`RouteConfig::on_retry`]),
    /// another payment or request under the same id gets `409`, and the original still in
    /// flight gets `503` with `Retry-After`. With `required`, a payment without an id gets `400`.
    pub fn payment_identifier(mut self, required: bool) -> Self {
        self.payment_identifier = Some(required);
        self.extensions.get_or_insert_with(JsonObject::new).insert(
            super::payment_identifier::PAYMENT_IDENTIFIER.to_owned(),
            super::payment_identifier::payment_identifier_extension(required),
        );
        self
    }

    /// What a retry of a payment settled earlier gets — after an unknown settlement outcome, or
    /// a resend under a settled payment identifier (default
    /// [`RetryDelivery::RecordedResponse`]).
    pub fn on_retry(mut self, delivery: RetryDelivery) -> Self {
        self.retry_delivery = delivery;
        self
    }

    /// Bounds dynamic callbacks.
    pub fn hook_timeout(mut self, t: Duration) -> Self {
        self.hook_timeout = Some(t);
        self
    }
}

/// A route described by the literals of an `#[x402(...)]` attribute (validated at compile time
/// by the macro with the same validators the runtime uses). Built once, on first use.
#[derive(Debug)]
pub struct StaticRoute {
    price: &'static str,
    scheme: &'static str,
    network: &'static str,
    pay_to: Option<&'static str>,
    asset: Option<&'static str>,
    description: Option<&'static str>,
    mime_type: Option<&'static str>,
    max_timeout_seconds: Option<u64>,
    config: OnceLock<Arc<RouteConfig>>,
}

impl StaticRoute {
    /// A route charging `price` (with `.scheme("upto")`: up to `price`, the attribute's `max`),
    /// with the defaults of a bare `#[x402(price = "…")]`: the `exact`
    /// scheme on X Layer, the server's payee, the network's default asset, no description, MIME
    /// type or timeout. Every other key of the attribute is set by the `const fn` setter of its
    /// name (`StaticRoute::new("$0.001").pay_to("0x…")`), so the macro names each value it emits.
    pub const fn new(price: &'static str) -> Self {
        Self {
            price,
            scheme: "exact",
            network: Network::X_LAYER,
            pay_to: None,
            asset: None,
            description: None,
            mime_type: None,
            max_timeout_seconds: None,
            config: OnceLock::new(),
        }
    }

    const_setters! {
        /// Sets `scheme`.
        scheme: &'static str,
        /// Sets `network` (a CAIP-2 id).
        network: &'static str,
        /// Sets `pay_to` (the payee; otherwise the server's).
        pay_to: Option<&'static str>,
        /// Sets `asset` (otherwise the network's default asset).
        asset: Option<&'static str>,
        /// Sets `description`.
        description: Option<&'static str>,
        /// Sets `mime_type`.
        mime_type: Option<&'static str>,
        /// Sets `max_timeout_seconds`.
        max_timeout_seconds: Option<u64>,
    }

    /// The route's configuration.
    #[allow(clippy::result_large_err)] // the Err side is the HTTP response itself, built once per request
    pub fn config(&self) -> Result<Arc<RouteConfig>, PaymentHttpResponse> {
        if let Some(c) = self.config.get() {
            return Ok(Arc::clone(c));
        }
        let network = Network::from(self.network);
        if let Some(asset) = self.asset {
            let registry = crate::chain::NetworkRegistry::global();
            if registry.asset_info(&network, asset).is_none() {
                let msg = format!(
                    "asset {asset} is not the default asset of {network}; price other assets with a route table and an AssetAmount"
                );
                tracing::error!("{msg}");
                return Err(PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, &msg));
            }
        }
        let mut option = PaymentOption::new(self.scheme, self.price, self.network, "");
        option.pay_to = match self.pay_to {
            Some(p) => PayToSource::Static(p.to_owned()),
            None => PayToSource::Default,
        };
        option.max_timeout_seconds = self.max_timeout_seconds;
        let mut route = RouteConfig::new(option);
        route.description = self.description.map(str::to_owned);
        route.mime_type = self.mime_type.map(str::to_owned);
        Ok(Arc::clone(self.config.get_or_init(|| Arc::new(route))))
    }
}
