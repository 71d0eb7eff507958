//! A misbehaving stand-in for OKX's hosted services on 127.0.0.1: the x402 facilitator
//! (`/api/v6/pay/x402/*`) and the MPP Settlement Agent (`/api/v6/pay/mpp/*`).
//!
//! It speaks HTTP/1.1 itself over a raw TCP listener (so it can misbehave below HTTP: hang, reset
//! the connection, truncate or drip a body) on its own thread and tokio runtime, so that the test
//! runtime's task count only sees pay402's tasks. Endpoints answer like OKX (the `{code, data,
//! msg}` envelope; the SA endpoints are backed by an [`EmbeddedSa`]) unless a [`Fault`] is set
//! for them. It counts accepted and currently open connections.
#![allow(dead_code)] // each test file uses a subset

use pay402::mpp::EmbeddedSa;
use pay402::okx::sa::{SessionCloseRequest, SessionOpenRequest, SessionSettleRequest, SessionTopUpRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The x402 facilitator's base path.
pub(crate) const X402_BASE: &str = "/api/v6/pay/x402";
/// The Settlement Agent's base path.
pub(crate) const SA_BASE: &str = "/api/v6/pay/mpp";
/// The transaction hash of successful x402 settlements.
pub(crate) const TX: &str = "0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

/// How an endpoint misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Fault {
    /// Reads the request and never answers (the connection stays open).
    Hang,
    /// Reads the request and resets the connection (TCP RST, no answer).
    Reset,
    /// Answers this 5xx status with an OKX-like JSON error body.
    Status(u16),
    /// Answers 200 `application/json` whose body is not JSON.
    Garbage,
    /// Answers 200 with a `Content-Length` larger than the JSON actually sent, then closes.
    Truncated,
    /// Answers 200 `text/html` with an HTML error page (a proxy in the way).
    WrongContentType,
    /// Answers 200 and a correct body, one byte every 100 ms.
    Drip,
    /// Answers correctly, but only after [`SLOW`].
    SlowSuccess,
    /// Answers 200 `application/json` with a 2 MiB body (above pay402's 1 MiB cap).
    Oversize,
    /// A compromised or buggy remote: a well-formed answer that contradicts itself or the request
    /// (x402 settle: `success: true` with status `failed`; SA session open: a receipt naming
    /// another channel). Not in [`ALL_FAULTS`].
    Lie,
}

/// Every fault, in table order.
pub(crate) const ALL_FAULTS: [Fault; 9] = [
    Fault::Hang,
    Fault::Reset,
    Fault::Status(503),
    Fault::Garbage,
    Fault::Truncated,
    Fault::WrongContentType,
    Fault::Drip,
    Fault::SlowSuccess,
    Fault::Oversize,
];

/// How late [`Fault::SlowSuccess`] answers (longer than the clients' timeout in the tests).
pub(crate) const SLOW: Duration = Duration::from_secs(2);

impl Fault {
    /// The fault's name in the SECURITY.md table.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Hang => "hang".into(),
            Self::Reset => "connection reset".into(),
            Self::Status(s) => format!("HTTP {s}"),
            Self::Garbage => "garbage body".into(),
            Self::Truncated => "truncated JSON".into(),
            Self::WrongContentType => "text/html page".into(),
            Self::Drip => "drip (1 B/100 ms)".into(),
            Self::SlowSuccess => "success after the timeout".into(),
            Self::Oversize => "2 MiB body".into(),
            Self::Lie => "contradictory answer".into(),
        }
    }
}

/// What x402 `POST /settle` answers when it is not faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SettleAnswer {
    /// `success: true, status: "success"`.
    Success,
    /// `success: true, status: "timeout"` with a transaction: the seller polls settle/status.
    Timeout,
}

struct State {
    faults: HashMap<String, Fault>,
    settle_answer: SettleAnswer,
    calls: Vec<String>,
    sa: EmbeddedSa,
}

