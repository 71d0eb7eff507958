//! The handler rewrite shared by the payment attributes: check the fn's shape, put the guard
//! first, take out the parameters the verified payment fills, take the other arguments as
//! `Deferred` extractors, and wrap the body so the handler's future verifies before and settles
//! after (design note §3.3). The order inside: an unpaid request's 402 (`screen`), then the
//! arguments' rejections, then the payment's verification, so an unpaid request is challenged
//! whatever its body, and a rejected request is never verified.

use crate::attr::Ctxt;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{AttrStyle, FnArg, ItemFn, PatType, ReturnType, Type};

/// The web framework an entry point expands for; its only effect is the `__private` module the
/// expansion names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framework {
    /// `::pay402::__private::axum`.
    Axum,
    /// `::pay402::__private::actix`.
    Actix,
}

impl Framework {
    /// The `__private` submodule.
    fn module(self) -> syn::Ident {
        format_ident!("{}", if self == Self::Axum { "axum" } else { "actix" })
    }

    /// The framework's name, for messages.
    fn name(self) -> &'static str {
        if self == Self::Axum { "axum" } else { "actix-web" }
    }
}

/// Most arguments a handler may take (both frameworks implement their handler traits up to 16).
const MAX_ARGS: usize = 16;

/// A parameter type the macro fills from the verified payment (recognised by the last segment
/// of its path) instead of leaving it to an extractor.
pub(crate) struct Injected {
    /// The type's name, e.g. `X402Payment`.
    pub(crate) type_name: &'static str,
    /// The method of the verified guard that produces it, e.g. `payment`.
    pub(crate) getter: &'static str,
}

/// What varies between the payment attributes.
pub(crate) struct Protocol<'a> {
    /// The guard type inside `__private::<framework>`, e.g. `X402Guard`.
    pub(crate) guard: &'static str,
    /// The parameters filled from the payment.
    pub(crate) injected: &'a [Injected],
    /// Parameter types this handler cannot take, each with the message explaining why (and what
    /// to take instead), e.g. `X402Payment` in a handler offering both protocols.
    pub(crate) refused: &'a [(&'static str, &'static str)],
    /// Items emitted before the route `static` (the two protocol statics the dual route refers
    /// to); empty for a single protocol.
    pub(crate) statics: TokenStream,
    /// The initialiser of the route `static` (a `StaticRoute::new(..)` expression).
    pub(crate) route: TokenStream,
    /// The route `static`'s type, under `::pay402::__private`.
    pub(crate) route_type: &'static str,
    /// The route `static`'s name, e.g. `__PAY402_ROUTE`.
    pub(crate) route_static: &'static str,
    /// The gate the guard verifies with (under `__private::axum`), e.g. `X402HttpServer`.
    pub(crate) gate: &'static str,
    /// What the guard takes from axum's router state (under `__private::axum`), each required
    /// as `RouterState<S, _>` of the handler's router state `S`: `X402HttpServer`, `Mpp`.
    pub(crate) states: &'static [&'static str],
}

/// Takes the first attribute of `func` named (by its last path segment) `other_attr` out of it:
/// the other payment attribute stacked on the same handler, which the outer one expands together
/// with its own (so the other macro does not run). An anonymous `use <its path> as _;` at the
/// top of the body keeps the macro's import used, so no `unused import` warning appears.
pub(crate) fn take_stacked(func: &mut ItemFn, other_attr: &str) -> Option<syn::Attribute> {
    let index = func.attrs.iter().position(|a| {
        matches!(a.style, AttrStyle::Outer)
            && a.path().segments.last().is_some_and(|segment| segment.ident == other_attr)
    })?;
    let attr = func.attrs.remove(index);
    let path = attr.path();
    let tokens = quote_spanned!(path.span()=> #[allow(unused_imports)] use #path as _;);
    if let Ok(stmt) = syn::parse2::<syn::Stmt>(tokens) {
        func.block.stmts.insert(0, stmt);
    }
    Some(attr)
}

/// The last path segment's name of `ty`, looking through parentheses and groups.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        _ => None,
    }
}

