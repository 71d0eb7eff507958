use pay402::axum::{Credential, Receipt, pay};

#[pay(amount = "0.01")]
async fn optional_credential(_credential: Option<Credential>) {}

#[pay(amount = "0.01")]
fn not_async(_receipt: Receipt) {}

struct Api;

impl Api {
    #[pay(amount = "0.01")]
    async fn with_self(&self) -> &'static str {
        "no"
    }
}

fn main() {}
