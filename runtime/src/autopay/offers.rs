//! Reading a 402 into ranked offers: every x402 and MPP challenge it carries, the payable ones
//! in preference order; choosing the first one the caps allow and that can be signed; and
//! reading the reason of a refusal.

use super::budget::{AssetId, Reservation};
use super::{AutoPayError, AutoPayMiddleware, MAX_REFUSAL_BODY_BYTES, Protocol, payment_error};
use crate::evm::U256;
use crate::mpp::{
    CHARGE_INTENT, ChargeRequest, EVM_METHOD, PAYMENT_RECEIPT_HEADER, ParsedChallenge, Receipt, SESSION_INTENT,
    SessionClient, parse_www_authenticate,
};
use crate::reverts::{Fix, is_reverted};
use crate::x402::{AnyPaymentRequired, PaymentRequired, PaymentRequiredV1, PaymentRequirements, SettleResponse};
use crate::x402::{MAX_HEADER_BYTES, PAYMENT_REQUIRED_HEADER, decode_payment_required_header};
use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;
use reqwest::Response;
use serde_json::Value;

/// What an offer pays with.
pub(super) enum OfferKind {
    /// One x402 option (`required` holds it alone, as the client signs it); `header`: the signed
    /// payment, once prepared.
    X402 {
        required: AnyPaymentRequired,
        requirements: Box<PaymentRequirements>,
        header: Option<(&'static str, String)>,
    },
    /// An MPP charge challenge; `header`: the signed credential, once prepared.
    Charge { challenge: Box<ParsedChallenge>, header: Option<String> },
    /// An MPP session challenge, for the channel `key`.
    Session { challenge: Box<ParsedChallenge>, key: ChannelKey, suggested_deposit: Option<U256> },
}

/// A payable challenge: `amount` atomic units of `asset` over `protocol`.
pub(super) struct Offer {
    pub(super) protocol: Protocol,
    pub(super) asset: AssetId,
    pub(super) amount: U256,
    pub(super) kind: OfferKind,
}

/// The challenges of a 402.
pub(super) struct Offers {
    /// The payable ones, most preferred first.
    pub(super) payable: Vec<Offer>,
    /// Every challenge seen, described.
    pub(super) offered: Vec<String>,
}

/// What identifies a channel: the terms a session challenge names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ChannelKey {
    realm: String,
    recipient: String,
    currency: String,
    chain_id: u64,
    escrow: String,
}

/// What a session voucher needs from its challenge.
pub(super) struct SessionTerms {
    pub(super) asset: AssetId,
    pub(super) price: U256,
    pub(super) suggested_deposit: Option<U256>,
}

impl SessionTerms {
    /// The terms of a session challenge (None when its request is malformed).
    pub(super) fn of(c: &ParsedChallenge) -> Option<Self> {
        let request = ChargeRequest::from_request(&c.request).ok()?;
        Some(Self {
            asset: AssetId::new(request.network(), &request.currency_text),
            price: request.amount,
            suggested_deposit: suggested_deposit(c),
        })
    }
}

/// The server's `suggestedDeposit` (a hint, never followed above the maximum deposit).
fn suggested_deposit(c: &ParsedChallenge) -> Option<U256> {
    c.request.get("suggestedDeposit").and_then(Value::as_str).and_then(|s| crate::evm::parse_uint256(s).ok())
}

/// The channel a session challenge names (addresses compared case-insensitively).
pub(super) fn key_of(c: &ParsedChallenge) -> ChannelKey {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let details = c.request.get("methodDetails");
    ChannelKey {
        realm: c.realm.clone(),
        recipient: text(c.request.get("recipient")),
        currency: text(c.request.get("currency")),
        chain_id: ChargeRequest::from_request(&c.request).map_or(0, |r| r.chain_id),
        escrow: text(details.and_then(|d| d.get("escrowContract"))),
    }
}

