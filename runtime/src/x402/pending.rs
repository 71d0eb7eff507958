//! Settlements whose outcome is unknown, and the retries that resolve them (exactly once).
//!
//! When settlement's outcome is unknown — the facilitator timed out after broadcasting, answered
//! a 5xx, dropped the connection, or still says `pending` — the first payment may have moved
//! money. A fresh 402 would invite the buyer to sign a *second* payment, so pay402 never sends
//! one then: the payment is recorded here ([`SettlementRecord::Pending`], keyed by the
//! payment's replay key — network, payer and nonce) and the buyer gets
//! `503 Service Unavailable` with `Retry-After` and the transaction when known
//! ([`SETTLEMENT_PENDING_ERROR`]).
//!
//! A reconciler resolves the record — in the background (one task per record with a known
//! transaction, querying `settle_status` with backoff until its outcome is known, the record
//! expires or the server is dropped), on demand when the buyer retries, and in sweeps
//! ([`X402HttpServer::reconcile_pending`](super::X402HttpServer::reconcile_pending)). When the
//! buyer retries with the **same** payment (the replay guard sees its key again):
//!
//! * settled → the response the handler produced the first time (recorded when the outcome
//!   became unknown; [`RetryDelivery`](super::RetryDelivery)) — or, when none was recorded, the
//!   handler's response to the retry — is delivered with the recorded `PAYMENT-RESPONSE`;
//!   nothing is verified or settled a second time. One retry at a time holds
//!   the delivery ([`SettlementRecord::Delivering`], a lease); once a response with a status
//!   below 400 is delivered the record says so and later copies are refused as replays;
//! * failed (proven by the facilitator) → a fresh 402 with the failure in `PAYMENT-RESPONSE`;
//! * still unknown → 503 again. Without a transaction, the retry re-submits the identical
//!   signed payment (single-use on chain: it cannot move money twice) and only a success
//!   counts.
//!
//! Records live in a [`RecordStore`]: in memory by default (one instance), or
//! [`RedisRecordStore`](crate::replay::RedisRecordStore) so a retry that lands on another
//! instance finds the record ([`X402HttpServer::settlement_records`](super::X402HttpServer::settlement_records)).

use super::server::X402ResourceServer;
use super::settlement::Reconciled;
use super::types::{PaymentPayload, PaymentRequirements, SettleResponse};
use crate::replay::{RecordStore, ReplayStoreError, unix_now};
use crate::web::PaymentHttpResponse;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The `error` of the `503` sent while a payment's settlement outcome is unknown: retry the
/// same request with the same payment after `Retry-After` seconds; do not sign another one.
pub const SETTLEMENT_PENDING_ERROR: &str = "Payment settlement is pending; retry with the same payment";

/// The default `Retry-After` of a pending settlement.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// How long a settlement record is kept at least (a buyer retrying within it finds its outcome).
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(3600);

/// How long one retry holds a settled payment's delivery before another may take it over.
const DELIVERY_LEASE_SECONDS: u64 = 120;

/// The key prefix of x402 settlement records in a [`RecordStore`].
pub(crate) const RECORD_PREFIX: &str = "x402:settlement:";

/// The first and the longest wait of a background reconciliation task.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What became of a payment whose settlement outcome was unknown (stored as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum SettlementRecord {
    /// The outcome is unknown.
    #[serde(rename_all = "camelCase")]
    Pending {
        /// The buyer's payment, as it was verified.
        payload: Box<PaymentPayload>,
        /// The seller's requirements it matched.
        requirements: Box<PaymentRequirements>,
        /// The settlement's transaction, when known.
        transaction: Option<String>,
        /// When it was recorded (Unix seconds).
        since: u64,
    },
    /// Settled; the response it paid for has not been delivered yet.
    #[serde(rename_all = "camelCase")]
    Settled {
        /// The settle response (status `success`), sent in `PAYMENT-RESPONSE`.
        response: SettleResponse,
        /// The payment, to recognise its retries.
        payload: Box<PaymentPayload>,
    },
    /// A retry is running the handler for the settled payment, until `lease_until`.
    #[serde(rename_all = "camelCase")]
    Delivering {
        /// The settle response.
        response: SettleResponse,
        /// The payment.
        payload: Box<PaymentPayload>,
        /// Unix seconds after which another retry may take the delivery over.
        lease_until: u64,
    },
    /// Settled and delivered.
    #[serde(rename_all = "camelCase")]
    Delivered {
        /// The settle response.
        response: SettleResponse,
    },
    /// Proven failed: no money moved for this payment.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// The failure, sent in `PAYMENT-RESPONSE` with the fresh 402.
        response: SettleResponse,
        /// The payment.
        payload: Box<PaymentPayload>,
    },
}

