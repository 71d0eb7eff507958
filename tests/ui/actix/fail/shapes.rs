use actix_web::get;
use pay402::actix::x402;

#[get("/sync")]
#[x402(price = "$0.001")]
fn sync_handler() -> &'static str {
    "not async"
}

struct Api;

impl Api {
    #[x402(price = "$0.001")]
    async fn with_self(&self) -> &'static str {
        "no"
    }
}

fn main() {}