impl AutoPayMiddleware {
    /// Whether `p` is in the preference list.
    pub(super) fn enabled(&self, p: Protocol) -> bool {
        self.inner.preference.contains(&p)
    }

    /// `p`'s place in the preference list (unlisted protocols last).
    pub(super) fn rank(&self, p: Protocol) -> usize {
        self.inner.preference.iter().position(|q| *q == p).unwrap_or(usize::MAX)
    }

    /// Every challenge of a 402, the payable ones ranked by preference (stable).
    pub(super) fn offers(&self, headers: &HeaderMap) -> Offers {
        let mut payable = Vec::new();
        let mut offered = Vec::new();
        if let Some(required) = headers.get(PAYMENT_REQUIRED_HEADER).and_then(|v| v.to_str().ok()) {
            match decode_payment_required_header(required) {
                Ok(required) => self.x402_offers(&required, &mut payable, &mut offered),
                Err(e) => offered.push(format!("x402 (unreadable PAYMENT-REQUIRED: {e})")),
            }
        }
        let www: Vec<&str> = headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
        if !www.is_empty() {
            match parse_www_authenticate(&www) {
                Ok(challenges) => {
                    for c in challenges {
                        offered.push(format!("mpp {}/{}", c.method, c.intent));
                        if let Some(offer) = self.mpp_offer(c) {
                            payable.push(offer);
                        }
                    }
                }
                Err(e) => offered.push(format!("mpp (unreadable WWW-Authenticate: {e})")),
            }
        }
        payable.sort_by_key(|o| self.rank(o.protocol));
        Offers { payable, offered }
    }

    pub(super) fn x402_offers(
        &self,
        required: &AnyPaymentRequired,
        payable: &mut Vec<Offer>,
        offered: &mut Vec<String>,
    ) {
        let options: Vec<(PaymentRequirements, AnyPaymentRequired)> = match required {
            AnyPaymentRequired::V2(c) => c
                .accepts
                .iter()
                .map(|r| (r.clone(), AnyPaymentRequired::V2(PaymentRequired { accepts: vec![r.clone()], ..c.clone() })))
                .collect(),
            AnyPaymentRequired::V1(c) => c
                .accepts
                .iter()
                .map(|r| {
                    let single = PaymentRequiredV1 { accepts: vec![r.clone()], ..c.clone() };
                    (PaymentRequirements::from(r.clone()), AnyPaymentRequired::V1(single))
                })
                .collect(),
        };
        for (requirements, single) in options {
            offered.push(format!("x402 {}@{}", requirements.scheme, requirements.network));
            if !self.enabled(Protocol::X402) || !self.inner.x402.supports(&requirements.scheme, &requirements.network) {
                continue;
            }
            let Some(amount) = requirements.amount_atomic() else { continue };
            payable.push(Offer {
                protocol: Protocol::X402,
                asset: AssetId::new(requirements.network.clone(), &requirements.asset),
                amount,
                kind: OfferKind::X402 { required: single, requirements: Box::new(requirements), header: None },
            });
        }
    }

    pub(super) fn mpp_offer(&self, c: ParsedChallenge) -> Option<Offer> {
        if c.method != EVM_METHOD {
            return None;
        }
        let protocol = match c.intent.as_str() {
            CHARGE_INTENT => Protocol::MppCharge,
            SESSION_INTENT => Protocol::MppSession,
            _ => return None,
        };
        if !self.enabled(protocol) {
            return None;
        }
        let request = ChargeRequest::from_request(&c.request).ok()?;
        let asset = AssetId::new(request.network(), &request.currency_text);
        let kind = match protocol {
            Protocol::MppSession => {
                OfferKind::Session { key: key_of(&c), suggested_deposit: suggested_deposit(&c), challenge: Box::new(c) }
            }
            _ => OfferKind::Charge { challenge: Box::new(c), header: None },
        };
        Some(Offer { protocol, asset, amount: request.amount, kind })
    }

