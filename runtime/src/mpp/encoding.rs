//! MPP byte encodings (wire facts §1.1, §1.2, §8.2): unpadded base64url, RFC 8785 canonical
//! JSON (the challenge `request`/`opaque` form), and the sorted, compact, ASCII-escaped JSON of
//! credentials and receipts.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Lenient decoder: URL-safe alphabet, non-zero trailing bits accepted (Python's
/// `urlsafe_b64decode` after re-padding accepts them).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// RFC 4648 URL-safe base64 without padding.
pub fn b64url_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64, with or without `=` padding. The standard alphabet's `+` and `/`
/// are accepted too (Python translates `-_` to `+/` before decoding, so it accepts both);
/// surrounding whitespace is ignored.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // Python re-adds padding (`"=" * (-len % 4)`) and ignores excess `=`; dropping every
    // trailing `=` and decoding unpadded is equivalent.
    let text = text.trim().trim_end_matches('=');
    if text.contains(['+', '/']) {
        let fixed: String = text
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        LENIENT.decode(fixed)
    } else {
        LENIENT.decode(text)
    }
}

/// RFC 8785 (JCS) canonical JSON: object keys sorted by UTF-16 code units, no whitespace,
/// strings in raw UTF-8 with only the mandatory escapes, numbers in ECMAScript form.
///
/// Integers (the only numbers MPP requests carry) are written exactly, whatever their size;
/// other numbers use the shortest round-trip digits in the ES6 `Number.prototype.toString`
/// layout.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// [`canonical_json`] of an object.
pub(crate) fn canonical_json_object(map: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(256);
    write_object(map, &mut out);
    out
}

/// `base64url_nopad(canonical_json(map))` — the challenge `request` / `opaque` parameter.
pub(crate) fn canonical_b64url(map: &Map<String, Value>) -> String {
    b64url_encode(canonical_json_object(map))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&es6_number(f));
    } else {
        // Unreachable without serde_json's `arbitrary_precision`; keep serde_json's text.
        out.push_str(&n.to_string());
    }
}

/// ECMAScript `Number.prototype.toString` for a finite double (RFC 8785 §3.2.2.3).
fn es6_number(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return "0".to_owned();
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's `Display` prints the shortest round-trip digits without an exponent.
        format!("{f}")
    } else {
        // `LowerExp` prints e.g. `1e21`, `1.5e-7`; ES6 wants an explicit `+` on the exponent.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    }
}

/// A copy of `value` whose objects (at every depth) have their keys in code-point order, as
/// Python's `json.dumps(sort_keys=True)` writes them. `serde_json` keeps insertion order here.
pub(crate) fn sorted_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(sorted_map(map)),
        Value::Array(items) => Value::Array(items.iter().map(sorted_value).collect()),
        other => other.clone(),
    }
}

/// [`sorted_value`] of an object.
pub(crate) fn sorted_map(map: &Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.into_iter().map(|(k, v)| (k.clone(), sorted_value(v))).collect()
}

/// Python `json.dumps(value, sort_keys=True, separators=(",", ":"))` (ASCII-escaped) — the
/// credential and receipt JSON.
pub(crate) fn sorted_compact_ascii(value: &Value) -> Vec<u8> {
    // Serialising a `Value` into memory cannot fail.
    crate::json::compact_ascii(&sorted_value(value)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64url_round_trip_and_leniency() {
        assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(b64url_decode("-_8").unwrap(), b"\xfb\xff");
        assert_eq!(b64url_decode("-_8=").unwrap(), b"\xfb\xff");
        assert_eq!(b64url_decode("-_8==").unwrap(), b"\xfb\xff");
        assert_eq!(b64url_decode("-_-").unwrap(), b"\xfb\xff"); // non-zero trailing bits
        assert_eq!(b64url_decode("+/8").unwrap(), b"\xfb\xff");
        assert_eq!(b64url_decode(" eyJ9 ").unwrap(), b"{\"}");
        assert!(b64url_decode("a").is_err());
        assert!(b64url_decode("a*b=").is_err());
    }

    #[test]
    fn jcs() {
        let v = json!({"b": [1, -2, true, null], "a": {"z": "USD\u{20ae}0", "y": "q\"\\\n\u{1}\u{7f}"}, "é": 1, "\u{1F600}": 2, "\u{FFFD}": 3});
        assert_eq!(
            canonical_json(&v),
            "{\"a\":{\"y\":\"q\\\"\\\\\\n\\u0001\u{7f}\",\"z\":\"USD\u{20ae}0\"},\"b\":[1,-2,true,null],\"é\":1,\"\u{1F600}\":2,\"\u{FFFD}\":3}"
        );
        assert_eq!(canonical_json(&json!(18446744073709551615u64)), "18446744073709551615");
        assert_eq!(canonical_json(&json!(1.0)), "1");
        assert_eq!(canonical_json(&json!(1.5)), "1.5");
        assert_eq!(canonical_json(&json!(1e21)), "1e+21");
        assert_eq!(canonical_json(&json!(1e-7)), "1e-7");
        assert_eq!(canonical_json(&json!(-0.0)), "0");
    }

    #[test]
    fn python_sorted_ascii() {
        let v = json!({"b": {"y": 1, "x": "₮"}, "a": []});
        assert_eq!(sorted_compact_ascii(&v), br#"{"a":[],"b":{"x":"\u20ae","y":1}}"#);
    }
}
