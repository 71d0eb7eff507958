//! MPP session payloads and vouchers, through the whole seller path (`Mpp::process` with the
//! embedded Settlement Agent and an in-memory channel store).
//!
//! The input is a JSON array of steps run against a fresh seller: `{"open": deposit}`,
//! `{"voucher": cost}`, `{"topUp": amount}`, `{"close": cumulative}` are signed by a real buyer
//! ([`SessionClient`]); any other object is sent as a raw credential payload under a valid
//! challenge echo, and a string is sent as a raw `Authorization` header. Input that is not such
//! an array is sent as one raw payload (bytes as the credential JSON payload).
//!
//! Properties: nothing panics; every answer is a payment grant or an HTTP error response with a
//! valid status; and no request is served unpaid — the requests served × their price never
//! exceed the highest voucher the buyer signed, and a channel never spends more than its deposit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::evm::{U256, signer_from_hex};
use pay402_runtime::mpp::{
    ChannelStore, Credential, EmbeddedSa, EvmMethod, InMemoryChannelStore, Mpp, ParsedChallenge, PaySpec,
    SessionClient, SessionIntent, parse_www_authenticate,
};
use pay402_runtime::web::RequestContext;
use pay402_runtime::chain::NetworkRegistry;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const COST: u128 = 1000;
const MAX_STEPS: usize = 16;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fn ctx(authorization: &str) -> Option<RequestContext> {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, authorization.parse().ok()?);
    Some(RequestContext::new(http::Method::GET, "http://api.example.com/metered".into(), headers))
}

struct Seller {
    mpp: Mpp,
    spec: PaySpec,
    store: Arc<InMemoryChannelStore>,
    client: SessionClient,
}

fn seller() -> Seller {
    let sa = EmbeddedSa::new().with_registry(NetworkRegistry::x_layer());
    sa.fund(USDT0, PAYER, U256::from(10_000_000u64)).expect("fund");
    let store = Arc::new(InMemoryChannelStore::new());
    let payee = signer_from_hex(PAYEE_KEY).expect("payee key");
    let intent = SessionIntent::new(sa, PAYEE).signer(Arc::new(payee)).store(store.clone());
    let mpp = Mpp::new(EvmMethod::x_layer(PAYEE).with_session(intent), "api.example.com", "fuzz-secret-at-least-32-bytes-long-hmac").expect("mpp");
    let spec = PaySpec { amount: "0.001".into(), intent: "session".into(), ..PaySpec::default() };
    let client =
        SessionClient::new(signer_from_hex(PAYER_KEY).expect("payer key")).with_registry(NetworkRegistry::x_layer());
    Seller { mpp, spec, store, client }
}

async fn challenge(s: &Seller) -> ParsedChallenge {
    let unpaid =
        RequestContext::new(http::Method::GET, "http://api.example.com/metered".into(), http::HeaderMap::new());
    let resp = s.mpp.process(&unpaid, &s.spec).await.expect_err("unpaid");
    let www = resp.headers.get("www-authenticate").expect("challenge").to_str().expect("ascii");
    parse_www_authenticate(&[www]).expect("own challenge parses").remove(0)
}

fn amount(v: &Value) -> U256 {
    U256::from(v.as_u64().unwrap_or(0) % 20_000_000)
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let s = seller();
        let c = challenge(&s).await;
        let steps: Vec<Value> = match serde_json::from_slice::<Value>(data) {
            Ok(Value::Array(steps)) => steps,
            Ok(Value::Object(m)) => vec![Value::Object(Map::from_iter([("raw".to_owned(), Value::Object(m))]))],
            _ => vec![Value::String(Credential::new(c.to_echo(), raw_payload(data), None).to_authorization_header())],
        };
        // Every channel opened by the buyer (a later `open` starts another one); the steps act on
        // the latest.
        let mut channels: Vec<String> = Vec::new();
        let mut served: u128 = 0;
        for step in steps.into_iter().take(MAX_STEPS) {
            let header = match &step {
                Value::String(h) => Some(h.clone()),
                Value::Object(m) if m.len() == 1 => {
                    let (k, v) = m.iter().next().expect("one entry");
                    match (k.as_str(), channels.last()) {
                        ("open", _) => s.client.open_header(&c, amount(v)).ok().map(|(id, h)| {
                            channels.push(id);
                            h
                        }),
                        ("voucher", Some(id)) => s.client.next_voucher(&c, id, amount(v)).ok(),
                        ("topUp", Some(id)) => s.client.top_up_header(&c, id, amount(v)).ok(),
                        ("close", Some(id)) => s.client.close_header(&c, id, amount(v)).ok(),
                        ("raw", _) => match v {
                            Value::Object(p) => {
                                Some(Credential::new(c.to_echo(), p.clone(), None).to_authorization_header())
                            }
                            _ => None,
                        },
                        _ => Some(Credential::new(c.to_echo(), m.clone(), None).to_authorization_header()),
                    }
                }
                Value::Object(m) => Some(Credential::new(c.to_echo(), m.clone(), None).to_authorization_header()),
                _ => None,
            };
            let Some(request) = header.as_deref().and_then(ctx) else { continue };
            match s.mpp.process(&request, &s.spec).await {
                Ok(paid) => {
                    if paid.finish(http::StatusCode::OK).await.is_ok() {
                        served += COST;
                    }
                }
                Err(resp) => assert!(resp.status.as_u16() >= 200 && resp.status.as_u16() < 600),
            }
        }
        let mut signed: u128 = 0;
        for id in &channels {
            match s.store.get(id).await {
                Ok(Some(state)) => {
                    let st = &state.value;
                    assert!(st.spent <= st.highest_voucher_amount, "spent beyond the signed voucher: {st:?}");
                    assert!(st.spent <= st.deposit, "spent beyond the deposit: {st:?}");
                    signed += st.highest_voucher_amount;
                }
                // A channel closed after serving left the store: its close voucher bounded the
                // spend, but the served total can no longer be attributed per channel.
                Ok(None) if served > 0 => return,
                _ => {}
            }
        }
        assert!(served <= signed, "served {served} with only {signed} signed");
    });
});

fn raw_payload(data: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("action".into(), Value::String("voucher".into()));
    m.insert("raw".into(), Value::String(String::from_utf8_lossy(data).into_owned()));
    m
}
