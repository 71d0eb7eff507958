//! An auto-paying HTTP client: a [`reqwest_middleware`] middleware that answers HTTP 402
//! challenges (x402 and MPP) within spending caps.
//!
//! On a `402 Payment Required` the middleware reads every challenge the server offered —
//! x402 (`exact` on `eip155:*` — EIP-3009 or Permit2 —, `upto` (pay per use, see
//! [Caps](#caps)), and `aggr_deferred` when given a session-key scheme with
//! [`AutoPay::aggr_deferred`]: the `PAYMENT-REQUIRED` header, else a JSON body with
//! `x402Version` 1 or 2) and MPP (`WWW-Authenticate: Payment`, `evm` method,
//! `charge` and `session` intents) — ranks them by the configured [`Protocol`] preference,
//! picks the first one the caps allow and that can be signed (an offer that cannot — unknown
//! token, malformed requirements — falls back to the next, nothing sent), pays it and retries
//! the request **once**. The outcome
//! ([`AutoPayOutcome`]: the decoded `PAYMENT-RESPONSE` or `Payment-Receipt`) is attached to
//! the final response's [`extensions`](reqwest::Response::extensions).
//!
//! ```no_run
//! use pay402_runtime::autopay::{AssetId, AutoPay, AutoPayOutcome, Protocol};
//! use pay402_runtime::evm::PrivateKeySigner;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let signer: PrivateKeySigner = std::env::var("BUYER_KEY")?.parse()?;
//! let usdt0 = AssetId::x_layer_usdt0();
//! let autopay = AutoPay::new(signer)
//!     .prefer([Protocol::MppSession, Protocol::X402, Protocol::MppCharge])
//!     .max_per_request(usdt0.clone(), "0.01".parse()?) // 0.01 USD₮0 per request
//!     .max_total(usdt0.clone(), "1".parse()?) // 1 USD₮0 in total, deposits included
//!     .max_deposit(usdt0.clone(), "0.1".parse()?) // at most 0.1 USD₮0 into a session escrow
//!     .build()?;
//! let http = autopay.client(reqwest::Client::builder())?;
//! let response = http.get("http://127.0.0.1:4021/quote").send().await?;
//! if let Some(paid) = response.extensions().get::<AutoPayOutcome>() {
//!     println!("paid {} atomic units of {} with {}", paid.amount, paid.asset, paid.protocol);
//! }
//! println!("spent so far: {}", autopay.spent(&usdt0));
//! # Ok(()) }
//! ```
//!
//! # Caps
//!
//! Caps are per [`AssetId`] (network + token), in exact atomic units or as exact decimals
//! converted with the token's decimals — from the builder ([`AutoPay::decimals`]) or the
//! [`NetworkRegistry`], **never from the server**: a decimal cap of a token whose decimals
//! neither knows is an [`AutoPayError::UnknownDecimals`] build error. **Only assets with a
//! configured cap are ever paid** ([`AutoPay::allow`] admits an asset without limits). A
//! payment reserves its amount before anything is signed: the per-request cap and
//! `spent + reserved + escrowed + amount ≤ total` are checked under one lock, so concurrent
//! requests cannot overshoot the total. A refused payment sends nothing more: the request fails
//! with [`AutoPayError::OverCap`] or [`AutoPayError::TotalCapExceeded`] (inside
//! [`reqwest_middleware::Error::Middleware`]; see [`AutoPayError::from_middleware`]).
//!
//! An x402 `upto` offer authorises a **maximum** (`requirements.amount`) and the seller settles
//! what was used: the caps are checked against the maximum (an over-cap maximum is refused before
//! anything is signed, whatever the seller says it will charge) and the maximum is reserved. Once
//! the `PAYMENT-RESPONSE` shows the settled `amount` (at most the maximum), that amount is
//! committed and the rest released; a refusal, a missing or unreadable amount, or an amount above
//! the maximum commits the whole maximum (and logs an error): a seller that lies never frees
//! budget. The settled amount is the seller's word, bounded by the signed maximum: the buyer
//! cannot verify the settlement offline. [`AutoPayOutcome::amount`] is what was counted,
//! [`AutoPayOutcome::authorized`] the maximum signed. The buyer must have approved the Permit2
//! contract once on the token ([`approve_calldata`](crate::evm::permit2::approve_calldata)).
//!
//! A reservation is **released** only when nothing was sent (the payment could not be
//! signed, or the request could not be sent). Once a signed payment has left the process it
//! is **committed** — counted as spent — in every outcome: success, a handler error, a
//! transport error, and also a refusal (a new 402, or an x402 `PAYMENT-RESPONSE` with
//! `success: false`): whoever received the signed authorization can still execute it until
//! its `validBefore`, and this client cannot prove that its nonce stays unused.
//!
//! # Redirects
//!
//! [`AutoPayMiddleware::client`] switches reqwest's redirect following off and follows
//! redirects in the middleware (at most [`MAX_REDIRECTS`]): a payment header never follows a
//! redirect, credentials are removed on a hop to another origin, and a 402 is paid only when
//! it comes from the origin the request was sent to (else [`AutoPayError::CrossOriginChallenge`]);
//! the paid retry goes to the URL that answered 402.
//!
//! # MPP sessions
//!
//! On the first `evm`/`session` challenge of a (realm, payee, token, chain, escrow) the
//! middleware opens one payment channel (a management request carrying the deposit
//! authorization; the server answers 200 without running its handler), then retries the
//! request with a voucher. Later requests to a route that offered the session carry the next
//! voucher (cumulative amount + the route's price) right away, without a 402 round trip, until
//! the challenge expires. Requests on one channel are serialised (vouchers are cumulative). The
//! deposit is the per-asset [`AutoPay::session_deposit`], else the challenge's
//! `suggestedDeposit`, else [`DEFAULT_DEPOSIT_REQUESTS`] × the price — never more than the
//! maximum deposit nor the remaining total budget; a channel whose deposit is used up is topped
//! up the same way.
//!
//! Deposits go only to **trusted escrows**: OKX's escrow on X Layer by default, others with
//! [`AutoPay::trust_escrow`]; a challenge naming another escrow is refused
//! ([`AutoPayError::UntrustedEscrow`], nothing signed). A session needs a **maximum deposit**
//! for its asset ([`AutoPay::max_deposit`], or the fixed [`AutoPay::session_deposit`]); without
//! one its session offers are refused ([`AutoPayError::NoMaxDeposit`]) and another offer of the
//! 402 is paid. The server's `suggestedDeposit` is never followed above the maximum.
//!
//! **Deposits count against the total cap** from the moment their authorization is signed and
//! sent ([`AutoPayMiddleware::escrowed`]), accepted or not. A voucher increment moves its amount
//! from escrowed to spent (a signed voucher is money the payee can claim from the deposit) and is
//! checked against the per-request cap. [`AutoPayMiddleware::close_channels`] closes the
//! channels; the escrow returns the unvouched deposit to the payer, but this client cannot
//! verify that refund, so it stays counted against the total cap (build a new middleware for a
//! fresh budget).
//!
//! A 402 with no challenge at all is returned as is (when its JSON body was inspected for an
//! x402 challenge, the response is rebuilt from its status, headers and body, and
//! [`url`](reqwest::Response::url) is no longer available).
//!
//! # Metered streams
//!
//! [`AutoPayMiddleware::stream`] requests a Server-Sent Events stream metered per event (MPP
//! session, `unitType: "event"`) and yields its events ([`PaidEvents`], a `Stream` of
//! [`StreamItem`]s): it pays the 402 as a session, answers the seller's `402-need-voucher`
//! events with a voucher for exactly the amount asked (topping the deposit up within the caps
//! first when needed; never for another stream's challenge or channel), and resumes a dropped
//! connection with `Last-Event-ID`.
//!
//! ```no_run
//! use futures::StreamExt as _;
//! use pay402_runtime::autopay::{AutoPayMiddleware, StreamItem};
//!
//! # async fn run(autopay: AutoPayMiddleware) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // No redirects and no total timeout: a stream lasts.
//! let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
//! let request = reqwest::Request::new(reqwest::Method::GET, "http://127.0.0.1:4021/tokens?n=5".parse()?);
//! let mut events = autopay.stream(&http, request).await?;
//! while let Some(item) = events.next().await {
//!     if let StreamItem::Data(event) = item? {
//!         println!("{:?}: {}", event.id, event.data);
//!     }
//! }
//! if let Some(receipt) = events.final_receipt() {
//!     println!("{} events, {} atomic units", receipt.units, receipt.spent);
//! }
//! # Ok(()) }
//! ```
//!
//! Money rules (on top of the middleware's [caps](#caps)):
//! * the stream's first request carries a voucher for the channel's cumulative amount plus
//!   [`StreamOptions::prepaid_events`] × the per-event price (at least the seller's minimum
//!   voucher increase; opening the channel, or topping it up, first when needed — deposits
//!   bounded by the maximum deposit and the total budget);
//! * a `402-need-voucher` is paid only when its `challengeId` and `channelId` are the stream's
//!   (else it is logged and ignored), with a voucher for exactly `requiredCumulative`, which may
//!   exceed what was signed by at most one event's price (or the seller's minimum voucher
//!   increase, `methodDetails.minVoucherDelta`, when larger); a top-up comes first when the deposit
//!   does not cover it. Anything else — a larger step, a repeated request for an amount already
//!   sent, a voucher increment above the per-request cap, a top-up above the maximum deposit or
//!   the total budget, a stream total above [`StreamOptions::max_spend`] — ends the stream with an
//!   error and **nothing signed**;
//! * a resumed connection carries a voucher for the amount already signed (no new money).
//!
//! # Request bodies
//!
//! A paid retry resends the request, so the body is cloned first; a streaming body cannot be,
//! and a 402 on such a request fails with [`AutoPayError::BodyNotCloneable`] (nothing is paid).

