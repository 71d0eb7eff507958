//! Golden vectors for the payment-channel EIP-712 typed data (`tests/vectors/okx-golden.json`,
//! section `eip712`; wire facts §9.6): type hashes, domain separator, struct hashes, digests and
//! RFC 6979 signatures byte for byte, plus the §9.6 verification rules.

use pay402::evm::{
    self, Address, B256, ChannelDomain, ChannelSignatureError, EvmError, PrivateKeySigner, Signer, U256, keccak256,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/okx-golden.json");
    let text = std::fs::read_to_string(path).expect("read okx-golden.json");
    let all: Value = serde_json::from_str(&text).expect("parse okx-golden.json");
    all["eip712"].clone()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn b256(v: &Value, key: &str) -> B256 {
    evm::parse_bytes32(s(v, key)).unwrap()
}

fn signer(v: &Value) -> PrivateKeySigner {
    evm::signer_from_hex(s(v, "signer_private_key")).unwrap()
}

fn domain(v: &Value) -> ChannelDomain {
    let d = &v["domain"];
    ChannelDomain {
        name: s(d, "name").to_owned(),
        version: s(d, "version").to_owned(),
        chain_id: d["chainId"].as_u64().unwrap(),
        escrow: evm::parse_address(s(d, "verifyingContract")).unwrap(),
    }
}

/// (channelId, cumulativeAmount, nonce, deadline) of a message.
fn message(m: &Value) -> (B256, u128, Option<U256>, Option<U256>) {
    let uint = |key: &str| m.get(key).map(|x| evm::parse_uint256(x.as_str().unwrap()).unwrap());
    let cumulative = u128::try_from(uint("cumulativeAmount").unwrap()).unwrap();
    (evm::channel_id_from_hex(s(m, "channelId")).unwrap(), cumulative, uint("nonce"), uint("deadline"))
}

fn order() -> U256 {
    evm::SECP256K1N_HALF * U256::from(2) + U256::from(1)
}

#[test]
fn signer_address_is_the_vector_address() {
    let v = vectors();
    let signer = signer(&v);
    assert_eq!(signer.address_checksummed(), s(&v, "signer_address"));
    assert_eq!(Signer::address(&signer), evm::parse_address(s(&v, "signer_address")).unwrap());
}

#[test]
fn domain_typehash_and_separator() {
    let v = vectors();
    let domain = domain(&v);
    assert_eq!(domain, ChannelDomain::default());
    assert_eq!(domain.escrow, evm::DEFAULT_ESCROW_CONTRACT);
    assert_eq!(domain.name, evm::DEFAULT_DOMAIN_NAME);
    assert_eq!(domain.version, evm::DEFAULT_DOMAIN_VERSION);
    assert_eq!(s(&v, "EIP712Domain_typestring"), evm::CHANNEL_DOMAIN_TYPE);
    assert_eq!(keccak256(s(&v, "EIP712Domain_typestring")), b256(&v, "EIP712Domain_typehash"));
    assert_eq!(evm::CHANNEL_DOMAIN_TYPEHASH, b256(&v, "EIP712Domain_typehash"));
    assert_eq!(domain.eip712_domain().type_hash(), b256(&v, "EIP712Domain_typehash"));
    assert_eq!(domain.domain_separator(), b256(&v, "domain_separator"));
    assert_eq!(domain.eip712_domain().separator(), b256(&v, "domain_separator"));
}

#[test]
fn voucher_golden() {
    let v = vectors();
    let (domain, signer) = (domain(&v), signer(&v));
    let voucher = &v["Voucher"];
    assert_eq!(s(voucher, "typestring"), evm::VOUCHER_TYPE);
    assert_eq!(keccak256(s(voucher, "typestring")), b256(voucher, "typehash"));
    assert_eq!(evm::VOUCHER_TYPEHASH, b256(voucher, "typehash"));

    let (id, cumulative, _, _) = message(&voucher["message"]);
    assert_eq!(evm::voucher_struct_hash(id, cumulative), b256(voucher, "struct_hash"));
    let digest = evm::voucher_digest(&domain, id, cumulative);
    assert_eq!(digest, b256(voucher, "digest"));
    assert_eq!(evm::eip712_digest(&domain.domain_separator(), &b256(voucher, "struct_hash")), digest);

    let expected = s(voucher, "signature_rsv");
    assert_eq!(evm::signature_hex(signer.sign_digest(&digest).unwrap()), expected);
    assert_eq!(evm::sign_voucher(&signer, &domain, id, cumulative).unwrap(), expected);
    let via_dyn: &dyn Signer = &signer;
    assert_eq!(evm::sign_voucher(via_dyn, &domain, id, cumulative).unwrap(), expected);
}

fn authorization_golden(section: &str) {
    let v = vectors();
    let (domain, signer) = (domain(&v), signer(&v));
    let auth = &v[section];
    let (type_string, typehash) = match section {
        "SettleAuthorization" => (evm::SETTLE_AUTHORIZATION_TYPE, evm::SETTLE_AUTHORIZATION_TYPEHASH),
        _ => (evm::CLOSE_AUTHORIZATION_TYPE, evm::CLOSE_AUTHORIZATION_TYPEHASH),
    };
    assert_eq!(s(auth, "typestring"), type_string);
    assert_eq!(keccak256(s(auth, "typestring")), b256(auth, "typehash"));
    assert_eq!(typehash, b256(auth, "typehash"));

    let cases = auth["cases"].as_array().unwrap();
    assert!(cases.len() >= 2, "{section}: expected several cases");
    for case in cases {
        let label = s(case, "label");
        let (id, cumulative, nonce, deadline) = message(&case["message"]);
        let (nonce, deadline) = (nonce.unwrap(), deadline.unwrap());
        if label == "deadline_u256_max" {
            assert_eq!(deadline, evm::DEFAULT_DEADLINE);
        }
        let (digest, signature) = match section {
            "SettleAuthorization" => (
                evm::settle_authorization_digest(&domain, id, cumulative, nonce, deadline),
                evm::sign_settle_authorization(&signer, &domain, id, cumulative, nonce, deadline).unwrap(),
            ),
            _ => (
                evm::close_authorization_digest(&domain, id, cumulative, nonce, deadline),
                evm::sign_close_authorization(&signer, &domain, id, cumulative, nonce, deadline).unwrap(),
            ),
        };
        assert_eq!(digest, b256(case, "digest"), "{section}/{label} digest");
        assert_eq!(signature, s(case, "signature_rsv"), "{section}/{label} signature");
        assert_eq!(evm::signature_hex(signer.sign_digest(&digest).unwrap()), signature, "{section}/{label}");
        assert_eq!(evm::recover_channel_signer(&digest, &signature), Ok(Signer::address(&signer)));
    }
}

#[test]
fn settle_authorization_golden() {
    authorization_golden("SettleAuthorization");
}

#[test]
fn close_authorization_golden() {
    authorization_golden("CloseAuthorization");
}

#[test]
fn nonce_from_fixed_provider_feeds_the_golden_case() {
    let v = vectors();
    let case = &v["SettleAuthorization"]["cases"][0];
    let (id, cumulative, nonce, _) = message(&case["message"]);
    let provider: &dyn evm::NonceProvider = &evm::FixedNonceProvider(nonce.unwrap());
    let nonce = provider.allocate(Signer::address(&signer(&v)), id);
    let signature =
        evm::sign_settle_authorization(&signer(&v), &domain(&v), id, cumulative, nonce, evm::DEFAULT_DEADLINE).unwrap();
    assert_eq!(signature, s(case, "signature_rsv"));
}

/// The golden voucher: (domain, channel id, cumulative, signature, signer).
fn golden_voucher() -> (ChannelDomain, B256, u128, String, Address) {
    let v = vectors();
    let (id, cumulative, _, _) = message(&v["Voucher"]["message"]);
    (domain(&v), id, cumulative, s(&v["Voucher"], "signature_rsv").to_owned(), Signer::address(&signer(&v)))
}

fn raw(signature: &str) -> Vec<u8> {
    (2..signature.len()).step_by(2).map(|i| u8::from_str_radix(&signature[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn golden_signatures_verify() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    assert_eq!(evm::verify_voucher_signature(&domain, id, cumulative, &signature, payer), Ok(()));
    assert_eq!(evm::recover_voucher_signer(&domain, id, cumulative, &signature), Ok(payer));
    // Upper-case hex is the same signature.
    let upper = format!("0x{}", signature[2..].to_uppercase());
    assert_eq!(evm::verify_voucher_signature(&domain, id, cumulative, &upper, payer), Ok(()));
}

#[test]
fn wrong_signer_or_message_is_a_mismatch() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    let other = Address::repeat_byte(0x11);
    assert_eq!(
        evm::verify_voucher_signature(&domain, id, cumulative, &signature, other),
        Err(ChannelSignatureError::SignerMismatch { recovered: payer })
    );
    // Another amount recovers some other key.
    let e = evm::verify_voucher_signature(&domain, id, cumulative + 1, &signature, payer).unwrap_err();
    assert!(matches!(e, ChannelSignatureError::SignerMismatch { recovered } if recovered != payer), "{e:?}");
}

#[test]
fn wrong_length_is_malformed() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    let short = &signature[..signature.len() - 2]; // 64 bytes
    let long = format!("{signature}00"); // 66 bytes
    for bad in [short, long.as_str(), "", "0x", "0x1234", "not hex"] {
        assert_eq!(
            evm::verify_voucher_signature(&domain, id, cumulative, bad, payer),
            Err(ChannelSignatureError::Malformed),
            "{bad}"
        );
    }
    let not_hex = format!("0x{}", "zz".repeat(65));
    assert_eq!(
        evm::verify_voucher_signature(&domain, id, cumulative, &not_hex, payer),
        Err(ChannelSignatureError::Malformed)
    );
}

#[test]
fn high_s_twin_is_refused() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    let bytes = raw(&signature);
    let s_value = U256::from_be_slice(&bytes[32..64]);
    assert!(s_value <= evm::SECP256K1N_HALF);
    let mut twin = [0u8; 65];
    twin[..32].copy_from_slice(&bytes[..32]);
    twin[32..64].copy_from_slice(&(order() - s_value).to_be_bytes::<32>());
    twin[64] = if bytes[64] == 27 { 28 } else { 27 };
    let twin_hex = evm::signature_hex(twin);
    // The twin is mathematically valid for the same key (recovery normalises it back)...
    let r = U256::from_be_slice(&bytes[..32]);
    let twin_sig = evm::Signature::new(r, order() - s_value, twin[64] == 28);
    let digest = evm::voucher_digest(&domain, id, cumulative);
    assert_eq!(twin_sig.recover_address_from_prehash(&digest).unwrap(), payer);
    // ...but §9.6 refuses it up front.
    assert_eq!(
        evm::verify_voucher_signature(&domain, id, cumulative, &twin_hex, payer),
        Err(ChannelSignatureError::HighS)
    );
    // ...and so is n/2 + 1 with any v.
    let mut just_above = twin;
    just_above[32..64].copy_from_slice(&(evm::SECP256K1N_HALF + U256::from(1)).to_be_bytes::<32>());
    assert_eq!(evm::parse_channel_signature(&evm::signature_hex(just_above)), Err(ChannelSignatureError::HighS));
}

#[test]
fn v_zero_or_one_is_accepted() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    let mut bytes: [u8; 65] = raw(&signature).try_into().unwrap();
    bytes[64] -= 27;
    assert!(bytes[64] <= 1);
    let zero_one = evm::signature_hex(bytes);
    assert_eq!(evm::verify_voucher_signature(&domain, id, cumulative, &zero_one, payer), Ok(()));
    // Flipping the parity recovers another key.
    bytes[64] ^= 1;
    let flipped = evm::signature_hex(bytes);
    assert!(evm::verify_voucher_signature(&domain, id, cumulative, &flipped, payer).is_err());
    // v outside {0, 1, 27, 28} is malformed.
    for v in [2u8, 26, 29, 255] {
        bytes[64] = v;
        assert_eq!(
            evm::verify_voucher_signature(&domain, id, cumulative, &evm::signature_hex(bytes), payer),
            Err(ChannelSignatureError::Malformed),
            "v = {v}"
        );
    }
}

