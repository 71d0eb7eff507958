//! The Permit2 payload of `upto` and `exact` over Permit2 (`{permit2Authorization, signature}`):
//! parsing hostile JSON never panics, signature checks never panic, and whatever parses
//! re-encodes to a payload that parses to the same authorization and signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::evm::permit2::Permit2Authorization;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(payload)) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok((auth, signature)) = Permit2Authorization::from_payload(&payload) else { return };
    let _ = auth.verify_signature(&signature, 196);
    let _ = auth.kind();
    let again = auth.to_payload(&signature);
    let (back, back_signature) = Permit2Authorization::from_payload(&again).expect("a parsed payload re-encodes");
    assert_eq!(back, auth);
    assert_eq!(back_signature, signature);
});
