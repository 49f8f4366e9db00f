//! The response cache: whole answers of queries that read only public catalog data, kept as the
//! bytes that were sent and answered again without validating or running anything.
//!
//! Policy (`docs/response-cache.md` says why):
//! - **What is kept.** A query (never a mutation or subscription) whose document names no private
//!   field (`viewer`, anywhere, even under `@skip`), that read no private data and no catalog
//!   page while it ran (lists are not followed by tags), and answered with `data` and no errors
//!   and no `extensions` (a `stale` answer is never kept). Nothing per user is ever kept: two
//!   users' documents with `viewer` never share an entry, because such documents are never kept.
//! - **The key** is a SHA-256 over the document's identity (its text, or a trusted document's
//!   hash), the operation name and the variables (canonical: async-graphql keeps them sorted).
//!   No request header changes a kept answer: the media type is chosen per request and written
//!   around the same bytes; `Authorization` is still verified on every hit (a refused token is
//!   401, as without the cache).
//! - **How long.** An answer lives no longer than the shortest remaining freshness of what it
//!   shows ([`Lifetime`], from the catalog cache), nor `max_ttl`; past the service's own
//!   freshness, only while the catalog events vouch for it in the same epoch, as the catalog
//!   cache itself does.
//! - **Dropped by changes.** Each answer is tagged with the products and the category list it
//!   shows; a change the catalog drops ([`CatalogChange`]: a change event, a change a live poll
//!   found, a gap in the events) drops the answers tagged with it. An answer whose execution
//!   overlapped any change is answered but not kept, so a run that read a value just before its
//!   change cannot keep it past the change.
//! - **Bounded.** By `max_bytes` of answers (least recently used forgotten first) and
//!   `max_entry_bytes` each; the tag index holds each (tag, answer) pair once (an answer kept
//!   again after it expired adds nothing), at most [`MAX_TAG_PAIRS`] of them, and is emptied with
//!   every answer when full (dropping an answer is always correct).

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_graphql::{
    Variables,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use axum::{body::Bytes, http::HeaderValue};
use sha2::{Digest, Sha256};
use shared_clients::{CatalogChange, Downstream, Lifetime};
use tokio::time::Instant;

use crate::{
    config::ResponseCacheConfig,
    schema::contents::{ContentTag, Record},
};

/// Most (tag, answer) pairs the index remembers before it is emptied.
pub const MAX_TAG_PAIRS: usize = 200_000;

/// Memory of one entry beside its body: key, tags, headers, the cache's bookkeeping.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The key of one answer: a SHA-256 of what determines it.
pub type Key = [u8; 32];

/// What a request runs, for its key: a trusted document by the hash of its text, or a text.
#[derive(Debug, Clone, Copy)]
pub enum Document<'a> {
    /// A trusted document's SHA-256 (hex).
    Trusted(&'a str),
    /// A document's text.
    Text(&'a str),
}

/// The key of the answer to `document`'s operation `operation_name` with `variables`.
pub fn key(document: Document<'_>, operation_name: Option<&str>, variables: &Variables) -> Key {
    let mut hasher = Sha256::new();
    match document {
        Document::Trusted(hash) => {
            hasher.update(b"t");
            hasher.update(hash.as_bytes());
        }
        Document::Text(text) => {
            hasher.update(b"q");
            hasher.update(text.as_bytes());
        }
    }
    hasher.update([0]);
    if let Some(name) = operation_name {
        hasher.update(name.as_bytes());
    }
    hasher.update([0]);
    // Serialized straight into the hash: no buffer. Writing to a hasher cannot fail.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), variables);
    hasher.finalize().into()
}

/// Feeds what is written to a SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `document` names no private field anywhere (`viewer`, in any operation or fragment,
/// whatever directives say): only then may an answer to it be kept.
pub fn names_no_private_field(document: &ExecutableDocument) -> bool {
    let operations = document
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node);
    let fragments = document
        .fragments
        .values()
        .map(|fragment| &fragment.node.selection_set.node);
    operations.chain(fragments).all(|set| !selects_private(set))
}

/// Whether `set` selects a private field, at any depth.
fn selects_private(set: &SelectionSet) -> bool {
    set.items.iter().any(|item| match &item.node {
        Selection::Field(field) => {
            field.node.name.node == "viewer" || selects_private(&field.node.selection_set.node)
        }
        Selection::InlineFragment(fragment) => selects_private(&fragment.node.selection_set.node),
        // The fragment's own selections are checked with the document's fragments.
        Selection::FragmentSpread(_) => false,
    })
}

/// A kept answer.
#[derive(Debug)]
pub struct Stored {
    /// The JSON body, as it was sent.
    pub body: Bytes,
    /// Its strong entity tag (a hash of the body).
    pub etag: HeaderValue,
    /// The operation's name for metrics, as the run that kept it labelled it.
    pub operation: Option<Arc<str>>,
    /// Until when it is fresh on its services' own terms (what `Cache-Control` may promise).
    fresh_until: Instant,
    /// `(epoch, until)`: a longer life while the catalog events stay healthy in `epoch`.
    vouched: Option<(u64, Instant)>,
}

impl Stored {
    /// Whole seconds of freshness left at `now`, for `Cache-Control: max-age` (what the
    /// contents promise on their services' terms: a shared cache cannot hear the events).
    pub fn max_age(&self, now: Instant) -> u64 {
        self.fresh_until.saturating_duration_since(now).as_secs()
    }

    /// Whether it may still be answered at `now`, the catalog events being healthy in `epoch`.
    fn usable(&self, now: Instant, epoch: impl FnOnce() -> Option<u64>) -> bool {
        now < self.fresh_until
            || self
                .vouched
                .is_some_and(|(vouched, until)| now < until && epoch() == Some(vouched))
    }
}

/// How a lookup went, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the cache.
    Hit,
    /// Not kept (or no longer usable): run.
    Miss,
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The kept answers. Cheap to clone (clones share the cache); disabled, every lookup misses and
/// nothing is kept.
#[derive(Clone)]
pub struct ResponseCache {
    /// `None` when disabled.
    inner: Option<Arc<Inner>>,
}

/// The parts of [`ResponseCache`].
struct Inner {
    /// Answers by key.
    entries: moka::sync::Cache<Key, Arc<Stored>>,
    /// Keys by tag, and the change counter, under one lock (see [`ResponseCache::keep`]).
    index: Mutex<Index>,
    /// Bumped by every catalog change, before its answers are dropped.
    changes: AtomicU64,
    /// `max_ttl`.
    max_ttl: Duration,
    /// `max_entry_bytes`.
    max_entry_bytes: usize,
    /// Where the catalog events' epoch is read.
    downstream: Downstream,
}

/// Keys by tag.
#[derive(Default)]
struct Index {
    /// Tag → keys of the answers that show it (possibly of answers already gone), each once.
    keys: HashMap<ContentTag, HashSet<Key>>,
    /// Pairs held (the sum of the sets' lengths).
    pairs: usize,
}

/// The change counter when a run started: an answer is kept only if it did not move.
#[derive(Debug, Clone, Copy)]
pub struct Changes(u64);

impl ResponseCache {
    /// A cache as `config` says, dropping answers as `downstream`'s catalog drops what they show.
    pub fn new(config: &ResponseCacheConfig, downstream: &Downstream) -> Self {
        if !config.enabled {
            return Self { inner: None };
        }
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &Key, stored: &Arc<Stored>| {
                u32::try_from(stored.body.len() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            // A bound for memory only: whether an entry may be answered is decided on lookup.
            .time_to_live(config.max_ttl.max(Duration::from_secs(1)))
            .build();
        let inner = Arc::new(Inner {
            entries,
            index: Mutex::new(Index::default()),
            changes: AtomicU64::new(0),
            max_ttl: config.max_ttl,
            max_entry_bytes: config.max_entry_bytes,
            downstream: downstream.clone(),
        });
        // Weakly: the catalog outlives no cache of its own making.
        let listener: Weak<Inner> = Arc::downgrade(&inner);
        downstream.catalog().on_change(move |change| {
            if let Some(inner) = listener.upgrade() {
                inner.drop_changed(change);
            }
        });
        Self { inner: Some(inner) }
    }

    /// Whether answers are kept at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The answer kept for `key`, if it may still be answered.
    pub fn get(&self, key: &Key) -> Option<Arc<Stored>> {
        let inner = self.inner.as_ref()?;
        let stored = inner.entries.get(key)?;
        if stored.usable(Instant::now(), || inner.downstream.catalog_events_epoch()) {
            return Some(stored);
        }
        inner.entries.invalidate(key);
        None
    }

    /// The change counter now: take it before a run reads anything, hand it to
    /// [`ResponseCache::keep`] after.
    pub fn changes(&self) -> Changes {
        Changes(
            self.inner
                .as_ref()
                .map_or(0, |inner| inner.changes.load(Ordering::Acquire)),
        )
    }

    /// Keeps `body`, the answer to `key` made of `contents`, unless it may not be kept: not
    /// shareable, of no remaining freshness, too large, or a catalog change happened since
    /// `before`. The kept entry, if it was kept.
    pub fn keep(
        &self,
        key: Key,
        before: Changes,
        contents: &Record,
        body: Bytes,
        operation: Option<&str>,
    ) -> Option<Arc<Stored>> {
        let inner = self.inner.as_ref()?;
        if !contents.shareable || body.len() > inner.max_entry_bytes {
            return None;
        }
        let Lifetime { fresh_for, vouched } = contents.lifetime;
        let fresh_for = fresh_for.min(inner.max_ttl);
        let vouched = vouched
            .map(|(epoch, reach)| (epoch, reach.min(inner.max_ttl)))
            .filter(|(_, reach)| *reach > fresh_for);
        if fresh_for.is_zero() && vouched.is_none() {
            return None;
        }
        let now = Instant::now();
        let stored = Arc::new(Stored {
            etag: server_kit::http::entity_tag(&body),
            body,
            operation: operation.map(Arc::from),
            fresh_until: now + fresh_for,
            vouched: vouched.map(|(epoch, reach)| (epoch, now + reach)),
        });
        // Checked and recorded under the index's lock, which a change takes after bumping the
        // counter: either this sees the bump and keeps nothing, or the change finds the key.
        let mut index = inner.index.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.changes.load(Ordering::Acquire) != before.0 {
            return None;
        }
        if index.pairs + contents.tags.len() > MAX_TAG_PAIRS {
            index.keys.clear();
            index.pairs = 0;
            inner.entries.invalidate_all();
        }
        for tag in &contents.tags {
            if index.keys.entry(tag.clone()).or_default().insert(key) {
                index.pairs += 1;
            }
        }
        inner.entries.insert(key, Arc::clone(&stored));
        Some(stored)
    }

    /// How many answers are kept (after pending maintenance; for tests).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| {
            inner.entries.run_pending_tasks();
            inner.entries.entry_count()
        })
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many (tag, answer) pairs the index holds (for tests).
    #[cfg(test)]
    fn index_pairs(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| {
            inner
                .index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pairs
        })
    }
}

