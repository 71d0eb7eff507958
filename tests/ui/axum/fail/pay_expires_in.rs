use pay402::axum::pay;

#[pay(amount = "0.01", expires_in = "5 minutes")]
async fn words() {}

#[pay(amount = "0.01", expires_in = "0s")]
async fn zero() {}

#[pay(amount = "0.01", expires_in = 90)]
async fn number() {}

#[pay(amount = "0.01", expires_in = "soon")]
async fn not_a_duration() {}

#[pay(amount = "0.01", expires_in = "400d")]
async fn too_long() {}

fn main() {}
