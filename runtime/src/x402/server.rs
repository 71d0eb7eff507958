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
use super::hooks::{
    AbortResult, Hook, Hooks, SettleContext, SettleFailure, VerifyContext, VerifyFailure, hook, run_after, run_before,
    run_recover,
};
use super::scheme::{PriceError, SchemeNetworkServer};
use super::settlement::{Reconciled, SettleOutcome, Settlement, SettlementPolicy};
use super::types::{
    JsonObject, PaymentPayload, PaymentRequired, PaymentRequirements, Price, ResourceInfo, SettleResponse,
    SupportedKind, VerifyResponse, X402_VERSION, settle_status,
};
use crate::chain::Network;
use std::fmt;
use std::future::Future;
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the resource server could not build requirements, verify or settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceServerError {
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

impl ResourceServerError {
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
// Inputs
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
    /// Registered (scheme, network) pairs no facilitator supports.
    unsupported: Vec<(String, String)>,
}

/// What [`X402ResourceServer::initialize`] found: the registered (scheme, network) pairs that
/// no facilitator supports. Their routes answer 500; every other route works.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Initialized {
    /// The unsupported (scheme, network-or-pattern) pairs, in registration order.
    pub unsupported: Vec<(String, String)>,
}

impl Initialized {
    /// Whether every registered kind is supported.
    pub fn is_complete(&self) -> bool {
        self.unsupported.is_empty()
    }
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
    settlement: SettlementPolicy,
    state: RwLock<Option<Arc<InitState>>>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        Self {
            facilitators: self.facilitators.clone(),
            schemes: self.schemes.clone(),
            hooks: self.hooks.clone(),
            hook_timeout: self.hook_timeout,
            settlement: self.settlement,
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
/// # async fn demo(facilitator: HttpFacilitatorClient) -> Result<(), ResourceServerError> {
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
            .field("poll_interval", &self.inner.settlement.poll_interval)
            .field("poll_deadline", &self.inner.settlement.poll_deadline)
            .field("poll_pending", &self.inner.settlement.poll_pending)
            .field("deliver_on_pending", &self.inner.settlement.deliver_on_pending)
            .field("initialized", &self.is_initialized())
            .finish_non_exhaustive()
    }
}

/// The `x402.verify` / `x402.settle` span: the payment's scheme, network, amount and claimed
/// payer, then the empty fields recorded later (`$later`, `outcome`, `latency_ms`).
macro_rules! payment_span {
    ($name:literal, $payload:ident, $requirements:ident $(, $later:ident)*) => {
        tracing::info_span!(
            $name,
            scheme = %$requirements.scheme,
            network = %$requirements.network,
            amount = %$requirements.amount,
            payer = $payload.claimed_payer().unwrap_or_default(),
            $($later = tracing::field::Empty,)*
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        )
    };
}

