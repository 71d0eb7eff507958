//! The one expansion behind every framework's `#[x402]` and `#[pay]`, [`expand_attr`]: parse →
//! validate → rewrite, then the rewritten item plus every error. The two attributes differ only
//! in their [`PaymentAttr`] (what the expansion names, and which the other one is). Stacked on one handler (in either order), the outer one takes the inner one
//! out, validates both, checks that they agree, and expands the dual form: one guard that
//! accepts either protocol.

use crate::attr::{ArgSpec, Ctxt};
use crate::handler::{Framework, Injected, Protocol, rewrite, take_stacked};
use crate::literal::{Parsed, Route, Validate, Value};
use crate::pay::PayArgs;
use crate::x402::X402Args;
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, ItemFn};

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
        "UptoCharge",
        "is only there on a pay-per-use route (#[x402(scheme = \"upto\", max = ..)] alone), but this handler \
         has #[x402] and #[pay]: MPP charges a fixed amount",
    ),
    (
        "Receipt",
        "is only there when MPP paid, but this handler has #[x402] and #[pay] and accepts either: take \
         `Paid` (`pay402::axum::Paid` / `pay402::actix::Paid`) and match `Paid::Mpp { credential, receipt }`",
    ),
    (
        "PaidStream",
        "is only there on a route priced per event (#[pay(intent = \"session\", per = \"event\")] alone), but \
         this handler has #[x402] and #[pay], which charge once per request: drop #[x402] to meter a stream \
         per event",
    ),
];

/// Why an `#[x402]` handler cannot take a `PaidStream`.
const X402_STREAM_REFUSED: (&str, &str) = (
    "PaidStream",
    "is only there on an MPP route priced per event: this is an #[x402] route; write #[pay(intent = \
     \"session\", amount = \"0.0001\", per = \"event\")] instead of #[x402] to meter a stream per event",
);

/// What an `#[x402(scheme = "upto", ..)]` handler cannot take.
const UPTO_REFUSED: &[(&str, &str)] = &[X402_STREAM_REFUSED];

/// What a `#[pay]` handler charged per request (the default `per`) cannot take.
const PER_REQUEST_REFUSED: &[(&str, &str)] = &[(
    "PaidStream",
    "is only there on a route priced per event: this #[pay] route charges once per request; write \
     #[pay(intent = \"session\", per = \"event\", ..)] to meter a stream per event",
)];

/// The parameters a `#[pay]` handler charged per request gets from the verified payment.
const PER_REQUEST_INJECTED: &[Injected] =
    &[Injected { type_name: "Credential", getter: "credential" }, Injected { type_name: "Receipt", getter: "receipt" }];

/// The parameters a `#[pay(intent = "session", per = "event")]` handler gets: the request's
/// payment, and the metered stream it answers with.
const PER_EVENT_INJECTED: &[Injected] = &[
    Injected { type_name: "Credential", getter: "credential" },
    Injected { type_name: "Receipt", getter: "receipt" },
    Injected { type_name: "PaidStream", getter: "paid_stream" },
];

/// What a fixed-price `#[x402]` handler (any scheme but `upto`) cannot take.
const FIXED_PRICE_REFUSED: &[(&str, &str)] = &[
    (
        "UptoCharge",
        "is only there on a pay-per-use route: this route has a fixed `price`; write #[x402(scheme = \"upto\", \
         max = \"$0.10\")] to charge what the handler reports, up to `max`",
    ),
    X402_STREAM_REFUSED,
];

/// The parameters a fixed-price `#[x402]` handler gets from the verified payment.
const FIXED_PRICE_INJECTED: &[Injected] = &[Injected { type_name: "X402Payment", getter: "payment" }];

/// The parameters an `#[x402(scheme = "upto", ..)]` handler gets from the verified payment.
const UPTO_INJECTED: &[Injected] = &[
    Injected { type_name: "X402Payment", getter: "payment" },
    Injected { type_name: "UptoCharge", getter: "upto_charge" },
];

/// The parameters a handler gets from the verified payment (injected) and the payment types it
/// cannot take, each with why and what to write instead (refused).
type Parameters = (&'static [Injected], &'static [(&'static str, &'static str)]);

/// What one protocol's single-attribute expansion names.
pub(crate) struct Emitted {
    /// The guard type inside `__private::<framework>`.
    guard: &'static str,
    /// The route `static`'s type, under `::pay402::__private`.
    route_type: &'static str,
    /// The route `static`'s name.
    route_static: &'static str,
    /// The gate the guard verifies with.
    gate: &'static str,
    /// What the guard takes from axum's router state.
    states: &'static [&'static str],
}

