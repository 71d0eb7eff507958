//! Unit tests of the embedded SA: charges (settle, verify by hash, echo and source checks) and
//! the escrow (open, top-up, settle, close, status and their SA codes).

use super::*;
use crate::mpp::{Challenge, Credential, MppChargeClient, parse_www_authenticate};
use crate::okx::sa::{ChargeAuthorization, ChargeHashPayload, ChargeTransactionPayload, EvmPaymentError};
use serde_json::json;

const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
const NOW: u64 = 1_774_864_800; // 2026-03-30T10:00:00Z

fn challenge(amount: &str, expires: Option<&str>) -> Credential {
    let request = json!({
        "amount": amount, "currency": USDT0, "recipient": PAY_TO,
        "methodDetails": {"chainId": 196, "feePayer": false}
    });
    let c = Challenge::new(
        "s",
        "api.example.com",
        "evm",
        "charge",
        request.as_object().unwrap().clone(),
        expires.map(Into::into),
        None,
        None,
        None,
    );
    let parsed = parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap().remove(0);
    MppChargeClient::new(KEY.parse().unwrap()).with_clock(|| NOW).credential_for(&parsed).unwrap()
}

fn echo(c: &Credential) -> SaChallengeEcho {
    let e = &c.challenge;
    SaChallengeEcho {
        id: e.id.clone(),
        realm: e.realm.clone(),
        method: e.method.clone(),
        intent: e.intent.clone(),
        request: e.request.clone(),
        expires: e.expires.clone(),
    }
}

fn settle_request(c: &Credential) -> ChargeSettleRequest {
    let authorization: ChargeAuthorization = serde_json::from_value(c.payload["authorization"].clone()).unwrap();
    ChargeSettleRequest {
        challenge: echo(c),
        payload: ChargeTransactionPayload { authorization },
        source: c.source.clone().unwrap_or_default(),
    }
}

fn hash_request(c: &Credential, hash: &str) -> ChargeVerifyHashRequest {
    ChargeVerifyHashRequest {
        challenge: echo(c),
        payload: ChargeHashPayload { hash: hash.to_owned() },
        source: c.source.clone().unwrap_or_default(),
    }
}

fn code(r: Result<ChargeReceipt, SaError>) -> i64 {
    match r {
        Err(SaError::Api { code, .. }) => code,
        other => panic!("expected an SA error, got {other:?}"),
    }
}

fn sa() -> EmbeddedSa {
    EmbeddedSa::new().with_clock(|| NOW).with_registry(NetworkRegistry::x_layer())
}

#[tokio::test]
async fn unknown_channels() {
    let sa = sa();
    let e = sa.session_status("0x01").await.unwrap_err();
    assert!(matches!(e, SaError::Api { code: 70010, error: EvmPaymentError::ChannelNotFound(_) }));
    assert_eq!(e.status(), 410);
    assert!(matches!(sa.session_status("zz").await, Err(SaError::Api { code: 70000, .. })));
    assert!(sa.session_open(&SessionOpenRequest::default()).await.is_err());
    assert!(sa.session_top_up(&SessionTopUpRequest::default()).await.is_err());
    assert!(sa.session_settle(&SessionSettleRequest::default()).await.is_err());
    assert!(sa.session_close(&SessionCloseRequest::default()).await.is_err());
}

#[test]
fn settle_then_its_hash_is_bound_to_the_challenge() {
    let sa = sa().with_faucet(U256::from(100));
    let c = challenge("40", Some("2026-03-30T10:05:00Z"));
    let receipt = sa.settle_now(&settle_request(&c)).unwrap();
    assert_eq!(receipt.timestamp, "2026-03-30T10:00:00Z");
    assert_eq!(sa.balance(USDT0, PAYER), U256::from(60));
    assert_eq!(sa.balance(USDT0, PAY_TO), U256::from(140));
    // The settlement's own hash verifies for the same challenge (no second charge) …
    let again = sa.verify_hash_now(&hash_request(&c, &receipt.reference)).unwrap();
    assert_eq!(again.reference, receipt.reference);
    assert_eq!(sa.charge_count(), 1);
    // … but not for another one.
    let other = challenge("40", Some("2026-03-30T10:04:00Z"));
    assert_eq!(code(sa.verify_hash_now(&hash_request(&other, &receipt.reference))), 70003);
}

