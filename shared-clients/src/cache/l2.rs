//! The catalog's second level: products and categories kept in Redis next to each replica's own
//! cache (L1), and leases that let one replica fetch a missing key for all.
//!
//! Policy:
//! - **Same freshness everywhere.** An entry is stored with the wall-clock time its fetch was
//!   sent, its freshness and its entity tag (`{"at":…,"ttl":…,"etag":…,"value":…}`), and lives in
//!   Redis for its freshness plus the longest stale window, as in L1. A replica that takes it
//!   over keeps its age, so it is fresh for exactly as long as on the replica that fetched it.
//!   Only fresh entries are taken over; an expired one is fetched again.
//! - **Bounded.** An entry whose serialized form is larger than `shared.l2_max_entry_bytes` stays
//!   in L1 only.
//! - **One fetch across replicas.** A replica that misses both levels takes the key's lease
//!   (`SET <lease> 1 NX PX lease_ttl`) and fetches; the others find the lease taken and poll L2
//!   for the value for up to `lease_wait` (bounded by their deadline), then fetch themselves if it
//!   did not come (the holder died or is slow). Publishing writes the value and keeps the lease
//!   until the value stops being fresh, so a replica that missed just before the value arrived
//!   finds the lease taken and the value there, instead of fetching again; a failed fetch drops
//!   its lease so the others fetch at once. Leases protect the product service; they guard no
//!   data (at worst a replica fetches once more).
//! - **Never in the way.** Redis failing, slow or holding garbage makes each operation a miss (a
//!   lease not taken: this replica fetches as before), counted by [`SharedState`].
//!
//! Keys: `<prefix>{cat:<key>}` for the value and `<prefix>{cat:<key>}:lease` for the lease: the
//! two share a hash tag.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cache_control::ETag;
use crate::shared_state::{Feature, L2Settings, SharedState};

/// How often a replica waiting for another's leased fetch looks for the value.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// An entry read from L2.
pub(crate) struct Loaded<V> {
    /// The value.
    pub(crate) value: V,
    /// How old it is (since its fetch was sent, by the wall clock).
    pub(crate) age: Duration,
    /// How long after its fetch it is fresh.
    pub(crate) ttl: Duration,
    /// Its entity tag.
    pub(crate) etag: Option<ETag>,
}

/// What taking a lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// This replica holds it: fetch, then publish.
    Acquired,
    /// Another replica holds it: wait for its value.
    Held,
    /// Redis did not answer: fetch without a lease.
    Unavailable,
}

/// An entry as stored (written side).
#[derive(Serialize)]
struct StoredRef<'a, V> {
    /// When its fetch was sent, in milliseconds since the Unix epoch.
    at: u64,
    /// Freshness, in milliseconds.
    ttl: u64,
    /// Entity tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    /// The value.
    value: &'a V,
}

/// An entry as stored (read side).
#[derive(Deserialize)]
struct Stored<V> {
    /// See [`StoredRef`].
    at: u64,
    /// See [`StoredRef`].
    ttl: u64,
    /// See [`StoredRef`].
    #[serde(default)]
    etag: Option<String>,
    /// See [`StoredRef`].
    value: V,
}

/// The second level of one catalog cache.
pub(crate) struct L2<K, V> {
    /// Redis.
    shared: SharedState,
    /// Its settings.
    settings: L2Settings,
    /// The hash tag of a key (`cat:p:<id>`).
    tag: fn(&K) -> String,
    /// Serializes an entry (`None`: cannot be).
    encode: fn(&StoredEntry<'_, V>) -> Option<Vec<u8>>,
    /// Deserializes an entry (`None`: garbage).
    decode: fn(&[u8]) -> Option<Loaded<V>>,
    /// How long an entry is kept in Redis after its fetch, past its freshness.
    keep_past_fresh: Duration,
    /// The key type is only used through `tag`.
    _key: PhantomData<fn(&K)>,
}

/// An entry this replica fetched, as [`L2::publish`] takes it (built by the L1 cache from its
/// own entries).
pub(crate) struct Fetched<'a, V> {
    /// The value.
    pub(crate) value: &'a V,
    /// How old it is now.
    pub(crate) age: Duration,
    /// How long after its fetch it is fresh.
    pub(crate) ttl: Duration,
    /// Its entity tag.
    pub(crate) etag: Option<&'a ETag>,
}

/// What [`L2::publish`] stores of an L1 entry.
pub(crate) struct StoredEntry<'a, V> {
    /// The value.
    value: &'a V,
    /// When its fetch was sent (wall clock, ms since the epoch).
    at: u64,
    /// Freshness.
    ttl: Duration,
    /// Entity tag.
    etag: Option<&'a str>,
}

/// Serializes `entry` as JSON.
fn encode<V: Serialize>(entry: &StoredEntry<'_, V>) -> Option<Vec<u8>> {
    serde_json::to_vec(&StoredRef {
        at: entry.at,
        ttl: millis(entry.ttl),
        etag: entry.etag,
        value: entry.value,
    })
    .ok()
}

