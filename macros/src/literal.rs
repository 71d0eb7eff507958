//! The literal checks both attributes share (money, keywords and addresses; every rule is
//! `pay402-core`'s, the code the runtime runs too), and the validated [`Route`] an attribute
//! becomes: the `const fn` builder chain of its static route.

use crate::attr::{ArgSpec, Attr, Ctxt, string};
use pay402_core::decimal::{DecimalError, Rounding};
use pay402_core::money::{MoneyError, MoneySyntax, parse_money, strict_spelling};
use pay402_core::{AddressError, EvmAddress};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Expr, LitStr};

/// What one attribute's money key is: `price` in `#[x402]` (USD, `$` allowed) or `amount` in
/// `#[pay]` (the currency's units, no `$`). Every message [`check_money`] writes is built from it.
pub(crate) struct MoneyKind {
    /// The key: `price`, `amount`.
    pub(crate) key: &'static str,
    /// Whether a leading `$` is part of the grammar.
    pub(crate) allow_dollar: bool,
    /// Decimals of the token the amount is paid in.
    pub(crate) decimals: u8,
    /// What holds those decimals, for messages: `asset`, `currency`.
    pub(crate) holder: &'static str,
    /// What the amount is written in, for messages: `USD`, `the currency's units`.
    pub(crate) units: &'static str,
    /// The key's values in the plural, for the "takes no `$`" message: `MPP amounts`.
    pub(crate) plural: &'static str,
    /// An example value, quoted: `"$0.001"`.
    pub(crate) example: &'static str,
    /// The value emitted when the written one is invalid or missing (the expansion is emitted
    /// anyway, next to the error, so the error does not cascade).
    pub(crate) placeholder: &'static str,
}

impl MoneyKind {
    /// `text` in the token's smallest units, when it is a valid amount of this kind.
    pub(crate) fn atomic(&self, text: &str) -> Option<u128> {
        parse_money(text, MoneySyntax::Strict { allow_dollar: self.allow_dollar }, false)
            .ok()
            .and_then(|value| value.to_atomic(self.decimals, Rounding::Exact).ok())
    }
}

/// The attribute's required money key (`slot`), checked; the placeholder when it is invalid or
/// missing (reported at `attr_span`).
pub(crate) fn required_money(cx: &Ctxt, slot: &Attr<Expr>, kind: &MoneyKind, attr_span: Span) -> String {
    let checked = if slot.get().is_some() {
        string(cx, slot, if kind.allow_dollar { "$" } else { "" }).and_then(|lit| check_money(cx, &lit, kind))
    } else {
        let (key, example) = (kind.key, kind.example);
        cx.error_at(attr_span, format_args!("missing `{key}`: write #[{}({key} = {example})]", cx.attr()));
        None
    };
    checked.unwrap_or_else(|| kind.placeholder.to_owned())
}

/// Checks a money literal: the strict grammar, positive, and exact in the token's decimals. The
/// message names the attribute (`cx`) and the key (`kind`) and says what to write.
pub(crate) fn check_money(cx: &Ctxt, lit: &LitStr, kind: &MoneyKind) -> Option<String> {
    let MoneyKind { key, allow_dollar, decimals, holder, units, plural, example, .. } = *kind;
    let text = lit.value();
    let dollar = if allow_dollar { "$" } else { "" };
    let error = match parse_money(&text, MoneySyntax::Strict { allow_dollar }, false) {
        Ok(value) => match value.to_atomic(decimals, Rounding::Exact) {
            Ok(_) => return Some(text),
            Err(DecimalError::TooPrecise { places, decimals }) => format!(
                "{key} \"{text}\" has {places} decimal places; the {holder} has {decimals} (smallest unit \
                 {dollar}{})",
                smallest_unit(decimals)
            ),
            Err(_) => format!("{key} \"{text}\" is too large for a {decimals}-decimal {holder}"),
        },
        Err(MoneyError::DollarNotAllowed) => match strict_spelling(&text, false) {
            Some(fixed) => {
                format!("{plural} take no `$`: they are plain numbers in {units}; write {key} = \"{fixed}\"")
            }
            None => format!("invalid {key} \"{text}\": {plural} take no `$`; write a number like {example}"),
        },
        Err(MoneyError::Zero) => format!(
            "{key} \"{text}\" is zero; a paid route needs a positive {key} (remove #[{}] for a free route)",
            cx.attr()
        ),
        Err(MoneyError::Decimal(DecimalError::Negative)) => {
            format!("{key} \"{text}\" is negative; write a positive amount like {example}")
        }
        Err(MoneyError::Decimal(DecimalError::Empty)) => format!("{key} is empty; write an amount like {example}"),
        Err(MoneyError::Decimal(DecimalError::Overflow)) => format!("{key} \"{text}\" is too large"),
        Err(_) => {
            let no_dollar = if allow_dollar { "" } else { "`$`, " };
            let grammar = format!(
                "a decimal amount in {units} like {example} (digits, an optional fraction; no {no_dollar}sign, \
                 exponent, spaces, `_`, `,` or unit)"
            );
            match strict_spelling(&text, allow_dollar) {
                Some(fixed) => format!("{key} must be {grammar}; did you mean \"{fixed}\"?"),
                None => format!("invalid {key} \"{text}\": {key} must be {grammar}"),
            }
        }
    };
    cx.error_spanned_by(lit, error);
    None
}

