use pay402::axum::pay;

#[pay(amount = "0.01", splits = [("0.004", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")])]
async fn split() {}

fn main() {}
