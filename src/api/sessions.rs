//! Browser sessions: what stands behind a session cookie (`wfmd_session`), which
//! `POST /v1/session` opens for a bearer token ([`super::sign_in`]).
//!
//! The session id is 32 random bytes; wfmd keeps only its SHA-256, with what the
//! session stands for (the token's entry, see [`super::auth::Credentials`]) and its
//! expiry (`server.session_ttl`, enforced here as well as by the cookie's lifetime).
//! Sessions live in the daemon's memory: a restart signs every browser out, and among
//! several instances (`[ha]`) a session is known only to the instance that opened it.
//! Neither a token nor a session id is ever logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The session cookie's name.
pub const COOKIE: &str = "wfmd_session";

/// The route that opens and ends sessions.
const PATH: &str = "/v1/session";

/// The most sessions held at once; past it, the one closest to its end makes room.
/// Far more browsers than a contact centre has, and a bound on what sign-ins can fill.
const MAX_SESSIONS: usize = 50_000;

/// Whether `path` (a route template, a tenant's copy too) is the session's: open under
/// `/v1`, as a sign-in has no session yet and a sign-out must work for an ended one.
pub(super) fn is_session_path(path: &str) -> bool {
    path == PATH || super::tenancy::tenant_path(PATH).is_some_and(|copy| copy == path)
}

/// One open session, standing for `E`.
struct Session<E> {
    entry: E,
    expires: Instant,
}

/// The open sessions, by the SHA-256 of their id, each standing for an `E`.
pub(super) struct Sessions<E> {
    ttl: Duration,
    table: Mutex<HashMap<[u8; 32], Session<E>>>,
}

impl<E: Clone> Sessions<E> {
    pub(super) fn new(ttl: Duration) -> Sessions<E> {
        Sessions {
            ttl,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session<E>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `entry`, good for the ttl from now (tokio's clock): its id.
    pub(super) fn open(&self, entry: E) -> String {
        let now = Instant::now();
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut table = self.lock();
        table.retain(|_, session| session.expires > now);
        if table.len() >= MAX_SESSIONS
            && let Some(first) = table
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(key, _)| *key)
        {
            table.remove(&first);
        }
        table.insert(
            digest(&id),
            Session {
                entry,
                expires: now + self.ttl,
            },
        );
        id
    }

    /// What the session `id` stands for, while it lasts.
    pub(super) fn holder(&self, id: &str) -> Option<E> {
        let key = digest(id);
        let mut table = self.lock();
        match table.get(&key) {
            Some(session) if session.expires > Instant::now() => Some(session.entry.clone()),
            Some(_) => {
                table.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`, if it is open.
    pub(super) fn end(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    /// Ends every session whose entry `still` refuses; returns how many ended.
    pub(super) fn keep_only(&self, still: impl Fn(&E) -> bool) -> usize {
        let mut table = self.lock();
        let before = table.len();
        table.retain(|_, session| still(&session.entry));
        before - table.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The SHA-256 of `text` (a session id, a token).
pub(super) fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The session id the request's `Cookie` headers carry, if any (the first, should a
/// browser send the name twice).
pub(super) fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test(start_paused = true)]
    async fn a_session_lasts_its_ttl_and_ends_when_signed_out() {
        let sessions = Sessions::new(Duration::from_secs(600));
        let first = sessions.open("desk");
        let second = sessions.open("desk");
        assert_ne!(first, second);
        assert_eq!(first.len(), 64, "32 bytes, in hex");
        assert!(sessions.holder("not-a-session").is_none());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(sessions.holder(&first), Some("desk"));
        sessions.end(&second);
        assert!(sessions.holder(&second).is_none(), "signed out");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(sessions.holder(&first).is_none(), "expired");
        assert_eq!(sessions.len(), 0, "an expired session is forgotten");
        let kept = sessions.open("desk");
        let ended = sessions.open("wall");
        assert_eq!(sessions.keep_only(|entry| *entry == "desk"), 1);
        assert_eq!(
            (sessions.holder(&kept), sessions.holder(&ended)),
            (Some("desk"), None)
        );
    }

    #[test]
    fn the_session_id_is_read_from_the_cookie_header_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; wfmd_session=ab12 ; lang=en"),
        );
        assert_eq!(presented(&headers), Some("ab12"));
        headers.insert(header::COOKIE, HeaderValue::from_static("wfmd_session="));
        assert_eq!(presented(&headers), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
