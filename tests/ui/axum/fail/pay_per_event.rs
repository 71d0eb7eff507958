use pay402::axum::{EventStream, PaidStream, SseEvent, pay, x402};

#[pay(intent = "session", amount = "0.0001", per = "evnt")]
async fn misspelt() {}

#[pay(intent = "session", amount = "0.0001", per = "token")]
async fn unknown() {}

#[pay(intent = "session", amount = "0.0001", per = event)]
async fn bare_word() {}

#[pay(intent = "session", amount = "0.0001", per = 1)]
async fn number() {}

#[pay(intent = "charge", amount = "0.0001", per = "event")]
async fn charge_per_event(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::iter([SseEvent::data("x")]))
}

#[pay(amount = "0.0001", per = "event")]
async fn default_intent_per_event() {}

#[x402(price = "$0.0001")]
#[pay(intent = "session", amount = "0.0001", per = "event")]
async fn dual_per_event() {}

#[pay(intent = "session", amount = "0.01")]
async fn stream_per_request(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

#[pay(amount = "0.01")]
#[x402(price = "$0.01")]
async fn stream_on_a_dual_route(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

#[x402(price = "$0.01")]
async fn stream_on_x402(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

#[pay(intent = "session", amount = "0.0001", per = "event")]
async fn optional_stream(stream: Option<PaidStream>) -> EventStream {
    EventStream::unmetered(futures::stream::iter(stream.map(|_| SseEvent::data("x"))))
}

fn main() {}
