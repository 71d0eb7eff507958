//! Findings tests: mpp_session (filled in by the fix).
