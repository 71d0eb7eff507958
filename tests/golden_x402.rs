//! Golden vectors (tests/vectors/okx-golden.json, produced by OKX's Python SDK) reproduced byte
//! for byte: OKX HMAC signatures, x402 challenges, price parsing, and OKX facilitator requests.

use pay402::chain::Network;
use pay402::okx::{OkxCredentials, OkxFacilitatorClient, OkxFacilitatorConfig};
use pay402::x402::{
    AnyPaymentPayload, ExactEvmScheme, FacilitatorClient, Price, SchemeNetworkServer, decode_payment_response_header,
    decode_payment_signature_header, encode_payment_response_header,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VECTORS: &str = "tests/vectors/okx-golden.json";

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing in {v}"))
}

#[test]
fn vector_copy_matches_shared_spec() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/spec/vectors/okx-golden.json");
    if shared.exists() {
        let ours = std::fs::read(root.join(VECTORS)).expect("our copy");
        let theirs = std::fs::read(&shared).expect("shared copy");
        assert!(
            ours == theirs,
            "tests/vectors/okx-golden.json differs from ../shared/spec/vectors/okx-golden.json; copy it again"
        );
    }
}

#[test]
fn okx_hmac_cases() {
    let v = vectors();
    let cases = v["okx_hmac"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 5);
    for case in cases {
        let (ts, method, path, body) =
            (s(case, "timestamp"), s(case, "method"), s(case, "request_path"), s(case, "body"));
        assert_eq!(format!("{ts}{method}{path}{body}"), s(case, "prehash"));
        let sig = pay402::okx::sign(s(case, "secret_key"), ts, method, path, body.as_bytes());
        assert_eq!(sig, s(case, "OK-ACCESS-SIGN"), "case {}", s(case, "name"));
    }
}

/// Parses the Python-repr keys of `x402_parse_price_eip155_196`.
fn price_input(key: &str) -> (Price, Network) {
    let x_layer = Network::from("eip155:196");
    if let Some(rest) = key.strip_prefix("AssetAmount dict ") {
        let json: Value = serde_json::from_str(&rest.replace('\'', "\"")).expect("dict");
        return (serde_json::from_value(json).expect("asset amount"), x_layer);
    }
    if let Some((lit, net)) = key.split_once(" on ") {
        return (Price::from(lit.trim_matches('\'')), Network::from(net));
    }
    if key.starts_with('\'') {
        return (Price::from(key.trim_matches('\'')), x_layer);
    }
    // A bare Python number (int or float): taken through its JSON number text.
    let n: serde_json::Number = serde_json::from_str(key).expect("number key");
    (Price::Money(n.into()), x_layer)
}

#[test]
fn parse_price_eip155_196() {
    let v = vectors();
    let cases = v["x402_parse_price_eip155_196"].as_object().expect("object");
    assert_eq!(cases.len(), 10);
    let python = ExactEvmScheme::new().python_compatible();
    let strict = ExactEvmScheme::new();
    for (key, want) in cases {
        let (price, network) = price_input(key);
        match want.as_str() {
            Some(err) => {
                let got = python.parse_price(&price, &network).expect_err(key);
                assert_eq!(format!("ERROR {got}"), err, "{key}");
            }
            None => {
                let got = python.parse_price(&price, &network).unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(&serde_json::to_value(&got).expect("json"), want, "{key}");
                // The strict default agrees wherever the price is exactly chargeable, and
                // refuses the one the Python SDK silently truncates to zero.
                match strict.parse_price(&price, &network) {
                    Ok(a) => assert_eq!(a, got, "{key}"),
                    Err(e) => assert_eq!(key, "'$0.0000001'", "strict refused {key}: {e}"),
                }
            }
        }
    }
}

#[test]
fn payment_response_header_roundtrip() {
    let v = vectors();
    let sec = &v["x402_okx_facilitator_requests"];
    let header = s(sec, "PAYMENT-RESPONSE_header");
    let decoded = decode_payment_response_header(header).expect("decodes");
    assert_eq!(
        String::from_utf8(pay402::json::compact(&decoded).unwrap()).unwrap(),
        s(sec, "PAYMENT-RESPONSE_decoded")
    );
    assert_eq!(encode_payment_response_header(&decoded).unwrap(), header);
}

