//! Building and configuring a [`SessionIntent`], and the small helpers its actions share.

use super::{SessionIntent, SessionResult, invalid_payload, sa_failure, same_address};
use crate::chain::X_LAYER_CHAIN_ID;
use crate::evm::{self, Address, Signer, U256};
use crate::evm::{
    ChannelDomain, DEFAULT_DEADLINE, DEFAULT_DOMAIN_NAME, DEFAULT_DOMAIN_VERSION, DEFAULT_ESCROW_CONTRACT,
    NonceProvider, RandomNonceProvider,
};
use crate::mpp::metering::StreamConfig;
use crate::mpp::method::PayError;
use crate::mpp::store::{ChannelStore, InMemoryChannelStore};
use crate::okx::sa::SaClient;
use crate::replay::{InMemoryReplayStore, ReplayStore};
use serde_json::{Map, Value};
use std::sync::Arc;

impl SessionIntent {
    /// A session intent over a Settlement Agent client, paying `recipient` (the payee).
    pub fn new(sa: impl SaClient, recipient: impl Into<String>) -> Self {
        Self::with_sa(Arc::new(sa), recipient)
    }

    /// A session intent over a shared Settlement Agent client.
    pub fn with_sa(sa: Arc<dyn SaClient>, recipient: impl Into<String>) -> Self {
        Self {
            sa,
            recipient: recipient.into(),
            signer: None,
            store: Arc::new(InMemoryChannelStore::new()),
            chain_id: X_LAYER_CHAIN_ID,
            escrow: DEFAULT_ESCROW_CONTRACT,
            per_request_cost: None,
            min_voucher_delta: 0,
            nonces: Arc::new(RandomNonceProvider),
            deadline: DEFAULT_DEADLINE,
            domain_name: DEFAULT_DOMAIN_NAME.to_owned(),
            domain_version: DEFAULT_DOMAIN_VERSION.to_owned(),
            fee_payer: false,
            replay: Arc::new(InMemoryReplayStore::new()),
            stream_config: StreamConfig::default(),
            wakers: Arc::default(),
        }
    }

    /// How this intent's metered streams wait for money (voucher timeout, store poll, keep-alive).
    pub fn stream_config(mut self, config: StreamConfig) -> Self {
        self.stream_config = config;
        self
    }

    /// The payee's key, which signs `SettleAuthorization` / `CloseAuthorization`.
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Where channels are kept (share one across workers: `FileStore`, Redis).
    pub fn store(mut self, store: Arc<dyn ChannelStore>) -> Self {
        self.store = store;
        self
    }

    /// The chain id (196).
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// The escrow contract ([`DEFAULT_ESCROW_CONTRACT`]).
    pub fn escrow(mut self, escrow: Address) -> Self {
        self.escrow = escrow;
        self
    }

    /// A fixed price per voucher request in base units; `None` (the default) charges the
    /// route's price.
    pub fn per_request_cost(mut self, cost: Option<U256>) -> Self {
        self.per_request_cost = cost;
        self
    }

    /// The smallest accepted increase between two vouchers (0; when 0 the channel's stored
    /// value applies).
    pub fn min_voucher_delta(mut self, delta: u128) -> Self {
        self.min_voucher_delta = delta;
        self
    }

    /// The nonce source of settle/close authorizations (random UUIDv4 by default).
    pub fn nonce_provider(mut self, nonces: Arc<dyn NonceProvider>) -> Self {
        self.nonces = nonces;
        self
    }

    /// The deadline of settle/close authorizations (2^256 − 1).
    pub fn deadline(mut self, deadline: U256) -> Self {
        self.deadline = deadline;
        self
    }

    /// The escrow's EIP-712 domain name (`EVM Payment Channel`).
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = name.into();
        self
    }

    /// The escrow's EIP-712 domain version (`1`).
    pub fn domain_version(mut self, version: impl Into<String>) -> Self {
        self.domain_version = version.into();
        self
    }

    /// The seller pays gas (`feePayer: true`).
    pub fn fee_payer(mut self, fee_payer: bool) -> Self {
        self.fee_payer = fee_payer;
        self
    }

    /// Where voucher replay keys are recorded (share one across workers).
    pub fn replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = store;
        self
    }

    /// The payee.
    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    /// The channel store.
    pub fn channel_store(&self) -> &Arc<dyn ChannelStore> {
        &self.store
    }

    /// The escrow's EIP-712 domain.
    pub fn channel_domain(&self) -> ChannelDomain {
        ChannelDomain {
            name: self.domain_name.clone(),
            version: self.domain_version.clone(),
            chain_id: self.chain_id,
            escrow: self.escrow,
        }
    }

    /// `methodDetails` of a session challenge: `{"chainId", "escrowContract" (EIP-55),
    /// "minVoucherDelta" (decimal string), "feePayer"}`.
    pub fn method_details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("chainId".into(), Value::from(self.chain_id));
        m.insert("escrowContract".into(), Value::String(evm::checksum(&self.escrow)));
        m.insert("minVoucherDelta".into(), Value::String(self.min_voucher_delta.to_string()));
        m.insert("feePayer".into(), Value::Bool(self.fee_payer));
        m
    }

    pub(super) fn escrow_text(&self) -> String {
        evm::checksum(&self.escrow)
    }

    pub(super) fn result(&self, channel_id: &str, cumulative: u128, status: &str, reference: String) -> SessionResult {
        SessionResult {
            channel_id: channel_id.to_owned(),
            cumulative_amount: cumulative.to_string(),
            escrow_contract: self.escrow_text(),
            status: status.to_owned(),
            reference,
        }
    }

    pub(super) fn payee_signer(&self) -> Result<&Arc<dyn Signer>, PayError> {
        self.signer.as_ref().ok_or_else(|| invalid_payload("payee signer not configured"))
    }

    pub(super) fn payee_address(&self, signer: &dyn Signer) -> Address {
        evm::parse_address(&self.recipient).unwrap_or_else(|_| signer.address())
    }

    /// Checks that a deposit authorization pays the escrow contract (and, when `value` is
    /// given, that amount).
    pub(super) fn check_deposit_authorization(
        &self,
        auth: &Map<String, Value>,
        value: Option<&str>,
    ) -> Result<(), PayError> {
        let to = auth.get("to").and_then(Value::as_str).unwrap_or("");
        if evm::parse_address(to).ok() != Some(self.escrow) {
            return Err(invalid_payload(format!("authorization pays {to}, not the escrow contract")));
        }
        if let Some(v) = value
            && auth.get("value").and_then(Value::as_str) != Some(v)
        {
            return Err(invalid_payload("authorization value does not match the deposit"));
        }
        Ok(())
    }

    /// Asks the SA who pays `channel_id` (`session/status`) and requires `payer`.
    pub(super) async fn confirm_payer(&self, channel_id: &str, payer: &str) -> Result<(), PayError> {
        let status =
            crate::metrics::sa_call("session_status", self.sa.session_status(channel_id)).await.map_err(sa_failure)?;
        if !same_address(&status.payer, payer) {
            tracing::error!(
                channel = %channel_id, claimed = %payer, sa = %status.payer,
                "mpp session: the SA does not confirm the payer of a hash deposit; channel not recorded"
            );
            return Err(invalid_payload("open: the payer is not confirmed"));
        }
        Ok(())
    }
}
