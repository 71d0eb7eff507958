//! Metered Server-Sent Events: a `session` route priced per event
//! ([`Per::Event`](super::Per::Event)) streams its handler's [`SseEvent`]s through the channel's
//! [`EventMeter`], following the MPP SSE transport draft
//! (`draft-payment-transport-sse-00`).
//!
//! The handler takes a [`PaidStream`] and returns [`PaidStream::sse`]. Then, for each event:
//!
//! 1. its price is **reserved** on the channel (one compare-and-swap, which also commits the
//!    previous event) — when the buyer's vouchers do not cover it, delivery pauses with a
//!    `402-need-voucher` event until a companion voucher (or top-up) arrives or
//!    [`StreamConfig::voucher_timeout`](super::StreamConfig::voucher_timeout) ends the stream;
//! 2. it is sent as `id: <n>` + `data:` lines (ids count the stream's events from 1, across
//!    resumes);
//! 3. once handed to the connection it is **committed** (on the next step, or by a detached
//!    commit when the connection drops: an event handed over counts as delivered; the buyer gets
//!    it again, free, when it resumes with `Last-Event-ID`). A reservation whose event was never
//!    handed over is released.
//!
//! A clean end (the handler's stream ended, the voucher timeout, a closed channel) always sends a
//! final `payment-receipt` event: `{"method","intent","status","timestamp","challengeId",
//! "channelId","acceptedCumulative","spent","units"}`, where `spent` and `units` are this stream's
//! events and their price. A closed channel or a failing store first sends `payment-error` (a
//! problem object) and stops: fail closed.

use super::metering::{Books, EventMeter, MeterStep, StreamStart};
use super::wire::{EVM_METHOD, SESSION_INTENT};
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The content type of an SSE response.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";
/// The SSE event that pauses a metered stream until the buyer sends a voucher.
pub const NEED_VOUCHER_EVENT: &str = "402-need-voucher";
/// The SSE event carrying a receipt (the last one before a clean close is the final receipt).
pub const PAYMENT_RECEIPT_EVENT: &str = "payment-receipt";
/// The SSE event carrying a payment problem (`{"type","title","status","detail"}`).
pub const PAYMENT_ERROR_EVENT: &str = "payment-error";

/// One Server-Sent Event of a handler's stream: its data and, optionally, its event name. Ids
/// are assigned by the stream.
///
/// ```
/// use pay402_runtime::mpp::SseEvent;
///
/// let e = SseEvent::data("hello\nworld").event("token");
/// assert_eq!(e.name(), Some("token"));
/// assert_eq!(e.text(), "hello\nworld");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    event: Option<String>,
    data: String,
}

impl SseEvent {
    /// An event carrying `text` (several lines become several `data:` lines).
    pub fn data(text: impl Into<String>) -> Self {
        Self { event: None, data: text.into() }
    }

    /// An event carrying `value` as compact JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self::data)
    }

    /// Names the event (`event:`). Line breaks are removed (they would end the field). The
    /// payment events' names (`payment-receipt`, `payment-error`, `402-…`) are reserved: a
    /// handler event using one is sent unnamed, so a buyer never mistakes data for payment.
    pub fn event(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into().chars().filter(|c| *c != '\r' && *c != '\n').collect();
        let reserved = name == PAYMENT_RECEIPT_EVENT || name == PAYMENT_ERROR_EVENT || name.starts_with("402-");
        self.event = (!name.is_empty() && !reserved).then_some(name);
        self
    }

    /// The event name, if any.
    pub fn name(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The data.
    pub fn text(&self) -> &str {
        &self.data
    }
}

