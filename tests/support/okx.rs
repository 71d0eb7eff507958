//! The local OKX stand-ins' own re-check of a signed request: the `OK-ACCESS-*` headers, the
//! timestamp format, and the HMAC recomputed here with hmac/sha2/base64 — never with pay402's
//! own signer, so a bug there cannot hide itself.

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The credentials a stand-in expects.
pub(crate) struct OkxKeys<'a> {
    pub(crate) api_key: &'a str,
    pub(crate) secret: &'a str,
    pub(crate) passphrase: &'a str,
}

/// The `OK-ACCESS-TIMESTAMP` format a stand-in expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimestampFormat {
    /// `YYYY-MM-DDTHH:MM:SSZ` (OKX's Python SA client sends no fraction).
    Seconds,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    Millis,
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn is_seconds_timestamp(ts: &str) -> bool {
    has_shape(ts, b"dddd-dd-ddTdd:dd:ddZ")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn is_millis_timestamp(ts: &str) -> bool {
    has_shape(ts, b"dddd-dd-ddTdd:dd:dd.dddZ")
}

fn has_shape(ts: &str, shape: &[u8]) -> bool {
    ts.len() == shape.len()
        && ts.bytes().zip(shape).all(|(b, &want)| if want == b'd' { b.is_ascii_digit() } else { b == want })
}

/// The stand-in's own `OK-ACCESS-SIGN`: base64(HMAC-SHA256(secret, ts + METHOD + path + body)).
pub(crate) fn okx_signature(secret: &str, timestamp: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(timestamp.as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_and_query.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks the JSON content type, the `OK-ACCESS-*` headers, the timestamp format and the
/// signature; returns the problems found (empty = accepted).
pub(crate) fn check_okx_headers(
    keys: &OkxKeys<'_>,
    format: TimestampFormat,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if get("content-type") != Some("application/json") {
        problems.push(format!("Content-Type is {:?}, want application/json", get("content-type")));
    }
    if get("ok-access-key") != Some(keys.api_key) {
        problems.push(format!("OK-ACCESS-KEY is {:?}", get("ok-access-key")));
    }
    if get("ok-access-passphrase") != Some(keys.passphrase) {
        problems.push(format!("OK-ACCESS-PASSPHRASE is {:?}", get("ok-access-passphrase")));
    }
    let timestamp = get("ok-access-timestamp").unwrap_or_default();
    let (well_formed, shape) = match format {
        TimestampFormat::Seconds => (is_seconds_timestamp(timestamp), "YYYY-MM-DDTHH:MM:SSZ"),
        TimestampFormat::Millis => (is_millis_timestamp(timestamp), "YYYY-MM-DDTHH:MM:SS.mmmZ"),
    };
    if !well_formed {
        problems.push(format!("OK-ACCESS-TIMESTAMP `{timestamp}` is not {shape}"));
    }
    let want = okx_signature(keys.secret, timestamp, method.as_str(), path_and_query, body);
    if get("ok-access-sign") != Some(want.as_str()) {
        problems.push(format!("bad OK-ACCESS-SIGN {:?} (want {want})", get("ok-access-sign")));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// A charge-answering SA stand-in (`charge/settle`, `charge/verifyHash`) with scripted lies
// ---------------------------------------------------------------------------------------------

/// The API key a [`ChargeSaStandIn`] expects.
pub(crate) const SA_API_KEY: &str = "charge-api-key";
/// The secret a [`ChargeSaStandIn`] expects.
pub(crate) const SA_SECRET: &str = "charge-secret";
/// The passphrase a [`ChargeSaStandIn`] expects.
pub(crate) const SA_PASSPHRASE: &str = "charge-passphrase";
/// The reference an honest [`ChargeSaStandIn`] answers.
pub(crate) const SA_REFERENCE: &str = "0xefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef";

/// How a [`ChargeSaStandIn`] answers a charge call (after checking HMAC and body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChargeSaMode {
    /// `code 0` with a receipt: `success`, the echoed challenge id, [`SA_REFERENCE`].
    Honest,
    /// `{"code":0,"msg":""}`: no `data` at all (a proxy's bare success).
    NoData,
    /// A receipt whose `status` is `failed`.
    FailedStatus,
    /// A receipt naming another challenge.
    OtherChallengeId,
    /// A receipt with an empty `reference`.
    EmptyReference,
    /// An error envelope `{"code": code, "msg": msg}`.
    Error(i64, String),
}

struct ChargeSaState {
    mode: ChargeSaMode,
    calls: usize,
    failures: Vec<String>,
}

/// A local SA answering charge calls per [`ChargeSaMode`]; it verifies `OK-ACCESS-*` (HMAC
/// recomputed here) and the body's shape (a challenge echo with an id, a `transaction` or
/// `hash` payload, a `source`), and counts the calls it got. Stopped on drop.
pub(crate) struct ChargeSaStandIn {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    state: std::sync::Arc<std::sync::Mutex<ChargeSaState>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChargeSaStandIn {
    /// Starts a stand-in answering with `mode`.
    pub(crate) async fn start(mode: ChargeSaMode) -> Self {
        use axum::extract::State;
        let state = std::sync::Arc::new(std::sync::Mutex::new(ChargeSaState { mode, calls: 0, failures: Vec::new() }));
        let handle = |State(state): State<std::sync::Arc<std::sync::Mutex<ChargeSaState>>>,
                      method: Method,
                      uri: axum::http::Uri,
                      headers: HeaderMap,
                      body: axum::body::Bytes| async move {
            let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
            let keys = OkxKeys { api_key: SA_API_KEY, secret: SA_SECRET, passphrase: SA_PASSPHRASE };
            let mut problems = check_okx_headers(&keys, TimestampFormat::Seconds, &method, &path, &headers, &body);
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let challenge_id = parsed["challenge"]["id"].as_str().unwrap_or_default().to_owned();
            if challenge_id.is_empty() {
                problems.push("no challenge id".to_owned());
            }
            let want_type = match path.as_str() {
                "/api/v6/pay/mpp/charge/settle" => "transaction",
                "/api/v6/pay/mpp/charge/verifyHash" => "hash",
                other => {
                    problems.push(format!("unexpected path {other}"));
                    ""
                }
            };
            if parsed["payload"]["type"] != want_type || !parsed["source"].is_string() {
                problems.push(format!("unexpected body {parsed}"));
            }
            let mode = {
                let mut st = state.lock().expect("stand-in state");
                st.calls += 1;
                st.failures.extend(problems.iter().cloned());
                st.mode.clone()
            };
            if !problems.is_empty() {
                let body = serde_json::json!({"code": 50113, "msg": problems.join("; ")}).to_string();
                return (axum::http::StatusCode::UNAUTHORIZED, body);
            }
            let receipt = |status: &str, id: &str, reference: &str| {
                serde_json::json!({"code": 0, "msg": "", "data": {
                    "method": "evm", "reference": reference, "status": status,
                    "timestamp": "2026-11-24T06:51:54Z", "chainId": 196, "challengeId": id,
                }})
                .to_string()
            };
            let body = match mode {
                ChargeSaMode::Honest => receipt("success", &challenge_id, SA_REFERENCE),
                ChargeSaMode::NoData => r#"{"code":0,"msg":""}"#.to_owned(),
                ChargeSaMode::FailedStatus => receipt("failed", &challenge_id, SA_REFERENCE),
                ChargeSaMode::OtherChallengeId => receipt("success", "some-other-challenge", SA_REFERENCE),
                ChargeSaMode::EmptyReference => receipt("success", &challenge_id, ""),
                ChargeSaMode::Error(code, msg) => serde_json::json!({"code": code, "msg": msg}).to_string(),
            };
            (axum::http::StatusCode::OK, body)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = axum::Router::new().fallback(handle).with_state(std::sync::Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("SA stand-in");
        });
        Self { url, state, task }
    }

    /// An [`OkxSaClient`](pay402::okx::sa::OkxSaClient) with the expected credentials.
    pub(crate) fn client(&self) -> pay402::okx::sa::OkxSaClient {
        let creds = pay402::okx::OkxCredentials::new(SA_API_KEY, SA_SECRET, SA_PASSPHRASE);
        pay402::okx::sa::OkxSaClient::new(pay402::okx::sa::OkxSaConfig::new(creds).base_url(&self.url))
            .expect("SA client")
    }

    /// How many calls it got (every one passed the HMAC and body checks, or the test fails on
    /// drop).
    pub(crate) fn calls(&self) -> usize {
        self.state.lock().expect("stand-in state").calls
    }
}

impl Drop for ChargeSaStandIn {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            let failures = std::mem::take(&mut self.state.lock().expect("stand-in state").failures);
            assert!(failures.is_empty(), "the SA stand-in rejected requests: {failures:#?}");
        }
    }
}
