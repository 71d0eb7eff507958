//! The two voucher-signature recovery backends (pure-Rust `k256` and libsecp256k1, cargo feature
//! `secp256k1`) give identical accept/reject results — and identical recovered addresses — on a
//! shared corpus of valid, wrong-signer, high-`s` and malformed signatures, and agree with
//! alloy's reference recovery wherever a signature is acceptable. The cached-key path (a
//! signer's key kept after its first voucher, then checked with `recover::signed_by`) accepts
//! exactly what recovery accepts, on every backend and the same corpus, and voucher
//! verification through a warm key cache gives the very results (errors included) of recovery.

use pay402::evm::recover::{self, Backend, SignerKey};
use pay402::evm::{Address, B256, SECP256K1N_HALF, Signer, U256, keccak256, signature_hex, signer_from_hex};
use pay402::evm::{
    ChannelDomain, ChannelSignatureError, SignerKeyCache, recover_channel_signer_with, verify_voucher_signature_cached,
    verify_voucher_signature_with,
};

const KEYS: [&str; 3] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3d71c2f3d8a9f2bf",
];

/// The secp256k1 group order n.
fn order() -> U256 {
    SECP256K1N_HALF * U256::from(2u8) + U256::from(1u8)
}

fn hex32(v: U256) -> String {
    format!("{:064x}", v)
}

/// `0x` ‖ r ‖ s ‖ v as the wire carries it.
fn sig_text(r: U256, s: U256, v: u8) -> String {
    format!("0x{}{}{v:02x}", hex32(r), hex32(s))
}

/// A deterministic stream of 32-byte values.
struct Stream(B256);

impl Stream {
    fn next(&mut self) -> B256 {
        self.0 = keccak256(self.0);
        self.0
    }
}

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    high_s: usize,
    malformed: usize,
    unrecoverable: usize,
    /// `signed_by` comparisons made, and how many of them accepted.
    key_checks: usize,
    key_accepted: usize,
    /// Voucher verifications compared between the recovery and cached-key paths.
    vouchers: usize,
}

/// The corpus signers' keys, recovered once as a server would on their first voucher.
fn known_keys() -> Vec<SignerKey> {
    KEYS.iter()
        .map(|k| {
            let signer = signer_from_hex(k).unwrap();
            let digest = keccak256(k.as_bytes());
            let signature =
                pay402::evm::parse_channel_signature(&signature_hex(signer.sign_digest(&digest).unwrap())).unwrap();
            let key = recover::recover_key(Backend::K256, &digest, &signature).unwrap();
            assert_eq!(key.address(), signer.address());
            key
        })
        .collect()
}

/// Checks one (digest, signature) pair on every backend and, for every known key, the
/// cached-key check against recovery; returns the shared outcome.
fn check(digest: &B256, text: &str, keys: &[SignerKey], tally: &mut Tally) -> Result<Address, ChannelSignatureError> {
    let k256 = recover_channel_signer_with(Backend::K256, digest, text);
    let secp = recover_channel_signer_with(Backend::Secp256k1, digest, text);
    assert_eq!(k256, secp, "backends disagree on {text} over {digest}");
    // Alloy (k256 with its post-verification) is the reference for every accepted signature.
    if let Ok(parsed) = pay402::evm::parse_channel_signature(text) {
        let reference = parsed.recover_address_from_prehash(digest).ok();
        assert_eq!(k256.as_ref().ok(), reference.as_ref(), "alloy disagrees on {text}");
        for key in keys {
            for &backend in Backend::ALL {
                let cached = recover::signed_by(backend, digest, &parsed, key);
                assert_eq!(cached, k256 == Ok(key.address()), "{backend}: cached key {} on {text}", key.address());
                tally.key_checks += 1;
                tally.key_accepted += usize::from(cached);
            }
        }
    }
    match &k256 {
        Ok(_) => tally.accepted += 1,
        Err(ChannelSignatureError::HighS) => tally.high_s += 1,
        Err(ChannelSignatureError::Malformed) => tally.malformed += 1,
        Err(ChannelSignatureError::Recovery) => tally.unrecoverable += 1,
        Err(e) => panic!("unexpected {e}"),
    }
    k256
}

/// One corpus voucher: its signer, and a bystander whose key is also cached.
struct Case<'a> {
    keys: &'a [SignerKey],
    /// Per backend, a cache warmed with every corpus key.
    warm: &'a [(Backend, SignerKeyCache)],
    domain: &'a ChannelDomain,
    channel_id: B256,
    signer: Address,
    bystander: Address,
}