/// Appends one SSE event: `id:`, `event:`, one `data:` line per line of `data`, a blank line.
fn encode(out: &mut String, id: Option<u64>, event: Option<&str>, data: &str) {
    use std::fmt::Write as _;
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    if let Some(event) = event {
        let _ = writeln!(out, "event: {event}");
    }
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// A payment event: a named event with single-line JSON data.
fn payment_event(name: &str, data: &Map<String, Value>) -> Bytes {
    let mut out = String::new();
    encode(&mut out, None, Some(name), &Value::Object(data.clone()).to_string());
    Bytes::from(out)
}

/// An SSE response body: a handler's events, metered ([`PaidStream::sse`]) or not
/// ([`EventStream::unmetered`]). The axum and actix-web glue serve it as `text/event-stream`
/// with `Cache-Control: no-cache`; [`EventStream::into_frames`] gives the encoded frames to any
/// other server.
pub struct EventStream {
    frames: BoxStream<'static, Bytes>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// Events sent as they come, numbered from 1, without payment (a free route).
    pub fn unmetered(events: impl Stream<Item = SseEvent> + Send + 'static) -> Self {
        let frames = events.enumerate().map(|(i, e)| {
            let mut out = String::new();
            encode(&mut out, Some(i as u64 + 1), e.name(), e.text());
            Bytes::from(out)
        });
        Self { frames: frames.boxed() }
    }

    /// The encoded SSE frames.
    pub fn into_frames(self) -> BoxStream<'static, Bytes> {
        self.frames
    }

    /// A stream that cannot be served (a [`PaidStream`] used twice): one `payment-error`.
    fn refused(detail: &str) -> Self {
        let frame = payment_event(PAYMENT_ERROR_EVENT, &problem(500, "internal-error", "Stream Refused", detail));
        Self { frames: futures::stream::once(async move { frame }).boxed() }
    }
}

/// A problem object (`{"type","title","status","detail"}`).
fn problem(status: u16, slug: &str, title: &str, detail: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::String(format!("{}{slug}", super::problem::PROBLEM_BASE)));
    m.insert("title".into(), Value::String(title.into()));
    m.insert("status".into(), Value::from(status));
    m.insert("detail".into(), Value::String(detail.into()));
    m
}

/// A verified request to a per-event route: the handler's way to stream paid events. Injected
/// into `#[pay(intent = "session", per = "event")]` handlers and extracted by the axum and
/// actix-web extractors on route-table routes. Cheap to clone; only one [`PaidStream::sse`]
/// streams.
///
/// A handler that answers below 400 without streaming is charged one event (never served free).
///
/// Companion vouchers and resumes carry the stream's challenge, which must still be valid: the
/// route's `expires_in` (one hour by default on per-event routes,
/// [`STREAM_CHALLENGE_TTL`](super::STREAM_CHALLENGE_TTL)) bounds how long a stream can take new
/// vouchers and be resumed — give longer streams a longer one.
#[derive(Clone)]
pub struct PaidStream {
    slot: Arc<Slot>,
}

struct Slot {
    start: Mutex<Option<StreamStart>>,
    challenge_id: String,
    channel_id: String,
    resume_from: u64,
    delivered: u64,
}

impl fmt::Debug for PaidStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaidStream")
            .field("challenge_id", &self.slot.challenge_id)
            .field("channel_id", &self.slot.channel_id)
            .field("resume_from", &self.slot.resume_from)
            .finish_non_exhaustive()
    }
}

impl PaidStream {
    pub(crate) fn new(start: StreamStart) -> Self {
        Self {
            slot: Arc::new(Slot {
                challenge_id: start.challenge_id.clone(),
                channel_id: start.channel_id.clone(),
                resume_from: start.resume_from,
                delivered: start.delivered,
                start: Mutex::new(Some(start)),
            }),
        }
    }

    /// The events the buyer already has (its `Last-Event-ID`; 0 for a new stream).
    /// [`PaidStream::sse`] skips that many items of the handler's stream.
    pub fn resume_from(&self) -> u64 {
        self.slot.resume_from
    }

    /// The events of this stream delivered and charged before this request (re-sent free when
    /// the buyer resumes below it).
    pub fn delivered(&self) -> u64 {
        self.slot.delivered
    }

    /// A stream that cannot start (no per-event payment behind it): [`PaidStream::sse`] answers
    /// a `payment-error` and nothing else. (For the macro guards' injected parameter.)
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn unavailable() -> Self {
        Self {
            slot: Arc::new(Slot {
                start: Mutex::new(None),
                challenge_id: String::new(),
                channel_id: String::new(),
                resume_from: 0,
                delivered: 0,
            }),
        }
    }