#[test]
fn echo_and_source_checks() {
    let sa = sa().with_faucet(U256::from(100));
    let c = challenge("1", Some("2026-03-30T10:05:00Z"));
    let mut req = settle_request(&c);
    req.challenge.intent = "session".into();
    assert_eq!(code(sa.settle_now(&req)), 70009);
    let mut req = settle_request(&c);
    req.challenge.id.clear();
    assert_eq!(code(sa.settle_now(&req)), 70009);
    let mut req = settle_request(&c);
    req.challenge.request = "!!".into();
    assert_eq!(code(sa.settle_now(&req)), 70009);
    let late = sa.clone().with_clock(|| NOW + 301);
    assert_eq!(code(late.settle_now(&settle_request(&c))), 70009);
    let mut req = settle_request(&c);
    req.source = format!("did:pkh:eip155:196:{PAY_TO}");
    assert_eq!(code(sa.settle_now(&req)), 70000);
    let mut req = settle_request(&c);
    req.source = "did:web:example.com".into();
    assert_eq!(code(sa.settle_now(&req)), 70000);
    let mut req = settle_request(&c);
    req.payload.authorization.auth_type = "permit2".into();
    assert_eq!(code(sa.settle_now(&req)), 70000);
    let mut req = settle_request(&c);
    req.payload.authorization.signature = None;
    assert_eq!(code(sa.settle_now(&req)), 70004);
    // Unknown token on the chain: 70001 (InternalSA).
    let unknown = EmbeddedSa::new().with_clock(|| NOW).with_registry(NetworkRegistry::empty());
    let e = unknown.settle_now(&settle_request(&c)).unwrap_err();
    assert!(matches!(e, SaError::Api { code: 70001, error: EvmPaymentError::InternalSA(_) }));
    // Nothing was charged by any of these.
    assert_eq!(sa.charge_count(), 0);
    // An empty source is accepted.
    let mut req = settle_request(&c);
    req.source.clear();
    assert!(sa.settle_now(&req).is_ok());
}

#[test]
fn recorded_transfers() {
    let sa = sa();
    assert!(sa.record_transfer("0x12", PAYER, PAY_TO, USDT0, U256::from(1)).is_err());
    let hash = format!("0x{}", "ab".repeat(32));
    let c = challenge("5", None);
    assert_eq!(code(sa.verify_hash_now(&hash_request(&c, &hash))), 70007);
    sa.record_transfer_on(1, &hash, PAYER, PAY_TO, USDT0, U256::from(5)).unwrap();
    assert_eq!(code(sa.verify_hash_now(&hash_request(&c, &hash))), 70000);
    sa.record_transfer(&hash, PAYER, PAY_TO, USDT0, U256::from(5)).unwrap();
    assert_eq!(code(sa.verify_hash_now(&hash_request(&c, "0xnothex"))), 70000);
    let r = sa.verify_hash_now(&hash_request(&c, &hash.to_uppercase().replacen('X', "x", 1))).unwrap();
    assert_eq!((r.reference.as_str(), r.chain_id.as_str()), (hash.as_str(), "196"));
    assert_eq!(sa.charges(), vec![r]);
}

#[test]
fn concurrent_settles_of_one_authorization_settle_once() {
    let sa = sa();
    sa.fund(USDT0, PAYER, U256::from(1_000)).unwrap();
    let req = settle_request(&challenge("100", None));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (sa, req) = (sa.clone(), req.clone());
            std::thread::spawn(move || sa.settle_now(&req).is_ok())
        })
        .collect();
    let wins = threads.into_iter().map(|t| t.join().unwrap()).filter(|&ok| ok).count();
    assert_eq!(wins, 1);
    assert_eq!(sa.balance(USDT0, PAYER), U256::from(900));
}

