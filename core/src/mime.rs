//! Media types (`type/subtype`, optionally with `; parameters`), for `mime_type` literals.

/// Media types people mean when they write a bare word.
const SHORTHANDS: &[(&str, &str)] = &[
    ("json", "application/json"),
    ("html", "text/html"),
    ("text", "text/plain"),
    ("txt", "text/plain"),
    ("plain", "text/plain"),
    ("csv", "text/csv"),
    ("xml", "application/xml"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("octet-stream", "application/octet-stream"),
    ("binary", "application/octet-stream"),
];

/// RFC 6838 `restricted-name`: 1-127 characters, starting with a letter or digit.
fn restricted_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= 127
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

/// Checks a media type such as `"application/json"` or `"text/plain; charset=utf-8"`. The error
/// says what is wrong and, for a bare word like `"json"`, suggests the full media type.
pub fn check_media_type(text: &str) -> Result<(), String> {
    let essence = text.split(';').next().unwrap_or("").trim();
    if let Some((ty, subtype)) = essence.split_once('/')
        && restricted_name(ty)
        && restricted_name(subtype)
    {
        return Ok(());
    }
    let lower = essence.to_ascii_lowercase();
    Err(match SHORTHANDS.iter().find(|(word, _)| *word == lower) {
        Some((_, full)) => format!("`{text}` is not a media type; did you mean \"{full}\"?"),
        None => format!("`{text}` is not a media type; write it as type/subtype, like \"application/json\""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for good in ["application/json", "text/plain; charset=utf-8", "image/svg+xml", "application/vnd.api+json"] {
            assert_eq!(check_media_type(good), Ok(()), "{good}");
        }
        assert_eq!(
            check_media_type("json").unwrap_err(),
            "`json` is not a media type; did you mean \"application/json\"?"
        );
        for bad in ["", "/", "text/", "/json", "text json", "text/pl ain"] {
            assert!(check_media_type(bad).is_err(), "{bad:?}");
        }
    }
}
