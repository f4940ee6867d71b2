//! One PostgreSQL pool per instance, shared by all its tenants on that database.
//!
//! An instance opens, per database, `[database] max_connections` connections in all:
//! one *session* (every tenant's daemon lock, see [`super::lock::DaemonLock`]), one
//! *listener* (every tenant's outbox channel, and the sender of every tenant's
//! announcements on it, see [`Store::relay_outbox_commits`]),
//! with `[ha]` the leadership's liveness session (see [`crate::cluster::liveness`]),
//! and the rest pooled. A tenant's store never holds a connection of its own: it
//! checks one out of the shared pool through its [`Share`]s, which
//!
//! - point the connection at the tenant's schema first (`search_path`, in the round
//!   trip that begins a transaction, or one of its own before single statements), and
//!   leave it searching a schema with no tables when it goes back to the pool
//!   ([`NO_TENANT`]), so a connection used without its tenant's step fails rather than
//!   reading another tenant's rows: a transaction's schema ends with it (`SET LOCAL`),
//!   and a [`Checkout`] of single statements points its connection back before giving
//!   it back. (A step of the pool's own on every release took a round trip of each
//!   connection, transactions' too; docs/fleet.md has what leaving it out gained.)
//! - bound what one tenant holds (its *turns*, FIFO semaphores): one writer, two
//!   transactions of the change path's records (the next one begun while the last
//!   commits), one writer of intents (unflushed, taking no write lock), one
//!   housekeeper, readers up to a quarter of the pool, one download, and downloads of
//!   the whole instance two at a time, so a burst on one tenant waits for its own
//!   turns while the others find connections free;
//! - let a term's start (a lease just taken, see [`crate::cluster::lease::start_term`])
//!   past everything else waiting for a connection: every other checkout first takes
//!   one of the pool's *entries*, as many as it has connections, so no more of them
//!   queue at the pool than it could serve at once, and a connection given back goes
//!   to a term start waiting before anything that has yet to enter. An instance that
//!   takes hundreds of tenants at once (another one died) starts their terms within
//!   a moment, even while the tenants it took first start their leader's work;
//! - let work that holds two connections at once (a report reading two result streams
//!   together) take its turns and entries for both at its first checkout
//!   ([`super::Pool::grouped`]), so such works never each hold one connection while waiting
//!   for another.
//!
//! Writers of all tenants together hold at most half the pool: a write transaction may
//! read through its store's read share meanwhile, and with every connection held by a
//! writer waiting for a reader none would ever come back.
//!
//! [`Store::relay_outbox_commits`]: super::Store::relay_outbox_commits

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Either, Execute, Executor, Transaction};
use sqlx_postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgQueryResult, PgRow,
    PgStatement, PgTypeInfo, Postgres,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use super::ConnectionCounts;

/// `[database] max_connections` unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// The fewest `[database] max_connections` allowed: the session, the listener, the
/// liveness session and three pooled, so a writer that reads meanwhile always finds a
/// second connection.
pub const MIN_MAX_CONNECTIONS: u32 = 6;

/// The schema a pooled connection searches while no tenant holds it: no tenant's, and
/// never created, so an unqualified name there is no table at all.
pub const NO_TENANT: &str = "wfmd_no_tenant";

/// The fewest read turns a tenant has, whatever the pool's size: one report reads on
/// two connections at once (two result streams), and a tenant's read pool held four
/// before the pool was shared.
const MIN_READ_TURNS: usize = 4;

/// Downloads of the whole instance at once, over all its tenants.
const INSTANCE_EXPORTS: usize = 2;

/// How long a checkout waits for a connection of the pool (after its turn), and a
/// write for its tenant's write lock, before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// The instance's PostgreSQL pools, one per database its tenants are on; cheap to
/// clone. A command opening one store makes its own.
#[derive(Debug, Clone)]
pub struct SharedPools(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    max_connections: u32,
    /// `application_name` of the instance's connections (`wfmd <instance>`), with
    /// ` session`, ` listener` after it for those two.
    name: String,
    /// Whether a liveness session (`[ha]`) counts against `max_connections` too.
    liveness: bool,
    pools: Mutex<HashMap<String, Weak<SharedPool>>>,
}

impl SharedPools {
    /// The pools of an instance named `instance` (its `[ha] instance_id`, or `None`),
    /// of `max_connections` each in all, one of them the liveness session's when
    /// `liveness`.
    pub fn new(max_connections: u32, instance: Option<&str>, liveness: bool) -> SharedPools {
        SharedPools(Arc::new(Registry {
            max_connections: max_connections.max(MIN_MAX_CONNECTIONS),
            name: instance.map_or_else(|| "wfmd".to_owned(), |id| format!("wfmd {id}")),
            liveness,
            pools: Mutex::default(),
        }))
    }

    /// The pools of a process that opens one store (a command, a test).
    pub fn private() -> SharedPools {
        SharedPools::new(DEFAULT_MAX_CONNECTIONS, None, false)
    }

    /// How many connections of each database's `max_connections` are pooled: all but
    /// the session, the listener and the liveness session.
    pub fn pooled(&self) -> u32 {
        self.0.max_connections - 2 - u32::from(self.0.liveness)
    }

    /// The shared pool of the database `options` name (its server, database and user;
    /// the schema is each tenant's), made on first use without connecting.
    pub(super) fn of(&self, options: &PgConnectOptions) -> Arc<SharedPool> {
        let key = format!(
            "{}:{}/{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(""),
            options.get_username()
        );
        let mut pools = self.0.pools.lock().expect("never poisoned");
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return pool;
        }
        let pool = Arc::new(SharedPool::new(options, &self.0.name, self.pooled()));
        pools.retain(|_, pool| pool.strong_count() > 0);
        pools.insert(key, Arc::downgrade(&pool));
        pool
    }
}

