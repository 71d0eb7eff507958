//! The MPP session book: one channel per (realm, payee, token, chain, escrow), opened on the
//! first session challenge; vouchers sent ahead on routes that offered a session; top-ups;
//! closing.

use super::budget::Reservation;
use super::offers::{ChannelKey, SessionTerms, body_prefix, body_reason, key_of, receipt_of, session_challenge};
use super::send::{send, set_header};
use super::{
    AutoPayError, AutoPayMiddleware, AutoPayOutcome, DEFAULT_DEPOSIT_REQUESTS, MwResult, PaymentDetail, Protocol, mw,
    payment_error,
};
use crate::evm::U256;
use crate::mpp::{ParsedChallenge, b64url_decode, parse_rfc3339};
use crate::reverts::{Fix, is_reverted};
use http::Extensions;
use http::header::AUTHORIZATION;
use reqwest::{Method, Request, Response, StatusCode, Url};
use reqwest_middleware::Next;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};

/// A challenge is not used for a voucher sent ahead when it expires within this margin.
const EXPIRY_MARGIN_SECONDS: i64 = 5;

/// One of a channel's facts, as [`AutoPayMiddleware::channels`] and
/// [`AutoPayMiddleware::close_channels`] report them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelSummary {
    /// The channel id.
    pub channel_id: String,
    /// The highest cumulative voucher signed.
    pub cumulative: U256,
    /// The deposit.
    pub deposit: U256,
}

/// A route: origin, method and path (no query).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RouteKey {
    origin: String,
    method: String,
    path: String,
}

impl RouteKey {
    /// The route `req` is sent to.
    pub(super) fn of(req: &Request) -> Self {
        Self {
            origin: req.url().origin().ascii_serialization(),
            method: req.method().as_str().to_owned(),
            path: req.url().path().to_owned(),
        }
    }
}

/// An open channel: what was deposited and vouched so far.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) id: String,
    pub(super) deposit: U256,
    pub(super) cumulative: U256,
    /// The latest challenge and route, for closing.
    pub(super) challenge: ParsedChallenge,
    pub(super) url: Url,
    pub(super) method: Method,
}

/// A channel's place in the book; its lock serialises the requests on the channel (vouchers are
/// cumulative).
pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Channel>>>;

/// A route that offered a session: its latest challenge and the channel that pays it.
#[derive(Clone, Debug)]
pub(super) struct RouteSession {
    challenge: ParsedChallenge,
    key: ChannelKey,
}

/// The channels by the terms that identify them, and the routes that vouchers are sent ahead to.
#[derive(Default)]
pub(super) struct SessionBook {
    channels: HashMap<ChannelKey, Slot>,
    routes: HashMap<RouteKey, RouteSession>,
}

/// What a voucher sent ahead came to.
pub(super) enum Ahead {
    /// The answer to the request (paid, or the refusal's error).
    Answered(Response),
    /// Nothing was sent: pay the request as if the route were unknown.
    StartOver(Request),
}

impl AutoPayMiddleware {
    /// The open MPP session channels.
    pub async fn channels(&self) -> Vec<ChannelSummary> {
        let mut out = Vec::new();
        for slot in self.slots() {
            if let Some(c) = slot.lock().await.as_ref() {
                out.push(ChannelSummary { channel_id: c.id.clone(), cumulative: c.cumulative, deposit: c.deposit });
            }
        }
        out
    }

