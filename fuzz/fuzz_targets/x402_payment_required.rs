//! `PAYMENT-REQUIRED`: decoding never panics; what decodes round-trips through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::x402::{
    decode_payment_required_header, encode_payment_required_header, encode_payment_required_header_v1,
};
use pay402_runtime::x402::AnyPaymentRequired;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(decoded) = decode_payment_required_header(text) else { return };
    let again = match &decoded {
        AnyPaymentRequired::V2(p) => encode_payment_required_header(p),
        AnyPaymentRequired::V1(p) => encode_payment_required_header_v1(p),
    }
    .expect("a decoded challenge re-encodes");
    assert_eq!(decode_payment_required_header(&again).expect("re-encoded challenge decodes"), decoded);
});
