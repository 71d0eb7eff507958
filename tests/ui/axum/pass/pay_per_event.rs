//! `#[pay(intent = "session", per = "event")]` on axum: the handler takes its `PaidStream` (and
//! its other extractors) and answers with the metered `EventStream`, compiled warning-free.
#![deny(warnings)]

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use pay402::axum::{Credential, EventStream, Mpp, PaidStream, SseEvent, pay};
use serde::Deserialize;

#[derive(Deserialize)]
struct Tokens {
    n: u32,
}

/// 0.0001 per token, one data event each.
#[pay(intent = "session", amount = "0.0001", per = "event")]
async fn tokens(stream: PaidStream, Query(q): Query<Tokens>) -> EventStream {
    stream.sse(futures::stream::iter((0..q.n).map(|i| SseEvent::data(format!("token {i}")))))
}

/// The stream by full path, with the credential, named JSON events and `sse_starting_at`, with
/// `per` written first.
#[pay(per = "event", amount = "0.000001", intent = "session", description = "Ticks")]
async fn ticks(credential: Credential, stream: pay402::mpp::PaidStream) -> EventStream {
    let from = stream.resume_from();
    let source = format!("{:?}", credential.source);
    let events = (from..from + 3).filter_map(move |i| {
        SseEvent::json(&serde_json::json!({ "tick": i, "by": source })).ok().map(|e| e.event("tick"))
    });
    stream.sse_starting_at(from, futures::stream::iter(events))
}

/// `per = "request"` is the default, written out.
#[pay(intent = "session", amount = "0.01", per = "request")]
async fn once() -> &'static str {
    "once"
}

fn main() {
    let _: Router<Mpp> =
        Router::new().route("/tokens", get(tokens)).route("/ticks", get(ticks)).route("/once", get(once));
}