/// The builder methods that register hooks: `$name(args) -> output => list` adds a
/// `pub fn $name<F, Fut>(self, f: F) -> Self` taking `f: Fn(args) -> Fut` and pushing it onto
/// `Hooks::$list` (a one-argument hook receives its argument as is, a two-argument hook as a
/// tuple).
macro_rules! hook_setters {
    ($( $(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),+) -> $out:ty => $list:ident; )*) => {$(
        $(#[$doc])*
        pub fn $name<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn($($ty),+) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = $out> + Send + 'static,
        {
            self.inner_mut().hooks.$list.push(hook_setters!(@hook f $($arg)+));
            self
        }
    )*};
    (@hook $f:ident $arg:ident) => { hook($f) };
    (@hook $f:ident $a:ident $b:ident) => { hook(move |($a, $b)| $f($a, $b)) };
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
                settlement: SettlementPolicy {
                    poll_interval: DEFAULT_POLL_INTERVAL,
                    poll_deadline: DEFAULT_POLL_DEADLINE,
                    poll_pending: true,
                    deliver_on_pending: false,
                },
                state: RwLock::new(None),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    fn settlement(&self) -> Settlement<'_> {
        Settlement {
            policy: self.inner.settlement,
            timeout_hooks: &self.inner.hooks.settlement_timeout,
            hook_timeout: self.inner.hook_timeout,
        }
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
        let policy = &mut self.inner_mut().settlement;
        policy.poll_interval = interval.max(Duration::from_millis(1));
        policy.poll_deadline = deadline;
        self
    }

    /// Polls settlements answered with status `pending` (with a transaction) until they
    /// succeed, fail or the poll deadline passes (default true). A settlement still pending then
    /// is refused like a settlement timeout (the settlement-timeout hooks may recover it),
    /// unless [`deliver_on_pending`](Self::deliver_on_pending) is set.
    pub fn poll_pending(mut self, enabled: bool) -> Self {
        self.inner_mut().settlement.poll_pending = enabled;
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
        self.inner_mut().settlement.deliver_on_pending = enabled;
        self
    }

    /// Whether a `pending` settlement is delivered on ([`deliver_on_pending`](Self::deliver_on_pending)).
    pub fn delivers_on_pending(&self) -> bool {
        self.inner.settlement.deliver_on_pending
    }

    hook_setters! {
        /// Adds a hook run before each verification, in registration order. Returning
        /// `Some(abort)` stops verification with [`ResourceServerError::Aborted`]; a hook exceeding the hook
        /// timeout aborts with reason `hook timed out`.
        on_before_verify(ctx: VerifyContext) -> Option<AbortResult> => before_verify;
        /// Adds a hook run after a valid verification (including one recovered by a failure hook).
        on_after_verify(ctx: VerifyContext, resp: VerifyResponse) -> () => after_verify;
        /// Adds a hook run when the facilitator answers `isValid: false` or fails. The first hook
        /// returning `Some(response)` recovers: that response replaces the result (and after-verify
        /// hooks then run if it is valid).
        on_verify_failure(ctx: VerifyContext, failure: VerifyFailure) -> Option<VerifyResponse> => verify_failure;
        /// Adds a hook run before each settlement; like [`on_before_verify`](Self::on_before_verify).
        on_before_settle(ctx: SettleContext) -> Option<AbortResult> => before_settle;
        /// Adds a hook run after a successful settlement (including a recovered one).
        on_after_settle(ctx: SettleContext, resp: SettleResponse) -> () => after_settle;
        /// Adds a hook run when settlement fails (`success: false`, a facilitator error, a failure
        /// reported by status polling, or an unrecovered timeout). The first hook returning
        /// `Some(response)` recovers: that response replaces the result (and after-settle hooks then
        /// run if it is successful).
        on_settle_failure(ctx: SettleContext, failure: SettleFailure) -> Option<SettleResponse> => settle_failure;
        /// Adds a hook asked, with the transaction hash and network, whether a settlement whose
        /// status polling ended without an answer should count as settled. Any `true` recovers it.
        on_settlement_timeout(tx: String, network: Network) -> bool => settlement_timeout;
    }

    // -----------------------------------------------------------------------------------------
    // Initialisation
    // -----------------------------------------------------------------------------------------

    /// Fetches `supported()` from every facilitator (in order), records for each kind the first
    /// facilitator supporting it, and checks that every registered (network, scheme) is
    /// supported with x402 version 2. A registered kind no facilitator supports fails only its
    /// own requirements ([`ResourceServerError::UnsupportedKinds`], HTTP 500): it is listed in
    /// the returned [`Initialized`] (and [`unsupported_kinds`](Self::unsupported_kinds)) and
    /// logged at error level; the other kinds work. A facilitator failure is
    /// [`ResourceServerError::Facilitator`] (nothing is recorded).
    pub async fn initialize(&self) -> Result<Initialized, ResourceServerError> {
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
            tracing::error!(
                unsupported = %list_kinds(&unsupported),
                "x402: no facilitator supports these registered kinds; their routes answer 500, the others work"
            );
        }
        tracing::debug!(kinds = state.kinds.len(), "x402 resource server initialized");
        state.unsupported = unsupported.clone();
        *self.inner.state.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(state));
        Ok(Initialized { unsupported })
    }

    /// The registered (scheme, network) pairs no facilitator supported at the last
    /// [`initialize`](Self::initialize) (empty before it).
    pub fn unsupported_kinds(&self) -> Vec<(String, String)> {
        self.state().map(|s| s.unsupported.clone()).unwrap_or_default()
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
    fn facilitator_for(
        &self,
        scheme: &str,
        network: &Network,
    ) -> Result<Arc<dyn FacilitatorClient>, ResourceServerError> {
        let index = match self.state() {
            Some(state) => match state.lookup(scheme, network) {
                Some(r) => r.facilitator,
                None => {
                    return Err(ResourceServerError::UnsupportedKinds(vec![(scheme.to_owned(), network.to_string())]));
                }
            },
            None => 0,
        };
        self.inner.facilitators.get(index).cloned().ok_or_else(|| {
            ResourceServerError::Facilitator(FacilitatorError::Config("no facilitator configured".into()))
        })
    }

    /// One reconciliation step for a settlement whose outcome was unknown (the pending-settlement
    /// store's reconciler calls it): with `transaction`, one `settle_status` query; without one
    /// and with `resubmit`, the identical signed payment is settled again (single-use on chain, so
    /// it cannot move money twice) and only a success counts. See [`Reconciled`].
    pub async fn reconcile(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
        transaction: Option<&str>,
        resubmit: bool,
    ) -> Reconciled {
        let span = payment_span!("x402.reconcile", payload, requirements, transaction);
        if let Some(tx) = transaction {
            span.record("transaction", tx);
        }
        let facilitator = match self.facilitator_for(&requirements.scheme, &requirements.network) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "x402 reconcile: no facilitator");
                return Reconciled::Unknown { transaction: transaction.map(str::to_owned) };
            }
        };
        let outcome = super::settlement::reconcile(facilitator.as_ref(), payload, requirements, transaction, resubmit)
            .instrument(span.clone())
            .await;
        let label = match &outcome {
            Reconciled::Settled(_) => "success",
            Reconciled::Failed(_) => "failed",
            Reconciled::Unknown { .. } => "unknown",
        };
        span.record("outcome", label);
        outcome
    }

    // -----------------------------------------------------------------------------------------
    // Requirements
    // -----------------------------------------------------------------------------------------

    /// Builds the requirements of one payment option (wire facts §4.4 steps 2–4): finds the
    /// registered scheme, parses the price, sets `maxTimeoutSeconds` (default 300) and `extra`
    /// (the price's extras overlaid by `spec.extra`), then lets the scheme enhance them.
    pub fn build_payment_requirements(
        &self,
        spec: &RequirementsSpec,
    ) -> Result<PaymentRequirements, ResourceServerError> {
        let scheme = self.scheme_for(&spec.scheme, &spec.network).ok_or_else(|| {
            ResourceServerError::SchemeNotRegistered { scheme: spec.scheme.clone(), network: spec.network.to_string() }
        })?;
        let state = self.state().ok_or(ResourceServerError::NotInitialized)?;
        let kind = state.lookup(&spec.scheme, &spec.network).ok_or_else(|| {
            ResourceServerError::UnsupportedKinds(vec![(spec.scheme.clone(), spec.network.to_string())])
        })?;
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

    /// The version and the binding of the buyer's `accepted` copy to the seller's requirements.
    /// An `upto` settlement (`settling`) sends the amount actually used: it must be at most the
    /// authorized maximum (`accepted.amount`), and everything else must bind.
    fn check_binding(
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
        settling: bool,
    ) -> Result<(), ResourceServerError> {
        if settling && requirements.scheme == pay402_core::names::UPTO && requirements.amount != payload.accepted.amount
        {
            let within = super::types::parse_atomic(&requirements.amount)
                .zip(super::types::parse_atomic(&payload.accepted.amount))
                .is_some_and(|(amount, max)| amount <= max);
            if !within {
                return Err(ResourceServerError::RequirementsMismatch { field: "amount" });
            }
            let bound = PaymentRequirements { amount: payload.accepted.amount.clone(), ..requirements.clone() };
            return Self::check_binding(payload, &bound, false);
        }
        if payload.x402_version != X402_VERSION {
            return Err(ResourceServerError::UnsupportedVersion(payload.x402_version));
        }
        match requirements.mismatch(&payload.accepted) {
            Some(field) => Err(ResourceServerError::RequirementsMismatch { field }),
            None => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Verify
    // -----------------------------------------------------------------------------------------

    /// Verifies `payload` against the seller's `requirements`.
    ///
    /// First checks the version and that the payload's `accepted` binds to `requirements`
    /// ([`ResourceServerError::RequirementsMismatch`], no facilitator call, no hook). Then runs the
    /// before-verify hooks, sends the **seller's** requirements to the facilitator supporting
    /// the kind, and runs the failure hooks (on `isValid: false` or an error) and the
    /// after-verify hooks. An unrecovered `isValid: false` is returned as `Ok`.
    pub async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, ResourceServerError> {
        let span = payment_span!("x402.verify", payload, requirements);
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

    /// The start of verify and settle (`op`): the local binding check (no facilitator call, no
    /// hook), the facilitator of the kind, then the before-hooks.
    async fn begin<C: Clone + Send + Sync>(
        &self,
        op: &'static str,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
        before: &[Hook<C, Option<AbortResult>>],
        ctx: impl FnOnce() -> C,
    ) -> Result<Arc<dyn FacilitatorClient>, ResourceServerError> {
        if let Err(e) = Self::check_binding(payload, requirements, op == "settle") {
            tracing::debug!(error = %e, "x402 {op} refused locally");
            return Err(e);
        }
        let facilitator = self.facilitator_for(&requirements.scheme, &requirements.network)?;
        if !before.is_empty() {
            let what = if op == "verify" { "before_verify" } else { "before_settle" };
            run_before(before, &ctx(), what, self.inner.hook_timeout)
                .await
                .map_err(|abort| ResourceServerError::Aborted { reason: abort.reason })?;
        }
        Ok(facilitator)
    }

    async fn verify_inner(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, ResourceServerError> {
        let hooks = &self.inner.hooks;
        // Hook arguments are copies of the payment: built only when a hook is registered.
        let ctx = || VerifyContext { payload: payload.clone(), requirements: requirements.clone() };
        let facilitator = self.begin("verify", payload, requirements, &hooks.before_verify, ctx).await?;

        let answer = crate::metrics::facilitator_call("verify", facilitator.verify(payload, requirements)).await;
        let failure = match answer {
            Ok(resp) if resp.is_valid => {
                tracing::debug!(facilitator = facilitator.name(), "x402 verify: valid");
                if !hooks.after_verify.is_empty() {
                    run_after(&hooks.after_verify, (ctx(), resp.clone()), "after_verify", self.inner.hook_timeout)
                        .await;
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
            run_recover(&hooks.verify_failure, (ctx(), failure.clone()), "verify_failure", self.inner.hook_timeout)
                .await
        };
        match (recovered, failure) {
            (Some(resp), _) => {
                tracing::debug!(is_valid = resp.is_valid, "x402 verify: recovered by a failure hook");
                if resp.is_valid && !hooks.after_verify.is_empty() {
                    run_after(&hooks.after_verify, (ctx(), resp.clone()), "after_verify", self.inner.hook_timeout)
                        .await;
                }
                Ok(resp)
            }
            (None, VerifyFailure::Invalid(resp)) => Ok(resp),
            (None, VerifyFailure::Error(e)) => Err(ResourceServerError::Facilitator(e)),
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
    ) -> Result<SettleResponse, ResourceServerError> {
        let span = payment_span!("x402.settle", payload, requirements, transaction);
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
    ) -> Result<SettleResponse, ResourceServerError> {
        let hooks = &self.inner.hooks;
        // Hook arguments are copies of the payment: built only when a hook is registered.
        let ctx = || SettleContext { payload: payload.clone(), requirements: requirements.clone() };
        let facilitator = self.begin("settle", payload, requirements, &hooks.before_settle, ctx).await?;

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
                self.settlement().classify(facilitator.as_ref(), resp, requirements).await
            }
            Err(e) => {
                tracing::debug!(facilitator = facilitator.name(), error = %e, "x402 settle: facilitator error");
                SettleOutcome::Fail(SettleFailure::Error(e.clone()), Err(e))
            }
        };
        let (failure, unrecovered) = match outcome {
            SettleOutcome::Deliver(resp) => {
                if !hooks.after_settle.is_empty() {
                    run_after(&hooks.after_settle, (ctx(), resp.clone()), "after_settle", self.inner.hook_timeout)
                        .await;
                }
                return Ok(resp);
            }
            SettleOutcome::Fail(failure, unrecovered) => (failure, unrecovered),
        };
        let recovered = if hooks.settle_failure.is_empty() {
            None
        } else {
            run_recover(&hooks.settle_failure, (ctx(), failure), "settle_failure", self.inner.hook_timeout).await
        };
        match recovered {
            Some(resp) => {
                tracing::debug!(success = resp.success, "x402 settle: recovered by a failure hook");
                if resp.success && !hooks.after_settle.is_empty() {
                    run_after(&hooks.after_settle, (ctx(), resp.clone()), "after_settle", self.inner.hook_timeout)
                        .await;
                }
                Ok(resp)
            }
            None => {
                if let Ok(resp) = &unrecovered {
                    tracing::debug!(reason = resp.error_reason.as_deref().unwrap_or_default(), "x402 settle: failed");
                }
                unrecovered.map_err(ResourceServerError::Facilitator)
            }
        }
    }
}

#[cfg(test)]
mod tests;