/// One payment attribute, as far as the expansion is concerned (implemented by its raw-argument
/// struct).
pub(crate) trait PaymentAttr: Validate {
    /// What its expansion names.
    const EMITTED: Emitted;
    /// The other payment attribute, which may be stacked on the same handler.
    type Other: PaymentAttr<Other = Self>;
    /// A stacked pair, `outer` expanding `inner`.
    fn stacked<'a>(outer: &'a Parsed<Self>, inner: &'a Parsed<Self::Other>) -> Stacked<'a>;
    /// The parameters a handler of this attribute alone, with `route`, gets and cannot take.
    fn parameters(route: &Route) -> Parameters;
}

/// `#[x402]` and `#[pay]` on one handler.
pub(crate) struct Stacked<'a> {
    x402: &'a Parsed<X402Args>,
    pay: &'a Parsed<PayArgs>,
    /// The one written below the other; disagreements are reported on its values.
    inner: Inner,
}

/// `#[x402]`: what an x402 handler's expansion names.
const X402: Emitted = Emitted {
    guard: "X402Guard",
    route_type: "StaticRoute",
    route_static: "__PAY402_ROUTE",
    gate: "X402HttpServer",
    states: &["X402HttpServer"],
};

/// `#[pay]`: what an MPP handler's expansion names.
const MPP: Emitted = Emitted {
    guard: "MppGuard",
    route_type: "StaticPaySpec",
    route_static: "__PAY402_SPEC",
    gate: "Mpp",
    states: &["Mpp"],
};

impl PaymentAttr for X402Args {
    const EMITTED: Emitted = X402;
    type Other = PayArgs;
    fn stacked<'a>(outer: &'a Parsed<Self>, inner: &'a Parsed<PayArgs>) -> Stacked<'a> {
        Stacked { x402: outer, pay: inner, inner: Inner::Pay }
    }
    /// `UptoCharge` is injected on `upto` routes only; a fixed-price route refuses it.
    fn parameters(route: &Route) -> Parameters {
        if route.text("scheme") == Some(pay402_core::names::UPTO) {
            (UPTO_INJECTED, UPTO_REFUSED)
        } else {
            (FIXED_PRICE_INJECTED, FIXED_PRICE_REFUSED)
        }
    }
}

impl PaymentAttr for PayArgs {
    const EMITTED: Emitted = MPP;
    type Other = X402Args;
    fn stacked<'a>(outer: &'a Parsed<Self>, inner: &'a Parsed<X402Args>) -> Stacked<'a> {
        Stacked { x402: inner, pay: outer, inner: Inner::X402 }
    }
    /// `PaidStream` is injected on routes priced per event only; a per-request route refuses it.
    fn parameters(route: &Route) -> Parameters {
        if crate::pay::per_event(route) {
            (PER_EVENT_INJECTED, &[])
        } else {
            (PER_REQUEST_INJECTED, PER_REQUEST_REFUSED)
        }
    }
}

