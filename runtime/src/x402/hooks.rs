//! The seller's hooks around verify and settle: what they see ([`VerifyContext`],
//! [`SettleContext`], [`VerifyFailure`], [`SettleFailure`]), how a before-hook stops an operation
//! ([`AbortResult`]), and the four runners [`X402ResourceServer`](super::X402ResourceServer)
//! drives them with, each call bounded by the hook timeout.

use super::facilitator::FacilitatorError;
use super::types::{PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse};
use crate::chain::Network;
use crate::web::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Reason given when a before-hook exceeds the hook timeout.
const HOOK_TIMED_OUT: &str = "hook timed out";

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
    /// Why (becomes [`ResourceServerError::Aborted`](super::ResourceServerError::Aborted)).
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

/// One registered hook: an async function of its argument.
pub(super) type Hook<A, R> = Arc<dyn Fn(A) -> BoxFuture<R> + Send + Sync>;

/// The seller's hooks, each list in registration order.
#[derive(Clone, Default)]
pub(super) struct Hooks {
    pub(super) before_verify: Vec<Hook<VerifyContext, Option<AbortResult>>>,
    pub(super) after_verify: Vec<Hook<(VerifyContext, VerifyResponse), ()>>,
    pub(super) verify_failure: Vec<Hook<(VerifyContext, VerifyFailure), Option<VerifyResponse>>>,
    pub(super) before_settle: Vec<Hook<SettleContext, Option<AbortResult>>>,
    pub(super) after_settle: Vec<Hook<(SettleContext, SettleResponse), ()>>,
    pub(super) settle_failure: Vec<Hook<(SettleContext, SettleFailure), Option<SettleResponse>>>,
    pub(super) settlement_timeout: Vec<Hook<(String, Network), bool>>,
}

/// Boxes a user's hook function.
pub(super) fn hook<A, R, F, Fut>(f: F) -> Hook<A, R>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    Arc::new(move |arg| Box::pin(f(arg)))
}

/// Runs before-hooks in order: the first abort (or a hook exceeding `timeout`, reason
/// `hook timed out`) stops the operation.
pub(super) async fn run_before<C>(
    hooks: &[Hook<C, Option<AbortResult>>],
    ctx: &C,
    what: &'static str,
    timeout: Duration,
) -> Result<(), AbortResult>
where
    C: Clone + Send + Sync,
{
    for hook in hooks {
        match tokio::time::timeout(timeout, hook(ctx.clone())).await {
            Ok(None) => {}
            Ok(Some(abort)) => {
                tracing::debug!(hook = what, reason = %abort.reason, "x402 hook aborted");
                return Err(abort);
            }
            Err(_) => {
                tracing::warn!(hook = what, ?timeout, "x402 hook timed out: aborting");
                return Err(AbortResult::new(HOOK_TIMED_OUT));
            }
        }
    }
    Ok(())
}

/// Runs after-hooks in order; a hook exceeding `timeout` is cut off and ignored.
pub(super) async fn run_after<A>(hooks: &[Hook<A, ()>], arg: A, what: &'static str, timeout: Duration)
where
    A: Clone + Send + Sync,
{
    for hook in hooks {
        if tokio::time::timeout(timeout, hook(arg.clone())).await.is_err() {
            tracing::warn!(hook = what, ?timeout, "x402 hook timed out: ignored");
        }
    }
}

/// Runs failure hooks in order: the first `Some` recovers.
pub(super) async fn run_recover<A, R>(
    hooks: &[Hook<A, Option<R>>],
    arg: A,
    what: &'static str,
    timeout: Duration,
) -> Option<R>
where
    A: Clone + Send + Sync,
{
    for hook in hooks {
        match tokio::time::timeout(timeout, hook(arg.clone())).await {
            Ok(Some(recovered)) => return Some(recovered),
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(hook = what, ?timeout, "x402 hook timed out: no recovery");
            }
        }
    }
    None
}

/// Asks the settlement-timeout hooks whether transaction `tx` counts as settled: any `true`
/// recovers it.
pub(super) async fn run_settlement_timeout(
    hooks: &[Hook<(String, Network), bool>],
    tx: &str,
    network: &Network,
    timeout: Duration,
) -> bool {
    for hook in hooks {
        match tokio::time::timeout(timeout, hook((tx.to_owned(), network.clone()))).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => {
                tracing::warn!(hook = "settlement_timeout", ?timeout, "x402 hook timed out: not recovered");
            }
        }
    }
    false
}
