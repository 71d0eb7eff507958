//! `#[x402(...)]`: its keys, their compile-time validation (every literal check is
//! `pay402-core`'s, the code the runtime runs too), and the `StaticRoute` they become.

use crate::attr::{Ctxt, arg_spec, int, string};
use crate::literal::{MoneyKind, Route, Validate, check_address, check_keyword, required_money};
use pay402_core::Caip2;
use proc_macro2::Span;

/// The default `network` (X Layer), as `StaticRoute::new` sets it; `#[pay]`'s `chain_id` is
/// compared against it when the two attributes are stacked.
pub(crate) const DEFAULT_NETWORK: &str = "eip155:196";

/// `price`: USD with an optional `$`, exact in the 6 decimals of the assets `$` prices are paid
/// in (every default asset pay402 knows is a 6-decimal USD stablecoin, such as USD₮0 on X Layer).
pub(crate) const PRICE: MoneyKind = MoneyKind {
    key: "price",
    allow_dollar: true,
    decimals: 6,
    holder: "asset",
    units: "USD",
    plural: "x402 prices",
    example: "\"$0.001\"",
    placeholder: "$0.001",
};

/// `max`: the authorized maximum of an `upto` route, with the same rules as [`PRICE`].
pub(crate) const MAX: MoneyKind = MoneyKind {
    key: "max",
    allow_dollar: true,
    decimals: 6,
    holder: "asset",
    units: "USD",
    plural: "x402 maximums",
    example: "\"$0.10\"",
    placeholder: "$0.10",
};

arg_spec! {
    /// The raw arguments of `#[x402(...)]`, as written.
    pub(crate) struct X402Args for "x402" {
        price => "price = \"$0.001\"",
        max => "max = \"$0.10\"",
        scheme => "scheme = \"exact\"",
        network => "network = \"eip155:196\"",
        pay_to => "pay_to = \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"",
        asset => "asset = \"0x779Ded0c9e1022225f8E0630b35a9b54bE713736\"",
        description => "description = \"A stock quote\"",
        mime_type => "mime_type = \"application/json\"",
        max_timeout_seconds => "max_timeout_seconds = 60",
    }
}

/// Checks `network`: a CAIP-2 id.
fn check_network(cx: &Ctxt, lit: &syn::LitStr) -> Option<String> {
    let text = lit.value();
    match Caip2::parse(&text) {
        Ok(_) => Some(text),
        Err(e) => {
            let hint = pay402_core::caip2::suggest_network(&text)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default();
            cx.error_spanned_by(lit, format_args!("invalid network \"{text}\": {e}{hint}"));
            None
        }
    }
}

impl Validate for X402Args {
    /// The `StaticRoute` builder: `new(price)`, then one setter per valid key written, named
    /// after the key.
    ///
    /// The money key follows the scheme ([`pay402_core::names::x402_money_key`]): `upto` takes
    /// `max` (the authorized maximum, emitted as the route's amount: the requirements of an
    /// `upto` route carry the maximum) and refuses `price`; every other scheme takes `price`
    /// and refuses `max`.
    fn validate(&self, cx: &Ctxt, attr_span: Span) -> Route {
        let scheme = check_keyword(cx, &self.scheme, "scheme", pay402_core::names::X402_SCHEMES);
        let upto = pay402_core::names::x402_money_key(scheme.as_deref().unwrap_or("exact")) == "max";
        let (used, unused, kind) = if upto { (&self.max, &self.price, &MAX) } else { (&self.price, &self.max, &PRICE) };
        if let Some((key, _)) = unused.get() {
            let message = if upto {
                "`price` is not used with scheme = \"upto\": an upto route charges what the handler reports, \
                 up to `max`; write max = \"$0.10\" instead"
            } else {
                "`max` is only used with scheme = \"upto\" (the buyer authorizes a maximum and the handler \
                 reports what it used); write scheme = \"upto\", or price = \"$0.001\" for a fixed price"
            };
            cx.error_spanned_by(key, message);
        }
        let required = if upto && used.get().is_none() {
            // A `price` written instead of `max` was reported above, with the fix.
            if unused.get().is_none() {
                let at = self.scheme.get().map_or(attr_span, |(_, value)| syn::spanned::Spanned::span(value));
                cx.error_at(
                    at,
                    "scheme = \"upto\" needs its maximum: add max = \"$0.10\" (the most one request may cost)",
                );
            }
            kind.placeholder.to_owned()
        } else {
            required_money(cx, used, kind, attr_span)
        };
        let mut route = Route::new(required);
        route.set("scheme", scheme);
        route.set("network", string(cx, &self.network, "").and_then(|lit| check_network(cx, &lit)));
        route.set("pay_to", string(cx, &self.pay_to, "").and_then(|lit| check_address(cx, "pay_to", &lit)));
        route.set("asset", string(cx, &self.asset, "").and_then(|lit| check_address(cx, "asset", &lit)));
        route.set("description", string(cx, &self.description, "").map(|lit| lit.value()));
        let mime_type = string(cx, &self.mime_type, "").and_then(|lit| {
            let text = lit.value();
            pay402_core::mime::check_media_type(&text).map_err(|m| cx.error_spanned_by(&lit, m)).ok().map(|()| text)
        });
        route.set("mime_type", mime_type);
        let max_timeout_seconds = int(cx, &self.max_timeout_seconds).and_then(|lit| {
            pay402_core::duration::parse_seconds(lit.base10_digits())
                .map_err(|m| cx.error_spanned_by(&lit, format_args!("invalid `max_timeout_seconds`: {m}")))
                .ok()
        });
        route.set("max_timeout_seconds", max_timeout_seconds);
        route
    }
}

