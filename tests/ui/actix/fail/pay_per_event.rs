use actix_web::get;
use pay402::actix::{EventStream, PaidStream, pay, x402};

#[pay(intent = "session", amount = "0.0001", per = "evnt")]
#[get("/misspelt")]
async fn misspelt() -> &'static str {
    ""
}

#[get("/charge")]
#[pay(amount = "0.0001", per = "event")]
async fn default_intent_per_event() -> &'static str {
    ""
}

#[pay(intent = "session", amount = "0.0001", per = Event)]
async fn constant() -> &'static str {
    ""
}

#[pay(intent = "session", amount = "0.0001", per = "event")]
#[x402(price = "$0.0001")]
async fn dual_per_event(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

#[get("/once")]
#[pay(intent = "session", amount = "0.01")]
async fn stream_per_request(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

fn main() {}
