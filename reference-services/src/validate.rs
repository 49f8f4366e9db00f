//! The contract's value rules, in one place: the id pattern, integers (where `26.0` is the integer
//! 26, in JSON bodies and query strings alike), string lengths in code points, and a small reader
//! of JSON objects that names the offending field (as a JSON pointer) when a rule is broken.
//!
//! Unknown fields are never looked at, which is how the services ignore them.

use serde_json::{Map, Value};

use crate::problem::ApiError;

/// Largest length of an id (`^[A-Za-z0-9_-]{1,64}$`).
const MAX_ID_LEN: usize = 64;

/// Whether `s` matches the contract's id pattern `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn is_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks an id, naming `what` in the error.
pub(crate) fn id(what: &str, s: &str) -> Result<(), ApiError> {
    if is_id(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} must match ^[A-Za-z0-9_-]{{1,64}}$"
        )))
    }
}

/// Whether `s` is `count` upper-case ASCII letters (currency and country codes).
pub(crate) fn is_upper_code(s: &str, count: usize) -> bool {
    s.len() == count && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether `s` matches `^[!-~]{1,255}$` (an `Idempotency-Key`).
pub(crate) fn is_idempotency_key(s: &str) -> bool {
    (1..=255).contains(&s.len()) && s.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// The integer a JSON number stands for, if it has no fractional part and fits in an `i64`
/// (`26`, `26.0` and `2.6e1` are all 26).
pub(crate) fn json_integer(value: &Value) -> Option<i64> {
    let number = value.as_number()?;
    if let Some(i) = number.as_i64() {
        return Some(i);
    }
    if number.is_u64() {
        // Larger than i64::MAX: beyond every maximum in the contract.
        return None;
    }
    let f = number.as_f64()?;
    // 2^63 is exactly representable; every integral f64 strictly inside (-2^63, 2^63) fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.fract() == 0.0 && f > -LIMIT && f < LIMIT {
        // Integral and inside the i64 range (checked just above): the cast is exact.
        Some(f as i64)
    } else {
        None
    }
}

/// The integer a query-string value stands for, read as a JSON number (so `26` and `26.0` are
/// both 26, while `abc`, `+5`, ` 5` and `0x10` are not integers).
pub(crate) fn query_integer(s: &str) -> Option<i64> {
    if s.is_empty() || s.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let value: Value = serde_json::from_str(s).ok()?;
    json_integer(&value)
}

/// The length of a string in Unicode code points, as the contract counts it.
pub(crate) fn code_points(s: &str) -> usize {
    s.chars().count()
}

/// A JSON object being checked against a schema, remembering where it sits in the body so
/// errors can name the field (`/lines/2/quantity`).
pub(crate) struct Fields<'a> {
    /// The object's members; only the ones the schema names are ever read.
    map: &'a Map<String, Value>,
    /// JSON pointer of the object within the request body ("" for the body itself).
    at: String,
}

impl<'a> Fields<'a> {
    /// Requires `value` (found at pointer `at`) to be an object.
    pub(crate) fn of(value: &'a Value, at: &str) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                at: at.to_owned(),
            }),
            _ => Err(ApiError::bad_request(format!(
                "{} must be a JSON object",
                display_pointer(at)
            ))),
        }
    }

    /// The pointer of a member, for error messages and nested readers.
    pub(crate) fn pointer(&self, name: &str) -> String {
        format!("{}/{}", self.at, name)
    }

    /// A member that must be present.
    pub(crate) fn required(&self, name: &str) -> Result<&'a Value, ApiError> {
        self.map
            .get(name)
            .ok_or_else(|| ApiError::bad_request(format!("{} is required", self.pointer(name))))
    }

    /// A member that may be absent.
    pub(crate) fn optional(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    /// Refuses members other than `allowed`, for the admin API's bodies, where a misspelt field
    /// must not pass for "change nothing" (the contract's own bodies ignore unknown fields).
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().find(|key| !allowed.contains(&key.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(ApiError::bad_request(format!(
                "{} is not a known field; expected {}",
                self.pointer(unknown),
                allowed.join(", ")
            ))),
        }
    }

    /// A required id.
    pub(crate) fn id(&self, name: &str) -> Result<String, ApiError> {
        let value = self.required(name)?;
        match value.as_str() {
            Some(s) if is_id(s) => Ok(s.to_owned()),
            _ => Err(ApiError::bad_request(format!(
                "{} must be a string matching ^[A-Za-z0-9_-]{{1,64}}$",
                self.pointer(name)
            ))),
        }
    }

    /// A required integer within `min..=max`.
    pub(crate) fn integer(&self, name: &str, min: i64, max: i64) -> Result<i64, ApiError> {
        let value = self.required(name)?;
        match json_integer(value) {
            Some(i) if (min..=max).contains(&i) => Ok(i),
            _ => Err(ApiError::bad_request(format!(
                "{} must be an integer from {min} to {max}",
                self.pointer(name)
            ))),
        }
    }

    /// An optional string (absent is `None`; present but not a string is an error).
    pub(crate) fn optional_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "{} must be a string",
                self.pointer(name)
            ))),
        }
    }
}

/// How a pointer reads in a message: the body itself is "the request body".
fn display_pointer(at: &str) -> String {
    if at.is_empty() {
        "the request body".to_owned()
    } else {
        at.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_pattern() {
        assert!(is_id("p-00001"));
        assert!(is_id(&"a".repeat(64)));
        assert!(!is_id(&"a".repeat(65)));
        assert!(!is_id(""));
        assert!(!is_id("p 1"));
        assert!(!is_id("é"));
    }

    #[test]
    fn integral_floats_are_integers() {
        assert_eq!(json_integer(&json!(26)), Some(26));
        assert_eq!(json_integer(&json!(26.0)), Some(26));
        assert_eq!(json_integer(&json!(26.5)), None);
        assert_eq!(json_integer(&json!(1e300)), None);
        assert_eq!(json_integer(&json!("26")), None);
        assert_eq!(json_integer(&json!(u64::MAX)), None);
    }

    #[test]
    fn query_integers_are_json_numbers() {
        assert_eq!(query_integer("26"), Some(26));
        assert_eq!(query_integer("26.0"), Some(26));
        assert_eq!(query_integer("2.6e1"), Some(26));
        assert_eq!(query_integer("abc"), None);
        assert_eq!(query_integer("+5"), None);
        assert_eq!(query_integer(" 5"), None);
        assert_eq!(query_integer(""), None);
        assert_eq!(query_integer("0x10"), None);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(is_idempotency_key("abc-123"));
        assert!(!is_idempotency_key(""));
        assert!(!is_idempotency_key("a b"));
        assert!(!is_idempotency_key(&"k".repeat(256)));
    }
}