/// The running stand-in; stopped (and its connections closed) on drop.
pub(crate) struct FaultServer {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    state: Arc<Mutex<State>>,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultServer {
    /// Starts the stand-in; SA calls are served by `sa`.
    pub(crate) fn start(sa: EmbeddedSa) -> Self {
        let state = Arc::new(Mutex::new(State {
            faults: HashMap::new(),
            settle_answer: SettleAnswer::Success,
            calls: Vec::new(),
            sa,
        }));
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (st, op, acc) = (Arc::clone(&state), Arc::clone(&open), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("stand-in runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        acc.fetch_add(1, Ordering::SeqCst);
                        op.fetch_add(1, Ordering::SeqCst);
                        let (st, op, closing) = (Arc::clone(&st), Arc::clone(&op), closing_rx.clone());
                        tokio::spawn(async move {
                            serve_connection(stream, st, closing).await;
                            op.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
                let _ = closing_tx.send(true);
            });
            // Dropping the runtime cancels the connection tasks that are still running.
        });
        Self { url, state, open, accepted, stop: Some(stop), thread: Some(thread) }
    }

    /// Makes every request whose path ends with `endpoint` (e.g. `/settle`) misbehave.
    pub(crate) fn set_fault(&self, endpoint: &str, fault: Fault) {
        self.state.lock().expect("state").faults.insert(endpoint.to_owned(), fault);
    }

    /// Removes every fault.
    pub(crate) fn clear_faults(&self) {
        self.state.lock().expect("state").faults.clear();
    }

    /// What x402 settle answers when not faulted.
    pub(crate) fn settle_answer(&self, answer: SettleAnswer) {
        self.state.lock().expect("state").settle_answer = answer;
    }

    /// The request paths served so far.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Connections currently open.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub(crate) fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one request; `None` on EOF or a malformed request.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Request { method, path, body })
}

fn response(status: u16, content_type: &str, body: &[u8], declared_len: usize) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };
    let mut out =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {declared_len}\r\n\r\n")
            .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Waits until the peer closes the connection or the stand-in stops.