mod budget;
mod middleware;
mod offers;
mod send;
mod session_book;
mod stream;

pub use budget::{Amount, AssetId, TokenUnits, decimal_string};
/// The client [`AutoPayMiddleware::client`] returns, and its error type (re-exported from
/// `reqwest-middleware`, so callers need not depend on it).
pub use reqwest_middleware::{ClientWithMiddleware, Error as ClientError};
pub use send::MAX_REDIRECTS;
pub use session_book::ChannelSummary;
pub use stream::{
    DEFAULT_MAX_RECONNECTS, DEFAULT_RECONNECT_DELAY, MAX_RECONNECT_DELAY, PaidEvents, StreamError, StreamItem,
    StreamOptions,
};

use crate::chain::{NetworkRegistry, X_LAYER_CHAIN_ID};
use crate::evm::DEFAULT_ESCROW_CONTRACT;
use crate::evm::{Address, PrivateKeySigner, U256};
use crate::mpp::{MppChargeClient, Receipt, SessionClient};
use crate::x402::{
    AggrDeferredEvmClientScheme, ExactEvmClientScheme, PaymentRequirements, SettleResponse, UptoEvmClientScheme,
    X402Client,
};
use budget::{Budget, Limits};
use session_book::SessionBook;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// With no configured deposit and no `suggestedDeposit`, a channel is opened (or topped up)
/// with this many times the route's price (bounded by the remaining total budget).
pub const DEFAULT_DEPOSIT_REQUESTS: u64 = 100;

