//! A tenant's lease: which instance leads it, in which term, until when; and the
//! instances that serve it.
//!
//! The lease is one row per tenant (`cluster_lease`, in the tenant's schema). Its times
//! are the database's clock, so instances need not agree on the time, only on the
//! length of a second. An instance takes the lease when it has expired, or renews its
//! own while it is current:
//! - a take-over starts a new term (one more than the last), in a transaction holding
//!   the tenant's write lock, so every write a former leader makes either committed
//!   before it or is refused (the leader's write lock proves the term, see
//!   `wfmd_leader_write_lock`);
//! - a renewal keeps the term and moves the expiry;
//! - an instance that held the lease and let it expire starts a new term too, as its
//!   work stopped when it lost it.
//!
//! Only PostgreSQL has several instances: on SQLite the daemon's lock file refuses a
//! second one, and these functions are not called.

use std::time::Duration;

use serde::Serialize;
use sqlx::FromRow;

use crate::store::{Store, execute, fetch, fetch_scalar};

/// The database's clock, in Unix milliseconds.
macro_rules! now_ms {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// Takes the lease for `instance` when it has expired, or renews it when `instance`
/// holds it in `held` (its term as it knows it); returns the term it now holds, or
/// `None` while another instance's lease is current. The lease lasts `ttl` from now.
pub async fn take(
    store: &Store,
    instance: &str,
    held: Option<i64>,
    ttl: Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = store.begin_write_unfenced().await?;
    // `excluded.acquired_at` is now: a renewal keeps its term and its time of taking.
    let term: Option<i64> = fetch_scalar!(
        &mut tx,
        optional,
        concat!(
            "INSERT INTO cluster_lease (id, holder, term, acquired_at, expires_at)
         SELECT 1, $1, 1, n.ms, n.ms + $2 FROM (SELECT ",
            now_ms!(),
            " AS ms) AS n
         ON CONFLICT (id) DO UPDATE SET
             holder = excluded.holder,
             term = CASE WHEN cluster_lease.holder = excluded.holder
                              AND cluster_lease.term = $3
                              AND cluster_lease.expires_at > excluded.acquired_at
                         THEN cluster_lease.term ELSE cluster_lease.term + 1 END,
             acquired_at = CASE WHEN cluster_lease.holder = excluded.holder
                                     AND cluster_lease.term = $3
                                     AND cluster_lease.expires_at > excluded.acquired_at
                                THEN cluster_lease.acquired_at ELSE excluded.acquired_at END,
             expires_at = excluded.expires_at
         WHERE cluster_lease.expires_at <= excluded.acquired_at
            OR (cluster_lease.holder = excluded.holder AND cluster_lease.term = $3)
         RETURNING term"
        ),
        instance,
        millis(ttl),
        held
    )?;
    tx.commit().await?;
    Ok(term)
}

/// Ends `instance`'s lease of `term` now, so another instance takes it at its next try
/// (within a second) instead of after the expiry: a leader stopping. Returns whether it
/// still held it.
pub async fn release(store: &Store, instance: &str, term: i64) -> Result<bool, sqlx::Error> {
    let mut tx = store.begin_write_unfenced().await?;
    let released = execute!(
        &mut tx,
        concat!(
            "UPDATE cluster_lease SET expires_at = ",
            now_ms!(),
            " WHERE id = 1 AND holder = $1 AND term = $2"
        ),
        instance,
        term
    )?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(released)
}

/// Notes that `instance` serves the tenant, reachable at `advertise_url`.
pub async fn heartbeat(
    store: &Store,
    instance: &str,
    advertise_url: Option<&str>,
) -> Result<(), sqlx::Error> {
    execute!(
        store.writer(),
        concat!(
            "INSERT INTO cluster_instances (instance_id, advertise_url, started_at, last_seen)
         SELECT $1, $2, n.ms, n.ms FROM (SELECT ",
            now_ms!(),
            " AS ms) AS n
         ON CONFLICT (instance_id) DO UPDATE
         SET advertise_url = excluded.advertise_url, last_seen = excluded.last_seen"
        ),
        instance,
        advertise_url
    )
    .map(drop)
}

/// How long an instance not heard from stays among the tenant's instances.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Forgets the instances not heard from for `after` (by default every restarted
/// instance is a new one, its id holding its process id); returns how many.
pub async fn forget_silent(store: &Store, after: Duration) -> Result<u64, sqlx::Error> {
    execute!(
        store.writer(),
        concat!(
            "DELETE FROM cluster_instances WHERE last_seen < ",
            now_ms!(),
            " - $1"
        ),
        millis(after)
    )
    .map(|done| done.rows_affected())
}

/// The tenant's lease as the database holds it now.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct Lease {
    /// The instance holding (or last holding) the lease.
    pub holder: String,
    pub term: i64,
    /// When the term began and when the lease runs out, Unix ms by the database's clock.
    pub acquired_at: i64,
    pub expires_at: i64,
    /// The database's clock when read: the lease is current while `now < expires_at`.
    pub now: i64,
}

impl Lease {
    /// Whether the lease is current (its holder leads).
    pub fn current(&self) -> bool {
        self.now < self.expires_at
    }
}

/// An instance serving the tenant, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct Instance {
    pub instance_id: String,
    pub advertise_url: Option<String>,
    pub started_at: i64,
    pub last_seen: i64,
}

/// The tenant's lease, if any instance ever took it.
pub async fn leadership(store: &Store) -> Result<Option<Lease>, sqlx::Error> {
    fetch!(
        store.reader(),
        optional,
        concat!(
            "SELECT holder, term, acquired_at, expires_at, ",
            now_ms!(),
            " AS now FROM cluster_lease WHERE id = 1"
        )
    )
}

/// The instance whose lease is current, and where it said it can be reached.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Leader {
    pub holder: String,
    pub advertise_url: Option<String>,
}

