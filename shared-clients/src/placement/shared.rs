//! The attempt records and leases every replica shares in Redis, so that a retry or a concurrent
//! request with one (owner, idempotency key) is answered the same on whichever replica it lands.
//!
//! Keys (all of one owner carry the owner's hash tag, so no script is ever cross-slot):
//! - `<prefix>{u:<user id>}:checkout:<hex SHA-256 of the key>` (`{p:<partner id>}` for a partner):
//!   the attempt's **record**, JSON: `{"stage":"priced","fingerprint",…,"body",…,"priced_at_ms"}`
//!   once a body is about to reach the order service, `{"stage":"created","fingerprint",…,"order",
//!   …,"cart_cleared"}` once the order exists. Kept for `remember_for` after its last write.
//! - the same key with `:lease`: the **lease**, a random token set with `SET NX PX` by the replica
//!   placing the order, for the request's remaining deadline plus [`LEASE_MARGIN`]
//!   ([`LEASE_WITHOUT_DEADLINE`] without one), released by a compare-and-delete of the token.
//!
//! Rules the scripts enforce atomically:
//! - [`BEGIN`]: a created record is the answer (no lease taken); otherwise the lease is taken if
//!   free and the record (priced or none) returned; otherwise the lease's remaining time is. The
//!   caller polls (from [`FIRST_POLL`] doubling to [`MAX_POLL`], never past the request's deadline)
//!   until the record is created or the lease free, e.g. because its holder died and it expired.
//! - [`SETTLE`]: a created record is never replaced nor deleted (the first creation wins, so every
//!   replica answers its `cart_cleared`); a lease is released only by the token that took it.
//!
//! A value under these keys that is not ours (wrong type, not our JSON, a lease without an expiry)
//! is treated as absent and counted with [`SharedState::count_garbage`]; it is overwritten by the
//! next write. Every failure of Redis is counted by [`SharedState`] and leaves the request to the
//! in-process behaviour.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Attempt, AttemptKey, Fingerprint, PlaceOrderError, Stage, waited_past_deadline};
use crate::shared_state::{Feature, SharedState};
use crate::{NewOrder, Order, RequestContext};

/// How much longer than the request's remaining deadline a lease lasts: the holder may still be
/// writing its record when its deadline passes.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// How long a lease lasts for a request without a deadline (background work, tests).
const LEASE_WITHOUT_DEADLINE: Duration = Duration::from_secs(30);

/// The first pause of a request waiting for another replica's lease.
const FIRST_POLL: Duration = Duration::from_millis(5);

/// The longest pause between two looks of a waiting request.
const MAX_POLL: Duration = Duration::from_millis(50);

/// Operation names, in `bff_redis_errors_total{op}`.
const OP_BEGIN: &str = "checkout_begin";
/// See [`OP_BEGIN`].
const OP_SETTLE: &str = "checkout_settle";

/// Looks at the record and takes the lease.
///
/// `KEYS[1]` the record, `KEYS[2]` the lease; `ARGV[1]` the lease token, `ARGV[2]` the lease's
/// length in ms. Answers `{'created', record, 0}`, `{'leased', record or nil, 1 when a lease
/// without an expiry (not ours) was replaced else 0}` or `{'busy', nil, the lease's ms left}`. A
/// record of another type than a string is answered as `''` (garbage to the caller).
static BEGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{CREATED}
local record = false
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  record = redis.call('GET', KEYS[1])
elseif kind ~= 'none' then
  record = ''
end
if created(record) then
  return {{'created', record, 0}}
end
local left = redis.call('PTTL', KEYS[2])
if left == -2 or left == -1 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {{'leased', record, left == -1 and 1 or 0}}
end
return {{'busy', false, left}}
"
    ))
});

