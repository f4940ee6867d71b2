//! Who is calling, and whether they may: bearer tokens, roles, and the loopback rule.
//!
//! A caller presents `Authorization: Bearer <token>`. wfmd hashes it with SHA-256 and
//! compares the digest with every configured `token_sha256` in constant time, so
//! neither the comparison nor an early exit tells an attacker how close a guess was.
//! The role a route needs is not written here: it is the `security` scope of the
//! route's `#[utoipa::path]` ([`AccessTable::from_spec`]), so the served OpenAPI
//! document and the enforcement cannot disagree, and a route that declares no access
//! stops the router from being built.
//!
//! - no token, or not a configured one: 401 with `WWW-Authenticate: Bearer`;
//! - a role weaker than the route needs: 403;
//! - every path under `/v1` needs a valid token, even one with no route (404) or the
//!   wrong method (405), so unauthenticated callers learn nothing from `/v1`.
//!
//! A browser may instead sign in once (`POST /v1/session`, see `api::sign_in`): its
//! session cookie then stands for the token it was opened with, as the token would, and
//! the `Authorization` header wins when both come. The tokens and the sessions are held
//! together ([`Credentials`]), so a SIGHUP that changes or removes a token ends its
//! sessions in the same step.
//!
//! With no tokens configured the API is open, and therefore bound to loopback only
//! ([`listen_address`]); callers are then `local` with every right.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::tenant::TenantId;

use super::error::Problem;
use super::roles::{self, BEARER};
use super::sessions::{self, Sessions};
use super::tenancy::TenantScope;
use crate::config::api_tokens::{ApiTokenConfig, Role};
use crate::telemetry::names::API_REFUSALS_TOTAL;

/// The actor of changes made when no tokens are configured.
pub const LOCAL_CALLER: &str = "local";

/// The authenticated caller of a request: the token's name and role.
///
/// Handlers take it as an argument; its name is the actor of every change they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub role: Role,
    /// The tenants the caller may act on; `None`, every one.
    pub tenants: Option<Arc<[TenantId]>>,
}

impl Caller {
    /// Whether the caller may act on tenant `id`.
    pub fn holds(&self, id: &TenantId) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|tenants| tenants.contains(id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // Only `authorize` inserts it; a handler asking for it on an open route is a
            // bug, answered as one rather than run without knowing who called.
            Problem::internal(&"the route has no authenticated caller")
        })
    }
}

/// Whose share of the per-caller limits (live tickets and streams) a request counts
/// in: `token:NAME` for a token's holder; without tokens, when every caller is the one
/// local admin, `address:IP` of the client, so local programs are told apart as far as
/// they can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerKey(pub Arc<str>);

impl CallerKey {
    fn of(caller: &Caller, open: bool, request: &Request) -> CallerKey {
        if !open {
            return CallerKey(format!("token:{}", caller.name).into());
        }
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(
                || "unknown".to_owned(),
                |c| c.0.ip().to_canonical().to_string(),
            );
        CallerKey(format!("address:{address}").into())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CallerKey>()
            .cloned()
            .ok_or_else(|| Problem::internal(&"the route has no authenticated caller"))
    }
}

/// A caller proven by other means than the `Authorization` header (a feed ticket,
/// redeemed by the layer in front of [`authorize`]); the route's role still applies.
#[derive(Debug, Clone)]
pub struct Preauthenticated(pub Caller);

/// One configured token. A session holds a copy, and acts only while an equal entry
/// is configured: a changed name, role, tenants or token ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenEntry {
    name: Arc<str>,
    digest: [u8; 32],
    role: Role,
    tenants: Option<Arc<[TenantId]>>,
}

impl TokenEntry {
    pub(super) fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            role: self.role,
            tenants: self.tenants.clone(),
        }
    }
}

/// What another instance that handed a request on (`[ha]`, see [`super::forward`])
/// says of it, once proven with the cluster key: here, beside the caller it names, as
/// [`authorize`] acts for that caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOn {
    /// Its `ha.instance_id`.
    pub by: String,
    /// The address of the client that asked it.
    pub client: IpAddr,
    /// When, in Unix seconds.
    pub at: i64,
    /// The name of the configured token it let the request in with (`None` where no
    /// tokens are configured): the caller, as a session cookie only it knows proved.
    pub caller: Option<String>,
}