/// Deserializes an entry, with its age by the wall clock now.
fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<Loaded<V>> {
    let stored: Stored<V> = serde_json::from_slice(bytes).ok()?;
    let etag = match stored.etag {
        Some(etag) => Some(ETag::parse(&etag)?),
        None => None,
    };
    Some(Loaded {
        value: stored.value,
        age: Duration::from_millis(now_ms().saturating_sub(stored.at)),
        ttl: Duration::from_millis(stored.ttl),
        etag,
    })
}

/// Milliseconds of `duration`, saturated.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

impl<K, V> L2<K, V>
where
    V: Serialize + DeserializeOwned,
{
    /// The second level of a cache whose keys have the hash tag `tag(key)`, when `shared` has
    /// one configured (`None` otherwise). Entries are kept `keep_past_fresh` past their freshness.
    pub(crate) fn new(
        shared: &SharedState,
        tag: fn(&K) -> String,
        keep_past_fresh: Duration,
    ) -> Option<Self> {
        let settings = shared.l2_settings()?;
        Some(Self {
            shared: shared.clone(),
            settings,
            tag,
            encode: encode::<V>,
            decode: decode::<V>,
            keep_past_fresh,
            _key: PhantomData,
        })
    }
}

impl<K, V> L2<K, V> {
    /// The key of `key`'s value.
    fn value_key(&self, key: &K) -> String {
        self.shared.key(&(self.tag)(key), "")
    }

    /// The key of `key`'s lease.
    fn lease_key(&self, key: &K) -> String {
        self.shared.key(&(self.tag)(key), "lease")
    }

    /// Decodes a stored value; garbage is counted and is a miss, as is an entry no longer fresh.
    fn fresh(&self, bytes: Option<Vec<u8>>) -> Option<Loaded<V>> {
        let bytes = bytes?;
        let Some(loaded) = (self.decode)(&bytes) else {
            self.shared.count_garbage("l2_decode", Feature::CatalogL2);
            return None;
        };
        (loaded.age < loaded.ttl).then_some(loaded)
    }

    /// `key`'s entry, when Redis holds a fresh one.
    pub(crate) async fn get(&self, key: &K) -> Option<Loaded<V>> {
        let bytes: Option<Vec<u8>> = self
            .shared
            .query(
                "l2_get",
                Feature::CatalogL2,
                redis::cmd("GET").arg(self.value_key(key)),
            )
            .await
            .ok()?;
        self.fresh(bytes)
    }

    /// The entries of `keys` (in order) that Redis holds fresh, in one round trip.
    pub(crate) async fn get_many(&self, keys: &[K]) -> Vec<Option<Loaded<V>>> {
        let found = match self
            .shared
            .batch("l2_get_many", Feature::CatalogL2, &self.gets(keys))
            .await
        {
            Ok(found) if found.len() == keys.len() => found,
            _ => return keys.iter().map(|_| None).collect(),
        };
        found
            .into_iter()
            .map(|value| self.fresh(bytes_of(value)))
            .collect()
    }

    /// A `GET` of each of `keys`' entries, for `SharedState::batch`.
    fn gets<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Vec<(String, redis::Cmd)>
    where
        K: 'k,
    {
        keys.into_iter()
            .map(|key| {
                let key = self.value_key(key);
                let get = redis::cmd("GET").arg(&key).clone();
                (key, get)
            })
            .collect()
    }

