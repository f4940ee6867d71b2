//! The HTTP server: accepts connections, holds each one to its limits, and serves the
//! router on it over HTTP/1.1 (hyper), until shutdown drains them.
//!
//! What a client that connects and then misbehaves meets here (the rest is in
//! `super::layers`: the body deadline and the answer's time limit):
//! - Connections are capped: `server.max_connections` open at once over everyone, and
//!   `server.max_connections_per_client` from one address (addresses in
//!   `server.proxies` excepted). A new connection past a cap takes the place of the
//!   connection idle longest (no request in flight, not upgraded, not a stream; within
//!   the address's own connections when it is past its share): one closing already,
//!   then one kept alive after an answer, then one still waiting for its first request
//!   (`Idle`). Only when none is idle is the new one closed as soon as it is
//!   accepted; accepting goes on, so a client within its share is still served while
//!   another address floods the port, and a fresh client is served while idle
//!   connections hold every place. The cap stays below the process's open-file limit
//!   ([`fit_descriptor_limit`]), so database files and webhook deliveries always find
//!   a descriptor; the sockets of connections closed to make room, which may outlive
//!   their place for a moment, are bounded by `CLOSING_AT_MOST` within that reserve.
//! - A connection must deliver a complete request head within
//!   `server.header_read_timeout` (from connecting, and from the first byte of each
//!   later request), and one that sits idle between requests is closed after
//!   `server.idle_timeout` from the end of its last answer (`Watched`). hyper has one
//!   timer for both, which would close idle keep-alive connections as early as
//!   half-sent heads; proxies and browsers reuse idle connections, so the two are kept
//!   apart.
//! - A connection wfmd closes after an answer given before the request's body was read
//!   (a 413, a 401) is closed lingeringly: the write side first, then what the client
//!   still sends is read and thrown away (for a bounded time and size) until it closes.
//!   Closing with unread bytes makes the kernel reset the connection, and a reset
//!   destroys the answer on its way and fails the client's writes (Python's urllib
//!   sends the whole body before it reads).
//! - A connection serves at most `server.max_requests_per_connection` requests; the
//!   last answer says `connection: close`.
//! - A client that stops reading what it is sent is dropped by the kernel
//!   ([`super::disconnect_when_stalled`]).
//!
//! The live feed's streams are long connections by design. Once a stream is authorised
//! ([`Connection::streaming`]) it leaves its address's share and counts only toward
//! `max_connections` (and its caller's `live.max_streams_per_caller`): a wall of screens
//! behind one NAT, or every screen behind a TLS proxy, is not a flood.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::telemetry::names::{
    HTTP_ACCEPT_ERRORS_TOTAL, HTTP_CONNECTIONS, HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL,
    HTTP_CONNECTIONS_REFUSED_TOTAL, HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
};

/// Descriptors kept for everything but client connections: the database and its
/// journal files, the platform client's connections, the log, the runtime's own.
/// Webhook deliveries (`delivery.concurrency`) come on top.
const DESCRIPTORS_BESIDES_CLIENTS: usize = 256;

/// How often a refused connection, or one closed to make room, is logged at most
/// (each is counted in the metrics).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections closed to make room whose sockets may not be closed yet. Their places
/// are handed over at once, so their descriptors come out of
/// [`DESCRIPTORS_BESIDES_CLIENTS`]: a quarter of it at most. Each closes within a poll
/// of its task; past this many a new connection is refused instead.
const CLOSING_AT_MOST: usize = DESCRIPTORS_BESIDES_CLIENTS / 4;

/// The most a lingering close reads and throws away: a few MiB over the largest body
/// any route takes (a schedules import), so a client whose file is a little too large
/// still reads its 413. A client sending far more is cut off.
const LINGER_BYTES: usize = super::schedules::IMPORT_LIMIT_BYTES + 4 * 1024 * 1024;

/// A lingering close ends when the client has sent nothing for this long: it is done
/// sending, or gone.
const LINGER_QUIET: Duration = Duration::from_secs(2);

/// A lingering close ends this long after it began however the client sends: enough
/// for [`LINGER_BYTES`] at about 17 Mbit/s, short enough that a slow sender does not
/// hold a place for long.
const LINGER_AT_MOST: Duration = Duration::from_secs(10);

/// The limits of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_requests_per_connection: u64,
    /// Addresses whose connections count only toward `max_connections`.
    pub proxies: Vec<IpAddr>,
    /// A client that takes none of what is sent for this long is dropped.
    pub stalled_client_timeout: Duration,
}

