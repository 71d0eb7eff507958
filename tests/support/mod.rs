//! Shared test fixtures: real HTTP servers on 127.0.0.1 for both frameworks, and a facilitator
//! wrapper whose settlement can be made to fail or time out.
#![allow(dead_code)] // each test file uses a subset

pub(crate) mod accounts;
pub(crate) mod anvil;
pub(crate) mod okx;
pub(crate) mod permit2;
pub(crate) mod redis;
pub(crate) mod session_sa;
pub(crate) mod worker;

use async_trait::async_trait;
use pay402::x402::EmbeddedFacilitator;
use pay402::x402::{
    FacilitatorClient, FacilitatorError, PaymentPayload, PaymentRequirements, SettleResponse, SettleStatusResponse,
    SupportedResponse, VerifyResponse,
};
use std::sync::{Arc, Mutex};

/// The frameworks every end-to-end scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framework {
    Axum,
    Actix,
}

pub(crate) const FRAMEWORKS: [Framework; 2] = [Framework::Axum, Framework::Actix];

/// A running server; stopped on drop.
pub(crate) struct Running {
    pub(crate) base: String,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Serves an axum router on a free port.
pub(crate) async fn serve_axum(app: axum::Router) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("axum server");
    });
    Running { base, stop: Some(Box::new(move || task.abort())) }
}

/// Serves an actix-web app (built by `factory` in each worker) on a free port, in its own
/// thread and actix system.
pub(crate) fn serve_actix<F, T, B>(factory: F) -> Running
where
    F: Fn() -> actix_web::App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(factory)
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
            tx.send(server.handle()).expect("handle");
            server.await.expect("actix server");
        });
    });
    let handle = rx.recv().expect("actix server started");
    Running {
        base,
        stop: Some(Box::new(move || {
            let stopped = handle.stop(false);
            // Block until the server is down so ports and threads do not leak across tests.
            futures::executor::block_on(stopped);
            let _ = thread.join();
        })),
    }
}

/// A settle-status answer that says the transaction `tx` is still pending (a facilitator that
/// never confirms).
pub(crate) fn still_pending(tx: &str) -> SettleStatusResponse {
    SettleStatusResponse {
        success: true,
        status: Some("pending".into()),
        error_reason: None,
        error_message: None,
        payer: None,
        transaction: Some(tx.to_owned()),
        network: None,
    }
}

/// What [`FlakyFacilitator::settle`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SettleMode {
    /// Settle in the embedded ledger.
    Normal,
    /// Answer `success: false` (`insufficient_funds`).
    Fail,
    /// Answer `success: true, status: "timeout"`, and report `pending` forever.
    Timeout,
    /// Fail with a transport error (unknown outcome).
    Error,
}

/// The embedded facilitator with controllable settlement.
#[derive(Clone)]
pub(crate) struct FlakyFacilitator {
    pub(crate) inner: EmbeddedFacilitator,
    pub(crate) mode: Arc<Mutex<SettleMode>>,
}

impl FlakyFacilitator {
    pub(crate) fn new(inner: EmbeddedFacilitator) -> Self {
        Self { inner, mode: Arc::new(Mutex::new(SettleMode::Normal)) }
    }

    pub(crate) fn set(&self, mode: SettleMode) {
        *self.mode.lock().expect("mode") = mode;
    }
}

#[async_trait]
impl FacilitatorClient for FlakyFacilitator {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        self.inner.verify(p, r).await
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        let mode = *self.mode.lock().expect("mode");
        match mode {
            SettleMode::Normal => self.inner.settle(p, r).await,
            SettleMode::Fail => {
                Ok(SettleResponse::failure("insufficient_funds", r.network.clone(), None, "0xfail".into()))
            }
            SettleMode::Timeout => Ok(SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                status: Some("timeout".into()),
                payer: None,
                transaction: "0xtt".into(),
                network: r.network.clone(),
                amount: None,
            }),
            SettleMode::Error => Err(FacilitatorError::Transport("connection reset".into())),
        }
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        Ok(still_pending(tx))
    }
}

/// A checkpoint a test controls: while armed, [`Gate::pass`] blocks (after announcing itself)
/// until the test opens it, and reports when a blocked caller was dropped instead.
pub(crate) struct Gate {
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Semaphore,
    open: tokio::sync::Semaphore,
    dropped: tokio::sync::Semaphore,
}

/// Adds a permit to a semaphore when dropped (unless defused).
struct DropFlag<'a>(Option<&'a tokio::sync::Semaphore>);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.add_permits(1);
        }
    }
}

const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

impl Gate {
    pub(crate) const fn new() -> Self {
        Self {
            armed: std::sync::atomic::AtomicBool::new(false),
            entered: tokio::sync::Semaphore::const_new(0),
            open: tokio::sync::Semaphore::const_new(0),
            dropped: tokio::sync::Semaphore::const_new(0),
        }
    }

    /// Callers of [`Gate::pass`] block from now on (a reused gate starts afresh).
    pub(crate) fn arm(&self) {
        for s in [&self.entered, &self.open, &self.dropped] {
            s.forget_permits(usize::MAX);
        }
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets every blocked and future caller through.
    pub(crate) fn open(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
        self.open.add_permits(1 << 20);
    }

    /// The checkpoint: blocks while armed.
    pub(crate) async fn pass(&self) {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.entered.add_permits(1);
        let mut flag = DropFlag(Some(&self.dropped));
        self.open.acquire().await.expect("gate").forget();
        flag.0 = None;
    }

    /// Waits until a caller blocks at the gate.
    pub(crate) async fn entered(&self) {
        tokio::time::timeout(GATE_WAIT, self.entered.acquire())
            .await
            .expect("a caller reached the gate")
            .expect("gate")
            .forget();
    }

    /// Waits until a blocked caller was dropped (its request cancelled).
    pub(crate) async fn dropped(&self) {
        tokio::time::timeout(GATE_WAIT, self.dropped.acquire())
            .await
            .expect("the blocked caller was dropped")
            .expect("gate")
            .forget();
    }

    /// Whether a blocked caller was dropped, without waiting.
    pub(crate) fn was_dropped(&self) -> bool {
        self.dropped.available_permits() > 0
    }
}

/// The embedded facilitator whose verify and settle can each be held at a [`Gate`].
#[derive(Clone)]
pub(crate) struct GatedFacilitator {
    pub(crate) inner: EmbeddedFacilitator,
    pub(crate) verify_gate: Arc<Gate>,
    pub(crate) settle_gate: Arc<Gate>,
    pub(crate) settles: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedFacilitator {
    pub(crate) fn new(inner: EmbeddedFacilitator) -> Self {
        Self {
            inner,
            verify_gate: Arc::new(Gate::new()),
            settle_gate: Arc::new(Gate::new()),
            settles: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl FacilitatorClient for GatedFacilitator {
    async fn verify(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<VerifyResponse, FacilitatorError> {
        self.verify_gate.pass().await;
        self.inner.verify(p, r).await
    }

    async fn settle(&self, p: &PaymentPayload, r: &PaymentRequirements) -> Result<SettleResponse, FacilitatorError> {
        self.settle_gate.pass().await;
        self.settles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.settle(p, r).await
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        self.inner.settle_status(tx).await
    }
}

/// Sends a raw HTTP/1.1 GET and returns the open connection (drop it to disconnect).
pub(crate) async fn send_raw(base: &str, path: &str, headers: &[(&str, &str)]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream
}

/// Closes a connection abruptly (TCP RST), as a client that went away.
pub(crate) fn disconnect(stream: tokio::net::TcpStream) {
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}
