//! Closed keyword sets with "did you mean" suggestions.

/// x402 schemes pay402 supports.
pub const X402_SCHEMES: &[&str] = &["exact", "aggr_deferred", "upto"];
/// The x402 scheme that charges up to an authorized maximum (`max`) instead of a fixed `price`.
pub const UPTO: &str = "upto";

/// Which money key an x402 `scheme` is priced with: `max` for [`UPTO`] (the buyer authorizes a
/// maximum and the seller settles what was used, up to it), `price` for every other scheme.
/// The `#[x402]` macro and the runtime's route builders follow this one rule.
pub fn x402_money_key(scheme: &str) -> &'static str {
    if scheme == UPTO { "max" } else { "price" }
}
/// MPP intents pay402 supports.
pub const MPP_INTENTS: &[&str] = &["charge", "session"];
/// The MPP intent that opens a payment channel (the only one a stream can be metered on).
pub const SESSION: &str = "session";

/// What one price of an MPP route pays for (`#[pay(per = ..)]`): a request (the default), or one
/// event of a metered Server-Sent Events stream.
pub const MPP_PER: &[&str] = &["request", "event"];
/// The `per` value that meters a route per event of a stream.
pub const PER_EVENT: &str = "event";

/// Checks that an MPP route's `per` fits its `intent`: a route priced per event is metered on
/// a payment channel, so `per = "event"` needs the [`SESSION`] intent (`intent` is the written
/// one, or `None` for the default, `charge`). The error says what to write. The `#[pay]` macro
/// follows this one rule.
pub fn check_per_intent(per: &str, intent: Option<&str>) -> Result<(), String> {
    if per != PER_EVENT || intent == Some(SESSION) {
        return Ok(());
    }
    let written = match intent {
        Some(other) => format!("intent = \"{other}\""),
        None => "the default intent, `charge`".to_owned(),
    };
    Err(format!(
        "per = \"event\" needs intent = \"session\", not {written}: a stream is metered per event on a payment \
         channel; add intent = \"session\" (or drop `per` to charge once per request)"
    ))
}

/// Levenshtein distance between two short ASCII-ish strings.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a distance of 3 (or a third of the word), if any.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Checks `word` against a closed set; the error message lists the set and a suggestion.
pub fn check_keyword(kind: &str, word: &str, candidates: &[&str]) -> Result<(), String> {
    if candidates.contains(&word) {
        return Ok(());
    }
    let list = candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    Err(match suggest(word, candidates) {
        Some(s) => format!("unknown {kind} `{word}`; expected one of {list} (did you mean `{s}`?)"),
        None => format!("unknown {kind} `{word}`; expected one of {list}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("exat", X402_SCHEMES), Some("exact"));
        assert_eq!(suggest("aggr-deferred", X402_SCHEMES), Some("aggr_deferred"));
        assert_eq!(suggest("sesion", MPP_INTENTS), Some("session"));
        assert_eq!(suggest("zzzzzzzz", MPP_INTENTS), None);
        assert!(check_keyword("scheme", "exact", X402_SCHEMES).is_ok());
        assert_eq!(
            check_keyword("scheme", "exat", X402_SCHEMES).unwrap_err(),
            "unknown scheme `exat`; expected one of `exact`, `aggr_deferred`, `upto` (did you mean `exact`?)"
        );
        assert_eq!(suggest("uptoo", X402_SCHEMES), Some("upto"));
        assert_eq!(suggest("events", MPP_PER), Some("event"));
        assert_eq!(
            (x402_money_key("upto"), x402_money_key("exact"), x402_money_key("aggr_deferred")),
            ("max", "price", "price")
        );
    }

    #[test]
    fn per_event_needs_a_session() {
        assert!(check_per_intent("event", Some("session")).is_ok());
        assert!(check_per_intent("request", None).is_ok());
        assert!(check_per_intent("request", Some("charge")).is_ok());
        let charge = check_per_intent("event", Some("charge")).unwrap_err();
        assert!(charge.starts_with("per = \"event\" needs intent = \"session\", not intent = \"charge\""), "{charge}");
        let default = check_per_intent("event", None).unwrap_err();
        assert!(default.contains("not the default intent, `charge`"), "{default}");
        assert!(default.contains("add intent = \"session\""), "{default}");
    }
}
