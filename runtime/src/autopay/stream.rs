//! Streams metered per event over Server-Sent Events (MPP `evm`/`session`, transport draft
//! `draft-payment-transport-sse-00`): [`AutoPayMiddleware::stream`] pays the 402 as a session,
//! reads the event stream, answers `402-need-voucher` within the caps with companion requests,
//! and resumes a dropped connection with `Last-Event-ID`.
//!
//! The money rules are in the [`autopay`](super) module docs ("Metered streams").

use super::offers::{ChannelKey, OfferKind, SessionTerms, body_prefix, body_reason, receipt_of};
use super::session_book::{Channel, Slot, check_management};
use super::{AutoPayError, AutoPayMiddleware, Protocol, payment_error};
use crate::evm::U256;
use crate::mpp::stream_client::{
    DataEvent, EVENT_STREAM_CONTENT_TYPE, LAST_EVENT_ID_HEADER, MAX_SSE_EVENT_BYTES, NEED_VOUCHER_EVENT, NeedVoucher,
    SseMessage, SseParser, StreamBinding, StreamClientError, StreamFrame, StreamProblem, StreamReceipt,
    VoucherDecision, VoucherPosition, companion_request, decide_need_voucher, resume_request, voucher_step_limit,
};
use crate::mpp::{EVM_METHOD, ParsedChallenge, Receipt, SESSION_INTENT, parse_www_authenticate};
use futures::Stream;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Request, Response, StatusCode};
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument as _;

/// How many times in a row a dropped stream is reconnected, by default.
pub const DEFAULT_MAX_RECONNECTS: u32 = 3;
/// The wait before a reconnection when the stream set no `retry`, by default.
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The longest wait before a reconnection (a seller's `retry` above it is capped).
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// How [`AutoPayMiddleware::stream_with`] runs a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Reconnections in a row after a dropped connection (a data event resets the count).
    pub max_reconnects: u32,
    /// The wait before a reconnection, unless the stream set `retry`.
    pub reconnect_delay: Duration,
    /// Events paid ahead by the first request's voucher (default 1).
    pub prepaid_events: u32,
    /// The most this stream may pay in vouchers (atomic units), on top of the caps.
    pub max_spend: Option<U256>,
    /// The largest SSE event accepted (bytes).
    pub max_event_bytes: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            max_reconnects: DEFAULT_MAX_RECONNECTS,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            prepaid_events: 1,
            max_spend: None,
            max_event_bytes: MAX_SSE_EVENT_BYTES,
        }
    }
}

impl StreamOptions {
    /// Reconnects at most `n` times in a row (0: a dropped connection ends the stream).
    pub fn max_reconnects(mut self, n: u32) -> Self {
        self.max_reconnects = n;
        self
    }

    /// Waits `delay` before reconnecting when the stream set no `retry`.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Pays `n` events ahead with the first request (0: the first event asks for a voucher).
    pub fn prepaid_events(mut self, n: u32) -> Self {
        self.prepaid_events = n;
        self
    }

    /// Pays at most `cap` atomic units in vouchers on this stream.
    pub fn max_spend(mut self, cap: U256) -> Self {
        self.max_spend = Some(cap);
        self
    }

    /// Refuses SSE events above `bytes`.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }
}

