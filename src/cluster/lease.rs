//! A tenant's lease: which instance leads it, in which term, until when; and the
//! instances that serve it.
//!
//! Two places hold it, so that an instance's leases of all its tenants move in one
//! statement while nothing ever touches two tenants' schemas at once:
//! - the **lease** itself, one row per tenant in the database's shared schema
//!   (`wfmd_cluster.leases`, see [`super::schema`]): holder, term and expiry. Its times
//!   are the database's clock, so instances need not agree on the time, only on the
//!   length of a second. A lease is free once it has expired, or once its holder's
//!   liveness session is gone (see [`super::liveness`]): a process that dies frees its
//!   tenants at once, not at the end of its leases;
//! - the **term** each tenant's writes are fenced with, in the tenant's own schema
//!   (`cluster_lease`): the instance that took the lease starts its term there, in a
//!   transaction holding the tenant's write lock, so every write a former leader makes
//!   either committed before it or is refused (a leader's write lock proves the term,
//!   see `wfmd_leader_write_lock`).
//!
//! Taking a lease gives it the next term (one more than the shared row's); the term is
//! started in the tenant's schema only where that is later than the term there, so of
//! two instances that took the lease one after the other, the later's term wins however
//! their transactions meet, and a tenant whose own term is ahead of the shared row (a
//! database copied, a shared schema made afresh) has its lease given up with the row's
//! term raised to it, for the next take to go past it. A renewal keeps the term and
//! moves the expiry; an instance that let its lease expire starts a new term too, as its
//! work stopped when it lost it.
//!
//! The tenant's row keeps no expiry of its own any more (`expires_at` is never reached):
//! an instance of an earlier wfmd, which took a tenant's lease by that row, never takes
//! one from an instance of this version, and stops leading one this version takes.
//!
//! Only PostgreSQL has several instances: on SQLite the daemon's lock file refuses a
//! second one, and these functions are not called.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::shared::Share;
use serde::Serialize;
use sqlx::FromRow;

use crate::store::{Db, Pool, Store, execute, fetch_scalar};

/// The database's clock, in Unix milliseconds.
macro_rules! now_ms {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}
pub(crate) use now_ms;

/// The expiry of the tenant's own lease row from this version on: never.
const NO_EXPIRY: i64 = i64::MAX;

/// The tenant's name among the database's tenants (its schema).
pub fn tenant_key(store: &Store) -> Result<&str, sqlx::Error> {
    store.schema().ok_or_else(needs_postgres)
}

/// The PostgreSQL share of `pool` (a tenant's share of its instance's pool).
pub(crate) fn pg(pool: &Pool) -> Result<&Share, sqlx::Error> {
    match pool.db() {
        Db::Postgres(pool) => Ok(pool),
        Db::Sqlite(_) => Err(needs_postgres()),
    }
}

fn needs_postgres() -> sqlx::Error {
    sqlx::Error::Configuration("several instances need PostgreSQL".into())
}

/// Whether `error` says the shared schema is not there: no instance with `[ha]` ever
/// served the database.
pub(crate) fn shared_schema_missing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e)
        if matches!(e.code().as_deref(), Some("42P01" | "3F000")))
}

/// Adds a free lease for each of `tenants` that has none yet. In the order of their
/// names, so two instances adding the same ones wait for each other in one order.
pub(crate) async fn enrol<'c>(
    db: impl sqlx_postgres::PgExecutor<'c>,
    tenants: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wfmd_cluster.leases (tenant, holder, term, acquired_at, expires_at)
         SELECT t, '', 0, 0, 0 FROM UNNEST($1::text[]) AS t ORDER BY t
         ON CONFLICT (tenant) DO NOTHING",
    )
    .bind(tenants)
    .execute(db)
    .await
    .map(drop)
}

/// What starting a term in the tenant's schema came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermStart {
    /// The term is the tenant's now, since `acquired_at` (the database's clock).
    Started { acquired_at: i64 },
    /// The tenant's term is `current` already, as late or later: another instance took
    /// the lease after this one, or the shared row's term is behind the tenant's.
    Refused { current: i64 },
}

