//! Who may open the feed: browser tickets, and the refusal when a caller holds too
//! many tickets or streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::LiveSettings;
use crate::config::api_tokens::Role;
use crate::config::live::MAX_TICKETS;

/// How long a ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// What a caller refused a stream is told to wait: streams end when screens close,
/// which nothing predicts.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(30);

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
        Tickets::new(LiveSettings::default().max_tickets_per_caller)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
