use pay402::axum::pay;

#[pay(amount = 0.01)]
async fn number() {}

#[pay(amount = AMOUNT)]
async fn constant() {}

#[pay(amount = "$0.01")]
async fn dollar() {}

#[pay(amount = "abc")]
async fn word() {}

#[pay(amount = "0")]
async fn zero() {}

#[pay(amount = "0.0000001")]
async fn too_precise() {}

#[pay(amount = "-1")]
async fn negative() {}

#[pay(amount = "1e3")]
async fn exponent() {}

const AMOUNT: &str = "0.01";

fn main() {
    let _ = AMOUNT;
}
