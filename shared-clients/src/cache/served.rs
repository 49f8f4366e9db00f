//! What a cached read answers: the value plus whether it is fresh or stale and how old it is.
//!
//! Policy: every value the catalog hands a gateway says how honest it is, so each gateway can tell
//! its client (a header, a GraphQL extension, a `degraded` list). A value is
//! [`Freshness::Fresh`] when it came from the service for this call or from a cache entry inside
//! its freshness lifetime, and [`Freshness::Stale`] when it is an expired entry served on purpose:
//! while one background call refreshes it (stale-while-revalidate), or because fetching a new one
//! failed (stale-if-error). The age is counted from when the request that produced the value was
//! sent.
//!
//! [`Served`] dereferences to its value, so callers that only read the value keep compiling.

use std::ops::Deref;
use std::time::Duration;

/// How fresh a [`Served`] value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Freshness {
    /// Within its freshness lifetime (or just fetched).
    Fresh {
        /// How long ago the value was fetched from the service.
        #[serde(with = "duration_seconds")]
        age: Duration,
    },
    /// Past its freshness lifetime, served while refreshing or instead of an error.
    Stale {
        /// How long ago the value was fetched from the service.
        #[serde(with = "duration_seconds")]
        age: Duration,
    },
}

impl Freshness {
    /// How long ago the value was fetched from the service.
    pub fn age(self) -> Duration {
        match self {
            Self::Fresh { age } | Self::Stale { age } => age,
        }
    }

    /// Whether the value is past its freshness lifetime.
    pub fn is_stale(self) -> bool {
        matches!(self, Self::Stale { .. })
    }

    /// The less honest of two: stale beats fresh, then the older wins (for answers made of many
    /// values, such as a batch of products).
    #[must_use]
    pub fn worst(self, other: Self) -> Self {
        match (self.is_stale(), other.is_stale()) {
            (true, false) => self,
            (false, true) => other,
            _ if other.age() > self.age() => other,
            _ => self,
        }
    }
}

impl Default for Freshness {
    /// Fresh, with no age: a value just fetched.
    fn default() -> Self {
        Self::Fresh {
            age: Duration::ZERO,
        }
    }
}

/// Serializes a duration as (fractional) seconds, the unit of HTTP's `Age`.
mod duration_seconds {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        age: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(age.as_secs_f64())
    }
}

/// How much longer a served value may be reused without asking its service again: what a
/// cache built on top of the catalog (bff-web's response cache) may promise, no more.
///
/// Two horizons: the service's own (`fresh_for`, its `max-age` capped by `max_ttl`), and a
/// longer one vouched for by the change events (`vouched`), which holds only while the catalog
/// stream's consumer stays healthy in the same *epoch*
/// ([`Downstream::catalog_events_epoch`](crate::Downstream::catalog_events_epoch)); any loss of
/// health ends it, and the value is then only as fresh as `fresh_for` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Remaining freshness on the service's terms; zero for a value that must not be reused
    /// (stale, or of unknown lifetime).
    pub fresh_for: Duration,
    /// `(epoch, remaining)`: the longer freshness the events vouch for, valid while
    /// `catalog_events_epoch()` is `Some(epoch)`. Always longer than `fresh_for` when present.
    pub vouched: Option<(u64, Duration)>,
}

impl Lifetime {
    /// A lifetime with no end: the neutral element of [`Lifetime::shortest`].
    pub const UNBOUNDED: Self = Self {
        fresh_for: Duration::MAX,
        vouched: None,
    };

    /// The lifetime of an answer made of both values: each horizon the shorter of the two. The
    /// vouched horizon survives only when both are vouched for in the same epoch or one is and
    /// the other's own freshness reaches as far (a value not vouched for lives `fresh_for`).
    #[must_use]
    pub fn shortest(self, other: Self) -> Self {
        let fresh_for = self.fresh_for.min(other.fresh_for);
        let epoch = match (self.vouched, other.vouched) {
            (Some((a, _)), Some((b, _))) if a != b => None,
            (Some((epoch, _)), _) | (_, Some((epoch, _))) => Some(epoch),
            (None, None) => None,
        };
        let vouched = epoch.and_then(|epoch| {
            let reach = self.reach().min(other.reach());
            (reach > fresh_for).then_some((epoch, reach))
        });
        Self { fresh_for, vouched }
    }

