//! A paid axum API with its payment metrics in the Prometheus text format and its spans on
//! stderr.
//!
//! Run with `cargo run --example prometheus`, pay it with `cargo run --example x402_client --
//! http://127.0.0.1:4021/quote`, then `curl http://127.0.0.1:4021/metrics`:
//!
//! ```text
//! pay402_challenges_total{protocol="x402",scheme="exact"} 1
//! pay402_payments_total{protocol="x402",scheme="exact",outcome="verified"} 1
//! pay402_settlements_total{protocol="x402",scheme="exact",outcome="success"} 1
//! pay402_facilitator_request_duration_seconds{operation="settle",outcome="ok",quantile="0.99"} …
//! ```
//!
//! `RUST_LOG` filters the spans (default `info`; `pay402_runtime=debug` shows facilitator calls).
//! Follows the README's example convention (`PAY402_ADDR`; `pay402::setup`: development
//! mode unless `PAY402_ENV=production`).

use metrics_exporter_prometheus::PrometheusBuilder;
use pay402::axum::{X402Layer, X402Payment};
use pay402::setup::Setup;
use pay402::x402::{PaymentOption, RouteConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    // The global recorder every `pay402_*` metric goes to; `render()` is the /metrics body.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let setup = Setup::from_env()?;
    let route = RouteConfig::new(PaymentOption::exact("$0.001", setup.pay_to()))
        .description("A stock quote")
        .mime_type("application/json");
    let x402 = setup.x402().await?.route("GET /quote", route)?;
    let app = axum::Router::new()
        .route(
            "/quote",
            axum::routing::get(|p: X402Payment| async move {
                axum::Json(serde_json::json!({ "symbol": "OKB", "price": "48.20", "paid_by": p.payer() }))
            }),
        )
        .layer(X402Layer::new(x402))
        // Outside the paid routes: scraping is free.
        .route("/metrics", axum::routing::get(move || std::future::ready(prometheus.render())));
    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}/quote", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
