//! The buyer side of MPP session streams metered per event over Server-Sent Events
//! (`draft-payment-transport-sse-00`, pay402's `evm`/`session` wire).
//!
//! * [`SseParser`] — an incremental, bounded SSE parser (WHATWG rules: `id`/`event`/`data`/
//!   `retry` fields, multi-line `data` joined by `\n`, comments ignored, CRLF/LF/CR line ends,
//!   a leading BOM dropped, invalid UTF-8 replaced) producing [`SseMessage`]s;
//! * [`StreamFrame`] — a message typed: a data event ([`DataEvent`]), a `402-need-voucher`
//!   ([`NeedVoucher`]), a `payment-receipt` ([`StreamReceipt`]) or a `payment-error`
//!   ([`StreamProblem`]);
//! * [`decide_need_voucher`] — what a need-voucher calls for (ignore it, a voucher, or a top-up
//!   then a voucher), refusing anything a legitimate seller would never ask;
//! * [`companion_request`] / [`resume_request`] — the requests that answer a need-voucher and
//!   resume a dropped stream.
//!
//! The parser is written here rather than taken from `eventsource-stream` (which builds): that
//! crate buffers without bound (a line that never ends, or invalid UTF-8, grows its buffer
//! forever) and re-parses a partial line on every chunk; a buyer reading a seller's stream
//! needs a hard memory bound ([`MAX_SSE_EVENT_BYTES`]).

use crate::evm::{U256, parse_uint256};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, Request, Url};
use serde_json::Value;
use std::time::Duration;

/// The most bytes one SSE event may take (its field lines together, or one line), by default.
pub const MAX_SSE_EVENT_BYTES: usize = 1 << 20;
/// The header that resumes a dropped stream after the given event id.
pub const LAST_EVENT_ID_HEADER: &str = "Last-Event-ID";
/// The wire's event names and media type, shared with the seller side.
pub use super::stream::{EVENT_STREAM_CONTENT_TYPE, NEED_VOUCHER_EVENT, PAYMENT_ERROR_EVENT, PAYMENT_RECEIPT_EVENT};

/// Why a stream's events could not be read or a need-voucher is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamClientError {
    /// An SSE event (or line) is larger than the parser's limit.
    #[error("an SSE event exceeds {limit} bytes")]
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A payment event's data is not the JSON the wire defines.
    #[error("malformed `{event}` event: {reason}")]
    MalformedEvent {
        /// The event name.
        event: String,
        /// What is wrong.
        reason: String,
    },
    /// A need-voucher asks for more above the vouchers already signed than one event's price
    /// (or the channel's minimum voucher increase, when larger): a seller never needs more;
    /// nothing is signed.
    #[error("the seller asks for a voucher of {required}, more than {limit} above the {signed} already signed")]
    StepAboveLimit {
        /// The `requiredCumulative` asked.
        required: U256,
        /// What the buyer has signed on the channel.
        signed: U256,
        /// The most one need-voucher may add.
        limit: U256,
    },
    /// A field of the stream's challenge that payments depend on cannot be read.
    #[error("the challenge's `{field}` is not a decimal amount")]
    InvalidTerms {
        /// The field.
        field: &'static str,
    },
    /// A need-voucher asks again for an amount the buyer already sent on this stream: the
    /// seller did not take the voucher; nothing more is signed.
    #[error("the seller asks again for {required}, already vouched on this stream")]
    VoucherNotTaken {
        /// The `requiredCumulative` asked.
        required: U256,
    },
}

/// One SSE event as dispatched by the WHATWG algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseMessage {
    /// The `id` field given in this event, if any (not inherited from earlier events).
    pub id: Option<String>,
    /// The `event` field, if any (none means the default type `message`).
    pub event: Option<String>,
    /// The `data` lines joined by `\n`.
    pub data: String,
}