/// The configured tokens, by digest.
pub struct ApiTokens {
    entries: Vec<TokenEntry>,
}

impl ApiTokens {
    pub fn from_config(tokens: &[ApiTokenConfig]) -> anyhow::Result<ApiTokens> {
        let entries = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let problem = |field: &str, e: String| {
                    anyhow::anyhow!("api_tokens[{i}] (\"{}\").{field} {e}", token.name)
                };
                Ok(TokenEntry {
                    name: token.name.as_str().into(),
                    digest: token.digest().map_err(|e| problem("token_sha256", e))?,
                    role: token.role().map_err(|e| problem("role", e))?,
                    tenants: token.tenants.as_deref().map(Arc::from),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ApiTokens { entries })
    }

    /// Whether the API is open (no tokens configured).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller the `Authorization` header proves, or why it proves none.
    #[cfg(test)]
    fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        if self.entries.is_empty() {
            return Ok(local_caller());
        }
        let digest = presented(headers)?;
        self.entry(&digest)
            .map(TokenEntry::caller)
            .ok_or(Refusal::Invalid)
    }

    /// The entry of the token whose SHA-256 is `digest`.
    pub(super) fn entry(&self, digest: &[u8; 32]) -> Option<&TokenEntry> {
        // Every entry is compared, matching or not, so the time taken does not depend on
        // where (or whether) the token is configured.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest[..].ct_eq(&digest[..])) {
                found = Some(entry);
            }
        }
        found
    }

    /// The entry named `name`.
    fn named(&self, name: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|entry| &*entry.name == name)
    }

    /// Whether an entry equal to `entry` is configured.
    fn holds(&self, entry: &TokenEntry) -> bool {
        self.entry(&entry.digest).is_some_and(|held| held == entry)
    }
}

/// The caller of every request when no tokens are configured.
fn local_caller() -> Caller {
    Caller {
        name: LOCAL_CALLER.into(),
        role: Role::Admin,
        tenants: None,
    }
}

/// The configured tokens and the browser sessions opened with them, which a SIGHUP
/// replaces together ([`Credentials::reload`]). Shared by every tenant's routes.
pub struct Credentials {
    tokens: RwLock<Arc<ApiTokens>>,
    pub(super) sessions: Sessions<TokenEntry>,
    /// `server.proxies`: the clients whose `X-Forwarded-Proto` is believed (a session
    /// cookie is `Secure` when the browser reached the proxy over HTTPS).
    pub(super) proxies: Vec<IpAddr>,
}

impl Credentials {
    /// `tokens`, with sessions lasting `session_ttl` (`server.session_ttl`), behind the
    /// reverse proxies `proxies` (`server.proxies`).
    pub fn new(tokens: ApiTokens, session_ttl: Duration, proxies: &[IpAddr]) -> Credentials {
        Credentials {
            tokens: RwLock::new(Arc::new(tokens)),
            sessions: Sessions::new(session_ttl),
            proxies: proxies.iter().map(IpAddr::to_canonical).collect(),
        }
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<ApiTokens> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the API is open (no tokens configured).
    pub fn is_open(&self) -> bool {
        self.tokens().is_empty()
    }

    /// Puts `tokens` (a re-read `[[api_tokens]]`) in force and ends every session whose
    /// token is no longer configured as it was; returns how many ended. Refused, the
    /// tokens in force kept, when it would open a closed API or close an open one: the
    /// listener was bound for one or the other (loopback only without tokens), and
    /// the served document says which, so that takes a restart.
    pub fn reload(&self, tokens: &[ApiTokenConfig]) -> anyhow::Result<usize> {
        let tokens = ApiTokens::from_config(tokens)?;
        let mut current = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if current.is_empty() != tokens.is_empty() {
            anyhow::bail!(
                "[[api_tokens]] went from {} to {}: the API's listener and its document \
                 were set up for the one or the other, so this takes a restart; the tokens \
                 in force are kept",
                if current.is_empty() { "none" } else { "some" },
                if tokens.is_empty() { "none" } else { "some" },
            );
        }
        let ended = self.sessions.keep_only(|entry| tokens.holds(entry));
        *current = Arc::new(tokens);
        Ok(ended)
    }

    /// The caller the request's `Authorization` header proves; without one, the caller
    /// another instance that handed the request on let it in as (`handed`, proven with
    /// the cluster key: a session only that instance knows), or else its session cookie;
    /// or why none proves one.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        handed: Option<&HandedOn>,
    ) -> Result<Caller, Refusal> {
        let tokens = self.tokens();
        if tokens.is_empty() {
            return Ok(local_caller());
        }
        match presented(headers) {
            Ok(digest) => tokens
                .entry(&digest)
                .map(TokenEntry::caller)
                .ok_or(Refusal::Invalid),
            Err(Refusal::Missing) if let Some(name) = handed.and_then(|h| h.caller.as_deref()) => {
                tokens
                    .named(name)
                    .map(TokenEntry::caller)
                    .ok_or(Refusal::Invalid)
            }
            Err(Refusal::Missing) => match sessions::presented(headers) {
                Some(id) => self
                    .sessions
                    .holder(id)
                    .filter(|entry| tokens.holds(entry))
                    .map(|entry| entry.caller())
                    .ok_or(Refusal::SessionEnded),
                None => Err(Refusal::Missing),
            },
            Err(refusal) => Err(refusal),
        }
    }
}