/// One database's pool of an instance, with its session and its listener.
#[derive(Debug)]
pub(super) struct SharedPool {
    pool: PgPool,
    /// How many connections a tenant's reads hold at most.
    read_turns: usize,
    /// The instance's write turns, over all its tenants (see the module's doc).
    writes: Arc<Semaphore>,
    /// The instance's download turns.
    exports: Arc<Semaphore>,
    /// The way to a connection of every checkout but a term's start, one per
    /// connection (see the module's doc).
    entries: Arc<Semaphore>,
    /// Checkouts queued right now, on a turn or on the pool.
    waiting: AtomicUsize,
    /// The tenants' stores open on it: the last to close closes it.
    tenants: AtomicUsize,
    session: Session,
    listening: Arc<Listening>,
    /// Ends the listener's task once the last store of the pool has gone.
    stop: CancellationToken,
}

impl SharedPool {
    fn new(options: &PgConnectOptions, name: &str, pooled: u32) -> SharedPool {
        let pool = PgPoolOptions::new()
            .max_connections(pooled)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // One still in a transaction is closed. The others search no tenant's
            // schema already (see the module's doc).
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SET lock_timeout = '{}ms'",
                        ACQUIRE_TIMEOUT.as_millis()
                    )))
                    .execute(&mut *conn)
                    .await?;
                    // The options may carry the first tenant's search_path.
                    point_at(conn, &quoted(NO_TENANT)).await
                })
            })
            .connect_lazy_with(options.clone().application_name(name));
        let read_turns = usize::try_from(pooled / 4).unwrap_or(1).max(MIN_READ_TURNS);
        let writes = usize::try_from(pooled / 2).unwrap_or(1).max(1);
        SharedPool {
            pool,
            read_turns,
            writes: Arc::new(Semaphore::new(writes)),
            exports: Arc::new(Semaphore::new(INSTANCE_EXPORTS)),
            entries: Arc::new(Semaphore::new(usize::try_from(pooled).unwrap_or(1).max(1))),
            waiting: AtomicUsize::new(0),
            tenants: AtomicUsize::new(0),
            session: Session {
                options: options.clone().application_name(&format!("{name} session")),
                conn: tokio::sync::Mutex::default(),
            },
            listening: Arc::new(Listening {
                options: options
                    .clone()
                    .application_name(&format!("{name} listener")),
                channels: Mutex::default(),
                added: tokio::sync::Notify::new(),
                announcements: Mutex::default(),
                to_announce: tokio::sync::Notify::new(),
                started: AtomicBool::new(false),
            }),
            stop: CancellationToken::new(),
        }
    }

    /// The pool's connections now, and the checkouts waiting.
    pub(super) fn connections(&self) -> ConnectionCounts {
        ConnectionCounts::of_pool(
            self.pool.size(),
            self.pool.num_idle(),
            u32::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        )
    }

    /// A tenant's shares of the pool: its tables are in `search_path`.
    pub(super) fn tenant(self: &Arc<Self>, search_path: &str) -> Arc<TenantShares> {
        let pooled = usize::try_from(self.pool.options().get_max_connections()).unwrap_or(1);
        self.tenants.fetch_add(1, Ordering::AcqRel);
        Arc::new(TenantShares {
            pool: Arc::clone(self),
            search_path: quoted_path(search_path),
            write: Arc::new(Semaphore::new(1)),
            records: Arc::new(Semaphore::new(2)),
            unflushed: Arc::new(Semaphore::new(1)),
            housekeeping: Arc::new(Semaphore::new(1)),
            read: Arc::new(Semaphore::new(self.read_turns.min(pooled))),
            downloads: Arc::new(Semaphore::new(1)),
            closed: AtomicBool::new(false),
        })
    }

    /// A connection of the pool, counted as waiting while none is free.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let _queued = self.all_busy().then(|| Queued::on(&self.waiting));
        self.pool.acquire().await
    }

    /// Creates `schema` when missing, on a connection of the pool. Two instances
    /// starting together may both try: the loser's "already exists" is success.
    pub(super) async fn create_schema(&self, schema: &str) -> Result<(), sqlx::Error> {
        let _entry = turn(&self.entries, &self.waiting).await?;
        let mut conn = self.connection().await?;
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted}"
        )))
        .execute(&mut *conn)
        .await;
        match created {
            // unique_violation, duplicate_schema: created meanwhile by another.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("23505" | "42P06")) =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Whether any checkout of the instance waits right now, for a turn or a connection.
    pub(super) fn has_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Whether a checkout would wait for a connection now.
    fn all_busy(&self) -> bool {
        self.pool.num_idle() == 0 && self.pool.size() >= self.pool.options().get_max_connections()
    }

    /// Takes `key`'s daemon lock on the instance's session (see
    /// [`super::lock::DaemonLock::serve_postgres`]): shared or alone. Returns whether
    /// it is held.
    pub(super) async fn lock_daemon(&self, key: i64, shared: bool) -> Result<bool, sqlx::Error> {
        let statement = match shared {
            true => "SELECT pg_try_advisory_lock_shared($1)",
            false => "SELECT pg_try_advisory_lock($1)",
        };
        self.session.run(statement, key).await
    }

    /// Gives `key`'s daemon lock back (a tenant removed by a reload), in the
    /// background: nothing waits for it.
    pub(super) fn unlock_daemon(self: &Arc<Self>, key: i64, shared: bool) {
        if self.stop.is_cancelled() {
            // Closed: the session ended, and its locks with it.
            return;
        }
        let pool = Arc::clone(self);
        let statement = match shared {
            true => "SELECT pg_advisory_unlock_shared($1)",
            false => "SELECT pg_advisory_unlock($1)",
        };
        crate::tasks::spawn(async move {
            if let Err(error) = pool.session.run(statement, key).await {
                tracing::debug!(%error, "cannot give a daemon lock back");
            }
        });
    }

    /// The notes other instances send on `channel` (their payloads), from the
    /// instance's one listener, which listens on it from now on.
    pub(super) fn listen(&self, channel: &str) -> broadcast::Receiver<String> {
        let heard = {
            let mut channels = self.listening.channels.lock().expect("never poisoned");
            let Channels {
                senders,
                unlistened,
            } = &mut *channels;
            senders
                .entry(channel.to_owned())
                .or_insert_with(|| {
                    unlistened.push(channel.to_owned());
                    broadcast::channel(16).0
                })
                .subscribe()
        };
        self.listening.added.notify_one();
        self.start_listening();
        heard
    }

    /// Announces `payload` on `channel` (NOTIFY) from the instance's listener, soon:
    /// every announcement waiting then goes in one statement of its own, whatever
    /// the tenants they are of, and one waiting already on the same channel with the
    /// same payload stands for this one. Lost when the listener cannot send it (the
    /// readers poll too).
    pub(super) fn announce(&self, channel: &str, payload: &str) {
        let added = {
            let mut waiting = self.listening.announcements.lock().expect("never poisoned");
            waiting.insert((channel.to_owned(), payload.to_owned()))
        };
        if added {
            self.listening.to_announce.notify_one();
        }
        self.start_listening();
    }

    /// Starts the instance's listener once.
    fn start_listening(&self) {
        if !self.listening.started.swap(true, Ordering::AcqRel) {
            let listening = Arc::clone(&self.listening);
            crate::tasks::spawn(listening.run(self.stop.clone()));
        }
    }

    /// Closes the pool and the session, and ends the listener (the last tenant gone).
    async fn close(&self) {
        self.stop.cancel();
        self.pool.close().await;
        if let Some(conn) = self.session.conn.lock().await.take() {
            conn.close().await.ok();
        }
    }
}

