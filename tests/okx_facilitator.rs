//! The facilitator clients against a local stand-in for OKX's x402 facilitator: a real HTTP
//! server that re-checks every request on its own (HMAC signature with the tests' own
//! hmac/sha2/base64 code, `OK-ACCESS-*` headers, timestamp format, content type, body bytes) and
//! answers from a script, so each typed [`FacilitatorError`] can be provoked over the wire.

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pay402::chain::Network;
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::x402::{
    FacilitatorClient, FacilitatorError, HttpFacilitatorClient, HttpFacilitatorConfig, JsonObject, PaymentPayload,
    PaymentRequirements, ResourceInfo, SettleResponse, SettleStatusResponse, SupportedKind, SupportedResponse,
    VerifyResponse,
};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::okx::{OkxKeys, TimestampFormat, check_okx_headers, is_millis_timestamp, okx_signature};

const API_KEY: &str = "test-api-key";
const SECRET: &str = "test-secret-key";
const PASSPHRASE: &str = "test-passphrase";

const BASE: &str = "/api/v6/pay/x402";
const VERIFY: &str = "/api/v6/pay/x402/verify";
const SETTLE: &str = "/api/v6/pay/x402/settle";
const SUPPORTED: &str = "/api/v6/pay/x402/supported";
const SETTLE_STATUS: &str = "/api/v6/pay/x402/settle/status";

const PAYER: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
const TX: &str = "0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

// ---------------------------------------------------------------------------------------------
// The stand-in facilitator
// ---------------------------------------------------------------------------------------------

/// One scripted answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    delay: Option<Duration>,
}

fn answer(status: u16, body: impl Into<Vec<u8>>) -> Answer {
    Answer { status, body: body.into(), delay: None }
}

/// How the stand-in authenticates requests and which body style it demands.
#[derive(Clone)]
enum Mode {
    /// OKX: HMAC-signed, Python `json.dumps` bodies, `syncSettle` on settle.
    Okx { sync_settle: bool },
    /// A plain x402 facilitator with one static header and compact bodies.
    Plain { header: &'static str, value: &'static str },
}

/// A request as received: method, path with query, raw body.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    body: String,
}

struct StandInState {
    mode: Mode,
    /// Scripted answers per path (without query); the last one repeats.
    answers: HashMap<String, VecDeque<Answer>>,
    requests: Vec<Recorded>,
    failures: Vec<String>,
}

type Shared = Arc<Mutex<StandInState>>;

/// A running stand-in; the server task is aborted when it is dropped, and any recorded check
/// failure fails the test.
struct StandIn {
    url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(mode: Mode, script: Vec<(&str, Vec<Answer>)>) -> Self {
        let answers = script.into_iter().map(|(path, list)| (path.to_owned(), VecDeque::from(list))).collect();
        let state = Arc::new(Mutex::new(StandInState { mode, answers, requests: Vec::new(), failures: Vec::new() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = Router::new().fallback(handle).with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in server");
        });
        Self { url, state, task }
    }

    /// Everything received so far (fails the test if any request failed a check).
    fn requests(&self) -> Vec<Recorded> {
        let st = self.state.lock().expect("stand-in state");
        assert!(st.failures.is_empty(), "stand-in rejected requests: {:#?}", st.failures);
        st.requests.clone()
    }

    /// Takes the recorded check failures (for tests that provoke them on purpose).
    fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().expect("stand-in state").failures)
    }

    fn okx_config(&self) -> OkxFacilitatorConfig {
        okx_config(&self.url)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            let failures = std::mem::take(&mut self.state.lock().expect("stand-in state").failures);
            assert!(failures.is_empty(), "stand-in rejected requests: {failures:#?}");
        }
    }
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let (problems, scripted) = {
        let mut st = state.lock().expect("stand-in state");
        let problems = check_request(&st.mode, &method, uri.path(), &path, &headers, &body);
        st.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        st.failures.extend(problems.iter().map(|p| format!("{method} {path}: {p}")));
        let scripted =
            st.answers.get_mut(uri.path()).and_then(|q| if q.len() > 1 { q.pop_front() } else { q.front().cloned() });
        if problems.is_empty() && scripted.is_none() {
            st.failures.push(format!("{method} {path}: no scripted answer"));
        }
        (problems, scripted)
    };
    if !problems.is_empty() {
        let body = format!("{{\"code\":50113,\"msg\":\"{}\"}}", problems.join("; ").replace('"', "'"));
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let Some(a) = scripted else {
        return (StatusCode::NOT_FOUND, "no scripted answer").into_response();
    };
    if let Some(d) = a.delay {
        tokio::time::sleep(d).await;
    }
    let status = StatusCode::from_u16(a.status).expect("scripted status");
    (status, [(header::CONTENT_TYPE, "application/json")], a.body).into_response()
}

