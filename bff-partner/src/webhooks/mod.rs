//! Webhooks (issue #22): partners are told when their orders move, by signed HTTP `POST`s to
//! endpoints they register, retried on a schedule.
//!
//! The pure building blocks, each with the policy it applies in its own `//!`:
//! - [`signature`]: [Standard Webhooks](https://www.standardwebhooks.com) v1 signatures: the
//!   endpoint [`Secret`](signature::Secret) (`whsec_…`, never printed), the `webhook-signature`
//!   header (several signatures while a secret is rotated) and message ids (`msg_…`).
//! - [`ssrf`]: which target URLs and addresses an endpoint may have (public `https://` only), and
//!   resolving a target's host to addresses the delivery then connects to, and only to.
//! - [`schedule`]: when a failed attempt is retried (`Retry-After` included), when a delivery has
//!   failed for good and when that disables its endpoint; what an attempt's answer means.
//! - [`payload`]: the event types, an endpoint's subscribed [`EventSet`](payload::EventSet), and
//!   the `{type, timestamp, data}` envelope sent as the body.
//!
//! Nothing here does I/O but [`ssrf::resolve_and_check`] (a DNS lookup). Where the state lives
//! (Redis) and the HTTP API are built on top of these modules.

pub mod payload;
pub mod schedule;
pub mod signature;
pub mod ssrf;
