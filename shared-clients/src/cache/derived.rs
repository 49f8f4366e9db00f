//! [`Derived`]: values derived from cached entries (a rendered screen, a serialized body), kept
//! for as long as the cache serves the very same entry.
//!
//! The catalog cache hands out `Arc<Product>`s; a gateway turns one into response bytes on every
//! request although, between two refreshes, the product does not change. A [`Derived`] keeps the
//! bytes next to a [`Weak`] of the `Arc` they were made from and answers them again only while the
//! cache returns that same allocation (compared by address). A refreshed entry is a new
//! allocation, so its value is derived anew; and while the kept `Weak` lives, the old allocation
//! cannot be reused for another value, so an address never matches by accident (no ABA).
//!
//! Only derive values that depend on nothing but the source and the key: a memo is shared by
//! every request of the process.

use std::{
    hash::Hash,
    sync::{Arc, Weak},
};

use moka::future::Cache;

/// Values of type `V` derived from `Arc<S>` sources, by key `K` (the source's id plus whatever
/// else the value depends on, e.g. an image width or an API version).
///
/// Bounded: at most `capacity` entries (least recently used go first); capacity 0 keeps nothing.
/// Cheap to clone (the entries are shared).
pub struct Derived<K, S, V> {
    /// The kept values; `None` when the capacity is 0.
    entries: Option<Cache<K, Arc<Kept<S, V>>>>,
}

impl<K, S, V> Clone for Derived<K, S, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, S, V> std::fmt::Debug for Derived<K, S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived")
            .field("entries", &self.entries.as_ref().map(Cache::entry_count))
            .finish()
    }
}

/// One kept value.
struct Kept<S, V> {
    /// The source it was derived from.
    source: Weak<S>,
    /// The value.
    value: V,
}

impl<K, S, V> Derived<K, S, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    S: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A memo of at most `capacity` values; `0` keeps none.
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The value kept for `key` if it was derived from this very `source`.
    pub async fn get(&self, key: &K, source: &Arc<S>) -> Option<V> {
        let kept = self.entries.as_ref()?.get(key).await?;
        std::ptr::eq(kept.source.as_ptr(), Arc::as_ptr(source)).then(|| kept.value.clone())
    }

    /// Keeps `value`, derived from `source`, for `key` (replacing what was kept for it).
    pub async fn keep(&self, key: K, source: &Arc<S>, value: V) {
        if let Some(entries) = &self.entries {
            let kept = Kept {
                source: Arc::downgrade(source),
                value,
            };
            entries.insert(key, Arc::new(kept)).await;
        }
    }

    /// The value for `key` derived from `source`: the kept one, or `derive(source)`, kept when
    /// it succeeds.
    pub async fn get_or_derive<E>(
        &self,
        key: K,
        source: &Arc<S>,
        derive: impl FnOnce(&S) -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(value) = self.get(&key, source).await {
            return Ok(value);
        }
        let value = derive(source)?;
        self.keep(key, source, value.clone()).await;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn shout(name: &str) -> Result<String, Infallible> {
        Ok(name.to_uppercase())
    }

    #[tokio::test]
    async fn a_value_is_answered_for_the_same_source_and_key_only() {
        let memo: Derived<(&str, u32), String, String> = Derived::new(100);
        let lamp = Arc::new("lamp".to_owned());
        memo.keep(("p-1", 600), &lamp, "LAMP@600".to_owned()).await;

        assert_eq!(
            memo.get(&("p-1", 600), &lamp).await.as_deref(),
            Some("LAMP@600")
        );
        assert_eq!(memo.get(&("p-1", 100), &lamp).await, None, "another key");

        // The same content in another allocation: a refreshed entry, derived anew.
        let refreshed = Arc::new("lamp".to_owned());
        assert_eq!(memo.get(&("p-1", 600), &refreshed).await, None);
    }

    #[tokio::test]
    async fn get_or_derive_derives_once_per_source() {
        let memo: Derived<&str, String, String> = Derived::new(100);
        let lamp = Arc::new("lamp".to_owned());
        let mut calls = 0;
        for _ in 0..3 {
            let value = memo
                .get_or_derive("p-1", &lamp, |name| {
                    calls += 1;
                    shout(name)
                })
                .await;
            assert_eq!(value, Ok("LAMP".to_owned()));
        }
        assert_eq!(calls, 1);

        let desk_lamp = Arc::new("desk lamp".to_owned());
        let value = memo
            .get_or_derive("p-1", &desk_lamp, |name| shout(name))
            .await;
        assert_eq!(value, Ok("DESK LAMP".to_owned()));
        assert_eq!(memo.get(&"p-1", &lamp).await, None, "replaced");
    }

    #[tokio::test]
    async fn a_failed_derivation_is_not_kept() {
        let memo: Derived<&str, String, String> = Derived::new(100);
        let lamp = Arc::new("lamp".to_owned());
        let failed = memo
            .get_or_derive("p-1", &lamp, |_| Err::<String, _>("broken"))
            .await;
        assert_eq!(failed, Err("broken"));
        assert_eq!(memo.get(&"p-1", &lamp).await, None);
    }

    #[tokio::test]
    async fn a_memo_of_capacity_zero_keeps_nothing() {
        let memo: Derived<&str, String, String> = Derived::new(0);
        let lamp = Arc::new("lamp".to_owned());
        memo.keep("p-1", &lamp, "LAMP".to_owned()).await;
        assert_eq!(memo.get(&"p-1", &lamp).await, None);
    }
}