/// The SHA-256 digest of the bearer token `headers` present, or why they present none.
fn presented(headers: &HeaderMap) -> Result<[u8; 32], Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Refusal::Missing),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(Refusal::Malformed),
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Refusal::Malformed)?;
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// `server.metrics_token`, as its digest: what `/metrics` asks of a scraper when set.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the digest: a weak token could be found from it.
        f.write_str("MetricsToken(..)")
    }
}

impl MetricsToken {
    pub fn new(token: &secrecy::SecretString) -> MetricsToken {
        use secrecy::ExposeSecret;
        MetricsToken(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    /// Nothing when `headers` present the token (compared in constant time), else the
    /// 401 that asks for it.
    #[allow(clippy::result_large_err)]
    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        match presented(headers) {
            Ok(digest) if bool::from(self.0[..].ct_eq(&digest[..])) => Ok(()),
            refused => {
                let reason = refused.err().map_or("invalid", Refusal::reason);
                metrics::counter!(API_REFUSALS_TOTAL, "reason" => reason).increment(1);
                Err(invalid_credential(
                    "/metrics needs `Authorization: Bearer <server.metrics_token>`",
                ))
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Malformed,
    Invalid,
    /// A session cookie that is unknown, expired, signed out, or whose token changed.
    SessionEnded,
    Forbidden {
        required: Role,
        role: Role,
    },
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Invalid => "invalid",
            Refusal::SessionEnded => "session",
            Refusal::Forbidden { .. } => "forbidden",
        }
    }

    fn into_response(self) -> Response {
        match self {
            Refusal::Missing => challenged(
                unauthorized("this route needs `Authorization: Bearer <token>`"),
                "Bearer realm=\"wfmd\"",
            ),
            Refusal::Malformed => challenged(
                unauthorized("the Authorization header must be `Bearer <token>`, once"),
                "Bearer realm=\"wfmd\", error=\"invalid_request\"",
            ),
            Refusal::Invalid => {
                invalid_credential("the bearer token is not one of the configured api_tokens")
            }
            Refusal::SessionEnded => invalid_credential(
                "the session has ended (it expired, was signed out, its token changed, or \
                 wfmd restarted); sign in again",
            ),
            Refusal::Forbidden { required, role } => challenged(
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "The token's role does not allow this",
                    format!("this route needs the {required} role; the token is a {role}"),
                )
                .with("required_role", required.as_str())
                .with("role", role.as_str()),
                &format!(
                    "Bearer realm=\"wfmd\", error=\"insufficient_scope\", scope=\"{required}\""
                ),
            ),
        }
    }
}

/// The 401 of a credential that proves no caller: a token that is not configured, or a
/// feed ticket that is unknown, expired or spent ([`super::live::ticket_gate`]).
pub(super) fn invalid_credential(detail: &str) -> Response {
    challenged(
        unauthorized(detail),
        "Bearer realm=\"wfmd\", error=\"invalid_token\"",
    )
}

/// `problem` with the `WWW-Authenticate` challenge RFC 6750 asks of a refusal.
fn challenged(problem: Problem, challenge: &str) -> Response {
    let mut response = problem.into_response();
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authentication required",
        detail,
    )
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, readiness, metrics, the OpenAPI document).
    Open,
    /// A token with at least this role.
    Role(Role),
}

