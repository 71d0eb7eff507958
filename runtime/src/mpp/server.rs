//! The MPP seller: the [`Mpp`] coordinator (pympp's `Mpp`, wire facts §8), which issues
//! challenges, verifies credentials and renders every outcome as an HTTP response.
//!
//! Verification order for a credential: parse → recompute the challenge id from the echoed
//! (re-canonicalised) request in constant time → realm/method/intent → the echoed request must
//! equal the request *this route* builds now (so a cheap route's payment cannot unlock an
//! expensive one) → not expired → single use (the id is reserved in a [`ReplayStore`] with an
//! atomic put-if-absent) → the intent verifies and settles. Every protocol failure is answered
//! with a fresh challenge.

use super::challenge::Challenge;
use super::credential::{Credential, verify_echo_canonical_at};
use super::encoding::canonical_json_object;
use super::error::MppError;
use super::idempotency::{ChargeRetry, Keyed, MPP_RETRY_AFTER_SECONDS, Records};
use super::method::{EvmMethod, PayError, SessionGrant};
use super::payment::{MPP_EXPOSED_HEADERS, MppPayment, UnknownHooks, unknown_problem};
use super::problem::{MppErrorKind, payment_required_detail};
use super::receipt::Receipt;
use super::route::{self, Intent, PaySpec, Per, RouteTerms, RouteTermsCache, base_units};
use super::wire::EVM_METHOD;
use crate::completion::CancelPolicy;
use crate::metrics::PaymentOutcome;
use crate::okx::sa::EvmPaymentError;
use crate::replay::{InMemoryRecordStore, InMemoryReplayStore, RecordStore, ReplayStore};
use crate::web::paywall::PaywallConfig;
use crate::web::{Misconfigured, PaymentHttpResponse, RequestContext};
use crate::web::{RouteKeyError, RoutePattern, find_route};
use alloy_primitives::U256;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, PoisonError};
use tracing::Instrument as _;

/// A configuration error of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MppConfigError {
    /// Environment variables are missing (every missing one is listed).
    #[error("environment variable{} {} not set", if .0.len() == 1 { "" } else { "s" }, missing_list(.0))]
    MissingEnv(Vec<&'static str>),
    /// A value is unusable.
    #[error("invalid MPP configuration: {0}")]
    Invalid(String),
}

/// The shortest secret key [`Mpp::new`] accepts, in bytes: challenge ids are HMACs under it, so
/// it must not be guessable.
pub const MIN_SECRET_BYTES: usize = 32;

fn missing_list(names: &[&'static str]) -> String {
    let list = names.join(" and ");
    if names.len() == 1 { format!("{list} is") } else { format!("{list} are") }
}

/// The secret key; `Debug` never prints it.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

type ChallengeHook = Arc<dyn Fn(&Challenge) + Send + Sync>;
type SuccessHook = Arc<dyn Fn(&Credential, &Receipt) + Send + Sync>;
type FailureHook = Arc<dyn Fn(&PayError) + Send + Sync>;

#[derive(Clone, Default)]
struct Events {
    challenge_created: Vec<ChallengeHook>,
    payment_success: Vec<SuccessHook>,
    payment_failed: Vec<FailureHook>,
    settlement_unknown: UnknownHooks,
}

#[derive(Clone)]
pub(super) struct Inner {
    pub(super) method: EvmMethod,
    realm: String,
    secret: Secret,
    store: Arc<dyn ReplayStore>,
    events: Events,
    routes: Vec<(RoutePattern, Arc<PaySpec>)>,
    cancel_policy: CancelPolicy,
    paywall: PaywallConfig,
    /// Idempotency keys and charges of unknown outcome ([`super::idempotency`]).
    records: Records,
    /// Shared by the clones a builder makes: the terms depend only on the method, which no
    /// builder changes.
    pub(super) terms: Arc<RouteTermsCache>,
    /// Routes whose terms cannot be built: logged once, explained in development.
    misconfigured: Misconfigured,
}

/// The MPP coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Mpp {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for Mpp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpp")
            .field("method", &self.inner.method)
            .field("realm", &self.inner.realm)
            .field("secret_key", &self.inner.secret)
            .finish_non_exhaustive()
    }
}