impl Inner {
    /// Drops the answers `change` made stale.
    fn drop_changed(&self, change: CatalogChange<'_>) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let tag = match change {
            CatalogChange::Product(id) => ContentTag::Product(id.clone()),
            CatalogChange::Categories => ContentTag::Categories,
            CatalogChange::All => {
                index.keys.clear();
                index.pairs = 0;
                self.entries.invalidate_all();
                return;
            }
        };
        let keys = index.keys.remove(&tag).unwrap_or_default();
        index.pairs = index.pairs.saturating_sub(keys.len());
        drop(index);
        for key in keys {
            self.entries.invalidate(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use shared_clients::{DownstreamConfig, ProductId};

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn cache(max_ttl: Duration) -> ResponseCache {
        let downstream = Downstream::new(&DownstreamConfig::default()).expect("downstream");
        let config = ResponseCacheConfig {
            max_ttl,
            max_entry_bytes: 1024,
            ..ResponseCacheConfig::default()
        };
        ResponseCache::new(&config, &downstream)
    }

    fn product(n: u32) -> ProductId {
        ProductId::parse(&format!("p-{n:05}")).expect("valid id")
    }

    fn showing(tags: Vec<ContentTag>, fresh_for: Duration) -> Record {
        Record {
            shareable: true,
            tags,
            lifetime: Lifetime {
                fresh_for,
                vouched: None,
            },
        }
    }

    fn key_of(n: u8) -> Key {
        [n; 32]
    }

    fn body() -> Bytes {
        Bytes::from_static(br#"{"data":{"product":{"id":"p-00001"}}}"#)
    }

    fn change(cache: &ResponseCache, change: CatalogChange<'_>) {
        cache.inner.as_ref().expect("enabled").drop_changed(change);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_lives_no_longer_than_its_shortest_content_nor_max_ttl() {
        let cache = cache(60 * SEC);
        let record = showing(vec![ContentTag::Product(product(1))], 10 * SEC);
        let kept = cache
            .keep(key_of(1), cache.changes(), &record, body(), Some("Product"))
            .expect("kept");
        assert_eq!(kept.max_age(Instant::now()), 10);
        tokio::time::advance(9 * SEC).await;
        let hit = cache.get(&key_of(1)).expect("still fresh");
        assert_eq!(hit.body, body());
        assert_eq!(hit.operation.as_deref(), Some("Product"));
        tokio::time::advance(SEC).await;
        assert!(
            cache.get(&key_of(1)).is_none(),
            "past its contents' freshness"
        );

        // Contents fresh for an hour: `max_ttl` bounds the answer.
        let record = showing(vec![ContentTag::Categories], 3600 * SEC);
        let kept = cache
            .keep(key_of(2), cache.changes(), &record, body(), None)
            .expect("kept");
        assert_eq!(kept.max_age(Instant::now()), 60);
        tokio::time::advance(60 * SEC).await;
        assert!(cache.get(&key_of(2)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_vouched_life_holds_only_while_the_events_stay_healthy_in_its_epoch() {
        let cache = cache(600 * SEC);
        let record = Record {
            shareable: true,
            tags: vec![ContentTag::Product(product(1))],
            lifetime: Lifetime {
                fresh_for: 5 * SEC,
                vouched: Some((7, 300 * SEC)),
            },
        };
        let kept = cache
            .keep(key_of(1), cache.changes(), &record, body(), None)
            .expect("kept");
        // What a shared cache is told is the services' own freshness only.
        assert_eq!(kept.max_age(Instant::now()), 5);
        let later = Instant::now() + 100 * SEC;
        assert!(kept.usable(later, || Some(7)), "vouched for in epoch 7");
        assert!(
            !kept.usable(later, || Some(8)),
            "another epoch vouches nothing"
        );
        assert!(
            !kept.usable(later, || None),
            "unhealthy events vouch nothing"
        );
        assert!(
            kept.usable(Instant::now() + 4 * SEC, || None),
            "own freshness"
        );
        assert!(!kept.usable(Instant::now() + 300 * SEC, || Some(7)));
        // This test's downstream reads no events: past its own freshness, the answer is gone.
        tokio::time::advance(6 * SEC).await;
        assert!(cache.get(&key_of(1)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_drops_exactly_the_answers_that_show_it() {
        let cache = cache(60 * SEC);
        let fresh = 30 * SEC;
        for (n, tags) in [
            (1, vec![ContentTag::Product(product(1))]),
            (
                2,
                vec![
                    ContentTag::Product(product(1)),
                    ContentTag::Product(product(2)),
                ],
            ),
            (3, vec![ContentTag::Product(product(2))]),
            (4, vec![ContentTag::Categories]),
        ] {
            cache
                .keep(
                    key_of(n),
                    cache.changes(),
                    &showing(tags, fresh),
                    body(),
                    None,
                )
                .expect("kept");
        }
        change(&cache, CatalogChange::Product(&product(1)));
        assert!(cache.get(&key_of(1)).is_none());
        assert!(cache.get(&key_of(2)).is_none());
        assert!(cache.get(&key_of(3)).is_some());
        assert!(cache.get(&key_of(4)).is_some());
        change(&cache, CatalogChange::Categories);
        assert!(cache.get(&key_of(4)).is_none());
        assert!(cache.get(&key_of(3)).is_some());
        change(&cache, CatalogChange::All);
        assert!(cache.get(&key_of(3)).is_none());
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_kept_again_after_it_expired_is_indexed_once() {
        let cache = cache(60 * SEC);
        let tags = vec![
            ContentTag::Product(product(1)),
            ContentTag::Product(product(2)),
        ];
        for _ in 0..5 {
            cache
                .keep(
                    key_of(1),
                    cache.changes(),
                    &showing(tags.clone(), SEC),
                    body(),
                    None,
                )
                .expect("kept");
            tokio::time::advance(2 * SEC).await;
            assert!(cache.get(&key_of(1)).is_none(), "expired");
        }
        assert_eq!(cache.index_pairs(), 2);
        change(&cache, CatalogChange::Product(&product(1)));
        assert_eq!(cache.index_pairs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_whose_run_overlapped_a_change_is_not_kept() {
        let cache = cache(60 * SEC);
        let before = cache.changes();
        // A product the run may have read changes before the run ends.
        change(&cache, CatalogChange::Product(&product(9)));
        let record = showing(vec![ContentTag::Product(product(1))], 30 * SEC);
        assert!(
            cache
                .keep(key_of(1), before, &record, body(), None)
                .is_none()
        );
        assert!(cache.get(&key_of(1)).is_none());
        // A run started after it is kept.
        assert!(
            cache
                .keep(key_of(1), cache.changes(), &record, body(), None)
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn private_lifeless_or_oversized_answers_are_not_kept() {
        let cache = cache(60 * SEC);
        let mut private = showing(vec![ContentTag::Product(product(1))], 30 * SEC);
        private.shareable = false;
        assert!(
            cache
                .keep(key_of(1), cache.changes(), &private, body(), None)
                .is_none()
        );
        let lifeless = showing(vec![ContentTag::Product(product(1))], Duration::ZERO);
        assert!(
            cache
                .keep(key_of(2), cache.changes(), &lifeless, body(), None)
                .is_none()
        );
        let big = Bytes::from(vec![b' '; 1025]);
        let record = showing(vec![ContentTag::Product(product(1))], 30 * SEC);
        assert!(
            cache
                .keep(key_of(3), cache.changes(), &record, big, None)
                .is_none()
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn disabled_it_keeps_and_finds_nothing() {
        let downstream = Downstream::new(&DownstreamConfig::default()).expect("downstream");
        let config = ResponseCacheConfig {
            enabled: false,
            ..ResponseCacheConfig::default()
        };
        let cache = ResponseCache::new(&config, &downstream);
        assert!(!cache.is_enabled());
        let record = showing(vec![], 30 * SEC);
        assert!(
            cache
                .keep(key_of(1), cache.changes(), &record, body(), None)
                .is_none()
        );
        assert!(cache.get(&key_of(1)).is_none());
    }

    #[test]
    fn the_key_follows_the_document_the_operation_and_the_variables() {
        let vars = |json: serde_json::Value| Variables::from_json(json);
        let text = "query P($id: ID!) { product(id: $id) { id } }";
        let base = key(
            Document::Text(text),
            Some("P"),
            &vars(serde_json::json!({"id": "p-00001", "x": 1})),
        );
        // The variables' order does not matter; their values do.
        assert_eq!(
            base,
            key(
                Document::Text(text),
                Some("P"),
                &vars(serde_json::json!({"x": 1, "id": "p-00001"}))
            )
        );
        for other in [
            key(
                Document::Text(text),
                Some("P"),
                &vars(serde_json::json!({"id": "p-00002", "x": 1})),
            ),
            key(
                Document::Text(text),
                None,
                &vars(serde_json::json!({"id": "p-00001", "x": 1})),
            ),
            key(
                Document::Text(&format!("{text} ")),
                Some("P"),
                &vars(serde_json::json!({"id": "p-00001", "x": 1})),
            ),
            key(
                Document::Trusted(text),
                Some("P"),
                &vars(serde_json::json!({"id": "p-00001", "x": 1})),
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_private_field_anywhere_in_the_document_makes_it_private() {
        let public = |text: &str| names_no_private_field(&parse_query(text).expect("parses"));
        assert!(public(
            "{ product(id: \"p-00001\") { id name } categories { id } }"
        ));
        assert!(public(
            "query A { product(id: \"p-00001\") { ...F } } fragment F on Product { id }"
        ));
        assert!(!public("{ viewer { cart { id } } }"));
        assert!(!public(
            "{ product(id: \"p-00001\") { id } viewer @skip(if: true) { id } }"
        ));
        assert!(!public("{ ... on Query { viewer { id } } }"));
        assert!(!public(
            "query A { ...V } fragment V on Query { viewer { id } }"
        ));
        // Another operation of the same document counts too.
        assert!(!public(
            "query A { categories { id } } query B { viewer { id } }"
        ));
    }
}
