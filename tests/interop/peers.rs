//! Locating and running the third-party peers of the interop tests (included by
//! `tests/interop_python.rs` and `tests/interop_node.rs` with `#[path]`).
//!
//! The peers are installed by `scripts/install-test-deps.sh` under `PAY402_DEPS_DIR` (default
//! `<repo>/.test-deps`): OKX's Python SDK in `venv/` (scripts/deps/40-python-peers.sh) and the
//! official Node x402 client in `node-peers/node_modules/` (scripts/deps/41-node-peers.sh). A
//! missing peer fails the test with the install command; it is never skipped.
//!
//! Also the sellers' side shared by both: a facilitator that records verifications, and the
//! README example binaries.
#![allow(dead_code)] // each test file uses a subset

use async_trait::async_trait;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::{
    FacilitatorClient, FacilitatorError, PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse,
    SupportedResponse, VerifyResponse,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository root (the root crate's manifest directory).
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `PAY402_DEPS_DIR`, or `<repo>/.test-deps`.
pub(crate) fn deps_dir() -> PathBuf {
    std::env::var_os("PAY402_DEPS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| repo().join(".test-deps"), PathBuf::from)
}

/// A peer script in `tests/interop/<dir>/<name>`.
pub(crate) fn script(dir: &str, name: &str) -> PathBuf {
    let path = repo().join("tests/interop").join(dir).join(name);
    assert!(path.is_file(), "peer script {} is missing", path.display());
    path
}

/// The venv's Python with OKX's packages; panics (test failure) naming the install script when
/// the venv is missing.
pub(crate) fn venv_python() -> PathBuf {
    let python = deps_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "the Python peers are not installed: {} is missing. Install them with \
         `bash scripts/install-test-deps.sh` (scripts/deps/40-python-peers.sh; PAY402_DEPS_DIR={})",
        python.display(),
        deps_dir().display()
    );
    python
}

/// `node` on PATH and the Node peers' `node_modules`; panics (test failure) naming the install
/// script when either is missing.
pub(crate) fn node_and_modules() -> (PathBuf, PathBuf) {
    let modules = deps_dir().join("node-peers/node_modules");
    assert!(
        modules.join("@x402/fetch/package.json").is_file(),
        "the Node peers are not installed: {} has no @x402/fetch. Install them with \
         `bash scripts/install-test-deps.sh` (scripts/deps/41-node-peers.sh; PAY402_DEPS_DIR={})",
        modules.display(),
        deps_dir().display()
    );
    let node = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|n| n.is_file())
        .unwrap_or_else(|| {
            panic!("`node` is not on PATH: install Node.js (scripts/deps/41-node-peers.sh needs it too)")
        });
    (node, modules)
}

/// How long a peer process may run before the test fails.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server process may take to print its `listening on` line.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client for talking to peers, with a bounded wait per request.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(PEER_TIMEOUT).build().expect("HTTP client")
}

