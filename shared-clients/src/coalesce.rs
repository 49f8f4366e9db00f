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
//! becoming the new leader. The fetch runs in the leader's task, not a spawned one, so it needs no
//! `'static` borrow and inherits the leader's tracing span.
//!
//! [`claim`]: Coalescer::claim
//! [`complete`]: Leader::complete

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// Fetches in flight, by key; `T` is the (cloneable) result every waiter receives.
pub(crate) struct Coalescer<K, T> {
    /// The flight of each key being fetched. A plain mutex: it is never held across an `.await`.
    in_flight: Mutex<HashMap<K, Flight<T>>>,
    /// Numbers flights, so a leader only ever removes its own flight from the map.
    next_flight: AtomicU64,
}

/// One fetch in flight.
struct Flight<T> {
    /// Which flight this is (see [`Coalescer::next_flight`]).
    id: u64,
    /// Where followers wait for the result: `None` until the leader completes.
    result: watch::Receiver<Option<T>>,
}

/// The outcome of [`Coalescer::claim`].
pub(crate) enum Claim<'a, K: Hash + Eq, T> {
    /// Nobody was fetching the key: the caller must fetch it and [`Leader::complete`].
    Leader(Leader<'a, K, T>),
    /// Somebody is fetching the key already: [`Follower::wait`] for their result.
    Follower(Follower<T>),
}

/// The caller that fetches a key on behalf of everyone who asks for it meanwhile.
pub(crate) struct Leader<'a, K: Hash + Eq, T> {
    /// The coalescer whose map holds this flight, to release it when done.
    coalescer: &'a Coalescer<K, T>,
    /// The key being fetched.
    key: K,
    /// This flight's number, so a late release cannot remove a newer flight of the same key.
    flight: u64,
    /// Where the result is published.
    result: watch::Sender<Option<T>>,
}

/// A caller waiting for someone else's fetch of the same key.
pub(crate) struct Follower<T> {
    /// Receives the leader's result.
    result: watch::Receiver<Option<T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// An empty coalescer.
    pub(crate) fn new() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
        }
    }

    /// Becomes the leader for `key` if nobody is fetching it, else a follower of whoever is.
    pub(crate) fn claim(&self, key: &K) -> Claim<'_, K, T> {
        let mut in_flight = self.lock();
        if let Some(flight) = in_flight.get(key) {
            return Claim::Follower(Follower {
                result: flight.result.clone(),
            });
        }
        let flight = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(
            key.clone(),
            Flight {
                id: flight,
                result: receiver,
            },
        );
        Claim::Leader(Leader {
            coalescer: self,
            key: key.clone(),
            flight,
            result: sender,
        })
    }

    /// Runs `fetch` for `key` unless a fetch of `key` is already in flight, in which case its
    /// result is awaited instead. Every caller gets the one result.
    pub(crate) async fn run<F, Fut>(&self, key: &K, fetch: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            match self.claim(key) {
                Claim::Leader(leader) => {
                    let value = fetch().await;
                    leader.complete(value.clone());
                    return value;
                }
                Claim::Follower(follower) => {
                    if let Some(value) = follower.wait().await {
                        return value;
                    }
                    // The leader was cancelled: claim again, perhaps becoming the leader.
                }
            }
        }
    }

    /// How many keys are being fetched right now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<T>>> {
        // The map stays consistent even if a holder panicked: every critical section is a single
        // insert, lookup or remove.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq, T> Leader<'_, K, T> {
    /// Publishes the result to every follower and releases the key.
    pub(crate) fn complete(self, value: T) {
        self.result.send_replace(Some(value));
        // Dropping `self` releases the key.
    }
}

impl<K: Hash + Eq, T> Drop for Leader<'_, K, T> {
    fn drop(&mut self) {
        let mut in_flight = self
            .coalescer
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_runs_for_one_key_fetch_once_and_share_the_result() {
        let coalescer = Arc::new(Coalescer::<&str, Result<u32, String>>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (coalescer, calls) = (coalescer.clone(), calls.clone());
                tokio::spawn(async move {
                    coalescer
                        .run(&"k", || async {
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