/// `0.000001` for 6 decimals.
fn smallest_unit(decimals: u8) -> String {
    match decimals {
        0 => "1".to_owned(),
        d => format!("0.{}1", "0".repeat(usize::from(d - 1))),
    }
}

/// Checks an EIP-55 address literal for `key`.
pub(crate) fn check_address(cx: &Ctxt, key: &str, lit: &LitStr) -> Option<String> {
    let text = lit.value();
    match EvmAddress::parse_checksummed(&text) {
        Ok(_) => Some(text),
        Err(e) => {
            let hint = match e {
                AddressError::MissingPrefix | AddressError::BadLength(_) | AddressError::NotHex => {
                    "; write `0x` and 40 hex digits in EIP-55 mixed case"
                }
                _ => "",
            };
            cx.error_spanned_by(lit, format_args!("invalid `{key}`: {e}{hint}"));
            None
        }
    }
}

/// Checks a keyword literal (`scheme`, `intent`) against the supported set.
pub(crate) fn check_keyword(cx: &Ctxt, slot: &Attr<Expr>, what: &str, allowed: &[&str]) -> Option<String> {
    let lit = string(cx, slot, "")?;
    let text = lit.value();
    pay402_core::names::check_keyword(what, &text, allowed).map_err(|m| cx.error_spanned_by(&lit, m)).ok()?;
    Some(text)
}

/// One checked value, as its setter takes it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// A string (`&'static str` in the runtime).
    Str(String),
    /// A number (`u64` in the runtime).
    Int(u64),
    /// A unit variant of a runtime enum named under `::pay402::__private`: the enum and the
    /// variant (`Per`, `Event`).
    Variant(&'static str, &'static str),
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Str(text)
    }
}

impl From<u64> for Value {
    fn from(number: u64) -> Self {
        Self::Int(number)
    }
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Self::Str(text) => text.to_tokens(tokens),
            Self::Int(number) => proc_macro2::Literal::u64_unsuffixed(*number).to_tokens(tokens),
            Self::Variant(ty, variant) => {
                let (ty, variant) =
                    (syn::Ident::new(ty, Span::call_site()), syn::Ident::new(variant, Span::call_site()));
                quote!(::pay402::__private::#ty::#variant).to_tokens(tokens);
            }
        }
    }
}

/// A validated attribute, as its static route's `const fn` builder chain names it: the required
/// value (`new`'s argument) and, in key order, each valid written key's setter and value (the
/// runtime's defaults stand for the others).
pub(crate) struct Route {
    required: String,
    setters: Vec<(&'static str, Value)>,
}

impl Route {
    /// A route with the required value only.
    pub(crate) fn new(required: String) -> Self {
        Self { required, setters: Vec::new() }
    }

    /// The required value (the price or amount).
    pub(crate) fn required(&self) -> &str {
        &self.required
    }

