//! `#[pay(...)]` (MPP): its keys, their compile-time validation (every literal check is
//! `pay402-core`'s, the code the runtime runs too), and the `StaticPaySpec` they become.

use crate::attr::{Attr, Ctxt, arg_spec, expect_str, int, string};
use crate::literal::{MoneyKind, Route, Validate, Value, check_address, check_keyword, required_money};
use pay402_core::money::check_base_units;
use proc_macro2::Span;
use syn::Expr;

/// The longest `expires_in` accepted: a challenge is answered within seconds or minutes, and a
/// far-away expiry would overflow the challenge's timestamp.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 365 * 86_400;

/// `amount`: a plain number in the currency's units (no `$`), exact in the 6 decimals of the
/// currency (X Layer's USD₮0, the default currency of pay402's `evm` method).
pub(crate) const AMOUNT: MoneyKind = MoneyKind {
    key: "amount",
    allow_dollar: false,
    decimals: 6,
    holder: "currency",
    units: "the currency's units",
    plural: "MPP amounts",
    example: "\"0.01\"",
    placeholder: "0.001",
};

/// Why `splits` is not a key.
const SPLITS_REFUSED: &str = "`splits` are not supported by #[pay]: the attribute charges one recipient. To split a \
                              payment, drop #[pay] and call the low-level `Mpp::charge(authorization, amount, \
                              ChargeOptions { splits, .. })` in the handler";

arg_spec! {
    /// The raw arguments of `#[pay(...)]`, as written.
    pub(crate) struct PayArgs for "pay" {
        amount => "amount = \"0.01\"",
        intent => "intent = \"charge\"",
        currency => "currency = \"0x779Ded0c9e1022225f8E0630b35a9b54bE713736\"",
        recipient => "recipient = \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"",
        description => "description = \"One premium API call\"",
        expires_in => "expires_in = \"5m\"",
        chain_id => "chain_id = 196",
        unit_type => "unit_type = \"request\"",
        suggested_deposit => "suggested_deposit = \"1000000\"",
        per => "per = \"event\"",
    }
    refused { "splits" => SPLITS_REFUSED }
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
    let lit = expect_str(cx, key, value, "", slot.example())?;
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
    let lit = int(cx, slot)?;
    match lit.base10_parse::<u64>() {
        Ok(0) => cx.error_spanned_by(&lit, "`chain_id` must be positive, like chain_id = 196 (X Layer)"),
        Ok(id) => return Some(id),
        Err(_) => cx.error_spanned_by(&lit, "`chain_id` is too large: chain ids fit in a u64"),
    }
    None
}

/// Checks `unit_type`: not blank.
fn check_unit_type(cx: &Ctxt, slot: &Attr<Expr>) -> Option<String> {
    let lit = string(cx, slot, "")?;
    let text = lit.value();
    if text.trim().is_empty() {
        cx.error_spanned_by(&lit, "`unit_type` is empty; name the billing unit, like unit_type = \"request\"");
        return None;
    }
    Some(text)
}

/// The `StaticPaySpec::per` value of a `per` keyword (`Per::Request`, `Per::Event`).
fn per_variant(per: &str) -> Value {
    Value::Variant("Per", if per == pay402_core::names::PER_EVENT { "Event" } else { "Request" })
}

/// Whether a validated `#[pay]` route is priced per event of a metered stream (its handler gets
/// a `PaidStream`).
pub(crate) fn per_event(route: &Route) -> bool {
    route.get("per") == Some(&per_variant(pay402_core::names::PER_EVENT))
}

/// The `per` value as a string literal. Anything else is reported with the literal to write: the
/// allowed value it names, whatever its case or path (`per = Event`, `per = Per::Event` →
/// `per = "event"`), else `"event"`.
fn per_literal(cx: &Ctxt, slot: &Attr<Expr>) -> Option<syn::LitStr> {
    use pay402_core::names::{MPP_PER, PER_EVENT};
    let (_, value) = slot.get()?;
    if let Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(lit), .. }) = value {
        return Some(lit.clone());
    }
    let written = quote::quote!(#value).to_string();
    let last = written.rsplit("::").next().unwrap_or_default().trim().to_ascii_lowercase();
    let fix = MPP_PER.iter().copied().find(|p| *p == last).unwrap_or(PER_EVENT);
    cx.error_spanned_by(
        value,
        format_args!("`per` must be a string literal, \"request\" or \"event\": write per = \"{fix}\""),
    );
    None
}

