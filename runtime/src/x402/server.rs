//! The seller's core: [`X402ResourceServer`] (wire facts §4.3, §4.4, §4.6–§4.8, §4.10).
//!
//! Framework-agnostic: it builds [`PaymentRequirements`] from a [`RequirementsSpec`], matches a
//! buyer's [`PaymentPayload`] against them, and verifies and settles through the facilitator that
//! supports the (scheme, network), running the seller's hooks around each call.
//!
//! Unlike OKX's Rust SDK, the facilitator always receives the **seller's** requirements, after a
//! local check that the buyer's `accepted` copy binds to them (scheme, network, amount, asset,
//! payTo), so a buyer cannot pay less or pay someone else by editing its copy.

use super::facilitator::{FacilitatorClient, FacilitatorError};
use super::scheme::{PriceError, SchemeNetworkServer};
use super::types::{
    JsonObject, PaymentPayload, PaymentRequired, PaymentRequirements, Price, ResourceInfo, SettleResponse,
    SettleStatusResponse, SupportedKind, VerifyResponse, X402_VERSION, settle_status,
};
use crate::chain::Network;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tracing::Instrument;

/// Default `maxTimeoutSeconds` of built requirements.
pub const DEFAULT_MAX_TIMEOUT_SECONDS: u64 = 300;
/// Default limit on each hook call.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between settlement status queries.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default deadline of settlement status polling.
pub const DEFAULT_POLL_DEADLINE: Duration = Duration::from_secs(5);

/// Reason given when a before-hook exceeds the hook timeout.
const HOOK_TIMED_OUT: &str = "hook timed out";
/// `errorReason` of an unrecovered settlement timeout.
const SETTLEMENT_TIMEOUT: &str = "settlement_timeout";
/// `errorReason` of a failed settlement that gave no reason.
const SETTLEMENT_FAILED: &str = "settlement_failed";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the resource server could not build requirements, verify or settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// [`X402ResourceServer::initialize`] has not (successfully) run.
    #[error("the x402 resource server is not initialized: call initialize() first")]
    NotInitialized,
    /// No scheme with this name is registered for the network (exactly or by wildcard).
    #[error("no scheme `{scheme}` is registered for network `{network}`")]
    SchemeNotRegistered {
        /// Scheme name.
        scheme: String,
        /// Network.
        network: String,
    },
    /// No facilitator supports these (scheme, network) pairs with x402 version 2.
    #[error("no facilitator supports {}", list_kinds(.0))]
    UnsupportedKinds(Vec<(String, String)>),
    /// The price could not be turned into requirements.
    #[error(transparent)]
    Price(#[from] PriceError),
    /// The buyer's `accepted` copy differs from the seller's requirements in `field`.
    #[error("the payment does not match the payment requirements: `{field}` differs")]
    RequirementsMismatch {
        /// `scheme`, `network`, `amount`, `asset` or `payTo`.
        field: &'static str,
    },
    /// The payment uses an x402 version other than 2.
    #[error("unsupported x402 version {0}")]
    UnsupportedVersion(u32),
    /// A before-hook aborted the operation (or timed out).
    #[error("payment aborted: {reason}")]
    Aborted {
        /// The hook's reason.
        reason: String,
    },
    /// The facilitator failed (and no failure hook recovered).
    #[error(transparent)]
    Facilitator(#[from] FacilitatorError),
}

fn list_kinds(kinds: &[(String, String)]) -> String {
    kinds.iter().map(|(scheme, network)| format!("scheme `{scheme}` on `{network}`")).collect::<Vec<_>>().join(", ")
}

impl ServerError {
    /// The HTTP status a seller should answer with: 402 for payment problems (mismatch,
    /// abort, version), the facilitator error's status (502/504/500) for facilitator failures,
    /// 500 for configuration, price and initialisation problems.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::RequirementsMismatch { .. } | Self::UnsupportedVersion(_) | Self::Aborted { .. } => 402,
            Self::Facilitator(e) => e.http_status(),
            Self::NotInitialized | Self::SchemeNotRegistered { .. } | Self::UnsupportedKinds(_) | Self::Price(_) => 500,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs and hook types
// ---------------------------------------------------------------------------------------------

/// One payment option, as configured by the seller: the input of
/// [`X402ResourceServer::build_payment_requirements`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementsSpec {
    /// Scheme name (`exact`, `aggr_deferred`).
    pub scheme: String,
    /// Network.
    pub network: Network,
    /// Recipient address.
    pub pay_to: String,
    /// Price.
    pub price: Price,
    /// `maxTimeoutSeconds` (default [`DEFAULT_MAX_TIMEOUT_SECONDS`]).
    pub max_timeout_seconds: Option<u64>,
    /// Extras overlaid on the price's extras.
    pub extra: JsonObject,
}

impl RequirementsSpec {
    /// An option with the default timeout and no extras.
    pub fn new(
        scheme: impl Into<String>,
        network: impl Into<Network>,
        pay_to: impl Into<String>,
        price: impl Into<Price>,
    ) -> Self {
        Self {
            scheme: scheme.into(),
            network: network.into(),
            pay_to: pay_to.into(),
            price: price.into(),
            max_timeout_seconds: None,
            extra: JsonObject::new(),
        }
    }
}

/// What verify hooks see: the buyer's payment and the seller's requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyContext {
    /// The buyer's payment.
    pub payload: PaymentPayload,
    /// The seller's requirements (the ones sent to the facilitator).
    pub requirements: PaymentRequirements,
}

/// What settle hooks see: the buyer's payment and the seller's requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleContext {
    /// The buyer's payment.
    pub payload: PaymentPayload,
    /// The seller's requirements (the ones sent to the facilitator).
    pub requirements: PaymentRequirements,
}

/// Returned by a before-hook to stop the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortResult {
    /// Why (becomes [`ServerError::Aborted`]).
    pub reason: String,
}

impl AbortResult {
    /// An abort with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// Why verification failed, as passed to verify-failure hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The facilitator answered `isValid: false`.
    Invalid(VerifyResponse),
    /// The facilitator call failed.
    Error(FacilitatorError),
}

/// Why settlement failed, as passed to settle-failure hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleFailure {
    /// The facilitator answered `success: false`, or status polling reported a failure (the
    /// failure response that will be returned).
    Failed(SettleResponse),
    /// The facilitator call failed.
    Error(FacilitatorError),
    /// The settlement timed out and polling and the settlement-timeout hooks did not recover it.
    Timeout {
        /// The transaction hash (`""` when the facilitator gave none).
        transaction: String,
    },
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Hook<A, R> = Arc<dyn Fn(A) -> BoxFuture<R> + Send + Sync>;

#[derive(Clone, Default)]
struct Hooks {
    before_verify: Vec<Hook<VerifyContext, Option<AbortResult>>>,
    after_verify: Vec<Hook<(VerifyContext, VerifyResponse), ()>>,
    verify_failure: Vec<Hook<(VerifyContext, VerifyFailure), Option<VerifyResponse>>>,
    before_settle: Vec<Hook<SettleContext, Option<AbortResult>>>,
    after_settle: Vec<Hook<(SettleContext, SettleResponse), ()>>,
    settle_failure: Vec<Hook<(SettleContext, SettleFailure), Option<SettleResponse>>>,
    settlement_timeout: Vec<Hook<(String, Network), bool>>,
}

// ---------------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------------

/// A kind recorded at initialisation and the facilitator (index) that supports it first.
#[derive(Clone, Debug)]
struct Recorded {
    kind: SupportedKind,
    facilitator: usize,
}

#[derive(Debug, Default)]
struct InitState {
    kinds: Vec<Recorded>,
}

impl InitState {
    /// The kind covering (v2, scheme, network): an exact network first, then a wildcard, each in
    /// recording (facilitator) order.
    fn lookup(&self, scheme: &str, network: &Network) -> Option<&Recorded> {
        self.kinds
            .iter()
            .find(|r| r.kind.x402_version == X402_VERSION && r.kind.scheme == scheme && r.kind.network == *network)
            .or_else(|| self.kinds.iter().find(|r| r.kind.covers(scheme, network)))
    }

    /// Whether a registration (possibly a wildcard such as `eip155:*`) is supported: a concrete
    /// network must be covered; a wildcard needs a v2 kind of that scheme in its namespace.
    fn supports_registration(&self, scheme: &str, pattern: &str) -> bool {
        if pattern.ends_with(":*") {
            self.kinds.iter().any(|r| {
                r.kind.x402_version == X402_VERSION
                    && r.kind.scheme == scheme
                    && (r.kind.network == pattern || r.kind.network.matches_pattern(pattern))
            })
        } else {
            self.lookup(scheme, &Network::from(pattern)).is_some()
        }
    }
}

