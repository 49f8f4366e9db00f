//! [`WebhookStore`]: partners' webhook endpoints, their deliveries and the queue of deliveries
//! due, in Redis (through [`SharedState`]). Redis is the only store: without it (or while it
//! fails) every method returns an error and the API says webhooks are unavailable; nothing is
//! kept in the process.
//!
//! # Keys
//!
//! Every key of one partner carries the hash tag `{w:<partner_id>}`, so every script below
//! touches keys of one Redis Cluster slot, and every key a script touches is passed to it in
//! `KEYS` (a cluster routes and checks a script by its declared keys; none is built inside a
//! script). Where a script's keys depend on data (the records of the deliveries in a log or due
//! set), the caller reads that data first and the script re-checks it (`<prefix>` is
//! `shared.key_prefix`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>{w:<p>}:endpoints` | sorted set | the partner's endpoint ids, scored by creation time (ms) |
//! | `<prefix>{w:<p>}:endpoint:<we_…>` | string | one [`Endpoint`] as JSON, **secrets included** |
//! | `<prefix>{w:<p>}:ok:<we_…>` | string | when a delivery to the endpoint last succeeded (ms) |
//! | `<prefix>{w:<p>}:log:<we_…>` | sorted set | the endpoint's delivery ids, all scored 0, so ordered by id: message ids are ULIDs, which sort by creation time; trimmed to the newest `deliveries_kept` |
//! | `<prefix>{w:<p>}:delivery:<msg_…>` | hash | one [`Delivery`] (its fields, the body as bytes) |
//! | `<prefix>{w:<p>}:due` | sorted set | the partner's pending delivery ids, scored by when they are due (ms); while one is being attempted, by when its lease ends |
//! | `<prefix>{webhooks}:due-partners` | sorted set | the partners with due work, scored by (at most) when their earliest delivery is due: a hint, see below |
//!
//! A delivery record lives as long as it is in its endpoint's log: trimming the log (after each
//! new delivery, of the oldest entries beyond `deliveries_kept`, read first) and deleting the
//! endpoint delete the records and their due entries in the same script. Deleting an endpoint
//! deletes its record first, in the script that deletes the deliveries its log listed when read:
//! no delivery can be created for it after that, and the few created between the read and the
//! script are deleted by a second call. (A replica dying between the two leaves those records
//! and the log behind, unreachable: their due entries are dropped when claimed.)
//!
//! **Redis holds secrets.** An endpoint's record carries its signing secret (and the previous one
//! during a rotation's overlap) in clear, because the delivery worker must sign with it. Treat
//! that Redis (its backups, `MONITOR`, replicas) as a secret store: require a password or ACL, TLS
//! (`rediss://`) across networks, no access for people who may not see partner secrets. In this
//! process, the record's `Debug` shows no secret, the store never logs one, and the API returns a
//! secret only in the response that created it (endpoint creation, rotation).
//!
//! # The due queue, and why it is cluster-safe
//!
//! A single global due set of every partner's deliveries could not be updated in the same script
//! as a delivery record (different slots). So the due set is per partner (same slot as its
//! records: creating, attempting, redelivering and claiming a delivery are each one atomic
//! script), and one global sorted set, `{webhooks}:due-partners`, says which partners to look
//! at. It is only ever touched by single-key commands, and it is a hint whose errors are safe:
//! - Writers (a new delivery, a redelivery, a retry scheduled) lower a partner's hint to the
//!   delivery's due time (`ZADD … LT`, which also adds a missing one): before their script and
//!   again after it. A hint too early costs one empty look at the partner.
//! - [`WebhookStore::due`] takes the partners whose hint is due and, in the same script, moves
//!   their hints to the end of the lease (so a replica that dies in the middle only delays them by
//!   a lease). It then claims the partner's due deliveries (one script in the partner's slot:
//!   only pending records of existing endpoints are returned; each claimed entry is re-scored to
//!   the lease's end, so a replica that dies while sending leaves it to be claimed again), and
//!   lowers the hint to the partner's earliest remaining entry; when none is left it removes the
//!   hint only if it still holds its own lease value (a writer that lowered it meanwhile wins),
//!   then looks at the partner's due set once more and puts the hint back if a writer added an
//!   entry in between. Hints are never raised by writers, so no writer's hint is overwritten.
//! - One window remains: a writer that dies between its script and its second hint, while a
//!   replica consumed the first one. [`WebhookStore::resync_due_hint`] (called by the engine
//!   now and then for each configured partner) closes it.
//!
//! A claimed delivery is attempted by one replica at a time while its lease lasts, at least once
//! in all. [`WebhookStore::record_attempt`] takes the number of attempts the caller saw: an
//! attempt recorded meanwhile by another replica (whose lease had ended) makes it a no-op
//! ([`Recorded::Stale`]), so an attempt is never counted twice.

use std::{collections::HashMap, fmt};

use rand::Rng;
use redis::Value;
use serde::{Deserialize, Serialize};
use shared_clients::{
    PartnerId, TraceContext,
    shared_state::{Feature, SharedError, SharedState},
};

use super::{
    payload::{EventSet, EventType},
    signature::{Secret, new_message_id},
};

/// What an endpoint id starts with.
pub const ENDPOINT_ID_PREFIX: &str = "we_";
/// The longest description of an endpoint, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The longest `last_error` kept for a delivery, in characters (longer ones are cut).
pub const MAX_ERROR_CHARS: usize = 300;
/// How many deliveries are kept per endpoint by default (the newest).
pub const DEFAULT_DELIVERIES_KEPT: usize = 1000;
/// Calls of the delete script at most per endpoint deleted: the first deletes the endpoint (no
/// delivery can be created for it after), a second the deliveries created while it read the log.
const DELETE_ROUNDS: usize = 3;

/// The label of every Redis operation of this module, in `bff_redis_errors_total{op}`.
const OP: &str = "webhooks";

/// Why an endpoint is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// Deliveries failed for a whole retry schedule.
    Failing,
    /// The partner disabled it.
    Partner,
}

impl DisabledReason {
    /// The name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Failing => "failing",
            Self::Partner => "partner",
        }
    }
}

/// The secret an endpoint had before its last rotation, still signing until `expires_at`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PreviousSecret {
    /// Its text (`whsec_…`).
    secret: String,
    /// When it stops signing (Unix ms).
    expires_at: u64,
}

/// A partner's webhook endpoint, as stored (JSON under `endpoint:<id>`).
///
/// `Debug` shows no secret; there is no way to read one but [`Endpoint::signing_secrets`] (for
/// the delivery) and the secret returned by creation and rotation.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `we_` and 26 random characters; unique per partner.
    pub id: String,
    /// The partner that registered it: the only one that sees it and whose events it gets.
    pub partner: PartnerId,
    /// Where deliveries go, as normalised by [`super::ssrf::check_url`] when it was set.
    pub url: String,
    /// The event types delivered to it.
    pub events: EventSet,
    /// The partner's note, at most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: Option<String>,
    /// Whether deliveries are made; a disabled endpoint's due deliveries end as failed.
    pub enabled: bool,
    /// Why it is disabled (set with `enabled = false`).
    pub disabled_reason: Option<DisabledReason>,
    /// When it was registered (Unix ms).
    pub created_at: u64,
    /// When it last changed (Unix ms), secret rotations included.
    pub updated_at: u64,
    /// The current signing secret (`whsec_…`).
    secret: String,
    /// The secret before the last rotation, while its overlap lasts.
    previous_secret: Option<PreviousSecret>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("partner", &self.partner)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The secrets a delivery attempt at `now_ms` is signed with: the current one, then the
    /// previous one while its overlap lasts. A stored secret that does not parse is skipped.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<Secret> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|previous| previous.expires_at > now_ms)
            .map(|previous| previous.secret.as_str());
        std::iter::once(self.secret.as_str())
            .chain(previous)
            .filter_map(|text| Secret::parse(text).ok())
            .collect()
    }

    /// Until when (Unix ms) the previous secret still signs, if it does at `now_ms`.
    pub fn previous_secret_expires_at(&self, now_ms: u64) -> Option<u64> {
        self.previous_secret
            .as_ref()
            .map(|previous| previous.expires_at)
            .filter(|&expires_at| expires_at > now_ms)
    }
}

