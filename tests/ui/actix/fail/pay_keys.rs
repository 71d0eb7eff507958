use actix_web::get;
use pay402::actix::pay;

#[get("/split")]
#[pay(amount = "0.01", splits = [], amount = "0.02", expires = "5m")]
async fn split() -> &'static str {
    "split"
}

#[pay(recipient = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", expires_in = "5 min")]
#[get("/no-amount")]
async fn no_amount() -> &'static str {
    "no amount"
}

fn main() {}