impl Drop for SharedPool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The connection holding every tenant's daemon lock, opened on first use.
#[derive(Debug)]
struct Session {
    options: PgConnectOptions,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl Session {
    /// Runs `statement` (one of the advisory-lock functions) with `key`; a session
    /// whose statement failed is dropped, and the next call opens another.
    async fn run(&self, statement: &'static str, key: i64) -> Result<bool, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(PgConnection::connect_with(&self.options).await?);
        }
        let session = conn.as_mut().expect("opened above");
        let done = sqlx::query_scalar(statement)
            .bind(key)
            .fetch_one(&mut *session)
            .await;
        if done.is_err() {
            *conn = None;
        }
        done
    }
}

/// The instance's one listener, on every channel a tenant's store asked for, and the
/// one sender of every tenant's announcements.
#[derive(Debug)]
struct Listening {
    options: PgConnectOptions,
    channels: Mutex<Channels>,
    /// Told when a channel is added, so the listener listens on it too.
    added: tokio::sync::Notify,
    /// Announcements to send (channel, payload), and the word that some wait.
    announcements: Mutex<std::collections::HashSet<(String, String)>>,
    to_announce: tokio::sync::Notify,
    started: AtomicBool,
}

/// The channels the stores asked for, each with its stores' sender, and those the
/// listener's connection has yet to listen on.
#[derive(Debug, Default)]
struct Channels {
    senders: HashMap<String, broadcast::Sender<String>>,
    /// Added since the listener last looked. Kept apart so that a look, made at every
    /// note heard and every announcement sent, costs nothing with none added: it went
    /// through every channel, and at a thousand tenants that took a fifth of an
    /// instance's CPU under load (docs/fleet.md).
    unlistened: Vec<String>,
}

impl Listening {
    /// Listens until `stop`, reconnecting when the connection is lost; each note goes
    /// to the stores of its channel. Notes sent while it reconnects are missed: the
    /// readers poll too.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.options.clone());
        'connect: loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "cannot listen for the other instances' commits");
                    if pause(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            // A new connection listens on every channel, then on those added since.
            let mut connected = true;
            loop {
                let wanted: Vec<String> = {
                    let mut channels = self.channels.lock().expect("never poisoned");
                    let added = std::mem::take(&mut channels.unlistened);
                    match std::mem::take(&mut connected) {
                        true => channels.senders.keys().cloned().collect(),
                        false => added,
                    }
                };
                if !wanted.is_empty()
                    && let Err(error) = listener.listen_all(wanted.iter().map(String::as_str)).await
                {
                    tracing::debug!(%error, "cannot listen for the other instances' commits");
                    if pause(&stop).await {
                        return;
                    }
                    continue 'connect;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.added.notified() => {}
                    () = self.to_announce.notified() => self.announce_on(&mut listener).await,
                    heard = listener.recv() => match heard {
                        Ok(note) => {
                            let channels = self.channels.lock().expect("never poisoned");
                            if let Some(stores) = channels.senders.get(note.channel()) {
                                let _ = stores.send(note.payload().to_owned());
                            }
                        }
                        // Reconnected (its channels listened again) at the next receive.
                        Err(error) => {
                            tracing::debug!(%error, "lost the connection listening for commits");
                            if pause(&stop).await {
                                return;
                            }
                        }
                    },
                }
            }
        }
    }

    /// Sends the announcements waiting, in one statement on the listener's connection:
    /// an instance leading hundreds of tenants announces their commits in a few round
    /// trips a second, not one checkout each (notes that come in meanwhile are kept
    /// for the next receive).
    async fn announce_on(&self, listener: &mut PgListener) {
        let (channels, payloads): (Vec<String>, Vec<String>) = {
            let mut waiting = self.announcements.lock().expect("never poisoned");
            waiting.drain().unzip()
        };
        if channels.is_empty() {
            return;
        }
        let sent =
            sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS a (c, p)")
                .bind(&channels)
                .bind(&payloads)
                .execute(&mut *listener)
                .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "cannot announce outbox commits to the other instances");
        }
    }
}

/// Waits a second before trying again; true when stopped meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}

/// One tenant's shares of its instance's pool, for all the clones of its store.
#[derive(Debug)]
pub(super) struct TenantShares {
    pool: Arc<SharedPool>,
    /// The tenant's `search_path`, quoted as `set_config` takes it.
    search_path: String,
    write: Arc<Semaphore>,
    /// The change path's records: two, so that the next batch's transaction begins
    /// (and waits for the write lock) while the last one commits.
    records: Arc<Semaphore>,
    /// Unflushed writes (a change's intent), which take no write lock: one at a time,
    /// beside the flushed writer rather than behind it.
    unflushed: Arc<Semaphore>,
    housekeeping: Arc<Semaphore>,
    read: Arc<Semaphore>,
    /// One download of the tenant at a time (see [`TenantShares::download`]).
    downloads: Arc<Semaphore>,
    closed: AtomicBool,
}

