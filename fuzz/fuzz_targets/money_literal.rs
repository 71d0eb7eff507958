//! Price / amount literals: the strict (compile-time) and lenient (run-time) grammars never
//! panic; anything the strict grammar accepts the lenient one accepts with the same value; a
//! parsed value prints to a literal that parses back to itself; conversion to atomic units never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_core::decimal::Rounding;
use pay402_core::money::check_base_units;
use pay402_core::{MoneySyntax, parse_money, strict_spelling};

fuzz_target!(|data: &[u8]| {
    let Some((&decimals, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let _ = check_base_units(text, decimals % 40);
    let _ = strict_spelling(text, true);
    let lenient = parse_money(text, MoneySyntax::Lenient, true);
    for allow_dollar in [true, false] {
        if let Ok(strict) = parse_money(text, MoneySyntax::Strict { allow_dollar }, true) {
            assert_eq!(lenient.as_ref().ok(), Some(&strict), "strict accepted {text:?} but lenient differs");
        }
    }
    if let Ok(value) = lenient {
        let printed = value.to_string();
        assert_eq!(parse_money(&printed, MoneySyntax::Lenient, true).ok(), Some(value), "{printed}");
        let _ = value.to_atomic(decimals % 40, Rounding::Exact);
        let _ = value.to_atomic(decimals % 40, Rounding::Truncate);
    }
});