/// The access of every routed operation, read from the OpenAPI document.
#[derive(Debug, Default)]
pub struct AccessTable {
    operations: HashMap<(Method, String), Access>,
}

impl AccessTable {
    /// Reads each operation's `security`: `security(())` is open, `security(("bearer" =
    /// [ROLE]))` needs that role. An operation with no `security`, with anything else
    /// in it, or open under `/v1`, is an error naming the route.
    pub fn from_spec(spec: &utoipa::openapi::OpenApi) -> Result<AccessTable, String> {
        let mut table = AccessTable::default();
        for (path, item) in &spec.paths.paths {
            for (method, operation) in roles::operations(item) {
                let route = format!("{method} {path}");
                let requirements: Vec<_> = operation
                    .security
                    .as_ref()
                    .ok_or_else(|| {
                        format!(
                            "{route} declares no access: give its #[utoipa::path] \
                             `security((\"bearer\" = [ROLE]))`, or `security(())` if it is open"
                        )
                    })?
                    .iter()
                    .map(roles::requirement)
                    .collect();
                let access = match requirements.as_slice() {
                    [open] if open.is_empty() => Access::Open,
                    [needs] if needs.len() == 1 => match needs.get(BEARER).map(Vec::as_slice) {
                        Some([role]) => Access::Role(
                            role.parse()
                                .map_err(|e| format!("{route}: the security scope {e}"))?,
                        ),
                        _ => return Err(format!("{route}: security must name one role")),
                    },
                    _ => {
                        return Err(format!(
                            "{route}: security must be one requirement, open or one role"
                        ));
                    }
                };
                if access == Access::Open && under_v1(path) && !sessions::is_session_path(path) {
                    return Err(format!("{route}: every /v1 route needs a role"));
                }
                table.operations.insert((method, path.clone()), access);
            }
        }
        Ok(table)
    }

    /// The access of `method` on the route template `path`; `HEAD` is served by `GET`.
    pub fn get(&self, method: &Method, path: &str) -> Option<Access> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.operations
            .get(&(method.clone(), path.to_owned()))
            .copied()
    }

    fn knows_path(&self, path: &str) -> bool {
        self.operations.keys().any(|(_, p)| p == path)
    }
}

fn under_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// What [`authorize`] needs.
pub struct Gate {
    pub credentials: Arc<Credentials>,
    pub access: Arc<AccessTable>,
}