impl SettlementRecord {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The payment this record is about (`None` once delivered).
    fn payload(&self) -> Option<&PaymentPayload> {
        match self {
            Self::Pending { payload, .. }
            | Self::Settled { payload, .. }
            | Self::Delivering { payload, .. }
            | Self::Failed { payload, .. } => Some(payload),
            Self::Delivered { .. } => None,
        }
    }
}

/// A settled payment held by one retry while its handler runs ([`PendingSettlements::on_retry`]).
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    key: String,
    held: Vec<u8>,
    response: SettleResponse,
    payload: Box<PaymentPayload>,
}

impl Claim {
    /// The replay key of the payment it holds.
    pub(crate) fn replay_key(&self) -> &str {
        self.key.strip_prefix(RECORD_PREFIX).unwrap_or(&self.key)
    }

    /// The recorded settle response.
    pub(crate) fn response(&self) -> &SettleResponse {
        &self.response
    }
}

/// What a retry of a recorded payment gets.
pub(crate) enum Retry {
    /// No record: the payment is a plain replay.
    NotRecorded,
    /// Settled: run the handler and deliver (the claim ends in [`PendingSettlements::delivered`]
    /// or [`PendingSettlements::undeliver`]).
    Deliver(Claim),
    /// Still unknown (the transaction when known): 503.
    Unknown(Option<String>),
    /// Another retry is delivering it right now: 503.
    Busy,
    /// Proven failed: a fresh 402 carrying this failure.
    Failed(SettleResponse),
    /// The store failed: 503 (fail closed).
    Unavailable,
}

/// The pending-settlement records of one [`X402HttpServer`](super::X402HttpServer).
#[derive(Clone)]
pub(crate) struct PendingSettlements {
    store: Arc<dyn RecordStore>,
    retention: Duration,
    retry_after: Duration,
    /// Dropped with the server: background reconciliation tasks then stop.
    alive: Arc<tokio::sync::watch::Sender<()>>,
}

impl PendingSettlements {
    pub(crate) fn new(store: Arc<dyn RecordStore>) -> Self {
        Self {
            store,
            retention: DEFAULT_RECORD_RETENTION,
            retry_after: DEFAULT_RETRY_AFTER,
            alive: Arc::new(tokio::sync::watch::channel(()).0),
        }
    }

    /// The record store.
    pub(crate) fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    pub(crate) fn with_store(mut self, store: Arc<dyn RecordStore>) -> Self {
        self.store = store;
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after.max(Duration::from_secs(1));
        self
    }

