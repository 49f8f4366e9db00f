//! Request coalescing: concurrent misses for the same key make one downstream call.
//!
//! A [`Coalescer`] tracks the fetches in flight by key. The first caller to [`claim`] a key becomes
//! its [`Leader`] and does the work; everyone who claims the key meanwhile becomes a [`Follower`]
//! and receives a clone of the leader's result — errors included — when the leader
//! [`complete`]s. Keys are whatever the cache is keyed by, so private data is coalesced per
//! owner simply by putting the owner in the key.
//!
//! Cancellation is safe: a leader dropped before completing (its request was cancelled) releases
//! the key, its followers are told so ([`Follower::wait`] answers `None`) and retry, one of them
//! becoming the new leader. A leader owns its claim (it holds the map by `Arc`), so it can be moved
//! into a spawned background refresh; a foreground fetch runs in the leader's own task and
//! inherits its tracing span.
//!
//! **Deadlines of coalesced callers.** The shared call runs with the leader's
//! [`RequestContext`](crate::RequestContext), under the leader's deadline. Each follower stops
//! waiting at its *own* deadline ([`Follower::wait_within`]) and gets a timeout then, while the
//! call goes on for the others. If the shared call failed only because the *leader's* budget ran
//! out (and the follower still has some), the follower claims the key again, so one caller's short
//! budget never fails another caller's longer one.
//!
//! **Traced with links.** While traces are exported, every caller that claims a key notes its
//! span (the leader's and each follower's, the first [`MAX_LINKS`](crate::MAX_LINKS)), and the
//! span of the call made for them ([`shared_call_span`]) links to each ([`Leader::link_to`]):
//! a request that waited for someone else's call finds that call from its own trace.
//!
//! [`claim`]: Coalescer::claim
//! [`complete`]: Leader::complete

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{ClientError, Origin};
use crate::trace_context::Links;

/// The flights of a coalescer, by key; shared with its leaders.
type Flights<K, T> = Arc<Mutex<HashMap<K, Flight<T>>>>;

/// Fetches in flight, by key; `T` is the (cloneable) result every waiter receives.
pub(crate) struct Coalescer<K, T> {
    /// The flight of each key being fetched. A plain mutex: it is never held across an `.await`.
    in_flight: Flights<K, T>,
    /// Numbers flights, so a leader only ever removes its own flight from the map.
    next_flight: AtomicU64,
}

/// One fetch in flight.
struct Flight<T> {
    /// Which flight this is (see [`Coalescer::next_flight`]).
    id: u64,
    /// Where followers wait for the result: `None` until the leader completes.
    result: watch::Receiver<Option<T>>,
    /// The spans of the callers waiting for it (the leader's first), to link the call to.
    waiting: Arc<Links>,
}

/// The outcome of [`Coalescer::claim`].
pub(crate) enum Claim<K: Hash + Eq, T> {
    /// Nobody was fetching the key: the caller must fetch it and [`Leader::complete`].
    Leader(Leader<K, T>),
    /// Somebody is fetching the key already: [`Follower::wait`] for their result.
    Follower(Follower<T>),
}

/// The caller that fetches a key on behalf of everyone who asks for it meanwhile.
pub(crate) struct Leader<K: Hash + Eq, T> {
    /// The map that holds this flight, to release it when done.
    flights: Flights<K, T>,
    /// The key being fetched.
    key: K,
    /// This flight's number, so a late release cannot remove a newer flight of the same key.
    flight: u64,
    /// Where the result is published.
    result: watch::Sender<Option<T>>,
    /// The spans of the callers waiting for this fetch, the leader's own first.
    waiting: Arc<Links>,
}

/// A caller waiting for someone else's fetch of the same key.
pub(crate) struct Follower<T> {
    /// Receives the leader's result.
    result: watch::Receiver<Option<T>>,
}

/// What a follower got by [`Follower::wait_within`].
pub(crate) enum Joined<T> {
    /// The leader's result.
    Done(T),
    /// No usable result (the leader was cancelled, or ran out of its own budget while this
    /// follower has some left): claim the key again.
    Again,
    /// The follower's own deadline passed first.
    TimedOut,
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// An empty coalescer.
    pub(crate) fn new() -> Self {
        Self {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            next_flight: AtomicU64::new(0),
        }
    }

