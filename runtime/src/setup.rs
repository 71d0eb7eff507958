//! The one call that sets up a seller (and a test buyer): [`Setup::from_env`].
//!
//! **Development** (the default: `PAY402_ENV` unset or `development`) needs nothing: the
//! embedded x402 facilitator and the embedded Settlement Agent (in-memory ledgers whose faucet
//! gives every account it has not seen [`DEVELOPMENT_FAUCET`] — 1000 USD₮0 of play money), a
//! random MPP secret, the realm `pay402.localhost`, and well-known development keys for the payee
//! (which also signs session settlements, so x402 and MPP routes pay the same address) and for a
//! test buyer. A loud warning is printed once at start-up, and development is refused when
//! `PAY402_ENV=production`.
//!
//! **Production** (`PAY402_ENV=production`) uses OKX's facilitator and Settlement Agent and
//! requires the real values; a missing or unusable one is reported together with every other
//! one ([`SetupError::Incomplete`]):
//!
//! | variable | what |
//! |---|---|
//! | `OKX_API_KEY`, `OKX_SECRET_KEY`, `OKX_PASSPHRASE` | OKX API credentials (facilitator and Settlement Agent) |
//! | `PAY402_PAY_TO` | the payee address (EIP-55 checksummed) |
//! | `MPP_REALM` | the MPP realm (your API's host name) |
//! | `MPP_SECRET_KEY` | the HMAC key of MPP challenge ids: at least 32 bytes (`openssl rand -hex 32`), stable across restarts and shared by instances |
//! | `PAY402_PAYEE_KEY` (optional) | the payee's key, needed for MPP sessions (it signs settle/close); its address must be `PAY402_PAY_TO` |
//! | `OKX_BASE_URL` (optional) | OKX's API host |
//! | `PAY402_BUYER_KEY` | only for [`Setup::buyer`] (a buyer process) |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let setup = pay402_runtime::setup::Setup::from_env()?;
//! let x402 = setup.x402().await?; // an initialized X402HttpServer paying setup.pay_to()
//! let mpp = setup.mpp()?; // an Mpp with the charge and session intents
//! # let _ = (x402, mpp); Ok(()) }
//! ```

use crate::evm::{PrivateKeySigner, Signer, U256};
use crate::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp, MppConfigError, SessionIntent};
use crate::okx::sa::{OkxSaClient, OkxSaConfig, SaClient};
use crate::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use crate::x402::{
    AggrDeferredEvmScheme, EmbeddedFacilitator, ExactEvmScheme, FacilitatorClient, ResourceServerError, UptoEvmScheme,
    X402HttpServer, X402ResourceServer,
};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Once};

