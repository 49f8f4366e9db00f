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
//! Nothing in those does I/O but [`ssrf::resolve_and_check`] (a DNS lookup). On top of them:
//! - [`store`]: the [`WebhookStore`](store::WebhookStore) in Redis: endpoints (with their
//!   secrets), deliveries, each endpoint's delivery log and the queue of due deliveries; its
//!   `//!` has the key layout and why the queue is safe on a Redis Cluster.
//! - [`engine`]: the delivery engine every replica runs (order events to deliveries through a
//!   consumer group, sending them with bounded concurrency, order per order, crash recovery).
//! - [`metrics`]: the engine's series (attempts by outcome and their durations, the queue, the
//!   endpoints disabled), counted from the start and shown once attached to the server's
//!   recorder.
//! - [`crate::webhook_api`]: the `/v2/webhooks` management API (scope `webhooks:manage`).
//!
//! # How the delivery engine uses the store
//!
//! The engine ([`engine`], whose `//!` says how it runs) does this in every replica:
//! 1. **Events to deliveries.** Replicas share one consumer group on the order stream. For each
//!    order event, for each enabled endpoint of the order's partner
//!    ([`endpoints`](store::WebhookStore::endpoints)) subscribed to its type, it builds the body
//!    ([`payload::Envelope`], the order in its `/v2` shape with its `version`) and calls
//!    [`create_delivery`](store::WebhookStore::create_delivery) with a delivery id derived once
//!    per (event, endpoint) and due now; then it acknowledges the event. Creating an existing id
//!    is a no-op, so an event handled twice (a consumer that died before `XACK`, claimed with
//!    `XAUTOCLAIM`) makes one delivery. The id is the `webhook-id` header.
//! 2. **Sending.** A loop calls [`due`](store::WebhookStore::due)`(now, n, now + lease)` (the
//!    lease longer than `delivery_timeout`), and for each claimed delivery, at most
//!    `max_concurrency_per_endpoint` at a time per endpoint: checks the URL again
//!    ([`ssrf::check_url`], [`ssrf::resolve_and_check`], connecting only to those addresses),
//!    signs the stored body with [`Endpoint::signing_secrets`](store::Endpoint::signing_secrets)
//!    ([`signature::signature_header`]), posts it, reads at most `response_body_limit` of the
//!    answer, and judges it with [`schedule::Schedule::outcome`], passing `attempts -
//!    redelivered_at_attempt + 1` as the attempt number.
//! 3. **Recording.** [`record_attempt`](store::WebhookStore::record_attempt) with the
//!    `attempts` it claimed (a stale record, another replica's, is dropped): `Pending` with the
//!    next time, or `Delivered`/`Failed`. On `Gone` it records `Failed` and calls
//!    [`disable_endpoint`](store::WebhookStore::disable_endpoint) with `Gone`; on `Failed` it
//!    disables with `Failing` when [`schedule::disables_endpoint`] says so (from the delivery's
//!    `first_attempt_at` and [`last_success_at`](store::WebhookStore::last_success_at)).
//! 4. **Order per order.** Before sending a delivery about an order, the engine holds back while
//!    an older version of the same order to the same endpoint is still pending (the log and the
//!    records carry `order_id` and `order_version`; the engine reads the endpoint's newest
//!    [`engine::ORDER_WINDOW`] log entries, and puts a held-back delivery back with
//!    [`schedule_redelivery`](store::WebhookStore::schedule_redelivery), which leaves a pending
//!    delivery's attempts and schedule alone).
//! 5. **Repair.** Now and then, [`resync_due_hint`](store::WebhookStore::resync_due_hint) for
//!    each configured partner.

pub mod engine;
pub mod metrics;
pub mod payload;
pub mod schedule;
pub mod signature;
pub mod ssrf;
pub mod store;