/// Middleware on every route: authenticates the caller, checks the route's role, and
/// hands the [`Caller`] to the handler. A caller that does not hold the tenant the
/// dispatcher chose ([`TenantScope`]) is answered 404, as if it did not exist.
pub async fn authorize(
    State(gate): State<Arc<Gate>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = matched.as_ref().map(MatchedPath::as_str);
    // The span began before the dispatcher picked these routes.
    let span = tracing::Span::current();
    let path = request.uri().path();
    span.record("route", tracing::field::display(route.unwrap_or(path)));
    let tenant = TenantScope::of(request.extensions()).and_then(|scope| scope.tenant.clone());
    if let Some(tenant) = &tenant {
        span.record("tenant", tracing::field::display(tenant));
    }
    let required = match route.and_then(|route| gate.access.get(request.method(), route)) {
        Some(Access::Open) => {
            // Open routes need no token, but one that proves a caller lets the route
            // say more (`/readyz` shows its error text only to callers it knows).
            let handed = request.extensions().get::<HandedOn>();
            if let Ok(caller) = gate.credentials.authenticate(request.headers(), handed) {
                request.extensions_mut().insert(caller);
            }
            return next.run(request).await;
        }
        Some(Access::Role(role)) => Some(role),
        None => match route {
            // Routed but undescribed: only a plain `.route()` can do that, which
            // `api::router` never uses. Refused rather than served without a role.
            Some(route) if !gate.access.knows_path(route) => {
                return Problem::internal(&format!(
                    "{route} is routed but not in the OpenAPI document"
                ))
                .into_response();
            }
            // A known path with another method (405), or no route at all (404): under
            // /v1 only for authenticated callers.
            _ if under_v1(request.uri().path()) => None,
            _ => return next.run(request).await,
        },
    };
    let proven = request
        .extensions_mut()
        .remove::<Preauthenticated>()
        .map(|p| p.0);
    let outcome = proven.map_or_else(
        || {
            let handed = request.extensions().get::<HandedOn>();
            gate.credentials.authenticate(request.headers(), handed)
        },
        Ok,
    );
    if let Ok(caller) = &outcome {
        tracing::Span::current().record("caller", tracing::field::display(&caller.name));
        // Before the role: a 403 would tell the caller that the tenant exists.
        if tenant.as_ref().is_some_and(|t| !caller.holds(t)) {
            tracing::debug!(caller = %caller.name, "refused: the token does not hold the tenant");
            return super::error::no_such_tenant();
        }
    }
    let outcome = outcome.and_then(|caller| match required {
        Some(required) if !caller.role.allows(required) => Err(Refusal::Forbidden {
            required,
            role: caller.role,
        }),
        _ => Ok(caller),
    });
    match outcome {
        Ok(caller) => {
            let key = CallerKey::of(&caller, gate.credentials.is_open(), &request);
            request.extensions_mut().insert(key);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            metrics::counter!(API_REFUSALS_TOTAL, "reason" => refusal.reason()).increment(1);
            match refusal {
                Refusal::Missing => tracing::debug!("refused: no bearer token"),
                Refusal::Malformed | Refusal::Invalid => {
                    tracing::warn!(reason = refusal.reason(), "refused: bad bearer token")
                }
                Refusal::SessionEnded => tracing::debug!("refused: the session has ended"),
                Refusal::Forbidden { required, role } => {
                    tracing::warn!(%required, %role, "refused: role too weak")
                }
            }
            refusal.into_response()
        }
    }
}

