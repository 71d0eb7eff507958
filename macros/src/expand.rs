//! The entry points behind every framework's `#[x402]` and `#[pay]`: parse → validate →
//! rewrite, then the rewritten item plus every error. The two attributes differ only in their
//! [`Protocol`]. Stacked on one handler (in either order), the outer one takes the inner one
//! out, validates both, checks that they agree, and expands the dual form: one guard that
//! accepts either protocol.

use crate::attr::Ctxt;
use crate::handler::{Framework, Injected, Protocol, rewrite, take_stacked};
use crate::pay::{PayArgs, PayRoute};
use crate::x402::{X402Args, X402Route};
use pay402_core::decimal::Rounding;
use pay402_core::money::{MoneySyntax, parse_money};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, ItemFn};

/// The parameters an x402 handler gets from the verified payment.
const X402_INJECTED: &[Injected] = &[Injected { type_name: "X402Payment", getter: "payment" }];

/// The parameters an MPP handler gets from the verified payment.
const MPP_INJECTED: &[Injected] =
    &[Injected { type_name: "Credential", getter: "credential" }, Injected { type_name: "Receipt", getter: "receipt" }];

/// The parameter a handler offering both protocols gets: how it was paid.
const DUAL_INJECTED: &[Injected] = &[Injected { type_name: "Paid", getter: "paid" }];

/// What a handler offering both protocols cannot take: each protocol's own payment types, which
/// are only there when that protocol paid.
const DUAL_REFUSED: &[(&str, &str)] = &[
    (
        "X402Payment",
        "is only there when x402 paid, but this handler has #[x402] and #[pay] and accepts either: take \
         `Paid` (`pay402::axum::Paid` / `pay402::actix::Paid`) and match `Paid::X402(payment)`",
    ),
    (
        "Credential",
        "is only there when MPP paid, but this handler has #[x402] and #[pay] and accepts either: take \
         `Paid` (`pay402::axum::Paid` / `pay402::actix::Paid`) and match `Paid::Mpp { credential, receipt }`",
    ),
    (
        "Receipt",
        "is only there when MPP paid, but this handler has #[x402] and #[pay] and accepts either: take \
         `Paid` (`pay402::axum::Paid` / `pay402::actix::Paid`) and match `Paid::Mpp { credential, receipt }`",
    ),
];