    /// Becomes the leader for `key` if nobody is fetching it, else a follower of whoever is.
    pub(crate) fn claim(&self, key: &K) -> Claim<K, T> {
        let mut in_flight = lock(&self.in_flight);
        if let Some(flight) = in_flight.get(key) {
            flight.waiting.note_current();
            return Claim::Follower(Follower {
                result: flight.result.clone(),
            });
        }
        let flight = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        let waiting = Arc::new(Links::default());
        waiting.note_current();
        in_flight.insert(
            key.clone(),
            Flight {
                id: flight,
                result: receiver,
                waiting: Arc::clone(&waiting),
            },
        );
        Claim::Leader(Leader {
            flights: Arc::clone(&self.in_flight),
            key: key.clone(),
            flight,
            result: sender,
            waiting,
        })
    }

    /// Detaches the fetch of `key` in flight, if any: callers that claim the key from now on
    /// start a new fetch instead of joining one that may return what was true before (a change
    /// event). The detached leader still completes its own followers.
    pub(crate) fn forget(&self, key: &K) {
        lock(&self.in_flight).remove(key);
    }

    /// Whether a fetch of `key` is in flight.
    #[cfg(test)]
    pub(crate) fn is_in_flight(&self, key: &K) -> bool {
        lock(&self.in_flight).contains_key(key)
    }

    /// How many keys are being fetched right now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

/// The map of flights, locked. It stays consistent even if a holder panicked: every critical
/// section is a single insert, lookup or remove.
fn lock<K, T>(flights: &Mutex<HashMap<K, Flight<T>>>) -> MutexGuard<'_, HashMap<K, Flight<T>>> {
    flights.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq, T> Leader<K, T> {
    /// Links `span` (the call made for this key) to the span of every caller waiting for it so
    /// far, the leader's own included. Call it once the call is done, just before
    /// [`Leader::complete`], so that callers who joined during the call are linked too.
    pub(crate) fn link_to(&self, span: &tracing::Span) {
        self.waiting.link(span);
    }

    /// Publishes the result to every follower and releases the key.
    pub(crate) fn complete(self, value: T) {
        self.result.send_replace(Some(value));
        // Dropping `self` releases the key.
    }
}

impl<K: Hash + Eq, T> Drop for Leader<K, T> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.flights);
        if in_flight
            .get(&self.key)
            .is_some_and(|flight| flight.id == self.flight)
        {
            in_flight.remove(&self.key);
        }
    }
}