/// Largest error body read to explain a refused payment (bytes).
pub const MAX_REFUSAL_BODY_BYTES: usize = 4096;

/// A way to pay a 402.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Protocol {
    /// x402 on EVM networks, v2 and v1 challenges: `exact` (EIP-3009 or Permit2), `upto`
    /// (Permit2, caps on the maximum), and `aggr_deferred` when [`AutoPay::aggr_deferred`] gave
    /// a session-key scheme.
    X402,
    /// MPP `Payment` auth, `evm` method, `charge` intent (one EIP-3009 transfer per request).
    MppCharge,
    /// MPP `Payment` auth, `evm` method, `session` intent (a channel, then vouchers).
    MppSession,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X402 => "x402",
            Self::MppCharge => "mpp-charge",
            Self::MppSession => "mpp-session",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = AutoPayError;

    /// `x402`, `mpp-charge` or `mpp-session` (case-insensitive).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x402" => Ok(Self::X402),
            "mpp-charge" => Ok(Self::MppCharge),
            "mpp-session" => Ok(Self::MppSession),
            other => Err(AutoPayError::Config(format!(
                "unknown protocol {other:?} (expected x402, mpp-charge or mpp-session)"
            ))),
        }
    }
}

/// Why the middleware did not pay, or could not complete a payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AutoPayError {
    /// The chosen challenge costs more than the per-request cap.
    #[error(
        "refusing to pay {} ({asset}): above the per-request cap of {}",
        units.show(*requested),
        units.show(*cap)
    )]
    OverCap {
        /// The asset.
        asset: AssetId,
        /// What the server asked (atomic units).
        requested: U256,
        /// The per-request cap (atomic units).
        cap: U256,
        /// How the asset's amounts read (decimals and symbol, known locally).
        units: Arc<TokenUnits>,
    },
    /// Paying would take the total spend above the total cap.
    #[error(
        "refusing to pay {} ({asset}): {} already spent, reserved or deposited, total cap {}",
        units.show(*requested),
        units.show(*spent),
        units.show(*cap)
    )]
    TotalCapExceeded {
        /// The asset.
        asset: AssetId,
        /// What the server asked (atomic units).
        requested: U256,
        /// Spent plus reserved by requests in flight plus escrowed deposits (atomic units).
        spent: U256,
        /// The total cap (atomic units).
        cap: U256,
        /// How the asset's amounts read (decimals and symbol, known locally).
        units: Arc<TokenUnits>,
    },
    /// The server asked for an asset with no configured cap (never paid).
    #[error("refusing to pay in {asset}: no cap is configured for it")]
    AssetNotAllowed {
        /// The asset.
        asset: AssetId,
    },
    /// A decimal cap cannot be converted: the token's decimals are unknown (a build error;
    /// decimals are never taken from the server).
    #[error("the decimals of {asset} are unknown: give them to the builder or use atomic caps")]
    UnknownDecimals {
        /// The asset.
        asset: AssetId,
    },
    /// An MPP session challenge names an escrow contract this client does not trust (see
    /// [`AutoPay::trust_escrow`]); nothing is signed for it.
    #[error("refusing to deposit into escrow {escrow} on chain {chain_id}: not a trusted escrow")]
    UntrustedEscrow {
        /// The chain id.
        chain_id: u64,
        /// The escrow contract named by the challenge.
        escrow: String,
    },
    /// An MPP session in `asset` would need a deposit, but no maximum deposit is configured
    /// for it ([`AutoPay::max_deposit`] or [`AutoPay::session_deposit`]).
    #[error("refusing to open an MPP session in {asset}: no maximum deposit is configured for it")]
    NoMaxDeposit {
        /// The asset.
        asset: AssetId,
    },
    /// A session deposit would be above the configured maximum deposit.
    #[error(
        "refusing to deposit {} ({asset}): above the maximum deposit of {}",
        units.show(*requested),
        units.show(*max)
    )]
    DepositAboveMax {
        /// The asset.
        asset: AssetId,
        /// The deposit the session needed (atomic units).
        requested: U256,
        /// The maximum deposit (atomic units).
        max: U256,
        /// How the asset's amounts read (decimals and symbol, known locally).
        units: Arc<TokenUnits>,
    },
    /// The request was redirected to another origin, which answered 402: a payment is only
    /// made to the origin the request was sent to.
    #[error("refusing to pay a 402 from {origin}: the request was redirected there from another origin")]
    CrossOriginChallenge {
        /// The origin that answered 402.
        origin: String,
    },
    /// An amount is not an exact non-negative decimal (or has more digits than the token).
    #[error("invalid amount {text:?}: {reason}")]
    InvalidAmount {
        /// The text.
        text: String,
        /// Why.
        reason: String,
    },
    /// The 402 offered no challenge this client can pay (unsupported scheme, network, method,
    /// intent, or a protocol not in the preference list).
    #[error("no acceptable payment challenge among: {}", if .offered.is_empty() { "none".to_owned() } else { .offered.join(", ") })]
    NoAcceptableChallenge {
        /// The offered challenges (`x402 exact@eip155:196`, `mpp evm/charge`, …).
        offered: Vec<String>,
    },
    /// The request body is a stream: it cannot be resent with a payment.
    #[error("cannot pay: the request body is a stream and cannot be cloned for the paid retry")]
    BodyNotCloneable,
    /// The server refused the payment.
    #[error("the server refused the {protocol} payment with HTTP {status}: {reason}")]
    PaymentRejected {
        /// The protocol used.
        protocol: Protocol,
        /// The HTTP status of the answer to the paid retry.
        status: u16,
        /// The server's reason (problem detail, `errorReason`, or the status text).
        reason: String,
    },
    /// A session management action (`open`, `topUp`, `close`) was refused.
    #[error("the MPP session {action} was refused with HTTP {status}: {reason}")]
    SessionRefused {
        /// `open`, `topUp` or `close`.
        action: &'static str,
        /// HTTP status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
    /// A challenge could not be read or answered (bad request fields, unknown token, expired
    /// challenge, signing failure).
    #[error("cannot build the {protocol} payment: {reason}")]
    Payment {
        /// The protocol.
        protocol: Protocol,
        /// Why.
        reason: String,
    },
    /// The builder's configuration is inconsistent.
    #[error("invalid autopay configuration: {0}")]
    Config(String),
    /// A management request failed in transport.
    #[error("HTTP error during an MPP session {action}: {reason}")]
    Transport {
        /// The action.
        action: &'static str,
        /// The error.
        reason: String,
    },
}

