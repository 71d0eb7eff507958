//! Route keys of every route table — x402's, MPP's and the router's (wire facts §4.1): `"GET /weather/*"`, `"/users/:id"`,
//! `"POST /items/[id]"`, `"*"`.
//!
//! A key is `"<VERB> <path>"` (verb upper-cased) or just `"<path>"` (any verb). A `GET` key also
//! covers `HEAD` (axum's `get` serves `HEAD` with the same handler). The path becomes an anchored,
//! case-insensitive regex: literal text escaped, `*` → `.*?` (may span `/`), `[name]` and `:name`
//! → one segment `[^/]+`. A key's path is normalised when it is added (repeated `/` collapsed, a
//! trailing `/` dropped); a key that could never match a request (`%`, `?`, `#` in its path) is
//! refused with a [`RouteKeyError`]. Routes are tried in insertion order; the first match wins.
//!
//! Request paths are matched with [`find_route`], on the raw path the web framework routes on:
//! it is split on `/` *before* each segment is percent-decoded (once), so a `%2F` inside a
//! segment stays inside that segment, as it does for axum and actix-web. To fail closed, a
//! request is protected when any of these forms of its path matches: the segment-decoded path,
//! the same without `;parameters`, both with `.`/`..` segments resolved, and the fully decoded
//! [`normalize_path`].

use regex::Regex;
use std::borrow::Cow;
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

/// A route key that cannot be compiled, or that could never match a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid route key `{key}`: {reason}")]
#[non_exhaustive]
pub struct RouteKeyError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: RouteKeyReason,
}

/// Why a route key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteKeyReason {
    /// The key is empty.
    #[error("empty key")]
    Empty,
    /// The verb is not an HTTP method.
    #[error("`{0}` is not an HTTP method")]
    Method(String),
    /// The path does not start with `/` (and is not `*`).
    #[error("the path must start with `/` (or be `*`)")]
    NotAbsolute,
    /// A `[name]` parameter is unclosed or its name is not a word.
    #[error("{0}")]
    Parameter(String),
    /// The path contains a character no request path is matched with (`%`: requests are
    /// matched percent-decoded; `?`, `#`: the query and fragment are not part of the path), so
    /// the route would silently never be protected.
    #[error("the path contains `{0}`, which a request path is never matched with: the route would never be protected")]
    Unmatchable(char),
    /// The regex could not be built.
    #[error("{0}")]
    Regex(String),
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
        let err = |reason: RouteKeyReason| RouteKeyError { key: key.to_owned(), reason };
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(err(RouteKeyReason::Empty));
        }
        let (verb, path) = match trimmed.split_once(char::is_whitespace) {
            Some((v, p)) => (Some(v.to_ascii_uppercase()), p.trim()),
            None => (None, trimmed),
        };
        if let Some(v) = &verb
            && (!v.bytes().all(|b| b.is_ascii_alphabetic()) && v != "*")
        {
            return Err(err(RouteKeyReason::Method(v.clone())));
        }
        let verb = verb.filter(|v| v != "*");
        if !(path.starts_with('/') || path == "*") {
            return Err(err(RouteKeyReason::NotAbsolute));
        }
        if let Some(c) = path.chars().find(|c| matches!(c, '%' | '?' | '#')) {
            return Err(err(RouteKeyReason::Unmatchable(c)));
        }
        let path = normalize_key_path(path);
        let source = pattern_source(&path).map_err(|e| err(RouteKeyReason::Parameter(e)))?;
        let regex = regex::RegexBuilder::new(&source)
            .case_insensitive(true)
            .build()
            .map_err(|e| err(RouteKeyReason::Regex(e.to_string())))?;
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

    /// True when `method` and the already-normalised `path` match. A `GET` key also matches
    /// `HEAD`. Match request paths with [`find_route`], which also covers the other forms of a
    /// raw path a framework may route on.
    pub fn matches(&self, method: &str, normalized_path: &str) -> bool {
        self.matches_method(method) && self.regex.is_match(normalized_path)
    }

    fn matches_method(&self, method: &str) -> bool {
        self.verb
            .as_deref()
            .is_none_or(|v| v.eq_ignore_ascii_case(method) || (v == "GET" && method.eq_ignore_ascii_case("HEAD")))
    }
}

/// A key's path as requests are matched: repeated `/` collapsed, a trailing `/` dropped.
fn normalize_key_path(path: &str) -> Cow<'_, str> {
    if !path.contains("//") && (path.len() <= 1 || !path.ends_with('/')) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    while out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    Cow::Owned(out)
}