/// An incremental SSE parser with a memory bound: feed it the body's chunks as they come.
#[derive(Debug)]
pub struct SseParser {
    limit: usize,
    line: Vec<u8>,
    /// The previous chunk ended on CR: a LF starting this one belongs to it.
    after_cr: bool,
    /// Bytes seen so far (a BOM is only dropped at the very start).
    seen: usize,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    event_bytes: usize,
    last_event_id: String,
    retry: Option<Duration>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default limit ([`MAX_SSE_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_limit(MAX_SSE_EVENT_BYTES)
    }

    /// A parser refusing events (or lines) above `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            line: Vec::new(),
            after_cr: false,
            seen: 0,
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            event_bytes: 0,
            last_event_id: String::new(),
            retry: None,
        }
    }

    /// The last event ID (set by `id` fields of dispatched events; empty when none).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for (`retry` field), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds `chunk`; returns the events it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, StreamClientError> {
        let mut out = Vec::new();
        for &byte in chunk {
            self.seen += 1;
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(message) = self.line_ended(&line)? {
                        out.push(message);
                    }
                }
                _ => {
                    self.line.push(byte);
                    if self.line.len() > self.limit {
                        return Err(StreamClientError::EventTooLarge { limit: self.limit });
                    }
                }
            }
        }
        Ok(out)
    }

    fn line_ended(&mut self, raw: &[u8]) -> Result<Option<SseMessage>, StreamClientError> {
        let raw = if self.seen == raw.len() + 1 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        if raw.is_empty() {
            return Ok(self.dispatch());
        }
        if raw.starts_with(b":") {
            return Ok(None);
        }
        self.event_bytes += raw.len();
        if self.event_bytes > self.limit {
            return Err(StreamClientError::EventTooLarge { limit: self.limit });
        }
        let line = String::from_utf8_lossy(raw);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseMessage> {
        self.event_bytes = 0;
        let id = self.id.take();
        if let Some(id) = &id {
            self.last_event_id.clone_from(id);
        }
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            self.data.clear();
            return None;
        }
        let data = std::mem::take(&mut self.data);
        Some(SseMessage { id, event: event.filter(|e| !e.is_empty()), data })
    }
}

/// An application event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataEvent {
    /// The event id (pay402 sellers number data events 1, 2, 3 …).
    pub id: Option<String>,
    /// The event name, when the handler named one.
    pub event: Option<String>,
    /// The data (lines joined by `\n`).
    pub data: String,
}

/// A `402-need-voucher` event: the seller paused the stream until a voucher for
/// `required_cumulative` (or a top-up, then the voucher) arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NeedVoucher {
    /// The challenge the stream was opened under.
    pub challenge_id: String,
    /// The channel.
    pub channel_id: String,
    /// The least cumulative voucher that pays the next event.
    pub required_cumulative: U256,
    /// The channel's highest voucher, as the seller knows it.
    pub accepted_cumulative: U256,
    /// The channel's deposit, as the seller knows it.
    pub deposit: U256,
    /// What the channel has spent, as the seller knows it (when given).
    pub spent: Option<U256>,
}

/// A `payment-receipt` event: the stream's payment state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamReceipt {
    /// Payment method (`evm`).
    pub method: String,
    /// Intent (`session`), when given.
    pub intent: Option<String>,
    /// `success`.
    pub status: String,
    /// RFC 3339 time of the receipt.
    pub timestamp: String,
    /// The stream's challenge.
    pub challenge_id: String,
    /// The channel.
    pub channel_id: String,
    /// The channel's highest voucher.
    pub accepted_cumulative: U256,
    /// What this stream has been charged so far (base units).
    pub spent: U256,
    /// How many events this stream has been charged.
    pub units: u64,
}

/// A `payment-error` event (problem details).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamProblem {
    /// The problem type URI.
    pub problem_type: String,
    /// Short summary.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation, if any.
    pub detail: Option<String>,
}

/// An SSE message, typed by its event name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFrame {
    /// An application event (any name other than the payment events).
    Data(DataEvent),
    /// `402-need-voucher`.
    NeedVoucher(NeedVoucher),
    /// `payment-receipt`.
    Receipt(StreamReceipt),
    /// `payment-error`.
    PaymentError(StreamProblem),
}

