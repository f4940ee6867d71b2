//! What only the PostgreSQL backend needs: its connections' settings, the tenant's
//! schema, and the write lock that serialises a tenant's write transactions.
//!
//! Each tenant's tables live in a schema of their own (named by the URL's
//! `options[search_path]`), so one PostgreSQL database serves every tenant and each
//! tenant's queries see only its own rows, as with one SQLite file per tenant.

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use sqlx::Transaction;
use sqlx_postgres::{PgConnectOptions, PgConnection, Postgres};

use super::audit;
use super::batched::TableWrite;
use super::shared::{Checkout, Share, Turns};

/// `url` with its password masked, for messages (any URL: a SQLite one has none).
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("********"));
            parsed.to_string()
        }
        // Nothing to mask: as written (a SQLite URL's path is not re-encoded).
        Ok(_) => url.to_owned(),
        // No `@`: nothing that could be a password.
        Err(_) if !url.contains('@') => url.to_owned(),
        Err(_) => "(unparseable)".to_owned(),
    }
}

/// The connection options of a `database.url`; an error naming the key (the password
/// masked) when it is not PostgreSQL's.
pub(super) fn options_of(url: &str) -> anyhow::Result<PgConnectOptions> {
    use anyhow::Context;
    use std::str::FromStr;
    PgConnectOptions::from_str(url).with_context(|| {
        format!(
            "database.url `{}` is not a valid PostgreSQL URL",
            redacted(url)
        )
    })
}

/// The database and server `options` point at, for messages (never the password).
pub(super) fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(the user's)");
    let schema = schema(options).map_or(String::new(), |s| format!(", schema `{s}`"));
    format!(
        "PostgreSQL database `{database}` on {}:{}{schema}",
        options.get_host(),
        options.get_port()
    )
}

/// The schema the URL's `search_path` option names first, if any.
pub(super) fn schema(options: &PgConnectOptions) -> Option<String> {
    let options = options.get_options()?;
    let (_, rest) = options.split_once("search_path=")?;
    let first = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .trim_matches('"');
    (!first.is_empty()).then(|| first.to_owned())
}

