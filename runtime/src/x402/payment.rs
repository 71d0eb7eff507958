//! [`X402Payment`]: a verified x402 payment, as the handler sees it.

use super::pending::Claim;
use super::route::RouteConfig;
use super::types::{PaymentPayload, PaymentRequirements, SettleResponse};
use std::fmt;
use std::sync::Arc;

/// A verified payment, available to the handler. Cheap to clone (shared).
#[derive(Clone)]
pub struct X402Payment(pub(super) Arc<PaymentParts>);

pub(super) struct PaymentParts {
    pub(super) payload: PaymentPayload,
    pub(super) requirements: PaymentRequirements,
    pub(super) payer: Option<String>,
    pub(super) version: u32,
    pub(super) replay_key: Option<String>,
    pub(super) route: Arc<RouteConfig>,
    /// A retry delivering a payment settled earlier (nothing is settled again).
    pub(super) claim: Option<Claim>,
    /// The payment identifier this request holds (`payment-identifier` extension).
    pub(super) identified: Option<Identified>,
    /// A resend of a settled payment identifier: its recorded settlement (nothing is settled).
    pub(super) recorded: Option<SettleResponse>,
    /// Set while completing: a retry may need the handler's response (its settlement became
    /// unknown, or it settled under a payment identifier), so the response is recorded.
    pub(super) keep_response: std::sync::atomic::AtomicBool,
    /// The handler's usage report (`upto`; refuses reports on other schemes).
    pub(super) upto: super::upto::UptoCharge,
}

/// A payment identifier held by a request: its record's key and what it is bound to.
#[derive(Clone, Debug)]
pub(super) struct Identified {
    pub(super) key: String,
    pub(super) binding: String,
}

impl fmt::Debug for X402Payment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X402Payment")
            .field("payload", &self.0.payload)
            .field("requirements", &self.0.requirements)
            .field("payer", &self.0.payer)
            .field("version", &self.0.version)
            .field("replay_key", &self.0.replay_key)
            .field("route", &self.0.route)
            .field("claim", &self.0.claim)
            .field("identified", &self.0.identified)
            .field("recorded", &self.0.recorded)
            .finish()
    }
}

impl X402Payment {
    /// The payer address (from the facilitator's verification).
    pub fn payer(&self) -> Option<&str> {
        self.0.payer.as_deref()
    }

    /// The seller's requirements the payment matched.
    pub fn requirements(&self) -> &PaymentRequirements {
        &self.0.requirements
    }

    /// The buyer's payload (v1 payments are lifted to the v2 shape).
    pub fn payload(&self) -> &PaymentPayload {
        &self.0.payload
    }

    /// 1 when paid with a legacy `X-PAYMENT` v1 header, else 2.
    pub fn x402_version(&self) -> u32 {
        self.0.version
    }

    /// The `upto` charge of this payment: what the handler reports it used. On a payment of
    /// another scheme every report is refused
    /// ([`UptoChargeError::NotUpto`](super::UptoChargeError::NotUpto)).
    pub fn upto_charge(&self) -> super::upto::UptoCharge {
        self.0.upto.clone()
    }
}

/// What the payment identifier of a request decides before verification.
pub(super) enum Identify {
    /// The route does not use the extension, or the payload has no id (optional): go on.
    No,
    /// A new id, now held by this request: go on; it ends with the payment.
    Fresh(Identified),
    /// An id whose settlement outcome was unknown: go on (the payment's record decides).
    Resume(Identified),
    /// Settled before: answer with the recorded settlement, no verification, no settlement.
    Replay(SettleResponse),
}

/// Where a payment identifier's record goes when its payment completes.
pub(super) enum IdEnd<'a> {
    /// The settlement's outcome is unknown.
    Pending,
    /// Settled with this response.
    Settled(&'a SettleResponse),
}
