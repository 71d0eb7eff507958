//! Attribute-argument parsing shared by every pay402 attribute (`#[x402(...)]` and `#[pay(...)]`):
//! `key = value` pairs read with [`syn::meta::parser`] into duplicate-aware [`Attr`] slots,
//! with every error collected in a [`Ctxt`] instead of stopping at the first.
//!
//! The phases are separate: [`parse_args`] only records raw values (as [`syn::Expr`], so a
//! wrong-kind value such as `price = 0.001` still parses and gets a tailored message), and each
//! attribute's validator then turns the raw values into checked literals with the helpers below.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use std::cell::RefCell;
use std::fmt::Display;
use syn::parse::Parser;
use syn::{Expr, Ident, Lit, LitInt, LitStr, Token};

/// Collects errors; they are reported together (serde's `Ctxt`). A context must end in
/// [`Ctxt::into_error`]: dropping one unchecked would lose its errors silently, so it panics
/// instead (a bug in this crate, caught by its tests).
pub(crate) struct Ctxt {
    /// The attribute's name, for messages (`x402`).
    attr: &'static str,
    /// The errors; `None` once taken by [`Ctxt::into_error`].
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    /// A context for the attribute named `attr`.
    pub(crate) fn new(attr: &'static str) -> Self {
        Self { attr, errors: RefCell::new(Some(Vec::new())) }
    }

    /// The attribute's name.
    pub(crate) fn attr(&self) -> &'static str {
        self.attr
    }

    /// An error spanning `tokens`.
    pub(crate) fn error_spanned_by(&self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at `span`.
    pub(crate) fn error_at(&self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// A ready-made error.
    pub(crate) fn push(&self, error: syn::Error) {
        // Always `Some`: only `into_error` takes the errors, and it consumes the context.
        if let Some(errors) = self.errors.borrow_mut().as_mut() {
            errors.push(error);
        }
    }

    /// Every error message, in order (the unit tests' view).
    #[cfg(test)]
    pub(crate) fn messages(self) -> Vec<String> {
        self.into_error().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default()
    }

    /// All errors, combined into one (`None` when there were none).
    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.errors.take().unwrap_or_default().into_iter().reduce(|mut all, e| {
            all.combine(e);
            all
        })
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.get_mut().is_some() {
            panic!("pay402-macros bug: a `Ctxt` for #[{}] was dropped without `into_error`", self.attr);
        }
    }
}

/// One key's slot: the first occurrence wins, a second one is a "duplicate key" error
/// (serde's `Attr<T>`, axum's `attr_parsing`). The slot knows its key's example, shown when the
/// value is missing or malformed.
pub(crate) struct Attr<T> {
    example: &'static str,
    value: Option<(Ident, T)>,
}

impl<T> Attr<T> {
    /// An empty slot whose key is written like `example` (`price = "$0.001"`).
    pub(crate) const fn new(example: &'static str) -> Self {
        Self { example, value: None }
    }

    /// An example `key = value` for this slot's key.
    pub(crate) const fn example(&self) -> &'static str {
        self.example
    }

    /// Stores `value` under `key`, or reports `key` as a duplicate.
    pub(crate) fn set(&mut self, cx: &Ctxt, key: &Ident, value: T) {
        if self.value.is_some() {
            cx.error_spanned_by(key, format_args!("duplicate key `{key}`; each key may appear once, remove this one"));
        } else {
            self.value = Some((key.clone(), value));
        }
    }

    /// The key (for spans) and the value, when set.
    pub(crate) fn get(&self) -> Option<(&Ident, &T)> {
        self.value.as_ref().map(|(k, v)| (k, v))
    }
}

/// The keys one attribute accepts. Implemented by each attribute's raw-argument struct, always
/// through [`arg_spec!`], so each key is listed once.
pub(crate) trait ArgSpec: Default {
    /// The attribute's name: `x402`, `pay`.
    const NAME: &'static str;
    /// The allowed keys, in documentation order (listed by "unknown key" errors).
    const KEYS: &'static [&'static str];
    /// The slot of `key`, or `None` for an unknown key.
    fn slot(&mut self, key: &str) -> Option<&mut Attr<Expr>>;
    /// The slot of `key`, read-only, or `None` for an unknown key.
    fn slot_ref(&self, key: &str) -> Option<&Attr<Expr>>;
    /// The message for a key that is deliberately not supported (and not listed among the
    /// allowed keys), such as `splits` in `#[pay]`; `None` for ordinary unknown keys, which get
    /// the "unknown key" message.
    fn refused(key: &str) -> Option<&'static str>;

    /// The value written for `key`, if any (`None` for an unknown key too).
    fn value(&self, key: &str) -> Option<&Expr> {
        self.slot_ref(key)?.get().map(|(_, value)| value)
    }
}