/// The key of the daemon's session lock on the tenant whose tables are in `schema`
/// (see [`super::lock::DaemonLock::serve_postgres`]).
pub(super) fn daemon_lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("wfmd daemon\n{schema}"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The advisory-lock key of the tenant whose tables are in `schema`.
pub(super) fn write_lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("wfmd write lock\n{schema}"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What an instance is to a tenant, when several may serve it (see
/// [`crate::cluster`]); it decides what a write transaction must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRole {
    /// The only instance (SQLite, or PostgreSQL without `[ha]`): writes take the
    /// tenant's write lock and nothing more.
    Sole,
    /// Holds the tenant's lease in `term`: each write proves the term is still current.
    Leader { instance: Arc<str>, term: i64 },
    /// Another instance leads: this one writes nothing of the tenant's records.
    Follower,
}

/// A write refused before it reached the database: this instance does not lead the
/// tenant (see [`InstanceRole::Follower`]).
#[derive(Debug, thiserror::Error)]
#[error("this instance does not lead the tenant: its leader writes its records")]
pub struct NotLeader;

/// SQLSTATE of a leader's write refused by the database: its term is over
/// (`wfmd_leader_write_lock` in `migrations/postgres/`).
pub const STALE_TERM: &str = "WF001";

/// The tenant's write lock and what the instance is to the tenant, shared by every
/// clone of its store.
#[derive(Debug, Clone)]
pub(super) struct WriteLock {
    key: i64,
    /// The tenant's schema, which names its lease among the database's tenants (see
    /// [`crate::cluster`]); `None` on SQLite.
    schema: Option<Arc<str>>,
    role: Arc<RwLock<InstanceRole>>,
    /// `audit.key`, set for the length of each flushed write transaction
    /// (`wfmd.audit_key`, bound, right after the lock is taken), where the audit log's
    /// appends read it: a setting local to the transaction ends with it, so a
    /// connection given back holds no key, and one a tenant's store checks out never
    /// sees another tenant's.
    audit_key: Option<audit::AuditKey>,
}

impl WriteLock {
    /// The channel the tenant's outbox commits are announced on among instances: one
    /// per tenant (its lock key), as channels are the database's, not the schema's.
    pub(super) fn outbox_channel(&self) -> String {
        format!("wfmd_outbox_{:016x}", self.key)
    }

    pub(super) fn new(key: i64) -> WriteLock {
        WriteLock {
            key,
            schema: None,
            role: Arc::new(RwLock::new(InstanceRole::Sole)),
            audit_key: None,
        }
    }

    /// The write lock of the tenant whose tables are in `schema`, whose writes hold
    /// `audit_key`.
    pub(super) fn of_schema(schema: &str, audit_key: Option<audit::AuditKey>) -> WriteLock {
        WriteLock {
            schema: Some(Arc::from(schema)),
            audit_key,
            ..WriteLock::new(write_lock_key(schema))
        }
    }

    /// The key the transaction's `wfmd.audit_key` is set to ('' without one: read as
    /// none).
    fn key_setting(&self) -> &str {
        self.audit_key.as_ref().map_or("", |key| key.text())
    }

    pub(super) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    pub(super) fn role(&self) -> InstanceRole {
        self.role
            .read()
            .expect("the role's lock is never poisoned")
            .clone()
    }

    pub(super) fn set_role(&self, role: InstanceRole) {
        *self
            .role
            .write()
            .expect("the role's lock is never poisoned") = role;
    }

    /// Takes the lock in `tx`, held until it commits or rolls back; a leader's also
    /// proves its term current, in the same round trip.
    pub(super) async fn take(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.take_as(tx, self.role()).await
    }

    async fn take_as(&self, tx: &mut PgConnection, role: InstanceRole) -> Result<(), sqlx::Error> {
        match role {
            InstanceRole::Sole => sqlx::query(
                "SELECT pg_advisory_xact_lock($1), set_config('wfmd.audit_key', $2, true)",
            )
            .bind(self.key)
            .bind(self.key_setting())
            .execute(tx)
            .await
            .map(drop),
            InstanceRole::Leader { instance, term } => sqlx::query(
                "SELECT wfmd_leader_write_lock($1, $2, $3),
                        set_config('wfmd.audit_key', $4, true)",
            )
            .bind(self.key)
            .bind(&*instance)
            .bind(term)
            .bind(self.key_setting())
            .execute(tx)
            .await
            .map(drop),
            InstanceRole::Follower => Err(sqlx::Error::Configuration(Box::new(NotLeader))),
        }
    }

    /// Begins a write transaction holding the lock, as an instance in `role`. An
    /// unflushed one does not wait for its commit to reach the disk
    /// (`synchronous_commit = off`: lost only if the server itself goes down in the next
    /// moments, and never half), and takes no lock: its writes (a change's intent,
    /// agents' names) touch neither the audit log nor the outbox, so they need no place
    /// in the tenant's order, and a change's intent does not queue behind every other
    /// change's record. Nor does it hold the audit key, which it has no use for: an
    /// append to a keyed log in it is refused. A leader's proves its term all the same
    /// (without the lock), and a follower's is refused.
    ///
    /// The sole instance's begins in one round trip: what follows the `BEGIN` there is
    /// sent unbound, so it holds only what our code made (the lock's key is a number
    /// derived from the schema, see [`write_lock_key`]). The audit key goes bound, in a
    /// round trip of its own when there is one: it is a secret, and a statement's text
    /// shows in the server's activity view and in its log of a statement that failed.
    /// A leader's proof goes bound too, after the begin (below).
    pub(super) async fn begin(
        &self,
        share: &Share,
        flushed: bool,
        role: InstanceRole,
    ) -> Result<(Transaction<'static, Postgres>, Turns), sqlx::Error> {
        Ok(match (role, flushed) {
            (InstanceRole::Follower, _) => {
                return Err(sqlx::Error::Configuration(Box::new(NotLeader)));
            }
            (InstanceRole::Sole, true) => {
                let lock = format!("; SELECT pg_advisory_xact_lock({})", self.key);
                let (mut tx, turns) = share.begin_then(&lock).await?;
                if self.audit_key.is_some() {
                    self.hold_audit_key(&mut tx).await?;
                }
                (tx, turns)
            }
            (role @ InstanceRole::Leader { .. }, true) => {
                // Bound, after the begin: a refused proof (the term is over) must fail
                // a statement of the transaction sqlx knows it is in, which it rolls
                // back when the transaction drops. Failing in the begin's own text, it
                // would leave the connection in an aborted transaction sqlx does not
                // know of, and hand it on so (see `Share::begin_then`).
                let (mut tx, turns) = share.begin().await?;
                self.take_as(&mut tx, role).await?;
                (tx, turns)
            }
            (InstanceRole::Sole, false) => {
                share
                    .begin_then("; SET LOCAL synchronous_commit TO off")
                    .await?
            }
            (InstanceRole::Leader { instance, term }, false) => {
                let (mut tx, turns) = share.begin().await?;
                sqlx::query("SELECT wfmd_leader_unflushed_write($1, $2)")
                    .bind(&*instance)
                    .bind(term)
                    .execute(&mut *tx)
                    .await?;
                (tx, turns)
            }
        })
    }

    /// Runs `write` as an unflushed write of its own: one statement outside a
    /// transaction block, which PostgreSQL commits on its own, on `conn`, a connection
    /// of the tenant's unflushed share (pointed at the tenant's schema). What
    /// [`WriteLock::begin`] sets around an unflushed transaction goes into the statement
    /// itself: the commit not waited for (set for the statement's own transaction, so in
    /// force when it commits), a leader's proof of its term (raised, it fails the write
    /// whole). One round trip (two with the checkout's own step) where the transaction
    /// takes four (three as the sole instance), on the path of every change: its intent.
    pub(super) async fn write_unflushed(
        &self,
        conn: &mut Checkout,
        write: TableWrite,
    ) -> Result<(), sqlx::Error> {
        let role = self.role();
        let then = match &role {
            InstanceRole::Follower => {
                return Err(sqlx::Error::Configuration(Box::new(NotLeader)));
            }
            InstanceRole::Sole => "set_config('synchronous_commit', 'off', true)",
            InstanceRole::Leader { .. } => "wfmd_leader_unflushed_write($2, $3)",
        };
        let (sql, rows) = write.on_postgres_then(then);
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(rows);
        let query = match role {
            InstanceRole::Leader { instance, term } => query.bind(instance.to_string()).bind(term),
            _ => query,
        };
        query.execute(&mut **conn).await.map(drop)
    }

    /// Sets the transaction's `wfmd.audit_key`, where the audit log's appends read it.
    async fn hold_audit_key(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT set_config('wfmd.audit_key', $1, true)")
            .bind(self.key_setting())
            .execute(tx)
            .await
            .map(drop)
    }
}

/// Whether the SQLSTATE `code` says the database cannot take writes now (rather than
/// refusing this one): no connection, no room (disk full, out of memory), shutting
/// down, read-only, an I/O error, the write lock held too long, or this instance's
/// term as the tenant's leader over (another instance writes now).
pub(super) fn is_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("58")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "25006" | "55P03" | STALE_TERM
        )
}

