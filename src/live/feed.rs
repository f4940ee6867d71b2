//! One client's feed: where it starts, what it is owed, how it keeps up, and its
//! place in its caller's share of streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Live;
use super::encode::Message;
use super::rest::Watching;
use super::tickets::Crowded;
use super::view::Tiles;
use crate::caller_slots::CallerSlot;
use crate::store::outbox;
use crate::telemetry::names::{
    LIVE_CLIENTS, LIVE_CLIENTS_DROPPED_TOTAL, LIVE_RESUMES_TOTAL, LIVE_RESYNCS_TOTAL,
};

/// A resume further back than this many events gets a snapshot instead (cheaper to
/// send, and the page redraws from it anyway).
pub const MAX_REPLAY: i64 = 5000;

/// Resyncs within [`STRIKE_WINDOW`] after which a client is closed instead.
const MAX_STRIKES: u32 = 3;
const STRIKE_WINDOW: Duration = Duration::from_secs(60);

/// Where a client starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A snapshot first.
    Fresh,
    /// Only what came after this event id (a snapshot when it is unknown or too old).
    After(String),
}

impl Live {
    /// A place for one more stream of `caller` (a token's name, or a client address),
    /// held until the [`CallerSlot`] is dropped; refused once the caller holds
    /// `max_streams_per_caller`, so one caller cannot take every connection the server
    /// has for wallboards.
    pub fn open_stream(&self, caller: &str) -> Result<CallerSlot, Crowded> {
        let streams = &self.inner.streams;
        streams.take(caller).ok_or(Crowded::CallerStreams {
            max: streams.per_caller(),
        })
    }

    /// A new client's feed from `start`. The feed's loops read at a watched feed's pace
    /// from now on, and a feed nobody watched catches up before the client's first
    /// message ([`Live::catch_up`]).
    pub async fn subscribe(&self, start: Start) -> Result<Feed, sqlx::Error> {
        // The first after a spell of nobody watching is sent what is current now, not
        // what the feed's last read, however recent, saw.
        self.catch_up_unless_fresh(self.watched()).await;
        let (receiver, version, head_seq, first) = {
            let mut state = self.lock();
            let receiver = self.inner.sender.subscribe();
            let first = match start {
                Start::Fresh => Some(self.snapshot_message(&mut state).0),
                Start::After(_) => None,
            };
            (receiver, state.version, state.head_seq, first)
        };
        // Counted once it receives: the loops that wake for a first client (job progress,
        // adherence rows) publish what it was not sent.
        let watching = self.watch();
        let mut feed = Feed {
            live: self.clone(),
            receiver,
            pending: VecDeque::new(),
            after_version: version,
            after_seq: head_seq,
            strikes: VecDeque::new(),
            closed: false,
            _watching: watching,
        };
        metrics::gauge!(LIVE_CLIENTS).increment(1.0);
        match (start, first) {
            (_, Some(snapshot)) => feed.pending.push_back(snapshot),
            (Start::After(id), None) => match outbox::seq_of(self.pool(), &id).await? {
                Some(seq) if head_seq - seq <= MAX_REPLAY => {
                    // The board may have changed while the client was away; it is not
                    // durable, so the current one is sent first.
                    let board = self.lock().board.clone();
                    feed.pending.push_back(Message::transient(
                        0,
                        self.tenant(),
                        "metrics",
                        Tiles::of(&board),
                    ));
                    if seq < head_seq {
                        let rows = outbox::after(self.pool(), seq, head_seq - seq).await?;
                        feed.pending.extend(
                            rows.iter()
                                .filter(|r| r.seq <= head_seq)
                                .map(|r| Message::durable(0, self.tenant(), r)),
                        );
                    }
                    feed.after_seq = seq.max(head_seq);
                    metrics::counter!(LIVE_RESUMES_TOTAL, "outcome" => "replayed").increment(1);
                }
                _ => {
                    metrics::counter!(LIVE_RESUMES_TOTAL, "outcome" => "snapshot").increment(1);
                    feed.resync();
                }
            },
            (Start::Fresh, None) => unreachable!("a fresh start has its snapshot"),
        }
        Ok(feed)
    }
}