/// Starts `instance`'s `term` in the tenant's schema, holding the tenant's write lock,
/// unless the tenant's term is that late already (see the module's doc).
pub async fn start_term(
    store: &Store,
    instance: &str,
    term: i64,
) -> Result<TermStart, sqlx::Error> {
    let mut tx = store.begin_term().await?;
    let started: Option<i64> = fetch_scalar!(
        &mut tx,
        optional,
        concat!(
            "INSERT INTO cluster_lease (id, holder, term, acquired_at, expires_at)
             SELECT 1, $1, $2, n.ms, $3 FROM (SELECT ",
            now_ms!(),
            " AS ms) AS n
             ON CONFLICT (id) DO UPDATE SET
                 holder = excluded.holder, term = excluded.term,
                 acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
             WHERE cluster_lease.term < excluded.term
             RETURNING acquired_at"
        ),
        instance,
        term,
        NO_EXPIRY
    )?;
    let outcome = match started {
        Some(acquired_at) => TermStart::Started { acquired_at },
        None => TermStart::Refused {
            current: fetch_scalar!(&mut tx, one, "SELECT term FROM cluster_lease WHERE id = 1")?,
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Takes the tenant's lease for `instance` when it is free, or renews it when
/// `instance` holds it in `held` (its term as it knows it), starting the term of a lease
/// taken in the tenant's schema; returns the term it now holds, or `None` while another
/// instance's lease is current. The lease lasts `ttl` from now. One tenant's lease by
/// itself, for tools and tests: a running instance keeps all its leases together (see
/// [`super::leadership`]).
pub async fn take(
    store: &Store,
    instance: &str,
    held: Option<i64>,
    ttl: Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let tenant = tenant_key(store)?;
    super::schema::ensure(store).await?;
    let pool = pg(store.writer())?;
    enrol(pool, &[tenant.to_owned()]).await?;
    // Twice at most: a term refused for being behind the tenant's is raised past it.
    for _ in 0..2 {
        // A renewal keeps its term and its time of taking; a take starts the next.
        let taken: Option<i64> = sqlx::query_scalar(concat!(
            "WITH clock AS (SELECT ",
            now_ms!(),
            " AS now)
             UPDATE wfmd_cluster.leases AS l SET
                 holder = $2,
                 term = CASE WHEN l.holder = $2 AND l.term = $3 AND l.expires_at > c.now
                             THEN l.term ELSE l.term + 1 END,
                 acquired_at = CASE WHEN l.holder = $2 AND l.term = $3 AND l.expires_at > c.now
                                    THEN l.acquired_at ELSE c.now END,
                 expires_at = c.now + $4
             FROM clock AS c
             WHERE l.tenant = $1
               AND (l.expires_at <= c.now
                    OR (l.holder = $2 AND l.term = $3)
                    OR l.holder IN (SELECT instance_id FROM wfmd_cluster.instance_sessions
                                    WHERE gone))
             RETURNING l.term"
        ))
        .bind(tenant)
        .bind(instance)
        .bind(held)
        .bind(millis(ttl))
        .fetch_optional(pool)
        .await?;
        // A take always moves the term on, so the term held is a renewal's.
        let term = match taken {
            None => return Ok(None),
            Some(term) if Some(term) == held => return Ok(Some(term)),
            Some(term) => term,
        };
        match start_term(store, instance, term).await? {
            TermStart::Started { .. } => return Ok(Some(term)),
            TermStart::Refused { current } => {
                give_up(pool, tenant, instance, term, current).await?;
            }
        }
    }
    Ok(None)
}

/// Gives up `instance`'s lease of `tenant` in `term` now, its term raised to `raise`
/// when that is later (see the module's doc); returns whether it still held it.
async fn give_up(
    pool: &Share,
    tenant: &str,
    instance: &str,
    term: i64,
    raise: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE wfmd_cluster.leases
         SET expires_at = LEAST(expires_at, ",
        now_ms!(),
        "), term = GREATEST(term, $4)
         WHERE tenant = $1 AND holder = $2 AND term = $3"
    ))
    .bind(tenant)
    .bind(instance)
    .bind(term)
    .bind(raise)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends `instance`'s lease of `term` now, so another instance takes it at its next look
/// instead of after the expiry: a leader stopping. Returns whether it still held it.
pub async fn release(store: &Store, instance: &str, term: i64) -> Result<bool, sqlx::Error> {
    give_up(pg(store.writer())?, tenant_key(store)?, instance, term, 0).await
}

/// Notes that `instance` serves the database's tenants, reachable at `advertise_url`,
/// without a liveness session (its leases last until they expire): for tools and
/// tests, as a running instance notes itself with every look at the leases.
pub async fn heartbeat(
    store: &Store,
    instance: &str,
    advertise_url: Option<&str>,
) -> Result<(), sqlx::Error> {
    super::schema::ensure(store).await?;
    execute!(
        store.writer(),
        concat!(
            "INSERT INTO wfmd_cluster.instances (instance_id, advertise_url, started_at, last_seen)
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

/// How long an instance not heard from stays among the database's instances.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Forgets the instances not heard from for `after` (by default every restarted
/// instance is a new one, its id holding its process id); returns how many.
pub async fn forget_silent(store: &Store, after: Duration) -> Result<u64, sqlx::Error> {
    forget_silent_on(pg(store.writer())?, after).await
}

/// [`forget_silent`] on any connection to the database.
pub(crate) async fn forget_silent_on<'c>(
    db: impl sqlx_postgres::PgExecutor<'c>,
    after: Duration,
) -> Result<u64, sqlx::Error> {
    sqlx::query(concat!(
        "DELETE FROM wfmd_cluster.instances WHERE last_seen < ",
        now_ms!(),
        " - $1"
    ))
    .bind(millis(after))
    .execute(db)
    .await
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
    /// The database's clock when read: the lease is current while `now < expires_at`
    /// and its holder's liveness session lasts.
    pub now: i64,
    /// Whether the holder's liveness session is gone (the process died): its lease is
    /// over, whatever its expiry.
    pub holder_gone: bool,
}

impl Lease {
    /// Whether the lease is current (its holder leads).
    pub fn current(&self) -> bool {
        self.now < self.expires_at && !self.holder_gone
    }
}

/// An instance serving the database's tenants, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct Instance {
    pub instance_id: String,
    pub advertise_url: Option<String>,
    pub started_at: i64,
    pub last_seen: i64,
}

/// The leases of `tenants` (by [`tenant_key`]) that an instance ever took, from any
/// connection to the database; none when no instance with `[ha]` ever served it.
pub async fn leases(pool: &Pool, tenants: &[String]) -> Result<Vec<(String, Lease)>, sqlx::Error> {
    unless_never_served(read_leases(pg(pool)?, tenants).await)
}

async fn read_leases<'c>(
    db: impl sqlx_postgres::PgExecutor<'c>,
    tenants: &[String],
) -> Result<Vec<(String, Lease)>, sqlx::Error> {
    let rows: Vec<LeaseRow> = sqlx::query_as(concat!(
        "SELECT l.tenant, l.holder, l.term, l.acquired_at, l.expires_at, ",
        now_ms!(),
        " AS now, COALESCE(s.gone, FALSE) AS holder_gone
         FROM wfmd_cluster.leases AS l
         LEFT JOIN wfmd_cluster.instance_sessions AS s ON s.instance_id = l.holder
         WHERE l.tenant = ANY($1) AND l.holder <> ''"
    ))
    .bind(tenants)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.tenant, r.lease)).collect())
}

/// What was read, or nothing when the shared schema is not there: no instance with
/// `[ha]` ever served the database.
fn unless_never_served<T: Default>(read: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    match read {
        Err(error) if shared_schema_missing(&error) => Ok(T::default()),
        read => read,
    }
}

/// The leases of `tenants` (as [`leases`]) and the instances (as [`instances`]), read
/// in one snapshot. Read apart, a look committed between the two reads shows a lease
/// renewed after the moment its holder was last seen.
pub async fn leases_and_instances(
    pool: &Pool,
    tenants: &[String],
) -> Result<(Vec<(String, Lease)>, Vec<Instance>), sqlx::Error> {
    let (mut tx, _turns) = pg(pool)?.begin().await?;
    // The search path `begin` sets takes no snapshot, so the level may still be set.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // The first read that finds no shared schema ends the transaction: none is there.
    let leases = read_leases(&mut *tx, tenants).await;
    if matches!(&leases, Err(error) if shared_schema_missing(error)) {
        return Ok(Default::default());
    }
    let read = (leases?, read_instances(&mut *tx).await?);
    tx.commit().await?;
    Ok(read)
}

#[derive(FromRow)]
struct LeaseRow {
    tenant: String,
    #[sqlx(flatten)]
    lease: Lease,
}

/// The tenant's lease, if any instance ever took it.
pub async fn leadership(store: &Store) -> Result<Option<Lease>, sqlx::Error> {
    let tenant = tenant_key(store)?.to_owned();
    let mut read = leases(store.reader(), &[tenant]).await?;
    Ok(read.pop().map(|(_, lease)| lease))
}

/// The instance whose lease is current, and where it said it can be reached.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Leader {
    pub holder: String,
    pub advertise_url: Option<String>,
}

