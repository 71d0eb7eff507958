use pay402::axum::x402;

struct Api;

impl Api {
    #[x402(price = "$0.001")]
    async fn by_ref(&self) -> &'static str {
        "no"
    }

    #[x402(price = "$0.001")]
    async fn by_value(self) -> &'static str {
        "no"
    }
}

fn main() {}
