//! The browser paywall in a real browser: headless Chromium (Debian `chromium`, installed by
//! `scripts/deps/50-chromium.sh`; missing, the tests fail) with every host name except 127.0.0.1
//! unresolvable (so the page cannot depend on a CDN).
//!
//! * It loads the 402 page of the `axum_x402` and `actix_x402` example servers (the default
//!   page) and of a route with `custom_paywall_html`, checks the rendered DOM for the price,
//!   asset, network, payee and resource and for accessible structure.
//! * Driven over the Chrome DevTools Protocol with a test EIP-1193 wallet injected before the
//!   page's own script (`Page.addScriptToEvaluateOnNewDocument`; the page's CSP is not bypassed),
//!   whose `eth_signTypedData_v4` calls a CDP binding: the test checks the typed data is exactly
//!   the offer (token, payee, amount, chain), signs it with Anvil's account 0 (alloy) and resolves
//!   the wallet's promise. The page pays an x402 route, an MPP charge route and a dual route
//!   (choosing MPP) on servers with the embedded facilitator / Settlement Agent and a faucet; the
//!   test checks the page shows the resource and the receipt and that the ledger moved the price
//!   from the key's address to the payee. A refused signature pays nothing and the page says so.
//! * `curl -H 'Accept: text/html'` (no browser user agent) gets the page with every challenge
//!   header; a reflected path cannot inject markup, and the page's CSP blocks a late inline script.
//!
//! Every page is saved as a screenshot under `target/test-output/paywall/`.

mod support;

#[path = "paywall_browser/cdp.rs"]
mod cdp;

use pay402::axum::{X402HttpServer, X402Layer};
use pay402::chain::X_LAYER_USDT0;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::ExactEvmScheme;
use pay402::x402::X402ResourceServer;
use pay402::x402::{PaymentOption, RouteConfig};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The examples' payee in development mode (`pay402::setup`).
const DEMO_PAY_TO: &str = pay402::setup::DEVELOPMENT_PAY_TO;
/// How long one Chromium run may take before the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// The `target/<profile>` directory of this test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// `target/test-output/paywall/`, created.
fn output_dir() -> PathBuf {
    let dir = profile_dir().parent().expect("target dir").join("test-output").join("paywall");
    std::fs::create_dir_all(&dir).expect("create the output folder");
    dir
}

/// The Chromium binary: `PAY402_CHROMIUM`, or `chromium` on PATH. Missing ⇒ the test fails.
fn chromium() -> String {
    let bin = std::env::var("PAY402_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let found = Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "headless Chromium (`{bin}`) is required: install it with `bash scripts/deps/50-chromium.sh` \
         (Debian package `chromium`) or set PAY402_CHROMIUM"
    );
    bin
}

