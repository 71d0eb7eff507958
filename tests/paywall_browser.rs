//! The x402 browser paywall in a real browser: headless Chromium (Debian `chromium`, installed
//! by `scripts/deps/50-chromium.sh`) loads the 402 page of the `axum_x402` and `actix_x402`
//! example servers (the default page) and of a route with `custom_paywall_html`, with every
//! host name except 127.0.0.1 unresolvable (so the page cannot depend on a CDN). The test
//! checks the rendered DOM for the price, asset, network, payee and resource and for
//! accessible structure, and saves a screenshot of each page under
//! `target/test-output/paywall/`.

mod support;

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

/// The examples' default payee (examples/support/mod.rs `DEMO_PAY_TO`).
const DEMO_PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
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
    for external in ["<script", "<link", "<img", "<iframe", " src=", "url(", "@import"] {
        assert!(!dom.contains(external), "the paywall loads nothing external ({external})");
    }
}

#[tokio::test]
async fn the_default_paywall_renders_in_chromium() {
    // The `#[x402]` examples on both frameworks serve the same page.
    for (example, shot) in [("axum_x402", "default-axum"), ("actix_x402", "default-actix")] {
        let (_server, url) = start_example(example);
        let (dom, png) = render(&url, shot).await;
        assert_accessible_and_self_contained(&dom);
        assert!(dom.contains("id=\"x402-paywall\"") && dom.contains("data-requirements="), "{example}: {dom}");
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