/// Expands `#[A(args)] item` for `framework`: the single-protocol form, or, when the other
/// payment attribute is stacked below it, the dual form for both.
pub(crate) fn expand_attr<A: PaymentAttr>(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new(A::NAME);
    let outer = Parsed::<A>::parse(&cx, args, Span::call_site());
    if let Some((func, attr)) = stacked(item.clone(), A::Other::NAME) {
        let inner_cx = Ctxt::new(A::Other::NAME);
        let inner = Parsed::<A::Other>::parse(&inner_cx, attribute_args(&inner_cx, &attr), attr.span());
        if let Some(errors) = inner_cx.into_error() {
            cx.push(errors);
        }
        let pair = A::stacked(&outer, &inner);
        check_agreement(&cx, &pair);
        check_not_metered(&cx, pair.pay);
        return expand(cx, framework, &dual(&pair), quote!(#func));
    }
    let Emitted { guard, route_type, route_static, gate, states } = A::EMITTED;
    let (injected, refused) = A::parameters(&outer.route);
    let protocol = Protocol {
        guard,
        injected,
        refused,
        statics: TokenStream::new(),
        route: outer.route.to_builder(route_type),
        route_type,
        route_static,
        gate,
        states,
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
    /// `#[x402]` is the inner attribute.
    X402,
    /// `#[pay]` is the inner attribute.
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
fn check_agreement(cx: &Ctxt, stacked: &Stacked<'_>) {
    let Stacked { x402, pay, inner } = *stacked;
    let (route, spec) = (&x402.route, &pay.route);
    let conflict = |x_key: &str, p_key: &str, x_text: &str, p_text: &str, why: &str| {
        let at = if inner == Inner::Pay { pay.args.value(p_key) } else { x402.args.value(x_key) };
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
        if let (Some(x), Some(p)) = (route.text(x_key), spec.text(p_key))
            && !x.eq_ignore_ascii_case(p)
        {
            conflict(x_key, p_key, &format!("{x:?}"), &format!("{p:?}"), why);
        }
    }
    // x402's network (X Layer unless written) against an explicit MPP chain id.
    let network = crate::x402::network(route);
    if let Some(Value::Int(chain_id)) = spec.get("chain_id")
        && network != format!("eip155:{chain_id}")
    {
        conflict(
            "network",
            "chain_id",
            &format!("{network:?}"),
            &chain_id.to_string(),
            "one handler is paid on one chain",
        );
    }
    if let (Some(x), Some(p)) = (route.text("description"), spec.text("description"))
        && x != p
    {
        conflict("description", "description", &format!("{x:?}"), &format!("{p:?}"), "one handler is one resource");
    }
    // The price: compared when both are valid and in the same (default or named) token.
    let same_token = match (route.text("asset"), spec.text("currency")) {
        (None, None) => true,
        (Some(a), Some(c)) => a.eq_ignore_ascii_case(c),
        _ => false,
    };
    let (price, amount) = (route.required(), spec.required());
    let price_ok = written(x402.args.value("price")).as_deref() == Some(price);
    let amount_ok = written(pay.args.value("amount")).as_deref() == Some(amount);
    if same_token && price_ok && amount_ok {
        let (x, p) = (crate::x402::PRICE.atomic(price), crate::pay::AMOUNT.atomic(amount));
        if let (Some(x), Some(p)) = (x, p)
            && x != p
        {
            conflict("price", "amount", &format!("{price:?}"), &format!("{amount:?}"), "one handler costs one price");
        }
    }
}

/// Reports `per = "event"` on a handler that also has `#[x402]`: a route accepting either
/// protocol charges once per request (x402 has no metered streams).
fn check_not_metered(cx: &Ctxt, pay: &Parsed<PayArgs>) {
    if !crate::pay::per_event(&pay.route) {
        return;
    }
    let message = "per = \"event\" is not supported on a handler that also has #[x402]: a route accepting either \
                   protocol charges once per request; drop #[x402] to meter a stream per event (MPP session), or \
                   drop `per` to charge per request";
    match pay.args.slot_ref("per").and_then(|slot| slot.get()) {
        Some((key, value)) => cx.error_spanned_by(quote!(#key = #value), message),
        None => cx.error_at(Span::call_site(), message),
    }
}

/// The dual form: both protocols' statics, and the dual route over them.
fn dual(stacked: &Stacked<'_>) -> Protocol<'static> {
    let (x402, mpp) = (X402, MPP);
    let route_static = syn::Ident::new(x402.route_static, Span::mixed_site());
    let spec_static = syn::Ident::new(mpp.route_static, Span::mixed_site());
    let route_type = syn::Ident::new(x402.route_type, Span::call_site());
    let spec_type = syn::Ident::new(mpp.route_type, Span::call_site());
    let route_init = stacked.x402.route.to_builder(x402.route_type);
    let spec_init = stacked.pay.route.to_builder(mpp.route_type);
    Protocol {
        guard: "DualGuard",
        injected: DUAL_INJECTED,
        refused: DUAL_REFUSED,
        statics: quote! {
            static #route_static: ::pay402::__private::#route_type = #route_init;
            static #spec_static: ::pay402::__private::#spec_type = #spec_init;
        },
        route: quote!(::pay402::__private::StaticDualRoute::new(&#route_static, &#spec_static)),
        route_type: "StaticDualRoute",
        route_static: "__PAY402_DUAL",
        gate: "PaymentRouter",
        states: &["X402HttpServer", "Mpp"],
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

    fn x402(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
        expand_attr::<X402Args>(framework, args, item)
    }

    fn pay(framework: Framework, args: TokenStream, item: TokenStream) -> TokenStream {
        expand_attr::<PayArgs>(framework, args, item)
    }

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
        assert!(out.starts_with("async fn h < __Pay402State , __Pay402Via0 > (__pay402_guard"), "{out}");
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
        let finish = crate::handler::tests::expected_finish(quote!(Json<Out>));
        let screen = crate::handler::tests::expected_screen("__PAY402_SPEC");
        let state = crate::handler::tests::expected_extracted("axum", 0, quote!(State(s)), quote!(State<AppState>));
        let json = crate::handler::tests::expected_extracted("axum", 1, quote!(Json(b)), quote!(Json<B>));
        let want = quote! {
            #[doc = r" Docs."]
            pub async fn h<__Pay402State, __Pay402Via0>(
                __pay402_guard: ::pay402::__private::axum::MppGuard<__Pay402State>,
                __pay402_arg0: ::pay402::__private::axum::Deferred<State<AppState> >,
                __pay402_arg1: ::pay402::__private::axum::Deferred<Json<B> >
            ) -> ::pay402::__private::axum::Response
            where
                ::pay402::__private::axum::Mpp: ::pay402::__private::axum::RouterState<__Pay402State, __Pay402Via0>
            {
                static __PAY402_SPEC: ::pay402::__private::StaticPaySpec =
                    ::pay402::__private::StaticPaySpec::new("0.01").intent("session");
                #screen
                #state
                #json
                let __pay402_verified = match __pay402_guard.verify(&__PAY402_SPEC).await {
                    ::core::result::Result::Ok(verified) => verified,
                    ::core::result::Result::Err(response) => return response,
                };
                let receipt: pay402::axum::Receipt = __pay402_verified.receipt();
                let credential: Credential = __pay402_verified.credential();
                #finish
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
        assert!(out.contains("StaticPaySpec :: new (\"0.001\") ;"), "{out}");
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
            assert!(out.contains(":: pay402 :: __private :: axum :: DualGuard < __Pay402State >"), "{out}");
            assert!(
                out.contains(
                    "where :: pay402 :: __private :: axum :: X402HttpServer : :: pay402 :: __private :: axum :: \
                     RouterState < __Pay402State , __Pay402Via0 > , :: pay402 :: __private :: axum :: Mpp : :: \
                     pay402 :: __private :: axum :: RouterState < __Pay402State , __Pay402Via1 >"
                ),
                "{out}"
            );
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

    #[test]
    fn paid_stream_is_injected_on_per_event_routes_only() {
        let handler = quote!(
            async fn tokens(stream: PaidStream, q: Query<Q>) -> EventStream {
                stream.sse(events(q))
            }
        );
        let out = pay(Framework::Axum, quote!(intent = "session", amount = "0.0001", per = "event"), handler.clone());
        assert!(errors_of(out.clone()).is_empty());
        let out = out.to_string();
        assert!(out.contains("let stream : PaidStream = __pay402_verified . paid_stream () ;"), "{out}");
        assert!(out.contains(". per (:: pay402 :: __private :: Per :: Event)"), "{out}");
        assert!(!out.contains("Deferred < PaidStream"), "{out}");
        // A per-request #[pay] route, a fixed-price or upto #[x402] route: refused, with the fix.
        for (out, want) in [
            (
                pay(Framework::Actix, quote!(intent = "session", amount = "0.01"), handler.clone()),
                "this #[pay] route charges once per request; write #[pay(intent = \\\"session\\\", per = \\\"event\\\"",
            ),
            (
                pay(Framework::Axum, quote!(intent = "session", amount = "0.01", per = "request"), handler.clone()),
                "this #[pay] route charges once per request",
            ),
            (x402(Framework::Axum, quote!(price = "$0.01"), handler.clone()), "this is an #[x402] route"),
            (
                x402(Framework::Axum, quote!(scheme = "upto", max = "$0.01"), handler.clone()),
                "this is an #[x402] route",
            ),
        ] {
            let errors = errors_of(out);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with("\"`PaidStream` is only there on"), "{errors:?}");
            assert!(errors[0].contains(want), "{errors:?}");
        }
        // `Option<PaidStream>`: the stream is always there.
        let errors = errors_of(pay(
            Framework::Axum,
            quote!(intent = "session", amount = "0.0001", per = "event"),
            quote!(
                async fn h(s: Option<PaidStream>) {}
            ),
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("take `PaidStream` itself, not wrapped"), "{errors:?}");
    }

    #[test]
    fn dual_routes_are_not_metered() {
        for out in [
            pay(
                Framework::Axum,
                quote!(intent = "session", amount = "0.01", per = "event"),
                quote!(
                    #[x402(price = "$0.01")]
                    async fn h(s: PaidStream) {}
                ),
            ),
            x402(
                Framework::Actix,
                quote!(price = "$0.01"),
                quote!(
                    #[pay(intent = "session", amount = "0.01", per = "event")]
                    async fn h(s: PaidStream) {}
                ),
            ),
        ] {
            let errors = errors_of(out);
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors[0].contains("not supported on a handler that also has #[x402]"), "{errors:?}");
            assert!(errors[1].contains("`PaidStream` is only there on a route priced per event"), "{errors:?}");
            assert!(errors[1].contains("drop #[x402] to meter a stream per event"), "{errors:?}");
        }
        // `per = "request"` (the dual route's own behaviour) is accepted.
        let out = pay(
            Framework::Axum,
            quote!(amount = "0.01", per = "request"),
            quote!(
                #[x402(price = "$0.01")]
                async fn h() {}
            ),
        );
        assert!(errors_of(out).is_empty());
    }
}
