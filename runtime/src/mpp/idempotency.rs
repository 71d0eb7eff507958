//! Exactly once for MPP: the `Idempotency-Key` of paid requests (charge and session), and the
//! retries of a charge whose Settlement Agent outcome was unknown.
//!
//! * **Unknown outcomes.** When the SA's answer to a charge is unknown (timeout, 5xx, a dropped
//!   connection), the buyer gets `503` with `Retry-After` — never a new challenge, which would
//!   invite a second authorization — and the credential is recorded as pending (keyed by its
//!   challenge id, bound to the exact credential). A retry with the **same** credential
//!   re-submits it to the SA (its signed transfer is single-use: it cannot move money twice);
//!   only a success counts — then the handler runs and the receipt is sent, once. Anything else
//!   leaves it pending (503 again): an SA refusal cannot tell "the first attempt settled" from
//!   "nothing moved".
//! * **`Idempotency-Key`** (1–255 visible ASCII characters). Bound to the request's method, path
//!   and exact credential. Same key, same binding: a settled charge (or committed session
//!   voucher) is answered from the record — the handler runs again and the recorded
//!   `Payment-Receipt` is sent, with no second SA call or reservation; the original still in
//!   flight, or its outcome unknown → `503` with `Retry-After`. Same key, another request →
//!   `409`. A refused payment frees the key.

use super::credential::Credential;
use super::receipt::Receipt;
use crate::replay::{RecordStore, ReplayStoreError, unix_now};
use crate::web::{PaymentHttpResponse, RequestContext};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::sync::Arc;

/// The request header carrying an idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The `error` of the `409` sent when an idempotency key is reused for another request.
pub const IDEMPOTENCY_CONFLICT_ERROR: &str = "This Idempotency-Key was used for another request";
/// The `error` of the `400` sent for a malformed idempotency key.
pub const IDEMPOTENCY_KEY_INVALID_ERROR: &str = "The Idempotency-Key must be 1-255 visible ASCII characters";
/// The `error` of the `503` sent while a payment's outcome is unknown (or its first request is
/// still being processed): retry with the same credential after `Retry-After` seconds.
pub const PAYMENT_PENDING_ERROR: &str = "Payment outcome is pending; retry with the same credential";
/// The `Retry-After` of those `503`s, in seconds.
pub const MPP_RETRY_AFTER_SECONDS: u64 = 2;

/// How long records are kept.
const RETENTION_SECONDS: u64 = 3600;
/// How long a first request holds its idempotency key before a resend may take it over.
const IN_FLIGHT_LEASE_SECONDS: u64 = 300;

/// A record (JSON in the record store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum Record {
    /// The first request is being processed.
    #[serde(rename_all = "camelCase")]
    InFlight { binding: String, lease_until: u64 },
    /// The outcome is unknown. `resumable`: a resend goes on to the credential's own retry (a
    /// charge, re-submitted); otherwise (a session commit) it gets 503.
    #[serde(rename_all = "camelCase")]
    Pending {
        binding: String,
        #[serde(default)]
        resumable: bool,
    },
    /// Paid: the `Payment-Receipt` answers every resend (idempotency keys).
    #[serde(rename_all = "camelCase")]
    Settled { binding: String, receipt: String },
    /// A pending charge resolved and delivered (credential records): later copies are replays.
    #[serde(rename_all = "camelCase")]
    Delivered { binding: String },
}

