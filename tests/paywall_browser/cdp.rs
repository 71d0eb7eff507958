//! A minimal Chrome DevTools Protocol client: headless Chromium started with
//! `--remote-debugging-port=0` (its port read from the profile's `DevToolsActivePort` file), one
//! page target attached in flat mode, commands sent and answered over one websocket, events
//! buffered until read.

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A running headless Chromium with one attached page; killed on drop.
pub(crate) struct Browser {
    child: tokio::process::Child,
    profile: PathBuf,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    events: VecDeque<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts `chromium` (everything but 127.0.0.1 unresolvable) and attaches to a blank page.
    pub(crate) async fn launch(chromium: &str, profile: PathBuf) -> Self {
        let child = tokio::process::Command::new(chromium)
            .args([
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
                "--window-size=1000,1400",
                "--remote-debugging-port=0",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromium");
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            assert!(Instant::now() < deadline, "chromium wrote no {} within 60 s", active.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")).await.expect("devtools websocket");
        let mut browser = Self { child, profile, ws, next_id: 0, session: String::new(), events: VecDeque::new() };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"})).await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached =
            browser.call_browser("Target.attachToTarget", json!({"targetId": target_id, "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        for domain in ["Page.enable", "Runtime.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = Value::String(s);
        }
        self.ws.send(Message::text(message.to_string())).await.expect("send a devtools command");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("devtools connection ended: {other:?}"),
                }
            };
            let value: Value = serde_json::from_str(&text).expect("devtools JSON");
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method} failed: {value}");
                return value["result"].clone();
            }
            if value.get("method").is_some() {
                self.events.push_back(value);
            }
        }
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// Sends a command to the page.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    /// Evaluates `expression` in the page; its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression} threw: {result}");
        result["result"]["value"].clone()
    }

    /// The next buffered or arriving event named `method`, waiting at most `wait`.
    pub(crate) async fn event(&mut self, method: &str, wait: Duration) -> Option<Value> {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let value: Value = serde_json::from_str(&text).expect("devtools JSON");
                    if value["method"] == method {
                        return Some(value);
                    }
                    if value.get("method").is_some() {
                        self.events.push_back(value);
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("devtools connection ended: {other:?}"),
            }
        }
    }

    /// Whether any buffered event is named `method`.
    pub(crate) fn saw(&self, method: &str) -> bool {
        self.events.iter().any(|e| e["method"] == method)
    }

    /// Saves a full-page PNG screenshot at `path`; its bytes.
    pub(crate) async fn screenshot(&mut self, path: &std::path::Path) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("data")).expect("base64");
        std::fs::write(path, &png).expect("write the screenshot");
        png
    }
}
