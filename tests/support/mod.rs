//! Shared test fixtures: real HTTP servers on 127.0.0.1 for both frameworks, and a facilitator
//! wrapper whose settlement can be made to fail or time out.
#![allow(dead_code)] // each test file uses a subset

pub(crate) mod accounts;
pub(crate) mod anvil;
pub(crate) mod okx;
pub(crate) mod redis;

use async_trait::async_trait;
use pay402::x402::embedded::EmbeddedFacilitator;
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
            }),
            SettleMode::Error => Err(FacilitatorError::Transport("connection reset".into())),
        }
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }

    async fn settle_status(&self, tx: &str) -> Result<SettleStatusResponse, FacilitatorError> {
        Ok(SettleStatusResponse {
            success: true,
            status: Some("pending".into()),
            error_reason: None,
            error_message: None,
            payer: None,
            transaction: Some(tx.to_owned()),
            network: None,
        })
    }
}