/// All checks the stand-in makes; returns the problems found (empty = accepted).
fn check_request(
    mode: &Mode,
    method: &Method,
    path: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let is_post = *method == Method::POST;
    if *method != Method::GET && !is_post {
        problems.push(format!("unexpected method {method}"));
    }
    if !is_post && !body.is_empty() {
        problems.push("GET with a body".to_owned());
    }
    match mode {
        Mode::Okx { sync_settle } => {
            let keys = OkxKeys { api_key: API_KEY, secret: SECRET, passphrase: PASSPHRASE };
            problems.extend(check_okx_headers(&keys, TimestampFormat::Millis, method, path_and_query, headers, body));
            if is_post {
                problems.extend(check_body(body, true));
                if !body.starts_with(br#"{"x402Version": 2, "paymentPayload": {"#) {
                    problems.push("body does not start with x402Version, paymentPayload".to_owned());
                }
                let tail = format!(", \"syncSettle\": {sync_settle}}}");
                if path == SETTLE && !body.ends_with(tail.as_bytes()) {
                    problems.push(format!("settle body does not end with `{tail}`"));
                }
                if path != SETTLE && body.windows(10).any(|w| w == b"syncSettle") {
                    problems.push("syncSettle outside settle".to_owned());
                }
            }
        }
        Mode::Plain { header, value } => {
            if get(header) != Some(*value) {
                problems.push(format!("{header} is {:?}", get(header)));
            }
            if headers.keys().any(|k| k.as_str().starts_with("ok-access-")) {
                problems.push("OK-ACCESS-* header sent to a plain facilitator".to_owned());
            }
            if is_post {
                if get("content-type") != Some("application/json") {
                    problems.push(format!("Content-Type is {:?}", get("content-type")));
                }
                problems.extend(check_body(body, false));
                if body.windows(10).any(|w| w == b"syncSettle") {
                    problems.push("syncSettle sent to a plain facilitator".to_owned());
                }
            }
        }
    }
    problems
}

/// The body must be a JSON object whose re-serialisation in the expected style (Python
/// `json.dumps` defaults, or compact `serde_json`) gives back exactly the bytes received.
fn check_body(body: &[u8], python: bool) -> Option<String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("body is not JSON: {e}")),
    };
    let again = if python {
        let mut s = String::new();
        python_dumps(&value, &mut s);
        s
    } else {
        serde_json::to_string(&value).expect("re-serialise")
    };
    (again.as_bytes() != body).then(|| {
        format!("body is not in the expected JSON style:\n got {}\nwant {again}", String::from_utf8_lossy(body))
    })
}

/// Python's `json.dumps(value)` with default options: `", "`, `": "`, `ensure_ascii`.
fn python_dumps(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => python_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_dumps(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_str(k, out);
                out.push_str(": ");
                python_dumps(v, out);
            }
            out.push('}');
        }
    }
}

fn python_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn okx_config(url: &str) -> OkxFacilitatorConfig {
    OkxFacilitatorConfig::new(OkxCredentials::new(API_KEY, SECRET, PASSPHRASE)).base_url(url)
}

fn okx_client(config: OkxFacilitatorConfig) -> OkxFacilitatorClient {
    OkxFacilitatorClient::new(config).expect("OKX client")
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: Network::from("eip155:196"),
        asset: USDT0.into(),
        amount: "1000".into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 300,
        extra: object(serde_json::json!({"name": "USD\u{20ae}0", "version": "1"})),
    }
}

