//! The README's example convention, checked on the built example binaries: each server listens
//! on `PAY402_ADDR`, prints `listening on <paid URL>` first, and gets paid end to end by pay402's
//! clients against its embedded backend; the demo exits 0 after settling.

use pay402::evm::PrivateKeySigner;
use pay402::mpp::MppChargeClient;
use pay402::x402::X402Client;
use pay402::x402::{ExactEvmClientScheme, decode_payment_required_header};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `target/<profile>/examples/<name>` next to this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds examples)", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running example server, killed on drop.
struct Server {
    child: Child,
    first_line: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, port: u16) -> Server {
    let mut child = Command::new(example(name))
        .env("PAY402_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("PAY402_ENV")
        .env_remove("OKX_API_KEY")
        .env_remove("OKX_SECRET_KEY")
        .env_remove("OKX_PASSPHRASE")
        .env_remove("PAY402_PAY_TO")
        .env_remove("PAY402_PAYEE_KEY")
        .env_remove("MPP_REALM")
        .env_remove("MPP_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn example");
    let stdout = child.stdout.take().expect("stdout");
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line).expect("first line");
    Server { child, first_line: first_line.trim_end().to_owned() }
}

fn buyer() -> PrivateKeySigner {
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6".parse().expect("key")
}

#[tokio::test]
async fn x402_example_servers_follow_the_convention_and_get_paid() {
    let http = reqwest::Client::new();
    for name in ["axum_x402", "actix_x402", "axum_x402_routes", "actix_x402_routes"] {
        let port = free_port();
        let server = start(name, port);
        let url = format!("http://127.0.0.1:{port}/quote");
        assert_eq!(server.first_line, format!("listening on {url}"), "{name}");
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let header = first.headers()["payment-required"].to_str().expect("ascii").to_owned();
        let required = decode_payment_required_header(&header).expect("decodes");
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer()));
        let (name_h, value) = client.create_payment_header(&required).await.expect("pays");
        let paid = http.get(&url).header(name_h, value).send().await.expect("request");
        assert_eq!(paid.status(), 200, "{name}");
        assert!(paid.headers().contains_key("payment-response"), "{name}");
    }
}

#[tokio::test]
async fn mpp_example_servers_follow_the_convention_and_get_paid() {
    let http = reqwest::Client::new();
    for name in ["axum_mpp_charge", "actix_mpp_charge"] {
        let port = free_port();
        let server = start(name, port);
        let url = format!("http://127.0.0.1:{port}/premium");
        assert_eq!(server.first_line, format!("listening on {url}"), "{name}");
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let www: Vec<String> =
            first.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let www: Vec<&str> = www.iter().map(String::as_str).collect();
        let authorization = MppChargeClient::new(buyer()).authorization_header_for(&www).expect("credential");
        let paid = http.get(&url).header("authorization", authorization).send().await.expect("request");
        assert_eq!(paid.status(), 200, "{name}");
        assert!(paid.headers().contains_key("payment-receipt"), "{name}");
    }
}