impl StreamFrame {
    /// Types `message`; a payment event whose data is not the wire's JSON is an error.
    pub fn from_message(message: SseMessage) -> Result<Self, StreamClientError> {
        let name = message.event.as_deref().unwrap_or("message");
        match name {
            NEED_VOUCHER_EVENT => need_voucher(&message.data).map(Self::NeedVoucher),
            PAYMENT_RECEIPT_EVENT => receipt(&message.data).map(Self::Receipt),
            PAYMENT_ERROR_EVENT => problem(&message.data).map(Self::PaymentError),
            _ => Ok(Self::Data(DataEvent { id: message.id, event: message.event, data: message.data })),
        }
    }
}

fn malformed(event: &str, reason: impl Into<String>) -> StreamClientError {
    StreamClientError::MalformedEvent { event: event.to_owned(), reason: reason.into() }
}

fn object(event: &str, data: &str) -> Result<serde_json::Map<String, Value>, StreamClientError> {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(event, "the data is not a JSON object")),
        Err(_) => Err(malformed(event, "the data is not JSON")),
    }
}

fn text(event: &str, map: &serde_json::Map<String, Value>, key: &str) -> Result<String, StreamClientError> {
    map.get(key).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| malformed(event, format!("no `{key}`")))
}

fn amount(event: &str, map: &serde_json::Map<String, Value>, key: &str) -> Result<U256, StreamClientError> {
    let raw = text(event, map, key)?;
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(event, format!("`{key}` is not a decimal amount")));
    }
    parse_uint256(&raw).map_err(|_| malformed(event, format!("`{key}` is out of range")))
}

fn need_voucher(data: &str) -> Result<NeedVoucher, StreamClientError> {
    let e = NEED_VOUCHER_EVENT;
    let map = object(e, data)?;
    Ok(NeedVoucher {
        challenge_id: text(e, &map, "challengeId")?,
        channel_id: text(e, &map, "channelId")?,
        required_cumulative: amount(e, &map, "requiredCumulative")?,
        accepted_cumulative: amount(e, &map, "acceptedCumulative")?,
        deposit: amount(e, &map, "deposit")?,
        spent: if map.contains_key("spent") { Some(amount(e, &map, "spent")?) } else { None },
    })
}

fn receipt(data: &str) -> Result<StreamReceipt, StreamClientError> {
    let e = PAYMENT_RECEIPT_EVENT;
    let map = object(e, data)?;
    let units = map.get("units").and_then(Value::as_u64).ok_or_else(|| malformed(e, "`units` is not a count"))?;
    Ok(StreamReceipt {
        method: text(e, &map, "method")?,
        intent: map.get("intent").and_then(Value::as_str).map(str::to_owned),
        status: text(e, &map, "status")?,
        timestamp: text(e, &map, "timestamp")?,
        challenge_id: text(e, &map, "challengeId")?,
        channel_id: text(e, &map, "channelId")?,
        accepted_cumulative: amount(e, &map, "acceptedCumulative")?,
        spent: amount(e, &map, "spent")?,
        units,
    })
}

fn problem(data: &str) -> Result<StreamProblem, StreamClientError> {
    let e = PAYMENT_ERROR_EVENT;
    let map = object(e, data)?;
    let status = map
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| malformed(e, "`status` is not an HTTP status"))?;
    Ok(StreamProblem {
        problem_type: text(e, &map, "type")?,
        title: text(e, &map, "title")?,
        status,
        detail: map.get("detail").and_then(Value::as_str).map(str::to_owned),
    })
}

/// What binds payment events to one stream: its challenge and channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamBinding {
    /// The challenge id the stream was opened under.
    pub challenge_id: String,
    /// The channel paying the stream.
    pub channel_id: String,
}

impl StreamBinding {
    /// The binding of a stream opened under `challenge_id` on `channel_id`.
    pub fn new(challenge_id: impl Into<String>, channel_id: impl Into<String>) -> Self {
        Self { challenge_id: challenge_id.into(), channel_id: channel_id.into() }
    }

    /// Whether an event naming `challenge_id` and `channel_id` belongs to this stream (the
    /// challenge id exactly, the channel id as hex in any case).
    pub fn matches(&self, challenge_id: &str, channel_id: &str) -> bool {
        challenge_id == self.challenge_id && channel_id.eq_ignore_ascii_case(&self.channel_id)
    }
}