impl AutoPayError {
    /// The autopay error inside a middleware error, if it is one.
    pub fn from_middleware(error: &reqwest_middleware::Error) -> Option<&AutoPayError> {
        match error {
            reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<AutoPayError>(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }
}

/// What the middleware paid for a response, attached to its
/// [`extensions`](reqwest::Response::extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AutoPayOutcome {
    /// The protocol used.
    pub protocol: Protocol,
    /// The asset paid in.
    pub asset: AssetId,
    /// Atomic units charged against the caps for this request (for a session: the voucher
    /// increment; for x402 `upto`: the settled amount the seller's `PAYMENT-RESPONSE` reports,
    /// when it is at most the authorised maximum, else the maximum).
    pub amount: U256,
    /// Atomic units the signed payment authorised: the maximum of an x402 `upto` payment (the
    /// caps were checked and the budget reserved against it), otherwise equal to `amount`.
    pub authorized: U256,
    /// How the asset's amounts read (decimals and symbol, known locally): the outcome's
    /// `Display` shows `0.001 USD₮0 (1000 atomic units) with x402`.
    pub units: Arc<TokenUnits>,
    /// The protocol-specific result.
    pub detail: PaymentDetail,
}

impl fmt::Display for AutoPayOutcome {
    /// `0.001 USD₮0 (1000 atomic units) with x402`, plus the settlement transaction, the
    /// receipt's reference or the session's channel and voucher.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with {}", self.units.show(self.amount), self.protocol)?;
        match &self.detail {
            PaymentDetail::X402 { settlement: Some(s), .. } if !s.transaction.is_empty() => {
                write!(f, ", transaction {}", s.transaction)
            }
            PaymentDetail::MppCharge { receipt: Some(r), .. } => write!(f, ", reference {}", r.reference),
            PaymentDetail::MppSession { channel_id, cumulative, deposit, opened, topped_up, .. } => write!(
                f,
                ", channel {channel_id}{}{}: vouchers now total {} of a {} deposit",
                if *opened { " (opened)" } else { "" },
                if *topped_up { " (topped up)" } else { "" },
                self.units.show(*cumulative),
                self.units.show(*deposit)
            ),
            _ => Ok(()),
        }
    }
}

