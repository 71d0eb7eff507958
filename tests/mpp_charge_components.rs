//! The MPP `evm` charge components end to end, without HTTP: a seller's challenge goes through
//! `WWW-Authenticate`, the buyer's [`MppChargeClient`] answers it with a signed EIP-3009
//! credential, the seller checks the echo and builds the Settlement-Agent body exactly as OKX's
//! `ChargeIntent` does (wire facts §9.3), and the in-process [`EmbeddedSa`] settles it against
//! its ledger — or refuses it with the SA code, error class and HTTP status OKX's SA would use.

use pay402::evm::{self, B256, PrivateKeySigner, TransferWithAuthorization, U256};
use pay402::mpp::{
    Challenge, ChargeClientError, Credential, EmbeddedSa, MppChargeClient, ParsedChallenge, parse_rfc3339,
    parse_www_authenticate, python_isoformat_z, verify_echo_at,
};
use pay402::okx::sa::{
    ChargeAuthorization, ChargeHashPayload, ChargeReceipt, ChargeSettleRequest, ChargeTransactionPayload,
    ChargeVerifyHashRequest, EvmPaymentError, SaChallengeEcho, SaClient, SaError, TransferAuthorization,
};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;

const SECRET: &str = "s";
const REALM: &str = "api.example.com";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
const RECIPIENT: &str = "0x1111111111111111111111111111111111111111";
const SPLIT_A: &str = "0x2222222222222222222222222222222222222222";
const SPLIT_B: &str = "0x3333333333333333333333333333333333333333";
/// Anvil account 0.
const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// Anvil account 1 (never funded).
const POOR_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const POOR: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// "Now" for the whole file: the real time, read once.
fn now() -> u64 {
    static NOW: OnceLock<u64> = OnceLock::new();
    *NOW.get_or_init(evm::system_unix_time)
}

fn at(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap()).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn charge_request(amount: &str, splits: Option<Value>) -> Map<String, Value> {
    let mut details = json!({"chainId": 196, "feePayer": false});
    if let Some(splits) = splits {
        details["splits"] = splits;
    }
    obj(json!({"amount": amount, "currency": USDT0, "recipient": RECIPIENT, "methodDetails": details}))
}

/// The seller's challenge (expires now + 5 min unless `expires` is `None`).
fn challenge(request: Map<String, Value>, expires: Option<String>) -> Challenge {
    Challenge::new(SECRET, REALM, "evm", "charge", request, expires, None, None, None)
}

fn five_minutes() -> Option<String> {
    Some(python_isoformat_z(at(now() + 300)))
}

/// The buyer's view: the challenge serialised to `WWW-Authenticate` and parsed back.
fn over_the_wire(c: &Challenge) -> ParsedChallenge {
    let header = c.to_www_authenticate().expect("render WWW-Authenticate");
    let mut parsed = parse_www_authenticate(&[&header]).expect("parse WWW-Authenticate");
    assert_eq!(parsed.len(), 1);
    parsed.remove(0)
}

fn client(key: &str) -> MppChargeClient {
    let signer: PrivateKeySigner = key.parse().unwrap();
    MppChargeClient::new(signer).with_clock(now)
}

fn sa() -> EmbeddedSa {
    EmbeddedSa::new().with_clock(now)
}

/// The seller's side: parse the `Authorization` header, check the echo like pympp, and build
/// the `charge/settle` body like OKX's Python `ChargeIntent.verify` (§9.3): echo
/// id/realm/method/intent/request/expires, `payload.type` transaction, `auth.type or
/// "eip-3009"`, missing fields as `""`, `signature`/`splits` only when present, `source` or
/// `""`.
fn seller_settle_request(credential: &Credential, route_request: &Map<String, Value>) -> ChargeSettleRequest {
    let received = Credential::from_authorization_header(&credential.to_authorization_header()).unwrap();
    assert_eq!(&received, credential);
    verify_echo_at(&received.challenge, SECRET, REALM, "evm", "charge", route_request, at(now())).expect("echo ok");
    sa_body(&received)
}

