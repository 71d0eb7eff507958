use pay402::axum::x402;

#[x402(price = "$0.001")]
fn sync_handler() -> &'static str {
    "not async"
}

#[x402(price = "$0.001")]
struct NotAFunction;

fn main() {
    let _ = NotAFunction;
}
