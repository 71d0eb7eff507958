//! Completion on cancellation: every reservation made before a handler ends in exactly one of
//! commit or release — also when the client disconnects, a timeout layer cancels the request, or
//! the handler panics.
//!
//! A web framework cancels a request by dropping its future: hyper and actix-web do so when the
//! client closes the connection, and a timeout layer (tower's `TimeoutLayer`,
//! `tokio::time::timeout` around a service, actix's own timeouts) does so when time runs out. A
//! payment verified for that request must still end somewhere, so pay402 decides it as follows:
//!
//! | when the request is dropped            | x402                                | MPP session                    | MPP charge |
//! |----------------------------------------|-------------------------------------|--------------------------------|------------|
//! | verification in flight                 | the replay key is released          | a reservation made is released | the SA settle runs to its end and is reported (hooks) |
//! | handler running, [`CancelPolicy::Complete`] (default) | settled, as if the handler succeeded | the reservation is committed | already settled |
//! | handler running, [`CancelPolicy::Release`] | released, not settled            | the reservation is released    | already settled |
//! | the handler panicked                   | released, not settled               | the reservation is released    | already settled |
//! | settlement / commit in flight          | runs to its end; outcome recorded, hooks fire | runs to its end        | — |
//!
//! An MPP session route priced **per event** ([`Per::Event`](crate::mpp::Per::Event)) reserves
//! nothing before its handler: its stream charges each event as it is sent, and a stream whose
//! connection drops commits the event handed over and releases the rest
//! ([`PaidStream`](crate::mpp::PaidStream)). A request dropped while such a handler runs, before
//! it returned its stream, is completed like any session request: under
//! [`CancelPolicy::Complete`] one event is charged (as if the handler had answered without
//! streaming), under [`CancelPolicy::Release`] nothing.
//!
//! The work left to do when a request is dropped runs in a detached task on the current tokio
//! runtime (axum's, or the actix-web worker's); the settlement or commit of a request that was not
//! dropped also runs in a task that the request awaits, so that dropping the request cannot cut it
//! off mid-flight.

#[cfg(any(feature = "axum", feature = "actix"))]
use crate::web::PaymentHttpResponse;
#[cfg(any(feature = "axum", feature = "actix"))]
use http::{HeaderMap, StatusCode};
#[cfg(any(feature = "axum", feature = "actix"))]
use std::fmt;
use std::future::Future;
#[cfg(any(feature = "axum", feature = "actix"))]
use std::pin::Pin;
use tracing::Instrument as _;

/// What happens to a verified payment when its request is cancelled (its future dropped: the
/// client disconnected, or a timeout layer gave up) while the handler runs. A handler panic always
/// releases the payment, whatever the policy, like a handler answering a status ≥ 400.
///
/// Configured per server: [`X402HttpServer::cancel_policy`](crate::x402::X402HttpServer::cancel_policy),
/// [`Mpp::cancel_policy`](crate::mpp::Mpp::cancel_policy); the dual
/// [`PaymentRouter`](crate::router::PaymentRouter) applies the policy of the protocol that
/// accepted the payment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelPolicy {
    /// Complete the payment as if the handler had succeeded (x402 settles, an MPP session
    /// reservation is committed). The default: the handler's side effects may already have
    /// happened, and cancelling a request must not be a way to get them for free.
    #[default]
    Complete,
    /// Release the payment (x402: nothing is settled and the replay key is freed; MPP session:
    /// the reservation is returned to the channel), as for a handler answering ≥ 400. For
    /// handlers without side effects, where a cancelled request should cost the buyer nothing.
    Release,
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// A `'static` future completing a payment: the headers to add, or the response replacing the
/// handler's.
pub(crate) type FinishFuture = Pin<Box<dyn Future<Output = Result<HeaderMap, PaymentHttpResponse>> + Send>>;

#[cfg(any(feature = "axum", feature = "actix"))]
/// Completes a payment after the handler answered a status (see [`FinishGuard`]).
pub(crate) type FinishFn = Box<dyn FnOnce(StatusCode) -> FinishFuture + Send>;

#[cfg(any(feature = "axum", feature = "actix"))]
/// The status a payment is completed with when its request is dropped while the handler runs.
const CANCELLED_COMPLETE: StatusCode = StatusCode::OK;
#[cfg(any(feature = "axum", feature = "actix"))]
/// The status a payment is released with (handler panicked, [`CancelPolicy::Release`], or the
/// handler never started).
const CANCELLED_RELEASE: StatusCode = StatusCode::INTERNAL_SERVER_ERROR;

