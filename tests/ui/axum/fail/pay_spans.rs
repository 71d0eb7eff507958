//! Errors in the handler itself still point at the user's code after the rewrite.
use pay402::axum::{Receipt, pay};

struct NotAResponse;

#[pay(amount = "0.01")]
async fn not_a_response() -> NotAResponse {
    NotAResponse
}

#[pay(amount = "0.01")]
async fn wrong_body_type(receipt: Receipt) -> String {
    receipt
}

fn main() {}
