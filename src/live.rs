//! The live feed: one in-process source of what happens in wfmd, for any number of
//! wallboards and other watchers.
//!
//! - Durable events (agent state changed, transition rejected, adherence exception,
//!   bulk job completed) are read from the outbox in commit order whenever
//!   [`Store::outbox_commits`] moves (and on a slow fallback tick, for commits made by
//!   another process such as `wfmd transition`). They carry the outbox id, the same id
//!   the webhooks carry, so a client that reconnects with `Last-Event-ID` is sent
//!   exactly what it missed, read back from the outbox — across a restart too.
//! - Non-durable messages (bulk job progress, a new metric board) are published
//!   without ids: a reconnecting client gets the current board instead.
//! - [`Live`] holds the current snapshot (every managed agent with its state, the
//!   newest metric board) in memory; `/v1/live` and every new client read it from
//!   there. The roster (names, teams, skills) is refreshed on its own schedule, so
//!   nothing a client does ever causes a platform call.
//! - Each client reads through a bounded ring (`tokio::sync::broadcast`): sending never
//!   waits for a client, and a client that falls more than the ring behind is sent a
//!   fresh snapshot instead of what it missed; one that keeps falling behind is closed
//!   with a reason. Both are counted in `/metrics`.
//! - A thousand clients cost little: each message is rendered once (its JSON and its
//!   SSE block) and every client is sent the same bytes; commits close together are
//!   read from the outbox together ([`MIN_READ_GAP`]), so a client wakes once for them;
//!   one timer beats for every client.
//!
//! Tickets ([`Tickets`]) let a browser open the feed without putting its long-lived
//! token into a URL.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::api_tokens::Role;
use crate::config::live::MAX_TICKETS;
use crate::engine::bulk::{BulkJobs, JobView};
use crate::engine::metrics::{BoardReceiver, FamilyHealth, MetricBoard, QueueTile, SkillTile};
use crate::store::{Store, exceptions, from_ms, history, jobs, outbox};
use crate::time::rfc3339;

/// How the feed behaves; the service-level thresholds come from `[live]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A skill's service level at or above this is good (green).
    pub service_level_good: f64,
    /// At or above this (and below good) it is a warning (amber); below, bad (red).
    pub service_level_warning: f64,
    /// How often the pollers sample each family; the page greys a family out when its
    /// newest sample is older than twice this.
    pub skill_interval: Duration,
    pub queue_interval: Duration,
    /// Heartbeat (SSE comment, WebSocket ping and heartbeat frame) period.
    pub heartbeat: Duration,
    /// Messages a client may fall behind before it is cut over to a fresh snapshot.
    pub client_buffer: usize,
    /// How often the roster (names, teams, skills) is read again from the platform.
    pub roster_refresh: Duration,
    /// Whether the roster is read at all (`live.enabled`): without it the board shows
    /// the agents wfmd recorded a state for, by id, and the feed makes no platform call.
    pub roster: bool,
    /// The managed agents: these teams' and these agents, or everyone when both are
    /// empty (as state sync keeps them).
    pub teams: Vec<String>,
    pub agents: Vec<String>,
    /// The platform's queues are its skills (see [`Snapshot::queues_are_skills`]).
    pub queues_are_skills: bool,
    /// Streams one caller may hold open at once (`live.max_streams_per_caller`).
    pub max_streams_per_caller: usize,
    /// Unused tickets one caller may hold at once (`live.max_tickets_per_caller`).
    pub max_tickets_per_caller: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            service_level_good: 0.80,
            service_level_warning: 0.70,
            skill_interval: Duration::from_secs(30),
            queue_interval: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            client_buffer: 1024,
            roster_refresh: Duration::from_secs(300),
            roster: true,
            teams: Vec::new(),
            agents: Vec::new(),
            queues_are_skills: false,
            max_streams_per_caller: 2000,
            max_tickets_per_caller: 2000,
        }
    }
}

/// Events read from the outbox per query.
const OUTBOX_BATCH: i64 = 1000;

/// A resume further back than this many events gets a snapshot instead (cheaper to
/// send, and the page redraws from it anyway).
pub const MAX_REPLAY: i64 = 5000;

/// How often the outbox is read even when no commit was announced (another process,
/// such as `wfmd transition`, wrote to the same database).
const FALLBACK_TICK: Duration = Duration::from_secs(2);

/// The outbox is read at most this often while commits keep coming, so that each
/// client wakes for a batch of events rather than for each (at fifty changes a second
/// and a thousand clients, the wakes were what starved the engine). It bounds the
/// delay a batch adds.
const MIN_READ_GAP: Duration = Duration::from_millis(50);

/// How often running bulk jobs are looked at for progress.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// Resyncs within [`STRIKE_WINDOW`] after which a client is closed instead.
const MAX_STRIKES: u32 = 3;
const STRIKE_WINDOW: Duration = Duration::from_secs(60);

/// How long a ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// What a caller refused a stream is told to wait: streams end when screens close,
/// which nothing predicts.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(30);

/// An open adherence exception on an agent's card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ExceptionBadge {
    pub exception_id: String,
    /// `working_in_mandatory_break`, `logged_in_outside_shift`, `not_working_in_shift`.
    pub kind: String,
    /// When the deviation began.
    pub since: String,
}

/// One managed agent as the wallboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: String,
    /// `None` until the roster has been read from the platform.
    pub name: Option<String>,
    pub team_id: Option<String>,
    pub team: Option<String>,
    pub skills: Vec<String>,
    /// The recorded state (`None`: nothing recorded yet).
    pub state: Option<String>,
    pub reason: Option<String>,
    /// When the state began (RFC 3339).
    pub since: Option<String>,
    /// Who made the change: `rule`, `api`, `cli`, `bulk`, `observed`.
    pub origin: Option<String>,
    pub exceptions: Vec<ExceptionBadge>,
}