/// Why a stream could not be started or went on no further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A payment the caps or the configuration refuse (nothing signed), or one that could not be
    /// built, or that the seller refused.
    #[error(transparent)]
    Payment(#[from] AutoPayError),
    /// The events could not be read (an oversized event, a malformed need-voucher) or a
    /// need-voucher asks for what a seller never needs (nothing signed).
    #[error(transparent)]
    Events(#[from] StreamClientError),
    /// The seller answered neither a 402 nor an event stream.
    #[error("the server answered HTTP {status} ({content_type}), not an event stream")]
    NotEventStream {
        /// HTTP status.
        status: u16,
        /// The `Content-Type`.
        content_type: String,
    },
    /// The seller refused to start or resume the stream.
    #[error("the server refused the stream with HTTP {status}: {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The seller's reason.
        reason: String,
    },
    /// A need-voucher would take this stream's vouchers above [`StreamOptions::max_spend`]
    /// (nothing signed).
    #[error("refusing to pay {requested} more on this stream: {paid} paid already, stream cap {cap}")]
    StreamCapExceeded {
        /// The voucher increment asked (atomic units).
        requested: U256,
        /// What the stream paid so far.
        paid: U256,
        /// The stream cap.
        cap: U256,
    },
    /// The stream's channel was closed or forgotten meanwhile (nothing signed).
    #[error("the stream's channel {channel_id} is no longer open")]
    ChannelGone {
        /// The channel.
        channel_id: String,
    },
    /// The seller refused a companion request (the signed credential stays counted).
    #[error("the seller refused the {action} companion request with HTTP {status}: {reason}")]
    Companion {
        /// `voucher`.
        action: &'static str,
        /// HTTP status.
        status: u16,
        /// The seller's reason.
        reason: String,
    },
    /// The connection dropped and could not be resumed.
    #[error("the stream dropped and {attempts} reconnection attempts failed: {reason}")]
    Disconnected {
        /// Reconnections tried.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A request of the stream failed in transport.
    #[error("HTTP error during the stream's {action}: {reason}")]
    Transport {
        /// `request`, `open`, `topUp` or `voucher`.
        action: &'static str,
        /// The error.
        reason: String,
    },
}

/// What a paid stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamItem {
    /// An application event (each counted once: events re-sent after a resume are dropped).
    Data(DataEvent),
    /// A `payment-receipt` of this stream (the last one before a clean close is final).
    Receipt(StreamReceipt),
    /// A `payment-error` of the seller (its final receipt usually follows).
    PaymentError(StreamProblem),
}

/// A stream's progress, shared between its driver and [`PaidEvents`].
#[derive(Debug, Default)]
struct Progress {
    latest: Option<StreamReceipt>,
    ended_cleanly: bool,
    paid: U256,
    reconnects: u32,
}

type Shared = Arc<Mutex<Progress>>;

fn progress(shared: &Shared) -> MutexGuard<'_, Progress> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The events of a paid stream: a [`Stream`] of [`StreamItem`]s, ending after the final receipt
/// (or with an error item). See [`AutoPayMiddleware::stream`].
pub struct PaidEvents {
    events: Pin<Box<dyn Stream<Item = Result<StreamItem, StreamError>> + Send>>,
    shared: Shared,
    binding: Option<StreamBinding>,
    initial_receipt: Option<Receipt>,
}

impl fmt::Debug for PaidEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaidEvents")
            .field("binding", &self.binding)
            .field("progress", &*progress(&self.shared))
            .finish_non_exhaustive()
    }
}

impl PaidEvents {
    /// The challenge the stream was opened under (None for a stream that asked no payment).
    pub fn challenge_id(&self) -> Option<&str> {
        self.binding.as_ref().map(|b| b.challenge_id.as_str())
    }

    /// The channel paying the stream (None for a stream that asked no payment).
    pub fn channel_id(&self) -> Option<&str> {
        self.binding.as_ref().map(|b| b.channel_id.as_str())
    }

    /// The `Payment-Receipt` header of the stream's response, when present and valid.
    pub fn initial_receipt(&self) -> Option<&Receipt> {
        self.initial_receipt.as_ref()
    }

    /// The latest receipt event of this stream.
    pub fn latest_receipt(&self) -> Option<StreamReceipt> {
        progress(&self.shared).latest.clone()
    }

    /// The final receipt: the last receipt event, once the stream has closed cleanly after it
    /// (None before, or when the stream ended with an error).
    pub fn final_receipt(&self) -> Option<StreamReceipt> {
        let p = progress(&self.shared);
        if p.ended_cleanly { p.latest.clone() } else { None }
    }

    /// Atomic units paid in vouchers for this stream (counted by the middleware as spent).
    pub fn paid(&self) -> U256 {
        progress(&self.shared).paid
    }

