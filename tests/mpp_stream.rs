//! MPP session streams metered per event over Server-Sent Events (the SSE transport draft), the
//! seller over real HTTP on axum and actix-web, a buyer written here by hand (its own SSE reader,
//! vouchers from `SessionClient`), and the Settlement Agent stand-in of `support::session_sa`
//! (HMAC and bodies checked; an `EmbeddedSa` ledger behind it).
//!
//! * 1 000 events over one channel whose deposit covers 100: vouchers mid-stream, top-ups, never
//!   an event beyond the vouchered amount; the final receipt equals what was delivered; after the
//!   close the SA ledger paid the payee exactly the highest voucher, which covers every event.
//! * A buyer dropping the connection at a random event (seeded proptest): spent = events
//!   delivered × price, nothing left reserved; resuming with `Last-Event-ID` delivers the rest
//!   once, without charging an event twice.
//! * A buyer that never sends the voucher: the stream ends with its final receipt after the
//!   voucher timeout, charged only for what was sent.
//! * Malicious buyers: `Last-Event-ID` alone, beyond the delivered events, under another
//!   challenge, a lower companion voucher — refused; a per-event handler answering without
//!   streaming is charged one event or withheld.

mod support;

use axum::extract::Query;
use futures::StreamExt as _;
use pay402::chain::NetworkRegistry;
use pay402::evm::{PrivateKeySigner, U256, signer_from_hex};
use pay402::mpp::{
    ChannelState, EmbeddedSa, EvmMethod, Mpp, PaidStream, ParsedChallenge, PaySpec, SessionClient, SessionIntent,
    SseEvent, StreamConfig, parse_www_authenticate,
};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::accounts::{PAYEE, PAYEE_KEY, PAYER, PAYER_KEY, USDT0};
use support::session_sa::SaStandIn;
use support::{FRAMEWORKS, Framework, Running};

const MPP_SECRET: &str = "stream-tests-mpp-secret-at-least-32-bytes-long-hmac";
const REALM: &str = "api.example.com";
/// `0.0001` USD₮0 per event (6 decimals).
const PRICE: u128 = 100;
const FUNDS: u64 = 100_000_000;

fn key(k: &str) -> PrivateKeySigner {
    signer_from_hex(k).expect("key")
}

#[derive(Deserialize)]
struct Tokens {
    n: Option<u64>,
    /// Milliseconds between events.
    pace: Option<u64>,
    /// Answer without streaming.
    plain: Option<bool>,
    /// Refuse the request (400) without streaming.
    bad: Option<bool>,
}

/// The handler's events: `t1`, `t2`, … (deterministic, so a resume skips what the buyer has).
fn tokens(stream: PaidStream, q: &Tokens) -> pay402::mpp::EventStream {
    let (n, pace) = (q.n.unwrap_or(200), q.pace.unwrap_or(0));
    let events = futures::stream::iter(1..=n).then(move |i| async move {
        if pace > 0 {
            tokio::time::sleep(Duration::from_millis(pace)).await;
        }
        SseEvent::data(format!("t{i}"))
    });
    stream.sse(events)
}

struct Seller {
    running: Running,
    standin: SaStandIn,
    sa: EmbeddedSa,
    intent: SessionIntent,
}

async fn start(fw: Framework, config: StreamConfig) -> Seller {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(FUNDS)).expect("fund");
    let standin = SaStandIn::start(sa.clone()).await;
    let intent = SessionIntent::new(standin.client(), PAYEE).signer(Arc::new(key(PAYEE_KEY))).stream_config(config);
    let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
    let mpp = Mpp::new(method, REALM, MPP_SECRET)
        .expect("mpp")
        .route("GET /tokens", PaySpec::session("0.0001").per_event())
        .expect("route");
    let running = match fw {
        Framework::Axum => {
            let handler = |stream: PaidStream, Query(q): Query<Tokens>| async move {
                if q.plain == Some(true) {
                    return axum::response::IntoResponse::into_response("plain answer");
                }
                if q.bad == Some(true) {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::BAD_REQUEST,
                        "bad query",
                    ));
                }
                axum::response::IntoResponse::into_response(tokens(stream, &q))
            };
            let app = axum::Router::new()
                .route("/tokens", axum::routing::get(handler))
                .layer(pay402::axum::MppLayer::new(mpp.clone()));
            support::serve_axum(app).await
        }
        Framework::Actix => {
            use actix_web::{Either, HttpResponse, web};
            support::serve_actix(move || {
                actix_web::App::new().wrap(pay402::actix::MppMiddleware::new(mpp.clone())).route(
                    "/tokens",
                    web::get().to(|stream: PaidStream, q: web::Query<Tokens>| async move {
                        if q.plain == Some(true) {
                            return Either::Left(HttpResponse::Ok().body("plain answer"));
                        }
                        if q.bad == Some(true) {
                            return Either::Left(HttpResponse::BadRequest().body("bad query"));
                        }
                        Either::Right(tokens(stream, &q))
                    }),
                )
            })
        }
    };
    Seller { running, standin, sa, intent }
}