impl ServeSettings {
    /// `[server]`'s limits, with `max_connections` lowered to what the process's
    /// open-file limit allows (after trying to raise it; see [`fit_descriptor_limit`]).
    pub fn from_config(config: &Config) -> ServeSettings {
        let s = &config.server;
        let reserve = DESCRIPTORS_BESIDES_CLIENTS + config.delivery.concurrency;
        let max_connections = fit_descriptor_limit(s.max_connections, reserve);
        ServeSettings {
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
            max_connections,
            max_connections_per_client: s.max_connections_per_client.min(max_connections),
            max_requests_per_connection: s.max_requests_per_connection,
            proxies: s.proxies.iter().map(|ip| ip.to_canonical()).collect(),
            stalled_client_timeout: super::STALLED_CLIENT_TIMEOUT,
        }
    }
}

/// The connection cap the process can hold: `wanted`, when the soft open-file limit
/// leaves `reserve` descriptors beside it. A lower soft limit is raised toward the hard
/// one first (a service manager's default of 1,024 is below the 1,100 wallboards wfmd
/// is built for, and running out makes `accept` and every webhook delivery fail); when
/// even the hard limit is too low the cap is lowered to fit, with a warning saying what
/// to raise.
pub fn fit_descriptor_limit(wanted: usize, reserve: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let needed = (wanted + reserve) as u64;
        let limit = getrlimit(Resource::Nofile);
        let Some(soft) = limit.current else {
            return wanted;
        };
        if soft >= needed {
            return wanted;
        }
        let target = limit.maximum.map_or(needed, |hard| hard.min(needed));
        let soft = if target > soft {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(target),
                    maximum: limit.maximum,
                },
            ) {
                Ok(()) => {
                    tracing::info!(
                        from = soft,
                        to = target,
                        "raised the open-file limit for server.max_connections"
                    );
                    target
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot raise the open-file limit");
                    soft
                }
            }
        } else {
            soft
        };
        if soft >= needed {
            return wanted;
        }
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let fits = if soft > reserve * 2 {
            soft - reserve
        } else {
            (soft / 2).max(1)
        };
        tracing::warn!(
            limit = soft,
            hard = ?limit.maximum,
            max_connections = wanted,
            serving_at_most = fits,
            "the open-file limit is below what server.max_connections needs ({wanted} \
             connections and {reserve} descriptors beside them): serving at most {fits} \
             connections. Raise the limit (LimitNOFILE= in the systemd unit, `ulimit -n`, \
             or the container's nofile ulimit)"
        );
        fits
    }
    #[cfg(not(unix))]
    {
        let _ = reserve;
        wanted
    }
}

/// A cap a new connection met: it was closed as soon as it was accepted, or an idle
/// connection was closed to make room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `max_connections` are open.
    Everyone,
    /// `max_connections_per_client` are open from this address.
    Client,
}

impl Limit {
    fn reason(self) -> &'static str {
        match self {
            Limit::Everyone => "max_connections",
            Limit::Client => "max_connections_per_client",
        }
    }
}

/// Open connections, in all and by client address.
struct Caps {
    max: usize,
    per_client: usize,
    proxies: Vec<IpAddr>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Connections holding a place.
    open: usize,
    by_client: HashMap<IpAddr, usize>,
    /// Connections closed to make room whose sockets are not closed yet (they hold no
    /// place).
    closing: usize,
    idle: Idle,
    next_id: u64,
}

/// A new connection's place, and the idle connection closed to make it, if any.
struct Admitted {
    connection: Arc<Connection>,
    made_room: Option<(Limit, Arc<Notice>)>,
}