mod sessions {
    use super::*;
    use crate::evm::derive_channel_id;
    use crate::evm::{ChannelDomain, sign_settle_authorization, sign_voucher};
    use crate::evm::{Signer, signer_from_hex};
    use crate::mpp::SessionClient;
    use crate::okx::sa::SessionOpenPayload;

    const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    const ESCROW: &str = "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b";

    fn parsed(intent: &str) -> crate::mpp::ParsedChallenge {
        let request = json!({
            "amount": "1000", "currency": USDT0, "recipient": PAYEE,
            "methodDetails": {"chainId": 196, "escrowContract": ESCROW, "feePayer": false, "minVoucherDelta": "0"}
        });
        let c = Challenge::new(
            "s",
            "api.example.com",
            "evm",
            intent,
            request.as_object().unwrap().clone(),
            Some("2026-03-30T10:05:00Z".into()),
            None,
            None,
            None,
        );
        parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap().remove(0)
    }

    fn open_request(header: &str) -> SessionOpenRequest {
        let c = Credential::from_authorization_header(header).unwrap();
        let p = &c.payload;
        SessionOpenRequest {
            challenge: echo(&c),
            payload: SessionOpenPayload {
                channel_id: p["channelId"].as_str().unwrap().to_owned(),
                authorization: Some(serde_json::from_value(p["authorization"].clone()).unwrap()),
                salt: p["salt"].as_str().unwrap().to_owned(),
                ..SessionOpenPayload::default()
            },
            source: c.source.clone().unwrap_or_default(),
        }
    }

    fn code<T: fmt::Debug>(r: Result<T, SaError>) -> i64 {
        match r {
            Err(SaError::Api { code, .. }) => code,
            other => panic!("expected an SA error, got {other:?}"),
        }
    }

    fn settle(id: B256, cumulative: u128, payee: &dyn Signer, payer: &dyn Signer) -> SessionSettleRequest {
        let domain = ChannelDomain::default();
        SessionSettleRequest {
            payload: crate::okx::sa::SessionSettlePayload {
                channel_id: evm::to_hex(id),
                cumulative_amount: cumulative.to_string(),
                voucher_signature: sign_voucher(payer, &domain, id, cumulative).unwrap(),
                payee_signature: sign_settle_authorization(payee, &domain, id, cumulative, U256::from(1), U256::MAX)
                    .unwrap(),
                nonce: "1".into(),
                deadline: U256::MAX.to_string(),
            },
        }
    }