/// Declares an attribute's raw-argument struct from its one key table: the attribute's name
/// (`struct X402Args for "x402"`), `key => example` pairs in documentation order, then optionally `refused { "key" => message }` for keys that get
/// their own message instead of "unknown key". Generates the struct (one [`Attr`] slot per key,
/// holding its example), its `Default`, and its [`ArgSpec`] (`KEYS`, `slot`, `slot_ref`,
/// `refused`); an unknown key answers `None` everywhere.
macro_rules! arg_spec {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident for $attr:literal {
            $( $key:ident => $example:expr ),+ $(,)?
        }
        $( refused { $( $refused:literal => $message:expr ),+ $(,)? } )?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $key: $crate::attr::Attr<::syn::Expr>, )+
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self { $( $key: $crate::attr::Attr::new($example), )+ }
            }
        }

        impl $crate::attr::ArgSpec for $name {
            const NAME: &'static str = $attr;
            const KEYS: &'static [&'static str] = &[$( ::core::stringify!($key) ),+];

            fn slot(&mut self, key: &str) -> ::core::option::Option<&mut $crate::attr::Attr<::syn::Expr>> {
                match key {
                    $( ::core::stringify!($key) => ::core::option::Option::Some(&mut self.$key), )+
                    _ => ::core::option::Option::None,
                }
            }

            fn slot_ref(&self, key: &str) -> ::core::option::Option<&$crate::attr::Attr<::syn::Expr>> {
                match key {
                    $( ::core::stringify!($key) => ::core::option::Option::Some(&self.$key), )+
                    _ => ::core::option::Option::None,
                }
            }

            fn refused(key: &str) -> ::core::option::Option<&'static str> {
                match key {
                    $($( $refused => ::core::option::Option::Some($message), )+)?
                    _ => ::core::option::Option::None,
                }
            }
        }
    };
}
pub(crate) use arg_spec;