impl Caps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection from `client`, made by closing an idle
    /// connection if a cap is reached (the caller wakes it), or why there is none.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Limit> {
        let charged = !self.proxies.contains(&client);
        let mut guard = self.lock();
        let counts = &mut *guard;
        let share_used = counts.by_client.get(&client).copied().unwrap_or(0);
        // Closing one of the client's own frees a place in all too.
        let limit = if charged && share_used >= self.per_client {
            Some(Limit::Client)
        } else if counts.open >= self.max {
            Some(Limit::Everyone)
        } else {
            None
        };
        let made_room = match limit {
            None => None,
            Some(limit) => {
                let of = (limit == Limit::Client).then_some(client);
                Some((limit, counts.make_room(of).ok_or(limit)?))
            }
        };
        if charged {
            *counts.by_client.entry(client).or_insert(0) += 1;
        }
        counts.open += 1;
        counts.next_id += 1;
        let connection = Arc::new(Connection {
            caps: self.clone(),
            id: counts.next_id,
            client,
            charged: AtomicBool::new(charged),
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            notice: Arc::default(),
        });
        counts.idle.insert(&connection, Rank::New);
        drop(guard);
        metrics::gauge!(HTTP_CONNECTIONS).increment(1.0);
        Ok(Admitted {
            connection,
            made_room,
        })
    }
}

impl Counts {
    /// Closes the connection idle longest (of `client`'s, if given) unless too many
    /// closed ones are still closing: its place is free at once, and its task is to be
    /// woken with the [`Notice`] returned.
    fn make_room(&mut self, client: Option<IpAddr>) -> Option<Arc<Notice>> {
        if self.closing >= CLOSING_AT_MOST {
            return None;
        }
        let (notice, charged_to) = self.idle.take_longest(client)?;
        notice.evicted.store(true, Ordering::Release);
        self.open -= 1;
        self.closing += 1;
        if let Some(client) = charged_to {
            self.uncharge(client);
        }
        Some(notice)
    }

    fn uncharge(&mut self, client: IpAddr) {
        if let Some(open) = self.by_client.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                self.by_client.remove(&client);
            }
        }
    }
}

/// How readily an idle connection is closed to make room, most readily first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// Being closed already: its answer sent, the rest of its request read away.
    Lingering,
    /// Answered, and kept alive for another request.
    KeptAlive,
    /// Waiting for its first request: perhaps a client about to send one.
    New,
}

/// An idle connection's place in [`Idle`]: by rank, then idle longest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IdleKey {
    rank: Rank,
    since: Instant,
    id: u64,
}

/// The connections that may be closed to make room: those with no request in flight,
/// not upgraded and not carrying a stream (a stream's request is in flight while it
/// runs). Kept in order, in all and by the address they are charged to.
#[derive(Default)]
struct Idle {
    in_order: BTreeMap<IdleKey, Arc<Notice>>,
    by_client: HashMap<IpAddr, BTreeSet<IdleKey>>,
    /// Each idle connection's key, and the address it is charged to.
    keys: HashMap<u64, (IdleKey, Option<IpAddr>)>,
}

impl Idle {
    /// `connection` is idle from now, ranked `rank`.
    fn insert(&mut self, connection: &Connection, rank: Rank) {
        self.remove(connection.id);
        let key = IdleKey {
            rank,
            since: Instant::now(),
            id: connection.id,
        };
        let charged_to = connection
            .charged
            .load(Ordering::Acquire)
            .then_some(connection.client);
        self.in_order.insert(key, connection.notice.clone());
        if let Some(client) = charged_to {
            self.by_client.entry(client).or_default().insert(key);
        }
        self.keys.insert(connection.id, (key, charged_to));
    }

    /// The connection `id` is no longer idle; the address it was charged to, if it was.
    fn remove(&mut self, id: u64) -> Option<(Arc<Notice>, Option<IpAddr>)> {
        let (key, charged_to) = self.keys.remove(&id)?;
        if let Some(client) = charged_to
            && let Some(keys) = self.by_client.get_mut(&client)
        {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_client.remove(&client);
            }
        }
        let notice = self.in_order.remove(&key)?;
        Some((notice, charged_to))
    }

    /// Takes out the connection to close first, of `client`'s if given.
    fn take_longest(&mut self, client: Option<IpAddr>) -> Option<(Arc<Notice>, Option<IpAddr>)> {
        let id = match client {
            None => self.in_order.keys().next()?.id,
            Some(client) => self.by_client.get(&client)?.first()?.id,
        };
        self.remove(id)
    }
}

/// What the connection's task is told from outside it, through the [`Watched`] socket
/// it reads from.
#[derive(Default)]
struct Notice {
    /// Closed to make room: the place is someone else's, the socket to be closed.
    evicted: AtomicBool,
    /// The task, woken when an answer has been sent (the idle time starts) and when the
    /// connection is closed to make room.
    task: AtomicWaker,
}

