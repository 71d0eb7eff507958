//! The entry point behind every framework's `#[x402]`: parse → validate → rewrite, then the
//! rewritten item plus every error.

use crate::attr::Ctxt;
use crate::handler::{Framework, Injected, Protocol, rewrite};
use proc_macro2::TokenStream;

/// The parameters an x402 handler gets from the verified payment.
const X402_INJECTED: &[Injected] = &[Injected { type_name: "X402Payment", getter: "payment" }];

/// Expands `#[x402(args)] item` for `framework`.
pub(crate) fn x402(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new("x402");
    let route = crate::x402::parse(&cx, args);
    let protocol = Protocol {
        guard: "X402Guard",
        injected: X402_INJECTED,
        route: route.to_static_route(),
        route_type: "StaticRoute",
    };
    let mut out = rewrite(&cx, framework, &protocol, item);
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
}