impl Record {
    fn binding(&self) -> &str {
        match self {
            Self::InFlight { binding, .. }
            | Self::Pending { binding, .. }
            | Self::Settled { binding, .. }
            | Self::Delivered { binding } => binding,
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `503` of an unknown (or still processing) outcome: `Retry-After`, a problem body.
pub(crate) fn pending_response() -> PaymentHttpResponse {
    let body = serde_json::json!({ "error": PAYMENT_PENDING_ERROR, "status": "pending" });
    PaymentHttpResponse::new(StatusCode::SERVICE_UNAVAILABLE, "application/json", body.to_string())
        .with_header("retry-after", &MPP_RETRY_AFTER_SECONDS.to_string())
        .with_header("cache-control", "no-store")
}

fn unavailable(e: &dyn std::fmt::Display) -> PaymentHttpResponse {
    tracing::warn!(error = %e, "mpp: record store failed");
    PaymentHttpResponse::json_error(StatusCode::SERVICE_UNAVAILABLE, "Payment processing is temporarily unavailable")
}

fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The MPP records of one coordinator.
#[derive(Clone)]
pub(crate) struct Records {
    store: Arc<dyn RecordStore>,
    realm: Arc<str>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("realm", &self.realm).finish_non_exhaustive()
    }
}

/// What an `Idempotency-Key` decides before the credential is verified.
pub(crate) enum Keyed {
    /// No key: go on.
    No,
    /// The key is held by this request: go on; it ends with the payment ([`KeyHold`]).
    Hold(KeyHold),
    /// Paid before: answer with the recorded receipt (the handler runs again; nothing is
    /// charged).
    Replay(Box<(Credential, Receipt)>),
}

/// What a retry of a charge credential whose outcome was unknown gets.
pub(crate) enum ChargeRetry {
    /// Not recorded (or delivered already): the challenge is simply used.
    NotRecorded,
    /// Recorded pending: re-submit it; the result goes to [`Records::charge_resolved`].
    Resubmit(String),
}

impl Records {
    pub(crate) fn new(store: Arc<dyn RecordStore>, realm: &str) -> Self {
        Self { store, realm: Arc::from(realm) }
    }

    fn expiry() -> u64 {
        unix_now().saturating_add(RETENTION_SECONDS)
    }

    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, Record)>, ReplayStoreError> {
        let Some(bytes) = self.store.get(key).await? else { return Ok(None) };
        match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Some((bytes, record))),
            Err(_) => Err(ReplayStoreError::Backend("undecodable MPP record".into())),
        }
    }

    /// The `Idempotency-Key` of a paid request (before verification); `Err` is the answer
    /// (400, 409, 503).
    pub(crate) async fn keyed(&self, ctx: &RequestContext, authorization: &str) -> Result<Keyed, PaymentHttpResponse> {
        let Some(idem) = ctx.header(IDEMPOTENCY_KEY_HEADER) else { return Ok(Keyed::No) };
        if idem.is_empty() || idem.len() > MAX_IDEMPOTENCY_KEY_LEN || !idem.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PaymentHttpResponse::json_error(StatusCode::BAD_REQUEST, IDEMPOTENCY_KEY_INVALID_ERROR));
        }
        let key = format!("mpp:idem:{}:{}", self.realm, digest(&[idem.as_bytes()]));
        let query = ctx.url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let binding =
            digest(&[ctx.method.as_str().as_bytes(), ctx.path.as_bytes(), query.as_bytes(), authorization.as_bytes()]);
        let hold = KeyHold { records: self.clone(), key: key.clone(), binding: binding.clone() };
        for _ in 0..3 {
            let found = self.read(&key).await.map_err(|e| unavailable(&e))?;
            let in_flight =
                Record::InFlight { binding: binding.clone(), lease_until: unix_now() + IN_FLIGHT_LEASE_SECONDS };
            let Some((held, record)) = found else {
                match self.store.swap(&key, None, Some(&in_flight.encode()), Self::expiry()).await {
                    Ok(true) => return Ok(Keyed::Hold(hold)),
                    Ok(false) => continue,
                    Err(e) => return Err(unavailable(&e)),
                }
            };
            if record.binding() != binding {
                tracing::info!("mpp: Idempotency-Key reused for another request");
                return Err(PaymentHttpResponse::json_error(StatusCode::CONFLICT, IDEMPOTENCY_CONFLICT_ERROR));
            }
            return match record {
                Record::Settled { receipt, .. } => {
                    let (Ok(credential), Ok(receipt)) =
                        (Credential::from_authorization_header(authorization), Receipt::from_payment_receipt(&receipt))
                    else {
                        return Err(unavailable(&"undecodable recorded receipt"));
                    };
                    Ok(Keyed::Replay(Box::new((credential, receipt))))
                }
                Record::InFlight { lease_until, .. } if lease_until < unix_now() => {
                    // The first request's instance gave up or died: take it over.
                    match self.store.swap(&key, Some(&held), Some(&in_flight.encode()), Self::expiry()).await {
                        Ok(true) => Ok(Keyed::Hold(hold)),
                        Ok(false) => continue,
                        Err(e) => Err(unavailable(&e)),
                    }
                }
                // A charge of unknown outcome: the resend goes on and is re-submitted.
                Record::Pending { resumable: true, .. } => Ok(Keyed::Hold(hold)),
                Record::InFlight { .. } | Record::Pending { .. } | Record::Delivered { .. } => Err(pending_response()),
            };
        }
        Err(pending_response())
    }

    fn charge_key(&self, challenge_id: &str) -> String {
        format!("mpp:charge:{}:{challenge_id}", self.realm)
    }

    /// A charge whose SA outcome is unknown: recorded pending, bound to the exact credential.
    pub(crate) async fn charge_unknown(&self, challenge_id: &str, authorization: &str) {
        let record = Record::Pending { binding: digest(&[authorization.as_bytes()]), resumable: true };
        let key = self.charge_key(challenge_id);
        match self.store.swap(&key, None, Some(&record.encode()), Self::expiry()).await {
            Ok(true) => {
                tracing::warn!(challenge = challenge_id, "mpp: charge outcome unknown; recorded as pending (503)")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "mpp: cannot record a pending charge; its challenge stays consumed"),
        }
    }

    /// A credential whose challenge is already used: a retry of a pending charge, or a replay.
    pub(crate) async fn charge_retry(
        &self,
        challenge_id: &str,
        authorization: &str,
    ) -> Result<ChargeRetry, ReplayStoreError> {
        let key = self.charge_key(challenge_id);
        match self.read(&key).await? {
            Some((_, Record::Pending { binding, .. })) if binding == digest(&[authorization.as_bytes()]) => {
                Ok(ChargeRetry::Resubmit(key))
            }
            _ => Ok(ChargeRetry::NotRecorded),
        }
    }

    /// A re-submitted pending charge settled: delivered now, later copies are replays. Returns
    /// whether this request is the one to deliver it.
    pub(crate) async fn charge_resolved(&self, key: &str, authorization: &str) -> bool {
        let binding = digest(&[authorization.as_bytes()]);
        let pending = Record::Pending { binding: binding.clone(), resumable: true }.encode();
        let delivered = Record::Delivered { binding }.encode();
        match self.store.swap(key, Some(&pending), Some(&delivered), Self::expiry()).await {
            Ok(swapped) => swapped,
            Err(e) => {
                tracing::warn!(error = %e, "mpp: cannot mark a resolved charge delivered");
                false
            }
        }
    }
}

