//! What a facilitator's settle answer amounts to (wire facts §4.8): delivered, failed, or — for
//! `timeout` and `pending` answers — polled through `settle_status` until the deadline, then
//! confirmed by the settlement-timeout hooks or refused (fail closed).

use super::facilitator::{FacilitatorClient, FacilitatorError};
use super::hooks::{Hook, SettleFailure, run_settlement_timeout};
use super::types::{PaymentRequirements, SettleResponse, SettleStatusResponse, settle_status};
use crate::chain::Network;
use std::time::Duration;
use tracing::Instrument;

/// `errorReason` of an unrecovered settlement timeout.
pub(super) const SETTLEMENT_TIMEOUT: &str = "settlement_timeout";
/// `errorReason` of a failed settlement that gave no reason.
const SETTLEMENT_FAILED: &str = "settlement_failed";
/// `errorReason` with which the official x402 facilitators (2.25+) report a transaction that
/// was broadcast but not confirmed in time (`success: false` and the transaction): not a
/// failure — its outcome is unknown, handled like OKX's `status: "timeout"`.
pub(super) const SETTLEMENT_PENDING_REASON: &str = "settlement_pending";

/// The resource server's settlement settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct SettlementPolicy {
    /// Interval between `settle_status` queries.
    pub(super) poll_interval: Duration,
    /// Deadline of the polling.
    pub(super) poll_deadline: Duration,
    /// Poll `pending` answers (not only `timeout` ones).
    pub(super) poll_pending: bool,
    /// Deliver on a settlement still `pending` after polling.
    pub(super) deliver_on_pending: bool,
}

/// The result of polling a settlement's status.
pub(super) enum PollOutcome {
    Success,
    Failed(SettleStatusResponse),
    StillPending,
}

/// What a facilitator settle answer amounts to.
pub(super) enum SettleOutcome {
    /// Deliver: settled (or pending, when the seller opted in with
    /// [`X402ResourceServer::deliver_on_pending`](super::X402ResourceServer::deliver_on_pending)).
    Deliver(SettleResponse),
    /// Failed: what the failure hooks see, and what is returned when no hook recovers it.
    Fail(SettleFailure, Result<SettleResponse, FacilitatorError>),
}

/// Resolves settle answers with the server's policy and settlement-timeout hooks.
pub(super) struct Settlement<'a> {
    pub(super) policy: SettlementPolicy,
    pub(super) timeout_hooks: &'a [Hook<(String, Network), bool>],
    pub(super) hook_timeout: Duration,
}