    /// The challenge id the stream and its companion requests are correlated by.
    pub fn challenge_id(&self) -> &str {
        &self.slot.challenge_id
    }

    /// The channel paying for the stream.
    pub fn channel_id(&self) -> &str {
        &self.slot.channel_id
    }

    /// Streams `events` (the whole stream, from its first event) metered per event. On a resume
    /// the first [`resume_from`](Self::resume_from) items are skipped: a deterministic handler
    /// needs nothing else.
    pub fn sse(self, events: impl Stream<Item = SseEvent> + Send + 'static) -> EventStream {
        let skip = self.slot.resume_from;
        self.sse_from(0, events, skip)
    }

    /// Streams `events` whose first item is the stream's event `first + 1` (a handler that can
    /// start where the buyer resumes: pass [`resume_from`](Self::resume_from)). `first` above
    /// `resume_from` is refused (events the buyer never got would be skipped).
    pub fn sse_starting_at(self, first: u64, events: impl Stream<Item = SseEvent> + Send + 'static) -> EventStream {
        let Some(skip) = self.slot.resume_from.checked_sub(first) else {
            tracing::error!(
                first,
                resume_from = self.slot.resume_from,
                "mpp stream: events start after the buyer's position"
            );
            return EventStream::refused("the stream cannot start there");
        };
        self.sse_from(first, events, skip)
    }

    fn sse_from(self, first: u64, events: impl Stream<Item = SseEvent> + Send + 'static, skip: u64) -> EventStream {
        let Some(start) = self.take() else {
            tracing::error!(challenge = %self.slot.challenge_id, "mpp stream: PaidStream::sse called twice");
            return EventStream::refused("the stream was already started");
        };
        let engine = Engine::new(start, events.boxed(), first, skip);
        let frames = futures::stream::unfold(engine, |mut e| async move { e.next_frame().await.map(|f| (f, e)) });
        EventStream { frames: frames.boxed() }
    }

    /// The stream's start, if no `sse` took it (the payment's completion charges one event).
    pub(crate) fn take(&self) -> Option<StreamStart> {
        self.slot.start.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The state of the event in flight (by its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Nothing reserved.
    Nothing,
    /// Reserved, not yet handed to the connection.
    Reserved(u64),
    /// Handed to the connection, to commit.
    Handed(u64),
}

impl Held {
    /// The id of the event handed over, to commit.
    fn handed(self) -> Option<u64> {
        match self {
            Self::Handed(i) => Some(i),
            _ => None,
        }
    }
}

enum Phase {
    Streaming,
    /// Waiting for money; the event that did not fit.
    Paused {
        event: SseEvent,
        since: Instant,
        quiet_since: Instant,
    },
    /// Sending the last frames (an optional problem, then the final receipt).
    Ending {
        error: Option<Map<String, Value>>,
    },
    Done,
}

/// The metering state machine behind a [`PaidStream::sse`] body.
struct Engine {
    meter: Option<Arc<dyn EventMeter>>,
    start: StreamStart,
    events: BoxStream<'static, SseEvent>,
    skip: u64,
    /// The id of the last event sent (or the buyer's position on a resume).
    index: u64,
    held: Held,
    phase: Phase,
    books: Books,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(meter) = self.meter.take() else { return };
        let (held, channel) = (self.held, self.start.channel_id.clone());
        match held {
            Held::Nothing => {}
            Held::Handed(index) => {
                tracing::info!(channel = %channel, "mpp stream: connection dropped; committing the event handed over");
                crate::completion::detach(async move {
                    if let Err(e) = meter.step(Some(index), None).await {
                        tracing::error!(error = %e, channel = %channel, "mpp stream: cannot commit the last event");
                    }
                });
            }
            Held::Reserved(_) => {
                crate::completion::detach(async move {
                    if let Err(e) = meter.release().await {
                        tracing::error!(error = %e, channel = %channel, "mpp stream: cannot release a reservation");
                    }
                });
            }
        }
    }
}

impl Engine {
    /// The engine of `start`, over handler `events` whose first item is event `first + 1`, of
    /// which `skip` are skipped (the buyer has them): the next id is `resume_from + 1`.
    fn new(start: StreamStart, events: BoxStream<'static, SseEvent>, first: u64, skip: u64) -> Self {
        debug_assert_eq!(first.saturating_add(skip), start.resume_from);
        let books = Books { delivered: start.delivered, ..Books::default() };
        Self {
            meter: Some(Arc::clone(&start.meter)),
            index: start.resume_from,
            start,
            events,
            skip,
            held: Held::Nothing,
            phase: Phase::Streaming,
            books,
        }
    }

