//! The answer to a request on a route that cannot build its payment challenge (a missing payee,
//! a price the scheme cannot express, a dynamic price or payee that failed): a 500 whose error
//! is logged at error level once per distinct reason, not once per request, and — when the
//! server explains its errors (development, [`crate::setup`]) — named in the body so the
//! developer sees it in the client too. In production the body stays generic.

use super::PaymentHttpResponse;
use http::StatusCode;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The generic message of the 500 (production).
pub const MISCONFIGURED_ERROR: &str = "Failed to process request";
/// How many distinct reasons are remembered for logging once; past it every occurrence is
/// logged (so a reason is never silenced, and memory stays bounded).
const REMEMBERED_REASONS: usize = 64;

/// Reports a route's configuration errors: the 500 of a route that cannot build its payment
/// challenge, its reason logged at error level once per distinct reason (not per request) and,
/// when the server explains its errors (development), named in the body. Cheap to clone.
#[derive(Clone, Default)]
pub struct Misconfigured {
    explain: bool,
    logged: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for Misconfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Misconfigured").field("explain", &self.explain).finish_non_exhaustive()
    }
}

impl Misconfigured {
    /// A reporter; `explain` names the reason in the 500 body (development only: the reason can
    /// name configuration details a buyer has no business seeing).
    pub fn new(explain: bool) -> Self {
        Self { explain, logged: Arc::default() }
    }

    /// Whether 500 bodies name the reason.
    pub fn explains(&self) -> bool {
        self.explain
    }

    /// Logs `why` (once per distinct reason, at error level, with `protocol`) and answers 500.
    pub fn respond(&self, protocol: &'static str, why: &dyn fmt::Display) -> PaymentHttpResponse {
        let reason = why.to_string();
        let first = match self.logged.lock() {
            Ok(mut seen) if seen.len() < REMEMBERED_REASONS => seen.insert(reason.clone()),
            Ok(seen) => !seen.contains(&reason),
            Err(_) => true,
        };
        if first {
            tracing::error!(
                protocol,
                error = %reason,
                "{protocol}: this route cannot build its payment challenge; every request to it gets a 500 until \
                 the configuration is fixed (logged once per reason)"
            );
        }
        if self.explain {
            let body = serde_json::json!({
                "error": MISCONFIGURED_ERROR,
                "reason": reason,
                "hint": "pay402 development mode explains configuration errors here; in production this body only \
                         says \"Failed to process request\" and the reason is in the server's log",
            });
            PaymentHttpResponse::new(StatusCode::INTERNAL_SERVER_ERROR, "application/json", body.to_string())
        } else {
            PaymentHttpResponse::json_error(StatusCode::INTERNAL_SERVER_ERROR, MISCONFIGURED_ERROR)
        }
    }
}