    /// The first offer, in preference order, that the caps allow and that can be signed
    /// (x402, charge) or opened (session: a token the registry knows); otherwise the most
    /// preferred offer's refusal. Nothing is sent here.
    pub(super) async fn choose(&self, offers: Offers) -> Result<(Offer, Reservation), AutoPayError> {
        let mut first_refusal = None;
        for mut offer in offers.payable {
            let reserved = match offer.kind {
                // A voucher is covered by the channel's deposit, which is counted when signed.
                OfferKind::Session { .. } => self.inner.budget.reserve_voucher(&offer.asset, offer.amount),
                _ => self.inner.budget.reserve(&offer.asset, offer.amount),
            };
            let prepared = match reserved {
                Ok(reservation) => self.prepare(&mut offer).await.map(|()| reservation),
                Err(e) => Err(e),
            };
            match prepared {
                Ok(reservation) => return Ok((offer, reservation)),
                Err(e) => {
                    tracing::debug!(protocol = %offer.protocol, error = %e, "pay402 autopay: offer refused");
                    first_refusal.get_or_insert(e);
                }
            }
        }
        Err(first_refusal.unwrap_or(AutoPayError::NoAcceptableChallenge { offered: offers.offered }))
    }

    pub(super) async fn prepare(&self, offer: &mut Offer) -> Result<(), AutoPayError> {
        match &mut offer.kind {
            OfferKind::X402 { required, header, .. } => {
                let signed = self.inner.x402.create_payment_header(required).await;
                *header = Some(signed.map_err(|e| payment_error(Protocol::X402, e))?);
            }
            OfferKind::Charge { challenge, header } => {
                let credential =
                    self.inner.charge.credential_for(challenge).map_err(|e| payment_error(Protocol::MppCharge, e))?;
                *header = Some(credential.to_authorization_header());
            }
            OfferKind::Session { challenge, .. } => {
                self.check_escrow(challenge)?;
                if !is_reverted(Fix::F2EscrowAllowlist) && self.inner.budget.caps(&offer.asset)?.max_deposit.is_none() {
                    return Err(AutoPayError::NoMaxDeposit { asset: offer.asset.clone() });
                }
                let request = ChargeRequest::from_request(&challenge.request)
                    .map_err(|e| payment_error(Protocol::MppSession, e))?;
                if request.token_info(&self.inner.registry).is_none() {
                    return Err(payment_error(
                        Protocol::MppSession,
                        format!("unsupported token {} on chain {}", request.currency_text, request.chain_id),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a session challenge whose deposits would go to an escrow this client does not
    /// trust (finding F2): nothing is signed for it.
    pub(super) fn check_escrow(&self, challenge: &ParsedChallenge) -> Result<(), AutoPayError> {
        let (chain_id, escrow) =
            SessionClient::escrow_of(challenge).map_err(|e| payment_error(Protocol::MppSession, e))?;
        if !is_reverted(Fix::F2EscrowAllowlist) && !self.inner.escrows.contains(&(chain_id, escrow)) {
            tracing::warn!(chain_id, %escrow, "pay402 autopay: session escrow not trusted");
            return Err(AutoPayError::UntrustedEscrow { chain_id, escrow: crate::evm::checksum(&escrow) });
        }
        Ok(())
    }
}

/// A session challenge for the channel `key` among a 402's challenges.
pub(super) fn session_challenge(headers: &HeaderMap, key: &ChannelKey) -> Option<ParsedChallenge> {
    let www: Vec<&str> = headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
    parse_www_authenticate(&www)
        .ok()?
        .into_iter()
        .find(|c| c.method == EVM_METHOD && c.intent == SESSION_INTENT && &key_of(c) == key)
}

/// A JSON body of known length within [`MAX_HEADER_BYTES`].
pub(super) fn small_json_body(resp: &Response) -> bool {
    let json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    json && resp.content_length().is_some_and(|n| usize::try_from(n).is_ok_and(|n| n <= MAX_HEADER_BYTES))
}

/// An x402 challenge carried in a 402 body (`x402Version` 1 or 2).
pub(super) fn x402_body(body: &[u8]) -> Option<AnyPaymentRequired> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match value.get("x402Version").and_then(Value::as_u64)? {
        1 => serde_json::from_value(value).ok().map(AnyPaymentRequired::V1),
        2 => serde_json::from_value(value).ok().map(AnyPaymentRequired::V2),
        _ => None,
    }
}

pub(super) fn receipt_of(resp: &Response) -> Option<Receipt> {
    let value = resp.headers().get(PAYMENT_RECEIPT_HEADER)?.to_str().ok()?;
    Receipt::from_payment_receipt(value).ok()
}

pub(super) fn settlement_reason(s: &SettleResponse) -> String {
    s.error_reason.clone().or_else(|| s.error_message.clone()).unwrap_or_else(|| "settlement failed".to_owned())
}

/// Up to [`MAX_REFUSAL_BODY_BYTES`] of the body.
pub(super) async fn body_prefix(mut resp: Response) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < MAX_REFUSAL_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_REFUSAL_BODY_BYTES);
    buf
}

/// The reason of a refusal: a problem `detail`/`type`, an `error`, or the status text.
pub(super) async fn body_reason(resp: Response) -> String {
    let status = resp.status();
    let body = body_prefix(resp).await;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(Value::as_str).map(str::to_owned);
    field("detail")
        .or_else(|| field("error"))
        .or_else(|| field("errorReason"))
        .or_else(|| field("type"))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned())
}

/// The reason of an x402 refusal: the new challenge's `error`, else the body's.
pub(super) async fn x402_refusal(resp: Response) -> String {
    let from_header = resp
        .headers()
        .get(PAYMENT_REQUIRED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| decode_payment_required_header(v).ok())
        .and_then(|r| match r {
            AnyPaymentRequired::V2(c) => c.error,
            AnyPaymentRequired::V1(c) => c.error,
        });
    match from_header {
        Some(reason) => reason,
        None => body_reason(resp).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: u16, body: &str) -> Response {
        let resp = http::Response::builder().status(status).body(body.to_owned()).expect("response");
        Response::from(resp)
    }

    #[tokio::test]
    async fn refusal_reasons_are_bounded_and_readable() {
        assert_eq!(body_reason(response(402, r#"{"type":"t","detail":"d"}"#)).await, "d");
        assert_eq!(body_reason(response(402, r#"{"errorReason":"insufficient_funds"}"#)).await, "insufficient_funds");
        assert_eq!(body_reason(response(410, "gone")).await, "Gone");
        let huge = "x".repeat(10 * MAX_REFUSAL_BODY_BYTES);
        assert_eq!(body_prefix(response(402, &huge)).await.len(), MAX_REFUSAL_BODY_BYTES);
    }

    #[test]
    fn channel_keys_ignore_address_case_but_not_realm() {
        let challenge = |recipient: &str, realm: &str| {
            let request = json!({
                "amount": "1000",
                "currency": "0x779ded0c9e1022225f8e0630b35a9b54be713736",
                "recipient": recipient,
                "methodDetails": {"chainId": 196, "escrowContract": "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b"},
            });
            let Value::Object(request) = request else { unreachable!() };
            let c = crate::mpp::Challenge::new("s", realm, "evm", "session", request, None, None, None, None);
            parse_www_authenticate(&[&c.to_www_authenticate().expect("header")]).expect("parse").remove(0)
        };
        let a = key_of(&challenge("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "r"));
        assert_eq!(a, key_of(&challenge("0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "r")));
        assert_ne!(a, key_of(&challenge("0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "other")));
        assert_eq!((a.chain_id, a.escrow.as_str()), (196, "0x5e550002e64faf79b41d89fe8439eeb1be66ce3b"));
    }
}
