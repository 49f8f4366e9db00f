//! Parsed documents kept by their text, so a query the web app sends again and again (every
//! page view sends the same few) is parsed once, not on every request.
//!
//! Parsing is the largest single cost of a request the catalog cache answers: measured with
//! `perf` under load, `async_graphql_parser::parse_query` took about a third of the gateway's CPU
//! (see `docs/BENCHMARKS.md`). A cached document is handed to the schema as a copy of the kept
//! tree, which is several times cheaper than parsing the text again.
//!
//! The cache is bounded by an estimate of the memory the trees take
//! (`gateway.document_cache_max_bytes`, least recently used forgotten first); a text that does not
//! parse is never kept, so unparsable input costs nothing to remember. Keys are the whole text:
//! two texts share an entry only when they are byte for byte the same.

use std::sync::Arc;

use async_graphql::parser::{parse_query, types::ExecutableDocument};

/// Bytes of parsed tree per byte of query text, measured with a counting allocator over the web
/// app's queries (43–56× the text); the estimate takes the high end.
const TREE_BYTES_PER_TEXT_BYTE: usize = 57;
/// Fixed overhead of one entry (the tree's root, the key's allocation, the cache's bookkeeping).
const ENTRY_OVERHEAD_BYTES: usize = 512;

/// Estimated memory of one kept document of `text`, in bytes.
pub fn weight(text: &str) -> u32 {
    weight_of_len(text.len())
}

/// [`weight`] of a text of `len` bytes, saturating at `u32::MAX`.
fn weight_of_len(len: usize) -> u32 {
    let bytes = len
        .saturating_mul(TREE_BYTES_PER_TEXT_BYTE)
        .saturating_add(ENTRY_OVERHEAD_BYTES);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The parsed documents, by text. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct ParsedDocuments {
    /// `None` when the cache is turned off (`max_bytes` 0).
    cache: Option<moka::future::Cache<Arc<str>, Arc<ExecutableDocument>>>,
}

impl ParsedDocuments {
    /// A cache keeping at most `max_bytes` of parsed documents (estimated by [`weight`]); 0
    /// turns it off, and every request is parsed.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            cache: (max_bytes > 0).then(|| {
                moka::future::Cache::builder()
                    .weigher(|text: &Arc<str>, _: &Arc<ExecutableDocument>| weight(text))
                    .max_capacity(max_bytes)
                    .build()
            }),
        }
    }

    /// The parsed document of `text`, from the cache when it holds it; `None` when the text does
    /// not parse (the schema then reports the syntax error itself).
    pub async fn parse(&self, text: &str) -> Option<Arc<ExecutableDocument>> {
        let Some(cache) = &self.cache else {
            return parse_query(text).ok().map(Arc::new);
        };
        if let Some(document) = cache.get(text).await {
            return Some(document);
        }
        let document = Arc::new(parse_query(text).ok()?);
        cache.insert(Arc::from(text), Arc::clone(&document)).await;
        Some(document)
    }

    /// How many documents are kept (after pending evictions are applied; for tests and metrics).
    pub async fn len(&self) -> u64 {
        match &self.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        }
    }

    /// Whether no document is kept.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "query Product($id: ID!) { product(id: $id) { id name } }";

    #[tokio::test]
    async fn a_text_is_parsed_once_and_the_same_tree_is_served_again() {
        let documents = ParsedDocuments::new(1024 * 1024);
        let first = documents.parse(QUERY).await.expect("parses");
        let second = documents.parse(QUERY).await.expect("parses");
        assert!(
            Arc::ptr_eq(&first, &second),
            "second parse came from the cache"
        );
        assert_eq!(documents.len().await, 1);
    }

    #[tokio::test]
    async fn a_text_that_differs_by_one_byte_is_another_document() {
        let documents = ParsedDocuments::new(1024 * 1024);
        let first = documents.parse(QUERY).await.expect("parses");
        let other = documents.parse(&format!("{QUERY} ")).await.expect("parses");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(documents.len().await, 2);
    }

    #[tokio::test]
    async fn unparsable_texts_are_not_kept() {
        let documents = ParsedDocuments::new(1024 * 1024);
        assert!(documents.parse("query { product(").await.is_none());
        assert!(documents.parse("query { product(").await.is_none());
        assert!(documents.is_empty().await);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let text =
            |n: usize| format!("query Q{n:02}($id: ID!) {{ product(id: $id) {{ id name }} }}");
        // Room for about three documents of this size.
        let budget = u64::from(weight(&text(0))) * 3 + 10;
        let documents = ParsedDocuments::new(budget);
        for n in 0..20 {
            documents.parse(&text(n)).await.expect("parses");
        }
        let kept = documents.len().await;
        assert!((1..=3).contains(&kept), "kept {kept} documents");
    }

    #[tokio::test]
    async fn turned_off_it_parses_every_time_and_keeps_nothing() {
        let documents = ParsedDocuments::new(0);
        let first = documents.parse(QUERY).await.expect("parses");
        let second = documents.parse(QUERY).await.expect("parses");
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(documents.is_empty().await);
    }

    #[test]
    fn the_weight_grows_with_the_text() {
        assert!(weight("{ a }") < weight(QUERY));
        assert_eq!(weight(""), 512);
        assert_eq!(weight_of_len(usize::MAX), u32::MAX);
        assert_eq!(weight_of_len(100 * 1024 * 1024), u32::MAX);
    }
}
