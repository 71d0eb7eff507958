//! `WWW-Authenticate: Payment …`: the challenge parser never panics, honours the per-header
//! challenge limit, and no parsed challenge carries an id that verifies under a secret the
//! input cannot know.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::mpp::{MAX_CHALLENGES_PER_HEADER, parse_www_authenticate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A NUL byte splits the input into several header lines.
    let lines: Vec<&str> = text.split('\0').collect();
    let Ok(challenges) = parse_www_authenticate(&lines) else { return };
    assert!(challenges.len() <= MAX_CHALLENGES_PER_HEADER * lines.len());
    for c in &challenges {
        assert!(!c.verify_id("fuzz-secret-never-in-any-input-0b8f"), "forged challenge id verified");
        let _ = c.to_echo();
    }
});