/// Relays outbox commits between the instances serving a tenant, until `stop`: while
/// this one leads, each change of `commits` (its own commits) is announced on
/// `channel` with NOTIFY, naming `me`; while it follows, another instance's
/// announcement wakes `wake`'s readers. What is heard comes from the instance's one
/// listener, which also sends the announcements, the instance's tenants' together
/// (see [`super::shared`]). Announcements lost with a dropped connection are
/// not missed for long: the readers poll too.
pub(super) async fn relay_outbox_commits(
    share: &Share,
    channel: &str,
    me: &str,
    role: impl Fn() -> InstanceRole,
    mut commits: tokio::sync::watch::Receiver<u64>,
    wake: impl Fn(),
    stop: tokio_util::sync::CancellationToken,
) {
    let mut heard = share.pool().listen(channel);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = commits.changed() => {
                if changed.is_err() {
                    return;
                }
                if matches!(role(), InstanceRole::Leader { .. }) {
                    share.pool().announce(channel, me);
                }
            }
            note = heard.recv() => match note {
                Ok(payload) if payload != me && role() == InstanceRole::Follower => wake(),
                Ok(_) => {}
                // Notes missed: whatever they were, the readers look.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Duration;

    #[tokio::test]
    async fn a_leaders_outbox_commits_wake_a_followers_readers() {
        use crate::store::{Backend, Store};
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::temp_url_on(Backend::Postgres, &dir);
        let (leader, follower) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        leader.set_role(InstanceRole::Leader {
            instance: Arc::from("a"),
            term: 1,
        });
        follower.set_role(InstanceRole::Follower);
        let stop = tokio_util::sync::CancellationToken::new();
        let relays = [(leader.clone(), "a"), (follower.clone(), "b")].map(|(store, me)| {
            let stop = stop.clone();
            crate::tasks::spawn(async move { store.relay_outbox_commits(me, stop).await })
        });
        // Nothing bumps the follower's own watch but the relay; the leader commits
        // until the follower hears it (its relay may not listen yet at first).
        let mut woken = follower.outbox_commits();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            leader.notify_outbox();
            let heard = tokio::time::timeout(Duration::from_millis(200), woken.changed());
            if heard.await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower never heard the leader's commits"
            );
        }
        stop.cancel();
        for relay in relays {
            relay.await.unwrap();
        }
        leader.close().await;
        follower.close().await;
    }

    /// The value of `setting` in `tx` ('' when unset).
    async fn held(tx: &mut crate::store::WriteTx, setting: &str) -> String {
        let value: Option<String> =
            crate::store::fetch_scalar!(tx, one, "SELECT current_setting($1, true)", setting)
                .unwrap();
        value.unwrap_or_default()
    }

    /// `synchronous_commit` when the transaction set it (the tests' server has it off
    /// for all).
    async fn flush_set(tx: &mut crate::store::WriteTx) -> Option<String> {
        crate::store::fetch!(
            tx,
            optional,
            "SELECT setting FROM pg_settings
             WHERE name = 'synchronous_commit' AND source = 'session'"
        )
        .unwrap()
        .map(|(setting,): (String,)| setting)
    }

    /// What a write transaction of the sole instance holds, read from inside it and from
    /// another connection: the write lock and the audit key when flushed; neither, and
    /// no flush at its commit, when unflushed. Each is set by a statement folded into
    /// the round trip that begins the transaction (or bound after it), so a fold that
    /// lost one shows here.
    #[tokio::test]
    async fn a_sole_instances_write_transactions_hold_what_their_kind_needs() {
        use crate::store::testing::{temp_store_keyed_on, test_key};
        use crate::store::{Backend, fetch_scalar};
        let (store, _dir) = temp_store_keyed_on(Backend::Postgres).await;
        let key = store.write_lock.key;
        let lock_free = || async {
            let free: bool = fetch_scalar!(
                store.reader(),
                one,
                "SELECT pg_try_advisory_xact_lock($1)",
                key
            )
            .unwrap();
            free
        };
        let mut tx = store.begin_write().await.unwrap();
        assert!(!lock_free().await, "a flushed write holds the write lock");
        assert_eq!(held(&mut tx, "wfmd.audit_key").await, test_key().text());
        assert_eq!(flush_set(&mut tx).await, None, "the server's own setting");
        // Its tables are found: the schema was set in the same round trip.
        let attempts: i64 =
            fetch_scalar!(&mut tx, one, "SELECT COUNT(*) FROM transition_attempts").unwrap();
        assert_eq!(attempts, 0);
        tx.rollback().await.unwrap();
        assert!(lock_free().await, "given back with the transaction");

        let mut tx = store.begin_write_unflushed().await.unwrap();
        assert!(lock_free().await, "an unflushed write takes no lock");
        assert_eq!(held(&mut tx, "wfmd.audit_key").await, "");
        assert_eq!(flush_set(&mut tx).await.as_deref(), Some("off"));
        tx.rollback().await.unwrap();
        store.close().await;
    }

    /// The change path's tables are analysed and vacuumed once a thousand of their rows
    /// changed, not fifty: at fifty, a fleet's tenants, all starting with empty tables,
    /// had theirs analysed within the same seconds of a load, and every connection
    /// planned its statements on them again (see the migration).
    #[tokio::test]
    async fn the_change_paths_tables_are_analysed_after_a_thousand_rows_not_fifty() {
        use crate::store::testing::temp_store_on;
        use crate::store::{Backend, fetch};
        let (store, _dir) = temp_store_on(Backend::Postgres).await;
        let options: Vec<(String, Option<String>)> = fetch!(
            store.reader(),
            all,
            "SELECT c.relname::text, array_to_string(c.reloptions, ' ') FROM pg_class c
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
               AND c.relname IN ('state_intervals', 'transition_attempts',
                   'transition_intents', 'audit_log', 'outbox_events', 'webhook_deliveries')
             ORDER BY c.relname"
        )
        .unwrap();
        assert_eq!(options.len(), 6, "{options:?}");
        for (table, options) in options {
            let options = options.unwrap_or_default();
            for setting in [
                "autovacuum_analyze_threshold=1000",
                "autovacuum_vacuum_threshold=1000",
            ] {
                assert!(
                    options.split(' ').any(|o| o == setting),
                    "{table}: {options}"
                );
            }
        }
        store.close().await;
    }

    #[test]
    fn the_schema_comes_from_the_urls_search_path() {
        let options =
            PgConnectOptions::from_str("postgres://u@h/db?options[search_path]=bpo_alpha").unwrap();
        assert_eq!(schema(&options).as_deref(), Some("bpo_alpha"));
        let options = PgConnectOptions::from_str("postgres://u@h/db").unwrap();
        assert_eq!(schema(&options), None);
    }

    #[test]
    fn messages_never_show_the_password() {
        let shown = redacted("postgres://wfmd:s3cret@db.example/wfmd");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example"), "{shown}");
        let options = PgConnectOptions::from_str("postgres://wfmd:s3cret@db.example/wfmd").unwrap();
        assert!(!describe(&options).contains("s3cret"));
        // Without a password, the URL as written.
        for url in [
            "sqlite://data/my wfmd.db",
            "postgres://wfmd@db/wfmd?options[search_path]=a",
        ] {
            assert_eq!(redacted(url), url);
        }
    }

    #[test]
    fn tenants_get_different_write_locks() {
        assert_ne!(write_lock_key("alpha"), write_lock_key("beta"));
        assert_eq!(write_lock_key("alpha"), write_lock_key("alpha"));
    }
}
