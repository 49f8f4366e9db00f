//! Integration tests of `shared-clients`: the clients against wiremock (errors, tolerance,
//! headers, caching) and against the reference services (every operation end to end).

mod caching;
mod errors;
mod headers;
mod helpers;
mod reference;
mod tolerance;