/// Expands `#[x402(args)] item` for `framework`.
pub(crate) fn x402(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new("x402");
    let (x402_args, route) = crate::x402::parse_at(&cx, args, Span::call_site());
    if let Some((func, stacked)) = stacked(item.clone(), "pay") {
        let pay_cx = Ctxt::new("pay");
        let (pay_args, spec) = crate::pay::parse_at(&pay_cx, attribute_args(&pay_cx, &stacked), stacked.span());
        if let Some(errors) = pay_cx.into_error() {
            cx.push(errors);
        }
        check_agreement(&cx, (&x402_args, &route), (&pay_args, &spec), Inner::Pay);
        return expand(cx, framework, &dual(&route, &spec), quote!(#func));
    }
    let protocol = Protocol {
        guard: "X402Guard",
        injected: X402_INJECTED,
        refused: &[],
        statics: TokenStream::new(),
        route: route.to_static_route(),
        route_type: "StaticRoute",
        route_static: "__PAY402_ROUTE",
    };
    expand(cx, framework, &protocol, item)
}

/// Expands `#[pay(args)] item` (MPP) for `framework`.
pub(crate) fn pay(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new("pay");
    let (pay_args, spec) = crate::pay::parse_at(&cx, args, Span::call_site());
    if let Some((func, stacked)) = stacked(item.clone(), "x402") {
        let x402_cx = Ctxt::new("x402");
        let (x402_args, route) = crate::x402::parse_at(&x402_cx, attribute_args(&x402_cx, &stacked), stacked.span());
        if let Some(errors) = x402_cx.into_error() {
            cx.push(errors);
        }
        check_agreement(&cx, (&x402_args, &route), (&pay_args, &spec), Inner::X402);
        return expand(cx, framework, &dual(&route, &spec), quote!(#func));
    }
    let protocol = Protocol {
        guard: "MppGuard",
        injected: MPP_INJECTED,
        refused: &[],
        statics: TokenStream::new(),
        route: spec.to_static_spec(),
        route_type: "StaticPaySpec",
        route_static: "__PAY402_SPEC",
    };
    expand(cx, framework, &protocol, item)
}

/// The handler with the other payment attribute (`other`) taken out, and that attribute, when
/// the two are stacked.
fn stacked(item: TokenStream, other: &str) -> Option<(ItemFn, syn::Attribute)> {
    let mut func: ItemFn = syn::parse2(item).ok()?;
    let attr = take_stacked(&mut func, other)?;
    Some((func, attr))
}

/// The arguments of a stacked attribute (`#[pay(..)]` → `..`; a bare `#[pay]` has none).
fn attribute_args(cx: &Ctxt, attr: &syn::Attribute) -> TokenStream {
    match &attr.meta {
        syn::Meta::List(list) => list.tokens.clone(),
        syn::Meta::Path(_) => TokenStream::new(),
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(nv, format_args!("write the arguments in parentheses: #[{}(...)]", cx.attr()));
            TokenStream::new()
        }
    }
}

/// Which of the two attributes was written below the other (and is expanded by the outer one);
/// disagreements are reported on its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inner {
    X402,
    Pay,
}

/// A key's literal string as written, if it is one.
fn written(expr: Option<&Expr>) -> Option<String> {
    match expr? {
        Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
        _ => None,
    }
}

/// Reports where the two attributes describe the same thing differently: the payee, the asset,
/// the chain, the description and the price of one resource must agree.
fn check_agreement(cx: &Ctxt, x402: (&X402Args, &X402Route), pay: (&PayArgs, &PayRoute), inner: Inner) {
    let ((x_args, route), (p_args, spec)) = (x402, pay);
    let conflict = |x_key: &str, p_key: &str, x_text: &str, p_text: &str, why: &str| {
        let at = if inner == Inner::Pay { p_args.value(p_key) } else { x_args.value(x_key) };
        let message = format!(
            "#[x402] and #[pay] disagree: #[x402] has `{x_key} = {x_text}` but #[pay] has `{p_key} = {p_text}`; \
             {why}: write the same value in both (or the key in one of them only)"
        );
        match at {
            Some(expr) => cx.error_spanned_by(expr, message),
            None => cx.error_at(Span::call_site(), message),
        }
    };
    let pairs = [
        ("pay_to", "recipient", "one handler pays one payee"),
        ("asset", "currency", "one handler is paid in one token"),
    ];
    for (x_key, p_key, why) in pairs {
        let (x, p) = (route_field(route, x_key), spec_field(spec, p_key));
        if let (Some(x), Some(p)) = (x, p)
            && !x.eq_ignore_ascii_case(p)
        {
            conflict(x_key, p_key, &format!("{x:?}"), &format!("{p:?}"), why);
        }
    }
    // x402's network (X Layer unless written) against an explicit MPP chain id.
    if let Some(chain_id) = spec.chain_id
        && route.network != format!("eip155:{chain_id}")
    {
        conflict(
            "network",
            "chain_id",
            &format!("{:?}", route.network),
            &chain_id.to_string(),
            "one handler is paid on one chain",
        );
    }
    if let (Some(x), Some(p)) = (&route.description, &spec.description)
        && x != p
    {
        conflict("description", "description", &format!("{x:?}"), &format!("{p:?}"), "one handler is one resource");
    }
    // The price: compared when both are valid and in the same (default or named) token.
    let same_token = match (&route.asset, &spec.currency) {
        (None, None) => true,
        (Some(a), Some(c)) => a.eq_ignore_ascii_case(c),
        _ => false,
    };
    let price_ok = written(x_args.value("price")).as_deref() == Some(route.price.as_str());
    let amount_ok = written(p_args.value("amount")).as_deref() == Some(spec.amount.as_str());
    if same_token && price_ok && amount_ok {
        let atomic = |text: &str, allow_dollar: bool| {
            parse_money(text, MoneySyntax::Strict { allow_dollar }, false)
                .ok()
                .and_then(|v| v.to_atomic(crate::x402::USD_DECIMALS, Rounding::Exact).ok())
        };
        if let (Some(x), Some(p)) = (atomic(&route.price, true), atomic(&spec.amount, false))
            && x != p
        {
            conflict(
                "price",
                "amount",
                &format!("{:?}", route.price),
                &format!("{:?}", spec.amount),
                "one handler costs one price",
            );
        }
    }
}

fn route_field<'a>(route: &'a X402Route, key: &str) -> Option<&'a str> {
    match key {
        "pay_to" => route.pay_to.as_deref(),
        _ => route.asset.as_deref(),
    }
}