#[test]
fn the_demo_settles_and_exits_zero() {
    let out = Command::new(example("demo")).output().expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("listening on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("-> 402 Payment Required") && stdout.contains("-> 200 OK"), "{stdout}");
    assert!(stdout.contains("PAYMENT-RESPONSE") && stdout.contains("\"success\": true"), "{stdout}");
}

#[tokio::test]
async fn mpp_session_examples_follow_the_convention_and_get_paid() {
    use pay402::mpp::{SessionClient, parse_www_authenticate};
    let http = reqwest::Client::new();
    for name in ["axum_mpp_session", "actix_mpp_session"] {
        let port = free_port();
        let server = start(name, port);
        let url = format!("http://127.0.0.1:{port}/stream");
        assert_eq!(server.first_line, format!("listening on {url}"), "{name}");
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let www = first.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        assert_eq!(challenge.intent, "session", "{name}");
        let client = SessionClient::new(buyer());
        let (channel, open) = client.open_header(&challenge, pay402::evm::U256::from(1_000_000u64)).expect("open");
        let opened = http.get(&url).header("authorization", open).send().await.expect("request");
        assert_eq!(opened.status(), 200, "{name}");
        let body: serde_json::Value = serde_json::from_str(&opened.text().await.expect("body")).expect("JSON");
        assert_eq!(body["status"], "ok", "{name}");
        for _ in 0..2 {
            let voucher = client.next_voucher(&challenge, &channel, pay402::evm::U256::from(1000u64)).expect("voucher");
            let paid = http.get(&url).header("authorization", voucher).send().await.expect("request");
            assert_eq!(paid.status(), 200, "{name}");
            assert!(paid.headers().contains_key("payment-receipt"), "{name}");
        }
    }
}

/// Reads SSE frames (blank-line separated) from a streamed response body.
struct Frames {
    response: reqwest::Response,
    buffer: String,
}

impl Frames {
    /// The next frame's `(event name, id, data)`; comments (`: keep-alive`) are skipped. `None`
    /// once the body ended.
    async fn next(&mut self) -> Option<(Option<String>, Option<String>, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (None, None, Vec::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                if event.is_none() && id.is_none() && data.is_empty() {
                    continue;
                }
                return Some((event, id, data.join("\n")));
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), self.response.chunk())
                .await
                .expect("the stream stalled")
                .expect("body")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

/// The stream examples meter `GET /tokens?n=N` per event: the initial voucher pre-pays three
/// events, the fourth waits for a companion voucher (`402-need-voucher` → the same URL), and the
/// final receipt counts the five events charged.
#[tokio::test]
async fn mpp_stream_examples_meter_each_event() {
    use pay402::evm::U256;
    use pay402::mpp::{SessionClient, parse_www_authenticate};
    let http = reqwest::Client::new();
    for name in ["axum_mpp_stream", "actix_mpp_stream"] {
        let port = free_port();
        let server = start(name, port);
        let base = format!("http://127.0.0.1:{port}/tokens");
        assert_eq!(server.first_line, format!("listening on {base}"), "{name}");
        let url = format!("{base}?n=5");
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let www = first.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        assert_eq!(challenge.intent, "session", "{name}");
        assert_eq!(challenge.request["unitType"], "event", "{name}");
        assert_eq!(challenge.request["amount"], "100", "{name}: 0.0001 USD₮0 per event");
        let client = SessionClient::new(buyer());
        let (channel, open) = client.open_header(&challenge, U256::from(1_000_000u64)).expect("open");
        let opened = http.get(&url).header("authorization", open).send().await.expect("request");
        assert_eq!(opened.status(), 200, "{name}");
        // The stream: three events pre-paid.
        let voucher = client.voucher_header(&challenge, &channel, U256::from(300u64)).expect("voucher");
        let response = http
            .get(&url)
            .header("authorization", voucher)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.headers()["content-type"], "text/event-stream", "{name}");
        assert!(response.headers().contains_key("payment-receipt"), "{name}");
        let mut frames = Frames { response, buffer: String::new() };
        let mut tokens = Vec::new();
        for want in 1..=3 {
            let (event, id, data) = frames.next().await.expect("event");
            assert_eq!((event, id), (None, Some(want.to_string())), "{name}");
            let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
            tokens.push(data["token"].as_str().expect("token").to_owned());
        }
        let (event, _, data) = frames.next().await.expect("need voucher");
        assert_eq!(event.as_deref(), Some("402-need-voucher"), "{name}");
        let need: serde_json::Value = serde_json::from_str(&data).expect("JSON");
        assert_eq!(
            (&need["requiredCumulative"], &need["challengeId"]),
            (&"400".into(), &challenge.id.clone().into()),
            "{name}"
        );
        assert_eq!(need["channelId"].as_str(), Some(channel.as_str()), "{name}");
        // The companion request: the same URL, a voucher paying the last two events.
        let voucher = client.voucher_header(&challenge, &channel, U256::from(500u64)).expect("voucher");
        let companion = http.get(&url).header("authorization", voucher).send().await.expect("request");
        assert_eq!(companion.status(), 200, "{name}");
        assert!(companion.headers().contains_key("payment-receipt"), "{name}");
        let body: serde_json::Value = serde_json::from_str(&companion.text().await.expect("body")).expect("JSON");
        assert_eq!((&body["status"], &body["acceptedCumulative"]), (&"ok".into(), &"500".into()), "{name}");
        for want in 4..=5 {
            let (event, id, data) = frames.next().await.expect("event");
            assert_eq!((event, id), (None, Some(want.to_string())), "{name}");
            let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
            tokens.push(data["token"].as_str().expect("token").to_owned());
        }
        assert_eq!(tokens, ["pay", "per", "token", "over", "one"], "{name}");
        let (event, _, data) = frames.next().await.expect("final receipt");
        assert_eq!(event.as_deref(), Some("payment-receipt"), "{name}");
        let receipt: serde_json::Value = serde_json::from_str(&data).expect("JSON");
        assert_eq!((&receipt["units"], &receipt["spent"]), (&5.into(), &"500".into()), "{name}");
        assert_eq!(receipt["acceptedCumulative"], "500", "{name}");
        assert!(frames.next().await.is_none(), "{name}: the stream ends after its final receipt");
        // Too many tokens (a new stream, under a new challenge): refused, nothing charged.
        let again = http.get(&url).send().await.expect("request");
        let www = again.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        let challenge = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        let voucher = client.voucher_header(&challenge, &channel, U256::from(500u64)).expect("voucher");
        let refused =
            http.get(format!("{base}?n=10001")).header("authorization", voucher).send().await.expect("request");
        assert_eq!(refused.status(), 400, "{name}");
        assert!(!refused.headers().contains_key("payment-receipt"), "{name}");
    }
}

#[tokio::test]
async fn dual_example_servers_get_paid_with_either_protocol() {
    let http = reqwest::Client::new();
    for name in ["axum_dual", "actix_dual"] {
        let port = free_port();
        let server = start(name, port);
        let url = format!("http://127.0.0.1:{port}/quote");
        assert_eq!(server.first_line, format!("listening on {url}"), "{name}");
        // x402.
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let header = first.headers()["payment-required"].to_str().expect("ascii").to_owned();
        let required = decode_payment_required_header(&header).expect("decodes");
        let client = X402Client::new().register("eip155:196", ExactEvmClientScheme::new(buyer()));
        let (name_h, value) = client.create_payment_header(&required).await.expect("pays");
        let paid = http.get(&url).header(name_h, value).send().await.expect("request");
        assert_eq!(paid.status(), 200, "{name}");
        assert!(paid.headers().contains_key("payment-response"), "{name}");
        assert!(!paid.headers().contains_key("payment-receipt"), "{name}");
        // MPP.
        let first = http.get(&url).send().await.expect("request");
        assert_eq!(first.status(), 402, "{name}");
        let www: Vec<String> =
            first.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let www: Vec<&str> = www.iter().map(String::as_str).collect();
        let authorization = MppChargeClient::new(buyer()).authorization_header_for(&www).expect("credential");
        let paid = http.get(&url).header("authorization", authorization).send().await.expect("request");
        assert_eq!(paid.status(), 200, "{name}");
        assert!(paid.headers().contains_key("payment-receipt"), "{name}");
        assert!(!paid.headers().contains_key("payment-response"), "{name}");
    }
}

/// Each example is one self-contained file a user can copy: no hidden `mod support`; shared
/// set-up comes from the library (`pay402::setup`). The demo's `--anvil` mode is the one file
/// that borrows the test suite's chain helpers, and says so.
#[test]
fn every_example_is_one_self_contained_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        assert!(path.is_file() && path.extension().is_some_and(|e| e == "rs"), "{}: not one .rs file", path.display());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("mod support"), "{}: hidden shared code", path.display());
        if text.contains("#[path") {
            assert!(path.ends_with("demo.rs") && text.contains("tests/support/anvil.rs"), "{}", path.display());
        }
    }
}
