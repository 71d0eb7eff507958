//! Findings tests: mpp_charge (filled in by the fix).
