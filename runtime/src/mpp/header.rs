//! `WWW-Authenticate: Payment …` parsing (wire facts §8.3) and the quoted-string helpers.
//!
//! The parser follows the RFC 9110 §11 challenge grammar tolerantly: several challenges in
//! one header line (comma-separated, each starting with its scheme token) and across several
//! lines; other schemes (`Bearer realm="x"`, `Negotiate abc==`) are skipped; the scheme token
//! is case-insensitive; parameter names are matched case-insensitively (pympp ≥ 0.15
//! lower-cases them), values are tokens or quoted strings with backslash escapes, and their
//! order is free.

use super::echo::{ChallengeEcho, challenge_hmac_input, id_matches};
use super::encoding::b64url_decode;
use super::error::{HeaderError, MppError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The scheme name.
pub const PAYMENT_SCHEME: &str = "Payment";

/// Whether an `Authorization` value carries an MPP credential: one of its comma-separated
/// credentials uses the `Payment` scheme (case-insensitive). The one predicate of "this request
/// pays with MPP", used by the coordinator and the router.
pub fn carries_credential(authorization: &str) -> bool {
    authorization.split(',').any(|part| {
        part.trim_start().get(..PAYMENT_SCHEME.len()).is_some_and(|s| s.eq_ignore_ascii_case(PAYMENT_SCHEME))
    })
}
/// Largest encoded `request` parameter decoded (16 KiB).
pub const MAX_REQUEST_B64_BYTES: usize = 16 * 1024;
/// Most `Payment` challenges parsed from one header value.
pub const MAX_CHALLENGES_PER_HEADER: usize = 16;

/// A `Payment` challenge read from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedChallenge {
    /// Challenge id.
    pub id: String,
    /// Realm.
    pub realm: String,
    /// Payment method.
    pub method: String,
    /// Intent.
    pub intent: String,
    /// The `request` parameter exactly as received (a credential echoes it verbatim).
    pub request_b64: String,
    /// The decoded request object.
    pub request: Map<String, Value>,
    /// Expiry, as received.
    pub expires: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Body digest.
    pub digest: Option<String>,
    /// The `opaque` parameter exactly as received.
    pub opaque_b64: Option<String>,
    /// The decoded opaque map.
    pub opaque: Option<BTreeMap<String, String>>,
}

impl ParsedChallenge {
    /// The echo to put in a credential (fields verbatim; no `description`, as pympp 0.8.2
    /// expects).
    pub fn to_echo(&self) -> ChallengeEcho {
        ChallengeEcho {
            id: self.id.clone(),
            realm: self.realm.clone(),
            method: self.method.clone(),
            intent: self.intent.clone(),
            request: self.request_b64.clone(),
            expires: self.expires.clone(),
            digest: self.digest.clone(),
            opaque: self.opaque_b64.clone(),
            description: None,
        }
    }

    /// Whether the id is the HMAC of the received fields under `secret_key` (constant-time;
    /// the request and opaque strings are used as received).
    pub fn verify_id(&self, secret_key: &str) -> bool {
        let input = challenge_hmac_input(
            &self.realm,
            &self.method,
            &self.intent,
            &self.request_b64,
            self.expires.as_deref(),
            self.digest.as_deref(),
            self.opaque_b64.as_deref(),
        );
        id_matches(secret_key, &input, &self.id)
    }
}

/// Parses every `Payment` challenge from the `WWW-Authenticate` header values (one slice entry
/// per header line), in order. Other schemes are skipped.
///
/// Errors: grammar violations, a duplicate parameter, a missing required parameter
/// (`id`, `realm`, `method`, `intent`, `request`), a `request` over
/// [`MAX_REQUEST_B64_BYTES`] or not decoding to a JSON object, an `opaque` not decoding to an
/// object of strings, and more than [`MAX_CHALLENGES_PER_HEADER`] `Payment` challenges in one
/// value.
pub fn parse_www_authenticate(header_values: &[&str]) -> Result<Vec<ParsedChallenge>, MppError> {
    let mut out = Vec::new();
    for value in header_values {
        let raw = parse_challenges(value)?;
        let payment: Vec<RawChallenge> =
            raw.into_iter().filter(|c| c.scheme.eq_ignore_ascii_case(PAYMENT_SCHEME)).collect();
        if payment.len() > MAX_CHALLENGES_PER_HEADER {
            return Err(HeaderError::TooManyChallenges { max: MAX_CHALLENGES_PER_HEADER }.into());
        }
        for c in payment {
            out.push(to_parsed(c)?);
        }
    }
    Ok(out)
}