/// The protocol-specific part of an [`AutoPayOutcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentDetail {
    /// An x402 payment.
    X402 {
        /// The requirements paid.
        requirements: Box<PaymentRequirements>,
        /// The decoded `PAYMENT-RESPONSE` (or `X-PAYMENT-RESPONSE`), when present and valid.
        settlement: Option<SettleResponse>,
    },
    /// An MPP charge.
    MppCharge {
        /// The challenge id answered.
        challenge_id: String,
        /// The decoded `Payment-Receipt`, when present and valid.
        receipt: Option<Receipt>,
    },
    /// An MPP session voucher.
    MppSession {
        /// The channel.
        channel_id: String,
        /// The cumulative amount of the voucher sent.
        cumulative: U256,
        /// The channel's deposit (after any top-up by this request).
        deposit: U256,
        /// Whether this request opened the channel.
        opened: bool,
        /// Whether this request topped the deposit up.
        topped_up: bool,
        /// The decoded `Payment-Receipt`, when present and valid.
        receipt: Option<Receipt>,
    },
}

/// Builds an [`AutoPayMiddleware`].
#[derive(Debug, Clone)]
pub struct AutoPay {
    signer: PrivateKeySigner,
    preference: Vec<Protocol>,
    limits: HashMap<AssetId, Limits>,
    registry: Option<Arc<NetworkRegistry>>,
    escrows: Vec<(u64, Address)>,
    unknown_outcome_wait: std::time::Duration,
    aggr_deferred: Option<AggrDeferredEvmClientScheme>,
}