/// The injected parameter `ty` stands for, if any.
fn injected_of<'a>(ty: &Type, injected: &'a [Injected]) -> Option<&'a Injected> {
    let name = last_segment(ty)?.ident.to_string();
    injected.iter().find(|i| i.type_name == name)
}

/// The refused parameter type `ty` names (itself, or wrapped in `Option` / `Result`), if any.
fn refused_of(ty: &Type, refused: &[(&'static str, &'static str)]) -> Option<(&'static str, &'static str)> {
    let segment = last_segment(ty)?;
    if let Some(found) = refused.iter().find(|(name, _)| segment.ident == name) {
        return Some(*found);
    }
    if segment.ident != "Option" && segment.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else { return None };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => refused_of(t, refused),
        _ => None,
    })
}

/// `Option<X402Payment>` and the like: the payment is always there in a paid handler.
fn optional_injected<'a>(ty: &Type, injected: &'a [Injected]) -> Option<&'a Injected> {
    let segment = last_segment(ty)?;
    if segment.ident != "Option" && segment.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else { return None };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => injected_of(t, injected),
        _ => None,
    })
}

/// Replaces every `impl Trait` with `_` (tracing-attributes' `ImplTraitEraser`).
struct ImplTraitEraser;

impl VisitMut for ImplTraitEraser {
    fn visit_type_mut(&mut self, t: &mut Type) {
        if let Type::ImplTrait(..) = t {
            *t = Type::Infer(syn::TypeInfer { underscore_token: syn::Token![_](t.span()) });
        } else {
            syn::visit_mut::visit_type_mut(self, t);
        }
    }
}

/// Whether a type mentions `impl Trait`, `Self`, or one of the fn's generic parameters.
struct Mentions<'a> {
    generics: &'a syn::Generics,
    impl_trait: bool,
    outer: bool,
}

impl<'ast> Visit<'ast> for Mentions<'_> {
    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        self.impl_trait = true;
        syn::visit::visit_type_impl_trait(self, t);
    }
    fn visit_ident(&mut self, ident: &'ast syn::Ident) {
        let generic = self.generics.params.iter().any(|p| match p {
            syn::GenericParam::Type(t) => t.ident == *ident,
            syn::GenericParam::Const(c) => c.ident == *ident,
            syn::GenericParam::Lifetime(_) => false,
        });
        if generic || ident == "Self" {
            self.outer = true;
        }
    }
    fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
        if lifetime.ident != "static" {
            self.outer = true;
        }
    }
}

