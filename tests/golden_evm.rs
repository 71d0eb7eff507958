//! EIP-712 / EIP-3009 golden vectors (tests/vectors/okx-golden.json, section `eip712`) reproduced
//! byte for byte, and the buyer → embedded facilitator round trip without HTTP: a signed `exact`
//! payment verified and settled, every tampering refused with OKX's exact `invalidReason`,
//! payment selectors, and v1 challenges.

use pay402::chain::X_LAYER_USDT0;
use pay402::evm::{self, B256, PrivateKeySigner, TransferWithAuthorization, U256};
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, FacilitatorClient, JsonObject, PaymentPayload, PaymentRequired,
    PaymentRequiredV1, PaymentRequirements, PaymentRequirementsV1, ResourceInfo,
};
use pay402::x402::{
    ClientError, ExactEvmClientScheme, PaymentSelector, SchemeNetworkClient, X402Client, max_amount, prefer_network,
    prefer_scheme,
};
use pay402::x402::{EmbeddedFacilitator, reasons};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const VECTORS: &str = "tests/vectors/okx-golden.json";
const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
const NOW: u64 = 1_767_000_000;

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing in {v}"))
}

fn golden_signer(eip712: &Value) -> PrivateKeySigner {
    s(eip712, "signer_private_key").parse().expect("vector key")
}

// ---------------------------------------------------------------------------------------------
// Golden vectors
// ---------------------------------------------------------------------------------------------

#[test]
fn eip712_domain_typehash() {
    let v = vectors();
    let eip712 = &v["eip712"];
    assert_eq!(s(eip712, "EIP712Domain_typestring"), evm::EIP712_DOMAIN_TYPE);
    assert_eq!(evm::keccak256(evm::EIP712_DOMAIN_TYPE).to_string(), s(eip712, "EIP712Domain_typehash"));
    let domain = evm::eip3009_domain("x", "1", 1, evm::Address::ZERO);
    assert_eq!(domain.type_hash().to_string(), s(eip712, "EIP712Domain_typehash"));
    assert_eq!(golden_signer(eip712).address().to_checksum(None), s(eip712, "signer_address"));
}

#[test]
fn transfer_with_authorization_eip3009() {
    let v = vectors();
    let eip712 = &v["eip712"];
    let case = &eip712["TransferWithAuthorization_EIP3009"];

    assert_eq!(s(case, "typestring"), evm::TRANSFER_WITH_AUTHORIZATION_TYPE);
    assert_eq!(evm::transfer_authorization_type_hash().to_string(), s(case, "typehash"));

    let d = &case["domain"];
    assert_eq!(s(d, "name").as_bytes(), b"USD\xe2\x82\xae0");
    let chain_id = d["chainId"].as_u64().expect("chainId");
    let domain = evm::eip3009_domain(
        s(d, "name"),
        s(d, "version"),
        chain_id,
        evm::parse_address(s(d, "verifyingContract")).unwrap(),
    );
    assert_eq!(domain.separator().to_string(), s(case, "domain_separator"));
    assert_eq!(domain.hash_struct().to_string(), s(case, "domain_separator"));

    let m = &case["message"];
    let authorization = evm::Eip3009Authorization {
        from: s(m, "from").into(),
        to: s(m, "to").into(),
        value: s(m, "value").into(),
        valid_after: s(m, "validAfter").into(),
        valid_before: s(m, "validBefore").into(),
        nonce: s(m, "nonce").into(),
    };
    let message: TransferWithAuthorization = authorization.to_message().unwrap();
    assert_eq!(evm::Eip3009Authorization::from_message(&message), authorization);

    let digest = evm::transfer_authorization_digest(&domain, &message);
    assert_eq!(digest.to_string(), s(case, "digest"));

    let signer = golden_signer(eip712);
    assert_eq!(message.from, signer.address());
    let signature = evm::sign_digest(&signer, &digest).unwrap();
    assert_eq!(signature, s(case, "signature_rsv"));
    assert_eq!(evm::sign_transfer_authorization(&signer, &domain, &message).unwrap(), signature);
    assert_eq!(evm::recover_authorizer(&digest, s(case, "signature_rsv")).unwrap(), signer.address());
}

// ---------------------------------------------------------------------------------------------
// Client → embedded facilitator
// ---------------------------------------------------------------------------------------------

fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: "eip155:196".into(),
        asset: X_LAYER_USDT0.into(),
        amount: "1000".into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 300,
        extra: json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap(),
    }
}

