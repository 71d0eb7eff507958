use pay402::axum::pay;

#[pay(amount = "0.01", intent = "sesion")]
async fn typo() {}

#[pay(amount = "0.01", intent = "subscription")]
async fn unsupported() {}

#[pay(amount = "0.01", intent = session)]
async fn unquoted() {}

fn main() {}