/// The address to bind: `configured`, unless no tokens are configured and it is not a
/// loopback address, in which case the loopback address of the same family and port,
/// with the warning to log. An API anyone may use must not be reachable from other
/// hosts.
pub fn listen_address(configured: SocketAddr, tokens: usize) -> (SocketAddr, Option<String>) {
    if tokens > 0 || configured.ip().is_loopback() {
        return (configured, None);
    }
    let loopback = match configured.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let bound = SocketAddr::new(loopback, configured.port());
    let warning = format!(
        "no [[api_tokens]] are configured, so the API lets every caller do everything and \
         listens on loopback only: serving on {bound} instead of server.listen = \
         {configured}; add tokens (`wfmd token new NAME --role ROLE`) to serve other hosts"
    );
    (bound, Some(warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(entries: &[(&str, &str, &str)]) -> ApiTokens {
        let config: Vec<ApiTokenConfig> = entries
            .iter()
            .map(|(name, token, role)| ApiTokenConfig {
                name: (*name).into(),
                token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
                role: (*role).into(),
                tenants: None,
            })
            .collect();
        ApiTokens::from_config(&config).unwrap()
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_presented_token_is_matched_by_its_hash_to_its_name_and_role() {
        let tokens = tokens(&[
            ("desk", "t-desk", "supervisor"),
            ("audit", "t-audit", "admin"),
        ]);
        let caller = tokens.authenticate(&bearer("Bearer t-audit")).unwrap();
        assert_eq!(&*caller.name, "audit");
        assert_eq!(caller.role, Role::Admin);
        let caller = tokens.authenticate(&bearer("bearer  t-desk ")).unwrap();
        assert_eq!(&*caller.name, "desk");
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let tokens = tokens(&[("desk", "t-desk", "supervisor")]);
        assert_eq!(
            tokens.authenticate(&HeaderMap::new()),
            Err(Refusal::Missing)
        );
        for malformed in ["t-desk", "Basic dDpkZXNr", "Bearer ", "Bearer"] {
            assert_eq!(
                tokens.authenticate(&bearer(malformed)),
                Err(Refusal::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(
            tokens.authenticate(&bearer("Bearer t-des")),
            Err(Refusal::Invalid)
        );
        let mut twice = bearer("Bearer t-desk");
        twice.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t-desk"),
        );
        assert_eq!(tokens.authenticate(&twice), Err(Refusal::Malformed));
    }

    #[tokio::test]
    async fn a_reload_ends_the_sessions_of_changed_and_removed_tokens_only() {
        let entries = |list: &[(&str, &str, &str)]| -> Vec<ApiTokenConfig> {
            list.iter()
                .map(|(name, token, role)| ApiTokenConfig {
                    name: (*name).into(),
                    token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
                    role: (*role).into(),
                    tenants: None,
                })
                .collect()
        };
        let credentials = Credentials::new(
            tokens(&[
                ("desk", "t-desk", "supervisor"),
                ("wall", "t-wall", "viewer"),
                ("lead", "t-lead", "admin"),
            ]),
            Duration::from_secs(600),
            &[],
        );
        let open = |token: &str| {
            let entry = credentials
                .tokens()
                .entry(&sessions::digest(token))
                .unwrap()
                .clone();
            credentials.sessions.open(entry)
        };
        let (desk, wall, lead) = (open("t-desk"), open("t-wall"), open("t-lead"));
        let with_cookie = |id: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{}={id}", sessions::COOKIE)).unwrap(),
            );
            headers
        };
        assert_eq!(
            credentials
                .authenticate(&with_cookie(&wall), None)
                .map(|c| c.role),
            Ok(Role::Viewer)
        );
        // desk kept as it was, wall's role changed, lead removed.
        let ended = credentials
            .reload(&entries(&[
                ("desk", "t-desk", "supervisor"),
                ("wall", "t-wall", "supervisor"),
            ]))
            .unwrap();
        assert_eq!(ended, 2);
        let caller = credentials.authenticate(&with_cookie(&desk), None).unwrap();
        assert_eq!((&*caller.name, caller.role), ("desk", Role::Supervisor));
        for ended in [&wall, &lead] {
            assert_eq!(
                credentials.authenticate(&with_cookie(ended), None),
                Err(Refusal::SessionEnded)
            );
        }
        // A bearer header decides over the cookie.
        let mut both = with_cookie(&desk);
        both.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t-wall"),
        );
        let caller = credentials.authenticate(&both, None).unwrap();
        assert_eq!(&*caller.name, "wall");
        // Handed on by another instance that let it in as `desk` (a session only that
        // instance knows): acted for as `desk`; a name not configured is refused, and a
        // bearer header still decides.
        let handed = |caller: &str| HandedOn {
            by: "wfmd-b".into(),
            client: "127.0.0.1".parse().unwrap(),
            at: 0,
            caller: Some(caller.into()),
        };
        let unknown_session = with_cookie("0123abcd");
        let caller = credentials
            .authenticate(&unknown_session, Some(&handed("desk")))
            .unwrap();
        assert_eq!((&*caller.name, caller.role), ("desk", Role::Supervisor));
        assert_eq!(
            credentials.authenticate(&unknown_session, Some(&handed("lead"))),
            Err(Refusal::Invalid)
        );
        let caller = credentials
            .authenticate(&both, Some(&handed("desk")))
            .unwrap();
        assert_eq!(&*caller.name, "wall");
        // Going from tokens to none would open the API: refused, tokens kept.
        let refused = credentials.reload(&[]).unwrap_err().to_string();
        assert!(refused.contains("takes a restart"), "{refused}");
        assert!(!credentials.is_open());
    }

    #[test]
    fn without_tokens_everyone_is_the_local_admin() {
        let tokens = tokens(&[]);
        let caller = tokens.authenticate(&HeaderMap::new()).unwrap();
        assert_eq!(&*caller.name, LOCAL_CALLER);
        assert_eq!(caller.role, Role::Admin);
    }

    #[test]
    fn refusals_are_problems_with_a_bearer_challenge() {
        let response = Refusal::Invalid.into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        let response = Refusal::Forbidden {
            required: Role::Admin,
            role: Role::Viewer,
        }
        .into_response();
        assert_eq!(response.status(), 403);
    }

    mod declared {
        #[utoipa::path(get, path = "/v1/things", security(("bearer" = ["supervisor"])))]
        pub async fn with_role() {}
        #[utoipa::path(get, path = "/health", security(()))]
        pub async fn open() {}
        #[utoipa::path(post, path = "/v1/forgot")]
        pub async fn undeclared() {}
        #[utoipa::path(get, path = "/v1/open", security(()))]
        pub async fn open_v1() {}
        #[utoipa::path(get, path = "/v1/god", security(("bearer" = ["god"])))]
        pub async fn unknown_role() {}
        #[utoipa::path(get, path = "/v1/two", security(("bearer" = ["viewer", "admin"])))]
        pub async fn two_roles() {}
    }

    fn table(routes: utoipa_axum::router::UtoipaMethodRouter) -> Result<AccessTable, String> {
        let spec = utoipa_axum::router::OpenApiRouter::new()
            .routes(routes)
            .into_openapi();
        AccessTable::from_spec(&spec)
    }

    #[test]
    fn the_access_of_a_route_is_its_declared_security() {
        let with_role = table(utoipa_axum::routes!(declared::with_role)).unwrap();
        assert_eq!(
            with_role.get(&Method::GET, "/v1/things"),
            Some(Access::Role(Role::Supervisor))
        );
        assert_eq!(
            with_role.get(&Method::HEAD, "/v1/things"),
            Some(Access::Role(Role::Supervisor)),
            "HEAD is served by GET, so it needs GET's role"
        );
        assert_eq!(with_role.get(&Method::POST, "/v1/things"), None);
        let open = table(utoipa_axum::routes!(declared::open)).unwrap();
        assert_eq!(open.get(&Method::GET, "/health"), Some(Access::Open));
    }

    #[test]
    fn a_route_with_no_or_a_wrong_declaration_is_an_error_naming_it() {
        let cases = [
            (
                table(utoipa_axum::routes!(declared::undeclared)),
                "POST /v1/forgot declares no access",
            ),
            (
                table(utoipa_axum::routes!(declared::open_v1)),
                "GET /v1/open: every /v1 route needs a role",
            ),
            (
                table(utoipa_axum::routes!(declared::unknown_role)),
                "GET /v1/god: the security scope must be viewer, supervisor or admin",
            ),
            (
                table(utoipa_axum::routes!(declared::two_roles)),
                "GET /v1/two: security must name one role",
            ),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[tokio::test]
    async fn a_route_served_without_a_description_is_refused_not_opened() {
        use axum::body::Body;
        use tower::ServiceExt;

        let gate = Arc::new(Gate {
            credentials: Arc::new(Credentials::new(tokens(&[]), Duration::from_secs(60), &[])),
            access: table(utoipa_axum::routes!(declared::with_role))
                .unwrap()
                .into(),
        });
        let app = axum::Router::new()
            .route("/v1/things", axum::routing::get(|| async { "things" }))
            .route("/v1/plain", axum::routing::get(|| async { "plain" }))
            .layer(axum::middleware::from_fn_with_state(gate, authorize));
        let status = |uri: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
                app.oneshot(request).await.unwrap().status()
            }
        };
        assert_eq!(status("/v1/things").await, 200);
        assert_eq!(status("/v1/plain").await, 500);
    }

    #[test]
    fn every_route_of_the_api_declares_its_access() {
        let table = AccessTable::from_spec(&super::super::openapi_document()).unwrap();
        assert_eq!(table.get(&Method::GET, "/healthz"), Some(Access::Open));
        assert_eq!(
            table.get(&Method::POST, "/v1/agents/{agent_id}/transitions"),
            Some(Access::Role(Role::Supervisor))
        );
    }

    #[test]
    fn without_tokens_a_public_address_becomes_loopback_with_a_warning() {
        let (bound, warning) = listen_address("0.0.0.0:8080".parse().unwrap(), 0);
        assert_eq!(bound, "127.0.0.1:8080".parse().unwrap());
        let warning = warning.unwrap();
        assert!(warning.contains("0.0.0.0:8080"), "{warning}");
        assert!(warning.contains("127.0.0.1:8080"), "{warning}");

        let (bound, warning) = listen_address("[::]:9000".parse().unwrap(), 0);
        assert_eq!(bound, "[::1]:9000".parse().unwrap());
        assert!(warning.is_some());

        for (configured, tokens) in [("127.0.0.1:8080", 0), ("0.0.0.0:8080", 1)] {
            let configured: SocketAddr = configured.parse().unwrap();
            assert_eq!(listen_address(configured, tokens), (configured, None));
        }
    }
}