/// One request as the capture server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path_and_query: String,
    sign: String,
    timestamp: String,
    body: String,
}

/// A 127.0.0.1 server that records requests and answers like OKX.
async fn capture_server() -> (String, Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            let h = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                sign: h("OK-ACCESS-SIGN"),
                timestamp: h("OK-ACCESS-TIMESTAMP"),
                body: String::from_utf8(body.to_vec()).expect("utf8 body"),
                path_and_query: path.clone(),
            });
            let data = if path.ends_with("/verify") {
                r#"{"isValid":true,"payer":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}"#
            } else {
                r#"{"success":true,"status":"success","transaction":"0xcdcd","network":"eip155:196"}"#
            };
            format!(r#"{{"code":0,"data":{data},"msg":""}}"#)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (url, seen, task)
}

fn parse_timestamp(ts: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).expect("timestamp");
    let nanos = u64::try_from(t.unix_timestamp_nanos()).expect("after 1970");
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[tokio::test]
async fn okx_facilitator_requests_byte_for_byte() {
    let v = vectors();
    let sec = &v["x402_okx_facilitator_requests"];
    let AnyPaymentPayload::V2(payload) =
        decode_payment_signature_header(s(&sec["inputs"], "PAYMENT-SIGNATURE_header")).expect("decodes")
    else {
        panic!("v2 payload expected");
    };
    // The seller's requirements are identical to what the buyer accepted in this vector.
    let requirements = payload.accepted.clone();
    let (url, seen, task) = capture_server().await;
    let want = sec["requests"].as_array().expect("requests");
    for (i, req) in want.iter().enumerate() {
        let at = parse_timestamp(s(req, "OK-ACCESS-TIMESTAMP"));
        let creds = OkxCredentials::new("test-api-key", "test-secret", "test-passphrase");
        let client = OkxFacilitatorClient::new(OkxFacilitatorConfig::new(creds).base_url(url.clone()))
            .expect("client")
            .with_clock(Arc::new(move || at));
        match i {
            0 => assert!(client.verify(&payload, &requirements).await.expect("verify").is_valid),
            1 => assert!(client.settle(&payload, &requirements).await.expect("settle").success),
            _ => {
                let tx = s(req, "url").rsplit_once("txHash=").expect("tx").1;
                assert!(client.settle_status(tx).await.expect("status").success);
            }
        }
        let got = seen.lock().unwrap()[i].clone();
        let want_path = s(req, "url").strip_prefix("https://web3.okx.com").expect("okx url");
        assert_eq!(got.method, s(req, "method"));
        assert_eq!(got.path_and_query, want_path);
        assert_eq!(got.timestamp, s(req, "OK-ACCESS-TIMESTAMP"));
        assert_eq!(got.body, s(req, "body"), "request {i} body");
        assert_eq!(got.sign, s(req, "OK-ACCESS-SIGN"), "request {i} signature");
    }
    task.abort();
}

/// A facilitator that only answers `/supported` (from the vector's inputs).
struct SupportedOnly(pay402::x402::SupportedResponse);

#[async_trait::async_trait]
impl FacilitatorClient for SupportedOnly {
    async fn verify(
        &self,
        _: &pay402::x402::PaymentPayload,
        _: &pay402::x402::PaymentRequirements,
    ) -> Result<pay402::x402::VerifyResponse, pay402::x402::FacilitatorError> {
        Err(pay402::x402::FacilitatorError::Unsupported("verify"))
    }
    async fn settle(
        &self,
        _: &pay402::x402::PaymentPayload,
        _: &pay402::x402::PaymentRequirements,
    ) -> Result<pay402::x402::SettleResponse, pay402::x402::FacilitatorError> {
        Err(pay402::x402::FacilitatorError::Unsupported("settle"))
    }
    async fn supported(&self) -> Result<pay402::x402::SupportedResponse, pay402::x402::FacilitatorError> {
        Ok(self.0.clone())
    }
}