/// Writes or deletes the record (never replacing a created one) and releases the lease.
///
/// `KEYS[1]` the record, `KEYS[2]` the lease; `ARGV[1]` `set`, `forget` or `keep`; `ARGV[2]` the
/// record to set; `ARGV[3]` its lifetime in ms; `ARGV[4]` the token whose lease is released (`''`:
/// none). Answers 1.
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{CREATED}
if ARGV[1] ~= 'keep' then
  local current = false
  if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
    current = redis.call('GET', KEYS[1])
  end
  if not created(current) then
    if ARGV[1] == 'set' then
      redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    else
      redis.call('DEL', KEYS[1])
    end
  end
end
if ARGV[4] ~= '' and redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
end
return 1
"
    ))
});

/// Lua: whether a record (a string, or false) is one of a created order.
const CREATED: &str = r"local function created(value)
  if not value then
    return false
  end
  local ok, decoded = pcall(cjson.decode, value)
  return ok and type(decoded) == 'table' and decoded['stage'] == 'created'
end";

/// A record as it is stored (JSON), the shared form of an [`Attempt`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
enum Record {
    /// A body about to reach (or that reached) the order service, outcome unknown.
    Priced {
        /// The request it is for.
        fingerprint: Fingerprint,
        /// The body sent.
        body: Arc<NewOrder>,
        /// When its lines were priced (ms since the Unix epoch): replicas share no monotonic clock.
        priced_at_ms: u64,
    },
    /// The order created.
    Created {
        /// The request it is for.
        fingerprint: Fingerprint,
        /// The order.
        order: Arc<Order>,
        /// Whether the first attempt emptied the cart.
        cart_cleared: bool,
    },
}

/// The wall clock in ms since the Unix epoch (0 before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Milliseconds of `duration`, at least 1 (Redis refuses an expiry of 0).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Record {
    /// The record of `attempt`.
    fn of(attempt: &Attempt) -> Self {
        let fingerprint = attempt.fingerprint.clone();
        match &attempt.stage {
            Stage::Priced { body, priced_at } => Self::Priced {
                fingerprint,
                body: Arc::clone(body),
                priced_at_ms: unix_ms().saturating_sub(millis(priced_at.elapsed())),
            },
            Stage::Created {
                order,
                cart_cleared,
            } => Self::Created {
                fingerprint,
                order: Arc::clone(order),
                cart_cleared: *cart_cleared,
            },
        }
    }

    /// The attempt this record describes, on this process' clock; `None` for a body priced
    /// longer ago than the monotonic clock can express (then it is far too old to resend).
    fn into_attempt(self) -> Option<Attempt> {
        Some(match self {
            Self::Priced {
                fingerprint,
                body,
                priced_at_ms,
            } => {
                let age = Duration::from_millis(unix_ms().saturating_sub(priced_at_ms));
                Attempt {
                    fingerprint,
                    stage: Stage::Priced {
                        body,
                        priced_at: Instant::now().checked_sub(age)?,
                    },
                }
            }
            Self::Created {
                fingerprint,
                order,
                cart_cleared,
            } => Attempt {
                fingerprint,
                stage: Stage::Created {
                    order,
                    cart_cleared,
                },
            },
        })
    }
}

/// The Redis keys of one (owner, idempotency key).
#[derive(Debug, Clone)]
struct Keys {
    /// The attempt's record.
    record: String,
    /// Its lease.
    lease: String,
}

impl Keys {
    /// The keys of `(owner, key)`: tagged with the owner, named by a digest of the key (any
    /// length or character of the client's key becomes 64 hex digits).
    fn of(shared: &SharedState, (owner, key): &AttemptKey) -> Self {
        let tag = owner.shared_tag();
        let digest = Sha256::digest(key.as_str().as_bytes());
        let mut rest = String::with_capacity(9 + 64 + 6);
        rest.push_str("checkout:");
        for byte in digest {
            // Writing to a `String` cannot fail.
            let _ = write!(rest, "{byte:02x}");
        }
        let record = shared.key(&tag, &rest);
        rest.push_str(":lease");
        Self {
            record,
            lease: shared.key(&tag, &rest),
        }
    }
}

