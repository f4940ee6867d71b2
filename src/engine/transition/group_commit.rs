//! Group commit of the change path's writes: the intents of changes about to be sent and
//! the records of changes the platform answered, from every change in flight, share
//! one write transaction and one commit.
//!
//! Each change waits for its own write's commit, as it did for its own transaction: an
//! intent is committed before its change is sent, a record before its change is
//! answered. What is shared is the cost around the rows: on SQLite the write turn and
//! the flush to disk, on PostgreSQL the round trips and the flush under the tenant's
//! write lock. A busy engine's changes queue behind the transaction being committed
//! and go together in the next, so the more changes are in flight, the fewer commits
//! each costs; a lone change commits at once, as before.
//!
//! A batch commits whole or not at all. When its commit (or the transaction's start)
//! fails, every write in it fails: no intent of it is stored, so none of its changes is
//! sent; no record of it is stored, so each of its changes goes the way of a record the
//! database refused (see `settle`). When a statement fails because of one write rather
//! than the database (a constraint), the batch is rolled back and each of its writes
//! tried in a transaction of its own, so one bad write fails alone.
//!
//! A writer task runs the batches, started with the first write and ended when the
//! engine is dropped, after the writes already queued. It writes through the store's
//! [`Store::begin_write`] like any other writer, so it takes the same turn (the write
//! connection, the tenant's write lock) and the same checks (a follower is refused).
//! On SQLite one writer takes both kinds, as there is one write connection to share.
//! On PostgreSQL the intents have a writer of their own: a batch of intents alone takes
//! no write lock and goes as one statement of its own (see
//! [`Store::write_unflushed_on`]), so it commits on another connection beside the
//! records' transaction instead of waiting behind it and its flush, and the records'
//! transaction holds the lock for records only. While more intents are queued, the next
//! batch goes on the last one's connection, which still searches the tenant's schema:
//! one round trip, not two. And while a batch of records commits with more writes
//! queued, the next batch's transaction begins beside it (see
//! [`Store::begin_records_write`]): its begin, and its wait for the write lock, end
//! with that commit rather than a round trip after it. A commit that fails gives that
//! transaction back before anything else.

use std::collections::HashSet;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::Transition;
use super::record::{self, Recording};
use crate::store::intents::{self, IntentRow};
use crate::store::postgres::NotLeader;
use crate::store::{Backend, Store, Unflushed, WriteTx, is_not_leader, is_unavailable};

/// The most writes one transaction carries: enough that a burst of changes is a few
/// commits, few enough that one batch holds the write turn only briefly.
const MAX_BATCH: usize = 128;

/// The engine's queues of writes, each with the task that commits them.
pub(super) struct GroupCommit {
    store: Store,
    /// Records, and on SQLite intents too.
    records: OnceLock<mpsc::UnboundedSender<Queued>>,
    /// Intents, on PostgreSQL.
    intents: OnceLock<mpsc::UnboundedSender<Queued>>,
}

/// One change's write.
enum Write {
    Intent(Box<IntentRow>),
    Record(Box<Recording>),
}

impl Write {
    /// The agent a record is of: one batch records each agent at most once, as its
    /// interval is closed and opened by one statement for all of them.
    fn recorded_agent(&self) -> Option<&str> {
        match self {
            Write::Intent(_) => None,
            Write::Record(r) => Some(&r.record.request.agent_id),
        }
    }
}

/// What a committed write gives back.
enum Written {
    Intent,
    Record(Box<Transition>),
}

/// A write waiting for its batch, and where its result goes once that is committed.
struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Written, sqlx::Error>>,
}

impl GroupCommit {
    pub(super) fn new(store: Store) -> GroupCommit {
        GroupCommit {
            store,
            records: OnceLock::new(),
            intents: OnceLock::new(),
        }
    }

    /// Commits `intent`; returns once it is stored.
    pub(super) async fn intent(&self, intent: IntentRow) -> Result<(), sqlx::Error> {
        self.write(Write::Intent(Box::new(intent))).await.map(drop)
    }

    /// Records an attempt; returns once it is stored, with its transition.
    pub(super) async fn record(&self, recording: Recording) -> Result<Transition, sqlx::Error> {
        match self.write(Write::Record(Box::new(recording))).await? {
            Written::Record(transition) => Ok(*transition),
            Written::Intent => unreachable!("a record's write gives back its transition"),
        }
    }

