//! Places held per caller: how many of one kind of thing each caller has at once
//! (downloads in progress, open live-feed streams), up to a set number each, so one
//! caller cannot take what all callers share.
//!
//! A place is a guard that gives itself back when dropped: it can travel with what it
//! counts (a response body, a stream) and is returned however that ends, an early
//! return, a panic or a client that leaves included. A caller holding none is
//! forgotten, so the counts stay as small as the callers active now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Every caller's places, and the most one caller may hold. Cheap to clone: the clones
/// share the counts.
#[derive(Clone)]
pub struct CallerSlots {
    shared: Arc<Shared>,
}

struct Shared {
    per_caller: usize,
    held: Mutex<HashMap<Arc<str>, usize>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // A count is updated in one step, so one left by a panicking holder is whole.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CallerSlots {
    /// Places of which one caller may hold `per_caller` at once.
    pub fn new(per_caller: usize) -> CallerSlots {
        CallerSlots {
            shared: Arc::new(Shared {
                per_caller,
                held: Mutex::default(),
            }),
        }
    }

    /// The most one caller may hold.
    pub fn per_caller(&self) -> usize {
        self.shared.per_caller
    }

    /// One more place for `caller` (a token's name, or a client's address), held until
    /// the [`CallerSlot`] is dropped; `None` when `caller` holds all its share.
    pub fn take(&self, caller: &str) -> Option<CallerSlot> {
        let mut held = self.shared.lock();
        let key: Arc<str> = match held.get_key_value(caller) {
            Some((_, &count)) if count >= self.shared.per_caller => return None,
            Some((key, _)) => key.clone(),
            None if self.shared.per_caller == 0 => return None,
            None => caller.into(),
        };
        *held.entry(key.clone()).or_insert(0) += 1;
        Some(CallerSlot {
            shared: Arc::clone(&self.shared),
            caller: key,
        })
    }
}

/// One place in a caller's share, given back when dropped.
pub struct CallerSlot {
    shared: Arc<Shared>,
    caller: Arc<str>,
}

impl std::fmt::Debug for CallerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerSlot")
            .field("caller", &self.caller)
            .finish()
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut held = self.shared.lock();
        if let Some(count) = held.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_held_to_its_share_and_another_keeps_its_own() {
        let slots = CallerSlots::new(2);
        let first = slots.take("wall").unwrap();
        let _second = slots.take("wall").unwrap();
        assert!(slots.take("wall").is_none(), "a third is over the share");
        let _desk = slots.take("desk").expect("another caller's share is whole");
        drop(first);
        assert!(
            slots.take("wall").is_some(),
            "a dropped place is free again"
        );
    }

    #[test]
    fn a_caller_holding_nothing_is_forgotten() {
        let slots = CallerSlots::new(3);
        let places: Vec<_> = (0..3).map(|_| slots.take("wall").unwrap()).collect();
        assert_eq!(slots.shared.lock().get("wall"), Some(&3));
        drop(places);
        assert!(slots.shared.lock().is_empty());
    }

    #[test]
    fn clones_count_the_same_places() {
        let slots = CallerSlots::new(1);
        let other = slots.clone();
        let held = slots.take("wall").unwrap();
        assert!(other.take("wall").is_none());
        drop(held);
        assert!(other.take("wall").is_some());
    }

    #[test]
    fn a_share_of_none_gives_no_place() {
        let slots = CallerSlots::new(0);
        assert!(slots.take("wall").is_none());
        assert!(
            slots.shared.lock().is_empty(),
            "no count kept for a refusal"
        );
    }
}
