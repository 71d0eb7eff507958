//! Shared by the example servers: the README's example convention.
//!
//! * listen on `PAY402_ADDR` (default `127.0.0.1:4021`);
//! * print `listening on <full URL of the paid route>` as the first stdout line;
//! * pay `PAY402_PAY_TO` (default [`DEMO_PAY_TO`]);
//! * use the embedded development facilitator unless `OKX_API_KEY`, `OKX_SECRET_KEY` and
//!   `OKX_PASSPHRASE` are set, then OKX's facilitator at `OKX_BASE_URL`.
#![allow(dead_code)] // each example uses a subset

use pay402::okx::{OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::X402ResourceServer;
use pay402::x402::{AggrDeferredEvmScheme, ExactEvmScheme, FacilitatorClient};
use std::net::SocketAddr;
use std::sync::Arc;

/// The default payee of the examples (a fixed demo address).
pub(crate) const DEMO_PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
/// Balance (atomic USD₮0 units) the embedded facilitator grants to accounts it has not seen,
/// so any wallet can try the examples: 1000 USD₮0.
pub(crate) const DEMO_FAUCET: u64 = 1_000_000_000;

/// `PAY402_ADDR` or the default.
pub(crate) fn addr() -> SocketAddr {
    std::env::var("PAY402_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4021)))
}

/// `PAY402_PAY_TO` or [`DEMO_PAY_TO`].
pub(crate) fn pay_to() -> String {
    std::env::var("PAY402_PAY_TO").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEMO_PAY_TO.to_owned())
}

/// A facilitator and, when it is the embedded one, a handle on its ledger.
pub(crate) type Facilitator = (Arc<dyn FacilitatorClient>, Option<EmbeddedFacilitator>);

/// The facilitator the examples use, and a handle on the embedded one when it is used.
pub(crate) fn facilitator() -> Result<Facilitator, Box<dyn std::error::Error>> {
    match OkxFacilitatorConfig::from_env()? {
        Some(config) => {
            eprintln!("using OKX's facilitator at {}", config.base_url);
            Ok((Arc::new(OkxFacilitatorClient::new(config)?), None))
        }
        None => {
            eprintln!(
                "using the embedded development facilitator (set OKX_API_KEY, OKX_SECRET_KEY, OKX_PASSPHRASE for OKX)"
            );
            let embedded = EmbeddedFacilitator::new().with_faucet(pay402::evm::U256::from(DEMO_FAUCET));
            Ok((Arc::new(embedded.clone()), Some(embedded)))
        }
    }
}

/// A resource server over [`facilitator`] with `exact` on X Layer, plus `aggr_deferred` when
/// OKX's facilitator (which batches deferred payments) is used.
pub(crate) fn resource_server() -> Result<(X402ResourceServer, Option<EmbeddedFacilitator>), Box<dyn std::error::Error>>
{
    let (facilitator, embedded) = facilitator()?;
    let mut server =
        X402ResourceServer::with_facilitators(vec![facilitator]).register("eip155:196", ExactEvmScheme::new());
    if embedded.is_none() {
        server = server.register("eip155:196", AggrDeferredEvmScheme::new());
    }
    Ok((server, embedded))
}

/// Prints the convention's first line.
pub(crate) fn announce(addr: SocketAddr, path: &str) {
    println!("listening on http://{addr}{path}");
}

/// The demo buyer's private key (Anvil/Hardhat test account 0 — a well-known test key; never
/// use it with real funds). `PAY402_BUYER_KEY` overrides it in the client example.
pub(crate) const DEMO_BUYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The buyer's signer: `PAY402_BUYER_KEY` or [`DEMO_BUYER_KEY`].
pub(crate) fn buyer() -> Result<pay402::evm::PrivateKeySigner, Box<dyn std::error::Error>> {
    let key = std::env::var("PAY402_BUYER_KEY").unwrap_or_else(|_| DEMO_BUYER_KEY.to_owned());
    Ok(key.trim().parse::<pay402::evm::PrivateKeySigner>()?)
}

/// One paid GET, narrated: request → 402 → sign → retry → result. Returns the final status.
pub(crate) async fn pay_once(
    url: &str,
    signer: pay402::evm::PrivateKeySigner,
) -> Result<u16, Box<dyn std::error::Error>> {
    use pay402::x402::X402Client;
    use pay402::x402::{ExactEvmClientScheme, decode_payment_required_header, decode_payment_response_header};

    let http = reqwest::Client::new();
    let first = http.get(url).send().await?;
    println!("GET {url} -> {}", first.status());
    let Some(required) = first.headers().get("payment-required") else {
        println!("no PAYMENT-REQUIRED header; body: {}", first.text().await?);
        return Ok(0);
    };
    let required = decode_payment_required_header(required.to_str()?)?;
    if let pay402::x402::AnyPaymentRequired::V2(r) = &required {
        for a in &r.accepts {
            println!(
                "  accepts: {} {} atomic units of {} on {} to {}",
                a.scheme, a.amount, a.asset, a.network, a.pay_to
            );
        }
    }
    let client = X402Client::new().register("eip155:*", ExactEvmClientScheme::new(signer.clone()));
    let (name, value) = client.create_payment_header(&required).await?;
    println!("signed an EIP-3009 TransferWithAuthorization as {}", signer.address());
    let paid = http.get(url).header(name, value).send().await?;
    let status = paid.status();
    println!("GET {url} with {name} -> {status}");
    if let Some(resp) = paid.headers().get("payment-response").or_else(|| paid.headers().get("x-payment-response")) {
        let settled = decode_payment_response_header(resp.to_str()?)?;
        println!("PAYMENT-RESPONSE: {}", serde_json::to_string_pretty(&settled)?);
    }
    println!("body: {}", paid.text().await?);
    Ok(status.as_u16())
}

/// The development MPP secret used when `MPP_SECRET_KEY` is unset (never use it in production).
pub(crate) const DEV_MPP_SECRET: &str = "pay402-dev-mpp-secret";
/// The development realm used when `MPP_REALM` is unset.
pub(crate) const DEV_MPP_REALM: &str = "pay402.localhost";

/// The Settlement Agent the examples use: OKX's when credentials are set, else the embedded
/// development SA (which funds unknown accounts so any wallet can try the examples).
pub(crate) fn settlement_agent() -> Result<Arc<dyn pay402::okx::sa::SaClient>, Box<dyn std::error::Error>> {
    match pay402::okx::sa::OkxSaConfig::from_env()? {
        Some(config) => {
            eprintln!("using OKX's Settlement Agent at {}", config.base_url);
            Ok(Arc::new(pay402::okx::sa::OkxSaClient::new(config)?))
        }
        None => {
            eprintln!(
                "using the embedded development Settlement Agent (set OKX_API_KEY, OKX_SECRET_KEY, OKX_PASSPHRASE for OKX)"
            );
            Ok(Arc::new(pay402::mpp::EmbeddedSa::new().with_faucet(pay402::evm::U256::from(DEMO_FAUCET))))
        }
    }
}

/// An [`pay402::mpp::Mpp`] with the charge intent, from `MPP_SECRET_KEY` / `MPP_REALM` (with
/// documented development defaults) and `PAY402_PAY_TO`.
pub(crate) fn mpp() -> Result<pay402::mpp::Mpp, Box<dyn std::error::Error>> {
    use pay402::mpp::{ChargeIntent, EvmMethod, Mpp};
    let secret = std::env::var("MPP_SECRET_KEY").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        eprintln!("MPP_SECRET_KEY not set: using the development secret");
        DEV_MPP_SECRET.to_owned()
    });
    let realm = std::env::var("MPP_REALM").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEV_MPP_REALM.to_owned());
    let method = EvmMethod::x_layer(pay_to()).with_charge(ChargeIntent::with_sa(settlement_agent()?));
    Ok(Mpp::new(method, realm, secret)?)
}