    /// Closes every open MPP session channel with its highest voucher (a management request
    /// to the route that last used it; re-signed once under a fresh challenge if the stored
    /// one is refused). The escrow pays the payee the vouched amount and returns the rest of
    /// the deposit. Stops at the first failure (the channels not closed stay usable).
    pub async fn close_channels(&self, http: &reqwest::Client) -> Result<Vec<ChannelSummary>, AutoPayError> {
        let mut closed = Vec::new();
        for slot in self.slots() {
            let mut guard = slot.lock().await;
            let Some(channel) = guard.as_ref() else { continue };
            let mut challenge = channel.challenge.clone();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let header = self
                    .inner
                    .session
                    .close_header(&challenge, &channel.id, channel.cumulative)
                    .map_err(|e| payment_error(Protocol::MppSession, e))?;
                let resp = http
                    .request(channel.method.clone(), channel.url.clone())
                    .header(AUTHORIZATION, header)
                    .send()
                    .await
                    .map_err(|e| AutoPayError::Transport { action: "close", reason: e.to_string() })?;
                if resp.status() == StatusCode::PAYMENT_REQUIRED
                    && attempt == 1
                    && let Some(fresh) = session_challenge(resp.headers(), &key_of(&challenge))
                {
                    challenge = fresh;
                    continue;
                }
                check_management(resp, "close", &channel.id).await?;
                break;
            }
            closed.push(ChannelSummary {
                channel_id: channel.id.clone(),
                cumulative: channel.cumulative,
                deposit: channel.deposit,
            });
            let id = channel.id.clone();
            *guard = None;
            drop(guard);
            tracing::info!(channel = %id, "pay402 autopay: channel closed");
        }
        let mut book = self.book();
        book.routes.clear();
        Ok(closed)
    }

    /// Every channel slot (open or closed meanwhile).
    fn slots(&self) -> Vec<Slot> {
        self.book().channels.values().cloned().collect()
    }

    /// The book, locked (a poisoned lock is taken over: the book stays consistent).
    fn book(&self) -> MutexGuard<'_, SessionBook> {
        self.inner.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of the channel `key` (created empty on first use).
    pub(super) fn slot(&self, key: &ChannelKey) -> Slot {
        Arc::clone(self.book().channels.entry(key.clone()).or_default())
    }

    /// The cached session of `route`, if its challenge is still fresh.
    pub(super) fn route_session(&self, route: &RouteKey) -> Option<RouteSession> {
        let mut book = self.book();
        let rs = book.routes.get(route)?.clone();
        let fresh = match &rs.challenge.expires {
            None => true,
            Some(text) => parse_rfc3339(text).is_ok_and(|at| {
                at.unix_timestamp() > time::OffsetDateTime::now_utc().unix_timestamp() + EXPIRY_MARGIN_SECONDS
            }),
        };
        if !fresh {
            book.routes.remove(route);
            return None;
        }
        Some(rs)
    }

    /// Stops sending vouchers ahead on the channel `key` (the server no longer knows it).
    pub(super) fn forget_channel(&self, key: &ChannelKey) {
        self.book().routes.retain(|_, rs| &rs.key != key);
    }

    /// After a 402 chose a session: open the channel if there is none, top it up if needed,
    /// then retry with a voucher.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pay_session(
        &self,
        route: RouteKey,
        challenge: ParsedChallenge,
        key: ChannelKey,
        terms: SessionTerms,
        reservation: Reservation,
        retry: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Response> {
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        let mut opened = false;
        if guard.is_none() {
            self.check_escrow(&challenge).map_err(mw)?;
            let deposit = self.deposit(&terms, U256::ZERO).map_err(mw)?;
            let hold = self.inner.budget.reserve_deposit(&terms.asset, deposit).map_err(mw)?;
            let (channel_id, header) = self
                .inner
                .session
                .open_header(&challenge, deposit)
                .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
            let open = retry.try_clone().ok_or_else(|| mw(AutoPayError::BodyNotCloneable))?;
            let sent = self.manage(open, &header, "open", &channel_id, ext, next.clone()).await;
            // The deposit authorization has left the process, accepted or not: it stays
            // counted (a refused open leaves no channel to spend it).
            hold.commit();
            sent?;
            let value = self.inner.budget.units(&terms.asset).show(deposit);
            tracing::info!(channel = %channel_id, %deposit, %value, "pay402 autopay: channel opened");
            *guard = Some(Channel {
                id: channel_id,
                deposit,
                cumulative: U256::ZERO,
                challenge: challenge.clone(),
                url: retry.url().clone(),
                method: retry.method().clone(),
            });
            opened = true;
        }
        let Some(channel) = guard.as_mut() else {
            return Err(mw(AutoPayError::Config("the session channel vanished".into())));
        };
        channel.challenge = challenge.clone();
        channel.url = retry.url().clone();
        channel.method = retry.method().clone();
        let topped_up = self.top_up_if_needed(channel, &terms, &retry, ext, next.clone()).await?;
        let (resp, cumulative) = self.send_voucher(channel, &challenge, reservation, retry, ext, next).await?;
        self.book().routes.insert(route, RouteSession { challenge, key: key.clone() });
        self.session_answer(resp, &mut guard, &key, &terms, terms.price, cumulative, opened, topped_up).await
    }

    /// A request to a route with a fresh cached session challenge: the voucher goes with the
    /// first send; a 402 for the same channel re-signs it once under the fresh challenge. When
    /// the cached terms are unreadable or the channel was closed meanwhile, nothing is sent and
    /// the request is handed back to start over unpaid.
    pub(super) async fn session_ahead(
        &self,
        rs: RouteSession,
        route: RouteKey,
        req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<Ahead> {
        let Some(terms) = SessionTerms::of(&rs.challenge) else {
            self.book().routes.remove(&route);
            return Ok(Ahead::StartOver(req));
        };
        let reservation = self.inner.budget.reserve_voucher(&terms.asset, terms.price).map_err(|e| {
            tracing::warn!(error = %e, "pay402 autopay: not paying");
            mw(e)
        })?;
        let span = tracing::Span::current();
        span.record("protocol", tracing::field::display(Protocol::MppSession));
        span.record("amount", tracing::field::display(terms.price));
        span.record("asset", tracing::field::display(&terms.asset));
        let slot = self.slot(&rs.key);
        let mut guard = slot.lock().await;
        let Some(channel) = guard.as_mut() else {
            // Closed meanwhile: start over.
            drop(guard);
            reservation.release();
            self.book().routes.remove(&route);
            return Ok(Ahead::StartOver(req));
        };
        let backup = req.try_clone();
        let url = req.url().clone();
        let topped_up = self.top_up_if_needed(channel, &terms, &req, ext, next.clone()).await?;
        let (resp, mut cumulative) =
            self.send_voucher(channel, &rs.challenge, reservation, req, ext, next.clone()).await?;
        let mut amount = terms.price;
        let same_url = resp.url().origin() == url.origin() && resp.url().path() == url.path();
        let resp = match (resp.status(), backup) {
            (StatusCode::PAYMENT_REQUIRED, Some(mut retry)) if same_url => {
                let Some(fresh) = session_challenge(resp.headers(), &rs.key) else {
                    self.book().routes.remove(&route);
                    return self
                        .session_answer(resp, &mut guard, &rs.key, &terms, amount, cumulative, false, topped_up)
                        .await
                        .map(Ahead::Answered);
                };
                // The refused voucher stays counted (it was signed and sent); it still covers
                // `price`. A higher fresh price needs the difference on top, and the fresh
                // price itself must fit the per-request cap (finding L8).
                let Some(fresh_terms) = SessionTerms::of(&fresh) else {
                    self.book().routes.remove(&route);
                    return Err(mw(payment_error(Protocol::MppSession, "the fresh session challenge is malformed")));
                };
                self.inner.budget.check_request(&terms.asset, fresh_terms.price).map_err(mw)?;
                channel.challenge = fresh.clone();
                if let Some(extra) = fresh_terms.price.checked_sub(terms.price).filter(|e| !e.is_zero()) {
                    let more = self.inner.budget.reserve_voucher(&terms.asset, extra).map_err(mw)?;
                    let extra_terms = SessionTerms { price: extra, ..fresh_terms };
                    self.top_up_if_needed(channel, &extra_terms, &retry, ext, next.clone()).await?;
                    more.commit();
                    amount += extra;
                    cumulative += extra;
                }
                let header = self
                    .inner
                    .session
                    .voucher_header(&fresh, &channel.id, cumulative)
                    .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
                channel.cumulative = cumulative;
                let name = set_header(&mut retry, Protocol::MppSession, "authorization", &header).map_err(mw)?;
                self.book().routes.insert(route, RouteSession { challenge: fresh, key: rs.key.clone() });
                send(retry, ext, next, Some(&name)).await?.0
            }
            _ => resp,
        };
        self.session_answer(resp, &mut guard, &rs.key, &terms, amount, cumulative, false, topped_up)
            .await
            .map(Ahead::Answered)
    }

    /// Signs and sends the next voucher (cumulative + price). The reservation is committed as
    /// the voucher leaves: a signed voucher is claimable.
    async fn send_voucher(
        &self,
        channel: &mut Channel,
        challenge: &ParsedChallenge,
        reservation: Reservation,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<(Response, U256)> {
        let cumulative = channel.cumulative.saturating_add(reservation.amount());
        if cumulative > channel.deposit {
            return Err(mw(payment_error(Protocol::MppSession, "the voucher would exceed the channel's deposit")));
        }
        let header = self
            .inner
            .session
            .voucher_header(challenge, &channel.id, cumulative)
            .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
        let name = set_header(&mut req, Protocol::MppSession, "authorization", &header).map_err(mw)?;
        channel.cumulative = cumulative;
        reservation.commit();
        Ok((send(req, ext, next, Some(&name)).await?.0, cumulative))
    }

    #[allow(clippy::too_many_arguments)]
    async fn session_answer(
        &self,
        mut resp: Response,
        guard: &mut Option<Channel>,
        key: &ChannelKey,
        terms: &SessionTerms,
        amount: U256,
        cumulative: U256,
        opened: bool,
        topped_up: bool,
    ) -> MwResult<Response> {
        let status = resp.status();
        if status == StatusCode::GONE {
            // The server no longer knows the channel: forget it (a later 402 opens a new one).
            *guard = None;
            self.forget_channel(key);
        }
        if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::GONE {
            let reason = body_reason(resp).await;
            return Err(mw(AutoPayError::PaymentRejected {
                protocol: Protocol::MppSession,
                status: status.as_u16(),
                reason,
            }));
        }
        let (channel_id, deposit) = guard.as_ref().map(|c| (c.id.clone(), c.deposit)).unwrap_or_default();
        let receipt = receipt_of(&resp);
        resp.extensions_mut().insert(AutoPayOutcome {
            protocol: Protocol::MppSession,
            units: self.inner.budget.units(&terms.asset),
            asset: terms.asset.clone(),
            amount,
            authorized: amount,
            detail: PaymentDetail::MppSession { channel_id, cumulative, deposit, opened, topped_up, receipt },
        });
        Ok(resp)
    }

    /// Tops the deposit up when the next voucher would exceed it.
    async fn top_up_if_needed(
        &self,
        channel: &mut Channel,
        terms: &SessionTerms,
        req: &Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<bool> {
        let needed = channel.cumulative.saturating_add(terms.price);
        if needed <= channel.deposit {
            return Ok(false);
        }
        let unspent = channel.deposit.saturating_sub(channel.cumulative);
        self.check_escrow(&channel.challenge).map_err(mw)?;
        let amount = self.deposit(terms, unspent).map_err(mw)?;
        let hold = self.inner.budget.reserve_deposit(&terms.asset, amount).map_err(mw)?;
        let header = self
            .inner
            .session
            .top_up_header(&channel.challenge, &channel.id, amount)
            .map_err(|e| mw(payment_error(Protocol::MppSession, e)))?;
        let top_up = req.try_clone().ok_or_else(|| mw(AutoPayError::BodyNotCloneable))?;
        let sent = self.manage(top_up, &header, "topUp", &channel.id, ext, next).await;
        // The top-up authorization has left the process: counted whatever the answer.
        hold.commit();
        sent?;
        channel.deposit = channel.deposit.saturating_add(amount);
        let value = self.inner.budget.units(&terms.asset).show(amount);
        tracing::info!(channel = %channel.id, %amount, %value, "pay402 autopay: channel topped up");
        Ok(true)
    }

    /// The deposit (or top-up) for a channel with `unspent` vouchable deposit left: the
    /// configured one, else `suggestedDeposit`, else [`DEFAULT_DEPOSIT_REQUESTS`] × price;
    /// at most the maximum deposit and the remaining total budget, at least what the next
    /// voucher needs (when that does not fit, [`Budget::reserve_deposit`] refuses it).
    fn deposit(&self, terms: &SessionTerms, unspent: U256) -> Result<U256, AutoPayError> {
        self.deposit_covering(terms, terms.price.saturating_sub(unspent))
    }

    /// A deposit (or top-up) of at least `needed` (and at least 1), chosen and bounded as in
    /// [`Self::deposit`].
    pub(super) fn deposit_covering(&self, terms: &SessionTerms, needed: U256) -> Result<U256, AutoPayError> {
        let caps = self.inner.budget.caps(&terms.asset)?;
        let needed = needed.max(U256::from(1u8));
        let wanted = caps
            .session_deposit
            .or(terms.suggested_deposit)
            .unwrap_or_else(|| terms.price.saturating_mul(U256::from(DEFAULT_DEPOSIT_REQUESTS)));
        if is_reverted(Fix::F2EscrowAllowlist) {
            return Ok(wanted.max(needed));
        }
        let max = caps.max_deposit.ok_or_else(|| AutoPayError::NoMaxDeposit { asset: terms.asset.clone() })?;
        let mut amount = wanted.min(max);
        if let Some(room) = self.inner.budget.headroom(&terms.asset)? {
            amount = amount.min(room);
        }
        Ok(amount.max(needed))
    }

    /// Sends a management action (open, topUp) and checks the 200 JSON answer.
    async fn manage(
        &self,
        mut req: Request,
        header: &str,
        action: &'static str,
        channel_id: &str,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> MwResult<()> {
        set_header(&mut req, Protocol::MppSession, "authorization", header).map_err(mw)?;
        let resp =
            next.run(req, ext).await.map_err(|e| mw(AutoPayError::Transport { action, reason: e.to_string() }))?;
        check_management(resp, action, channel_id).await.map_err(mw)
    }
}

/// A management answer must be 200 `{"status":"ok","receipt":{…,"settlement":…}}` naming
/// `channel_id`.
pub(super) async fn check_management(
    resp: Response,
    action: &'static str,
    channel_id: &str,
) -> Result<(), AutoPayError> {
    let status = resp.status();
    if status != StatusCode::OK {
        let reason = body_reason(resp).await;
        return Err(AutoPayError::SessionRefused { action, status: status.as_u16(), reason });
    }
    let body = body_prefix(resp).await;
    let refused =
        |reason: &str| AutoPayError::SessionRefused { action, status: status.as_u16(), reason: reason.into() };
    let json: Value = serde_json::from_slice(&body).map_err(|_| refused("the answer is not JSON"))?;
    if json.get("status").and_then(Value::as_str) != Some("ok") {
        return Err(refused("the answer's status is not \"ok\""));
    }
    let named = json
        .pointer("/receipt/settlement")
        .and_then(Value::as_str)
        .and_then(|s| b64url_decode(s).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("channelId").and_then(Value::as_str).map(str::to_ascii_lowercase));
    match named {
        Some(id) if id == channel_id.to_ascii_lowercase() => Ok(()),
        Some(id) => Err(refused(&format!("the server answered for channel {id}, not {channel_id}"))),
        None => Err(refused("the answer names no channel")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::b64url_encode;
    use serde_json::json;

    const CHANNEL: &str = "0x7b78d732ee7330a986edd91299622d8d10be37ef355bb1df0008e52126182d3d";

    fn response(status: u16, body: &str) -> Response {
        let resp = http::Response::builder().status(status).body(body.to_owned()).expect("response");
        Response::from(resp)
    }

    fn management(channel: &str) -> String {
        let settlement = b64url_encode(json!({"channelId": channel, "status": "open"}).to_string());
        json!({"status": "ok", "receipt": {"id": "c", "status": "success", "settlement": settlement}}).to_string()
    }

    #[tokio::test]
    async fn management_answers_are_checked() {
        assert_eq!(check_management(response(200, &management(CHANNEL)), "open", CHANNEL).await, Ok(()));
        let upper = CHANNEL.to_ascii_uppercase().replacen("0X", "0x", 1);
        assert_eq!(check_management(response(200, &management(&upper)), "open", CHANNEL).await, Ok(()));
        let refused = |status: u16, body: &str| {
            let resp = response(status, body);
            async move { check_management(resp, "open", CHANNEL).await.expect_err("refused") }
        };
        let other = format!("0x{}", "11".repeat(32));
        for (status, body, want) in [
            (402, r#"{"detail":"insufficient funds"}"#.to_owned(), "insufficient funds"),
            (500, "oops".to_owned(), "Internal Server Error"),
            (200, "not json".to_owned(), "not JSON"),
            (200, r#"{"status":"error"}"#.to_owned(), "not \"ok\""),
            (200, r#"{"status":"ok","receipt":{}}"#.to_owned(), "names no channel"),
            (200, management(&other), "not 0x7b78"),
        ] {
            let AutoPayError::SessionRefused { action, status: got, reason } = refused(status, &body).await else {
                panic!("{body}")
            };
            assert_eq!((action, got), ("open", status));
            assert!(reason.contains(want), "{reason} should contain {want}");
        }
    }
}