    /// How many times the stream was reconnected.
    pub fn reconnects(&self) -> u32 {
        progress(&self.shared).reconnects
    }
}

impl Stream for PaidEvents {
    type Item = Result<StreamItem, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}

/// What pays the stream.
struct Payment {
    challenge: ParsedChallenge,
    binding: StreamBinding,
    terms: SessionTerms,
    key: ChannelKey,
    slot: Slot,
    /// The highest voucher sent in answer to a need-voucher.
    answered: Option<U256>,
    /// The most one need-voucher may add.
    step_limit: U256,
}

fn transport(action: &'static str) -> impl Fn(reqwest::Error) -> StreamError {
    move |e| StreamError::Transport { action, reason: e.to_string() }
}

fn bad_header(e: http::Error) -> StreamError {
    StreamError::Payment(payment_error(Protocol::MppSession, e))
}

fn is_event_stream(resp: &Response) -> bool {
    content_type(resp).to_ascii_lowercase().starts_with(EVENT_STREAM_CONTENT_TYPE)
}

fn content_type(resp: &Response) -> String {
    resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

impl AutoPayMiddleware {
    /// Requests the event stream `request` with `http` and pays for it per event, with the
    /// default [`StreamOptions`]. See [`AutoPayMiddleware::stream_with`].
    pub async fn stream(&self, http: &reqwest::Client, request: Request) -> Result<PaidEvents, StreamError> {
        self.stream_with(http, request, StreamOptions::default()).await
    }

    /// Requests the event stream `request` (sent first without payment, with
    /// `Accept: text/event-stream`) and, on a 402 offering an MPP `evm`/`session` challenge, pays
    /// it as a session: the channel of (realm, payee, token, chain, escrow) is opened (or reused,
    /// topped up when needed), then the request is resent with a voucher pre-paying
    /// [`StreamOptions::prepaid_events`] events. The answer must be `200 text/event-stream`.
    /// A stream that asks no payment is read as is.
    ///
    /// The returned [`PaidEvents`] yields data events and receipts; it answers `402-need-voucher`
    /// events itself (the money rules are in the [`autopay`](super) docs, "Metered streams"), with
    /// companion requests
    /// to the same method and URL, and reconnects a dropped connection with `Last-Event-ID`.
    ///
    /// `http` should follow no redirects and have no total timeout (a stream lasts); the stream
    /// requests do not go through the middleware (each stream is paid under its own challenge).
    /// Requests on the stream's channel from other callers wait while a voucher is being sent.
    pub async fn stream_with(
        &self,
        http: &reqwest::Client,
        mut request: Request,
        options: StreamOptions,
    ) -> Result<PaidEvents, StreamError> {
        request.headers_mut().remove(AUTHORIZATION);
        request.headers_mut().remove(LAST_EVENT_ID_HEADER);
        request.headers_mut().insert(ACCEPT, HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE));
        let span = tracing::info_span!(
            "pay402.autopay.stream",
            method = %request.method(),
            url = %format_args!("{}{}", request.url().origin().ascii_serialization(), request.url().path()),
            channel = tracing::field::Empty,
        );
        self.start(http, request, options, span.clone()).instrument(span).await
    }

    async fn start(
        &self,
        http: &reqwest::Client,
        mut original: Request,
        options: StreamOptions,
        span: tracing::Span,
    ) -> Result<PaidEvents, StreamError> {
        let first = original.try_clone().ok_or(AutoPayError::BodyNotCloneable)?;
        let resp = http.execute(first).await.map_err(transport("request"))?;
        let status = resp.status();
        let driver = |resp, pay: Option<Payment>, shared: Shared| Driver {
            mw: self.clone(),
            http: http.clone(),
            original: None,
            parser: SseParser::with_limit(options.max_event_bytes),
            options: options.clone(),
            response: Some(resp),
            pay,
            queue: VecDeque::new(),
            last_id: None,
            last_number: None,
            last_was_receipt: false,
            retry: None,
            failures: 0,
            last_drop: String::new(),
            shared,
            done: false,
            span: span.clone(),
        };
        if status.is_success() && is_event_stream(&resp) {
            tracing::info!("pay402 autopay: the stream asks no payment");
            let shared = Shared::default();
            let mut d = driver(resp, None, Arc::clone(&shared));
            d.original = Some(original);
            return Ok(events(d, shared, None, None));
        }
        if status != StatusCode::PAYMENT_REQUIRED {
            return Err(unexpected(resp).await);
        }
        if resp.url().origin() != original.url().origin() {
            return Err(AutoPayError::CrossOriginChallenge { origin: resp.url().origin().ascii_serialization() }.into());
        }
        *original.url_mut() = resp.url().clone();
        let challenge = self.stream_challenge(&resp)?;
        let (pay, resp, paid) = self.pay_stream(http, &original, challenge, &options).await?;
        span.record("channel", tracing::field::display(&pay.binding.channel_id));
        let binding = pay.binding.clone();
        let initial = receipt_of(&resp);
        let shared = Shared::default();
        progress(&shared).paid = paid;
        let mut d = driver(resp, Some(pay), Arc::clone(&shared));
        d.original = Some(original);
        Ok(events(d, shared, Some(binding), initial))
    }

    /// The first MPP `evm`/`session` challenge of a 402.
    fn stream_challenge(&self, resp: &Response) -> Result<ParsedChallenge, StreamError> {
        let www: Vec<&str> = resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
        let challenges = parse_www_authenticate(&www).unwrap_or_default();
        let offered = challenges.iter().map(|c| format!("mpp {}/{}", c.method, c.intent)).collect();
        challenges
            .into_iter()
            .find(|c| c.method == EVM_METHOD && c.intent == SESSION_INTENT && self.enabled(Protocol::MppSession))
            .ok_or(StreamError::Payment(AutoPayError::NoAcceptableChallenge { offered }))
    }

    /// Opens (or reuses, topping up) the channel and sends the stream request with its first
    /// voucher. Returns the payment, the response and the voucher increment paid.
    async fn pay_stream(
        &self,
        http: &reqwest::Client,
        original: &Request,
        challenge: ParsedChallenge,
        options: &StreamOptions,
    ) -> Result<(Payment, Response, U256), StreamError> {
        let mut offer = self.mpp_offer(challenge.clone()).ok_or_else(|| {
            StreamError::Payment(payment_error(Protocol::MppSession, "the session challenge is malformed"))
        })?;
        self.prepare(&mut offer).await?;
        let OfferKind::Session { key, suggested_deposit, .. } = offer.kind else {
            return Err(payment_error(Protocol::MppSession, "not a session challenge").into());
        };
        let terms = SessionTerms { asset: offer.asset, price: offer.amount, suggested_deposit };
        let budget = &self.inner.budget;
        budget.check_request(&terms.asset, terms.price)?;
        let step_limit = voucher_step_limit(&challenge, terms.price)?;
        let mut increment = terms
            .price
            .checked_mul(U256::from(options.prepaid_events))
            .ok_or_else(|| payment_error(Protocol::MppSession, "the prepaid amount overflows"))?;
        if !increment.is_zero() {
            // A voucher raising the highest one by less than the minimum increase is refused.
            increment = increment.max(step_limit);
        }
        if let Some(cap) = options.max_spend.filter(|cap| increment > *cap) {
            return Err(StreamError::StreamCapExceeded { requested: increment, paid: U256::ZERO, cap });
        }
        let reservation = budget.reserve_voucher(&terms.asset, increment)?;
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            self.check_escrow(&challenge)?;
            let deposit = self.deposit_covering(&terms, increment)?;
            let hold = budget.reserve_deposit(&terms.asset, deposit)?;
            let (channel_id, header) = self
                .inner
                .session
                .open_header(&challenge, deposit)
                .map_err(|e| payment_error(Protocol::MppSession, e))?;
            let sent = self.management(http, original, &header, "open", &channel_id).await;
            // The deposit authorization has left the process: counted, accepted or not.
            hold.commit();
            sent?;
            tracing::info!(channel = %channel_id, %deposit, "pay402 autopay: channel opened for a stream");
            *guard = Some(Channel {
                id: channel_id,
                deposit,
                cumulative: U256::ZERO,
                challenge: challenge.clone(),
                url: original.url().clone(),
                method: original.method().clone(),
            });
        }
        let Some(channel) = guard.as_mut() else {
            return Err(payment_error(Protocol::MppSession, "the session channel vanished").into());
        };
        let cumulative = channel.cumulative.saturating_add(increment);
        if cumulative > channel.deposit {
            let needed = cumulative - channel.deposit;
            self.top_up(http, original, channel, &challenge, &terms, needed).await?;
        }
        let header = self
            .inner
            .session
            .voucher_header(&challenge, &channel.id, cumulative)
            .map_err(|e| payment_error(Protocol::MppSession, e))?;
        let mut req = original.try_clone().ok_or(AutoPayError::BodyNotCloneable)?;
        req.headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_str(&header).map_err(http::Error::from).map_err(bad_header)?);
        channel.cumulative = cumulative;
        let binding = StreamBinding::new(challenge.id.clone(), channel.id.clone());
        // The voucher leaves the process: a signed voucher is claimable.
        reservation.commit();
        let resp = http.execute(req).await.map_err(transport("request"))?;
        let status = resp.status();
        if status == StatusCode::GONE {
            *guard = None;
            self.forget_channel(&key);
        }
        if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::GONE {
            let reason = body_reason(resp).await;
            tracing::warn!(%status, %reason, "pay402 autopay: the stream's voucher was refused; it stays counted");
            return Err(AutoPayError::PaymentRejected {
                protocol: Protocol::MppSession,
                status: status.as_u16(),
                reason,
            }
            .into());
        }
        if !status.is_success() || !is_event_stream(&resp) {
            return Err(unexpected(resp).await);
        }
        drop(guard);
        tracing::info!(%increment, %cumulative, "pay402 autopay: stream paid");
        let pay = Payment { challenge, binding, terms, key, slot, answered: None, step_limit };
        Ok((pay, resp, increment))
    }

    /// Tops `channel` up by at least `needed` (bounded by the maximum deposit and the total
    /// budget, checked before signing), with a `topUp` management request.
    async fn top_up(
        &self,
        http: &reqwest::Client,
        original: &Request,
        channel: &mut Channel,
        challenge: &ParsedChallenge,
        terms: &SessionTerms,
        needed: U256,
    ) -> Result<(), StreamError> {
        self.check_escrow(challenge)?;
        let amount = self.deposit_covering(terms, needed)?;
        let hold = self.inner.budget.reserve_deposit(&terms.asset, amount)?;
        let header = self
            .inner
            .session
            .top_up_header(challenge, &channel.id, amount)
            .map_err(|e| payment_error(Protocol::MppSession, e))?;
        let sent = self.management(http, original, &header, "topUp", &channel.id).await;
        // The top-up authorization has left the process: counted whatever the answer.
        hold.commit();
        sent?;
        channel.deposit = channel.deposit.saturating_add(amount);
        tracing::info!(channel = %channel.id, %amount, "pay402 autopay: channel topped up for a stream");
        Ok(())
    }

    /// Sends a management action (`open`, `topUp`) to the stream's method and URL.
    async fn management(
        &self,
        http: &reqwest::Client,
        original: &Request,
        header: &str,
        action: &'static str,
        channel_id: &str,
    ) -> Result<(), StreamError> {
        let req = companion_request(original.method(), original.url(), header).map_err(bad_header)?;
        let resp = http.execute(req).await.map_err(transport(action))?;
        check_management(resp, action, channel_id).await.map_err(StreamError::from)
    }
}

