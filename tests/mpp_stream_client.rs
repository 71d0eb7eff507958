//! The buyer side of metered SSE streams ([`AutoPayMiddleware::stream`]) against a hand-written
//! seller on 127.0.0.1 that speaks the wire of issue 20 by hand: a 402 with an `evm`/`session`
//! challenge (`unitType: "event"`), the `open`/`topUp` management answers, then an event stream
//! that meters every event, pauses with `402-need-voucher` until a companion request brings the
//! voucher, sends `payment-receipt` before a clean close, and resumes after `Last-Event-ID`.
//! The seller checks every credential it receives (challenge id, voucher amount, signature) and
//! records what it saw, so the tests see what the buyer signed and sent.

mod support;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use pay402::autopay::{
    Amount, AssetId, AutoPay, AutoPayError, AutoPayMiddleware, StreamError, StreamItem, StreamOptions,
};
use pay402::chain::NetworkRegistry;
use pay402::evm::{ChannelDomain, DEFAULT_ESCROW_CONTRACT, U256, channel_id_from_hex, parse_address};
use pay402::evm::{recover_voucher_signer, signer_from_hex};
use pay402::mpp::{Challenge, Credential, StreamClientError, b64url_encode, default_expires};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::accounts::{PAYEE, PAYER, PAYER_KEY, USDT0};

const SECRET: &str = "stream-client-test-secret-at-least-32-bytes-long";
const REALM: &str = "stream.test";
/// The price of one event (atomic units of USD₮0).
const PRICE: u128 = 1000;
const FOREIGN_CHANNEL: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// What the seller does.
#[derive(Clone, Debug, Default)]
struct Script {
    /// Data events in the stream.
    events: u64,
    /// Before the first real need-voucher, send need-vouchers naming another challenge and
    /// another channel.
    foreign_needs: bool,
    /// The first need-voucher asks this much above what the buyer has vouched (instead of one
    /// event's price).
    greedy_step: Option<u128>,
    /// The first connection ends (without a receipt) after this event.
    drop_after: Option<u64>,
    /// On a resume, the event named by `Last-Event-ID` is sent again (the buyer must skip it).
    resend_on_resume: bool,
    /// Resumes are answered with this status instead.
    resume_status: Option<u16>,
}

/// The channel as the seller knows it.
#[derive(Clone, Debug, Default)]
struct ChannelView {
    id: String,
    deposit: u128,
}

#[derive(Default)]
struct Seen {
    /// `unpaid`, `open:<deposit>`, `topUp:<amount>`, `stream:<cumulative>`,
    /// `companion:<cumulative>`, `resume:<last-event-id>:<cumulative>`.
    log: Vec<String>,
    /// What the seller found wrong in the buyer's requests.
    violations: Vec<String>,
}

struct Fake {
    script: Script,
    issued: Mutex<HashSet<String>>,
    channel: Mutex<ChannelView>,
    /// The channel's highest voucher.
    highest: tokio::sync::watch::Sender<u128>,
    /// The stream's challenge, once started.
    stream: Mutex<Option<String>>,
    /// What the stream has spent and delivered.
    spent: Mutex<(u128, u64)>,
    /// What the last real need-voucher asked.
    asked: Mutex<Option<u128>>,
    seen: Mutex<Seen>,
}

type Shared = Arc<Fake>;

impl Fake {
    fn log(&self, entry: String) {
        self.seen.lock().expect("seen").log.push(entry);
    }

    fn violation(&self, what: String) {
        self.seen.lock().expect("seen").violations.push(what);
    }

    fn entries(&self) -> Vec<String> {
        self.seen.lock().expect("seen").log.clone()
    }

    fn violations(&self) -> Vec<String> {
        self.seen.lock().expect("seen").violations.clone()
    }
}

fn request_object() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "amount": PRICE.to_string(),
        "currency": USDT0,
        "recipient": PAYEE,
        "unitType": "event",
        "methodDetails": {"chainId": 196},
    }) else {
        unreachable!()
    };
    map
}

fn challenge_402(fake: &Fake) -> Response {
    let expires = default_expires(time::OffsetDateTime::now_utc());
    let challenge = Challenge::new(SECRET, REALM, "evm", "session", request_object(), Some(expires), None, None, None);
    fake.issued.lock().expect("issued").insert(challenge.id.clone());
    let www = challenge.to_www_authenticate().expect("header");
    (StatusCode::PAYMENT_REQUIRED, [("www-authenticate", www)], axum::Json(json!({"status": 402}))).into_response()
}

