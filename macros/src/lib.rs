//! Internal crate of [pay402](https://docs.rs/pay402): the `#[x402]` and `#[pay]` (MPP)
//! attribute macros. Use them through the facade, as `pay402::axum::{x402, pay}` or
//! `pay402::actix::{x402, pay}`; the documentation lives there.
//!
//! The crate has no framework features: each framework has its own entry point, and all of them
//! call one expansion, `expand::expand_attr::<A: PaymentAttr>`, that differs only in the
//! `::pay402::__private::<framework>` path it names and in the attribute `A` (`X402Args`,
//! `PayArgs`). Expansion runs in three phases: parse the arguments (`attr`; each attribute lists
//! its keys once, in an `arg_spec!` table), validate them with `pay402-core` (the checks the
//! runtime runs too; `x402`, `pay`, with the shared money and address checks in `literal`), then
//! rewrite the handler (`handler`). Errors are collected and reported together,
//! each on the offending token, and the full expansion is emitted next to them (with a
//! placeholder price or amount) so one mistake gives one error.

mod attr;
mod expand;
mod handler;
mod literal;
mod pay;
mod x402;

use proc_macro::TokenStream;

// Documented on its re-export, `pay402::axum::x402` (its docs would be appended there).
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn x402_axum(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand_attr::<x402::X402Args>(handler::Framework::Axum, args.into(), item.into()).into()
}

// Documented on its re-export, `pay402::actix::x402`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn x402_actix(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand_attr::<x402::X402Args>(handler::Framework::Actix, args.into(), item.into()).into()
}

// Documented on its re-export, `pay402::axum::pay`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pay_axum(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand_attr::<pay::PayArgs>(handler::Framework::Axum, args.into(), item.into()).into()
}

// Documented on its re-export, `pay402::actix::pay`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pay_actix(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand_attr::<pay::PayArgs>(handler::Framework::Actix, args.into(), item.into()).into()
}