/// One client's view of the feed: what it is owed first (a snapshot or the events it
/// missed), then every published message in order.
pub struct Feed {
    live: Live,
    receiver: broadcast::Receiver<Arc<Message>>,
    pending: VecDeque<Message>,
    /// Published messages up to this version are already in what was sent.
    after_version: u64,
    /// Durable events up to this outbox sequence were sent (or predate the client).
    after_seq: i64,
    /// When this client was last resynced, to close one that keeps falling behind.
    strikes: VecDeque<Instant>,
    closed: bool,
    /// Counts this client among the feed's watchers while it lives.
    _watching: Watching,
}

/// What one message received from the ring means for a client.
enum Step {
    Send(Message),
    /// Already sent (or covered by what was), or the client was resynced: look again.
    Skip,
    End,
}

impl Feed {
    /// The next message for this client; `None` when the feed is over (the daemon
    /// stops, or the client was closed after a `close` message).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.ready() {
                return Some(message);
            }
            if self.closed {
                return None;
            }
            let received = tokio::select! {
                () = self.live.inner.stop.cancelled() => return None,
                received = self.receiver.recv() => received,
            };
            match self.step(received) {
                Step::Send(message) => return Some(message),
                Step::Skip => {}
                Step::End => return None,
            }
        }
    }

    /// The next message if one is ready now, without waiting: a transport writes every
    /// ready message together.
    pub fn ready(&mut self) -> Option<Message> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            if self.closed || self.live.inner.stop.is_cancelled() {
                return None;
            }
            let received = match self.receiver.try_recv() {
                Ok(message) => Ok(message),
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            };
            match self.step(received) {
                Step::Send(message) => return Some(message),
                Step::Skip => {}
                Step::End => return None,
            }
        }
    }

    fn step(&mut self, received: Result<Arc<Message>, broadcast::error::RecvError>) -> Step {
        match received {
            Ok(message) => {
                if message.version <= self.after_version {
                    return Step::Skip;
                }
                if let Some(seq) = message.seq {
                    if seq <= self.after_seq {
                        return Step::Skip;
                    }
                    self.after_seq = seq;
                }
                // A copy of its reference-counted parts while other clients hold it.
                Step::Send(Arc::unwrap_or_clone(message))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let now = Instant::now();
                self.strikes.retain(|at| now - *at < STRIKE_WINDOW);
                self.strikes.push_back(now);
                if self.strikes.len() as u32 > MAX_STRIKES {
                    metrics::counter!(LIVE_CLIENTS_DROPPED_TOTAL).increment(1);
                    tracing::info!(missed, "a live client kept falling behind; closed");
                    self.closed = true;
                    return Step::Send(Message::close(
                        self.live.tenant(),
                        "too slow: fell behind the feed repeatedly; reconnect",
                    ));
                }
                metrics::counter!(LIVE_RESYNCS_TOTAL).increment(1);
                tracing::debug!(missed, "a live client fell behind; sent a fresh snapshot");
                self.resync();
                Step::Skip
            }
            Err(broadcast::error::RecvError::Closed) => Step::End,
        }
    }

    /// Queues a fresh snapshot and skips every message it already covers.
    fn resync(&mut self) {
        let mut state = self.live.lock();
        let (snapshot, _) = self.live.snapshot_message(&mut state);
        self.after_version = state.version;
        self.after_seq = state.head_seq;
        // Start again at the ring's head: what it still holds is in the snapshot, and
        // reading it would only race the next sends into another lag.
        self.receiver = self.receiver.resubscribe();
        drop(state);
        self.pending.clear();
        self.pending.push_back(snapshot);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        metrics::gauge!(LIVE_CLIENTS).decrement(1.0);
    }
}