/// The tenant's leader now, if any instance holds a current lease.
pub async fn leader(store: &Store) -> Result<Option<Leader>, sqlx::Error> {
    let read = sqlx::query_as(concat!(
        "SELECT l.holder, s.advertise_url FROM wfmd_cluster.leases AS l
         LEFT JOIN wfmd_cluster.instance_sessions AS s ON s.instance_id = l.holder
         WHERE l.tenant = $1 AND l.holder <> '' AND NOT COALESCE(s.gone, FALSE)
           AND l.expires_at > ",
        now_ms!()
    ))
    .bind(tenant_key(store)?)
    .fetch_optional(pg(store.reader())?)
    .await;
    match read {
        Err(error) if shared_schema_missing(&error) => Ok(None),
        read => read,
    }
}

/// How many times this instance's keeper saw the leases move (or could not tell
/// whether they did): a count that only grows, shared by its tenants' [`KnownLeader`]s.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LeaseMoves(Arc<AtomicU64>);

impl LeaseMoves {
    /// The count now.
    pub(super) fn seen(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Counts a move: every leader remembered before it is read again.
    pub(super) fn moved(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A tenant's leader as a follower last read it ([`leader`]), remembered until the
/// keeper's looks see any lease change hands, or a look fails: a follower hands a
/// tenant's changes on without a statement of its own for each. A leader read before a
/// move is never used after the look that saw it (a quarter of a second at most, see
/// [`super::tick`]); one that fails to answer is forgotten at once
/// ([`KnownLeader::forget`]).
#[derive(Debug)]
pub struct KnownLeader {
    moves: LeaseMoves,
    known: std::sync::Mutex<Option<(u64, Leader)>>,
}

impl KnownLeader {
    pub fn new(moves: LeaseMoves) -> KnownLeader {
        KnownLeader {
            moves,
            known: std::sync::Mutex::default(),
        }
    }

    /// The tenant's leader: the one remembered when no lease moved since it was read,
    /// else read now. A tenant nobody leads is not remembered.
    pub async fn leader(&self, store: &Store) -> Result<Option<Leader>, sqlx::Error> {
        // Counted before the read: a move after it counts after it too.
        let seen = self.moves.seen();
        if let Some((at, leader)) = &*self.lock()
            && *at == seen
        {
            return Ok(Some(leader.clone()));
        }
        let read = leader(store).await?;
        *self.lock() = read.clone().map(|leader| (seen, leader));
        Ok(read)
    }

    /// Forgets the leader remembered (it did not answer, or answered that it cannot
    /// take the change): the next change reads it again.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, Leader)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The instances that said they serve the database's tenants, the most recently seen
/// first; none when no instance with `[ha]` ever served it.
pub async fn instances(store: &Store) -> Result<Vec<Instance>, sqlx::Error> {
    unless_never_served(read_instances(pg(store.reader())?).await)
}

async fn read_instances<'c>(
    db: impl sqlx_postgres::PgExecutor<'c>,
) -> Result<Vec<Instance>, sqlx::Error> {
    sqlx::query_as(
        "SELECT instance_id, advertise_url, started_at, last_seen FROM wfmd_cluster.instances
         ORDER BY last_seen DESC, instance_id",
    )
    .fetch_all(db)
    .await
}

pub(crate) fn millis(duration: Duration) -> i64 {
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

    /// A change's intent, as the engine writes it: an unflushed write of its own.
    async fn intent(store: &Store) -> Result<(), sqlx::Error> {
        let row = crate::store::intents::IntentRow {
            attempt_id: "att_1".into(),
            agent_id: "u_001".into(),
            target_state: "NOT_READY".into(),
            reason: "BREAK".into(),
            origin: "api".into(),
            actor: "api".into(),
            idempotency_key: None,
            requested_at: 1,
            owner: "test".into(),
            term: None,
        };
        store
            .write_unflushed(crate::store::intents::inserting_all(&[&row]))
            .await
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
        for refused in [
            a.begin_write_unflushed().await.err().unwrap(),
            intent(&a).await.unwrap_err(),
        ] {
            assert!(
                is_not_leader(&refused),
                "an intent proves the term too: {refused}"
            );
        }
        write(&b).await.expect("b leads in term 2");
        b.begin_write_unflushed().await.expect("b leads in term 2");
        intent(&b).await.expect("b leads in term 2");

        // A follower refuses its own writes, before the database is asked.
        a.set_role(InstanceRole::Follower);
        for refused in [
            write(&a).await.unwrap_err(),
            a.begin_write_unflushed().await.err().unwrap(),
            intent(&a).await.unwrap_err(),
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
        crate::store::testing::eventually("never waited", async || {
            taking.is_finished() || waits_for_an_advisory_lock(&a).await
        })
        .await;
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
    async fn a_known_leader_is_read_again_only_once_the_leases_moved_or_it_was_forgotten() {
        let (a, b, _dir) = two_instances().await;
        heartbeat(&a, "a", Some("http://a.example")).await.unwrap();
        heartbeat(&b, "b", Some("http://b.example")).await.unwrap();
        let moves = LeaseMoves::default();
        let known = KnownLeader::new(moves.clone());
        let holder =
            async |known: &KnownLeader| known.leader(&b).await.unwrap().map(|leader| leader.holder);
        assert_eq!(holder(&known).await, None, "nobody leads yet");
        assert_eq!(take(&a, "a", None, LONG).await.unwrap(), Some(1));
        assert_eq!(
            holder(&known).await.as_deref(),
            Some("a"),
            "a tenant nobody led is not remembered as led by nobody"
        );

        assert!(release(&a, "a", 1).await.unwrap());
        assert_eq!(take(&b, "b", None, LONG).await.unwrap(), Some(2));
        assert_eq!(
            holder(&known).await.as_deref(),
            Some("a"),
            "remembered: no look saw the lease move yet"
        );
        moves.moved();
        let read = known.leader(&b).await.unwrap().unwrap();
        assert_eq!(
            (read.holder.as_str(), read.advertise_url.as_deref()),
            ("b", Some("http://b.example")),
            "read again once a move was counted"
        );

        assert!(release(&b, "b", 2).await.unwrap());
        assert_eq!(take(&a, "a", None, LONG).await.unwrap(), Some(3));
        known.forget();
        assert_eq!(
            holder(&known).await.as_deref(),
            Some("a"),
            "read again once forgotten"
        );
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
            "UPDATE wfmd_cluster.instances SET last_seen = last_seen - 86460000
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
