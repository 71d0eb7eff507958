//! Settlement and close: the merchant's [`SessionIntent::settle_channel`] and
//! [`SessionIntent::close_channel`], and the buyer's `settle` and `close` actions.

use super::voucher::{Presented, VoucherCheck};
use super::{
    FinalVoucher, STATUS_CLOSED, STATUS_OPEN, SessionIntent, SessionResult, Step, TOP_UP_KEY_TTL_SECONDS,
    canonical_channel, check_binding, check_receipt_channel, final_voucher, invalid_payload, method, now_unix,
    sa_failure, signature_failure, store_failure, update_failure,
};
use crate::evm::{self, B256};
use crate::evm::{sign_close_authorization, sign_settle_authorization, verify_voucher_signature};
use crate::mpp::credential::Credential;
use crate::mpp::method::PayError;
use crate::mpp::store::{ChannelState, ChannelStore as _, UpdateError, UpdateOutcome};
use crate::okx::sa::{
    EvmPaymentError, SessionClosePayload, SessionCloseRequest, SessionSettlePayload, SessionSettleRequest,
};
use serde_json::{Map, Value};

impl SessionIntent {
    /// The stored state of `channel_id` (canonical), or `ChannelNotFoundError`.
    pub(super) async fn stored_channel(&self, channel_id: &str) -> Result<ChannelState, PayError> {
        let stored = self.store.get(channel_id).await.map_err(store_failure)?;
        Ok(stored.ok_or_else(|| method(EvmPaymentError::ChannelNotFound("channel not found".into())))?.value)
    }