#[test]
fn corrupted_r_fails() {
    let (domain, id, cumulative, signature, payer) = golden_voucher();
    let original: [u8; 65] = raw(&signature).try_into().unwrap();
    for (i, mask) in [(31usize, 0x01u8), (0, 0x80), (15, 0xff)] {
        let mut bytes = original;
        bytes[i] ^= mask;
        let e = evm::verify_voucher_signature(&domain, id, cumulative, &evm::signature_hex(bytes), payer).unwrap_err();
        assert!(
            matches!(e, ChannelSignatureError::SignerMismatch { .. } | ChannelSignatureError::Recovery),
            "byte {i}: {e:?}"
        );
    }
    let mut zero_r = original;
    zero_r[..32].fill(0);
    assert_eq!(
        evm::verify_voucher_signature(&domain, id, cumulative, &evm::signature_hex(zero_r), payer),
        Err(ChannelSignatureError::Recovery)
    );
}

#[test]
fn channel_id_padding() {
    let full = evm::channel_id_from_hex(&format!("0x{}", "ab".repeat(32))).unwrap();
    assert_eq!(full, B256::repeat_byte(0xab));
    assert_eq!(evm::channel_id_from_hex(&"ab".repeat(32)).unwrap(), full);
    let short = evm::channel_id_from_hex("0x01ff").unwrap();
    let mut expected = [0u8; 32];
    expected[30] = 0x01;
    expected[31] = 0xff;
    assert_eq!(short, B256::from(expected));
    // Padding changes nothing when hashing: the short id signs like its padded form.
    let (domain, _, cumulative, _, _) = golden_voucher();
    let padded = evm::channel_id_from_hex(&format!("0x{}01ff", "00".repeat(30))).unwrap();
    assert_eq!(evm::voucher_digest(&domain, short, cumulative), evm::voucher_digest(&domain, padded, cumulative));

    let too_long = format!("0x{}", "ab".repeat(33));
    assert!(matches!(
        evm::channel_id_from_hex(&too_long),
        Err(EvmError::InvalidLength { expected: 32, actual: 33, .. })
    ));
    for bad in ["", "0x", "0xabc", "0xgg"] {
        assert!(evm::channel_id_from_hex(bad).is_err(), "{bad}");
    }
}