    fn meter(&self) -> Option<Arc<dyn EventMeter>> {
        self.meter.clone()
    }

    /// Sends `event` as the next id; its reservation (if any) is now handed over.
    fn send(&mut self, event: &SseEvent) -> Bytes {
        self.index += 1;
        if let Held::Reserved(i) = self.held {
            self.held = Held::Handed(i);
        }
        let mut out = String::new();
        encode(&mut out, Some(self.index), event.name(), event.text());
        Bytes::from(out)
    }

    fn need_voucher(&self, b: &Books) -> Bytes {
        let required = b.required_cumulative(self.start.price);
        let mut m = Map::new();
        m.insert("challengeId".into(), Value::String(self.start.challenge_id.clone()));
        m.insert("channelId".into(), Value::String(self.start.channel_id.clone()));
        m.insert("requiredCumulative".into(), Value::String(required.to_string()));
        m.insert("acceptedCumulative".into(), Value::String(b.highest.to_string()));
        m.insert("deposit".into(), Value::String(b.deposit.to_string()));
        m.insert("spent".into(), Value::String(b.spent.to_string()));
        payment_event(NEED_VOUCHER_EVENT, &m)
    }

    fn receipt(&self) -> Bytes {
        let mut m = Map::new();
        m.insert("method".into(), Value::String(EVM_METHOD.into()));
        m.insert("intent".into(), Value::String(SESSION_INTENT.into()));
        m.insert("status".into(), Value::String(super::receipt::RECEIPT_STATUS_SUCCESS.into()));
        m.insert("timestamp".into(), Value::String(super::expiry::python_isoformat_z(time::OffsetDateTime::now_utc())));
        m.insert("challengeId".into(), Value::String(self.start.challenge_id.clone()));
        m.insert("channelId".into(), Value::String(self.start.channel_id.clone()));
        m.insert("acceptedCumulative".into(), Value::String(self.books.highest.to_string()));
        let spent = u128::from(self.books.delivered).saturating_mul(self.start.price);
        m.insert("spent".into(), Value::String(spent.to_string()));
        m.insert("units".into(), Value::from(self.books.delivered));
        payment_event(PAYMENT_RECEIPT_EVENT, &m)
    }

    /// Records a step's books (the delivered count only grows).
    fn note(&mut self, step: &MeterStep) {
        let b = step.books();
        if b != Books::default() {
            self.books = b;
        }
    }

    /// The failure of a step: the stream ends after a `payment-error`.
    fn failed(&mut self, e: &super::metering::MeterError) {
        tracing::error!(error = %e, channel = %self.start.channel_id, "mpp stream: metering failed; ending the stream");
        self.phase = Phase::Ending {
            error: Some(problem(503, "internal-error", "Metering Failed", "the stream's payment state is unavailable")),
        };
    }

    /// A newer connection resumed the stream: this one ends (its buyer is gone).
    fn superseded(&mut self) {
        tracing::info!(channel = %self.start.channel_id, "mpp stream: resumed on a newer connection; ending this one");
        self.phase = Phase::Ending { error: None };
    }

    fn closed(&mut self) {
        tracing::info!(channel = %self.start.channel_id, "mpp stream: channel closed; ending the stream");
        self.phase = Phase::Ending {
            error: Some(problem(
                410,
                "session/channel-finalized",
                "Channel Finalized",
                "the payment channel was closed",
            )),
        };
    }

