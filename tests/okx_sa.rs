//! The MPP Settlement-Agent client against a local stand-in for OKX's SA: a real HTTP server
//! that re-checks every request on its own (HMAC signature with the tests' own
//! hmac/sha2/base64 code, `OK-ACCESS-*` headers, the seconds-only timestamp, the content type)
//! and answers scripted envelopes, so the golden requests can be reproduced byte for byte and
//! every typed error can be provoked over the wire.

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pay402::okx::OkxCredentials;
use pay402::okx::sa::{
    ChargeAuthorization, ChargeHashPayload, ChargeSettleRequest, ChargeTransactionPayload, ChargeVerifyHashRequest,
    EvmPaymentError, OkxSaClient, OkxSaConfig, SaChallengeEcho, SaClient, SaError, SessionCloseRequest,
    SessionOpenRequest, SessionSettleRequest, SessionStatus, SessionTopUpRequest, map_sa_error,
};
use pay402::okx::{self, Clock};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use support::okx::{OkxKeys, TimestampFormat, check_okx_headers, is_seconds_timestamp, okx_signature};

const API_KEY: &str = "test-api-key";
const SECRET: &str = "test-secret";
const PASSPHRASE: &str = "test-passphrase";
const BASE: &str = "/api/v6/pay/mpp";
const VECTORS: &str = "tests/vectors/okx-golden.json";
const CHANNEL: &str = "0xabababababababababababababababababababababababababababababababab";
const REFERENCE: &str = "0xefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef";

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

// ---------------------------------------------------------------------------------------------
// The stand-in SA
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

fn envelope(code: Value, msg: &str, data: Value) -> Answer {
    answer(200, json!({"code": code, "msg": msg, "data": data}).to_string())
}

/// A request as received.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    timestamp: String,
    sign: String,
    body: Vec<u8>,
}

struct StandInState {
    secret: &'static str,
    /// Scripted answers in order; the last one repeats.
    answers: VecDeque<Answer>,
    requests: Vec<Recorded>,
    failures: Vec<String>,
}

type Shared = Arc<Mutex<StandInState>>;

/// A running stand-in; the server task is aborted on drop, and recorded check failures fail the
/// test.
struct StandIn {
    url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(answers: Vec<Answer>) -> Self {
        Self::start_with_secret(SECRET, answers).await
    }

    async fn start_with_secret(secret: &'static str, answers: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(StandInState {
            secret,
            answers: answers.into(),
            requests: Vec::new(),
            failures: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = Router::new().fallback(handle).with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in server");
        });
        Self { url, state, task }
    }

    fn requests(&self) -> Vec<Recorded> {
        let st = self.state.lock().expect("stand-in state");
        assert!(st.failures.is_empty(), "stand-in rejected requests: {:#?}", st.failures);
        st.requests.clone()
    }

    fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().expect("stand-in state").failures)
    }

    fn client(&self) -> OkxSaClient {
        OkxSaClient::new(config(&self.url)).expect("SA client")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            let failures = self.take_failures();
            assert!(failures.is_empty(), "stand-in rejected requests: {failures:#?}");
        }
    }
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (problems, scripted) = {
        let mut st = state.lock().expect("stand-in state");
        let problems = check_request(st.secret, &method, &path, &headers, &body);
        st.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            timestamp: get("ok-access-timestamp"),
            sign: get("ok-access-sign"),
            body: body.to_vec(),
        });
        st.failures.extend(problems.iter().map(|p| format!("{method} {path}: {p}")));
        let scripted = if st.answers.len() > 1 { st.answers.pop_front() } else { st.answers.front().cloned() };
        if problems.is_empty() && scripted.is_none() {
            st.failures.push(format!("{method} {path}: no scripted answer"));
        }
        (problems, scripted)
    };
    if !problems.is_empty() {
        let body = json!({"code": 50113, "msg": problems.join("; ")}).to_string();
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let Some(mut a) = scripted else {
        return (StatusCode::NOT_FOUND, "no scripted answer").into_response();
    };
    // `$CHALLENGE_ID` in a scripted body stands for the challenge id the request echoed.
    let echoed =
        serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["challenge"]["id"].as_str().map(str::to_owned));
    if let (Some(id), Ok(text)) = (echoed, std::str::from_utf8(&a.body)) {
        a.body = text.replace("$CHALLENGE_ID", &id).into_bytes();
    }
    if let Some(d) = a.delay {
        tokio::time::sleep(d).await;
    }
    let status = StatusCode::from_u16(a.status).expect("scripted status");
    (status, [(header::CONTENT_TYPE, "application/json")], a.body).into_response()
}

