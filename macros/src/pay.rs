//! `#[pay(...)]` (MPP): its keys, their compile-time validation (every literal check is
//! `pay402-core`'s, the code the runtime runs too), and the `StaticPaySpec` they become.

use crate::attr::{ArgSpec, Attr, Ctxt, expect_int, expect_str};
use crate::x402::{check_address, option, smallest_unit};
use pay402_core::decimal::{DecimalError, Rounding};
use pay402_core::money::{MoneyError, MoneySyntax, check_base_units, parse_money, strict_spelling};
use proc_macro2::{Literal, Span, TokenStream};
use quote::quote;
use syn::{Expr, LitStr};

/// Decimals of the currency MPP amounts are written in (X Layer's USD₮0, the default currency
/// of pay402's `evm` method, has 6).
pub(crate) const AMOUNT_DECIMALS: u8 = 6;
/// The default `intent`.
pub(crate) const DEFAULT_INTENT: &str = "charge";
/// The longest `expires_in` accepted: a challenge is answered within seconds or minutes, and a
/// far-away expiry would overflow the challenge's timestamp.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 365 * 86_400;
/// The amount emitted when the written one is invalid (the expansion is emitted anyway, next to
/// the error, so the error does not cascade).
const PLACEHOLDER_AMOUNT: &str = "0.001";

/// Why `splits` is not a key.
const SPLITS_REFUSED: &str = "`splits` are not supported by #[pay]: the attribute charges one recipient. To split a \
                              payment, drop #[pay] and call the low-level `Mpp::charge(authorization, amount, \
                              ChargeOptions { splits, .. })` in the handler";

/// The raw arguments of `#[pay(...)]`, as written.
#[derive(Default)]
pub(crate) struct PayArgs {
    amount: Attr<Expr>,
    intent: Attr<Expr>,
    currency: Attr<Expr>,
    recipient: Attr<Expr>,
    description: Attr<Expr>,
    expires_in: Attr<Expr>,
    chain_id: Attr<Expr>,
    unit_type: Attr<Expr>,
    suggested_deposit: Attr<Expr>,
}

impl ArgSpec for PayArgs {
    const KEYS: &'static [&'static str] = &[
        "amount",
        "intent",
        "currency",
        "recipient",
        "description",
        "expires_in",
        "chain_id",
        "unit_type",
        "suggested_deposit",
    ];

    fn slot(&mut self, key: &str) -> Option<&mut Attr<Expr>> {
        Some(match key {
            "amount" => &mut self.amount,
            "intent" => &mut self.intent,
            "currency" => &mut self.currency,
            "recipient" => &mut self.recipient,
            "description" => &mut self.description,
            "expires_in" => &mut self.expires_in,
            "chain_id" => &mut self.chain_id,
            "unit_type" => &mut self.unit_type,
            "suggested_deposit" => &mut self.suggested_deposit,
            _ => return None,
        })
    }

    fn example(key: &str) -> &'static str {
        match key {
            "amount" => "amount = \"0.01\"",
            "intent" => "intent = \"charge\"",
            "currency" => "currency = \"0x779Ded0c9e1022225f8E0630b35a9b54bE713736\"",
            "recipient" => "recipient = \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"",
            "description" => "description = \"One premium API call\"",
            "expires_in" => "expires_in = \"5m\"",
            "chain_id" => "chain_id = 196",
            "unit_type" => "unit_type = \"request\"",
            _ => "suggested_deposit = \"1000000\"",
        }
    }

    fn refused(key: &str) -> Option<&'static str> {
        (key == "splits").then_some(SPLITS_REFUSED)
    }
}

/// A validated `#[pay(...)]`: what `StaticPaySpec::new` receives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PayRoute {
    pub(crate) amount: String,
    pub(crate) intent: String,
    pub(crate) currency: Option<String>,
    pub(crate) recipient: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) expires_in_secs: Option<u64>,
    pub(crate) chain_id: Option<u64>,
    pub(crate) unit_type: Option<String>,
    pub(crate) suggested_deposit: Option<String>,
}

