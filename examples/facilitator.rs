//! A self-hosted x402 facilitator that verifies and settles `exact` EIP-3009 payments on chain.
//!
//! ```text
//! PAY402_RPC_URL=http://127.0.0.1:8545 PAY402_FACILITATOR_KEY=0x… \
//!   PAY402_FACILITATOR_TOKEN=$(openssl rand -hex 32) cargo run --example facilitator
//! ```
//!
//! * `PAY402_RPC_URL` (required): the JSON-RPC endpoint of the chain; the facilitator serves
//!   `eip155:<its chain id>`.
//! * `PAY402_FACILITATOR_KEY` (required): the private key that sends `transferWithAuthorization`
//!   and pays the gas.
//! * `PAY402_FACILITATOR_TOKEN` (required unless `PAY402_FACILITATOR_NO_AUTH=1`): the bearer
//!   token sellers must send (`Authorization: Bearer <token>`) to `/verify`, `/settle` and
//!   `/settle/status`; at least 16 visible ASCII characters. Without it anyone who reaches the
//!   port could make the key pay gas, so the example refuses to start unless the operator opts
//!   out explicitly with `PAY402_FACILITATOR_NO_AUTH=1` (e.g. behind an authenticating proxy).
//! * `PAY402_FACILITATOR_ASSETS`: comma-separated EIP-3009 token addresses accepted besides the
//!   chain's registry asset (USD₮0 on X Layer, USDC on Base, …); payments in other assets are
//!   refused before any call to their contract.
//! * `PAY402_FACILITATOR_MAX_GAS`: ceiling on a settlement's gas limit (default 300000).
//! * `PAY402_ADDR`: where to listen (default `127.0.0.1:4021`); the first stdout line is
//!   `listening on <base URL>`.
//!
//! It serves `POST /verify`, `POST /settle`, `GET /supported` and `GET /settle/status`: point a
//! seller's `HttpFacilitatorClient` (with `HttpFacilitatorConfig::bearer_token`), or any x402
//! SDK's HTTP facilitator client with an `Authorization` header, at the base URL.

use pay402::evm::{PrivateKeySigner, parse_address};
use pay402::x402::facilitator_evm::{ExactEvmFacilitatorScheme, X402Facilitator, server};
use std::sync::Arc;

/// The value of a required environment variable, or an error naming it.
fn required(name: &str, what: &str) -> Result<String, String> {
    optional(name).ok_or_else(|| format!("{name} is not set: {what}"))
}

/// The trimmed value of an environment variable, if set and not blank.
fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rpc_url = required("PAY402_RPC_URL", "the JSON-RPC URL of the chain to settle on, e.g. http://127.0.0.1:8545")?;
    let key = required("PAY402_FACILITATOR_KEY", "the 0x-hex private key that sends settlements and pays their gas")?;
    let signer: PrivateKeySigner =
        key.parse().map_err(|e| format!("PAY402_FACILITATOR_KEY is not a secp256k1 private key: {e}"))?;
    let token = match (optional("PAY402_FACILITATOR_TOKEN"), optional("PAY402_FACILITATOR_NO_AUTH").as_deref()) {
        (Some(token), _) => {
            Some(server::BearerToken::new(&token).map_err(|e| format!("PAY402_FACILITATOR_TOKEN: {e}"))?)
        }
        (None, Some("1")) => None,
        (None, _) => {
            return Err("PAY402_FACILITATOR_TOKEN is not set: the bearer token sellers must send (or set \
                        PAY402_FACILITATOR_NO_AUTH=1 to serve without authentication, e.g. behind an \
                        authenticating proxy)"
                .into());
        }
    };
    let mut exact = ExactEvmFacilitatorScheme::connect_http(&rpc_url, signer).await?;
    for asset in optional("PAY402_FACILITATOR_ASSETS").iter().flat_map(|list| list.split(',')) {
        let asset = parse_address(asset.trim())
            .map_err(|e| format!("PAY402_FACILITATOR_ASSETS: `{asset}` is not an address: {e}"))?;
        exact = exact.with_asset(asset);
    }
    if let Some(max_gas) = optional("PAY402_FACILITATOR_MAX_GAS") {
        let max_gas = max_gas.parse().map_err(|e| format!("PAY402_FACILITATOR_MAX_GAS: {e}"))?;
        exact = exact.with_max_settlement_gas(max_gas);
    }
    let network = exact.network().clone();
    eprintln!("settling exact EIP-3009 payments on {network} from {}", exact.address());
    let facilitator = Arc::new(X402Facilitator::new().register([network], exact));
    let app = match token {
        Some(token) => server::router_with_token(facilitator, token),
        None => {
            eprintln!("WARNING: PAY402_FACILITATOR_NO_AUTH=1: anyone who reaches this port can spend the key's gas");
            server::router(facilitator)
        }
    };

    let listener = tokio::net::TcpListener::bind(pay402::setup::listen_addr()).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // Ctrl-C: stop accepting, let in-flight settlements finish.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
