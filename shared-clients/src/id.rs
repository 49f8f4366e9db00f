//! Identifier newtypes: every id of the contract (product, category, order, user, partner).
//!
//! The contract promises that every id matches `^[A-Za-z0-9_-]{1,64}$`. An id can only be built
//! through that check ([`ProductId::parse`] and friends, `FromStr`, `TryFrom`, or deserialization),
//! so an id is always safe to put into a URL path segment, a query value or a header, and a value
//! the contract forbids is rejected where it enters (the gateway's input, or a downstream answer)
//! instead of travelling further. Ids are cheap to clone (a shared string), because they are used
//! as cache keys and copied into many answers.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::weigh::Weigh;

/// Longest id the contract allows.
const MAX_ID_LEN: usize = 64;

/// Whether `value` matches the contract's id pattern `^[A-Za-z0-9_-]{1,64}$`.
fn is_valid_id(value: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A string was not a valid id: empty, longer than 64 characters, or with a character outside
/// `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id: expected 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
pub struct InvalidId {
    /// Which kind of id was expected (`"product"`, `"user"`, …), so the message says what was wrong
    /// without echoing the (possibly hostile) input.
    kind: &'static str,
}

impl InvalidId {
    /// The kind of id that was expected, e.g. `"product"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Defines one validated id newtype with its conversions.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `value` against the contract's id pattern `^[A-Za-z0-9_-]{1,64}$`.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if is_valid_id(value) {
                    Ok(Self(Arc::from(value)))
                } else {
                    Err(InvalidId { kind: $kind })
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A product of the catalog, e.g. `p-00001`.
    ProductId,
    "product"
);
id_type!(
    /// A catalog category.
    CategoryId,
    "category"
);
id_type!(
    /// An order of the order service.
    OrderId,
    "order"
);
id_type!(
    /// An end user, as authenticated by a BFF and passed downstream in `X-User-Id`. On partner
    /// orders the same field holds the partner's own customer reference.
    UserId,
    "user"
);
id_type!(
    /// A partner acting for its customers, passed downstream in `X-Partner-Id`.
    PartnerId,
    "partner"
);

/// The key of the product cache.
impl Weigh for ProductId {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.as_str().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_exactly_the_contract_pattern() {
        assert!(UserId::parse("u-0001").is_ok());
        assert!(PartnerId::parse("partner_acme").is_ok());
        assert!(ProductId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "é", "a.b", "a%2F", "../x"] {
            assert!(ProductId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ProductId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn the_error_names_the_kind_but_not_the_input() {
        let err = UserId::parse("<script>").unwrap_err();
        assert_eq!(err.kind(), "user");
        assert!(!err.to_string().contains("script"));
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let id: ProductId = serde_json::from_str("\"p-00001\"").unwrap();
        assert_eq!(id.as_str(), "p-00001");
        assert!(serde_json::from_str::<ProductId>("\"p 1\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"p-00001\"");
    }
}
