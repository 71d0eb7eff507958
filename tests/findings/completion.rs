//! Findings tests: completion (filled in by the fix).