/// An endpoint to register, already checked (URL, events, description).
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// The checked URL.
    pub url: String,
    /// The subscribed events.
    pub events: EventSet,
    /// The description.
    pub description: Option<String>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// A new, checked URL.
    pub url: Option<String>,
    /// New subscribed events.
    pub events: Option<EventSet>,
    /// A new description (`Some(None)` removes it).
    pub description: Option<Option<String>>,
    /// Enable (clears `disabled_reason`) or disable (by the partner).
    pub enabled: Option<bool>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// To be attempted (again) at `next_attempt_at`.
    Pending,
    /// A `2xx` answered.
    Delivered,
    /// Failed for good (schedule exhausted, `410`, endpoint disabled); can be redelivered.
    Failed,
}

impl DeliveryOutcome {
    /// The name, as stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The outcome named `name`.
    fn parse(name: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

/// A delivery to make: one event for one endpoint (a hash under `delivery:<msg_…>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `msg_…`, from [`new_message_id`]: the `webhook-id` header of every attempt.
    pub id: String,
    /// The endpoint it goes to.
    pub endpoint_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// The order it is about (none for `ping`).
    pub order_id: Option<String>,
    /// The order's version in the payload, so the engine keeps an order's events in order.
    pub order_version: Option<u64>,
    /// The exact bytes sent and signed on every attempt.
    pub body: Vec<u8>,
    /// When it was created (Unix ms).
    pub created_at: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// `attempts` when it was last redelivered by hand: the retry schedule restarts there
    /// (the engine passes `attempts - redelivered_at_attempt` to the schedule).
    pub redelivered_at_attempt: u32,
    /// When the first attempt since creation (or the last redelivery) was made (Unix ms), for
    /// [`super::schedule::disables_endpoint`].
    pub first_attempt_at: Option<u64>,
    /// When the last attempt was made (Unix ms).
    pub last_attempt_at: Option<u64>,
    /// The status the last attempt got, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (timeout, connection refused, …), cut to
    /// [`MAX_ERROR_CHARS`]; for a status, the start of the response body.
    pub last_error: Option<String>,
    /// When the next attempt is due (Unix ms), while pending.
    pub next_attempt_at: Option<u64>,
    /// Where it is.
    pub outcome: DeliveryOutcome,
    /// The trace context of the request that caused its event (fields `traceparent` and
    /// `tracestate` of the record), so that every attempt, a retry or one made by another
    /// replica, is a span in that request's trace.
    pub trace: Option<TraceContext>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is the partner's order: not for logs.
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// A delivery to create.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id (`msg_…`): make it once per event and endpoint ([`new_message_id`]), so creating
    /// it again (an event read twice) is a no-op.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// The order, for order events.
    pub order_id: Option<String>,
    /// The order's version, for order events.
    pub order_version: Option<u64>,
    /// The body ([`super::payload::Envelope::to_body`]).
    pub body: Vec<u8>,
    /// The trace context its event carried, kept with the delivery (see [`Delivery::trace`]).
    pub trace: Option<TraceContext>,
}

/// What one attempt came to, for [`WebhookStore::record_attempt`].
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// When it was made (Unix ms).
    pub at: u64,
    /// The status it got, if any.
    pub status: Option<u16>,
    /// Why it failed, if it did (cut to [`MAX_ERROR_CHARS`] when stored).
    pub error: Option<String>,
    /// `Pending` with the next attempt's time, or the final outcome.
    pub outcome: DeliveryOutcome,
    /// When the next attempt is due (Unix ms), for `Pending`.
    pub next_attempt_at: Option<u64>,
}

/// Whether [`WebhookStore::record_attempt`] recorded anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded (and the due queue updated).
    Yes,
    /// Another replica recorded that attempt first; nothing changed.
    Stale,
}

/// A delivery claimed by [`WebhookStore::due`], with its endpoint, leased to the caller.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The partner.
    pub partner: PartnerId,
    /// The delivery (pending).
    pub delivery: Delivery,
    /// Its endpoint (enabled).
    pub endpoint: Endpoint,
}

/// One page of an endpoint's deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// Newest first; without bodies.
    pub items: Vec<Delivery>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No Redis is configured: webhooks are off.
    #[error("webhooks need shared.redis_url")]
    Disabled,
    /// Redis failed or is being skipped after a failure; try again later.
    #[error("the webhook store is unavailable: {0}")]
    Unavailable(SharedError),
    /// No such endpoint or delivery for this partner.
    #[error("not found")]
    NotFound,
    /// The partner has as many endpoints as allowed.
    #[error("at most {0} webhook endpoints per partner")]
    TooManyEndpoints(u32),
    /// Concurrent changes to the same endpoint kept winning; try again.
    #[error("the endpoint changed concurrently")]
    Conflict,
}

impl From<SharedError> for StoreError {
    fn from(error: SharedError) -> Self {
        match error {
            SharedError::Disabled => Self::Disabled,
            other => Self::Unavailable(other),
        }
    }
}

/// The settings of a [`WebhookStore`].
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// `gateway.webhooks.max_endpoints_per_partner`.
    pub max_endpoints: u32,
    /// `gateway.webhooks.deliveries_kept`.
    pub deliveries_kept: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_endpoints: 20,
            deliveries_kept: DEFAULT_DELIVERIES_KEPT,
        }
    }
}

/// Registers the endpoint if the partner has fewer than `max`: 1, 0 (too many), -1 (id taken).
const CREATE_ENDPOINT: &str = r"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX') then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
";

/// Replaces the endpoint's JSON if it is still `ARGV[1]`: 1, 0 (changed), -1 (gone).
const REPLACE_ENDPOINT: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Deletes an endpoint with the deliveries declared (`KEYS[6..]`, their ids `ARGV[3..]`) and
/// their due entries. The endpoint record goes first (when `ARGV[2]` is `1` it must exist), so no
/// delivery can be created for it afterwards: 1 (done), 2 (the log holds deliveries created
/// since the caller read it: call again with those, `ARGV[2]` = `0`), 0 (no such endpoint).
const DELETE_ENDPOINT: &str = r"
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('UNLINK', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 6, #KEYS do
  local id = ARGV[i - 3]
  redis.call('UNLINK', KEYS[i])
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
if redis.call('ZCARD', KEYS[3]) > 0 then return 2 end
redis.call('UNLINK', KEYS[3], KEYS[5])
return 1
";

/// Creates a delivery (unless it exists), logs it and queues it. Answers {1 (created), 0 (it
/// existed) or -1 (no such endpoint), the log's length}: the caller trims the log
/// ([`TRIM_LOG`]).
const CREATE_DELIVERY: &str = r"
if redis.call('EXISTS', KEYS[4]) == 0 then return {-1, 0} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('ZCARD', KEYS[2])} end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {1, redis.call('ZCARD', KEYS[2])}
";

/// Trims an endpoint's log (`KEYS[1]`) to its newest `ARGV[1]` entries: of the deliveries
/// declared (`KEYS[3..]`, their ids `ARGV[2..]`), deletes those still beyond the newest
/// `ARGV[1]`, with their log and due (`KEYS[2]`) entries. Answers how many it deleted.
const TRIM_LOG: &str = r"
local kept = tonumber(ARGV[1])
local deleted = 0
for i = 3, #KEYS do
  local id = ARGV[i - 1]
  local rank = redis.call('ZRANK', KEYS[1], id)
  if rank and rank < redis.call('ZCARD', KEYS[1]) - kept then
    redis.call('UNLINK', KEYS[i])
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    deleted = deleted + 1
  end
end
return deleted
";

/// Records an attempt if the delivery still has `ARGV[2]` attempts: 1, 0 (stale), -1 (gone).
const RECORD_ATTEMPT: &str = r"
local attempts = redis.call('HGET', KEYS[1], 'attempts')
if not attempts then return -1 end
if tonumber(attempts) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'attempts', tonumber(attempts) + 1, 'last_attempt_at', ARGV[3],
  'last_status', ARGV[4], 'last_error', ARGV[5], 'outcome', ARGV[6], 'next_attempt_at', ARGV[7])
redis.call('HSETNX', KEYS[1], 'first_attempt_at', ARGV[3])
if ARGV[6] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[6] == 'delivered' then
  local last = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[3]) > last then redis.call('SET', KEYS[3], ARGV[3]) end
end
return 1
";

/// Ends a pending delivery as failed without an attempt (`ARGV[2]` says why): 1, 0 (not
/// pending), -1 (gone).
const ABANDON: &str = r"
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if not outcome then return -1 end
if outcome ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'outcome', 'failed', 'last_error', ARGV[2], 'next_attempt_at', '0')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
";

/// Makes a delivery due at `ARGV[2]`; a finished one restarts its schedule: 1, -1 (gone).
const REDELIVER: &str = r"
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if not outcome then return -1 end
if outcome ~= 'pending' then
  local attempts = redis.call('HGET', KEYS[1], 'attempts')
  redis.call('HSET', KEYS[1], 'outcome', 'pending', 'redelivered_at_attempt', attempts)
  redis.call('HDEL', KEYS[1], 'first_attempt_at')