/// How a session route charges: per request, or per event of a metered stream (with the
/// buyer's `Last-Event-ID` when it resumes one).
#[derive(Clone, Copy, Debug)]
enum Metered {
    PerRequest,
    PerEvent { resume: Option<u64> },
}

/// What a verified credential grants.
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum Granted {
    /// Run the handler.
    Paid(MppPayment),
    /// A session management action answered without the handler (HTTP 200 JSON).
    Management {
        /// The credential.
        credential: Credential,
        /// The JSON answer.
        body: Value,
    },
    /// A companion request of a metered stream (its voucher accepted), answered without the
    /// handler: HTTP 200, this JSON and `Payment-Receipt`.
    Companion {
        /// The credential.
        credential: Credential,
        /// The receipt.
        receipt: Receipt,
        /// The JSON answer.
        body: Value,
    },
}

/// A refused request: the fresh challenge to send, and why (None: no credential at all).
#[derive(Debug)]
pub struct Rejection {
    /// The fresh challenge.
    pub challenge: Challenge,
    /// Why the credential was refused.
    pub error: Option<PayError>,
}

impl Mpp {
    /// A coordinator for `method` in `realm`, signing challenge ids with `secret_key`.
    pub fn new(
        method: EvmMethod,
        realm: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Result<Self, MppConfigError> {
        let secret = secret_key.into();
        let realm: String = realm.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(MppConfigError::Invalid(format!(
                "the secret key must be at least {MIN_SECRET_BYTES} bytes (got {}): generate one with \
                 `openssl rand -hex 32` and keep it stable across restarts",
                secret.len()
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                method,
                realm: realm.clone(),
                secret: Secret(secret),
                store: Arc::new(InMemoryReplayStore::new()),
                events: Events::default(),
                routes: Vec::new(),
                cancel_policy: CancelPolicy::default(),
                paywall: PaywallConfig::default(),
                records: Records::new(Arc::new(InMemoryRecordStore::new()), &realm),
                terms: Arc::default(),
                misconfigured: Misconfigured::default(),
            }),
        })
    }