impl AgentView {
    fn unnamed(id: &str) -> AgentView {
        AgentView {
            id: id.to_owned(),
            name: None,
            team_id: None,
            team: None,
            skills: Vec::new(),
            state: None,
            reason: None,
            since: None,
            origin: None,
            exceptions: Vec::new(),
        }
    }
}

/// The skill and queue tiles with their families' health.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tiles {
    pub skills: Vec<SkillTile>,
    pub queues: Vec<QueueTile>,
    pub skills_health: FamilyHealth,
    pub queues_health: FamilyHealth,
    pub skills_polled_at: Option<DateTime<Utc>>,
    pub queues_polled_at: Option<DateTime<Utc>>,
}

impl Tiles {
    fn of(board: &MetricBoard) -> Tiles {
        Tiles {
            skills: board.skills.values().cloned().collect(),
            queues: board.queues.values().cloned().collect(),
            skills_health: board.skills_health.clone(),
            queues_health: board.queues_health.clone(),
            skills_polled_at: board.skills_polled_at,
            queues_polled_at: board.queues_polled_at,
        }
    }
}

/// The service-level colour thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Thresholds {
    pub good: f64,
    pub warning: f64,
}

/// Periods the page needs to tell fresh from stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Periods {
    pub heartbeat_secs: u64,
    pub skill_interval_secs: u64,
    pub queue_interval_secs: u64,
}

/// Everything a wallboard needs to draw itself; `GET /v1/live` and the first message
/// of every feed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub generated_at: String,
    /// The newest outbox event the snapshot includes; resume the feed from it.
    pub last_event_id: Option<String>,
    pub agents: Vec<AgentView>,
    /// Managed agents by recorded state (`UNKNOWN`: nothing recorded yet).
    pub counts: BTreeMap<String, usize>,
    #[serde(flatten)]
    pub tiles: Tiles,
    pub service_level: Thresholds,
    pub periods: Periods,
    /// The platform has no queue objects: its queue tiles are its skills' activity
    /// (the `incontact` dialect), which the page says.
    pub queues_are_skills: bool,
}

/// One message of the feed, rendered once for every transport and shared by every
/// client: a client's send is a reference-counted clone of these bytes, never a copy
/// or a serialization of its own.
#[derive(Debug, Clone)]
pub struct Message {
    /// The feed's own order: every published message has a larger one than the last.
    pub version: u64,
    /// The outbox sequence of a durable event.
    pub seq: Option<i64>,
    /// `snapshot`, `agent.state_changed`, `transition.rejected`, `adherence.exception`,
    /// `bulk.completed`, `bulk.progress`, `metrics`, `heartbeat` or `close`.
    pub kind: Arc<str>,
    /// The outbox id of a durable event (also given to a snapshot: the id it is current
    /// to, so a browser's resume point is right after it).
    pub id: Option<Arc<str>>,
    /// `{"type","id"?,"timestamp"?,"data"}`: for durable events, the webhook body. Also
    /// the WebSocket text frame, as it is.
    pub json: Utf8Bytes,
    /// The Server-Sent Events block: `event:`, `id:` and `data:` lines (a heartbeat is a
    /// comment line).
    pub sse: Bytes,
}

impl Message {
    fn new(version: u64, seq: Option<i64>, kind: &str, id: Option<&str>, json: String) -> Message {
        let sse = if kind == HEARTBEAT {
            Bytes::from_static(b": heartbeat\n\n")
        } else {
            sse_block(kind, id, &json)
        };
        Message {
            version,
            seq,
            kind: kind.into(),
            id: id.map(Arc::from),
            json: json.into(),
            sse,
        }
    }

    fn transient(version: u64, kind: &str, data: impl Serialize) -> Message {
        let json = json!({
            "type": kind,
            "timestamp": rfc3339(Utc::now()),
            "data": data,
        });
        Message::new(version, None, kind, None, json.to_string())
    }

    fn durable(version: u64, row: &outbox::EventRow) -> Message {
        Message::new(
            version,
            Some(row.seq),
            row.event_type.as_str(),
            Some(&row.id),
            row.payload.clone(),
        )
    }

    /// The heartbeat: an SSE comment, or a WebSocket ping and a `heartbeat` frame (a
    /// page's script cannot see pings).
    fn heartbeat(version: u64) -> Message {
        Message::transient(version, HEARTBEAT, Value::Null)
    }

    /// Whether this is the heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        &*self.kind == HEARTBEAT
    }

    /// The last message of a client that is closed, with the reason.
    fn close(reason: &str) -> Message {
        Message::transient(0, CLOSE, json!({ "reason": reason }))
    }

    /// The reason of a `close` message (`None` for any other).
    pub fn close_reason(&self) -> Option<String> {
        if &*self.kind != CLOSE {
            return None;
        }
        let body: Value = serde_json::from_str(&self.json).ok()?;
        Some(body["data"]["reason"].as_str()?.to_owned())
    }
}

const HEARTBEAT: &str = "heartbeat";
const CLOSE: &str = "close";

/// One Server-Sent Events block. axum's `Event` renders per client, and the feed's
/// point is that a message is rendered once; the format is three line kinds. JSON
/// written by serde has no raw line breaks, but a `data:` line per line keeps any
/// payload intact.
fn sse_block(kind: &str, id: Option<&str>, json: &str) -> Bytes {
    let mut block = String::with_capacity(json.len() + kind.len() + 64);
    block.push_str("event: ");
    block.push_str(kind);
    block.push('\n');
    if let Some(id) = id {
        block.push_str("id: ");
        block.push_str(id);
        block.push('\n');
    }
    for line in json.split('\n') {
        block.push_str("data: ");
        block.push_str(line.strip_suffix('\r').unwrap_or(line));
        block.push('\n');
    }
    block.push('\n');
    Bytes::from(block)
}

