//! The `exact` checklist, one row per step: a payload that fails exactly that step, and the
//! reason it gets.

use super::*;
use crate::chain::{X_LAYER, X_LAYER_USDT0};
use crate::x402::ExactEvmClientScheme;
use serde_json::json;

pub(in crate::x402) const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub(in crate::x402) const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
pub(in crate::x402) const PAY_TO: &str = "0x1111111111111111111111111111111111111111";
/// The payer signs at this time: `validAfter` = NOW − 600, `validBefore` = NOW + 300.
pub(in crate::x402) const NOW: u64 = 1_700_000_000;

/// `exact` on X Layer, 1000 base units of USD₮0 to `PAY_TO`.
pub(in crate::x402) fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: X_LAYER.into(),
        asset: X_LAYER_USDT0.into(),
        amount: "1000".into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 300,
        extra: json!({"name": "USD\u{20ae}0", "version": "1"}).as_object().cloned().unwrap(),
    }
}

fn payment() -> PaymentPayload {
    payment_with_nonce(7)
}

/// `PAYER`'s payment for [`requirements`], signed at `NOW` with nonce `0xnnnn…`.
pub(in crate::x402) fn payment_with_nonce(nonce: u8) -> PaymentPayload {
    let scheme = ExactEvmClientScheme::new(KEY.parse().unwrap())
        .with_clock(|| NOW)
        .with_nonce_source(move || B256::repeat_byte(nonce));
    PaymentPayload {
        x402_version: 2,
        payload: scheme.sign_payload(&requirements()).unwrap().to_json_object(),
        accepted: requirements(),
        resource: None,
        extensions: None,
    }
}

fn serves_x_layer(chain_id: u64, _: &PaymentRequirements) -> Result<(), &'static str> {
    if chain_id == 196 { Ok(()) } else { Err(reasons::FAILED_TO_GET_NETWORK_CONFIG) }
}

fn policy(now: u64, signers: Signers) -> ExactPolicy<'static> {
    ExactPolicy { scheme: "exact", now, clock_skew: DEFAULT_CLOCK_SKEW, serves: &serves_x_layer, signers }
}

fn set_authorization(p: &mut PaymentPayload, key: &str, value: serde_json::Value) {
    p.payload["authorization"].as_object_mut().unwrap().insert(key.into(), value);
}

type Mutation = fn(&mut PaymentPayload, &mut PaymentRequirements);

#[test]
fn one_row_per_step() {
    let rows: [(&str, &str, u64, Mutation); 17] = [
        ("1 scheme (payload)", reasons::UNSUPPORTED_SCHEME, NOW, |p, _| p.accepted.scheme = "upto".into()),
        ("1 scheme (requirements)", reasons::UNSUPPORTED_SCHEME, NOW, |p, r| {
            p.accepted.scheme = "upto".into();
            r.scheme = "upto".into();
        }),
        ("2 network", reasons::NETWORK_MISMATCH, NOW, |p, _| p.accepted.network = "eip155:8453".into()),
        ("3 not eip155", reasons::FAILED_TO_GET_NETWORK_CONFIG, NOW, |p, r| {
            p.accepted.network = "solana:mainnet".into();
            r.network = "solana:mainnet".into();
        }),
        ("3 chain not served", reasons::FAILED_TO_GET_NETWORK_CONFIG, NOW, |p, r| {
            p.accepted.network = "eip155:8453".into();
            r.network = "eip155:8453".into();
        }),
        ("4 EIP-712 domain", reasons::MISSING_EIP712_DOMAIN, NOW, |_, r| drop(r.extra.remove("version"))),
        ("payload shape", reasons::INVALID_PAYLOAD, NOW, |p, _| set_authorization(p, "value", json!(1000))),
        ("5 recipient", reasons::RECIPIENT_MISMATCH, NOW, |p, r| {
            r.pay_to = "0x2222222222222222222222222222222222222222".into();
            p.accepted.pay_to = r.pay_to.clone();
        }),
        ("6 value", reasons::VALUE_MISMATCH, NOW, |_, r| r.amount = "1001".into()),
        ("6 value not a uint256", reasons::VALUE_MISMATCH, NOW, |p, _| set_authorization(p, "value", json!("1e3"))),
        ("7 validBefore within 6 s", reasons::VALID_BEFORE, NOW + 295, |_, _| {}),
        ("8 validAfter beyond the skew", reasons::VALID_AFTER, NOW - 606, |_, _| {}),
        ("9 signature missing", reasons::INVALID_SIGNATURE, NOW, |p, _| drop(p.payload.remove("signature"))),
        ("9 signature not hex", reasons::INVALID_SIGNATURE, NOW, |p, _| {
            drop(p.payload.insert("signature".into(), json!("0xzz")));
        }),
        ("10 typed data", reasons::FAILED_TO_VERIFY_SIGNATURE, NOW, |p, _| {
            set_authorization(p, "nonce", json!("0x12"))
        }),
        ("10 signer", reasons::INVALID_SIGNATURE, NOW, |_, r| drop(r.extra.insert("name".into(), json!("USDC")))),
        ("12 asset", reasons::ASSET_MISMATCH, NOW, |p, _| p.accepted.asset = PAY_TO.into()),
    ];
    for (step, expected, now, mutate) in rows {
        let (mut p, mut r) = (payment(), requirements());
        mutate(&mut p, &mut r);
        let rejection = check_exact(&p, &r, &policy(now, Signers::Eoa)).expect_err(step);
        assert_eq!(rejection.reason, expected, "{step}");
        let claimed = p.payload["authorization"]["from"].as_str().map(str::to_owned);
        assert_eq!(rejection.payer, claimed, "{step}");
        assert_eq!(rejection.message, None, "{step}");
    }
}