/// The environment variable that selects the mode: `development` (default) or `production`.
pub const MODE_VAR: &str = "PAY402_ENV";
/// The smallest MPP secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = crate::mpp::MIN_SECRET_BYTES;
/// What the embedded backends give an account they have not seen in development: 1000 USD₮0
/// (atomic units, 6 decimals).
pub const DEVELOPMENT_FAUCET: u64 = 1_000_000_000;
/// The development realm.
pub const DEVELOPMENT_REALM: &str = "pay402.localhost";
/// The development payee's key: Anvil/Hardhat test account 1, a **publicly known** key (never
/// hold real funds with it). Its address, [`DEVELOPMENT_PAY_TO`], is the development payee.
pub const DEVELOPMENT_PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// The address of [`DEVELOPMENT_PAYEE_KEY`].
pub const DEVELOPMENT_PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// The development buyer's key: Anvil/Hardhat test account 0, a **publicly known** key.
pub const DEVELOPMENT_BUYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The address servers listen on unless `PAY402_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4021";

/// Which backends a [`Setup`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Embedded backends, play money, development keys.
    Development,
    /// OKX's facilitator and Settlement Agent, real values from the environment.
    Production,
}

/// One environment variable that is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProblem {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl fmt::Display for EnvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Why a [`Setup`] could not be made. Its `Debug` is its `Display` text, so `main` returning
/// `Result<(), Box<dyn Error>>` prints what to do, not a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// [`Setup::development`] while `PAY402_ENV=production`.
    #[error(
        "PAY402_ENV=production, so the development set-up (embedded backends, play money, publicly known keys) is \
         refused: use Setup::from_env() or Setup::production() with the production variables (see pay402::setup)"
    )]
    DevelopmentInProduction,
    /// `PAY402_ENV` has a value other than `development` or `production`.
    #[error("PAY402_ENV must be `development` or `production`, not {0:?}")]
    UnknownMode(String),
    /// Variables are missing or unusable; every one is listed.
    #[error("{}", incomplete(.0))]
    Incomplete(Vec<EnvProblem>),
    /// The MPP coordinator refused its configuration.
    #[error("MPP set-up: {0}")]
    Mpp(#[from] MppConfigError),
    /// An OKX client could not be built.
    #[error("OKX client set-up: {0}")]
    Okx(String),
    /// The x402 server could not be initialized (no facilitator answered).
    #[error("x402 set-up: {0}")]
    X402(#[from] ResourceServerError),
    /// A buyer key is not available in this mode.
    #[error("no buyer key: set PAY402_BUYER_KEY to the buyer's private key (hex)")]
    NoBuyerKey,
}

impl fmt::Debug for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn incomplete(problems: &[EnvProblem]) -> String {
    let mut out = format!(
        "the production configuration (PAY402_ENV=production) is incomplete: set {} environment variable{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// Sellers' (and test buyers') backends and keys for one mode; see the [module docs](self).
#[derive(Clone)]
pub struct Setup {
    mode: Mode,
    facilitator: Arc<dyn FacilitatorClient>,
    embedded_facilitator: Option<EmbeddedFacilitator>,
    sa: Arc<dyn SaClient>,
    embedded_sa: Option<EmbeddedSa>,
    pay_to: String,
    payee: Option<Arc<PrivateKeySigner>>,
    realm: String,
    secret: Secret,
    buyer: Option<PrivateKeySigner>,
}

#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("mode", &self.mode)
            .field("pay_to", &self.pay_to)
            .field("realm", &self.realm)
            .field("payee_key", &self.payee.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A non-empty environment variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn problem(variable: &'static str, problem: impl Into<String>) -> EnvProblem {
    EnvProblem { variable, problem: problem.into() }
}

/// Checks a payee address (EIP-55 when mixed case).
fn address(variable: &'static str, text: &str) -> Result<String, EnvProblem> {
    pay402_core::address::EvmAddress::parse(text)
        .map(|a| a.to_checksum())
        .map_err(|e| problem(variable, format!("not a valid address ({e})")))
}

fn key(variable: &'static str, text: &str) -> Result<PrivateKeySigner, EnvProblem> {
    text.parse::<PrivateKeySigner>()
        .map_err(|_| problem(variable, "not a private key (64 hex digits, optionally 0x-prefixed)"))
}

fn secret(variable: &'static str, text: &str) -> Result<String, EnvProblem> {
    if text.len() < MIN_SECRET_BYTES {
        return Err(problem(
            variable,
            format!(
                "too short ({} bytes; at least {MIN_SECRET_BYTES}): generate one with `openssl rand -hex 32`",
                text.len()
            ),
        ));
    }
    Ok(text.to_owned())
}

/// The mode `PAY402_ENV` selects.
pub fn mode_from_env() -> Result<Mode, SetupError> {
    match var(MODE_VAR).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("development") | Some("dev") => Ok(Mode::Development),
        Some("production") | Some("prod") => Ok(Mode::Production),
        Some(_) => Err(SetupError::UnknownMode(std::env::var(MODE_VAR).unwrap_or_default())),
    }
}

/// `PAY402_ADDR`, or [`DEFAULT_ADDR`] (`127.0.0.1:4021`).
pub fn listen_addr() -> SocketAddr {
    var("PAY402_ADDR").and_then(|a| a.parse().ok()).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4021)))
}

/// The key a buyer process pays with: `PAY402_BUYER_KEY`, or in development (`PAY402_ENV`
/// unset or `development`) the publicly known [`DEVELOPMENT_BUYER_KEY`] — the embedded backends
/// fund any account, so any key pays them. In production `PAY402_BUYER_KEY` is required.
pub fn buyer_key() -> Result<PrivateKeySigner, SetupError> {
    match var("PAY402_BUYER_KEY") {
        Some(k) => key("PAY402_BUYER_KEY", &k).map_err(|p| SetupError::Incomplete(vec![p])),
        None if mode_from_env()? == Mode::Development => {
            DEVELOPMENT_BUYER_KEY.parse::<PrivateKeySigner>().map_err(|_| SetupError::NoBuyerKey)
        }
        None => Err(SetupError::NoBuyerKey),
    }
}

static WARNING: Once = Once::new();

fn warn_development() {
    WARNING.call_once(|| {
        let text = "pay402 DEVELOPMENT MODE: embedded facilitator and Settlement Agent (in-memory ledgers; every \
                    account gets 1000 USD₮0 of play money), a random MPP secret and publicly known development \
                    keys. Nothing is settled on chain. Set PAY402_ENV=production and the production variables \
                    (see pay402::setup) to take real payments.";
        eprintln!("\n*** {text} ***\n");
        tracing::warn!(target: "pay402::setup", "{text}");
    });
}

impl Setup {
    /// Development or production as `PAY402_ENV` says (development when unset).
    pub fn from_env() -> Result<Self, SetupError> {
        match mode_from_env()? {
            Mode::Development => Self::development(),
            Mode::Production => Self::production(),
        }
    }

    /// The development set-up (see the [module docs](self)); refused when
    /// `PAY402_ENV=production`. `PAY402_PAY_TO`, `PAY402_PAYEE_KEY`, `PAY402_BUYER_KEY`,
    /// `MPP_REALM` and `MPP_SECRET_KEY` are used when set (and checked).
    pub fn development() -> Result<Self, SetupError> {
        if mode_from_env()? == Mode::Production {
            return Err(SetupError::DevelopmentInProduction);
        }
        let mut problems = Vec::new();
        let payee = match var("PAY402_PAYEE_KEY") {
            Some(k) => key("PAY402_PAYEE_KEY", &k).map_err(|p| problems.push(p)).ok(),
            None => DEVELOPMENT_PAYEE_KEY.parse::<PrivateKeySigner>().ok(),
        };
        let pay_to = match var("PAY402_PAY_TO") {
            Some(a) => address("PAY402_PAY_TO", &a).map_err(|p| problems.push(p)).unwrap_or_default(),
            None => payee.as_ref().map_or_else(|| DEVELOPMENT_PAY_TO.to_owned(), |k| k.address().to_checksum(None)),
        };
        let buyer = match var("PAY402_BUYER_KEY") {
            Some(k) => key("PAY402_BUYER_KEY", &k).map_err(|p| problems.push(p)).ok(),
            None => DEVELOPMENT_BUYER_KEY.parse::<PrivateKeySigner>().ok(),
        };
        let secret = match var("MPP_SECRET_KEY") {
            Some(s) => secret("MPP_SECRET_KEY", &s).map_err(|p| problems.push(p)).unwrap_or_default(),
            None => crate::evm::to_hex(crate::evm::B256::random()),
        };
        if !problems.is_empty() {
            return Err(SetupError::Incomplete(problems));
        }
        warn_development();
        if var("OKX_API_KEY").is_some() {
            tracing::warn!(
                target: "pay402::setup",
                "OKX credentials are set but PAY402_ENV is not `production`: development ignores them"
            );
        }
        let faucet = U256::from(DEVELOPMENT_FAUCET);
        let embedded_facilitator = EmbeddedFacilitator::new().with_faucet(faucet);
        let embedded_sa = EmbeddedSa::new().with_faucet(faucet);
        let payee = payee.filter(|k| {
            let same = crate::evm::parse_address(&pay_to).ok() == Some(k.address());
            if !same {
                tracing::warn!(
                    pay_to = %pay_to,
                    "PAY402_PAY_TO is not the address of the payee key: MPP sessions are not offered \
                     (their settlements must be signed by the payee); set PAY402_PAYEE_KEY to its key"
                );
            }
            same
        });
        Ok(Self {
            mode: Mode::Development,
            facilitator: Arc::new(embedded_facilitator.clone()),
            embedded_facilitator: Some(embedded_facilitator),
            sa: Arc::new(embedded_sa.clone()),
            embedded_sa: Some(embedded_sa),
            pay_to,
            payee: payee.map(Arc::new),
            realm: var("MPP_REALM").unwrap_or_else(|| DEVELOPMENT_REALM.to_owned()),
            secret: Secret(secret),
            buyer,
        })
    }

    /// The production set-up: OKX's facilitator and Settlement Agent and the values of the
    /// environment; every missing or unusable variable is reported at once.
    pub fn production() -> Result<Self, SetupError> {
        let mut problems = Vec::new();
        let mut required = |name: &'static str, what: &str| {
            let v = var(name);
            if v.is_none() {
                problems.push(problem(name, format!("missing ({what})")));
            }
            v
        };
        let api_key = required("OKX_API_KEY", "your OKX API key");
        let secret_key = required("OKX_SECRET_KEY", "the secret of that API key");
        let passphrase = required("OKX_PASSPHRASE", "the passphrase of that API key");
        let pay_to = required("PAY402_PAY_TO", "the address that receives payments");
        let realm = required("MPP_REALM", "the MPP realm, e.g. your API's host name");
        let mpp_secret = required("MPP_SECRET_KEY", "at least 32 bytes: `openssl rand -hex 32`");
        let pay_to = pay_to.and_then(|a| address("PAY402_PAY_TO", &a).map_err(|p| problems.push(p)).ok());
        let mpp_secret = mpp_secret.and_then(|s| secret("MPP_SECRET_KEY", &s).map_err(|p| problems.push(p)).ok());
        let payee =
            var("PAY402_PAYEE_KEY").and_then(|k| key("PAY402_PAYEE_KEY", &k).map_err(|p| problems.push(p)).ok());
        if let (Some(k), Some(a)) = (&payee, &pay_to)
            && crate::evm::parse_address(a).ok() != Some(k.address())
        {
            problems.push(problem(
                "PAY402_PAYEE_KEY",
                format!("its address {} is not PAY402_PAY_TO ({a})", k.address().to_checksum(None)),
            ));
        }
        let buyer =
            var("PAY402_BUYER_KEY").and_then(|k| key("PAY402_BUYER_KEY", &k).map_err(|p| problems.push(p)).ok());
        let (Some(api_key), Some(secret_key), Some(passphrase), Some(pay_to), Some(realm), Some(mpp_secret)) =
            (api_key, secret_key, passphrase, pay_to, realm, mpp_secret)
        else {
            return Err(SetupError::Incomplete(problems));
        };
        if !problems.is_empty() {
            return Err(SetupError::Incomplete(problems));
        }
        let credentials = OkxCredentials::new(api_key, secret_key, passphrase);
        let mut facilitator_config = OkxFacilitatorConfig::new(credentials.clone());
        let mut sa_config = OkxSaConfig::new(credentials);
        if let Some(url) = var("OKX_BASE_URL") {
            facilitator_config.base_url.clone_from(&url);
            sa_config.base_url = url;
        }
        let facilitator = OkxFacilitatorClient::new(facilitator_config).map_err(|e| SetupError::Okx(e.to_string()))?;
        let sa = OkxSaClient::new(sa_config).map_err(|e| SetupError::Okx(e.to_string()))?;
        Ok(Self {
            mode: Mode::Production,
            facilitator: Arc::new(facilitator),
            embedded_facilitator: None,
            sa: Arc::new(sa),
            embedded_sa: None,
            pay_to,
            payee: payee.map(Arc::new),
            realm,
            secret: Secret(mpp_secret),
            buyer,
        })
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether this is the development set-up.
    pub fn is_development(&self) -> bool {
        self.mode == Mode::Development
    }

    /// The payee address every route of this set-up pays.
    pub fn pay_to(&self) -> &str {
        &self.pay_to
    }

    /// The x402 facilitator (embedded, or OKX's).
    pub fn facilitator(&self) -> Arc<dyn FacilitatorClient> {
        self.facilitator.clone()
    }

    /// The embedded facilitator (development only): its ledger, for tests and demos.
    pub fn embedded_facilitator(&self) -> Option<&EmbeddedFacilitator> {
        self.embedded_facilitator.as_ref()
    }

    /// The Settlement Agent (embedded, or OKX's).
    pub fn settlement_agent(&self) -> Arc<dyn SaClient> {
        self.sa.clone()
    }

    /// The embedded Settlement Agent (development only): its ledger, for tests and demos.
    pub fn embedded_sa(&self) -> Option<&EmbeddedSa> {
        self.embedded_sa.as_ref()
    }

    /// An x402 resource server over this set-up's facilitator with `exact`, `aggr_deferred` and
    /// `upto` on X Layer registered (an `upto` route answers 500 while the facilitator announces
    /// no `upto` kind with `extra.facilitatorAddress`; the other routes work).
    pub fn resource_server(&self) -> X402ResourceServer {
        X402ResourceServer::with_facilitators(vec![self.facilitator.clone()])
            .register("eip155:196", ExactEvmScheme::new())
            .register("eip155:196", AggrDeferredEvmScheme::new())
            .register("eip155:196", UptoEvmScheme::new())
    }

    /// An initialized [`X402HttpServer`] over [`resource_server`](Self::resource_server) paying
    /// [`pay_to`](Self::pay_to) — the state of `#[x402]` handlers or the table of `X402Layer`.
    /// In development, a route that cannot build its payment requirements says why in its 500.
    pub async fn x402(&self) -> Result<X402HttpServer, SetupError> {
        let x402 = X402HttpServer::new(self.resource_server())
            .pay_to(self.pay_to.clone())
            .explain_errors(self.is_development());
        x402.initialize().await?;
        Ok(x402)
    }

    /// The `evm` method on X Layer paying [`pay_to`](Self::pay_to), with the `charge` intent and,
    /// when a payee key is known (always in development), the `session` intent.
    pub fn evm_method(&self) -> EvmMethod {
        let method = EvmMethod::x_layer(self.pay_to.clone()).with_charge(ChargeIntent::with_sa(self.sa.clone()));
        match &self.payee {
            Some(payee) => {
                let signer: Arc<dyn Signer> = payee.clone();
                method.with_session(SessionIntent::with_sa(self.sa.clone(), self.pay_to.clone()).signer(signer))
            }
            None => method,
        }
    }

    /// An [`Mpp`] coordinator over [`evm_method`](Self::evm_method) with this set-up's realm and
    /// secret — the state of `#[pay]` handlers or the table of `MppLayer`.
    pub fn mpp(&self) -> Result<Mpp, SetupError> {
        Ok(Mpp::new(self.evm_method(), self.realm.clone(), self.secret.0.clone())?
            .explain_errors(self.is_development()))
    }

    /// The buyer's key: `PAY402_BUYER_KEY`, or in development the publicly known
    /// [`DEVELOPMENT_BUYER_KEY`] (the embedded backends fund any account, so any key pays them).
    pub fn buyer(&self) -> Result<PrivateKeySigner, SetupError> {
        self.buyer.clone().ok_or(SetupError::NoBuyerKey)
    }
}
