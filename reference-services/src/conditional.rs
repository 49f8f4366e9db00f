//! Entity tags and the two conditional headers the contract uses (RFC 9110 §8.8.3, §13.1):
//! - `If-None-Match` on a product read: weak comparison, `*` or a list; a match is a 304.
//! - `If-Match` on a cart write: strong comparison (a weak tag never matches), `*` or a list;
//!   no match is a 412.
//!
//! A header that does not parse as `*` or a list of entity tags matches nothing.

use axum::http::{HeaderMap, HeaderName};

/// One entity tag from a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntityTag<'a> {
    /// Whether it was sent as `W/"..."`; weak tags only count in weak comparison.
    weak: bool,
    /// The characters between the quotes.
    opaque: &'a str,
}

/// What a conditional header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Condition<'a> {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags.
    Tags(Vec<EntityTag<'a>>),
}

/// Parses `*` or `#entity-tag` (commas inside quotes belong to the tag); `None` if malformed.
fn parse(value: &str) -> Option<Condition<'_>> {
    let trimmed = value.trim_matches([' ', '\t']);
    if trimmed == "*" {
        return Some(Condition::Any);
    }
    let mut tags = Vec::new();
    let mut rest = trimmed;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &inner[..end];
        // etagc = %x21 / %x23-7E / obs-text
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = &inner[end + 1..];
        let after = rest.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with(',')) {
            return None;
        }
        rest = after;
    }
    if tags.is_empty() {
        None
    } else {
        Some(Condition::Tags(tags))
    }
}

/// The tags of every line of a header, joined as one list (RFC 9110 §5.3); `None` if absent.
fn header_values(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values)
    }
}

/// Evaluates a header against the current entity tag with the given comparison; `None` when the
/// header is absent.
fn evaluate(headers: &HeaderMap, name: &HeaderName, current: &str, strong: bool) -> Option<bool> {
    let values = header_values(headers, name)?;
    let current = parse(current).and_then(|condition| match condition {
        Condition::Tags(mut tags) if tags.len() == 1 => tags.pop(),
        _ => None,
    });
    let Some(current) = current else {
        return Some(false);
    };
    let matched = values.iter().any(|value| match parse(value) {
        Some(Condition::Any) => true,
        Some(Condition::Tags(tags)) => tags.iter().any(|tag| {
            let comparable = !strong || (!tag.weak && !current.weak);
            comparable && tag.opaque == current.opaque
        }),
        None => false,
    });
    Some(matched)
}

/// Whether `If-None-Match` matches `current` (weak comparison), i.e. the answer is a 304.
/// Absent or malformed: no match.
pub(crate) fn if_none_match(headers: &HeaderMap, current: &str) -> bool {
    evaluate(headers, &axum::http::header::IF_NONE_MATCH, current, false).unwrap_or(false)
}

/// Whether `If-Match` lets a write go ahead: absent, `*` (the cart always exists), or a list with
/// a strong tag equal to `current`.
pub(crate) fn if_match(headers: &HeaderMap, current: &str) -> bool {
    evaluate(headers, &axum::http::header::IF_MATCH, current, true).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn with(name: HeaderName, values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name.clone(), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn parses_lists_stars_and_weak_tags() {
        assert_eq!(parse("*"), Some(Condition::Any));
        assert_eq!(
            parse(r#"W/"a", "b,c""#),
            Some(Condition::Tags(vec![
                EntityTag {
                    weak: true,
                    opaque: "a"
                },
                EntityTag {
                    weak: false,
                    opaque: "b,c"
                },
            ]))
        );
        assert_eq!(parse("abc"), None);
        assert_eq!(parse(r#""a" x"#), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let current = r#""abc""#;
        assert!(if_none_match(
            &with(header::IF_NONE_MATCH, &[r#""abc""#]),
            current
        ));
        assert!(if_none_match(
            &with(header::IF_NONE_MATCH, &[r#"W/"abc""#]),
            current
        ));
        assert!(if_none_match(&with(header::IF_NONE_MATCH, &["*"]), current));
        assert!(if_none_match(
            &with(header::IF_NONE_MATCH, &[r#""x", "abc""#]),
            current
        ));
        assert!(if_none_match(
            &with(header::IF_NONE_MATCH, &[r#""x""#, r#""abc""#]),
            current
        ));
        assert!(!if_none_match(
            &with(header::IF_NONE_MATCH, &[r#""x""#]),
            current
        ));
        assert!(!if_none_match(&HeaderMap::new(), current));
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let current = r#""3""#;
        assert!(if_match(&HeaderMap::new(), current));
        assert!(if_match(&with(header::IF_MATCH, &[r#""3""#]), current));
        assert!(if_match(&with(header::IF_MATCH, &["*"]), current));
        assert!(if_match(&with(header::IF_MATCH, &[r#""1", "3""#]), current));
        assert!(!if_match(&with(header::IF_MATCH, &[r#"W/"3""#]), current));
        assert!(!if_match(&with(header::IF_MATCH, &[r#""4""#]), current));
        assert!(!if_match(&with(header::IF_MATCH, &["3"]), current));
    }
}
