//! `#[x402(...)]`: its keys, their compile-time validation (every literal check is
//! `pay402-core`'s, the code the runtime runs too), and the `StaticRoute` they become.

use crate::attr::{ArgSpec, Attr, Ctxt, expect_int, expect_str};
use pay402_core::decimal::{DecimalError, Rounding};
use pay402_core::money::{MoneyError, MoneySyntax, parse_money, strict_spelling};
use pay402_core::{AddressError, Caip2, EvmAddress};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Expr, LitStr};

/// Decimals of the assets `$` prices are paid in (every default asset pay402 knows is a 6-decimal
/// USD stablecoin, such as USD₮0 on X Layer).
pub(crate) const USD_DECIMALS: u8 = 6;
/// The default `scheme`.
pub(crate) const DEFAULT_SCHEME: &str = "exact";
/// The default `network` (X Layer).
pub(crate) const DEFAULT_NETWORK: &str = "eip155:196";
/// The price emitted when the written one is invalid (the expansion is emitted anyway, next to
/// the error, so the error does not cascade).
const PLACEHOLDER_PRICE: &str = "$0.001";

/// The raw arguments of `#[x402(...)]`, as written.
#[derive(Default)]
pub(crate) struct X402Args {
    price: Attr<Expr>,
    scheme: Attr<Expr>,
    network: Attr<Expr>,
    pay_to: Attr<Expr>,
    asset: Attr<Expr>,
    description: Attr<Expr>,
    mime_type: Attr<Expr>,
    max_timeout_seconds: Attr<Expr>,
}

impl ArgSpec for X402Args {
    const KEYS: &'static [&'static str] =
        &["price", "scheme", "network", "pay_to", "asset", "description", "mime_type", "max_timeout_seconds"];

    fn slot(&mut self, key: &str) -> Option<&mut Attr<Expr>> {
        Some(match key {
            "price" => &mut self.price,
            "scheme" => &mut self.scheme,
            "network" => &mut self.network,
            "pay_to" => &mut self.pay_to,
            "asset" => &mut self.asset,
            "description" => &mut self.description,
            "mime_type" => &mut self.mime_type,
            "max_timeout_seconds" => &mut self.max_timeout_seconds,
            _ => return None,
        })
    }

    fn example(key: &str) -> &'static str {
        match key {
            "price" => "price = \"$0.001\"",
            "scheme" => "scheme = \"exact\"",
            "network" => "network = \"eip155:196\"",
            "pay_to" => "pay_to = \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"",
            "asset" => "asset = \"0x779Ded0c9e1022225f8E0630b35a9b54bE713736\"",
            "description" => "description = \"A stock quote\"",
            "mime_type" => "mime_type = \"application/json\"",
            _ => "max_timeout_seconds = 60",
        }
    }
}

/// A validated `#[x402(...)]`: what `StaticRoute::new` receives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct X402Route {
    pub(crate) price: String,
    pub(crate) scheme: String,
    pub(crate) network: String,
    pub(crate) pay_to: Option<String>,
    pub(crate) asset: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) mime_type: Option<String>,
    pub(crate) max_timeout_seconds: Option<u64>,
}

/// A string-valued key: its literal, or `None` (absent, or already reported).
fn string(cx: &Ctxt, slot: &Attr<Expr>, prefix: &str) -> Option<LitStr> {
    let (key, value) = slot.get()?;
    expect_str(cx, key, value, prefix, X402Args::example(&key.to_string()))
}

/// Checks the price literal: the strict grammar, positive, and exact in the asset's 6 decimals.
fn check_price(cx: &Ctxt, lit: &LitStr) -> Option<String> {
    let text = lit.value();
    let error = match parse_money(&text, MoneySyntax::Strict { allow_dollar: true }, false) {
        Ok(value) => match value.to_atomic(USD_DECIMALS, Rounding::Exact) {
            Ok(_) => return Some(text),
            Err(DecimalError::TooPrecise { places, decimals }) => format!(
                "\"{text}\" has {places} decimal places; the asset has {decimals} (smallest unit ${})",
                smallest_unit(decimals)
            ),
            Err(_) => format!("price \"{text}\" is too large for a {USD_DECIMALS}-decimal asset"),
        },
        Err(MoneyError::Zero) => {
            format!("price \"{text}\" is zero; a paid route needs a positive price (remove #[x402] for a free route)")
        }
        Err(MoneyError::Decimal(DecimalError::Negative)) => {
            format!("price \"{text}\" is negative; write a positive amount like \"$0.001\"")
        }
        Err(MoneyError::Decimal(DecimalError::Empty)) => "price is empty; write an amount like \"$0.001\"".to_owned(),
        Err(MoneyError::Decimal(DecimalError::Overflow)) => format!("price \"{text}\" is too large"),
        Err(_) => {
            let grammar = "a decimal amount in USD like \"$0.001\" (digits, an optional fraction; no sign, \
                           exponent, spaces, `_`, `,` or unit)";
            match strict_spelling(&text, true) {
                Some(fixed) => format!("price must be {grammar}; did you mean \"{fixed}\"?"),
                None => format!("invalid price \"{text}\": price must be {grammar}"),
            }
        }
    };
    cx.error_spanned_by(lit, error);
    None
}