#[test]
fn a_valid_authorization_passes_at_the_window_edges() {
    let (p, r) = (payment(), requirements());
    for now in [NOW, NOW + 294, NOW - 600, NOW - 605] {
        let checked = check_exact(&p, &r, &policy(now, Signers::Eoa)).unwrap();
        assert!(checked.signed_by_from);
        assert_eq!(checked.chain_id, 196);
        assert_eq!(checked.payer, PAYER);
        assert_eq!(checked.message.value, U256::from(1000));
        assert_eq!(checked.message.from, evm::parse_address(PAYER).unwrap());
        assert_eq!((checked.name, checked.version), ("USD\u{20ae}0", "1"));
        assert_eq!(checked.digest(), evm::transfer_authorization_digest(&checked.domain, &checked.message));
    }
    // Without a skew allowance validAfter must not be in the future at all.
    let strict = ExactPolicy { clock_skew: Duration::ZERO, ..policy(NOW - 601, Signers::Eoa) };
    assert_eq!(check_exact(&p, &r, &strict).unwrap_err().reason, reasons::VALID_AFTER);
}

#[test]
fn the_window_arithmetic_cannot_overflow() {
    let (mut p, r) = (payment(), requirements());
    set_authorization(&mut p, "validBefore", json!(U256::MAX.to_string()));
    set_authorization(&mut p, "validAfter", json!("0"));
    // At the end of time, with the largest allowance: now + buffer and now + skew are computed in
    // U256 without wrapping, so the window holds and the (edited) signature is what fails.
    let huge = ExactPolicy { clock_skew: Duration::from_secs(u64::MAX), ..policy(u64::MAX, Signers::Eoa) };
    assert_eq!(check_exact(&p, &r, &huge).unwrap_err().reason, reasons::INVALID_SIGNATURE);
    set_authorization(&mut p, "validAfter", json!(U256::MAX.to_string()));
    assert_eq!(check_exact(&p, &r, &huge).unwrap_err().reason, reasons::VALID_AFTER);
    set_authorization(&mut p, "validBefore", json!(U256::MAX.to_string() + "0"));
    assert_eq!(check_exact(&p, &r, &huge).unwrap_err().reason, reasons::VALID_BEFORE);
}

#[test]
fn contract_wallet_signatures_are_left_to_the_caller() {
    let (mut p, r) = (payment(), requirements());
    p.payload.insert("signature".into(), json!("0x1234"));
    assert_eq!(check_exact(&p, &r, &policy(NOW, Signers::Eoa)).unwrap_err().reason, reasons::INVALID_SIGNATURE);
    let checked = check_exact(&p, &r, &policy(NOW, Signers::EoaOrContract)).unwrap();
    assert!(!checked.signed_by_from);
    assert_eq!(checked.signature.as_ref(), [0x12, 0x34]);
}

#[test]
fn the_facilitators_own_step_3_reason_is_kept() {
    let only_other_assets = |_: u64, _: &PaymentRequirements| Err("invalid_exact_evm_failed_to_get_asset_info");
    let policy = ExactPolicy { serves: &only_other_assets, ..policy(NOW, Signers::Eoa) };
    let rejection = check_exact(&payment(), &requirements(), &policy).unwrap_err();
    assert_eq!(rejection.reason, "invalid_exact_evm_failed_to_get_asset_info");
    assert_eq!(rejection.payer.as_deref(), Some(PAYER));
}

#[test]
fn rejections_become_wire_answers() {
    let rejection = Rejection { reason: reasons::VALUE_MISMATCH, payer: Some(PAYER.into()), message: Some("m".into()) };
    let verify = rejection.clone().into_verify();
    assert!(!verify.is_valid);
    assert_eq!(verify.invalid_reason.as_deref(), Some(reasons::VALUE_MISMATCH));
    assert_eq!(verify.invalid_message.as_deref(), Some("m"));
    let settle = rejection.into_settle(Network::from(X_LAYER));
    assert!(!settle.success);
    assert_eq!((settle.error_reason.as_deref(), settle.transaction.as_str()), (Some(reasons::VALUE_MISMATCH), ""));
    assert_eq!(settle.payer.as_deref(), Some(PAYER));
}
