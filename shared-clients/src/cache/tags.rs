//! Tags of cached catalog pages: which products and categories a page shows, so a change event
//! drops exactly the pages it makes stale.
//!
//! Policy:
//! - A page is tagged with every product on it, and with its category filter (plus *filtered*)
//!   or *unfiltered* (lists of everything, searches). An event drops the pages of its tags.
//! - A page whose fetch started before one of its tags was dropped is answered but not kept
//!   ([`TagIndex::dropped_since`]): a fetch in flight cannot bring back what an event dropped.
//! - The index is bounded: past `max_keys` remembered (tag, page) pairs it is emptied, and the
//!   caller drops every page with it (dropping a page is always correct). Pairs of pages that
//!   expired stay until their tag is dropped or the index is emptied; they cost memory, not
//!   correctness.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::id::{CategoryId, ProductId};

/// How long a dropped tag is remembered: longer than any fetch in flight when it was dropped.
const DROP_MEMORY: Duration = Duration::from_secs(120);

/// What a page shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    /// A product on the page.
    Product(ProductId),
    /// The page lists one category.
    Category(CategoryId),
    /// The page lists one category, whichever (for a change whose category is unknown).
    Filtered,
    /// The page lists everything (or a search of everything).
    Unfiltered,
}

/// Pages by tag.
pub(crate) struct TagIndex<K> {
    /// Tag → the pages that carry it.
    pages: Mutex<HashMap<Tag, Vec<K>>>,
    /// When each tag was last dropped.
    dropped: moka::future::Cache<Tag, Instant>,
    /// Most (tag, page) pairs remembered.
    max_pairs: usize,
    /// When the index was last emptied (every page's tags forgotten at once).
    cleared_at: Mutex<Option<Instant>>,
}

impl<K: Clone> TagIndex<K> {
    /// An empty index of at most `max_pairs` (tag, page) pairs.
    pub(crate) fn new(max_pairs: usize) -> Self {
        Self {
            pages: Mutex::new(HashMap::new()),
            dropped: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(DROP_MEMORY)
                .build(),
            max_pairs,
            cleared_at: Mutex::new(None),
        }
    }

    /// Records that `page` carries `tags`. `false` when the index was full and was emptied: the
    /// caller must then drop every page.
    pub(crate) fn add(&self, page: &K, tags: &[Tag]) -> bool {
        let Ok(mut pages) = self.pages.lock() else {
            return false;
        };
        let pairs: usize = pages.values().map(Vec::len).sum();
        if pairs + tags.len() > self.max_pairs {
            pages.clear();
            self.mark_cleared();
            return false;
        }
        for tag in tags {
            pages.entry(tag.clone()).or_default().push(page.clone());
        }
        true
    }

    /// The pages that carry `tag` (forgotten here), remembering when it was dropped.
    pub(crate) async fn take(&self, tag: &Tag) -> Vec<K> {
        self.dropped.insert(tag.clone(), Instant::now()).await;
        self.pages
            .lock()
            .map(|mut pages| pages.remove(tag).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Forgets every page (they are all being dropped).
    pub(crate) fn clear(&self) {
        if let Ok(mut pages) = self.pages.lock() {
            pages.clear();
        }
        self.mark_cleared();
    }

    /// Remembers that every page's tags were just forgotten.
    fn mark_cleared(&self) {
        if let Ok(mut cleared) = self.cleared_at.lock() {
            *cleared = Some(Instant::now());
        }
    }

    /// Whether one of `tags` was dropped at or after `started`.
    pub(crate) async fn dropped_since(&self, tags: &[Tag], started: Instant) -> bool {
        let cleared = self.cleared_at.lock().ok().and_then(|at| *at);
        if cleared.is_some_and(|cleared| cleared >= started) {
            return true;
        }
        for tag in tags {
            if self
                .dropped
                .get(tag)
                .await
                .is_some_and(|dropped| dropped >= started)
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(n: u32) -> Tag {
        Tag::Product(ProductId::parse(&format!("p-{n:05}")).unwrap())
    }

    #[tokio::test]
    async fn pages_are_found_by_their_tags_once() {
        let index = TagIndex::new(100);
        assert!(index.add(&"page-1", &[product(1), product(2), Tag::Unfiltered]));
        assert!(index.add(&"page-2", &[product(2)]));
        let mut pages = index.take(&product(2)).await;
        pages.sort_unstable();
        assert_eq!(pages, vec!["page-1", "page-2"]);
        assert!(
            index.take(&product(2)).await.is_empty(),
            "forgotten once taken"
        );
        assert_eq!(index.take(&Tag::Unfiltered).await, vec!["page-1"]);
    }

    #[tokio::test]
    async fn a_fetch_that_started_before_a_tag_was_dropped_is_told() {
        let index: TagIndex<&str> = TagIndex::new(100);
        let started = Instant::now();
        index.take(&product(7)).await;
        assert!(
            index
                .dropped_since(&[product(1), product(7)], started)
                .await
        );
        let later = Instant::now() + Duration::from_millis(1);
        assert!(!index.dropped_since(&[product(7)], later).await);
    }

    #[test]
    fn a_full_index_is_emptied_and_says_so() {
        let index = TagIndex::new(3);
        assert!(index.add(&1, &[product(1), product(2)]));
        assert!(!index.add(&2, &[product(3), product(4)]));
        assert!(index.pages.lock().unwrap().is_empty());
    }
}
