//! [`Staleness`]: which parts of one answer were served stale from the cache. Each request's
//! scope holds one; the product loader and the resolvers record into it while resolving; the
//! transport reads it once, for the response's `extensions`. A leaf: it imports no module of this
//! crate.

use std::sync::{Mutex, PoisonError};

use shared_clients::Freshness;

/// What of one answer was served stale (past its freshness lifetime, from the cache), so the
/// client can be told. Collected while resolving; read once at the end.
#[derive(Debug, Default)]
pub struct Staleness {
    /// The stale sources (`products`, `categories`) and the oldest age seen.
    report: Mutex<StaleReport>,
}

/// The stale parts of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaleReport {
    /// What was stale, each named once: `products`, `categories`.
    pub sources: Vec<&'static str>,
    /// The age of the oldest stale value, in seconds.
    pub max_age_seconds: f64,
}

impl Staleness {
    /// Records the freshness of a value from `source`; fresh values change nothing.
    pub fn record(&self, source: &'static str, freshness: Freshness) {
        if !freshness.is_stale() {
            return;
        }
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        if !report.sources.contains(&source) {
            report.sources.push(source);
        }
        report.max_age_seconds = report.max_age_seconds.max(freshness.age().as_secs_f64());
    }

    /// What was stale, if anything.
    pub fn report(&self) -> Option<StaleReport> {
        let report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        (!report.sources.is_empty()).then(|| report.clone())
    }
}
