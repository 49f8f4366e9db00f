//! Live updates: who follows which resource, and telling them when it changed.
//!
//! The [`Hub`] is the one place both live faces of the gateways (bff-web's GraphQL subscriptions,
//! bff-mobile's order-tracking stream) learn of changes. A subscriber follows a [`Topic`] (a
//! product, a user's cart, one order of one owner); the hub keeps one entry per topic with at
//! least one subscriber, and nothing for topics nobody follows.
//!
//! Policy:
//! - **A signal, not a value.** A change wakes the topic's subscribers; each then reads the
//!   resource through the same cached, coalesced clients as a query (what the change made stale
//!   was dropped first), so 1,000 subscribers of one product cost one downstream call per change
//!   and every pushed value obeys the caches' privacy rules. A subscriber that is slow to wake
//!   sees only the latest signal ([`tokio::sync::watch`]): nothing queues up behind it.
//! - **Fed by the change events** when they flow: the consumer (`crate::events`) applies an event
//!   to the caches, then [`Hub::notify`]s its topic. An event whose `version` is not above the
//!   last one signalled for the topic is dropped. After a gap in a stream, every topic of that
//!   stream is signalled (subscribers re-read; unchanged values are theirs to skip).
//! - **Fed by polling otherwise** (no Redis, events off, or the stream's consumer down): while a
//!   topic has subscribers, one task per topic reads the resource from its service every
//!   `poll_interval`, bypassing the cache, and when it differs from the last read, drops the
//!   cached copy and signals. One poll per topic, whatever the number of subscribers; no poll
//!   while the topic's stream is consumed.
//! - **Traced through the signal.** A topic keeps the trace context of the event behind its last
//!   signal (one small `Option` per topic; `None` after a poll or a gap, which no request
//!   caused). A woken subscriber reads it ([`Subscription::cause`]) and makes its push a span in
//!   that trace, so a push is found in the trace of the request that made the change. Like the
//!   signal, only the latest is kept: a subscriber that was slow to wake pushes the latest
//!   value, in the latest change's trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::context::Owner;
use crate::error::ClientError;
use crate::events::Stream;
use crate::id::{OrderId, ProductId, UserId};
use crate::trace_context::TraceContext;

/// What a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One product (public).
    Product(ProductId),
    /// One user's cart.
    Cart(UserId),
    /// One order of one owner. A change to an order is signalled only to subscribers of that
    /// owner's topic, so naming another owner's order id never wakes anything.
    Order {
        /// Whose order it is.
        owner: Owner,
        /// Which order.
        id: OrderId,
    },
}

impl Topic {
    /// The change stream that carries this topic's events.
    pub fn stream(&self) -> Stream {
        match self {
            Topic::Product(_) => Stream::Catalog,
            Topic::Cart(_) => Stream::Cart,
            Topic::Order { .. } => Stream::Order,
        }
    }
}

/// What polling read of a topic's resource, compared from one poll to the next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Polled {
    /// The resource as its service answered.
    Value(Arc<dyn PolledValue>),
    /// It does not exist (any more).
    Gone,
}

