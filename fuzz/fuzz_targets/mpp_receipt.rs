//! `Payment-Receipt`: parsing never panics and a parsed receipt re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::mpp::Receipt;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(receipt) = Receipt::from_payment_receipt(text) else { return };
    let again = receipt.to_payment_receipt();
    assert_eq!(Receipt::from_payment_receipt(&again).expect("re-encoded receipt parses"), receipt);
});
