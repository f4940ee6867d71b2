//! The one statement an instance sends at each look at the leases (every quarter of a
//! second), whatever the number of its tenants. In the shared schema only, so in one
//! round trip it:
//! - notes the instance (its address, its liveness lock, how many tenants it serves);
//! - renews the leases it holds, when a renewal is due, and returns those it still held;
//! - gives up the leases it hands over or lets go;
//! - takes free leases (expired, given up, or held by an instance whose liveness session
//!   is gone), as many as its share allows, and returns them with their new terms and
//!   when they became free;
//! - returns how many leases each instance counted among the serving ones holds;
//! - returns a fingerprint of who holds every current lease in which term, which
//!   changes whenever a lease changes hands (a term is never taken twice), so the
//!   instance can tell, without asking for each tenant, whether a leader it remembers
//!   may have moved (see [`super::lease::KnownLeader`]).
//!
//! Rows another instance's statement is taking at the same moment are skipped, never
//! waited for (`FOR UPDATE SKIP LOCKED`), so two instances never both take a lease, and
//! no statement waits on another but a renewal on a take of the same lease (a lease
//! that looked free to the other), which ends without waiting in turn: no deadlock.
//! A lease taken is rechecked on the row as it is once locked, so one that another
//! instance took meanwhile is left to it.
//!
//! An instance's share is the tenants it serves over the instances counted (alive,
//! serving some tenants, noted within a lease's length), rounded up; it takes as many
//! as bring it to its share, and any lease free for longer than a lease's length
//! besides, so a tenant that only some instances serve is never left without a leader.

use std::collections::HashSet;
use std::time::Duration;

use sqlx_postgres::PgConnection;

use super::lease::{millis, now_ms};

/// What an instance asks of the leases at one look.
#[derive(Debug, Default)]
pub struct Tick<'a> {
    pub instance: &'a str,
    pub advertise_url: Option<&'a str>,
    /// Its liveness lock ([`super::liveness::Liveness::key`]).
    pub liveness_key: i32,
    pub ttl: Duration,
    /// The tenants it serves in this database; 0 while it stops (the others no longer
    /// count it, and it takes nothing).
    pub serving: usize,
    /// The leases to renew (tenant, term): all it holds when a renewal is due, else none.
    pub renew: Vec<(String, i64)>,
    /// The leases to give up: (tenant, term, the term to raise the lease's to; 0 none).
    pub release: Vec<(String, i64, i64)>,
    /// The tenants whose lease it may take now: those it serves, holds not, and has not
    /// just handed over.
    pub claimable: Vec<String>,
    /// How many leases it holds, besides those it gives up.
    pub leading: usize,
}

/// A lease taken at a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTaken {
    pub tenant: String,
    pub term: i64,
    /// When the tenant was left without a leader (the database's clock): its former
    /// lease's expiry, or when its former holder was last seen alive when its liveness
    /// session is gone. `None` when nobody ever held it.
    pub freed_at: Option<i64>,
}

/// What a look found and did.
#[derive(Debug, Default)]
pub struct Ticked {
    /// The database's clock at the look.
    pub now: i64,
    pub renewed: HashSet<String>,
    pub released: HashSet<String>,
    pub claimed: Vec<LeaseTaken>,
    /// Each instance counted among the serving ones (this one too, while it serves),
    /// and how many current leases it held before the look.
    pub loads: Vec<(String, usize)>,
    /// The fingerprint of the current leases' holders and terms, as they were before
    /// the look's own takes and releases.
    pub holders: i64,
}