    /// Settles the channel's highest voucher on chain (merchant-initiated; the channel stays
    /// open): signs a `SettleAuthorization` over (channel, highest, nonce, deadline) and posts
    /// `session/settle`. Local state is unchanged. Errors: no signer ⇒ `InvalidPayloadError`
    /// "payee signer not configured"; unknown channel ⇒ `ChannelNotFoundError`; finalized ⇒
    /// `ChannelClosedError`; no voucher yet ⇒ `InvalidPayloadError`.
    pub async fn settle_channel(&self, channel_id: &str) -> Result<SessionResult, PayError> {
        let signer = self.payee_signer()?;
        let (channel_b256, channel_id) = canonical_channel(channel_id)?;
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        if state.highest_voucher_amount == 0 {
            return Err(invalid_payload("settle: no voucher to settle"));
        }
        let nonce = self.nonces.allocate(self.payee_address(signer.as_ref()), channel_b256);
        let cumulative = state.highest_voucher_amount;
        let payee_signature = sign_settle_authorization(
            signer.as_ref(),
            &self.channel_domain(),
            channel_b256,
            cumulative,
            nonce,
            self.deadline,
        )
        .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(format!("cannot sign: {e}"))))?;
        let req = SessionSettleRequest {
            payload: SessionSettlePayload {
                channel_id: channel_id.clone(),
                cumulative_amount: cumulative.to_string(),
                voucher_signature: state.highest_voucher_signature.clone(),
                payee_signature,
                nonce: nonce.to_string(),
                deadline: self.deadline.to_string(),
            },
        };
        let receipt =
            crate::metrics::sa_call("session_settle", self.sa.session_settle(&req)).await.map_err(sa_failure)?;
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        Ok(self.result(&channel_id, cumulative, STATUS_OPEN, receipt.reference))
    }

    /// The buyer's `settle` action. Python settles for any `channelId`, so anyone with a free
    /// challenge could make the merchant sign and post settlements at will. Here the credential
    /// must carry the channel's highest voucher (`cumulativeAmount` + `signature`), signed by
    /// the channel's signer, on a route the channel pays for; and each highest voucher is
    /// settled at most once this way (key `mpp:settle:{channel}:{amount}` in the replay store,
    /// forgotten again on a definite SA refusal).
    pub(super) async fn settle_by_buyer(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
    ) -> Result<SessionResult, PayError> {
        let FinalVoucher { channel_b256, channel_id, amount, signature } =
            final_voucher(&credential.payload, "settle")?;
        self.payee_signer()?;
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized || state.close_requested_at != 0 {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        check_binding(&state, request)?;
        if amount == 0 || amount != state.highest_voucher_amount {
            return Err(invalid_payload("settle: the voucher is not the channel's highest"));
        }
        let expected = if state.authorized_signer.is_empty() { &state.payer } else { &state.authorized_signer };
        let signer = evm::parse_address(expected)
            .map_err(|_| PayError::Unknown(EvmPaymentError::InternalSA("stored signer is not an address".into())))?;
        verify_voucher_signature(&self.channel_domain(), channel_b256, amount, signature, signer)
            .map_err(signature_failure)?;
        let key = format!("mpp:settle:{channel_id}:{amount}");
        let fresh = self
            .replay
            .insert_if_absent(&key, now_unix().saturating_add(TOP_UP_KEY_TTL_SECONDS))
            .await
            .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
        if !fresh {
            return Err(invalid_payload("settle: this voucher was already settled"));
        }
        let settled = self.settle_channel(&channel_id).await;
        if let Err(PayError::Method(_)) = &settled {
            self.forget(&key).await;
        }
        settled
    }

    /// Closes the channel at its highest voucher (merchant-initiated): marks it
    /// (`closeRequestedAt`, no more vouchers), signs a `CloseAuthorization`, posts
    /// `session/close` and deletes the channel from the store. Errors as
    /// [`Self::settle_channel`] (a channel without vouchers closes at 0).
    pub async fn close_channel(&self, channel_id: &str) -> Result<SessionResult, PayError> {
        self.payee_signer()?;
        let (channel_b256, channel_id) = canonical_channel(channel_id)?;
        let now = now_unix().max(1);
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                let mut next = s.clone();
                next.close_requested_at = now;
                Ok(Some(next))
            })
            .await;
        let state = Self::closing_state(outcome)?;
        self.finish_close(channel_b256, &channel_id, state).await
    }

    fn closing_state(outcome: Result<UpdateOutcome, UpdateError<PayError>>) -> Result<ChannelState, PayError> {
        match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => Ok(v.value),
            Ok(UpdateOutcome::Missing) => Err(method(EvmPaymentError::ChannelNotFound("channel not found".into()))),
            Err(e) => Err(update_failure(e)),
        }
    }

    async fn finish_close(
        &self,
        channel_b256: B256,
        channel_id: &str,
        state: ChannelState,
    ) -> Result<SessionResult, PayError> {
        let signer = self.payee_signer()?;
        let cumulative = state.highest_voucher_amount;
        let nonce = self.nonces.allocate(self.payee_address(signer.as_ref()), channel_b256);
        let signed = sign_close_authorization(
            signer.as_ref(),
            &self.channel_domain(),
            channel_b256,
            cumulative,
            nonce,
            self.deadline,
        );
        let outcome = match signed {
            Ok(payee_signature) => {
                let req = SessionCloseRequest {
                    payload: SessionClosePayload {
                        channel_id: channel_id.to_owned(),
                        cumulative_amount: cumulative.to_string(),
                        voucher_signature: state.highest_voucher_signature.clone(),
                        payee_signature,
                        nonce: nonce.to_string(),
                        deadline: self.deadline.to_string(),
                    },
                };
                crate::metrics::sa_call("session_close", self.sa.session_close(&req))
                    .await
                    .map_err(sa_failure)
                    .and_then(|r| check_receipt_channel(&r, channel_b256, channel_id).map(|()| r))
            }
            Err(e) => Err(method(EvmPaymentError::InternalSA(format!("cannot sign: {e}")))),
        };
        match outcome {
            Ok(receipt) => {
                if let Err(e) = self.store.delete(channel_id).await {
                    tracing::error!(error = %e, channel = %channel_id, "mpp session: closed on the SA but not deleted");
                }
                Ok(self.result(channel_id, cumulative, STATUS_CLOSED, receipt.reference))
            }
            Err(e @ PayError::Unknown(_)) => Err(e),
            Err(e) => {
                // A definite refusal: the channel is usable again.
                let reopened = self
                    .store
                    .update(channel_id, |s| {
                        let mut next = s.clone();
                        next.close_requested_at = 0;
                        Ok::<_, PayError>(Some(next))
                    })
                    .await;
                if let Err(err) = reopened {
                    tracing::warn!(error = %err, channel = %channel_id, "mpp session: cannot clear the close mark");
                }
                Err(e)
            }
        }
    }

    /// Client-initiated close with a final voucher.
    pub(super) async fn close(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
    ) -> Result<SessionResult, PayError> {
        let FinalVoucher { channel_b256, channel_id, amount, signature } = final_voucher(&credential.payload, "close")?;
        self.payee_signer()?;
        let mut check = VoucherCheck::new(self, channel_b256, amount, signature, Presented::Final);
        let now = now_unix().max(1);
        let outcome = self
            .store
            .update(&channel_id, |s| -> Step {
                if s.finalized {
                    return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
                }
                check_binding(s, request)?;
                let mut next = check.accept(s)?;
                next.close_requested_at = now;
                Ok(Some(next))
            })
            .await;
        let state = Self::closing_state(outcome)?;
        self.finish_close(channel_b256, &channel_id, state).await
    }
}
