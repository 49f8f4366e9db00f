//! Integration tests of `shared-clients`: the clients against wiremock (errors, tolerance,
//! headers, caching) and against the reference services (every operation end to end), and the
//! resilience layer (deadlines, retries, breakers and bulkheads, stale serving, private caching)
//! and order placement (pricing, idempotency, cart checkout) against both, counting what reaches
//! the downstream; placement across replicas shares its attempts through a private Redis.

mod breaker;
mod caching;
mod deadlines;
mod errors;
mod events;
mod headers;
mod helpers;
mod placement;
mod private_data;
mod reference;
mod retries;
mod shared_catalog;
mod shared_placement;
mod stale;
mod timing;
mod tolerance;
mod topologies;