/// The tenant's leader now, if any instance holds a current lease.
pub async fn leader(store: &Store) -> Result<Option<Leader>, sqlx::Error> {
    fetch!(
        store.reader(),
        optional,
        concat!(
            "SELECT l.holder, i.advertise_url FROM cluster_lease AS l
         LEFT JOIN cluster_instances AS i ON i.instance_id = l.holder
         WHERE l.id = 1 AND l.expires_at > ",
            now_ms!()
        )
    )
}

/// The instances that said they serve the tenant, the most recently seen first.
pub async fn instances(store: &Store) -> Result<Vec<Instance>, sqlx::Error> {
    fetch!(
        store.reader(),
        all,
        "SELECT instance_id, advertise_url, started_at, last_seen FROM cluster_instances
         ORDER BY last_seen DESC, instance_id"
    )
}

/// How many instances noted themselves in the tenant within `within` (by the
/// database's clock): the ones serving it now.
pub async fn live_instances(store: &Store, within: Duration) -> Result<usize, sqlx::Error> {
    let count: i64 = fetch_scalar!(
        store.reader(),
        one,
        concat!(
            "SELECT COUNT(*) FROM cluster_instances WHERE last_seen > ",
            now_ms!(),
            " - $1"
        ),
        millis(within)
    )?;
    Ok(usize::try_from(count).unwrap_or(0))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::store::{Done, on};
    use std::sync::Arc;

    use super::*;
    use crate::store::testing::{temp_url_on, waits_for_an_advisory_lock};
    use crate::store::{Backend, InstanceRole, is_not_leader};

    const LONG: Duration = Duration::from_secs(600);

    /// Two instances' stores on one fresh PostgreSQL database.
    async fn two_instances() -> (Store, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        (a, b, dir)
    }

    fn leader(instance: &str, term: i64) -> InstanceRole {
        InstanceRole::Leader {
            instance: Arc::from(instance),
            term,
        }
    }

    /// A write of the engine's kind: an outbox event, in a transaction of its own.
    async fn write(store: &Store) -> Result<(), sqlx::Error> {
        let mut tx = store.begin_write().await?;
        on!(&mut tx, |c| sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET at = write_probe.at + 1"
        )
        .execute(c)
        .await
        .map(Done::from))?;
        tx.commit().await
    }

    #[tokio::test]
    async fn one_instance_holds_the_lease_until_it_expires_and_a_take_over_starts_a_new_term() {
        let (a, b, _dir) = two_instances().await;
        assert_eq!(leadership(&a).await.unwrap(), None, "nobody took it yet");

        assert_eq!(take(&a, "a", None, LONG).await.unwrap(), Some(1));
        assert_eq!(
            take(&b, "b", None, LONG).await.unwrap(),
            None,
            "a's is current"
        );
        assert_eq!(
            take(&a, "a", Some(1), LONG).await.unwrap(),
            Some(1),
            "a renewal keeps the term"
        );
        // Held, but not in the term a names: a's earlier life, say. It waits too.
        assert_eq!(take(&a, "a", Some(7), LONG).await.unwrap(), None);

        // a renews for no time at all: its lease is over at once.
        assert_eq!(
            take(&a, "a", Some(1), Duration::ZERO).await.unwrap(),
            Some(1)
        );
        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), Some(2));
        let seen = leadership(&a).await.unwrap().unwrap();
        assert_eq!((seen.holder.as_str(), seen.term), ("b", 2));
        assert!(seen.current(), "{seen:?}");
        assert!(seen.expires_at >= seen.now + 599_000, "{seen:?}");
        assert_eq!(
            take(&a, "a", Some(1), LONG).await.unwrap(),
            None,
            "a's term is over and b's is current"
        );
    }

    #[tokio::test]
    async fn a_holder_whose_lease_ran_out_takes_it_again_in_a_new_term() {
        let (a, _b, _dir) = two_instances().await;
        assert_eq!(take(&a, "a", None, Duration::ZERO).await.unwrap(), Some(1));
        assert_eq!(take(&a, "a", Some(1), LONG).await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_leaders_write_in_a_term_that_is_over_is_refused() {
        let (a, b, _dir) = two_instances().await;
        assert_eq!(take(&a, "a", None, Duration::ZERO).await.unwrap(), Some(1));
        a.set_role(leader("a", 1));
        write(&a)
            .await
            .expect("term 1 is current: nobody took over");

        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), Some(2));
        b.set_role(leader("b", 2));
        let refused = write(&a).await.unwrap_err();
        assert!(is_not_leader(&refused), "{refused}");
        assert!(refused.to_string().contains("term 1 is over"), "{refused}");
        let refused = a.begin_write_unflushed().await.err().unwrap();
        assert!(
            is_not_leader(&refused),
            "an intent proves the term too: {refused}"
        );
        write(&b).await.expect("b leads in term 2");
        b.begin_write_unflushed().await.expect("b leads in term 2");

        // A follower refuses its own writes, before the database is asked.
        a.set_role(InstanceRole::Follower);
        for refused in [
            write(&a).await.unwrap_err(),
            a.begin_write_unflushed().await.err().unwrap(),
        ] {
            assert!(is_not_leader(&refused), "{refused}");
            assert!(crate::store::is_unavailable(&refused), "{refused}");
        }
    }

    /// The take-over holds the tenant's write lock: a write the old leader began
    /// before it commits first, and the take-over's new term comes after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_take_over_waits_for_the_old_leaders_write_under_way() {
        let (a, b, _dir) = two_instances().await;
        assert_eq!(take(&a, "a", None, Duration::ZERO).await.unwrap(), Some(1));
        a.set_role(leader("a", 1));
        let mut under_way = a.begin_write().await.unwrap();

        let taking = crate::tasks::spawn(async move { take(&b, "b", None, LONG).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !taking.is_finished() && !waits_for_an_advisory_lock(&a).await {
            assert!(tokio::time::Instant::now() < deadline, "never waited");
            tokio::task::yield_now().await;
        }
        assert!(!taking.is_finished(), "the take-over waits for the write");
        on!(&mut under_way, |c| sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, 1)"
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        under_way.commit().await.expect("began in a current term");
        assert_eq!(taking.await.unwrap().unwrap(), Some(2));
        assert!(write(&a).await.is_err(), "and after it, term 1 is over");
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_the_next_try() {
        let (a, b, _dir) = two_instances().await;
        assert_eq!(take(&a, "a", None, LONG).await.unwrap(), Some(1));
        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), None);
        assert!(!release(&a, "a", 7).await.unwrap(), "not a's term");
        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), None);
        assert!(release(&a, "a", 1).await.unwrap());
        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn every_instance_is_listed_with_where_to_reach_it_until_silent_for_a_day() {
        let (a, b, _dir) = two_instances().await;
        heartbeat(&a, "a", Some("http://10.0.0.5:8080"))
            .await
            .unwrap();
        heartbeat(&b, "b", None).await.unwrap();
        heartbeat(&a, "a", Some("http://10.0.0.6:8080"))
            .await
            .unwrap();
        let listed = instances(&b).await.unwrap();
        let listed: Vec<_> = listed
            .iter()
            .map(|i| (i.instance_id.as_str(), i.advertise_url.as_deref()))
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(
            listed.contains(&("a", Some("http://10.0.0.6:8080"))),
            "{listed:?}"
        );
        assert!(listed.contains(&("b", None)), "{listed:?}");

        // b falls silent for a day and a minute; a goes on.
        on!(a.writer(), |c| sqlx::query(
            "UPDATE cluster_instances SET last_seen = last_seen - 86460000
             WHERE instance_id = 'b'"
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        assert_eq!(forget_silent(&a, FORGOTTEN_AFTER).await.unwrap(), 1);
        let left: Vec<String> = instances(&a)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        assert_eq!(left, ["a"]);
    }
}
