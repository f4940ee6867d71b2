//! How a feed rests while nobody watches it on this instance: with no client stream
//! open, its loops read the database only when a first client arrives and on a slow
//! safety tick ([`IDLE_TICK`]); the commits announced meanwhile are left unread.
//! Whoever reads the in-memory snapshot without a stream (`GET /v1/live`,
//! `GET /v1/adherence/now`, a follower's `/readyz`) or opens one first has the feed
//! catch up ([`Live::catch_up`]) when its reads are older than a watched feed's would
//! be or a commit was announced since, so nobody is shown staler data than while
//! clients watch.
//!
//! At a thousand tenants on two instances the feeds' periodic reads (the outbox every
//! 2 s, the leader's board and roster every 2 s, bulk jobs every second) were about
//! 2–3 statements a second per tenant per instance, with nobody watching anywhere; and
//! under load, reading the outbox at every announced commit on both instances was
//! 11,582 reads in the fleet bench's 73 s, for nobody.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Live;
use crate::engine::metrics::BoardSender;

/// How often the outbox is read, while a client watches, even when no commit was
/// announced (another process, such as `wfmd transition`, wrote to the same database);
/// and how stale a reader may find the feed before it catches up.
pub(super) const FALLBACK_TICK: Duration = Duration::from_secs(2);

/// While nobody watches, how often the feed still reads what no announcement tells
/// it of.
pub(super) const IDLE_TICK: Duration = Duration::from_secs(60);

/// How long a reader of the snapshot waits for the feed to catch up before it is
/// served what the feed has (a swamped pool must not hold a page up).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// What the feed's loops and its readers share about the feed's reads.
pub(super) struct Rest {
    /// Client feeds open on this instance, and how many times one came while none was.
    watchers: watch::Sender<(usize, u64)>,
    /// Whether the store was loaded ([`Live::load`]); until then the outbox is not read.
    pub(super) loaded: AtomicBool,
    /// One outbox read at a time: a reader that waited for one finds it fresh.
    tail: tokio::sync::Mutex<()>,
    /// One read of the leader's shared figures at a time.
    leader: tokio::sync::Mutex<Leader>,
    /// When each last read began (whatever committed before is in it).
    tail_read_at: Mutex<Option<Instant>>,
    /// The outbox commits announced ([`crate::store::Store::outbox_commits`]) when the
    /// last read of the outbox began: a reader finds it fresh only while none came since.
    tail_read_commits: AtomicU64,
    leader_read_at: Mutex<Option<Instant>>,
}

/// On a follower, what it read of the leader's shared figures.
struct Leader {
    /// Where the board goes (set when the feed runs).
    board: Option<BoardSender>,
    board_at: i64,
    roster_at: i64,
}

impl Rest {
    pub(super) fn new() -> Rest {
        Rest {
            watchers: watch::Sender::new((0, 0)),
            loaded: AtomicBool::new(false),
            tail: tokio::sync::Mutex::new(()),
            leader: tokio::sync::Mutex::new(Leader {
                board: None,
                board_at: 0,
                roster_at: 0,
            }),
            tail_read_at: Mutex::new(None),
            tail_read_commits: AtomicU64::new(0),
            leader_read_at: Mutex::new(None),
        }
    }
}

/// One open client feed, counted while it lives.
pub(super) struct Watching(watch::Sender<(usize, u64)>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.send_modify(|(n, _)| *n -= 1);
    }
}

/// What a loop reads periodically.
#[derive(Clone, Copy)]
pub(super) enum ReadOf {
    Outbox,
    Leader,
}

fn fresh(at: Option<Instant>) -> bool {
    at.is_some_and(|at| at.elapsed() < FALLBACK_TICK)
}

impl Live {
    fn rest(&self) -> &Rest {
        &self.inner.rest
    }

    /// Counts one more client feed until the guard drops.
    pub(super) fn watch(&self) -> Watching {
        let watchers = self.rest().watchers.clone();
        watchers.send_modify(|(n, firsts)| {
            if *n == 0 {
                *firsts += 1;
            }
            *n += 1;
        });
        Watching(watchers)
    }

    /// Whether a client stream is open on this instance.
    pub(super) fn watched(&self) -> bool {
        self.rest().watchers.borrow().0 > 0
    }

    /// How many times a client came while none watched: a loop that saw another
    /// number last owes the newcomers what it did not publish meanwhile.
    pub(super) fn first_clients(&self) -> u64 {
        self.rest().watchers.borrow().1
    }

    /// Resolves once a client stream is open (at once when one is).
    pub(super) async fn watchers_come(&self) {
        let mut watchers = self.rest().watchers.subscribe();
        // The sender lives as long as the feed: this never fails while `self` is held.
        let _ = watchers.wait_for(|(n, _)| *n > 0).await;
    }