/// A polled value, compared with the previous one.
pub(crate) trait PolledValue: std::fmt::Debug + Send + Sync {
    /// Whether it equals `other` (of the same topic).
    fn same_as(&self, other: &dyn PolledValue) -> bool;
    /// Itself, for downcasting in [`PolledValue::same_as`].
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: PartialEq + std::fmt::Debug + Send + Sync + 'static> PolledValue for T {
    fn same_as(&self, other: &dyn PolledValue) -> bool {
        other
            .as_any()
            .downcast_ref::<T>()
            .is_some_and(|other| other == self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PartialEq for dyn PolledValue {
    fn eq(&self, other: &Self) -> bool {
        self.same_as(other)
    }
}

/// Where polling reads resources and drops what changed (implemented by the downstream facade).
pub(crate) trait Source: Send + Sync + 'static {
    /// Reads `topic`'s resource from its service, bypassing every cache.
    fn poll<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Result<Polled, ClientError>>;
    /// Drops the cached copies of `topic`'s resource (it changed).
    fn evict<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, ()>;
    /// The copy of `topic`'s resource this process holds in its cache, fresh or not (`None`:
    /// none), without reading anything from a service.
    fn cached<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, Option<Polled>>;
}

/// The subscribers of one topic.
struct TopicState {
    /// Bumped at each change; every subscriber holds a receiver.
    changes: watch::Sender<u64>,
    /// The last event version signalled (0: none yet).
    version: AtomicU64,
    /// The topic's poller, aborted when the last subscriber leaves.
    poller: Mutex<Option<tokio::task::AbortHandle>>,
    /// The trace context of the event behind the last signal (`None`: a poll, a gap, or an
    /// event no traced request caused), read by the subscribers it woke.
    cause: Mutex<Option<TraceContext>>,
}

impl TopicState {
    /// Wakes every subscriber, for a change `cause`d by a traced request or not.
    fn signal(&self, cause: Option<&TraceContext>) {
        *lock(&self.cause) = cause.cloned();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The registry of live topics. Cheap to clone; one per [`Downstream`](crate::Downstream).
#[derive(Clone, Default)]
pub struct Hub {
    /// Shared by every clone.
    inner: Arc<HubInner>,
}

/// The parts of [`Hub`].
struct HubInner {
    /// Topics with at least one subscriber.
    topics: Mutex<HashMap<Topic, Arc<TopicState>>>,
    /// Where pollers read (set once the downstream facade exists).
    source: OnceLock<Weak<dyn Source>>,
    /// Whether each stream's change events are being read (catalog, cart, order), as the
    /// consumer reports: pollers of a stream whose events flow wait on it, without waking.
    events_up: watch::Sender<[bool; 3]>,
    /// Counters.
    metrics: LiveCounters,
}

impl Default for HubInner {
    fn default() -> Self {
        Self {
            topics: Mutex::default(),
            source: OnceLock::new(),
            events_up: watch::Sender::new([false; 3]),
            metrics: LiveCounters::default(),
        }
    }
}

/// The hub's counters.
#[derive(Default)]
struct LiveCounters {
    /// Subscriptions open now.
    subscribers: AtomicU64,
    /// Signals sent to topics (one per change, whatever the number of subscribers).
    signals: AtomicU64,
    /// Event signals dropped as older than one already signalled.
    stale_events: AtomicU64,
    /// Polls made.
    polls: AtomicU64,
    /// Polls that failed (the service did not answer).
    poll_errors: AtomicU64,
}

/// The hub's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LiveMetricsSnapshot {
    /// Topics with at least one subscriber.
    pub topics: u64,
    /// Subscriptions open (all topics).
    pub subscribers: u64,
    /// Changes signalled to topics.
    pub signals: u64,
    /// Events dropped as older than one already signalled for their topic.
    pub stale_events: u64,
    /// Polls made (no events).
    pub polls: u64,
    /// Polls that failed.
    pub poll_errors: u64,
}

impl Hub {
    /// Sets where pollers read; the first call wins.
    pub(crate) fn set_source(&self, source: Weak<dyn Source>) {
        let _ = self.inner.source.set(source);
    }

    /// Records whether `stream`'s change events are being read (the consumer calls it when that
    /// changes): while they are, its topics are not polled.
    pub(crate) fn set_events_up(&self, stream: Stream, up: bool) {
        self.inner.events_up.send_if_modified(|state| {
            let slot = &mut state[stream_index(stream)];
            let changed = *slot != up;
            *slot = up;
            changed
        });
    }

    /// Follows `topic`. When its change events are not being read, the topic is polled every
    /// `poll_interval` while it has subscribers (the first subscriber's interval counts); `None`
    /// never polls. Must be called within a tokio runtime.
    pub fn subscribe(&self, topic: Topic, poll_interval: Option<Duration>) -> Subscription {
        let mut topics = lock(&self.inner.topics);
        let state = match topics.get(&topic) {
            Some(state) => Arc::clone(state),
            None => {
                let state = Arc::new(TopicState {
                    changes: watch::Sender::new(0),
                    version: AtomicU64::new(0),
                    poller: Mutex::new(None),
                    cause: Mutex::new(None),
                });
                if let Some(interval) = poll_interval.filter(|i| !i.is_zero()) {
                    let task = tokio::spawn(poll(
                        Arc::downgrade(&self.inner),
                        topic.clone(),
                        Arc::downgrade(&state),
                        interval,
                    ));
                    *lock(&state.poller) = Some(task.abort_handle());
                }
                topics.insert(topic.clone(), Arc::clone(&state));
                state
            }
        };
        let mut changes = state.changes.subscribe();
        changes.mark_unchanged();
        self.inner
            .metrics
            .subscribers
            .fetch_add(1, Ordering::Relaxed);
        Subscription {
            changes,
            topic,
            state,
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// Signals `topic`'s subscribers that it changed, unless `version` (the event's) is not
    /// above the last one signalled; `cause` is the trace context the event carried. Does
    /// nothing when nobody follows the topic.
    pub(crate) fn notify(&self, topic: &Topic, version: Option<u64>, cause: Option<&TraceContext>) {
        let state = lock(&self.inner.topics).get(topic).cloned();
        let Some(state) = state else { return };
        if let Some(version) = version {
            let previous = state.version.fetch_max(version, Ordering::AcqRel);
            if version <= previous {
                self.inner
                    .metrics
                    .stale_events
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.inner.metrics.signals.fetch_add(1, Ordering::Relaxed);
        state.signal(cause);
    }

    /// Signals every topic whose events travel on `stream` (events were missed).
    pub(crate) fn notify_stream(&self, stream: Stream) {
        let states: Vec<Arc<TopicState>> = lock(&self.inner.topics)
            .iter()
            .filter(|(topic, _)| topic.stream() == stream)
            .map(|(_, state)| Arc::clone(state))
            .collect();
        for state in states {
            self.inner.metrics.signals.fetch_add(1, Ordering::Relaxed);
            state.signal(None);
        }
    }

    /// The counters now.
    pub fn metrics(&self) -> LiveMetricsSnapshot {
        let inner = &self.inner;
        LiveMetricsSnapshot {
            topics: lock(&inner.topics).len() as u64,
            subscribers: inner.metrics.subscribers.load(Ordering::Relaxed),
            signals: inner.metrics.signals.load(Ordering::Relaxed),
            stale_events: inner.metrics.stale_events.load(Ordering::Relaxed),
            polls: inner.metrics.polls.load(Ordering::Relaxed),
            poll_errors: inner.metrics.poll_errors.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

/// One subscriber of one topic. Dropping it unsubscribes (the topic goes, with its poller,
/// when its last subscriber does).
pub struct Subscription {
    /// Signals of the topic.
    changes: watch::Receiver<u64>,
    /// Which topic.
    topic: Topic,
    /// The topic's state, for the cause of the last signal.
    state: Arc<TopicState>,
    /// The hub, to leave it.
    hub: Weak<HubInner>,
}

impl Subscription {
    /// Waits for the next change of the topic (changes made while the subscriber was busy are
    /// seen as one). `false` when the hub is gone (the process is stopping).
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }

    /// The topic followed.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The trace context of the request that caused the last change signalled (read it after
    /// [`Subscription::changed`]); `None` when no traced request did (a poll, missed events).
    pub fn cause(&self) -> Option<TraceContext> {
        lock(&self.state.cause).clone()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        hub.metrics.subscribers.fetch_sub(1, Ordering::Relaxed);
        let mut topics = lock(&hub.topics);
        // Our receiver still counts: the topic is left when it is the last one. New subscribers
        // take the same lock, so none can join between the count and the removal.
        let last = topics
            .get(&self.topic)
            .is_some_and(|state| state.changes.receiver_count() <= 1);
        if last
            && let Some(state) = topics.remove(&self.topic)
            && let Some(poller) = lock(&state.poller).take()
        {
            poller.abort();
        }
    }
}

/// Polls `topic` every `interval` while it has subscribers and its events are not being read;
/// signals when what its service answers differs from the previous answer. While the events
/// flow it waits for them to stop, without waking; when they stop, the first poll signals
/// whatever it reads (a change made meanwhile would otherwise become the baseline, unseen).
///
/// The very first poll has no previous answer, but the subscribers have one: what they read
/// when subscribing, through the cache, which without events may be older than the service's
/// state by up to its TTL. So the first answer is compared with the cached copy, and a
/// difference is signalled (and the copy dropped) rather than silently becoming the baseline.
async fn poll(hub: Weak<HubInner>, topic: Topic, state: Weak<TopicState>, interval: Duration) {
    let index = stream_index(topic.stream());
    let mut events = match hub.upgrade() {
        Some(hub) => hub.events_up.subscribe(),
        None => return,
    };
    let mut last: Option<Polled> = None;
    let mut first = true;
    let mut resumed = false;
    let mut next = tokio::time::Instant::now();
    loop {
        if events.borrow_and_update()[index] {
            // Events tell; wait (without waking) until they stop.
            if events.wait_for(|up| !up[index]).await.is_err() {
                return;
            }
            last = None;
            resumed = true;
            next = tokio::time::Instant::now();
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            changed = events.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        next = tokio::time::Instant::now() + interval;
        let Some(hub) = hub.upgrade() else { return };
        let Some(source) = hub.source.get().and_then(Weak::upgrade) else {
            return;
        };
        hub.metrics.polls.fetch_add(1, Ordering::Relaxed);
        let polled = match source.poll(&topic).await {
            Ok(polled) => polled,
            Err(_) => {
                hub.metrics.poll_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let changed = if first {
            source
                .cached(&topic)
                .await
                .is_some_and(|cached| cached != polled)
        } else {
            resumed || last.as_ref().is_some_and(|last| *last != polled)
        };
        first = false;
        resumed = false;
        last = Some(polled);
        if changed {
            source.evict(&topic).await;
            let Some(state) = state.upgrade() else { return };
            hub.metrics.signals.fetch_add(1, Ordering::Relaxed);
            state.signal(None);
        }
    }
}

/// A stream's slot in `events_up`.
fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Catalog => 0,
        Stream::Cart => 1,
        Stream::Order => 2,
    }
}

/// Locks `mutex`, recovering the data if a holder panicked (the maps stay consistent: every
/// change to them is a single insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose answer the test sets.
    struct Fake {
        answer: Mutex<Polled>,
        cached: Mutex<Option<Polled>>,
        polls: AtomicU64,
        evictions: AtomicU64,
    }

    impl Source for Fake {
        fn poll<'a>(&'a self, _: &'a Topic) -> BoxFuture<'a, Result<Polled, ClientError>> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let answer = lock(&self.answer).clone();
            Box::pin(async move { Ok(answer) })
        }
        fn evict<'a>(&'a self, _: &'a Topic) -> BoxFuture<'a, ()> {
            self.evictions.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
        fn cached<'a>(&'a self, _: &'a Topic) -> BoxFuture<'a, Option<Polled>> {
            let cached = lock(&self.cached).clone();
            Box::pin(async move { cached })
        }
    }

    fn fake(value: u32) -> Arc<Fake> {
        Arc::new(Fake {
            answer: Mutex::new(Polled::Value(Arc::new(value))),
            cached: Mutex::new(Some(Polled::Value(Arc::new(value)))),
            polls: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn product(id: &str) -> Topic {
        Topic::Product(ProductId::parse(id).unwrap())
    }

    #[tokio::test]
    async fn events_wake_every_subscriber_once_per_newer_version() {
        let hub = Hub::default();
        let mut a = hub.subscribe(product("p-00001"), None);
        let mut b = hub.subscribe(product("p-00001"), None);
        let mut other = hub.subscribe(product("p-00002"), None);
        hub.notify(&product("p-00001"), Some(3), None);
        assert!(a.changed().await);
        assert!(b.changed().await);
        // An older or replayed version wakes nobody.
        hub.notify(&product("p-00001"), Some(3), None);
        hub.notify(&product("p-00001"), Some(2), None);
        assert!(!a.changes.has_changed().unwrap());
        assert!(!other.changes.has_changed().unwrap());
        let cause = TraceContext::parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            None,
        );
        hub.notify(&product("p-00001"), Some(4), cause.as_ref());
        assert!(a.changes.has_changed().unwrap());
        assert_eq!(
            a.cause(),
            cause,
            "the woken subscriber reads the event's trace"
        );
        assert_eq!(other.cause(), None);
        let metrics = hub.metrics();
        assert_eq!((metrics.topics, metrics.subscribers), (2, 3));
        assert_eq!((metrics.signals, metrics.stale_events), (2, 2));
        hub.notify_stream(Stream::Catalog);
        assert!(other.changed().await);
        assert_eq!(a.cause(), None, "a gap was caused by no request");
    }

    #[tokio::test]
    async fn a_topic_goes_with_its_last_subscriber() {
        let hub = Hub::default();
        let a = hub.subscribe(product("p-00001"), None);
        let b = hub.subscribe(product("p-00001"), None);
        drop(a);
        assert_eq!(hub.metrics().topics, 1);
        drop(b);
        assert_eq!(hub.metrics().topics, 0);
        assert_eq!(hub.metrics().subscribers, 0);
        // Nobody follows it: nothing is kept for it.
        hub.notify(&product("p-00001"), Some(1), None);
        assert_eq!(hub.metrics().signals, 0);
        // A new subscriber starts afresh (the old version is forgotten with the topic).
        let mut c = hub.subscribe(product("p-00001"), None);
        hub.notify(&product("p-00001"), Some(1), None);
        assert!(c.changed().await);
    }

    #[tokio::test(start_paused = true)]
    async fn one_poll_per_topic_signals_only_changes() {
        let hub = Hub::default();
        let source = fake(1);
        let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
        hub.set_source(weak);
        let interval = Duration::from_secs(2);
        let mut subscribers: Vec<Subscription> = (0..100)
            .map(|_| hub.subscribe(product("p-00001"), Some(interval)))
            .collect();
        // Three polls with the same answer: one per tick for all 100, no signal.
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), 3);
        assert!(!subscribers[0].changes.has_changed().unwrap());
        *lock(&source.answer) = Polled::Value(Arc::new(2_u32));
        tokio::time::sleep(interval).await;
        assert_eq!(source.evictions.load(Ordering::SeqCst), 1);
        for subscriber in &mut subscribers {
            assert!(subscriber.changed().await);
        }
        // A deleted resource is a change too.
        *lock(&source.answer) = Polled::Gone;
        tokio::time::sleep(interval).await;
        assert!(subscribers[0].changed().await);
        // While the events flow, nothing is polled.
        hub.set_events_up(Stream::Catalog, true);
        tokio::task::yield_now().await;
        let before = source.polls.load(Ordering::SeqCst);
        tokio::time::sleep(interval * 5).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), before);
        // When they stop, polling resumes at once, and its first read is signalled (a change
        // may have been made while neither told).
        hub.set_events_up(Stream::Catalog, false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), before + 1);
        assert!(subscribers[0].changed().await);
        // Without subscribers, the poller stops.
        subscribers.clear();
        tokio::task::yield_now().await;
        let before = source.polls.load(Ordering::SeqCst);
        tokio::time::sleep(interval * 5).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), before);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_poll_signals_a_change_the_cached_copy_missed() {
        // The subscriber read 1 from the cache; the service already holds 2.
        let source = fake(2);
        *lock(&source.cached) = Some(Polled::Value(Arc::new(1_u32)));
        let hub = Hub::default();
        let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
        hub.set_source(weak);
        let mut subscriber = hub.subscribe(product("p-00001"), Some(Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), 1);
        assert_eq!(source.evictions.load(Ordering::SeqCst), 1);
        assert!(subscriber.changed().await);

        // Nothing cached (the subscriber's read went to the service too): nothing to signal.
        let source = fake(2);
        *lock(&source.cached) = None;
        let hub = Hub::default();
        let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
        hub.set_source(weak);
        let subscriber = hub.subscribe(product("p-00001"), Some(Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(source.polls.load(Ordering::SeqCst), 1);
        assert!(!subscriber.changes.has_changed().unwrap());
    }
}