/// The `charge/settle` body of a credential (§9.3).
fn sa_body(received: &Credential) -> ChargeSettleRequest {
    assert_eq!(received.payload["type"], "transaction");
    let auth = received.payload["authorization"].as_object().expect("authorization object");
    let text = |a: &Map<String, Value>, k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let transfer = |a: &Map<String, Value>| TransferAuthorization {
        auth_type: a.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("eip-3009").to_owned(),
        from: text(a, "from"),
        to: text(a, "to"),
        value: text(a, "value"),
        valid_after: text(a, "validAfter"),
        valid_before: text(a, "validBefore"),
        nonce: text(a, "nonce"),
        signature: a.get("signature").and_then(Value::as_str).map(str::to_owned),
    };
    let t = transfer(auth);
    let splits = auth
        .get("splits")
        .and_then(Value::as_array)
        .map(|s| s.iter().map(|v| transfer(v.as_object().expect("split object"))).collect());
    let e = &received.challenge;
    ChargeSettleRequest {
        challenge: SaChallengeEcho {
            id: e.id.clone(),
            realm: e.realm.clone(),
            method: e.method.clone(),
            intent: e.intent.clone(),
            request: e.request.clone(),
            expires: e.expires.clone(),
        },
        payload: ChargeTransactionPayload {
            authorization: ChargeAuthorization {
                auth_type: t.auth_type,
                from: t.from,
                to: t.to,
                value: t.value,
                valid_after: t.valid_after,
                valid_before: t.valid_before,
                nonce: t.nonce,
                signature: t.signature,
                splits,
            },
        },
        source: received.source.clone().unwrap_or_default(),
    }
}

/// Challenge → credential → seller body, for `request`.
fn paid(key: &str, request: Map<String, Value>) -> (Challenge, ChargeSettleRequest) {
    let c = challenge(request.clone(), five_minutes());
    let credential = client(key).credential_for(&over_the_wire(&c)).expect("credential");
    (c, seller_settle_request(&credential, &request))
}

fn hash_request(c: &Challenge, hash: &str) -> ChargeVerifyHashRequest {
    let e = c.to_echo();
    ChargeVerifyHashRequest {
        challenge: SaChallengeEcho {
            id: e.id,
            realm: e.realm,
            method: e.method,
            intent: e.intent,
            request: e.request,
            expires: e.expires,
        },
        payload: ChargeHashPayload { hash: hash.to_owned() },
        source: format!("did:pkh:eip155:196:{PAYER}"),
    }
}

/// Asserts an SA refusal: code, error class, HTTP status and (when given) message.
#[track_caller]
fn refused(result: Result<ChargeReceipt, SaError>, code: i64, class: &str, status: u16, msg: Option<&str>) {
    let err = result.expect_err("the SA must refuse");
    let SaError::Api { code: got, error } = &err else { panic!("not an SA answer: {err:?}") };
    assert_eq!(*got, code, "{err}");
    assert_eq!(error.title(), class, "{err}");
    assert_eq!(error.status(), status, "{err}");
    assert_eq!(err.status(), status);
    if let Some(msg) = msg {
        assert_eq!(error.message(), msg);
    }
}

fn balance(sa: &EmbeddedSa, owner: &str) -> U256 {
    sa.balance(USDT0, owner)
}

fn u(n: u64) -> U256 {
    U256::from(n)
}

