//! The crate docs' quickstarts, run verbatim: each code block of `docs/overview.md` (the
//! facade's front page) is byte for byte an example file, which `cargo test` builds; these
//! tests start the built server with a clean environment (development mode, fresh in-memory
//! ledgers, no faucet call anywhere in user code) and pay it with `AutoPay` — and with the
//! quickstart client itself. They also check the development/production set-up from the outside:
//! the warning, the production errors naming every missing variable, development refused in
//! production.

use pay402::autopay::{AssetId, AutoPay, AutoPayOutcome, PaymentDetail, Protocol};
use pay402::evm::PrivateKeySigner;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Variables that would change the mode or the keys of the examples.
const ENVIRONMENT: [&str; 10] = [
    "PAY402_ENV",
    "PAY402_PAY_TO",
    "PAY402_PAYEE_KEY",
    "PAY402_BUYER_KEY",
    "MPP_REALM",
    "MPP_SECRET_KEY",
    "OKX_API_KEY",
    "OKX_SECRET_KEY",
    "OKX_PASSPHRASE",
    "OKX_BASE_URL",
];

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds examples)", path.display());
    path
}

fn clean(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    for var in ENVIRONMENT {
        cmd.env_remove(var);
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running example server, killed on drop; its stderr is collected.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(name: &str) -> Self {
        let port = free_port();
        let mut child = clean(name)
            .env("PAY402_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the quickstart");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        let url = format!("http://127.0.0.1:{port}/quote");
        assert_eq!(line.trim_end(), format!("listening on {url}"), "{name}");
        Self { child, url }
    }

    /// Stops the server and returns its stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        err
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rust code block under the `# {heading}` section of the overview.
fn quickstart_block(heading: &str) -> String {
    let overview = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/overview.md")).expect("overview");
    let start = overview.find(&format!("\n# {heading}\n")).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &overview[start..];
    let open = "```rust,no_run\n";
    let code = &section[section.find(open).expect("a rust block") + open.len()..];
    code[..code.find("```\n").expect("closed block")].to_owned()
}

#[test]
fn the_quickstarts_in_the_crate_docs_are_the_example_files_verbatim() {
    for (heading, file) in [
        ("Quickstart: axum", "examples/quickstart_axum.rs"),
        ("Paying it: a client", "examples/quickstart_client.rs"),
        ("Quickstart: actix-web", "examples/quickstart_actix.rs"),
    ] {
        let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect("example");
        assert_eq!(quickstart_block(heading), example, "{heading}: docs/overview.md must show {file} verbatim");
        assert!(!example.contains("faucet") && !example.contains("fund("), "{file}: no faucet call in user code");
    }
}

/// A fresh buyer nobody has funded: the development ledgers' faucet pays for it.
fn fresh_buyer() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

async fn pay_with_autopay(url: &str, buyer: PrivateKeySigner) -> (AutoPayOutcome, serde_json::Value, String) {
    let usdt0 = AssetId::x_layer_usdt0();
    let autopay = AutoPay::new(buyer)
        .max_per_request(usdt0.clone(), "0.01".parse().expect("cap"))
        .max_total(usdt0, "0.1".parse().expect("cap"))
        .build()
        .expect("autopay");
    let http = autopay.client(pay402::reqwest::Client::builder()).expect("client");
    let response = http.get(url).send().await.expect("paid request");
    assert_eq!(response.status(), 200, "{url}");
    let outcome = response.extensions().get::<AutoPayOutcome>().cloned().expect("something was paid");
    let body = response.text().await.expect("body");
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (outcome, json, body)
}

#[tokio::test]
async fn the_axum_quickstart_runs_as_written_and_autopay_pays_it_on_a_fresh_ledger() {
    let server = Server::start("quickstart_axum");
    // Unpaid: the 402 with its challenge (the development payee, $0.001 = 1000 atomic units).
    let unpaid = reqwest::get(&server.url).await.expect("request");
    assert_eq!(unpaid.status(), 402);
    assert!(unpaid.headers().contains_key("payment-required"));

    let buyer = fresh_buyer();
    let address = buyer.address();
    let (outcome, json, _) = pay_with_autopay(&server.url, buyer).await;
    assert_eq!(outcome.protocol, Protocol::X402);
    assert_eq!(outcome.amount, pay402::evm::U256::from(1000u64));
    assert_eq!(outcome.to_string().split(", ").next(), Some("0.001 USD₮0 (1000 atomic units) with x402"));
    let PaymentDetail::X402 { settlement: Some(settled), requirements } = &outcome.detail else {
        panic!("an x402 settlement: {outcome:?}")
    };
    assert!(settled.success, "{settled:?}");
    assert_eq!(requirements.pay_to, pay402::setup::DEVELOPMENT_PAY_TO);
    assert_eq!(json["paid_by"].as_str().map(str::to_lowercase), Some(address.to_string().to_lowercase()));

    let stderr = server.stop();
    assert!(stderr.contains("pay402 DEVELOPMENT MODE"), "the development warning is loud: {stderr}");
}

#[tokio::test]
async fn the_actix_quickstart_runs_as_written_and_autopay_pays_it_on_a_fresh_ledger() {
    let server = Server::start("quickstart_actix");
    let unpaid = reqwest::get(&server.url).await.expect("request");
    assert_eq!(unpaid.status(), 402);
    assert!(unpaid.headers().contains_key("www-authenticate"));

    let (outcome, _, body) = pay_with_autopay(&server.url, fresh_buyer()).await;
    assert_eq!(outcome.protocol, Protocol::MppCharge);
    assert_eq!(outcome.amount, pay402::evm::U256::from(1000u64));
    let PaymentDetail::MppCharge { receipt: Some(receipt), .. } = &outcome.detail else {
        panic!("an MPP receipt: {outcome:?}")
    };
    assert_eq!(body, format!("OKB 48.20 (paid, reference {})", receipt.reference));
    assert!(server.stop().contains("pay402 DEVELOPMENT MODE"));
}

#[test]
fn the_quickstart_client_pays_both_quickstart_servers() {
    for name in ["quickstart_axum", "quickstart_actix"] {
        let server = Server::start(name);
        let out = clean("quickstart_client").arg(&server.url).output().expect("run the client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("paid 0.001 USD₮0 (1000 atomic units) with "), "{name}: {stdout}");
        assert!(stdout.contains("200 OK"), "{name}: {stdout}");
    }
}

#[test]
fn production_names_every_missing_variable_at_once_and_refuses_short_secrets() {
    let out = clean("quickstart_axum")
        .env("PAY402_ENV", "production")
        .env("MPP_SECRET_KEY", "0123456789")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in ["OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE", "PAY402_PAY_TO", "MPP_REALM"] {
        assert!(stderr.contains(&format!("{var}: missing")), "{var} not named:\n{stderr}");
    }
    assert!(stderr.contains("MPP_SECRET_KEY: too short (10 bytes; at least 32)"), "{stderr}");
    assert!(!stderr.contains("DEVELOPMENT MODE"), "{stderr}");

    // A complete production environment with an unusable payee is named too (and nothing else).
    let out = clean("quickstart_actix")
        .env("PAY402_ENV", "production")
        .env("OKX_API_KEY", "k")
        .env("OKX_SECRET_KEY", "s")
        .env("OKX_PASSPHRASE", "p")
        .env("PAY402_PAY_TO", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
        .env("MPP_REALM", "api.example.com")
        .env("MPP_SECRET_KEY", "0123456789abcdef0123456789abcdef")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("set 1 environment variable:\n  PAY402_PAY_TO: not a valid address"), "{stderr}");
}

#[test]
fn development_is_refused_when_the_environment_says_production() {
    // The demo asks for development explicitly.
    let out = clean("demo").env("PAY402_ENV", "production").output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PAY402_ENV=production, so the development set-up"), "{stderr}");
    assert!(!stderr.contains("DEVELOPMENT MODE"), "{stderr}");
    // An unknown mode is an error, not a silent development.
    let out = clean("quickstart_axum").env("PAY402_ENV", "prod-eu").output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAY402_ENV must be `development` or `production`"));
}