struct Registration {
    network: String,
    scheme: Arc<dyn SchemeNetworkServer>,
}

impl Clone for Registration {
    fn clone(&self) -> Self {
        Self { network: self.network.clone(), scheme: Arc::clone(&self.scheme) }
    }
}

struct Inner {
    facilitators: Vec<Arc<dyn FacilitatorClient>>,
    schemes: Vec<Registration>,
    hooks: Hooks,
    hook_timeout: Duration,
    poll_interval: Duration,
    poll_deadline: Duration,
    poll_pending: bool,
    deliver_on_pending: bool,
    state: RwLock<Option<Arc<InitState>>>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        Self {
            facilitators: self.facilitators.clone(),
            schemes: self.schemes.clone(),
            hooks: self.hooks.clone(),
            hook_timeout: self.hook_timeout,
            poll_interval: self.poll_interval,
            poll_deadline: self.poll_deadline,
            poll_pending: self.poll_pending,
            deliver_on_pending: self.deliver_on_pending,
            state: RwLock::new(self.state.read().unwrap_or_else(PoisonError::into_inner).clone()),
        }
    }
}

/// The seller's x402 core: builds requirements, verifies and settles payments through
/// facilitators, and runs the seller's hooks.
///
/// Configure it builder-style, call [`initialize`](Self::initialize) once (it fetches what each
/// facilitator supports), then share it: it is a cheap `Clone` (an `Arc` inside).
///
/// ```no_run
/// # use pay402_runtime::x402::*;
/// # async fn demo(facilitator: HttpFacilitatorClient) -> Result<(), ServerError> {
/// let server = X402ResourceServer::new(facilitator)
///     .register("eip155:196", ExactEvmScheme::new())
///     .on_before_settle(|_ctx| async { None });
/// server.initialize().await?;
/// let spec = RequirementsSpec::new("exact", "eip155:196", "0x1111111111111111111111111111111111111111", "$0.001");
/// let requirements = server.build_payment_requirements(&spec)?;
/// # let _ = requirements; Ok(()) }
/// ```
#[derive(Clone)]
pub struct X402ResourceServer {
    inner: Arc<Inner>,
}

impl fmt::Debug for X402ResourceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes: Vec<(String, String)> =
            self.inner.schemes.iter().map(|r| (r.network.clone(), r.scheme.scheme().to_owned())).collect();
        f.debug_struct("X402ResourceServer")
            .field("facilitators", &self.inner.facilitators.iter().map(|c| c.name().to_owned()).collect::<Vec<_>>())
            .field("schemes", &schemes)
            .field("hook_timeout", &self.inner.hook_timeout)
            .field("poll_interval", &self.inner.poll_interval)
            .field("poll_deadline", &self.inner.poll_deadline)
            .field("poll_pending", &self.inner.poll_pending)
            .field("deliver_on_pending", &self.inner.deliver_on_pending)
            .field("initialized", &self.is_initialized())
            .finish_non_exhaustive()
    }
}

/// The result of polling a settlement's status.
enum PollOutcome {
    Success,
    Failed(SettleStatusResponse),
    StillPending,
}

/// What a facilitator settle answer amounts to.
enum SettleOutcome {
    /// Deliver: settled (or pending, when the seller opted in with
    /// [`X402ResourceServer::deliver_on_pending`]).
    Deliver(SettleResponse),
    /// Failed: what the failure hooks see, and what is returned when no hook recovers it.
    Fail(SettleFailure, Result<SettleResponse, FacilitatorError>),
}

impl X402ResourceServer {
    /// A server using one facilitator.
    pub fn new(facilitator: impl FacilitatorClient) -> Self {
        Self::with_facilitators(vec![Arc::new(facilitator)])
    }

