//! Metered streams on a session channel (the SSE transport draft applied to the `evm` session):
//! [`SessionIntent::verify_stream`] starts, resumes or feeds a stream, and [`ChannelMeter`] is
//! its [`EventMeter`] over the channel store.
//!
//! * A `voucher` under a challenge id the channel has no stream for **starts** the stream of
//!   that challenge (its record, [`StreamCounts`](crate::mpp::StreamCounts), starts at 0).
//! * With `Last-Event-ID: k` it **resumes** it on a new connection: `k` may not exceed the
//!   events delivered; the events up to the delivered count are re-sent free. The resume raises
//!   the stream's generation: an older connection still running (dropped, not yet noticed) can
//!   only finish its last event — committed if the buyer has it (`≤ k`), released otherwise —
//!   and never reserves another, so the new connection gets every voucher.
//! * Without `Last-Event-ID`, under a challenge id that already has a stream, it is a
//!   **companion** voucher: it raises the channel's balance and wakes the paused stream; the
//!   handler does not run.
//!
//! Nothing is charged when the voucher is accepted: each event reserves its price before it is
//! sent. The voucher may equal the channel's highest voucher (no new money), or raise it (its
//! signature verified, the minimum increase and the deposit enforced as for any voucher).

use super::voucher::{Presented, VoucherCheck};
use super::{
    SessionIntent, amount_text, canonical_channel, check_binding, invalid_payload, method, parse_amount, text,
    update_failure,
};
use crate::evm::U256;
use crate::mpp::credential::Credential;
use crate::mpp::metering::{Books, EventMeter, MeterError, MeterStep, StreamStart};
use crate::mpp::method::{PayError, SessionGrant};
use crate::mpp::receipt::Receipt;
use crate::mpp::store::{ChannelState, ChannelStore, UpdateError, UpdateOutcome};
use crate::mpp::wire::{EVM_METHOD, SESSION_INTENT};
use crate::okx::sa::EvmPaymentError;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// The paused streams of one process, by channel: a voucher or top-up accepted here wakes them
/// at once (streams on other instances see it at their next store poll).
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    channels: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    /// The notifier of `channel_id` (created on first use).
    fn of(&self, channel_id: &str) -> Arc<Notify> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(channel_id.to_owned()).or_default())
    }

    /// Wakes the streams of `channel_id` waiting in this process.
    pub(crate) fn wake(&self, channel_id: &str) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get(channel_id) {
            n.notify_waiters();
        }
    }

    /// Forgets `channel_id`'s notifier when no stream holds it any more.
    fn forget_unused(&self, channel_id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(channel_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(channel_id);
        }
    }
}

/// What a stream voucher turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Start,
    Resume,
    Companion,
}