    #[test]
    fn escrow_checks_and_codes() {
        let sa = sa();
        sa.fund(USDT0, PAYER, U256::from(10_000)).unwrap();
        let payer = signer_from_hex(KEY).unwrap();
        let payee = signer_from_hex(PAYEE_KEY).unwrap();
        let client = SessionClient::new(payer.clone()).with_clock(|| NOW).with_registry(NetworkRegistry::x_layer());
        let c = parsed("session");
        let (channel, header) = client.open_header(&c, U256::from(5_000)).unwrap();
        let good = open_request(&header);
        let id = evm::parse_bytes32(&channel).unwrap();
        let salt = evm::parse_bytes32(&good.payload.salt).unwrap();
        let (pay_to, escrow) = (evm::parse_address(PAYEE).unwrap(), evm::parse_address(ESCROW).unwrap());
        let usdt0 = evm::parse_address(USDT0).unwrap();
        assert_eq!(derive_channel_id(payer.address(), pay_to, usdt0, salt, 196, escrow), id);

        // Refusals, nothing moved.
        let mut r = good.clone();
        r.challenge.intent = "charge".into();
        assert_eq!(code(sa.session_open_now(&r)), 70009);
        let mut r = good.clone();
        r.payload.salt = evm::to_hex(B256::repeat_byte(9));
        assert_eq!(code(sa.session_open_now(&r)), 70000);
        let mut r = good.clone();
        r.payload.authorization.as_mut().unwrap().value = "4999".into();
        assert_eq!(code(sa.session_open_now(&r)), 70004);
        let mut r = good.clone();
        r.payload.authorization.as_mut().unwrap().to = PAYEE.into();
        assert_eq!(code(sa.session_open_now(&r)), 70000);
        assert_eq!(sa.balance(USDT0, PAYER), U256::from(10_000));

        let receipt = sa.session_open_now(&good).unwrap();
        assert_eq!((receipt.channel_id.as_str(), receipt.deposit.as_str()), (channel.as_str(), "5000"));
        assert_eq!(sa.balance(USDT0, ESCROW), U256::from(5_000));
        assert_eq!(code(sa.session_open_now(&good)), 70000, "exists (and the nonce is used)");

        // Settle: amount above the deposit, wrong payee, wrong voucher signer.
        assert_eq!(code(sa.session_settle_now(&settle(id, 5_001, &payee, &payer))), 70012);
        assert_eq!(code(sa.session_settle_now(&settle(id, 100, &payer, &payer))), 70004);
        assert_eq!(code(sa.session_settle_now(&settle(id, 100, &payee, &payee))), 70004);
        assert_eq!(code(sa.session_settle_now(&settle(B256::repeat_byte(1), 1, &payee, &payer))), 70010);
        sa.session_settle_now(&settle(id, 300, &payee, &payer)).unwrap();
        sa.session_settle_now(&settle(id, 300, &payee, &payer)).unwrap();
        assert_eq!(sa.balance(USDT0, PAYEE), U256::from(300), "a repeated settle pays nothing more");
        let status = sa.session_status_now(&channel).unwrap();
        assert_eq!((status.settled_on_chain.as_str(), status.remaining_balance.as_str()), ("300", "4700"));
    }

    #[test]
    fn hash_deposits_fund_one_channel_and_repeat_idempotently() {
        let sa = sa();
        let c = parsed("session");
        let echo = SaChallengeEcho {
            id: c.id.clone(),
            realm: c.realm.clone(),
            method: c.method.clone(),
            intent: c.intent.clone(),
            request: c.request_b64.clone(),
            expires: c.expires.clone(),
        };
        let open = |channel: B256, hash: &str| SessionOpenRequest {
            challenge: echo.clone(),
            payload: SessionOpenPayload {
                payload_type: "hash".into(),
                channel_id: evm::to_hex(channel),
                hash: Some(hash.into()),
                ..SessionOpenPayload::default()
            },
            source: String::new(),
        };
        let (a, b) = (B256::repeat_byte(0xa1), B256::repeat_byte(0xb2));
        let unknown = evm::to_hex(B256::repeat_byte(0x99));
        assert_eq!(code(sa.session_open_now(&open(a, &unknown))), 70007, "unknown transaction");
        let to_payee = evm::to_hex(B256::repeat_byte(0x98));
        sa.record_transfer(&to_payee, PAYER, PAYEE, USDT0, U256::from(700)).unwrap();
        assert_eq!(code(sa.session_open_now(&open(a, &to_payee))), 70000, "not paid to the escrow");
        let hash = evm::to_hex(B256::repeat_byte(0x97));
        sa.record_transfer(&hash, PAYER, ESCROW, USDT0, U256::from(700)).unwrap();
        let first = sa.session_open_now(&open(a, &hash)).unwrap();
        assert_eq!((first.deposit.as_str(), first.reference.as_str()), ("700", hash.as_str()));
        assert_eq!(sa.session_status_now(&evm::to_hex(a)).unwrap().payer, PAYER);
        assert_eq!(sa.session_open_now(&open(a, &hash)).unwrap(), first, "idempotent for the same channel");
        assert_eq!(code(sa.session_open_now(&open(b, &hash))), 70003, "one transaction funds one channel");
    }
}