#[cfg(any(feature = "axum", feature = "actix"))]
/// Where a guarded payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Verified; the handler has not started (dropping releases).
    Verified,
    /// The handler runs (dropping follows the policy, or releases when panicking).
    Handling,
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// Holds a verified payment until it is completed: dropped before [`FinishGuard::finish`] took
/// it, it completes the payment in a detached task per the [`CancelPolicy`] (see the module docs).
pub(crate) struct FinishGuard {
    finish: Option<FinishFn>,
    policy: CancelPolicy,
    stage: Stage,
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl fmt::Debug for FinishGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishGuard")
            .field("armed", &self.finish.is_some())
            .field("policy", &self.policy)
            .field("stage", &self.stage)
            .finish()
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl FinishGuard {
    /// Guards a payment whose handler has not started yet.
    pub(crate) fn verified(policy: CancelPolicy, finish: FinishFn) -> Self {
        Self { finish: Some(finish), policy, stage: Stage::Verified }
    }

    /// The handler starts now.
    pub(crate) fn start(&mut self) {
        self.stage = Stage::Handling;
    }

    /// The handler answered `status`: completes the payment (settle / commit, or release when
    /// `status` ≥ 400) in a task that runs to its end even if this future is dropped.
    pub(crate) async fn finish(mut self, status: StatusCode) -> Result<HeaderMap, PaymentHttpResponse> {
        match self.finish.take() {
            Some(finish) => run_to_completion(finish(status)).await,
            None => Ok(HeaderMap::new()),
        }
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl Drop for FinishGuard {
    fn drop(&mut self) {
        let Some(finish) = self.finish.take() else { return };
        if crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel) {
            return;
        }
        let status = if std::thread::panicking() {
            tracing::warn!("pay402: the handler panicked; the payment is released");
            CANCELLED_RELEASE
        } else {
            match (self.stage, self.policy) {
                (Stage::Handling, CancelPolicy::Complete) => {
                    tracing::info!("pay402: request cancelled while the handler ran; completing the payment");
                    CANCELLED_COMPLETE
                }
                (Stage::Handling, CancelPolicy::Release) => {
                    tracing::info!("pay402: request cancelled while the handler ran; releasing the payment");
                    CANCELLED_RELEASE
                }
                (Stage::Verified, _) => CANCELLED_RELEASE,
            }
        };
        detach(finish(status));
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
/// Runs `fut` in a task of the current tokio runtime and awaits it, so that dropping the caller
/// does not cut it off. Without a runtime (or with the F5 fix reverted) it runs inline.
pub(crate) async fn run_to_completion<T: Send + 'static>(
    fut: impl Future<Output = Result<T, PaymentHttpResponse>> + Send + 'static,
) -> Result<T, PaymentHttpResponse> {
    if crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel) {
        return fut.await;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return fut.await };
    match handle.spawn(fut.in_current_span()).await {
        Ok(out) => out,
        Err(e) => {
            // The completion panicked or its runtime shut down: its outcome is unknown (fail
            // closed: the handler's response is not sent).
            tracing::error!(error = %e, "pay402: payment completion did not finish; outcome unknown");
            Err(PaymentHttpResponse::json_error(http::StatusCode::INTERNAL_SERVER_ERROR, "Failed to process request"))
        }
    }
}

/// Like [`run_to_completion`] for a future that cannot fail.
pub(crate) async fn run_detached<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
    if crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel) {
        return Some(fut.await);
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return Some(fut.await) };
    match handle.spawn(fut.in_current_span()).await {
        Ok(out) => Some(out),
        Err(e) => {
            tracing::error!(error = %e, "pay402: a payment step did not finish; outcome unknown");
            None
        }
    }
}

/// A replay-store key reserved before verification: released (in a detached task) when dropped
/// while still armed, so that a request cancelled mid-verification does not keep it.
pub(crate) struct KeyReservation {
    store: std::sync::Arc<dyn crate::replay::ReplayStore>,
    key: String,
    armed: std::sync::atomic::AtomicBool,
}

impl KeyReservation {
    /// Guards `key`, just reserved in `store`.
    pub(crate) fn new(store: std::sync::Arc<dyn crate::replay::ReplayStore>, key: String) -> Self {
        Self { store, key, armed: std::sync::atomic::AtomicBool::new(true) }
    }

    /// The key is kept (the payment was verified) or was released by the caller.
    pub(crate) fn disarm(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for KeyReservation {
    fn drop(&mut self) {
        if !self.armed.load(std::sync::atomic::Ordering::Relaxed)
            || crate::reverts::is_reverted(crate::reverts::Fix::F5CompletionOnCancel)
        {
            return;
        }
        tracing::info!(key = %self.key, "pay402: request cancelled during verification; releasing its replay key");
        let (store, key) = (std::sync::Arc::clone(&self.store), std::mem::take(&mut self.key));
        detach(async move {
            if let Err(e) = store.remove(&key).await {
                tracing::warn!(error = %e, "x402: cannot release a replay reservation");
            }
        });
    }
}

/// Runs `fut` to its end without waiting for it: on the current tokio runtime, else on a thread
/// of its own.
pub(crate) fn detach<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) {
    let fut = fut.in_current_span();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        drop(handle.spawn(fut));
        return;
    }
    let spawned = std::thread::Builder::new().name("pay402-completion".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => {
                rt.block_on(fut);
            }
            Err(e) => tracing::error!(error = %e, "pay402: cannot complete a cancelled payment (no runtime)"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "pay402: cannot complete a cancelled payment (no thread)");
    }
}
