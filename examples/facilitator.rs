//! A self-hosted x402 facilitator that verifies and settles `exact` EIP-3009 payments on chain.
//!
//! ```text
//! PAY402_RPC_URL=http://127.0.0.1:8545 PAY402_FACILITATOR_KEY=0x… cargo run --example facilitator
//! ```
//!
//! * `PAY402_RPC_URL` (required): the JSON-RPC endpoint of the chain; the facilitator serves
//!   `eip155:<its chain id>`.
//! * `PAY402_FACILITATOR_KEY` (required): the private key that sends `transferWithAuthorization`
//!   and pays the gas.
//! * `PAY402_ADDR`: where to listen (default `127.0.0.1:4021`); the first stdout line is
//!   `listening on <base URL>`.
//!
//! It serves `POST /verify`, `POST /settle`, `GET /supported` and `GET /settle/status`: point a
//! seller's `HttpFacilitatorClient` (or any x402 SDK's HTTP facilitator client) at the base URL.

mod support;

use pay402::evm::PrivateKeySigner;
use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator, server};
use std::sync::Arc;

/// The value of a required environment variable, or an error naming it.
fn required(name: &str, what: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(format!("{name} is not set: {what}")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rpc_url = required("PAY402_RPC_URL", "the JSON-RPC URL of the chain to settle on, e.g. http://127.0.0.1:8545")?;
    let key = required("PAY402_FACILITATOR_KEY", "the 0x-hex private key that sends settlements and pays their gas")?;
    let signer: PrivateKeySigner =
        key.parse().map_err(|e| format!("PAY402_FACILITATOR_KEY is not a secp256k1 private key: {e}"))?;
    let exact = ExactEvmFacilitatorScheme::connect_http(&rpc_url, signer).await?;
    let network = exact.network().clone();
    eprintln!("settling exact EIP-3009 payments on {network} from {}", exact.address());
    let facilitator = X402Facilitator::new().register([network], exact);

    let listener = tokio::net::TcpListener::bind(support::addr()).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, server::router(Arc::new(facilitator)))
        .with_graceful_shutdown(async {
            // Ctrl-C: stop accepting, let in-flight settlements finish.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
