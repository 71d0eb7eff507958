//! The entry points behind every framework's `#[x402]` and `#[pay]`: parse → validate →
//! rewrite, then the rewritten item plus every error. The two attributes differ only in their
//! [`Protocol`].

use crate::attr::Ctxt;
use crate::handler::{Framework, Injected, Protocol, rewrite};
use proc_macro2::TokenStream;

/// The parameters an x402 handler gets from the verified payment.
const X402_INJECTED: &[Injected] = &[Injected { type_name: "X402Payment", getter: "payment" }];

/// The parameters an MPP handler gets from the verified payment.
const MPP_INJECTED: &[Injected] =
    &[Injected { type_name: "Credential", getter: "credential" }, Injected { type_name: "Receipt", getter: "receipt" }];

/// Expands `#[x402(args)] item` for `framework`.
pub(crate) fn x402(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new("x402");
    let route = crate::x402::parse(&cx, args);
    let protocol = Protocol {
        guard: "X402Guard",
        injected: X402_INJECTED,
        route: route.to_static_route(),
        route_type: "StaticRoute",
        route_static: "__PAY402_ROUTE",
        other_attr: "pay",
    };
    expand(cx, framework, &protocol, item)
}

/// Expands `#[pay(args)] item` (MPP) for `framework`.
pub(crate) fn pay(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new("pay");
    let route = crate::pay::parse(&cx, args);
    let protocol = Protocol {
        guard: "MppGuard",
        injected: MPP_INJECTED,
        route: route.to_static_spec(),
        route_type: "StaticPaySpec",
        route_static: "__PAY402_SPEC",
        other_attr: "x402",
    };
    expand(cx, framework, &protocol, item)
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
    fn stacking_is_one_error_in_either_order() {
        let out = pay(
            Framework::Axum,
            quote!(amount = "0.01"),
            quote!(
                #[x402(price = "$0.01")]
                async fn h() {}
            ),
        );
        let out = out.to_string();
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("stacking #[x402] and #[pay] is not supported yet"), "{out}");
        assert!(!out.contains("x402 ("), "{out}");
        let out = x402(
            Framework::Actix,
            quote!(price = "$0.01"),
            quote!(
                #[pay(amount = "0.01")]
                async fn h() {}
            ),
        );
        let out = out.to_string();
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("X402Guard") && !out.contains("MppGuard"), "{out}");
    }
}