/// Checks `text` as the signature of the voucher for `amount`: the digest-level [`check`], then
/// voucher verification for the signer and for the bystander on every backend through the
/// recovery path, a cold key cache and a warm one — all agree with what recovery gave.
fn case(c: &Case<'_>, amount: u128, text: &str, tally: &mut Tally) -> Result<Address, ChannelSignatureError> {
    let digest = pay402::evm::voucher_digest(c.domain, c.channel_id, amount);
    let recovered = check(&digest, text, c.keys, tally);
    for expected in [c.signer, c.bystander] {
        let want = match recovered {
            Ok(a) if a == expected => Ok(()),
            Ok(a) => Err(ChannelSignatureError::SignerMismatch { recovered: a }),
            Err(e) => Err(e),
        };
        for (backend, warm) in c.warm {
            let backend = *backend;
            let (domain, id) = (c.domain, c.channel_id);
            let recovery = verify_voucher_signature_with(backend, domain, id, amount, text, expected);
            assert_eq!(recovery, want, "{backend}: recovery path on {text}");
            let cold = SignerKeyCache::default();
            let first = verify_voucher_signature_cached(&cold, backend, domain, id, amount, text, expected);
            assert_eq!(first, want, "{backend}: cold cache on {text}");
            assert_eq!(cold.len(), usize::from(want.is_ok()), "{backend}: only an accepted voucher is cached");
            let cached = verify_voucher_signature_cached(warm, backend, domain, id, amount, text, expected);
            assert_eq!(cached, want, "{backend}: warm cache on {text}");
            assert_eq!(warm.len(), KEYS.len(), "{backend}: the warm cache holds the corpus signers only");
            tally.vouchers += 1;
        }
    }
    recovered
}

#[test]
fn both_backends_are_compiled() {
    assert_eq!(Backend::ALL, &[Backend::K256, Backend::Secp256k1]);
    assert_eq!(Backend::DEFAULT, Backend::Secp256k1, "the secp256k1 feature makes libsecp256k1 the default");
}