/// Runs headless Chromium on `url` with a fresh profile and everything but 127.0.0.1
/// unresolvable; `mode` is `--dump-dom` or `--screenshot=<path>`. Returns stdout.
async fn run_chromium(url: &str, mode: &str) -> String {
    let profile = tempdir("chromium-profile");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1000,1100",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(mode)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(CHROMIUM_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {mode} {url} did not finish in {CHROMIUM_TIMEOUT:?}"))
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium {mode} {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pay402-{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Loads `url` in Chromium: the rendered DOM, and a screenshot saved as `name`.png.
async fn render(url: &str, name: &str) -> (String, PathBuf) {
    let dom = run_chromium(url, "--dump-dom").await;
    let png = output_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    run_chromium(url, &format!("--screenshot={}", png.display())).await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    // A blank 1000×1100 PNG compresses to a few hundred bytes; a page with text is far larger.
    assert!(bytes.len() > 10_000, "{} looks blank ({} bytes)", png.display(), bytes.len());
    (dom, png)
}

/// The DOM's visible text: tags removed, entities of the page decoded, whitespace collapsed.
fn text_of(dom: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let body = dom.split("</style>").last().unwrap_or(dom);
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A running example server, killed on drop.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `examples/<name>` on a free port; returns it and its paid URL (its first line).
fn start_example(name: &str) -> (Example, String) {
    let path = profile_dir().join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds the examples)", path.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = Command::new(&path)
        .env("PAY402_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("OKX_API_KEY")
        .env_remove("OKX_SECRET_KEY")
        .env_remove("OKX_PASSPHRASE")
        .env_remove("PAY402_PAY_TO")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let url = line.trim_end().strip_prefix("listening on ").expect("the convention's first line").to_owned();
    (Example(child), url)
}

fn assert_accessible_and_self_contained(dom: &str) {
    assert!(dom.contains("<html lang=\"en\">"), "the page declares its language");
    assert_eq!(dom.matches("<h1").count(), 1, "one h1");
    for external in ["<link", "<img", "<iframe", " src=", "@import", "http-equiv"] {
        assert!(!dom.contains(external), "the paywall loads nothing external ({external})");
    }
    // Inline scripts only: the offers' data block and the page's own script.
    assert!(dom.matches("<script").count() <= 2, "{dom}");
    assert!(!dom.contains("<script src"), "{dom}");
}

#[tokio::test]
async fn the_default_paywall_renders_in_chromium() {
    // The `#[x402]` examples on both frameworks serve the same page.
    for (example, shot) in [("axum_x402", "default-axum"), ("actix_x402", "default-actix")] {
        let (_server, url) = start_example(example);
        let (dom, png) = render(&url, shot).await;
        assert_accessible_and_self_contained(&dom);
        assert!(dom.contains("id=\"paywall\"") && dom.contains("data-requirements="), "{example}: {dom}");
        // The inline script ran under the page's CSP: it enabled the wallet button.
        assert!(
            dom.contains("<button type=\"button\" class=\"pay\" id=\"pay0\" data-offer=\"0\">"),
            "{example}: {dom}"
        );
        let text = text_of(&dom);
        for fact in [
            "Payment Required",
            "Access to A stock quote requires this payment.",
            &format!("Resource: {url}"),
            "Price 0.001 USD₮0",
            &format!("Asset USD₮0 {X_LAYER_USDT0}"),
            "Network X Layer (eip155:196)",
            &format!("Pay to {DEMO_PAY_TO}"),
            "Scheme exact",
            "PAYMENT-SIGNATURE",
        ] {
            assert!(text.contains(fact), "{example}: the rendered page lacks {fact:?}:\n{text}");
        }
        // Every fact is labelled: one dt per dd in the option's description list.
        assert_eq!(dom.matches("<dt>").count(), 5, "{example}");
        assert_eq!(dom.matches("<dd").count(), 5, "{example}");
        assert!(dom.contains("<section class=\"option\" aria-labelledby=\"opt0\"><h2 id=\"opt0\">"));
        println!("screenshot: {}", png.display());
    }
}

#[tokio::test]
async fn a_custom_paywall_renders_with_the_challenge_values() {
    const MERCHANT: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let page = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Pay for {{description}}</title>\
<style>body{font:18px system-ui,sans-serif;color:#111;background:#fff;margin:3rem}</style></head><body>\
<main><h1>Premium report</h1><p id=\"price\">Price: {{price}}</p><p id=\"network\">Network: {{network_name}} \
({{network}})</p><p id=\"asset\">Token: {{asset_name}} at {{asset}}</p><p id=\"payee\">Payee: {{pay_to}}</p>\
<p id=\"resource\">Resource: {{resource}}</p></main></body></html>";
    let resource = X402ResourceServer::new(EmbeddedFacilitator::new()).register("eip155:196", ExactEvmScheme::new());
    let route = RouteConfig::new(PaymentOption::exact("$0.25", MERCHANT))
        .description("The <premium> report")
        .custom_paywall_html(page);
    let x402 = X402HttpServer::new(resource).route("GET /report", route).expect("route");
    let app =
        axum::Router::new().route("/report", axum::routing::get(|| async { "report" })).layer(X402Layer::new(x402));
    let server = support::serve_axum(app).await;
    let url = format!("{}/report", server.base);

    let (dom, png) = render(&url, "custom").await;
    assert_accessible_and_self_contained(&dom);
    let text = text_of(&dom);
    for fact in [
        "Price: 0.25 USD₮0",
        "Network: X Layer (eip155:196)",
        &format!("Token: USD₮0 at {X_LAYER_USDT0}"),
        &format!("Payee: {MERCHANT}"),
        &format!("Resource: {url}"),
    ] {
        assert!(text.contains(fact), "the rendered page lacks {fact:?}:\n{text}");
    }
    // The description was escaped into the title, not parsed as a tag.
    assert!(dom.contains("<title>Pay for The &lt;premium&gt; report</title>"), "{dom}");
    println!("screenshot: {}", png.display());
}

// ---------------------------------------------------------------------------------------------
// Paying on the page: CDP, an injected EIP-1193 wallet, the embedded ledgers.
// ---------------------------------------------------------------------------------------------

use alloy::signers::SignerSync as _;
use alloy_dyn_abi::TypedData;
use pay402::evm::{PrivateKeySigner, U256};
use pay402::mpp::{ChargeIntent, EmbeddedSa, EvmMethod, Mpp, PaySpec};
use pay402::router::{MppAdapter, PaymentRouter, RouteProtocols, X402Adapter};
use pay402::web::paywall::PaywallConfig;
use serde_json::{Value, json};

/// Anvil's account 0.
const WALLET_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// What the faucets give an account they have not seen.
const FAUCET: u64 = 5_000_000;
const SELLER: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// What every paid route answers: markup that must be shown as text, never run.
const RESOURCE: &str = r#"{"quote":"<img src=x onerror=alert(1)>42"}"#;

/// The test wallet, injected before any page script: accounts and chain answered at once,
/// `eth_signTypedData_v4` handed to the test through the `pay402Sign` binding and resolved by
/// `__pay402Resolve(id, signature, error)`.
fn provider_script(address: &str) -> String {
    format!(
        r#"(function () {{
  var pending = {{}}, next = 1;
  window.__pay402Resolve = function (id, signature, error) {{
    var p = pending[id]; delete pending[id];
    if (!p) {{ return; }}
    if (error) {{ p.reject(new Error(error)); }} else {{ p.resolve(signature); }}
  }};
  window.ethereum = {{ request: function (args) {{
    switch (args.method) {{
      case 'eth_requestAccounts': case 'eth_accounts': return Promise.resolve(['{address}']);
      case 'eth_chainId': return Promise.resolve('0xc4');
      case 'eth_signTypedData_v4': return new Promise(function (resolve, reject) {{
        var id = next++; pending[id] = {{ resolve: resolve, reject: reject }};
        pay402Sign(JSON.stringify({{ id: id, params: args.params }}));
      }});
      default: return Promise.reject(new Error('unsupported: ' + args.method));
    }}
  }} }};
}})();"#
    )
}

/// What the wallet must be asked to sign: one transfer of `value` to `to` (USD₮0 on X Layer);
/// `refuse`: the person rejects the request in the wallet instead of signing.
#[derive(Clone, Copy)]
struct Expected<'a> {
    to: &'a str,
    value: &'a str,
    refuse: bool,
}

