use pay402::axum::pay;

#[pay]
async fn bare() {}

#[pay(intent = "charge", description = "no amount")]
async fn no_amount() {}

fn main() {}
