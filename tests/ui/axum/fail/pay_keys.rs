use pay402::axum::pay;

// Every key problem of one attribute is reported at once.
#[pay(amount = "0.01", amont = "0.02", amount = "0.03", intnet = "charge", price = "$0.01", recipient)]
async fn many() {}

#[pay(amount: "0.01")]
async fn colon() {}

fn main() {}