/// Loads `url` in Chromium with the test wallet, clicks the offer button `button`, signs what
/// the page asks (checking it is `expected`) or refuses, waits until the page shows the paid
/// resource (or that the payment was not completed) and saves a screenshot as `name`.png.
/// Returns the page's result text (the status line after a refusal).
async fn pay_on_page(url: &str, button: usize, expected: Expected<'_>, name: &str) -> String {
    let wallet: PrivateKeySigner = WALLET_KEY.parse().expect("key");
    let address = wallet.address().to_string();
    let mut browser = cdp::Browser::launch(&chromium(), tempdir("chromium-cdp")).await;
    browser.call("Runtime.addBinding", json!({"name": "pay402Sign"})).await;
    browser.call("Page.addScriptToEvaluateOnNewDocument", json!({"source": provider_script(&address)})).await;
    browser.call("Page.navigate", json!({"url": url})).await;
    let ready = format!(
        "document.readyState === 'complete' && !!document.getElementById('pay{button}') && \
         !document.getElementById('pay{button}').disabled"
    );
    let deadline = std::time::Instant::now() + CHROMIUM_TIMEOUT;
    while browser.eval(&ready).await != json!(true) {
        assert!(std::time::Instant::now() < deadline, "the page's button pay{button} never became usable at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.eval(&format!("document.getElementById('pay{button}').click(), true")).await;
    let mut signed = 0;
    loop {
        assert!(std::time::Instant::now() < deadline, "{name}: the page did not finish paying");
        if let Some(call) = browser.event("Runtime.bindingCalled", Duration::from_millis(200)).await {
            let request: Value =
                serde_json::from_str(call["params"]["payload"].as_str().expect("payload")).expect("json");
            let params = request["params"].as_array().expect("params");
            assert!(params[0].as_str().expect("from").eq_ignore_ascii_case(&address));
            let typed_json: Value = serde_json::from_str(params[1].as_str().expect("typed data")).expect("typed JSON");
            // The page asks for exactly the offer: token, chain, payee, amount, payer.
            assert_eq!(typed_json["primaryType"], "TransferWithAuthorization", "{typed_json}");
            assert_eq!(typed_json["domain"]["name"], "USD₮0");
            assert_eq!(typed_json["domain"]["chainId"], 196);
            assert!(typed_json["domain"]["verifyingContract"].as_str().unwrap().eq_ignore_ascii_case(X_LAYER_USDT0));
            assert!(typed_json["message"]["to"].as_str().unwrap().eq_ignore_ascii_case(expected.to), "{typed_json}");
            assert_eq!(typed_json["message"]["value"], expected.value, "{typed_json}");
            assert!(typed_json["message"]["from"].as_str().unwrap().eq_ignore_ascii_case(&address));
            if expected.refuse {
                let reject = "User rejected the request";
                browser.eval(&format!("window.__pay402Resolve({}, null, '{reject}'), true", request["id"])).await;
                signed += 1;
                continue;
            }
            let typed: TypedData = serde_json::from_value(typed_json).expect("EIP-712 typed data");
            let digest = typed.eip712_signing_hash().expect("EIP-712 hash");
            let signature = wallet.sign_hash_sync(&digest).expect("sign");
            let hex = pay402::evm::signature_hex(signature.as_bytes());
            browser.eval(&format!("window.__pay402Resolve({}, '{hex}', null), true", request["id"])).await;
            signed += 1;
            continue;
        }
        let status = browser.eval("document.getElementById('pay402-status').textContent").await;
        let status = status.as_str().unwrap_or_default().to_owned();
        if status == "Paid." || (expected.refuse && status.starts_with("Payment not completed")) {
            break;
        }
        assert!(
            !status.starts_with("Payment not completed")
                && !status.starts_with("The payment was not accepted")
                && !status.starts_with("No browser wallet"),
            "{name}: {status} — {}",
            browser.eval("document.getElementById('pay402-body').textContent").await
        );
    }
    assert_eq!(signed, 1, "{name}: one signature asked for");
    let disabled =
        "Array.prototype.every.call(document.querySelectorAll('button.pay'), function (b) { return b.disabled; })";
    // Once paid no button pays again; after a refusal the person may try again.
    assert_eq!(browser.eval(disabled).await, json!(!expected.refuse), "{name}: the buttons after paying");
    assert!(!browser.saw("Page.javascriptDialogOpening"), "{name}: the resource's markup ran");
    let result = if expected.refuse {
        assert_eq!(browser.eval("document.getElementById('pay402-result').hidden").await, json!(true), "{name}");
        browser.eval("document.getElementById('pay402-status').textContent").await
    } else {
        browser.eval("document.getElementById('pay402-result').innerText").await
    };
    let png = output_dir().join(format!("{name}.png"));
    let bytes = browser.screenshot(&png).await;
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} looks blank", png.display());
    println!("screenshot: {}", png.display());
    result.as_str().expect("result text").to_owned()
}

/// An MPP charge by attribute (the `#[pay]` guard's 402, not the route-table layer's).
#[pay402::axum::pay(amount = "0.25", description = "A macro quote")]
async fn macro_quote() -> ([(&'static str, &'static str); 1], &'static str) {
    ([("content-type", "application/json")], RESOURCE)
}

/// The servers: x402 at `/x402` (embedded facilitator; a payment identifier required), MPP charge at `/mpp` (embedded SA) and at
/// `/macro` (`#[pay]`), both at `/dual` (the router), all at $0.25 to `SELLER`, with faucets.
struct Shop {
    server: support::Running,
    facilitator: EmbeddedFacilitator,
    sa: EmbeddedSa,
}

async fn shop() -> Shop {
    let facilitator = EmbeddedFacilitator::new().with_faucet(U256::from(FAUCET));
    let sa = EmbeddedSa::new().with_faucet(U256::from(FAUCET));
    let x402_server = || {
        X402HttpServer::new(X402ResourceServer::new(facilitator.clone()).register("eip155:196", ExactEvmScheme::new()))
    };
    let mpp = Mpp::new(
        EvmMethod::x_layer(SELLER).with_charge(ChargeIntent::new(sa.clone())),
        "shop.example",
        "paywall-browser-secret-at-least-32-bytes-long",
    )
    .expect("mpp")
    .paywall(PaywallConfig { app_name: Some("MPP <Shop>".into()), testnet: false });
    let x402 = x402_server()
        .route(
            "GET /x402",
            RouteConfig::new(PaymentOption::exact("$0.25", SELLER))
                .description("An x402 quote")
                .payment_identifier(true),
        )
        .expect("route");
    let by_macro = axum::Router::new().route("/macro", axum::routing::get(macro_quote)).with_state(mpp.clone());
    let mpp_routes = mpp.clone().route("GET /mpp", PaySpec::charge("0.25").description("An MPP quote")).expect("route");
    let router = PaymentRouter::new()
        .paywall(PaywallConfig { app_name: Some("Dual <Shop>".into()), testnet: true })
        .adapter(X402Adapter::new(x402_server()))
        .adapter(MppAdapter::new(mpp))
        .route(
            "GET /dual",
            RouteProtocols::new()
                .x402(RouteConfig::new(PaymentOption::exact("$0.25", SELLER)).description("A dual quote"))
                .mpp(PaySpec::charge("0.25").description("A dual quote")),
        )
        .expect("route");
    let resource = || async { ([("content-type", "application/json")], RESOURCE) };
    let paid = axum::Router::new()
        .route("/x402", axum::routing::get(resource))
        .layer(X402Layer::new(x402))
        .merge(
            axum::Router::new()
                .route("/mpp", axum::routing::get(resource))
                .layer(pay402::axum::MppLayer::new(mpp_routes)),
        )
        .merge(
            axum::Router::new()
                .route("/dual", axum::routing::get(resource))
                .layer(pay402::axum::PaymentRouterLayer::new(router)),
        )
        .merge(by_macro);
    Shop { server: support::serve_axum(paid).await, facilitator, sa }
}

fn assert_paid(result: &str, name: &str, receipt_label: &str) {
    assert!(result.contains("<img src=x onerror=alert(1)>42"), "{name}: the resource, as text: {result}");
    assert!(result.contains(receipt_label), "{name}: the settlement is shown: {result}");
}

#[tokio::test]
async fn a_person_pays_an_x402_route_with_a_wallet() {
    let shop = shop().await;
    let wallet = WALLET_KEY.parse::<PrivateKeySigner>().expect("key").address().to_string();
    let expected = Expected { to: SELLER, value: "250000", refuse: false };
    let result = pay_on_page(&format!("{}/x402", shop.server.base), 0, expected, "wallet-x402").await;
    assert_paid(&result, "x402", "Transaction");
    assert_eq!(shop.facilitator.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET - 250_000));
    assert_eq!(shop.facilitator.balance(X_LAYER_USDT0, SELLER), U256::from(FAUCET + 250_000));
    assert_eq!(shop.facilitator.settlement_count(), 1);
}

