//! Route keys of the x402 route table (wire facts §4.1): `"GET /weather/*"`, `"/users/:id"`,
//! `"POST /items/[id]"`, `"*"`.
//!
//! A key is `"<VERB> <path>"` (verb upper-cased) or just `"<path>"` (any verb). The path becomes
//! an anchored, case-insensitive regex: literal text escaped, `*` → `.*?` (may span `/`),
//! `[name]` and `:name` → one segment `[^/]+`. Request paths are normalised before matching
//! ([`normalize_path`]). Routes are tried in insertion order; the first match wins.

use regex::Regex;
use std::fmt;

/// A compiled route key.
#[derive(Clone)]
pub struct RoutePattern {
    key: String,
    verb: Option<String>,
    source: String,
    regex: Regex,
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePattern").field("key", &self.key).field("regex", &self.source).finish()
    }
}

/// A route key that cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid route key `{key}`: {reason}")]
pub struct RouteKeyError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Translates a path pattern into the regex source Python builds (`^…$`).
fn pattern_source(path: &str) -> Result<String, String> {
    let mut out = String::from("^");
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                out.push_str(".*?");
                i += 1;
            }
            '[' => {
                let close = chars[i + 1..].iter().position(|&c| c == ']').ok_or("unclosed `[`")?;
                let name: String = chars[i + 1..i + 1 + close].iter().collect();
                if name.is_empty() || !name.chars().all(is_word) {
                    return Err(format!("`[{name}]` is not a parameter name"));
                }
                out.push_str("[^/]+");
                i += close + 2;
            }
            ':' if chars.get(i + 1).is_some_and(|c| is_word(*c)) => {
                i += 1;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                out.push_str("[^/]+");
            }
            _ => {
                out.push_str(&regex::escape(&c.to_string()));
                i += 1;
            }
        }
    }
    out.push('$');
    Ok(out)
}

impl RoutePattern {
    /// Compiles a route key.
    pub fn parse(key: &str) -> Result<Self, RouteKeyError> {
        let err = |reason: String| RouteKeyError { key: key.to_owned(), reason };
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(err("empty key".into()));
        }
        let (verb, path) = match trimmed.split_once(char::is_whitespace) {
            Some((v, p)) => (Some(v.to_ascii_uppercase()), p.trim()),
            None => (None, trimmed),
        };
        if let Some(v) = &verb
            && (!v.bytes().all(|b| b.is_ascii_alphabetic()) && v != "*")
        {
            return Err(err(format!("`{v}` is not an HTTP method")));
        }
        let verb = verb.filter(|v| v != "*");
        if !(path.starts_with('/') || path == "*") {
            return Err(err("the path must start with `/` (or be `*`)".into()));
        }
        let source = pattern_source(path).map_err(err)?;
        let regex = regex::RegexBuilder::new(&source).case_insensitive(true).build().map_err(|e| err(e.to_string()))?;
        Ok(Self { key: key.to_owned(), verb, source, regex })
    }

    /// The key as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The anchored regex source (`^/weather/.*?$`).
    pub fn regex_source(&self) -> &str {
        &self.source
    }

    /// True when `method` and the already-normalised `path` match.
    pub fn matches(&self, method: &str, normalized_path: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v.eq_ignore_ascii_case(method)) && self.regex.is_match(normalized_path)
    }
}

/// Normalises a request path: drops `?query` and `#fragment`, percent-decodes, collapses
/// repeated `/`, strips a trailing `/`; empty becomes `/`.
pub fn normalize_path(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let decoded = percent_encoding::percent_decode_str(&raw[..end]).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    while out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    if out.is_empty() || out == "/" { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = RoutePattern::parse("GET /weather/*").unwrap();
        assert!(p.matches("GET", "/weather/paris/today"));
        assert!(p.matches("get", "/WEATHER/x"));
        assert!(!p.matches("POST", "/weather/x"));
        let p = RoutePattern::parse("/users/:id").unwrap();
        assert!(p.matches("DELETE", "/users/42"));
        assert!(!p.matches("GET", "/users/42/x"));
        let p = RoutePattern::parse("POST /items/[id]/tags").unwrap();
        assert!(p.matches("POST", "/items/7/tags"));
        assert!(RoutePattern::parse("*").unwrap().matches("PUT", "/anything/at/all"));
        assert!(RoutePattern::parse("GET /a.b").unwrap().matches("GET", "/a.b"));
        assert!(!RoutePattern::parse("GET /a.b").unwrap().matches("GET", "/axb"));
        for bad in ["", "GET", "G3T /x", "/x/[", "GET x"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