    async fn write(&self, write: Write) -> Result<Written, sqlx::Error> {
        let queue = match (&write, self.store.backend()) {
            (Write::Intent(_), Backend::Postgres) => &self.intents,
            _ => &self.records,
        };
        let queue = queue.get_or_init(|| {
            let (queue, writes) = mpsc::unbounded_channel();
            crate::tasks::spawn(run(self.store.clone(), writes));
            queue
        });
        let (done, result) = oneshot::channel();
        queue
            .send(Queued { write, done })
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // The writer ends only when the engine is dropped, after the queued writes.
        result.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Commits the queued writes in batches, until the engine drops its end of the queue.
async fn run(store: Store, mut writes: mpsc::UnboundedReceiver<Queued>) {
    let mut held_over = None;
    // The next batch's transaction, begun while the last batch committed.
    let mut begun = None;
    // The last batch of intents' connection, kept while more are queued.
    let mut unflushed = Unflushed::default();
    loop {
        let first = match held_over.take() {
            Some(first) => first,
            None => match writes.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut agents: HashSet<String> = first
            .write
            .recorded_agent()
            .map(str::to_owned)
            .into_iter()
            .collect();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = writes.try_recv() else {
                break;
            };
            if let Some(agent) = next.write.recorded_agent()
                && !agents.insert(agent.to_owned())
            {
                held_over = Some(next);
                break;
            }
            batch.push(next);
        }
        let more = || held_over.is_some() || !writes.is_empty();
        begun = commit(&store, batch, begun.take(), &mut unflushed, &more).await;
        if !more() {
            unflushed = Unflushed::default();
        }
    }
}

/// Commits `batch` in one transaction (`begun`, when the last batch began it; a batch
/// of intents alone on `unflushed`'s connection when it holds one) and answers each of
/// its writes. When `more` says writes are queued as it commits, a batch of records
/// begins the next batch's transaction on PostgreSQL meanwhile, and gives it back.
async fn commit(
    store: &Store,
    batch: Vec<Queued>,
    begun: Option<WriteTx>,
    unflushed: &mut Unflushed,
    more: &(dyn Fn() -> bool + Sync),
) -> Option<WriteTx> {
    let ahead = || store.backend() == Backend::Postgres && more();
    match write_batch(store, &batch, begun, unflushed, &ahead).await {
        Ok((written, next)) => {
            for (queued, written) in batch.into_iter().zip(written) {
                // A change no longer waiting has its write committed all the same.
                let _ = queued.done.send(Ok(written));
            }
            return next;
        }
        Err(error) if batch.len() > 1 && !is_unavailable(&error) => {
            tracing::debug!(%error, writes = batch.len(), "a grouped write failed; trying each alone");
            for queued in batch {
                let alone = write_batch(
                    store,
                    std::slice::from_ref(&queued),
                    None,
                    unflushed,
                    &|| false,
                );
                let result = alone.await;
                let _ = queued
                    .done
                    .send(result.map(|(mut written, _)| written.remove(0)));
            }
        }
        Err(error) => {
            // The first write gets the error itself, the others one standing for it.
            let mut batch = batch.into_iter();
            if let Some(first) = batch.next() {
                for queued in batch {
                    let _ = queued.done.send(Err(same_kind(&error)));
                }
                let _ = first.done.send(Err(error));
            }
        }
    }
    None
}

/// Writes `batch` in one transaction (`begun`, or one begun now), flushed to disk when
/// it records anything (a batch of intents only is not: see
/// [`Store::write_unflushed_on`], which keeps the connection in `unflushed` for the
/// next batch of intents). When `ahead` says so as it commits, a batch of records
/// begins the next batch's transaction meanwhile and gives it back with what it wrote:
/// that begin waits for the write lock this transaction holds, so it is done as soon as
/// the commit is, instead of a round trip after it.
async fn write_batch(
    store: &Store,
    batch: &[Queued],
    begun: Option<WriteTx>,
    unflushed: &mut Unflushed,
    ahead: &(dyn Fn() -> bool + Sync),
) -> Result<(Vec<Written>, Option<WriteTx>), sqlx::Error> {
    let mut intents: Vec<&IntentRow> = Vec::new();
    let mut recordings: Vec<&Recording> = Vec::new();
    for queued in batch {
        match &queued.write {
            Write::Intent(intent) => intents.push(intent),
            Write::Record(recording) => recordings.push(recording),
        }
    }
    if recordings.is_empty() {
        debug_assert!(begun.is_none(), "only records are begun ahead");
        store
            .write_unflushed_on(unflushed, intents::inserting_all(&intents))
            .await?;
        return Ok((batch.iter().map(|_| Written::Intent).collect(), None));
    }
    let mut tx = match begun {
        Some(tx) => tx,
        None => store.begin_records_write().await?,
    };
    let mut transitions = record::write_all(&mut tx, &intents, &recordings)
        .await?
        .into_iter();
    let (committed, next) = match ahead() {
        true => {
            let (committed, next) = tokio::join!(tx.commit(), store.begin_records_write());
            // A next batch that could not begin now begins as it would have: anew.
            (committed, next.ok())
        }
        false => (tx.commit().await, None),
    };
    if let Err(error) = committed {
        // Given back before anything else is tried: its write lock would keep out
        // every write of the batch tried again alone.
        if let Some(next) = next {
            next.rollback().await.ok();
        }
        return Err(error);
    }
    store.notify_outbox();
    let written = batch
        .iter()
        .map(|queued| match &queued.write {
            Write::Intent(_) => Written::Intent,
            Write::Record(_) => Written::Record(Box::new(
                transitions.next().expect("one transition per record"),
            )),
        })
        .collect();
    Ok((written, next))
}

/// An error standing for `error` to another write of its batch (sqlx's errors cannot be
/// cloned), said the same way and of the same kind to the engine: the database cannot
/// take writes now, or this instance no longer leads the tenant, or neither.
fn same_kind(error: &sqlx::Error) -> sqlx::Error {
    if is_not_leader(error) {
        sqlx::Error::Configuration(Box::new(NotLeader))
    } else if is_unavailable(error) {
        sqlx::Error::Io(std::io::Error::other(error.to_string()))
    } else {
        sqlx::Error::Protocol(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;

    use super::super::record::Record;
    use super::super::tests::request;
    use super::super::{Change, Changed, EngineError, FailureKind, Outcome, TransitionEngine};
    use super::*;
    use crate::cxone::fake::FakePlatform;
    use crate::domain::{AgentState, Schedule, ScheduleStatus};
    use crate::store::testing::{backends, temp_store_on};
    use crate::store::{execute, fetch_scalar};
    use rstest_reuse::apply;

    fn on_shift() -> Schedule {
        let now = Utc::now();
        Schedule {
            status: ScheduleStatus::Active,
            timezone: None,
            shift_start: Some(now - chrono::Duration::hours(2)),
            shift_end: Some(now + chrono::Duration::hours(6)),
            breaks: Some(vec![]),
            activities: Vec::new(),
        }
    }

    const AGENTS: [&str; 6] = ["u_001", "u_002", "u_003", "u_004", "u_005", "u_006"];

    async fn engine_on(
        backend: Backend,
    ) -> (Arc<TransitionEngine>, Arc<FakePlatform>, tempfile::TempDir) {
        let platform = Arc::new(FakePlatform::default());
        for agent in AGENTS {
            platform.add_agent(agent, on_shift());
        }
        let (store, dir) = temp_store_on(backend).await;
        let engine = TransitionEngine::new(store, platform.clone(), Duration::from_secs(30));
        (Arc::new(engine), platform, dir)
    }

    async fn change_all(engine: &TransitionEngine) -> Vec<Result<Changed, EngineError>> {
        futures::future::join_all(
            AGENTS.map(|agent| engine.change(Change::from(request(agent, AgentState::NotReady)))),
        )
        .await
    }

    async fn count(store: &Store, table: &str) -> i64 {
        fetch_scalar!(
            store.reader(),
            one,
            sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))
        )
        .unwrap()
    }

    #[tokio::test]
    async fn changes_in_flight_together_share_their_commits() {
        let (engine, platform, _dir) = engine_on(Backend::Sqlite).await;
        let store = engine.store().clone();
        // The write turn taken, as by another writer: the changes' intents queue meanwhile.
        let held = store.begin_write().await.unwrap();
        let begun = store.writes_begun();
        let changes = crate::tasks::spawn({
            let engine = Arc::clone(&engine);
            async move { change_all(&engine).await }
        });
        crate::store::testing::eventually("no write waited for the turn", async || {
            store.writes_waiting() > 0
        })
        .await;
        held.rollback().await.unwrap();
        for changed in changes.await.unwrap() {
            assert_eq!(changed.unwrap().made().outcome, Outcome::Succeeded);
        }
        assert_eq!(platform.calls("set"), AGENTS.len());
        let transactions = store.writes_begun() - begun;
        // One each for the intents and for the records when all go together; alone,
        // two per change (12).
        assert!(
            transactions <= 4,
            "{transactions} write transactions for 6 changes"
        );
        assert_eq!(count(&store, "transition_attempts").await, 6);
        assert_eq!(count(&store, "transition_intents").await, 0);
        assert_eq!(count(&store, "outbox_events").await, 6);
        let verified = crate::store::audit::verify(store.reader()).await.unwrap();
        assert!(verified.is_intact(), "{verified:?}");
    }

    /// Every write of a change's record takes effect, on PostgreSQL sent as one
    /// statement (see `store::batched`): the intents gone, the attempts, their audit
    /// entries (chained), the events and the agents' new intervals there.
    #[apply(backends)]
    #[tokio::test]
    async fn a_batch_of_records_leaves_every_row_of_each(backend: Backend) {
        let (engine, _platform, _dir) = engine_on(backend).await;
        let store = engine.store().clone();
        for changed in change_all(&engine).await {
            assert_eq!(changed.unwrap().made().outcome, Outcome::Succeeded);
        }
        assert_eq!(count(&store, "transition_intents").await, 0);
        assert_eq!(count(&store, "transition_attempts").await, 6);
        assert_eq!(count(&store, "outbox_events").await, 6);
        let open: i64 = fetch_scalar!(
            store.reader(),
            one,
            "SELECT COUNT(*) FROM state_intervals
             WHERE ended_at IS NULL AND state = 'NOT_READY' AND attempt_id IS NOT NULL"
        )
        .unwrap();
        assert_eq!(open, 6);
        let verified = crate::store::audit::verify(store.reader()).await.unwrap();
        assert!(verified.is_intact(), "{verified:?}");
        assert_eq!(verified.entries, 6, "{verified:?}");
    }

    /// Makes every commit that stored a row in `table` fail as a full disk does
    /// (PostgreSQL's deferred constraint triggers run at the commit); the trigger is
    /// `full_disk`.
    async fn commits_to_fail_as_on_a_full_disk(store: &Store, table: &str) {
        let mut tx = store.begin_write().await.unwrap();
        execute!(
            &mut tx,
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                   USING ERRCODE = '53100'; END $$"
        )
        .unwrap();
        execute!(
            &mut tx,
            sqlx::AssertSqlSafe(format!(
                "CREATE CONSTRAINT TRIGGER full_disk AFTER INSERT ON {table}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION disk_full()"
            ))
        )
        .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_whose_commit_fails_fails_every_change_in_it_and_sends_none() {
        let (engine, platform, _dir) = engine_on(Backend::Postgres).await;
        let store = engine.store().clone();
        commits_to_fail_as_on_a_full_disk(&store, "transition_intents").await;

        for changed in change_all(&engine).await {
            match changed {
                Err(EngineError::Store(error)) => assert!(is_unavailable(&error), "{error}"),
                other => panic!("expected the database's refusal, got {other:?}"),
            }
        }
        assert_eq!(platform.calls("set"), 0, "nothing was sent");
        assert_eq!(count(&store, "transition_intents").await, 0);
        assert_eq!(count(&store, "transition_attempts").await, 0);

        let mut tx = store.begin_write().await.unwrap();
        execute!(&mut tx, "DROP TRIGGER full_disk ON transition_intents").unwrap();
        tx.commit().await.unwrap();
        for changed in change_all(&engine).await {
            assert_eq!(changed.unwrap().made().outcome, Outcome::Succeeded);
        }
        assert_eq!(platform.calls("set"), AGENTS.len());
    }

    fn failed(agent: &str, attempt_id: &str) -> Recording {
        Recording {
            outcome: Outcome::Failed {
                kind: FailureKind::PlatformUnavailable,
                error: "down".into(),
            },
            ..made(agent, AgentState::NotReady, attempt_id)
        }
    }

    /// The record of a change to `target` the platform made.
    fn made(agent: &str, target: AgentState, attempt_id: &str) -> Recording {
        let now = Utc::now();
        Recording {
            record: Record {
                attempt_id: attempt_id.into(),
                request: request(agent, target),
                reason: "BREAK".into(),
                latency_ms: 1,
                requested_at: now,
                completed_at: now,
                source: None,
                late: false,
                deferred: None,
            },
            outcome: Outcome::Succeeded,
            changed_at: None,
        }
    }

    /// Two records of one agent queued together go in two batches, the second begun on
    /// PostgreSQL while the first commits (writes were queued as it did). The second
    /// waits for the first's write lock, so it reads the interval the first opened.
    #[apply(backends)]
    #[tokio::test]
    async fn a_batch_begun_while_the_last_commits_reads_what_that_one_wrote(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let writes = GroupCommit::new(store.clone());
        let (first, second) = futures::future::join(
            writes.record(made("u_001", AgentState::NotReady, "att_1")),
            writes.record(made("u_001", AgentState::Ready, "att_2")),
        )
        .await;
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.from, None, "no interval before the first");
        assert_eq!(
            second.from,
            Some(AgentState::NotReady),
            "the first's interval"
        );
        let open: Vec<String> = fetch_scalar!(
            store.reader(),
            all,
            "SELECT state FROM state_intervals WHERE ended_at IS NULL"
        )
        .unwrap();
        assert_eq!(open, ["READY"]);
        let verified = crate::store::audit::verify(store.reader()).await.unwrap();
        assert!(verified.is_intact(), "{verified:?}");
        assert_eq!(verified.entries, 2);
    }

    /// A batch whose commit fails while the next one's transaction was begun gives that
    /// back (it holds the write lock): the next batch, and any other write, still gets
    /// the lock.
    #[tokio::test]
    async fn a_commit_that_fails_gives_back_the_next_batchs_transaction_begun_meanwhile() {
        let (store, _dir) = temp_store_on(Backend::Postgres).await;
        commits_to_fail_as_on_a_full_disk(&store, "transition_attempts").await;
        let writes = GroupCommit::new(store.clone());
        let (first, second) = futures::future::join(
            writes.record(made("u_001", AgentState::NotReady, "att_1")),
            writes.record(made("u_001", AgentState::Ready, "att_2")),
        )
        .await;
        for refused in [first.unwrap_err(), second.unwrap_err()] {
            assert!(is_unavailable(&refused), "{refused}");
        }
        let taking = async {
            let mut tx = store.begin_write().await.unwrap();
            execute!(&mut tx, "DROP TRIGGER full_disk ON transition_attempts").unwrap();
            tx.commit().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), taking)
            .await
            .expect("the write lock was never given back");
        let third = writes
            .record(made("u_001", AgentState::Ready, "att_3"))
            .await;
        assert_eq!(third.unwrap().outcome, Outcome::Succeeded);
    }

    #[tokio::test]
    async fn a_write_its_batch_cannot_take_fails_alone_and_leaves_nothing_of_itself() {
        let (store, _dir) = temp_store_on(Backend::Sqlite).await;
        let writes = GroupCommit::new(store.clone());
        // An attempt of the same id is there already: this record's insert fails.
        writes.record(failed("u_001", "att_taken")).await.unwrap();
        let entries = count(&store, "audit_log").await;
        let held = store.begin_write().await.unwrap();
        let recorded = futures::future::join3(
            writes.record(failed("u_002", "att_2")),
            writes.record(failed("u_003", "att_taken")),
            async {
                // Released once the three are queued, so they go in one batch: asked at
                // every turn of the runtime, not every 20 ms, as they queue at once.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while store.writes_waiting() == 0 {
                    assert!(tokio::time::Instant::now() < deadline, "no write queued");
                    tokio::task::yield_now().await;
                }
                held.rollback().await.unwrap();
                writes.record(failed("u_004", "att_4")).await
            },
        )
        .await;
        assert!(recorded.0.is_ok() && recorded.2.is_ok(), "{recorded:?}");
        let refused = recorded.1.unwrap_err();
        assert!(!is_unavailable(&refused), "{refused}");
        assert_eq!(count(&store, "transition_attempts").await, 3);
        assert_eq!(
            count(&store, "audit_log").await,
            entries + 2,
            "no audit entry of the refused record"
        );
    }
}
