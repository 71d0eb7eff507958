//! `Authorization: Payment <credential>`: parsing never panics, a parsed credential re-encodes
//! to itself, and no echo verifies under a secret the input cannot know (the route expectation
//! is the echo's own request, so only the HMAC stands between a forgery and acceptance).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::mpp::{Credential, b64url_decode, verify_echo};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(credential) = Credential::from_authorization_header(text) else { return };
    let header = credential.to_authorization_header();
    assert_eq!(Credential::from_authorization_header(&header).expect("re-encoded credential parses"), credential);
    let _ = credential.payer();
    let echo = &credential.challenge;
    let expected = b64url_decode(&echo.request)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_else(Map::new);
    let verdict =
        verify_echo(echo, "fuzz-secret-never-in-any-input-0b8f", &echo.realm, &echo.method, &echo.intent, &expected);
    assert!(verdict.is_err(), "a forged challenge echo verified");
});