/// What the buyer holds on the stream's channel when a need-voucher arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VoucherPosition {
    /// The highest cumulative voucher signed on the channel.
    pub signed: U256,
    /// The channel's deposit (as the buyer made it).
    pub deposit: U256,
    /// The most one need-voucher may add above `signed`: the price of one event, or the
    /// channel's minimum voucher increase when larger (see [`voucher_step_limit`]).
    pub step_limit: U256,
    /// The highest voucher already sent on this stream in answer to a need-voucher, if any.
    pub last_answered: Option<U256>,
}

impl VoucherPosition {
    /// A position: `signed` of `deposit` vouched, at most `step_limit` more per need-voucher.
    pub fn new(signed: U256, deposit: U256, step_limit: U256) -> Self {
        Self { signed, deposit, step_limit, last_answered: None }
    }

    /// The same position, having answered a need-voucher with `cumulative` on this stream.
    pub fn answered(mut self, cumulative: U256) -> Self {
        self.last_answered = Some(cumulative);
        self
    }
}

/// The most one need-voucher may add above the vouchers signed: the per-event `price`, or the
/// seller's minimum voucher increase (`methodDetails.minVoucherDelta` of `challenge`) when larger
/// (a voucher raising the highest one by less would be refused). A `minVoucherDelta` that is not
/// a decimal amount is an error (nothing is paid on terms that cannot be read).
pub fn voucher_step_limit(challenge: &super::ParsedChallenge, price: U256) -> Result<U256, StreamClientError> {
    let details = challenge.request.get("methodDetails").and_then(Value::as_object);
    let Some(raw) = details.and_then(|d| d.get("minVoucherDelta")) else { return Ok(price) };
    let text = raw.as_str().unwrap_or_default();
    let bad = || StreamClientError::InvalidTerms { field: "methodDetails.minVoucherDelta" };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let min = parse_uint256(text).map_err(|_| bad())?;
    Ok(price.max(min))
}

/// What to do about a need-voucher.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoucherDecision {
    /// It is not this stream's (another challenge or channel): log it, pay nothing.
    Ignore {
        /// Why.
        reason: &'static str,
    },
    /// Send a voucher for `cumulative` (`increment` above what was signed; zero re-sends the
    /// highest voucher the seller has not seen).
    Voucher {
        /// The voucher's cumulative amount.
        cumulative: U256,
        /// New money: `cumulative - signed` (never negative).
        increment: U256,
    },
    /// Top the deposit up by at least `at_least`, then send the voucher.
    TopUpThenVoucher {
        /// The least top-up that makes the deposit cover `cumulative`.
        at_least: U256,
        /// The voucher's cumulative amount.
        cumulative: U256,
        /// New money: `cumulative - signed`.
        increment: U256,
    },
}

/// Decides how to answer `need` on the stream `binding` from the buyer's `position`. A
/// need-voucher of another challenge or channel is ignored (never paid). One for this stream is
/// answered with a voucher for exactly `requiredCumulative` (or the highest voucher already
/// signed, when that is more: vouchers are cumulative), preceded by a top-up when the deposit
/// does not cover it. Refused, with nothing to sign: a step above `step_limit` (a seller asks at
/// most one event's price, or its minimum voucher increase, more than it holds: the channel's
/// spent and reserved amounts are covered by the highest voucher), and a repeated request for what this stream
/// already answered. The caller applies its spending caps to the increment and the top-up.
pub fn decide_need_voucher(
    need: &NeedVoucher,
    binding: &StreamBinding,
    position: VoucherPosition,
) -> Result<VoucherDecision, StreamClientError> {
    if need.challenge_id != binding.challenge_id {
        return Ok(VoucherDecision::Ignore { reason: "the need-voucher names another challenge" });
    }
    if !need.channel_id.eq_ignore_ascii_case(&binding.channel_id) {
        return Ok(VoucherDecision::Ignore { reason: "the need-voucher names another channel" });
    }
    let required = need.required_cumulative;
    if position.last_answered.is_some_and(|sent| sent >= required) {
        return Err(StreamClientError::VoucherNotTaken { required });
    }
    let step = required.saturating_sub(position.signed);
    if step > position.step_limit {
        return Err(StreamClientError::StepAboveLimit {
            required,
            signed: position.signed,
            limit: position.step_limit,
        });
    }
    let cumulative = required.max(position.signed);
    if cumulative > position.deposit {
        return Ok(VoucherDecision::TopUpThenVoucher {
            at_least: cumulative - position.deposit,
            cumulative,
            increment: step,
        });
    }
    Ok(VoucherDecision::Voucher { cumulative, increment: step })
}