fn payload() -> PaymentPayload {
    PaymentPayload {
        x402_version: 2,
        payload: object(serde_json::json!({"signature": "0x5151", "authorization": {"from": PAYER, "value": "1000"}})),
        accepted: requirements(),
        resource: Some(ResourceInfo {
            url: "https://api.example/data".into(),
            description: Some(String::new()),
            mime_type: Some(String::new()),
        }),
        extensions: None,
    }
}

/// The request body for [`payload`] and [`requirements`], written out by hand: Python
/// `json.dumps` style for OKX, compact raw UTF-8 for a plain facilitator.
fn expected_body(python: bool, sync_settle: Option<bool>) -> String {
    let body = if python {
        let reqs = r#"{"scheme": "exact", "network": "eip155:196", "asset": "0x779ded0c9e1022225f8e0630b35a9b54be713736", "amount": "1000", "payTo": "0x1111111111111111111111111111111111111111", "maxTimeoutSeconds": 300, "extra": {"name": "USD\u20ae0", "version": "1"}}"#;
        [
            r#"{"x402Version": 2, "paymentPayload": {"x402Version": 2, "payload": {"signature": "0x5151", "authorization": {"from": "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "value": "1000"}}, "accepted": "#,
            reqs,
            r#", "resource": {"url": "https://api.example/data", "description": "", "mimeType": ""}}, "paymentRequirements": "#,
            reqs,
        ]
        .concat()
    } else {
        let reqs = r#"{"scheme":"exact","network":"eip155:196","asset":"0x779ded0c9e1022225f8e0630b35a9b54be713736","amount":"1000","payTo":"0x1111111111111111111111111111111111111111","maxTimeoutSeconds":300,"extra":{"name":"USD₮0","version":"1"}}"#;
        [
            r#"{"x402Version":2,"paymentPayload":{"x402Version":2,"payload":{"signature":"0x5151","authorization":{"from":"0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","value":"1000"}},"accepted":"#,
            reqs,
            r#","resource":{"url":"https://api.example/data","description":"","mimeType":""}},"paymentRequirements":"#,
            reqs,
        ]
        .concat()
    };
    match sync_settle {
        Some(sync) => format!("{body}, \"syncSettle\": {sync}}}"),
        None => format!("{body}}}"),
    }
}

fn settle_answer(status: &str) -> Answer {
    answer(
        200,
        format!(
            r#"{{"code":0,"data":{{"success":true,"status":"{status}","payer":"{PAYER}","transaction":"{TX}","network":"eip155:196"}},"msg":""}}"#
        ),
    )
}

fn settled(status: &str) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        status: Some(status.into()),
        payer: Some(PAYER.into()),
        transaction: TX.into(),
        network: Network::from("eip155:196"),
        amount: None,
    }
}

/// Runs one verify against a stand-in scripted with a single answer and returns its error.
async fn verify_error(
    reply: Answer,
    config: impl FnOnce(OkxFacilitatorConfig) -> OkxFacilitatorConfig,
) -> FacilitatorError {
    let delayed = reply.delay.is_some();
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(VERIFY, vec![reply])]).await;
    let client = okx_client(config(server.okx_config()));
    let err = client.verify(&payload(), &requirements()).await.expect_err("verify must fail");
    let received = server.requests().len();
    // A request cut short by the client timeout may not have reached the handler yet.
    assert!(received == 1 || (delayed && received == 0), "{received} requests");
    err
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn okx_verify_is_signed_and_sends_python_json_body() {
    let reply = format!(r#"{{"code":0,"data":{{"isValid":true,"payer":"{PAYER}"}},"msg":""}}"#);
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(VERIFY, vec![answer(200, reply)])]).await;
    let client = okx_client(server.okx_config());

    let resp = client.verify(&payload(), &requirements()).await.expect("verify");
    assert_eq!(resp, VerifyResponse::valid(PAYER));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", VERIFY));
    assert_eq!(reqs[0].body, expected_body(true, None));
    assert!(reqs[0].body.contains(r#""name": "USD\u20ae0""#) && reqs[0].body.is_ascii());
}

#[tokio::test]
async fn okx_settle_sync_by_default() {
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(SETTLE, vec![settle_answer("success")])]).await;
    let client = okx_client(server.okx_config());

    let resp = client.settle(&payload(), &requirements()).await.expect("settle");
    assert_eq!(resp, settled("success"));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", SETTLE));
    assert_eq!(reqs[0].body, expected_body(true, Some(true)));
}

