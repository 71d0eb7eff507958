//! Errors in the handler itself still point at the user's code after the rewrite.
use pay402::axum::x402;

struct NotAResponse;

#[x402(price = "$0.001")]
async fn not_a_response() -> NotAResponse {
    NotAResponse
}

#[x402(price = "$0.001")]
async fn wrong_body_type() -> String {
    42
}

#[x402(price = "$0.001")]
async fn question_mark_without_result() -> String {
    let n: u32 = "1".parse()?;
    n.to_string()
}

fn main() {}
