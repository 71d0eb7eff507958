use pay402::axum::pay;

#[pay(amount = "0.01", chain_id = 0)]
async fn zero_chain() {}

#[pay(amount = "0.01", chain_id = "196")]
async fn string_chain() {}

#[pay(amount = "0.01", intent = "session", suggested_deposit = "1.5")]
async fn human_deposit() {}

#[pay(amount = "0.01", intent = "session", suggested_deposit = 1000000)]
async fn numeric_deposit() {}

#[pay(amount = "0.01", intent = "session", unit_type = "")]
async fn empty_unit() {}

#[pay(amount = "0.01", description = 5)]
async fn numeric_description() {}

fn main() {}
