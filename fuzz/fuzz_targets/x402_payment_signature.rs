//! `PAYMENT-SIGNATURE` / `X-PAYMENT` (one decoder serves both): decoding never panics, and
//! whatever decodes re-encodes to a header that decodes to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::x402::{
    decode_payment_signature_header, encode_payment_signature_header, encode_x_payment_header,
};
use pay402_runtime::x402::AnyPaymentPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(decoded) = decode_payment_signature_header(text) else { return };
    let again = match &decoded {
        AnyPaymentPayload::V2(p) => encode_payment_signature_header(p),
        AnyPaymentPayload::V1(p) => encode_x_payment_header(p),
    }
    .expect("a decoded payload re-encodes");
    assert_eq!(decode_payment_signature_header(&again).expect("re-encoded payload decodes"), decoded);
});
