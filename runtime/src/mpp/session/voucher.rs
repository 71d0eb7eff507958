//! The `voucher` action (the hot path: no SA call) and [`VoucherCheck`], the acceptance check
//! of a presented voucher that the `voucher` and `close` actions share.

use super::reservation::Reservation;
use super::{
    SessionIntent, Step, VOUCHER_KEY_MIN_TTL_SECONDS, VOUCHER_KEY_TTL_SECONDS, amount_text, canonical_channel,
    check_binding, invalid_payload, method, normalise_signature, now_unix, parse_amount, signature_failure, text,
    update_failure,
};
use crate::evm::{self, B256, U256};
use crate::evm::{ChannelDomain, verify_voucher_signature};
use crate::mpp::credential::Credential;
use crate::mpp::expiry::parse_rfc3339;
use crate::mpp::method::{PayError, PendingCharge, SessionGrant};
use crate::mpp::receipt::Receipt;
use crate::mpp::store::{ChannelState, ChannelStore as _, UpdateOutcome};
use crate::mpp::wire::{EVM_METHOD, SESSION_INTENT};
use crate::okx::sa::EvmPaymentError;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What a presented voucher is for, which decides how it may compare with the channel's
/// highest voucher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Presented {
    /// A voucher paying a request: it raises the highest voucher, or *is* it (same amount and
    /// signature: a replay, charged from the surplus; its signature was verified when it was
    /// stored). `replay_key_fresh` is false when this voucher was already presented under the
    /// same challenge (refused: "voucher replayed").
    Payment {
        /// The voucher's replay key was recorded by this request.
        replay_key_fresh: bool,
    },
    /// A buyer's final voucher (`close`): at least the highest voucher; its signature is always
    /// verified.
    Final,
}

/// The acceptance check of a presented voucher against a channel's state: within the deposit,
/// monotonic, at least the minimum increase, signed by the channel's signer. It runs inside a
/// [`ChannelStore::update`](crate::mpp::store::ChannelStore::update) closure, which may run again
/// on a newer state, so the signature's verification is kept per expected signer.
pub(super) struct VoucherCheck {
    domain: ChannelDomain,
    channel: B256,
    amount: u128,
    /// Lower-case `0x` hex.
    signature: String,
    /// The intent's minimum increase (0: the channel's stored one applies).
    configured_min: u128,
    presented: Presented,
    /// The verification result for the signer it was checked against.
    verified: Option<(String, Result<(), PayError>)>,
}

impl VoucherCheck {
    /// A check of the voucher (`amount`, `signature` as presented) for `channel`.
    pub(super) fn new(
        intent: &SessionIntent,
        channel: B256,
        amount: u128,
        signature: &str,
        presented: Presented,
    ) -> Self {
        Self {
            domain: intent.channel_domain(),
            channel,
            amount,
            signature: normalise_signature(signature),
            configured_min: intent.min_voucher_delta,
            presented,
            verified: None,
        }
    }