impl Settlement<'_> {
    /// Turns a facilitator settle answer into a deliverable response or a failure (with the
    /// response to return when no failure hook recovers it).
    pub(super) async fn classify(
        &self,
        facilitator: &dyn FacilitatorClient,
        resp: SettleResponse,
        requirements: &PaymentRequirements,
    ) -> SettleOutcome {
        if !resp.success {
            if resp.error_reason.as_deref() == Some(SETTLEMENT_PENDING_REASON) && !resp.transaction.is_empty() {
                // Broadcast, not confirmed: poll it like a timeout.
                let timeout = SettleResponse {
                    success: true,
                    error_reason: None,
                    error_message: None,
                    status: Some(settle_status::TIMEOUT.to_owned()),
                    ..resp
                };
                return Box::pin(self.classify(facilitator, timeout, requirements)).await;
            }
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
                        if self.confirmed_by_hooks(&resp.transaction, &network).await {
                            tracing::debug!("x402 settle: timeout recovered by a settlement-timeout hook");
                            SettleOutcome::Deliver(settled(resp))
                        } else {
                            timeout_failure(&resp)
                        }
                    }
                }
            }
            Some(settle_status::PENDING) => {
                if self.policy.poll_pending && !resp.transaction.is_empty() {
                    match self.poll_settlement(facilitator, &resp.transaction).await {
                        PollOutcome::Success => return SettleOutcome::Deliver(settled(resp)),
                        PollOutcome::Failed(status) => return poll_failure(&resp, status, network),
                        PollOutcome::StillPending => {}
                    }
                }
                if self.policy.deliver_on_pending {
                    return SettleOutcome::Deliver(resp);
                }
                // Not known to have succeeded: refused like a timeout (F11), unless a
                // settlement-timeout hook confirms it.
                if !resp.transaction.is_empty() && self.confirmed_by_hooks(&resp.transaction, &network).await {
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
        let interval = self.policy.poll_interval;
        let deadline = tokio::time::Instant::now() + self.policy.poll_deadline;
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
    /// Whether a settlement-timeout hook confirms transaction `tx`.
    async fn confirmed_by_hooks(&self, tx: &str, network: &Network) -> bool {
        run_settlement_timeout(self.timeout_hooks, tx, network, self.hook_timeout).await
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

/// What a reconciler learned about a settlement whose outcome was unknown
/// ([`X402ResourceServer::reconcile`](super::X402ResourceServer::reconcile)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconciled {
    /// The payment settled: the settle response to deliver with (status `success`).
    Settled(SettleResponse),
    /// Proven failed (the facilitator reports the settlement's transaction failed): no money
    /// moved for this payment.
    Failed(SettleResponse),
    /// Still unknown: the transaction, when one is known.
    Unknown {
        /// The settlement's transaction hash, when known.
        transaction: Option<String>,
    },
}

/// How long one reconciliation query may take.
const RECONCILE_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One reconciliation step for a settlement of unknown outcome.
///
/// With a transaction: one `settle_status` query — `success` proves it settled, `failed` (or
/// `success: false`) proves it failed, anything else (pending, an error, no answer) leaves it
/// unknown. Without one, and only when `resubmit` is set: the identical signed payment is
/// settled again — its authorization is single-use on chain (EIP-3009 / Permit2 nonce), so a
/// second submission cannot move money twice — and only a successful answer counts: a refusal
/// ("nonce already used", "expired", …) cannot tell "the first attempt moved the money" from
/// "nothing moved", so it leaves the outcome unknown (fail closed: never served, never a new
/// payment invited).
pub(super) async fn reconcile(
    facilitator: &dyn FacilitatorClient,
    payload: &super::types::PaymentPayload,
    requirements: &PaymentRequirements,
    transaction: Option<&str>,
    resubmit: bool,
) -> Reconciled {
    let payer = payload.claimed_payer().map(str::to_owned);
    let network = requirements.network.clone();
    if let Some(tx) = transaction.filter(|t| !t.is_empty()) {
        let query = crate::metrics::facilitator_call("settle_status", facilitator.settle_status(tx));
        let unknown = || Reconciled::Unknown { transaction: Some(tx.to_owned()) };
        return match tokio::time::timeout(RECONCILE_QUERY_TIMEOUT, query).await {
            Ok(Ok(status)) if !status.success || status.status.as_deref() == Some(settle_status::FAILED) => {
                let reason =
                    status.error_reason.filter(|r| !r.is_empty()).unwrap_or_else(|| SETTLEMENT_FAILED.to_owned());
                let mut failure = SettleResponse::failure(reason, network, payer.or(status.payer), tx.to_owned());
                failure.error_message = status.error_message;
                Reconciled::Failed(failure)
            }
            Ok(Ok(status)) if status.status.as_deref() == Some(settle_status::SUCCESS) => {
                Reconciled::Settled(SettleResponse {
                    success: true,
                    error_reason: None,
                    error_message: None,
                    status: Some(settle_status::SUCCESS.to_owned()),
                    payer: payer.or(status.payer),
                    transaction: tx.to_owned(),
                    network,
                    amount: None,
                })
            }
            Ok(Ok(status)) => {
                tracing::debug!(status = status.status.as_deref().unwrap_or_default(), "x402 reconcile: not final");
                unknown()
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "x402 reconcile: status query failed");
                unknown()
            }
            Err(_) => {
                tracing::debug!("x402 reconcile: status query timed out");
                unknown()
            }
        };
    }
    if !resubmit {
        return Reconciled::Unknown { transaction: None };
    }
    let submit = crate::metrics::facilitator_call("settle", facilitator.settle(payload, requirements));
    match tokio::time::timeout(RECONCILE_QUERY_TIMEOUT, submit).await {
        Ok(Ok(resp)) if resp.success && resp.status.as_deref().is_none_or(|s| s == settle_status::SUCCESS) => {
            Reconciled::Settled(settled(resp))
        }
        Ok(Ok(resp))
            if !resp.transaction.is_empty()
                && ((resp.success
                    && matches!(resp.status.as_deref(), Some(settle_status::TIMEOUT | settle_status::PENDING)))
                    || (!resp.success && resp.error_reason.as_deref() == Some(SETTLEMENT_PENDING_REASON))) =>
        {
            Reconciled::Unknown { transaction: Some(resp.transaction) }
        }
        Ok(Ok(resp)) => {
            tracing::warn!(
                success = resp.success,
                reason = resp.error_reason.as_deref().unwrap_or_default(),
                "x402 reconcile: the resubmitted payment was refused; its first attempt may have settled, the \
                 outcome stays unknown (check the payer's nonce on chain)"
            );
            Reconciled::Unknown { transaction: None }
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "x402 reconcile: resubmission failed");
            Reconciled::Unknown { transaction: None }
        }
        Err(_) => Reconciled::Unknown { transaction: None },
    }
}
