//! The adversarial suite: a malicious buyer and a malicious seller driven by proptest with random
//! sequences of protocol actions, checked against the money invariants of SECURITY.md.
//!
//! * `seller_side_suite_keeps_the_invariants` — side A: a malicious buyer against pay402's
//!   sellers (x402 route table and `#[x402]`, MPP charge and session; axum and actix-web), checked
//!   against the embedded facilitator's and the embedded SA's ledgers (invariants I1-I5, see
//!   `adversarial/seller.rs`).
//! * `buyer_side_suite_keeps_the_invariants` — side B: a malicious seller against pay402's
//!   auto-paying client, checked against what the client actually signed (invariants B1-B4, see
//!   `adversarial/buyer.rs`).
//! * `demo_suite_catches_f*_when_reverted` — one per security fix: the fix is switched off
//!   (`pay402::__private::reverts`), the relevant part of the suite runs and must find a
//!   violation of the matching invariant.
//!
//! Volume: `PAY402_ADVERSARIAL_CASES` sequences per side (default 2000), seed
//! `PAY402_ADVERSARIAL_SEED` (default fixed). On a violation the seed, the minimal (shrunk)
//! sequence and the violations are printed. `PAY402_ADVERSARIAL_SURVEY=1` instead runs every
//! sequence and prints a tally of all violations by kind, each with an example sequence (the
//! suite tests then pass: a diagnostic mode, never for CI).

mod support;

mod adversarial {
    pub(crate) mod buyer;
    pub(crate) mod common;
    pub(crate) mod seller;
}

use adversarial::buyer;
use adversarial::common::{self, Reverted, Violation};
use adversarial::seller::{self, Mix, Sellers};
use pay402::__private::reverts::Fix;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Runs side A with `mix`; returns the minimal failing sequence's violations.
fn seller_side(label: &str, mix: Mix, cases: u32, shrink: u32, max_len: usize) -> Option<(String, Vec<Violation>)> {
    let rt = runtime();
    let sellers = rt.block_on(Sellers::start());
    common::run(label, cases, shrink, seller::sequence(mix, max_len), |actions| rt.block_on(sellers.run(&actions)))
}

/// Runs side B with `offers`; returns the minimal failing sequence's violations.
fn buyer_side(
    label: &str,
    offers: buyer::Offers,
    cases: u32,
    shrink: u32,
    max_len: usize,
) -> Option<(String, Vec<Violation>)> {
    let rt = runtime();
    let seller = rt.block_on(buyer::Seller::start());
    common::run(label, cases, shrink, buyer::sequence(offers, max_len), |steps| rt.block_on(seller.run(&steps)))
}

#[test]
fn buyer_side_suite_keeps_the_invariants() {
    let _serial = common::serial();
    let found = buyer_side("buyer side (malicious seller)", buyer::Offers::ALL, common::cases(2000), 256, 6);
    if let Some((minimal, violations)) = found {
        panic!("buyer side: invariants violated\n{}\nminimal sequence: {minimal}", common::render(&violations));
    }
}

#[test]
fn demo_suite_catches_f2_when_reverted() {
    let _serial = common::serial();
    let _revert = Reverted::new(Fix::F2EscrowAllowlist);
    let offers = buyer::Offers { x402: false, charge: false, session: true, tricks: false };
    let found = buyer_side("F2 reverted", offers, 200, 32, 4);
    let Some((_, violations)) = found else { panic!("F2: the suite found nothing with the fix reverted") };
    assert!(
        violations.iter().any(|v| matches!(v.invariant, "B1" | "B2")),
        "F2: expected B1/B2, found:\n{}",
        common::render(&violations)
    );
}

#[test]
fn seller_side_suite_keeps_the_invariants() {
    let _serial = common::serial();
    let found = seller_side("seller side (malicious buyer)", Mix::ALL, common::cases(2000), 256, 7);
    if let Some((minimal, violations)) = found {
        panic!("seller side: invariants violated\n{}\nminimal sequence: {minimal}", common::render(&violations));
    }
}

/// Asserts a demonstration found a violation of `invariant`.
fn expect_found(what: &str, invariant: &str, found: Option<(String, Vec<Violation>)>) {
    let Some((_, violations)) = found else { panic!("{what}: the suite found nothing with the fix reverted") };
    assert!(
        violations.iter().any(|v| v.invariant == invariant),
        "{what}: expected a violation of {invariant}, found:\n{}",
        common::render(&violations)
    );
}

#[test]
fn demo_suite_catches_f1_when_reverted() {
    let _serial = common::serial();
    let _revert = Reverted::new(Fix::F1SessionDeposit);
    let mix = Mix { session: 4, lies: true, ..Mix::NONE };
    expect_found("F1", "I3", seller_side("F1 reverted", mix, 200, 32, 6));
}

#[test]
fn demo_suite_catches_f5_when_reverted() {
    let _serial = common::serial();
    let _revert = Reverted::new(Fix::F5CompletionOnCancel);
    let mix = Mix { x402: 2, session: 4, cuts: true, ..Mix::NONE };
    expect_found("F5", "I4", seller_side("F5 reverted", mix, 300, 32, 6));
}

#[test]
fn demo_suite_catches_f9_when_reverted() {
    let _serial = common::serial();
    let _revert = Reverted::new(Fix::F9VoucherBinding);
    let mix = Mix { session: 4, cross_route: true, ..Mix::NONE };
    expect_found("F9", "I3", seller_side("F9 reverted", mix, 200, 32, 6));
}

#[test]
fn demo_suite_catches_f10_when_reverted() {
    let _serial = common::serial();
    let _revert = Reverted::new(Fix::F10SaFailClosed);
    let mix = Mix { charge: 2, session: 2, faults: true, ..Mix::NONE };
    let found = seller_side("F10 reverted", mix, 300, 32, 6);
    let Some((_, violations)) = found else { panic!("F10: the suite found nothing with the fix reverted") };
    assert!(
        violations.iter().any(|v| matches!(v.invariant, "I1" | "I2" | "I3")),
        "F10: expected I1/I2/I3, found:\n{}",
        common::render(&violations)
    );
}