/// The output of a finished peer process.
pub(crate) struct PeerOutput {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl PeerOutput {
    /// The last stdout line as JSON; panics with both streams when the process failed or did
    /// not print JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        assert!(self.success, "peer failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("peer printed no JSON ({e})\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `program args…` with `env` added, without blocking the async runtime (the in-test
/// servers run on it), killing it after [`PEER_TIMEOUT`].
pub(crate) async fn run(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> PeerOutput {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).current_dir(repo()).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(PEER_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {PEER_TIMEOUT:?}", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    PeerOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a Python peer script from `tests/interop/python/` in the venv.
pub(crate) async fn python(name: &str, args: &[&str]) -> PeerOutput {
    let python = venv_python();
    let script = script("python", name);
    let script = script.to_str().expect("UTF-8 path");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run(&python, &all, &[]).await
}

/// Runs a peer script from `tests/interop/x402-official/` with the official x402 Python SDK
/// (its own venv, `venv-x402/`); panics (test failure) naming the install script when missing.
pub(crate) async fn official_python(name: &str, args: &[&str]) -> PeerOutput {
    let python = deps_dir().join("venv-x402/bin/python");
    assert!(
        python.is_file(),
        "the official x402 Python SDK is not installed: {} is missing. Install it with \
         `bash scripts/install-test-deps.sh` (scripts/deps/42-x402-official.sh; PAY402_DEPS_DIR={})",
        python.display(),
        deps_dir().display()
    );
    let script = script("x402-official", name);
    let script = script.to_str().expect("UTF-8 path");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run(&python, &all, &[]).await
}

/// Runs a Node peer script from `tests/interop/node/` against the installed `node_modules`.
pub(crate) async fn node(name: &str, args: &[&str]) -> PeerOutput {
    let (node, modules) = node_and_modules();
    let script = script("node", name);
    let script = script.to_str().expect("UTF-8 path");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run(&node, &all, &[("NODE_PATH", &modules)]).await
}

/// The embedded facilitator, recording every verification the seller asked for.
#[derive(Clone)]
pub(crate) struct Recording {
    pub(crate) inner: EmbeddedFacilitator,
    pub(crate) verified: Arc<Mutex<Vec<VerifyResponse>>>,
}

impl Recording {
    pub(crate) fn new(inner: EmbeddedFacilitator) -> Self {
        Self { inner, verified: Arc::default() }
    }

    /// The verifications so far, in order.
    pub(crate) fn verified(&self) -> Vec<VerifyResponse> {
        self.verified.lock().expect("lock").clone()
    }
}

#[async_trait]
impl FacilitatorClient for Recording {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        let v = self.inner.verify(p, r).await?;
        self.verified.lock().expect("lock").push(v.clone());
        Ok(v)
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        self.inner.settle(p, r).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        self.inner.settle_status(tx).await
    }
}

/// Whether JSON `a` is the address `b` (case-insensitive).
/// Asserts a peer's paid request end to end: `out` (what its script printed) shows the resource
/// served to `buyer` and the PAYMENT-RESPONSE it decoded; the seller's facilitator verified the
/// payment once and settled it once with that transaction; `price` moved from `buyer` (funded
/// with `funded`) to `pay_to`; the authorization's nonce is used.
pub(crate) fn assert_paid_and_settled(
    out: &serde_json::Value,
    facilitator: &Recording,
    embedded: &EmbeddedFacilitator,
    (buyer, pay_to): (&str, &str),
    (funded, price): (u64, u64),
) {
    use pay402::chain::X_LAYER_USDT0;
    use pay402::evm::U256;
    assert_eq!(out["status"], 200, "{out}");
    assert!(eq_addr(&out["body"]["paid_by"], buyer), "{out}");
    let settled = &out["paymentResponse"];
    assert_eq!(settled["success"], true, "{out}");
    assert_eq!(settled["network"], "eip155:196", "{out}");
    assert!(eq_addr(&settled["payer"], buyer), "{out}");

    let verified = facilitator.verified();
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert!(verified[0].is_valid, "{verified:?}");
    let settlements = embedded.settlements();
    assert_eq!(settlements.len(), 1);
    assert!(settlements[0].success);
    assert_eq!(settled["transaction"], settlements[0].transaction.as_str(), "{out}");
    assert_eq!(embedded.balance(X_LAYER_USDT0, buyer), U256::from(funded - price));
    assert_eq!(embedded.balance(X_LAYER_USDT0, pay_to), U256::from(price));
    let nonce = out["paymentPayload"]["payload"]["authorization"]["nonce"].as_str().expect("nonce");
    assert!(embedded.is_nonce_used(X_LAYER_USDT0, buyer, nonce));
}

pub(crate) fn eq_addr(a: &serde_json::Value, b: &str) -> bool {
    a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// `target/<profile>/examples/<name>` next to this test binary (`cargo test` builds examples).
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built (`cargo test` builds the examples)", path.display());
    path
}

/// A running server process, killed on drop; its stderr goes to a log file.
pub(crate) struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// What the process wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Spawns `cmd` (a server following the README convention: its first stdout line is
/// `listening on <URL>`) and returns it with that URL.
pub(crate) fn start_announced(mut cmd: Command, what: &str) -> (Process, String) {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = std::env::temp_dir().join(format!("pay402-interop-{what}-{}-{n}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("server log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let process = Process { child, log };
    // Read the first line on a thread (bounded wait), then keep draining stdout so the server
    // never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_else(|_| {
        panic!("{what} did not announce itself within {STARTUP_TIMEOUT:?}\n--- stderr\n{}", process.log())
    });
    let Some(url) = line.trim_end().strip_prefix("listening on ") else {
        panic!("{what} printed {line:?} instead of `listening on <URL>`\n--- stderr\n{}", process.log())
    };
    let url = url.to_owned();
    (process, url)
}

/// Starts an example on a free port with its embedded backends (no OKX credentials) plus
/// `env`, and returns it with the URL from its first stdout line.
pub(crate) fn start_example(name: &str, env: &[(&str, &str)]) -> (Process, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut cmd = Command::new(example(name));
    cmd.env("PAY402_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("PAY402_ENV")
        .env_remove("OKX_API_KEY")
        .env_remove("OKX_SECRET_KEY")
        .env_remove("OKX_PASSPHRASE")
        .env_remove("PAY402_PAY_TO")
        .envs(env.iter().copied());
    start_announced(cmd, name)
}

/// A real chain for settling: anvil with a real EIP-3009 token (tests/support/anvil.rs) and
/// pay402's HTTP facilitator example (`examples/facilitator.rs`) settling on it.
pub(crate) struct OnChain {
    /// The facilitator process (killed on drop, before the chain).
    pub(crate) facilitator: Process,
    /// The facilitator's base URL.
    pub(crate) facilitator_url: String,
    /// The bearer token the facilitator requires on `/verify`, `/settle` and `/settle/status`.
    pub(crate) facilitator_token: String,
    /// The chain.
    pub(crate) chain: crate::support::anvil::Chain,
}

impl OnChain {
    /// Starts anvil, deploys the token and starts the facilitator with dev account 7 paying gas,
    /// accepting the token and requiring a fresh bearer token.
    pub(crate) async fn start() -> Self {
        let chain = crate::support::anvil::Chain::start().await;
        let gas_key = alloy::hex::encode_prefixed(chain.dev_key(7).to_bytes());
        let facilitator_token = alloy::hex::encode(crate::support::anvil::fresh_key().to_bytes());
        let (facilitator, facilitator_url) = start_example(
            "facilitator",
            &[
                ("PAY402_RPC_URL", &chain.rpc_url),
                ("PAY402_FACILITATOR_KEY", &gas_key),
                ("PAY402_FACILITATOR_TOKEN", &facilitator_token),
                ("PAY402_FACILITATOR_ASSETS", &chain.token.to_checksum(None)),
            ],
        );
        Self { facilitator, facilitator_url, facilitator_token, chain }
    }

    /// The token's address, checksummed.
    pub(crate) fn token(&self) -> String {
        self.chain.token.to_checksum(None)
    }

    /// A seller option: `amount` atomic units of the token (with its EIP-712 name and version),
    /// `exact` on eip155:196, paid to `pay_to`.
    pub(crate) fn option(&self, amount: u64, pay_to: &str) -> pay402::x402::PaymentOption {
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), crate::support::anvil::TOKEN_NAME.into());
        extra.insert("version".into(), crate::support::anvil::TOKEN_VERSION.into());
        let price = pay402::x402::AssetAmount { amount: amount.to_string(), asset: self.token(), extra };
        pay402::x402::PaymentOption::new("exact", price, "eip155:196", pay_to)
    }

    /// A pay402 resource server verifying and settling through the facilitator over HTTP.
    pub(crate) fn resource_server(&self) -> pay402::x402::X402ResourceServer {
        use pay402::x402::{HttpFacilitatorClient, HttpFacilitatorConfig};
        let config = HttpFacilitatorConfig::new(&self.facilitator_url).bearer_token(&self.facilitator_token);
        let client = HttpFacilitatorClient::new(config).expect("client");
        pay402::x402::X402ResourceServer::new(client).register("eip155:196", pay402::x402::ExactEvmScheme::new())
    }

    /// Asserts `tx` is a successful transaction on the chain.
    pub(crate) async fn assert_mined_ok(&self, tx: &str) {
        use alloy::providers::Provider;
        let hash: alloy::primitives::B256 = tx.parse().unwrap_or_else(|e| panic!("tx hash {tx:?}: {e}"));
        let receipt = self
            .chain
            .provider
            .get_transaction_receipt(hash)
            .await
            .expect("eth_getTransactionReceipt")
            .unwrap_or_else(|| panic!("{tx} is not mined"));
        assert!(receipt.status(), "{tx} reverted");
        assert_eq!(receipt.to, Some(self.chain.token), "{tx} is not a call of the token");
    }

    /// The facilitator's stderr.
    pub(crate) fn log(&self) -> String {
        self.facilitator.log()
    }
}