    pub(crate) fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention.max(Duration::from_secs(60));
        self
    }

    /// When a record written now expires (also the replay key's new expiry).
    pub(crate) fn expiry(&self, at_least: u64) -> u64 {
        unix_now().saturating_add(self.retention.as_secs()).max(at_least)
    }

    fn key(replay_key: &str) -> String {
        format!("{RECORD_PREFIX}{replay_key}")
    }

    /// The `503` of a pending settlement: `Retry-After`, the transaction when known.
    pub(crate) fn unknown_response(&self, transaction: Option<&str>) -> PaymentHttpResponse {
        let mut body = serde_json::json!({ "error": SETTLEMENT_PENDING_ERROR, "status": "pending" });
        if let Some(tx) = transaction.filter(|t| !t.is_empty()) {
            body["transaction"] = serde_json::Value::String(tx.to_owned());
        }
        PaymentHttpResponse::new(StatusCode::SERVICE_UNAVAILABLE, "application/json", body.to_string())
            .with_header("retry-after", &self.retry_after.as_secs().to_string())
            .with_header("cache-control", "no-store")
    }

    /// Records a payment whose settlement outcome is unknown and, with a transaction, starts
    /// its background reconciliation. Returns the 503 to send.
    pub(crate) async fn record_unknown(
        &self,
        server: &X402ResourceServer,
        replay_key: &str,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
        transaction: Option<String>,
    ) -> PaymentHttpResponse {
        let transaction = transaction.filter(|t| !t.is_empty());
        let record = SettlementRecord::Pending {
            payload: Box::new(payload.clone()),
            requirements: Box::new(requirements.clone()),
            transaction: transaction.clone(),
            since: unix_now(),
        };
        let key = Self::key(replay_key);
        match self.store.swap(&key, None, Some(&record.encode()), self.expiry(0)).await {
            Ok(true) => {
                tracing::warn!(
                    key = %replay_key,
                    transaction = transaction.as_deref().unwrap_or_default(),
                    "x402: settlement outcome unknown; recorded as pending (503, Retry-After)"
                );
                if transaction.is_some() {
                    self.spawn_reconciler(server.clone(), key);
                }
            }
            Ok(false) => {
                tracing::error!(key = %replay_key, "x402: a settlement record already exists for this payment")
            }
            Err(e) => tracing::error!(
                error = %e,
                key = %replay_key,
                "x402: cannot record a pending settlement; its replay key stays reserved"
            ),
        }
        self.unknown_response(transaction.as_deref())
    }

    /// A retry of the payment `replay_key` names: decided from its record (reconciled on
    /// demand when still pending).
    pub(crate) async fn on_retry(
        &self,
        server: &X402ResourceServer,
        replay_key: &str,
        payload: &PaymentPayload,
    ) -> Retry {
        let key = Self::key(replay_key);
        for _ in 0..4 {
            let (held, record) = match self.read(&key).await {
                Ok(Some(found)) => found,
                Ok(None) => return Retry::NotRecorded,
                Err(e) => {
                    tracing::warn!(error = %e, "x402: settlement record store failed");
                    return Retry::Unavailable;
                }
            };
            // Bound to the exact payment: any other payload under this key is a plain replay.
            if record.payload().is_some_and(|p| p != payload) {
                return Retry::NotRecorded;
            }
            let now = unix_now();
            let (response, recorded) = match record {
                SettlementRecord::Delivered { .. } => return Retry::NotRecorded,
                SettlementRecord::Failed { response, .. } => return Retry::Failed(response),
                SettlementRecord::Delivering { lease_until, .. } if lease_until >= now => return Retry::Busy,
                SettlementRecord::Delivering { response, payload, .. }
                | SettlementRecord::Settled { response, payload } => (response, payload),
                SettlementRecord::Pending { .. } => match self.advance(server, &key, &held, record, true).await {
                    Ok(Some(SettlementRecord::Pending { transaction, .. })) => return Retry::Unknown(transaction),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "x402: settlement record store failed");
                        return Retry::Unavailable;
                    }
                },
            };
            let claimed = SettlementRecord::Delivering {
                response: response.clone(),
                payload: recorded.clone(),
                lease_until: now + DELIVERY_LEASE_SECONDS,
            }
            .encode();
            match self.store.swap(&key, Some(&held), Some(&claimed), self.expiry(0)).await {
                Ok(true) => return Retry::Deliver(Claim { key, held: claimed, response, payload: recorded }),
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "x402: settlement record store failed");
                    return Retry::Unavailable;
                }
            }
        }
        Retry::Busy
    }

    /// The claimed payment's response was delivered (status below 400).
    pub(crate) async fn delivered(&self, claim: &Claim) {
        let done = SettlementRecord::Delivered { response: claim.response.clone() }.encode();
        if let Err(e) = self.store.swap(&claim.key, Some(&claim.held), Some(&done), self.expiry(0)).await {
            tracing::warn!(error = %e, "x402: cannot mark a settled payment delivered");
        }
    }

    /// The claimed payment's handler failed: the next retry may take the delivery.
    pub(crate) async fn undeliver(&self, claim: &Claim) {
        let back = SettlementRecord::Settled { response: claim.response.clone(), payload: claim.payload.clone() };
        if let Err(e) = self.store.swap(&claim.key, Some(&claim.held), Some(&back.encode()), self.expiry(0)).await {
            tracing::warn!(error = %e, "x402: cannot hand a settled payment's delivery back");
        }
    }

    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, SettlementRecord)>, ReplayStoreError> {
        let Some(bytes) = self.store.get(key).await? else { return Ok(None) };
        match SettlementRecord::decode(&bytes) {
            Some(record) => Ok(Some((bytes, record))),
            None => Err(ReplayStoreError::Backend("undecodable settlement record".into())),
        }
    }

    /// One reconciliation step of the pending record `held`; stores and returns the record as
    /// it is afterwards (`None`: it disappeared).
    async fn advance(
        &self,
        server: &X402ResourceServer,
        key: &str,
        held: &[u8],
        record: SettlementRecord,
        resubmit: bool,
    ) -> Result<Option<SettlementRecord>, ReplayStoreError> {
        let SettlementRecord::Pending { payload, requirements, transaction, since } = record else {
            return Ok(Some(record));
        };
        let next = match server.reconcile(&payload, &requirements, transaction.as_deref(), resubmit).await {
            Reconciled::Settled(response) => {
                tracing::info!(transaction = %response.transaction, "x402: pending settlement settled");
                let response = super::upto::with_settled_amount(&requirements, response);
                SettlementRecord::Settled { response, payload }
            }
            Reconciled::Failed(response) => {
                tracing::info!(transaction = %response.transaction, "x402: pending settlement failed");
                SettlementRecord::Failed { response, payload }
            }
            Reconciled::Unknown { transaction: found } => {
                if found.is_none() || found == transaction {
                    return Ok(Some(SettlementRecord::Pending { payload, requirements, transaction, since }));
                }
                SettlementRecord::Pending { payload, requirements, transaction: found, since }
            }
        };
        if self.store.swap(key, Some(held), Some(&next.encode()), self.expiry(0)).await? {
            Ok(Some(next))
        } else {
            // Another instance moved it on: read what it wrote.
            Ok(self.read(key).await?.map(|(_, r)| r))
        }
    }

    /// Reconciles `key` in the background until its outcome is known, it disappears, or the
    /// server is dropped (status queries only; never a re-submission).
    fn spawn_reconciler(&self, server: X402ResourceServer, key: String) {
        let mut alive = self.alive.subscribe();
        // The task holds its own (never signalled) sender: it stops when the server's is dropped.
        let this = PendingSettlements {
            store: Arc::clone(&self.store),
            retention: self.retention,
            retry_after: self.retry_after,
            alive: Arc::new(tokio::sync::watch::channel(()).0),
        };
        tokio::spawn(async move {
            let mut wait = BACKOFF_FIRST;
            loop {
                tokio::select! {
                    _ = alive.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                match this.read(&key).await {
                    Ok(Some((held, record @ SettlementRecord::Pending { .. }))) => {
                        match this.advance(&server, &key, &held, record, false).await {
                            Ok(Some(SettlementRecord::Pending { .. })) => {}
                            Ok(_) => return,
                            Err(e) => tracing::debug!(error = %e, "x402: background reconciliation: store failed"),
                        }
                    }
                    Ok(_) => return,
                    Err(e) => tracing::debug!(error = %e, "x402: background reconciliation: store failed"),
                }
                wait = (wait * 2).min(BACKOFF_MAX);
            }
        });
    }

    fn response_key(replay_key: &str) -> String {
        format!("x402:response:{replay_key}")
    }

    /// Records the handler's response to the payment `replay_key` names (for its retries).
    pub(crate) async fn store_response(&self, replay_key: &str, response: &crate::web::RecordedResponse) {
        let key = Self::response_key(replay_key);
        let bytes = serde_json::to_vec(response).unwrap_or_default();
        let current = match self.store.get(&key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "x402: cannot record a response; a retry will run the handler again");
                return;
            }
        };
        if let Err(e) = self.store.swap(&key, current.as_deref(), Some(&bytes), self.expiry(0)).await {
            tracing::warn!(error = %e, "x402: cannot record a response; a retry will run the handler again");
        }
    }

    /// The handler's recorded response to the payment `replay_key` names, if any.
    pub(crate) async fn recorded_response(&self, replay_key: &str) -> Option<crate::web::RecordedResponse> {
        let bytes = self.store.get(&Self::response_key(replay_key)).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// One sweep over every pending record of the store (status queries only).
    pub(crate) async fn sweep(
        &self,
        server: &X402ResourceServer,
        limit: usize,
    ) -> Result<SweepReport, ReplayStoreError> {
        let mut report = SweepReport::default();
        for key in self.store.keys(RECORD_PREFIX, limit).await? {
            let Some((held, record)) = self.read(&key).await? else { continue };
            if !matches!(record, SettlementRecord::Pending { .. }) {
                continue;
            }
            report.examined += 1;
            match self.advance(server, &key, &held, record, false).await? {
                Some(SettlementRecord::Pending { .. }) => report.still_pending += 1,
                Some(SettlementRecord::Failed { .. }) => report.failed += 1,
                Some(_) => report.settled += 1,
                None => {}
            }
        }
        Ok(report)
    }
}

/// What one sweep of [`X402HttpServer::reconcile_pending`](super::X402HttpServer::reconcile_pending) found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Pending records looked at.
    pub examined: usize,
    /// Of them, now known settled.
    pub settled: usize,
    /// Of them, now known failed.
    pub failed: usize,
    /// Of them, still unknown.
    pub still_pending: usize,
}
