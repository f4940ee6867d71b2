//! Mutual exclusion per key (an agent id, an idempotency key) without a lock per key
//! living forever: an entry exists only while someone holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct KeyedLock {
    entries: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while the caller works on the key; releases (and forgets the key when nobody
/// else wants it) on drop. It owns its place in the lock, so it may outlive the call
/// that took it: a change whose record must wait for the database keeps its agent
/// locked until it is recorded (see `TransitionEngine`'s unrecorded changes).
pub struct KeyGuard {
    owner: Arc<KeyedLock>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLock {
    pub async fn lock(self: &Arc<Self>, key: &str) -> KeyGuard {
        let entry = {
            let mut entries = self.entries.lock().expect("keyed lock poisoned");
            entries.entry(key.to_owned()).or_default().clone()
        };
        let guard = entry.lock_owned().await;
        KeyGuard {
            owner: Arc::clone(self),
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    /// The key's guard if nobody holds it now; `None` (without waiting) when someone
    /// does. State sync takes the agents it records this way, so a change in flight is
    /// never interleaved with a poll's record of the same agent.
    pub fn try_lock(self: &Arc<Self>, key: &str) -> Option<KeyGuard> {
        let mut entries = self.entries.lock().expect("keyed lock poisoned");
        let entry = entries.entry(key.to_owned()).or_default().clone();
        match entry.try_lock_owned() {
            Ok(guard) => Some(KeyGuard {
                owner: Arc::clone(self),
                key: key.to_owned(),
                guard: Some(guard),
            }),
            // Held: the holder's guard forgets the key when it is done.
            Err(_) => None,
        }
    }

    /// True while someone holds or waits for `key`.
    pub fn is_held(&self, key: &str) -> bool {
        self.entries
            .lock()
            .expect("keyed lock poisoned")
            .contains_key(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut entries = self.owner.entries.lock().expect("keyed lock poisoned");
        // Only the map's own reference left: nobody holds or awaits this key.
        if entries
            .get(&self.key)
            .is_some_and(|entry| Arc::strong_count(entry) == 1)
        {
            entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_holder_per_key_and_keys_are_forgotten_when_free() {
        let locks = Arc::new(KeyedLock::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = locks.lock("u_001").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn try_lock_fails_while_the_key_is_held_and_blocks_lockers_while_it_holds() {
        let locks = Arc::new(KeyedLock::default());
        let held = locks.lock("u_001").await;
        assert!(locks.try_lock("u_001").is_none());
        drop(held);
        assert_eq!(locks.len(), 0, "a failed try leaves nothing behind");
        let taken = locks.try_lock("u_001").expect("free again");
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("u_001")).await;
        assert!(
            waiting.is_err(),
            "a locker waits while try_lock holds the key"
        );
        drop(taken);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = Arc::new(KeyedLock::default());
        let _a = locks.lock("u_001").await;
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), locks.lock("u_002")).await;
        assert!(b.is_ok());
    }
}
