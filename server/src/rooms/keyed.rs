//! One lock per key, for work that must not run twice at once for one key (loading a room,
//! starting a notebook's kernel) while work on other keys goes on: an entry lives while someone
//! holds or waits for it, so nothing global is ever held across an `.await`.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct KeyedLocks<K: Eq + Hash> {
    locks: DashMap<K, Arc<Mutex<()>>>,
}

impl<K: Eq + Hash> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: DashMap::new(),
        }
    }
}

/// The lock of one key, held; the entry is forgotten when its last holder or waiter goes (a
/// waiter whose request is cancelled too).
pub struct KeyGuard<'a, K: Eq + Hash> {
    locks: &'a KeyedLocks<K>,
    key: K,
    lock: Arc<Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key` (only work on the same key is waited for).
    pub async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        let lock = self.locks.entry(key.clone()).or_default().clone();
        let mut guard = KeyGuard {
            locks: self,
            key,
            lock,
            held: None,
        };
        // Cancelled while waiting: `guard` is dropped, and forgets the entry if it was the last.
        guard.held = Some(guard.lock.clone().lock_owned().await);
        guard
    }

    /// How many keys have an entry (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.len()
    }
}

impl<K: Eq + Hash> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.held.take());
        // Two references left: the map's and ours (each other holder or waiter has one more).
        self.locks
            .locks
            .remove_if(&self.key, |_, lock| Arc::strong_count(lock) == 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_wait_only_for_themselves_and_are_forgotten() {
        let locks = KeyedLocks::<&str>::default();
        let big = locks.lock("big").await;
        // Another key is free while "big" is held.
        let small = locks.lock("small").await;
        drop(small);
        assert_eq!(locks.len(), 1);
        // The same key waits: a second claim gets it only once the first is let go.
        let mut second = std::pin::pin!(locks.lock("big"));
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        drop(big);
        let again = second.await;
        drop(again);
        assert_eq!(locks.len(), 0, "entries are forgotten once unused");
        // A waiter that gives up leaves nothing behind either.
        let held = locks.lock("big").await;
        {
            let mut waiting = std::pin::pin!(locks.lock("big"));
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        }
        drop(held);
        assert_eq!(locks.len(), 0);
    }
}