end
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
";

/// Takes the partners whose hint is due (at most `ARGV[2]`) and moves their hints to `ARGV[3]`.
const POLL_PARTNERS: &str = r"
local partners = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, partner in ipairs(partners) do
  redis.call('ZADD', KEYS[1], ARGV[3], partner)
end
return partners
";

/// Claims the deliveries declared (`ARGV[3]` = n of them: ids `ARGV[4..]`, then for each the
/// index in KEYS of its endpoint's key or 0, then its endpoint id), read from the partner's due
/// set (`KEYS[1]`) by the caller, with their records (`KEYS[2..n+1]`) and their endpoints'
/// records (after those). Each still due at `ARGV[1]` is leased until `ARGV[2]`; a due entry
/// whose record is gone or not pending, or whose endpoint is gone, is dropped. Answers the
/// earliest remaining due time (or '') then, per claimed delivery, its fields and its endpoint's
/// JSON.
const CLAIM: &str = r"
local now, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local out = {''}
for i = 1, n do
  local id = ARGV[3 + i]
  local at = redis.call('ZSCORE', KEYS[1], id)
  if at and tonumber(at) <= now then
    local fields = redis.call('HGETALL', KEYS[1 + i])
    local delivery = {}
    for j = 1, #fields, 2 do delivery[fields[j]] = fields[j + 1] end
    local slot = tonumber(ARGV[3 + n + i])
    if delivery['outcome'] ~= 'pending' then
      redis.call('ZREM', KEYS[1], id)
    elseif slot > 0 and delivery['endpoint_id'] == ARGV[3 + 2 * n + i] then
      local endpoint = redis.call('GET', KEYS[slot])
      if endpoint then
        redis.call('ZADD', KEYS[1], ARGV[2], id)
        table.insert(out, fields)
        table.insert(out, endpoint)
      else
        redis.call('ZREM', KEYS[1], id)
      end
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[1] = first[2] end
return out
";

/// Removes a partner's hint if it still is `ARGV[1]` (the poller's lease).
const DROP_HINT: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return 1
";

/// The fields of a delivery listed without its body.
const SUMMARY_FIELDS: [&str; 14] = [
    "id",
    "endpoint_id",
    "event_type",
    "order_id",
    "order_version",
    "created_at",
    "attempts",
    "redelivered_at_attempt",
    "first_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "next_attempt_at",
    "outcome",
];

/// Partners' webhook endpoints and deliveries in Redis. Cheap to clone.
#[derive(Clone)]
pub struct WebhookStore {
    /// Redis, with its timeout, back-off and counters.
    shared: SharedState,
    /// Limits.
    settings: StoreSettings,
    /// The scripts above, their SHA-1s computed once.
    scripts: std::sync::Arc<Scripts>,
}

/// The store's scripts.
struct Scripts {
    create_endpoint: redis::Script,
    replace_endpoint: redis::Script,
    delete_endpoint: redis::Script,
    create_delivery: redis::Script,
    trim_log: redis::Script,
    record_attempt: redis::Script,
    abandon: redis::Script,
    redeliver: redis::Script,
    poll_partners: redis::Script,
    claim: redis::Script,
    drop_hint: redis::Script,
}

