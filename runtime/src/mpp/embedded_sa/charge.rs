//! The charge half of the embedded SA: `charge/settle` and `charge/verifyHash`.

use super::{EmbeddedSa, Parsed, RecordedTransfer, bad_request, is_eip3009, parse_authorization, sa_codes, sa_error};
use crate::evm::{self, TransferWithAuthorization, U256, transaction_hash};
use crate::mpp::wire::{CHARGE_INTENT, EVM_METHOD, MAX_SPLITS};
use crate::okx::sa::{
    ChargeAuthorization, ChargeReceipt, ChargeSettleRequest, ChargeVerifyHashRequest, EIP3009_AUTHORIZATION_TYPE,
    SaError, TransferAuthorization,
};

fn primary_as_transfer(a: &ChargeAuthorization) -> TransferAuthorization {
    TransferAuthorization {
        auth_type: a.auth_type.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        value: a.value.clone(),
        valid_after: a.valid_after.clone(),
        valid_before: a.valid_before.clone(),
        nonce: a.nonce.clone(),
        signature: a.signature.clone(),
    }
}

impl EmbeddedSa {
    /// Synchronous core of [`SaClient::settle`](crate::okx::sa::SaClient::settle): checks and settles atomically.
    pub fn settle_now(&self, req: &ChargeSettleRequest) -> Result<ChargeReceipt, SaError> {
        let now = self.now();
        let (request, domain, _) = self.check_echo(&req.challenge, now, CHARGE_INTENT)?;
        let auth = &req.payload.authorization;

        // 3. shape
        let splits = auth.splits.as_deref().unwrap_or_default();
        if !is_eip3009(&auth.auth_type) || splits.iter().any(|s| !is_eip3009(&s.auth_type)) {
            return Err(bad_request(format!("authorization type must be {EIP3009_AUTHORIZATION_TYPE}")));
        }
        if splits.len() > MAX_SPLITS {
            return Err(sa_error(
                sa_codes::TOO_MANY_SPLITS,
                format!("{} splits, at most {MAX_SPLITS} are allowed", splits.len()),
            ));
        }
        let primary = parse_authorization(&primary_as_transfer(auth), "authorization")?;
        let parsed_splits = splits
            .iter()
            .enumerate()
            .map(|(i, s)| parse_authorization(s, &format!("authorization.splits[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let splits_total = parsed_splits
            .iter()
            .try_fold(U256::ZERO, |acc, s| acc.checked_add(s.message.value))
            .filter(|total| *total <= request.amount)
            .ok_or_else(|| sa_error(sa_codes::SPLITS_EXCEED_AMOUNT, "splits exceed the amount"))?;

        // 4. binding to the request
        let payer = primary.message.from;
        if primary.message.to != request.recipient {
            return Err(bad_request("authorization.to is not the recipient"));
        }
        if primary.message.value.checked_add(splits_total) != Some(request.amount) {
            return Err(bad_request(format!(
                "authorization value {} plus splits {splits_total} is not the amount {}",
                primary.message.value, request.amount
            )));
        }
        if parsed_splits.len() != request.splits.len() {
            return Err(bad_request(format!(
                "{} splits authorized, the request has {}",
                parsed_splits.len(),
                request.splits.len()
            )));
        }
        for (i, (got, want)) in parsed_splits.iter().zip(&request.splits).enumerate() {
            if got.message.to != want.recipient || got.message.value != want.amount {
                return Err(bad_request(format!("split {i} does not match the request")));
            }
            if got.message.from != payer {
                return Err(bad_request(format!("split {i} is not from the payer")));
            }
        }
        Self::check_source(&req.source, &request, payer)?;

        // 5. signatures
        let all: Vec<&Parsed> = std::iter::once(&primary).chain(&parsed_splits).collect();
        for p in &all {
            let signed =
                p.signature.as_deref().is_some_and(|s| evm::verify_transfer_authorization(&domain, &p.message, s));
            if !signed {
                return Err(sa_error(sa_codes::INVALID_SIGNATURE, "signature does not match the payer"));
            }
        }

        // 6. validity windows
        let now_u = U256::from(now);
        for p in &all {
            if now_u < p.message.validAfter {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization not yet valid"));
            }
            if now_u > p.message.validBefore {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
            }
        }

        // 7–8. nonces and balance, then settle — under one lock.
        let batch: Vec<TransferWithAuthorization> = all.iter().map(|p| p.message.clone()).collect();
        let mut state = self.lock();
        state
            .ledger
            .apply_authorizations(request.currency, &batch)
            .map_err(|e| sa_error(sa_codes::MALFORMED_CREDENTIAL, e.to_string()))?;
        let reference = transaction_hash(request.chain_id, request.currency, payer, primary.message.nonce);
        let receipt = ChargeReceipt {
            method: EVM_METHOD.to_owned(),
            reference: reference.clone(),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            chain_id: request.chain_id.to_string(),
            challenge_id: req.challenge.id.clone(),
            external_id: None,
        };
        if let Ok(hash) = evm::parse_bytes32(&reference) {
            let record = RecordedTransfer {
                chain_id: request.chain_id,
                token: request.currency,
                from: payer,
                to: primary.message.to,
                value: primary.message.value,
            };
            state.transactions.insert(hash, record);
            state.hash_used_by.insert(hash, req.challenge.id.clone());
        }
        state.charges.push(receipt.clone());
        tracing::debug!(payer = %payer, amount = %request.amount, "embedded SA settled a charge");
        Ok(receipt)
    }

    /// Synchronous core of [`SaClient::verify_hash`](crate::okx::sa::SaClient::verify_hash).
    pub fn verify_hash_now(&self, req: &ChargeVerifyHashRequest) -> Result<ChargeReceipt, SaError> {
        let now = self.now();
        let (request, _, _) = self.check_echo(&req.challenge, now, CHARGE_INTENT)?;
        if !request.splits.is_empty() {
            return Err(bad_request("a charge with splits cannot be paid by transaction hash"));
        }
        let hash = evm::parse_bytes32(&req.payload.hash).map_err(|e| bad_request(format!("payload.hash: {e}")))?;
        let mut state = self.lock();
        let Some(tx) = state.transactions.get(&hash).cloned() else {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "transaction not confirmed"));
        };
        let already = state.hash_used_by.get(&hash);
        if already.is_some_and(|id| *id != req.challenge.id) {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "transaction already used for another challenge"));
        }
        let repeat = already.is_some();
        if tx.chain_id != request.chain_id || tx.token != request.currency {
            return Err(bad_request("transaction is not on the requested chain and token"));
        }
        if tx.to != request.recipient {
            return Err(bad_request("transaction does not pay the recipient"));
        }
        if tx.value != request.amount {
            return Err(bad_request(format!("transaction value {} is not the amount {}", tx.value, request.amount)));
        }
        Self::check_source(&req.source, &request, tx.from)?;
        let receipt = ChargeReceipt {
            method: EVM_METHOD.to_owned(),
            reference: evm::to_hex(hash),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            chain_id: request.chain_id.to_string(),
            challenge_id: req.challenge.id.clone(),
            external_id: None,
        };
        if !repeat {
            state.hash_used_by.insert(hash, req.challenge.id.clone());
            state.charges.push(receipt.clone());
        }
        Ok(receipt)
    }
}
