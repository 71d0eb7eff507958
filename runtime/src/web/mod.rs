//! Framework-independent HTTP primitives shared by the x402 and MPP layers and the axum /
//! actix-web glue: what pay402 sees of a request ([`RequestContext`], [`RequestHead`]), the
//! responses it sends in place of a handler's ([`PaymentHttpResponse`], [`PreparedResponse`]),
//! route keys ([`RoutePattern`]), the one completion rule ([`settles`]) and the browser
//! [`paywall`] both protocols serve. No framework is named
//! here: the glue in `crate::axum` / `crate::actix` converts.
#![allow(clippy::result_large_err)]

mod misconfigured;
pub mod paywall;
mod request;
mod response;
mod route_key;

pub use misconfigured::{MISCONFIGURED_ERROR, Misconfigured};
#[cfg(feature = "axum")]
pub(crate) use request::HttpHead;
#[cfg(feature = "actix")]
pub(crate) use request::push_url;
pub use request::{RequestContext, RequestHead};
pub use response::{
    HttpBody, MAX_RECORDED_BODY_BYTES, PaymentHttpResponse, PreparedResponse, RecordedResponse, ResponseSink,
};
pub use route_key::{RouteKeyError, RouteKeyReason, RoutePattern, find_route, normalize_path, request_path_forms};

use http::StatusCode;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Whether a payment is completed (x402 settled, an MPP charge or session reservation
/// committed) after its handler answered `status`: any status below 400. A 4xx or 5xx answer
/// releases the payment instead — the one rule of "charge only for a delivered response", used
/// by the route-table layers, the attribute macros' guards and the router.
pub fn settles(status: StatusCode) -> bool {
    !(status.is_client_error() || status.is_server_error())
}