fn spec_field<'a>(spec: &'a PayRoute, key: &str) -> Option<&'a str> {
    match key {
        "recipient" => spec.recipient.as_deref(),
        _ => spec.currency.as_deref(),
    }
}

/// The dual form: both protocols' statics, and the dual route over them.
fn dual(route: &X402Route, spec: &PayRoute) -> Protocol<'static> {
    let route_static = syn::Ident::new("__PAY402_ROUTE", Span::mixed_site());
    let spec_static = syn::Ident::new("__PAY402_SPEC", Span::mixed_site());
    let route_init = route.to_static_route();
    let spec_init = spec.to_static_spec();
    Protocol {
        guard: "DualGuard",
        injected: DUAL_INJECTED,
        refused: DUAL_REFUSED,
        statics: quote! {
            static #route_static: ::pay402::__private::StaticRoute = #route_init;
            static #spec_static: ::pay402::__private::StaticPaySpec = #spec_init;
        },
        route: quote!(::pay402::__private::StaticDualRoute::new(&#route_static, &#spec_static)),
        route_type: "StaticDualRoute",
        route_static: "__PAY402_DUAL",
    }
}

/// The rewritten item, followed by every error collected in `cx`.
fn expand(cx: Ctxt, framework: Framework, protocol: &Protocol<'_>, item: TokenStream) -> TokenStream {
    let mut out = rewrite(&cx, framework, protocol, item);
    if let Some(errors) = cx.into_error() {
        out.extend(errors.to_compile_error());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn argument_errors_still_expand() {
        let out = x402(
            Framework::Axum,
            quote!(price = "abc", prise = "$1"),
            quote!(
                async fn h() {}
            ),
        )
        .to_string();
        assert!(out.starts_with("async fn h (__pay402_guard"), "{out}");
        assert!(out.contains("StaticRoute :: new (\"$0.001\""), "{out}");
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }

    #[test]
    fn valid_invocation_has_no_errors() {
        let out = x402(
            Framework::Actix,
            quote!(price = "$0.01"),
            quote!(
                async fn h() {}
            ),
        )
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains(":: pay402 :: __private :: actix :: X402Guard"), "{out}");
    }

    #[test]
    fn pay_expands_like_x402() {
        let out = pay(
            Framework::Axum,
            quote!(amount = "0.01", intent = "session"),
            quote!(
                /// Docs.
                pub async fn h(
                    State(s): State<AppState>,
                    receipt: pay402::axum::Receipt,
                    Json(b): Json<B>,
                    credential: Credential,
                ) -> Json<Out> {
                    body()
                }
            ),
        );
        let want = quote! {
            #[doc = r" Docs."]
            pub async fn h(
                __pay402_guard: ::pay402::__private::axum::MppGuard,
                State(s): State<AppState>,
                Json(b): Json<B>
            ) -> ::pay402::__private::axum::Response {
                static __PAY402_SPEC: ::pay402::__private::StaticPaySpec = ::pay402::__private::StaticPaySpec::new(
                    "0.01",
                    "session",
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                    ::core::option::Option::None,
                );
                let __pay402_verified = match __pay402_guard.verify(&__PAY402_SPEC).await {
                    ::core::result::Result::Ok(verified) => verified,
                    ::core::result::Result::Err(response) => return response,
                };
                let receipt: pay402::axum::Receipt = __pay402_verified.receipt();
                let credential: Credential = __pay402_verified.credential();
                __pay402_verified.finish(async move {
                    #[allow(
                        unknown_lints,
                        unreachable_code,
                        clippy::diverging_sub_expression,
                        clippy::empty_loop,
                        clippy::let_unit_value,
                        clippy::let_with_type_underscore,
                        clippy::needless_return,
                        clippy::unreachable
                    )]
                    if false {
                        let __pay402_fake_return: Json<Out> = loop {};
                        return __pay402_fake_return;
                    }
                    { body() }
                }).await
            }
        };
        assert_eq!(out.to_string(), want.to_string());
    }

    #[test]
    fn pay_errors_still_expand_once() {
        let out = pay(
            Framework::Actix,
            quote!(amount = "$0.01", splits = []),
            quote!(
                #[get("/")]
                async fn h(c: Option<Credential>) {}
            ),
        )
        .to_string();
        assert!(
            out.starts_with("# [get (\"/\")] async fn h (__pay402_guard : :: pay402 :: __private :: actix :: MppGuard")
        );
        assert!(out.contains("StaticPaySpec :: new (\"0.001\" , \"charge\""), "{out}");
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    }

    #[test]
    fn stacking_expands_the_dual_form_in_either_order() {
        for out in [
            pay(
                Framework::Axum,
                quote!(amount = "0.01", description = "Q"),
                quote!(
                    #[x402(price = "$0.01")]
                    async fn h(p: Paid) {}
                ),
            ),
            x402(
                Framework::Axum,
                quote!(price = "$0.01"),
                quote!(
                    #[pay(amount = "0.01", description = "Q")]
                    async fn h(p: Paid) {}
                ),
            ),
        ] {
            let out = out.to_string();
            assert!(!out.contains("compile_error"), "{out}");
            assert!(out.contains(":: pay402 :: __private :: axum :: DualGuard"), "{out}");
            assert!(out.contains("static __PAY402_ROUTE : :: pay402 :: __private :: StaticRoute"), "{out}");
            assert!(out.contains("static __PAY402_SPEC : :: pay402 :: __private :: StaticPaySpec"), "{out}");
            assert!(out.contains("StaticDualRoute :: new (& __PAY402_ROUTE , & __PAY402_SPEC)"), "{out}");
            assert!(out.contains("let p : Paid = __pay402_verified . paid () ;"), "{out}");
            assert!(!out.contains("x402 (") && !out.contains("# [pay ("), "{out}");
        }
    }

    fn errors_of(out: TokenStream) -> Vec<String> {
        let out = out.to_string();
        out.split("compile_error ! {").skip(1).map(|e| e.split('}').next().unwrap_or("").trim().to_owned()).collect()
    }

    #[test]
    fn stacked_conflicts_and_refused_types() {
        let errors = errors_of(x402(
            Framework::Actix,
            quote!(price = "$0.01", description = "a", pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            quote!(
                #[pay(
                    amount = "0.02",
                    description = "b",
                    recipient = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                    chain_id = 8453
                )]
                async fn h(p: X402Payment, c: Credential) {}
            ),
        ));
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(
            errors[0]
                .contains("`pay_to = \\\"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\\\"` but #[pay] has `recipient"),
            "{errors:?}"
        );
        assert!(errors[1].contains("`network = \\\"eip155:196\\\"` but #[pay] has `chain_id = 8453`"), "{errors:?}");
        assert!(errors[2].contains("`description = \\\"a\\\"` but #[pay] has `description = \\\"b\\\"`"), "{errors:?}");
        assert!(errors[3].contains("one handler costs one price"), "{errors:?}");
        assert!(errors[4].starts_with("\"`X402Payment` is only there when x402 paid"), "{errors:?}");
        assert!(errors[5].starts_with("\"`Credential` is only there when MPP paid"), "{errors:?}");
        // Equal values, a `$` price against a plain amount, addresses written once: no error.
        let out = pay(
            Framework::Axum,
            quote!(amount = "0.010", description = "a", recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            quote!(
                #[x402(price = "$0.01", description = "a", network = "eip155:196")]
                async fn h() {}
            ),
        );
        assert!(errors_of(out).is_empty());
        // The inner attribute's own errors are reported with its name.
        let errors = errors_of(pay(
            Framework::Axum,
            quote!(amount = "0.01"),
            quote!(
                #[x402(prise = "$0.01")]
                async fn h() {}
            ),
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("unknown key `prise` in #[x402(...)]"), "{errors:?}");
        assert!(errors[1].contains("missing `price`"), "{errors:?}");
    }
}
