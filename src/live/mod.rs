//! The live feed: one in-process source of what happens in wfmd, for any number of
//! wallboards and other watchers.
//!
//! - Durable events (agent state changed, transition rejected, adherence exception,
//!   bulk job completed) are read from the outbox in commit order whenever
//!   [`Store::outbox_commits`] moves while a client watches (and on a slow fallback
//!   tick, for commits made by another process such as `wfmd transition`). While none
//!   watches, only on a slower tick: a reader of the snapshot has the feed catch up
//!   first (see `rest`). They
//!   carry the outbox id, the same id the webhooks carry, so a client that reconnects
//!   with `Last-Event-ID` is sent exactly what it missed, read back from the outbox —
//!   across a restart too.
//! - Non-durable messages (bulk job progress, a new metric board, a changed row of
//!   real-time adherence) are published without ids: a reconnecting client gets the
//!   current board instead (and reads the adherence rows again).
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
//!   read from the outbox together (`loops::MIN_READ_GAP`), so a client wakes once for them;
//!   one timer beats for every client.
//!
//! Tickets ([`Tickets`]) let a browser open the feed without putting its long-lived
//! token into a URL. Among several instances they are recorded in the database too
//! ([`crate::store::tickets`]), so a ticket one instance issued opens the feed on any.

mod adherence;
mod encode;
mod feed;
mod hub;
mod loops;
mod rest;
mod tickets;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::caller_slots::CallerSlots;
use crate::domain::tenant::TenantId;
use crate::engine::metrics::MetricBoard;
use crate::store::{Pool, Store};

pub use adherence::{ADHERENCE_CHANGED, AdherenceJudge, AdherenceRow, today};
pub use encode::Message;
pub use feed::{Feed, MAX_REPLAY, Start};
use hub::State;
pub use tickets::{Crowded, TICKET_TTL, TicketHolder, Tickets};
pub use view::{AgentView, DeferredBadge, ExceptionBadge, Periods, Snapshot, Thresholds, Tiles};

/// How the feed behaves; the service-level thresholds come from `[live]`.
#[derive(Debug, Clone)]
pub struct LiveSettings {
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
    /// This instance when several serve the tenant (`ha.instance_id`; `None` for a
    /// sole instance): the page says which instance serves it, and the feed shares with
    /// the others through the database what they cannot see themselves.
    pub served_by: Option<String>,
}

impl Default for LiveSettings {
    fn default() -> LiveSettings {
        LiveSettings {
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
            served_by: None,
        }
    }
}

struct Inner {
    /// Whose feed this is: every message names it (`"tenant"`).
    tenant: TenantId,
    store: Store,
    settings: LiveSettings,
    state: Mutex<State>,
    /// Each slot of the ring holds a message behind an `Arc`: the ring is allocated
    /// whole, `client_buffer` slots for every tenant, whether anyone watches or not,
    /// and a slot holding the message itself was four times the size.
    sender: broadcast::Sender<Arc<Message>>,
    tickets: Tickets,
    /// Open streams by caller.
    streams: CallerSlots,
    stop: CancellationToken,
    /// Asks the adherence loop to work every row out again.
    adherence_recheck: tokio::sync::Notify,
    /// Who watches, and when the feed last read what others change (see `rest`).
    rest: rest::Rest,
}

/// What the database keeps of a ticket: not the ticket, which opens the feed.
fn ticket_digest(ticket: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(ticket.as_bytes()))
}

/// The live feed. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl Live {
    /// An empty feed of `tenant` over its `store`; call [`Live::load`] (or
    /// [`Live::run`]) to fill it.
    pub fn new(tenant: TenantId, store: Store, settings: LiveSettings) -> Live {
        let (sender, _) = broadcast::channel(settings.client_buffer.max(16));
        let tickets = Tickets::new(settings.max_tickets_per_caller);
        let streams = CallerSlots::new(settings.max_streams_per_caller);
        Live {
            inner: Arc::new(Inner {
                tenant,
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
                streams,
                stop: CancellationToken::new(),
                adherence_recheck: tokio::sync::Notify::new(),
                rest: rest::Rest::new(),
            }),
        }
    }

    /// Whose feed this is.
    pub fn tenant(&self) -> &TenantId {
        &self.inner.tenant
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.inner.settings
    }

    /// A ticket for `holder`, counted in `caller`'s share ([`Tickets::issue`]); while
    /// several instances serve the tenant, also recorded in the database, so the
    /// instance the browser opens the feed on redeems it, wherever that is.
    pub async fn issue_ticket(
        &self,
        holder: TicketHolder,
        caller: &str,
    ) -> Result<Result<String, Crowded>, sqlx::Error> {
        let ticket = match self.inner.tickets.issue(holder.clone(), caller) {
            Ok(ticket) => ticket,
            Err(crowded) => return Ok(Err(crowded)),
        };
        if self.among_several() {
            let now = chrono::Utc::now().timestamp_millis();
            let ttl = i64::try_from(TICKET_TTL.as_millis()).expect("a minute");
            let (name, role) = (&*holder.name, holder.role.as_str());
            let digest = ticket_digest(&ticket);
            crate::store::tickets::record(&self.inner.store, &digest, name, role, now + ttl, now)
                .await?;
        }
        Ok(Ok(ticket))
    }

    /// The holder of `ticket` when it is known and unexpired; it is used up either way
    /// ([`Tickets::redeem`]). Among several instances the database decides, so a
    /// ticket is good once over all of them.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Option<TicketHolder>, sqlx::Error> {
        let here = self.inner.tickets.redeem(ticket);
        if !self.among_several() {
            return Ok(here);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let digest = ticket_digest(ticket);
        let spent = crate::store::tickets::spend(&self.inner.store, &digest, now).await?;
        Ok(spent.and_then(|(name, role)| {
            Some(TicketHolder {
                name: name.into(),
                role: role.parse().ok()?,
            })
        }))
    }

    /// Whether other instances may serve the tenant too (`[ha]`).
    fn among_several(&self) -> bool {
        self.inner.settings.served_by.is_some()
    }

    fn pool(&self) -> &Pool {
        self.inner.store.reader()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