#[tokio::test]
async fn okx_settle_async_is_pending() {
    let server = StandIn::start(Mode::Okx { sync_settle: false }, vec![(SETTLE, vec![settle_answer("pending")])]).await;
    let client = okx_client(server.okx_config().sync_settle(false));

    let resp = client.settle(&payload(), &requirements()).await.expect("settle");
    assert_eq!(resp, settled("pending"));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body, expected_body(true, Some(false)));
}

#[tokio::test]
async fn okx_settle_status_signs_the_query_string() {
    let status_answer = |status: &str, success: bool| {
        answer(
            200,
            format!(
                r#"{{"code":0,"data":{{"success":{success},"status":"{status}","transaction":"{TX}","network":"eip155:196"}},"msg":""}}"#
            ),
        )
    };
    let script = vec![status_answer("success", true), status_answer("failed", false), status_answer("pending", true)];
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(SETTLE_STATUS, script)]).await;
    let client = okx_client(server.okx_config());

    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp: SettleStatusResponse = client.settle_status(TX).await.expect("settle status");
        assert_eq!(resp.transaction.as_deref(), Some(TX));
        assert_eq!(resp.network, Some(Network::from("eip155:196")));
        seen.push((resp.success, resp.status.unwrap_or_default()));
    }
    let want = [(true, "success"), (false, "failed"), (true, "pending")].map(|(ok, s)| (ok, s.to_owned()));
    assert_eq!(seen, want);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, format!("{BASE}/settle/status?txHash={TX}"));
        assert_eq!(r.body, "");
    }
}

#[tokio::test]
async fn okx_supported_is_a_signed_get() {
    let reply = r#"{"code":0,"data":{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:196"},{"x402Version":2,"scheme":"aggr_deferred","network":"eip155:*","extra":{"batch":true}}],"extensions":["bazaar"],"signers":{"eip155:*":["0x2222222222222222222222222222222222222222"]}},"msg":""}"#;
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(SUPPORTED, vec![answer(200, reply)])]).await;
    let client = okx_client(server.okx_config());

    let resp = client.supported().await.expect("supported");
    let want = SupportedResponse {
        kinds: vec![
            SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: Network::from("eip155:196"),
                extra: None,
            },
            SupportedKind {
                x402_version: 2,
                scheme: "aggr_deferred".into(),
                network: Network::from("eip155:*"),
                extra: Some(object(serde_json::json!({"batch": true}))),
            },
        ],
        extensions: vec!["bazaar".into()],
        signers: object(serde_json::json!({"eip155:*": ["0x2222222222222222222222222222222222222222"]})),
    };
    assert_eq!(resp, want);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str(), reqs[0].body.as_str()), ("GET", SUPPORTED, ""));
}