impl Seller {
    async fn state(&self, channel: &str) -> ChannelState {
        self.intent.channel_store().get(channel).await.expect("store").expect("channel").value
    }

    /// Waits until nothing is reserved on `channel` (detached commits and releases ran).
    async fn settled_books(&self, channel: &str) -> ChannelState {
        for _ in 0..200 {
            let s = self.state(channel).await;
            if s.reserved == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a reservation stayed open on {channel}: {:?}", self.state(channel).await);
    }
}

/// One parsed SSE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON event data")
    }
}

/// A minimal SSE reader over a response body (LF line ends, as pay402 writes them).
struct Sse {
    body: reqwest::Response,
    buf: String,
}

impl Sse {
    fn new(resp: reqwest::Response) -> Self {
        Self { body: resp, buf: String::new() }
    }

    /// The next event (comments skipped), `None` at the end of the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let mut e = Event::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        e.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                if e.id.is_none() && e.event.is_none() && data.is_empty() {
                    continue;
                }
                e.data = data.join("\n");
                return Some(e);
            }
            match tokio::time::timeout(Duration::from_secs(30), self.body.chunk()).await.expect("stream stalled") {
                Ok(Some(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                _ => return None,
            }
        }
    }
}

/// The buyer: a session client and an HTTP client.
struct Buyer {
    session: SessionClient,
    http: reqwest::Client,
    base: String,
}