fn management(channel_id: &str) -> Response {
    let settlement = b64url_encode(json!({"channelId": channel_id, "status": "open"}).to_string());
    axum::Json(json!({"status": "ok", "receipt": {"id": "r", "status": "success", "settlement": settlement}}))
        .into_response()
}

fn amount_of(payload: &serde_json::Map<String, Value>, key: &str) -> u128 {
    payload.get(key).and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(u128::MAX)
}

/// Checks a voucher payload: the channel, a signature by the payer under the escrow's domain.
fn check_voucher(fake: &Fake, payload: &serde_json::Map<String, Value>) -> u128 {
    let cumulative = amount_of(payload, "cumulativeAmount");
    let channel = payload.get("channelId").and_then(Value::as_str).unwrap_or_default();
    if !channel.eq_ignore_ascii_case(&fake.channel.lock().expect("channel").id) {
        fake.violation(format!("voucher for channel {channel}"));
    }
    let signature = payload.get("signature").and_then(Value::as_str).unwrap_or_default();
    let domain = ChannelDomain::new(196, DEFAULT_ESCROW_CONTRACT);
    let id = channel_id_from_hex(channel).expect("channel id");
    let signer = recover_voucher_signer(&domain, id, cumulative, signature).ok();
    if signer != Some(parse_address(PAYER).expect("payer")) {
        fake.violation(format!("voucher for {cumulative} not signed by the payer"));
    }
    cumulative
}