/// The statement that fixes the async block's output to the declared return type, so `?` and
/// inference inside the user's block behave as in the original fn (tracing-attributes' "fake
/// return edge"). `impl Trait` is erased to `_`; when the type allows it, a nested fn with the
/// `impl Trait` in argument position checks the bounds (and keeps the traits' imports used).
fn fake_return_edge(output: &ReturnType, fn_ident: &syn::Ident, generics: &syn::Generics) -> TokenStream {
    let (declared, span) = match output {
        ReturnType::Type(_, ty) => ((**ty).clone(), ty.span()),
        ReturnType::Default => (syn::parse_quote!(()), fn_ident.span()),
    };
    let mut mentions = Mentions { generics, impl_trait: false, outer: false };
    mentions.visit_type(&declared);
    let mut erased = declared.clone();
    ImplTraitEraser.visit_type_mut(&mut erased);
    let fake = syn::Ident::new("__pay402_fake_return", span.resolved_at(Span::mixed_site()));
    let (check_fn, check_call) = if mentions.impl_trait && !mentions.outer {
        let check = syn::Ident::new("__pay402_returns", span.resolved_at(Span::mixed_site()));
        (quote_spanned!(span=> fn #check(_: &#declared) {}), quote_spanned!(span=> #check(&#fake);))
    } else {
        (TokenStream::new(), TokenStream::new())
    };
    let allow = fake_return_lints(span);
    quote_spanned! {span=>
        #allow
        if false {
            #check_fn
            let #fake: #erased = loop {};
            #check_call
            return #fake;
        }
    }
}

/// What the fake return edge allows: it never runs, and exists for inference only.
fn fake_return_lints(span: Span) -> TokenStream {
    quote_spanned! {span=>
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
    }
}

/// Rewrites the handler `item` for `protocol`. Shape errors go to `cx`; the result is always a
/// complete item (the original one when it cannot be rewritten), so errors do not cascade.
pub(crate) fn rewrite(cx: &Ctxt, framework: Framework, protocol: &Protocol<'_>, item: TokenStream) -> TokenStream {
    let attr = cx.attr();
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            cx.error_at(
                Span::call_site(),
                format_args!("#[{attr}] goes on an `async fn` request handler (a free fn or an associated fn)"),
            );
            return item;
        }
    };
    if let Some(receiver) = func.sig.receiver() {
        cx.error_spanned_by(
            receiver,
            format_args!(
                "#[{attr}] handlers cannot take `self`: {} calls handlers without a receiver; make it an \
                 associated fn (drop `self`) and pass state through an extractor",
                framework.name()
            ),
        );
        return item;
    }
    if func.sig.asyncness.is_none() {
        cx.error_spanned_by(
            func.sig.fn_token,
            format_args!("#[{attr}] handlers must be `async fn`: write `async fn {}(..)`", func.sig.ident),
        );
        func.sig.asyncness = Some(syn::Token![async](func.sig.fn_token.span));
    }

    let verified = syn::Ident::new("__pay402_verified", Span::mixed_site());
    let guard = syn::Ident::new("__pay402_guard", Span::mixed_site());
    let route = syn::Ident::new(protocol.route_static, Span::mixed_site());

    let module = framework.module();
    let mut own: Vec<FnArg> = Vec::new();
    let mut kept: Vec<TokenStream> = Vec::new();
    let mut extracted: Vec<TokenStream> = Vec::new();
    let mut bindings: Vec<TokenStream> = Vec::new();
    for arg in std::mem::take(&mut func.sig.inputs) {
        let FnArg::Typed(PatType { attrs, pat, ty, .. }) = &arg else { continue };
        if let Some(injected) = injected_of(ty, protocol.injected) {
            let getter = syn::Ident::new(injected.getter, Span::mixed_site());
            bindings.push(quote_spanned! {arg.span()=> #(#attrs)* let #pat: #ty = #verified.#getter(); });
            continue;
        }
        if let Some((name, message)) = refused_of(ty, protocol.refused) {
            cx.error_spanned_by(ty, format_args!("`{name}` {message}"));
        }
        if let Some(injected) = optional_injected(ty, protocol.injected) {
            cx.error_spanned_by(
                ty,
                format_args!(
                    "the payment is always present in a #[{attr}] handler: take `{}` itself, not wrapped",
                    injected.type_name
                ),
            );
        }
        let (param, statement) = deferred(&module, kept.len(), attrs, pat, ty);
        kept.push(param);
        extracted.push(statement);
        own.push(arg);
    }
    if own.len() >= MAX_ARGS {
        cx.error_spanned_by(
            &own[MAX_ARGS - 1],
            format_args!(
                "too many arguments: #[{attr}] adds one and {} handlers take at most {MAX_ARGS}; group some \
                 extractors into a tuple or a struct",
                framework.name()
            ),
        );
    }

    let ItemFn { attrs, vis, sig, block } = func;
    let (outer, inner): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| matches!(a.style, AttrStyle::Outer));
    let syn::Signature { constness, asyncness, unsafety, abi, fn_token, ident, mut generics, output, .. } = sig;
    let edge = fake_return_edge(&output, &ident, &generics);
    let guard_type = syn::Ident::new(protocol.guard, Span::call_site());
    // A handler with generics of its own keeps them as written (`get(handler::<T>)`), and one
    // checked by `#[axum::debug_handler]` (which refuses generic fns) stays non-generic.
    let own_generics = generics.params.iter().any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    let debug_handler = outer.iter().any(|a| a.path().segments.last().is_some_and(|s| s.ident == "debug_handler"));
    let guard_type = match framework {
        Framework::Axum if own_generics || debug_handler => {
            let gate = syn::Ident::new(protocol.gate, Span::call_site());
            quote!(UntiedGuard<::pay402::__private::axum::#gate>)
        }
        Framework::Axum => router_state_bounds(&mut generics, protocol.states, &guard_type),
        Framework::Actix => quote!(#guard_type),
    };
    let where_clause = &generics.where_clause;
    let route_type = syn::Ident::new(protocol.route_type, Span::call_site());
    let route_init = &protocol.route;
    let statics = &protocol.statics;
    // The `finish` call carries the declared return type's location, so "`Foo: IntoResponse` is
    // not satisfied" points at the user's `-> Foo` (rustc adds one more copy at the attribute,
    // for the handler's future).
    let finish_span = output_span(&output, &ident).resolved_at(Span::mixed_site());
    let finish = quote_spanned! {finish_span=>
        #verified.finish(async move {
            #edge
            #block
        }).await
    };
    // With arguments of its own, the handler answers an unpaid request's 402 before their
    // rejections, and their rejections before a paying request's verification.
    let screen = if extracted.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            let #guard = match #guard.screen(&#route).await {
                ::core::result::Result::Ok(guard) => guard,
                ::core::result::Result::Err(response) => return response,
            };
            #(#extracted)*
        }
    };
    quote! {
        #(#outer)*
        #vis #constness #asyncness #unsafety #abi #fn_token #ident #generics (
            #guard: ::pay402::__private::#module::#guard_type,
            #(#kept),*
        ) -> ::pay402::__private::#module::Response #where_clause {
            #(#inner)*
            #statics
            static #route: ::pay402::__private::#route_type = #route_init;
            #screen
            let #verified = match #guard.verify(&#route).await {
                ::core::result::Result::Ok(verified) => verified,
                ::core::result::Result::Err(response) => return response,
            };
            #(#bindings)*
            #finish
        }
    }
}

