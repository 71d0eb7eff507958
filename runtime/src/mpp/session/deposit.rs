//! The deposit actions: `open` (a new channel) and `topUp` (a larger deposit).

use super::{
    STATUS_OPEN, SessionIntent, SessionResult, TOP_UP_KEY_TTL_SECONDS, amount_text, canonical_channel, check_binding,
    check_receipt_channel, invalid_payload, method, normalise_signature, now_unix, parse_amount, receipt_deposit,
    sa_failure, store_failure, text, transfer, update_failure,
};
use crate::evm::verify_voucher_signature;
use crate::evm::{self, Address};
use crate::mpp::credential::{Credential, payer_from_did};
use crate::mpp::method::PayError;
use crate::mpp::store::{ChannelState, ChannelStore as _, UpdateOutcome};
use crate::okx::sa::{
    EvmPaymentError, SaChallengeEcho, SessionOpenPayload, SessionOpenRequest, SessionReceipt, SessionTopUpPayload,
    SessionTopUpRequest,
};
use serde_json::{Map, Value};

impl SessionIntent {
    pub(super) async fn open(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
    ) -> Result<SessionResult, PayError> {
        let p = &credential.payload;
        let channel = text(p, "channelId").ok_or_else(|| invalid_payload("open: missing required field channelId"))?;
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let payload_type = text(p, "type").unwrap_or("transaction");
        let authorization = p.get("authorization").and_then(Value::as_object);
        let source = match credential.source.as_deref().filter(|s| !s.is_empty()) {
            Some(did) => Some(
                payer_from_did(did)
                    .map(|d| evm::to_hex(d.address))
                    .ok_or_else(|| invalid_payload("open: source is not a did:pkh:eip155 DID"))?,
            ),
            None => None,
        };
        let depositor = match (payload_type, authorization.and_then(|a| text(a, "from"))) {
            ("transaction", Some(from)) => Some(
                evm::parse_address(from)
                    .map(evm::to_hex)
                    .map_err(|_| invalid_payload("open: authorization.from is not an address"))?,
            ),
            _ => None,
        };
        // The vouchers of a channel redeem only when signed for the escrow's payer (the
        // depositor): a `source` naming anyone else is refused here; for a deposit by `hash` the
        // SA's channel status must confirm the payer (below).
        let payer = match (source, depositor) {
            (Some(source), Some(depositor)) if source != depositor => {
                tracing::warn!(%source, %depositor, "mpp session: open whose source is not the depositor");
                return Err(invalid_payload("open: source is not the depositor"));
            }
            (_, Some(depositor)) => depositor,
            (Some(source), None) => source,
            (None, None) => return Err(invalid_payload("open: cannot determine the payer")),
        };
        // The buyer's claims of the deposit: they must agree with each other, and (after the
        // SA call) with what the SA reports as escrowed.
        let claimed_deposit = amount_text(p, "deposit").map(|d| parse_amount(&d, "deposit")).transpose()?;
        let authorized_value = authorization
            .and_then(|a| amount_text(a, "value"))
            .map(|v| parse_amount(&v, "authorization.value"))
            .transpose()?;
        if let (Some(claim), Some(value)) = (claimed_deposit, authorized_value)
            && claim != value
            && !crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit)
        {
            return Err(invalid_payload("open: deposit does not match the authorization value"));
        }
        let deposit_hint = claimed_deposit.or(authorized_value);
        if let Some(auth) = authorization {
            self.check_deposit_authorization(auth, None)?;
        }
        let signer = match text(p, "authorizedSigner") {
            Some(s) => {
                let a =
                    evm::parse_address(s).map_err(|_| invalid_payload("open: authorizedSigner is not an address"))?;
                if a == Address::ZERO { payer.clone() } else { evm::to_hex(a) }
            }
            None => payer.clone(),
        };
        // The optional initial voucher, verified before anything happens on chain.
        let initial_sig =
            text(p, "voucherSignature").or_else(|| (payload_type == "hash").then(|| text(p, "signature")).flatten());
        let cumulative = match amount_text(p, "cumulativeAmount") {
            Some(c) => parse_amount(&c, "cumulativeAmount")?,
            None => 0,
        };
        if let Some(sig) = initial_sig {
            let expected = evm::parse_address(&signer).map_err(|_| invalid_payload("open: bad signer"))?;
            verify_voucher_signature(&self.channel_domain(), channel_b256, cumulative, sig, expected)
                .map_err(|e| method(EvmPaymentError::InvalidSignature(e.to_string())))?;
            if deposit_hint.is_some_and(|d| cumulative > d) {
                return Err(method(EvmPaymentError::AmountExceedsDeposit(format!(
                    "voucher {cumulative} exceeds the deposit"
                ))));
            }
        }
        if self.store.get(&channel_id).await.map_err(store_failure)?.is_some() {
            return Err(invalid_payload("open: channel already exists"));
        }
        let req = SessionOpenRequest {
            challenge: SaChallengeEcho::from(&credential.challenge),
            payload: SessionOpenPayload {
                payload_type: payload_type.to_owned(),
                channel_id: channel_id.clone(),
                authorization: authorization.map(transfer),
                signature: text(p, "signature").map(str::to_owned),
                hash: text(p, "hash").map(str::to_owned),
                salt: text(p, "salt").unwrap_or("").to_owned(),
                authorized_signer: text(p, "authorizedSigner").map(str::to_owned),
            },
            source: credential.source.clone().unwrap_or_default(),
        };
        let receipt: SessionReceipt =
            crate::metrics::sa_call("session_open", self.sa.session_open(&req)).await.map_err(sa_failure)?;
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        let deposit = if crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit) {
            match deposit_hint {
                Some(d) => d,
                None => receipt_deposit(&receipt, &channel_id).unwrap_or(0),
            }
        } else {
            // The deposit is what the SA reports as escrowed, never the buyer's claim.
            let escrowed = receipt_deposit(&receipt, &channel_id)?;
            if deposit_hint.is_some_and(|claim| claim != escrowed) {
                tracing::error!(
                    channel = %channel_id, claimed = ?deposit_hint, escrowed,
                    "mpp session: the deposit claimed at open is not what the SA escrowed; channel not recorded"
                );
                return Err(invalid_payload("open: the deposit does not match the escrowed amount"));
            }
            if initial_sig.is_some() && cumulative > escrowed {
                tracing::error!(channel = %channel_id, cumulative, escrowed, "mpp session: initial voucher above the deposit");
                return Err(method(EvmPaymentError::AmountExceedsDeposit(
                    "the initial voucher exceeds the deposit".into(),
                )));
            }
            escrowed
        };
        if authorization.is_none() {
            // A deposit by transaction hash: no signed authorization names the payer, so the
            // SA's view of the channel must.
            self.confirm_payer(&channel_id, &payer).await?;
        }
        let token = request.get("currency").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        let payee = request.get("recipient").and_then(Value::as_str).unwrap_or(&self.recipient).to_owned();
        let state = ChannelState {
            token,
            authorized_signer: signer,
            deposit,
            highest_voucher_amount: if initial_sig.is_some() { cumulative } else { 0 },
            highest_voucher_signature: initial_sig.map(normalise_signature).unwrap_or_default(),
            min_voucher_delta: self.min_voucher_delta,
            ..ChannelState::new(&channel_id, self.chain_id, self.escrow_text(), payer, &payee)
        };
        if !self.store.put_if_absent(&channel_id, &state).await.map_err(store_failure)? {
            tracing::error!(channel = %channel_id, "mpp session: channel opened on the SA but already in the store");
            return Err(invalid_payload("open: channel already exists"));
        }
        Ok(self.result(&channel_id, 0, STATUS_OPEN, receipt.reference))
    }

    pub(super) async fn top_up(
        &self,
        credential: &Credential,
        request: &Map<String, Value>,
    ) -> Result<SessionResult, PayError> {
        let p = &credential.payload;
        let (Some(channel), Some(additional_text)) = (text(p, "channelId"), amount_text(p, "additionalDeposit")) else {
            return Err(invalid_payload("topUp: missing required field"));
        };
        let (channel_b256, channel_id) = canonical_channel(channel)?;
        let additional = parse_amount(&additional_text, "additionalDeposit")?;
        let authorization = p.get("authorization").and_then(Value::as_object);
        if let Some(auth) = authorization {
            self.check_deposit_authorization(auth, Some(&additional_text))?;
        }
        let state = self.stored_channel(&channel_id).await?;
        if state.finalized || state.close_requested_at != 0 {
            return Err(method(EvmPaymentError::ChannelClosed("channel is closed".into())));
        }
        check_binding(&state, request)?;
        // A deposit transaction counts at most once per channel, whatever the SA answers to a
        // duplicate (a session challenge may be reused).
        let deposit_key = match (text(p, "hash"), authorization) {
            (Some(hash), _) => Some(format!("mpp:topup:{channel_id}:{}", hash.to_ascii_lowercase())),
            (None, Some(auth)) => text(auth, "nonce").map(|nonce| {
                let from = text(auth, "from").unwrap_or("").to_ascii_lowercase();
                format!("mpp:topup:{channel_id}:{from}:{}", nonce.to_ascii_lowercase())
            }),
            (None, None) => None,
        };
        if let Some(key) = &deposit_key {
            let expires = now_unix().saturating_add(TOP_UP_KEY_TTL_SECONDS);
            let fresh = self
                .replay
                .insert_if_absent(key, expires)
                .await
                .map_err(|e| PayError::Unknown(EvmPaymentError::InternalSA(e.to_string())))?;
            if !fresh {
                tracing::warn!(channel = %channel_id, "mpp session: top-up transaction presented again");
                return Err(invalid_payload("topUp: this deposit was already counted"));
            }
        }
        let req = SessionTopUpRequest {
            challenge: SaChallengeEcho::from(&credential.challenge),
            payload: SessionTopUpPayload {
                payload_type: text(p, "type").unwrap_or("transaction").to_owned(),
                channel_id: channel_id.clone(),
                authorization: authorization.map(transfer),
                signature: text(p, "signature").map(str::to_owned),
                hash: text(p, "hash").map(str::to_owned),
                additional_deposit: additional_text.clone(),
                top_up_salt: text(p, "topUpSalt").map(str::to_owned),
            },
            source: credential.source.clone().unwrap_or_default(),
        };
        let receipt = match crate::metrics::sa_call("session_top_up", self.sa.session_top_up(&req)).await {
            Ok(r) => r,
            Err(e) => {
                let e = sa_failure(e);
                if let (PayError::Method(_), Some(key)) = (&e, &deposit_key) {
                    // A definite refusal: nothing was deposited, the transaction may come again.
                    self.forget(key).await;
                }
                return Err(e);
            }
        };
        check_receipt_channel(&receipt, channel_b256, &channel_id)?;
        let reverted = crate::reverts::is_reverted(crate::reverts::Fix::F1SessionDeposit);
        // The SA reports the channel's total deposit: it must include this top-up on top of
        // what was counted before the call (an idempotent answer to a duplicate does not).
        let reported = if reverted { None } else { Some(receipt_deposit(&receipt, &channel_id)?) };
        if let Some(total) = reported {
            let expected = state.deposit.checked_add(additional);
            if expected.is_none_or(|e| total < e) {
                tracing::error!(
                    channel = %channel_id, before = state.deposit, additional, reported = total,
                    "mpp session: the SA's deposit does not include the top-up; not counted"
                );
                return Err(PayError::Unknown(EvmPaymentError::InternalSA("the SA did not confirm the top-up".into())));
            }
        }
        let outcome = self
            .store
            .update(&channel_id, |s| {
                let mut next = s.clone();
                next.deposit = match reported {
                    // Deposits only grow; a concurrent top-up may already be counted.
                    Some(total) => s.deposit.max(total),
                    None => s.deposit.checked_add(additional).ok_or_else(|| invalid_payload("deposit overflows"))?,
                };
                Ok::<_, PayError>(Some(next))
            })
            .await;
        match outcome {
            Ok(UpdateOutcome::Updated(v) | UpdateOutcome::Unchanged(v)) => {
                Ok(self.result(&channel_id, v.value.highest_voucher_amount, STATUS_OPEN, receipt.reference))
            }
            Ok(UpdateOutcome::Missing) => {
                tracing::error!(channel = %channel_id, "mpp session: topped up on the SA but the channel is gone");
                Err(PayError::Unknown(EvmPaymentError::InternalSA("channel disappeared during top-up".into())))
            }
            Err(e) => {
                tracing::error!(channel = %channel_id, "mpp session: topped up on the SA but the store failed");
                Err(match update_failure(e) {
                    PayError::Method(e) => PayError::Unknown(e),
                    other => other,
                })
            }
        }
    }
}