#[tokio::test]
async fn a_person_pays_an_mpp_charge_route_with_a_wallet() {
    let shop = shop().await;
    let wallet = WALLET_KEY.parse::<PrivateKeySigner>().expect("key").address().to_string();
    let expected = Expected { to: SELLER, value: "250000", refuse: false };
    let result = pay_on_page(&format!("{}/mpp", shop.server.base), 0, expected, "wallet-mpp").await;
    assert_paid(&result, "mpp", "Reference");
    assert_eq!(shop.sa.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET - 250_000));
    assert_eq!(shop.sa.balance(X_LAYER_USDT0, SELLER), U256::from(FAUCET + 250_000));
}

#[tokio::test]
async fn a_person_pays_a_pay_attribute_route_with_a_wallet() {
    let shop = shop().await;
    let wallet = WALLET_KEY.parse::<PrivateKeySigner>().expect("key").address().to_string();
    let expected = Expected { to: SELLER, value: "250000", refuse: false };
    let result = pay_on_page(&format!("{}/macro", shop.server.base), 0, expected, "wallet-mpp-macro").await;
    assert_paid(&result, "macro", "Reference");
    assert_eq!(shop.sa.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET - 250_000));
}

#[tokio::test]
async fn a_refused_signature_pays_nothing_and_says_so() {
    let shop = shop().await;
    let wallet = WALLET_KEY.parse::<PrivateKeySigner>().expect("key").address().to_string();
    let expected = Expected { to: SELLER, value: "250000", refuse: true };
    let status = pay_on_page(&format!("{}/dual", shop.server.base), 0, expected, "wallet-refused").await;
    assert_eq!(status, "Payment not completed: User rejected the request.");
    assert_eq!(shop.facilitator.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET));
    assert_eq!(shop.facilitator.settlement_count(), 0);
    assert_eq!(shop.sa.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET));
}