/// Makes an axum handler generic over the router state it is registered with, `S`, and requires
/// of `S` what the guard takes from it: `X402HttpServer: RouterState<S, _>` (and/or `Mpp`), one
/// marker parameter each. A router whose state lacks it is then reported on the handler's
/// registration with `RouterState`'s message ("the router state `S` does not provide the
/// `X402HttpServer` …"), pointing at this bound on the attribute. The guard type taking `S`
/// (`X402Guard<S>`) is what ties `S` to the router's state; returns it.
fn router_state_bounds(generics: &mut syn::Generics, states: &[&str], guard: &syn::Ident) -> TokenStream {
    let state = syn::Ident::new("__Pay402State", Span::call_site());
    generics.params.push(syn::parse_quote!(#state));
    for (index, provided) in states.iter().enumerate() {
        let marker = format_ident!("__Pay402Via{index}");
        let provided = syn::Ident::new(provided, Span::call_site());
        generics.params.push(syn::parse_quote!(#marker));
        generics.make_where_clause().predicates.push(syn::parse_quote! {
            ::pay402::__private::axum::#provided: ::pay402::__private::axum::RouterState<#state, #marker>
        });
    }
    quote!(#guard<#state>)
}

/// A handler argument of its own (an extractor), as the rewritten handler takes it: the
/// parameter `__pay402_arg<index>: Deferred<T>` (keeping the argument's `cfg` attributes), and
/// the statement binding the user's pattern to its value, or returning its rejection. Both name
/// the argument's type with its span, so an argument that is not an extractor is reported there.
fn deferred(
    module: &syn::Ident,
    index: usize,
    attrs: &[syn::Attribute],
    pat: &syn::Pat,
    ty: &Type,
) -> (TokenStream, TokenStream) {
    let name = syn::Ident::new(&format!("__pay402_arg{index}"), Span::mixed_site());
    let cfgs = attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let span = ty.span();
    let deferred = quote_spanned!(span=> ::pay402::__private::#module::Deferred);
    let extracted = quote_spanned!(span=> ::pay402::__private::#module::extracted);
    let param = quote! { #(#cfgs)* #name: #deferred<#ty> };
    let statement = quote! {
        #(#attrs)*
        let #pat: #ty = match #extracted::<#ty>(#name) {
            ::core::result::Result::Ok(arg) => arg,
            ::core::result::Result::Err(response) => return response,
        };
    };
    (param, statement)
}

/// The span of the declared return type, or of the fn name when there is none.
fn output_span(output: &ReturnType, ident: &syn::Ident) -> Span {
    match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => ident.span(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The end of every expansion of a handler whose body is `{ body() }` and whose declared
    /// return type is `ret`: the body, after the fake return edge, inside `finish`.
    pub(crate) fn expected_finish(ret: TokenStream) -> TokenStream {
        let allow = fake_return_lints(Span::call_site());
        quote! {
            __pay402_verified.finish(async move {
                #allow
                if false {
                    let __pay402_fake_return: #ret = loop {};
                    return __pay402_fake_return;
                }
                { body() }
            }).await
        }
    }

    /// The statement of an own argument's expansion: the user's `pat: ty` bound to the
    /// `index`th deferred parameter's value, or its rejection returned.
    pub(crate) fn expected_extracted(module: &str, index: usize, pat: TokenStream, ty: TokenStream) -> TokenStream {
        let module = format_ident!("{module}");
        let name = format_ident!("__pay402_arg{index}");
        quote! {
            let #pat: #ty = match ::pay402::__private::#module::extracted::<#ty>(#name) {
                ::core::result::Result::Ok(arg) => arg,
                ::core::result::Result::Err(response) => return response,
            };
        }
    }

    /// The screen of a handler with arguments of its own, before their statements.
    pub(crate) fn expected_screen(route: &str) -> TokenStream {
        let route = format_ident!("{route}");
        quote! {
            let __pay402_guard = match __pay402_guard.screen(&#route).await {
                ::core::result::Result::Ok(guard) => guard,
                ::core::result::Result::Err(response) => return response,
            };
        }
    }

    const INJECTED: &[Injected] = &[Injected { type_name: "X402Payment", getter: "payment" }];

    fn protocol() -> Protocol<'static> {
        Protocol {
            guard: "X402Guard",
            injected: INJECTED,
            refused: &[],
            statics: TokenStream::new(),
            route: quote!(ROUTE_INIT),
            route_type: "StaticRoute",
            route_static: "__PAY402_ROUTE",
            gate: "X402HttpServer",
            states: &["X402HttpServer"],
        }
    }

    fn run(framework: Framework, item: TokenStream) -> (String, Vec<String>) {
        let cx = Ctxt::new("x402");
        let out = rewrite(&cx, framework, &protocol(), item);
        let errors = cx.into_error().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default();
        (out.to_string(), errors)
    }

    #[test]
    fn guard_first_payment_rebound_body_wrapped() {
        let (out, errors) = run(
            Framework::Axum,
            quote! {
                /// Docs.
                #[other]
                pub(crate) async fn quote(Query(q): Query<Q>, p: pay402::axum::X402Payment, Json(b): Json<B>)
                    -> Result<Json<Out>, ApiError> { body() }
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        let finish = expected_finish(quote!(Result<Json<Out>, ApiError>));
        let screen = expected_screen("__PAY402_ROUTE");
        let query = expected_extracted("axum", 0, quote!(Query(q)), quote!(Query<Q>));
        let json = expected_extracted("axum", 1, quote!(Json(b)), quote!(Json<B>));
        let want = quote! {
            #[doc = r" Docs."]
            #[other]
            pub(crate) async fn quote<__Pay402State, __Pay402Via0>(
                __pay402_guard: ::pay402::__private::axum::X402Guard<__Pay402State>,
                __pay402_arg0: ::pay402::__private::axum::Deferred<Query<Q> >,
                __pay402_arg1: ::pay402::__private::axum::Deferred<Json<B> >
            ) -> ::pay402::__private::axum::Response
            where
                ::pay402::__private::axum::X402HttpServer:
                    ::pay402::__private::axum::RouterState<__Pay402State, __Pay402Via0>
            {
                static __PAY402_ROUTE: ::pay402::__private::StaticRoute = ROUTE_INIT;
                #screen
                #query
                #json
                let __pay402_verified = match __pay402_guard.verify(&__PAY402_ROUTE).await {
                    ::core::result::Result::Ok(verified) => verified,
                    ::core::result::Result::Err(response) => return response,
                };
                let p: pay402::axum::X402Payment = __pay402_verified.payment();
                #finish
            }
        };
        assert_eq!(out, want.to_string());
    }

    #[test]
    fn actix_path_and_impl_trait() {
        let (out, errors) = run(
            Framework::Actix,
            quote! { #[get("/x")] async fn x(#[allow(unused)] mut p: X402Payment) -> impl Responder { "" } },
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(out.contains("__pay402_guard : :: pay402 :: __private :: actix :: X402Guard"), "{out}");
        assert!(out.contains("-> :: pay402 :: __private :: actix :: Response"), "{out}");
        assert!(out.contains("# [allow (unused)] let mut p : X402Payment = __pay402_verified . payment () ;"), "{out}");
        assert!(
            out.contains(
                "if false { fn __pay402_returns (_ : & impl Responder) { } let __pay402_fake_return : _ = loop { } ; \
                 __pay402_returns (& __pay402_fake_return) ; return __pay402_fake_return ; }"
            ),
            "{out}"
        );
        assert!(out.starts_with("# [get (\"/x\")] async fn x"), "{out}");
    }

    #[test]
    fn own_arguments_keep_their_attributes_and_only_they_are_screened() {
        let (out, errors) = run(
            Framework::Actix,
            quote! {
                async fn x(#[cfg(feature = "f")] #[allow(unused_mut)] mut a: web::Json<A>, p: X402Payment) {}
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            out.contains(
                "(__pay402_guard : :: pay402 :: __private :: actix :: X402Guard , # [cfg (feature = \"f\")] \
                 __pay402_arg0 : :: pay402 :: __private :: actix :: Deferred < web :: Json < A > >)"
            ),
            "{out}"
        );
        let statement = expected_extracted("actix", 0, quote!(mut a), quote!(web::Json<A>));
        let want = quote!(#[cfg(feature = "f")] #[allow(unused_mut)] #statement).to_string();
        assert!(out.contains(&want), "{out}");
        let screen = out.find("screen").expect("screened");
        assert!(screen < out.find(&want).unwrap() && out.find(&want).unwrap() < out.find(". verify").unwrap(), "{out}");

        // Nothing of its own to extract: straight to `verify`.
        let (out, _) = run(Framework::Axum, quote! { async fn x(p: X402Payment) {} });
        assert!(!out.contains("screen") && !out.contains("Deferred"), "{out}");
    }

    #[test]
    fn axum_handlers_are_tied_to_the_router_state_unless_generic() {
        // Its where clause kept, the state's bound added after it.
        let (out, _) = run(Framework::Axum, quote! { async fn x<'a>(p: X402Payment) where 'a: 'a {} });
        assert!(
            out.starts_with(
                "async fn x < 'a , __Pay402State , __Pay402Via0 > (__pay402_guard : :: pay402 :: __private :: axum \
                 :: X402Guard < __Pay402State > ,) -> :: pay402 :: __private :: axum :: Response where 'a : 'a , :: \
                 pay402 :: __private :: axum :: X402HttpServer : :: pay402 :: __private :: axum :: RouterState < \
                 __Pay402State , __Pay402Via0 > {"
            ),
            "{out}"
        );
        // Generics of its own: left as written, so a turbofish still names them all.
        let (out, _) = run(Framework::Axum, quote! { async fn x<T: Tr, const N: usize>() {} });
        assert!(
            out.starts_with(
                "async fn x < T : Tr , const N : usize > (__pay402_guard : :: pay402 :: __private :: axum :: \
                 UntiedGuard < :: pay402 :: __private :: axum :: X402HttpServer > ,) -> :: pay402 :: __private :: \
                 axum :: Response {"
            ),
            "{out}"
        );
        // `#[axum::debug_handler]` below refuses generic fns: left untied too.
        let (out, _) = run(Framework::Axum, quote! { #[axum::debug_handler(state = S)] async fn x() {} });
        assert!(out.contains("UntiedGuard") && !out.contains("__Pay402State"), "{out}");
        // actix-web has no router state to tie to.
        let (out, _) = run(Framework::Actix, quote! { async fn x() {} });
        assert!(!out.contains("__Pay402State") && !out.contains("RouterState"), "{out}");
    }

    #[test]
    fn impl_trait_mentioning_generics_is_only_erased() {
        let (out, _) = run(Framework::Axum, quote! { async fn x<T: Tr>() -> impl Into<T> { loop {} } });
        assert!(!out.contains("__pay402_returns"), "{out}");
    }

    #[test]
    fn inner_attributes_move_to_the_outer_body() {
        let (out, _) = run(Framework::Axum, quote! { async fn x() { #![allow(unused)] body() } });
        assert!(out.contains("__Pay402Via0 > { # ! [allow (unused)] static"), "{out}");
        assert!(out.contains("let __pay402_fake_return : () = loop { } ;"), "{out}");
    }

    #[test]
    fn the_stacked_attribute_is_taken_out() {
        for item in [
            quote! { #[pay(amount = "1")] async fn x() {} },
            quote! { #[get("/")] #[pay402::axum::pay(amount = "1")] async fn x() {} },
        ] {
            let mut func: ItemFn = syn::parse2(item).unwrap();
            let attr = take_stacked(&mut func, "pay").expect("found");
            assert!(attr.path().segments.last().is_some_and(|s| s.ident == "pay"));
            let out = quote!(#func).to_string();
            assert!(!out.contains("pay ("), "{out}");
            assert!(out.contains("{ # [allow (unused_imports)] use "), "{out}");
        }
        // A helper or inner attribute of that name is not an attribute macro on the fn.
        let mut func: ItemFn = syn::parse2(quote! { #[payment] async fn x() { #![pay] } }).unwrap();
        assert!(take_stacked(&mut func, "pay").is_none());
    }

    #[test]
    fn refused_parameters() {
        let cx = Ctxt::new("x402");
        let mut p = protocol();
        p.refused = &[("Credential", "is refused here")];
        p.statics = quote!(
            static A: u8 = 0;
        );
        let out = rewrite(&cx, Framework::Axum, &p, quote! { async fn x(a: Credential, b: Option<Credential>) {} });
        let errors: Vec<String> = cx.into_error().unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(errors, ["`Credential` is refused here", "`Credential` is refused here"]);
        assert!(out.to_string().contains("static A : u8 = 0 ; static __PAY402_ROUTE"), "{out}");
    }

    #[test]
    fn shape_errors() {
        let (out, errors) = run(Framework::Axum, quote! { fn x() {} });
        assert_eq!(errors, ["#[x402] handlers must be `async fn`: write `async fn x(..)`"]);
        assert!(out.starts_with("async fn x < __Pay402State , __Pay402Via0 > (__pay402_guard"), "{out}");

        let (out, errors) = run(Framework::Axum, quote! { async fn x(&self) {} });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("#[x402] handlers cannot take `self`: axum calls handlers"), "{errors:?}");
        assert_eq!(out, quote! { async fn x(&self) {} }.to_string());

        let (_, errors) = run(Framework::Axum, quote! { struct S; });
        assert_eq!(errors, ["#[x402] goes on an `async fn` request handler (a free fn or an associated fn)"]);

        let (_, errors) = run(Framework::Actix, quote! { async fn x(p: Option<X402Payment>) {} });
        assert_eq!(
            errors,
            ["the payment is always present in a #[x402] handler: take `X402Payment` itself, not wrapped"]
        );

        let args = (0..16).map(|i| format_ident!("a{i}"));
        let (_, errors) = run(Framework::Actix, quote! { async fn x(#(#args: A),*) {} });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("too many arguments: #[x402] adds one and actix-web handlers"), "{errors:?}");
    }
}
