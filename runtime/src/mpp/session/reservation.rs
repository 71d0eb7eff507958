//! [`Reservation`]: the price a served voucher reserved, committed or released after the
//! handler.

use crate::mpp::method::{PayError, PendingCharge};
use crate::mpp::store::{ChannelStore, UpdateError, UpdateOutcome};
use crate::okx::sa::EvmPaymentError;
use crate::replay::ReplayStore;
use std::fmt;
use std::sync::Arc;

/// A voucher's reserved price, committed or released after the handler. Dropped without either
/// (its request was dropped before the handler ran, or nobody finished it), it releases itself in
/// a detached task: every reservation ends in exactly one of commit or release (F5).
pub(super) struct Reservation {
    store: Arc<dyn ChannelStore>,
    replay: Arc<dyn ReplayStore>,
    channel_id: String,
    replay_key: String,
    cost: u128,
    /// Set once [`PendingCharge::commit`] or [`PendingCharge::release`] started.
    finished: bool,
}

impl Reservation {
    /// The reservation of `cost` on `channel_id`, made with the voucher's `replay_key`.
    pub(super) fn new(
        store: Arc<dyn ChannelStore>,
        replay: Arc<dyn ReplayStore>,
        channel_id: String,
        replay_key: String,
        cost: u128,
    ) -> Self {
        Self { store, replay, channel_id, replay_key, cost, finished: false }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.finished || crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel) {
            return;
        }
        tracing::info!(channel = %self.channel_id, "mpp session: reservation dropped unfinished; releasing it");
        let orphan = Box::new(Reservation {
            store: Arc::clone(&self.store),
            replay: Arc::clone(&self.replay),
            channel_id: std::mem::take(&mut self.channel_id),
            replay_key: std::mem::take(&mut self.replay_key),
            cost: self.cost,
            finished: false,
        });
        self.finished = true;
        crate::completion::detach(orphan.release());
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").field("channel_id", &self.channel_id).field("cost", &self.cost).finish()
    }
}

#[async_trait::async_trait]
impl PendingCharge for Reservation {
    /// `reserved −= cost`, `spent += cost`, `units += 1`. A channel closed (deleted) in the
    /// meantime counts as committed: the close settled the highest voucher, which covers this
    /// request.
    async fn commit(mut self: Box<Self>) -> Result<(), PayError> {
        self.finished = true;
        let cost = self.cost;
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                if next.commit(cost) {
                    Ok(Some(next))
                } else {
                    Err(PayError::Unknown(EvmPaymentError::InternalSA("reservation not found on the channel".into())))
                }
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Missing) => {
                tracing::warn!(channel = %self.channel_id, "mpp session: channel closed before a reservation was committed");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(UpdateError::Rejected(e)) => Err(e),
            Err(UpdateError::Store(e)) => {
                tracing::error!(error = %e, channel = %self.channel_id, "mpp session: cannot commit a reservation");
                Err(PayError::Unknown(EvmPaymentError::InternalSA(format!("channel store unavailable: {e}"))))
            }
        }
    }

    /// `reserved −= cost`, and the voucher's replay key is forgotten (the request may be
    /// retried with the same voucher and challenge). Failures are logged.
    async fn release(mut self: Box<Self>) {
        self.finished = true;
        let cost = self.cost;
        let outcome = self
            .store
            .update(&self.channel_id, |s| {
                let mut next = s.clone();
                Ok::<_, ()>(next.release(cost).then_some(next))
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Unchanged(_)) => {
                tracing::warn!(channel = %self.channel_id, "mpp session: reservation to release not found");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = ?e, channel = %self.channel_id, "mpp session: cannot release a reservation")
            }
        }
        if let Err(e) = self.replay.remove(&self.replay_key).await {
            tracing::warn!(error = %e, "mpp session: cannot forget a voucher replay key");
        }
    }
}