/// Builds the route of a `x402_payment_required*` vector and answers an unpaid API request.
async fn unpaid_challenge(inputs: &Value, supported: &Value) -> pay402::web::PaymentHttpResponse {
    use pay402::web::RequestContext;
    use pay402::x402::{PaymentOption, RouteConfig, X402HttpServer};
    let supported = serde_json::from_value(supported.clone()).expect("supported");
    let server = pay402::x402::X402ResourceServer::new(SupportedOnly(supported))
        .register("eip155:196", ExactEvmScheme::new())
        .register("eip155:196", pay402::x402::AggrDeferredEvmScheme::new());
    let opt = &inputs["accepts"][0];
    let mut option = PaymentOption::new(s(opt, "scheme"), s(opt, "price"), s(opt, "network"), s(opt, "payTo"));
    if let Some(t) = opt["maxTimeoutSeconds"].as_u64() {
        option = option.max_timeout_seconds(t);
    }
    if let Some(extra) = opt["extra"].as_object() {
        option = option.extra(extra.clone());
    }
    let mut route = RouteConfig::new(option);
    if let Some(d) = inputs["description"].as_str() {
        route = route.description(d);
    }
    if let Some(m) = inputs["mime_type"].as_str() {
        route = route.mime_type(m);
    }
    let http = X402HttpServer::new(server).route(inputs["route_key"].as_str().unwrap_or("*"), route).expect("route");
    let ctx = RequestContext::new(http::Method::GET, s(inputs, "request_url").to_owned(), http::HeaderMap::new());
    let route = http.route_for("GET", &ctx.path).expect("route matches");
    http.process(&ctx, &route).await.expect_err("unpaid request gets a 402")
}

fn header<'a>(r: &'a pay402::web::PaymentHttpResponse, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("header {name} missing"))
}

#[tokio::test]
async fn payment_required_exact() {
    let v = vectors();
    let sec = &v["x402_payment_required"];
    let resp = unpaid_challenge(&sec["inputs"], &sec["inputs"]["facilitator_supported"]).await;
    assert_eq!(u64::from(resp.status.as_u16()), sec["status"].as_u64().expect("status"));
    assert_eq!(header(&resp, "PAYMENT-REQUIRED"), s(&sec["response_headers"], "PAYMENT-REQUIRED"));
    assert_eq!(header(&resp, "Content-Type"), s(&sec["response_headers"], "Content-Type"));
    assert_eq!(serde_json::from_slice::<Value>(&resp.body).expect("json body"), sec["response_body_json"]);
    let decoded = pay402::x402::decode_payment_required_header(header(&resp, "PAYMENT-REQUIRED")).expect("decodes");
    let pay402::x402::AnyPaymentRequired::V2(decoded) = decoded else { panic!("v2") };
    assert_eq!(
        String::from_utf8(pay402::json::compact(&decoded).unwrap()).unwrap(),
        s(sec, "PAYMENT-REQUIRED_decoded_json_utf8")
    );
}

#[tokio::test]
async fn payment_required_aggr_deferred() {
    let v = vectors();
    let sec = &v["x402_payment_required_aggr_deferred"];
    let supported = &v["x402_payment_required"]["inputs"]["facilitator_supported"];
    let resp = unpaid_challenge(&sec["inputs"], supported).await;
    assert_eq!(resp.status.as_u16(), 402);
    assert_eq!(header(&resp, "PAYMENT-REQUIRED"), s(sec, "PAYMENT-REQUIRED"));
    let decoded = pay402::x402::decode_payment_required_header(s(sec, "PAYMENT-REQUIRED")).expect("decodes");
    let pay402::x402::AnyPaymentRequired::V2(decoded) = decoded else { panic!("v2") };
    assert_eq!(String::from_utf8(pay402::json::compact(&decoded).unwrap()).unwrap(), s(sec, "decoded"));
}

#[test]
fn route_patterns_and_normalisation_match_python() {
    let v = vectors();
    let obs = &v["behaviour_observations"]["x402_edge_cases"];
    for (key, want) in obs["route_regex"].as_object().expect("route_regex") {
        let p = pay402::web::RoutePattern::parse(key).expect("compiles");
        assert_eq!(p.regex_source(), want.as_str().expect("regex"), "{key}");
    }
    for (raw, want) in obs["normalize"].as_object().expect("normalize") {
        assert_eq!(pay402::web::normalize_path(raw), want.as_str().expect("path"), "{raw:?}");
    }
}