/// The attempts of every replica, in Redis. Exists only when Redis is configured.
pub(super) struct SharedAttempts {
    /// The handle on Redis (bounded commands, back-off, counting).
    shared: SharedState,
    /// How long records are kept after their last write (`remember_for`), in ms.
    remember_ms: u64,
}

/// What Redis says about an attempt, at the start of a request's turn.
pub(super) enum Begin {
    /// Redis did not answer usefully (not reachable, backing off, a created record that is not
    /// ours): the request goes on as without Redis.
    Unshared,
    /// A replica created the order: the request answers it.
    Created(Attempt),
    /// This request holds the lease and places the order; what the record says so far.
    Leased {
        /// The lease, released when it is dropped (or settled).
        lease: Lease,
        /// The attempt recorded so far (a priced body, resent only while young); `None` when
        /// there is none (or it cannot be read).
        attempt: Option<Attempt>,
        /// Whether a body was sent under the key before (by any replica): an order the order
        /// service replays may then be that one, its cart not yet emptied.
        sent_before: bool,
    },
}

impl SharedAttempts {
    /// Shared attempts through `shared`, kept `remember_for`; `None` when Redis is not configured
    /// or nothing is to be remembered.
    pub(super) fn new(shared: &SharedState, remember_for: Duration) -> Option<Self> {
        (shared.is_enabled() && !remember_for.is_zero()).then(|| Self {
            shared: shared.clone(),
            remember_ms: millis(remember_for),
        })
    }

