//! The bound on one caller's deferred changes (`deferred.max_waiting_per_caller`).
//!
//! A change deferred for a busy agent costs no platform call, so nothing else paces
//! it, and each one makes an event or two (`transition.deferred`, then its end:
//! replaced, expired, cancelled or made) and their webhook deliveries. So a caller's
//! deferred change counts from its request while it waits, and for at least
//! [`COUNTED_FOR_AT_LEAST`] after it was asked, however soon it was replaced or
//! settled: a loop replacing one agent's change is bounded as surely as changes piling
//! up for many agents. One more `when_busy = "defer"` change is answered 429, naming the
//! limit, with `Retry-After` for when the first counted one stops counting.
//!
//! Callers are told apart as the live feed's limits tell them ([`CallerKey`]): by
//! token name, or without tokens by client address. The counts are kept in memory by
//! the instance that answers the change (the tenant's leader: a follower hands it on,
//! with the client's address), and start afresh after a restart or a failover. Whether
//! a counted change still waits is read from the database only when the answer depends
//! on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};

use super::auth::CallerKey;
use super::error::Problem;
use crate::engine::deferred::Deferral;
use crate::store::Store;

/// The least time a deferred change counts for, from its request.
pub const COUNTED_FOR_AT_LEAST: TimeDelta = TimeDelta::minutes(1);

/// What a caller asking while one of its changes is still being asked (whose end is
/// not known yet) is told to wait.
const RETRY_WHILE_ASKING: TimeDelta = TimeDelta::seconds(1);

/// Every caller's counted deferred changes, and the bound. Cheap to clone.
#[derive(Clone)]
pub struct DeferralLimit {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    callers: Mutex<Callers>,
}

#[derive(Default)]
struct Callers {
    places: HashMap<Arc<str>, Vec<Place>>,
    /// The next [`Place::number`].
    next: u64,
}

/// One counted change of a caller's.
#[derive(Debug)]
struct Place {
    number: u64,
    asked: DateTime<Utc>,
    /// `None` while its request is under way.
    deferred: Option<Deferred>,
}

#[derive(Debug)]
struct Deferred {
    id: String,
    agent: String,
    expires: DateTime<Utc>,
    /// Whether it waited when last looked at.
    waiting: bool,
}

impl Place {
    /// Until when it counts, as far as is known; `None` while it is being asked.
    fn counts_until(&self) -> Option<DateTime<Utc>> {
        let least = self.asked + COUNTED_FOR_AT_LEAST;
        match &self.deferred {
            None => None,
            Some(deferred) if deferred.waiting => Some(least.max(deferred.expires)),
            Some(_) => Some(least),
        }
    }

    /// Whether it is known to wait (it may have stopped since).
    fn waiting(&self) -> bool {
        self.deferred.as_ref().is_some_and(|d| d.waiting)
    }
}

/// A place taken for a change asked with `when_busy = "defer"`: the change counts while
/// this is held, and from [`Asking::deferred`] on while it waits; dropped without it (the
/// change was made or refused at once), the place is free again.
pub struct Asking {
    inner: Arc<Inner>,
    caller: Arc<str>,
    number: u64,
    kept: bool,
}

impl Asking {
    /// The change was deferred as `deferral`: it counts on (see the module's doc).
    pub fn deferred(mut self, deferral: &Deferral) {
        let Ok(expires) = DateTime::parse_from_rfc3339(&deferral.expires_at) else {
            return;
        };
        let mut callers = self.inner.lock();
        // An agent has one deferred change at most: this one replaced any other, whoever
        // asked it.
        let others = callers.places.values_mut().flatten();
        for deferred in others.filter_map(|p| p.deferred.as_mut()) {
            if deferred.agent == deferral.agent_id && deferred.id != deferral.deferred_id {
                deferred.waiting = false;
            }
        }
        let places = callers.places.entry(self.caller.clone()).or_default();
        // A replayed request (its idempotency key) answers a change counted already.
        let counted = |p: &Place| {
            p.deferred
                .as_ref()
                .is_some_and(|d| d.id == deferral.deferred_id)
        };
        if places.iter().any(counted) {
            return;
        }
        if let Some(place) = places.iter_mut().find(|p| p.number == self.number) {
            place.deferred = Some(Deferred {
                id: deferral.deferred_id.clone(),
                agent: deferral.agent_id.clone(),
                expires: expires.to_utc(),
                waiting: true,
            });
            self.kept = true;
        }
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut callers = self.inner.lock();
        if let Some(places) = callers.places.get_mut(&self.caller) {
            places.retain(|p| p.number != self.number);
            if places.is_empty() {
                callers.places.remove(&self.caller);
            }
        }
    }
}