/// One accepted connection: its place under the caps, and what its requests tell the
/// watchdog (`Watched`). Each request carries it as an extension.
pub struct Connection {
    caps: Arc<Caps>,
    id: u64,
    client: IpAddr,
    /// Whether the connection counts in its address's share.
    charged: AtomicBool,
    /// Requests whose answer is not yet completely sent.
    in_flight: AtomicUsize,
    /// Requests answered completely.
    answered: AtomicU64,
    /// Requests begun.
    begun: AtomicU64,
    /// Switched to another protocol (WebSocket): no longer HTTP, no longer watched.
    upgraded: AtomicBool,
    notice: Arc<Notice>,
}

impl Connection {
    /// The client's address.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The connection now carries an authorised live-feed stream: it leaves its
    /// address's share (it still counts toward `max_connections`) until it closes.
    pub fn streaming(&self) {
        let mut counts = self.caps.lock();
        // One closed to make room left its share then.
        if !self.evicted() && self.charged.swap(false, Ordering::AcqRel) {
            counts.uncharge(self.client);
        }
    }

    fn evicted(&self) -> bool {
        self.notice.evicted.load(Ordering::Acquire)
    }

    /// Counts a request in; whether it is the last the connection may serve. One closed
    /// to make room just as the request came serves it, and closes after it.
    fn begin(self: &Arc<Self>, max_requests: u64) -> (InFlight, bool) {
        let mut counts = self.caps.lock();
        counts.idle.remove(self.id);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let evicted = self.evicted();
        drop(counts);
        let last = self.begun.fetch_add(1, Ordering::AcqRel) + 1 >= max_requests;
        (InFlight(self.clone()), last || evicted)
    }

    /// wfmd is closing the connection, reading away what the client still sends.
    fn lingering(&self) {
        let mut counts = self.caps.lock();
        if counts.idle.remove(self.id).is_some() {
            counts.idle.insert(self, Rank::Lingering);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut counts = self.caps.lock();
        counts.idle.remove(self.id);
        if self.evicted() {
            counts.closing -= 1;
        } else {
            counts.open -= 1;
            if *self.charged.get_mut() {
                counts.uncharge(self.client);
            }
        }
        drop(counts);
        metrics::gauge!(HTTP_CONNECTIONS).decrement(1.0);
    }
}

/// A request from its head until its answer has been sent completely: it lives in the
/// answer's body, which hyper drops once it is written.
struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let connection = &self.0;
        let mut counts = connection.caps.lock();
        // `answered` first: whoever sees no request in flight sees this one answered.
        connection.answered.fetch_add(1, Ordering::AcqRel);
        let idle = connection.in_flight.fetch_sub(1, Ordering::AcqRel) == 1;
        if idle && !connection.upgraded.load(Ordering::Acquire) && !connection.evicted() {
            counts.idle.insert(connection, Rank::KeptAlive);
        }
        drop(counts);
        // hyper polled the socket while the request was in flight and will not again
        // until something wakes it: the idle time starts now.
        connection.notice.task.wake();
    }
}

/// An answer's body, holding its request [`InFlight`] until hyper is done with it.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// `answered` when the wait began.
    after: u64,
    /// Whether the next request's first bytes have come.
    begun: bool,
}

/// The client socket, watched while no request is in flight: a wait for the first
/// request, or for a later one's head once its first byte came, ends after the header
/// timeout; a wait with nothing sent ends after the idle timeout, counted from the end
/// of the last answer. hyper reads while it waits for a head, so the read fails with
/// `TimedOut` when the time is up (or `ConnectionAborted` when the connection was
/// closed to make room), and hyper closes the connection. When hyper closes it after an
/// answer, the close lingers ([`Watched::linger`]).
struct Watched {
    io: TcpStream,
    connection: Arc<Connection>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// The head or idle deadline, then the lingering close's.
    timer: Pin<Box<Sleep>>,
    waiting: Option<Waiting>,
    lingering: Option<Lingering>,
}

/// A lingering close under way.
#[derive(Debug, Clone, Copy)]
struct Lingering {
    until: Instant,
    discarded: usize,
}

impl Watched {
    fn new(io: TcpStream, connection: Arc<Connection>, settings: &ServeSettings) -> Watched {
        Watched {
            io,
            connection,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            timer: Box::pin(tokio::time::sleep(settings.header_read_timeout)),
            waiting: Some(Waiting {
                after: 0,
                begun: false,
            }),
            lingering: None,
        }
    }