const STATEMENT: &str = concat!(
    "WITH clock AS MATERIALIZED (SELECT ",
    now_ms!(),
    " AS now),
noted AS (
    INSERT INTO wfmd_cluster.instances AS i
        (instance_id, advertise_url, started_at, last_seen, liveness_key, serving)
    SELECT $1, $2, c.now, c.now, $3, $4 FROM clock AS c
    ON CONFLICT (instance_id) DO UPDATE SET
        advertise_url = excluded.advertise_url, last_seen = excluded.last_seen,
        liveness_key = excluded.liveness_key, serving = excluded.serving
    RETURNING 1
),
sessions AS MATERIALIZED (
    SELECT instance_id, last_seen, serving, gone AND instance_id <> $1 AS gone
    FROM wfmd_cluster.instance_sessions
),
counted AS MATERIALIZED (
    SELECT s.instance_id FROM sessions AS s, clock AS c
    WHERE s.instance_id <> $1 AND NOT s.gone AND s.serving > 0 AND s.last_seen > c.now - $5
    UNION ALL SELECT $1 WHERE $4 > 0
),
renewed AS (
    UPDATE wfmd_cluster.leases AS l SET expires_at = c.now + $5
    FROM clock AS c, UNNEST($6::text[], $7::bigint[]) AS h (tenant, term)
    WHERE l.tenant = h.tenant AND l.term = h.term AND l.holder = $1 AND l.expires_at > c.now
    RETURNING l.tenant
),
released AS (
    UPDATE wfmd_cluster.leases AS l
    SET expires_at = LEAST(l.expires_at, c.now), term = GREATEST(l.term, r.raise)
    FROM clock AS c, UNNEST($8::text[], $9::bigint[], $10::bigint[]) AS r (tenant, term, raise)
    WHERE l.tenant = r.tenant AND l.term = r.term AND l.holder = $1
    RETURNING l.tenant
),
free AS (
    SELECT l.tenant, l.holder, l.expires_at FROM wfmd_cluster.leases AS l
    WHERE l.tenant = ANY($11::text[])
      AND (l.expires_at <= (SELECT now FROM clock)
           OR l.holder = $1
           OR l.holder IN (SELECT instance_id FROM sessions WHERE gone))
    ORDER BY l.expires_at, l.tenant
    LIMIT (SELECT GREATEST(
        CAST(CEIL(CAST($12 AS NUMERIC) / GREATEST(COUNT(*), 1)) AS BIGINT) - $13,
        (SELECT COUNT(*) FROM wfmd_cluster.leases AS o, clock AS c
         WHERE o.tenant = ANY($11::text[]) AND o.expires_at <= c.now - $5),
        0) FROM counted)
    FOR UPDATE OF l SKIP LOCKED
),
claimed AS (
    UPDATE wfmd_cluster.leases AS l
    SET holder = $1, term = l.term + 1, acquired_at = c.now, expires_at = c.now + $5
    FROM free AS f, clock AS c
    WHERE l.tenant = f.tenant
    RETURNING l.tenant, l.term,
        CASE WHEN f.holder = '' THEN NULL
             ELSE LEAST(f.expires_at, c.now, COALESCE(
                 (SELECT s.last_seen FROM sessions AS s WHERE s.instance_id = f.holder AND s.gone),
                 c.now))
        END AS freed_at
)
SELECT 'renewed' AS kind, tenant AS name, CAST(NULL AS BIGINT) AS number,
       CAST(NULL AS BIGINT) AS freed_at, (SELECT now FROM clock) AS now FROM renewed
UNION ALL SELECT 'released', tenant, NULL, NULL, (SELECT now FROM clock) FROM released
UNION ALL SELECT 'claimed', tenant, term, freed_at, (SELECT now FROM clock) FROM claimed
UNION ALL SELECT 'instance', c.instance_id,
       (SELECT COUNT(*) FROM wfmd_cluster.leases AS l, clock AS k
        WHERE l.holder = c.instance_id AND l.expires_at > k.now),
       NULL, (SELECT now FROM clock) FROM counted AS c
UNION ALL SELECT 'holders', '',
       (SELECT COALESCE(SUM(hashtext(l.tenant || ' ' || l.holder || ' ' || l.term)), 0)
        FROM wfmd_cluster.leases AS l WHERE l.holder <> '' AND l.expires_at > c.now),
       NULL, c.now FROM clock AS c
UNION ALL SELECT 'clock', '', NULL, NULL, now FROM clock"
);

/// A row of the statement's answer: what it is (`renewed`, `released`, `claimed`,
/// `instance`, `holders`, `clock`), the tenant or instance it is of, a number (the term taken, the
/// leases an instance holds), when a taken lease became free, and the clock.
type Row = (String, String, Option<i64>, Option<i64>, i64);

/// Sends `tick` on `conn` (the liveness session): one statement.
pub async fn look(conn: &mut PgConnection, tick: &Tick<'_>) -> Result<Ticked, sqlx::Error> {
    let (renew_tenants, renew_terms): (Vec<&str>, Vec<i64>) = tick
        .renew
        .iter()
        .map(|(t, term)| (t.as_str(), *term))
        .unzip();
    let mut release_tenants = Vec::with_capacity(tick.release.len());
    let mut release_terms = Vec::with_capacity(tick.release.len());
    let mut raises = Vec::with_capacity(tick.release.len());
    for (tenant, term, raise) in &tick.release {
        release_tenants.push(tenant.as_str());
        release_terms.push(*term);
        raises.push(*raise);
    }
    let rows: Vec<Row> = sqlx::query_as(STATEMENT)
        .bind(tick.instance)
        .bind(tick.advertise_url)
        .bind(tick.liveness_key)
        .bind(count(tick.serving))
        .bind(millis(tick.ttl))
        .bind(renew_tenants)
        .bind(renew_terms)
        .bind(release_tenants)
        .bind(release_terms)
        .bind(raises)
        .bind(&tick.claimable)
        .bind(i64::from(count(tick.serving)))
        .bind(i64::from(count(tick.leading)))
        .fetch_all(conn)
        .await?;
    let mut ticked = Ticked::default();
    for (kind, name, number, freed_at, now) in rows {
        ticked.now = now;
        match kind.as_str() {
            "renewed" => {
                ticked.renewed.insert(name);
            }
            "released" => {
                ticked.released.insert(name);
            }
            "claimed" => ticked.claimed.push(LeaseTaken {
                tenant: name,
                term: number.unwrap_or_default(),
                freed_at,
            }),
            "instance" => ticked.loads.push((
                name,
                usize::try_from(number.unwrap_or_default()).unwrap_or(0),
            )),
            "holders" => ticked.holders = number.unwrap_or_default(),
            _ => {}
        }
    }
    Ok(ticked)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