/// A string-valued key: its literal, or `None` (absent, or already reported).
fn string(cx: &Ctxt, slot: &Attr<Expr>) -> Option<LitStr> {
    let (key, value) = slot.get()?;
    expect_str(cx, key, value, "", PayArgs::example(&key.to_string()))
}

/// Checks the amount literal: the strict grammar without `$`, positive, and exact in the
/// currency's 6 decimals.
fn check_amount(cx: &Ctxt, lit: &LitStr) -> Option<String> {
    let text = lit.value();
    let error = match parse_money(&text, MoneySyntax::Strict { allow_dollar: false }, false) {
        Ok(value) => match value.to_atomic(AMOUNT_DECIMALS, Rounding::Exact) {
            Ok(_) => return Some(text),
            Err(DecimalError::TooPrecise { places, decimals }) => format!(
                "amount \"{text}\" has {places} decimal places; the currency has {decimals} (smallest unit {})",
                smallest_unit(decimals)
            ),
            Err(_) => format!("amount \"{text}\" is too large for a {AMOUNT_DECIMALS}-decimal currency"),
        },
        Err(MoneyError::DollarNotAllowed) => match strict_spelling(&text, false) {
            Some(fixed) => format!(
                "MPP amounts take no `$`: they are plain numbers in the currency's units; write amount = \"{fixed}\""
            ),
            None => format!("invalid amount \"{text}\": MPP amounts take no `$`; write a number like \"0.01\""),
        },
        Err(MoneyError::Zero) => {
            format!("amount \"{text}\" is zero; a paid route needs a positive amount (remove #[pay] for a free route)")
        }
        Err(MoneyError::Decimal(DecimalError::Negative)) => {
            format!("amount \"{text}\" is negative; write a positive amount like \"0.01\"")
        }
        Err(MoneyError::Decimal(DecimalError::Empty)) => "amount is empty; write an amount like \"0.01\"".to_owned(),
        Err(MoneyError::Decimal(DecimalError::Overflow)) => format!("amount \"{text}\" is too large"),
        Err(_) => {
            let grammar = "a decimal amount in the currency's units like \"0.01\" (digits, an optional fraction; \
                           no `$`, sign, exponent, spaces, `_`, `,` or unit)";
            match strict_spelling(&text, false) {
                Some(fixed) => format!("amount must be {grammar}; did you mean \"{fixed}\"?"),
                None => format!("invalid amount \"{text}\": amount must be {grammar}"),
            }
        }
    };
    cx.error_spanned_by(lit, error);
    None
}

/// Checks `expires_in`: a string such as `"90s"` or `"5m"`, positive, at most a year.
fn check_expires_in(cx: &Ctxt, slot: &Attr<Expr>) -> Option<u64> {
    let (key, value) = slot.get()?;
    if let Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(int), .. }) = value {
        cx.error_spanned_by(
            value,
            format_args!("`expires_in` must be a string with a unit: write expires_in = \"{}s\"", int.base10_digits()),
        );
        return None;
    }
    let lit = expect_str(cx, key, value, "", PayArgs::example("expires_in"))?;
    let text = lit.value();
    let secs = match pay402_core::duration::parse_duration(&text) {
        Ok(duration) => duration.as_secs(),
        Err(message) => {
            let number = text.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic() || c.is_whitespace());
            let zero = !number.is_empty() && number.bytes().all(|b| b == b'0');
            let hint = match pay402_core::duration::suggest_duration(&text) {
                Some(fixed) => format!("; did you mean \"{fixed}\"?"),
                None if zero => "; write a positive duration like \"5m\"".to_owned(),
                None => String::new(),
            };
            cx.error_spanned_by(&lit, format_args!("invalid `expires_in`: {message}{hint}"));
            return None;
        }
    };
    if secs > MAX_EXPIRES_IN_SECS {
        cx.error_spanned_by(
            &lit,
            format_args!(
                "`expires_in` of \"{text}\" is longer than a year; a challenge is answered at once, so keep it \
                 short, like \"5m\" (the default)"
            ),
        );
        return None;
    }
    Some(secs)
}