/// The in-memory state the snapshot is made of.
struct State {
    agents: BTreeMap<String, AgentView>,
    /// Whether the roster was read; until then every agent with a recorded state shows.
    roster_loaded: bool,
    board: Arc<MetricBoard>,
    head_seq: i64,
    last_event_id: Option<String>,
    version: u64,
    /// The serialized snapshot message and the snapshot's own JSON text, until what
    /// the snapshot shows changes (heartbeats and job progress leave it valid).
    cached: Option<(Message, Bytes)>,
}

struct Inner {
    store: Store,
    settings: Settings,
    state: Mutex<State>,
    sender: broadcast::Sender<Message>,
    tickets: Tickets,
    /// Open streams by caller.
    streams: Mutex<HashMap<Arc<str>, usize>>,
    stop: CancellationToken,
}

/// The live feed. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

/// Where a client starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A snapshot first.
    Fresh,
    /// Only what came after this event id (a snapshot when it is unknown or too old).
    After(String),
}

impl Live {
    /// An empty feed over `store`; call [`Live::load`] (or [`Live::run`]) to fill it.
    pub fn new(store: Store, settings: Settings) -> Live {
        let (sender, _) = broadcast::channel(settings.client_buffer.max(16));
        let tickets = Tickets::new(settings.max_tickets_per_caller);
        Live {
            inner: Arc::new(Inner {
                store,
                settings,
                state: Mutex::new(State {
                    agents: BTreeMap::new(),
                    roster_loaded: false,
                    board: Arc::new(MetricBoard::default()),
                    head_seq: 0,
                    last_event_id: None,
                    version: 0,
                    cached: None,
                }),
                sender,
                tickets,
                streams: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn tickets(&self) -> &Tickets {
        &self.inner.tickets
    }

    /// A place for one more stream of `caller` (a token's name, or a client address),
    /// held until the [`StreamSlot`] is dropped; refused once the caller holds
    /// `max_streams_per_caller`, so one caller cannot take every connection the server
    /// has for wallboards.
    pub fn open_stream(&self, caller: &str) -> Result<StreamSlot, Crowded> {
        let max = self.inner.settings.max_streams_per_caller;
        let mut streams = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        let key: Arc<str> = match streams.get_key_value(caller) {
            Some((_, &open)) if open >= max => {
                return Err(Crowded::CallerStreams { max });
            }
            Some((key, _)) => key.clone(),
            None => caller.into(),
        };
        *streams.entry(key.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            live: self.clone(),
            caller: key,
        })
    }

    fn pool(&self) -> &SqlitePool {
        self.inner.store.reader()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the outbox head, the recorded states and the open exceptions from the
    /// store. Events committed meanwhile are applied again by the tailer, which is
    /// harmless: applying an event sets what it says, so doing it twice changes nothing.
    pub async fn load(&self) -> Result<(), sqlx::Error> {
        let head = head(self.pool()).await?;
        let intervals = all_open_intervals(self.pool()).await?;
        let open = exceptions::open(self.pool()).await?;
        let mut state = self.lock();
        if let Some((seq, id)) = head {
            state.head_seq = seq;
            state.last_event_id = Some(id);
        }
        let roster_loaded = state.roster_loaded;
        for row in intervals {
            let agent = match state.agents.get_mut(&row.agent_id) {
                Some(agent) => agent,
                None if roster_loaded => continue,
                None => state
                    .agents
                    .entry(row.agent_id.clone())
                    .or_insert_with(|| AgentView::unnamed(&row.agent_id)),
            };
            agent.state = Some(row.state.clone());
            agent.reason = row.reason.clone();
            agent.since = Some(rfc3339(from_ms(row.started_at)));
            agent.origin = Some(row.origin.clone());
        }
        for agent in state.agents.values_mut() {
            agent.exceptions.clear();
        }
        for row in open {
            if let Some(agent) = state.agents.get_mut(&row.agent_id) {
                agent.exceptions.push(ExceptionBadge {
                    exception_id: row.id,
                    kind: row.kind,
                    since: rfc3339(from_ms(row.started_at)),
                });
            }
        }
        state.version += 1;
        state.cached = None;
        self.republish(&mut state);
        Ok(())
    }

    /// Sends the current snapshot to every client: after a (re)load or a new roster the
    /// board changed in ways no single event describes, and a page that connected
    /// before (an empty board, agents without names) must not keep it until it
    /// reconnects.
    fn republish(&self, state: &mut State) {
        let (message, _) = self.snapshot_message(state);
        let _ = self.inner.sender.send(message);
    }

    /// Replaces the roster (from the platform's agent list): managed agents keep their
    /// recorded state; agents no longer managed leave the board.
    pub async fn set_roster(&self, agents: &[crate::cxone::Agent]) -> Result<(), sqlx::Error> {
        let s = &self.inner.settings;
        let managed: Vec<&crate::cxone::Agent> = agents
            .iter()
            .filter(|a| {
                (s.teams.is_empty() && s.agents.is_empty())
                    || s.agents.contains(&a.id)
                    || a.team_id.as_ref().is_some_and(|t| s.teams.contains(t))
            })
            .collect();
        let ids: Vec<&str> = managed.iter().map(|a| a.id.as_str()).collect();
        let mut conn = self.pool().acquire().await?;
        let intervals = history::open_intervals(&mut conn, &ids).await?;
        drop(conn);
        let open = exceptions::open(self.pool()).await?;
        let mut state = self.lock();
        let mut next = BTreeMap::new();
        for agent in managed {
            let mut view = state
                .agents
                .remove(&agent.id)
                .unwrap_or_else(|| AgentView::unnamed(&agent.id));
            view.name = Some(agent.name.clone());
            view.team_id = agent.team_id.clone();
            view.team = agent.team_name.clone();
            view.skills = agent.skills.clone();
            if view.state.is_none()
                && let Some(row) = intervals.get(&agent.id)
            {
                view.state = Some(row.state.clone());
                view.reason = row.reason.clone();
                view.since = Some(rfc3339(from_ms(row.started_at)));
                view.origin = Some(row.origin.clone());
                view.exceptions = open
                    .iter()
                    .filter(|e| e.agent_id == agent.id)
                    .map(|e| ExceptionBadge {
                        exception_id: e.id.clone(),
                        kind: e.kind.clone(),
                        since: rfc3339(from_ms(e.started_at)),
                    })
                    .collect();
            }
            next.insert(agent.id.clone(), view);
        }
        state.agents = next;
        state.roster_loaded = true;
        state.version += 1;
        state.cached = None;
        self.republish(&mut state);
        Ok(())
    }

    /// Reads and publishes every outbox event after the last one published; returns how
    /// many. The tailer's step, callable from tests.
    pub async fn poll_outbox(&self) -> Result<usize, sqlx::Error> {
        let mut published = 0;
        loop {
            let after = self.lock().head_seq;
            let rows = outbox::after(self.pool(), after, OUTBOX_BATCH).await?;
            let count = rows.len();
            if count == 0 {
                return Ok(published);
            }
            let mut state = self.lock();
            for row in rows {
                // Another caller of `poll_outbox` may have published it meanwhile.
                if row.seq <= state.head_seq {
                    continue;
                }
                apply(&mut state, &row);
                state.head_seq = row.seq;
                state.last_event_id = Some(row.id.clone());
                state.version += 1;
                state.cached = None;
                let message = Message::durable(state.version, &row);
                // No receiver is not an error: nobody watches right now.
                let _ = self.inner.sender.send(message);
                published += 1;
            }
            drop(state);
            metrics::counter!("wfmd_live_events_total").increment(published as u64);
            if count < OUTBOX_BATCH as usize {
                return Ok(published);
            }
        }
    }

    /// Publishes a new metric board.
    pub fn publish_board(&self, board: Arc<MetricBoard>) {
        let mut state = self.lock();
        state.version += 1;
        state.cached = None;
        let message = Message::transient(state.version, "metrics", Tiles::of(&board));
        state.board = board;
        let _ = self.inner.sender.send(message);
    }

    /// Publishes a bulk job's progress (not durable: `bulk.completed` is).
    pub fn publish_progress(&self, job: &JobView) {
        let mut state = self.lock();
        state.version += 1;
        let message = Message::transient(state.version, "bulk.progress", job);
        let _ = self.inner.sender.send(message);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        self.build_snapshot(&state)
    }

    fn build_snapshot(&self, state: &State) -> Snapshot {
        let s = &self.inner.settings;
        let mut counts = BTreeMap::new();
        for agent in state.agents.values() {
            let key = agent.state.clone().unwrap_or_else(|| "UNKNOWN".to_owned());
            *counts.entry(key).or_insert(0) += 1;
        }
        Snapshot {
            generated_at: rfc3339(Utc::now()),
            last_event_id: state.last_event_id.clone(),
            agents: state.agents.values().cloned().collect(),
            counts,
            tiles: Tiles::of(&state.board),
            service_level: Thresholds {
                good: s.service_level_good,
                warning: s.service_level_warning,
            },
            periods: Periods {
                heartbeat_secs: s.heartbeat.as_secs(),
                skill_interval_secs: s.skill_interval.as_secs(),
                queue_interval_secs: s.queue_interval.as_secs(),
            },
            queues_are_skills: s.queues_are_skills,
        }
    }

    /// The snapshot as a feed message and as its own JSON text, serialized once per
    /// change of state however many clients ask.
    fn snapshot_message(&self, state: &mut State) -> (Message, Bytes) {
        if let Some(cached) = &state.cached {
            return cached.clone();
        }
        let snapshot = self.build_snapshot(state);
        let data = serde_json::to_string(&snapshot).expect("a snapshot serializes");
        let json = format!(
            r#"{{"type":"snapshot","id":{},"timestamp":"{}","data":{data}}}"#,
            serde_json::to_string(&snapshot.last_event_id).expect("an id serializes"),
            snapshot.generated_at,
        );
        let message = Message::new(
            state.version,
            None,
            "snapshot",
            state.last_event_id.as_deref(),
            json,
        );
        let cached = (message, Bytes::from(data));
        state.cached = Some(cached.clone());
        cached
    }

    /// The snapshot, serialized (`GET /v1/live`).
    pub fn snapshot_json(&self) -> Bytes {
        let mut state = self.lock();
        self.snapshot_message(&mut state).1
    }

    /// A new client's feed from `start`.
    pub async fn subscribe(&self, start: Start) -> Result<Feed, sqlx::Error> {
        let (receiver, version, head_seq, first) = {
            let mut state = self.lock();
            let receiver = self.inner.sender.subscribe();
            let first = match start {
                Start::Fresh => Some(self.snapshot_message(&mut state).0),
                Start::After(_) => None,
            };
            (receiver, state.version, state.head_seq, first)
        };
        let mut feed = Feed {
            live: self.clone(),
            receiver,
            pending: VecDeque::new(),
            after_version: version,
            after_seq: head_seq,
            strikes: VecDeque::new(),
            closed: false,
        };
        metrics::gauge!("wfmd_live_clients").increment(1.0);
        match (start, first) {
            (_, Some(snapshot)) => feed.pending.push_back(snapshot),
            (Start::After(id), None) => match seq_of(self.pool(), &id).await? {
                Some(seq) if head_seq - seq <= MAX_REPLAY => {
                    // The board may have changed while the client was away; it is not
                    // durable, so the current one is sent first.
                    let board = self.lock().board.clone();
                    feed.pending
                        .push_back(Message::transient(0, "metrics", Tiles::of(&board)));
                    if seq < head_seq {
                        let rows = outbox::after(self.pool(), seq, head_seq - seq).await?;
                        feed.pending.extend(
                            rows.iter()
                                .filter(|r| r.seq <= head_seq)
                                .map(|r| Message::durable(0, r)),
                        );
                    }
                    feed.after_seq = seq.max(head_seq);
                    metrics::counter!("wfmd_live_resumes_total", "outcome" => "replayed")
                        .increment(1);
                }
                _ => {
                    metrics::counter!("wfmd_live_resumes_total", "outcome" => "snapshot")
                        .increment(1);
                    feed.resync();
                }
            },
            (Start::Fresh, None) => unreachable!("a fresh start has its snapshot"),
        }
        Ok(feed)
    }

    /// Runs the feed until `stop`: loads the state, tails the outbox, follows the
    /// metric board, publishes bulk job progress and refreshes the roster.
    pub async fn run(self, stop: CancellationToken, board: BoardReceiver, bulk: Option<BulkJobs>) {
        // Feeds end with the daemon, so open streams do not hold the shutdown up.
        let feeds_stop = self.inner.stop.clone();
        // The store is read before the roster is asked for, so the roster's snapshot is
        // the last one a client sees at startup.
        let loaded = match self.load().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the live feed cannot read the store");
                false
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().tail(stop.clone(), loaded));
        tasks.spawn(self.clone().beat(stop.clone()));
        tasks.spawn(self.clone().follow_board(stop.clone(), board));
        if let Some(bulk) = bulk {
            tasks.spawn(self.clone().follow_jobs(stop.clone(), bulk.clone()));
            if self.inner.settings.roster {
                tasks.spawn(self.clone().keep_roster(stop.clone(), bulk));
            }
        }
        stop.cancelled().await;
        feeds_stop.cancel();
        while tasks.join_next().await.is_some() {}
    }

    /// Publishes the heartbeat to every client at once: one timer for the feed rather
    /// than one per client, which under a thousand clients and fifty events a second
    /// was a timer reset per event per client.
    fn beat(self, stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        // The period counts from the call, not from the task's first turn.
        let period = self.inner.settings.heartbeat;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => self.publish_heartbeat(),
                }
            }
        }
    }

