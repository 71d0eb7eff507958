//! A handler whose return type is not a `Responder`: the error points at the return type.
use pay402::actix::x402;

struct NotAResponder;

#[x402(price = "$0.001")]
async fn not_a_responder() -> NotAResponder {
    NotAResponder
}

fn main() {}