    /// A server using several facilitators; for each kind the first one (in this order) that
    /// supports it is used.
    pub fn with_facilitators(facilitators: Vec<Arc<dyn FacilitatorClient>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                facilitators,
                schemes: Vec::new(),
                hooks: Hooks::default(),
                hook_timeout: DEFAULT_HOOK_TIMEOUT,
                poll_interval: DEFAULT_POLL_INTERVAL,
                poll_deadline: DEFAULT_POLL_DEADLINE,
                poll_pending: true,
                deliver_on_pending: false,
                state: RwLock::new(None),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Registers a scheme for `network`, exact (`eip155:196`) or a wildcard (`eip155:*`). A
    /// second registration of the same scheme name for the same network replaces the first.
    /// Registering resets initialisation: call [`initialize`](Self::initialize) afterwards.
    pub fn register(mut self, network: &str, scheme: impl SchemeNetworkServer) -> Self {
        let scheme: Arc<dyn SchemeNetworkServer> = Arc::new(scheme);
        let inner = self.inner_mut();
        let existing = inner.schemes.iter_mut().find(|r| r.network == network && r.scheme.scheme() == scheme.scheme());
        match existing {
            Some(r) => r.scheme = scheme,
            None => inner.schemes.push(Registration { network: network.to_owned(), scheme }),
        }
        *inner.state.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// Limits each hook call (default 5 s). A before-hook that exceeds it aborts the operation;
    /// an after-, failure- or settlement-timeout hook that exceeds it is ignored.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.inner_mut().hook_timeout = timeout;
        self
    }

    /// Sets settlement status polling: one query every `interval` (default 1 s, at least 1 ms)
    /// until `deadline` (default 5 s).
    pub fn settlement_poll(mut self, interval: Duration, deadline: Duration) -> Self {
        let inner = self.inner_mut();
        inner.poll_interval = interval.max(Duration::from_millis(1));
        inner.poll_deadline = deadline;
        self
    }

    /// Polls settlements answered with status `pending` (with a transaction) until they
    /// succeed, fail or the poll deadline passes (default true). A settlement still pending then
    /// is refused like a settlement timeout (the settlement-timeout hooks may recover it),
    /// unless [`deliver_on_pending`](Self::deliver_on_pending) is set.
    pub fn poll_pending(mut self, enabled: bool) -> Self {
        self.inner_mut().poll_pending = enabled;
        self
    }

    /// Delivers the handler's response on a settlement answered `pending` (after polling, with
    /// [`poll_pending`](Self::poll_pending)) instead of refusing it (default false).
    ///
    /// An opt-in with a risk: `pending` is not "known to have succeeded". The buyer may move its
    /// funds before the transfer lands, or replay the same authorization to another instance
    /// while it is pending — use a shared replay store across instances (an in-memory one is
    /// per process, and pay402 logs a warning when it is combined with this option).
    pub fn deliver_on_pending(mut self, enabled: bool) -> Self {
        self.inner_mut().deliver_on_pending = enabled;
        self
    }

    /// Whether a `pending` settlement is delivered on ([`deliver_on_pending`](Self::deliver_on_pending)).
    pub fn delivers_on_pending(&self) -> bool {
        self.inner.deliver_on_pending
    }

    /// Adds a hook run before each verification, in registration order. Returning
    /// `Some(abort)` stops verification with [`ServerError::Aborted`]; a hook exceeding the hook
    /// timeout aborts with reason `hook timed out`.
    pub fn on_before_verify<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(VerifyContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<AbortResult>> + Send + 'static,
    {
        self.inner_mut().hooks.before_verify.push(Arc::new(move |ctx| Box::pin(hook(ctx))));
        self
    }

    /// Adds a hook run after a valid verification (including one recovered by a failure hook).
    pub fn on_after_verify<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(VerifyContext, VerifyResponse) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner_mut().hooks.after_verify.push(Arc::new(move |(ctx, resp)| Box::pin(hook(ctx, resp))));
        self
    }

    /// Adds a hook run when the facilitator answers `isValid: false` or fails. The first hook
    /// returning `Some(response)` recovers: that response replaces the result (and after-verify
    /// hooks then run if it is valid).
    pub fn on_verify_failure<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(VerifyContext, VerifyFailure) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<VerifyResponse>> + Send + 'static,
    {
        self.inner_mut().hooks.verify_failure.push(Arc::new(move |(ctx, failure)| Box::pin(hook(ctx, failure))));
        self
    }

    /// Adds a hook run before each settlement; like [`on_before_verify`](Self::on_before_verify).
    pub fn on_before_settle<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SettleContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<AbortResult>> + Send + 'static,
    {
        self.inner_mut().hooks.before_settle.push(Arc::new(move |ctx| Box::pin(hook(ctx))));
        self
    }

    /// Adds a hook run after a successful settlement (including a recovered one).
    pub fn on_after_settle<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SettleContext, SettleResponse) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner_mut().hooks.after_settle.push(Arc::new(move |(ctx, resp)| Box::pin(hook(ctx, resp))));
        self
    }

    /// Adds a hook run when settlement fails (`success: false`, a facilitator error, a failure
    /// reported by status polling, or an unrecovered timeout). The first hook returning
    /// `Some(response)` recovers: that response replaces the result (and after-settle hooks then
    /// run if it is successful).
    pub fn on_settle_failure<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SettleContext, SettleFailure) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<SettleResponse>> + Send + 'static,
    {
        self.inner_mut().hooks.settle_failure.push(Arc::new(move |(ctx, failure)| Box::pin(hook(ctx, failure))));
        self
    }

    /// Adds a hook asked, with the transaction hash and network, whether a settlement whose
    /// status polling ended without an answer should count as settled. Any `true` recovers it.
    pub fn on_settlement_timeout<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(String, Network) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.inner_mut().hooks.settlement_timeout.push(Arc::new(move |(tx, network)| Box::pin(hook(tx, network))));
        self
    }

    // -----------------------------------------------------------------------------------------
    // Initialisation
    // -----------------------------------------------------------------------------------------

    /// Fetches `supported()` from every facilitator (in order), records for each kind the first
    /// facilitator supporting it, and checks that every registered (network, scheme) is
    /// supported with x402 version 2. All unsupported pairs are reported in one
    /// [`ServerError::UnsupportedKinds`]; a facilitator failure is [`ServerError::Facilitator`].
    pub async fn initialize(&self) -> Result<(), ServerError> {
        let mut state = InitState::default();
        for (index, facilitator) in self.inner.facilitators.iter().enumerate() {
            let supported = crate::metrics::facilitator_call("supported", facilitator.supported()).await?;
            for kind in supported.kinds {
                let known = state.kinds.iter().any(|r| {
                    r.kind.x402_version == kind.x402_version
                        && r.kind.scheme == kind.scheme
                        && r.kind.network == kind.network
                });
                if !known {
                    state.kinds.push(Recorded { kind, facilitator: index });
                }
            }
        }
        let unsupported: Vec<(String, String)> = self
            .inner
            .schemes
            .iter()
            .filter(|r| !state.supports_registration(r.scheme.scheme(), &r.network))
            .map(|r| (r.scheme.scheme().to_owned(), r.network.clone()))
            .collect();
        if !unsupported.is_empty() {
            return Err(ServerError::UnsupportedKinds(unsupported));
        }
        tracing::debug!(kinds = state.kinds.len(), "x402 resource server initialized");
        *self.inner.state.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(state));
        Ok(())
    }

    /// Whether [`initialize`](Self::initialize) has succeeded (since the last registration).
    pub fn is_initialized(&self) -> bool {
        self.state().is_some()
    }

    fn state(&self) -> Option<Arc<InitState>> {
        self.inner.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The supported kind recorded for (scheme, network), once initialised.
    pub fn supported_kind(&self, scheme: &str, network: &Network) -> Option<SupportedKind> {
        self.state()?.lookup(scheme, network).map(|r| r.kind.clone())
    }

    fn scheme_for(&self, scheme: &str, network: &Network) -> Option<&Arc<dyn SchemeNetworkServer>> {
        let schemes = &self.inner.schemes;
        schemes
            .iter()
            .find(|r| r.scheme.scheme() == scheme && r.network == network.as_str())
            .or_else(|| {
                schemes.iter().find(|r| {
                    r.scheme.scheme() == scheme && r.network.ends_with(":*") && network.matches_pattern(&r.network)
                })
            })
            .map(|r| &r.scheme)
    }

    /// The facilitator recorded for (scheme, network); the first facilitator before
    /// initialisation.
    fn facilitator_for(&self, scheme: &str, network: &Network) -> Result<Arc<dyn FacilitatorClient>, ServerError> {
        let index = match self.state() {
            Some(state) => match state.lookup(scheme, network) {
                Some(r) => r.facilitator,
                None => return Err(ServerError::UnsupportedKinds(vec![(scheme.to_owned(), network.to_string())])),
            },
            None => 0,
        };
        self.inner
            .facilitators
            .get(index)
            .cloned()
            .ok_or_else(|| ServerError::Facilitator(FacilitatorError::Config("no facilitator configured".into())))
    }

    // -----------------------------------------------------------------------------------------
    // Requirements
    // -----------------------------------------------------------------------------------------

    /// Builds the requirements of one payment option (wire facts §4.4 steps 2–4): finds the
    /// registered scheme, parses the price, sets `maxTimeoutSeconds` (default 300) and `extra`
    /// (the price's extras overlaid by `spec.extra`), then lets the scheme enhance them.
    pub fn build_payment_requirements(&self, spec: &RequirementsSpec) -> Result<PaymentRequirements, ServerError> {
        let scheme = self.scheme_for(&spec.scheme, &spec.network).ok_or_else(|| ServerError::SchemeNotRegistered {
            scheme: spec.scheme.clone(),
            network: spec.network.to_string(),
        })?;
        let state = self.state().ok_or(ServerError::NotInitialized)?;
        let kind = state
            .lookup(&spec.scheme, &spec.network)
            .ok_or_else(|| ServerError::UnsupportedKinds(vec![(spec.scheme.clone(), spec.network.to_string())]))?;
        let price = scheme.parse_price(&spec.price, &spec.network)?;
        let mut extra = price.extra;
        for (key, value) in &spec.extra {
            extra.insert(key.clone(), value.clone());
        }
        let requirements = PaymentRequirements {
            scheme: spec.scheme.clone(),
            network: spec.network.clone(),
            asset: price.asset,
            amount: price.amount,
            pay_to: spec.pay_to.clone(),
            max_timeout_seconds: spec.max_timeout_seconds.unwrap_or(DEFAULT_MAX_TIMEOUT_SECONDS),
            extra,
        };
        Ok(scheme.enhance_payment_requirements(requirements, Some(&kind.kind), &[])?)
    }

    /// The 402 challenge (x402 version 2) for `resource` with these options.
    pub fn build_payment_required(
        &self,
        resource: ResourceInfo,
        accepts: Vec<PaymentRequirements>,
        error: Option<String>,
        extensions: Option<JsonObject>,
    ) -> PaymentRequired {
        PaymentRequired { x402_version: X402_VERSION, error, resource: Some(resource), accepts, extensions }
    }

    /// The first of `accepts` whose scheme, network, amount, asset and payTo string-equal the
    /// payload's `accepted` copy (`maxTimeoutSeconds` and `extra` are not compared).
    pub fn find_matching_requirements<'a>(
        accepts: &'a [PaymentRequirements],
        payload: &PaymentPayload,
    ) -> Option<&'a PaymentRequirements> {
        accepts.iter().find(|r| r.mismatch(&payload.accepted).is_none())
    }

    fn check_binding(payload: &PaymentPayload, requirements: &PaymentRequirements) -> Result<(), ServerError> {
        if payload.x402_version != X402_VERSION {
            return Err(ServerError::UnsupportedVersion(payload.x402_version));
        }
        match requirements.mismatch(&payload.accepted) {
            Some(field) => Err(ServerError::RequirementsMismatch { field }),
            None => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Verify
    // -----------------------------------------------------------------------------------------

    /// Verifies `payload` against the seller's `requirements`.
    ///
    /// First checks the version and that the payload's `accepted` binds to `requirements`
    /// ([`ServerError::RequirementsMismatch`], no facilitator call, no hook). Then runs the
    /// before-verify hooks, sends the **seller's** requirements to the facilitator supporting
    /// the kind, and runs the failure hooks (on `isValid: false` or an error) and the
    /// after-verify hooks. An unrecovered `isValid: false` is returned as `Ok`.
    pub async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, ServerError> {
        let span = tracing::info_span!(
            "x402.verify",
            scheme = %requirements.scheme,
            network = %requirements.network,
            amount = %requirements.amount,
            payer = payload.claimed_payer().unwrap_or_default(),
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let start = std::time::Instant::now();
        let result = self.verify_inner(payload, requirements).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(v) if v.is_valid => "valid",
            Ok(_) => "invalid",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        span.record("latency_ms", crate::metrics::millis_since(start));
        result
    }

    async fn verify_inner(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, ServerError> {
        if let Err(e) = Self::check_binding(payload, requirements) {
            tracing::debug!(error = %e, "x402 verify refused locally");
            return Err(e);
        }
        let facilitator = self.facilitator_for(&requirements.scheme, &requirements.network)?;
        let hooks = &self.inner.hooks;
        // Hook arguments are copies of the payment: built only when a hook is registered.
        let ctx = || VerifyContext { payload: payload.clone(), requirements: requirements.clone() };
        if !hooks.before_verify.is_empty() {
            self.run_before(&hooks.before_verify, &ctx(), "before_verify").await?;
        }

        let answer = crate::metrics::facilitator_call("verify", facilitator.verify(payload, requirements)).await;
        let failure = match answer {
            Ok(resp) if resp.is_valid => {
                tracing::debug!(facilitator = facilitator.name(), "x402 verify: valid");
                if !hooks.after_verify.is_empty() {
                    self.run_after(&hooks.after_verify, (ctx(), resp.clone()), "after_verify").await;
                }
                return Ok(resp);
            }
            Ok(resp) => {
                tracing::debug!(
                    facilitator = facilitator.name(),
                    reason = resp.invalid_reason.as_deref().unwrap_or_default(),
                    "x402 verify: invalid"
                );
                VerifyFailure::Invalid(resp)
            }
            Err(e) => {
                tracing::debug!(facilitator = facilitator.name(), error = %e, "x402 verify: facilitator error");
                VerifyFailure::Error(e)
            }
        };
        let recovered = if hooks.verify_failure.is_empty() {
            None
        } else {
            self.run_recover(&hooks.verify_failure, (ctx(), failure.clone()), "verify_failure").await
        };
        match (recovered, failure) {
            (Some(resp), _) => {
                tracing::debug!(is_valid = resp.is_valid, "x402 verify: recovered by a failure hook");
                if resp.is_valid && !hooks.after_verify.is_empty() {
                    self.run_after(&hooks.after_verify, (ctx(), resp.clone()), "after_verify").await;
                }
                Ok(resp)
            }
            (None, VerifyFailure::Invalid(resp)) => Ok(resp),
            (None, VerifyFailure::Error(e)) => Err(ServerError::Facilitator(e)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Settle
    // -----------------------------------------------------------------------------------------

    /// Settles `payload` against the seller's `requirements`.
    ///
    /// Same local checks and facilitator choice as [`verify`](Self::verify). A `timeout` answer
    /// with a transaction (or `pending`, with [`poll_pending`](Self::poll_pending)) is polled
    /// until the deadline (wire facts §4.8); an unrecovered timeout asks the settlement-timeout
    /// hooks, then becomes a failure response with `errorReason` `settlement_timeout`. Failures
    /// go through the settle-failure hooks; an unrecovered failure response (`success: false`)
    /// is returned as `Ok`, an unrecovered facilitator error as `Err`.
    pub async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, ServerError> {
        let span = tracing::info_span!(
            "x402.settle",
            scheme = %requirements.scheme,
            network = %requirements.network,
            amount = %requirements.amount,
            payer = payload.claimed_payer().unwrap_or_default(),
            transaction = tracing::field::Empty,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let start = std::time::Instant::now();
        let result = self.settle_inner(payload, requirements).instrument(span.clone()).await;
        match &result {
            Ok(resp) => {
                if !resp.transaction.is_empty() {
                    span.record("transaction", resp.transaction.as_str());
                }
                let outcome = match (resp.success, resp.status.as_deref()) {
                    (true, Some(settle_status::PENDING)) => "pending",
                    (true, _) => "success",
                    (false, _) => "failed",
                };
                span.record("outcome", outcome);
            }
            Err(_) => {
                span.record("outcome", "error");
            }
        }
        span.record("latency_ms", crate::metrics::millis_since(start));
        result
    }

    async fn settle_inner(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettleResponse, ServerError> {
        if let Err(e) = Self::check_binding(payload, requirements) {
            tracing::debug!(error = %e, "x402 settle refused locally");
            return Err(e);
        }
        let facilitator = self.facilitator_for(&requirements.scheme, &requirements.network)?;
        let hooks = &self.inner.hooks;
        // Hook arguments are copies of the payment: built only when a hook is registered.
        let ctx = || SettleContext { payload: payload.clone(), requirements: requirements.clone() };
        if !hooks.before_settle.is_empty() {
            self.run_before(&hooks.before_settle, &ctx(), "before_settle").await?;
        }

        let answer = crate::metrics::facilitator_call("settle", facilitator.settle(payload, requirements)).await;
        let outcome = match answer {
            Ok(resp) => {
                tracing::debug!(
                    facilitator = facilitator.name(),
                    success = resp.success,
                    status = resp.status.as_deref().unwrap_or_default(),
                    transaction = %resp.transaction,
                    "x402 settle: facilitator answered"
                );
                self.classify_settle(facilitator.as_ref(), resp, requirements).await
            }
            Err(e) => {
                tracing::debug!(facilitator = facilitator.name(), error = %e, "x402 settle: facilitator error");
                SettleOutcome::Fail(SettleFailure::Error(e.clone()), Err(e))
            }
        };
        let (failure, unrecovered) = match outcome {
            SettleOutcome::Deliver(resp) => {
                if !hooks.after_settle.is_empty() {
                    self.run_after(&hooks.after_settle, (ctx(), resp.clone()), "after_settle").await;
                }
                return Ok(resp);
            }
            SettleOutcome::Fail(failure, unrecovered) => (failure, unrecovered),
        };
        let recovered = if hooks.settle_failure.is_empty() {
            None
        } else {
            self.run_recover(&hooks.settle_failure, (ctx(), failure), "settle_failure").await
        };
        match recovered {
            Some(resp) => {
                tracing::debug!(success = resp.success, "x402 settle: recovered by a failure hook");
                if resp.success && !hooks.after_settle.is_empty() {
                    self.run_after(&hooks.after_settle, (ctx(), resp.clone()), "after_settle").await;
                }
                Ok(resp)
            }
            None => {
                if let Ok(resp) = &unrecovered {
                    tracing::debug!(reason = resp.error_reason.as_deref().unwrap_or_default(), "x402 settle: failed");
                }
                unrecovered.map_err(ServerError::Facilitator)
            }
        }
    }

    /// Turns a facilitator settle answer into a deliverable response or a failure (with the
    /// response to return when no failure hook recovers it).
    async fn classify_settle(
        &self,
        facilitator: &dyn FacilitatorClient,
        resp: SettleResponse,
        requirements: &PaymentRequirements,
    ) -> SettleOutcome {
        if !resp.success {
            return SettleOutcome::Fail(SettleFailure::Failed(resp.clone()), Ok(resp));
        }
        let network =
            if resp.network.as_str().is_empty() { requirements.network.clone() } else { resp.network.clone() };
        let timeout_failure = |resp: &SettleResponse| {
            let failure = SettleResponse::failure(
                SETTLEMENT_TIMEOUT,
                network.clone(),
                resp.payer.clone(),
                resp.transaction.clone(),
            );
            SettleOutcome::Fail(SettleFailure::Timeout { transaction: resp.transaction.clone() }, Ok(failure))
        };
        match resp.status.as_deref() {
            Some(settle_status::TIMEOUT) => {
                if resp.transaction.is_empty() {
                    // Nothing to poll: fail closed.
                    return timeout_failure(&resp);
                }
                match self.poll_settlement(facilitator, &resp.transaction).await {
                    PollOutcome::Success => SettleOutcome::Deliver(settled(resp)),
                    PollOutcome::Failed(status) => poll_failure(&resp, status, network),
                    PollOutcome::StillPending => {
                        if self.run_settlement_timeout(&resp.transaction, &network).await {
                            tracing::debug!("x402 settle: timeout recovered by a settlement-timeout hook");
                            SettleOutcome::Deliver(settled(resp))
                        } else {
                            timeout_failure(&resp)
                        }
                    }
                }
            }
            Some(settle_status::PENDING) => {
                if self.inner.poll_pending && !resp.transaction.is_empty() {
                    match self.poll_settlement(facilitator, &resp.transaction).await {
                        PollOutcome::Success => return SettleOutcome::Deliver(settled(resp)),
                        PollOutcome::Failed(status) => return poll_failure(&resp, status, network),
                        PollOutcome::StillPending => {}
                    }
                }
                if self.inner.deliver_on_pending {
                    return SettleOutcome::Deliver(resp);
                }
                // Not known to have succeeded: refused like a timeout (F11), unless a
                // settlement-timeout hook confirms it.
                if !resp.transaction.is_empty() && self.run_settlement_timeout(&resp.transaction, &network).await {
                    tracing::debug!("x402 settle: pending recovered by a settlement-timeout hook");
                    return SettleOutcome::Deliver(settled(resp));
                }
                tracing::warn!(transaction = %resp.transaction, "x402 settle: still pending; refusing the response (deliver_on_pending is off)");
                timeout_failure(&resp)
            }
            Some(settle_status::FAILED) => {
                // `success: true` with status `failed` is contradictory: fail closed.
                let reason = resp.error_reason.clone().unwrap_or_else(|| SETTLEMENT_FAILED.to_owned());
                let mut failure =
                    SettleResponse::failure(reason, network, resp.payer.clone(), resp.transaction.clone());
                failure.error_message = resp.error_message.clone();
                SettleOutcome::Fail(SettleFailure::Failed(failure.clone()), Ok(failure))
            }
            _ => SettleOutcome::Deliver(resp),
        }
    }

    /// Polls `settle_status(tx)` every interval until the deadline (last sleep clipped).
    async fn poll_settlement(&self, facilitator: &dyn FacilitatorClient, tx: &str) -> PollOutcome {
        let span = tracing::info_span!("x402.settle.poll", transaction = tx, outcome = tracing::field::Empty);
        let outcome = self.poll_settlement_inner(facilitator, tx).instrument(span.clone()).await;
        let label = match &outcome {
            PollOutcome::Success => "success",
            PollOutcome::Failed(_) => "failed",
            PollOutcome::StillPending => "still_pending",
        };
        span.record("outcome", label);
        outcome
    }

    async fn poll_settlement_inner(&self, facilitator: &dyn FacilitatorClient, tx: &str) -> PollOutcome {
        let interval = self.inner.poll_interval;
        let deadline = tokio::time::Instant::now() + self.inner.poll_deadline;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return PollOutcome::StillPending;
            }
            tokio::time::sleep(interval.min(remaining)).await;
            let budget = interval.max(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let query = crate::metrics::facilitator_call("settle_status", facilitator.settle_status(tx));
            match tokio::time::timeout(budget, query).await {
                Ok(Ok(status)) if !status.success => return PollOutcome::Failed(status),
                Ok(Ok(status)) => match status.status.as_deref() {
                    Some(settle_status::SUCCESS) => return PollOutcome::Success,
                    Some(settle_status::FAILED) => return PollOutcome::Failed(status),
                    other => tracing::debug!(status = other.unwrap_or_default(), "x402 settle status: not final"),
                },
                Ok(Err(e)) => tracing::debug!(error = %e, "x402 settle status query failed"),
                Err(_) => tracing::debug!("x402 settle status query timed out"),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hook runners
    // -----------------------------------------------------------------------------------------

    async fn run_before<C>(
        &self,
        hooks: &[Hook<C, Option<AbortResult>>],
        ctx: &C,
        what: &'static str,
    ) -> Result<(), ServerError>
    where
        C: Clone + Send + Sync,
    {
        for hook in hooks {
            match tokio::time::timeout(self.inner.hook_timeout, hook(ctx.clone())).await {
                Ok(None) => {}
                Ok(Some(abort)) => {
                    tracing::debug!(hook = what, reason = %abort.reason, "x402 hook aborted");
                    return Err(ServerError::Aborted { reason: abort.reason });
                }
                Err(_) => {
                    tracing::warn!(hook = what, timeout = ?self.inner.hook_timeout, "x402 hook timed out: aborting");
                    return Err(ServerError::Aborted { reason: HOOK_TIMED_OUT.to_owned() });
                }
            }
        }
        Ok(())
    }

    async fn run_after<A>(&self, hooks: &[Hook<A, ()>], arg: A, what: &'static str)
    where
        A: Clone + Send + Sync,
    {
        for hook in hooks {
            if tokio::time::timeout(self.inner.hook_timeout, hook(arg.clone())).await.is_err() {
                tracing::warn!(hook = what, timeout = ?self.inner.hook_timeout, "x402 hook timed out: ignored");
            }
        }
    }

    async fn run_recover<A, R>(&self, hooks: &[Hook<A, Option<R>>], arg: A, what: &'static str) -> Option<R>
    where
        A: Clone + Send + Sync,
    {
        for hook in hooks {
            match tokio::time::timeout(self.inner.hook_timeout, hook(arg.clone())).await {
                Ok(Some(recovered)) => return Some(recovered),
                Ok(None) => {}
                Err(_) => {
                    tracing::warn!(hook = what, timeout = ?self.inner.hook_timeout, "x402 hook timed out: no recovery");
                }
            }
        }
        None
    }

    async fn run_settlement_timeout(&self, tx: &str, network: &Network) -> bool {
        for hook in &self.inner.hooks.settlement_timeout {
            match tokio::time::timeout(self.inner.hook_timeout, hook((tx.to_owned(), network.clone()))).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(_) => {
                    tracing::warn!(
                        hook = "settlement_timeout",
                        timeout = ?self.inner.hook_timeout,
                        "x402 hook timed out: not recovered"
                    );
                }
            }
        }
        false
    }
}

/// A settle response whose settlement is confirmed: status rewritten to `success`.
fn settled(mut resp: SettleResponse) -> SettleResponse {
    resp.status = Some(settle_status::SUCCESS.to_owned());
    resp
}

/// The failure built from a status poll that reported a failed settlement.
fn poll_failure(resp: &SettleResponse, status: SettleStatusResponse, network: Network) -> SettleOutcome {
    let reason = status.error_reason.filter(|r| !r.is_empty()).unwrap_or_else(|| SETTLEMENT_FAILED.to_owned());
    let payer = resp.payer.clone().or(status.payer);
    let mut failure = SettleResponse::failure(reason, network, payer, resp.transaction.clone());
    failure.error_message = status.error_message;
    SettleOutcome::Fail(SettleFailure::Failed(failure.clone()), Ok(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::facilitator::FacilitatorError;
    use crate::x402::scheme::{AggrDeferredEvmScheme, ExactEvmScheme};
    use crate::x402::types::SupportedResponse;
    use async_trait::async_trait;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
    const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
    const PAYER: &str = "0x2222222222222222222222222222222222222222";

    type Log = Arc<Mutex<Vec<String>>>;

    fn push(log: &Log, entry: &str) {
        log.lock().unwrap().push(entry.to_owned());
    }

    fn entries(log: &Log) -> Vec<String> {
        log.lock().unwrap().clone()
    }

    struct FakeState {
        name: String,
        log: Log,
        kinds: Vec<SupportedKind>,
        supported_error: Option<FacilitatorError>,
        verify: Mutex<Result<VerifyResponse, FacilitatorError>>,
        settle: Mutex<Result<SettleResponse, FacilitatorError>>,
        statuses: Mutex<VecDeque<Result<SettleStatusResponse, FacilitatorError>>>,
        received: Mutex<Vec<PaymentRequirements>>,
    }

    #[derive(Clone)]
    struct Fake(Arc<FakeState>);

    fn kind(scheme: &str, network: &str) -> SupportedKind {
        SupportedKind { x402_version: 2, scheme: scheme.into(), network: network.into(), extra: None }
    }

    impl Fake {
        fn new(name: &str, log: &Log, kinds: Vec<SupportedKind>) -> Self {
            Self(Arc::new(FakeState {
                name: name.into(),
                log: Arc::clone(log),
                kinds,
                supported_error: None,
                verify: Mutex::new(Ok(VerifyResponse::valid(PAYER))),
                settle: Mutex::new(Ok(settle_ok(Some("success")))),
                statuses: Mutex::new(VecDeque::new()),
                received: Mutex::new(Vec::new()),
            }))
        }

        fn failing_supported(name: &str, log: &Log) -> Self {
            let mut state = Arc::try_unwrap(Self::new(name, log, vec![]).0).ok().unwrap();
            state.supported_error = Some(FacilitatorError::Transport("refused".into()));
            Self(Arc::new(state))
        }

        fn set_verify(&self, answer: Result<VerifyResponse, FacilitatorError>) {
            *self.0.verify.lock().unwrap() = answer;
        }

        fn set_settle(&self, answer: Result<SettleResponse, FacilitatorError>) {
            *self.0.settle.lock().unwrap() = answer;
        }

        fn script_statuses(&self, answers: Vec<Result<SettleStatusResponse, FacilitatorError>>) {
            *self.0.statuses.lock().unwrap() = answers.into();
        }

        fn received(&self) -> Vec<PaymentRequirements> {
            self.0.received.lock().unwrap().clone()
        }

        fn record(&self, what: &str) {
            push(&self.0.log, &format!("{}:{what}", self.0.name));
        }
    }

    #[async_trait]
    impl FacilitatorClient for Fake {
        async fn verify(
            &self,
            _payload: &PaymentPayload,
            requirements: &PaymentRequirements,
        ) -> Result<VerifyResponse, FacilitatorError> {
            self.record("verify");
            self.0.received.lock().unwrap().push(requirements.clone());
            self.0.verify.lock().unwrap().clone()
        }

        async fn settle(
            &self,
            _payload: &PaymentPayload,
            requirements: &PaymentRequirements,
        ) -> Result<SettleResponse, FacilitatorError> {
            self.record("settle");
            self.0.received.lock().unwrap().push(requirements.clone());
            self.0.settle.lock().unwrap().clone()
        }

        async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
            self.record("supported");
            if let Some(e) = &self.0.supported_error {
                return Err(e.clone());
            }
            Ok(SupportedResponse { kinds: self.0.kinds.clone(), ..Default::default() })
        }

        async fn settle_status(&self, _tx_hash: &str) -> Result<SettleStatusResponse, FacilitatorError> {
            self.record("status");
            self.0.statuses.lock().unwrap().pop_front().unwrap_or_else(|| Ok(status("pending")))
        }

        fn name(&self) -> &str {
            &self.0.name
        }
    }

    fn settle_ok(status: Option<&str>) -> SettleResponse {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            status: status.map(str::to_owned),
            payer: Some(PAYER.into()),
            transaction: "0xtx".into(),
            network: "eip155:196".into(),
        }
    }

    fn status(s: &str) -> SettleStatusResponse {
        SettleStatusResponse {
            success: true,
            status: Some(s.into()),
            error_reason: None,
            error_message: None,
            payer: None,
            transaction: Some("0xtx".into()),
            network: None,
        }
    }

    fn seller_req() -> PaymentRequirements {
        let mut extra = JsonObject::new();
        extra.insert("name".into(), json!("USD\u{20ae}0"));
        extra.insert("version".into(), json!("1"));
        PaymentRequirements {
            scheme: "exact".into(),
            network: "eip155:196".into(),
            asset: USDT0.into(),
            amount: "1000".into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra,
        }
    }

    fn payload_for(accepted: PaymentRequirements) -> PaymentPayload {
        let payload = json!({"signature": "0xsig", "authorization": {"from": PAYER, "to": PAY_TO, "value": "1000"}});
        PaymentPayload {
            x402_version: 2,
            payload: payload.as_object().cloned().unwrap(),
            accepted,
            resource: None,
            extensions: None,
        }
    }

    /// A server over `fake` with `exact` on X Layer, initialised, with the log cleared.
    async fn ready(fake: &Fake, log: &Log) -> X402ResourceServer {
        let server = X402ResourceServer::new(fake.clone())
            .register("eip155:196", ExactEvmScheme::new())
            .hook_timeout(Duration::from_millis(50))
            .settlement_poll(Duration::from_millis(10), Duration::from_millis(50));
        server.initialize().await.unwrap();
        log.lock().unwrap().clear();
        server
    }

    fn x_layer_fake(log: &Log) -> Fake {
        Fake::new("f", log, vec![kind("exact", "eip155:196"), kind("aggr_deferred", "eip155:196")])
    }

    // ---------------------------------------------------------------------------------------
    // initialize
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn initialize_succeeds() {
        let log = Log::default();
        let server = X402ResourceServer::new(x_layer_fake(&log))
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:196", AggrDeferredEvmScheme::new());
        assert!(!server.is_initialized());
        server.initialize().await.unwrap();
        assert!(server.is_initialized());
        assert_eq!(entries(&log), ["f:supported"]);
        assert_eq!(server.supported_kind("exact", &"eip155:196".into()), Some(kind("exact", "eip155:196")));
    }

    #[tokio::test]
    async fn initialize_lists_every_unsupported_pair() {
        let log = Log::default();
        let mut kinds = vec![kind("exact", "eip155:196")];
        kinds.push(SupportedKind { x402_version: 1, ..kind("exact", "eip155:1") });
        let server = X402ResourceServer::new(Fake::new("f", &log, kinds))
            .register("eip155:1", ExactEvmScheme::new())
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:8453", AggrDeferredEvmScheme::new());
        let err = server.initialize().await.unwrap_err();
        assert_eq!(
            err,
            ServerError::UnsupportedKinds(vec![
                ("exact".into(), "eip155:1".into()),
                ("aggr_deferred".into(), "eip155:8453".into()),
            ])
        );
        let text = err.to_string();
        assert!(text.contains("scheme `exact` on `eip155:1`"), "{text}");
        assert!(text.contains("scheme `aggr_deferred` on `eip155:8453`"), "{text}");
        assert_eq!(err.http_status(), 500);
        assert!(!server.is_initialized());
    }

    #[tokio::test]
    async fn initialize_accepts_wildcard_kinds() {
        let log = Log::default();
        let server = X402ResourceServer::new(Fake::new("f", &log, vec![kind("exact", "eip155:*")]))
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:*", AggrDeferredEvmScheme::new());
        let err = server.initialize().await.unwrap_err();
        assert_eq!(err, ServerError::UnsupportedKinds(vec![("aggr_deferred".into(), "eip155:*".into())]));

        let server = X402ResourceServer::new(Fake::new("f", &log, vec![kind("exact", "eip155:*")]))
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:*", ExactEvmScheme::new());
        server.initialize().await.unwrap();
        let req = server.build_payment_requirements(&RequirementsSpec::new("exact", "eip155:196", PAY_TO, "$0.001"));
        assert_eq!(req.unwrap().amount, "1000");
    }

    #[tokio::test]
    async fn first_facilitator_wins() {
        let log = Log::default();
        let a = Fake::new("a", &log, vec![kind("exact", "eip155:196")]);
        let b = Fake::new("b", &log, vec![kind("exact", "eip155:196"), kind("aggr_deferred", "eip155:196")]);
        let server = X402ResourceServer::with_facilitators(vec![Arc::new(a), Arc::new(b)])
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:196", AggrDeferredEvmScheme::new());
        server.initialize().await.unwrap();
        assert_eq!(entries(&log), ["a:supported", "b:supported"]);
        log.lock().unwrap().clear();

        let req = seller_req();
        server.verify(&payload_for(req.clone()), &req).await.unwrap();
        let aggr = PaymentRequirements { scheme: "aggr_deferred".into(), ..seller_req() };
        server.verify(&payload_for(aggr.clone()), &aggr).await.unwrap();
        assert_eq!(entries(&log), ["a:verify", "b:verify"]);
    }

    #[tokio::test]
    async fn initialize_reports_facilitator_errors() {
        let log = Log::default();
        let server =
            X402ResourceServer::new(Fake::failing_supported("f", &log)).register("eip155:196", ExactEvmScheme::new());
        let err = server.initialize().await.unwrap_err();
        assert_eq!(err, ServerError::Facilitator(FacilitatorError::Transport("refused".into())));
        assert_eq!(err.http_status(), 502);
    }

    // ---------------------------------------------------------------------------------------
    // requirements
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn builds_exact_requirements() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = ready(&fake, &log).await;
        let req =
            server.build_payment_requirements(&RequirementsSpec::new("exact", "eip155:196", PAY_TO, "$0.001")).unwrap();
        assert_eq!(req, seller_req());
        assert_eq!(req.amount, "1000");
        assert_eq!(req.asset, USDT0);
        assert_eq!(req.max_timeout_seconds, 300);
        assert_eq!(serde_json::to_string(&req.extra).unwrap(), r#"{"name":"USD₮0","version":"1"}"#);
    }

    #[tokio::test]
    async fn builds_aggr_deferred_requirements_with_extra_order() {
        let log = Log::default();
        let server = X402ResourceServer::new(x_layer_fake(&log))
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:196", AggrDeferredEvmScheme::new());
        server.initialize().await.unwrap();
        let mut spec = RequirementsSpec::new("aggr_deferred", "eip155:196", PAY_TO, "0.25");
        spec.max_timeout_seconds = Some(60);
        spec.extra.insert("foo".into(), json!("bar"));
        let req = server.build_payment_requirements(&spec).unwrap();
        assert_eq!(req.scheme, "aggr_deferred");
        assert_eq!(req.amount, "250000");
        assert_eq!(req.max_timeout_seconds, 60);
        assert_eq!(
            serde_json::to_string(&req.extra).unwrap(),
            "{\"name\":\"USD\u{20ae}0\",\"version\":\"1\",\"foo\":\"bar\"}"
        );

        // An option key that already exists overrides the value in place.
        let mut spec = RequirementsSpec::new("exact", "eip155:196", PAY_TO, "0.25");
        spec.extra.insert("foo".into(), json!("bar"));
        spec.extra.insert("name".into(), json!("Other"));
        let req = server.build_payment_requirements(&spec).unwrap();
        assert_eq!(serde_json::to_string(&req.extra).unwrap(), r#"{"name":"Other","version":"1","foo":"bar"}"#);
    }

    #[tokio::test]
    async fn requirements_errors() {
        let log = Log::default();
        let server = X402ResourceServer::new(x_layer_fake(&log)).register("eip155:196", ExactEvmScheme::new());
        let spec = RequirementsSpec::new("exact", "eip155:196", PAY_TO, "$0.001");
        assert_eq!(server.build_payment_requirements(&spec), Err(ServerError::NotInitialized));
        server.initialize().await.unwrap();

        let unregistered = RequirementsSpec::new("aggr_deferred", "eip155:196", PAY_TO, "$0.001");
        assert_eq!(
            server.build_payment_requirements(&unregistered),
            Err(ServerError::SchemeNotRegistered { scheme: "aggr_deferred".into(), network: "eip155:196".into() })
        );
        let bad_price = RequirementsSpec::new("exact", "eip155:196", PAY_TO, "abc");
        let err = server.build_payment_requirements(&bad_price).unwrap_err();
        assert!(matches!(err, ServerError::Price(_)), "{err:?}");
        assert_eq!(err.http_status(), 500);

        // Registered by wildcard, but the facilitator only supports X Layer.
        let server = X402ResourceServer::new(Fake::new("f", &log, vec![kind("exact", "eip155:196")]))
            .register("eip155:*", ExactEvmScheme::new());
        server.initialize().await.unwrap();
        let base = RequirementsSpec::new("exact", "eip155:8453", PAY_TO, "$0.001");
        assert_eq!(
            server.build_payment_requirements(&base),
            Err(ServerError::UnsupportedKinds(vec![("exact".into(), "eip155:8453".into())]))
        );
        assert!(server.build_payment_requirements(&spec).is_ok());
    }

    #[tokio::test]
    async fn payment_required_and_matching() {
        let log = Log::default();
        let server = ready(&x_layer_fake(&log), &log).await;
        let a = seller_req();
        let b = PaymentRequirements { amount: "2000".into(), ..seller_req() };
        let resource = ResourceInfo { url: "https://api.example/x".into(), description: None, mime_type: None };
        let pr =
            server.build_payment_required(resource, vec![a.clone(), b.clone()], Some("Payment required".into()), None);
        assert_eq!(pr.x402_version, 2);
        assert_eq!(pr.accepts.len(), 2);
        assert_eq!(pr.error.as_deref(), Some("Payment required"));

        let mut accepted = b.clone();
        accepted.max_timeout_seconds = 1;
        accepted.extra.clear();
        let accepts = [a.clone(), b.clone()];
        assert_eq!(X402ResourceServer::find_matching_requirements(&accepts, &payload_for(accepted)), Some(&b));
        let other = PaymentRequirements { amount: "1".into(), ..seller_req() };
        assert_eq!(X402ResourceServer::find_matching_requirements(&accepts, &payload_for(other)), None);
    }

    // ---------------------------------------------------------------------------------------
    // binding: the buyer's copy must match the seller's requirements
    // ---------------------------------------------------------------------------------------

    fn hooked(server: X402ResourceServer, log: &Log) -> X402ResourceServer {
        let (l1, l2, l3, l4, l5, l6) = (log.clone(), log.clone(), log.clone(), log.clone(), log.clone(), log.clone());
        server
            .on_before_verify(move |_| {
                let l = l1.clone();
                async move {
                    push(&l, "before_verify");
                    None
                }
            })
            .on_after_verify(move |_, _| {
                let l = l2.clone();
                async move { push(&l, "after_verify") }
            })
            .on_verify_failure(move |_, _| {
                let l = l3.clone();
                async move {
                    push(&l, "verify_failure");
                    None
                }
            })
            .on_before_settle(move |_| {
                let l = l4.clone();
                async move {
                    push(&l, "before_settle");
                    None
                }
            })
            .on_after_settle(move |_, _| {
                let l = l5.clone();
                async move { push(&l, "after_settle") }
            })
            .on_settle_failure(move |_, _| {
                let l = l6.clone();
                async move {
                    push(&l, "settle_failure");
                    None
                }
            })
    }

    #[tokio::test]
    async fn mismatches_are_refused_before_any_call() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = hooked(ready(&fake, &log).await, &log);
        let seller = seller_req();
        type Edit = fn(&mut PaymentRequirements);
        let cases: [(&str, Edit); 5] = [
            ("scheme", |r| r.scheme = "aggr_deferred".into()),
            ("network", |r| r.network = "eip155:1".into()),
            ("amount", |r| r.amount = "1".into()),
            ("asset", |r| r.asset = USDT0.to_uppercase().replace("0X", "0x")),
            ("payTo", |r| r.pay_to = "0x3333333333333333333333333333333333333333".into()),
        ];
        for (field, edit) in cases {
            let mut accepted = seller.clone();
            edit(&mut accepted);
            let payload = payload_for(accepted);
            let err = server.verify(&payload, &seller).await.unwrap_err();
            assert_eq!(err, ServerError::RequirementsMismatch { field });
            assert_eq!(err.http_status(), 402);
            let err = server.settle(&payload, &seller).await.unwrap_err();
            assert_eq!(err, ServerError::RequirementsMismatch { field });
        }
        let mut v1 = payload_for(seller.clone());
        v1.x402_version = 1;
        assert_eq!(server.verify(&v1, &seller).await, Err(ServerError::UnsupportedVersion(1)));
        assert_eq!(server.settle(&v1, &seller).await, Err(ServerError::UnsupportedVersion(1)));
        assert!(entries(&log).is_empty(), "{:?}", entries(&log));
        assert!(fake.received().is_empty());
    }

    #[tokio::test]
    async fn facilitator_gets_the_sellers_requirements() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = ready(&fake, &log).await;
        let seller = seller_req();
        let mut accepted = seller.clone();
        accepted.max_timeout_seconds = 999_999;
        accepted.extra.insert("name".into(), json!("Fake"));
        accepted.extra.insert("evil".into(), json!(true));
        let payload = payload_for(accepted);
        assert!(server.verify(&payload, &seller).await.unwrap().is_valid);
        assert!(server.settle(&payload, &seller).await.unwrap().success);
        assert_eq!(fake.received(), vec![seller.clone(), seller]);
    }

    // ---------------------------------------------------------------------------------------
    // hooks
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn hooks_run_in_order() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let (l1, l2) = (log.clone(), log.clone());
        let server = hooked(ready(&fake, &log).await, &log)
            .on_before_verify(move |ctx| {
                let l = l1.clone();
                async move {
                    assert_eq!(ctx.requirements, seller_req());
                    push(&l, "before_verify_2");
                    None
                }
            })
            .on_after_settle(move |_, resp| {
                let l = l2.clone();
                async move {
                    assert!(resp.success);
                    push(&l, "after_settle_2");
                }
            });
        let req = seller_req();
        let payload = payload_for(req.clone());
        server.verify(&payload, &req).await.unwrap();
        server.settle(&payload, &req).await.unwrap();
        assert_eq!(
            entries(&log),
            [
                "before_verify",
                "before_verify_2",
                "f:verify",
                "after_verify",
                "before_settle",
                "f:settle",
                "after_settle",
                "after_settle_2"
            ]
        );
    }

    #[tokio::test]
    async fn before_hook_abort_stops_the_call() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let l = log.clone();
        let server = ready(&fake, &log)
            .await
            .on_before_verify(|_| async { Some(AbortResult::new("blocked")) })
            .on_before_verify(move |_| {
                let l = l.clone();
                async move {
                    push(&l, "second_before");
                    None
                }
            })
            .on_before_settle(|_| async { Some(AbortResult::new("no settle")) });
        let req = seller_req();
        let payload = payload_for(req.clone());
        let err = server.verify(&payload, &req).await.unwrap_err();
        assert_eq!(err, ServerError::Aborted { reason: "blocked".into() });
        assert_eq!(err.http_status(), 402);
        assert_eq!(server.settle(&payload, &req).await, Err(ServerError::Aborted { reason: "no settle".into() }));
        assert!(entries(&log).is_empty(), "{:?}", entries(&log));
    }

    #[tokio::test]
    async fn verify_failure_hook_recovers() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_verify(Ok(VerifyResponse::invalid("insufficient_funds", Some(PAYER.into()))));
        let l = log.clone();
        let server = hooked(ready(&fake, &log).await, &log).on_verify_failure(move |_, failure| {
            let l = l.clone();
            async move {
                assert!(matches!(failure, VerifyFailure::Invalid(ref r) if !r.is_valid));
                push(&l, "recover");
                Some(VerifyResponse::valid(PAYER))
            }
        });
        let req = seller_req();
        let resp = server.verify(&payload_for(req.clone()), &req).await.unwrap();
        assert!(resp.is_valid);
        assert_eq!(entries(&log), ["before_verify", "f:verify", "verify_failure", "recover", "after_verify"]);
    }

    #[tokio::test]
    async fn unrecovered_verify_failures() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = hooked(ready(&fake, &log).await, &log);
        let req = seller_req();
        let payload = payload_for(req.clone());

        fake.set_verify(Ok(VerifyResponse::invalid("invalid_signature", None)));
        let resp = server.verify(&payload, &req).await.unwrap();
        assert_eq!(resp.invalid_reason.as_deref(), Some("invalid_signature"));
        assert_eq!(entries(&log), ["before_verify", "f:verify", "verify_failure"]);

        log.lock().unwrap().clear();
        fake.set_verify(Err(FacilitatorError::Timeout(Duration::from_secs(1))));
        let err = server.verify(&payload, &req).await.unwrap_err();
        assert_eq!(err, ServerError::Facilitator(FacilitatorError::Timeout(Duration::from_secs(1))));
        assert_eq!(err.http_status(), 504);
        assert_eq!(entries(&log), ["before_verify", "f:verify", "verify_failure"]);
    }

    #[tokio::test]
    async fn settle_failure_hook_recovers() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let failed = SettleResponse::failure("nonce_used", "eip155:196".into(), Some(PAYER.into()), String::new());
        fake.set_settle(Ok(failed.clone()));
        let l = log.clone();
        let server = hooked(ready(&fake, &log).await, &log).on_settle_failure(move |_, failure| {
            let l = l.clone();
            let failed = failed.clone();
            async move {
                assert_eq!(failure, SettleFailure::Failed(failed));
                push(&l, "recover");
                Some(settle_ok(Some("success")))
            }
        });
        let req = seller_req();
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert_eq!(resp, settle_ok(Some("success")));
        assert_eq!(entries(&log), ["before_settle", "f:settle", "settle_failure", "recover", "after_settle"]);
    }

    #[tokio::test]
    async fn unrecovered_settle_failures() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = hooked(ready(&fake, &log).await, &log);
        let req = seller_req();
        let payload = payload_for(req.clone());

        let failed = SettleResponse::failure("nonce_used", "eip155:196".into(), Some(PAYER.into()), String::new());
        fake.set_settle(Ok(failed.clone()));
        assert_eq!(server.settle(&payload, &req).await, Ok(failed));
        assert_eq!(entries(&log), ["before_settle", "f:settle", "settle_failure"]);

        log.lock().unwrap().clear();
        fake.set_settle(Err(FacilitatorError::Http { status: 500, body: "x".into() }));
        let err = server.settle(&payload, &req).await.unwrap_err();
        assert_eq!(err.http_status(), 502);
        assert_eq!(entries(&log), ["before_settle", "f:settle", "settle_failure"]);
    }

    #[tokio::test]
    async fn slow_before_hook_is_an_abort() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = ready(&fake, &log).await.on_before_verify(|_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        });
        let req = seller_req();
        let err = server.verify(&payload_for(req.clone()), &req).await.unwrap_err();
        assert_eq!(err, ServerError::Aborted { reason: "hook timed out".into() });
        assert!(entries(&log).is_empty());
    }

    #[tokio::test]
    async fn hanging_after_hook_is_cut_off() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        let server = ready(&fake, &log)
            .await
            .on_after_verify(|_, _| std::future::pending::<()>())
            .on_after_settle(|_, _| std::future::pending::<()>())
            .on_verify_failure(|_, _| std::future::pending::<Option<VerifyResponse>>());
        let req = seller_req();
        let payload = payload_for(req.clone());
        assert!(server.verify(&payload, &req).await.unwrap().is_valid);
        assert!(server.settle(&payload, &req).await.unwrap().success);
        fake.set_verify(Ok(VerifyResponse::invalid("x", None)));
        assert!(!server.verify(&payload, &req).await.unwrap().is_valid);
    }

    // ---------------------------------------------------------------------------------------
    // settlement timeout recovery
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn timeout_recovered_by_polling() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_settle(Ok(settle_ok(Some("timeout"))));
        fake.script_statuses(vec![
            Ok(status("pending")),
            Err(FacilitatorError::Transport("reset".into())),
            Ok(status("success")),
        ]);
        let server = hooked(ready(&fake, &log).await, &log);
        let req = seller_req();
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert_eq!(resp, settle_ok(Some("success")));
        assert_eq!(entries(&log), ["before_settle", "f:settle", "f:status", "f:status", "f:status", "after_settle"]);
    }

    #[tokio::test]
    async fn timeout_then_failed_poll() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_settle(Ok(settle_ok(Some("timeout"))));
        fake.script_statuses(vec![Ok(status("failed"))]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let server = ready(&fake, &log).await.on_settle_failure(move |_, failure| {
            s.lock().unwrap().push(failure);
            async { None }
        });
        let req = seller_req();
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert!(!resp.success);
        assert_eq!(resp.error_reason.as_deref(), Some("settlement_failed"));
        assert_eq!(resp.transaction, "0xtx");
        assert_eq!(resp.payer.as_deref(), Some(PAYER));
        assert_eq!(*seen.lock().unwrap(), vec![SettleFailure::Failed(resp.clone())]);

        // `success: false` from the status endpoint, with a reason.
        fake.script_statuses(vec![Ok(SettleStatusResponse {
            success: false,
            error_reason: Some("reverted".into()),
            ..status("failed")
        })]);
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert_eq!(resp.error_reason.as_deref(), Some("reverted"));
    }

    #[tokio::test]
    async fn timeout_hook_decides_when_still_pending() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_settle(Ok(settle_ok(Some("timeout"))));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let a = asked.clone();
        let server = ready(&fake, &log).await.on_settlement_timeout(move |tx, network| {
            a.lock().unwrap().push((tx, network));
            async { true }
        });
        let req = seller_req();
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert_eq!(resp, settle_ok(Some("success")));
        assert_eq!(*asked.lock().unwrap(), vec![("0xtx".to_owned(), Network::from("eip155:196"))]);
        assert!(entries(&log).iter().filter(|e| *e == "f:status").count() >= 1);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let server = ready(&fake, &log).await.on_settlement_timeout(|_, _| async { false }).on_settle_failure(
            move |_, failure| {
                s.lock().unwrap().push(failure);
                async { None }
            },
        );
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert!(!resp.success);
        assert_eq!(resp.error_reason.as_deref(), Some("settlement_timeout"));
        assert_eq!(resp.transaction, "0xtx");
        assert_eq!(resp.network, "eip155:196");
        assert_eq!(resp.payer.as_deref(), Some(PAYER));
        assert_eq!(*seen.lock().unwrap(), vec![SettleFailure::Timeout { transaction: "0xtx".into() }]);
    }

    #[tokio::test]
    async fn timeout_without_transaction_fails_closed() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_settle(Ok(SettleResponse { transaction: String::new(), ..settle_ok(Some("timeout")) }));
        let server = ready(&fake, &log).await.on_settlement_timeout(|_, _| async { true });
        let req = seller_req();
        let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
        assert_eq!(resp.error_reason.as_deref(), Some("settlement_timeout"));
        assert_eq!(entries(&log), ["f:settle"]);
    }

    #[tokio::test]
    async fn pending_is_polled_and_refused_unless_opted_in() {
        let log = Log::default();
        let fake = x_layer_fake(&log);
        fake.set_settle(Ok(settle_ok(Some("pending"))));
        let req = seller_req();
        let payload = payload_for(req.clone());

        // Default: polled, delivered once it succeeded.
        let server = ready(&fake, &log).await;
        fake.script_statuses(vec![Ok(status("success"))]);
        assert_eq!(server.settle(&payload, &req).await, Ok(settle_ok(Some("success"))));
        assert_eq!(entries(&log), ["f:settle", "f:status"]);

        // Default, still pending at the deadline: refused like a timeout (F11).
        let refused = server.settle(&payload, &req).await.unwrap();
        assert!(!refused.success);
        assert_eq!(refused.error_reason.as_deref(), Some(SETTLEMENT_TIMEOUT));

        // Opt-in without polling: delivered as pending.
        let server = ready(&fake, &log).await.poll_pending(false).deliver_on_pending(true);
        assert_eq!(server.settle(&payload, &req).await, Ok(settle_ok(Some("pending"))));
        assert_eq!(entries(&log), ["f:settle"]);

        // Opt-in, still pending at the deadline: delivered as pending, no timeout hook.
        let server = ready(&fake, &log)
            .await
            .deliver_on_pending(true)
            .on_settlement_timeout(|_, _| async { panic!("not a timeout") });
        assert_eq!(server.settle(&payload, &req).await, Ok(settle_ok(Some("pending"))));
    }

    #[tokio::test]
    async fn futures_are_send_and_server_is_shareable() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<X402ResourceServer>();
        let log = Log::default();
        let server = ready(&x_layer_fake(&log), &log).await;
        let req = seller_req();
        let payload = payload_for(req.clone());
        let verify = server.verify(&payload, &req);
        assert_send(&verify);
        assert!(verify.await.unwrap().is_valid);
        let settle = server.settle(&payload, &req);
        assert_send(&settle);
        let clone = server.clone();
        let handle = tokio::spawn(async move {
            let req = seller_req();
            clone.settle(&payload_for(req.clone()), &req).await
        });
        assert!(handle.await.unwrap().unwrap().success);
        assert!(settle.await.unwrap().success);
        assert!(format!("{server:?}").contains("X402ResourceServer"));
    }
}