    /// Publishes a heartbeat now.
    pub fn publish_heartbeat(&self) {
        let mut state = self.lock();
        state.version += 1;
        let _ = self.inner.sender.send(Message::heartbeat(state.version));
    }

    async fn tail(self, stop: CancellationToken, mut loaded: bool) {
        let mut commits = self.inner.store.outbox_commits();
        loop {
            let read_at = Instant::now();
            if !loaded {
                match self.load().await {
                    Ok(()) => loaded = true,
                    Err(error) => tracing::warn!(%error, "the live feed cannot read the store"),
                }
            }
            if loaded && let Err(error) = self.poll_outbox().await {
                tracing::warn!(%error, "the live feed cannot read the outbox");
            }
            // Commits made meanwhile are read together next time: every client is woken
            // once for all of them instead of once per event. The first commit after a
            // quiet spell goes out at once.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(read_at + MIN_READ_GAP) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = commits.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(FALLBACK_TICK) => {}
            }
        }
    }

    async fn follow_board(self, stop: CancellationToken, mut board: BoardReceiver) {
        let current = board.borrow_and_update().clone();
        self.publish_board(current);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = board.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = board.borrow_and_update().clone();
                    self.publish_board(current);
                }
            }
        }
    }

    async fn follow_jobs(self, stop: CancellationToken, bulk: BulkJobs) {
        let mut last: HashMap<String, JobView> = HashMap::new();
        loop {
            if let Err(error) = self.progress_step(&bulk, &mut last).await {
                tracing::debug!(%error, "the live feed cannot read bulk jobs");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PROGRESS_TICK) => {}
            }
        }
    }

    /// Publishes the progress of every running job that moved, and the final state of
    /// those that finished since the last step.
    async fn progress_step(
        &self,
        bulk: &BulkJobs,
        last: &mut HashMap<String, JobView>,
    ) -> Result<(), sqlx::Error> {
        let mut ids = jobs::unfinished(self.pool()).await?;
        ids.extend(last.keys().cloned());
        ids.sort();
        ids.dedup();
        for id in ids {
            let Some(view) = bulk.job(&id, false).await? else {
                last.remove(&id);
                continue;
            };
            if last.get(&id) != Some(&view) {
                self.publish_progress(&view);
            }
            if view.is_finished() {
                last.remove(&id);
            } else {
                last.insert(id, view);
            }
        }
        Ok(())
    }

    async fn keep_roster(self, stop: CancellationToken, bulk: BulkJobs) {
        let mut delay = Duration::from_secs(1);
        loop {
            let fetched =
                crate::cxone::in_lane(crate::cxone::Lane::Background, None, bulk.agents()).await;
            let wait = match fetched {
                Ok(agents) => match self.set_roster(&agents).await {
                    Ok(()) => {
                        delay = Duration::from_secs(1);
                        self.inner.settings.roster_refresh
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the live feed cannot read the store");
                        delay
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "the live feed cannot list the agents; names and teams wait");
                    delay = (delay * 2).min(Duration::from_secs(60));
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Applies a durable event to the state: a state change moves the agent's card, an
/// adherence exception puts or takes its badge. Others change nothing on the board.
fn apply(state: &mut State, row: &outbox::EventRow) {
    let Ok(body) = serde_json::from_str::<Value>(&row.payload) else {
        return;
    };
    let data = &body["data"];
    let Some(agent_id) = data["agentId"].as_str() else {
        return;
    };
    let roster_loaded = state.roster_loaded;
    let agent = match state.agents.get_mut(agent_id) {
        Some(agent) => agent,
        // Not a managed agent (a one-off change through the API): not on the board.
        None if roster_loaded => return,
        None => state
            .agents
            .entry(agent_id.to_owned())
            .or_insert_with(|| AgentView::unnamed(agent_id)),
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match row.event_type.as_str() {
        "agent.state_changed" => {
            agent.state = text(&data["to"]);
            agent.reason = text(&data["reasonCode"]);
            agent.origin = text(&data["origin"]);
            agent.since = text(&data["changedAt"]).or_else(|| text(&body["timestamp"]));
        }
        "adherence.exception" => {
            let id = text(&data["exceptionId"]).unwrap_or_default();
            agent.exceptions.retain(|e| e.exception_id != id);
            if data["status"] == "open" {
                agent.exceptions.push(ExceptionBadge {
                    exception_id: id,
                    kind: text(&data["kind"]).unwrap_or_default(),
                    since: text(&data["startedAt"]).unwrap_or_default(),
                });
            }
        }
        _ => {}
    }
}

/// One client's view of the feed: what it is owed first (a snapshot or the events it
/// missed), then every published message in order.
pub struct Feed {
    live: Live,
    receiver: broadcast::Receiver<Message>,
    pending: VecDeque<Message>,
    /// Published messages up to this version are already in what was sent.
    after_version: u64,
    /// Durable events up to this outbox sequence were sent (or predate the client).
    after_seq: i64,
    /// When this client was last resynced, to close one that keeps falling behind.
    strikes: VecDeque<Instant>,
    closed: bool,
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

    fn step(&mut self, received: Result<Message, broadcast::error::RecvError>) -> Step {
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
                Step::Send(message)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let now = Instant::now();
                self.strikes.retain(|at| now - *at < STRIKE_WINDOW);
                self.strikes.push_back(now);
                if self.strikes.len() as u32 > MAX_STRIKES {
                    metrics::counter!("wfmd_live_clients_dropped_total").increment(1);
                    tracing::info!(missed, "a live client kept falling behind; closed");
                    self.closed = true;
                    return Step::Send(Message::close(
                        "too slow: fell behind the feed repeatedly; reconnect",
                    ));
                }
                metrics::counter!("wfmd_live_resyncs_total").increment(1);
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
        metrics::gauge!("wfmd_live_clients").decrement(1.0);
    }
}

/// One stream's place in its caller's share (see [`Live::open_stream`]); the place is
/// given back when this is dropped.
pub struct StreamSlot {
    live: Live,
    caller: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .live
            .inner
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(open) = streams.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.caller);
            }
        }
    }
}

/// Why a ticket or a stream was refused: the limit reached, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Crowded {
    #[error(
        "this caller holds {max} unused live tickets already (live.max_tickets_per_caller); \
         each is good for 60 s once, so open the feed with one or wait for them to expire"
    )]
    CallerTickets { max: usize, retry_after: Duration },
    #[error(
        "too many live tickets are outstanding over every caller ({MAX_TICKETS}); try again \
         in a minute"
    )]
    AllTickets { retry_after: Duration },
    #[error(
        "this caller has {max} live-feed streams open already (live.max_streams_per_caller); \
         close one, or give each wall of screens its own token"
    )]
    CallerStreams { max: usize },
}

