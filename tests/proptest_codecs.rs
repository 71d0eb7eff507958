//! Property tests for every attacker-facing codec (issue 9 §1): encode → decode round trips for
//! generated values, and "decode never panics" (and never accepts what it must refuse) for
//! arbitrary text. The fuzz targets under `fuzz/` explore the same parsers with coverage
//! guidance; these run in every `cargo test`.

use pay402::chain::Network;
use pay402::literal::{Decimal, MoneySyntax, parse_money};
use pay402::mpp::{
    Challenge, ChallengeEcho, ChannelState, Credential, MAX_CHALLENGES_PER_HEADER, Receipt, canonical_json,
    parse_www_authenticate,
};
use pay402::web::{RoutePattern, find_route, normalize_path};
use pay402::x402::{
    AnyPaymentPayload, AnyPaymentRequired, MAX_HEADER_BYTES, PaymentPayload, PaymentRequired, PaymentRequirements,
    ResourceInfo, SettleResponse, decode_payment_required_header, decode_payment_response_header,
    decode_payment_signature_header, encode_payment_required_header, encode_payment_response_header,
    encode_payment_signature_header, safe_base64_encode,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Any text, including non-ASCII and control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,40}", "[a-zA-Z0-9₮é\"\\\\ ,=]{0,24}"]
}

/// A JSON value a few levels deep, floats included (they must survive a round trip bit for bit).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(text(), json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn requirements() -> impl Strategy<Value = PaymentRequirements> {
    (text(), text(), text(), "[0-9]{1,40}", text(), any::<u64>(), json_object()).prop_map(
        |(scheme, network, asset, amount, pay_to, max_timeout_seconds, extra)| PaymentRequirements {
            scheme,
            network: Network::from(network.as_str()),
            asset,
            amount,
            pay_to,
            max_timeout_seconds,
            extra,
        },
    )
}

fn resource() -> impl Strategy<Value = Option<ResourceInfo>> {
    prop::option::of(
        (text(), prop::option::of(text()), prop::option::of(text()))
            .prop_map(|(url, description, mime_type)| ResourceInfo { url, description, mime_type }),
    )
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn decimal_text() -> impl Strategy<Value = (u128, u32)> {
    (any::<u128>(), 0u32..=38)
}

// ---------------------------------------------------------------------------------------------
// x402 headers
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn payment_signature_round_trips(
        payload in json_object(),
        accepted in requirements(),
        resource in resource(),
        extensions in prop::option::of(json_object()),
    ) {
        let p = PaymentPayload { x402_version: 2, payload, accepted, resource, extensions };
        let header = encode_payment_signature_header(&p).expect("encodes");
        prop_assert!(header.is_ascii());
        prop_assert_eq!(decode_payment_signature_header(&header).expect("decodes"), AnyPaymentPayload::V2(p));
    }

    #[test]
    fn payment_required_round_trips(
        error in opt_text(),
        resource in resource(),
        accepts in prop::collection::vec(requirements(), 0..4),
        extensions in prop::option::of(json_object()),
    ) {
        let p = PaymentRequired { x402_version: 2, error, resource, accepts, extensions };
        let header = encode_payment_required_header(&p).expect("encodes");
        prop_assert_eq!(decode_payment_required_header(&header).expect("decodes"), AnyPaymentRequired::V2(p));
    }

    #[test]
    fn payment_response_round_trips(
        success in any::<bool>(),
        error_reason in opt_text(),
        error_message in opt_text(),
        status in opt_text(),
        payer in opt_text(),
        transaction in text(),
        network in text(),
    ) {
        let r = SettleResponse {
            success, error_reason, error_message, status, payer, transaction, network: Network::from(network.as_str()), amount: None,
        };
        let header = encode_payment_response_header(&r).expect("encodes");
        prop_assert_eq!(decode_payment_response_header(&header).expect("decodes"), r);
    }

    /// Arbitrary text, and arbitrary JSON behind valid base64: typed errors, never a panic;
    /// nothing over the size limit is decoded.
    #[test]
    fn x402_decoders_never_panic(raw in text(), value in json_value()) {
        let _ = decode_payment_signature_header(&raw);
        let _ = decode_payment_required_header(&raw);
        let _ = decode_payment_response_header(&raw);
        let wrapped = safe_base64_encode(value.to_string().as_bytes());
        let _ = decode_payment_signature_header(&wrapped);
        let _ = decode_payment_required_header(&wrapped);
        let _ = decode_payment_response_header(&wrapped);
        if wrapped.len() > MAX_HEADER_BYTES {
            prop_assert!(decode_payment_signature_header(&wrapped).is_err());
        }
    }
}