fn challenge(accepts: Vec<PaymentRequirements>) -> AnyPaymentRequired {
    AnyPaymentRequired::V2(PaymentRequired {
        x402_version: 2,
        error: Some("Payment required".into()),
        resource: Some(ResourceInfo {
            url: "https://api.example.com/api/data".into(),
            description: Some(String::new()),
            mime_type: Some(String::new()),
        }),
        accepts,
        extensions: Some(json!({"bazaar": {"info": 1}}).as_object().cloned().unwrap()),
    })
}

fn buyer_key() -> PrivateKeySigner {
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse().unwrap()
}

fn buyer(nonce_seed: u8) -> ExactEvmClientScheme {
    ExactEvmClientScheme::new(buyer_key()).with_clock(|| NOW).with_nonce_source(move || B256::repeat_byte(nonce_seed))
}

fn client(nonce_seed: u8) -> X402Client {
    X402Client::new().register("eip155:196", buyer(nonce_seed))
}

async fn pay(client: &X402Client, required: &AnyPaymentRequired) -> PaymentPayload {
    match client.create_payment_payload(required).await.expect("payment") {
        AnyPaymentPayload::V2(p) => p,
        AnyPaymentPayload::V1(p) => panic!("expected v2, got {p:?}"),
    }
}

fn funded(clock: Arc<AtomicU64>) -> (EmbeddedFacilitator, String) {
    let facilitator = EmbeddedFacilitator::new().with_clock(move || clock.load(Ordering::SeqCst));
    let payer = buyer_key().address().to_checksum(None);
    facilitator.fund(X_LAYER_USDT0, &payer, U256::from(10_000)).unwrap();
    (facilitator, payer)
}

#[tokio::test]
async fn pays_verifies_and_settles_exactly_the_amount() {
    let clock = Arc::new(AtomicU64::new(NOW));
    let (facilitator, payer) = funded(clock);
    let seller_handle = facilitator.clone();
    let required = challenge(vec![requirements()]);
    let payment = pay(&client(0x33), &required).await;

    // The v2 payload: accepted is a verbatim copy, resource/extensions from the challenge.
    let AnyPaymentRequired::V2(ch) = &required else { unreachable!() };
    assert_eq!(payment.x402_version, 2);
    assert_eq!(payment.accepted, ch.accepts[0]);
    assert_eq!(payment.resource, ch.resource);
    assert_eq!(payment.extensions, ch.extensions);
    let keys: Vec<&str> = payment.payload.keys().map(String::as_str).collect();
    assert_eq!(keys, ["signature", "authorization"]);
    let auth = payment.payload["authorization"].as_object().unwrap();
    let keys: Vec<&str> = auth.keys().map(String::as_str).collect();
    assert_eq!(keys, ["from", "to", "value", "validAfter", "validBefore", "nonce"]);
    assert_eq!(auth["from"], payer.as_str());
    assert_eq!(auth["to"], PAY_TO);
    assert_eq!(auth["value"], "1000");
    assert_eq!(auth["validAfter"], (NOW - 600).to_string());
    assert_eq!(auth["validBefore"], (NOW + 300).to_string());
    assert_eq!(auth["nonce"], format!("0x{}", "33".repeat(32)));
    let text = serde_json::to_string(&payment).unwrap();
    assert!(text.starts_with(r#"{"x402Version":2,"payload":{"signature":"0x"#), "{text}");

    let verified = facilitator.verify(&payment, &requirements()).await.unwrap();
    assert!(verified.is_valid, "{verified:?}");
    assert_eq!(verified.payer.as_deref(), Some(payer.as_str()));

    let settled = facilitator.settle(&payment, &requirements()).await.unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.status.as_deref(), Some("success"));
    assert_eq!(settled.payer.as_deref(), Some(payer.as_str()));
    assert_eq!(settled.network.as_str(), "eip155:196");
    assert!(settled.transaction.starts_with("0x") && settled.transaction.len() == 66);
    assert_eq!(seller_handle.balance(X_LAYER_USDT0, &payer), U256::from(9_000));
    assert_eq!(seller_handle.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000));
    assert_eq!(seller_handle.settlements(), vec![settled.clone()]);
    assert!(seller_handle.is_nonce_used(X_LAYER_USDT0, &payer, &format!("0x{}", "33".repeat(32))));

    // The transaction hash is deterministic: the same payment on a fresh ledger gives the same.
    let (other, _) = funded(Arc::new(AtomicU64::new(NOW)));
    assert_eq!(other.settle(&payment, &requirements()).await.unwrap().transaction, settled.transaction);

    // Replay.
    let replay = facilitator.verify(&payment, &requirements()).await.unwrap();
    assert_eq!(replay.invalid_reason.as_deref(), Some(reasons::NONCE_ALREADY_USED));
    let replay = facilitator.settle(&payment, &requirements()).await.unwrap();
    assert!(!replay.success);
    assert_eq!(replay.error_reason.as_deref(), Some("invalid_exact_evm_nonce_already_used"));
    assert_eq!(replay.transaction, "");
    assert_eq!(seller_handle.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000));
    assert_eq!(seller_handle.settlement_count(), 1);
}