#[tokio::test]
async fn a_person_pays_a_dual_route_choosing_mpp() {
    let shop = shop().await;
    let wallet = WALLET_KEY.parse::<PrivateKeySigner>().expect("key").address().to_string();
    // The dual page offers x402 first (button 0), then MPP (button 1).
    let expected = Expected { to: SELLER, value: "250000", refuse: false };
    let result = pay_on_page(&format!("{}/dual", shop.server.base), 1, expected, "wallet-dual-mpp").await;
    assert_paid(&result, "dual", "Reference");
    assert_eq!(shop.sa.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET - 250_000));
    assert_eq!(shop.facilitator.balance(X_LAYER_USDT0, &wallet), U256::from(FAUCET), "x402 did not move");
}

#[tokio::test]
async fn curl_asking_for_html_gets_the_page_with_every_challenge_header() {
    let shop = shop().await;
    let http = reqwest::Client::new();
    let get = |path: &str, accept: &str| {
        http.get(format!("{}{path}", shop.server.base)).header("accept", accept.to_owned()).send()
    };
    for (path, x402, mpp) in
        [("/x402", true, false), ("/mpp", false, true), ("/macro", false, true), ("/dual", true, true)]
    {
        let resp = get(path, "text/html").await.expect("request");
        assert_eq!(resp.status(), 402, "{path}");
        let headers = resp.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        assert_eq!(headers.contains_key("payment-required"), x402, "{path}");
        let www = headers.get_all("www-authenticate").iter().any(|v| v.to_str().unwrap().starts_with("Payment "));
        assert_eq!(www, mpp, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("0.25 USD₮0") && html.contains(SELLER), "{path}");
        assert_eq!(html.contains("with x402</h2>"), x402, "{path}");
        assert_eq!(html.contains("with MPP</h2>"), mpp, "{path}");
        // Each gate's paywall options, escaped.
        let title = match path {
            "/mpp" | "/macro" => "<title>MPP &lt;Shop&gt; — Payment Required</title>",
            "/dual" => "<title>Dual &lt;Shop&gt; — Payment Required</title>",
            _ => "<title>Payment Required</title>",
        };
        assert!(html.contains(title), "{path}: {title}");
        assert_eq!(html.contains("Test network"), path == "/dual", "{path}");
        // API clients keep the protocol's own body.
        for accept in ["application/json", "*/*", "application/json, text/html"] {
            let resp = get(path, accept).await.expect("request");
            assert_eq!(resp.status(), 402);
            assert!(!resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path} {accept}");
        }
    }
}