impl fmt::Debug for WebhookStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookStore")
            .field("enabled", &self.shared.is_enabled())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl WebhookStore {
    /// A store in `shared` (disabled when `shared` is: every method is then
    /// [`StoreError::Disabled`]).
    pub fn new(shared: SharedState, settings: StoreSettings) -> Self {
        Self {
            shared,
            settings,
            scripts: std::sync::Arc::new(Scripts {
                create_endpoint: redis::Script::new(CREATE_ENDPOINT),
                replace_endpoint: redis::Script::new(REPLACE_ENDPOINT),
                delete_endpoint: redis::Script::new(DELETE_ENDPOINT),
                create_delivery: redis::Script::new(CREATE_DELIVERY),
                trim_log: redis::Script::new(TRIM_LOG),
                record_attempt: redis::Script::new(RECORD_ATTEMPT),
                abandon: redis::Script::new(ABANDON),
                redeliver: redis::Script::new(REDELIVER),
                poll_partners: redis::Script::new(POLL_PARTNERS),
                claim: redis::Script::new(CLAIM),
                drop_hint: redis::Script::new(DROP_HINT),
            }),
        }
    }

    /// Whether Redis is configured (else webhooks are off).
    pub fn is_enabled(&self) -> bool {
        self.shared.is_enabled()
    }

    /// `shared.retry_after`-like hint for a 503: how long Redis is skipped after a failure.
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// A key of `partner`'s: `<prefix>{w:<partner>}:<rest>`.
    fn key(&self, partner: &PartnerId, rest: &str) -> String {
        self.shared.key(&format!("w:{}", partner.as_str()), rest)
    }

    /// The global hint set of partners with due work.
    fn hints_key(&self) -> String {
        self.shared.key("webhooks", "due-partners")
    }

    /// Registers an endpoint for `partner` at `now_ms`, with a new secret; returns it and the
    /// secret (to show once).
    pub async fn create_endpoint(
        &self,
        partner: &PartnerId,
        new: NewEndpoint,
        now_ms: u64,
    ) -> Result<(Endpoint, Secret), StoreError> {
        let secret = Secret::generate();
        let endpoint = Endpoint {
            id: new_endpoint_id(),
            partner: partner.clone(),
            url: new.url,
            events: new.events,
            description: new.description,
            enabled: true,
            disabled_reason: None,
            created_at: now_ms,
            updated_at: now_ms,
            secret: secret.expose(),
            previous_secret: None,
        };
        let json = to_json(&endpoint);
        let mut invocation = self.scripts.create_endpoint.prepare_invoke();
        invocation
            .key(self.key(partner, "endpoints"))
            .key(self.key(partner, &format!("endpoint:{}", endpoint.id)))
            .arg(&endpoint.id)
            .arg(now_ms)
            .arg(json)
            .arg(self.settings.max_endpoints);
        let created: i64 = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        match created {
            1 => Ok((endpoint, secret)),
            0 => Err(StoreError::TooManyEndpoints(self.settings.max_endpoints)),
            // 130 random bits collided: practically never; the caller may retry.
            _ => Err(StoreError::Conflict),
        }
    }

    /// `partner`'s endpoints, oldest first.
    pub async fn endpoints(&self, partner: &PartnerId) -> Result<Vec<Endpoint>, StoreError> {
        let ids: Vec<String> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZRANGE")
                    .arg(self.key(partner, "endpoints"))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(partner, &format!("endpoint:{id}")))
            .collect();
        // One slot: MGET is not cross-slot.
        let values: Vec<Option<String>> = self
            .shared
            .query(OP, Feature::Webhooks, redis::cmd("MGET").arg(&keys))
            .await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|json| self.parse_endpoint(&json, partner))
            .collect())
    }

    /// `partner`'s endpoint `id` (another partner's is [`StoreError::NotFound`]).
    pub async fn endpoint(&self, partner: &PartnerId, id: &str) -> Result<Endpoint, StoreError> {
        self.endpoint_json(partner, id)
            .await
            .map(|(endpoint, _)| endpoint)
    }

    /// The endpoint and its stored JSON.
    async fn endpoint_json(
        &self,
        partner: &PartnerId,
        id: &str,
    ) -> Result<(Endpoint, String), StoreError> {
        if !is_endpoint_id(id) {
            return Err(StoreError::NotFound);
        }
        let json: Option<String> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("GET").arg(self.key(partner, &format!("endpoint:{id}"))),
            )
            .await?;
        let json = json.ok_or(StoreError::NotFound)?;
        let endpoint = self
            .parse_endpoint(&json, partner)
            .ok_or(StoreError::NotFound)?;
        Ok((endpoint, json))
    }

    /// A stored endpoint, if it is one of `partner`'s (garbage is counted and is no endpoint).
    fn parse_endpoint(&self, json: &str, partner: &PartnerId) -> Option<Endpoint> {
        match serde_json::from_str::<Endpoint>(json) {
            Ok(endpoint) if endpoint.partner == *partner => Some(endpoint),
            _ => {
                self.shared.count_garbage(OP, Feature::Webhooks);
                None
            }
        }
    }

    /// Changes `partner`'s endpoint `id` with `change` (retried on a concurrent change).
    async fn update_endpoint(
        &self,
        partner: &PartnerId,
        id: &str,
        mut change: impl FnMut(&mut Endpoint),
    ) -> Result<Endpoint, StoreError> {
        for _ in 0..5 {
            let (mut endpoint, old) = self.endpoint_json(partner, id).await?;
            change(&mut endpoint);
            let mut invocation = self.scripts.replace_endpoint.prepare_invoke();
            invocation
                .key(self.key(partner, &format!("endpoint:{id}")))
                .arg(old)
                .arg(to_json(&endpoint));
            let replaced: i64 = self
                .shared
                .script(OP, Feature::Webhooks, &invocation)
                .await?;
            match replaced {
                1 => return Ok(endpoint),
                0 => continue,
                _ => return Err(StoreError::NotFound),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Applies `patch` to `partner`'s endpoint `id` at `now_ms`. Enabling clears
    /// `disabled_reason`; disabling sets it to [`DisabledReason::Partner`].
    pub async fn patch_endpoint(
        &self,
        partner: &PartnerId,
        id: &str,
        patch: EndpointPatch,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError> {
        self.update_endpoint(partner, id, |endpoint| {
            if let Some(url) = &patch.url {
                endpoint.url.clone_from(url);
            }
            if let Some(events) = &patch.events {
                endpoint.events = events.clone();
            }
            if let Some(description) = &patch.description {
                endpoint.description.clone_from(description);
            }
            match patch.enabled {
                Some(true) => {
                    endpoint.enabled = true;
                    endpoint.disabled_reason = None;
                }
                Some(false) if endpoint.enabled => {
                    endpoint.enabled = false;
                    endpoint.disabled_reason = Some(DisabledReason::Partner);
                }
                _ => {}
            }
            endpoint.updated_at = now_ms;
        })
        .await
    }

    /// Disables `partner`'s endpoint `id` for `reason` (the engine: `410`, failing for a whole
    /// schedule).
    pub async fn disable_endpoint(
        &self,
        partner: &PartnerId,
        id: &str,
        reason: DisabledReason,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError> {
        self.update_endpoint(partner, id, |endpoint| {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some(reason);
            endpoint.updated_at = now_ms;
        })
        .await
    }

    /// Gives `partner`'s endpoint `id` a new secret at `now_ms`; the current one becomes the
    /// previous one and keeps signing until `now_ms + overlap_ms` (a previous one still in its
    /// overlap is dropped: at most two secrets sign). Returns the endpoint and the new secret.
    pub async fn rotate_secret(
        &self,
        partner: &PartnerId,
        id: &str,
        overlap_ms: u64,
        now_ms: u64,
    ) -> Result<(Endpoint, Secret), StoreError> {
        let secret = Secret::generate();
        let text = secret.expose();
        let endpoint = self
            .update_endpoint(partner, id, |endpoint| {
                let old = std::mem::replace(&mut endpoint.secret, text.clone());
                endpoint.previous_secret = (overlap_ms > 0).then(|| PreviousSecret {
                    secret: old,
                    expires_at: now_ms.saturating_add(overlap_ms),
                });
                endpoint.updated_at = now_ms;
            })
            .await?;
        Ok((endpoint, secret))
    }

    /// Deletes `partner`'s endpoint `id` with its deliveries (pending ones are never sent).
    pub async fn delete_endpoint(&self, partner: &PartnerId, id: &str) -> Result<(), StoreError> {
        if !is_endpoint_id(id) {
            return Err(StoreError::NotFound);
        }
        let log = self.key(partner, &format!("log:{id}"));
        // The log lists every delivery record of the endpoint: read it, then delete the
        // endpoint with them (every key a script touches is declared). Deliveries created in
        // between are left in the log, and deleted by a second call; none can be created after
        // the first, which deletes the endpoint.
        for round in 0..DELETE_ROUNDS {
            let ids: Vec<String> = self
                .shared
                .query(
                    OP,
                    Feature::Webhooks,
                    redis::cmd("ZRANGE").arg(&log).arg(0).arg(-1),
                )
                .await?;
            let mut invocation = self.scripts.delete_endpoint.prepare_invoke();
            invocation
                .key(self.key(partner, "endpoints"))
                .key(self.key(partner, &format!("endpoint:{id}")))
                .key(&log)
                .key(self.key(partner, "due"))
                .key(self.key(partner, &format!("ok:{id}")))
                .arg(id)
                .arg(if round == 0 { "1" } else { "0" });
            for delivery in &ids {
                invocation
                    .key(self.key(partner, &format!("delivery:{delivery}")))
                    .arg(delivery);
            }
            let deleted: i64 = self
                .shared
                .script(OP, Feature::Webhooks, &invocation)
                .await?;
            match deleted {
                1 => return Ok(()),
                2 => continue,
                _ => return Err(StoreError::NotFound),
            }
        }
        // Deleted, but deliveries kept being logged (they cannot be: see above).
        Ok(())
    }

    /// When a delivery to `partner`'s endpoint `id` last succeeded (Unix ms), for
    /// [`super::schedule::disables_endpoint`].
    pub async fn last_success_at(
        &self,
        partner: &PartnerId,
        id: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("GET").arg(self.key(partner, &format!("ok:{id}"))),
            )
            .await?)
    }

    /// Creates a delivery for `partner`, due at `due_ms`: logged first in its endpoint's log
    /// (trimmed to `deliveries_kept`) and queued. Creating an id that exists is a no-op (`false`),
    /// so an event handled twice makes one delivery. [`StoreError::NotFound`] when the endpoint
    /// does not exist.
    pub async fn create_delivery(
        &self,
        partner: &PartnerId,
        new: &NewDelivery,
        now_ms: u64,
        due_ms: u64,
    ) -> Result<bool, StoreError> {
        self.lower_hint(partner, due_ms).await?;
        let mut invocation = self.scripts.create_delivery.prepare_invoke();
        invocation
            .key(self.key(partner, &format!("delivery:{}", new.id)))
            .key(self.key(partner, &format!("log:{}", new.endpoint_id)))
            .key(self.key(partner, "due"))
            .key(self.key(partner, &format!("endpoint:{}", new.endpoint_id)))
            .arg(&new.id)
            .arg(due_ms);
        invocation
            .arg("id")
            .arg(&new.id)
            .arg("endpoint_id")
            .arg(&new.endpoint_id)
            .arg("event_type")
            .arg(new.event_type.as_str())
            .arg("body")
            .arg(new.body.as_slice())
            .arg("created_at")
            .arg(now_ms)
            .arg("attempts")
            .arg(0)
            .arg("redelivered_at_attempt")
            .arg(0)
            .arg("outcome")
            .arg(DeliveryOutcome::Pending.as_str())
            .arg("next_attempt_at")
            .arg(due_ms);
        if let Some(order_id) = &new.order_id {
            invocation.arg("order_id").arg(order_id);
        }
        if let Some(version) = new.order_version {
            invocation.arg("order_version").arg(version);
        }
        if let Some(trace) = &new.trace {
            invocation
                .arg("traceparent")
                .arg(trace.traceparent().as_str());
            if let Some(tracestate) = trace.tracestate() {
                invocation.arg("tracestate").arg(tracestate);
            }
        }
        let (created, logged): (i64, usize) = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        if created < 0 {
            return Err(StoreError::NotFound);
        }
        self.lower_hint(partner, due_ms).await?;
        if logged > self.settings.deliveries_kept {
            self.trim_log(partner, &new.endpoint_id, logged).await?;
        }
        Ok(created == 1)
    }

    /// Trims `partner`'s endpoint `endpoint`'s log, `logged` long, to the newest
    /// `deliveries_kept`, deleting the records of the deliveries trimmed and their due entries.
    async fn trim_log(
        &self,
        partner: &PartnerId,
        endpoint: &str,
        logged: usize,
    ) -> Result<(), StoreError> {
        let log = self.key(partner, &format!("log:{endpoint}"));
        let extra = logged.saturating_sub(self.settings.deliveries_kept);
        let oldest: Vec<String> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZRANGE").arg(&log).arg(0).arg(extra - 1),
            )
            .await?;
        if oldest.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.trim_log.prepare_invoke();
        invocation
            .key(&log)
            .key(self.key(partner, "due"))
            .arg(self.settings.deliveries_kept);
        for id in &oldest {
            invocation
                .key(self.key(partner, &format!("delivery:{id}")))
                .arg(id);
        }
        let _: i64 = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        Ok(())
    }

    /// A `ping` delivery to `partner`'s endpoint `endpoint`, due now: its body is the ping
    /// envelope whose `data` names the endpoint. Returns it.
    pub async fn create_ping(
        &self,
        partner: &PartnerId,
        endpoint: &Endpoint,
        now_ms: u64,
    ) -> Result<Delivery, StoreError> {
        let timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(now_ms).saturating_mul(1_000_000),
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let data = serde_json::json!({ "endpoint_id": endpoint.id, "url": endpoint.url });
        let body = super::payload::Envelope::from_data(EventType::Ping, timestamp, &data)
            .and_then(|envelope| envelope.to_body())
            .unwrap_or_default();
        let new = NewDelivery {
            id: new_message_id(),
            endpoint_id: endpoint.id.clone(),
            event_type: EventType::Ping,
            order_id: None,
            order_version: None,
            body,
            trace: None,
        };
        self.create_delivery(partner, &new, now_ms, now_ms).await?;
        self.delivery(partner, &endpoint.id, &new.id).await
    }

    /// One page of `partner`'s endpoint `endpoint`'s deliveries, newest first, after `cursor` (a
    /// page's `next_cursor`), at most `limit`, without bodies. The endpoint is not checked:
    /// check it first.
    pub async fn deliveries(
        &self,
        partner: &PartnerId,
        endpoint: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeliveryPage, StoreError> {
        let start = match cursor {
            Some(cursor) => format!("({cursor}"),
            None => "+".to_owned(),
        };
        let mut ids: Vec<String> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZREVRANGEBYLEX")
                    .arg(self.key(partner, &format!("log:{endpoint}")))
                    .arg(start)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit.saturating_add(1)),
            )
            .await?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(partner, &format!("delivery:{id}")))
                .arg(&SUMMARY_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = if ids.is_empty() {
            Vec::new()
        } else {
            self.shared.pipeline(OP, Feature::Webhooks, &pipe).await?
        };
        let items: Vec<Delivery> = rows
            .into_iter()
            .filter_map(|row| {
                let fields: HashMap<String, Vec<u8>> = SUMMARY_FIELDS
                    .iter()
                    .zip(row)
                    .filter_map(|(name, value)| Some(((*name).to_owned(), value?)))
                    .collect();
                // A record trimmed or deleted between the two reads is skipped.
                (!fields.is_empty())
                    .then(|| self.parse_delivery(fields))
                    .flatten()
            })
            .collect();
        Ok(DeliveryPage {
            next_cursor: more.then(|| ids.last().cloned()).flatten(),
            items,
        })
    }

    /// `partner`'s delivery `id` to endpoint `endpoint`, with its body.
    pub async fn delivery(
        &self,
        partner: &PartnerId,
        endpoint: &str,
        id: &str,
    ) -> Result<Delivery, StoreError> {
        if !is_message_id(id) {
            return Err(StoreError::NotFound);
        }
        let fields: HashMap<String, Vec<u8>> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("HGETALL").arg(self.key(partner, &format!("delivery:{id}"))),
            )
            .await?;
        if fields.is_empty() {
            return Err(StoreError::NotFound);
        }
        self.parse_delivery(fields)
            .filter(|delivery| delivery.endpoint_id == endpoint)
            .ok_or(StoreError::NotFound)
    }

    /// A delivery from its hash fields (garbage is counted and is no delivery).
    fn parse_delivery(&self, fields: HashMap<String, Vec<u8>>) -> Option<Delivery> {
        let parsed = parse_delivery(fields);
        if parsed.is_none() {
            self.shared.count_garbage(OP, Feature::Webhooks);
        }
        parsed
    }

    /// Records attempt number `seen_attempts + 1` of `partner`'s delivery `id` (the caller saw
    /// `seen_attempts` when it claimed it): its result, and either its next due time (re-queued)
    /// or its final outcome (unqueued; a success also updates [`WebhookStore::last_success_at`]).
    pub async fn record_attempt(
        &self,
        partner: &PartnerId,
        endpoint: &str,
        id: &str,
        seen_attempts: u32,
        attempt: &AttemptRecord,
    ) -> Result<Recorded, StoreError> {
        let next = match attempt.outcome {
            DeliveryOutcome::Pending => attempt.next_attempt_at.unwrap_or(attempt.at),
            _ => 0,
        };
        if attempt.outcome == DeliveryOutcome::Pending {
            self.lower_hint(partner, next).await?;
        }
        let error = attempt
            .error
            .as_deref()
            .map(|error| truncate(error, MAX_ERROR_CHARS))
            .unwrap_or_default();
        let mut invocation = self.scripts.record_attempt.prepare_invoke();
        invocation
            .key(self.key(partner, &format!("delivery:{id}")))
            .key(self.key(partner, "due"))
            .key(self.key(partner, &format!("ok:{endpoint}")))
            .arg(id)
            .arg(seen_attempts)
            .arg(attempt.at)
            .arg(attempt.status.unwrap_or(0))
            .arg(error)
            .arg(attempt.outcome.as_str())
            .arg(next);
        let recorded: i64 = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        match recorded {
            1 => {
                if attempt.outcome == DeliveryOutcome::Pending {
                    self.lower_hint(partner, next).await?;
                }
                Ok(Recorded::Yes)
            }
            0 => Ok(Recorded::Stale),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Ends `partner`'s pending delivery `id` as failed without attempting it, saying `why`
    /// (its endpoint is disabled). `false` when it was not pending.
    pub async fn abandon(
        &self,
        partner: &PartnerId,
        id: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.abandon.prepare_invoke();
        invocation
            .key(self.key(partner, &format!("delivery:{id}")))
            .key(self.key(partner, "due"))
            .arg(id)
            .arg(truncate(why, MAX_ERROR_CHARS));
        let abandoned: i64 = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        match abandoned {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Makes `partner`'s delivery `id` to `endpoint` due at `due_ms` (a partner's redelivery:
    /// now). A delivered or failed one becomes pending again and its retry schedule restarts.
    pub async fn schedule_redelivery(
        &self,
        partner: &PartnerId,
        endpoint: &str,
        id: &str,
        due_ms: u64,
    ) -> Result<Delivery, StoreError> {
        // Checks that the delivery is the endpoint's.
        self.delivery(partner, endpoint, id).await?;
        self.lower_hint(partner, due_ms).await?;
        let mut invocation = self.scripts.redeliver.prepare_invoke();
        invocation
            .key(self.key(partner, &format!("delivery:{id}")))
            .key(self.key(partner, "due"))
            .arg(id)
            .arg(due_ms);
        let scheduled: i64 = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        if scheduled != 1 {
            return Err(StoreError::NotFound);
        }
        self.lower_hint(partner, due_ms).await?;
        self.delivery(partner, endpoint, id).await
    }

    /// Lowers `partner`'s hint in the global set to `at_ms` (adds it when missing).
    async fn lower_hint(&self, partner: &PartnerId, at_ms: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZADD")
                    .arg(self.hints_key())
                    .arg("LT")
                    .arg(at_ms)
                    .arg(partner.as_str()),
            )
            .await?;
        Ok(())
    }

    /// How many of `partner`'s pending deliveries are due at `now_ms` and how many later (a
    /// retry's wait, or an attempt in flight under its lease): for the queue depth gauge.
    pub async fn queue_depth(
        &self,
        partner: &PartnerId,
        now_ms: u64,
    ) -> Result<(u64, u64), StoreError> {
        let due = self.key(partner, "due");
        let mut pipe = redis::pipe();
        pipe.cmd("ZCOUNT")
            .arg(&due)
            .arg("-inf")
            .arg(now_ms)
            .cmd("ZCARD")
            .arg(&due);
        let (now, all): (u64, u64) = self.shared.pipeline(OP, Feature::Webhooks, &pipe).await?;
        Ok((now, all.saturating_sub(now)))
    }

    /// Sets `partner`'s hint from its due set (lowering it only), closing the window a writer
    /// dying between its script and its hint leaves. The engine calls it now and then for each
    /// configured partner.
    pub async fn resync_due_hint(&self, partner: &PartnerId) -> Result<(), StoreError> {
        let first: Vec<(String, u64)> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZRANGE")
                    .arg(self.key(partner, "due"))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES"),
            )
            .await?;
        if let Some((_, at)) = first.first() {
            self.lower_hint(partner, *at).await?;
        }
        Ok(())
    }

    /// Claims up to `limit` deliveries due at `now_ms`, across partners, leased until
    /// `lease_until_ms`: each is pending, its endpoint exists, and no other caller gets it before
    /// the lease ends (unless [`WebhookStore::record_attempt`] re-queues it). Deliveries whose
    /// endpoint is disabled are ended as failed ([`WebhookStore::abandon`]) instead of returned.
    /// See the module's documentation for the keys involved.
    pub async fn due(
        &self,
        now_ms: u64,
        limit: usize,
        lease_until_ms: u64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut invocation = self.scripts.poll_partners.prepare_invoke();
        invocation
            .key(self.hints_key())
            .arg(now_ms)
            .arg(limit)
            .arg(lease_until_ms);
        let partners: Vec<String> = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        let mut claimed = Vec::new();
        for partner in partners {
            let Ok(partner) = PartnerId::parse(&partner) else {
                self.shared.count_garbage(OP, Feature::Webhooks);
                continue;
            };
            let room = limit.saturating_sub(claimed.len());
            let (earliest, found) = if room == 0 {
                (Some(now_ms), Vec::new())
            } else {
                self.claim(&partner, now_ms, room, lease_until_ms).await?
            };
            match earliest {
                Some(at) => self.lower_hint(&partner, at).await?,
                None => {
                    let mut invocation = self.scripts.drop_hint.prepare_invoke();
                    invocation
                        .key(self.hints_key())
                        .arg(lease_until_ms)
                        .arg(partner.as_str());
                    let _: i64 = self
                        .shared
                        .script(OP, Feature::Webhooks, &invocation)
                        .await?;
                    // A writer may have queued something between the claim and the drop.
                    self.resync_due_hint(&partner).await?;
                }
            }
            for (delivery, endpoint) in found {
                if endpoint.enabled {
                    claimed.push(Claimed {
                        partner: partner.clone(),
                        delivery,
                        endpoint,
                    });
                } else {
                    self.abandon(&partner, &delivery.id, "the endpoint is disabled")
                        .await?;
                }
            }
        }
        Ok(claimed)
    }

    /// Claims up to `limit` of `partner`'s due deliveries; returns the earliest remaining due
    /// time and the claimed deliveries with their endpoints.
    async fn claim(
        &self,
        partner: &PartnerId,
        now_ms: u64,
        limit: usize,
        lease_until_ms: u64,
    ) -> Result<(Option<u64>, Vec<(Delivery, Endpoint)>), StoreError> {
        let due = self.key(partner, "due");
        let ids: Vec<String> = self
            .shared
            .query(
                OP,
                Feature::Webhooks,
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&due)
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        // The script touches each delivery's record and its endpoint's: read which endpoints
        // first, so every key is declared.
        let endpoints: Vec<Option<String>> = if ids.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET")
                    .arg(self.key(partner, &format!("delivery:{id}")))
                    .arg("endpoint_id");
            }
            self.shared.pipeline(OP, Feature::Webhooks, &pipe).await?
        };
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .key(&due)
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(ids.len());
        for id in &ids {
            invocation
                .key(self.key(partner, &format!("delivery:{id}")))
                .arg(id);
        }
        // Each distinct endpoint's key once, after the records' (KEYS is 1-based).
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut endpoint_slots = Vec::with_capacity(ids.len());
        for endpoint in &endpoints {
            let slot = match endpoint.as_deref().filter(|id| is_endpoint_id(id)) {
                Some(endpoint) => {
                    let next = 2 + ids.len() + slots.len();
                    *slots.entry(endpoint).or_insert_with(|| {
                        invocation.key(self.key(partner, &format!("endpoint:{endpoint}")));
                        next
                    })
                }
                None => 0,
            };
            endpoint_slots.push(slot);
        }
        for slot in &endpoint_slots {
            invocation.arg(*slot);
        }
        for endpoint in &endpoints {
            invocation.arg(endpoint.as_deref().unwrap_or(""));
        }
        let reply: Vec<Value> = self
            .shared
            .script(OP, Feature::Webhooks, &invocation)
            .await?;
        let mut reply = reply.into_iter();
        let earliest = reply
            .next()
            .and_then(|value| redis::from_redis_value::<String>(value).ok())
            .and_then(|score| score.parse::<f64>().ok())
            .map(|score| score as u64);
        let mut found = Vec::new();
        while let (Some(fields), Some(endpoint)) = (reply.next(), reply.next()) {
            let fields: Option<HashMap<String, Vec<u8>>> = redis::from_redis_value(fields).ok();
            let endpoint: Option<String> = redis::from_redis_value(endpoint).ok();
            let delivery = fields.and_then(|fields| self.parse_delivery(fields));
            let endpoint = endpoint.and_then(|json| self.parse_endpoint(&json, partner));
            if let (Some(delivery), Some(endpoint)) = (delivery, endpoint) {
                found.push((delivery, endpoint));
            }
        }
        Ok((earliest, found))
    }
}

