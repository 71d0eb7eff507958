//! MPP golden vectors (tests/vectors/okx-golden.json, produced by pympp 0.8.2 and cross-checked
//! with pympp 0.16 and the Rust `mpp` crate) reproduced byte for byte: challenge ids, HMAC
//! inputs, `WWW-Authenticate`, 402 problem bodies, the `Authorization: Payment` credential and
//! `Payment-Receipt`.

use pay402::mpp::{
    Challenge, Credential, MppErrorKind, ParsedChallenge, Receipt, b64url_decode, canonical_json, parse_rfc3339,
    parse_www_authenticate, payment_required_detail, verify_echo_at,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use time::macros::datetime;

const VECTORS: &str = "tests/vectors/okx-golden.json";
const SECRET: &str = "test-mpp-secret";

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing in {v}"))
}

fn opt(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn cases() -> Vec<Value> {
    let cases = vectors()["mpp_challenge"]["cases"].as_array().expect("mpp_challenge.cases").clone();
    assert_eq!(cases.len(), 4, "expected the 4 mpp_challenge cases");
    cases
}

fn challenge_of(case: &Value) -> Challenge {
    let i = &case["inputs"];
    let request: Map<String, Value> = i["request"].as_object().expect("request object").clone();
    let opaque: Option<BTreeMap<String, String>> = i.get("opaque").and_then(Value::as_object).map(|m| {
        m.iter().map(|(k, v)| (k.clone(), v.as_str().expect("opaque values are strings").to_owned())).collect()
    });
    Challenge::new(
        s(i, "secret_key"),
        s(i, "realm"),
        s(i, "method"),
        s(i, "intent"),
        request,
        opt(i, "expires"),
        opt(i, "description"),
        opt(i, "digest"),
        opaque,
    )
}

/// The `WWW-Authenticate` our emitter must match: pympp's, or (non-ASCII case) the recommended
/// JCS/raw-UTF-8 form.
fn expected_www(case: &Value) -> &str {
    case.get("WWW-Authenticate")
        .or_else(|| case.get("WWW-Authenticate_pympp_0.16_and_rust_jcs"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no WWW-Authenticate in {}", case["name"]))
}

fn check_parsed(p: &ParsedChallenge, c: &Challenge) {
    assert_eq!(p.id, c.id);
    assert_eq!(
        (p.realm.as_str(), p.method.as_str(), p.intent.as_str()),
        (c.realm.as_str(), c.method.as_str(), c.intent.as_str())
    );
    assert_eq!(p.request, c.request);
    assert_eq!(p.expires, c.expires);
    assert_eq!(p.description, c.description);
    assert_eq!(p.digest, c.digest);
    assert_eq!(p.opaque, c.opaque);
    assert_eq!(p.opaque_b64, c.opaque_b64());
}

#[test]
fn challenge_ids_inputs_and_headers() {
    for case in cases() {
        let name = s(&case, "name");
        let c = challenge_of(&case);
        assert_eq!(c.id, s(&case, "id"), "{name}: id");
        assert!(c.verify_id(s(&case["inputs"], "secret_key")), "{name}: verify_id");
        assert!(!c.verify_id("another-secret"), "{name}: verify_id with a wrong secret");
        if let Some(json) = case.get("canonical_request_json").and_then(Value::as_str) {
            assert_eq!(canonical_json(&case["inputs"]["request"]), json, "{name}: canonical JSON");
        }
        if let Some(b64) = case.get("request_b64url").and_then(Value::as_str) {
            assert_eq!(c.request_b64(), b64, "{name}: request_b64url");
        }
        if let Some(input) = case.get("hmac_input").and_then(Value::as_str) {
            assert_eq!(c.hmac_input(), input, "{name}: hmac_input");
        }
        let www = c.to_www_authenticate().expect("serialisable");
        assert_eq!(www, expected_www(&case), "{name}: WWW-Authenticate");
    }
}

#[test]
fn pympp_optional_parameter_order() {
    let cases = cases();
    let www = cases[2].clone();
    let h = s(&www, "WWW-Authenticate");
    let pos = |p: &str| h.find(&format!(", {p}=")).unwrap_or_else(|| panic!("{p} missing"));
    assert!(pos("request") < pos("digest") && pos("digest") < pos("expires") && pos("expires") < pos("opaque"));
    let session = s(&cases[1], "WWW-Authenticate");
    assert!(session.find(", expires=").unwrap() < session.find(", description=").unwrap());
    // Ours, with all four optionals: digest, expires, description, opaque.
    let mut c = challenge_of(&cases[2]);
    c.description = Some("d".into());
    let ours = c.to_www_authenticate().unwrap();
    let tail = ours.split_once(", request=").unwrap().1;
    let keys: Vec<&str> = tail.split(", ").skip(1).map(|p| p.split_once('=').unwrap().0).collect();
    assert_eq!(keys, ["digest", "expires", "description", "opaque"]);
}

#[test]
fn non_ascii_case_header_forms() {
    let case = &cases()[3];
    let c = challenge_of(case);
    // The id is over raw UTF-8 JSON; both header forms carry the same id.
    assert_eq!(c.to_www_authenticate().unwrap(), s(case, "WWW-Authenticate_pympp_0.16_and_rust_jcs"));
    let old = parse_www_authenticate(&[s(case, "WWW-Authenticate_pympp_0.8.2")]).unwrap();
    assert_eq!(old.len(), 1);
    // 0.8.2 printed ASCII-escaped JSON: different bytes, same object.
    assert_eq!(old[0].request, c.request);
    assert_ne!(old[0].request_b64, c.request_b64());
    assert_eq!(old[0].id, c.id);
    // A credential echoing the 0.8.2 form verifies: the server re-canonicalises.
    let d = verify_echo_at(&old[0].to_echo(), "k", "r", "evm", "charge", &c.request, datetime!(2026-03-30 10:00 UTC));
    assert_eq!(d.unwrap().request, c.request);
}

#[test]
fn problem_details_bodies() {
    let mut seen = 0;
    for case in cases() {
        let Some(expected) = case.get("problem_details_body") else { continue };
        seen += 1;
        let c = challenge_of(&case);
        let p = c.problem_details();
        assert_eq!(serde_json::to_value(&p).unwrap(), *expected, "{}", case["name"]);
        assert_eq!(p.detail, payment_required_detail(&c.realm, c.description.as_deref()));
        let built = MppErrorKind::PaymentRequired
            .problem(payment_required_detail(&c.realm, c.description.as_deref()), Some(c.id.clone()));
        assert_eq!(built, p);
        if let Some(bytes) = case.get("problem_details_body_bytes_as_python_sends").and_then(Value::as_str) {
            assert_eq!(String::from_utf8(p.to_python_json()).unwrap(), bytes);
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn www_authenticate_parses_back() {
    for case in cases() {
        let c = challenge_of(&case);
        let parsed = parse_www_authenticate(&[expected_www(&case)]).unwrap();
        assert_eq!(parsed.len(), 1, "{}", case["name"]);
        check_parsed(&parsed[0], &c);
        assert_eq!(parsed[0].request_b64, c.request_b64());
        assert!(parsed[0].verify_id(SECRET) == (s(&case["inputs"], "secret_key") == SECRET));
    }
    // All four in one header line plus a Bearer challenge, and split across lines.
    let all: Vec<String> = cases().iter().map(|c| expected_www(c).to_owned()).collect();
    let line = format!("Bearer realm=\"x\", {}", all.join(", "));
    assert_eq!(parse_www_authenticate(&[&line]).unwrap().len(), 4);
    let lines: Vec<&str> = all.iter().map(String::as_str).collect();
    let parsed = parse_www_authenticate(&lines).unwrap();
    for (p, case) in parsed.iter().zip(cases()) {
        check_parsed(p, &challenge_of(&case));
    }
}

#[test]
fn rust_order_header_parses_to_the_same_fields() {
    let v = vectors();
    let h = s(&v["_meta"]["rust_cross_check"], "rust_www_authenticate_with_description_and_digest");
    let p = &parse_www_authenticate(&[h]).unwrap()[0];
    let base = &cases()[0];
    assert_eq!(p.id, s(base, "id"));
    assert_eq!(p.request_b64, s(base, "request_b64url"));
    assert_eq!(p.request, *base["inputs"]["request"].as_object().unwrap());
    assert_eq!((p.realm.as_str(), p.method.as_str(), p.intent.as_str()), ("api.example.com", "evm", "charge"));
    assert_eq!(p.expires.as_deref(), Some("2026-03-30T10:05:00Z"));
    assert_eq!(p.description.as_deref(), Some("d"));
    assert_eq!(p.digest.as_deref(), Some("sha-256=:x:"));
    assert_eq!(p.opaque, None);

    // The same challenge written in pympp order parses identically.
    let c = Challenge {
        description: Some("d".into()),
        digest: Some("sha-256=:x:".into()),
        id: p.id.clone(),
        ..challenge_of(base)
    };
    let pympp_order = c.to_www_authenticate().unwrap();
    assert_ne!(pympp_order, h);
    assert_eq!(&parse_www_authenticate(&[&pympp_order]).unwrap()[0], p);
}

#[test]
fn authorization_credential() {
    let v = vectors();
    let cr = &v["mpp_credential_and_receipt"];
    let header = s(cr, "Authorization");
    let json = s(cr, "Authorization_decoded_json");

    // Decoded JSON → Credential → header, byte for byte.
    let c = Credential::from_json(json.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(c.to_json()).unwrap(), json);
    assert_eq!(c.to_authorization_header(), header);

    // Header → Credential → JSON, byte for byte.
    let back = Credential::from_authorization_header(header).unwrap();
    assert_eq!(back, c);
    assert_eq!(String::from_utf8(back.to_json()).unwrap(), json);
    assert_eq!(b64url_decode(header.strip_prefix("Payment ").unwrap()).unwrap(), json.as_bytes());

    // Built from the charge challenge directly.
    let charge = challenge_of(&cases()[0]);
    let payload: Map<String, Value> = serde_json::from_str(
        r#"{"type":"hash","hash":"0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}"#,
    )
    .unwrap();
    let built = Credential::new(
        charge.to_echo(),
        payload,
        Some("did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into()),
    );
    assert_eq!(built.to_authorization_header(), header);
    let payer = built.payer().unwrap();
    assert_eq!(payer.chain_id, 196);
    assert_eq!(pay402::mpp::did_pkh(payer.chain_id, &payer.address), built.source.clone().unwrap());

    // And the server accepts its echo for the charge route before expiry, not after.
    let request = charge.request.clone();
    let ok = verify_echo_at(
        &back.challenge,
        SECRET,
        "api.example.com",
        "evm",
        "charge",
        &request,
        datetime!(2026-03-30 10:04:59 UTC),
    );
    assert_eq!(ok.unwrap().id, charge.id);
    let late = verify_echo_at(
        &back.challenge,
        SECRET,
        "api.example.com",
        "evm",
        "charge",
        &request,
        datetime!(2026-03-30 10:05:01 UTC),
    );
    assert_eq!(late.unwrap_err().kind(), MppErrorKind::PaymentExpired);
}

#[test]
fn payment_receipts() {
    let v = vectors();
    let cases = v["mpp_credential_and_receipt"]["Payment-Receipt_cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let r = &case["receipt"];
        // "2026-03-30T10:00:01+00:00 (datetime)" — the Python value was a datetime object.
        let ts = s(r, "timestamp").split(' ').next().unwrap();
        let at = parse_rfc3339(ts).unwrap();
        let receipt = Receipt::success_at(s(r, "reference"), s(r, "method"), opt(r, "externalId"), at);
        assert_eq!(String::from_utf8(receipt.to_json()).unwrap(), s(&case, "decoded"));
        assert_eq!(receipt.to_payment_receipt(), s(&case, "header"));
        let back = Receipt::from_payment_receipt(s(&case, "header")).unwrap();
        assert_eq!(back, receipt);
    }
}