/// How long [`AutoPay`] keeps retrying a paid request whose outcome the seller reports unknown
/// (`503` with `Retry-After`), by default.
pub const DEFAULT_UNKNOWN_OUTCOME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl AutoPay {
    /// Pays with `signer`. Default preference: x402, then MPP charge, then MPP session. No
    /// asset is payable until a cap (or [`AutoPay::allow`]) names it. The only trusted session
    /// escrow is OKX's on X Layer ([`DEFAULT_ESCROW_CONTRACT`] on chain 196).
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self {
            signer,
            preference: vec![Protocol::X402, Protocol::MppCharge, Protocol::MppSession],
            limits: HashMap::new(),
            registry: None,
            escrows: vec![(X_LAYER_CHAIN_ID, DEFAULT_ESCROW_CONTRACT)],
            unknown_outcome_wait: DEFAULT_UNKNOWN_OUTCOME_WAIT,
            aggr_deferred: None,
        }
    }

    /// Also pays x402 `aggr_deferred` offers (on `eip155:*`), signed by `scheme`'s session key:
    /// [`AggrDeferredEvmClientScheme::new`] with the session key and certificate OKX's Agentic
    /// Wallet issued (OKX's facilitator), or [`AggrDeferredEvmClientScheme::development`] for
    /// pay402's embedded facilitator. The same caps apply as to `exact` (per asset, reserved
    /// before signing); without this, `aggr_deferred` offers are not payable.
    pub fn aggr_deferred(mut self, scheme: AggrDeferredEvmClientScheme) -> Self {
        self.aggr_deferred = Some(scheme);
        self
    }

    /// How long a paid request is retried while its outcome is unknown (default
    /// [`DEFAULT_UNKNOWN_OUTCOME_WAIT`]; zero: never retried). When the seller answers a paid
    /// request `503` with `Retry-After` (its settlement is pending) or the connection fails after
    /// the payment was sent, the middleware waits as told and resends the **same** request with
    /// the **same** signed payment — never a new one while the first may still settle. The
    /// amount stays counted as spent whatever happens. When the wait is used up the last answer
    /// (or error) is returned.
    pub fn unknown_outcome_wait(mut self, wait: std::time::Duration) -> Self {
        self.unknown_outcome_wait = wait;
        self
    }

    /// The protocols to use, most preferred first; protocols not listed are never used.
    pub fn prefer(mut self, order: impl IntoIterator<Item = Protocol>) -> Self {
        let mut seen = Vec::new();
        for p in order {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        self.preference = seen;
        self
    }

    fn limits(&mut self, asset: AssetId) -> &mut Limits {
        self.limits.entry(asset).or_default()
    }

    /// Makes `asset` payable (without caps unless others are set).
    pub fn allow(mut self, asset: AssetId) -> Self {
        self.limits(asset);
        self
    }

    /// The most one request may pay in `asset` (and makes it payable).
    pub fn max_per_request(mut self, asset: AssetId, cap: Amount) -> Self {
        self.limits(asset).per_request = Some(cap);
        self
    }

    /// The most all requests together may pay in `asset` (and makes it payable). Session
    /// deposits count against it from the moment they are signed.
    pub fn max_total(mut self, asset: AssetId, cap: Amount) -> Self {
        self.limits(asset).total = Some(cap);
        self
    }

    /// The decimals of `asset`, for decimal caps of tokens the registry does not know
    /// (without them, such a cap is an [`AutoPayError::UnknownDecimals`] build error: decimals
    /// are never taken from the server).
    pub fn decimals(mut self, asset: AssetId, decimals: u8) -> Self {
        self.limits(asset).decimals = Some(decimals);
        self
    }

    /// The deposit of MPP session channels in `asset` (and, unless [`AutoPay::max_deposit`] is
    /// set, the maximum deposit). Bounded by the remaining total budget.
    pub fn session_deposit(mut self, asset: AssetId, deposit: Amount) -> Self {
        self.limits(asset).session_deposit = Some(deposit);
        self
    }

    /// The most one MPP session deposit authorization (a channel's `open` or a `topUp`) may
    /// transfer in `asset`. The server's `suggestedDeposit` is never followed above it.
    /// Without this (or [`AutoPay::session_deposit`]) no session is opened in `asset`: its
    /// session offers are refused with [`AutoPayError::NoMaxDeposit`] and another offer of the
    /// 402 is paid instead, if any.
    pub fn max_deposit(mut self, asset: AssetId, max: Amount) -> Self {
        self.limits(asset).max_deposit = Some(max);
        self
    }

    /// Also trusts the session escrow contract `escrow` on chain `chain_id` (by default only
    /// OKX's escrow on X Layer is trusted). Deposits go only to trusted escrows; a session
    /// challenge naming another one is refused with [`AutoPayError::UntrustedEscrow`].
    pub fn trust_escrow(mut self, chain_id: u64, escrow: Address) -> Self {
        if !self.escrows.contains(&(chain_id, escrow)) {
            self.escrows.push((chain_id, escrow));
        }
        self
    }

    /// Uses `registry` for token decimals and EIP-712 domains (default: the process-wide
    /// [`NetworkRegistry::global`], read at [`AutoPay::build`]).
    pub fn registry(mut self, registry: NetworkRegistry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// Checks the configuration (no protocol; a decimal cap of a token whose decimals are
    /// unknown; a per-request cap above the total; a session deposit above the maximum
    /// deposit) and builds the middleware.
    pub fn build(self) -> Result<AutoPayMiddleware, AutoPayError> {
        if self.preference.is_empty() {
            return Err(AutoPayError::Config("no protocol is enabled".into()));
        }
        if self.limits.is_empty() {
            return Err(AutoPayError::Config("no asset is payable: set a cap (or allow an asset)".into()));
        }
        let registry = self.registry.clone().unwrap_or_else(NetworkRegistry::global);
        let budget = Budget::new(&self.limits, &registry)?;
        let mut middleware = AutoPayMiddleware::new(self.signer, self.preference, budget, registry, self.escrows);
        if let (Some(scheme), Some(inner)) = (self.aggr_deferred, Arc::get_mut(&mut middleware.inner)) {
            inner.x402 = std::mem::take(&mut inner.x402).register("eip155:*", scheme);
        }
        if let Some(inner) = Arc::get_mut(&mut middleware.inner) {
            inner.unknown_outcome_wait = self.unknown_outcome_wait;
        }
        Ok(middleware)
    }
}

/// The middleware's shared state. [`offers`] (reading and choosing), [`session_book`] (MPP
/// channels) and [`middleware`] (the retry loop) each add an `impl AutoPayMiddleware` block over
/// it.
struct Inner {
    preference: Vec<Protocol>,
    budget: Arc<Budget>,
    x402: X402Client,
    charge: MppChargeClient,
    session: SessionClient,
    registry: Arc<NetworkRegistry>,
    /// The trusted session escrows: (chain id, contract).
    escrows: Vec<(u64, Address)>,
    book: Mutex<SessionBook>,
    /// How long a paid request of unknown outcome is retried with the same payment.
    unknown_outcome_wait: std::time::Duration,
}

/// The auto-paying middleware (see the [module docs](self)). Cheap to clone; clones share the
/// caps, the ledger and the session channels.
#[derive(Clone)]
pub struct AutoPayMiddleware {
    inner: Arc<Inner>,
}

impl fmt::Debug for AutoPayMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoPayMiddleware")
            .field("payer", &self.inner.charge.address())
            .field("preference", &self.inner.preference)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl AutoPayMiddleware {
    fn new(
        signer: PrivateKeySigner,
        preference: Vec<Protocol>,
        budget: Budget,
        registry: Arc<NetworkRegistry>,
        escrows: Vec<(u64, Address)>,
    ) -> Self {
        let x402 = X402Client::new()
            .register("eip155:*", ExactEvmClientScheme::new(signer.clone()))
            .register("eip155:*", UptoEvmClientScheme::new(signer.clone()));
        let charge = MppChargeClient::new(signer.clone()).with_registry((*registry).clone());
        let session = SessionClient::new(signer).with_registry((*registry).clone());
        Self {
            inner: Arc::new(Inner {
                preference,
                budget: Arc::new(budget),
                x402,
                charge,
                session,
                registry,
                escrows,
                book: Mutex::new(SessionBook::default()),
                unknown_outcome_wait: DEFAULT_UNKNOWN_OUTCOME_WAIT,
            }),
        }
    }

    /// Atomic units of `asset` spent so far: payments (every signed payment that left the
    /// process, including ones the server then refused) and session voucher increments.
    pub fn spent(&self, asset: &AssetId) -> U256 {
        self.inner.budget.spent(asset)
    }

    /// Atomic units of `asset` deposited into session escrows and not (yet) spent by a
    /// voucher. They count against the total cap, also after the channel is closed: the
    /// escrow's refund cannot be verified by this client.
    pub fn escrowed(&self, asset: &AssetId) -> U256 {
        self.inner.budget.escrowed(asset)
    }

    /// Atomic units of `asset` held by payments in flight.
    pub fn reserved(&self, asset: &AssetId) -> U256 {
        self.inner.budget.reserved(asset)
    }

    /// What may still be paid or deposited in `asset` under its total cap (None: no total
    /// cap).
    pub fn remaining(&self, asset: &AssetId) -> Option<U256> {
        self.inner.budget.headroom(asset).ok().flatten()
    }
}

/// What a middleware step returns.
type MwResult<T> = Result<T, reqwest_middleware::Error>;

/// An [`AutoPayError`] as the middleware's error.
fn mw(e: AutoPayError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

/// A payment of `protocol` that could not be built or sent.
fn payment_error(protocol: Protocol, e: impl fmt::Display) -> AutoPayError {
    AutoPayError::Payment { protocol, reason: e.to_string() }
}