    /// Reads `MPP_REALM` and `MPP_SECRET_KEY`; the error names every missing variable.
    pub fn from_env(method: EvmMethod) -> Result<Self, MppConfigError> {
        let get = |name: &'static str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (get("MPP_REALM"), get("MPP_SECRET_KEY")) {
            (Some(realm), Some(secret)) => Self::new(method, realm, secret),
            (realm, secret) => Err(MppConfigError::MissingEnv(
                [("MPP_REALM", realm.is_none()), ("MPP_SECRET_KEY", secret.is_none())]
                    .into_iter()
                    .filter_map(|(name, missing)| missing.then_some(name))
                    .collect(),
            )),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The store that makes challenge ids single-use (share one across instances).
    pub fn with_store(self, store: Arc<dyn ReplayStore>) -> Self {
        self.edit(|i| i.store = store)
    }

    /// Replaces the store of MPP records — `Idempotency-Key`s and charges whose Settlement Agent
    /// outcome was unknown (see the module `idempotency` docs on [`Mpp`]) — by default in memory
    /// (one instance): with several instances share a
    /// [`RedisRecordStore`](crate::replay::RedisRecordStore).
    pub fn settlement_records(self, store: Arc<dyn RecordStore>) -> Self {
        self.edit(|i| i.records = Records::new(store, &i.realm))
    }

    /// Whether a route whose terms cannot be built says why in its 500 body (default `false`:
    /// a generic body; the reason is always logged, once per reason, at error level).
    /// [`Setup`](crate::setup::Setup) turns it on in development only.
    pub fn explain_errors(self, explain: bool) -> Self {
        self.edit(|i| i.misconfigured = Misconfigured::new(explain))
    }

    /// Called for every challenge issued.
    pub fn on_challenge_created(self, f: impl Fn(&Challenge) + Send + Sync + 'static) -> Self {
        self.edit(|i| i.events.challenge_created.push(Arc::new(f)))
    }

    /// Called for every accepted payment.
    pub fn on_payment_success(self, f: impl Fn(&Credential, &Receipt) + Send + Sync + 'static) -> Self {
        self.edit(|i| i.events.payment_success.push(Arc::new(f)))
    }

    /// Called for every refused credential (not for plain unpaid requests).
    pub fn on_payment_failed(self, f: impl Fn(&PayError) + Send + Sync + 'static) -> Self {
        self.edit(|i| i.events.payment_failed.push(Arc::new(f)))
    }

    /// Called for every payment whose settlement outcome is unknown — the Settlement Agent timed
    /// out, was unreachable or answered something unreadable during a charge or a session
    /// open/topUp/close, or a session reservation could not be committed. The buyer was refused
    /// (fail closed) but money may have moved: reconcile from the credential (its payload carries
    /// the authorization, transaction or channel) and the error.
    pub fn on_settlement_unknown(self, f: impl Fn(&Credential, &PayError) + Send + Sync + 'static) -> Self {
        self.edit(|i| i.events.settlement_unknown.0.push(Arc::new(f)))
    }

    /// What happens to a verified payment when its request is cancelled while the handler runs
    /// (the client disconnected, or a timeout layer — which counts as a cancellation — gave up):
    /// [`CancelPolicy::Complete`] (the default) commits a session reservation as if the handler
    /// had succeeded, [`CancelPolicy::Release`] releases it. A panicking handler always
    /// releases; a commit already in flight, and a charge's settlement (which happens before the
    /// handler), always run to their end and are reported. See [`crate::completion`].
    pub fn cancel_policy(self, policy: CancelPolicy) -> Self {
        self.edit(|i| i.cancel_policy = policy)
    }

    /// Sets the options of the paywall page served to requests preferring HTML.
    pub fn paywall(self, config: PaywallConfig) -> Self {
        self.edit(|i| i.paywall = config)
    }

    /// The configured [`CancelPolicy`].
    pub fn cancellation(&self) -> CancelPolicy {
        self.inner.cancel_policy
    }

    /// Protects the routes matching `key` (`"GET /premium"`) for the route-table layers.
    pub fn route(self, key: &str, spec: PaySpec) -> Result<Self, RouteKeyError> {
        let pattern = RoutePattern::parse(key)?;
        Ok(self.edit(|i| i.routes.push((pattern, Arc::new(spec)))))
    }

    /// The route protecting `method` + the raw request `path`, if any (matched like
    /// [`X402HttpServer::route_for`](crate::x402::X402HttpServer::route_for)).
    pub fn route_for(&self, method: &str, path: &str) -> Option<Arc<PaySpec>> {
        find_route(&self.inner.routes, method, path).map(Arc::clone)
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    /// The payment method.
    pub fn method(&self) -> &EvmMethod {
        &self.inner.method
    }

    fn new_challenge(
        &self,
        intent: &str,
        request: Map<String, Value>,
        expires: String,
        description: Option<String>,
    ) -> Challenge {
        let c = Challenge::new(
            &self.inner.secret.0,
            self.inner.realm.clone(),
            EVM_METHOD,
            intent,
            request,
            Some(expires),
            description,
            None,
            None,
        );
        for hook in &self.inner.events.challenge_created {
            hook(&c);
        }
        c
    }

    /// The request object a route's challenge carries (OKX's `pay()` form, §8.8).
    pub fn pay_request(&self, spec: &PaySpec) -> Result<Map<String, Value>, PayError> {
        route::pay_request(&self.inner.method, spec)
    }

    /// The route's terms (see [`RouteTerms`]): the intent typed, the price in base units and the
    /// request built once. `Err` is a configuration error (an intent the method does not serve, a
    /// price that is not an exact amount of the token).
    pub fn route_terms(&self, spec: &PaySpec) -> Result<RouteTerms, PayError> {
        route::resolve(&self.inner.method, spec)
    }

    /// [`Mpp::route_terms`] of a shared route, resolved on its first request and kept while the
    /// route lives (the cache holds the route's `Arc`, so its address names it and is never
    /// reused). Bounded: a coordinator fed a fresh `Arc<PaySpec>` per request forgets them all
    /// when [`route::MAX_CACHED_ROUTES`] is reached rather than grow.
    fn cached_route_terms(&self, spec: &Arc<PaySpec>) -> Result<Arc<RouteTerms>, PayError> {
        let key = Arc::as_ptr(spec) as usize;
        if let Some((_, terms)) = self.inner.terms.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(terms));
        }
        let terms = Arc::new(self.route_terms(spec)?);
        let mut cache = self.inner.terms.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= route::MAX_CACHED_ROUTES {
            cache.clear();
        }
        cache.insert(key, (Arc::clone(spec), Arc::clone(&terms)));
        Ok(terms)
    }