    /// Checks the voucher against `s` (closed-channel and route-binding checks are the
    /// caller's) and returns `s` with the voucher recorded as the highest when it raises it.
    pub(super) fn accept(&mut self, s: &ChannelState) -> Result<ChannelState, PayError> {
        let amount = self.amount;
        let highest = s.highest_voucher_amount;
        if amount > s.deposit {
            return Err(method(EvmPaymentError::AmountExceedsDeposit(format!(
                "voucher {amount} exceeds the deposit {}",
                s.deposit
            ))));
        }
        let replay = matches!(self.presented, Presented::Payment { .. })
            && amount == highest
            && self.signature == s.highest_voucher_signature;
        if !replay {
            match self.presented {
                Presented::Payment { .. } if amount <= highest => {
                    return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                        "voucher {amount} is not above the highest voucher {highest}"
                    ))));
                }
                Presented::Final if amount < highest => {
                    return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                        "voucher {amount} is below the highest voucher {highest}"
                    ))));
                }
                _ => {}
            }
            if amount > highest {
                let min = if self.configured_min > 0 { self.configured_min } else { s.min_voucher_delta };
                let delta = amount - highest;
                if min > 0 && delta < min {
                    return Err(method(EvmPaymentError::DeltaTooSmall(format!(
                        "voucher increase {delta} is below the minimum {min}"
                    ))));
                }
            }
        }
        if self.presented == (Presented::Payment { replay_key_fresh: false }) {
            // This voucher was already presented under this challenge (and is charged, or
            // being charged, by that request).
            return Err(invalid_payload("voucher replayed"));
        }
        if !replay {
            self.verify_signature(s)?;
        }
        let mut next = s.clone();
        if amount > highest {
            next.highest_voucher_amount = amount;
            next.highest_voucher_signature = self.signature.clone();
        }
        Ok(next)
    }

    /// The voucher's signature by the channel's signer (the authorized signer, else the payer),
    /// verified once per signer.
    fn verify_signature(&mut self, s: &ChannelState) -> Result<(), PayError> {
        let expected = if s.authorized_signer.is_empty() { &s.payer } else { &s.authorized_signer };
        if self.verified.as_ref().is_none_or(|(who, _)| who != expected) {
            let r = evm::parse_address(expected)
                .map_err(|_| PayError::Unknown(EvmPaymentError::InternalSA("stored signer is not an address".into())))
                .and_then(|a| {
                    verify_voucher_signature(&self.domain, self.channel, self.amount, &self.signature, a)
                        .map_err(signature_failure)
                });
            self.verified = Some((expected.clone(), r));
        }
        match &self.verified {
            Some((_, Err(e))) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}

impl SessionIntent {
    /// How long a voucher replay key lives: until the challenge expires (+60 s of clock skew;
    /// the coordinator refuses expired challenges), at least [`VOUCHER_KEY_MIN_TTL_SECONDS`]
    /// from now, or [`VOUCHER_KEY_TTL_SECONDS`] when the challenge has no `expires`.
    fn replay_expiry(credential: &Credential) -> u64 {
        let now = now_unix();
        credential
            .challenge
            .expires
            .as_deref()
            .and_then(|e| parse_rfc3339(e).ok())
            .and_then(|at| u64::try_from(at.unix_timestamp()).ok())
            .map_or_else(
                || now.saturating_add(VOUCHER_KEY_TTL_SECONDS),
                |at| at.saturating_add(60).max(now.saturating_add(VOUCHER_KEY_MIN_TTL_SECONDS)),
            )
    }

    /// Forgets a replay key (a refused or released voucher, a definitely refused deposit or
    /// settlement), so the same credential may be retried. Failures are logged.
    pub(super) async fn forget(&self, key: &str) {
        if let Err(e) = self.replay.remove(key).await {
            tracing::warn!(error = %e, "mpp session: cannot forget a voucher replay key");
        }
    }

    pub(super) async fn voucher(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        cost: U256,
    ) -> Result<SessionGrant, PayError> {
        let p = &credential.payload;
        let (Some(channel), Some(amount_text), Some(signature)) =
            (text(p, "channelId"), amount_text(p, "cumulativeAmount"), text(p, "signature"))
        else {
            return Err(invalid_payload("voucher: missing required fields"));
        };
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let amount = parse_amount(&amount_text, "cumulativeAmount")?;
        let cost = u128::try_from(self.per_request_cost.unwrap_or(cost))
            .map_err(|_| method(EvmPaymentError::BadRequest("the per-request cost exceeds uint128".into())))?;
        let key = format!("mpp:voucher:{channel_id}:{}:{amount}", credential.challenge.id);
        let inserted = self
            .replay
            .insert_if_absent(&key, Self::replay_expiry(credential))
            .await
            .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
        let presented = Presented::Payment { replay_key_fresh: inserted };
        let mut check = VoucherCheck::new(self, channel_b256, amount, signature, presented);
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized || s.close_requested_at != 0 {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                if !crate::reverts::is_reverted(crate::reverts::Fix::F9VoucherBinding) {
                    check_binding(s, request)?;
                }
                let mut next = check.accept(s)?;
                if cost > 0 && !next.reserve(cost) {
                    return Err(method(EvmPaymentError::InsufficientBalance(format!(
                        "available {} is below the price {cost}",
                        next.available()
                    ))));
                }
                Ok((next != *s).then_some(next))
            })
            .await;
        let state = match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => v.value,
            Ok(UpdateOutcome::Missing) => {
                if inserted {
                    self.forget(&key).await;
                }
                return Err(method(EvmPaymentError::ChannelNotFound("channel not found".into())));
            }
            Err(e) => {
                if inserted {
                    self.forget(&key).await;
                }
                return Err(update_failure(e));
            }
        };
        let mut receipt = Receipt::success(channel_id.clone(), EVM_METHOD, None);
        let mut extra = Map::new();
        extra.insert("intent".into(), Value::String(SESSION_INTENT.into()));
        extra.insert("channelId".into(), Value::String(channel_id.clone()));
        extra.insert("cumulativeAmount".into(), Value::String(state.highest_voucher_amount.to_string()));
        extra.insert("reserved".into(), Value::String(cost.to_string()));
        extra.insert("voucherCredit".into(), Value::String(state.available().to_string()));
        let deposit_available = state.deposit.saturating_sub(state.spent).saturating_sub(state.reserved);
        extra.insert("depositAvailable".into(), Value::String(deposit_available.to_string()));
        extra.insert("deposit".into(), Value::String(state.deposit.to_string()));
        receipt.extra = Some(extra);
        let pending: Option<Box<dyn PendingCharge>> = (cost > 0).then(|| {
            Box::new(Reservation::new(Arc::clone(&self.store), Arc::clone(&self.replay), channel_id, key, cost))
                as Box<dyn PendingCharge>
        });
        Ok(SessionGrant::Serve { receipt, pending })
    }
}
