//! Unit tests of the resource server: initialisation, requirements, binding, hooks, settlement
//! polling.

use super::*;
use crate::x402::settlement::SETTLEMENT_TIMEOUT;
use crate::x402::{AggrDeferredEvmScheme, ExactEvmScheme, SettleStatusResponse, SupportedResponse};
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
        amount: None,
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
    let report = server.initialize().await.unwrap();
    let unsupported =
        vec![("exact".to_owned(), "eip155:1".to_owned()), ("aggr_deferred".to_owned(), "eip155:8453".to_owned())];
    assert_eq!(report.unsupported, unsupported);
    assert!(!report.is_complete());
    assert_eq!(server.unsupported_kinds(), unsupported);
    // Only the unsupported kinds fail (500); the supported one builds.
    assert!(server.is_initialized());
    let err = server
        .build_payment_requirements(&RequirementsSpec::new("aggr_deferred", "eip155:8453", PAY_TO, "$0.001"))
        .unwrap_err();
    assert_eq!(err, ResourceServerError::UnsupportedKinds(vec![unsupported[1].clone()]));
    let text = err.to_string();
    assert!(text.contains("scheme `aggr_deferred` on `eip155:8453`"), "{text}");
    assert_eq!(err.http_status(), 500);
    let req = server.build_payment_requirements(&RequirementsSpec::new("exact", "eip155:196", PAY_TO, "$0.001"));
    assert_eq!(req.unwrap().amount, "1000");
}

#[tokio::test]
async fn initialize_accepts_wildcard_kinds() {
    let log = Log::default();
    let server = X402ResourceServer::new(Fake::new("f", &log, vec![kind("exact", "eip155:*")]))
        .register("eip155:196", ExactEvmScheme::new())
        .register("eip155:*", AggrDeferredEvmScheme::new());
    let report = server.initialize().await.unwrap();
    assert_eq!(report.unsupported, vec![("aggr_deferred".to_owned(), "eip155:*".to_owned())]);

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
    assert_eq!(err, ResourceServerError::Facilitator(FacilitatorError::Transport("refused".into())));
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
    assert_eq!(server.build_payment_requirements(&spec), Err(ResourceServerError::NotInitialized));
    server.initialize().await.unwrap();

    let unregistered = RequirementsSpec::new("aggr_deferred", "eip155:196", PAY_TO, "$0.001");
    assert_eq!(
        server.build_payment_requirements(&unregistered),
        Err(ResourceServerError::SchemeNotRegistered { scheme: "aggr_deferred".into(), network: "eip155:196".into() })
    );
    let bad_price = RequirementsSpec::new("exact", "eip155:196", PAY_TO, "abc");
    let err = server.build_payment_requirements(&bad_price).unwrap_err();
    assert!(matches!(err, ResourceServerError::Price(_)), "{err:?}");
    assert_eq!(err.http_status(), 500);

    // Registered by wildcard, but the facilitator only supports X Layer.
    let server = X402ResourceServer::new(Fake::new("f", &log, vec![kind("exact", "eip155:196")]))
        .register("eip155:*", ExactEvmScheme::new());
    server.initialize().await.unwrap();
    let base = RequirementsSpec::new("exact", "eip155:8453", PAY_TO, "$0.001");
    assert_eq!(
        server.build_payment_requirements(&base),
        Err(ResourceServerError::UnsupportedKinds(vec![("exact".into(), "eip155:8453".into())]))
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
    let pr = server.build_payment_required(resource, vec![a.clone(), b.clone()], Some("Payment required".into()), None);
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

/// A hook body that logs `entry` and answers the default (no abort, no recovery).
fn logging<R: Default>(log: &Log, entry: &'static str) -> impl Fn() -> std::future::Ready<R> + Send + Sync + 'static {
    let log = log.clone();
    move || {
        push(&log, entry);
        std::future::ready(R::default())
    }
}

fn hooked(server: X402ResourceServer, log: &Log) -> X402ResourceServer {
    let (before_verify, after_verify, verify_failure) =
        (logging(log, "before_verify"), logging(log, "after_verify"), logging(log, "verify_failure"));
    let (before_settle, after_settle, settle_failure) =
        (logging(log, "before_settle"), logging(log, "after_settle"), logging(log, "settle_failure"));
    server
        .on_before_verify(move |_| before_verify())
        .on_after_verify(move |_, _| after_verify())
        .on_verify_failure(move |_, _| verify_failure())
        .on_before_settle(move |_| before_settle())
        .on_after_settle(move |_, _| after_settle())
        .on_settle_failure(move |_, _| settle_failure())
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
        assert_eq!(err, ResourceServerError::RequirementsMismatch { field });
        assert_eq!(err.http_status(), 402);
        let err = server.settle(&payload, &seller).await.unwrap_err();
        assert_eq!(err, ResourceServerError::RequirementsMismatch { field });
    }
    let mut v1 = payload_for(seller.clone());
    v1.x402_version = 1;
    assert_eq!(server.verify(&v1, &seller).await, Err(ResourceServerError::UnsupportedVersion(1)));
    assert_eq!(server.settle(&v1, &seller).await, Err(ResourceServerError::UnsupportedVersion(1)));
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
    assert_eq!(err, ResourceServerError::Aborted { reason: "blocked".into() });
    assert_eq!(err.http_status(), 402);
    assert_eq!(server.settle(&payload, &req).await, Err(ResourceServerError::Aborted { reason: "no settle".into() }));
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
    assert_eq!(err, ResourceServerError::Facilitator(FacilitatorError::Timeout(Duration::from_secs(1))));
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
    assert_eq!(err, ResourceServerError::Aborted { reason: "hook timed out".into() });
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
    let server =
        ready(&fake, &log).await.on_settlement_timeout(|_, _| async { false }).on_settle_failure(move |_, failure| {
            s.lock().unwrap().push(failure);
            async { None }
        });
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

/// The official facilitators' `success: false, errorReason: "settlement_pending"` (broadcast, not
/// confirmed) is polled like a timeout — delivered once confirmed, never a plain failure.
#[tokio::test]
async fn settlement_pending_reason_is_polled_like_a_timeout() {
    let log = Log::default();
    let fake = x_layer_fake(&log);
    let pending = SettleResponse {
        success: false,
        error_reason: Some("settlement_pending".into()),
        status: None,
        ..settle_ok(None)
    };
    fake.set_settle(Ok(pending.clone()));
    fake.script_statuses(vec![Ok(status("pending")), Ok(status("success"))]);
    let server = ready(&fake, &log).await;
    let req = seller_req();
    let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
    assert_eq!(resp, settle_ok(Some("success")));
    // Still unconfirmed at the deadline: an unknown outcome (`settlement_timeout`), not a failure.
    fake.script_statuses(vec![]);
    let resp = server.settle(&payload_for(req.clone()), &req).await.unwrap();
    assert_eq!(resp.error_reason.as_deref(), Some("settlement_timeout"));
    assert_eq!(resp.transaction, "0xtx");
    // Reconciliation reads it too.
    fake.set_settle(Ok(pending));
    let payload = payload_for(req.clone());
    assert_eq!(
        server.reconcile(&payload, &req, None, true).await,
        Reconciled::Unknown { transaction: Some("0xtx".into()) }
    );
    fake.script_statuses(vec![Ok(status("success"))]);
    assert!(matches!(server.reconcile(&payload, &req, Some("0xtx"), false).await, Reconciled::Settled(_)));
}
