//! The adversarial suite: a malicious buyer and a malicious seller driven by proptest with random
//! sequences of protocol actions, checked against the money invariants of SECURITY.md.

mod support;
