//! What a metered stream needs from a payment channel, named below the intents that provide it
//! (the `session` intent implements [`EventMeter`]) and the SSE transport that drives it
//! ([`super::stream`]): one reservation per event, committed once the event is handed to the
//! connection, and a wait for a companion voucher when the vouchered balance runs out.

use super::receipt::Receipt;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a metered stream behaves while it waits for money. Set per session intent
/// ([`SessionIntent::stream_config`](super::SessionIntent::stream_config)).
///
/// ```
/// use pay402_runtime::mpp::StreamConfig;
/// use std::time::Duration;
///
/// let config = StreamConfig::default().voucher_timeout(Duration::from_secs(5));
/// assert_eq!(config.voucher_timeout_value(), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    voucher_timeout: Duration,
    poll_interval: Duration,
    keep_alive: Duration,
}

impl Default for StreamConfig {
    /// A 60 s voucher timeout (the SSE transport draft's example), a 100 ms store poll, a
    /// keep-alive comment every 15 s of silence.
    fn default() -> Self {
        Self {
            voucher_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(100),
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl StreamConfig {
    /// How long a paused stream waits for a voucher (or top-up) before it ends with its final
    /// receipt.
    pub fn voucher_timeout(mut self, d: Duration) -> Self {
        self.voucher_timeout = d;
        self
    }

    /// How often a paused stream re-reads its channel from the store (a voucher sent to another
    /// instance sharing the store is seen within this interval; one sent to this instance
    /// wakes the stream at once). At least 1 ms.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d.max(Duration::from_millis(1));
        self
    }

    /// How long a paused stream stays silent before it sends an SSE comment (keeps proxies from
    /// closing the connection). At least 1 s.
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d.max(Duration::from_secs(1));
        self
    }

    /// The voucher timeout.
    pub fn voucher_timeout_value(&self) -> Duration {
        self.voucher_timeout
    }

    /// The store poll interval.
    pub fn poll_interval_value(&self) -> Duration {
        self.poll_interval
    }

    /// The keep-alive interval.
    pub fn keep_alive_value(&self) -> Duration {
        self.keep_alive
    }
}

/// The channel's books as one metering step left them (base units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Books {
    /// The channel's highest accepted voucher (`acceptedCumulative`).
    pub highest: u128,
    /// The channel's deposit.
    pub deposit: u128,
    /// What the channel has spent (all requests and streams).
    pub spent: u128,
    /// What in-flight requests and events hold reserved.
    pub reserved: u128,
    /// The events this stream delivered and was charged for (across resumes).
    pub delivered: u64,
    /// The smallest increase a new voucher must make over `highest` (0: none).
    pub min_voucher_delta: u128,
}

impl Books {
    /// The smallest cumulative voucher that pays for one more event of `price`: what the
    /// channel has spent and reserved plus the price, and at least `highest` plus the minimum
    /// voucher increase (a smaller voucher would be refused).
    pub fn required_cumulative(&self, price: u128) -> u128 {
        let need = self.spent.saturating_add(self.reserved).saturating_add(price);
        if self.min_voucher_delta > 0 { need.max(self.highest.saturating_add(self.min_voucher_delta)) } else { need }
    }
}

/// What one metering step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeterStep {
    /// The next event's price is reserved: send it.
    Reserved(Books),
    /// The next event was charged before (a resume re-sends it): send it, nothing reserved.
    Free(Books),
    /// A newer connection resumed this stream: this one stops (its last event was finished).
    Superseded(Books),
    /// The vouchered balance does not cover the next event: pause and ask for a voucher.
    NeedVoucher(Books),
    /// Nothing was reserved (none was asked for); the commit, if any, is done.
    Committed(Books),
    /// The channel is closed (or closing, or gone): stop. A commit asked for is done.
    Closed(Books),
}

impl MeterStep {
    /// The books after the step.
    pub fn books(&self) -> Books {
        match self {
            Self::Reserved(b)
            | Self::Free(b)
            | Self::Superseded(b)
            | Self::NeedVoucher(b)
            | Self::Committed(b)
            | Self::Closed(b) => *b,
        }
    }
}

/// A metering step failed: the channel store failed or the books are inconsistent. The stream
/// stops (fail closed) after a `payment-error` event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metering failed: {0}")]
pub struct MeterError(pub String);

/// One stream connection's meter on one channel: the price of an event is reserved before the
/// event is sent and committed once it is handed to the connection. At most one reservation is
/// open at a time. Implemented by the `session` intent over its channel store.
#[async_trait::async_trait]
pub trait EventMeter: Send + Sync + fmt::Debug {
    /// One compare-and-swap. `commit`: the id of the event handed over, whose reservation
    /// becomes spent (spent += price, units += 1, the stream's delivered id at least it) — or
    /// is released, when a newer connection resumed below it (the buyer never got it). Then
    /// `reserve`: the id of the next event, reserved when this connection is the stream's
    /// newest, the event was not charged before (else [`MeterStep::Free`]) and the vouchered
    /// balance covers it.
    async fn step(&self, commit: Option<u64>, reserve: Option<u64>) -> Result<MeterStep, MeterError>;

    /// Releases the open reservation of an event that was never handed to the connection.
    async fn release(&self) -> Result<(), MeterError>;

    /// The handler refused the request before streaming (status ≥ 400): a stream that
    /// delivered nothing is forgotten, so the buyer's next request under the same challenge
    /// starts it again instead of counting as a companion. Failures are logged.
    async fn abandon(&self);

    /// Returns once the channel may have changed (a voucher or top-up reached this instance),
    /// or after `within` (a change made through another instance is seen by the next step).
    async fn changed(&self, within: Duration);
}

/// A verified request for a metered stream: the meter and what the stream needs to know,
/// handed to the handler through [`PaidStream`](super::PaidStream).
pub struct StreamStart {
    /// The receipt of the initial response (`Payment-Receipt`).
    pub receipt: Receipt,
    /// The stream's meter.
    pub meter: Arc<dyn EventMeter>,
    /// The challenge id the stream (and its companion requests) are correlated by.
    pub challenge_id: String,
    /// The channel paying for it.
    pub channel_id: String,
    /// The price of one event (base units).
    pub price: u128,
    /// The events the buyer says it has (`Last-Event-ID`; 0 for a new stream).
    pub resume_from: u64,
    /// The events already delivered and charged on this stream (re-sent free on a resume).
    pub delivered: u64,
    /// How the stream waits for money.
    pub config: StreamConfig,
}

impl fmt::Debug for StreamStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamStart")
            .field("challenge_id", &self.challenge_id)
            .field("channel_id", &self.channel_id)
            .field("price", &self.price)
            .field("resume_from", &self.resume_from)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_voucher_pays_the_next_event_and_respects_the_minimum_increase() {
        let b = Books { highest: 1000, deposit: 10_000, spent: 1000, reserved: 0, delivered: 10, min_voucher_delta: 0 };
        assert_eq!(b.required_cumulative(100), 1100);
        let b = Books { reserved: 100, ..b };
        assert_eq!(b.required_cumulative(100), 1200, "another request's reservation counts");
        let b = Books { reserved: 0, min_voucher_delta: 500, ..b };
        assert_eq!(b.required_cumulative(100), 1500, "a smaller voucher would be refused");
        let b = Books { spent: 900, min_voucher_delta: 50, ..b };
        assert_eq!(b.required_cumulative(100), 1050, "the minimum increase over the highest voucher");
    }
}