/// `value` as JSON (an endpoint always serializes).
fn to_json(endpoint: &Endpoint) -> String {
    serde_json::to_string(endpoint).unwrap_or_default()
}

/// Crockford's base32 alphabet, lower case.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new endpoint id: `we_` and 26 random characters (130 bits).
fn new_endpoint_id() -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(ENDPOINT_ID_PREFIX.len() + 26);
    id.push_str(ENDPOINT_ID_PREFIX);
    for _ in 0..26 {
        id.push(char::from(ALPHABET[rng.random_range(0..32)]));
    }
    id
}

/// Whether `id` can be an endpoint id (so it is safe in a key).
pub fn is_endpoint_id(id: &str) -> bool {
    id.strip_prefix(ENDPOINT_ID_PREFIX)
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

/// Whether `id` can be a message id (so it is safe in a key and as a cursor).
pub fn is_message_id(id: &str) -> bool {
    id.strip_prefix(super::signature::MESSAGE_ID_PREFIX)
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `text` cut to `max` characters.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// A delivery from its hash fields; `None` when a required one is missing or malformed.
fn parse_delivery(mut fields: HashMap<String, Vec<u8>>) -> Option<Delivery> {
    let mut text = |name: &str| -> Option<String> {
        fields
            .remove(name)
            .and_then(|value| String::from_utf8(value).ok())
    };
    let number = |value: Option<String>| value.and_then(|value| value.parse::<u64>().ok());
    let id = text("id")?;
    let endpoint_id = text("endpoint_id")?;
    let event_type: EventType = text("event_type")?.parse().ok()?;
    let order_id = text("order_id");
    let order_version = number(text("order_version"));
    let created_at = number(text("created_at"))?;
    let attempts = u32::try_from(number(text("attempts"))?).ok()?;
    let redelivered_at_attempt =
        u32::try_from(number(text("redelivered_at_attempt")).unwrap_or(0)).ok()?;
    let first_attempt_at = number(text("first_attempt_at"));
    let last_attempt_at = number(text("last_attempt_at"));
    let last_status = number(text("last_status"))
        .filter(|&status| status != 0)
        .and_then(|status| u16::try_from(status).ok());
    let last_error = text("last_error").filter(|error| !error.is_empty());
    let next_attempt_at = number(text("next_attempt_at")).filter(|&at| at != 0);
    let outcome = DeliveryOutcome::parse(&text("outcome")?)?;
    let tracestate = text("tracestate");
    let trace = text("traceparent")
        .and_then(|traceparent| TraceContext::parse(&traceparent, tracestate.as_deref()));
    let body = fields.remove("body").unwrap_or_default();
    Some(Delivery {
        id,
        endpoint_id,
        event_type,
        order_id,
        order_version,
        body,
        created_at,
        attempts,
        redelivered_at_attempt,
        first_attempt_at,
        last_attempt_at,
        last_status,
        last_error,
        next_attempt_at: next_attempt_at.filter(|_| outcome == DeliveryOutcome::Pending),
        outcome,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reference_services::LocalRedis;
    use shared_clients::{SharedConfig, shared_state::RedisUrl};

    use super::*;

    /// Some instant, in Unix ms.
    const NOW: u64 = 1_700_000_000_000;

    /// A private Redis and a store over it.
    async fn store(settings: StoreSettings) -> (LocalRedis, WebhookStore) {
        let redis = LocalRedis::start()
            .await
            .expect("a private redis-server starts");
        let config = SharedConfig {
            redis_url: Some(RedisUrl::new(redis.url())),
            command_timeout: Duration::from_secs(2),
            ..SharedConfig::default()
        };
        let shared = SharedState::connect(&config).expect("a Redis URL");
        (redis, WebhookStore::new(shared, settings))
    }

    fn partner(name: &str) -> PartnerId {
        PartnerId::parse(name).expect("partner id")
    }

    fn new_endpoint(url: &str) -> NewEndpoint {
        NewEndpoint {
            url: url.to_owned(),
            events: EventSet::parse(["order.created"]).expect("events"),
            description: Some("orders".to_owned()),
        }
    }

    fn new_delivery(endpoint: &str, order: &str, version: u64) -> NewDelivery {
        NewDelivery {
            id: new_message_id(),
            endpoint_id: endpoint.to_owned(),
            event_type: EventType::OrderStatusChanged,
            order_id: Some(order.to_owned()),
            order_version: Some(version),
            body: format!(r#"{{"type":"order.status_changed","data":{{"id":"{order}"}}}}"#)
                .into_bytes(),
            trace: None,
        }
    }

    /// The arguments of each `redis.call(…)` in `script`, split at their top-level commas.
    fn calls(script: &str) -> Vec<Vec<String>> {
        script
            .split("redis.call(")
            .skip(1)
            .map(|call| {
                let (mut depth, mut args, mut current) = (0, Vec::new(), String::new());
                for c in call.chars() {
                    match c {
                        '(' | '{' => depth += 1,
                        ')' | '}' if depth == 0 => break,
                        ')' | '}' => depth -= 1,
                        ',' if depth == 0 => {
                            args.push(current.trim().to_owned());
                            current.clear();
                            continue;
                        }
                        _ => {}
                    }
                    current.push(c);
                }
                args.push(current.trim().to_owned());
                args
            })
            .collect()
    }

    #[test]
    fn every_key_a_script_touches_is_declared_in_keys() {
        let scripts = [
            ("CREATE_ENDPOINT", CREATE_ENDPOINT),
            ("REPLACE_ENDPOINT", REPLACE_ENDPOINT),
            ("DELETE_ENDPOINT", DELETE_ENDPOINT),
            ("CREATE_DELIVERY", CREATE_DELIVERY),
            ("TRIM_LOG", TRIM_LOG),
            ("RECORD_ATTEMPT", RECORD_ATTEMPT),
            ("ABANDON", ABANDON),
            ("REDELIVER", REDELIVER),
            ("POLL_PARTNERS", POLL_PARTNERS),
            ("CLAIM", CLAIM),
            ("DROP_HINT", DROP_HINT),
        ];
        let mut checked = 0;
        for (name, script) in scripts {
            for args in calls(script) {
                // Every command used takes its key first; UNLINK and EXISTS take only keys.
                let keys = if ["'UNLINK'", "'EXISTS'"].contains(&args[0].as_str()) {
                    &args[1..]
                } else {
                    &args[1..2]
                };
                for key in keys {
                    assert!(
                        key.starts_with("KEYS["),
                        "{name}: {args:?} touches a key not declared in KEYS"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 40, "the scripts' calls were found ({checked})");
        // The check sees a key built inside a script.
        let built = calls("redis.call('UNLINK', ARGV[2] .. id)");
        assert!(!built[0][1].starts_with("KEYS["));
    }

    #[tokio::test]
    async fn endpoints_are_kept_per_partner_with_their_secret_and_a_bound() {
        let (redis, store) = store(StoreSettings {
            max_endpoints: 2,
            ..StoreSettings::default()
        })
        .await;
        let acme = partner("partner-acme");
        let globex = partner("partner-globex");
        let (first, secret) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/1"), NOW)
            .await
            .expect("created");
        assert!(is_endpoint_id(&first.id), "{}", first.id);
        assert!(secret.expose().starts_with("whsec_"));
        let signing = first.signing_secrets(NOW);
        assert_eq!(signing.len(), 1);
        assert_eq!(signing[0].expose(), secret.expose());
        assert!(!format!("{first:?}").contains(&secret.expose()));
        let (second, _) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/2"), NOW + 1)
            .await
            .expect("created");
        assert_eq!(
            store
                .create_endpoint(&acme, new_endpoint("https://a.example/3"), NOW + 2)
                .await
                .unwrap_err(),
            StoreError::TooManyEndpoints(2)
        );
        let listed: Vec<String> = store
            .endpoints(&acme)
            .await
            .expect("listed")
            .into_iter()
            .map(|endpoint| endpoint.id)
            .collect();
        assert_eq!(listed, [first.id.clone(), second.id.clone()]);
        // Another partner sees none of them, by list or by id.
        assert!(store.endpoints(&globex).await.expect("listed").is_empty());
        assert_eq!(
            store.endpoint(&globex, &first.id).await.unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(
            store.delete_endpoint(&globex, &first.id).await.unwrap_err(),
            StoreError::NotFound
        );
        // Keys carry the partner's hash tag.
        let keys = redis.command("KEYS *").await.expect("keys");
        assert!(keys.contains(&format!("bff:{{w:partner-acme}}:endpoint:{}", first.id)));
        assert!(keys.contains("bff:{w:partner-acme}:endpoints"));
        store
            .delete_endpoint(&acme, &first.id)
            .await
            .expect("deleted");
        assert_eq!(
            store.endpoint(&acme, &first.id).await.unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(store.endpoints(&acme).await.expect("listed").len(), 1);
    }

    #[tokio::test]
    async fn patching_and_rotating_keep_the_old_secret_for_the_overlap() {
        let (_redis, store) = store(StoreSettings::default()).await;
        let acme = partner("partner-acme");
        let (endpoint, old) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/1"), NOW)
            .await
            .expect("created");
        let disabled = store
            .patch_endpoint(
                &acme,
                &endpoint.id,
                EndpointPatch {
                    enabled: Some(false),
                    description: Some(None),
                    ..EndpointPatch::default()
                },
                NOW + 5,
            )
            .await
            .expect("patched");
        assert!(!disabled.enabled);
        assert_eq!(disabled.disabled_reason, Some(DisabledReason::Partner));
        assert_eq!(disabled.description, None);
        assert_eq!(disabled.updated_at, NOW + 5);
        let gone = store
            .disable_endpoint(&acme, &endpoint.id, DisabledReason::Gone, NOW + 6)
            .await
            .expect("disabled");
        assert_eq!(gone.disabled_reason, Some(DisabledReason::Gone));
        let enabled = store
            .patch_endpoint(
                &acme,
                &endpoint.id,
                EndpointPatch {
                    enabled: Some(true),
                    ..EndpointPatch::default()
                },
                NOW + 7,
            )
            .await
            .expect("patched");
        assert!(enabled.enabled);
        assert_eq!(enabled.disabled_reason, None);

        let (rotated, new) = store
            .rotate_secret(&acme, &endpoint.id, 1000, NOW + 10)
            .await
            .expect("rotated");
        let texts = |endpoint: &Endpoint, at| -> Vec<String> {
            endpoint
                .signing_secrets(at)
                .iter()
                .map(Secret::expose)
                .collect()
        };
        assert_eq!(texts(&rotated, NOW + 10), [new.expose(), old.expose()]);
        assert_eq!(
            rotated.previous_secret_expires_at(NOW + 10),
            Some(NOW + 1010)
        );
        assert_eq!(texts(&rotated, NOW + 1010), [new.expose()]);
        let stored = store.endpoint(&acme, &endpoint.id).await.expect("stored");
        assert_eq!(texts(&stored, NOW + 10), [new.expose(), old.expose()]);
    }

    #[tokio::test]
    async fn deliveries_are_idempotent_listed_newest_first_and_trimmed() {
        let (redis, store) = store(StoreSettings {
            deliveries_kept: 3,
            ..StoreSettings::default()
        })
        .await;
        let acme = partner("partner-acme");
        let (endpoint, _) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/1"), NOW)
            .await
            .expect("created");
        let mut ids = Vec::new();
        for version in 1..=4 {
            let new = new_delivery(&endpoint.id, "o-1", version);
            assert!(
                store
                    .create_delivery(&acme, &new, NOW + version, NOW + version)
                    .await
                    .expect("created")
            );
            // Again: a no-op.
            assert!(
                !store
                    .create_delivery(&acme, &new, NOW + version, NOW + version)
                    .await
                    .expect("no-op")
            );
            ids.push(new.id);
            // Ids made in the same millisecond still sort by creation in practice only by
            // their random part: keep them apart.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first = store
            .deliveries(&acme, &endpoint.id, None, 2)
            .await
            .expect("page");
        let listed: Vec<&str> = first.items.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(listed, [ids[3].as_str(), ids[2].as_str()]);
        assert!(first.items.iter().all(|d| d.body.is_empty()));
        let second = store
            .deliveries(&acme, &endpoint.id, first.next_cursor.as_deref(), 2)
            .await
            .expect("page");
        let listed: Vec<&str> = second.items.iter().map(|d| d.id.as_str()).collect();
        // The oldest was trimmed with its record.
        assert_eq!(listed, [ids[1].as_str()]);
        assert_eq!(second.next_cursor, None);
        assert_eq!(
            store
                .delivery(&acme, &endpoint.id, &ids[0])
                .await
                .unwrap_err(),
            StoreError::NotFound
        );
        let full = store
            .delivery(&acme, &endpoint.id, &ids[3])
            .await
            .expect("one");
        assert_eq!(full.order_version, Some(4));
        assert_eq!(full.outcome, DeliveryOutcome::Pending);
        assert!(full.body.starts_with(b"{\"type\""));
        // Not through another endpoint, nor another partner.
        let (other, _) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/2"), NOW)
            .await
            .expect("created");
        assert!(store.delivery(&acme, &other.id, &ids[3]).await.is_err());
        assert!(
            store
                .delivery(&partner("partner-globex"), &endpoint.id, &ids[3])
                .await
                .is_err()
        );
        // Deleting the endpoint deletes its deliveries and their due entries.
        store
            .delete_endpoint(&acme, &endpoint.id)
            .await
            .expect("deleted");
        let keys = redis.command("KEYS *delivery*").await.expect("keys");
        assert!(!keys.contains("msg_"), "{keys}");
        assert_eq!(
            redis
                .command("ZCARD bff:{w:partner-acme}:due")
                .await
                .expect("zcard"),
            ":0\r\n"
        );
    }

    #[tokio::test]
    async fn due_deliveries_are_claimed_once_per_lease_and_attempts_recorded_once() {
        let (_redis, store) = store(StoreSettings::default()).await;
        let acme = partner("partner-acme");
        let globex = partner("partner-globex");
        let (a, _) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/1"), NOW)
            .await
            .expect("created");
        let (g, _) = store
            .create_endpoint(&globex, new_endpoint("https://g.example/1"), NOW)
            .await
            .expect("created");
        let for_a = new_delivery(&a.id, "o-1", 1);
        let later = new_delivery(&a.id, "o-2", 1);
        let for_g = new_delivery(&g.id, "o-9", 1);
        store
            .create_delivery(&acme, &for_a, NOW, NOW)
            .await
            .expect("created");
        store
            .create_delivery(&acme, &later, NOW, NOW + 60_000)
            .await
            .expect("created");
        store
            .create_delivery(&globex, &for_g, NOW, NOW)
            .await
            .expect("created");

        // Nothing is due before its time.
        assert!(
            store
                .due(NOW - 1, 10, NOW + 30_000)
                .await
                .expect("due")
                .is_empty()
        );
        let claimed = store.due(NOW, 10, NOW + 30_000).await.expect("due");
        let mut got: Vec<(String, String)> = claimed
            .iter()
            .map(|c| (c.partner.as_str().to_owned(), c.delivery.id.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("partner-acme".to_owned(), for_a.id.clone()),
                ("partner-globex".to_owned(), for_g.id.clone())
            ]
        );
        let claim_a = claimed
            .iter()
            .find(|c| c.delivery.id == for_a.id)
            .expect("a");
        assert_eq!(claim_a.endpoint.id, a.id);
        assert_eq!(claim_a.delivery.body, for_a.body);
        // Leased: nobody else gets them before the lease ends.
        assert!(
            store
                .due(NOW + 1000, 10, NOW + 31_000)
                .await
                .expect("due")
                .is_empty()
        );

        // The attempt fails: retried in a minute. Recording it again (another replica) is stale.
        let failed = AttemptRecord {
            at: NOW + 100,
            status: Some(500),
            error: Some("x".repeat(1000)),
            outcome: DeliveryOutcome::Pending,
            next_attempt_at: Some(NOW + 60_000),
        };
        assert_eq!(
            store
                .record_attempt(&acme, &a.id, &for_a.id, 0, &failed)
                .await
                .expect("recorded"),
            Recorded::Yes
        );
        assert_eq!(
            store
                .record_attempt(&acme, &a.id, &for_a.id, 0, &failed)
                .await
                .expect("stale"),
            Recorded::Stale
        );
        let stored = store.delivery(&acme, &a.id, &for_a.id).await.expect("one");
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.last_status, Some(500));
        assert_eq!(
            stored.last_error.map(|e| e.chars().count()),
            Some(MAX_ERROR_CHARS)
        );
        assert_eq!(stored.first_attempt_at, Some(NOW + 100));
        assert_eq!(stored.next_attempt_at, Some(NOW + 60_000));

        // A delivery whose lease ended without a record is claimed again.
        let again = store
            .due(NOW + 30_000, 10, NOW + 60_000)
            .await
            .expect("due");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery.id, for_g.id);
        let delivered_g = AttemptRecord {
            at: NOW + 30_100,
            status: Some(200),
            error: None,
            outcome: DeliveryOutcome::Delivered,
            next_attempt_at: None,
        };
        store
            .record_attempt(&globex, &g.id, &for_g.id, 0, &delivered_g)
            .await
            .expect("recorded");

        // At the retry's time, both of acme's are due; one succeeds.
        let retry = store
            .due(NOW + 60_000, 10, NOW + 90_000)
            .await
            .expect("due");
        let mut ids: Vec<&str> = retry.iter().map(|c| c.delivery.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = vec![for_a.id.as_str(), later.id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let delivered = AttemptRecord {
            at: NOW + 60_100,
            status: Some(204),
            error: None,
            outcome: DeliveryOutcome::Delivered,
            next_attempt_at: None,
        };
        store
            .record_attempt(&acme, &a.id, &for_a.id, 1, &delivered)
            .await
            .expect("recorded");
        assert_eq!(
            store.last_success_at(&acme, &a.id).await.expect("read"),
            Some(NOW + 60_100)
        );
        let done = store.delivery(&acme, &a.id, &for_a.id).await.expect("one");
        assert_eq!(done.outcome, DeliveryOutcome::Delivered);
        assert_eq!(done.next_attempt_at, None);
        // Delivered: never due again, until redelivered, which restarts its schedule.
        let redelivered = store
            .schedule_redelivery(&acme, &a.id, &for_a.id, NOW + 70_000)
            .await
            .expect("scheduled");
        assert_eq!(redelivered.outcome, DeliveryOutcome::Pending);
        assert_eq!(redelivered.redelivered_at_attempt, 2);
        assert_eq!(redelivered.first_attempt_at, None);
        let claimed = store
            .due(NOW + 70_000, 10, NOW + 100_000)
            .await
            .expect("due");
        assert!(claimed.iter().any(|c| c.delivery.id == for_a.id));
    }

    #[tokio::test]
    async fn deliveries_of_a_disabled_endpoint_end_as_failed_and_pings_name_the_endpoint() {
        let (_redis, store) = store(StoreSettings::default()).await;
        let acme = partner("partner-acme");
        let (endpoint, _) = store
            .create_endpoint(&acme, new_endpoint("https://a.example/1"), NOW)
            .await
            .expect("created");
        let ping = store
            .create_ping(&acme, &endpoint, NOW)
            .await
            .expect("ping");
        assert_eq!(ping.event_type, EventType::Ping);
        let body: serde_json::Value = serde_json::from_slice(&ping.body).expect("json");
        assert_eq!(body["type"], "ping");
        assert_eq!(body["data"]["endpoint_id"], endpoint.id.as_str());
        store
            .disable_endpoint(&acme, &endpoint.id, DisabledReason::Failing, NOW)
            .await
            .expect("disabled");
        assert!(
            store
                .due(NOW, 10, NOW + 1000)
                .await
                .expect("due")
                .is_empty()
        );
        let ended = store
            .delivery(&acme, &endpoint.id, &ping.id)
            .await
            .expect("one");
        assert_eq!(ended.outcome, DeliveryOutcome::Failed);
        assert_eq!(
            ended.last_error.as_deref(),
            Some("the endpoint is disabled")
        );
        // A delivery for an endpoint that does not exist is refused.
        let stray = new_delivery("we_00000000000000000000000000", "o-1", 1);
        assert_eq!(
            store
                .create_delivery(&acme, &stray, NOW, NOW)
                .await
                .unwrap_err(),
            StoreError::NotFound
        );
    }

    #[tokio::test]
    async fn without_redis_every_operation_says_disabled() {
        let store = WebhookStore::new(SharedState::disabled(), StoreSettings::default());
        assert!(!store.is_enabled());
        assert_eq!(
            store.endpoints(&partner("partner-acme")).await.unwrap_err(),
            StoreError::Disabled
        );
        assert_eq!(
            store.due(NOW, 1, NOW).await.unwrap_err(),
            StoreError::Disabled
        );
    }
}