#[tokio::test]
async fn okx_error_envelopes() {
    let script = vec![
        answer(200, r#"{"code":50001,"msg":"bad things"}"#),
        answer(200, r#"{"code":"50002","msg":"str code"}"#),
        answer(200, r#"{"code":0,"data":null,"isValid":true}"#),
        answer(200, r#"{"code":0,"data":null,"msg":""}"#),
    ];
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(VERIFY, script)]).await;
    let client = okx_client(server.okx_config());
    let (p, r) = (payload(), requirements());

    let e = client.verify(&p, &r).await.expect_err("numeric code");
    assert_eq!(e, FacilitatorError::Api { code: "50001".into(), msg: "bad things".into() });
    assert_eq!(e.http_status(), 502);

    let e = client.verify(&p, &r).await.expect_err("string code");
    assert_eq!(e, FacilitatorError::Api { code: "50002".into(), msg: "str code".into() });

    // code 0 with null data: the whole body is the result (plain-facilitator fallback).
    let ok = client.verify(&p, &r).await.expect("whole body is a VerifyResponse");
    assert!(ok.is_valid);

    let e = client.verify(&p, &r).await.expect_err("whole body is not a VerifyResponse");
    assert!(matches!(e, FacilitatorError::MalformedBody(_)), "{e:?}");

    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn okx_http_error_status() {
    let e = verify_error(answer(500, "boom"), |c| c).await;
    assert!(matches!(&e, FacilitatorError::Http { status: 500, body } if body.contains("boom")), "{e:?}");
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn okx_non_json_body_is_malformed() {
    let e = verify_error(answer(200, "<html>oops</html>"), |c| c).await;
    assert!(matches!(e, FacilitatorError::MalformedBody(_)), "{e:?}");
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn okx_slow_answer_times_out() {
    let slow = Answer { delay: Some(Duration::from_secs(2)), ..answer(200, r#"{"code":0,"data":{"isValid":true}}"#) };
    let e = verify_error(slow, |c| c.timeout(Duration::from_millis(300))).await;
    assert_eq!(e, FacilitatorError::Timeout(Duration::from_millis(300)));
    assert_eq!(e.http_status(), 504);
}

#[tokio::test]
async fn okx_connection_refused_is_transport() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let client = okx_client(okx_config(&format!("http://{addr}")));
    let e = client.verify(&payload(), &requirements()).await.expect_err("nobody listens");
    assert!(matches!(e, FacilitatorError::Transport(_)), "{e:?}");
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn okx_oversized_answer_is_malformed() {
    let mut big = br#"{"isValid":true,"pad":""#.to_vec();
    big.resize(big.len() + 1024 * 1024 + 16, b'x');
    big.extend_from_slice(br#""}"#);
    let e = verify_error(answer(200, big), |c| c).await;
    assert!(matches!(&e, FacilitatorError::MalformedBody(m) if m.contains("larger")), "{e:?}");
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn okx_empty_credential_is_config_error() {
    for creds in [
        OkxCredentials::new("", SECRET, PASSPHRASE),
        OkxCredentials::new(API_KEY, "", PASSPHRASE),
        OkxCredentials::new(API_KEY, SECRET, ""),
    ] {
        let e = OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds).base_url("http://127.0.0.1:9"))
            .expect_err("empty credential");
        assert!(matches!(e, FacilitatorError::Config(_)), "{e:?}");
        assert_eq!(e.http_status(), 500);
    }
}

#[tokio::test]
async fn okx_wrong_secret_is_rejected_by_the_stand_in() {
    let server = StandIn::start(Mode::Okx { sync_settle: true }, vec![(VERIFY, vec![answer(200, "{}")])]).await;
    let config =
        OkxFacilitatorConfig::new(OkxCredentials::new(API_KEY, "not-the-secret", PASSPHRASE)).base_url(&server.url);
    let e = okx_client(config).verify(&payload(), &requirements()).await.expect_err("bad signature");
    assert!(matches!(e, FacilitatorError::Http { status: 401, .. }), "{e:?}");
    let failures = server.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("bad OK-ACCESS-SIGN"), "{failures:?}");
}

#[tokio::test]
async fn plain_http_facilitator_round_trip() {
    let mode = Mode::Plain { header: "x-api-key", value: "abc" };
    let script = vec![
        ("/verify", vec![answer(200, format!(r#"{{"isValid":true,"payer":"{PAYER}"}}"#))]),
        (
            "/settle",
            vec![answer(
                200,
                format!(
                    r#"{{"success":true,"status":"success","payer":"{PAYER}","transaction":"{TX}","network":"eip155:196"}}"#
                ),
            )],
        ),
        ("/supported", vec![answer(200, r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:196"}]}"#)]),
        (
            "/settle/status",
            vec![answer(
                200,
                format!(r#"{{"success":true,"status":"success","transaction":"{TX}","network":"eip155:196"}}"#),
            )],
        ),
    ];
    let server = StandIn::start(mode, script).await;
    let mut config = HttpFacilitatorConfig::new(format!("{}/", server.url));
    config.headers.push(("x-api-key".into(), "abc".into()));
    let client = HttpFacilitatorClient::new(config).expect("HTTP client");

    assert_eq!(client.verify(&payload(), &requirements()).await.expect("verify"), VerifyResponse::valid(PAYER));
    assert_eq!(client.settle(&payload(), &requirements()).await.expect("settle"), settled("success"));
    let supported = client.supported().await.expect("supported");
    assert_eq!(supported.kinds.len(), 1);
    assert!(supported.kinds[0].covers("exact", &Network::from("eip155:196")));
    assert!(supported.extensions.is_empty() && supported.signers.is_empty());
    let status = client.settle_status(TX).await.expect("settle status");
    assert_eq!(
        (status.success, status.status.as_deref(), status.transaction.as_deref()),
        (true, Some("success"), Some(TX))
    );

    let reqs = server.requests();
    let seen: Vec<(&str, &str)> = reqs.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    let status_path = format!("/settle/status?txHash={TX}");
    assert_eq!(seen, [("POST", "/verify"), ("POST", "/settle"), ("GET", "/supported"), ("GET", status_path.as_str())]);
    assert_eq!(reqs[0].body, expected_body(false, None));
    assert_eq!(reqs[1].body, expected_body(false, None));
    assert_eq!(reqs[2].body, "");
    assert_eq!(reqs[3].body, "");

    // A facilitator that does not serve /settle/status: a typed HTTP error (the resource server
    // treats it as an unknown outcome and fails closed).
    let not_served = vec![("/settle/status", vec![answer(404, r#"{"error":"not found"}"#)])];
    let bare = StandIn::start(Mode::Plain { header: "x-api-key", value: "abc" }, not_served).await;
    let mut config = HttpFacilitatorConfig::new(bare.url.clone());
    config.headers.push(("x-api-key".into(), "abc".into()));
    let client = HttpFacilitatorClient::new(config).expect("HTTP client");
    let e = client.settle_status(TX).await.expect_err("no settle status served");
    assert!(matches!(e, FacilitatorError::Http { status: 404, .. }), "{e:?}");
}

#[test]
fn stand_in_checks_are_strict() {
    // The stand-in's own HMAC reproduces OKX's golden signatures (tests/vectors, `okx_hmac`).
    let (ts, path) = ("2026-03-30T10:00:00.000Z", "/api/v6/pay/x402/verify");
    assert_eq!(
        okx_signature("test-secret", ts, "POST", path, br#"{"x402Version":2}"#),
        "IU7Xnpn/mkL/qzwrNQxP8V28HRrHvREgguTaXzTA0gs="
    );
    assert_eq!(okx_signature("test-secret", ts, "GET", SUPPORTED, b""), "Hr+qBBgQri/XKOSuwZipWZ/ZlQtBJFDpk5lC2w2QqKA=");

    assert!(is_millis_timestamp("2026-03-30T10:00:00.123Z"));
    for bad in ["2026-03-30T10:00:00Z", "2026-03-30T10:00:00.123+00:00", "2026-03-30 10:00:00.123Z", ""] {
        assert!(!is_millis_timestamp(bad), "{bad}");
    }

    assert_eq!(check_body(expected_body(true, Some(true)).as_bytes(), true), None);
    assert_eq!(check_body(expected_body(false, None).as_bytes(), false), None);
    assert!(check_body(expected_body(false, None).as_bytes(), true).is_some());
    assert!(check_body(expected_body(true, None).as_bytes(), false).is_some());
    assert!(check_body("{\"name\": \"USD\u{20ae}0\"}".as_bytes(), true).is_some(), "raw non-ASCII must be refused");
}

// ---------------------------------------------------------------------------------------------
// Settlement status polling, through the resource server, against the stand-in
// ---------------------------------------------------------------------------------------------

fn status_answer(status: &str, success: bool) -> Answer {
    answer(
        200,
        format!(
            r#"{{"code":0,"data":{{"success":{success},"status":"{status}","transaction":"{TX}","network":"eip155:196"}},"msg":""}}"#
        ),
    )
}

/// Settles once through an `X402ResourceServer` over the OKX client and returns the outcome and
/// the requests the stand-in saw.
async fn settle_with_polling(
    sync_settle: bool,
    settle: Answer,
    statuses: Vec<Answer>,
    timeout_hook_recovers: bool,
) -> (SettleResponse, Vec<Recorded>) {
    settle_with_options(sync_settle, settle, statuses, timeout_hook_recovers, false).await
}

/// [`settle_with_polling`], optionally delivering on `pending` (the seller's opt-in).
async fn settle_with_options(
    sync_settle: bool,
    settle: Answer,
    statuses: Vec<Answer>,
    timeout_hook_recovers: bool,
    deliver_on_pending: bool,
) -> (SettleResponse, Vec<Recorded>) {
    use pay402::x402::X402ResourceServer;
    let server =
        StandIn::start(Mode::Okx { sync_settle }, vec![(SETTLE, vec![settle]), (SETTLE_STATUS, statuses)]).await;
    let client = okx_client(server.okx_config().sync_settle(sync_settle));
    let resource = X402ResourceServer::new(client)
        .register("eip155:196", pay402::x402::ExactEvmScheme::new())
        .settlement_poll(Duration::from_millis(10), Duration::from_millis(300))
        .poll_pending(!sync_settle)
        .deliver_on_pending(deliver_on_pending)
        .on_settlement_timeout(move |_tx, _network| async move { timeout_hook_recovers });
    let outcome = resource.settle(&payload(), &requirements()).await.expect("settle completes");
    let requests = server.requests();
    (outcome, requests)
}

#[tokio::test]
async fn async_settle_polls_status_until_success() {
    let (out, reqs) = settle_with_polling(
        false,
        settle_answer("pending"),
        vec![status_answer("pending", true), status_answer("success", true)],
        false,
    )
    .await;
    assert!(out.success);
    assert_eq!(out.status.as_deref(), Some("success"));
    assert_eq!(out.transaction, TX);
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    let status_path = format!("{SETTLE_STATUS}?txHash={TX}");
    assert_eq!(paths, [SETTLE, status_path.as_str(), status_path.as_str()]);
    assert_eq!(reqs[0].body, expected_body(true, Some(false)));
}

#[tokio::test]
async fn async_settle_polls_status_until_failed() {
    let (out, _) =
        settle_with_polling(false, settle_answer("pending"), vec![status_answer("failed", false)], false).await;
    assert!(!out.success);
    assert!(out.error_reason.is_some());
}

/// Still `pending` after polling: not known to have succeeded, so refused like a timeout (F11),
/// unless the seller opted in to delivering on `pending`.
#[tokio::test]
async fn async_settle_still_pending_at_the_deadline_is_refused_unless_opted_in() {
    let (out, reqs) =
        settle_with_polling(false, settle_answer("pending"), vec![status_answer("pending", true)], false).await;
    assert!(!out.success);
    assert_eq!(out.error_reason.as_deref(), Some("settlement_timeout"));
    assert!(reqs.len() >= 2, "polled at least once");
    let (out, _) =
        settle_with_options(false, settle_answer("pending"), vec![status_answer("pending", true)], false, true).await;
    assert!(out.success);
    assert_eq!(out.status.as_deref(), Some("pending"));
}

#[tokio::test]
async fn sync_settle_timeout_polls_then_fails_closed() {
    let (out, reqs) =
        settle_with_polling(true, settle_answer("timeout"), vec![status_answer("pending", true)], false).await;
    assert!(!out.success);
    assert_eq!(out.error_reason.as_deref(), Some("settlement_timeout"));
    assert_eq!(out.transaction, TX);
    assert!(reqs.iter().skip(1).all(|r| r.path == format!("{SETTLE_STATUS}?txHash={TX}")));
}

#[tokio::test]
async fn sync_settle_timeout_recovered_by_status_or_hook() {
    let (out, _) =
        settle_with_polling(true, settle_answer("timeout"), vec![status_answer("success", true)], false).await;
    assert!(out.success);
    assert_eq!(out.status.as_deref(), Some("success"));
    let (out, _) =
        settle_with_polling(true, settle_answer("timeout"), vec![status_answer("pending", true)], true).await;
    assert!(out.success, "the settlement-timeout hook recovered it");
    assert_eq!(out.status.as_deref(), Some("success"));
}

// ---------------------------------------------------------------------------------------------
// upto over OKX
// ---------------------------------------------------------------------------------------------

const OKX_UPTO_FACILITATOR: &str = "0x2222222222222222222222222222222222222222";

/// A resource server selling `upto` through the OKX stand-in, whose `/supported` upto kind
/// announces `extra` (`facilitatorAddress` or not); initialised.
async fn okx_upto(extra: Value, settle: Vec<Answer>) -> (StandIn, pay402::x402::X402ResourceServer) {
    let supported = format!(
        r#"{{"code":0,"data":{{"kinds":[{{"x402Version":2,"scheme":"upto","network":"eip155:196","extra":{extra}}}],"extensions":[],"signers":{{}}}},"msg":""}}"#
    );
    let script = vec![(SUPPORTED, vec![answer(200, supported)]), (SETTLE, settle)];
    let server = StandIn::start(Mode::Okx { sync_settle: true }, script).await;
    let resource = pay402::x402::X402ResourceServer::new(okx_client(server.okx_config()))
        .register("eip155:196", pay402::x402::UptoEvmScheme::new());
    resource.initialize().await.expect("initialize");
    (server, resource)
}

#[tokio::test]
async fn okx_upto_requirements_name_the_facilitator_and_settle_the_actual_amount() {
    use pay402::x402::RequirementsSpec;
    let extra = serde_json::json!({"facilitatorAddress": OKX_UPTO_FACILITATOR});
    let (server, resource) = okx_upto(extra, vec![settle_answer("success")]).await;
    let req = resource
        .build_payment_requirements(&RequirementsSpec::new("upto", "eip155:196", PAY_TO, "$0.10"))
        .expect("upto requirements");
    assert_eq!((req.scheme.as_str(), req.amount.as_str(), req.asset.as_str()), ("upto", "100000", USDT0));
    assert_eq!(req.extra.get("facilitatorAddress"), Some(&Value::from(OKX_UPTO_FACILITATOR)));
    assert_eq!(req.extra.get("assetTransferMethod"), Some(&Value::from("permit2")));

    // The buyer authorised the maximum; the seller settles 34 700 units of it.
    let authorization = serde_json::json!({"signature": "0x5151", "permit2Authorization": {"from": PAYER,
        "permitted": {"token": USDT0, "amount": "100000"}, "nonce": "7", "deadline": "9999999999",
        "spender": "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002",
        "witness": {"to": PAY_TO, "facilitator": OKX_UPTO_FACILITATOR, "validAfter": "0"}}});
    let payload = PaymentPayload { payload: object(authorization), accepted: req.clone(), ..payload() };
    let actual = PaymentRequirements { amount: "34700".into(), ..req.clone() };
    let settled = resource.settle(&payload, &actual).await.expect("settle");
    assert!(settled.success && settled.transaction == TX, "{settled:?}");
    // Above the authorized maximum: refused locally, no request.
    let above = PaymentRequirements { amount: "100001".into(), ..req };
    let refused = resource.settle(&payload, &above).await.expect_err("above the maximum");
    assert_eq!(refused, pay402::x402::ResourceServerError::RequirementsMismatch { field: "amount" });

    let reqs = server.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [SUPPORTED, SETTLE]);
    let body: Value = serde_json::from_str(&reqs[1].body).expect("settle body is JSON");
    assert_eq!(body["paymentRequirements"]["amount"], "34700");
    assert_eq!(body["paymentRequirements"]["extra"]["facilitatorAddress"], OKX_UPTO_FACILITATOR);
    assert_eq!(body["paymentPayload"]["accepted"]["amount"], "100000");
    assert_eq!(body["syncSettle"], true);
}

#[tokio::test]
async fn okx_upto_without_facilitator_address_is_a_misconfiguration() {
    use pay402::x402::{PriceError, RequirementsSpec, ResourceServerError};
    for extra in [serde_json::json!({}), serde_json::json!({"facilitatorAddress": "not an address"})] {
        let (server, resource) = okx_upto(extra, vec![settle_answer("success")]).await;
        let e = resource
            .build_payment_requirements(&RequirementsSpec::new("upto", "eip155:196", PAY_TO, "$0.10"))
            .expect_err("no facilitator address");
        assert_eq!(
            e,
            ResourceServerError::Price(PriceError::MissingFacilitatorAddress { network: "eip155:196".into() })
        );
        assert_eq!(e.http_status(), 500);
        assert_eq!(server.requests().len(), 1, "only /supported");
    }
}