    /// When the last read of `source` began.
    fn read_at(&self, source: ReadOf) -> std::sync::MutexGuard<'_, Option<Instant>> {
        let cell = match source {
            ReadOf::Outbox => &self.rest().tail_read_at,
            ReadOf::Leader => &self.rest().leader_read_at,
        };
        cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn last_read(&self, source: ReadOf) -> Option<Instant> {
        *self.read_at(source)
    }

    fn record_read(&self, source: ReadOf, at: Instant) {
        let mut last = self.read_at(source);
        *last = Some(last.map_or(at, |last| last.max(at)));
    }

    /// Resolves when the loop reading `source` is due to read again: `tick` after its
    /// last try (`tried`) or the last read (a reader's catch-up counts) while a client
    /// watches, [`IDLE_TICK`] after it while none does (reckoned again when the first
    /// client comes or the last goes).
    pub(super) async fn tick_due(&self, source: ReadOf, tick: Duration, tried: Instant) {
        let mut watchers = self.rest().watchers.subscribe();
        loop {
            let period = if watchers.borrow_and_update().0 > 0 {
                tick
            } else {
                IDLE_TICK
            };
            let last = self.last_read(source).map_or(tried, |at| at.max(tried));
            let due = last + period;
            tokio::select! {
                () = tokio::time::sleep_until(due) => return,
                _ = watchers.changed() => {}
            }
        }
    }

    /// The tailer's read: loads the store if it was not (`load`: only the tailer tries
    /// that again), then publishes what the outbox holds after the last event
    /// published. With `unless_fresh`, nothing when a read began within
    /// [`FALLBACK_TICK`] and no commit was announced since (a reader catching up).
    pub(super) async fn read_outbox(&self, unless_fresh: bool, load: bool) {
        let _turn = self.rest().tail.lock().await;
        let commits = *self.inner.store.outbox_commits().borrow();
        if unless_fresh
            && fresh(self.last_read(ReadOf::Outbox))
            && self.rest().tail_read_commits.load(Ordering::Acquire) == commits
        {
            return;
        }
        let began = Instant::now();
        if load
            && !self.rest().loaded.load(Ordering::Acquire)
            && let Err(error) = self.load().await
        {
            tracing::warn!(%error, "the live feed cannot read the store");
        }
        if self.rest().loaded.load(Ordering::Acquire) {
            match self.poll_outbox().await {
                Ok(_) => {
                    self.record_read(ReadOf::Outbox, began);
                    self.rest()
                        .tail_read_commits
                        .store(commits, Ordering::Release);
                }
                Err(error) => tracing::warn!(%error, "the live feed cannot read the outbox"),
            }
        }
    }

    /// Where a follower puts the board the leader shares (the feed's and `/readyz`'s).
    pub(super) async fn set_board(&self, board: BoardSender) {
        self.rest().leader.lock().await.board = Some(board);
    }

    /// On a follower, reads the roster and board the leader shares, as they changed;
    /// nothing on the leader or a sole instance. With `unless_fresh`, nothing when a
    /// read began within [`FALLBACK_TICK`].
    pub(super) async fn read_leader(&self, unless_fresh: bool) {
        if !self.follows() {
            return;
        }
        let mut leader = self.rest().leader.lock().await;
        if unless_fresh && fresh(self.last_read(ReadOf::Leader)) {
            return;
        }
        let Leader {
            board,
            board_at,
            roster_at,
        } = &mut *leader;
        let Some(board) = board else {
            return;
        };
        let began = Instant::now();
        match self.read_shared(board, board_at, roster_at).await {
            Ok(()) => self.record_read(ReadOf::Leader, began),
            Err(error) => {
                tracing::warn!(%error, "the live feed cannot read the leader's wallboard figures");
            }
        }
    }

    /// Brings the snapshot up to date for a reader when the feed's reads are older than
    /// a watched feed's would be (nobody watched): the outbox and, on a follower, the
    /// leader's board and roster. Waits at most a second, then the reader is
    /// served what the feed has.
    pub async fn catch_up(&self) {
        self.catch_up_unless_fresh(true).await;
    }

    /// [`Live::catch_up`], or with `unless_fresh` false whatever the age of the last
    /// reads (a first client after nobody watched).
    pub(super) async fn catch_up_unless_fresh(&self, unless_fresh: bool) {
        let both = async {
            tokio::join!(
                self.read_outbox(unless_fresh, false),
                self.read_leader(unless_fresh)
            );
        };
        if tokio::time::timeout(CATCH_UP_WAIT, both).await.is_err() {
            tracing::debug!(
                "the live feed did not catch up in time; its snapshot is served as it is"
            );
        }
    }

    /// On a follower, brings the leader's board up to date for a reader of it
    /// (`/readyz`), as [`Live::catch_up`] does, without reading the outbox.
    pub async fn catch_up_board(&self) {
        let _ = tokio::time::timeout(CATCH_UP_WAIT, self.read_leader(true)).await;
    }
}

impl Rest {
    /// Marks the store loaded: the tailer reads the outbox after its head from now on.
    pub(super) fn loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }
}