/// Checks `per`: one of `pay402-core`'s [`MPP_PER`](pay402_core::names::MPP_PER), and `"event"`
/// only with the session intent (`pay402-core`'s rule, reported on `per = "event"`). `intent` is
/// the validated intent; an intent written but invalid was reported already, so the rule is not
/// checked against it. A `per = "event"` that breaks the rule is still emitted (the error fails
/// the build anyway), so the handler's `PaidStream` is not reported a second time.
fn check_per(cx: &Ctxt, args: &PayArgs, intent: Option<&str>) -> Option<Value> {
    use pay402_core::names::{MPP_PER, check_per_intent};
    let lit = per_literal(cx, &args.per)?;
    let per = lit.value();
    if let Err(message) = pay402_core::names::check_keyword("`per` value", &per, MPP_PER) {
        cx.error_spanned_by(&lit, message);
        return None;
    }
    let intent_invalid = args.intent.get().is_some() && intent.is_none();
    if !intent_invalid && let Err(message) = check_per_intent(&per, intent) {
        let (key, value) = args.per.get()?;
        cx.error_spanned_by(quote::quote!(#key = #value), message);
    }
    Some(per_variant(&per))
}

impl Validate for PayArgs {
    /// The `StaticPaySpec` builder: `new(amount)`, then one setter per valid key written, named
    /// after the key (`expires_in` as `expires_in_secs`).
    fn validate(&self, cx: &Ctxt, attr_span: Span) -> Route {
        let mut route = Route::new(required_money(cx, &self.amount, &AMOUNT, attr_span));
        route.set("intent", check_keyword(cx, &self.intent, "intent", pay402_core::names::MPP_INTENTS));
        route.set("currency", string(cx, &self.currency, "").and_then(|lit| check_address(cx, "currency", &lit)));
        route.set("recipient", string(cx, &self.recipient, "").and_then(|lit| check_address(cx, "recipient", &lit)));
        route.set("description", string(cx, &self.description, "").map(|lit| lit.value()));
        route.set("expires_in_secs", check_expires_in(cx, &self.expires_in));
        route.set("chain_id", check_chain_id(cx, &self.chain_id));
        route.set("unit_type", check_unit_type(cx, &self.unit_type));
        let suggested_deposit = string(cx, &self.suggested_deposit, "").and_then(|lit| {
            let text = lit.value();
            check_base_units(&text, AMOUNT.decimals)
                .map_err(|m| cx.error_spanned_by(&lit, format_args!("invalid `suggested_deposit`: {m}")))
                .ok()
                .map(|()| text)
        });
        route.set("suggested_deposit", suggested_deposit);
        let per = check_per(cx, self, route.text("intent"));
        route.set("per", per);
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::{Parsed, Value};
    use quote::quote;

    #[test]
    fn each_written_key_is_one_setter() {
        Parsed::<PayArgs>::builds(quote!(amount = "0.01"), "StaticPaySpec", quote!(::new("0.01")));
        // `expires_in` is set in seconds.
        let route = Parsed::<PayArgs>::builds(
            quote!(amount = "2", expires_in = "5m"),
            "StaticPaySpec",
            quote!(::new("2").expires_in_secs(300)),
        );
        assert_eq!(route.get("expires_in_secs"), Some(&Value::Int(300)));
        let want = quote!(
            ::new("0.000001")
                .intent("session")
                .currency("0x779Ded0c9e1022225f8E0630b35a9b54bE713736")
                .recipient("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                .description("Metered")
                .expires_in_secs(90)
                .chain_id(196)
                .unit_type("request")
                .suggested_deposit("1000000")
        );
        let every_key = quote!(
            amount = "0.000001",
            intent = "session",
            currency = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
            recipient = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            description = "Metered",
            expires_in = "90s",
            chain_id = 196,
            unit_type = "request",
            suggested_deposit = "1000000",
        );
        let route = Parsed::<PayArgs>::builds(every_key, "StaticPaySpec", want);
        assert_eq!((route.text("intent"), route.get("chain_id")), (Some("session"), Some(&Value::Int(196))));
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
            let (route, errors) = Parsed::<PayArgs>::run(quote!(amount = #amount));
            assert_eq!(errors.len(), 1, "{amount}: {errors:?}");
            assert!(errors[0].contains(want), "{amount}: {}", errors[0]);
            assert_eq!(route.required(), AMOUNT.placeholder);
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
            let (_, errors) = Parsed::<PayArgs>::run(quote!(amount = "0.01", #args));
            assert_eq!(errors.len(), 1, "{args}: {errors:?}");
            assert!(errors[0].starts_with(want), "{args}: {}", errors[0]);
        }
    }

    #[test]
    fn per_event_is_a_setter_and_a_session_only_value() {
        let route = Parsed::<PayArgs>::builds(
            quote!(intent = "session", amount = "0.0001", per = "event"),
            "StaticPaySpec",
            quote!(::new("0.0001").intent("session").per(::pay402::__private::Per::Event)),
        );
        assert!(per_event(&route));
        let route = Parsed::<PayArgs>::builds(
            quote!(amount = "0.01", per = "request"),
            "StaticPaySpec",
            quote!(::new("0.01").per(::pay402::__private::Per::Request)),
        );
        assert!(!per_event(&route));
        assert!(!per_event(&Parsed::<PayArgs>::run(quote!(amount = "0.01", intent = "session")).0));
        for (args, want) in [
            (
                quote!(intent = "session", per = "evnt"),
                "unknown `per` value `evnt`; expected one of `request`, `event` (did you mean `event`?)",
            ),
            (
                quote!(intent = "session", per = "token"),
                "unknown `per` value `token`; expected one of `request`, `event`",
            ),
            (
                quote!(intent = "session", per = event),
                "`per` must be a string literal, \"request\" or \"event\": write per = \"event\"",
            ),
            (
                quote!(intent = "session", per = Per::Request),
                "`per` must be a string literal, \"request\" or \"event\": write per = \"request\"",
            ),
            (
                quote!(intent = "session", per = 1),
                "`per` must be a string literal, \"request\" or \"event\": write per = \"event\"",
            ),
            (
                quote!(intent = "charge", per = "event"),
                "per = \"event\" needs intent = \"session\", not intent = \"charge\": a stream is metered per event \
                 on a payment channel; add intent = \"session\"",
            ),
            (quote!(per = "event"), "per = \"event\" needs intent = \"session\", not the default intent, `charge`"),
            // An invalid intent is reported once, not again by `per`.
            (quote!(intent = "sesion", per = "event"), "unknown intent `sesion`"),
        ] {
            let (route, errors) = Parsed::<PayArgs>::run(quote!(amount = "0.01", #args));
            assert_eq!(errors.len(), 1, "{args}: {errors:?}");
            assert!(errors[0].starts_with(want), "{args}: {}", errors[0]);
            // A `per = "event"` breaking the intent rule is still emitted (the handler's
            // `PaidStream` is not reported twice); an invalid value is left out.
            let event = args.to_string().contains("per = \"event\"");
            assert_eq!(per_event(&route), event, "{args}");
        }
    }

    #[test]
    fn keys_are_reported_together() {
        let (route, errors) = Parsed::<PayArgs>::run(quote!(
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
                 `description`, `expires_in`, `chain_id`, `unit_type`, `suggested_deposit`, `per` (did you mean `amount`?)",
                "duplicate key `intent`; each key may appear once, remove this one",
                SPLITS_REFUSED,
                "unknown key `price` in #[pay(...)]; expected one of `amount`, `intent`, `currency`, `recipient`, \
                 `description`, `expires_in`, `chain_id`, `unit_type`, `suggested_deposit`, `per`",
                "missing `amount`: write #[pay(amount = \"0.01\")]",
            ]
        );
        assert_eq!((route.required(), route.text("intent")), (AMOUNT.placeholder, Some("charge")));
    }
}