/// Checks `chain_id`: an integer literal, positive, fitting `u64`.
fn check_chain_id(cx: &Ctxt, slot: &Attr<Expr>) -> Option<u64> {
    let (key, value) = slot.get()?;
    let lit = expect_int(cx, key, value, PayArgs::example("chain_id"))?;
    match lit.base10_parse::<u64>() {
        Ok(0) => cx.error_spanned_by(&lit, "`chain_id` must be positive, like chain_id = 196 (X Layer)"),
        Ok(id) => return Some(id),
        Err(_) => cx.error_spanned_by(&lit, "`chain_id` is too large: chain ids fit in a u64"),
    }
    None
}

impl PayArgs {
    /// Validates every key, reporting all problems; invalid or missing values fall back to a
    /// placeholder or the default so the expansion can still be emitted. `attr_span` locates a
    /// missing `amount`.
    pub(crate) fn validate(&self, cx: &Ctxt, attr_span: Span) -> PayRoute {
        let amount = match self.amount.get() {
            Some(_) => string(cx, &self.amount).and_then(|lit| check_amount(cx, &lit)),
            None => {
                cx.error_at(attr_span, "missing `amount`: write #[pay(amount = \"0.01\")]");
                None
            }
        };
        let intent = string(cx, &self.intent).and_then(|lit| {
            let text = lit.value();
            pay402_core::names::check_keyword("intent", &text, pay402_core::names::MPP_INTENTS)
                .map_err(|m| cx.error_spanned_by(&lit, m))
                .ok()
                .map(|()| text)
        });
        let currency = string(cx, &self.currency).and_then(|lit| check_address(cx, "currency", &lit));
        let recipient = string(cx, &self.recipient).and_then(|lit| check_address(cx, "recipient", &lit));
        let description = string(cx, &self.description).map(|lit| lit.value());
        let expires_in_secs = check_expires_in(cx, &self.expires_in);
        let chain_id = check_chain_id(cx, &self.chain_id);
        let unit_type = string(cx, &self.unit_type).and_then(|lit| {
            let text = lit.value();
            if text.trim().is_empty() {
                cx.error_spanned_by(&lit, "`unit_type` is empty; name the billing unit, like unit_type = \"request\"");
                return None;
            }
            Some(text)
        });
        let suggested_deposit = string(cx, &self.suggested_deposit).and_then(|lit| {
            let text = lit.value();
            check_base_units(&text, AMOUNT_DECIMALS)
                .map_err(|m| cx.error_spanned_by(&lit, format_args!("invalid `suggested_deposit`: {m}")))
                .ok()
                .map(|()| text)
        });
        PayRoute {
            amount: amount.unwrap_or_else(|| PLACEHOLDER_AMOUNT.to_owned()),
            intent: intent.unwrap_or_else(|| DEFAULT_INTENT.to_owned()),
            currency,
            recipient,
            description,
            expires_in_secs,
            chain_id,
            unit_type,
            suggested_deposit,
        }
    }
}

impl PayRoute {
    /// The `StaticPaySpec` constant expression (the `static` item's initialiser).
    pub(crate) fn to_static_spec(&self) -> TokenStream {
        let Self { amount, intent, .. } = self;
        let currency = option(self.currency.as_deref());
        let recipient = option(self.recipient.as_deref());
        let description = option(self.description.as_deref());
        let expires_in = option(self.expires_in_secs.map(Literal::u64_unsuffixed));
        let chain_id = option(self.chain_id.map(Literal::u64_unsuffixed));
        let unit_type = option(self.unit_type.as_deref());
        let suggested_deposit = option(self.suggested_deposit.as_deref());
        quote! {
            ::pay402::__private::StaticPaySpec::new(
                #amount, #intent, #currency, #recipient, #description, #expires_in, #chain_id, #unit_type,
                #suggested_deposit,
            )
        }
    }
}

/// Parses and validates `#[pay(...)]` arguments (the unit tests' entry point).
#[cfg(test)]
pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> PayRoute {
    parse_at(cx, args, Span::call_site()).1
}