    /// Moves the deadline along with what happened since the last read; `read` says
    /// whether this read brought bytes.
    fn watch(&mut self, read: bool) {
        let connection = &self.connection;
        if connection.in_flight.load(Ordering::Acquire) > 0 {
            self.waiting = None;
            return;
        }
        let answered = connection.answered.load(Ordering::Acquire);
        let now = Instant::now();
        let mut waiting = match self.waiting {
            Some(waiting) if waiting.after == answered => waiting,
            _ => {
                self.timer.as_mut().reset(now + self.idle_timeout);
                Waiting {
                    after: answered,
                    begun: false,
                }
            }
        };
        if read && !waiting.begun {
            waiting.begun = true;
            // The first request's time runs from connecting.
            if answered > 0 {
                self.timer.as_mut().reset(now + self.header_read_timeout);
            }
        }
        self.waiting = Some(waiting);
    }

    fn timed_out(&self) -> io::Error {
        let waiting = self.waiting.unwrap_or(Waiting {
            after: 0,
            begun: true,
        });
        let (reason, what) = if waiting.after == 0 || waiting.begun {
            (
                "header_read_timeout",
                "sent no complete request head in time",
            )
        } else {
            ("idle_timeout", "sent no request for server.idle_timeout")
        };
        metrics::counter!(HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "timeout" => reason).increment(1);
        tracing::debug!(client = %self.connection.client, "closed a connection that {what}");
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Reads and throws away what the client still sends after the answer, until it
    /// closes, stays quiet for [`LINGER_QUIET`], has sent [`LINGER_BYTES`], or
    /// [`LINGER_AT_MOST`] has passed; or until the connection is closed to make room.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let Some(lingering) = self.lingering.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if self.connection.evicted() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    lingering.discarded += buf.filled().len();
                    if lingering.discarded >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                    let quiet_until = (Instant::now() + LINGER_QUIET).min(lingering.until);
                    self.timer.as_mut().reset(quiet_until);
                }
                // The client closed (or reset): its answer is read or lost, nothing
                // more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match self.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.connection.upgraded.load(Ordering::Acquire) {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        // Registered before looking, so a notice given meanwhile is not missed.
        this.connection.notice.task.register(cx.waker());
        if this.connection.evicted() && this.connection.in_flight.load(Ordering::Acquire) == 0 {
            tracing::debug!(client = %this.connection.client, "closed an idle connection to make room");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        this.watch(read);
        match result {
            Poll::Pending if this.waiting.is_some() => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.timed_out())),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// hyper is closing the connection, its answers sent: the write side is shut (the
    /// client reads the end of the answer), and the close lingers.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            let now = Instant::now();
            let until = now + LINGER_AT_MOST;
            this.lingering = Some(Lingering {
                until,
                discarded: 0,
            });
            this.timer.as_mut().reset((now + LINGER_QUIET).min(until));
            this.connection.lingering();
        }
        this.connection.notice.task.register(cx.waker());
        this.linger(cx)
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, lets
/// every connection finish its request in flight (streams end when the feed stops), and
/// returns once all are closed. The caller bounds how long that may take.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    stop: CancellationToken,
) {
    let caps = Arc::new(Caps {
        max: settings.max_connections,
        per_client: settings.max_connections_per_client,
        proxies: settings.proxies.clone(),
        counts: Mutex::new(Counts::default()),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // Head and idle times are [`Watched`]'s.
    http.header_read_timeout(None);
    let connections = TaskTracker::new();
    let mut last_refusal_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let client = peer.ip().to_canonical();
        let mut log_limit = |limit: Limit, what: &str, metric: &str| {
            if last_refusal_logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                last_refusal_logged = Some(Instant::now());
                tracing::warn!(
                    %client,
                    limit = limit.reason(),
                    "{what} past server.{}; {metric} counts them",
                    limit.reason()
                );
            }
        };
        let connection = match caps.admit(client) {
            Ok(Admitted {
                connection,
                made_room,
            }) => {
                if let Some((limit, notice)) = made_room {
                    metrics::counter!(HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL, "limit" => limit.reason())
                        .increment(1);
                    log_limit(
                        limit,
                        "closing idle connections to make room for new ones",
                        HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL,
                    );
                    notice.task.wake();
                }
                connection
            }
            Err(limit) => {
                metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "limit" => limit.reason())
                    .increment(1);
                log_limit(
                    limit,
                    "refusing connections (none idle to close)",
                    HTTP_CONNECTIONS_REFUSED_TOTAL,
                );
                // Closed unanswered: nothing is read from a client past its share.
                drop(stream);
                continue;
            }
        };
        super::disconnect_when_stalled(&stream, settings.stalled_client_timeout);
        let io = TokioIo::new(Watched::new(stream, connection.clone(), &settings));
        let service = per_request(
            router.clone(),
            connection,
            peer,
            settings.max_requests_per_connection,
        );
        let http = http.clone();
        let stop = stop.clone();
        crate::tasks::spawn(connections.track_future(async move {
            let served = http.serve_connection(io, service).with_upgrades();
            let mut served = std::pin::pin!(served);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = served.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "a connection ended with an error");
                        }
                        break;
                    }
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
        }));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The service of one connection: each request goes to `router` with the client's