    /// Verify-or-challenge for `request` (the request this route asks for now), with the
    /// `intent` given by its wire name. Routes go through [`Mpp::process`], which resolves their
    /// [`RouteTerms`] once; this is the low-level form for a request built by hand.
    pub async fn verify_or_challenge(
        &self,
        authorization: Option<&str>,
        intent: &str,
        request: Map<String, Value>,
        description: Option<String>,
        expires: String,
    ) -> Result<Granted, Rejection> {
        let canonical = canonical_json_object(&request);
        let cost = request.get("amount").and_then(Value::as_str).and_then(base_units);
        self.decide(
            authorization,
            intent,
            &Arc::new(request),
            &canonical,
            cost,
            description,
            expires,
            Metered::PerRequest,
        )
        .await
    }

    /// Verify-or-challenge, given the request's canonical JSON and its price in base units
    /// (`None`: not a base-unit integer, which a session refuses).
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        authorization: Option<&str>,
        intent: &str,
        request: &Arc<Map<String, Value>>,
        canonical_request: &str,
        cost: Option<U256>,
        description: Option<String>,
        expires: String,
        metered: Metered,
    ) -> Result<Granted, Rejection> {
        let kind = Intent::parse(intent);
        let has_payment = authorization.is_some_and(super::header::carries_credential);
        let observe = |outcome: PaymentOutcome| {
            crate::metrics::record_payment(crate::metrics::PROTOCOL_MPP, intent, outcome);
            tracing::Span::current().record("outcome", outcome.as_str());
        };
        let refused = |e: &PayError| match e {
            PayError::Unknown(_) => PaymentOutcome::Error,
            _ => PaymentOutcome::Invalid,
        };
        let reject = |this: &Self, request: &Map<String, Value>, error: Option<PayError>| {
            crate::metrics::record_challenge(crate::metrics::PROTOCOL_MPP, intent);
            if let Some(e) = &error {
                tracing::info!(error = %e, "mpp: credential refused");
                for hook in &this.inner.events.payment_failed {
                    hook(e);
                }
            }
            let challenge = this.new_challenge(intent, request.clone(), expires.clone(), description.clone());
            Rejection { challenge, error }
        };
        let Some(authorization) = authorization.filter(|_| has_payment) else {
            tracing::Span::current().record("outcome", "challenge");
            return Err(reject(self, request, None));
        };
        let credential = match Credential::from_authorization_header(authorization) {
            Ok(c) => c,
            Err(e) => {
                observe(PaymentOutcome::Invalid);
                return Err(reject(self, request, Some(PayError::Protocol(e))));
            }
        };
        let echo = match verify_echo_canonical_at(
            &credential.challenge,
            &self.inner.secret.0,
            &self.inner.realm,
            EVM_METHOD,
            intent,
            canonical_request,
            time::OffsetDateTime::now_utc(),
        ) {
            Ok(e) => e,
            Err(e) => {
                observe(PaymentOutcome::NoMatch);
                return Err(reject(self, request, Some(PayError::Protocol(e))));
            }
        };
        if let Some(payer) = credential.source.as_deref() {
            tracing::Span::current().record("payer", payer);
        }
        if kind == Some(Intent::Session) {
            // Session vouchers reuse their challenge; replay protection is the channel's
            // monotonic cumulative amount (see the session intent).
            let Some(session) = &self.inner.method.session else {
                let e = Intent::Session.not_configured();
                observe(PaymentOutcome::Error);
                return Err(reject(self, request, Some(e)));
            };
            // A price that is not a base-unit integer is a configuration error: fail closed,
            // never serve for free.
            let Some(cost) = cost else {
                tracing::error!(amount = ?request.get("amount"), "mpp session: the route's amount is not a base-unit integer");
                let e = PayError::Unknown(EvmPaymentError::InternalSA("the route's price is misconfigured".into()));
                observe(PaymentOutcome::Error);
                return Err(reject(self, request, Some(e)));
            };
            // Runs to its end (and is reported) even if the request is dropped meanwhile: a
            // reservation made for a dropped request is released by its own drop, and an SA
            // open/topUp/close is reported (F5).
            let task = {
                let (this, session, credential, request) =
                    (self.clone(), Arc::clone(session), credential.clone(), Arc::clone(request));
                async move {
                    let out = match metered {
                        Metered::PerRequest => session.verify(&credential, &request, cost).await,
                        Metered::PerEvent { resume } => {
                            session.verify_stream(&credential, &request, cost, resume).await
                        }
                    };
                    match &out {
                        Ok(SessionGrant::Serve { receipt, .. }) => {
                            for hook in &this.inner.events.payment_success {
                                hook(&credential, receipt);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => this.inner.events.settlement_unknown.fire(&credential, e),
                    }
                    out
                }
                .instrument(tracing::Span::current())
            };
            let verified = crate::completion::run_detached(task).await.unwrap_or_else(|| {
                Err(PayError::Unknown(EvmPaymentError::InternalSA("session verification did not finish".into())))
            });
            return match verified {
                Ok(SessionGrant::Serve { receipt, pending }) => {
                    observe(PaymentOutcome::Verified);
                    tracing::Span::current().record("reference", receipt.reference.as_str());
                    let unknown = self.inner.events.settlement_unknown.clone();
                    Ok(Granted::Paid(MppPayment::reserved(
                        credential,
                        receipt,
                        pending,
                        unknown,
                        self.inner.cancel_policy,
                    )))
                }
                Ok(SessionGrant::Stream(start)) => {
                    observe(PaymentOutcome::Verified);
                    tracing::Span::current().record("reference", start.receipt.reference.as_str());
                    Ok(Granted::Paid(MppPayment::streaming(credential, *start, self.inner.cancel_policy)))
                }
                Ok(SessionGrant::Companion { receipt, body }) => {
                    observe(PaymentOutcome::Management);
                    Ok(Granted::Companion { credential, receipt, body })
                }
                Ok(SessionGrant::Management(body)) => {
                    observe(PaymentOutcome::Management);
                    Ok(Granted::Management { credential, body })
                }
                Err(e) => {
                    observe(refused(&e));
                    Err(reject(self, request, Some(e)))
                }
            };
        }
        let key = format!("mpp:{}:{}", self.inner.realm, echo.id);
        let expiry = u64::try_from(echo.expires_at.unix_timestamp()).unwrap_or(0).saturating_add(60);
        match self.inner.store.insert_if_absent(&key, expiry).await {
            Ok(true) => {}
            Ok(false) => {
                // A retry of a charge whose outcome was unknown is re-submitted; anything else is
                // a replay.
                match self.inner.records.charge_retry(&echo.id, authorization).await {
                    Ok(ChargeRetry::Resubmit(record)) if kind == Some(Intent::Charge) => {
                        return match self.resubmit_charge(&credential, request, &record, authorization).await {
                            Ok(paid) => {
                                observe(PaymentOutcome::Verified);
                                Ok(paid)
                            }
                            Err(e) => {
                                observe(refused(&e));
                                Err(reject(self, request, Some(e)))
                            }
                        };
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let e =
                            PayError::Unknown(EvmPaymentError::InternalSA(format!("record store unavailable: {e}")));
                        observe(PaymentOutcome::Error);
                        return Err(reject(self, request, Some(e)));
                    }
                }
                let e = MppError::new(MppErrorKind::InvalidChallenge, "challenge already used")
                    .with_challenge_id(echo.id.clone());
                observe(PaymentOutcome::Replayed);
                return Err(reject(self, request, Some(PayError::Protocol(e))));
            }
            Err(e) => {
                let e = PayError::Unknown(EvmPaymentError::InternalSA(format!("challenge store unavailable: {e}")));
                observe(PaymentOutcome::Error);
                return Err(reject(self, request, Some(e)));
            }
        }
        // The charge settles here, before the handler (L5): the settlement runs to its end and is
        // reported even if the request is dropped meanwhile (F5).
        let task = {
            let (this, credential, request, intent) =
                (self.clone(), credential.clone(), Arc::clone(request), intent.to_owned());
            async move {
                let outcome = match kind {
                    Some(Intent::Charge) => match &this.inner.method.charge {
                        Some(charge) => charge.verify(&credential, &request).await,
                        None => Err(Intent::Charge.not_configured()),
                    },
                    _ => Err(Intent::unknown(&intent)),
                };
                match &outcome {
                    Ok(receipt) => {
                        for hook in &this.inner.events.payment_success {
                            hook(&credential, receipt);
                        }
                    }
                    Err(e) => {
                        this.inner.events.settlement_unknown.fire(&credential, e);
                        // A definite refusal frees the challenge; an unknown outcome keeps it consumed.
                        if !matches!(e, PayError::Unknown(_))
                            && let Err(err) = this.inner.store.remove(&key).await
                        {
                            tracing::warn!(error = %err, "mpp: cannot release a challenge reservation");
                        }
                    }
                }
                outcome
            }
            .instrument(tracing::Span::current())
        };
        let outcome = crate::completion::run_detached(task).await.unwrap_or_else(|| {
            Err(PayError::Unknown(EvmPaymentError::InternalSA("charge settlement did not finish".into())))
        });
        match outcome {
            Ok(receipt) => {
                observe(PaymentOutcome::Verified);
                tracing::Span::current().record("reference", receipt.reference.as_str());
                Ok(Granted::Paid(MppPayment::charged(credential, receipt, self.inner.cancel_policy)))
            }
            Err(e) => {
                if matches!(e, PayError::Unknown(_)) {
                    self.inner.records.charge_unknown(&echo.id, authorization).await;
                }
                observe(refused(&e));
                Err(reject(self, request, Some(e)))
            }
        }
    }

    /// Re-submits a charge credential whose first outcome was unknown (its signed transfer is
    /// single-use on chain, so this cannot move money twice). Only a success counts, and only
    /// one request delivers it; anything else leaves it unknown (503).
    async fn resubmit_charge(
        &self,
        credential: &Credential,
        request: &Arc<Map<String, Value>>,
        record: &str,
        authorization: &str,
    ) -> Result<Granted, PayError> {
        let still_unknown = |why: &str| PayError::Unknown(EvmPaymentError::InternalSA(why.to_owned()));
        let Some(charge) = self.inner.method.charge.clone() else { return Err(Intent::Charge.not_configured()) };
        let task = {
            let (credential, request) = (credential.clone(), Arc::clone(request));
            async move { charge.verify(&credential, &request).await }.instrument(tracing::Span::current())
        };
        match crate::completion::run_detached(task).await {
            Some(Ok(receipt)) => {
                if !self.inner.records.charge_resolved(record, authorization).await {
                    return Err(still_unknown("the charge is being delivered to another request"));
                }
                tracing::info!(reference = %receipt.reference, "mpp: a charge of unknown outcome settled on retry");
                for hook in &self.inner.events.payment_success {
                    hook(credential, &receipt);
                }
                Ok(Granted::Paid(MppPayment::charged(credential.clone(), receipt, self.inner.cancel_policy)))
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "mpp: re-submitted charge not confirmed; its outcome stays unknown");
                Err(still_unknown("the charge's outcome is still unknown"))
            }
            None => Err(still_unknown("charge settlement did not finish")),
        }
    }

    /// Decides a request to a paid route: the verified credential and receipt, or the response
    /// to send instead (402 challenge, or the failure's problem).
    pub async fn process(&self, ctx: &RequestContext, spec: &PaySpec) -> Result<MppPayment, PaymentHttpResponse> {
        match self.route_terms(spec) {
            Ok(terms) => self.process_terms(ctx, spec, &terms).await,
            Err(e) => Err(self.inner.misconfigured.respond("mpp", &e)),
        }
    }

    /// [`Mpp::process`] for a shared route (the route tables' and the attribute macros'): its
    /// [`RouteTerms`] are resolved on its first request and reused after.
    pub async fn process_route(
        &self,
        ctx: &RequestContext,
        spec: &Arc<PaySpec>,
    ) -> Result<MppPayment, PaymentHttpResponse> {
        match self.cached_route_terms(spec) {
            Ok(terms) => self.process_terms(ctx, spec, &terms).await,
            Err(e) => Err(self.inner.misconfigured.respond("mpp", &e)),
        }
    }

    async fn process_terms(
        &self,
        ctx: &RequestContext,
        spec: &PaySpec,
        terms: &RouteTerms,
    ) -> Result<MppPayment, PaymentHttpResponse> {
        let authorization = ctx.header("authorization");
        let expires = route::expires_at(spec.challenge_ttl());
        let span = tracing::info_span!(
            "mpp.request",
            method = %ctx.method,
            path = %ctx.path,
            route = spec.description.as_deref().unwrap_or_default(),
            intent = %spec.intent,
            amount = %spec.amount,
            payer = tracing::field::Empty,
            reference = tracing::field::Empty,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let start = std::time::Instant::now();
        let metered = match terms.per {
            Per::Event => match ctx.header("last-event-id").map(str::trim) {
                None => Metered::PerEvent { resume: None },
                Some(id) => match id.parse::<u64>() {
                    Ok(k) if id.bytes().all(|b| b.is_ascii_digit()) => Metered::PerEvent { resume: Some(k) },
                    _ => {
                        let e = EvmPaymentError::BadRequest("Last-Event-ID is not an event id of this stream".into());
                        return Err(PaymentHttpResponse::new(
                            StatusCode::BAD_REQUEST,
                            "application/json",
                            e.problem().to_compact_json(),
                        ));
                    }
                },
            },
            _ => Metered::PerRequest,
        };
        let hold = match authorization.filter(|a| super::header::carries_credential(a)) {
            Some(a) => match self.inner.records.keyed(ctx, a).await? {
                Keyed::No => None,
                Keyed::Hold(hold) => Some(hold),
                Keyed::Replay(replayed) => {
                    let (credential, receipt) = *replayed;
                    tracing::info!(parent: &span, "mpp: Idempotency-Key replayed from its record");
                    return Ok(MppPayment::charged(credential, receipt, self.inner.cancel_policy));
                }
            },
            None => None,
        };
        let mut decided = self
            .decide(
                authorization,
                terms.intent.as_str(),
                &terms.request,
                &terms.canonical_request,
                Some(terms.amount),
                spec.description.clone(),
                expires,
                metered,
            )
            .instrument(span.clone())
            .await;
        span.record("latency_ms", crate::metrics::millis_since(start));
        if let Some(hold) = hold {
            match &decided {
                // A charge is settled before the handler: recorded now. A session voucher is
                // recorded when it is committed (`MppPayment::finish`).
                // A stream is charged per event, long after this: no record replays it.
                Ok(Granted::Paid(paid)) if paid.is_stream() => hold.forget().await,
                Ok(Granted::Paid(paid)) if !paid.has_pending() => hold.settled(&paid.receipt).await,
                Ok(Granted::Paid(_)) => {}
                Err(Rejection { error: Some(PayError::Unknown(_)), .. }) => hold.pending(true).await,
                Ok(Granted::Management { .. } | Granted::Companion { .. }) | Err(_) => hold.forget().await,
            }
            if let Ok(Granted::Paid(paid)) = &mut decided
                && paid.has_pending()
            {
                paid.hold_key(hold);
            }
        }
        match decided {
            Ok(Granted::Paid(mut paid)) => {
                if paid.receipt.external_id.is_none() {
                    paid.receipt.external_id.clone_from(&spec.external_id);
                }
                Ok(paid)
            }
            Ok(Granted::Management { body, .. }) => {
                let resp = PaymentHttpResponse::new(StatusCode::OK, "application/json", body.to_string());
                Err(resp.with_header("Access-Control-Expose-Headers", MPP_EXPOSED_HEADERS))
            }
            Ok(Granted::Companion { receipt, body, .. }) => {
                let mut resp = PaymentHttpResponse::new(StatusCode::OK, "application/json", body.to_string());
                for (name, value) in &super::payment::receipt_headers(&receipt) {
                    if let Ok(v) = value.to_str() {
                        resp = resp.with_header(name.as_str(), v);
                    }
                }
                Err(resp)
            }
            Err(r) => Err(super::paywall::for_request(ctx, self.reject_response(&r), &self.inner.paywall)),
        }
    }

    /// Renders a refusal: protocol problems as `application/problem+json` with a fresh
    /// `WWW-Authenticate` challenge; method errors as OKX's compact `application/json` problem
    /// with their own status (plus a fresh challenge when that status is 402).
    pub fn reject_response(&self, rejection: &Rejection) -> PaymentHttpResponse {
        let challenge = &rejection.challenge;
        let www = match challenge.to_www_authenticate() {
            Ok(w) => w,
            Err(e) => return PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let (status, content_type, body) = match &rejection.error {
            None => (402, "application/problem+json", challenge.problem_details().to_python_json()),
            Some(PayError::Protocol(e)) => {
                let mut p = e.problem();
                p.challenge_id = Some(challenge.id.clone());
                if e.kind() == MppErrorKind::PaymentRequired {
                    p.detail = payment_required_detail(&self.inner.realm, challenge.description.as_deref());
                }
                (p.status, "application/problem+json", p.to_python_json())
            }
            Some(PayError::Method(e)) => (e.status(), "application/json", e.problem().to_compact_json()),
            // Unknown: never a new challenge (it would invite a second authorization) — 503 with
            // Retry-After; the body is the SA problem.
            Some(PayError::Unknown(e)) => (503, "application/json", unknown_problem(e)),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::PAYMENT_REQUIRED);
        let mut resp = PaymentHttpResponse::new(status, content_type, body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp = resp.with_header("retry-after", &MPP_RETRY_AFTER_SECONDS.to_string());
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            resp = resp.with_header("WWW-Authenticate", &www);
        }
        resp.with_header("Access-Control-Expose-Headers", MPP_EXPOSED_HEADERS)
    }

    /// The headers added to a successful handler response: `Payment-Receipt`.
    pub fn receipt_headers(receipt: &Receipt) -> HeaderMap {
        super::payment::receipt_headers(receipt)
    }
}