impl DeferralLimit {
    /// At most `max` (`deferred.max_waiting_per_caller`, at least 1) per caller.
    pub fn new(max: usize) -> DeferralLimit {
        DeferralLimit {
            inner: Arc::new(Inner {
                max: max.max(1),
                callers: Mutex::default(),
            }),
        }
    }

    /// A place for one more change of `caller`'s asked with `when_busy = "defer"` at
    /// `now`, or the 429 that says when to ask again.
    #[allow(clippy::result_large_err)]
    pub async fn admit(
        &self,
        caller: &CallerKey,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Asking, Response> {
        let key = &caller.0;
        if let Ok(asking) = self.try_admit(key, now) {
            return Ok(asking);
        }
        // One found no longer waiting (carried out, cancelled) may free a place sooner.
        if self.inner.lock().any_waiting(key) {
            let rows = crate::store::deferred::all(store.reader())
                .await
                .map_err(|e| Problem::internal(&e).into_response())?;
            let waiting: HashSet<String> = rows.into_iter().map(|row| row.id).collect();
            self.inner.lock().settled(key, &waiting);
        }
        self.try_admit(key, now)
            .map_err(|retry_at| self.too_many(key, now, retry_at))
    }

    /// A place for `caller` at `now`, or when the first of its counted changes stops
    /// counting.
    fn try_admit(&self, caller: &Arc<str>, now: DateTime<Utc>) -> Result<Asking, DateTime<Utc>> {
        let mut callers = self.inner.lock();
        callers.forget_before(now);
        let number = callers.next;
        let places = callers.places.entry(caller.clone()).or_default();
        if places.len() >= self.inner.max {
            let first_free = places
                .iter()
                .map(|p| p.counts_until().unwrap_or(now + RETRY_WHILE_ASKING))
                .min()
                .unwrap_or(now);
            return Err(first_free);
        }
        places.push(Place {
            number,
            asked: now,
            deferred: None,
        });
        callers.next += 1;
        Ok(Asking {
            inner: self.inner.clone(),
            caller: caller.clone(),
            number,
            kept: false,
        })
    }

    fn too_many(&self, caller: &str, now: DateTime<Utc>, retry_at: DateTime<Utc>) -> Response {
        let max = self.inner.max;
        let seconds = u64::try_from((retry_at - now).num_milliseconds())
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        tracing::warn!(
            caller,
            limit = max,
            "refused a deferred change: the caller has deferred.max_waiting_per_caller counted"
        );
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-deferred",
            "Too many deferred changes",
            format!(
                "{caller} has {max} deferred changes counted, the most \
                 deferred.max_waiting_per_caller allows (each counts while it waits, and for \
                 a minute after it was asked); ask again in {seconds} s"
            ),
        )
        .with("limit", max)
        .with("retry_after", seconds)
        .retry_after(seconds)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Callers> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Callers {
    /// Forgets the places that stopped counting before `now`, and callers left with none.
    fn forget_before(&mut self, now: DateTime<Utc>) {
        self.places.retain(|_, places| {
            places.retain(|p| p.counts_until().is_none_or(|until| until > now));
            !places.is_empty()
        });
    }

    /// Whether one of `caller`'s changes is known to wait.
    fn any_waiting(&self, caller: &str) -> bool {
        self.places
            .get(caller)
            .is_some_and(|places| places.iter().any(Place::waiting))
    }

    /// Notes which of `caller`'s changes no longer wait: those not in `waiting`.
    fn settled(&mut self, caller: &str, waiting: &HashSet<String>) {
        let deferred = self
            .places
            .get_mut(caller)
            .into_iter()
            .flatten()
            .filter_map(|p| p.deferred.as_mut());
        for deferred in deferred {
            deferred.waiting &= waiting.contains(&deferred.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentState, Origin};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    /// A deferral `id` for `agent` expiring at `expires`.
    fn deferral(id: &str, agent: &str, expires: DateTime<Utc>) -> Deferral {
        Deferral {
            outcome: "deferred".into(),
            deferred_id: id.into(),
            agent_id: agent.into(),
            to: AgentState::NotReady,
            reason: "BREAK".into(),
            origin: Origin::Api,
            actor: "desk".into(),
            requested_at: crate::time::rfc3339(at(0)),
            expires_at: crate::time::rfc3339(expires),
            bulk_job_id: None,
        }
    }

    fn key(name: &str) -> Arc<str> {
        name.into()
    }

    /// Defers `id` (for the agent of the same name) for `caller` at `now`, expiring at
    /// `expires`.
    fn defer(limit: &DeferralLimit, caller: &str, now: i64, id: &str, expires: i64) {
        let place = limit.try_admit(&key(caller), at(now)).unwrap();
        place.deferred(&deferral(id, id, at(expires)));
    }

    #[test]
    fn a_caller_is_held_to_its_bound_and_another_caller_keeps_its_own() {
        let limit = DeferralLimit::new(2);
        defer(&limit, "token:a", 0, "d1", 900);
        defer(&limit, "token:a", 1, "d2", 900);
        assert_eq!(
            limit.try_admit(&key("token:a"), at(2)).err(),
            Some(at(900)),
            "free when the first one expires"
        );
        defer(&limit, "token:b", 2, "d3", 900);
    }

    #[test]
    fn a_change_replaced_or_settled_at_once_counts_for_a_minute_after_it_was_asked() {
        let limit = DeferralLimit::new(1);
        defer(&limit, "token:a", 0, "d1", 900);
        // Replaced (or carried out, cancelled) after ten seconds.
        limit.inner.lock().settled("token:a", &HashSet::new());
        assert_eq!(limit.try_admit(&key("token:a"), at(10)).err(), Some(at(60)));
        assert!(limit.try_admit(&key("token:a"), at(60)).is_ok());
    }

    #[test]
    fn a_change_that_still_waits_counts_past_its_minute_until_it_expires() {
        let limit = DeferralLimit::new(1);
        defer(&limit, "token:a", 0, "d1", 600);
        let waiting = HashSet::from(["d1".to_owned()]);
        assert!(limit.inner.lock().any_waiting("token:a"));
        limit.inner.lock().settled("token:a", &waiting);
        assert_eq!(
            limit.try_admit(&key("token:a"), at(300)).err(),
            Some(at(600))
        );
        assert!(limit.try_admit(&key("token:a"), at(600)).is_ok());
    }

    #[test]
    fn a_change_being_asked_counts_and_one_made_at_once_frees_its_place() {
        let limit = DeferralLimit::new(1);
        let asking = limit.try_admit(&key("address:127.0.0.1"), at(0)).unwrap();
        assert_eq!(
            limit.try_admit(&key("address:127.0.0.1"), at(0)).err(),
            Some(at(1)),
            "its end is not known yet"
        );
        drop(asking);
        assert!(limit.try_admit(&key("address:127.0.0.1"), at(0)).is_ok());
        assert!(limit.inner.lock().places.is_empty(), "nothing kept for it");
    }

    #[test]
    fn a_change_replacing_an_agents_change_ends_the_older_ones_wait() {
        let limit = DeferralLimit::new(2);
        let asked = |caller: &str, now: i64, id: &str| {
            let place = limit.try_admit(&key(caller), at(now)).unwrap();
            place.deferred(&deferral(id, "u_7", at(900)));
        };
        asked("token:a", 0, "d1");
        asked("token:b", 1, "d2");
        asked("token:a", 2, "d3");
        assert_eq!(
            limit.try_admit(&key("token:a"), at(3)).err(),
            Some(at(60)),
            "d1 counts only for its minute"
        );
        assert!(!limit.inner.lock().places["token:b"][0].waiting());
    }

    #[test]
    fn a_replayed_deferral_is_counted_once() {
        let limit = DeferralLimit::new(2);
        defer(&limit, "token:a", 0, "d1", 900);
        defer(&limit, "token:a", 1, "d1", 900);
        defer(&limit, "token:a", 2, "d2", 900);
    }
}