/// address and the [`Connection`] as extensions, and is tracked until answered.
fn per_request(
    router: Router,
    connection: Arc<Connection>,
    peer: SocketAddr,
    max_requests: u64,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Tracked>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Tracked>, Infallible>> + Send,
> {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let (in_flight, last) = connection.begin(max_requests);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(connection.clone());
        let connection = connection.clone();
        // A clone of the finished router shares its routes (an `Arc`); its make-service
        // would rebuild them per connection, ~30 KB that a thousand wallboards keep.
        let answer = router.clone().oneshot(request);
        async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let mut response = response;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                connection.upgraded.store(true, Ordering::Release);
            } else if last {
                // hyper closes the connection after an answer that says so.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    })
}

/// An `accept` that failed: a client that gave up while queued is nothing; running out
/// of descriptors is logged and waited out briefly instead of spinning.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    metrics::counter!(HTTP_ACCEPT_ERRORS_TOTAL).increment(1);
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max: usize, per_client: usize, proxies: Vec<IpAddr>) -> Arc<Caps> {
        Arc::new(Caps {
            max,
            per_client,
            proxies,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn ip(address: &str) -> IpAddr {
        address.parse().unwrap()
    }

    /// A connection from `client` with a request in flight: not idle.
    fn busy(caps: &Arc<Caps>, client: IpAddr) -> (Arc<Connection>, InFlight) {
        let connection = caps.admit(client).map(|a| a.connection).unwrap();
        let (in_flight, _) = connection.begin(100);
        (connection, in_flight)
    }

    /// A connection from `client` that has been answered once and waits for more.
    fn kept_alive(caps: &Arc<Caps>, client: IpAddr) -> Arc<Connection> {
        let connection = caps.admit(client).map(|a| a.connection).unwrap();
        drop(connection.begin(100));
        connection
    }

    /// The connection that made room for the one admitted, with the limit it met.
    fn made_room(admitted: Result<Admitted, Limit>) -> (Arc<Connection>, Limit, Arc<Notice>) {
        let Admitted {
            connection,
            made_room,
        } = admitted.unwrap_or_else(|limit| panic!("refused: {limit:?}"));
        let (limit, notice) = made_room.expect("room made");
        (connection, limit, notice)
    }

    #[test]
    fn busy_connections_are_capped_per_client_and_in_all_and_places_come_back() {
        let caps = caps(3, 2, vec![ip("10.0.0.9")]);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let first = busy(&caps, a);
        let _second = busy(&caps, a);
        assert_eq!(caps.admit(a).err(), Some(Limit::Client));
        let other = busy(&caps, b);
        assert_eq!(caps.admit(b).err(), Some(Limit::Everyone));
        drop(first);
        let third = busy(&caps, a);
        // A stream leaves its address's share but keeps its place in all.
        third.0.streaming();
        drop(other);
        let _fourth = busy(&caps, a);
        // Past both caps, the client's own is named.
        assert_eq!(caps.admit(a).err(), Some(Limit::Client));
        assert_eq!(caps.admit(b).err(), Some(Limit::Everyone));
        drop(third);
        assert_eq!(caps.admit(a).err(), Some(Limit::Client));
        assert!(caps.admit(b).is_ok());
    }

    #[test]
    fn a_proxy_is_held_only_to_the_overall_cap() {
        let proxy = ip("10.0.0.9");
        let caps = caps(3, 1, vec![proxy]);
        let held: Vec<_> = (0..3).map(|_| busy(&caps, proxy)).collect();
        assert_eq!(caps.admit(proxy).err(), Some(Limit::Everyone));
        drop(held);
        assert!(caps.lock().by_client.is_empty());
        assert_eq!(caps.lock().open, 0);
        assert!(caps.lock().idle.keys.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_makes_room_lingering_then_kept_alive_then_new() {
        let caps = caps(5, 5, Vec::new());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let tick = || tokio::time::advance(Duration::from_secs(1));
        let new = caps.admit(a).map(|a| a.connection).unwrap();
        tick().await;
        let (_busy, _in_flight) = busy(&caps, a);
        let (answered_later, in_flight) = busy(&caps, a);
        tick().await;
        let answered_first = kept_alive(&caps, a);
        tick().await;
        drop(in_flight);
        tick().await;
        let lingering = kept_alive(&caps, a);
        lingering.lingering();
        tick().await;

        let mut closed = Vec::new();
        let mut admitted = Vec::new();
        for _ in 0..4 {
            let (connection, limit, notice) = made_room(caps.admit(b));
            assert_eq!(limit, Limit::Everyone);
            assert!(notice.evicted.load(Ordering::Acquire));
            closed.push(notice);
            admitted.push(connection);
        }
        let expected = [&lingering, &answered_first, &answered_later, &new];
        for (notice, connection) in closed.iter().zip(expected) {
            assert!(Arc::ptr_eq(notice, &connection.notice));
        }
        // The busy one and the four admitted hold the places.
        assert_eq!(caps.lock().open, 5);
        assert_eq!(caps.lock().closing, 4);
        drop(admitted);
        drop((new, answered_later, answered_first, lingering));
        assert_eq!(caps.lock().closing, 0);
        assert_eq!(caps.lock().open, 1);
    }

    #[test]
    fn a_client_past_its_share_closes_its_own_idle_one_never_a_busy_one_nor_anothers() {
        let caps = caps(10, 2, Vec::new());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let others = kept_alive(&caps, b);
        let (_busy, _in_flight) = busy(&caps, a);
        let idle = kept_alive(&caps, a);
        let (newest, limit, notice) = made_room(caps.admit(a));
        assert_eq!(limit, Limit::Client);
        assert!(Arc::ptr_eq(&notice, &idle.notice));
        assert!(!others.evicted());
        // The newest begins a request: nothing of the client's is idle any more.
        let _newest_request = newest.begin(100);
        assert_eq!(caps.admit(a).err(), Some(Limit::Client));
        assert_eq!(caps.lock().by_client[&a], 2);
    }

    #[test]
    fn a_request_that_comes_as_its_connection_is_closed_to_make_room_is_its_last() {
        let caps = caps(1, 1, Vec::new());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let idle = kept_alive(&caps, a);
        let _newcomer = made_room(caps.admit(b));
        let (_in_flight, last) = idle.begin(100);
        assert!(last, "answered with connection: close");
    }

    #[test]
    fn places_are_not_made_while_too_many_closed_sockets_are_still_open() {
        let caps = caps(1, 1, Vec::new());
        let mut closing = vec![caps.admit(ip("10.0.0.1")).unwrap().connection];
        for i in 0..CLOSING_AT_MOST {
            let (connection, _, _) = made_room(caps.admit(ip("10.0.0.1")));
            closing.push(connection);
            assert_eq!(caps.lock().closing, i + 1);
        }
        assert_eq!(caps.admit(ip("10.0.0.2")).err(), Some(Limit::Everyone));
        // The first closed socket goes: room can be made again.
        closing.remove(0);
        made_room(caps.admit(ip("10.0.0.2")));
    }

    /// Room for 10 connections, a header timeout of `header_seconds` and an idle
    /// timeout of 60 s.
    fn settings(header_seconds: u64) -> ServeSettings {
        ServeSettings {
            header_read_timeout: Duration::from_secs(header_seconds),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10,
            max_connections_per_client: 10,
            max_requests_per_connection: 100,
            proxies: Vec::new(),
            stalled_client_timeout: Duration::from_secs(30),
        }
    }

    /// A client socket and the server's end of it, watched with a 10 s header and a
    /// 60 s idle timeout.
    async fn watched_pair() -> (TcpStream, Watched, Arc<Connection>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let connection = caps(10, 10, Vec::new())
            .admit(peer.ip())
            .map(|a| a.connection)
            .unwrap();
        let watched = Watched::new(server, connection.clone(), &settings(10));
        (client, watched, connection)
    }

    /// Sends `bytes` after `wait` from a task of its own; the client comes back.
    fn send_later(
        mut client: TcpStream,
        wait: Duration,
        bytes: &'static [u8],
    ) -> tokio::task::JoinHandle<TcpStream> {
        use tokio::io::AsyncWriteExt;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            client.write_all(bytes).await.unwrap();
            client
        })
    }

    /// What the next read of `watched` brings, and how long it took.
    async fn read(watched: &mut Watched) -> (io::Result<Vec<u8>>, Duration) {
        use tokio::io::AsyncReadExt;
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let read = watched.read(&mut buf).await.map(|n| buf[..n].to_vec());
        (read, start.elapsed())
    }

    fn timed_out(read: (io::Result<Vec<u8>>, Duration)) -> Duration {
        let (read, after) = read;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        after
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_must_arrive_within_the_header_timeout_from_connecting() {
        let (_client, mut watched, _) = watched_pair().await;
        assert_eq!(timed_out(read(&mut watched).await), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_timed_here_while_a_request_is_in_flight_and_then_the_idle_timeout() {
        let (client, mut watched, connection) = watched_pair().await;
        // The body and the answer have limits of their own.
        let (in_flight, _) = connection.begin(100);
        let client = send_later(client, Duration::from_secs(300), b"late body");
        let (got, after) = read(&mut watched).await;
        assert_eq!(
            (got.unwrap(), after),
            (b"late body".to_vec(), Duration::from_secs(300))
        );
        let _client = client.await.unwrap();
        drop(in_flight);
        assert_eq!(timed_out(read(&mut watched).await), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_gets_the_header_timeout_from_its_first_byte() {
        let (client, mut watched, connection) = watched_pair().await;
        drop(connection.begin(100));
        // Idle for 30 s (under the idle timeout), then half a head.
        let client = send_later(client, Duration::from_secs(30), b"GET / HT");
        let (got, after) = read(&mut watched).await;
        assert_eq!(
            (got.unwrap(), after),
            (b"GET / HT".to_vec(), Duration::from_secs(30))
        );
        let _client = client.await.unwrap();
        assert_eq!(timed_out(read(&mut watched).await), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_is_no_longer_watched() {
        let (client, mut watched, connection) = watched_pair().await;
        connection.upgraded.store(true, Ordering::Release);
        let client = send_later(client, Duration::from_secs(3600), b"frame");
        let (got, after) = read(&mut watched).await;
        assert_eq!(
            (got.unwrap(), after),
            (b"frame".to_vec(), Duration::from_secs(3600))
        );
        drop(client.await.unwrap());
    }

    /// Closes `watched` as hyper does after its last answer; how long the close lingered.
    async fn close(watched: &mut Watched) -> Duration {
        use tokio::io::AsyncWriteExt;
        let start = Instant::now();
        watched.shutdown().await.unwrap();
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_close_shuts_the_write_side_and_waits_for_a_quiet_client_only_so_long() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut watched, _) = watched_pair().await;
        assert_eq!(close(&mut watched).await, LINGER_QUIET);
        assert_eq!(
            client.read(&mut [0u8; 8]).await.unwrap(),
            0,
            "the end was sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_close_ends_when_the_client_closes_and_in_all_within_its_bound() {
        use tokio::io::AsyncWriteExt;
        let (client, mut watched, _) = watched_pair().await;
        drop(client);
        assert_eq!(close(&mut watched).await, Duration::ZERO);

        // A client that never stops sending, a byte a second.
        let (mut client, mut watched, _) = watched_pair().await;
        let sender = tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        assert_eq!(close(&mut watched).await, LINGER_AT_MOST);
        drop(watched);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn hyper_closes_a_kept_alive_connection_idle_timeout_after_its_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Past the idle timeout: only the idle timer may close the connection.
        let settings = settings(600);
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, settings, stop.clone()));
        let mut client = TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = client.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed before the answer");
            answer.extend_from_slice(&chunk[..n]);
        }
        let answered = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(120), client.read(&mut chunk))
            .await
            .expect("closed once idle");
        assert_eq!(closed.unwrap(), 0);
        assert_eq!(answered.elapsed(), Duration::from_secs(60));
        stop.cancel();
        server.await.unwrap();
    }

    #[test]
    fn a_limit_already_high_enough_is_left_alone() {
        assert_eq!(fit_descriptor_limit(1, 1), 1);
    }
}
