//! Findings tests: autopay (filled in by the fix).
