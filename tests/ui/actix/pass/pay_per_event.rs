//! `#[pay(intent = "session", per = "event")]` on actix-web: the handler takes its
//! `PaidStream` (and its other extractors) and answers with the metered `EventStream`, compiled
//! warning-free.
#![deny(warnings)]

use actix_web::{App, get, web};
use pay402::actix::{EventStream, PaidStream, Receipt, SseEvent, pay};
use serde::Deserialize;

#[derive(Deserialize)]
struct Tokens {
    n: u32,
}

/// 0.0001 per token, one data event each; `#[get]` below.
#[pay(intent = "session", amount = "0.0001", per = "event")]
#[get("/tokens")]
async fn tokens(stream: PaidStream, q: web::Query<Tokens>) -> EventStream {
    stream.sse(futures::stream::iter((0..q.n).map(|i| SseEvent::data(format!("token {i}")))))
}

/// `#[get]` above, the receipt too, registered as a service.
#[get("/ticks")]
#[pay(intent = "session", amount = "0.000001", per = "event")]
async fn ticks(receipt: Receipt, stream: PaidStream) -> EventStream {
    let reference = receipt.reference.clone();
    stream.sse(futures::stream::iter((0..3).map(move |i| SseEvent::data(format!("{reference} {i}")).event("tick"))))
}

/// Registered by hand.
#[pay(intent = "session", amount = "0.0001", per = "event")]
async fn manual(stream: PaidStream) -> EventStream {
    stream.sse(futures::stream::empty())
}

fn main() {
    let _ = App::new().service(tokens).service(ticks).route("/manual", web::get().to(manual));
}