#[tokio::test]
async fn charge_settles_and_moves_balances() {
    let request = charge_request("10000", None);
    let c = challenge(request.clone(), five_minutes());
    let parsed = over_the_wire(&c);
    assert!(parsed.verify_id(SECRET));
    assert_eq!(parsed.request, request);

    let credential = client(PAYER_KEY).credential_for(&parsed).unwrap();
    assert_eq!(credential.challenge, parsed.to_echo());
    assert_eq!(credential.challenge.request, c.request_b64());
    assert_eq!(credential.source.as_deref(), Some("did:pkh:eip155:196:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"));
    let auth = &credential.payload["authorization"];
    assert_eq!(auth["type"], "eip-3009");
    assert_eq!(auth["from"], PAYER);
    assert_eq!(auth["to"], RECIPIENT);
    assert_eq!(auth["value"], "10000");
    assert_eq!(auth["validAfter"], (now() - 600).to_string());
    assert_eq!(auth["validBefore"], (now() + 420).to_string()); // expires + 120 s
    assert!(auth.get("splits").is_none());

    let body = seller_settle_request(&credential, &request);
    assert_eq!(body.source, credential.source.clone().unwrap());
    let sa = sa();
    sa.fund(USDT0, PAYER, u(50_000)).unwrap();
    let receipt = SaClient::settle(&sa, &body).await.expect("settled");

    assert_eq!(receipt.method, "evm");
    assert_eq!(receipt.status, "success");
    assert_eq!(receipt.chain_id, "196");
    assert_eq!(receipt.challenge_id, c.id);
    assert_eq!(receipt.external_id, None);
    assert!(receipt.reference.starts_with("0x") && receipt.reference.len() == 66, "{}", receipt.reference);
    assert_eq!(receipt.reference, receipt.reference.to_lowercase());
    assert!(receipt.timestamp.ends_with('Z') && !receipt.timestamp.contains('.'), "{}", receipt.timestamp);
    assert_eq!(parse_rfc3339(&receipt.timestamp).unwrap(), at(now()));

    assert_eq!(balance(&sa, PAYER), u(40_000));
    assert_eq!(balance(&sa, RECIPIENT), u(10_000));
    assert!(sa.is_nonce_used(USDT0, PAYER, auth["nonce"].as_str().unwrap()));
    assert_eq!(sa.charges(), vec![receipt.clone()]);
    assert_eq!(sa.charge_count(), 1);

    // The same authorization again: the nonce is spent.
    refused(sa.settle_now(&body), 70003, "MalformedCredentialError", 402, Some("authorization nonce already used"));
    assert_eq!(balance(&sa, PAYER), u(40_000));

    // The reference is deterministic: keccak(chainId ‖ token ‖ from ‖ nonce).
    let nonce = evm::parse_bytes32(auth["nonce"].as_str().unwrap()).unwrap();
    assert_eq!(
        receipt.reference,
        pay402::evm::transaction_hash(
            196,
            evm::parse_address(USDT0).unwrap(),
            evm::parse_address(PAYER).unwrap(),
            nonce
        )
    );
}

#[test]
fn tampered_requests_are_refused_and_change_nothing() {
    let sa = sa();
    sa.fund(USDT0, PAYER, u(50_000)).unwrap();
    let (_, body) = paid(PAYER_KEY, charge_request("10000", None));

    let mut wrong_recipient = body.clone();
    wrong_recipient.payload.authorization.to = SPLIT_A.to_owned();
    refused(sa.settle_now(&wrong_recipient), 70000, "BadRequestError", 400, None);

    let mut wrong_amount = body.clone();
    wrong_amount.payload.authorization.value = "9999".to_owned();
    refused(sa.settle_now(&wrong_amount), 70000, "BadRequestError", 400, None);

    let mut malformed = body.clone();
    malformed.payload.authorization.nonce = "0x1234".to_owned();
    refused(sa.settle_now(&malformed), 70000, "BadRequestError", 400, None);

    // One flipped bit in r.
    let mut tampered = body.clone();
    let sig = tampered.payload.authorization.signature.clone().unwrap();
    let flipped = if &sig[10..11] == "0" { "1" } else { "0" };
    tampered.payload.authorization.signature = Some(format!("{}{flipped}{}", &sig[..10], &sig[11..]));
    refused(sa.settle_now(&tampered), 70004, "InvalidSignatureError", 402, None);

    // A valid signature by somebody else over the same authorization.
    let (_, theirs) = paid(POOR_KEY, charge_request("10000", None));
    let mut stolen = body.clone();
    stolen.payload.authorization.signature = theirs.payload.authorization.signature;
    refused(sa.settle_now(&stolen), 70004, "InvalidSignatureError", 402, None);

    // A broken echo.
    let mut no_echo = body.clone();
    no_echo.challenge = SaChallengeEcho::default();
    refused(sa.settle_now(&no_echo), 70009, "InvalidChallengeError", 402, None);

    assert_eq!(sa.charge_count(), 0);
    assert_eq!(balance(&sa, PAYER), u(50_000));
    assert_eq!(balance(&sa, RECIPIENT), U256::ZERO);

    // The untouched body still settles.
    sa.settle_now(&body).expect("the original is intact");
    assert_eq!(balance(&sa, RECIPIENT), u(10_000));
}