fn to_parsed(c: RawChallenge) -> Result<ParsedChallenge, MppError> {
    if c.token68.is_some() {
        return Err(
            HeaderError::Syntax { at: c.at, reason: "a Payment challenge takes auth-params, not a token" }.into()
        );
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in c.params {
        let key = k.to_ascii_lowercase();
        if params.contains_key(&key) {
            return Err(HeaderError::DuplicateParam(key).into());
        }
        params.insert(key, v);
    }
    let mut take = |name: &str| params.remove(name);
    let required = |v: Option<String>, name: &str| v.ok_or_else(|| HeaderError::MissingField(name.to_owned()));
    let id = required(take("id"), "id")?;
    let realm = required(take("realm"), "realm")?;
    let method = required(take("method"), "method")?;
    let intent = required(take("intent"), "intent")?;
    let request_b64 = required(take("request"), "request")?;
    if request_b64.len() > MAX_REQUEST_B64_BYTES {
        return Err(
            HeaderError::TooLarge { what: "request", len: request_b64.len(), max: MAX_REQUEST_B64_BYTES }.into()
        );
    }
    let request = decode_json_object(&request_b64, "request")?;
    let opaque_b64 = take("opaque");
    let opaque = match &opaque_b64 {
        Some(o) => Some(decode_string_map(o, "opaque")?),
        None => None,
    };
    Ok(ParsedChallenge {
        id,
        realm,
        method,
        intent,
        request_b64,
        request,
        expires: take("expires"),
        description: take("description"),
        digest: take("digest"),
        opaque_b64,
        opaque,
    })
}

/// Decodes base64url JSON that must be an object.
pub(crate) fn decode_json_object(b64: &str, what: &'static str) -> Result<Map<String, Value>, HeaderError> {
    let bytes = b64url_decode(b64).map_err(|_| HeaderError::Base64 { what })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(HeaderError::WrongType { field: what.to_owned(), expected: "a JSON object" }),
        Err(e) => Err(HeaderError::Json { what, reason: e.to_string() }),
    }
}

/// Decodes base64url JSON that must be an object of strings.
pub(crate) fn decode_string_map(b64: &str, what: &'static str) -> Result<BTreeMap<String, String>, HeaderError> {
    decode_json_object(b64, what)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(HeaderError::WrongType { field: format!("{what}.{k}"), expected: "a string" }),
        })
        .collect()
}

/// Appends `name="value"` with quoted-string escaping; CR/LF is an error.
pub(crate) fn write_param(out: &mut String, name: &str, value: &str) -> Result<(), HeaderError> {
    if value.contains(['\r', '\n']) {
        return Err(HeaderError::InvalidParamValue(name.to_owned()));
    }
    out.reserve(name.len() + value.len() + 3);
    out.push_str(name);
    out.push_str("=\"");
    // Copy the runs between characters that need a backslash (usually the whole value).
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"']) {
        out.push_str(&rest[..at]);
        out.push('\\');
        out.push_str(&rest[at..=at]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
    Ok(())
}

/// One challenge of any scheme, as written.
#[derive(Debug)]
struct RawChallenge {
    scheme: String,
    at: usize,
    token68: Option<String>,
    params: Vec<(String, String)>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ows(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(is_ows) {
            self.i += 1;
        }
        self.i - start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        // Every predicate stops on an ASCII byte (or the end), so the slice is on char bounds.
        self.s.get(start..self.i).unwrap_or("")
    }

    fn err(&self, reason: &'static str) -> HeaderError {
        HeaderError::Syntax { at: self.i, reason }
    }

    /// `"…"` with backslash escapes; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, HeaderError> {
        self.i += 1;
        let mut out = String::new();
        let mut chars = self.s.get(self.i..).unwrap_or("").char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => {
                    self.i += off + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e)) if e != '\r' && e != '\n' => out.push(e),
                    _ => break,
                },
                '\r' | '\n' => {
                    self.i += off;
                    return Err(self.err("CR or LF in a quoted string"));
                }
                c => out.push(c),
            }
        }
        self.i = self.b.len();
        Err(self.err("unterminated quoted string"))
    }

    /// After the scheme token and whitespace: is a token68 (`abc==`) next, rather than an
    /// auth-param? Consumes it when so.
    fn token68(&mut self) -> Option<String> {
        let start = self.i;
        let t = self.take_while(is_token68_char).to_owned();
        let eq = self.take_while(|b| b == b'=').len();
        let end = self.i;
        self.skip_ows();
        let ends = matches!(self.peek(), None | Some(b','));
        if !t.is_empty() && ends {
            self.i = end;
            let mut t = t;
            t.push_str(&"=".repeat(eq));
            Some(t)
        } else {
            self.i = start;
            None
        }
    }
}