impl<T: Clone> Follower<T> {
    /// The leader's result, or `None` if the leader gave up without one (it was cancelled); the
    /// caller should then claim the key again.
    pub(crate) async fn wait(mut self) -> Option<T> {
        match self.result.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}

impl<V: Clone> Follower<Result<V, ClientError>> {
    /// Waits for the leader's result until the follower's own `deadline` (see the module docs).
    pub(crate) async fn wait_within(
        self,
        deadline: Option<Instant>,
    ) -> Joined<Result<V, ClientError>> {
        let waited = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, self.wait()).await {
                Ok(waited) => waited,
                Err(_elapsed) => return Joined::TimedOut,
            },
            None => self.wait().await,
        };
        match waited {
            None => Joined::Again,
            Some(Err(err))
                if err.origin() == Origin::Deadline
                    && deadline.is_none_or(|deadline| Instant::now() < deadline) =>
            {
                Joined::Again
            }
            Some(result) => Joined::Done(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Fetches `key` with `fetch` unless it is in flight, in which case its result is awaited.
    async fn run<K, T, F, Fut>(coalescer: &Coalescer<K, T>, key: &K, fetch: F) -> T
    where
        K: Hash + Eq + Clone,
        T: Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            match coalescer.claim(key) {
                Claim::Leader(leader) => {
                    let value = fetch().await;
                    leader.complete(value.clone());
                    return value;
                }
                Claim::Follower(follower) => {
                    if let Some(value) = follower.wait().await {
                        return value;
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_runs_for_one_key_fetch_once_and_share_the_result() {
        let coalescer = Arc::new(Coalescer::<&str, Result<u32, String>>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (coalescer, calls) = (coalescer.clone(), calls.clone());
                tokio::spawn(async move {
                    run(&coalescer, &"k", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Err::<u32, _>("boom".to_owned())
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err("boom".to_owned()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_do_not_wait_for_each_other() {
        let coalescer = Coalescer::<u8, u8>::new();
        let Claim::Leader(a) = coalescer.claim(&1) else {
            panic!("first claim leads")
        };
        let Claim::Leader(b) = coalescer.claim(&2) else {
            panic!("another key leads too")
        };
        assert_eq!(coalescer.in_flight(), 2);
        a.complete(1);
        b.complete(2);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_hands_the_key_to_a_follower() {
        let coalescer = Coalescer::<u8, u8>::new();
        let Claim::Leader(leader) = coalescer.claim(&1) else {
            panic!("first claim leads")
        };
        let Claim::Follower(follower) = coalescer.claim(&1) else {
            panic!("second claim follows")
        };
        drop(leader);
        assert_eq!(follower.wait().await, None);
        assert!(matches!(coalescer.claim(&1), Claim::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_that_arrives_after_completion_still_gets_the_value() {
        let coalescer = Coalescer::<u8, u8>::new();
        let Claim::Leader(leader) = coalescer.claim(&1) else {
            panic!("first claim leads")
        };
        let Claim::Follower(follower) = coalescer.claim(&1) else {
            panic!("second claim follows")
        };
        leader.complete(7);
        assert_eq!(follower.wait().await, Some(7));
    }
}

#[cfg(test)]
mod deadline_tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ErrorKind, Failure, Service};

    type Shared = Result<u8, ClientError>;

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_at_its_own_deadline() {
        let coalescer = Coalescer::<u8, Shared>::new();
        let Claim::Leader(leader) = coalescer.claim(&1) else {
            panic!("first claim leads")
        };
        let Claim::Follower(follower) = coalescer.claim(&1) else {
            panic!("second claim follows")
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert!(matches!(
            follower.wait_within(Some(deadline)).await,
            Joined::TimedOut
        ));
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        // The shared call goes on for the others.
        let Claim::Follower(late) = coalescer.claim(&1) else {
            panic!("still in flight")
        };
        leader.complete(Ok(9));
        assert!(matches!(late.wait_within(None).await, Joined::Done(Ok(9))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_out_of_its_own_budget_hands_the_key_to_followers_with_budget_left() {
        let coalescer = Coalescer::<u8, Shared>::new();
        let claim = || match coalescer.claim(&1) {
            Claim::Leader(leader) => (Some(leader), None),
            Claim::Follower(follower) => (None, Some(follower)),
        };
        let (Some(leader), _) = claim() else {
            panic!("leads")
        };
        let (_, Some(patient)) = claim() else {
            panic!("follows")
        };
        let (_, Some(hurried)) = claim() else {
            panic!("follows")
        };
        let deadline_error = ClientError::classify(
            Service::Product,
            Failure::AttemptTimedOut {
                deadline_bound: true,
            },
        );
        leader.complete(Err(deadline_error));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(matches!(
            patient.wait_within(Some(later)).await,
            Joined::Again
        ));
        // A follower whose own deadline has passed as well keeps the timeout.
        let Joined::Done(Err(err)) = hurried.wait_within(Some(Instant::now())).await else {
            panic!("the leader's timeout")
        };
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_failure_is_shared_with_every_follower() {
        let coalescer = Coalescer::<u8, Shared>::new();
        let Claim::Leader(leader) = coalescer.claim(&1) else {
            panic!("first claim leads")
        };
        let Claim::Follower(follower) = coalescer.claim(&1) else {
            panic!("second claim follows")
        };
        leader.complete(Err(ClientError::classify(
            Service::Product,
            Failure::AttemptTimedOut {
                deadline_bound: false,
            },
        )));
        assert!(matches!(
            follower.wait_within(None).await,
            Joined::Done(Err(_))
        ));
    }
}