#[test]
fn signer_from_hex_accepts_prefix_and_rejects_bad_keys_quietly() {
    let v = vectors();
    let key = s(&v, "signer_private_key");
    let with = evm::signer_from_hex(key).unwrap();
    let without = evm::signer_from_hex(key.strip_prefix("0x").unwrap()).unwrap();
    assert_eq!(Signer::address(&with), Signer::address(&without));
    assert_eq!(without.address_checksummed(), s(&v, "signer_address"));

    let digits = key.strip_prefix("0x").unwrap();
    let bad_keys = [
        format!("{digits}ab"),                            // 33 bytes
        digits[..60].to_owned(),                          // 30 bytes
        format!("0x{}q", &digits[..63]),                  // not hex
        format!("0x{}", "0".repeat(64)),                  // zero
        format!("0x{:064x}", order()),                    // = n
        format!("0x{}", "f".repeat(64)),                  // > n
        format!("0x{digits}{digits}"),                    // 64 bytes
        format!("0x{}g{}", &digits[..31], &digits[32..]), // a stray non-hex digit
    ];
    for bad in &bad_keys {
        let e = evm::signer_from_hex(bad).unwrap_err();
        let shown = format!("{e} / {e:?}");
        let core = bad.trim_start_matches("0x");
        for window in [&core[..16], &core[core.len() - 16..]] {
            assert!(!shown.contains(window), "error {shown:?} leaks the key");
        }
        assert!(matches!(e, EvmError::InvalidPrivateKey(_)), "{shown}");
    }
}