impl Crowded {
    /// The configuration key of the limit that was reached (`None`: the built-in one).
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Crowded::CallerTickets { .. } => Some("live.max_tickets_per_caller"),
            Crowded::AllTickets { .. } => None,
            Crowded::CallerStreams { .. } => Some("live.max_streams_per_caller"),
        }
    }

    /// How long until a place is likely to be free.
    pub fn retry_after(&self) -> Duration {
        match self {
            Crowded::CallerTickets { retry_after, .. } | Crowded::AllTickets { retry_after } => {
                *retry_after
            }
            Crowded::CallerStreams { .. } => STREAM_RETRY_AFTER,
        }
    }
}

/// Who a ticket was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketHolder {
    pub name: Arc<str>,
    pub role: Role,
}

struct Issued {
    holder: TicketHolder,
    /// Whose share the ticket counts in (the holder's name, or without tokens the
    /// client's address).
    caller: Arc<str>,
    expires: Instant,
}

/// Short-lived single-use tickets for opening the feed from a browser: `EventSource`
/// and `WebSocket` cannot send an `Authorization` header, and a long-lived token in a
/// URL ends up in proxy logs. A ticket is worth one connection within [`TICKET_TTL`].
/// Each caller may hold a share of them, and all callers together [`MAX_TICKETS`].
pub struct Tickets {
    issued: Mutex<HashMap<String, Issued>>,
    per_caller: usize,
}

