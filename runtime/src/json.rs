//! The JSON byte flavours the wire needs (see the wire facts §1.2).
//!
//! * [`compact`] — no spaces, raw UTF-8: x402 header JSON (`PAYMENT-REQUIRED`, …).
//! * [`python`] — Python's default `json.dumps`: `", "` and `": "`, non-ASCII as `\uXXXX`:
//!   OKX facilitator request bodies.
//! * [`compact_ascii`] — compact and ASCII-escaped: OKX SA bodies, MPP credentials/receipts.
//! * [`python_indented`] — `json.dump(indent=2)`, ASCII-escaped: the MPP `FileStore` files.
//!
//! Key order is the serialisation order of the value (struct declaration order, or insertion
//! order for maps: `serde_json` is built with `preserve_order`).

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use std::io::{self, Write};

/// A `serde_json` formatter reproducing Python's `json.dumps` options.
#[derive(Clone, Debug)]
struct PyFormatter {
    item_sep: &'static [u8],
    key_sep: &'static [u8],
    ensure_ascii: bool,
    indent: Option<usize>,
    depth: usize,
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(n) = self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.depth * n {
                w.write_all(b" ")?;
            }
        }
        Ok(())
    }

    fn begin_item<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(self.item_sep)?;
        }
        self.newline(w)
    }

    fn open<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        self.has_value = true;
        w.write_all(c)
    }
}

impl Formatter for PyFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.begin_item(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.begin_item(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(self.key_sep)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            // Python's ESCAPE_ASCII escapes everything outside ' '..='~' (DEL included).
            if (c as u32) < 0x7f {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{:04x}", u)?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn write_char_escape<W: ?Sized + Write>(&mut self, w: &mut W, escape: CharEscape) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(b) => return write!(w, "\\u{:04x}", b),
        };
        w.write_all(s)
    }
}

fn with_formatter<T: Serialize + ?Sized>(value: &T, f: PyFormatter) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = Serializer::with_formatter(&mut out, f);
    value.serialize(&mut ser)?;
    Ok(out)
}

fn formatter(
    item_sep: &'static [u8],
    key_sep: &'static [u8],
    ensure_ascii: bool,
    indent: Option<usize>,
) -> PyFormatter {
    PyFormatter { item_sep, key_sep, ensure_ascii, indent, depth: 0, has_value: false }
}

/// Compact JSON, raw UTF-8 (x402 header JSON).
pub fn compact<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

/// Python default `json.dumps`: `", "`, `": "`, ASCII-escaped (OKX facilitator bodies).
pub fn python<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    with_formatter(value, formatter(b", ", b": ", true, None))
}

/// Compact and ASCII-escaped (OKX SA bodies, MPP credential/receipt JSON).
pub fn compact_ascii<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    with_formatter(value, formatter(b",", b":", true, None))
}

/// Python `json.dump(indent=2)`, ASCII-escaped, no trailing newline (MPP `FileStore`).
pub fn python_indented<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    with_formatter(value, formatter(b",", b": ", true, Some(2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flavours() {
        let v = json!({"a": 1, "name": "USD\u{20ae}0", "l": [1, "x"], "e": {}, "z": [], "ctl": "\u{7f}\n\u{1}", "emoji": "\u{1F600}"});
        assert_eq!(
            String::from_utf8(compact(&v).unwrap()).unwrap(),
            "{\"a\":1,\"name\":\"USD\u{20ae}0\",\"l\":[1,\"x\"],\"e\":{},\"z\":[],\"ctl\":\"\u{7f}\\n\\u0001\",\"emoji\":\"\u{1F600}\"}"
        );
        assert_eq!(
            String::from_utf8(python(&v).unwrap()).unwrap(),
            r#"{"a": 1, "name": "USD\u20ae0", "l": [1, "x"], "e": {}, "z": [], "ctl": "\u007f\n\u0001", "emoji": "\ud83d\ude00"}"#
        );
        assert_eq!(
            String::from_utf8(compact_ascii(&v).unwrap()).unwrap(),
            r#"{"a":1,"name":"USD\u20ae0","l":[1,"x"],"e":{},"z":[],"ctl":"\u007f\n\u0001","emoji":"\ud83d\ude00"}"#
        );
        assert_eq!(
            String::from_utf8(python_indented(&json!({"a": [1, {"b": 2}], "c": {}})).unwrap()).unwrap(),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": {}\n}"
        );
    }
}