/// An answer that is neither a 402 nor an event stream.
async fn unexpected(resp: Response) -> StreamError {
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return StreamError::NotEventStream { status, content_type: content_type(&resp) };
    }
    StreamError::Refused { status, reason: body_reason(resp).await }
}

fn events(
    driver: Driver,
    shared: Shared,
    binding: Option<StreamBinding>,
    initial_receipt: Option<Receipt>,
) -> PaidEvents {
    let events = futures::stream::unfold(driver, |mut d| async move {
        let span = d.span.clone();
        let item = d.next().instrument(span).await?;
        Some((item, d))
    });
    PaidEvents { events: Box::pin(events), shared, binding, initial_receipt }
}

/// Reads one stream: parses events, answers need-vouchers, reconnects.
struct Driver {
    mw: AutoPayMiddleware,
    http: reqwest::Client,
    /// The stream request without payment (for reconnections).
    original: Option<Request>,
    pay: Option<Payment>,
    options: StreamOptions,
    response: Option<Response>,
    parser: SseParser,
    queue: VecDeque<SseMessage>,
    /// The id of the last data event delivered.
    last_id: Option<String>,
    /// The same, as a number (events at or below it are not delivered twice).
    last_number: Option<u64>,
    last_was_receipt: bool,
    /// The stream's `retry`, kept across reconnections.
    retry: Option<Duration>,
    /// Reconnections in a row.
    failures: u32,
    last_drop: String,
    shared: Shared,
    done: bool,
    span: tracing::Span,
}