impl TenantShares {
    pub(super) fn pool(&self) -> &Arc<SharedPool> {
        &self.pool
    }

    /// The share of `kind`.
    pub(super) fn share(self: &Arc<Self>, kind: ShareKind) -> Share {
        Share {
            tenant: Arc::clone(self),
            kind,
            download: Arc::default(),
            group: None,
        }
    }

    /// The share of one download: its first checkout waits for the tenant's download
    /// turn and one of the instance's two, held until the share and its clones are
    /// gone, the download done. Its reads within take no turns of their own (but an
    /// entry each, or the group's: see [`Share::grouped`]): a download reads on up to
    /// two connections at once, and turns taken one by one by two downloads could each
    /// wait for the other's.
    pub(super) fn download(self: &Arc<Self>) -> Share {
        self.share(ShareKind::Export)
    }

    /// Waits for the tenant's checkouts to come back and refuses new ones; the last
    /// tenant of the pool closes it.
    pub(super) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for turns in [
            &self.write,
            &self.records,
            &self.unflushed,
            &self.housekeeping,
            &self.read,
            &self.downloads,
        ] {
            // Every permit back means no checkout of this kind is out.
            let all = u32::try_from(turns.available_permits()).unwrap_or(0);
            let _ = turns.acquire_many(all.max(1)).await;
            turns.close();
        }
        if self.pool.tenants.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.pool.close().await;
        }
    }
}

/// Which of a tenant's shares a checkout takes its turn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShareKind {
    /// Write transactions: one at a time, and within the instance's write turns.
    Write,
    /// The change path's records (see `Store::begin_records_write`): two write
    /// transactions at a time, beside `Write`'s, within the instance's write turns.
    Records,
    /// Unflushed write transactions (intents): one at a time, beside `Write`'s, and
    /// within the instance's write turns.
    Unflushed,
    /// Housekeeping's connection: one, within the instance's write turns.
    Housekeeping,
    /// Reads: up to a quarter of the pool (and at least [`MIN_READ_TURNS`]).
    Read,
    /// A download's reads: one download at a time, and two of the instance's.
    Export,
    /// A term's start: the tenant's write turn, outside the instance's write turns,
    /// and first to a connection (see the module's doc).
    Term,
}

/// A tenant's way into its instance's pool for one kind of work (see the module's
/// doc); cheap to clone. Statements run on it as on a pool (`sqlx::Executor`), each
/// on a connection checked out for it.
#[derive(Debug, Clone)]
pub struct Share {
    tenant: Arc<TenantShares>,
    kind: ShareKind,
    /// A download's turns, once its first checkout took them.
    download: Arc<tokio::sync::OnceCell<Turns>>,
    /// The turns of work that reads on several connections at once (see
    /// [`Share::grouped`]).
    group: Option<Arc<Group>>,
}

/// Turns taken together for work on `connections` connections at once, by its first
/// checkout, and held until the share and its clones are gone.
#[derive(Debug)]
struct Group {
    connections: u32,
    turns: tokio::sync::OnceCell<Turns>,
}

/// The turns a checkout holds until its connection is given back (a download's, until
/// the download is done).
#[derive(Debug, Default)]
pub struct Turns {
    _tenant: Option<OwnedSemaphorePermit>,
    _instance: Option<OwnedSemaphorePermit>,
    _entry: Option<OwnedSemaphorePermit>,
}

impl Share {
    /// The same tenant's share of another kind.
    pub(super) fn of_kind(&self, kind: ShareKind) -> Share {
        self.tenant.share(kind)
    }

    /// The same share for work that holds up to `connections` connections at once (a
    /// report reading two result streams together): its first checkout takes that many
    /// of the tenant's turns and of the pool's entries together, and its checkouts then
    /// take none. Taken one at a time, the entries could all go to such works' first
    /// connections, each waiting for a second that never comes free (until the pool's
    /// timeout, a minute later): an instance that starts many tenants at once, each
    /// summing its day for the live feed, did.
    pub(super) fn grouped(&self, connections: u32) -> Share {
        Share {
            group: Some(Arc::new(Group {
                connections,
                turns: tokio::sync::OnceCell::new(),
            })),
            ..self.clone()
        }
    }

    /// The instance's pool this share is of.
    pub(super) fn pool(&self) -> &SharedPool {
        &self.tenant.pool
    }

    /// Waits for this share's turn (and the instance's, for writes and downloads),
    /// then for an entry to the pool (none for a term's start); a grouped share's first
    /// checkout, for all of the group's at once.
    async fn turns(&self) -> Result<Turns, sqlx::Error> {
        let tenant = &self.tenant;
        let pool = &tenant.pool;
        let waiting = &pool.waiting;
        if let Some(group) = &self.group {
            if self.kind == ShareKind::Export {
                // A download's own turns first, as without the group.
                self.download_turns().await?;
            }
            group
                .turns
                .get_or_try_init(|| async {
                    let own = (self.kind == ShareKind::Read).then_some(&tenant.read);
                    let read_turns = u32::try_from(pool.read_turns).unwrap_or(u32::MAX);
                    let entries = pool.pool.options().get_max_connections();
                    let n = group.connections;
                    Ok::<_, sqlx::Error>(Turns {
                        _tenant: maybe_turns(own, n.min(read_turns), waiting).await?,
                        _instance: None,
                        _entry: maybe_turns(Some(&pool.entries), n.min(entries), waiting).await?,
                    })
                })
                .await?;
            return Ok(Turns::default());
        }
        let (own, instance) = match self.kind {
            ShareKind::Write => (Some(&tenant.write), Some(&pool.writes)),
            ShareKind::Records => (Some(&tenant.records), Some(&pool.writes)),
            ShareKind::Unflushed => (Some(&tenant.unflushed), Some(&pool.writes)),
            ShareKind::Housekeeping => (Some(&tenant.housekeeping), Some(&pool.writes)),
            ShareKind::Read => (Some(&tenant.read), None),
            // Holds no connection while it waits for another: it may take a
            // connection the writers of the other tenants are waiting for.
            ShareKind::Term => (Some(&tenant.write), None),
            ShareKind::Export => {
                self.download_turns().await?;
                (None, None)
            }
        };
        let entry = (self.kind != ShareKind::Term).then_some(&pool.entries);
        // In this order, for every kind: no two checkouts wait on each other's turn.
        Ok(Turns {
            _tenant: maybe_turns(own, 1, waiting).await?,
            _instance: maybe_turns(instance, 1, waiting).await?,
            _entry: maybe_turns(entry, 1, waiting).await?,
        })
    }

