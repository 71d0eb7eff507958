//! The escrow half of the embedded SA: payment channels opened, topped up, settled and
//! closed against an in-memory escrow account (`session/*`).

use super::{
    EmbeddedSa, EscrowChannel, Parsed, State, bad_request, is_eip3009, parse_authorization, sa_codes, sa_error,
};
use crate::evm::{self, Address, B256, Eip712Domain, TransferWithAuthorization, U256, keccak256, transaction_hash};
use crate::evm::{
    ChannelDomain, DEFAULT_ESCROW_CONTRACT, close_authorization_digest, recover_channel_signer,
    settle_authorization_digest, verify_voucher_signature,
};
use crate::mpp::charge_request::ChargeRequest;
use crate::mpp::wire::{EVM_METHOD, SESSION_INTENT};
use crate::okx::sa::{
    EIP3009_AUTHORIZATION_TYPE, SaChallengeEcho, SaError, SessionCloseRequest, SessionOpenRequest, SessionReceipt,
    SessionSettleRequest, SessionStatus, SessionTopUpRequest, TransferAuthorization,
};
use serde_json::{Map, Value};
use std::sync::MutexGuard;

/// `methodDetails.escrowContract` of a session request (the default escrow when absent).
fn request_escrow(raw: &Map<String, Value>) -> Result<Address, SaError> {
    match raw.get("methodDetails").and_then(|d| d.get("escrowContract")) {
        None | Some(Value::Null) => Ok(DEFAULT_ESCROW_CONTRACT),
        Some(Value::String(s)) => {
            evm::parse_address(s).map_err(|e| bad_request(format!("methodDetails.escrowContract: {e}")))
        }
        Some(_) => Err(bad_request("methodDetails.escrowContract must be a string")),
    }
}

/// A channel id: hex, at most 32 bytes, left-padded (as the session intent reads it).
fn parse_channel_id(text: &str) -> Result<B256, SaError> {
    crate::evm::channel_id_from_hex(text).map_err(|e| bad_request(format!("channelId: {e}")))
}

fn parse_u256(text: &str, field: &str) -> Result<U256, SaError> {
    evm::parse_uint256(text).map_err(|e| bad_request(format!("{field}: {e}")))
}

/// A channel deposit: who paid, how much, and the transaction hash when it was paid by hash.
struct Deposit {
    payer: Address,
    value: U256,
    hash: Option<B256>,
}

/// A deposit by hash: new, or a repeat on the same channel (answered with the first receipt).
enum HashDeposit {
    New(Deposit),
    Repeated(SessionReceipt),
}

/// What a session open or top-up funds a channel with: its challenge and its payload's fields.
struct DepositSource<'a> {
    challenge: &'a SaChallengeEcho,
    channel_id: &'a str,
    payload_type: &'a str,
    authorization: Option<&'a TransferAuthorization>,
    hash: Option<&'a str>,
}

/// The deposit source of an open or a top-up request (their payloads share these fields).
macro_rules! deposit_source_from {
    ($($request:ty),*) => {$(
        impl<'a> From<&'a $request> for DepositSource<'a> {
            fn from(req: &'a $request) -> Self {
                let p = &req.payload;
                Self {
                    challenge: &req.challenge,
                    channel_id: &p.channel_id,
                    payload_type: &p.payload_type,
                    authorization: p.authorization.as_ref(),
                    hash: p.hash.as_deref(),
                }
            }
        }
    )*};
}

deposit_source_from!(SessionOpenRequest, SessionTopUpRequest);

/// A checked session deposit: new, or a repeated hash answered with its first receipt.
enum Funding<'a> {
    New(Box<Funded<'a>>),
    Repeated(SessionReceipt),
}

/// A new deposit that passed the checks, with the locked state and, for a signed deposit, its
/// authorization.
struct Funded<'a> {
    now: u64,
    request: ChargeRequest,
    escrow: Address,
    id: B256,
    state: MutexGuard<'a, State>,
    signed: Option<Parsed>,
    deposit: Deposit,
}

/// The payload type of a deposit made by transaction hash.
const HASH_PAYLOAD_TYPE: &str = "hash";

/// What a settle or close authorizes, parsed.
struct PayeeAuthorization {
    channel_id: B256,
    cumulative: u128,
    nonce: U256,
    deadline: U256,
}