/// Regression (found by the `x402_payment_signature` fuzz target): a float in a payment header
/// was parsed 1 ULP off (serde_json's fast float parser), so the payload pay402 re-serialised
/// for the facilitator differed from the buyer's. Fixed by serde_json's `float_roundtrip`.
#[test]
fn floats_in_payment_headers_survive_re_encoding() {
    for text in ["1.1111111511111e+123", "3.0111000000000003e-106", "0.1", "5e-324", "1.7976931348623157e308"] {
        let json = format!(
            r#"{{"x402Version":2,"payload":{{"x":{text}}},"accepted":{{"scheme":"exact","network":"eip155:196","asset":"0x0","amount":"1","payTo":"0x0","maxTimeoutSeconds":1,"extra":{{"y":{text}}}}}}}"#
        );
        let decoded = decode_payment_signature_header(&safe_base64_encode(json.as_bytes())).expect("decodes");
        let AnyPaymentPayload::V2(p) = &decoded else { panic!("v2") };
        let want: f64 = text.parse().expect("float");
        assert_eq!(p.payload["x"].as_f64().map(f64::to_bits), Some(want.to_bits()), "{text}");
        let again = encode_payment_signature_header(p).expect("encodes");
        assert_eq!(decode_payment_signature_header(&again).expect("decodes"), decoded, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// MPP: WWW-Authenticate, Authorization, Payment-Receipt
// ---------------------------------------------------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A challenge renders to a header that parses back to the same fields, and its id still
    /// verifies under the secret (and only under it).
    #[test]
    fn www_authenticate_round_trips(
        secret in "[ -~]{1,32}",
        realm in "[ -~]{0,24}",
        method in token(),
        intent in token(),
        request in json_object(),
        expires in prop::option::of("[0-9TZ:.+-]{1,30}"),
        description in prop::option::of("[ -~]{0,40}"),
        digest in prop::option::of("[ -~]{0,40}"),
        opaque in prop::option::of(prop::collection::btree_map(text(), text(), 0..3)),
    ) {
        let c = Challenge::new(&secret, realm, method, intent, request, expires, description, digest, opaque);
        let header = c.to_www_authenticate().expect("renders");
        let parsed = parse_www_authenticate(&[&header]).expect("parses");
        prop_assert_eq!(parsed.len(), 1);
        let p = &parsed[0];
        prop_assert_eq!(&p.id, &c.id);
        prop_assert_eq!(&p.realm, &c.realm);
        prop_assert_eq!(&p.method, &c.method);
        prop_assert_eq!(&p.intent, &c.intent);
        // The request travels as RFC 8785 (JCS) JSON, where `0.0` is written `0`: compare canonically.
        prop_assert_eq!(
            canonical_json(&Value::Object(p.request.clone())),
            canonical_json(&Value::Object(c.request.clone()))
        );
        prop_assert_eq!(&p.expires, &c.expires);
        prop_assert_eq!(&p.description, &c.description);
        prop_assert_eq!(&p.digest, &c.digest);
        prop_assert_eq!(&p.opaque, &c.opaque);
        prop_assert!(p.verify_id(&secret));
        let other_secret = format!("{secret}x");
        prop_assert!(!p.verify_id(&other_secret));
    }

    #[test]
    fn credential_round_trips(
        id in text(), realm in text(), method in text(), intent in text(), request in text(),
        expires in opt_text(), digest in opt_text(), opaque in opt_text(), description in opt_text(),
        payload in json_object(),
        source in opt_text(),
    ) {
        let echo = ChallengeEcho { id, realm, method, intent, request, expires, digest, opaque, description };
        let c = Credential::new(echo, payload, source);
        let header = c.to_authorization_header();
        prop_assert_eq!(Credential::from_authorization_header(&header).expect("parses"), c);
    }

    #[test]
    fn receipt_round_trips(
        status in text(), timestamp in text(), reference in text(), method in text(),
        external_id in opt_text(), extra in prop::option::of(json_object()),
    ) {
        let r = Receipt { status, timestamp, reference, method, external_id, extra };
        let header = r.to_payment_receipt();
        prop_assert_eq!(Receipt::from_payment_receipt(&header).expect("parses"), r);
    }

    /// Arbitrary header text: typed errors, never a panic; the per-header challenge limit holds.
    #[test]
    fn mpp_parsers_never_panic(raw in text(), lines in prop::collection::vec(text(), 0..3)) {
        let _ = Credential::from_authorization_header(&raw);
        let _ = Credential::from_authorization_header(&format!("Payment {raw}"));
        let _ = Receipt::from_payment_receipt(&raw);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        if let Ok(parsed) = parse_www_authenticate(&refs) {
            prop_assert!(parsed.len() <= MAX_CHALLENGES_PER_HEADER * refs.len().max(1));
        }
    }
}

#[test]
fn too_many_challenges_in_one_header_are_refused() {
    let c = Challenge::new("k", "r", "evm", "charge", Map::new(), None, None, None, None);
    let one = c.to_www_authenticate().expect("renders");
    let ok = vec![one.as_str(); MAX_CHALLENGES_PER_HEADER].join(", ");
    assert_eq!(parse_www_authenticate(&[&ok]).expect("at the limit").len(), MAX_CHALLENGES_PER_HEADER);
    let over = vec![one.as_str(); MAX_CHALLENGES_PER_HEADER + 1].join(", ");
    assert!(parse_www_authenticate(&[&over]).is_err());
}

// ---------------------------------------------------------------------------------------------
// ChannelState JSON, route patterns, money literals
// ---------------------------------------------------------------------------------------------

/// Regression (found by the `channel_state` fuzz target): a stored `highestVoucherSignature` of
/// `"0x"` was read as the signature `"0x"` but written back as `""`, so a rewrite changed the
/// state. An empty hex signature now reads as no signature.
#[test]
fn empty_hex_signature_reads_as_no_signature() {
    for sig in ["0x", "0X", " 0x ", ""] {
        let json = format!(
            r#"{{"channelId":"0xab","chainId":196,"escrowContract":"0x5E55","payer":"0x1","payee":"0x2","highestVoucherSignature":"{sig}"}}"#
        );
        let state = ChannelState::from_json(json.as_bytes()).expect("parses");
        assert_eq!(state.highest_voucher_signature, "", "{sig:?}");
        let again = ChannelState::from_json(&state.to_json_bytes().expect("serialises")).expect("parses");
        assert_eq!(again, state, "{sig:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn channel_state_round_trips(
        ids in (text(), text(), text(), text(), text(), text(), text()),
        amounts in (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
        chain_id in any::<u64>(),
        units in any::<u64>(),
        finalized in any::<bool>(),
        close_requested_at in any::<u64>(),
        signature in prop::option::of(prop::collection::vec(any::<u8>(), 65)),
        streams in prop::collection::vec((text(), any::<(u64, u64, u64)>()), 0..4),
    ) {
        let streams: pay402::mpp::StreamCounts = streams
            .into_iter()
            .map(|(id, (delivered, generation, resumed_from))| {
                (id, pay402::mpp::StreamRecord { delivered, generation, resumed_from })
            })
            .collect();
        let (channel_id, escrow_contract, payer, payee, token, authorized_signer, created_at) = ids;
        let (deposit, highest_voucher_amount, min_voucher_delta, spent, reserved) = amounts;
        let highest_voucher_signature = signature
            .map(|b| format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
            .unwrap_or_default();
        let s = ChannelState {
            channel_id, chain_id, escrow_contract, payer, payee, token, authorized_signer, deposit,
            highest_voucher_amount, highest_voucher_signature, min_voucher_delta, spent, reserved, units,
            finalized, close_requested_at, created_at, streams,
        };
        let bytes = s.to_json_bytes().expect("serialises");
        prop_assert!(bytes.is_ascii(), "FileStore bytes are ASCII-escaped");
        prop_assert_eq!(ChannelState::from_json(&bytes).expect("parses"), s);
    }

    #[test]
    fn channel_state_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..256), value in json_value()) {
        let _ = ChannelState::from_json(&raw);
        let _ = ChannelState::from_json(value.to_string().as_bytes());
    }

    #[test]
    fn route_patterns_never_panic_and_literals_match_themselves(
        key in text(),
        path in text(),
        segments in prop::collection::vec("[a-zA-Z0-9_.~-]{1,8}", 1..4),
    ) {
        if let Ok(p) = RoutePattern::parse(&key) {
            let _ = p.matches("GET", &normalize_path(&path));
        }
        let literal = format!("/{}", segments.join("/"));
        let p = RoutePattern::parse(&format!("GET {literal}")).expect("a literal key compiles");
        prop_assert!(p.matches("GET", &normalize_path(&literal)));
        let with_query = format!("{literal}/?q=1#f");
        let longer = format!("{literal}/more");
        prop_assert!(p.matches("GET", &normalize_path(&with_query)));
        prop_assert!(!p.matches("GET", &normalize_path(&longer)));
    }

    /// Every spelling of a protected parameter route that a framework may route to its handler
    /// (a `%2F` or `%252F` inside the parameter, a trailing or doubled slash, a `;` parameter,
    /// another case, `HEAD` for a `GET` key) is matched by the route table (F3, F4).
    #[test]
    fn route_table_matches_every_spelling_of_a_protected_path(
        segments in prop::collection::vec("[a-zA-Z0-9_.~-]{1,8}", 1..4),
        param in "[a-zA-Z0-9]{1,6}",
        raw in text(),
    ) {
        let literal = format!("/{}", segments.join("/"));
        let table = [(RoutePattern::parse(&format!("GET {literal}/:p")).expect("compiles"), ())];
        let _ = find_route(&table, "GET", &raw);
        for spelling in [
            format!("{literal}/{param}%2F{param}"),
            format!("{literal}/{param}%2f{param}"),
            format!("{literal}/{param}%252F{param}"),
            format!("{literal}/{param}/"),
            format!("{literal}//{param}"),
            format!("{literal}/{param};x=1"),
            format!("{literal}/{param}?q=/a/b"),
            format!("{}/{param}", literal.to_uppercase()),
        ] {
            prop_assert!(find_route(&table, "GET", &spelling).is_some(), "{}", spelling);
            prop_assert!(find_route(&table, "HEAD", &spelling).is_some(), "HEAD {}", spelling);
        }
        let post = format!("{literal}/{param}");
        prop_assert!(find_route(&table, "POST", &post).is_none());
    }

    /// Every exact decimal prints to a literal that both grammars parse back to its value.
    #[test]
    fn money_literals_round_trip((mantissa, scale) in decimal_text()) {
        let printed = Decimal::new(mantissa, scale).expect("scale within range").to_string();
        // Parsing normalises (drops trailing fractional zeros): compare with the normal form.
        let (mut m, mut s) = (mantissa, scale);
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        let d = Decimal::new(m, s).expect("normal form");
        prop_assert_eq!(parse_money(&printed, MoneySyntax::Lenient, true).expect("lenient"), d);
        prop_assert_eq!(parse_money(&printed, MoneySyntax::Strict { allow_dollar: true }, true).expect("strict"), d);
        prop_assert_eq!(parse_money(&format!("${printed}"), MoneySyntax::Strict { allow_dollar: true }, true).expect("$"), d);
    }

    #[test]
    fn money_parser_never_panics(raw in text()) {
        let strict = parse_money(&raw, MoneySyntax::Strict { allow_dollar: true }, true);
        let lenient = parse_money(&raw, MoneySyntax::Lenient, true);
        if let Ok(v) = strict {
            prop_assert_eq!(lenient.ok(), Some(v), "the strict grammar is a subset of the lenient one");
        }
    }
}