    /// A download's turns: taken by its first checkout, held until the share is gone.
    async fn download_turns(&self) -> Result<(), sqlx::Error> {
        let (tenant, waiting) = (&self.tenant, &self.tenant.pool.waiting);
        self.download
            .get_or_try_init(|| async {
                Ok::<_, sqlx::Error>(Turns {
                    _tenant: Some(turn(&tenant.downloads, waiting).await?),
                    _instance: Some(turn(&tenant.pool.exports, waiting).await?),
                    _entry: None,
                })
            })
            .await
            .map(drop)
    }

    /// A connection searching the tenant's schema, held with its turns until it drops.
    pub async fn acquire(&self) -> Result<Checkout, sqlx::Error> {
        let turns = self.turns().await?;
        let mut conn = self.tenant.pool.connection().await?;
        if let Err(error) = point_at(&mut conn, &self.tenant.search_path).await {
            // Its first statement failed: a connection left in an aborted transaction
            // (see `begin_then`) or a broken one. Closed, so it serves nobody else.
            conn.close_on_drop();
            return Err(error);
        }
        Ok(Checkout {
            conn: Some(conn),
            closing: false,
            _turns: turns,
        })
    }

    /// A transaction searching the tenant's schema (set for its length, in the round
    /// trip that begins it: the schema names are quoted, so nothing in them is SQL),
    /// and the turns to hold as long as it.
    pub async fn begin(&self) -> Result<(Transaction<'static, Postgres>, Turns), sqlx::Error> {
        self.begin_then("").await
    }

    /// [`Share::begin`], with `then` (statements, each after a `;`, or nothing) run in
    /// the same round trip once the schema is set. `then` is sent as it is, unbound: it
    /// must hold only text our code made, never a value a user wrote. And it should not
    /// fail but as the database itself does (a lock's timeout): a statement failing
    /// there leaves the connection in an aborted transaction sqlx does not know of
    /// (0.9.0: its own count of transactions is still 0), which goes back to the pool
    /// so; the next checkout that meets it fails and closes it ([`Share::acquire`]).
    pub(super) async fn begin_then(
        &self,
        then: &str,
    ) -> Result<(Transaction<'static, Postgres>, Turns), sqlx::Error> {
        let turns = self.turns().await?;
        let pool = &self.tenant.pool;
        // SET takes no snapshot, as a SELECT would: the transaction may still set its
        // isolation level (a copy's snapshot does).
        let begin = format!(
            "BEGIN; SET LOCAL search_path TO {}{then}",
            self.tenant.search_path
        );
        let _queued = pool.all_busy().then(|| Queued::on(&pool.waiting));
        // sqlx's begin (0.9.0) is not safe to drop half-way on PostgreSQL: dropped after
        // its BEGIN went out and before the answer came back, it leaves the session in a
        // transaction it does not know of, and the pool hands that connection on with the
        // transaction, and the locks it took, still open; the next borrower's statements
        // run inside it (sqlx issue #4393). A caller dropped while waiting (a hand-over
        // stopping a tenant's work, a client gone) is no rare thing here. So the begin
        // runs to its end on a task of its own: a transaction whose caller is gone is
        // dropped there, and rolled back as any other.
        let pool = pool.pool.clone();
        let begun =
            crate::tasks::spawn(async move { pool.begin_with(sqlx::AssertSqlSafe(begin)).await });
        let tx = begun.await.map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok((tx, turns))
    }
}

/// A permit of `turns`, counted in `waiting` while none is free.
async fn turn(
    turns: &Arc<Semaphore>,
    waiting: &AtomicUsize,
) -> Result<OwnedSemaphorePermit, sqlx::Error> {
    turns_of(turns, 1, waiting).await
}

/// `n` permits of `turns` together, counted in `waiting` while they are not free.
async fn turns_of(
    turns: &Arc<Semaphore>,
    n: u32,
    waiting: &AtomicUsize,
) -> Result<OwnedSemaphorePermit, sqlx::Error> {
    if let Ok(permit) = Arc::clone(turns).try_acquire_many_owned(n) {
        return Ok(permit);
    }
    let _queued = Queued::on(waiting);
    // Bounded as the pool's own wait is: work that checks out twice at once on one
    // share, twice over, fails as it would on a pool of that size, and does not hang.
    match tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(turns).acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(sqlx::Error::PoolClosed),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// `n` permits of `turns` together, when there are any (see [`turns_of`]).
async fn maybe_turns(
    turns: Option<&Arc<Semaphore>>,
    n: u32,
    waiting: &AtomicUsize,
) -> Result<Option<OwnedSemaphorePermit>, sqlx::Error> {
    match turns {
        Some(turns) => turns_of(turns, n, waiting).await.map(Some),
        None => Ok(None),
    }
}

/// Counts one checkout as waiting until it drops (also when the wait is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn on(waiting: &'a AtomicUsize) -> Queued<'a> {
        waiting.fetch_add(1, Ordering::Relaxed);
        Queued(waiting)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sets the connection's `search_path` for its session.
async fn point_at(conn: &mut PgConnection, search_path: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(search_path)
        .execute(conn)
        .await
        .map(drop)
}

/// `schema` as an identifier in a `search_path`.
fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// A URL's `search_path` option as `set_config` takes it: each schema quoted (the
/// default `"$user", public` when none).
fn quoted_path(search_path: &str) -> String {
    search_path
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
        .map(quoted)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A connection checked out of the instance's pool through a [`Share`], searching the
/// tenant's schema for its session; it derefs to the connection, and gives its turns
/// back when it drops, and the connection once pointed back at [`NO_TENANT`].
#[derive(Debug)]
pub struct Checkout {
    /// `None` once dropped.
    conn: Option<PoolConnection<Postgres>>,
    /// Closed when it drops, not given back.
    closing: bool,
    _turns: Turns,
}

impl Checkout {
    /// Closes the connection when it drops, instead of giving it back to the pool.
    pub(super) fn close_on_drop(&mut self) {
        self.closing = true;
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.closing {
            return;
        }
        // The connection goes back to the pool only once it searches no tenant's schema;
        // a step that fails, or no runtime to take it, closes it instead.
        if tokio::runtime::Handle::try_current().is_err() {
            conn.close_on_drop();
            return;
        }
        crate::tasks::spawn(async move {
            let pointed_back =
                !conn.is_in_transaction() && point_at(&mut conn, &quoted(NO_TENANT)).await.is_ok();
            if !pointed_back {
                conn.close_on_drop();
            }
        });
    }
}

impl std::ops::Deref for Checkout {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a checkout has its connection until it drops")
    }
}

impl std::ops::DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a checkout has its connection until it drops")
    }
}

