//! Findings tests: routes (filled in by the fix).