    /// Looks the attempt `id` up and takes its lease. While another replica holds the lease, waits
    /// (polling) for its record to say the order is created or for the lease to be free, at most
    /// until the request's deadline (then the same error as waiting for a turn in this process).
    pub(super) async fn begin(
        &self,
        ctx: &RequestContext,
        id: &AttemptKey,
    ) -> Result<Begin, PlaceOrderError> {
        let keys = Keys::of(&self.shared, id);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pause = FIRST_POLL;
        loop {
            let lease_ms = millis(
                ctx.remaining()
                    .map_or(LEASE_WITHOUT_DEADLINE, |left| left + LEASE_MARGIN),
            );
            let mut invocation = BEGIN.prepare_invoke();
            invocation
                .key(&keys.record)
                .key(&keys.lease)
                .arg(&token)
                .arg(lease_ms);
            let reply: Result<(String, Option<Vec<u8>>, i64), _> = self
                .shared
                .script(OP_BEGIN, Feature::Idempotency, &invocation)
                .await;
            let Ok((state, record, number)) = reply else {
                return Ok(Begin::Unshared);
            };
            match state.as_str() {
                "created" => {
                    return Ok(record
                        .and_then(|bytes| self.read(&bytes))
                        .and_then(Record::into_attempt)
                        .map_or(Begin::Unshared, Begin::Created));
                }
                "leased" => {
                    if number == 1 {
                        self.shared.count_garbage(OP_BEGIN, Feature::Idempotency);
                    }
                    let lease = Lease {
                        shared: self.shared.clone(),
                        keys,
                        token,
                        remember_ms: self.remember_ms,
                        settled: false,
                    };
                    let record = record.and_then(|bytes| self.read(&bytes));
                    let sent_before = record.is_some();
                    return Ok(Begin::Leased {
                        lease,
                        attempt: record.and_then(Record::into_attempt),
                        sent_before,
                    });
                }
                _ => {
                    // Busy: another replica places the order. `number` is its lease's time left.
                    let now = Instant::now();
                    let deadline = ctx.deadline();
                    if deadline.is_some_and(|deadline| now >= deadline) {
                        return Err(waited_past_deadline());
                    }
                    let left = Duration::from_millis(u64::try_from(number).unwrap_or(0));
                    let wake = now + pause.min(left.max(Duration::from_millis(1)));
                    tokio::time::sleep_until(deadline.map_or(wake, |deadline| wake.min(deadline)))
                        .await;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        }
    }

    /// Records `attempt` (a created order) without holding the lease: when Redis failed at the
    /// start of the request but answers again, retries on other replicas still find the order.
    pub(super) async fn record_unleased(&self, id: &AttemptKey, attempt: &Attempt) {
        if self.shared.is_backing_off() {
            return;
        }
        settle(
            &self.shared,
            &Keys::of(&self.shared, id),
            Settle::Set(attempt),
            self.remember_ms,
            "",
        )
        .await;
    }

    /// The record in `bytes`; garbage (counted) is `None`.
    fn read(&self, bytes: &[u8]) -> Option<Record> {
        let record = serde_json::from_slice(bytes).ok();
        if record.is_none() {
            self.shared.count_garbage(OP_BEGIN, Feature::Idempotency);
        }
        record
    }
}

/// What [`settle`] does with the record.
enum Settle<'a> {
    /// Sets it to this attempt (unless a created order is recorded already).
    Set(&'a Attempt),
    /// Deletes it (unless it records a created order).
    Forget,
    /// Leaves it.
    Keep,
}

/// Runs [`SETTLE`]: `what` to the record, then releases the lease taken with `token` (`""`:
/// none). A failure is counted by [`SharedState`]; the lease then expires by itself.
async fn settle(
    shared: &SharedState,
    keys: &Keys,
    what: Settle<'_>,
    remember_ms: u64,
    token: &str,
) {
    let (action, value) = match what {
        Settle::Set(attempt) => match serde_json::to_vec(&Record::of(attempt)) {
            Ok(value) => ("set", value),
            Err(_) => ("keep", Vec::new()),
        },
        Settle::Forget => ("forget", Vec::new()),
        Settle::Keep => ("keep", Vec::new()),
    };
    let mut invocation = SETTLE.prepare_invoke();
    invocation
        .key(&keys.record)
        .key(&keys.lease)
        .arg(action)
        .arg(value)
        .arg(remember_ms)
        .arg(token);
    let _: Result<i64, _> = shared
        .script(OP_SETTLE, Feature::Idempotency, &invocation)
        .await;
}

/// The lease of one attempt, held by the request placing its order. Dropped unsettled (the
/// request failed, was refused or cancelled), it is released in the background.
pub(super) struct Lease {
    /// The handle on Redis.
    shared: SharedState,
    /// The attempt's keys.
    keys: Keys,
    /// What the lease was taken with: only this token releases it.
    token: String,
    /// How long records are kept, in ms.
    remember_ms: u64,
    /// Whether [`Lease::settle`] released it already.
    settled: bool,
}

impl Lease {
    /// Records the priced `attempt` before its body is sent: from then on, a retry on any replica
    /// resends the same body while it is young, and empties the cart if the order service replays
    /// the order.
    pub(super) async fn record_priced(&self, attempt: &Attempt) {
        settle(
            &self.shared,
            &self.keys,
            Settle::Set(attempt),
            self.remember_ms,
            "",
        )
        .await;
    }

    /// Forgets the priced body the order service refused for good, so a retry prices again.
    pub(super) async fn forget(&self) {
        settle(
            &self.shared,
            &self.keys,
            Settle::Forget,
            self.remember_ms,
            "",
        )
        .await;
    }

    /// Records the created order `attempt` for every replica and releases the lease, in one step
    /// (a waiting replica never sees the lease free without the record).
    pub(super) async fn settle(mut self, attempt: &Attempt) {
        self.settled = true;
        settle(
            &self.shared,
            &self.keys,
            Settle::Set(attempt),
            self.remember_ms,
            &self.token,
        )
        .await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let keys = self.keys.clone();
        let token = std::mem::take(&mut self.token);
        let remember_ms = self.remember_ms;
        runtime.spawn(async move {
            settle(&shared, &keys, Settle::Keep, remember_ms, &token).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, IdempotencyKey, Owner, PartnerId, UserId};

    fn order() -> Order {
        serde_json::from_value(serde_json::json!({
            "id": "o-1", "user_id": "u-1", "channel": {"kind": "mobile", "partner_id": null},
            "status": "pending",
            "lines": [{"product_id": "p-1", "quantity": 2,
                       "unit_price": {"amount_minor": 9_007_199_254_740_993_i64, "currency": "EUR"}}],
            "total": {"amount_minor": 1, "currency": "EUR"},
            "created_at": "2026-01-01T00:00:00Z"
        }))
        .expect("an order")
    }

    #[test]
    fn a_created_record_reads_back_as_the_same_attempt() {
        let attempt = Attempt {
            fingerprint: Fingerprint::Checkout {
                channel: Channel::mobile(),
                shipping_address: None,
            },
            stage: Stage::Created {
                order: Arc::new(order()),
                cart_cleared: false,
            },
        };
        let bytes = serde_json::to_vec(&Record::of(&attempt)).expect("encodes");
        assert!(bytes.starts_with(br#"{"stage":"created""#));
        let back: Record = serde_json::from_slice(&bytes).expect("decodes");
        let back = back.into_attempt().expect("an attempt");
        assert_eq!(back.fingerprint, attempt.fingerprint);
        let Stage::Created {
            order: read,
            cart_cleared,
        } = back.stage
        else {
            panic!("created");
        };
        assert_eq!(*read, order(), "exact, large amounts too");
        assert!(!cart_cleared);
    }

    #[tokio::test]
    async fn a_priced_record_keeps_its_age_across_clocks() {
        let body = NewOrder {
            user_id: UserId::parse("u-1").expect("id"),
            channel: Channel::web(),
            lines: order().lines,
            shipping_address: None,
        };
        let attempt = Attempt {
            fingerprint: Fingerprint::Checkout {
                channel: Channel::web(),
                shipping_address: None,
            },
            stage: Stage::Priced {
                body: Arc::new(body.clone()),
                priced_at: Instant::now() - Duration::from_secs(120),
            },
        };
        let bytes = serde_json::to_vec(&Record::of(&attempt)).expect("encodes");
        let back: Record = serde_json::from_slice(&bytes).expect("decodes");
        let Some(Attempt {
            stage:
                Stage::Priced {
                    body: read,
                    priced_at,
                },
            ..
        }) = back.into_attempt()
        else {
            panic!("priced");
        };
        assert_eq!(*read, body);
        let age = priced_at.elapsed().as_secs();
        assert!((119..=121).contains(&age), "{age}");
    }

    #[tokio::test]
    async fn keys_carry_the_owner_tag_and_a_digest_of_the_key() {
        let shared = SharedState::connect(&crate::SharedConfig {
            redis_url: Some(crate::shared_state::RedisUrl::new("redis://127.0.0.1:1")),
            ..crate::SharedConfig::default()
        })
        .expect("a handle");
        let key = IdempotencyKey::parse("{weird}:key").expect("key");
        let user = Keys::of(
            &shared,
            &(Owner::User(UserId::parse("u-42").expect("id")), key.clone()),
        );
        let digest = user
            .record
            .strip_prefix("bff:{u:u-42}:checkout:")
            .expect("the owner's tag, then the name");
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{digest}: the client's braces never reach the key"
        );
        assert_eq!(user.lease, format!("{}:lease", user.record));
        let partner = Keys::of(
            &shared,
            &(
                Owner::Partner(PartnerId::parse("acme").expect("id")),
                key.clone(),
            ),
        );
        assert!(partner.record.starts_with("bff:{p:acme}:checkout:"));
        assert_eq!(
            partner.record.rsplit(':').next(),
            user.record.rsplit(':').next(),
            "the same digest"
        );
    }
}