/// The companion request answering a need-voucher (transport draft §6): the stream's method
/// and URL, `Authorization: <authorization>` (a credential echoing the stream's challenge),
/// `Accept: application/json`, no body and no `Last-Event-ID`.
pub fn companion_request(method: &Method, url: &Url, authorization: &str) -> Result<Request, http::Error> {
    let mut request = Request::new(method.clone(), url.clone());
    request.headers_mut().insert(AUTHORIZATION, HeaderValue::from_str(authorization)?);
    request.headers_mut().insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok(request)
}

/// The request resuming a dropped stream: `original` again (which must carry no
/// `Authorization`), with `authorization` (a voucher credential under the stream's challenge),
/// `Accept: text/event-stream` and, when an event was received, `Last-Event-ID`. None when the
/// original body cannot be cloned.
pub fn resume_request(
    original: &Request,
    authorization: &str,
    last_event_id: Option<&str>,
) -> Result<Option<Request>, http::Error> {
    let Some(mut request) = original.try_clone() else { return Ok(None) };
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization)?);
    headers.insert(ACCEPT, HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE));
    headers.remove(LAST_EVENT_ID_HEADER);
    if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
        headers.insert(LAST_EVENT_ID_HEADER, HeaderValue::from_str(id)?);
    }
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseMessage> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.push(c).expect("parse")).collect()
    }

    fn msg(id: Option<&str>, event: Option<&str>, data: &str) -> SseMessage {
        SseMessage { id: id.map(str::to_owned), event: event.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn fields_multi_line_data_and_comments() {
        let got = parse_all(&[b": hello\nid: 1\nevent: tok\ndata: a\ndata:b\ndata:  c\n\n: keep-alive\n\ndata\n\n"]);
        assert_eq!(got, vec![msg(Some("1"), Some("tok"), "a\nb\n c"), msg(None, None, "")]);
    }

    #[test]
    fn every_line_end_and_any_chunking() {
        let text = b"\xEF\xBB\xBFid: 7\r\ndata: x\r\rdata: y\n\ndata: z\r\n\r\n";
        let want = vec![msg(Some("7"), None, "x"), msg(None, None, "y"), msg(None, None, "z")];
        assert_eq!(parse_all(&[text]), want);
        // Byte by byte: a CR at a chunk's end followed by LF is one line end.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), want);
        for split in 0..text.len() {
            assert_eq!(parse_all(&[&text[..split], &text[split..]]), want, "split at {split}");
        }
    }

    #[test]
    fn ids_retry_and_dispatch_rules() {
        let mut parser = SseParser::new();
        // An event without data is not dispatched, but its id becomes the last event id.
        assert!(parser.push(b"id: 3\nevent: x\n\n").expect("parse").is_empty());
        assert_eq!(parser.last_event_id(), "3");
        // An id with NUL is ignored; `retry` takes digits only; unknown fields are ignored.
        let got = parser.push(b"id: a\0b\nretry: 1500\nretry: 9x\nfoo: bar\ndata: d\n\n").expect("parse");
        assert_eq!(got, vec![msg(None, None, "d")]);
        assert_eq!((parser.last_event_id(), parser.retry()), ("3", Some(Duration::from_millis(1500))));
        // A field without a colon has an empty value; an incomplete event at the end is kept
        // pending (never dispatched without its blank line).
        assert_eq!(parser.push(b"data\ndata\n\ndata: half").expect("parse"), vec![msg(None, None, "\n")]);
        // Invalid UTF-8 is replaced, not fatal.
        assert_eq!(
            parser.push(b"\n\ndata: \xFF\n\n").expect("parse"),
            vec![msg(None, None, "half"), msg(None, None, "\u{FFFD}")]
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut parser = SseParser::with_limit(16);
        assert_eq!(parser.push(&[b'a'; 17]), Err(StreamClientError::EventTooLarge { limit: 16 }));
        let mut parser = SseParser::with_limit(16);
        assert!(parser.push(b"data: 0123456\n").expect("fits").is_empty());
        assert_eq!(parser.push(b"data: 0123456\n"), Err(StreamClientError::EventTooLarge { limit: 16 }));
        // Comments do not count towards an event, and a dispatch resets the count.
        let mut parser = SseParser::with_limit(16);
        for _ in 0..10 {
            assert_eq!(parser.push(b": 0123456789\ndata: 0123456\n\n").expect("fits").len(), 1);
        }
    }

    #[test]
    fn payment_events_are_typed() {
        let frame = |event: &str, data: &str| StreamFrame::from_message(msg(None, Some(event), data));
        let need = frame(
            NEED_VOUCHER_EVENT,
            r#"{"challengeId":"c","channelId":"0xab","requiredCumulative":"1200","acceptedCumulative":"1100","deposit":"10000","spent":"1100"}"#,
        )
        .expect("need");
        let StreamFrame::NeedVoucher(need) = need else { panic!("{need:?}") };
        assert_eq!((need.required_cumulative, need.spent), (U256::from(1200u64), Some(U256::from(1100u64))));
        let receipt = frame(
            PAYMENT_RECEIPT_EVENT,
            r#"{"method":"evm","intent":"session","status":"success","timestamp":"2026-01-01T00:00:00Z","challengeId":"c","channelId":"0xab","acceptedCumulative":"1200","spent":"300","units":3}"#,
        )
        .expect("receipt");
        let StreamFrame::Receipt(receipt) = receipt else { panic!("{receipt:?}") };
        assert_eq!((receipt.spent, receipt.units), (U256::from(300u64), 3));
        let problem = frame(PAYMENT_ERROR_EVENT, r#"{"type":"t","title":"Gone","status":410}"#).expect("problem");
        assert!(matches!(problem, StreamFrame::PaymentError(StreamProblem { status: 410, .. })));
        // Data events keep id and name.
        let data = StreamFrame::from_message(msg(Some("4"), Some("tok"), "x")).expect("data");
        assert_eq!(
            data,
            StreamFrame::Data(DataEvent { id: Some("4".into()), event: Some("tok".into()), data: "x".into() })
        );
        // Payment events must be the wire's JSON: amounts are decimal strings.
        for bad in [
            "not json",
            "[1]",
            r#"{"challengeId":"c","channelId":"0xab","requiredCumulative":1200,"acceptedCumulative":"1","deposit":"1"}"#,
            r#"{"challengeId":"c","channelId":"0xab","requiredCumulative":"-1","acceptedCumulative":"1","deposit":"1"}"#,
            r#"{"challengeId":"c","channelId":"0xab","requiredCumulative":"0x10","acceptedCumulative":"1","deposit":"1"}"#,
            r#"{"channelId":"0xab","requiredCumulative":"1","acceptedCumulative":"1","deposit":"1"}"#,
        ] {
            assert!(matches!(frame(NEED_VOUCHER_EVENT, bad), Err(StreamClientError::MalformedEvent { .. })), "{bad}");
        }
    }

    fn need(challenge: &str, channel: &str, required: u64) -> NeedVoucher {
        NeedVoucher {
            challenge_id: challenge.into(),
            channel_id: channel.into(),
            required_cumulative: U256::from(required),
            accepted_cumulative: U256::from(required.saturating_sub(100)),
            deposit: U256::from(1000u64),
            spent: None,
        }
    }

    #[test]
    fn need_voucher_decisions() {
        let u = |v: u64| U256::from(v);
        let binding = StreamBinding::new("c1", "0xAB");
        let position = VoucherPosition::new(u(500), u(1000), u(100));
        // Exactly the required amount.
        assert_eq!(
            decide_need_voucher(&need("c1", "0xab", 600), &binding, position),
            Ok(VoucherDecision::Voucher { cumulative: u(600), increment: u(100) })
        );
        // Foreign challenge or channel: ignored.
        for foreign in [need("c2", "0xab", 600), need("c1", "0xcd", 600)] {
            assert!(matches!(decide_need_voucher(&foreign, &binding, position), Ok(VoucherDecision::Ignore { .. })));
        }
        // More than one step above what was signed: refused.
        assert_eq!(
            decide_need_voucher(&need("c1", "0xab", 601), &binding, position),
            Err(StreamClientError::StepAboveLimit { required: u(601), signed: u(500), limit: u(100) })
        );
        // Above the deposit: top up first.
        let low = VoucherPosition::new(u(950), u(1000), u(100));
        assert_eq!(
            decide_need_voucher(&need("c1", "0xab", 1020), &binding, low),
            Ok(VoucherDecision::TopUpThenVoucher { at_least: u(20), cumulative: u(1020), increment: u(70) })
        );
        // Below what was signed: the highest voucher again, no new money.
        assert_eq!(
            decide_need_voucher(&need("c1", "0xab", 400), &binding, position),
            Ok(VoucherDecision::Voucher { cumulative: u(500), increment: u(0) })
        );
        // Asked again for what this stream already answered: refused.
        assert_eq!(
            decide_need_voucher(&need("c1", "0xab", 600), &binding, position.answered(u(600))),
            Err(StreamClientError::VoucherNotTaken { required: u(600) })
        );
    }

    #[test]
    fn the_step_limit_honours_the_minimum_voucher_increase() {
        let challenge = |details: Value| {
            let Value::Object(request) = serde_json::json!({"amount": "100", "methodDetails": details}) else {
                unreachable!()
            };
            let c = crate::mpp::Challenge::new("s", "r", "evm", "session", request, None, None, None, None);
            crate::mpp::parse_www_authenticate(&[&c.to_www_authenticate().expect("header")]).expect("parse").remove(0)
        };
        let price = U256::from(100u64);
        assert_eq!(voucher_step_limit(&challenge(serde_json::json!({"chainId": 196})), price), Ok(price));
        assert_eq!(voucher_step_limit(&challenge(serde_json::json!({"minVoucherDelta": "0"})), price), Ok(price));
        assert_eq!(
            voucher_step_limit(&challenge(serde_json::json!({"minVoucherDelta": "500"})), price),
            Ok(U256::from(500u64))
        );
        for bad in [serde_json::json!({"minVoucherDelta": 500}), serde_json::json!({"minVoucherDelta": "-1"})] {
            assert!(matches!(voucher_step_limit(&challenge(bad), price), Err(StreamClientError::InvalidTerms { .. })));
        }
    }

    #[test]
    fn companion_and_resume_requests() {
        let url = Url::parse("http://a.test/tokens?n=5").expect("url");
        let companion = companion_request(&Method::GET, &url, "Payment abc").expect("companion");
        assert_eq!((companion.method(), companion.url()), (&Method::GET, &url));
        assert_eq!(companion.headers()[AUTHORIZATION], "Payment abc");
        assert!(!companion.headers().contains_key(LAST_EVENT_ID_HEADER));
        let mut original = Request::new(Method::GET, url.clone());
        original.headers_mut().insert(LAST_EVENT_ID_HEADER, HeaderValue::from_static("1"));
        let resumed = resume_request(&original, "Payment def", Some("42")).expect("resume").expect("cloneable");
        assert_eq!(resumed.headers()[LAST_EVENT_ID_HEADER], "42");
        assert_eq!(resumed.headers()[ACCEPT], EVENT_STREAM_CONTENT_TYPE);
        let fresh = resume_request(&original, "Payment def", None).expect("resume").expect("cloneable");
        assert!(!fresh.headers().contains_key(LAST_EVENT_ID_HEADER));
    }
}