#[test]
fn a_nonce_is_single_use_across_challenges() {
    let sa = sa();
    sa.fund(USDT0, PAYER, u(50_000)).unwrap();
    let fixed = |c: &Challenge| {
        client(PAYER_KEY).with_nonce_source(|| B256::repeat_byte(0x42)).credential_for(&over_the_wire(c)).unwrap()
    };
    let request = charge_request("10000", None);
    let first = challenge(request.clone(), five_minutes());
    let second = challenge(request.clone(), Some(python_isoformat_z(at(now() + 200))));
    assert_ne!(first.id, second.id);
    sa.settle_now(&seller_settle_request(&fixed(&first), &request)).unwrap();
    refused(
        sa.settle_now(&seller_settle_request(&fixed(&second), &request)),
        70003,
        "MalformedCredentialError",
        402,
        Some("authorization nonce already used"),
    );
    assert_eq!(balance(&sa, PAYER), u(40_000));
}

#[test]
fn expired_authorization_and_unfunded_payer() {
    // No challenge expiry: the client signs until now + 300 s; the SA looks at it later.
    let request = charge_request("10000", None);
    let c = challenge(request.clone(), None);
    let credential = client(PAYER_KEY).credential_for(&over_the_wire(&c)).unwrap();
    assert_eq!(credential.payload["authorization"]["validBefore"], (now() + 300).to_string());
    // (pympp's echo check insists on an expiry, so the body is built without it.)
    let body = sa_body(&credential);
    assert_eq!(body.challenge.expires, None);
    let late = EmbeddedSa::new().with_clock(|| now() + 301).with_faucet(u(1_000_000));
    refused(late.settle_now(&body), 70003, "MalformedCredentialError", 402, Some("authorization expired"));
    let early = late.clone().with_clock(|| now() - 601);
    refused(early.settle_now(&body), 70003, "MalformedCredentialError", 402, Some("authorization not yet valid"));
    // At the last valid second it settles.
    late.clone().with_clock(|| now() + 300).settle_now(&body).expect("valid until validBefore");

    // A payer the ledger has never funded (no faucet).
    let sa = sa();
    let (_, poor) = paid(POOR_KEY, request);
    assert_eq!(poor.payload.authorization.from, POOR);
    refused(sa.settle_now(&poor), 70003, "MalformedCredentialError", 402, Some("insufficient balance"));
    sa.fund(USDT0, POOR, u(9_999)).unwrap();
    refused(sa.settle_now(&poor), 70003, "MalformedCredentialError", 402, Some("insufficient balance"));
    sa.fund(USDT0, POOR, u(1)).unwrap();
    sa.settle_now(&poor).expect("now funded");
    assert_eq!(balance(&sa, POOR), U256::ZERO);
}

fn splits_request() -> Map<String, Value> {
    charge_request(
        "10000",
        Some(json!([
            {"amount": "2000", "recipient": SPLIT_A},
            {"amount": "500", "recipient": SPLIT_B, "memo": "platform fee"}
        ])),
    )
}