async fn seller(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        fake.log("unpaid".into());
        return challenge_402(&fake);
    };
    let credential = Credential::from_authorization_header(auth).expect("an MPP credential");
    let challenge_id = credential.challenge.id.clone();
    if !fake.issued.lock().expect("issued").contains(&challenge_id) {
        fake.violation(format!("credential under an unknown challenge {challenge_id}"));
        return challenge_402(&fake);
    }
    let payload = &credential.payload;
    match payload.get("action").and_then(Value::as_str).unwrap_or_default() {
        "open" => {
            let id = payload.get("channelId").and_then(Value::as_str).unwrap_or_default().to_owned();
            let deposit = payload
                .get("authorization")
                .and_then(|a| a.get("value"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let deposit = deposit.unwrap_or(0u128);
            fake.log(format!("open:{deposit}"));
            *fake.channel.lock().expect("channel") = ChannelView { id: id.clone(), deposit };
            management(&id)
        }
        "topUp" => {
            let amount = amount_of(payload, "additionalDeposit");
            fake.log(format!("topUp:{amount}"));
            let mut channel = fake.channel.lock().expect("channel");
            channel.deposit += amount;
            management(&channel.id.clone())
        }
        "voucher" => voucher(&fake, &headers, &challenge_id, payload),
        other => {
            fake.violation(format!("unexpected action {other}"));
            StatusCode::BAD_REQUEST.into_response()
        }
    }
}

fn voucher(
    fake: &Shared,
    headers: &HeaderMap,
    challenge_id: &str,
    payload: &serde_json::Map<String, Value>,
) -> Response {
    let cumulative = check_voucher(fake, payload);
    let stream = fake.stream.lock().expect("stream").clone();
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let highest = *fake.highest.borrow();
    if cumulative < highest {
        fake.violation(format!("voucher {cumulative} below the highest {highest}"));
    }
    match (stream, last_event_id) {
        (Some(stream), Some(last)) => {
            if stream != challenge_id {
                fake.violation("resume under another challenge".into());
            }
            fake.log(format!("resume:{last}:{cumulative}"));
            if let Some(status) = fake.script.resume_status {
                return StatusCode::from_u16(status).expect("status").into_response();
            }
            let k: u64 = last.parse().expect("numeric Last-Event-ID");
            let from = if fake.script.resend_on_resume { k } else { k + 1 };
            sse(Arc::clone(fake), challenge_id.to_owned(), from, false)
        }
        (Some(stream), None) if stream == challenge_id => {
            fake.log(format!("companion:{cumulative}"));
            let asked = *fake.asked.lock().expect("asked");
            if asked != Some(cumulative) {
                fake.violation(format!("companion voucher {cumulative}, asked {asked:?}"));
            }
            fake.highest.send_modify(|h| *h = (*h).max(cumulative));
            let channel = fake.channel.lock().expect("channel").id.clone();
            axum::Json(json!({"status": "ok", "channelId": channel, "acceptedCumulative": cumulative.to_string()}))
                .into_response()
        }
        (None, _) => {
            fake.log(format!("stream:{cumulative}"));
            *fake.stream.lock().expect("stream") = Some(challenge_id.to_owned());
            fake.highest.send_modify(|h| *h = (*h).max(cumulative));
            sse(Arc::clone(fake), challenge_id.to_owned(), 1, true)
        }
        (Some(_), None) => {
            fake.violation("a second stream".into());
            StatusCode::CONFLICT.into_response()
        }
    }
}

fn sse(fake: Shared, challenge_id: String, from: u64, first: bool) -> Response {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<String, std::io::Error>>();
    tokio::spawn(produce(fake, challenge_id, from, first, tx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(rx))
        .expect("response")
}

type Tx = futures::channel::mpsc::UnboundedSender<Result<String, std::io::Error>>;

fn send(tx: &Tx, frame: String) {
    let _ = tx.unbounded_send(Ok(frame));
}

fn receipt(fake: &Fake, challenge_id: &str) -> String {
    let (spent, units) = *fake.spent.lock().expect("spent");
    let data = json!({
        "method": "evm", "intent": "session", "status": "success", "timestamp": "2026-12-08T00:00:00Z",
        "challengeId": challenge_id, "channelId": fake.channel.lock().expect("channel").id,
        "acceptedCumulative": fake.highest.borrow().to_string(), "spent": spent.to_string(), "units": units,
    });
    format!("event: payment-receipt\ndata: {data}\n\n")
}

fn need(challenge_id: &str, channel_id: &str, required: u128, fake: &Fake) -> String {
    let data = json!({
        "challengeId": challenge_id, "channelId": channel_id, "requiredCumulative": required.to_string(),
        "acceptedCumulative": fake.highest.borrow().to_string(),
        "deposit": fake.channel.lock().expect("channel").deposit.to_string(),
        "spent": fake.spent.lock().expect("spent").0.to_string(),
    });
    format!("event: 402-need-voucher\ndata: {data}\n\n")
}

/// Meters and sends events `from..=events`: each event needs one price of voucher credit, else
/// a need-voucher pauses the stream until the voucher arrives (3 s, then the final receipt).
async fn produce(fake: Shared, challenge_id: String, from: u64, first: bool, tx: Tx) {
    let channel_id = fake.channel.lock().expect("channel").id.clone();
    let mut highest = fake.highest.subscribe();
    let mut first_need = true;
    send(&tx, ": metered stream\n\n".into());
    for i in from..=fake.script.events {
        let delivered = fake.spent.lock().expect("spent").1;
        if i <= delivered {
            // Already charged: re-sent free.
            send(&tx, format!("id: {i}\nevent: token\ndata: token {i}\n\n"));
            continue;
        }
        loop {
            let spent = fake.spent.lock().expect("spent").0;
            if *highest.borrow() >= spent + PRICE {
                break;
            }
            let required = spent + PRICE;
            if first_need && fake.script.foreign_needs {
                send(&tx, need("another-challenge", &channel_id, required - 1, &fake));
                send(&tx, need(&challenge_id, FOREIGN_CHANNEL, required - 1, &fake));
            }
            let ask = match fake.script.greedy_step {
                Some(step) if first_need => *highest.borrow() + step,
                _ => required,
            };
            first_need = false;
            *fake.asked.lock().expect("asked") = Some(ask);
            send(&tx, need(&challenge_id, &channel_id, ask, &fake));
            let paid = matches!(
                tokio::time::timeout(Duration::from_secs(3), highest.wait_for(|h| *h >= ask)).await,
                Ok(Ok(_))
            );
            if !paid {
                send(&tx, receipt(&fake, &challenge_id));
                return;
            }
        }
        {
            let mut spent = fake.spent.lock().expect("spent");
            spent.0 += PRICE;
            spent.1 = i;
        }
        let data = if i == 2 { "token 2\nsecond line".to_owned() } else { format!("token {i}") };
        let data: String = data.lines().map(|l| format!("data: {l}\n")).collect();
        send(&tx, format!("id: {i}\nevent: token\n{data}\n"));
        if first && fake.script.drop_after == Some(i) {
            // The connection drops: no receipt.
            return;
        }
    }
    send(&tx, receipt(&fake, &challenge_id));
}

async fn start(script: Script) -> (support::Running, Shared) {
    let fake = Arc::new(Fake {
        script,
        issued: Mutex::default(),
        channel: Mutex::default(),
        highest: tokio::sync::watch::channel(0).0,
        stream: Mutex::default(),
        spent: Mutex::default(),
        asked: Mutex::default(),
        seen: Mutex::default(),
    });
    let app = axum::Router::new().route("/tokens", axum::routing::get(seller)).with_state(Arc::clone(&fake));
    (support::serve_axum(app).await, fake)
}

fn usdt0() -> AssetId {
    AssetId::x_layer_usdt0()
}

/// A session buyer: 0.01 USD₮0 per request (at most `total`), `total` in all, deposits of at most `max_deposit`.
fn buyer(total: u128, max_deposit: u128) -> AutoPayMiddleware {
    AutoPay::new(signer_from_hex(PAYER_KEY).expect("key"))
        .prefer([pay402::autopay::Protocol::MppSession])
        .max_per_request(usdt0(), Amount::atomic(total.min(10 * PRICE)))
        .max_total(usdt0(), Amount::atomic(total))
        .max_deposit(usdt0(), Amount::atomic(max_deposit))
        .registry(NetworkRegistry::x_layer())
        .build()
        .expect("autopay")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn get(base: &str) -> reqwest::Request {
    reqwest::Request::new(reqwest::Method::GET, format!("{base}/tokens?n=5").parse().expect("url"))
}

fn options() -> StreamOptions {
    StreamOptions::default().reconnect_delay(Duration::from_millis(50))
}

/// Every item of the stream (failing on an error item).
async fn collect(events: &mut pay402::autopay::PaidEvents) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("in time") {
        items.push(item.expect("no error"));
    }
    items
}

fn data(items: &[StreamItem]) -> Vec<(Option<String>, Option<String>, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Data(e) => Some((e.id.clone(), e.event.clone(), e.data.clone())),
            _ => None,
        })
        .collect()
}