impl SessionIntent {
    pub(super) async fn verify_stream_credential(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
        price: U256,
        resume: Option<u64>,
    ) -> Result<SessionGrant, PayError> {
        let p = &credential.payload;
        match p.get("action").and_then(Value::as_str).unwrap_or("") {
            "voucher" => {}
            "topUp" => {
                let granted = self.top_up(credential, request).await?;
                self.wakers.wake(&granted.channel_id);
                return Ok(SessionGrant::Management(granted.management_response(&credential.challenge.id)));
            }
            _ => return crate::mpp::method::SessionHandler::verify(self, credential, request, U256::ZERO).await,
        }
        let (Some(channel), Some(amount_text), Some(signature)) =
            (text(p, "channelId"), amount_text(p, "cumulativeAmount"), text(p, "signature"))
        else {
            return Err(invalid_payload("voucher: missing required fields"));
        };
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let amount = parse_amount(&amount_text, "cumulativeAmount")?;
        let price = u128::try_from(price)
            .map_err(|_| method(EvmPaymentError::BadRequest("the per-event price exceeds uint128".into())))?;
        let challenge_id = credential.challenge.id.clone();
        // A stream charges per event, never per request: the same voucher may come again (a
        // resume, a repeated companion) without being charged, so no replay key is needed.
        let mut check =
            VoucherCheck::new(self, channel_b256, amount, signature, Presented::Payment { replay_key_fresh: true });
        let mut role = Role::Start;
        let (mut delivered, mut generation) = (0, 0);
        let outcome = self
            .store
            .update(&channel_id, |s| -> Result<Option<ChannelState>, PayError> {
                if s.finalized || s.close_requested_at != 0 {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                check_binding(s, request)?;
                let mut next = check.accept(s)?;
                match (resume, next.streams.get(&challenge_id)) {
                    (Some(k), Some(r)) => {
                        let Some(r) = next.streams.resume(&challenge_id, k) else {
                            return Err(method(EvmPaymentError::BadRequest(format!(
                                "Last-Event-ID {k} is beyond the {} events this stream delivered",
                                r.delivered
                            ))));
                        };
                        (role, delivered, generation) = (Role::Resume, r.delivered, r.generation);
                    }
                    (Some(_), None) => return Err(invalid_payload("no stream to resume under this challenge")),
                    (None, Some(r)) => (role, delivered, generation) = (Role::Companion, r.delivered, r.generation),
                    (None, None) => {
                        if !next.streams.start(&challenge_id) {
                            return Err(invalid_payload("the stream could not be started"));
                        }
                        (role, delivered, generation) = (Role::Start, 0, 0);
                    }
                }
                Ok((next != *s).then_some(next))
            })
            .await;
        let state = match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => v.value,
            Ok(UpdateOutcome::Missing) => {
                return Err(method(EvmPaymentError::ChannelNotFound("channel not found".into())));
            }
            Err(e) => return Err(update_failure(e)),
        };
        self.wakers.wake(&channel_id);
        let receipt = stream_receipt(&state, &challenge_id, delivered, price);
        tracing::info!(
            channel = %channel_id, challenge = %challenge_id, ?role, delivered, accepted = state.highest_voucher_amount,
            "mpp stream: voucher accepted"
        );
        if role == Role::Companion {
            let mut body = Map::new();
            body.insert("status".into(), Value::String("ok".into()));
            body.insert("channelId".into(), Value::String(channel_id));
            body.insert("acceptedCumulative".into(), Value::String(state.highest_voucher_amount.to_string()));
            return Ok(SessionGrant::Companion { receipt, body: Value::Object(body) });
        }
        let notify = self.wakers.of(&channel_id);
        let meter = ChannelMeter {
            store: Arc::clone(&self.store),
            wakers: Arc::clone(&self.wakers),
            notify: Some(notify),
            channel_id: channel_id.clone(),
            challenge_id: challenge_id.clone(),
            price,
            min_voucher_delta: self.min_voucher_delta,
            generation,
        };
        Ok(SessionGrant::Stream(Box::new(StreamStart {
            receipt,
            meter: Arc::new(meter),
            challenge_id,
            channel_id,
            price,
            resume_from: resume.unwrap_or(0),
            delivered,
            config: self.stream_config,
        })))
    }
}

/// The `Payment-Receipt` of a stream's initial response or companion request.
fn stream_receipt(state: &ChannelState, challenge_id: &str, delivered: u64, price: u128) -> Receipt {
    let mut receipt = Receipt::success(state.channel_id.clone(), EVM_METHOD, None);
    let mut extra = Map::new();
    extra.insert("intent".into(), Value::String(SESSION_INTENT.into()));
    extra.insert("channelId".into(), Value::String(state.channel_id.clone()));
    extra.insert("challengeId".into(), Value::String(challenge_id.to_owned()));
    extra.insert("cumulativeAmount".into(), Value::String(state.highest_voucher_amount.to_string()));
    extra.insert("deposit".into(), Value::String(state.deposit.to_string()));
    extra.insert("spent".into(), Value::String(u128::from(delivered).saturating_mul(price).to_string()));
    extra.insert("units".into(), Value::from(delivered));
    receipt.extra = Some(extra);
    receipt
}

fn books(s: &ChannelState, challenge_id: &str, configured_min: u128) -> Books {
    Books {
        min_voucher_delta: if configured_min > 0 { configured_min } else { s.min_voucher_delta },
        highest: s.highest_voucher_amount,
        deposit: s.deposit,
        spent: s.spent,
        reserved: s.reserved,
        delivered: s.streams.delivered(challenge_id).unwrap_or(0),
    }
}

/// A stream's [`EventMeter`] over the session's channel store.
pub(crate) struct ChannelMeter {
    store: Arc<dyn ChannelStore>,
    wakers: Arc<Wakers>,
    /// Held while the stream lives (dropped first, so the registry can forget it).
    notify: Option<Arc<Notify>>,
    channel_id: String,
    challenge_id: String,
    price: u128,
    /// The intent's minimum voucher increase (0: the channel's own).
    min_voucher_delta: u128,
    /// This connection's generation of the stream (raised by each resume).
    generation: u64,
}

