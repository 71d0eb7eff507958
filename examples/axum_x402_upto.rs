//! Pay per use with x402 `upto` on axum: the buyer authorizes at most $0.01, the handler charges
//! $0.0001 per word it summarizes, and pay402 settles exactly that (never more than the maximum).
//!
//! Run with `cargo run --example axum_x402_upto`, then pay it with
//! `cargo run --example autopay_client -- http://127.0.0.1:4021/summarize?words=37` (settles
//! $0.0037). `words=0` settles nothing and sends no transaction; `words=101` would cost more than
//! the maximum and is refused: no summary, no settlement. Follows the README's example convention
//! (`PAY402_ADDR`; development unless `PAY402_ENV=production`: see `pay402::setup`).

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use pay402::axum::{UptoCharge, x402};
use pay402::setup::Setup;
use serde::Deserialize;

#[derive(Deserialize)]
struct SummarizeQuery {
    words: u32,
}

/// A summary of `words` words: $0.0001 per word, at most $0.01 (100 words).
#[x402(scheme = "upto", max = "$0.01", description = "A summary, billed per word", mime_type = "application/json")]
async fn summarize(charge: UptoCharge, Query(q): Query<SummarizeQuery>) -> Result<Json<serde_json::Value>, StatusCode> {
    // $0.0001 per word as an exact decimal: 37 words → "$0.0037".
    let price = format!("${}.{:04}", q.words / 10_000, q.words % 10_000);
    charge.set_amount(&price).map_err(|refused| {
        // Above the authorized maximum: refuse; nothing is settled.
        tracing::warn!(%refused, words = q.words, "cannot charge this request");
        StatusCode::UNPROCESSABLE_ENTITY
    })?;
    let summary = vec!["lorem"; q.words as usize].join(" ");
    Ok(Json(serde_json::json!({ "words": q.words, "summary": summary, "charged": price })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (RUST_LOG=pay402=debug for more): pay402 reports misconfiguration here.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let x402 = Setup::from_env()?.x402().await?;
    let app = axum::Router::new().route("/summarize", axum::routing::get(summarize)).with_state(x402);
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/summarize", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