/// Splits a header value into challenges.
fn parse_challenges(value: &str) -> Result<Vec<RawChallenge>, HeaderError> {
    let mut c = Cursor { s: value, b: value.as_bytes(), i: 0 };
    let mut out: Vec<RawChallenge> = Vec::new();
    loop {
        // Separators: whitespace and (empty) list elements.
        while c.peek().is_some_and(|b| is_ows(b) || b == b',') {
            c.i += 1;
        }
        let Some(b) = c.peek() else { break };
        if !is_tchar(b) {
            return Err(c.err("expected a scheme or parameter name"));
        }
        let at = c.i;
        let tok = c.take_while(is_tchar).to_owned();
        let after_tok = c.i;
        c.skip_ows();
        if c.peek() == Some(b'=') && !out.is_empty() {
            // auth-param of the current challenge.
            c.i += 1;
            c.skip_ows();
            let v = match c.peek() {
                Some(b'"') => c.quoted()?,
                _ => {
                    let v = c.take_while(|b| !is_ows(b) && b != b',' && b != b'"');
                    if v.is_empty() {
                        return Err(c.err("missing parameter value"));
                    }
                    v.to_owned()
                }
            };
            c.skip_ows();
            if !matches!(c.peek(), None | Some(b',')) {
                return Err(c.err("expected a comma after a parameter"));
            }
            if let Some(cur) = out.last_mut() {
                if cur.token68.is_some() {
                    return Err(HeaderError::Syntax { at, reason: "parameter after a token68" });
                }
                cur.params.push((tok, v));
            }
        } else if c.peek() == Some(b'=') {
            return Err(HeaderError::Syntax { at, reason: "parameter before any scheme" });
        } else {
            // A new challenge: scheme, then optionally a token68 or the first auth-param.
            c.i = after_tok;
            let token68 = if c.skip_ows() > 0 { c.token68() } else { None };
            c.skip_ows();
            if !matches!(c.peek(), None | Some(b',')) && token68.is_some() {
                return Err(c.err("expected a comma after a token68"));
            }
            if token68.is_none() && !matches!(c.peek(), None | Some(b',')) && !c.peek().is_some_and(is_tchar) {
                return Err(c.err("expected a parameter after the scheme"));
            }
            out.push(RawChallenge { scheme: tok, at, token68, params: Vec::new() });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::encoding::b64url_encode;

    const REQ: &str = "eyJhbW91bnQiOiIxMCJ9"; // {"amount":"10"}

    fn one(id: &str) -> String {
        format!(r#"Payment id="{id}", realm="r", method="evm", intent="charge", request="{REQ}""#)
    }

    #[test]
    fn several_challenges_in_one_line_and_across_lines() {
        let line = format!("{}, Bearer realm=\"x\", error=\"invalid_token\", {}", one("a"), one("b"));
        let parsed = parse_www_authenticate(&[&line, &one("c"), "Basic realm=\"y\""]).unwrap();
        let ids: Vec<&str> = parsed.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(parsed[0].request_b64, REQ);
        assert_eq!(parsed[0].request.get("amount"), Some(&Value::from("10")));
    }

    #[test]
    fn other_schemes_and_token68_are_skipped() {
        let line = format!("Negotiate abc==, {} ,Bearer, Basic dXNlcjpwYXNz", one("z"));
        let parsed = parse_www_authenticate(&[&line]).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].id, "z");
        assert!(parse_www_authenticate(&["Bearer realm=\"x\""]).unwrap().is_empty());
        assert!(parse_www_authenticate(&[""]).unwrap().is_empty());
    }

    #[test]
    fn scheme_case_tokens_escapes_and_order() {
        let h = format!(
            "payment  intent=charge,request={REQ} , description=\"say \\\"hi\\\" \\\\o/\", ID=\"i\\d\", realm = \"r\", method=evm, expires=\"2026-03-30T10:05:00Z\""
        );
        let p = &parse_www_authenticate(&[&h]).unwrap()[0];
        assert_eq!(p.id, "id");
        assert_eq!((p.realm.as_str(), p.method.as_str(), p.intent.as_str()), ("r", "evm", "charge"));
        assert_eq!(p.description.as_deref(), Some("say \"hi\" \\o/"));
        assert_eq!(p.expires.as_deref(), Some("2026-03-30T10:05:00Z"));
        assert_eq!(PAYMENT_SCHEME, "Payment");
        let p = &parse_www_authenticate(&[&one("x").replacen("Payment", "PAYMENT", 1)]).unwrap()[0];
        assert_eq!(p.id, "x");
    }

    #[test]
    fn round_trip_with_quoting() {
        let mut s = String::new();
        write_param(&mut s, "description", "a \"b\" \\ c").unwrap();
        assert_eq!(s, r#"description="a \"b\" \\ c""#);
        let h = format!("{}, {s}", one("q"));
        assert_eq!(parse_www_authenticate(&[&h]).unwrap()[0].description.as_deref(), Some("a \"b\" \\ c"));
        assert_eq!(write_param(&mut s, "x", "a\rb"), Err(HeaderError::InvalidParamValue("x".into())));
    }

    #[test]
    fn duplicate_and_missing_rejected() {
        let dup = format!("{}, realm=\"again\"", one("a"));
        assert_eq!(parse_www_authenticate(&[&dup]), Err(MppError::Header(HeaderError::DuplicateParam("realm".into()))));
        let dup_case = format!("{}, Realm=\"again\"", one("a"));
        assert!(matches!(parse_www_authenticate(&[&dup_case]), Err(MppError::Header(HeaderError::DuplicateParam(_)))));
        let missing = one("a").replace(", intent=\"charge\"", "");
        assert_eq!(
            parse_www_authenticate(&[&missing]),
            Err(MppError::Header(HeaderError::MissingField("intent".into())))
        );
    }

    #[test]
    fn bad_request_parameter() {
        let arr = b64url_encode("[1]");
        let h = one("a").replace(REQ, &arr);
        assert!(matches!(parse_www_authenticate(&[&h]), Err(MppError::Header(HeaderError::WrongType { .. }))));
        let h = one("a").replace(REQ, "!!!");
        assert!(matches!(parse_www_authenticate(&[&h]), Err(MppError::Header(HeaderError::Base64 { .. }))));
        let h = one("a").replace(REQ, &b64url_encode("{nope"));
        assert!(matches!(parse_www_authenticate(&[&h]), Err(MppError::Header(HeaderError::Json { .. }))));
        let big = b64url_encode(format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_REQUEST_B64_BYTES)));
        let h = one("a").replace(REQ, &big);
        assert!(matches!(
            parse_www_authenticate(&[&h]),
            Err(MppError::Header(HeaderError::TooLarge { what: "request", .. }))
        ));
        let h = format!("{}, opaque=\"{}\"", one("a"), b64url_encode("{\"n\":1}"));
        assert!(matches!(parse_www_authenticate(&[&h]), Err(MppError::Header(HeaderError::WrongType { .. }))));
    }

    #[test]
    fn too_many_challenges() {
        let sixteen = vec![one("a"); MAX_CHALLENGES_PER_HEADER].join(", ");
        assert_eq!(parse_www_authenticate(&[&sixteen]).unwrap().len(), 16);
        let seventeen = vec![one("a"); MAX_CHALLENGES_PER_HEADER + 1].join(", ");
        assert_eq!(
            parse_www_authenticate(&[&seventeen]),
            Err(MppError::Header(HeaderError::TooManyChallenges { max: 16 }))
        );
        // The limit is per header value.
        assert_eq!(parse_www_authenticate(&[&sixteen, &sixteen]).unwrap().len(), 32);
    }

    #[test]
    fn grammar_errors() {
        for bad in [
            "Payment id=\"unterminated",
            "Payment id=\"a\" realm=\"b\"",
            "id=\"a\"",
            "Payment id=",
            "Payment id=\"a\nb\"",
            "Payment @",
            "Negotiate abc== def",
        ] {
            assert!(
                matches!(parse_www_authenticate(&[bad]), Err(MppError::Header(HeaderError::Syntax { .. }))),
                "{bad:?} → {:?}",
                parse_www_authenticate(&[bad])
            );
        }
        assert!(matches!(
            parse_www_authenticate(&["Payment abc=="]),
            Err(MppError::Header(HeaderError::Syntax { .. }))
        ));
    }

    #[test]
    fn verify_id_of_parsed() {
        let c = crate::mpp::Challenge::new(
            "s",
            "r",
            "evm",
            "charge",
            serde_json::from_str(r#"{"amount":"10"}"#).unwrap(),
            Some("2026-03-30T10:05:00Z".into()),
            None,
            Some("sha-256=:x:".into()),
            Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        );
        let p = &parse_www_authenticate(&[&c.to_www_authenticate().unwrap()]).unwrap()[0];
        assert!(p.verify_id("s"));
        assert!(!p.verify_id("t"));
        assert_eq!(p.opaque.as_ref().and_then(|o| o.get("k")).map(String::as_str), Some("v"));
        assert_eq!(p.to_echo(), c.to_echo());
    }
}