    /// Drops `key`'s entry and lease (it changed): one round trip; both keys share a hash tag.
    pub(crate) async fn remove(&self, key: &K) {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.value_key(key))
            .arg(self.lease_key(key))
            .ignore();
        let _: Result<(), _> = self
            .shared
            .pipeline("l2_evict", Feature::CatalogL2, &pipe)
            .await;
    }

    /// Takes `key`'s lease for `lease_ttl`.
    pub(crate) async fn lease(&self, key: &K) -> Lease {
        self.leases(std::slice::from_ref(key))
            .await
            .pop()
            .unwrap_or(Lease::Unavailable)
    }

    /// Takes the leases of `keys` (in order), in one round trip.
    pub(crate) async fn leases(&self, keys: &[K]) -> Vec<Lease> {
        let sets: Vec<(String, redis::Cmd)> = keys
            .iter()
            .map(|key| {
                let key = self.lease_key(key);
                let set = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(self.settings.lease_ttl))
                    .clone();
                (key, set)
            })
            .collect();
        let taken = match self.shared.batch("l2_lease", Feature::Leases, &sets).await {
            Ok(taken) if taken.len() == keys.len() => taken,
            _ => return keys.iter().map(|_| Lease::Unavailable).collect(),
        };
        taken
            .into_iter()
            .map(|answer| match answer {
                redis::Value::Nil => Lease::Held,
                _ => Lease::Acquired,
            })
            .collect()
    }

    /// Waits (polling) for the entries of `keys` another replica is fetching, until each is there
    /// or `lease_wait` (or `deadline`) passes; returns what came, in order.
    pub(crate) async fn wait_for(
        &self,
        keys: &[K],
        deadline: Option<Instant>,
    ) -> Vec<Option<Loaded<V>>> {
        let mut until = Instant::now() + self.settings.lease_wait;
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        let mut found: Vec<Option<Loaded<V>>> = keys.iter().map(|_| None).collect();
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
            let asked: Vec<&K> = missing.iter().map(|&i| &keys[i]).collect();
            let gets = self.gets(asked.iter().copied());
            let Ok(answer) = self.shared.batch("l2_wait", Feature::Leases, &gets).await else {
                return found;
            };
            let answer = answer.into_iter().map(bytes_of);
            for (index, bytes) in missing.into_iter().zip(answer) {
                found[index] = self.fresh(bytes);
            }
            if found.iter().all(Option::is_some) || Instant::now() >= until {
                return found;
            }
        }
    }

    /// Stores the entries this replica fetched (`None`: nothing to store, e.g. the fetch failed),
    /// in one round trip. A stored entry's lease is kept (or set) until the entry stops being
    /// fresh, so a replica that missed just before the entry arrived waits for it (and finds it)
    /// instead of fetching again; a lease this replica took (`leased`) for nothing stored is
    /// dropped, so the others fetch at once.
    pub(crate) async fn publish(&self, entries: &[(&K, Option<Fetched<'_, V>>, bool)]) {
        let mut commands: Vec<(String, redis::Cmd)> = Vec::new();
        let wall = now_ms();
        for (key, entry, leased) in entries {
            let stored = entry.as_ref().and_then(|entry| {
                let fresh_left = entry.ttl.saturating_sub(entry.age);
                let keep = fresh_left.saturating_add(self.keep_past_fresh);
                let stored = StoredEntry {
                    value: entry.value,
                    at: wall.saturating_sub(millis(entry.age)),
                    ttl: entry.ttl,
                    etag: entry.etag.map(ETag::as_str),
                };
                let bytes = (self.encode)(&stored)?;
                (bytes.len() <= self.settings.max_entry_bytes && millis(fresh_left) > 0)
                    .then_some((bytes, keep, fresh_left))
            });
            match stored {
                Some((bytes, keep, fresh_left)) => {
                    let value_key = self.value_key(key);
                    let set = redis::cmd("SET")
                        .arg(&value_key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(millis(keep).max(1))
                        .clone();
                    commands.push((value_key, set));
                    let lease_key = self.lease_key(key);
                    let set = redis::cmd("SET")
                        .arg(&lease_key)
                        .arg(1)
                        .arg("PX")
                        .arg(millis(fresh_left).max(1))
                        .clone();
                    commands.push((lease_key, set));
                }
                None if *leased => {
                    let lease_key = self.lease_key(key);
                    let del = redis::cmd("DEL").arg(&lease_key).clone();
                    commands.push((lease_key, del));
                }
                None => {}
            }
        }
        let _ = self
            .shared
            .batch("l2_publish", Feature::CatalogL2, &commands)
            .await;
    }
}

/// The bytes of a `GET`'s answer (`None`: no such key, or not a string).
fn bytes_of(value: redis::Value) -> Option<Vec<u8>> {
    redis::from_redis_value::<Option<Vec<u8>>>(value)
        .ok()
        .flatten()
}

impl<V> Loaded<V> {
    /// When the fetch that produced it was sent, on this process's clock.
    pub(crate) fn fetched_at(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.age).unwrap_or(now)
    }

    /// The value, to keep in L1.
    pub(crate) fn into_value(self) -> Arc<V> {
        Arc::new(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_keeps_its_age_freshness_and_tag_through_redis() {
        let value = vec![1_u32, 2, 3];
        let at = now_ms() - 1_500;
        let bytes = encode(&StoredEntry {
            value: &value,
            at,
            ttl: Duration::from_secs(60),
            etag: Some("\"v7\""),
        })
        .unwrap();
        let loaded: Loaded<Vec<u32>> = decode(&bytes).unwrap();
        assert_eq!(loaded.value, value);
        assert_eq!(loaded.ttl, Duration::from_secs(60));
        assert!(
            loaded.age >= Duration::from_millis(1_500) && loaded.age < Duration::from_secs(5),
            "{:?}",
            loaded.age
        );
        assert_eq!(loaded.etag.unwrap().as_str(), "\"v7\"");
    }

    #[test]
    fn garbage_and_the_wrong_shape_are_not_entries() {
        assert!(decode::<Vec<u32>>(b"not json").is_none());
        assert!(decode::<Vec<u32>>(br#"{"at":1,"ttl":2,"value":"str"}"#).is_none());
        assert!(decode::<Vec<u32>>(br#"{"at":1,"ttl":2,"value":[1],"etag":"bad tag"}"#).is_none());
        // Truncated.
        assert!(decode::<Vec<u32>>(br#"{"at":1,"ttl":2,"value":[1"#).is_none());
    }
}