#[test]
fn shared_corpus_gives_identical_results() {
    let n = order();
    let half = SECP256K1N_HALF;
    let domain = ChannelDomain::default();
    let mut stream = Stream(B256::repeat_byte(0x5a));
    let mut tally = Tally::default();
    let keys = known_keys();
    let warm: Vec<(Backend, SignerKeyCache)> = Backend::ALL
        .iter()
        .map(|&backend| {
            let cache = SignerKeyCache::default();
            keys.iter().for_each(|k| cache.insert(k.clone()));
            (backend, cache)
        })
        .collect();

    for (k, key) in KEYS.iter().enumerate() {
        let signer = signer_from_hex(key).unwrap();
        let bystander = keys[(k + 1) % keys.len()].address();
        for i in 0..40u128 {
            let channel_id = stream.next();
            let c = Case { keys: &keys, warm: &warm, domain: &domain, channel_id, signer: signer.address(), bystander };
            let amount = 1_000 * (i + 1);
            let digest = pay402::evm::voucher_digest(&domain, channel_id, amount);
            let good = pay402::evm::sign_voucher(&signer, &domain, channel_id, amount).unwrap();
            let raw = signer.sign_digest(&digest).unwrap();
            assert_eq!(signature_hex(raw), good);
            let (r, s, v) = (U256::from_be_slice(&raw[..32]), U256::from_be_slice(&raw[32..64]), raw[64]);

            // Valid, in every accepted spelling: v 27/28 or 0/1, with or without 0x, any case.
            for text in [good.clone(), good[2..].to_owned(), good.to_uppercase().replacen("0X", "0x", 1)] {
                assert_eq!(case(&c, amount, &text, &mut tally), Ok(signer.address()));
            }
            assert_eq!(case(&c, amount, &sig_text(r, s, v - 27), &mut tally), Ok(signer.address()));
            for &backend in Backend::ALL {
                assert_eq!(
                    verify_voucher_signature_with(backend, &domain, channel_id, amount, &good, signer.address()),
                    Ok(())
                );
            }

            // Invalid for this voucher: another amount, another domain — someone else recovers.
            let recovered = case(&c, amount + 1, &good, &mut tally).expect("a signature recovers some key");
            assert_ne!(recovered, signer.address());
            for &backend in Backend::ALL {
                assert_eq!(
                    verify_voucher_signature_with(backend, &domain, channel_id, amount + 1, &good, signer.address()),
                    Err(ChannelSignatureError::SignerMismatch { recovered })
                );
            }
            let elsewhere = ChannelDomain::new(1, pay402::evm::DEFAULT_ESCROW_CONTRACT);
            let elsewhere = Case { domain: &elsewhere, ..c };
            assert!(matches!(
                case(&elsewhere, amount, &good, &mut tally),
                Ok(a) if a != signer.address()
            ));
            // Flipped parity: the other candidate point, another key.
            let flipped = case(&c, amount, &sig_text(r, s, 55 - v), &mut tally);
            assert!(flipped.is_ok_and(|a| a != signer.address()) || flipped.is_err());

            // High s: the malleable twin (n − s, flipped v) is refused (EIP-2).
            assert_eq!(case(&c, amount, &sig_text(r, n - s, 55 - v), &mut tally), Err(ChannelSignatureError::HighS));
            assert_eq!(
                case(&c, amount, &sig_text(r, half + U256::from(1u8), v), &mut tally),
                Err(ChannelSignatureError::HighS)
            );
            assert_eq!(case(&c, amount, &sig_text(r, U256::MAX, v), &mut tally), Err(ChannelSignatureError::HighS));

            // Malformed: bad length, bad hex, bad recovery byte.
            let bad_texts = [
                String::new(),
                "0x".to_owned(),
                good[..good.len() - 2].to_owned(),
                format!("{good}00"),
                good.replacen('0', "g", 1),
                format!("0x{}", &good[4..]),
                sig_text(r, s, 2),
                sig_text(r, s, 29),
                sig_text(r, s, 0xff),
            ];
            for text in &bad_texts {
                assert_eq!(case(&c, amount, text, &mut tally), Err(ChannelSignatureError::Malformed), "{text}");
            }

            // Out of range: r or s zero, r at or above n.
            for (rr, ss) in [(U256::ZERO, s), (r, U256::ZERO), (n, s), (n + U256::from(1u8), s), (U256::MAX, s)] {
                assert_eq!(case(&c, amount, &sig_text(rr, ss, v), &mut tally), Err(ChannelSignatureError::Recovery));
            }
            // s exactly n/2 is canonical: both recover the same (unrelated) key.
            case(&c, amount, &sig_text(r, half, v), &mut tally).expect("s = n/2 is acceptable");
        }
    }

    // Random 65-byte strings with low s: some r are no curve point's x (both refuse), the
    // rest recover some key (both the same one).
    for _ in 0..600 {
        let digest = stream.next();
        let r = U256::from_be_bytes(stream.next().0);
        let s = U256::from_be_bytes(stream.next().0) >> 1u8;
        let v = 27 + (stream.next()[0] & 1);
        let _ = check(&digest, &sig_text(r, s.min(half), v), &keys, &mut tally);
    }

    // Every class is represented, so the agreement above means something.
    assert!(tally.accepted > 500, "{tally:?}");
    assert!(tally.high_s >= 360, "{tally:?}");
    assert!(tally.malformed >= 1000, "{tally:?}");
    assert!(tally.unrecoverable >= 600, "{tally:?}");
    // The cached-key check accepted each valid voucher for its own signer only, and was
    // compared on the whole corpus; every voucher went through both paths on every backend.
    assert_eq!(tally.key_accepted, 3 * 40 * 4 * Backend::ALL.len(), "{tally:?}");
    assert!(tally.key_checks >= 3 * tally.accepted * Backend::ALL.len(), "{tally:?}");
    assert!(tally.vouchers >= 3 * 40 * 20 * 2 * Backend::ALL.len(), "{tally:?}");
}

#[test]
fn an_x_with_no_curve_point_is_refused_by_both() {
    // x = 5: 5³ + 7 = 132 is not a square mod p, so no point has x = 5.
    let digest = B256::repeat_byte(1);
    for v in [27u8, 28] {
        let text = sig_text(U256::from(5u8), U256::from(1u8), v);
        for &backend in Backend::ALL {
            assert_eq!(
                recover_channel_signer_with(backend, &digest, &text),
                Err(ChannelSignatureError::Recovery),
                "{backend}"
            );
        }
    }
}
