//! The newcomer demo: a paid axum API on 127.0.0.1 and a client calling it.
//!
//! Run with `cargo run --example demo`.

use pay402::axum::{X402Layer, X402Payment};
use pay402::x402::http::{PaymentOption, RouteConfig, X402HttpServer};
use pay402::x402::server::X402ResourceServer;
use pay402::x402::{
    AnyPaymentRequired, ExactEvmScheme, FacilitatorClient, FacilitatorError, PaymentPayload, PaymentRequirements,
    SettleResponse, SupportedKind, SupportedResponse, VerifyResponse, decode_payment_required_header,
};

/// A facilitator that supports `exact` on X Layer but refuses every payment (the demo only
/// shows the challenge).
struct ChallengeOnly;

#[async_trait::async_trait]
impl FacilitatorClient for ChallengeOnly {
    async fn verify(&self, _: &PaymentPayload, _: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        Ok(VerifyResponse::invalid("demo_facilitator_refuses", None))
    }
    async fn settle(&self, _: &PaymentPayload, _: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        Err(FacilitatorError::Unsupported("settlement in the demo"))
    }
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(SupportedResponse {
            kinds: vec![SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: "eip155:196".into(),
                extra: None,
            }],
            ..SupportedResponse::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = X402ResourceServer::new(ChallengeOnly).register("eip155:196", ExactEvmScheme::new());
    let x402 = X402HttpServer::new(server).route(
        "GET /quote",
        RouteConfig::new(PaymentOption::exact("$0.001", "0x1111111111111111111111111111111111111111"))
            .description("A stock quote"),
    )?;
    let app = axum::Router::new()
        .route("/quote", axum::routing::get(|p: X402Payment| async move { format!("paid by {:?}", p.payer()) }))
        .layer(X402Layer::new(x402));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    println!("listening on {url}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let resp = reqwest::get(&url).await?;
    println!("GET {url} -> {}", resp.status());
    let header = resp.headers().get("payment-required").ok_or("no PAYMENT-REQUIRED header")?.to_str()?.to_owned();
    let AnyPaymentRequired::V2(challenge) = decode_payment_required_header(&header)? else {
        return Err("expected an x402 v2 challenge".into());
    };
    println!("PAYMENT-REQUIRED decodes to:\n{}", serde_json::to_string_pretty(&challenge)?);
    let accept = &challenge.accepts[0];
    println!("=> pay {} atomic units of {} on {} to {}", accept.amount, accept.asset, accept.network, accept.pay_to);
    Ok(())
}
