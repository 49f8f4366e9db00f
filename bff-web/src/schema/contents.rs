//! [`Contents`]: what one answer was made of, for the response cache (`crate::response_cache`).
//! Each request's scope holds one; the resolvers and the product loader record every catalog
//! value they read (its tag and its [`Lifetime`]), and anything that makes the answer
//! unshareable (the viewer, a catalog page). The transport reads it once, after execution, to
//! decide whether and for how long the answer may be kept. A leaf: it imports no module of this
//! crate.

use std::sync::{Mutex, PoisonError};

use shared_clients::{Lifetime, ProductId};

/// What a cached answer depends on: a change to it drops the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentTag {
    /// One product (its `product.changed` / `product.deleted` events).
    Product(ProductId),
    /// The category list (`category.changed`).
    Categories,
}

/// What one answer was made of. Collected while resolving; read once at the end.
#[derive(Debug)]
pub struct Contents {
    /// The record, behind a lock: resolvers run concurrently.
    record: Mutex<Record>,
}

/// The collected parts of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Whether the answer may be shared at all: `false` once anything private or untagged was
    /// read.
    pub shareable: bool,
    /// Every tag read, each once.
    pub tags: Vec<ContentTag>,
    /// The shortest lifetime of what was read ([`Lifetime::UNBOUNDED`] when nothing was).
    pub lifetime: Lifetime,
}

impl Default for Contents {
    fn default() -> Self {
        Self {
            record: Mutex::new(Record {
                shareable: true,
                tags: Vec::new(),
                lifetime: Lifetime::UNBOUNDED,
            }),
        }
    }
}

impl Contents {
    /// Records that the answer shows `tags`, reusable for `lifetime`.
    pub fn read<'a>(&self, tags: impl IntoIterator<Item = &'a ProductId>, lifetime: Lifetime) {
        let mut record = self.lock();
        for id in tags {
            if !record
                .tags
                .iter()
                .any(|tag| matches!(tag, ContentTag::Product(seen) if seen == id))
            {
                record.tags.push(ContentTag::Product(id.clone()));
            }
        }
        record.lifetime = record.lifetime.shortest(lifetime);
    }

    /// Records that the answer shows the category list, reusable for `lifetime`.
    pub fn read_categories(&self, lifetime: Lifetime) {
        let mut record = self.lock();
        if !record.tags.contains(&ContentTag::Categories) {
            record.tags.push(ContentTag::Categories);
        }
        record.lifetime = record.lifetime.shortest(lifetime);
    }

    /// Records that the answer must not be shared: it read the viewer's data, or a value no tag
    /// follows (a catalog page: new products enter lists without naming them).
    pub fn unshareable(&self) {
        self.lock().shareable = false;
    }

    /// What was recorded.
    pub fn record(&self) -> Record {
        self.lock().clone()
    }

    /// The record, whatever a panicking resolver left.
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u32) -> ProductId {
        ProductId::parse(&format!("p-{n:05}")).expect("valid id")
    }

    fn lasting(seconds: u64) -> Lifetime {
        Lifetime {
            fresh_for: Duration::from_secs(seconds),
            vouched: None,
        }
    }

    #[test]
    fn tags_are_kept_once_and_the_shortest_lifetime_wins() {
        let contents = Contents::default();
        assert_eq!(contents.record().lifetime, Lifetime::UNBOUNDED);
        contents.read([&id(1), &id(2)], lasting(30));
        contents.read([&id(1)], lasting(10));
        contents.read_categories(lasting(20));
        contents.read_categories(lasting(25));
        let record = contents.record();
        assert!(record.shareable);
        assert_eq!(
            record.tags,
            vec![
                ContentTag::Product(id(1)),
                ContentTag::Product(id(2)),
                ContentTag::Categories
            ]
        );
        assert_eq!(record.lifetime, lasting(10));
    }

    #[test]
    fn anything_private_makes_the_answer_unshareable() {
        let contents = Contents::default();
        contents.read([&id(1)], lasting(30));
        contents.unshareable();
        assert!(!contents.record().shareable);
    }
}