/// Parses and validates `#[pay(...)]` arguments written in the attribute at `attr_span`: the
/// raw arguments (for spans) and the validated route.
pub(crate) fn parse_at(cx: &Ctxt, args: TokenStream, attr_span: Span) -> (PayArgs, PayRoute) {
    let raw: PayArgs = crate::attr::parse_args(cx, args);
    let route = raw.validate(cx, attr_span);
    (raw, route)
}

impl PayArgs {
    /// The value written for `key`, if any.
    pub(crate) fn value(&self, key: &str) -> Option<&Expr> {
        let slot = match key {
            "amount" => &self.amount,
            "intent" => &self.intent,
            "currency" => &self.currency,
            "recipient" => &self.recipient,
            "description" => &self.description,
            "expires_in" => &self.expires_in,
            "chain_id" => &self.chain_id,
            "unit_type" => &self.unit_type,
            _ => &self.suggested_deposit,
        };
        slot.get().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn run(args: TokenStream) -> (PayRoute, Vec<String>) {
        let cx = Ctxt::new("pay");
        let route = parse(&cx, args);
        let errors = cx.into_error().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default();
        (route, errors)
    }

    #[test]
    fn defaults() {
        let (route, errors) = run(quote!(amount = "0.01"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            route,
            PayRoute {
                amount: "0.01".into(),
                intent: "charge".into(),
                currency: None,
                recipient: None,
                description: None,
                expires_in_secs: None,
                chain_id: None,
                unit_type: None,
                suggested_deposit: None,
            }
        );
        assert_eq!(
            route.to_static_spec().to_string(),
            quote!(::pay402::__private::StaticPaySpec::new(
                "0.01",
                "charge",
                ::core::option::Option::None,
                ::core::option::Option::None,
                ::core::option::Option::None,
                ::core::option::Option::None,
                ::core::option::Option::None,
                ::core::option::Option::None,
                ::core::option::Option::None,
            ))
            .to_string()
        );
    }

    #[test]
    fn every_key() {
        let (route, errors) = run(quote!(
            amount = "0.000001",
            intent = "session",
            currency = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
            recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            description = "Metered",
            expires_in = "90s",
            chain_id = 196,
            unit_type = "request",
            suggested_deposit = "1000000",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(route.intent, "session");
        assert_eq!((route.expires_in_secs, route.chain_id), (Some(90), Some(196)));
        let tokens = route.to_static_spec().to_string();
        assert!(tokens.starts_with(":: pay402 :: __private :: StaticPaySpec :: new (\"0.000001\" , \"session\""));
        assert!(tokens.contains("Some (90) , :: core :: option :: Option :: Some (196)"), "{tokens}");
        assert!(tokens.contains("Some (\"1000000\") ,)"), "{tokens}");
        let (route, _) = run(quote!(amount = "2", expires_in = "5m"));
        assert_eq!(route.expires_in_secs, Some(300));
    }

    #[test]
    fn amount_errors() {
        for (amount, want) in [
            (quote!(0.01), "`amount` must be a string literal: write amount = \"0.01\""),
            (quote!(AMOUNT), "`amount` must be a string literal like amount = \"0.01\"; constants"),
            (
                quote!("$0.01"),
                "MPP amounts take no `$`: they are plain numbers in the currency's units; write amount = \"0.01\"",
            ),
            (quote!("$x"), "invalid amount \"$x\": MPP amounts take no `$`"),
            (quote!("abc"), "invalid amount \"abc\": amount must be a decimal amount in the currency's units"),
            (quote!("0"), "amount \"0\" is zero; a paid route needs a positive amount (remove #[pay]"),
            (quote!("0.000"), "amount \"0.000\" is zero"),
            (quote!("-1"), "amount \"-1\" is negative"),
            (
                quote!("0.0000001"),
                "amount \"0.0000001\" has 7 decimal places; the currency has 6 (smallest unit 0.000001)",
            ),
            (quote!("1e3"), "did you mean \"1000\"?"),
            (quote!("0.5 USDC"), "did you mean \"0.5\"?"),
            (quote!("01.5"), "did you mean \"1.5\"?"),
            (quote!(""), "amount is empty"),
            (quote!("999999999999999999999999999999999999999"), "too large"),
        ] {
            let (route, errors) = run(quote!(amount = #amount));
            assert_eq!(errors.len(), 1, "{amount}: {errors:?}");
            assert!(errors[0].contains(want), "{amount}: {}", errors[0]);
            assert_eq!(route.amount, PLACEHOLDER_AMOUNT);
        }
    }

    #[test]
    fn other_key_errors() {
        for (args, want) in [
            (
                quote!(intent = "sesion"),
                "unknown intent `sesion`; expected one of `charge`, `session` (did you mean `session`?)",
            ),
            (quote!(intent = "subscription"), "unknown intent `subscription`; expected one of `charge`, `session`"),
            (quote!(intent = charge), "`intent` must be a string literal: write intent = \"charge\""),
            (
                quote!(currency = "0x779ded0c9e1022225f8e0630b35a9b54be713736"),
                "invalid `currency`: address is not EIP-55 checksummed; did you mean \
                 \"0x779Ded0c9e1022225f8E0630b35a9b54bE713736\"?",
            ),
            (quote!(recipient = "0x12"), "invalid `recipient`: address must have 40 hex digits"),
            (
                quote!(expires_in = "5 minutes"),
                "invalid `expires_in`: `5 minutes` is not a duration; write it like \"90s\", \"5m\" or \"1h\"; did you mean \"5m\"?",
            ),
            (
                quote!(expires_in = "0s"),
                "invalid `expires_in`: `0s` is zero; a challenge must live for a positive time; write a positive duration like \"5m\"",
            ),
            (
                quote!(expires_in = "soon"),
                "invalid `expires_in`: `soon` is not a duration; write it like \"90s\", \"5m\" or \"1h\"",
            ),
            (quote!(expires_in = 90), "`expires_in` must be a string with a unit: write expires_in = \"90s\""),
            (quote!(expires_in = "400d"), "`expires_in` of \"400d\" is longer than a year"),
            (quote!(chain_id = 0), "`chain_id` must be positive, like chain_id = 196 (X Layer)"),
            (quote!(chain_id = "196"), "`chain_id` must be an integer literal: write chain_id = 196"),
            (quote!(chain_id = 99999999999999999999999), "`chain_id` is too large"),
            (quote!(unit_type = ""), "`unit_type` is empty"),
            (quote!(suggested_deposit = "1.5"), "invalid `suggested_deposit`: `1.5` is not in base units"),
            (
                quote!(suggested_deposit = 1000000),
                "`suggested_deposit` must be a string literal: write suggested_deposit = \"1000000\"",
            ),
            (quote!(description = 5), "`description` must be a string literal: write description = \"5\""),
        ] {
            let (_, errors) = run(quote!(amount = "0.01", #args));
            assert_eq!(errors.len(), 1, "{args}: {errors:?}");
            assert!(errors[0].starts_with(want), "{args}: {}", errors[0]);
        }
    }

    #[test]
    fn keys_are_reported_together() {
        let (route, errors) = run(quote!(
            amont = "0.01",
            intent = "charge",
            intent = "session",
            splits = [("0.01", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")],
            price = "$0.01",
        ));
        assert_eq!(
            errors,
            [
                "unknown key `amont` in #[pay(...)]; expected one of `amount`, `intent`, `currency`, `recipient`, \
                 `description`, `expires_in`, `chain_id`, `unit_type`, `suggested_deposit` (did you mean `amount`?)",
                "duplicate key `intent`; each key may appear once, remove this one",
                SPLITS_REFUSED,
                "unknown key `price` in #[pay(...)]; expected one of `amount`, `intent`, `currency`, `recipient`, \
                 `description`, `expires_in`, `chain_id`, `unit_type`, `suggested_deposit`",
                "missing `amount`: write #[pay(amount = \"0.01\")]",
            ]
        );
        assert_eq!((route.amount.as_str(), route.intent.as_str()), (PLACEHOLDER_AMOUNT, "charge"));
    }
}