async fn reason(facilitator: &EmbeddedFacilitator, payment: &PaymentPayload, req: &PaymentRequirements) -> String {
    let v = facilitator.verify(payment, req).await.unwrap();
    assert!(!v.is_valid, "expected a rejection, got {v:?}");
    let s = facilitator.settle(payment, req).await.unwrap();
    assert!(!s.success);
    assert_eq!(s.transaction, "");
    assert_eq!(s.error_reason, v.invalid_reason, "settle re-verifies");
    v.invalid_reason.unwrap_or_default()
}

#[tokio::test]
async fn tampered_payments_are_refused_with_exact_reasons() {
    let clock = Arc::new(AtomicU64::new(NOW));
    let (facilitator, payer) = funded(clock.clone());
    let payment = pay(&client(0x44), &challenge(vec![requirements()])).await;

    // Seller asks for more than the buyer signed for.
    let mut dearer = requirements();
    dearer.amount = "1001".into();
    assert_eq!(reason(&facilitator, &payment, &dearer).await, "invalid_exact_evm_payload_authorization_value_mismatch");

    // Buyer edits the signed value: the signature no longer matches.
    let mut edited = payment.clone();
    edited.payload["authorization"]["value"] = json!("1");
    edited.accepted.amount = "1".into();
    let mut cheap = requirements();
    cheap.amount = "1".into();
    assert_eq!(reason(&facilitator, &edited, &cheap).await, "invalid_exact_evm_payload_signature");

    // Someone else's payTo.
    let mut elsewhere = requirements();
    elsewhere.pay_to = "0x2222222222222222222222222222222222222222".into();
    assert_eq!(reason(&facilitator, &payment, &elsewhere).await, "invalid_exact_evm_payload_recipient_mismatch");
    let mut redirected = payment.clone();
    redirected.payload["authorization"]["to"] = json!("0x2222222222222222222222222222222222222222");
    assert_eq!(
        reason(&facilitator, &redirected, &requirements()).await,
        "invalid_exact_evm_payload_recipient_mismatch"
    );

    // Forged / malformed / malleable signatures.
    let mut forged = payment.clone();
    let sig = payment.payload["signature"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", &sig[..10], if &sig[10..11] == "0" { "1" } else { "0" }) + &sig[11..];
    forged.payload["signature"] = json!(flipped);
    assert_eq!(reason(&facilitator, &forged, &requirements()).await, "invalid_exact_evm_payload_signature");
    forged.payload["signature"] = json!(&sig[..130]);
    assert_eq!(reason(&facilitator, &forged, &requirements()).await, "invalid_exact_evm_payload_signature");
    forged.payload.remove("signature");
    assert_eq!(reason(&facilitator, &forged, &requirements()).await, "invalid_exact_evm_payload_signature");
    let parsed = evm::parse_signature(&sig).unwrap();
    let order = evm::SECP256K1N_HALF * U256::from(2) + U256::from(1);
    let twin = evm::Signature::new(parsed.r(), order - parsed.s(), !parsed.v());
    forged.payload.insert("signature".into(), json!(evm::to_hex(twin.as_bytes())));
    assert_eq!(reason(&facilitator, &forged, &requirements()).await, "invalid_exact_evm_payload_signature");
    // Signed by another key.
    let impostor = ExactEvmClientScheme::new(PrivateKeySigner::random()).with_clock(|| NOW);
    let mut stolen = payment.clone();
    let other = impostor.create_payment(&requirements(), None).await.unwrap();
    stolen.payload["signature"] = other["signature"].clone();
    assert_eq!(reason(&facilitator, &stolen, &requirements()).await, "invalid_exact_evm_payload_signature");

    // Expired window and not-yet-valid window.
    clock.store(NOW + 300 - 5, Ordering::SeqCst);
    assert_eq!(
        reason(&facilitator, &payment, &requirements()).await,
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    clock.store(NOW - 601, Ordering::SeqCst);
    assert_eq!(
        reason(&facilitator, &payment, &requirements()).await,
        "invalid_exact_evm_payload_authorization_valid_after"
    );
    clock.store(NOW, Ordering::SeqCst);

    // Scheme, network, domain, asset.
    let mut p = payment.clone();
    p.accepted.scheme = "aggr_deferred".into();
    assert_eq!(reason(&facilitator, &p, &requirements()).await, "unsupported_scheme");
    let mut p = payment.clone();
    p.accepted.network = "eip155:8453".into();
    assert_eq!(reason(&facilitator, &p, &requirements()).await, "network_mismatch");
    let mut p = payment.clone();
    p.accepted.network = "eip155:8453".into();
    let mut base = requirements();
    base.network = "eip155:8453".into();
    assert_eq!(reason(&facilitator, &p, &base).await, "invalid_exact_evm_failed_to_get_network_config");
    let mut no_domain = requirements();
    no_domain.extra.remove("version");
    assert_eq!(reason(&facilitator, &payment, &no_domain).await, "missing_eip712_domain");
    let mut p = payment.clone();
    p.accepted.asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into();
    assert_eq!(reason(&facilitator, &p, &requirements()).await, "invalid_exact_evm_asset_mismatch");
    let mut p = payment.clone();
    p.accepted.asset = X_LAYER_USDT0.to_uppercase().replacen('X', "x", 1);
    assert!(facilitator.verify(&p, &requirements()).await.unwrap().is_valid, "asset compare is case-insensitive");

    // Unfunded payer.
    let empty = EmbeddedFacilitator::new().with_clock(|| NOW);
    assert_eq!(reason(&empty, &payment, &requirements()).await, "invalid_exact_evm_insufficient_balance");
    empty.fund(X_LAYER_USDT0, &payer, U256::from(999)).unwrap();
    assert_eq!(reason(&empty, &payment, &requirements()).await, "invalid_exact_evm_insufficient_balance");

    // None of the above moved money; the genuine payment still settles once.
    assert_eq!(facilitator.balance(X_LAYER_USDT0, &payer), U256::from(10_000));
    assert!(facilitator.settle(&payment, &requirements()).await.unwrap().success);
    assert_eq!(reason(&facilitator, &payment, &requirements()).await, "invalid_exact_evm_nonce_already_used");
    assert_eq!(facilitator.balance(X_LAYER_USDT0, PAY_TO), U256::from(1_000));
}

#[tokio::test]
async fn embedded_supported_kinds() {
    let supported = EmbeddedFacilitator::new().supported().await.unwrap();
    assert_eq!(
        serde_json::to_value(&supported.kinds).unwrap(),
        json!([
            {"x402Version": 2, "scheme": "exact", "network": "eip155:196"},
            {"x402Version": 2, "scheme": "aggr_deferred", "network": "eip155:196"},
            {"x402Version": 2, "scheme": "upto", "network": "eip155:196",
             "extra": {"facilitatorAddress": "0x90542317178e8C9F8233FB091CD66c6a20394fD7"}}
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Selectors and v1
// ---------------------------------------------------------------------------------------------

fn option(scheme: &str, network: &str, amount: &str) -> PaymentRequirements {
    PaymentRequirements { scheme: scheme.into(), network: network.into(), amount: amount.into(), ..requirements() }
}

fn three_options() -> Vec<PaymentRequirements> {
    vec![
        option("exact", "eip155:8453", "3000"),
        option("aggr_deferred", "eip155:196", "2000"),
        option("exact", "eip155:196", "1000"),
    ]
}

#[derive(Clone)]
struct Deferred;

#[async_trait::async_trait]
impl SchemeNetworkClient for Deferred {
    fn scheme(&self) -> &str {
        "aggr_deferred"
    }
    async fn create_payment(
        &self,
        _requirements: &PaymentRequirements,
        _resource: Option<&ResourceInfo>,
    ) -> Result<JsonObject, ClientError> {
        Ok(json!({"session": "opaque"}).as_object().cloned().unwrap())
    }
}

fn wide_client() -> X402Client {
    X402Client::new().register("eip155:*", buyer(0x55)).register("eip155:196", Deferred)
}

#[tokio::test]
async fn selectors_choose_among_three_options() {
    let options = three_options();
    let required = challenge(options.clone());
    let chosen = |client: X402Client| {
        let required = required.clone();
        async move { pay(&client, &required).await.accepted }
    };

    assert_eq!(chosen(wide_client()).await, options[0]);
    assert_eq!(chosen(wide_client().with_selector(prefer_network("eip155:196"))).await, options[1]);
    assert_eq!(
        chosen(wide_client().with_selector(prefer_network("eip155:196").and_then(prefer_scheme("exact")))).await,
        options[2]
    );
    assert_eq!(chosen(wide_client().with_selector(prefer_scheme("aggr_deferred"))).await, options[1]);
    assert_eq!(chosen(wide_client().with_selector(max_amount(U256::from(2500)))).await, options[1]);
    assert_eq!(chosen(wide_client().with_selector(max_amount(U256::from(1000)))).await, options[2]);
    assert_eq!(
        chosen(wide_client().with_selector(prefer_network("eip155:8453").and_then(max_amount(U256::from(2000))))).await,
        options[1]
    );
    // Only registered (scheme, network) pairs are candidates.
    assert_eq!(chosen(client(0x66)).await, options[2]);
    assert_eq!(chosen(client(0x66).with_selector(prefer_network("eip155:8453"))).await, options[2]);

    // All above the cap.
    let err = wide_client().with_selector(max_amount(U256::from(999))).create_payment_payload(&required).await;
    assert_eq!(err, Err(ClientError::AmountOverCap { cap: U256::from(999), cheapest: Some(U256::from(1000)) }));
    // Nothing registered matches.
    let err = X402Client::new().register("solana:*", buyer(1)).create_payment_payload(&required).await.unwrap_err();
    assert!(matches!(err, ClientError::NoSupportedOption { .. }), "{err}");
    // A filter that refuses everything.
    let err = wide_client()
        .with_selector(PaymentSelector::new().filter(|r| r.asset.is_empty()))
        .create_payment_payload(&required)
        .await;
    assert_eq!(err, Err(ClientError::NoAcceptableOption));
    // Missing EIP-712 domain on the chosen option.
    let mut bare = requirements();
    bare.extra.clear();
    let err = client(1).create_payment_payload(&challenge(vec![bare])).await.unwrap_err();
    assert!(matches!(err, ClientError::BadRequirements(_)), "{err}");
}

#[tokio::test]
async fn v1_challenge_gives_v1_payload() {
    let required = AnyPaymentRequired::V1(PaymentRequiredV1 {
        x402_version: 1,
        error: None,
        accepts: vec![PaymentRequirementsV1 {
            scheme: "exact".into(),
            network: "eip155:196".into(),
            max_amount_required: "1000".into(),
            resource: "https://api.example.com/api/data".into(),
            description: Some("data".into()),
            mime_type: Some("application/json".into()),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            asset: X_LAYER_USDT0.into(),
            output_schema: None,
            extra: Some(json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap()),
        }],
    });
    let AnyPaymentPayload::V1(payment) = client(0x77).create_payment_payload(&required).await.unwrap() else {
        panic!("expected a v1 payload")
    };
    let text = serde_json::to_string(&payment).unwrap();
    assert!(
        text.starts_with(r#"{"x402Version":1,"scheme":"exact","network":"eip155:196","payload":{"signature":"0x"#),
        "{text}"
    );
    assert_eq!(payment.payload["authorization"]["value"], "1000");

    // The v1 payload carries the same signature a v2 payment for the lifted requirements does,
    // so the embedded facilitator accepts it once re-wrapped.
    let (facilitator, _) = funded(Arc::new(AtomicU64::new(NOW)));
    let wrapped = PaymentPayload {
        x402_version: 2,
        payload: payment.payload.clone(),
        accepted: requirements(),
        resource: None,
        extensions: None,
    };
    assert!(facilitator.verify(&wrapped, &requirements()).await.unwrap().is_valid);

    let (header, _) = client(0x77).create_payment_header(&required).await.unwrap();
    assert_eq!(header, "X-PAYMENT");
    let (header, _) = client(0x77).create_payment_header(&challenge(vec![requirements()])).await.unwrap();
    assert_eq!(header, "PAYMENT-SIGNATURE");
}
