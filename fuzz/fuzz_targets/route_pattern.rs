//! Route keys and request paths: compiling a key and matching a normalised path never panic;
//! a normalised path has no repeated or trailing slash and is a fixed point (unless decoding
//! produced `?`, `#` or `%`); a literal key (no wildcard or parameter) matches its own path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::web::{RoutePattern, find_route, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (key, path) = text.split_once('\n').unwrap_or((text, "/"));
    let normalized = normalize_path(path);
    assert!(!normalized.contains("//"), "{normalized:?} keeps a repeated slash");
    assert!(normalized == "/" || !normalized.ends_with('/'), "{normalized:?} keeps a trailing slash");
    // Idempotent unless decoding produced new `?`, `#` or `%` (those are decoded exactly once,
    // like OKX's Python middleware does).
    if !normalized.contains(['?', '#', '%']) {
        assert_eq!(normalize_path(&normalized), normalized, "normalisation is not idempotent");
    }
    let Ok(pattern) = RoutePattern::parse(key) else { return };
    let _ = pattern.matches("GET", &normalized);
    let _ = pattern.matches("POST", path);
    let table = [(pattern.clone(), ())];
    let _ = find_route(&table, "HEAD", path);
    let literal = key.trim();
    if literal.starts_with('/')
        && literal.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !literal.contains("//")
        && (literal == "/" || !literal.ends_with('/'))
    {
        assert!(pattern.matches("GET", literal), "literal key {literal:?} does not match itself");
        assert!(find_route(&table, "HEAD", literal).is_some(), "HEAD {literal:?} is not covered");
    }
});