type Step = Result<Either<PgQueryResult, PgRow>, sqlx::Error>;

/// Statements run on a share as on a pool: each on a connection checked out for it.
impl<'p> Executor<'p> for &'_ Share {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> futures::stream::BoxStream<'e, Step>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let share = self.clone();
        // The rows borrow the checked-out connection, which the stream must own: a
        // task of the stream's own feeds them through a channel of one, so a slow
        // reader holds the producer back, row by row.
        let (mut rows, received) = futures::channel::mpsc::channel::<Step>(1);
        let produce = async move {
            let mut conn = match share.acquire().await {
                Ok(conn) => conn,
                Err(error) => {
                    let _ = rows.send(Err(error)).await;
                    return;
                }
            };
            let mut steps = conn.fetch_many(query);
            while let Some(step) = steps.next().await {
                if rows.send(step).await.is_err() {
                    return;
                }
            }
        };
        let produce = futures::stream::once(produce).filter_map(|()| async { None });
        Box::pin(futures::stream::select(produce, received))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures::future::BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let share = self.clone();
        Box::pin(async move { share.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> futures::future::BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        let share = self.clone();
        Box::pin(async move { share.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> futures::future::BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        let share = self.clone();
        Box::pin(async move { share.acquire().await?.describe(sql).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{self, AuditKey, NewEntry};
    use crate::store::{Db, Store, execute, fetch_scalar};

    /// Tenants `names` (schemas of their own) on one fresh database, through one
    /// instance's `pools`, each keyed with a key of its own.
    async fn tenants_on(pools: &SharedPools, names: &[&str]) -> Vec<(Store, AuditKey)> {
        let url = throwaway_postgres::shared().fresh_database();
        let mut stores = Vec::new();
        for name in names {
            let key = AuditKey::new(&name.repeat(40).into());
            let tenant = format!("{url}?options[search_path]={name}");
            let store = Store::open_in(&tenant, Some(key.clone()), pools)
                .await
                .unwrap();
            stores.push((store, key));
        }
        stores
    }

    async fn append(store: &Store, subject: &str) {
        let mut tx = store.begin_write().await.unwrap();
        audit::append(
            &mut tx,
            &NewEntry {
                at: crate::store::from_ms(1_790_000_000_000),
                actor: "api",
                action: "transition.succeeded",
                agent_id: Some("u_001"),
                subject_id: Some(subject),
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// The smallest pool (four pooled connections), two tenants writing and reading in
    /// turn: each connection serves both, and each tenant sees only its own rows, its
    /// chain verifying with its own key. A connection used without a tenant's step
    /// finds no table at all, whichever it is.
    #[tokio::test]
    async fn no_tenant_reads_another_tenants_rows_or_key_through_a_connection_they_shared() {
        let pools = SharedPools::new(MIN_MAX_CONNECTIONS, Some("isolation"), false);
        let tenants = tenants_on(&pools, &["alpha", "beta"]).await;
        for round in 0..12 {
            for (store, _) in &tenants {
                append(store, &format!("{}-{round}", store.schema().unwrap())).await;
                let subjects: Vec<String> = crate::store::fetch_scalar!(
                    store.reader(),
                    all,
                    "SELECT DISTINCT split_part(subject_id, '-', 1) FROM audit_log
                     WHERE action = 'transition.succeeded'"
                )
                .unwrap();
                assert_eq!(subjects, [store.schema().unwrap()], "round {round}");
            }
        }
        let Db::Postgres(share) = tenants[0].0.reader().db() else {
            unreachable!("PostgreSQL")
        };
        let pool = share.pool();
        assert!(
            pool.pool.size() <= 4,
            "the two tenants shared at most four connections"
        );
        for (store, key) in &tenants {
            let verified = audit::verify_with(store.reader(), Some(key)).await.unwrap();
            assert_eq!(verified.first_break, None, "{verified:?}");
            assert!(verified.entries >= 12, "{verified:?}");
            assert!(verified.keyed_from.is_some(), "{verified:?}");
        }
        // Beta's chain, checked with alpha's key, breaks at once: no entry of it was
        // keyed with alpha's.
        let crossed = audit::verify_with(tenants[1].0.reader(), Some(&tenants[0].1))
            .await
            .unwrap();
        assert!(crossed.first_break.is_some(), "{crossed:?}");
        // Every connection of the pool, each last used by a tenant's transaction or its
        // single statements, all at once: none searches a tenant's schema.
        let mut bare = Vec::new();
        for _ in 0..pool.pool.size() {
            bare.push(pool.pool.acquire().await.unwrap());
        }
        assert!(
            bare.len() >= 2,
            "the tenants used {} connections",
            bare.len()
        );
        for conn in &mut bare {
            let skipped = sqlx::query("SELECT COUNT(*) FROM audit_log")
                .execute(&mut **conn)
                .await
                .unwrap_err()
                .to_string();
            assert!(skipped.contains("does not exist"), "{skipped}");
        }
        drop(bare);
        for (store, _) in tenants {
            store.close().await;
        }
    }

    /// One tenant floods the pool with writes, reads and downloads that each hold their
    /// connection a while; another tenant's change and read go through while the flood
    /// still has work queued, and the queue shows as `waiting`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_on_one_tenant_leaves_another_tenants_change_its_turn() {
        let pools = SharedPools::new(DEFAULT_MAX_CONNECTIONS, Some("fairness"), false);
        let tenants = tenants_on(&pools, &["flood", "calm"]).await;
        let (flood, calm) = (tenants[0].0.clone(), tenants[1].0.clone());
        let done = Arc::new(AtomicUsize::new(0));
        let mut work = tokio::task::JoinSet::new();
        const EACH: usize = 20;
        for n in 0..EACH * 3 {
            let (store, done) = (flood.clone(), Arc::clone(&done));
            crate::tasks::spawn_in(&mut work, async move {
                match n % 3 {
                    0 => {
                        let mut tx = store.begin_write().await.unwrap();
                        execute!(&mut tx, "SELECT pg_sleep(0.05)").unwrap();
                        tx.commit().await.unwrap();
                    }
                    1 => {
                        execute!(store.reader(), "SELECT pg_sleep(0.05)").unwrap();
                    }
                    _ => {
                        let download = store.for_exports();
                        execute!(download.reader(), "SELECT pg_sleep(0.05)").unwrap();
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let Db::Postgres(share) = flood.reader().db() else {
            unreachable!("PostgreSQL")
        };
        let pool = share.pool();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while pool.connections().waiting == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the flood never queued"
            );
            tokio::task::yield_now().await;
        }
        let mut tx = calm.begin_write().await.unwrap();
        execute!(
            &mut tx,
            "INSERT INTO write_probe (id, at) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET at = excluded.at"
        )
        .unwrap();
        tx.commit().await.unwrap();
        let read: i64 =
            fetch_scalar!(calm.reader(), one, "SELECT COUNT(*) FROM write_probe").unwrap();
        let flooded = done.load(Ordering::SeqCst);
        assert_eq!(read, 1);
        assert!(
            flooded < EACH * 3,
            "the calm tenant's change went through only once the flood was done ({flooded})"
        );
        assert!(
            pool.connections().in_use + pool.connections().idle <= pools.pooled(),
            "{:?}",
            pool.connections()
        );
        while work.join_next().await.transpose().unwrap().is_some() {}
        assert_eq!(done.load(Ordering::SeqCst), EACH * 3);
        for (store, _) in tenants {
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_transaction_whose_caller_left_while_it_began_is_rolled_back() {
        let pools = SharedPools::new(MIN_MAX_CONNECTIONS, Some("abandoned"), false);
        let tenants = tenants_on(&pools, &["t1"]).await;
        let Db::Postgres(share) = tenants[0].0.reader().db() else {
            unreachable!("PostgreSQL")
        };
        // The caller gives up while the BEGIN's round trip is under way, a lock taken.
        let key = 7_700_417;
        let then = format!("; SELECT pg_advisory_xact_lock({key}); SELECT pg_sleep(0.5)");
        let begun = tokio::time::timeout(Duration::from_millis(100), share.begin_then(&then));
        assert!(begun.await.is_err(), "the begin outlasted its caller");
        // Once the BEGIN's answer is in, the transaction is rolled back and its lock
        // freed; left open, it would hold the lock for whoever borrows the connection.
        // Another session of the same database (advisory locks are the database's).
        let database: String =
            fetch_scalar!(tenants[0].0.reader(), one, "SELECT current_database()").unwrap();
        let url = throwaway_postgres::shared().url(&database);
        let mut other = sqlx_postgres::PgConnection::connect(&url).await.unwrap();
        let free = async || -> bool {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut other)
                .await
                .unwrap()
        };
        crate::store::testing::eventually(
            "the lock taken by the abandoned begin is still held",
            free,
        )
        .await;
        tenants[0].0.close().await;
    }

    /// Three tenants' reads queue for the pool, more than it has connections; a
    /// fourth tenant's term start, asked for after them, gets the first connection
    /// given back instead of waiting for the reads queued before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_term_start_goes_to_a_connection_before_the_checkouts_queued_for_one() {
        let pools = SharedPools::new(MIN_MAX_CONNECTIONS, Some("terms"), false);
        let tenants = tenants_on(&pools, &["busy_a", "busy_b", "busy_c", "taken"]).await;
        let pooled = usize::try_from(pools.pooled()).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let mut work = tokio::task::JoinSet::new();
        for (store, _) in &tenants[..3] {
            for _ in 0..3 * MIN_READ_TURNS {
                let (store, done) = (store.clone(), Arc::clone(&done));
                crate::tasks::spawn_in(&mut work, async move {
                    execute!(store.reader(), "SELECT pg_sleep(0.2)").unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        let taken = &tenants[3].0;
        let Db::Postgres(share) = taken.reader().db() else {
            unreachable!("PostgreSQL")
        };
        let pool = share.pool();
        // Every read but those on a connection waits: on its tenant's turns, or with
        // one for the pool.
        let reads = 3 * 3 * MIN_READ_TURNS;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while (pool.connections().waiting as usize) < reads - pooled {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reads never queued: {:?}",
                pool.connections()
            );
            tokio::task::yield_now().await;
        }
        let tx = taken.begin_term().await.unwrap();
        let before = done.load(Ordering::SeqCst);
        tx.commit().await.unwrap();
        // Those on a connection when it asked may be done; none of those queued.
        assert!(
            before <= pooled,
            "the term started only after {before} reads queued before it were done, more \
             than the pool's {pooled} connections hold at once"
        );
        while work.join_next().await.transpose().unwrap().is_some() {}
        assert_eq!(done.load(Ordering::SeqCst), reads);
        for (store, _) in tenants {
            store.close().await;
        }
    }

    /// More tenants than the pool has connections each read on two connections at
    /// once, holding the first while asking for the second: with the entries taken one
    /// at a time, every first connection is held and no second one ever comes free (the
    /// checkouts fail after the pool's minute); taken together, all of them finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_on_two_connections_at_once_over_many_tenants_all_finish() {
        let pools = SharedPools::new(MIN_MAX_CONNECTIONS, Some("groups"), false);
        let names = ["g_a", "g_b", "g_c", "g_d", "g_e", "g_f"];
        let tenants = tenants_on(&pools, &names).await;
        assert!(names.len() > pools.pooled() as usize);
        let mut work = tokio::task::JoinSet::new();
        for (store, _) in &tenants {
            let store = store.clone();
            crate::tasks::spawn_in(&mut work, async move {
                let pool = store.reader().grouped(2);
                let mut first = pool.acquire().await?;
                execute!(&mut first, "SELECT pg_sleep(0.2)")?;
                let mut second = pool.acquire().await?;
                execute!(&mut second, "SELECT 1")?;
                Ok::<_, sqlx::Error>(())
            });
        }
        let all = async {
            while let Some(done) = work.join_next().await {
                done.unwrap().unwrap();
            }
        };
        // Far less than the pool's minute: a deadlock shows as this running out.
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("works holding one connection each waited for a second");
        for (store, _) in tenants {
            store.close().await;
        }
    }

    /// A begin whose own statements failed leaves its connection in an aborted
    /// transaction, back in the pool: the first checkout that meets it fails and
    /// closes it, and every checkout after finds a good one.
    #[tokio::test]
    async fn a_connection_left_in_an_aborted_transaction_serves_one_checkout_at_most() {
        let pools = SharedPools::new(MIN_MAX_CONNECTIONS, Some("aborted"), false);
        let tenants = tenants_on(&pools, &["alpha"]).await;
        let Db::Postgres(share) = tenants[0].0.reader().db() else {
            unreachable!("PostgreSQL")
        };
        let share = share.clone();
        let failed = share.begin_then("; SELECT 1 / 0").await;
        assert!(failed.is_err(), "the begin's own statement failed");
        let mut aborted = 0;
        for _ in 0..12 {
            match share.acquire().await {
                Ok(mut conn) => {
                    sqlx::query("SELECT COUNT(*) FROM audit_log")
                        .execute(&mut *conn)
                        .await
                        .expect("a good connection searching the tenant's schema");
                }
                Err(error) => {
                    assert!(error.to_string().contains("aborted"), "{error}");
                    aborted += 1;
                }
            }
        }
        assert!(
            aborted <= 1,
            "the aborted connection served {aborted} checkouts"
        );
        for (store, _) in tenants {
            store.close().await;
        }
    }

    /// Twenty tenants' announcements made at once by one instance (sent together, in
    /// one statement of its listener) each reach the other instance's stores of that
    /// tenant, and no other tenant's.
    #[tokio::test]
    async fn every_tenants_announcement_made_at_once_reaches_the_other_instance() {
        let (a, b) = two_instances();
        let channels: Vec<String> = (0..20).map(|n| format!("wfmd_outbox_test_{n}")).collect();
        let mut heard: Vec<_> = channels.iter().map(|channel| b.listen(channel)).collect();
        let mut probe = b.listen("wfmd_outbox_probe");
        // b's listener listens on every channel above at once: once the probe is heard,
        // so would the others be.
        until_heard(&a, "wfmd_outbox_probe", &mut probe, "b never listened").await;
        for (n, channel) in channels.iter().enumerate() {
            a.announce(channel, &format!("a{n}"));
        }
        for (n, heard) in heard.iter_mut().enumerate() {
            let note = tokio::time::timeout(Duration::from_secs(10), heard.recv())
                .await
                .unwrap_or_else(|_| panic!("tenant {n}'s announcement never came"))
                .unwrap();
            assert_eq!(note, format!("a{n}"));
            assert!(heard.try_recv().is_err(), "tenant {n} heard another's");
        }
    }

    /// A tenant whose store asks for its channel while the listener has long been
    /// listening on others' is heard too: the listener's look at each note takes only
    /// the channels added since its last.
    #[tokio::test]
    async fn a_channel_asked_for_while_the_listener_listens_is_heard_too() {
        let (a, b) = two_instances();
        let mut first = b.listen("wfmd_outbox_first");
        until_heard(&a, "wfmd_outbox_first", &mut first, "b never listened").await;
        let mut late = b.listen("wfmd_outbox_late");
        let never = "the channel asked for later was never listened on";
        until_heard(&a, "wfmd_outbox_late", &mut late, never).await;
        assert!(
            heard(&a, "wfmd_outbox_first", &mut first).await,
            "the first channel is still heard"
        );
    }

    /// Two instances' pools (`a`, `b`) on one fresh database.
    fn two_instances() -> (Arc<SharedPool>, Arc<SharedPool>) {
        use std::str::FromStr;
        let url = throwaway_postgres::shared().fresh_database();
        let options = PgConnectOptions::from_str(&url).unwrap();
        let a = SharedPools::new(MIN_MAX_CONNECTIONS, Some("a"), false).of(&options);
        let b = SharedPools::new(MIN_MAX_CONNECTIONS, Some("b"), false).of(&options);
        (a, b)
    }

    /// Whether an announcement `from` makes on `channel` reaches `to` within 200 ms.
    async fn heard(from: &SharedPool, channel: &str, to: &mut broadcast::Receiver<String>) -> bool {
        from.announce(channel, "a");
        let heard = tokio::time::timeout(Duration::from_millis(200), to.recv());
        matches!(heard.await, Ok(Ok(_)))
    }

    /// Announces on `channel` until `to` hears it (the listener may not listen yet),
    /// failing with `never` after 20 s.
    async fn until_heard(
        from: &SharedPool,
        channel: &str,
        to: &mut broadcast::Receiver<String>,
        never: &str,
    ) {
        let within = Duration::from_secs(20);
        crate::store::testing::eventually_within(never, within, async || {
            heard(from, channel, to).await
        })
        .await;
    }

    #[test]
    fn a_search_path_is_quoted_schema_by_schema() {
        assert_eq!(quoted_path("bpo_alpha"), "\"bpo_alpha\"");
        assert_eq!(quoted_path("a, \"b\""), "\"a\", \"b\"");
    }
}