/// The demo payee's private key for the session examples (Anvil/Hardhat test account 1 — a
/// well-known test key; never use it with real funds). Its address is the session examples'
/// default payee. `PAY402_PAYEE_KEY` overrides it.
pub(crate) const DEMO_PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// An [`pay402::mpp::Mpp`] with the session intent (pay-as-you-go over a payment channel),
/// from `MPP_SECRET_KEY` / `MPP_REALM` (development defaults as [`mpp`]). The payee signs
/// settle and close authorizations with `PAY402_PAYEE_KEY` (default [`DEMO_PAYEE_KEY`]); it is
/// paid at `PAY402_PAY_TO`, by default that key's address.
pub(crate) fn session_mpp() -> Result<pay402::mpp::Mpp, Box<dyn std::error::Error>> {
    use pay402::mpp::{EvmMethod, Mpp, SessionIntent};
    let key = std::env::var("PAY402_PAYEE_KEY").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        eprintln!("PAY402_PAYEE_KEY not set: using the demo payee key");
        DEMO_PAYEE_KEY.to_owned()
    });
    let signer = key.trim().parse::<pay402::evm::PrivateKeySigner>()?;
    let pay_to =
        std::env::var("PAY402_PAY_TO").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| signer.address().to_string());
    if pay402::evm::parse_address(&pay_to).ok() != Some(signer.address()) {
        eprintln!(
            "warning: PAY402_PAY_TO {pay_to} is not the address of PAY402_PAYEE_KEY; settle and close will be refused"
        );
    }
    let secret = std::env::var("MPP_SECRET_KEY").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        eprintln!("MPP_SECRET_KEY not set: using the development secret");
        DEV_MPP_SECRET.to_owned()
    });
    let realm = std::env::var("MPP_REALM").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEV_MPP_REALM.to_owned());
    let intent = SessionIntent::with_sa(settlement_agent()?, pay_to.clone()).signer(Arc::new(signer));
    let method = EvmMethod::x_layer(pay_to).with_session(intent);
    Ok(Mpp::new(method, realm, secret)?)
}