    /// Adds the call `.setter(value)`, when there is a value.
    pub(crate) fn set(&mut self, setter: &'static str, value: Option<impl Into<Value>>) {
        if let Some(value) = value {
            self.setters.push((setter, value.into()));
        }
    }

    /// The value given to `setter`, if any.
    pub(crate) fn get(&self, setter: &str) -> Option<&Value> {
        self.setters.iter().find(|(name, _)| *name == setter).map(|(_, value)| value)
    }

    /// The string given to `setter`, if any.
    pub(crate) fn text(&self, setter: &str) -> Option<&str> {
        match self.get(setter)? {
            Value::Str(text) => Some(text),
            Value::Int(_) | Value::Variant(..) => None,
        }
    }

    /// The builder chain `::pay402::__private::<ty>::new(required).setter(value)…`.
    pub(crate) fn to_builder(&self, ty: &str) -> TokenStream {
        let ty = syn::Ident::new(ty, Span::call_site());
        let required = &self.required;
        let calls = self.setters.iter().map(|(setter, value)| {
            let setter = syn::Ident::new(setter, Span::call_site());
            quote!(.#setter(#value))
        });
        quote!(::pay402::__private::#ty::new(#required) #(#calls)*)
    }
}

/// An attribute's validation: its raw arguments (an [`ArgSpec`]) turned into the [`Route`] the
/// expansion emits.
pub(crate) trait Validate: ArgSpec {
    /// Validates every key, reporting all problems; an invalid or missing required key falls
    /// back to a placeholder and other invalid values are left out (the runtime's defaults
    /// stand), so the expansion can still be emitted. `attr_span` locates a missing required key.
    fn validate(&self, cx: &Ctxt, attr_span: Span) -> Route;
}

/// A parsed attribute: the raw arguments (for spans) and the validated route.
pub(crate) struct Parsed<A: Validate> {
    /// The arguments as written.
    pub(crate) args: A,
    /// The validated route.
    pub(crate) route: Route,
}

impl<A: Validate> Parsed<A> {
    /// Parses and validates the arguments written in the attribute at `attr_span`.
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream, attr_span: Span) -> Self {
        let args: A = crate::attr::parse_args(cx, args);
        let route = args.validate(cx, attr_span);
        Self { args, route }
    }

    /// Parses and validates `A`'s arguments in a fresh context: the route and every error
    /// message (the unit tests' entry point).
    #[cfg(test)]
    pub(crate) fn run(args: TokenStream) -> (Route, Vec<String>) {
        let cx = Ctxt::new(A::NAME);
        let route = Self::parse(&cx, args, Span::call_site()).route;
        (route, cx.messages())
    }

    /// Asserts that `args` validate without errors into the builder chain `want` of
    /// `::pay402::__private::<ty>`, and returns the route (the unit tests' view of an emission).
    #[cfg(test)]
    pub(crate) fn builds(args: TokenStream, ty: &str, want: TokenStream) -> Route {
        let (route, errors) = Self::run(args);
        assert!(errors.is_empty(), "{errors:?}");
        let ident = syn::Ident::new(ty, Span::call_site());
        assert_eq!(route.to_builder(ty).to_string(), quote!(::pay402::__private::#ident #want).to_string());
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_units() {
        assert_eq!(smallest_unit(6), "0.000001");
        assert_eq!(smallest_unit(1), "0.1");
        assert_eq!(smallest_unit(0), "1");
    }

    #[test]
    fn the_builder_sets_written_keys_only() {
        let mut route = Route::new("$1".to_owned());
        route.set("pay_to", Some("0x1".to_owned()));
        route.set("asset", None::<String>);
        route.set("max_timeout_seconds", Some(60_u64));
        assert_eq!(
            route.to_builder("R").to_string(),
            quote!(::pay402::__private::R::new("$1").pay_to("0x1").max_timeout_seconds(60)).to_string()
        );
        assert_eq!((route.text("pay_to"), route.get("max_timeout_seconds")), (Some("0x1"), Some(&Value::Int(60))));
        assert_eq!((route.text("asset"), route.text("max_timeout_seconds")), (None, None));
    }
}
