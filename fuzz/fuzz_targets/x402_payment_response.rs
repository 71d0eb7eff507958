//! `PAYMENT-RESPONSE`: decoding never panics; what decodes round-trips through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::x402::{decode_payment_response_header, encode_payment_response_header};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(decoded) = decode_payment_response_header(text) else { return };
    let again = encode_payment_response_header(&decoded).expect("a decoded settle response re-encodes");
    assert_eq!(decode_payment_response_header(&again).expect("re-encoded response decodes"), decoded);
});