impl fmt::Debug for ChannelMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelMeter")
            .field("channel_id", &self.channel_id)
            .field("challenge_id", &self.challenge_id)
            .field("price", &self.price)
            .finish_non_exhaustive()
    }
}

impl Drop for ChannelMeter {
    fn drop(&mut self) {
        self.notify = None;
        self.wakers.forget_unused(&self.channel_id);
    }
}

#[derive(Clone, Copy)]
enum Found {
    Reserved,
    Free,
    Superseded,
    NeedVoucher,
    Committed,
    Closed,
}

fn meter_failure<E: fmt::Debug>(e: UpdateError<E>) -> MeterError {
    match e {
        UpdateError::Rejected(e) => MeterError(format!("{e:?}")),
        UpdateError::Store(e) => MeterError(format!("channel store: {e}")),
    }
}

#[async_trait::async_trait]
impl EventMeter for ChannelMeter {
    async fn step(&self, commit: Option<u64>, reserve: Option<u64>) -> Result<MeterStep, MeterError> {
        let (price, challenge, generation) = (self.price, self.challenge_id.as_str(), self.generation);
        let mut found = Found::Committed;
        let mut charged = None;
        let outcome = self
            .store
            .update(&self.channel_id, |s| -> Result<Option<ChannelState>, &'static str> {
                let mut next = s.clone();
                let record = next.streams.get(challenge).ok_or("the stream is not on the channel")?;
                if let Some(index) = commit {
                    // An event handed over by a connection that a newer one replaced, above the
                    // buyer's Last-Event-ID, never reached the buyer: released, not charged.
                    let reached = record.generation == generation || index <= record.resumed_from;
                    charged = Some(reached);
                    if reached {
                        if !next.commit(price) {
                            return Err("the event's reservation is not on the channel");
                        }
                        if !next.streams.deliver(challenge, index) {
                            return Err("the stream is not on the channel");
                        }
                    } else if !next.release(price) {
                        return Err("the event's reservation is not on the channel");
                    }
                }
                found = match reserve {
                    _ if next.finalized || next.close_requested_at != 0 => Found::Closed,
                    None => Found::Committed,
                    Some(_) if record.generation != generation => Found::Superseded,
                    Some(index) if index <= next.streams.delivered(challenge).unwrap_or(0) => Found::Free,
                    Some(_) if next.reserve(price) => Found::Reserved,
                    Some(_) => Found::NeedVoucher,
                };
                Ok((next != *s).then_some(next))
            })
            .await
            .map_err(meter_failure)?;
        let state = match outcome {
            UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v) => v.value,
            // Deleted by a close, which settled the highest voucher: a commit asked for is covered.
            UpdateOutcome::Missing => return Ok(MeterStep::Closed(Books::default())),
        };
        match charged {
            Some(true) => crate::metrics::record_stream_events("charged", 1),
            Some(false) => crate::metrics::record_stream_events("released", 1),
            None => {}
        }
        if matches!(found, Found::Free) {
            crate::metrics::record_stream_events("resent", 1);
        }
        let b = books(&state, challenge, self.min_voucher_delta);
        Ok(match found {
            Found::Reserved => MeterStep::Reserved(b),
            Found::Free => MeterStep::Free(b),
            Found::Superseded => MeterStep::Superseded(b),
            Found::NeedVoucher => MeterStep::NeedVoucher(b),
            Found::Committed => MeterStep::Committed(b),
            Found::Closed => MeterStep::Closed(b),
        })
    }

    async fn release(&self) -> Result<(), MeterError> {
        let price = self.price;
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                Ok::<_, ()>(next.release(price).then_some(next))
            })
            .await
            .map_err(meter_failure)?;
        if let UpdateOutcome::Unchanged(_) = outcome {
            tracing::warn!(channel = %self.channel_id, "mpp stream: reservation to release not found");
        } else {
            crate::metrics::record_stream_events("released", 1);
        }
        Ok(())
    }

    async fn abandon(&self) {
        let challenge = self.challenge_id.as_str();
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                Ok::<_, ()>(next.streams.forget_unused(challenge).then_some(next))
            })
            .await;
        if let Err(e) = outcome {
            tracing::warn!(error = ?e, channel = %self.channel_id, "mpp stream: cannot forget an unused stream");
        }
    }

    async fn changed(&self, within: Duration) {
        match &self.notify {
            Some(n) => {
                let _ = tokio::time::timeout(within, n.notified()).await;
            }
            None => tokio::time::sleep(within).await,
        }
    }
}
