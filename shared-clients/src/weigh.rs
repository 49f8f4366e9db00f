//! [`Weigh`]: how many bytes a kept value takes, for the stores that are bounded in bytes rather
//! than in entries: the public and private caches, and the order placement's remembered attempts
//! (which weigh the orders they hold with it).
//!
//! A leaf module: it depends on nothing in the crate, so the types it weighs (ids, the contract's
//! data) can implement it next to their definitions without depending on the caches. Estimates
//! count the value's inline size plus what it owns on the heap (strings, vectors); they are not
//! exact (allocator overhead, map nodes) but proportional to the real size.

/// Approximate memory footprint of a cached key or value, in bytes.
pub(crate) trait Weigh {
    /// Approximate size in bytes, including what the value owns on the heap.
    fn weigh(&self) -> usize;
}

/// The key of a cache with a single entry (the category list).
impl Weigh for () {
    fn weigh(&self) -> usize {
        0
    }
}

/// Keys and values of the caches' unit tests.
#[cfg(test)]
impl Weigh for u32 {
    fn weigh(&self) -> usize {
        4
    }
}