#[test]
fn splits_pay_every_recipient_exactly() {
    let sa = sa();
    sa.fund(USDT0, PAYER, u(10_000)).unwrap();
    let counter = Arc::new(AtomicU8::new(1));
    let c = challenge(splits_request(), five_minutes());
    let credential = client(PAYER_KEY)
        .with_nonce_source(move || B256::repeat_byte(counter.fetch_add(1, Ordering::SeqCst)))
        .credential_for(&over_the_wire(&c))
        .unwrap();
    let body = seller_settle_request(&credential, &splits_request());
    let auth = &body.payload.authorization;
    assert_eq!(auth.value, "7500");
    let splits = auth.splits.as_ref().unwrap();
    assert_eq!(splits.len(), 2);
    assert_eq!((splits[0].to.as_str(), splits[0].value.as_str()), (SPLIT_A, "2000"));
    assert_eq!((splits[1].to.as_str(), splits[1].value.as_str()), (SPLIT_B, "500"));
    // Own nonces and own signatures.
    assert_eq!(splits[0].nonce, evm::to_hex(B256::repeat_byte(2)));
    assert_ne!(splits[0].signature, auth.signature);

    let receipt = sa.settle_now(&body).unwrap();
    assert_eq!(receipt.challenge_id, c.id);
    assert_eq!(balance(&sa, PAYER), U256::ZERO);
    assert_eq!(balance(&sa, RECIPIENT), u(7_500));
    assert_eq!(balance(&sa, SPLIT_A), u(2_000));
    assert_eq!(balance(&sa, SPLIT_B), u(500));
    for n in 1..=3u8 {
        assert!(sa.is_nonce_used(USDT0, PAYER, &evm::to_hex(B256::repeat_byte(n))));
    }
}

#[test]
fn bad_splits_are_refused() {
    let sa = sa();
    sa.fund(USDT0, PAYER, u(1_000_000)).unwrap();
    let (_, body) = paid(PAYER_KEY, splits_request());

    // Σ splits > amount.
    let mut over = body.clone();
    over.payload.authorization.splits.as_mut().unwrap()[0].value = "20000".to_owned();
    refused(sa.settle_now(&over), 70005, "InvalidSplitError", 400, None);

    // 11 splits.
    let mut many = body.clone();
    let splits = many.payload.authorization.splits.as_mut().unwrap();
    let first = splits[0].clone();
    splits.resize(11, first);
    refused(sa.settle_now(&many), 70006, "InvalidSplitError", 400, None);

    // A properly signed split diverted to another recipient.
    let mut diverted = body.clone();
    let split = &mut diverted.payload.authorization.splits.as_mut().unwrap()[0];
    resign(split, |m| m.to = evm::parse_address(SPLIT_B).unwrap());
    refused(sa.settle_now(&diverted), 70000, "BadRequestError", 400, None);

    // A split's own signature is checked against its own authorization.
    let mut swapped = body.clone();
    let splits = swapped.payload.authorization.splits.as_mut().unwrap();
    splits[0].signature = splits[1].signature.clone();
    refused(sa.settle_now(&swapped), 70004, "InvalidSignatureError", 402, None);

    // Splits the request did not ask for.
    let (_, plain) = paid(PAYER_KEY, charge_request("10000", None));
    let mut extra = plain.clone();
    extra.payload.authorization.value = "7500".to_owned();
    extra.payload.authorization.splits = body.payload.authorization.splits.clone();
    refused(sa.settle_now(&extra), 70000, "BadRequestError", 400, None);

    // The buyer's client refuses such requests up front.
    let over_request = charge_request("100", Some(json!([{"amount": "101", "recipient": SPLIT_A}])));
    let c = challenge(over_request, five_minutes());
    assert!(matches!(
        client(PAYER_KEY).credential_for(&over_the_wire(&c)),
        Err(ChargeClientError::SplitsExceedAmount { .. })
    ));

    assert_eq!(sa.charge_count(), 0);
    sa.settle_now(&body).expect("the original is intact");
    assert_eq!(balance(&sa, SPLIT_A), u(2_000));
}

/// Re-signs a split after `edit` (as the payer).
fn resign(split: &mut TransferAuthorization, edit: impl FnOnce(&mut TransferWithAuthorization)) {
    let signer: PrivateKeySigner = PAYER_KEY.parse().unwrap();
    let mut message = evm::Eip3009Authorization {
        from: split.from.clone(),
        to: split.to.clone(),
        value: split.value.clone(),
        valid_after: split.valid_after.clone(),
        valid_before: split.valid_before.clone(),
        nonce: split.nonce.clone(),
    }
    .to_message()
    .unwrap();
    edit(&mut message);
    let domain = evm::eip3009_domain("USD\u{20ae}0", "1", 196, evm::parse_address(USDT0).unwrap());
    split.signature = Some(evm::sign_transfer_authorization(&signer, &domain, &message).unwrap());
    split.to = evm::checksum(&message.to);
    split.value = message.value.to_string();
}