#[tokio::test]
async fn a_reflected_path_cannot_inject_markup() {
    let facilitator = EmbeddedFacilitator::new();
    let x402 = X402HttpServer::new(X402ResourceServer::new(facilitator).register("eip155:196", ExactEvmScheme::new()))
        .route("GET /wild/*", RouteConfig::new(PaymentOption::exact("$0.01", SELLER)))
        .expect("route");
    let route = x402.route_for("GET", "/wild/x").expect("route");
    let mut headers = http::HeaderMap::new();
    headers.insert("accept", "text/html".parse().unwrap());
    let ctx = pay402::web::RequestContext::new(
        http::Method::GET,
        "http://127.0.0.1/wild/<script>alert(1)</script>?q=\"'><svg/onload=alert(2)>".into(),
        headers,
    );
    let page = x402.process(&ctx, &route).await.expect_err("a 402");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains("/wild/&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(!html.contains("<script>alert") && !html.contains("<svg"), "{html}");
    assert!(!html.contains("\"'><svg"), "{html}");
    // In Chromium too: the reflected URL is text and no dialog opens.
    let shop = shop().await;
    let mut browser = cdp::Browser::launch(&chromium(), tempdir("chromium-xss")).await;
    let url = format!("{}/x402?<script>alert(1)</script>", shop.server.base);
    browser.call("Page.navigate", json!({"url": url})).await;
    assert!(browser.event("Page.loadEventFired", CHROMIUM_TIMEOUT).await.is_some(), "the page loads");
    let shown = browser.eval("document.querySelector('code.resource-url').textContent").await;
    assert!(shown.as_str().unwrap().contains("script"), "{shown}");
    assert_eq!(browser.eval("document.scripts.length").await, json!(2), "no injected script element");
    // The page's CSP is in force: an inline script added later does not run.
    let blocked = "var s = document.createElement('script'); s.textContent = 'window.__ran = 1'; \
                   document.body.appendChild(s); window.__ran === undefined";
    assert_eq!(browser.eval(blocked).await, json!(true), "an inline script without the page's hash ran");
    assert!(!browser.saw("Page.javascriptDialogOpening"));
}