    /// How far the value reaches while the events stay healthy.
    fn reach(self) -> Duration {
        self.vouched.map_or(self.fresh_for, |(_, reach)| reach)
    }
}

/// A value with its [`Freshness`]. Dereferences to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    /// The value.
    pub value: T,
    /// Whether it is fresh or stale, and its age.
    pub freshness: Freshness,
    /// How much longer it may be reused (zero when unknown: a value built by [`Served::new`]).
    pub lifetime: Lifetime,
}

impl<T> Served<T> {
    /// A value with the given freshness, of unknown lifetime (not to be reused).
    pub fn new(value: T, freshness: Freshness) -> Self {
        Self {
            value,
            freshness,
            lifetime: Lifetime::default(),
        }
    }

    /// The same value, reusable for `lifetime`.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// A value fetched just now.
    pub fn fresh(value: T) -> Self {
        Self::new(value, Freshness::default())
    }

    /// Whether the value is past its freshness lifetime.
    pub fn is_stale(&self) -> bool {
        self.freshness.is_stale()
    }

    /// How long ago the value was fetched from the service.
    pub fn age(&self) -> Duration {
        self.freshness.age()
    }

    /// The value, dropping its freshness.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The same freshness for a value derived from this one.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Served<U> {
        Served {
            value: f(self.value),
            freshness: self.freshness,
            lifetime: self.lifetime,
        }
    }
}

impl<T> Deref for Served<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> AsRef<T> for Served<T> {
    fn as_ref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_worst_freshness_is_the_oldest_stale_one() {
        let fresh = |s| Freshness::Fresh { age: s * SEC };
        let stale = |s| Freshness::Stale { age: s * SEC };
        assert_eq!(fresh(9).worst(stale(1)), stale(1));
        assert_eq!(stale(1).worst(fresh(9)), stale(1));
        assert_eq!(stale(1).worst(stale(5)), stale(5));
        assert_eq!(fresh(3).worst(fresh(2)), fresh(3));
    }

    #[test]
    fn the_shortest_lifetime_keeps_a_vouched_horizon_only_within_one_epoch() {
        let own = |s| Lifetime {
            fresh_for: s * SEC,
            vouched: None,
        };
        let vouched = |s, epoch, reach| Lifetime {
            fresh_for: s * SEC,
            vouched: Some((epoch, reach * SEC)),
        };
        assert_eq!(Lifetime::UNBOUNDED.shortest(own(5)), own(5));
        assert_eq!(own(5).shortest(own(3)), own(3));
        assert_eq!(
            vouched(5, 1, 60).shortest(vouched(2, 1, 30)),
            vouched(2, 1, 30)
        );
        // Different epochs: nothing is vouched for any more.
        assert_eq!(vouched(5, 1, 60).shortest(vouched(2, 2, 30)), own(2));
        // A value the events do not vouch for reaches only as far as its own freshness.
        assert_eq!(vouched(5, 1, 60).shortest(own(20)), vouched(5, 1, 20));
        assert_eq!(vouched(5, 1, 60).shortest(own(3)), own(3));
    }

    #[test]
    fn served_derefs_to_its_value_and_serializes_its_freshness() {
        let served = Served::new(String::from("boot"), Freshness::Stale { age: 2 * SEC });
        assert_eq!(served.len(), 4);
        assert!(served.is_stale());
        assert_eq!(served.age(), 2 * SEC);
        let json = serde_json::to_value(served.freshness).unwrap();
        assert_eq!(json, serde_json::json!({ "state": "stale", "age": 2.0 }));
        assert_eq!(served.map(|s| s.len()).value, 4);
    }
}