/// Every check the stand-in makes; returns the problems found (empty = accepted).
fn check_request(secret: &str, method: &Method, path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let is_post = *method == Method::POST;
    if *method != Method::GET && !is_post {
        problems.push(format!("unexpected method {method}"));
    }
    if !path_and_query.starts_with(&format!("{BASE}/")) {
        problems.push(format!("path outside {BASE}"));
    }
    if !is_post && !body.is_empty() {
        problems.push("GET with a body".to_owned());
    }
    let keys = OkxKeys { api_key: API_KEY, secret, passphrase: PASSPHRASE };
    problems.extend(check_okx_headers(&keys, TimestampFormat::Seconds, method, path_and_query, headers, body));
    if is_post {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(_)) => {}
            _ => problems.push("POST body is not a JSON object".to_owned()),
        }
        if !body.is_ascii() {
            problems.push("POST body is not ASCII-escaped".to_owned());
        }
        if body.windows(2).any(|w| w == b", " || w == b": ") || body.contains(&b'\n') {
            problems.push("POST body is not compact".to_owned());
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn config(url: &str) -> OkxSaConfig {
    OkxSaConfig::new(OkxCredentials::new(API_KEY, SECRET, PASSPHRASE)).base_url(url)
}

fn fixed_clock(timestamp: &str) -> Clock {
    let at = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {timestamp}: {e}"));
    let at = SystemTime::from(at);
    Arc::new(move || at)
}

fn charge_receipt_data() -> Value {
    json!({
        "method": "evm",
        "reference": REFERENCE,
        "status": "success",
        "timestamp": "2026-11-24T06:51:54Z",
        "chainId": 196,
        "challengeId": "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM",
    })
}

fn session_receipt_data() -> Value {
    json!({
        "method": "evm",
        "intent": "session",
        "status": "success",
        "timestamp": "2026-11-24T06:51:54Z",
        "channelId": CHANNEL,
        "chainId": "196",
        "reference": REFERENCE,
        "deposit": "5000000",
    })
}

/// The SA's status answer behind `session_status_parsed` (no `cumulativeAmount`; an unknown
/// key and a numeric `chainId` are ignored).
fn session_status_data() -> Value {
    json!({
        "channelId": CHANNEL,
        "chainId": 196,
        "payer": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "payee": "0x1111111111111111111111111111111111111111",
        "token": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
        "deposit": "5000000",
        "settledOnChain": "0",
        "remainingBalance": "5000000",
        "sessionStatus": "OPEN",
    })
}

/// Runs operation `op` (0..7) with a default request; the receipt is dropped.
async fn run_op(client: &dyn SaClient, op: usize) -> Result<(), SaError> {
    match op % 7 {
        0 => client.settle(&ChargeSettleRequest::default()).await.map(drop),
        1 => client.verify_hash(&ChargeVerifyHashRequest::default()).await.map(drop),
        2 => client.session_open(&SessionOpenRequest::default()).await.map(drop),
        3 => client.session_top_up(&SessionTopUpRequest::default()).await.map(drop),
        4 => client.session_settle(&SessionSettleRequest::default()).await.map(drop),
        5 => client.session_close(&SessionCloseRequest::default()).await.map(drop),
        _ => client.session_status(CHANNEL).await.map(drop),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> T {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("vector body does not parse: {e}\n{body}"))
}

// ---------------------------------------------------------------------------------------------
// (a) Golden requests
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_sa_hmac_cases() {
    let v = vectors();
    let hmac = &v["okx_hmac"];
    assert_eq!(hmac["api_key"], API_KEY);
    assert_eq!(hmac["passphrase"], PASSPHRASE);
    let cases: Vec<&Value> = hmac["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["request_path"].as_str().is_some_and(|p| p.starts_with(BASE)))
        .collect();
    assert_eq!(cases.len(), 2, "the two SA cases");
    for case in cases {
        let s = |k: &str| case[k].as_str().unwrap_or_else(|| panic!("{k}"));
        assert!(is_seconds_timestamp(s("timestamp")), "{}", s("name"));
        assert_eq!(format!("{}{}{}{}", s("timestamp"), s("method"), s("request_path"), s("body")), s("prehash"));
        let sig = okx::sign(s("secret_key"), s("timestamp"), s("method"), s("request_path"), s("body").as_bytes());
        assert_eq!(sig, s("OK-ACCESS-SIGN"), "{}", s("name"));
        let own = okx_signature(s("secret_key"), s("timestamp"), s("method"), s("request_path"), s("body").as_bytes());
        assert_eq!(own, sig);
    }
}

#[tokio::test]
async fn golden_sa_requests_byte_for_byte() {
    let v = vectors();
    let section = &v["mpp_sa_requests"];
    let requests = section["requests_in_order"].as_array().expect("requests_in_order");
    assert_eq!(requests.len(), 7);
    let stand_in = StandIn::start(vec![
        envelope(json!(0), "", charge_receipt_data()),
        envelope(json!("0"), "", charge_receipt_data()),
        envelope(json!(0), "", session_receipt_data()),
        envelope(json!(0), "", session_receipt_data()),
        envelope(json!(0), "", session_receipt_data()),
        envelope(json!(0), "", session_receipt_data()),
        envelope(json!(0), "success", session_status_data()),
    ])
    .await;
    let returns = &section["intent_return_values"];
    for (i, want) in requests.iter().enumerate() {
        let s = |k: &str| want[k].as_str().unwrap_or_else(|| panic!("request {i}: {k}"));
        let client: Arc<dyn SaClient> = Arc::new(stand_in.client().with_clock(fixed_clock(s("OK-ACCESS-TIMESTAMP"))));
        let path = s("path");
        let body = s("body");
        match path.strip_prefix(BASE).expect("SA path") {
            "/charge/settle" => {
                let receipt = client.settle(&parse(body)).await.expect("charge settle");
                let r = &returns["charge_transaction_receipt"];
                assert_eq!((receipt.reference.as_str(), receipt.method.as_str()), (REFERENCE, "evm"));
                assert_eq!(receipt.status, r["status"].as_str().expect("status"));
                assert_eq!(receipt.reference, r["reference"].as_str().expect("reference"));
                assert_eq!(receipt.chain_id, "196");
                assert!(receipt.external_id.is_none() && r["external_id"].is_null());
            }
            "/charge/verifyHash" => {
                let receipt = client.verify_hash(&parse(body)).await.expect("verifyHash");
                assert_eq!(receipt.challenge_id, "Nq9__nZ5IwYUW5g-ufO4EQNrj74QkopYc0nM4AuOAuM");
            }
            "/session/open" => {
                let receipt = client.session_open(&parse(body)).await.expect("open");
                assert_eq!(receipt.reference, returns["session_open"]["reference"].as_str().expect("ref"));
                assert_eq!((receipt.deposit.as_str(), receipt.chain_id.as_str()), ("5000000", "196"));
            }
            "/session/topUp" => {
                let receipt = client.session_top_up(&parse(body)).await.expect("topUp");
                assert_eq!(receipt.channel_id, CHANNEL);
            }
            "/session/settle" => {
                let receipt = client.session_settle(&parse(body)).await.expect("settle");
                assert_eq!(receipt.reference, returns["settle_channel"]["reference"].as_str().expect("ref"));
            }
            "/session/close" => {
                let receipt = client.session_close(&parse(body)).await.expect("close");
                assert_eq!(receipt.reference, returns["close"]["reference"].as_str().expect("ref"));
            }
            other => {
                let id = other.strip_prefix("/session/status?channelId=").expect("status path");
                assert_eq!(body, "");
                let status = client.session_status(id).await.expect("status");
                // Same fields, values and order as the Python model dump.
                let want = serde_json::to_string(&returns["session_status_parsed"]).expect("JSON");
                assert_eq!(serde_json::to_string(&status).expect("status JSON"), want);
            }
        }
        let got = stand_in.requests().pop().expect("a request was recorded");
        assert_eq!(got.method, s("method"), "request {i}");
        assert_eq!(got.path, path, "request {i}");
        assert_eq!(String::from_utf8_lossy(&got.body), body, "request {i}: body bytes");
        assert_eq!(got.timestamp, s("OK-ACCESS-TIMESTAMP"), "request {i}");
        assert_eq!(got.sign, s("OK-ACCESS-SIGN"), "request {i}: signature");
        assert_eq!(want["content-type"], "application/json");
    }
    assert_eq!(stand_in.requests().len(), 7);
}

#[tokio::test]
async fn typed_requests_serialise_like_the_vectors() {
    // Built by hand (not parsed) to pin the field order and the omission rules.
    let v = vectors();
    let want = v["mpp_sa_requests"]["requests_in_order"][0]["body"].as_str().expect("body").to_owned();
    let echo = &v["mpp_sa_requests"]["inputs"]["charge_challenge_echo"];
    let e = |k: &str| echo[k].as_str().expect("echo field").to_owned();
    let req = ChargeSettleRequest {
        challenge: SaChallengeEcho::new(e("id"), e("realm"), e("method"), e("intent"), e("request"))
            .with_expires(e("expires")),
        payload: ChargeTransactionPayload {
            authorization: ChargeAuthorization {
                from: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
                to: "0x1111111111111111111111111111111111111111".into(),
                value: "10".into(),
                valid_after: "0".into(),
                valid_before: "1767225600".into(),
                nonce: format!("0x{}", "22".repeat(32)),
                signature: Some("0xbc2bb4714db9f9872f982944b2ad387eb9c6f8b3e7bedb0c490e31fd71159f4d07282870ad68750d87eb6d214fbb638fbe671d3da377b65252a0524c04dbe6b41b".into()),
                ..Default::default()
            },
        },
        source: String::new(),
    };
    assert_eq!(String::from_utf8(pay402::json::compact_ascii(&req).expect("serialise")).expect("utf8"), want);

    // Non-ASCII is escaped on the wire and the signature covers the escaped bytes.
    let stand_in = StandIn::start(vec![envelope(json!(0), "", charge_receipt_data())]).await;
    let req = ChargeVerifyHashRequest {
        challenge: SaChallengeEcho::new("id", "caf\u{e9}", "evm", "charge", "e30"),
        payload: ChargeHashPayload { hash: "0xcd".into() },
        source: String::new(),
    };
    stand_in.client().verify_hash(&req).await.expect("verifyHash");
    let got = stand_in.requests().pop().expect("recorded");
    assert_eq!(
        String::from_utf8(got.body).expect("ascii"),
        r#"{"challenge":{"id":"id","realm":"caf\u00e9","method":"evm","intent":"charge","request":"e30"},"payload":{"type":"hash","hash":"0xcd"},"source":""}"#
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_sa_code_maps_to_its_error_class() {
    type Make = fn(String) -> EvmPaymentError;
    let table: &[(i64, Make, u16)] = &[
        (70000, EvmPaymentError::BadRequest, 400),
        (70001, EvmPaymentError::InternalSA, 500),
        (70002, EvmPaymentError::MalformedCredential, 402),
        (70003, EvmPaymentError::MalformedCredential, 402),
        (70004, EvmPaymentError::InvalidSignature, 402),
        (70005, EvmPaymentError::InvalidSplit, 400),
        (70006, EvmPaymentError::InvalidSplit, 400),
        (70007, EvmPaymentError::InternalSA, 500),
        (70008, EvmPaymentError::ChannelClosed, 410),
        (70009, EvmPaymentError::InvalidChallenge, 402),
        (70010, EvmPaymentError::ChannelNotFound, 410),
        (70011, EvmPaymentError::InternalSA, 500),
        (70012, EvmPaymentError::AmountExceedsDeposit, 402),
        (70013, EvmPaymentError::DeltaTooSmall, 402),
        (70014, EvmPaymentError::ChannelClosed, 410),
        (8000, EvmPaymentError::InternalSA, 500),
        (1, EvmPaymentError::InternalSA, 500),
        (70099, EvmPaymentError::InternalSA, 500),
    ];
    // One envelope per code and per code style (JSON number, then digit string).
    let mut script = Vec::new();
    for &(code, _, _) in table {
        script.push(envelope(json!(code), &format!("numeric {code}"), Value::Null));
        script.push(envelope(json!(code.to_string()), &format!("string {code}"), Value::Null));
    }
    let stand_in = StandIn::start(script).await;
    let client = stand_in.client();
    let mut op = 0;
    for &(code, make, status) in table {
        for style in ["numeric", "string"] {
            let err = run_op(&client, op).await.expect_err("error envelope");
            op += 1;
            let want = make(format!("{style} {code}"));
            assert_eq!(err, SaError::Api { code, error: want.clone() }, "code {code} ({style})");
            assert_eq!(err.status(), status, "code {code}");
            // Buyers get the class without the SA's text (L4); the error keeps it for logs.
            assert_eq!(err.payment_error(), want.generic());
            assert_eq!(map_sa_error(code, &format!("{style} {code}")), want);
            assert_eq!(err.payment_error().problem().status, status);
        }
    }
    assert_eq!(stand_in.requests().len(), table.len() * 2);
}

#[tokio::test]
async fn malformed_envelopes_fail_closed() {
    let cases: Vec<(&str, Answer)> = vec![
        // OKX's Python client takes a non-digit string code for success (wire facts §12.5).
        ("non-digit string code", envelope(json!("success"), "", charge_receipt_data())),
        ("signed string code", envelope(json!("-1"), "", Value::Null)),
        ("fractional code", envelope(json!(0.5), "", Value::Null)),
        ("missing code", answer(200, json!({"msg": "", "data": {}}).to_string())),
        ("not JSON", answer(200, "<html>busy</html>")),
        ("not an object", answer(200, "[0]")),
        ("data of the wrong shape", envelope(json!(0), "", json!(["x"]))),
        ("field of the wrong type", envelope(json!(0), "", json!({"reference": {"x": 1}}))),
        ("larger than 1 MiB", envelope(json!(0), "", json!({"reference": "a".repeat(1024 * 1024)}))),
    ];
    let stand_in = StandIn::start(cases.iter().map(|(_, a)| a.clone()).collect()).await;
    let client = stand_in.client();
    for (i, (name, _)) in cases.iter().enumerate() {
        let err = run_op(&client, i).await.expect_err(name);
        assert!(matches!(err, SaError::Malformed(_)), "{name}: {err:?}");
        assert_eq!(err.status(), 500, "{name}");
        let p = err.payment_error();
        assert!(matches!(p, EvmPaymentError::InternalSA(_)), "{name}");
        assert_eq!(p.problem().type_uri, "https://paymentauth.org/problems/internal-error");
    }
}

#[tokio::test]
async fn http_errors_are_internal_sa_errors() {
    let stand_in = StandIn::start(vec![
        answer(500, json!({"code": 0, "data": {}}).to_string()),
        answer(201, json!({"code": 0, "data": {}}).to_string()),
        answer(404, "not found"),
    ])
    .await;
    let client = stand_in.client();
    for (op, status) in [(0, 500), (6, 201), (2, 404)] {
        let err = run_op(&client, op).await.expect_err("HTTP error");
        assert!(matches!(err, SaError::Http { status: s, .. } if s == status), "{err:?}");
        assert_eq!(err.status(), 500);
        let p = err.payment_error();
        assert!(matches!(p, EvmPaymentError::InternalSA(_)));
        assert_eq!((p.status(), p.title()), (500, "InternalSAError"));
    }
}

#[tokio::test]
async fn slow_answers_time_out() {
    let mut slow = envelope(json!(0), "", charge_receipt_data());
    slow.delay = Some(Duration::from_secs(3));
    let stand_in = StandIn::start(vec![slow]).await;
    let client = OkxSaClient::new(config(&stand_in.url).timeout(Duration::from_millis(300))).expect("client");
    let started = Instant::now();
    let err = client.settle(&ChargeSettleRequest::default()).await.expect_err("timeout");
    assert_eq!(err, SaError::Timeout(Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(err.payment_error(), EvmPaymentError::InternalSA(_)));
    assert_eq!(err.status(), 500);
}

#[tokio::test]
async fn redirects_are_refused_not_followed() {
    // A 307 to another host must not carry the signed OK-ACCESS-* headers there: the client
    // answers an HTTP error and the other host is never contacted.
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    let elsewhere = Router::new().fallback(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { json!({"code": 0, "data": charge_receipt_data()}).to_string() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = format!("http://{}/collect", listener.local_addr().expect("addr"));
    let other = tokio::spawn(async move { axum::serve(listener, elsewhere).await.expect("server") });
    let redirect = Router::new().fallback(move || {
        let target = target.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let redirecting = tokio::spawn(async move { axum::serve(listener, redirect).await.expect("server") });
    let client = OkxSaClient::new(config(&url)).expect("client");
    let err = client.settle(&ChargeSettleRequest::default()).await.expect_err("a redirect is refused");
    assert!(matches!(err, SaError::Http { status: 307, .. }), "{err:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the redirect was followed");
    other.abort();
    redirecting.abort();
}

#[tokio::test]
async fn refused_connections_are_transport_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client = OkxSaClient::new(config(&url)).expect("client");
    let err = client.session_status(CHANNEL).await.expect_err("refused");
    assert!(matches!(err, SaError::Transport(_)), "{err:?}");
    assert_eq!(err.status(), 500);
    assert!(matches!(err.payment_error(), EvmPaymentError::InternalSA(ref m) if !m.contains("127.0.0.1")));
}

#[tokio::test]
async fn null_or_missing_data_fails_closed() {
    // OKX's Python client turns a missing or null `data` into `{}`; pay402 refuses it (F10): a
    // proxy's bare `{"code":0}` is not a settlement.
    let stand_in = StandIn::start(vec![
        envelope(json!(0), "", Value::Null),
        answer(200, r#"{"code":"0","msg":""}"#),
        envelope(json!(0), "", Value::Null),
        answer(200, r#"{"code":0}"#),
    ])
    .await;
    let client = stand_in.client();
    let e = client.settle(&ChargeSettleRequest::default()).await.expect_err("null data");
    assert!(matches!(e, SaError::Malformed(_)), "{e:?}");
    let e = client.verify_hash(&ChargeVerifyHashRequest::default()).await.expect_err("missing data");
    assert!(matches!(e, SaError::Malformed(_)), "{e:?}");
    let e = client.session_open(&SessionOpenRequest::default()).await.expect_err("null data");
    assert!(matches!(e, SaError::Malformed(_)), "{e:?}");
    let e = client.session_status(CHANNEL).await.expect_err("missing data");
    assert!(matches!(e, SaError::Malformed(_)), "{e:?}");
    assert_eq!(e.status(), 500);
    // An empty object is a receipt (its content is judged by the caller).
    let stand_in = StandIn::start(vec![envelope(json!(0), "", json!({}))]).await;
    assert_eq!(stand_in.client().session_status(CHANNEL).await.expect("empty data"), SessionStatus::default());
}

#[tokio::test]
async fn session_status_query_is_encoded_and_signed() {
    let stand_in = StandIn::start(vec![envelope(json!(0), "", session_status_data())]).await;
    let status = stand_in.client().session_status("0xab cd&x=1").await.expect("status");
    assert_eq!(status.session_status, "OPEN");
    assert_eq!(status.cumulative_amount, "");
    let got = stand_in.requests().pop().expect("recorded");
    assert_eq!(got.method, "GET");
    assert_eq!(got.path, "/api/v6/pay/mpp/session/status?channelId=0xab+cd%26x%3D1");
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn the_stand_in_rejects_a_wrong_secret() {
    // Proves the stand-in's HMAC check is not vacuous: a client with another secret is refused.
    let stand_in = StandIn::start_with_secret("another-secret", vec![envelope(json!(0), "", Value::Null)]).await;
    let err = stand_in.client().session_status(CHANNEL).await.expect_err("refused");
    assert!(matches!(err, SaError::Http { status: 401, .. }), "{err:?}");
    let failures = stand_in.take_failures();
    assert!(failures.iter().any(|f| f.contains("bad OK-ACCESS-SIGN")), "{failures:?}");
}

// ---------------------------------------------------------------------------------------------
// (c) Problem JSON
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn problem_json_matches_the_observed_bodies() {
    let v = vectors();
    let observed = &v["behaviour_observations"]["mpp_decorator_and_router"];

    // An SA error on session open, as OKX's decorator answered it.
    let want = &observed["session_open_sa_error"];
    let stand_in = StandIn::start(vec![envelope(json!(70010), "channel not found", Value::Null)]).await;
    let err = stand_in.client().session_open(&SessionOpenRequest::default()).await.expect_err("70010");
    let SaError::Api { error, .. } = &err else { panic!("not an SA answer: {err:?}") };
    assert_eq!(
        String::from_utf8(error.problem().to_compact_json()).expect("utf8"),
        want["body"].as_str().expect("body")
    );
    // What pay402 answers buyers differs from OKX's decorator in one way (L4): the SA's `msg`
    // is not echoed; the detail is the class name.
    let p = err.payment_error();
    assert_eq!(u64::from(p.status()), want["status"].as_u64().expect("status"));
    assert_eq!(
        String::from_utf8(p.to_problem_json()).expect("utf8"),
        r#"{"type":"https://paymentauth.org/problems/session/channel-not-found","title":"ChannelNotFoundError","status":410,"detail":"ChannelNotFoundError"}"#
    );

    // A voucher for an unknown channel (raised locally, same rendering).
    let want = &observed["session_voucher_unknown_channel"];
    let local = EvmPaymentError::ChannelNotFound(format!("channel '{CHANNEL}' not found"));
    assert_eq!(u64::from(local.status()), want["status"].as_u64().expect("status"));
    assert_eq!(String::from_utf8(local.to_problem_json()).expect("utf8"), want["body"].as_str().expect("body"));

    // Every class: title, type and status; an empty message falls back to the title.
    let classes = [
        (EvmPaymentError::MalformedCredential(String::new()), "malformed-credential", 402),
        (EvmPaymentError::InvalidChallenge(String::new()), "invalid-challenge", 402),
        (EvmPaymentError::VerificationFailed(String::new()), "verification-failed", 402),
        (EvmPaymentError::PaymentExpired(String::new()), "payment-expired", 402),
        (EvmPaymentError::InvalidPayload(String::new()), "invalid-payload", 402),
        (EvmPaymentError::BadRequest(String::new()), "bad-request", 400),
        (EvmPaymentError::InvalidSplit(String::new()), "invalid-split", 400),
        (EvmPaymentError::InsufficientBalance(String::new()), "session/insufficient-balance", 402),
        (EvmPaymentError::InvalidSignature(String::new()), "session/invalid-signature", 402),
        (EvmPaymentError::SignerMismatch(String::new()), "session/signer-mismatch", 402),
        (EvmPaymentError::AmountExceedsDeposit(String::new()), "session/amount-exceeds-deposit", 402),
        (EvmPaymentError::DeltaTooSmall(String::new()), "session/delta-too-small", 402),
        (EvmPaymentError::ChannelNotFound(String::new()), "session/channel-not-found", 410),
        (EvmPaymentError::ChannelClosed(String::new()), "session/channel-finalized", 410),
        (EvmPaymentError::InternalSA(String::new()), "internal-error", 500),
    ];
    for (e, slug, status) in classes {
        let title = e.title();
        assert!(title.ends_with("Error"));
        let body = String::from_utf8(e.to_problem_json()).expect("utf8");
        assert_eq!(
            body,
            format!(
                r#"{{"type":"https://paymentauth.org/problems/{slug}","title":"{title}","status":{status},"detail":"{title}"}}"#
            )
        );
        assert_eq!(e.status(), status);
        assert!(e.problem().challenge_id.is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// The MPP seller over OkxSaClient: SA outcomes → the HTTP response the buyer gets
// ---------------------------------------------------------------------------------------------

/// Runs one paid request through `Mpp` (charge intent over the OKX SA client talking to the
/// stand-in) and returns the outcome and what the SA received.
async fn seller_outcome(
    answer: Answer,
) -> (Result<pay402::mpp::MppPayment, pay402::web::PaymentHttpResponse>, Vec<Recorded>) {
    use pay402::mpp::{ChargeIntent, EvmMethod, Mpp, MppChargeClient, PaySpec};
    use pay402::web::RequestContext;
    let stand_in = StandIn::start(vec![answer]).await;
    let method = EvmMethod::x_layer("0x1111111111111111111111111111111111111111")
        .with_charge(ChargeIntent::new(stand_in.client()));
    let mpp = Mpp::new(method, "api.example.com", "test-mpp-secret-at-least-32-bytes-long-hmac-key").expect("mpp");
    let spec = PaySpec::charge("0.00001");
    let ctx = |auth: Option<&str>| {
        let mut headers = http::HeaderMap::new();
        if let Some(a) = auth {
            headers.insert("authorization", a.parse().expect("header"));
        }
        RequestContext::new(http::Method::GET, "http://127.0.0.1/premium".into(), headers)
    };
    let challenge = mpp.process(&ctx(None), &spec).await.expect_err("unpaid");
    let www = challenge.headers["www-authenticate"].to_str().expect("ascii").to_owned();
    let buyer: pay402::evm::PrivateKeySigner =
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().expect("key");
    let authorization = MppChargeClient::new(buyer).authorization_header_for(&[&www]).expect("credential");
    let outcome = mpp.process(&ctx(Some(&authorization)), &spec).await;
    let requests = stand_in.requests();
    (outcome, requests)
}

#[tokio::test]
async fn seller_settles_through_the_sa_and_maps_each_failure_to_its_status() {
    // Success: the SA's reference becomes the receipt; the body it got is the §9.3 shape. The
    // receipt must name the echoed challenge (F10).
    let mut data = charge_receipt_data();
    data["challengeId"] = json!("$CHALLENGE_ID");
    let (outcome, requests) = seller_outcome(envelope(json!(0), "", data)).await;
    let pay402::mpp::MppPayment { credential, receipt, .. } = outcome.expect("paid");
    assert_eq!(receipt.reference, REFERENCE);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, format!("{BASE}/charge/settle"));
    let body: Value = serde_json::from_slice(&requests[0].body).expect("json");
    assert_eq!(body["challenge"]["id"], credential.challenge.id.as_str());
    assert_eq!(body["payload"]["type"], "transaction");
    assert_eq!(body["payload"]["authorization"]["type"], "eip-3009");
    assert_eq!(body["payload"]["authorization"]["value"], "10");
    assert_eq!(body["source"], credential.source.clone().unwrap_or_default().as_str());
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["challenge", "payload", "source"]);

    // Each SA code and transport failure → the documented status and problem type.
    for (answer, status, type_suffix) in [
        (envelope(json!(70004), "bad signature", Value::Null), 402, "session/invalid-signature"),
        (envelope(json!("70000"), "bad param", Value::Null), 400, "bad-request"),
        (envelope(json!(70009), "bad challenge", Value::Null), 402, "invalid-challenge"),
        (envelope(json!(70010), "no channel", Value::Null), 410, "session/channel-not-found"),
        // Unknown outcomes: 503 + Retry-After (issue 17), never a new challenge.
        (envelope(json!(8000), "internal", Value::Null), 503, "internal-error"),
        (answer(500, "boom"), 503, "internal-error"),
        (answer(200, "<html>"), 503, "internal-error"),
    ] {
        let (outcome, _) = seller_outcome(answer).await;
        let resp = outcome.expect_err("refused");
        assert_eq!(resp.status.as_u16(), status, "{type_suffix}");
        assert_eq!(resp.headers["content-type"], "application/json");
        let problem: Value = serde_json::from_slice(&resp.body).expect("problem");
        assert_eq!(problem["type"], format!("https://paymentauth.org/problems/{type_suffix}"));
        assert_eq!(problem["status"], status);
        assert_eq!(resp.headers.contains_key("www-authenticate"), status == 402, "{type_suffix}");
        assert_eq!(resp.headers.contains_key("retry-after"), status == 503, "{type_suffix}");
    }
}