/// The network of a validated `#[x402]` route: written, or the default.
pub(crate) fn network(route: &Route) -> &str {
    route.text("network").unwrap_or(DEFAULT_NETWORK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::{Parsed, Value};
    use quote::quote;

    #[test]
    fn each_written_key_is_one_setter() {
        // The runtime's defaults stand for the keys not written.
        let route = Parsed::<X402Args>::builds(quote!(price = "$0.001"), "StaticRoute", quote!(::new("$0.001")));
        assert_eq!(network(&route), DEFAULT_NETWORK);
        let every_key = quote!(
            price = "0.25",
            scheme = "aggr_deferred",
            network = "eip155:8453",
            pay_to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            description = "Quote",
            mime_type = "application/json",
            max_timeout_seconds = 90,
        );
        let route = Parsed::<X402Args>::builds(
            every_key,
            "StaticRoute",
            quote!(
                ::new("0.25")
                    .scheme("aggr_deferred")
                    .network("eip155:8453")
                    .pay_to("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                    .asset("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")
                    .description("Quote")
                    .mime_type("application/json")
                    .max_timeout_seconds(90)
            ),
        );
        assert_eq!((route.required(), route.text("scheme")), ("0.25", Some("aggr_deferred")));
        assert_eq!((network(&route), route.get("max_timeout_seconds")), ("eip155:8453", Some(&Value::Int(90))));
    }

    #[test]
    fn price_errors() {
        for (price, want) in [
            (quote!(0.001), "`price` must be a string literal: write price = \"$0.001\""),
            (quote!("abc"), "invalid price \"abc\": price must be a decimal amount in USD like \"$0.001\""),
            (quote!("-1"), "price \"-1\" is negative; write a positive amount like \"$0.001\""),
            (quote!("0"), "price \"0\" is zero; a paid route needs a positive price"),
            (
                quote!("$0.0000001"),
                "price \"$0.0000001\" has 7 decimal places; the asset has 6 (smallest unit $0.000001)",
            ),
            (quote!("1e3"), "did you mean \"$1000\"?"),
            (quote!(""), "price is empty"),
        ] {
            let (route, errors) = Parsed::<X402Args>::run(quote!(price = #price));
            assert_eq!(errors.len(), 1, "{price}: {errors:?}");
            assert!(errors[0].starts_with(want) || errors[0].contains(want), "{price}: {}", errors[0]);
            assert_eq!(route.required(), PRICE.placeholder);
        }
    }

    #[test]
    fn upto_takes_max() {
        let route = Parsed::<X402Args>::builds(
            quote!(scheme = "upto", max = "$0.10"),
            "StaticRoute",
            quote!(::new("$0.10").scheme("upto")),
        );
        assert_eq!(route.text("scheme"), Some("upto"));
        for (args, want) in [
            (quote!(scheme = "upto"), "scheme = \"upto\" needs its maximum: add max = \"$0.10\""),
            (quote!(scheme = "upto", max = "$0.0000001"), "max \"$0.0000001\" has 7 decimal places"),
            (quote!(scheme = "upto", max = "$0"), "max \"$0\" is zero"),
            (quote!(scheme = "upto", max = "-1"), "max \"-1\" is negative"),
            (quote!(scheme = "upto", max = "$0.10", price = "$0.01"), "`price` is not used with scheme = \"upto\""),
            (quote!(scheme = "upto", price = "$0.01"), "`price` is not used with scheme = \"upto\""),
            (quote!(price = "$0.01", max = "$0.10"), "`max` is only used with scheme = \"upto\""),
            (quote!(scheme = "exact", price = "$0.01", max = "$0.10"), "`max` is only used with scheme = \"upto\""),
        ] {
            let (_, errors) = Parsed::<X402Args>::run(args.clone());
            assert_eq!(errors.len(), 1, "{args}: {errors:?}");
            assert!(errors[0].starts_with(want), "{args}: {}", errors[0]);
        }
    }

    #[test]
    fn everything_is_reported_at_once() {
        let (route, errors) = Parsed::<X402Args>::run(quote!(
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
                "unknown key `colour` in #[x402(...)]; expected one of `price`, `max`, `scheme`, `network`, `pay_to`, \
                 `asset`, `description`, `mime_type`, `max_timeout_seconds`",
                "unknown scheme `exat`; expected one of `exact`, `aggr_deferred`, `upto` (did you mean `exact`?)",
                "missing `price`: write #[x402(price = \"$0.001\")]",
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
        // Invalid values fall back (to the placeholder price and the runtime's defaults) so the
        // expansion still compiles.
        assert_eq!(
            route.to_builder("StaticRoute").to_string(),
            quote!(::pay402::__private::StaticRoute::new("$0.001")).to_string()
        );
    }
}