impl EmbeddedSa {
    /// Checks a deposit authorization (open or top-up) against the echo: the token's EIP-712
    /// signature by `from`, `to` = the escrow, value > 0, the validity window. Returns it.
    fn check_deposit(
        &self,
        auth: Option<&TransferAuthorization>,
        payload_type: &str,
        domain: &Eip712Domain,
        escrow: Address,
        now: u64,
    ) -> Result<Parsed, SaError> {
        if !(payload_type.is_empty() || payload_type == crate::okx::sa::TRANSACTION_PAYLOAD_TYPE) {
            // (`hash` deposits are handled by the callers.)
            return Err(bad_request(format!("payload type {payload_type:?} is not supported by the embedded SA")));
        }
        let auth = auth.ok_or_else(|| bad_request("payload.authorization is missing"))?;
        if !is_eip3009(&auth.auth_type) {
            return Err(bad_request(format!("authorization type must be {EIP3009_AUTHORIZATION_TYPE}")));
        }
        let parsed = parse_authorization(auth, "authorization")?;
        if parsed.message.to != escrow {
            return Err(bad_request("authorization.to is not the escrow contract"));
        }
        if parsed.message.value.is_zero() {
            return Err(bad_request("the deposit must be positive"));
        }
        let signed =
            parsed.signature.as_deref().is_some_and(|s| evm::verify_transfer_authorization(domain, &parsed.message, s));
        if !signed {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "signature does not match the payer"));
        }
        let now_u = U256::from(now);
        if now_u < parsed.message.validAfter {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization not yet valid"));
        }
        if now_u > parsed.message.validBefore {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
        }
        Ok(parsed)
    }

    fn session_receipt(now: u64, channel: &EscrowChannel, id: B256, reference: String) -> SessionReceipt {
        SessionReceipt {
            method: EVM_METHOD.to_owned(),
            intent: SESSION_INTENT.to_owned(),
            status: "success".to_owned(),
            timestamp: Self::timestamp(now),
            channel_id: evm::to_hex(id),
            chain_id: channel.chain_id.to_string(),
            reference,
            deposit: channel.deposit.to_string(),
        }
    }

    /// Synchronous core of [`SaClient::session_open`](crate::okx::sa::SaClient::session_open): checks, in order, the echo (an `evm`/
    /// `session` challenge, not expired — 70009) and its request (70000/70001), a `transaction`
    /// payload with an `eip-3009` authorization paying the request's escrow contract, a
    /// 32-byte channel id — equal to [`derive_channel_id`](crate::evm::derive_channel_id)
    /// when a `salt` is given — and `source` (70000); the signature (70004); the validity
    /// window (70003); a new channel (70000); the nonce and balance (70003). Then moves the
    /// deposit payer → escrow and records the channel (payee = the request's recipient).
    pub fn session_open_now(&self, req: &SessionOpenRequest) -> Result<SessionReceipt, SaError> {
        let p = &req.payload;
        let Funded { now, request, escrow, id, mut state, signed, deposit } = match self.session_deposit(req.into())? {
            Funding::New(funded) => *funded,
            Funding::Repeated(receipt) => return Ok(receipt),
        };
        let payer = deposit.payer;
        if !p.salt.is_empty() {
            let salt = evm::parse_bytes32(&p.salt).map_err(|e| bad_request(format!("salt: {e}")))?;
            let expected = crate::evm::derive_channel_id(
                payer,
                request.recipient,
                request.currency,
                salt,
                request.chain_id,
                escrow,
            );
            if expected != id {
                return Err(bad_request("channelId does not match (payer, payee, token, salt, chainId, escrow)"));
            }
        }
        Self::check_source(&req.source, &request, payer)?;
        let authorized_signer = match p.authorized_signer.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => evm::parse_address(s).map_err(|e| bad_request(format!("authorizedSigner: {e}")))?,
            None => Address::ZERO,
        };
        let channel = EscrowChannel {
            chain_id: request.chain_id,
            escrow,
            token: request.currency,
            payer,
            payee: request.recipient,
            authorized_signer: if authorized_signer == Address::ZERO { payer } else { authorized_signer },
            deposit: deposit.value,
            settled: U256::ZERO,
            closed: false,
        };
        if state.channels.contains_key(&id) {
            return Err(bad_request("channel already exists"));
        }
        let reference = Self::move_deposit(&mut state, signed.as_ref(), &deposit, &request)?;
        let receipt = Self::session_receipt(now, &channel, id, reference);
        if let Some(hash) = deposit.hash {
            state.deposit_hashes.insert(hash, (id, receipt.clone()));
        }
        state.channels.insert(id, channel);
        Ok(receipt)
    }

    /// The checks a session open and a top-up share: the echo (a `session` challenge, not
    /// expired) and its escrow, the channel id, and the deposit — a signed EIP-3009
    /// authorization to the escrow (checked before the state is locked) or a recorded transfer
    /// by `hash`. Returns them with the locked state; or, for a hash this channel already used,
    /// its first receipt.
    fn session_deposit(&self, source: DepositSource<'_>) -> Result<Funding<'_>, SaError> {
        let now = self.now();
        let (request, domain, raw) = self.check_echo(source.challenge, now, SESSION_INTENT)?;
        let escrow = request_escrow(&raw)?;
        let id = parse_channel_id(source.channel_id)?;
        let signed = if source.payload_type == HASH_PAYLOAD_TYPE {
            None
        } else {
            Some(self.check_deposit(source.authorization, source.payload_type, &domain, escrow, now)?)
        };
        let state = self.lock();
        let deposit = match &signed {
            Some(parsed) => Deposit { payer: parsed.message.from, value: parsed.message.value, hash: None },
            None => match Self::hash_deposit(&state, source.hash, &request, escrow, id)? {
                HashDeposit::New(d) => d,
                HashDeposit::Repeated(receipt) => return Ok(Funding::Repeated(receipt)),
            },
        };
        Ok(Funding::New(Box::new(Funded { now, request, escrow, id, state, signed, deposit })))
    }

    /// Moves a signed deposit payer → escrow in the ledger; the receipt's reference is that
    /// transfer's transaction hash, or the recorded hash of a deposit by hash.
    fn move_deposit(
        state: &mut State,
        signed: Option<&Parsed>,
        deposit: &Deposit,
        request: &ChargeRequest,
    ) -> Result<String, SaError> {
        match (signed, deposit.hash) {
            (Some(parsed), _) => {
                state
                    .ledger
                    .apply_authorizations(request.currency, std::slice::from_ref(&parsed.message))
                    .map_err(|e| sa_error(sa_codes::MALFORMED_CREDENTIAL, e.to_string()))?;
                Ok(transaction_hash(request.chain_id, request.currency, deposit.payer, parsed.message.nonce))
            }
            (None, Some(hash)) => Ok(evm::to_hex(hash)),
            (None, None) => Err(bad_request("payload.hash is missing")),
        }
    }

    /// A deposit by transaction hash: a recorded transfer on the request's chain and token to
    /// the escrow (70007 when unknown, 70000 otherwise); a hash already used for another
    /// channel is 70003, for this channel the first receipt again.
    fn hash_deposit(
        state: &State,
        hash: Option<&str>,
        request: &ChargeRequest,
        escrow: Address,
        channel: B256,
    ) -> Result<HashDeposit, SaError> {
        let hash = hash.ok_or_else(|| bad_request("payload.hash is missing"))?;
        let hash = evm::parse_bytes32(hash).map_err(|e| bad_request(format!("payload.hash: {e}")))?;
        if let Some((funded, receipt)) = state.deposit_hashes.get(&hash) {
            if *funded != channel {
                return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "transaction already used for another channel"));
            }
            return Ok(HashDeposit::Repeated(receipt.clone()));
        }
        let Some(tx) = state.transactions.get(&hash) else {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "transaction not confirmed"));
        };
        if tx.chain_id != request.chain_id || tx.token != request.currency {
            return Err(bad_request("transaction is not on the requested chain and token"));
        }
        if tx.to != escrow {
            return Err(bad_request("transaction does not pay the escrow contract"));
        }
        if tx.value.is_zero() {
            return Err(bad_request("the deposit must be positive"));
        }
        Ok(HashDeposit::New(Deposit { payer: tx.from, value: tx.value, hash: Some(hash) }))
    }

    /// Synchronous core of [`SaClient::session_top_up`](crate::okx::sa::SaClient::session_top_up): the echo and deposit checks of
    /// [`Self::session_open_now`], a known (70010), open (70008) channel on the same token and
    /// escrow, and `additionalDeposit` equal to the deposit's value (70000); then moves
    /// it payer → escrow (not for a recorded `hash`) and raises the deposit. The receipt's
    /// `deposit` is the channel's new total.
    pub fn session_top_up_now(&self, req: &SessionTopUpRequest) -> Result<SessionReceipt, SaError> {
        let p = &req.payload;
        let Funded { now, request, escrow, id, mut state, signed, deposit } = match self.session_deposit(req.into())? {
            Funding::New(funded) => *funded,
            Funding::Repeated(receipt) => return Ok(receipt),
        };
        if parse_u256(&p.additional_deposit, "additionalDeposit")? != deposit.value {
            return Err(bad_request("additionalDeposit is not the deposit's value"));
        }
        Self::check_source(&req.source, &request, deposit.payer)?;
        let channel =
            state.channels.get(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        if channel.closed {
            return Err(sa_error(sa_codes::CHANNEL_CLOSED, "channel is closed"));
        }
        if channel.token != request.currency || channel.escrow != escrow || channel.chain_id != request.chain_id {
            return Err(bad_request("the top-up is not in the channel's token, escrow and chain"));
        }
        let new_deposit = channel.deposit.checked_add(deposit.value).ok_or_else(|| bad_request("overflow"))?;
        let reference = Self::move_deposit(&mut state, signed.as_ref(), &deposit, &request)?;
        let channel = state.channels.get_mut(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        channel.deposit = new_deposit;
        let channel = channel.clone();
        let receipt = Self::session_receipt(now, &channel, id, reference);
        if let Some(hash) = deposit.hash {
            state.deposit_hashes.insert(hash, (id, receipt.clone()));
        }
        Ok(receipt)
    }

    fn parse_payee_authorization(
        channel_id: &str,
        cumulative: &str,
        nonce: &str,
        deadline: &str,
    ) -> Result<PayeeAuthorization, SaError> {
        let cumulative = parse_u256(cumulative, "cumulativeAmount")?;
        Ok(PayeeAuthorization {
            channel_id: parse_channel_id(channel_id)?,
            cumulative: u128::try_from(cumulative).map_err(|_| bad_request("cumulativeAmount exceeds uint128"))?,
            nonce: parse_u256(nonce, "nonce")?,
            deadline: parse_u256(deadline, "deadline")?,
        })
    }

    /// The checks shared by settle and close: a known (70010), open (70008) channel; the amount
    /// within the deposit (70012); a deadline not past (70003); the payee's signature over
    /// `digest` (70004); the payer's (or authorized signer's) voucher signature over the amount
    /// (70004; none needed for 0). Returns the channel.
    fn check_payee_authorization(
        state: &State,
        a: &PayeeAuthorization,
        now: u64,
        digest: impl Fn(&ChannelDomain) -> B256,
        payee_signature: &str,
        voucher_signature: &str,
    ) -> Result<EscrowChannel, SaError> {
        let channel = state
            .channels
            .get(&a.channel_id)
            .ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        if channel.closed {
            return Err(sa_error(sa_codes::CHANNEL_CLOSED, "channel is closed"));
        }
        if U256::from(a.cumulative) > channel.deposit {
            return Err(sa_error(sa_codes::AMOUNT_EXCEEDS_DEPOSIT, "cumulativeAmount exceeds the deposit"));
        }
        if a.deadline < U256::from(now) {
            return Err(sa_error(sa_codes::MALFORMED_CREDENTIAL, "authorization expired"));
        }
        let domain = ChannelDomain::new(channel.chain_id, channel.escrow);
        if recover_channel_signer(&digest(&domain), payee_signature).ok() != Some(channel.payee) {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "payee signature does not match the payee"));
        }
        if a.cumulative > 0
            && verify_voucher_signature(
                &domain,
                a.channel_id,
                a.cumulative,
                voucher_signature,
                channel.authorized_signer,
            )
            .is_err()
        {
            return Err(sa_error(sa_codes::INVALID_SIGNATURE, "voucher signature does not match the payer"));
        }
        Ok(channel.clone())
    }

    /// Moves `value` out of the escrow's account (a synthetic, nonce-unique transfer); returns
    /// the pseudo transaction hash.
    fn escrow_payout(state: &mut State, channel: &EscrowChannel, to: Address, value: U256) -> Result<String, SaError> {
        state.payouts += 1;
        let nonce = keccak256([channel.escrow.as_slice(), &state.payouts.to_be_bytes()].concat());
        let reference = transaction_hash(channel.chain_id, channel.token, channel.escrow, nonce);
        if value.is_zero() {
            return Ok(reference);
        }
        let transfer = TransferWithAuthorization {
            from: channel.escrow,
            to,
            value,
            validAfter: U256::ZERO,
            validBefore: U256::MAX,
            nonce,
        };
        state
            .ledger
            .apply_authorizations(channel.token, &[transfer])
            .map_err(|e| sa_error(sa_codes::TX_NOT_CONFIRMED, format!("escrow payout failed: {e}")))?;
        Ok(reference)
    }

    /// Synchronous core of [`SaClient::session_settle`](crate::okx::sa::SaClient::session_settle): a known (70010), open (70008)
    /// channel; `cumulativeAmount` within the deposit (70012); a deadline not past (70003); the
    /// payee's `SettleAuthorization` signature and the payer's (or authorized signer's) voucher
    /// signature (70004). Then pays the payee `cumulativeAmount − settled` (nothing when not
    /// above what was settled); the channel stays open.
    pub fn session_settle_now(&self, req: &SessionSettleRequest) -> Result<SessionReceipt, SaError> {
        let now = self.now();
        let p = &req.payload;
        let a = Self::parse_payee_authorization(&p.channel_id, &p.cumulative_amount, &p.nonce, &p.deadline)?;
        let mut state = self.lock();
        let digest =
            |d: &ChannelDomain| settle_authorization_digest(d, a.channel_id, a.cumulative, a.nonce, a.deadline);
        let channel =
            Self::check_payee_authorization(&state, &a, now, digest, &p.payee_signature, &p.voucher_signature)?;
        let cumulative = U256::from(a.cumulative);
        let payout = cumulative.saturating_sub(channel.settled);
        let reference = Self::escrow_payout(&mut state, &channel, channel.payee, payout)?;
        let stored =
            state.channels.get_mut(&a.channel_id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        stored.settled = stored.settled.max(cumulative);
        let channel = stored.clone();
        Ok(Self::session_receipt(now, &channel, a.channel_id, reference))
    }

    /// Synchronous core of [`SaClient::session_close`](crate::okx::sa::SaClient::session_close): the checks of
    /// [`Self::session_settle_now`] with a `CloseAuthorization`, then pays the payee `cumulativeAmount − settled`, refunds
    /// `deposit − max(cumulativeAmount, settled)` to the payer and closes the channel.
    pub fn session_close_now(&self, req: &SessionCloseRequest) -> Result<SessionReceipt, SaError> {
        let now = self.now();
        let p = &req.payload;
        let a = Self::parse_payee_authorization(&p.channel_id, &p.cumulative_amount, &p.nonce, &p.deadline)?;
        let mut state = self.lock();
        let digest = |d: &ChannelDomain| close_authorization_digest(d, a.channel_id, a.cumulative, a.nonce, a.deadline);
        let channel =
            Self::check_payee_authorization(&state, &a, now, digest, &p.payee_signature, &p.voucher_signature)?;
        let final_amount = U256::from(a.cumulative).max(channel.settled);
        let payout = final_amount - channel.settled;
        let refund = channel.deposit.saturating_sub(final_amount);
        // Check both transfers fit before moving anything (the escrow holds every deposit).
        if state.ledger.balance_of(channel.token, channel.escrow) < payout + refund {
            return Err(sa_error(sa_codes::TX_NOT_CONFIRMED, "escrow balance does not cover the channel"));
        }
        let reference = Self::escrow_payout(&mut state, &channel, channel.payee, payout)?;
        Self::escrow_payout(&mut state, &channel, channel.payer, refund)?;
        let stored =
            state.channels.get_mut(&a.channel_id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "gone"))?;
        stored.settled = final_amount;
        stored.closed = true;
        let channel = stored.clone();
        Ok(Self::session_receipt(now, &channel, a.channel_id, reference))
    }

    /// Synchronous core of [`SaClient::session_status`](crate::okx::sa::SaClient::session_status): `deposit`, `cumulativeAmount` and
    /// `settledOnChain` (what was paid out to the payee), `remainingBalance` (deposit − settled;
    /// 0 once closed), `sessionStatus` `OPEN` or `CLOSED`. Unknown channel ⇒ 70010.
    pub fn session_status_now(&self, channel_id: &str) -> Result<SessionStatus, SaError> {
        let id = parse_channel_id(channel_id)?;
        let state = self.lock();
        let c = state.channels.get(&id).ok_or_else(|| sa_error(sa_codes::CHANNEL_NOT_FOUND, "channel not found"))?;
        Ok(SessionStatus {
            channel_id: evm::to_hex(id),
            payer: evm::checksum(&c.payer),
            payee: evm::checksum(&c.payee),
            token: evm::to_hex(c.token),
            deposit: c.deposit.to_string(),
            cumulative_amount: c.settled.to_string(),
            settled_on_chain: c.settled.to_string(),
            remaining_balance: if c.closed { "0".to_owned() } else { (c.deposit - c.settled).to_string() },
            session_status: if c.closed { "CLOSED" } else { "OPEN" }.to_owned(),
        })
    }
}