/// An `Idempotency-Key` held by a request; it ends with the payment.
#[derive(Clone, Debug)]
pub(crate) struct KeyHold {
    records: Records,
    key: String,
    binding: String,
}

impl KeyHold {
    async fn swap_to(&self, next: Option<Record>) {
        let store = &self.records.store;
        for _ in 0..3 {
            let current = match self.records.read(&self.key).await {
                Ok(Some((bytes, record))) if record.binding() == self.binding => bytes,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "mpp: cannot update an Idempotency-Key record");
                    return;
                }
            };
            let new = next.as_ref().map(Record::encode);
            match store.swap(&self.key, Some(&current), new.as_deref(), Records::expiry()).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "mpp: cannot update an Idempotency-Key record");
                    return;
                }
            }
        }
    }

    /// Paid: resends are answered with `receipt`.
    pub(crate) async fn settled(&self, receipt: &Receipt) {
        let record = Record::Settled { binding: self.binding.clone(), receipt: receipt.to_payment_receipt() };
        self.swap_to(Some(record)).await;
    }

    /// The outcome is unknown. `resumable` (a charge): a resend goes on to the credential's own
    /// retry; otherwise (a session commit) resends get 503.
    pub(crate) async fn pending(&self, resumable: bool) {
        self.swap_to(Some(Record::Pending { binding: self.binding.clone(), resumable })).await;
    }

    /// Refused or not charged: the key is free again.
    pub(crate) async fn forget(&self) {
        self.swap_to(None).await;
    }
}