impl Default for Tickets {
    fn default() -> Tickets {
        Tickets::new(Settings::default().max_tickets_per_caller)
    }
}

impl Tickets {
    /// Tickets of which one caller may hold `per_caller` unused at once.
    pub fn new(per_caller: usize) -> Tickets {
        Tickets {
            issued: Mutex::new(HashMap::new()),
            per_caller,
        }
    }

    /// A new ticket for `holder`, counted in `caller`'s share, valid for [`TICKET_TTL`]
    /// from now (tokio's clock).
    pub fn issue(&self, holder: TicketHolder, caller: &str) -> Result<String, Crowded> {
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|_, ticket| ticket.expires > now);
        let until = |expires: Option<Instant>| {
            // Whole seconds, rounded up: a Retry-After of 0 would invite a busy loop.
            let left = expires.map_or(TICKET_TTL, |e| e.saturating_duration_since(now));
            Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                .max(Duration::from_secs(1))
        };
        if issued.len() >= MAX_TICKETS {
            let first = issued.values().map(|t| t.expires).min();
            return Err(Crowded::AllTickets {
                retry_after: until(first),
            });
        }
        let mine = issued.values().filter(|t| &*t.caller == caller);
        let (held, first) = mine.fold((0, None::<Instant>), |(n, first), t| {
            (n + 1, Some(first.map_or(t.expires, |f| f.min(t.expires))))
        });
        if held >= self.per_caller {
            return Err(Crowded::CallerTickets {
                max: self.per_caller,
                retry_after: until(first),
            });
        }
        let ticket = format!("tkt_{}", hex::encode(rand::random::<[u8; 24]>()));
        issued.insert(
            ticket.clone(),
            Issued {
                holder,
                caller: caller.into(),
                expires: now + TICKET_TTL,
            },
        );
        Ok(ticket)
    }

    /// The holder of `ticket` when it is known and unexpired; it is used up either way.
    pub fn redeem(&self, ticket: &str) -> Option<TicketHolder> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = issued.remove(ticket)?;
        (Instant::now() < ticket.expires).then_some(ticket.holder)
    }
}