#[tokio::test]
async fn verify_hash_known_unknown_and_reused() {
    let sa = sa();
    let hash = format!("0x{}", "cd".repeat(32));
    let request = charge_request("10000", None);
    let first = challenge(request.clone(), five_minutes());

    let err = SaClient::verify_hash(&sa, &hash_request(&first, &hash)).await.unwrap_err();
    assert!(
        matches!(&err, SaError::Api { code: 70007, error: EvmPaymentError::InternalSA(m) } if m == "transaction not confirmed")
    );
    assert_eq!(err.status(), 500);

    sa.record_transfer(&hash, PAYER, RECIPIENT, USDT0, u(10_000)).unwrap();
    let receipt = SaClient::verify_hash(&sa, &hash_request(&first, &hash)).await.expect("known hash");
    assert_eq!(receipt.reference, hash);
    assert_eq!(
        (receipt.method.as_str(), receipt.status.as_str(), receipt.chain_id.as_str()),
        ("evm", "success", "196")
    );
    assert_eq!(receipt.challenge_id, first.id);
    assert_eq!(sa.charge_count(), 1);

    // The same transaction for another challenge.
    let second = challenge(request, Some(python_isoformat_z(at(now() + 100))));
    refused(sa.verify_hash_now(&hash_request(&second, &hash)), 70003, "MalformedCredentialError", 402, None);

    // A transfer of the wrong amount, or to someone else.
    let short = format!("0x{}", "ce".repeat(32));
    sa.record_transfer(&short, PAYER, RECIPIENT, USDT0, u(9_999)).unwrap();
    refused(sa.verify_hash_now(&hash_request(&second, &short)), 70000, "BadRequestError", 400, None);
    let elsewhere = format!("0x{}", "cf".repeat(32));
    sa.record_transfer(&elsewhere, PAYER, SPLIT_A, USDT0, u(10_000)).unwrap();
    refused(sa.verify_hash_now(&hash_request(&second, &elsewhere)), 70000, "BadRequestError", 400, None);
    assert_eq!(sa.charge_count(), 1);
}

#[test]
fn errors_render_as_okx_problems() {
    let sa = sa();
    sa.fund(USDT0, PAYER, u(1_000_000)).unwrap();
    let (_, body) = paid(PAYER_KEY, splits_request());
    let mut many = body;
    let splits = many.payload.authorization.splits.as_mut().unwrap();
    let first = splits[0].clone();
    splits.resize(11, first);
    let err = sa.settle_now(&many).unwrap_err();
    let SaError::Api { error, .. } = &err else { panic!("not an SA answer: {err:?}") };
    assert_eq!(
        String::from_utf8(error.to_problem_json()).unwrap(),
        r#"{"type":"https://paymentauth.org/problems/invalid-split","title":"InvalidSplitError","status":400,"detail":"11 splits, at most 10 are allowed"}"#
    );
    // Buyers get the class without the SA's text (L4).
    assert_eq!(
        String::from_utf8(EvmPaymentError::from(err).to_problem_json()).unwrap(),
        r#"{"type":"https://paymentauth.org/problems/invalid-split","title":"InvalidSplitError","status":400,"detail":"InvalidSplitError"}"#
    );
}

#[test]
fn authorization_header_round_trip() {
    let request = charge_request("10000", None);
    let c = challenge(request.clone(), five_minutes());
    let header = c.to_www_authenticate().unwrap();
    let value = client(PAYER_KEY).authorization_header_for(&["Bearer realm=\"x\"", &header]).unwrap();
    let credential = Credential::from_authorization_header(&value).unwrap();
    let sa = sa().with_faucet(u(10_000));
    sa.settle_now(&seller_settle_request(&credential, &request)).expect("settled");
    assert_eq!(balance(&sa, PAYER), U256::ZERO);
    assert_eq!(balance(&sa, RECIPIENT), u(20_000));
}