/// `0.000001` for 6 decimals.
pub(crate) fn smallest_unit(decimals: u8) -> String {
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

impl X402Args {
    /// Validates every key, reporting all problems; invalid or missing values fall back to a
    /// placeholder or the default so the expansion can still be emitted. `attr_span` locates a
    /// missing `price`.
    pub(crate) fn validate(&self, cx: &Ctxt, attr_span: Span) -> X402Route {
        let price = match self.price.get() {
            Some(_) => string(cx, &self.price, "$").and_then(|lit| check_price(cx, &lit)),
            None => {
                cx.error_at(attr_span, "missing `price`: write #[x402(price = \"$0.001\")]");
                None
            }
        };
        let scheme = string(cx, &self.scheme, "").and_then(|lit| {
            let text = lit.value();
            pay402_core::names::check_keyword("scheme", &text, pay402_core::names::X402_SCHEMES)
                .map_err(|m| cx.error_spanned_by(&lit, m))
                .ok()
                .map(|()| text)
        });
        let network = string(cx, &self.network, "").and_then(|lit| {
            let text = lit.value();
            match Caip2::parse(&text) {
                Ok(_) => Some(text),
                Err(e) => {
                    let hint = pay402_core::caip2::suggest_network(&text)
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    cx.error_spanned_by(&lit, format_args!("invalid network \"{text}\": {e}{hint}"));
                    None
                }
            }
        });
        let pay_to = string(cx, &self.pay_to, "").and_then(|lit| check_address(cx, "pay_to", &lit));
        let asset = string(cx, &self.asset, "").and_then(|lit| check_address(cx, "asset", &lit));
        let description = string(cx, &self.description, "").map(|lit| lit.value());
        let mime_type = string(cx, &self.mime_type, "").and_then(|lit| {
            let text = lit.value();
            pay402_core::mime::check_media_type(&text).map_err(|m| cx.error_spanned_by(&lit, m)).ok().map(|()| text)
        });
        let max_timeout_seconds = self.max_timeout_seconds.get().and_then(|(key, value)| {
            let lit = expect_int(cx, key, value, X402Args::example("max_timeout_seconds"))?;
            pay402_core::duration::parse_seconds(lit.base10_digits())
                .map_err(|m| cx.error_spanned_by(&lit, format_args!("invalid `max_timeout_seconds`: {m}")))
                .ok()
        });
        X402Route {
            price: price.unwrap_or_else(|| PLACEHOLDER_PRICE.to_owned()),
            scheme: scheme.unwrap_or_else(|| DEFAULT_SCHEME.to_owned()),
            network: network.unwrap_or_else(|| DEFAULT_NETWORK.to_owned()),
            pay_to,
            asset,
            description,
            mime_type,
            max_timeout_seconds,
        }
    }
}

/// `::core::option::Option::Some(<tokens>)` or `None`.
pub(crate) fn option<T: quote::ToTokens>(value: Option<T>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

impl X402Route {
    /// The `StaticRoute` constant expression (the `static` item's initialiser).
    pub(crate) fn to_static_route(&self) -> TokenStream {
        let Self { price, scheme, network, .. } = self;
        let pay_to = option(self.pay_to.as_deref());
        let asset = option(self.asset.as_deref());
        let description = option(self.description.as_deref());
        let mime_type = option(self.mime_type.as_deref());
        let timeout = option(self.max_timeout_seconds.map(proc_macro2::Literal::u64_unsuffixed));
        quote! {
            ::pay402::__private::StaticRoute::new(
                #price, #scheme, #network, #pay_to, #asset, #description, #mime_type, #timeout,
            )
        }
    }
}

/// Parses and validates `#[x402(...)]` arguments (the unit tests' entry point).
#[cfg(test)]
pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> X402Route {
    parse_at(cx, args, Span::call_site()).1
}

/// Parses and validates `#[x402(...)]` arguments written in the attribute at `attr_span`: the
/// raw arguments (for spans) and the validated route.
pub(crate) fn parse_at(cx: &Ctxt, args: TokenStream, attr_span: Span) -> (X402Args, X402Route) {
    let raw: X402Args = crate::attr::parse_args(cx, args);
    let route = raw.validate(cx, attr_span);
    (raw, route)
}

impl X402Args {
    /// The value written for `key`, if any.
    pub(crate) fn value(&self, key: &str) -> Option<&Expr> {
        let slot = match key {
            "price" => &self.price,
            "scheme" => &self.scheme,
            "network" => &self.network,
            "pay_to" => &self.pay_to,
            "asset" => &self.asset,
            "description" => &self.description,
            "mime_type" => &self.mime_type,
            _ => &self.max_timeout_seconds,
        };
        slot.get().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn run(args: TokenStream) -> (X402Route, Vec<String>) {
        let cx = Ctxt::new("x402");
        let route = parse(&cx, args);
        let errors = cx.into_error().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default();
        (route, errors)
    }

    #[test]
    fn defaults() {
        let (route, errors) = run(quote!(price = "$0.001"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            route,
            X402Route {
                price: "$0.001".into(),
                scheme: "exact".into(),
                network: "eip155:196".into(),
                pay_to: None,
                asset: None,
                description: None,
                mime_type: None,
                max_timeout_seconds: None,
            }
        );
    }

    #[test]
    fn every_key() {
        let (route, errors) = run(quote!(
            price = "0.25",
            scheme = "aggr_deferred",
            network = "eip155:8453",
            pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            description = "Quote",
            mime_type = "application/json",
            max_timeout_seconds = 90,
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(route.price, "0.25");
        assert_eq!(route.scheme, "aggr_deferred");
        assert_eq!(route.max_timeout_seconds, Some(90));
        let tokens = route.to_static_route().to_string();
        assert!(tokens.contains("StaticRoute :: new"), "{tokens}");
        assert!(tokens.contains(":: core :: option :: Option :: Some (90)"), "{tokens}");
    }

    #[test]
    fn price_errors() {
        for (price, want) in [
            (quote!(0.001), "`price` must be a string literal: write price = \"$0.001\""),
            (quote!("abc"), "invalid price \"abc\": price must be a decimal amount in USD like \"$0.001\""),
            (quote!("-1"), "price \"-1\" is negative; write a positive amount like \"$0.001\""),
            (quote!("0"), "price \"0\" is zero; a paid route needs a positive price"),
            (quote!("$0.0000001"), "\"$0.0000001\" has 7 decimal places; the asset has 6 (smallest unit $0.000001)"),
            (quote!("1e3"), "did you mean \"$1000\"?"),
            (quote!(""), "price is empty"),
        ] {
            let (route, errors) = run(quote!(price = #price));
            assert_eq!(errors.len(), 1, "{price}: {errors:?}");
            assert!(errors[0].starts_with(want) || errors[0].contains(want), "{price}: {}", errors[0]);
            assert_eq!(route.price, PLACEHOLDER_PRICE);
        }
    }

    #[test]
    fn everything_is_reported_at_once() {
        let (route, errors) = run(quote!(
            scheme = "exat",
            network = "xlayer",
            pay_to = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            asset = "0x1234",
            mime_type = "json",
            max_timeout_seconds = 0,
            colour = "red",
        ));
        assert_eq!(
            errors,
            [
                "unknown key `colour` in #[x402(...)]; expected one of `price`, `scheme`, `network`, `pay_to`, \
                 `asset`, `description`, `mime_type`, `max_timeout_seconds`",
                "missing `price`: write #[x402(price = \"$0.001\")]",
                "unknown scheme `exat`; expected one of `exact`, `aggr_deferred` (did you mean `exact`?)",
                "invalid network \"xlayer\": network must be a CAIP-2 id like \"eip155:196\" (namespace:reference); \
                 did you mean \"eip155:196\"?",
                "invalid `pay_to`: address is not EIP-55 checksummed; did you mean \
                 \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"?",
                "invalid `asset`: address must have 40 hex digits after `0x`, found 4; write `0x` and 40 hex \
                 digits in EIP-55 mixed case",
                "`json` is not a media type; did you mean \"application/json\"?",
                "invalid `max_timeout_seconds`: the timeout is zero; write a positive number of seconds like 60",
            ]
        );
        // Invalid values fall back so the expansion still compiles.
        assert_eq!((route.scheme.as_str(), route.network.as_str()), ("exact", "eip155:196"));
        assert_eq!((route.pay_to, route.asset), (None, None));
    }

    #[test]
    fn smallest_units() {
        assert_eq!(smallest_unit(6), "0.000001");
        assert_eq!(smallest_unit(1), "0.1");
        assert_eq!(smallest_unit(0), "1");
    }
}
