//! A local Settlement Agent for the session intent: it re-checks every request on its own
//! (`OK-ACCESS-*` headers, the HMAC with the tests' own hmac/sha2/base64 code, the seconds-only
//! timestamp, the compact JSON body re-serialised byte for byte from the typed request) and
//! delegates the work to an [`EmbeddedSa`] (an in-memory escrow whose ledger the tests read).

use super::okx::{OkxKeys, TimestampFormat, check_okx_headers};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pay402::mpp::EmbeddedSa;
use pay402::okx::OkxCredentials;
use pay402::okx::sa::{
    OkxSaClient, OkxSaConfig, SaError, SessionCloseRequest, SessionOpenRequest, SessionSettleRequest,
    SessionTopUpRequest,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const API_KEY: &str = "session-e2e-key";
const API_SECRET: &str = "session-e2e-secret";
const PASSPHRASE: &str = "session-e2e-passphrase";
/// The SA's API prefix.
pub(crate) const SA_BASE: &str = "/api/v6/pay/mpp";

// ---------------------------------------------------------------------------------------------
// The SA stand-in
// ---------------------------------------------------------------------------------------------

struct SaState {
    sa: EmbeddedSa,
    /// Paths called, in order.
    calls: Vec<String>,
    /// Checks that failed (the test fails on them).
    failures: Vec<String>,
}

type Shared = Arc<Mutex<SaState>>;

/// A local SA: checks each request like OKX's gateway would, then lets the [`EmbeddedSa`] do
/// the work. Stopped on drop; recorded check failures fail the test.
pub(crate) struct SaStandIn {
    pub(crate) url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl SaStandIn {
    pub(crate) async fn start(sa: EmbeddedSa) -> Self {
        let state = Arc::new(Mutex::new(SaState { sa, calls: Vec::new(), failures: Vec::new() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().fallback(sa_handle).with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("SA stand-in");
        });
        Self { url, state, task }
    }

    pub(crate) fn client(&self) -> OkxSaClient {
        let creds = OkxCredentials::new(API_KEY, API_SECRET, PASSPHRASE);
        OkxSaClient::new(OkxSaConfig::new(creds).base_url(&self.url)).expect("SA client")
    }

    /// The calls so far (and no failed check).
    pub(crate) fn calls(&self) -> Vec<String> {
        let st = self.state.lock().expect("state");
        assert!(st.failures.is_empty(), "the SA stand-in refused requests: {:#?}", st.failures);
        st.calls.clone()
    }
}

impl Drop for SaStandIn {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            let failures = std::mem::take(&mut self.state.lock().expect("state").failures);
            assert!(failures.is_empty(), "the SA stand-in refused requests: {failures:#?}");
        }
    }
}

fn check_headers(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let keys = OkxKeys { api_key: API_KEY, secret: API_SECRET, passphrase: PASSPHRASE };
    check_okx_headers(&keys, TimestampFormat::Seconds, method, path, headers, body)
}

/// Parses the body as `T`, and checks that it is exactly `T` re-serialised (compact,
/// ASCII-escaped, documented key order) and carries `payload.action == action`.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(body: &[u8], action: &str) -> Result<T, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if value["payload"]["action"] != action {
        return Err(format!("payload.action is {}, want {action}", value["payload"]["action"]));
    }
    let req: T = serde_json::from_value(value).map_err(|e| format!("body does not fit the request type: {e}"))?;
    let again = pay402::json::compact_ascii(&req).map_err(|e| e.to_string())?;
    if again != body {
        return Err(format!(
            "body is not in the canonical shape:\n got {}\nwant {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&again)
        ));
    }
    Ok(req)
}

fn envelope<T: serde::Serialize>(result: Result<T, SaError>) -> Response {
    let body = match result {
        Ok(data) => json!({"code": 0, "data": data, "msg": ""}),
        Err(SaError::Api { code, error }) => json!({"code": code, "data": null, "msg": error.detail()}),
        Err(other) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()).into_response();
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn sa_handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut st = state.lock().expect("state");
    st.calls.push(path.clone());
    let mut problems = check_headers(&method, &path, &headers, &body);
    let endpoint = path.strip_prefix(SA_BASE).unwrap_or("");
    let sa = st.sa.clone();
    let response = match (method.as_str(), endpoint) {
        ("POST", "/session/open") => {
            typed::<SessionOpenRequest>(&body, "open").map(|r| envelope(sa.session_open_now(&r)))
        }
        ("POST", "/session/topUp") => {
            typed::<SessionTopUpRequest>(&body, "topUp").map(|r| envelope(sa.session_top_up_now(&r)))
        }
        ("POST", "/session/settle") => {
            typed::<SessionSettleRequest>(&body, "settle").map(|r| envelope(sa.session_settle_now(&r)))
        }
        ("POST", "/session/close") => {
            typed::<SessionCloseRequest>(&body, "close").map(|r| envelope(sa.session_close_now(&r)))
        }
        _ => Err(format!("unexpected call {method} {path}")),
    };
    match response {
        Ok(resp) if problems.is_empty() => resp,
        other => {
            if let Err(e) = other {
                problems.push(e);
            }
            st.failures.extend(problems.iter().map(|p| format!("{method} {path}: {p}")));
            let body = json!({"code": 50113, "msg": problems.join("; ")}).to_string();
            (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}