impl Driver {
    async fn next(&mut self) -> Option<Result<StreamItem, StreamError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(message) = self.queue.pop_front() {
                match self.handle(message).await {
                    Ok(Some(item)) => return Some(Ok(item)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(self.fail(e))),
                }
            }
            let Some(resp) = self.response.as_mut() else {
                match self.reconnect().await {
                    Ok(()) => continue,
                    Err(e) => return Some(Err(self.fail(e))),
                }
            };
            match resp.chunk().await {
                Ok(Some(bytes)) => match self.parser.push(&bytes) {
                    Ok(messages) => {
                        self.retry = self.parser.retry().or(self.retry);
                        self.queue.extend(messages);
                    }
                    Err(e) => return Some(Err(self.fail(e.into()))),
                },
                Ok(None) if self.last_was_receipt => {
                    self.response = None;
                    self.done = true;
                    progress(&self.shared).ended_cleanly = true;
                    tracing::info!("pay402 autopay: stream ended");
                    return None;
                }
                Ok(None) => self.dropped("the connection closed without a final receipt".into()),
                Err(e) => self.dropped(e.to_string()),
            }
        }
    }

    fn dropped(&mut self, reason: String) {
        tracing::warn!(%reason, last_event_id = ?self.last_id, "pay402 autopay: stream connection dropped");
        self.response = None;
        self.last_drop = reason;
    }

    fn fail(&mut self, e: StreamError) -> StreamError {
        tracing::warn!(error = %e, "pay402 autopay: stream ended with an error");
        self.done = true;
        self.response = None;
        e
    }

    async fn handle(&mut self, message: SseMessage) -> Result<Option<StreamItem>, StreamError> {
        let need_voucher = message.event.as_deref() == Some(NEED_VOUCHER_EVENT);
        let frame = match StreamFrame::from_message(message) {
            Ok(frame) => frame,
            // Fail closed: a need-voucher that cannot be read is never paid, and the seller
            // waits for a voucher: the stream is over.
            Err(e) if need_voucher => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "pay402 autopay: malformed payment event ignored");
                return Ok(None);
            }
        };
        match frame {
            StreamFrame::Data(event) => {
                self.last_was_receipt = false;
                if let Some(n) = event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) {
                    if self.last_number.is_some_and(|last| n <= last) {
                        tracing::debug!(id = n, "pay402 autopay: event already delivered; skipped");
                        return Ok(None);
                    }
                    self.last_number = Some(n);
                }
                if event.id.is_some() {
                    self.last_id.clone_from(&event.id);
                }
                self.failures = 0;
                Ok(Some(StreamItem::Data(event)))
            }
            StreamFrame::Receipt(receipt) => {
                let Some(pay) = &self.pay else {
                    tracing::warn!("pay402 autopay: receipt on a stream that asked no payment ignored");
                    return Ok(None);
                };
                if !pay.binding.matches(&receipt.challenge_id, &receipt.channel_id) {
                    tracing::warn!(
                        challenge = %receipt.challenge_id, channel = %receipt.channel_id,
                        "pay402 autopay: receipt of another stream ignored"
                    );
                    return Ok(None);
                }
                self.last_was_receipt = true;
                progress(&self.shared).latest = Some(receipt.clone());
                Ok(Some(StreamItem::Receipt(receipt)))
            }
            StreamFrame::PaymentError(problem) => {
                self.last_was_receipt = false;
                tracing::warn!(status = problem.status, title = %problem.title, "pay402 autopay: payment error on the stream");
                Ok(Some(StreamItem::PaymentError(problem)))
            }
            StreamFrame::NeedVoucher(need) => {
                self.last_was_receipt = false;
                self.answer(need).await.map(|()| None)
            }
        }
    }

    /// Answers a need-voucher within the caps (see the module docs).
    async fn answer(&mut self, need: NeedVoucher) -> Result<(), StreamError> {
        let Some(pay) = self.pay.as_mut() else {
            tracing::warn!("pay402 autopay: need-voucher on a stream that asked no payment ignored");
            return Ok(());
        };
        let (mw, budget) = (&self.mw, &self.mw.inner.budget);
        let slot = Arc::clone(&pay.slot);
        let mut guard = slot.lock().await;
        let Some(channel) = guard.as_mut().filter(|c| c.id.eq_ignore_ascii_case(&pay.binding.channel_id)) else {
            return Err(StreamError::ChannelGone { channel_id: pay.binding.channel_id.clone() });
        };
        let mut position = VoucherPosition::new(channel.cumulative, channel.deposit, pay.step_limit);
        if let Some(sent) = pay.answered {
            position = position.answered(sent);
        }
        let (cumulative, increment, top_up) = match decide_need_voucher(&need, &pay.binding, position)? {
            VoucherDecision::Ignore { reason } => {
                tracing::warn!(
                    challenge = %need.challenge_id, channel = %need.channel_id, reason,
                    "pay402 autopay: need-voucher ignored, nothing paid"
                );
                return Ok(());
            }
            VoucherDecision::Voucher { cumulative, increment } => (cumulative, increment, None),
            VoucherDecision::TopUpThenVoucher { at_least, cumulative, increment } => {
                (cumulative, increment, Some(at_least))
            }
        };
        // Every cap is checked before anything is signed.
        let paid = progress(&self.shared).paid;
        if let Some(cap) = self.options.max_spend.filter(|cap| paid.saturating_add(increment) > *cap) {
            return Err(StreamError::StreamCapExceeded { requested: increment, paid, cap });
        }
        let reservation = budget.reserve_voucher(&pay.terms.asset, increment)?;
        let original = self.original.as_ref().ok_or(AutoPayError::BodyNotCloneable)?;
        if let Some(needed) = top_up {
            mw.top_up(&self.http, original, channel, &pay.challenge, &pay.terms, needed).await?;
        }
        let header = mw
            .inner
            .session
            .voucher_header(&pay.challenge, &channel.id, cumulative)
            .map_err(|e| payment_error(Protocol::MppSession, e))?;
        let req = companion_request(original.method(), original.url(), &header).map_err(bad_header)?;
        channel.cumulative = channel.cumulative.max(cumulative);
        reservation.commit();
        pay.answered = Some(cumulative);
        progress(&self.shared).paid = paid.saturating_add(increment);
        tracing::info!(%cumulative, %increment, "pay402 autopay: need-voucher answered");
        let resp = self.http.execute(req).await.map_err(transport("voucher"))?;
        check_voucher_answer(resp, &channel.id, cumulative).await
    }

    /// Reconnects after a drop: the original request with `Last-Event-ID` and a voucher for the
    /// amount already signed, under the stream's challenge. At most
    /// [`StreamOptions::max_reconnects`] attempts in a row; a refusal (4xx) ends the stream.
    async fn reconnect(&mut self) -> Result<(), StreamError> {
        let original = self.original.as_ref().ok_or(AutoPayError::BodyNotCloneable)?;
        loop {
            if self.failures >= self.options.max_reconnects {
                return Err(StreamError::Disconnected {
                    attempts: self.failures,
                    reason: std::mem::take(&mut self.last_drop),
                });
            }
            self.failures += 1;
            progress(&self.shared).reconnects += 1;
            let delay = self.retry.unwrap_or(self.options.reconnect_delay).min(MAX_RECONNECT_DELAY);
            tokio::time::sleep(delay).await;
            let req = match &self.pay {
                Some(pay) => {
                    let guard = pay.slot.lock().await;
                    let Some(channel) = guard.as_ref().filter(|c| c.id.eq_ignore_ascii_case(&pay.binding.channel_id))
                    else {
                        return Err(StreamError::ChannelGone { channel_id: pay.binding.channel_id.clone() });
                    };
                    let header = self
                        .mw
                        .inner
                        .session
                        .voucher_header(&pay.challenge, &channel.id, channel.cumulative)
                        .map_err(|e| payment_error(Protocol::MppSession, e))?;
                    resume_request(original, &header, self.last_id.as_deref()).map_err(bad_header)?
                }
                None => {
                    let mut req = original.try_clone();
                    if let (Some(req), Some(id)) = (req.as_mut(), self.last_id.as_deref()) {
                        let id = HeaderValue::from_str(id).map_err(http::Error::from).map_err(bad_header)?;
                        req.headers_mut().insert(LAST_EVENT_ID_HEADER, id);
                    }
                    req
                }
            };
            let req = req.ok_or(AutoPayError::BodyNotCloneable)?;
            tracing::info!(attempt = self.failures, last_event_id = ?self.last_id, "pay402 autopay: resuming the stream");
            match self.http.execute(req).await {
                Ok(resp) if resp.status().is_success() && is_event_stream(&resp) => {
                    self.response = Some(resp);
                    self.parser = SseParser::with_limit(self.options.max_event_bytes);
                    return Ok(());
                }
                Ok(resp) if resp.status().is_client_error() || resp.status().is_success() => {
                    if resp.status() == StatusCode::GONE
                        && let Some(pay) = &self.pay
                    {
                        // The seller no longer knows the channel: forget it.
                        let mut guard = pay.slot.lock().await;
                        if guard.as_ref().is_some_and(|c| c.id.eq_ignore_ascii_case(&pay.binding.channel_id)) {
                            *guard = None;
                        }
                        drop(guard);
                        self.mw.forget_channel(&pay.key);
                    }
                    return Err(unexpected(resp).await);
                }
                Ok(resp) => self.last_drop = format!("HTTP {}", resp.status()),
                Err(e) => self.last_drop = e.to_string(),
            }
        }
    }
}

