//! Findings tests: x402 (filled in by the fix).
