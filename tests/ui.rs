//! Compile-time tests of `#[x402]`: shapes that must compile (warning-free) and mistakes that
//! must fail with a precise, spanned message. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test --test ui` and review them before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/axum/pass/*.rs");
    t.compile_fail("tests/ui/axum/fail/*.rs");
    t.pass("tests/ui/actix/pass/*.rs");
    t.compile_fail("tests/ui/actix/fail/*.rs");
}