impl Buyer {
    fn new(base: &str) -> Self {
        Self {
            session: SessionClient::new(key(PAYER_KEY)).with_registry(NetworkRegistry::x_layer()),
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    async fn challenge(&self, path: &str) -> ParsedChallenge {
        let resp = self.get(path, &[]).await;
        assert_eq!(resp.status(), 402);
        let www = resp.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        let c = parse_www_authenticate(&[&www]).expect("challenge").remove(0);
        assert_eq!(c.request["unitType"], "event", "a per-event route says so");
        // The stream is paid under this challenge while it lives: an hour by default.
        let expires = pay402::mpp::parse_rfc3339(c.expires.as_deref().expect("expires")).expect("RFC 3339");
        let left = expires - time::OffsetDateTime::now_utc();
        assert!(left > time::Duration::minutes(55) && left <= time::Duration::minutes(61), "{left}");
        assert_eq!(c.request["amount"], PRICE.to_string());
        c
    }

    /// Opens a channel with `deposit` under `c` (a management answer, 200 JSON).
    async fn open(&self, path: &str, c: &ParsedChallenge, deposit: u128) -> String {
        let (channel, open) = self.session.open_header(c, U256::from(deposit)).expect("open");
        let resp = self.get(path, &[("authorization", &open)]).await;
        assert_eq!(resp.status(), 200, "open");
        channel
    }

    fn voucher(&self, c: &ParsedChallenge, channel: &str, cumulative: u128) -> String {
        self.session.voucher_header(c, channel, U256::from(cumulative)).expect("voucher")
    }

    /// Starts (or resumes) the stream with a voucher of `cumulative`.
    async fn stream(
        &self,
        path: &str,
        c: &ParsedChallenge,
        channel: &str,
        cumulative: u128,
        last: Option<u64>,
    ) -> reqwest::Response {
        let auth = self.voucher(c, channel, cumulative);
        let last = last.map(|k| k.to_string());
        let mut headers = vec![("authorization", auth.as_str()), ("accept", "text/event-stream")];
        if let Some(k) = &last {
            headers.push(("last-event-id", k.as_str()));
        }
        self.get(path, &headers).await
    }

    /// A companion request (same method and URI, no `Last-Event-ID`): 200 with a receipt.
    async fn companion(&self, path: &str, authorization: &str) -> Value {
        let resp = self.get(path, &[("authorization", authorization)]).await;
        assert_eq!(resp.status(), 200, "companion");
        assert!(resp.headers().contains_key("payment-receipt"), "a companion answer carries a receipt");
        resp.json().await.expect("json")
    }
}

fn data_index(e: &Event) -> u64 {
    e.id.as_deref().expect("data events have ids").parse().expect("numeric id")
}

#[tokio::test]
async fn a_thousand_events_over_a_channel_whose_deposit_covers_a_hundred() {
    for fw in FRAMEWORKS {
        let seller = start(fw, StreamConfig::default()).await;
        let buyer = Buyer::new(&seller.running.base);
        let path = "/tokens?n=1000";
        let c = buyer.challenge(path).await;
        let mut deposit = 100 * PRICE;
        let channel = buyer.open(path, &c, deposit).await;
        // The first voucher pays ten events; each companion voucher ten more.
        let mut signed = 10 * PRICE;
        let resp = buyer.stream(path, &c, &channel, signed, None).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream", "{fw:?}");
        assert!(resp.headers().contains_key("payment-receipt"), "{fw:?}: the initial response carries a receipt");
        let mut sse = Sse::new(resp);
        let (mut received, mut pauses, mut top_ups) = (0u64, 0, 0);
        let final_receipt = loop {
            let e = sse.next().await.expect("the stream ends with a receipt, not a bare close");
            match e.event.as_deref() {
                None => {
                    received += 1;
                    assert_eq!(data_index(&e), received, "{fw:?}: in order, once");
                    assert_eq!(e.data, format!("t{received}"));
                    // Never an event beyond what the buyer's vouchers pay for.
                    assert!(u128::from(received) * PRICE <= signed, "{fw:?}: event {received} beyond {signed}");
                }
                Some("402-need-voucher") => {
                    pauses += 1;
                    let need = e.json();
                    assert_eq!(need["challengeId"], c.id.as_str(), "{fw:?}");
                    assert_eq!(need["channelId"], channel.as_str(), "{fw:?}");
                    let required: u128 = need["requiredCumulative"].as_str().unwrap().parse().unwrap();
                    assert_eq!(required, u128::from(received + 1) * PRICE, "{fw:?}: exactly the next event");
                    assert_eq!(need["acceptedCumulative"], signed.to_string(), "{fw:?}");
                    let next = (signed + 10 * PRICE).min(1000 * PRICE);
                    if next > deposit {
                        let top_up = 300 * PRICE;
                        let header = buyer.session.top_up_header(&c, &channel, U256::from(top_up)).expect("top up");
                        let resp = buyer.get(path, &[("authorization", &header)]).await;
                        assert_eq!(resp.status(), 200, "{fw:?}: top-up");
                        deposit += top_up;
                        top_ups += 1;
                    }
                    signed = next;
                    let answer = buyer.companion(path, &buyer.voucher(&c, &channel, signed)).await;
                    assert_eq!(answer["acceptedCumulative"], signed.to_string(), "{fw:?}");
                }
                Some("payment-receipt") => break e.json(),
                other => panic!("{fw:?}: unexpected event {other:?}: {e:?}"),
            }
        };
        assert!(sse.next().await.is_none(), "{fw:?}: the final receipt is the last event");
        assert_eq!(received, 1000, "{fw:?}");
        assert!(pauses >= 99 && top_ups >= 1, "{fw:?}: {pauses} pauses, {top_ups} top-ups");
        assert_eq!(final_receipt["units"], 1000, "{fw:?}");
        assert_eq!(final_receipt["spent"], (1000 * PRICE).to_string(), "{fw:?}");
        assert_eq!(final_receipt["challengeId"], c.id.as_str(), "{fw:?}");
        assert_eq!(final_receipt["acceptedCumulative"], (1000 * PRICE).to_string(), "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units, books.highest_voucher_amount), (1000 * PRICE, 1000, 1000 * PRICE));
        assert_eq!(books.streams.delivered(&c.id), Some(1000), "{fw:?}");

        // The SA's ledger: the close pays the payee the highest voucher, and it covers every event.
        let payee_before = seller.sa.balance(USDT0, PAYEE);
        seller.intent.close_channel(&channel).await.expect("close");
        let paid = seller.sa.balance(USDT0, PAYEE) - payee_before;
        assert_eq!(paid, U256::from(1000 * PRICE), "{fw:?}: settled = the vouchers, no more");
        assert_eq!(seller.sa.balance(USDT0, PAYER), U256::from(u128::from(FUNDS) - 1000 * PRICE), "{fw:?}");
        let calls = seller.standin.calls();
        assert_eq!(calls.iter().filter(|c| c.ends_with("/session/topUp")).count(), top_ups, "{fw:?}");
    }
}

/// One disconnect-and-resume run: the buyer drops the connection after `cut` events of `n`.
async fn disconnect_and_resume(fw: Framework, seller: &Seller, n: u64, cut: u64) {
    let buyer = Buyer::new(&seller.running.base);
    let path = format!("/tokens?n={n}&pace=1");
    let c = buyer.challenge(&path).await;
    let channel = buyer.open(&path, &c, u128::from(n) * PRICE).await;
    let all = u128::from(n) * PRICE;
    let mut sse = Sse::new(buyer.stream(&path, &c, &channel, all, None).await);
    for i in 1..=cut {
        let e = sse.next().await.expect("event");
        assert_eq!((e.event.as_deref(), data_index(&e)), (None, i), "{fw:?}");
    }
    drop(sse);
    // The server notices, commits what it handed over and releases the rest.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let books = seller.settled_books(&channel).await;
    let delivered = books.streams.delivered(&c.id).expect("stream on the channel");
    assert!(delivered >= cut && delivered <= n, "{fw:?}: delivered {delivered}, the buyer read {cut}");
    assert_eq!(books.spent, u128::from(delivered) * PRICE, "{fw:?}: spent = delivered × price");
    assert_eq!(books.units, delivered, "{fw:?}");

    // Resume from what the buyer has: the rest arrives once; nothing is charged twice.
    let resp = buyer.stream(&path, &c, &channel, all, Some(cut)).await;
    assert_eq!(resp.status(), 200, "{fw:?}: resume");
    let mut sse = Sse::new(resp);
    let mut next = cut + 1;
    let receipt = loop {
        let e = sse.next().await.expect("event");
        match e.event.as_deref() {
            None => {
                assert_eq!(data_index(&e), next, "{fw:?}");
                assert_eq!(e.data, format!("t{next}"));
                next += 1;
            }
            Some("payment-receipt") => break e.json(),
            other => panic!("{fw:?}: unexpected {other:?}"),
        }
    };
    assert_eq!(next, n + 1, "{fw:?}: every event after the cut, once");
    assert_eq!(receipt["units"], n, "{fw:?}");
    assert_eq!(receipt["spent"], all.to_string(), "{fw:?}");
    let books = seller.settled_books(&channel).await;
    assert_eq!((books.spent, books.units, books.reserved), (all, n, 0), "{fw:?}: charged once per event");
}

#[tokio::test]
async fn a_disconnect_at_a_random_event_charges_what_was_delivered_and_resumes_without_double_charge() {
    // Seeded: the same cuts on every run.
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig { cases: 6, ..ProptestConfig::default() },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[20; 32]),
    );
    let strategy = (10u64..120, 0u64..1000);
    for fw in FRAMEWORKS {
        let seller = start(fw, StreamConfig::default()).await;
        for _ in 0..6 {
            let (n, cut_seed) = proptest::strategy::ValueTree::current(
                &proptest::strategy::Strategy::new_tree(&strategy, &mut runner).expect("case"),
            );
            let cut = 1 + cut_seed % (n - 1);
            disconnect_and_resume(fw, &seller, n, cut).await;
        }
    }
}

#[tokio::test]
async fn a_buyer_that_sends_no_voucher_gets_a_final_receipt_and_pays_only_what_it_received() {
    for fw in FRAMEWORKS {
        let config = StreamConfig::default().voucher_timeout(Duration::from_millis(300));
        let seller = start(fw, config).await;
        let buyer = Buyer::new(&seller.running.base);
        let path = "/tokens?n=20";
        let c = buyer.challenge(path).await;
        let channel = buyer.open(path, &c, 100 * PRICE).await;
        let started = std::time::Instant::now();
        let mut sse = Sse::new(buyer.stream(path, &c, &channel, 5 * PRICE, None).await);
        let mut seen = Vec::new();
        while let Some(e) = sse.next().await {
            seen.push(e);
        }
        let names: Vec<Option<&str>> = seen.iter().map(|e| e.event.as_deref()).collect();
        let mut want = vec![None; 5];
        want.extend([Some("402-need-voucher"), Some("payment-receipt")]);
        assert_eq!(names, want, "{fw:?}");
        assert!(started.elapsed() >= Duration::from_millis(300), "{fw:?}: waited for the voucher");
        let receipt = seen.last().unwrap().json();
        assert_eq!((receipt["units"].as_u64(), receipt["spent"].as_str()), (Some(5), Some("500")), "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units, books.reserved), (5 * PRICE, 5, 0), "{fw:?}");
    }
}

#[tokio::test]
async fn malicious_buyers_cannot_resume_or_feed_a_stream_they_do_not_pay_for() {
    for fw in FRAMEWORKS {
        let seller = start(fw, StreamConfig::default().voucher_timeout(Duration::from_secs(5))).await;
        let buyer = Buyer::new(&seller.running.base);
        let path = "/tokens?n=10";
        let c = buyer.challenge(path).await;
        let channel = buyer.open(path, &c, 100 * PRICE).await;
        let mut sse = Sse::new(buyer.stream(path, &c, &channel, 10 * PRICE, None).await);
        while sse.next().await.is_some() {}
        let spent = seller.settled_books(&channel).await.spent;
        assert_eq!(spent, 10 * PRICE, "{fw:?}");

        // `Last-Event-ID` alone is never a resume: a fresh 402.
        let resp = buyer.get(path, &[("last-event-id", "3")]).await;
        assert_eq!(resp.status(), 402, "{fw:?}");
        // Beyond what the stream delivered: refused.
        let resp = buyer.stream(path, &c, &channel, 10 * PRICE, Some(11)).await;
        assert_eq!(resp.status(), 400, "{fw:?}: Last-Event-ID beyond the delivered events");
        // Not an event id.
        let resp = buyer.stream(path, &c, &channel, 10 * PRICE, None).await;
        assert_eq!(resp.status(), 200, "{fw:?}: a repeated voucher without Last-Event-ID is a companion");
        let resp = buyer
            .get(path, &[("authorization", &buyer.voucher(&c, &channel, 10 * PRICE)), ("last-event-id", "x1")])
            .await;
        assert_eq!(resp.status(), 400, "{fw:?}: a malformed Last-Event-ID");
        // Under a challenge that never streamed: nothing to resume.
        let other = buyer.challenge(path).await;
        let resp = buyer.stream(path, &other, &channel, 10 * PRICE, Some(2)).await;
        assert_eq!(resp.status(), 402, "{fw:?}: no stream under that challenge");
        // A companion voucher below the channel's highest is refused.
        let resp = buyer.get(path, &[("authorization", &buyer.voucher(&c, &channel, 5 * PRICE))]).await;
        assert_eq!(resp.status(), 402, "{fw:?}: a lower voucher");
        // A resume re-sends what was charged, free: nothing more is spent.
        let mut sse = Sse::new(buyer.stream(path, &c, &channel, 10 * PRICE, Some(4)).await);
        let mut ids = Vec::new();
        while let Some(e) = sse.next().await {
            if e.event.is_none() {
                ids.push(data_index(&e));
            }
        }
        assert_eq!(ids, (5..=10).collect::<Vec<_>>(), "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units), (10 * PRICE, 10), "{fw:?}: the re-sent events are free");

        // A companion may be a HEAD (the draft's payment-only update): 200 with a receipt.
        let raised = buyer.voucher(&c, &channel, 12 * PRICE);
        let resp = buyer
            .http
            .head(format!("{}{path}", buyer.base))
            .header("authorization", raised)
            .send()
            .await
            .expect("head");
        assert_eq!(resp.status(), 200, "{fw:?}: HEAD companion");
        assert!(resp.headers().contains_key("payment-receipt"), "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.highest_voucher_amount, books.spent), (12 * PRICE, 10 * PRICE), "{fw:?}");
    }
}

#[tokio::test]
async fn a_per_event_handler_answering_without_streaming_is_charged_one_event_or_withheld() {
    for fw in FRAMEWORKS {
        let seller = start(fw, StreamConfig::default()).await;
        let buyer = Buyer::new(&seller.running.base);
        let path = "/tokens?plain=true";
        let c = buyer.challenge(path).await;
        let channel = buyer.open(path, &c, 100 * PRICE).await;
        let resp = buyer.stream(path, &c, &channel, PRICE, None).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        assert_eq!(resp.text().await.unwrap(), "plain answer");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units), (PRICE, 1), "{fw:?}: one event");
        // No voucher credit left: the answer is withheld.
        let c2 = buyer.challenge(path).await;
        let resp = buyer.stream(path, &c2, &channel, PRICE, None).await;
        assert_eq!(resp.status(), 402, "{fw:?}: not covered");
        assert_ne!(resp.text().await.unwrap(), "plain answer", "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units), (PRICE, 1), "{fw:?}");

        // A request the handler refuses (400) charges nothing and starts no stream: the same
        // challenge then starts one.
        let bad = "/tokens?n=3&bad=true";
        let c3 = buyer.challenge(bad).await;
        let auth = buyer.voucher(&c3, &channel, 4 * PRICE);
        let resp = buyer.get(bad, &[("authorization", &auth)]).await;
        assert_eq!(resp.status(), 400, "{fw:?}");
        assert!(seller.state(&channel).await.streams.get(&c3.id).is_none(), "{fw:?}: no stream left behind");
        let good = "/tokens?n=3";
        let mut sse = Sse::new(buyer.stream(good, &c3, &channel, 4 * PRICE, None).await);
        let mut ids = Vec::new();
        while let Some(e) = sse.next().await {
            if e.event.is_none() {
                ids.push(data_index(&e));
            }
        }
        assert_eq!(ids, vec![1, 2, 3], "{fw:?}");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units), (4 * PRICE, 4), "{fw:?}");
    }
}

#[tokio::test]
async fn a_stale_connection_cannot_take_the_credit_of_the_stream_that_resumed_it() {
    for fw in FRAMEWORKS {
        let seller = start(fw, StreamConfig::default().voucher_timeout(Duration::from_secs(10))).await;
        let buyer = Buyer::new(&seller.running.base);
        let path = "/tokens?n=10";
        let c = buyer.challenge(path).await;
        let channel = buyer.open(path, &c, 100 * PRICE).await;
        // The first connection pays three events and pauses; the buyer keeps it open (a dropped
        // connection the server has not noticed yet looks the same to the server).
        let mut old = Sse::new(buyer.stream(path, &c, &channel, 3 * PRICE, None).await);
        for i in 1..=3 {
            assert_eq!(data_index(&old.next().await.expect("event")), i, "{fw:?}");
        }
        assert_eq!(old.next().await.expect("pause").event.as_deref(), Some("402-need-voucher"), "{fw:?}");
        // A new connection resumes after event 3, then the buyer pays the rest.
        let resp = buyer.stream(path, &c, &channel, 3 * PRICE, Some(3)).await;
        assert_eq!(resp.status(), 200, "{fw:?}");
        let mut new = Sse::new(resp);
        assert_eq!(new.next().await.expect("pause").event.as_deref(), Some("402-need-voucher"), "{fw:?}");
        buyer.companion(path, &buyer.voucher(&c, &channel, 10 * PRICE)).await;
        let mut ids = Vec::new();
        let receipt = loop {
            let e = new.next().await.expect("event");
            match e.event.as_deref() {
                None => ids.push(data_index(&e)),
                Some("payment-receipt") => break e.json(),
                other => panic!("{fw:?}: unexpected {other:?}"),
            }
        };
        assert_eq!(ids, (4..=10).collect::<Vec<_>>(), "{fw:?}: the resumed connection got every paid event");
        assert_eq!(receipt["units"], 10, "{fw:?}");
        // The stale connection never sent another event: it ends with its receipt.
        let mut rest = Vec::new();
        while let Some(e) = old.next().await {
            rest.push(e.event);
        }
        assert_eq!(rest, vec![Some("payment-receipt".to_owned())], "{fw:?}: superseded, no event");
        let books = seller.settled_books(&channel).await;
        assert_eq!((books.spent, books.units, books.reserved), (10 * PRICE, 10, 0), "{fw:?}");
    }
}
