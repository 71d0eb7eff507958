//! An argument whose type is not an extractor: the first error points at that argument's type
//! (actix-web adds its own, where the handler is registered).
use actix_web::{App, post, web};
use pay402::actix::{X402HttpServer, x402};

struct NotAnExtractor;

#[post("/paid")]
#[x402(price = "$0.001")]
async fn paid(body: NotAnExtractor) -> &'static str {
    let _ = body;
    "paid"
}

#[x402(price = "$0.001")]
async fn by_hand(body: NotAnExtractor) -> &'static str {
    let _ = body;
    "paid"
}

/// An extractor whose bound fails: the error spans the whole argument type.
#[x402(price = "$0.001")]
async fn not_json(body: web::Json<NotAnExtractor>) -> &'static str {
    let _ = body;
    "paid"
}

fn main() {
    let _ = |x402: X402HttpServer| {
        App::new()
            .app_data(web::Data::new(x402))
            .service(paid)
            .route("/by-hand", web::post().to(by_hand))
            .route("/not-json", web::post().to(not_json))
    };
}