async fn wait_for_close(stream: &mut TcpStream, closing: &mut tokio::sync::watch::Receiver<bool>) {
    let mut sink = [0u8; 1024];
    loop {
        tokio::select! {
            r = stream.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
            _ = closing.changed() => return,
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let request = tokio::select! {
            r = read_request(&mut stream, &mut buf) => r,
            _ = closing.changed() => None,
        };
        let Some(req) = request else { return };
        let (fault, answer) = {
            let mut st = state.lock().expect("state");
            st.calls.push(req.path.clone());
            let endpoint = req.path.split('?').next().unwrap_or_default();
            let fault = st.faults.iter().find(|(k, _)| endpoint.ends_with(k.as_str())).map(|(_, f)| *f);
            (fault, normal_answer(&st, &req))
        };
        let ok = response(200, "application/json", &answer, answer.len());
        match fault {
            None => {
                if stream.write_all(&ok).await.is_err() {
                    return;
                }
            }
            Some(Fault::Hang) => return wait_for_close(&mut stream, &mut closing).await,
            Some(Fault::Reset) => {
                let _ = stream.set_zero_linger();
                return;
            }
            Some(Fault::Status(status)) => {
                let body = json!({"code": 50001, "msg": "service temporarily unavailable", "data": null}).to_string();
                if stream.write_all(&response(status, "application/json", body.as_bytes(), body.len())).await.is_err() {
                    return;
                }
            }
            Some(Fault::Garbage) => {
                let body = b"\x00\xffnot json at all {{{";
                if stream.write_all(&response(200, "application/json", body, body.len())).await.is_err() {
                    return;
                }
            }
            Some(Fault::Truncated) => {
                let cut = &answer[..answer.len() / 2];
                let _ = stream.write_all(&response(200, "application/json", cut, answer.len())).await;
                let _ = stream.shutdown().await;
                return;
            }
            Some(Fault::WrongContentType) => {
                let body = b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>";
                if stream.write_all(&response(200, "text/html", body, body.len())).await.is_err() {
                    return;
                }
            }
            Some(Fault::Drip) => {
                let head = response(200, "application/json", b"", answer.len());
                if stream.write_all(&head).await.is_err() {
                    return;
                }
                for byte in &answer {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = closing.changed() => return,
                    }
                    if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                        return;
                    }
                }
            }
            Some(Fault::SlowSuccess) => {
                tokio::select! {
                    () = tokio::time::sleep(SLOW) => {}
                    _ = closing.changed() => return,
                }
                if stream.write_all(&ok).await.is_err() {
                    return;
                }
            }
            Some(Fault::Lie) => {
                let lie = lie(&answer);
                if stream.write_all(&response(200, "application/json", &lie, lie.len())).await.is_err() {
                    return;
                }
            }
            Some(Fault::Oversize) => {
                let body =
                    json!({"code": 0, "msg": "", "data": {"reference": "a".repeat(2 * 1024 * 1024)}}).to_string();
                if stream.write_all(&response(200, "application/json", body.as_bytes(), body.len())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn envelope<T: serde::Serialize>(result: Result<T, pay402::okx::sa::SaError>) -> Value {
    match result {
        Ok(data) => json!({"code": 0, "data": data, "msg": ""}),
        Err(pay402::okx::sa::SaError::Api { code, error }) => {
            json!({"code": code, "data": null, "msg": error.detail()})
        }
        Err(other) => json!({"code": 50000, "data": null, "msg": other.to_string()}),
    }
}

fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, pay402::okx::sa::SaError> {
    serde_json::from_slice(body).map_err(|e| pay402::okx::sa::SaError::Malformed(e.to_string()))
}

/// [`Fault::Lie`]: the answer with `status` turned to `failed` (x402 settle) and `channelId`
/// replaced by another channel (SA session receipts).
fn lie(answer: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
        if data.contains_key("success") {
            data.insert("status".into(), json!("failed"));
        }
        if data.contains_key("channelId") {
            data.insert("channelId".into(), json!(format!("0x{}", "ee".repeat(32))));
        }
    }
    v.to_string().into_bytes()
}

/// The well-behaved answer for a request.
fn normal_answer(st: &State, req: &Request) -> Vec<u8> {
    let path = req.path.split('?').next().unwrap_or_default();
    let value = if let Some(endpoint) = path.strip_prefix(X402_BASE) {
        let payer = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v["paymentPayload"]["payload"]["authorization"]["from"].as_str().map(str::to_owned));
        let data = match (req.method.as_str(), endpoint) {
            ("GET", "/supported") => json!({
                "kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:196"}],
                "extensions": [],
                "signers": {},
            }),
            ("POST", "/verify") => json!({"isValid": true, "payer": payer}),
            ("POST", "/settle") => match st.settle_answer {
                SettleAnswer::Success => json!({
                    "success": true, "status": "success", "payer": payer, "transaction": TX, "network": "eip155:196",
                }),
                SettleAnswer::Timeout => json!({
                    "success": true, "status": "timeout", "payer": payer, "transaction": TX, "network": "eip155:196",
                }),
            },
            ("GET", "/settle/status") => json!({
                "success": true, "status": "success", "transaction": TX, "network": "eip155:196",
            }),
            _ => json!(null),
        };
        json!({"code": 0, "data": data, "msg": ""})
    } else if let Some(endpoint) = path.strip_prefix(SA_BASE) {
        let sa = &st.sa;
        match endpoint {
            "/charge/settle" => envelope(typed(&req.body).and_then(|r| sa.settle_now(&r))),
            "/charge/verifyHash" => envelope(typed(&req.body).and_then(|r| sa.verify_hash_now(&r))),
            "/session/open" => envelope(typed::<SessionOpenRequest>(&req.body).and_then(|r| sa.session_open_now(&r))),
            "/session/topUp" => {
                envelope(typed::<SessionTopUpRequest>(&req.body).and_then(|r| sa.session_top_up_now(&r)))
            }
            "/session/settle" => {
                envelope(typed::<SessionSettleRequest>(&req.body).and_then(|r| sa.session_settle_now(&r)))
            }
            "/session/close" => {
                envelope(typed::<SessionCloseRequest>(&req.body).and_then(|r| sa.session_close_now(&r)))
            }
            _ => json!({"code": 50000, "data": null, "msg": format!("unknown endpoint {endpoint}")}),
        }
    } else {
        json!({"code": 50000, "data": null, "msg": "unknown API"})
    };
    value.to_string().into_bytes()
}
