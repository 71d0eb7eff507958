//! ChannelState JSON (FileStore / Redis values): parsing never panics, and a parsed state
//! serialises to JSON that parses back to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::mpp::ChannelState;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = ChannelState::from_json(data) else { return };
    let _ = state.available();
    let Ok(bytes) = state.to_json_bytes() else { return };
    assert_eq!(ChannelState::from_json(&bytes).expect("serialised state parses"), state);
});