    /// The next frame to send, `None` once the stream is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        let meter = self.meter()?;
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Ending { error } => {
                    if let Some(index) = self.held.handed() {
                        match meter.step(Some(index), None).await {
                            Ok(step) => {
                                self.held = Held::Nothing;
                                self.note(&step);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "mpp stream: cannot commit the last event");
                            }
                        }
                    }
                    let mut out = Vec::new();
                    if let Some(p) = error {
                        out.extend_from_slice(&payment_event(PAYMENT_ERROR_EVENT, &p));
                    }
                    out.extend_from_slice(&self.receipt());
                    self.phase = Phase::Done;
                    return Some(Bytes::from(out));
                }
                Phase::Streaming => {
                    let event = loop {
                        match self.events.next().await {
                            None => break None,
                            Some(_) if self.skip > 0 => self.skip -= 1,
                            Some(e) => break Some(e),
                        }
                    };
                    let Some(event) = event else {
                        self.phase = Phase::Ending { error: None };
                        continue;
                    };
                    let next = self.index + 1;
                    match meter.step(self.held.handed(), Some(next)).await {
                        Ok(step) => {
                            self.held = Held::Nothing;
                            self.note(&step);
                            match step {
                                MeterStep::Reserved(_) => {
                                    self.held = Held::Reserved(next);
                                    self.phase = Phase::Streaming;
                                    return Some(self.send(&event));
                                }
                                // Charged before this resume: sent again, free.
                                MeterStep::Free(_) => {
                                    self.phase = Phase::Streaming;
                                    return Some(self.send(&event));
                                }
                                MeterStep::NeedVoucher(b) => {
                                    crate::metrics::record_stream_pause("paused");
                                    let now = Instant::now();
                                    self.phase = Phase::Paused { event, since: now, quiet_since: now };
                                    tracing::info!(channel = %self.start.channel_id, "mpp stream: vouchers exhausted; pausing");
                                    return Some(self.need_voucher(&b));
                                }
                                MeterStep::Superseded(_) => self.superseded(),
                                _ => self.closed(),
                            }
                        }
                        Err(e) => self.failed(&e),
                    }
                }
                Phase::Paused { event, since, mut quiet_since } => {
                    let config = self.start.config;
                    let timeout = config.voucher_timeout_value();
                    loop {
                        let waited = since.elapsed();
                        if waited >= timeout {
                            tracing::info!(channel = %self.start.channel_id, "mpp stream: no voucher in time; ending the stream");
                            crate::metrics::record_stream_pause("timed_out");
                            self.phase = Phase::Ending { error: None };
                            break;
                        }
                        let quiet = quiet_since.elapsed();
                        if quiet >= config.keep_alive_value() {
                            quiet_since = Instant::now();
                            self.phase = Phase::Paused { event, since, quiet_since };
                            return Some(Bytes::from_static(b": keep-alive\n\n"));
                        }
                        let wait =
                            config.poll_interval_value().min(timeout - waited).min(config.keep_alive_value() - quiet);
                        meter.changed(wait).await;
                        let next = self.index + 1;
                        match meter.step(None, Some(next)).await {
                            Ok(MeterStep::Reserved(b)) => {
                                crate::metrics::record_stream_pause("resumed");
                                self.books.highest = b.highest;
                                self.held = Held::Reserved(next);
                                self.phase = Phase::Streaming;
                                return Some(self.send(&event));
                            }
                            Ok(MeterStep::Free(_)) => {
                                crate::metrics::record_stream_pause("resumed");
                                self.phase = Phase::Streaming;
                                return Some(self.send(&event));
                            }
                            Ok(MeterStep::NeedVoucher(_)) => {}
                            Ok(MeterStep::Superseded(_)) => {
                                self.superseded();
                                break;
                            }
                            Ok(_) => {
                                self.closed();
                                break;
                            }
                            Err(e) => {
                                self.failed(&e);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_splits_lines_and_names_events() {
        let mut out = String::new();
        encode(&mut out, Some(3), Some("token"), "a\nb\r\nc\rd");
        assert_eq!(out, "id: 3\nevent: token\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        let mut out = String::new();
        encode(&mut out, None, None, "");
        assert_eq!(out, "data: \n\n");
    }

    #[test]
    fn handler_events_cannot_pose_as_payment_events() {
        assert_eq!(SseEvent::data("x").event("payment-receipt").name(), None);
        assert_eq!(SseEvent::data("x").event("402-need-voucher").name(), None);
        assert_eq!(SseEvent::data("x").event("tok\nen").name(), Some("token"));
    }
}