/// A voucher companion must be answered 200 `{"status":"ok","channelId":…,"acceptedCumulative":…}`.
async fn check_voucher_answer(resp: Response, channel_id: &str, cumulative: U256) -> Result<(), StreamError> {
    let status = resp.status();
    if status != StatusCode::OK {
        let reason = body_reason(resp).await;
        return Err(StreamError::Companion { action: "voucher", status: status.as_u16(), reason });
    }
    let refused = |reason: &str| StreamError::Companion { action: "voucher", status: 200, reason: reason.into() };
    let json: Value =
        serde_json::from_slice(&body_prefix(resp).await).map_err(|_| refused("the answer is not JSON"))?;
    if json.get("status").and_then(Value::as_str) != Some("ok") {
        return Err(refused("the answer's status is not \"ok\""));
    }
    match json.get("channelId").and_then(Value::as_str) {
        Some(id) if id.eq_ignore_ascii_case(channel_id) => {}
        _ => return Err(refused("the answer names another channel")),
    }
    let accepted =
        json.get("acceptedCumulative").and_then(Value::as_str).and_then(|s| crate::evm::parse_uint256(s).ok());
    if accepted.is_none_or(|a| a < cumulative) {
        tracing::warn!(?accepted, %cumulative, "pay402 autopay: the seller reports accepting less than the voucher sent");
    }
    Ok(())
}