/// Parses `key = value, ...` into `A`, reporting unknown keys (with the allowed list and a
/// suggestion), duplicate keys, keys without a value and `key: value` typos, all together. A
/// syntax error the parser cannot step over is reported too; the keys before it are kept.
pub(crate) fn parse_args<A: ArgSpec>(cx: &Ctxt, args: TokenStream) -> A {
    let mut parsed = A::default();
    let parser = syn::meta::parser(|meta| {
        let Some(key) = meta.path.get_ident().cloned() else {
            // `a::b = ..`: report, skip its value, continue.
            cx.error_spanned_by(&meta.path, format_args!("expected a key such as `{}`", A::KEYS[0]));
            skip_value(&meta)?;
            return Ok(());
        };
        let name = key.to_string();
        let value = if meta.input.peek(Token![=]) {
            Some(meta.value()?.parse::<Expr>()?)
        } else if meta.input.peek(Token![:]) {
            let colon: Token![:] = meta.input.parse()?;
            let value: Expr = meta.input.parse()?;
            cx.error_spanned_by(colon, format_args!("write `{name} = ...` with `=`, not `:`"));
            Some(value)
        } else {
            skip_value(&meta)?;
            None
        };
        let Some(slot) = parsed.slot(&name) else {
            match A::refused(&name) {
                Some(message) => cx.error_spanned_by(&key, message),
                None => cx.error_spanned_by(&key, unknown_key(cx.attr(), &name, A::KEYS)),
            }
            return Ok(());
        };
        match value {
            Some(value) => slot.set(cx, &key, value),
            None => cx.error_spanned_by(&key, format_args!("`{name}` needs a value: {}", slot.example())),
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(args) {
        cx.push(e);
    }
    parsed
}

/// "unknown key `prise`; expected one of `price`, ... (did you mean `price`?)". Only close
/// matches are suggested (a third of the key's length, at least one edit), so `crate` is not
/// "corrected" to `price`.
fn unknown_key(attr: &str, name: &str, keys: &[&str]) -> String {
    use pay402_core::names::{edit_distance, suggest};
    let list = keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    let hint = suggest(name, keys)
        .filter(|s| edit_distance(name, s) <= 1.max(s.len() / 3))
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    format!("unknown key `{name}` in #[{attr}(...)]; expected one of {list}{hint}")
}

/// Consumes whatever follows a key that is not `= value` (`key(...)` or nothing).
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// A value that should have been a string literal but is a bare literal or word, as text
/// (`0.001`, `-1`, `exact`), so the message can show it quoted. `None` for anything else
/// (paths such as `PRICE`, calls, macros).
fn bare_text(value: &Expr) -> Option<String> {
    match value {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => Some(i.to_string()),
            Lit::Float(f) => Some(f.to_string()),
            Lit::Bool(b) => Some(b.value.to_string()),
            Lit::Char(c) => Some(c.value().to_string()),
            _ => None,
        },
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => bare_text(&u.expr).map(|t| format!("-{t}")),
        Expr::Path(p) if p.qself.is_none() => {
            let ident = p.path.get_ident()?.to_string();
            // An upper-case name is a constant, not a misspelt keyword.
            ident.bytes().any(|b| b.is_ascii_lowercase()).then_some(ident)
        }
        _ => None,
    }
}

/// The value of `key` as a string literal. A bare literal or word is reported with the quoted
/// spelling (`prefix` goes in front, e.g. `$` for prices); other expressions are refused because
/// the value is checked at compile time.
pub(crate) fn expect_str(cx: &Ctxt, key: &Ident, value: &Expr, prefix: &str, example: &str) -> Option<LitStr> {
    if let Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) = value {
        return Some(s.clone());
    }
    match bare_text(value) {
        Some(text) if text.starts_with('-') => {
            cx.error_spanned_by(
                value,
                format_args!("`{key}` must be a string literal with a positive amount, like {example}"),
            );
        }
        Some(text) => {
            let text = text.strip_prefix(prefix).unwrap_or(&text);
            cx.error_spanned_by(
                value,
                format_args!("`{key}` must be a string literal: write {key} = \"{prefix}{text}\""),
            );
        }
        None => cx.error_spanned_by(
            value,
            format_args!(
                "`{key}` must be a string literal like {example}; constants and expressions are not supported \
                 because #[{}] checks the value at compile time",
                cx.attr()
            ),
        ),
    }
    None
}

/// The value of a string-valued slot as a string literal: `None` when the key is absent or the
/// value is not a string literal (reported, with the slot's example; see [`expect_str`]).
pub(crate) fn string(cx: &Ctxt, slot: &Attr<Expr>, prefix: &str) -> Option<LitStr> {
    let (key, value) = slot.get()?;
    expect_str(cx, key, value, prefix, slot.example())
}

/// The value of an integer-valued slot as an integer literal: `None` when the key is absent or
/// the value is not an integer literal (reported, with the slot's example; see [`expect_int`]).
pub(crate) fn int(cx: &Ctxt, slot: &Attr<Expr>) -> Option<LitInt> {
    let (key, value) = slot.get()?;
    expect_int(cx, key, value, slot.example())
}

/// The value of `key` as an integer literal (its digits and the literal, for spans).
pub(crate) fn expect_int(cx: &Ctxt, key: &Ident, value: &Expr, example: &str) -> Option<LitInt> {
    match value {
        Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) => Some(i.clone()),
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => {
            cx.error_spanned_by(value, format_args!("`{key}` must be an integer literal: write {key} = {}", s.value()));
            None
        }
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
            cx.error_spanned_by(value, format_args!("`{key}` must be positive, like {example}"));
            None
        }
        _ => {
            cx.error_spanned_by(value, format_args!("`{key}` must be an integer literal like {example}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    arg_spec! {
        struct Demo for "demo" {
            price => "price = \"$0.001\"",
            scheme => "scheme = \"exact\"",
        }
        refused { "splits" => "`splits` is refused" }
    }

    #[test]
    #[should_panic(expected = "dropped without `into_error`")]
    fn an_unchecked_context_panics() {
        let cx = Ctxt::new("demo");
        cx.error_at(Span::call_site(), "lost");
    }

    #[test]
    fn parses_known_keys() {
        let cx = Ctxt::new("demo");
        let args: Demo = parse_args(&cx, quote!(price = "$0.001", scheme = "exact"));
        assert!(cx.messages().is_empty());
        assert_eq!(args.price.get().unwrap().0, "price");
        assert!(matches!(args.scheme.get().unwrap().1, Expr::Lit(_)));
        assert!(matches!(args.value("price"), Some(Expr::Lit(_))));
        assert!(args.value("colour").is_none());
        assert_eq!(
            (Demo::NAME, Demo::KEYS, args.price.example()),
            ("demo", &["price", "scheme"][..], "price = \"$0.001\"")
        );
    }

    #[test]
    fn reports_unknown_and_duplicate_keys_together() {
        let cx = Ctxt::new("demo");
        let args: Demo =
            parse_args(&cx, quote!(prise = "$1", price = "$1", price = "$2", sheme = "x", flag, a::b = 1, crate = 1));
        assert_eq!(
            cx.messages(),
            [
                "unknown key `prise` in #[demo(...)]; expected one of `price`, `scheme` (did you mean `price`?)",
                "duplicate key `price`; each key may appear once, remove this one",
                "unknown key `sheme` in #[demo(...)]; expected one of `price`, `scheme` (did you mean `scheme`?)",
                "unknown key `flag` in #[demo(...)]; expected one of `price`, `scheme`",
                "expected a key such as `price`",
                "unknown key `crate` in #[demo(...)]; expected one of `price`, `scheme`",
            ]
        );
        // The first occurrence wins.
        let Some((_, Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }))) = args.price.get() else { panic!() };
        assert_eq!(s.value(), "$1");
    }

    #[test]
    fn refused_keys_get_their_own_message() {
        let cx = Ctxt::new("demo");
        let _: Demo = parse_args(&cx, quote!(price = "$1", splits = [1, 2], splits(x), splitz = 1));
        assert_eq!(
            cx.messages(),
            [
                "`splits` is refused",
                "`splits` is refused",
                "unknown key `splitz` in #[demo(...)]; expected one of `price`, `scheme`",
            ]
        );
    }

    #[test]
    fn missing_value_and_colon() {
        let cx = Ctxt::new("demo");
        let args: Demo = parse_args(&cx, quote!(price, scheme: "exact"));
        assert_eq!(
            cx.messages(),
            ["`price` needs a value: price = \"$0.001\"", "write `scheme = ...` with `=`, not `:`"]
        );
        assert!(args.scheme.get().is_some());
    }

    #[test]
    fn syntax_error_keeps_earlier_keys() {
        let cx = Ctxt::new("demo");
        let args: Demo = parse_args(&cx, quote!(price = "$1" scheme = "exact"));
        assert_eq!(cx.messages(), ["expected `,`"]);
        assert!(args.price.get().is_some());
    }

    #[test]
    fn string_and_int_helpers() {
        let cx = Ctxt::new("demo");
        let key: Ident = syn::parse_quote!(price);
        assert!(expect_str(&cx, &key, &syn::parse_quote!("$1"), "$", "x").is_some());
        assert!(expect_str(&cx, &key, &syn::parse_quote!(0.001), "$", "x").is_none());
        assert!(expect_str(&cx, &key, &syn::parse_quote!(-1), "$", "x").is_none());
        assert!(expect_str(&cx, &key, &syn::parse_quote!(PRICE), "$", "price = \"$0.001\"").is_none());
        let secs: Ident = syn::parse_quote!(max_timeout_seconds);
        assert_eq!(expect_int(&cx, &secs, &syn::parse_quote!(60), "x").unwrap().base10_digits(), "60");
        assert!(expect_int(&cx, &secs, &syn::parse_quote!("60"), "x").is_none());
        assert_eq!(
            cx.messages(),
            [
                "`price` must be a string literal: write price = \"$0.001\"",
                "`price` must be a string literal with a positive amount, like x",
                "`price` must be a string literal like price = \"$0.001\"; constants and expressions are not \
                 supported because #[demo] checks the value at compile time",
                "`max_timeout_seconds` must be an integer literal: write max_timeout_seconds = 60",
            ]
        );
    }
}