/// The newest outbox event: its sequence and id.
async fn head(pool: &SqlitePool) -> Result<Option<(i64, String)>, sqlx::Error> {
    // The store has no function for this yet; it is a read of the outbox's own key.
    sqlx::query_as("SELECT seq, id FROM outbox_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(pool)
        .await
}

/// The outbox sequence of the event `id`, if it is still stored.
async fn seq_of(pool: &SqlitePool, id: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM outbox_events WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Every agent's open interval.
async fn all_open_intervals(pool: &SqlitePool) -> Result<Vec<history::IntervalRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, agent_id, state, reason, origin, started_at, ended_at, attempt_id
         FROM state_intervals WHERE ended_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::EventType;
    use crate::store::testing::temp_store;

    fn holder(role: Role) -> TicketHolder {
        TicketHolder {
            name: "desk".into(),
            role,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_is_good_once_and_only_within_sixty_seconds() {
        let tickets = Tickets::default();
        let first = tickets.issue(holder(Role::Viewer), "desk").unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(tickets.redeem(&first), Some(holder(Role::Viewer)));
        assert_eq!(tickets.redeem(&first), None, "single use");
        let second = tickets.issue(holder(Role::Viewer), "desk").unwrap();
        tokio::time::advance(TICKET_TTL).await;
        assert_eq!(tickets.redeem(&second), None, "expired");
        assert_eq!(tickets.redeem("tkt_never-issued"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_over_its_ticket_share_is_refused_until_its_first_ticket_expires() {
        let tickets = Tickets::new(3);
        for _ in 0..3 {
            tickets.issue(holder(Role::Viewer), "desk").unwrap();
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let refused = tickets.issue(holder(Role::Viewer), "desk").unwrap_err();
        assert_eq!(
            refused,
            Crowded::CallerTickets {
                max: 3,
                retry_after: Duration::from_secs(30),
            }
        );
        assert_eq!(refused.limit(), Some("live.max_tickets_per_caller"));
        // Another caller has its own share; a redeemed ticket frees a place.
        tickets.issue(holder(Role::Admin), "ops").unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        tickets.issue(holder(Role::Viewer), "desk").unwrap();
    }

    #[tokio::test]
    async fn a_caller_over_its_stream_share_is_refused_until_one_closes() {
        let (store, _dir) = temp_store().await;
        let live = Live::new(
            store,
            Settings {
                max_streams_per_caller: 2,
                ..Settings::default()
            },
        );
        let first = live.open_stream("desk").unwrap();
        let _second = live.open_stream("desk").unwrap();
        let refused = live.open_stream("desk").err().unwrap();
        assert_eq!(refused, Crowded::CallerStreams { max: 2 });
        assert_eq!(refused.limit(), Some("live.max_streams_per_caller"));
        let _other = live.open_stream("ops").unwrap();
        drop(first);
        let _third = live.open_stream("desk").unwrap();
    }

    async fn change(store: &Store, agent: &str, to: &str) -> String {
        let mut tx = store.begin_write().await.unwrap();
        let id = outbox::enqueue(
            &mut tx,
            EventType::AgentStateChanged,
            Some(agent),
            Utc::now(),
            json!({"agentId": agent, "to": to, "reasonCode": null, "origin": "api"}),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    fn roster(ids: &[&str]) -> Vec<crate::cxone::Agent> {
        ids.iter()
            .map(|id| crate::cxone::Agent {
                id: (*id).to_owned(),
                name: format!("Agent {id}"),
                team_id: Some("t_1".into()),
                team_name: Some("Care".into()),
                skills: vec!["s_1".into()],
            })
            .collect()
    }

    #[tokio::test]
    async fn a_client_gets_the_snapshot_then_each_event_once_in_commit_order() {
        let (store, _dir) = temp_store().await;
        let live = Live::new(store.clone(), Settings::default());
        live.set_roster(&roster(&["u_1", "u_2"])).await.unwrap();
        live.load().await.unwrap();
        let mut feed = live.subscribe(Start::Fresh).await.unwrap();
        let first = feed.next().await.unwrap();
        assert_eq!(&*first.kind, "snapshot");
        let a = change(&store, "u_2", "READY").await;
        let b = change(&store, "u_1", "NOT_READY").await;
        assert_eq!(live.poll_outbox().await.unwrap(), 2);
        assert_eq!(live.poll_outbox().await.unwrap(), 0, "published once");
        let got: Vec<_> = [feed.next().await.unwrap(), feed.next().await.unwrap()]
            .into_iter()
            .map(|m| m.id.unwrap().to_string())
            .collect();
        assert_eq!(got, [a, b.clone()]);
        let snapshot = live.snapshot();
        assert_eq!(snapshot.last_event_id.as_deref(), Some(b.as_str()));
        assert_eq!(snapshot.counts["READY"], 1);
        assert_eq!(snapshot.agents[0].state.as_deref(), Some("NOT_READY"));
        assert_eq!(snapshot.agents[0].name.as_deref(), Some("Agent u_1"));
    }

    #[tokio::test]
    async fn a_client_connected_before_the_roster_is_sent_the_named_board_when_it_arrives() {
        let (store, _dir) = temp_store().await;
        let live = Live::new(store.clone(), Settings::default());
        let mut early = live.subscribe(Start::Fresh).await.unwrap();
        let empty = early.next().await.unwrap();
        assert!(empty.json.contains(r#""agents":[]"#), "{}", empty.json);
        live.set_roster(&roster(&["u_1"])).await.unwrap();
        let named = early.next().await.unwrap();
        assert_eq!(&*named.kind, "snapshot");
        assert!(
            named.json.contains(r#""name":"Agent u_1""#),
            "{}",
            named.json
        );
    }

    #[tokio::test]
    async fn a_resume_replays_what_was_missed_or_sends_a_snapshot_for_an_unknown_id() {
        let (store, _dir) = temp_store().await;
        let live = Live::new(store.clone(), Settings::default());
        let seen = change(&store, "u_1", "READY").await;
        let missed = change(&store, "u_1", "NOT_READY").await;
        live.load().await.unwrap();
        let mut feed = live.subscribe(Start::After(seen)).await.unwrap();
        assert_eq!(&*feed.next().await.unwrap().kind, "metrics");
        let replayed = feed.next().await.unwrap();
        assert_eq!(replayed.id.as_deref(), Some(missed.as_str()));
        let mut feed = live
            .subscribe(Start::After("evt_pruned-long-ago".into()))
            .await
            .unwrap();
        assert_eq!(&*feed.next().await.unwrap().kind, "snapshot");
    }

    #[tokio::test]
    async fn one_timer_sends_every_client_the_heartbeat_each_period() {
        let (store, _dir) = temp_store().await;
        // After the store is open: its pool's timeouts would fire at once in paused time.
        tokio::time::pause();
        let live = Live::new(store.clone(), Settings::default());
        let stop = CancellationToken::new();
        let beating = tokio::spawn(live.clone().beat(stop.clone()));
        let mut feeds = [
            live.subscribe(Start::Fresh).await.unwrap(),
            live.subscribe(Start::Fresh).await.unwrap(),
        ];
        for feed in &mut feeds {
            assert_eq!(&*feed.next().await.unwrap().kind, "snapshot");
        }
        tokio::time::advance(Duration::from_secs(14)).await;
        tokio::task::yield_now().await;
        for feed in &mut feeds {
            assert!(feed.ready().is_none(), "no heartbeat before 15 s");
        }
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(1)).await;
            for feed in &mut feeds {
                let beat = tokio::time::timeout(Duration::from_millis(100), feed.next())
                    .await
                    .expect("the heartbeat at 15 s")
                    .unwrap();
                assert!(beat.is_heartbeat());
                assert_eq!(&beat.sse[..], b": heartbeat\n\n", "an SSE comment");
                assert_eq!(
                    serde_json::from_str::<Value>(&beat.json).unwrap()["type"],
                    "heartbeat"
                );
            }
            tokio::time::advance(Duration::from_secs(14)).await;
        }
        stop.cancel();
        beating.await.unwrap();
    }

    #[test]
    fn an_sse_block_keeps_every_line_of_a_payload_as_a_data_line() {
        let block = sse_block("bulk.completed", Some("evt_1"), "{\"a\":1,\n\"b\":2}\r\n");
        assert_eq!(
            std::str::from_utf8(&block).unwrap(),
            "event: bulk.completed\nid: evt_1\ndata: {\"a\":1,\ndata: \"b\":2}\ndata: \n\n"
        );
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_the_buffer_gets_a_fresh_snapshot_not_a_gap() {
        let (store, _dir) = temp_store().await;
        let settings = Settings {
            client_buffer: 16,
            ..Settings::default()
        };
        let live = Live::new(store.clone(), settings);
        let mut slow = live.subscribe(Start::Fresh).await.unwrap();
        assert_eq!(&*slow.next().await.unwrap().kind, "snapshot");
        let mut last = String::new();
        for i in 0..40 {
            last = change(&store, "u_1", if i % 2 == 0 { "READY" } else { "IDLE" }).await;
        }
        live.poll_outbox().await.unwrap();
        let resynced = slow.next().await.unwrap();
        assert_eq!(&*resynced.kind, "snapshot");
        assert_eq!(resynced.id.as_deref(), Some(last.as_str()));
        change(&store, "u_1", "READY").await;
        live.poll_outbox().await.unwrap();
        assert_eq!(&*slow.next().await.unwrap().kind, "agent.state_changed");
    }
}