fn expected(n: u64) -> Vec<(Option<String>, Option<String>, String)> {
    (1..=n)
        .map(|i| {
            let text = if i == 2 { "token 2\nsecond line".to_owned() } else { format!("token {i}") };
            (Some(i.to_string()), Some("token".to_owned()), text)
        })
        .collect()
}

fn u(v: u128) -> U256 {
    U256::from(v)
}

#[tokio::test]
async fn events_arrive_in_order_need_vouchers_are_paid_exactly_and_the_final_receipt_is_exposed() {
    let (server, fake) = start(Script { events: 5, ..Script::default() }).await;
    let autopay = buyer(1_000_000, 100_000);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let challenge = events.challenge_id().expect("paid").to_owned();
    let channel = events.channel_id().expect("paid").to_owned();
    let items = collect(&mut events).await;
    // (1) Every data event, in order, with its id, name and multi-line data.
    assert_eq!(data(&items), expected(5));
    // (2) The first request pre-paid one event; each later event was asked for with a
    // need-voucher and answered with a voucher for exactly the required amount, under the
    // stream's challenge, signed by the payer (the seller checks all of it).
    let deposit = 100 * PRICE;
    assert_eq!(
        fake.entries(),
        vec![
            "unpaid".to_owned(),
            format!("open:{deposit}"),
            "stream:1000".into(),
            "companion:2000".into(),
            "companion:3000".into(),
            "companion:4000".into(),
            "companion:5000".into(),
        ]
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    // (6) The final receipt is this stream's, and is exposed once the stream closed cleanly.
    let last = items.last().expect("items");
    let StreamItem::Receipt(receipt) = last else { panic!("the last item is not a receipt: {last:?}") };
    assert_eq!((receipt.challenge_id.as_str(), receipt.channel_id.as_str()), (challenge.as_str(), channel.as_str()));
    assert_eq!((receipt.spent, receipt.units, receipt.accepted_cumulative), (u(5 * PRICE), 5, u(5 * PRICE)));
    assert_eq!(events.final_receipt().as_ref(), Some(receipt));
    // The caps saw what was vouched: five events' worth spent, the rest of the deposit escrowed.
    assert_eq!(events.paid(), u(5 * PRICE));
    assert_eq!(autopay.spent(&usdt0()), u(5 * PRICE));
    assert_eq!(autopay.escrowed(&usdt0()), u(deposit - 5 * PRICE));
    let channels = autopay.channels().await;
    assert_eq!((channels.len(), channels[0].cumulative), (1, u(5 * PRICE)));
}

#[tokio::test]
async fn a_need_voucher_of_another_challenge_or_channel_is_not_paid() {
    let (server, fake) = start(Script { events: 3, foreign_needs: true, ..Script::default() }).await;
    let autopay = buyer(1_000_000, 100_000);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let items = collect(&mut events).await;
    assert_eq!(data(&items), expected(3));
    // The foreign need-vouchers (asking 1999) got nothing: only the stream's own were answered.
    let entries = fake.entries();
    assert_eq!(entries.iter().filter(|e| e.starts_with("companion:")).count(), 2, "{entries:?}");
    assert!(!entries.iter().any(|e| e.ends_with(":1999")), "{entries:?}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_eq!(autopay.spent(&usdt0()), u(3 * PRICE));
    assert!(events.final_receipt().is_some());
}

#[tokio::test]
async fn a_need_voucher_above_one_event_ends_the_stream_with_nothing_signed() {
    let (server, fake) = start(Script { events: 3, greedy_step: Some(5 * PRICE), ..Script::default() }).await;
    let autopay = buyer(1_000_000, 100_000);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let mut items = Vec::new();
    let error = loop {
        match events.next().await.expect("an error before the end") {
            Ok(item) => items.push(item),
            Err(e) => break e,
        }
    };
    assert_eq!(data(&items), expected(1));
    assert_eq!(
        error,
        StreamError::Events(StreamClientError::StepAboveLimit {
            required: u(6 * PRICE),
            signed: u(PRICE),
            limit: u(PRICE),
        })
    );
    assert!(events.next().await.is_none(), "the stream is over");
    assert_eq!(events.final_receipt(), None);
    // Nothing was signed after the first voucher.
    assert!(!fake.entries().iter().any(|e| e.starts_with("companion:")), "{:?}", fake.entries());
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
    assert_eq!(autopay.channels().await[0].cumulative, u(PRICE));
}

#[tokio::test]
async fn a_top_up_above_the_budget_ends_the_stream_with_nothing_signed() {
    // The budget holds exactly a three-event deposit: the fourth event needs a top-up the total
    // cap refuses.
    let (server, fake) = start(Script { events: 5, ..Script::default() }).await;
    let autopay = buyer(3 * PRICE, 3 * PRICE);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let mut items = Vec::new();
    let error = loop {
        match events.next().await.expect("an error before the end") {
            Ok(item) => items.push(item),
            Err(e) => break e,
        }
    };
    assert_eq!(data(&items), expected(3));
    assert!(
        matches!(error, StreamError::Payment(AutoPayError::TotalCapExceeded { requested, .. }) if requested == u(PRICE)),
        "{error:?}"
    );
    let entries = fake.entries();
    assert!(!entries.iter().any(|e| e.starts_with("topUp:") || e == "companion:4000"), "{entries:?}");
    assert_eq!(entries.last().map(String::as_str), Some("companion:3000"));
    assert_eq!(autopay.spent(&usdt0()), u(3 * PRICE));
    assert_eq!(autopay.channels().await[0].cumulative, u(3 * PRICE));
}

#[tokio::test]
async fn a_need_voucher_above_the_deposit_tops_up_within_the_maximum_first() {
    // Deposits of at most two events: the third event needs a top-up (two more events' worth).
    let (server, fake) = start(Script { events: 3, ..Script::default() }).await;
    let autopay = buyer(1_000_000, 2 * PRICE);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let items = collect(&mut events).await;
    assert_eq!(data(&items), expected(3));
    let entries = fake.entries();
    assert_eq!(
        entries,
        vec!["unpaid", "open:2000", "stream:1000", "companion:2000", "topUp:2000", "companion:3000"],
        "{entries:?}"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_eq!((autopay.spent(&usdt0()), autopay.escrowed(&usdt0())), (u(3 * PRICE), u(PRICE)));
}

#[tokio::test]
async fn a_dropped_connection_resumes_after_the_last_event_without_duplicates() {
    let script = Script { events: 5, drop_after: Some(3), resend_on_resume: true, ..Script::default() };
    let (server, fake) = start(script).await;
    let autopay = buyer(1_000_000, 100_000);
    let mut events = autopay.stream_with(&http(), get(&server.base), options()).await.expect("stream");
    let items = collect(&mut events).await;
    // Event 3 was sent again after the resume: delivered once.
    assert_eq!(data(&items), expected(5));
    assert_eq!(events.reconnects(), 1);
    // The resume named the last event and carried a voucher for the amount already signed
    // (no new money), under the stream's challenge; then the stream went on being metered.
    assert_eq!(
        fake.entries(),
        vec![
            "unpaid",
            "open:100000",
            "stream:1000",
            "companion:2000",
            "companion:3000",
            "resume:3:3000",
            "companion:4000",
            "companion:5000"
        ]
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    let receipt = events.final_receipt().expect("final receipt");
    assert_eq!((receipt.units, receipt.spent), (5, u(5 * PRICE)));
    assert_eq!(autopay.spent(&usdt0()), u(5 * PRICE));
}

#[tokio::test]
async fn reconnections_are_bounded() {
    // The seller drops after event 1 and then answers every resume 503.
    let script = Script { events: 3, drop_after: Some(1), resume_status: Some(503), ..Script::default() };
    let (server, fake) = start(script).await;
    let autopay = buyer(1_000_000, 100_000);
    let mut events =
        autopay.stream_with(&http(), get(&server.base), options().max_reconnects(2)).await.expect("stream");
    let first = events.next().await.expect("event 1").expect("ok");
    assert!(matches!(first, StreamItem::Data(ref e) if e.id.as_deref() == Some("1")), "{first:?}");
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("in time") {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    assert!(matches!(error, StreamError::Disconnected { attempts: 2, .. }), "{error:?}");
    assert_eq!(events.final_receipt(), None);
    assert_eq!(fake.entries()[3..], ["resume:1:1000", "resume:1:1000"]);
    assert_eq!(autopay.spent(&usdt0()), u(PRICE));
}

// ---------------------------------------------------------------------------------------------
// End to end: pay402's own seller (`PaySpec::session(…).per_event()`, `PaidStream`) on axum and
// actix-web, with the embedded Settlement Agent.
// ---------------------------------------------------------------------------------------------

mod e2e {
    use super::*;
    use pay402::mpp::{EmbeddedSa, EvmMethod, Mpp, PaidStream, PaySpec, SessionIntent, SseEvent};
    use support::accounts::PAYEE_KEY;
    use support::{FRAMEWORKS, Framework, Running};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// `0.0001` USD₮0 per event.
    const EVENT_PRICE: u128 = 100;

    #[derive(serde::Deserialize)]
    struct Tokens {
        n: u64,
    }

    fn tokens(stream: PaidStream, n: u64) -> pay402::mpp::EventStream {
        stream.sse(futures::stream::iter(1..=n).map(|i| SseEvent::data(format!("t{i}"))))
    }

    struct Seller {
        running: Running,
        sa: EmbeddedSa,
        intent: SessionIntent,
    }

    async fn seller(fw: Framework) -> Seller {
        seller_with(fw, 0).await
    }

    /// A seller whose vouchers must each raise the highest one by at least `min_voucher_delta`.
    async fn seller_with(fw: Framework, min_voucher_delta: u128) -> Seller {
        let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
        sa.fund(USDT0, PAYER, U256::from(100_000_000u64)).expect("fund");
        let payee = signer_from_hex(PAYEE_KEY).expect("key");
        let intent = SessionIntent::new(sa.clone(), PAYEE).signer(Arc::new(payee)).min_voucher_delta(min_voucher_delta);
        let method = EvmMethod::x_layer(PAYEE).with_session(intent.clone());
        let mpp = Mpp::new(method, REALM, SECRET)
            .expect("mpp")
            .route("GET /tokens", PaySpec::session("0.0001").per_event())
            .expect("route");
        let running = match fw {
            Framework::Axum => {
                let handler = |stream: PaidStream, axum::extract::Query(q): axum::extract::Query<Tokens>| async move {
                    tokens(stream, q.n)
                };
                let app = axum::Router::new()
                    .route("/tokens", axum::routing::get(handler))
                    .layer(pay402::axum::MppLayer::new(mpp.clone()));
                support::serve_axum(app).await
            }
            Framework::Actix => {
                use actix_web::web;
                support::serve_actix(move || {
                    actix_web::App::new().wrap(pay402::actix::MppMiddleware::new(mpp.clone())).route(
                        "/tokens",
                        web::get().to(|stream: PaidStream, q: web::Query<Tokens>| async move { tokens(stream, q.n) }),
                    )
                })
            }
        };
        Seller { running, sa, intent }
    }

    impl Seller {
        async fn spent(&self, channel: &str) -> (u128, u128, u64) {
            for _ in 0..200 {
                let s = self.intent.channel_store().get(channel).await.expect("store").expect("channel").value;
                if s.reserved == 0 {
                    return (s.spent, s.highest_voucher_amount, s.units);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("a reservation stayed open on {channel}");
        }
    }

    /// A TCP proxy to `target` that cuts the first event-stream response after `cut_after` data
    /// events (counted as `id:` lines), as a dropped connection would.
    async fn cutting_proxy(target: String, cut_after: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.trim_start_matches("http://").to_owned();
                let cut = Arc::clone(&cut);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut client_read, mut client_write) = client.split();
                    let (mut server_read, mut server_write) = server.split();
                    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream = async {
                        let (mut seen, mut buf) = (Vec::new(), vec![0u8; 4096]);
                        loop {
                            let n = server_read.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let chunk = &buf[..n];
                            if cut.load(std::sync::atomic::Ordering::SeqCst) {
                                if client_write.write_all(chunk).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            let start = seen.len();
                            seen.extend_from_slice(chunk);
                            match cut_point(&seen, cut_after) {
                                Some(end) => {
                                    // Forward up to the end of the last event kept, then hang up.
                                    cut.store(true, std::sync::atomic::Ordering::SeqCst);
                                    let _ = client_write.write_all(&seen[start..end.max(start)]).await;
                                    return;
                                }
                                None if client_write.write_all(chunk).await.is_err() => return,
                                None => {}
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        () = downstream => {}
                    }
                });
            }
        });
        base
    }

    /// In an event-stream response, where the `keep`-th data event (an `id:` line) ends.
    fn cut_point(seen: &[u8], keep: usize) -> Option<usize> {
        let text = String::from_utf8_lossy(seen);
        text.find("text/event-stream")?;
        let (at, _) = text.match_indices("\nid: ").nth(keep - 1)?;
        text[at..].find("\n\n").map(|end| at + end + 2)
    }

    fn texts(items: &[StreamItem]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Data(e) => Some(format!("{}:{}", e.id.as_deref().unwrap_or("-"), e.data)),
                _ => None,
            })
            .collect()
    }

    fn want(n: u64) -> Vec<String> {
        (1..=n).map(|i| format!("{i}:t{i}")).collect()
    }

    #[tokio::test]
    async fn a_real_seller_is_paid_per_event_with_top_ups() {
        for fw in FRAMEWORKS {
            let seller = seller(fw).await;
            // Deposits of at most ten events: 35 events need three top-ups.
            let autopay = buyer(1_000_000, 10 * EVENT_PRICE);
            let url = format!("{}/tokens?n=35", seller.running.base);
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().expect("url"));
            let mut events = autopay.stream_with(&http(), request, options()).await.expect("stream");
            let channel = events.channel_id().expect("paid").to_owned();
            let items = collect(&mut events).await;
            assert_eq!(texts(&items), want(35), "{fw:?}");
            let receipt = events.final_receipt().expect("final receipt");
            assert_eq!((receipt.units, receipt.spent), (35, u(35 * EVENT_PRICE)), "{fw:?}");
            assert_eq!(receipt.challenge_id, events.challenge_id().expect("paid"));
            // The seller charged exactly what was delivered, and holds exactly that in vouchers.
            assert_eq!(seller.spent(&channel).await, (35 * EVENT_PRICE, 35 * EVENT_PRICE, 35), "{fw:?}");
            assert_eq!(autopay.spent(&usdt0()), u(35 * EVENT_PRICE));
            assert_eq!(autopay.escrowed(&usdt0()), u(5 * EVENT_PRICE), "four deposits of ten events");
            // Closing pays the payee the highest voucher.
            autopay.close_channels(&http()).await.expect("close");
            assert_eq!(seller.sa.balance(USDT0, PAYEE), U256::from(35 * EVENT_PRICE), "{fw:?}");
        }
    }

    #[tokio::test]
    async fn a_real_seller_with_a_minimum_voucher_increase_is_paid_in_steps_of_that_increase() {
        // Each voucher must raise the highest by 0.0003 (three events): the buyer's vouchers
        // step by exactly that.
        for fw in FRAMEWORKS {
            let seller = seller_with(fw, 3 * EVENT_PRICE).await;
            let autopay = buyer(1_000_000, 100 * EVENT_PRICE);
            let url = format!("{}/tokens?n=10", seller.running.base);
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().expect("url"));
            let mut events = autopay.stream_with(&http(), request, options()).await.expect("stream");
            let channel = events.channel_id().expect("paid").to_owned();
            let items = collect(&mut events).await;
            assert_eq!(texts(&items), want(10), "{fw:?}");
            // Vouchers of 300, 600, 900, 1200: ten events charged, twelve events' worth vouched.
            let receipt = events.final_receipt().expect("final receipt");
            assert_eq!((receipt.spent, receipt.accepted_cumulative), (u(10 * EVENT_PRICE), u(12 * EVENT_PRICE)));
            assert_eq!(seller.spent(&channel).await, (10 * EVENT_PRICE, 12 * EVENT_PRICE, 10), "{fw:?}");
            assert_eq!(autopay.spent(&usdt0()), u(12 * EVENT_PRICE), "a signed voucher counts in full");
        }
    }

    #[tokio::test]
    async fn a_buyer_is_not_stuck_on_a_channel_the_seller_closed() {
        for fw in FRAMEWORKS {
            let seller = seller(fw).await;
            let autopay = buyer(1_000_000, 100 * EVENT_PRICE);
            let url = format!("{}/tokens?n=3", seller.running.base);
            let request = || reqwest::Request::new(reqwest::Method::GET, url.parse().expect("url"));
            let mut events = autopay.stream_with(&http(), request(), options()).await.expect("stream");
            let first = events.channel_id().expect("paid").to_owned();
            assert_eq!(texts(&collect(&mut events).await), want(3), "{fw:?}");
            // The seller closes the channel behind the buyer's back (it is gone from its store).
            seller.intent.close_channel(&first).await.expect("close");
            // The next stream's voucher names the closed channel: refused with 410, the buyer
            // forgets the channel ...
            let refused = autopay.stream_with(&http(), request(), options()).await;
            assert!(refused.is_err(), "{fw:?}: a voucher on a closed channel is refused");
            // ... and the one after opens a new channel and streams.
            let mut events = autopay.stream_with(&http(), request(), options()).await.expect("a fresh channel");
            let second = events.channel_id().expect("paid").to_owned();
            assert_ne!(second, first, "{fw:?}: not the closed channel");
            assert_eq!(texts(&collect(&mut events).await), want(3), "{fw:?}");
            assert_eq!(seller.spent(&second).await.0, 3 * EVENT_PRICE, "{fw:?}");
        }
    }

    /// The connection to the seller drops after event 7 of 20; the buyer resumes with
    /// `Last-Event-ID: 7`: every event arrives once and none is charged twice.
    async fn resume_case(fw: Framework, prepaid_events: u32) {
        let seller = seller(fw).await;
        let proxy = cutting_proxy(seller.running.base.clone(), 7).await;
        let autopay = buyer(1_000_000, 100 * EVENT_PRICE);
        let request = reqwest::Request::new(reqwest::Method::GET, format!("{proxy}/tokens?n=20").parse().expect("url"));
        let options = options().prepaid_events(prepaid_events);
        let mut events = autopay.stream_with(&http(), request, options).await.expect("stream");
        let channel = events.channel_id().expect("paid").to_owned();
        let items = collect(&mut events).await;
        assert_eq!(texts(&items), want(20), "{fw:?}");
        assert_eq!(events.reconnects(), 1, "{fw:?}");
        let receipt = events.final_receipt().expect("final receipt");
        assert_eq!(receipt.spent, u(20 * EVENT_PRICE), "{fw:?}");
        // No event was charged twice.
        assert_eq!(seller.spent(&channel).await.0, 20 * EVENT_PRICE, "{fw:?}");
        assert_eq!(autopay.spent(&usdt0()), u(20 * EVENT_PRICE));
    }

    #[tokio::test]
    async fn a_real_seller_resumes_a_stream_dropped_mid_flight() {
        // Twenty events pre-paid: the connection drops while events flow.
        for fw in FRAMEWORKS {
            resume_case(fw, 20).await;
        }
    }

    #[tokio::test]
    async fn a_real_seller_resumes_a_stream_dropped_while_paused_for_a_voucher() {
        // One event pre-paid: the connection drops while the seller waits for a voucher. actix-web
        // does not notice a hang-up while the response is idle: the paused instance of the dropped
        // connection stays alive, but the resume superseded it, so it can never take the credit of
        // the resumed stream's vouchers (it ends at its next step).
        for fw in FRAMEWORKS {
            resume_case(fw, 1).await;
        }
    }
}
