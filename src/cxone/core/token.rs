//! The access-token cache both dialects share; how a token is got is the dialect's
//! [`TokenSource`] (v2: client credentials; `incontact`: discovery and the access-key
//! password grant).
//!
//! [`TokenCache`] reuses each token until 60 s before it expires. However many callers
//! want a token at once, at most one token request is in flight; callers that queued
//! behind it take its outcome. Tokens carry a generation, so a caller whose request was
//! refused (401) invalidates exactly the token it used: 200 callers refused with the
//! same revoked token cause one refresh.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::cxone::CxoneError;

/// How long before its expiry a token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Assumed lifetime when the token answer has no usable `expires_in` (OAuth only
/// recommends it): short enough that a token the server meant to be short-lived is not
/// held long; a revoked one is caught by the 401 refresh anyway.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// What one token request brought.
pub(crate) struct Fetched {
    pub secret: SecretString,
    /// `None` when the answer gave no usable lifetime.
    pub lifetime: Option<Duration>,
    /// The API base the token is meant for, when the dialect learns it with the token.
    pub base_url: Option<Arc<str>>,
}

/// How a dialect gets a token. The cache calls it for one caller at a time.
#[async_trait]
pub(crate) trait TokenSource: fmt::Debug + Send + Sync + 'static {
    async fn fetch(&self) -> Result<Fetched, CxoneError>;
}

/// A bearer token as handed to one API call.
#[derive(Clone)]
pub(crate) struct AccessToken {
    secret: SecretString,
    generation: u64,
    base_url: Option<Arc<str>>,
}

impl AccessToken {
    /// The value to put after `Bearer `. Call only where the header is built.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Which token this is; pass it to [`TokenCache::invalidate`] after a 401.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The API base URL this token is meant for, when its source named one.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.generation)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A token with its expiry bookkeeping.
struct Cached {
    token: AccessToken,
    /// From here on the token is replaced before use.
    refresh_at: Instant,
    /// From here on the server no longer accepts it.
    expires_at: Instant,
}

impl Cached {
    /// `requested_at` is when the token request was sent: the lifetime counts from the
    /// server's clock, which started no earlier than that.
    fn new(token: AccessToken, requested_at: Instant, lifetime: Duration) -> Cached {
        Cached {
            token,
            refresh_at: requested_at + lifetime.saturating_sub(REFRESH_MARGIN),
            expires_at: requested_at + lifetime,
        }
    }

    fn fresh_at(&self, now: Instant) -> bool {
        now < self.refresh_at
    }

    fn valid_at(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

struct CacheState {
    current: Option<Cached>,
    /// Generation of the last token issued; the next one gets `generation + 1`.
    generation: u64,
    /// The error of the last token request, if it failed.
    last_failure: Option<CxoneError>,
}

/// The token cache of one set of credentials.
pub(crate) struct TokenCache {
    source: Box<dyn TokenSource>,
    /// Held across the token request: that is what makes it single-flight.
    state: tokio::sync::Mutex<CacheState>,
    /// Counts finished token requests, so a caller can tell whether one finished while
    /// it waited for the lock (and then take that outcome instead of sending another).
    requests_done: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(source: impl TokenSource) -> TokenCache {
        TokenCache {
            source: Box::new(source),
            state: tokio::sync::Mutex::new(CacheState {
                current: None,
                generation: 0,
                last_failure: None,
            }),
            requests_done: AtomicU64::new(0),
        }
    }

    /// A token fit for use now: the cached one, or a fresh one.
    pub(crate) async fn token(&self) -> Result<AccessToken, CxoneError> {
        let seen = self.requests_done.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = &state.current
            && cached.fresh_at(now)
        {
            return Ok(cached.token.clone());
        }
        if self.requests_done.load(Ordering::Acquire) != seen {
            // A token request finished while we queued for the lock. Its outcome is as
            // new as one we would get: share it, so a crowd of callers never turns
            // into a crowd of token requests, whether that request failed or brought
            // a token that is already inside the refresh margin (short lifetimes).
            if let Some(err) = &state.last_failure {
                return Err(err.clone());
            }
            if let Some(cached) = &state.current
                && cached.valid_at(now)
            {
                return Ok(cached.token.clone());
            }
        }
        let requested_at = Instant::now();
        let outcome = self.source.fetch().await;
        self.requests_done.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(fetched) => {
                state.generation += 1;
                let lifetime = fetched.lifetime.unwrap_or(DEFAULT_LIFETIME);
                let token = AccessToken {
                    secret: fetched.secret,
                    generation: state.generation,
                    base_url: fetched.base_url,
                };
                tracing::debug!(
                    generation = token.generation,
                    lifetime_s = lifetime.as_secs(),
                    "got an access token"
                );
                state.current = Some(Cached::new(token.clone(), requested_at, lifetime));
                state.last_failure = None;
                Ok(token)
            }
            Err(err) => {
                state.last_failure = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Drops the cached token if it is still `generation`: the platform refused it.
    /// A newer token (someone else already refreshed) is kept.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|cached| cached.token.generation == generation)
        {
            tracing::debug!(generation, "dropping the refused access token");
            state.current = None;
        }
    }

    /// Brings the cached token's renewal time to now, as if its lifetime had run down to
    /// the refresh margin; it stays valid until its expiry (tests).
    #[cfg(test)]
    pub(crate) async fn due_for_renewal(&self) {
        if let Some(cached) = &mut self.state.lock().await.current {
            cached.refresh_at = Instant::now();
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_replaced_sixty_seconds_before_expiry() {
        // Expiry arithmetic only: a paused runtime cannot drive real HTTP requests
        // (it would jump to their timeouts), so the bookkeeping is tested on its own.
        let start = Instant::now();
        let token = AccessToken {
            secret: SecretString::from("t"),
            generation: 1,
            base_url: None,
        };
        let cached = Cached::new(token.clone(), start, Duration::from_secs(3600));
        assert!(cached.fresh_at(start + Duration::from_secs(3539)));
        assert!(!cached.fresh_at(start + Duration::from_secs(3540)));
        assert!(cached.valid_at(start + Duration::from_secs(3599)));
        assert!(!cached.valid_at(start + Duration::from_secs(3600)));
        let short = Cached::new(token, start, Duration::from_secs(60));
        assert!(!short.fresh_at(start));
    }
}