/// The first route (in order) whose key matches `method` and the raw request path `raw_path`
/// (as the framework received it: `uri.path()`, optionally with `?query`).
///
/// The path is matched the way axum and actix-web route: split on `/` first, then each segment
/// percent-decoded once (a decoded `/` stays inside its segment, written `%2F`). To fail closed
/// whatever a framework (or a proxy in front of it) does with unusual paths, a route matches
/// when any of [`request_path_forms`] matches it.
pub fn find_route<'r, T>(routes: &'r [(RoutePattern, T)], method: &str, raw_path: &str) -> Option<&'r T> {
    if routes.is_empty() {
        return None;
    }
    let end = raw_path.find(['?', '#']).unwrap_or(raw_path.len());
    let path = &raw_path[..end];
    if is_plain(path) {
        return routes.iter().find(|(p, _)| p.matches(method, path)).map(|(_, t)| t);
    }
    let forms = request_path_forms(path);
    routes.iter().find(|(p, _)| forms.iter().any(|f| p.matches(method, f))).map(|(_, t)| t)
}

/// True when the path has a single form: absolute, nothing encoded, no `;`, no empty or dot
/// segment, no trailing `/` (except the root).
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['%', ';', '\\'])
        && !path.contains("//")
        && (path.len() == 1 || !path.ends_with('/'))
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// The forms of a raw request path (query and fragment already removed, or removed here) that
/// route keys are matched against, without duplicates:
///
/// 1. split on `/`, empty segments dropped, each segment percent-decoded once with a decoded
///    `/` kept as `%2F` (what axum and actix-web route on; `%252F` becomes `%2F`, never `/`);
/// 2. the same with each segment's `;parameters` removed;
/// 3. and 4. forms 1 and 2 with `.` and `..` segments resolved;
/// 5. the whole path percent-decoded ([`normalize_path`]).
pub fn request_path_forms(raw_path: &str) -> Vec<String> {
    let end = raw_path.find(['?', '#']).unwrap_or(raw_path.len());
    let path = &raw_path[..end];
    let decode = |segment: &str| -> String {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if decoded.contains('/') { decoded.replace('/', "%2F") } else { decoded.into_owned() }
    };
    let raw_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let segmented: Vec<String> = raw_segments.iter().map(|s| decode(s)).collect();
    let unparameterised: Vec<String> = raw_segments
        .iter()
        .map(|s| decode(s.split(';').next().unwrap_or_default()))
        .filter(|s| !s.is_empty())
        .collect();
    let mut forms: Vec<String> = Vec::with_capacity(5);
    let mut push = |form: String| {
        if !forms.contains(&form) {
            forms.push(form);
        }
    };
    push(join_segments(&segmented));
    push(join_segments(&unparameterised));
    push(join_segments(&resolve_dots(&segmented)));
    push(join_segments(&resolve_dots(&unparameterised)));
    push(normalize_path(path));
    forms
}

fn join_segments<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::with_capacity(segments.iter().map(|s| s.as_ref().len() + 1).sum::<usize>().max(1));
    for s in segments {
        out.push('/');
        out.push_str(s.as_ref());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn resolve_dots(segments: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for s in segments {
        match s.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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

    fn table(keys: &[&str]) -> Vec<(RoutePattern, usize)> {
        keys.iter().enumerate().map(|(i, k)| (RoutePattern::parse(k).unwrap(), i)).collect()
    }

    #[test]
    fn get_covers_head() {
        let t = table(&["GET /quote"]);
        assert_eq!(find_route(&t, "HEAD", "/quote"), Some(&0));
        assert_eq!(find_route(&t, "head", "/quote"), Some(&0));
        assert_eq!(find_route(&t, "POST", "/quote"), None);
        assert_eq!(find_route(&table(&["POST /q"]), "HEAD", "/q"), None);
    }

    #[test]
    fn encoded_slashes_stay_in_their_segment() {
        let t = table(&["GET /quote/:pair", "GET /files/*"]);
        for path in [
            "/quote/BTC%2FUSD",
            "/quote/BTC%2fUSD",
            "/quote/BTC%252FUSD",
            "/QUOTE/btc",
            "/quote//BTC",
            "/quote/BTC/",
            "/quote/BTC;x=1",
            "/quote;x=1/BTC",
            "/quote/BTC?x=1/2",
            "/q%75ote/BTC",
            "/x/../quote/BTC",
        ] {
            assert_eq!(find_route(&t, "GET", path), Some(&0), "{path}");
        }
        assert_eq!(find_route(&t, "GET", "/files%2Fsecret"), Some(&1), "decoded form, fail closed");
        assert_eq!(find_route(&t, "GET", "/quote/a/b"), None);
        assert_eq!(find_route(&t, "GET", "/other"), None);
        assert!(request_path_forms("/quote/BTC%252FUSD").iter().all(|f| !f.contains("BTC/USD")), "decoded once");
    }

    #[test]
    fn unmatchable_keys_are_normalised_or_refused() {
        let t = table(&["GET /weather/", "GET //a//b"]);
        assert_eq!(find_route(&t, "GET", "/weather"), Some(&0));
        assert_eq!(find_route(&t, "GET", "/weather/"), Some(&0));
        assert_eq!(find_route(&t, "GET", "/a/b"), Some(&1));
        for (bad, c) in [("GET /caf%C3%A9", '%'), ("GET /a?b=1", '?'), ("/a#f", '#')] {
            let e = RoutePattern::parse(bad).unwrap_err();
            assert_eq!(e.reason, RouteKeyReason::Unmatchable(c), "{bad}");
        }
    }
}
