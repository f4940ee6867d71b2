//! A follower hands the tenant's changes to its leader (`[ha]`): a request that changes
//! something (anything but GET, HEAD and OPTIONS; a live-feed ticket, which is this
//! instance's own, excepted) reaching an instance that does not lead the tenant is sent
//! on, as it came and after its caller was let in, to the leader's `advertise_url`, and
//! the leader's answer is given back as it came. The caller sees the same answer from
//! any instance, at the cost of one hop on the local network, and no queue of the
//! database's stands between them.
//!
//! The body is handed on as it arrives, held to its route's own limit (see
//! [`super::BodyLimits`]): one announced larger is answered 413 at once, one that grows
//! larger is cut off there and answered 413, so a follower never holds more than a
//! chunk of it.
//!
//! What the follower judged of the request (its `Host` and `Origin`, against the
//! follower's own name) and whom it came from travel with it, proven: the follower
//! signs the instance it is, the method, the target, the time and the client's address
//! with `ha.cluster_key` ([`ClusterKey`]), and the instance it reaches trusts them only
//! when the proof is valid and at most `FRESH_FOR_SECONDS` old ([`proven`], in front
//! of every route): a browser's change through a follower is not judged again against
//! the leader's host, and the leader counts the client's address, not the follower's.
//! Claims without a valid proof are taken off and the request is an ordinary one, so a
//! forged `X-Wfmd-Forwarded-By` gets nothing past the checks.
//!
//! The proof names the caller too: the configured token the follower let in, however it
//! was presented. A browser signed in at the follower holds a session only that
//! instance knows (see `api::sessions`); the leader acts for the token so named.
//!
//! The leader is looked up in the database once, and remembered until this instance's
//! looks at the leases see one change hands, or it fails to take a request (see
//! [`crate::cluster::lease::KnownLeader`]): a change handed on costs the follower no
//! statement of its own.
//!
//! A request is handed on once: one that arrives proven handed on at an instance that
//! does not lead either (the leader changed in between) is answered 503 with
//! `Retry-After`, as is one for a tenant nobody leads right now, or whose leader gave
//! no `advertise_url`.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use hyper::body::{Frame, SizeHint};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub use super::auth::HandedOn;
use super::error::Problem;
use super::tenancy::TenantScope;
use crate::domain::tenant::TenantId;
use crate::store::InstanceRole;

/// Names the instance that handed a request on.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-wfmd-forwarded-by");
/// The address of the client that asked the instance that handed the request on.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-wfmd-forwarded-for");
/// When the request was handed on, in Unix seconds.
pub const FORWARDED_AT: HeaderName = HeaderName::from_static("x-wfmd-forwarded-at");
/// The name of the configured token the instance that handed the request on let it in
/// with; absent where no tokens are configured.
pub const FORWARDED_CALLER: HeaderName = HeaderName::from_static("x-wfmd-forwarded-caller");
/// The proof that an instance handed the request on: HMAC-SHA-256 with
/// `ha.cluster_key` of the request's instance, method, target, time, client and caller
/// (hex).
pub const FORWARDED_PROOF: HeaderName = HeaderName::from_static("x-wfmd-forwarded-proof");

/// How far a proof's time may be from this instance's clock, either way: long enough
/// for a change that waited in the follower's queue, short enough that a captured proof
/// soon proves nothing.
const FRESH_FOR_SECONDS: i64 = 30;

/// `ha.cluster_key`, the key the instances share: a follower signs what it hands on with
/// it, and an instance trusts what was handed on only when the proof is valid. Its
/// `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct ClusterKey(Arc<SecretString>);

impl ClusterKey {
    pub fn new(key: SecretString) -> ClusterKey {
        ClusterKey(Arc::new(key))
    }

    /// The proof of `handed` for a request of `method` to `target` (its path and query).
    fn mac(&self, handed: &HandedOn, method: &Method, target: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        // No part can hold a line break (an id, a method, a request target, digits, an
        // address), so the lines cannot be shifted into one another.
        let message = format!(
            "wfmd handed on 2\n{}\n{method}\n{target}\n{}\n{}\n{}",
            handed.by,
            handed.at,
            handed.client,
            handed.caller.as_deref().unwrap_or("")
        );
        mac.update(message.as_bytes());
        mac
    }

    /// The headers that say `handed` of a request of `method` to `target`, proven.
    pub fn headers(
        &self,
        handed: &HandedOn,
        method: &Method,
        target: &str,
    ) -> Result<HeaderMap, axum::http::header::InvalidHeaderValue> {
        let proof = hex::encode(self.mac(handed, method, target).finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_BY, HeaderValue::from_str(&handed.by)?);
        headers.insert(
            FORWARDED_FOR,
            HeaderValue::from_str(&handed.client.to_string())?,
        );
        headers.insert(FORWARDED_AT, HeaderValue::from(handed.at));
        if let Some(caller) = &handed.caller {
            headers.insert(FORWARDED_CALLER, HeaderValue::from_str(caller)?);
        }
        headers.insert(FORWARDED_PROOF, HeaderValue::from_str(&proof)?);
        Ok(headers)
    }
}

/// What `request` proves it was handed on with, checked with `key` at `now` (Unix
/// seconds); the headers that claim it are taken off either way, so nothing after this
/// reads a claim that was not proven.
pub fn proven(key: Option<&ClusterKey>, request: &mut Request, now: i64) -> Option<HandedOn> {
    let [by, client, at, caller, proof] = [
        FORWARDED_BY,
        FORWARDED_FOR,
        FORWARDED_AT,
        FORWARDED_CALLER,
        FORWARDED_PROOF,
    ]
    .map(|name| take_one(request.headers_mut(), &name));
    // No claim at all: an ordinary request, nothing to say.
    let by = by?;
    let checked = (|| {
        let proof = proof
            .and_then(|proof| hex::decode(proof).ok())
            .ok_or("it carries no proof")?;
        let handed = HandedOn {
            by: by.clone(),
            client: client
                .and_then(|c| c.parse().ok())
                .ok_or("its client's address is missing or not an address")?,
            at: at
                .and_then(|at| at.parse().ok())
                .ok_or("its time is missing or not a number")?,
            caller,
        };
        if now.abs_diff(handed.at) > FRESH_FOR_SECONDS.unsigned_abs() {
            return Err(
                "its proof is too old or from the future (are the instances' clocks in step?)",
            );
        }
        let key = key.ok_or("this instance has no ha.cluster_key")?;
        let uri = request.uri();
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        // `verify_slice` compares in constant time.
        key.mac(&handed, request.method(), target)
            .verify_slice(&proof)
            .map_err(
                |_| "its proof is not valid (is ha.cluster_key the same on every instance?)",
            )?;
        Ok(handed)
    })();
    checked
        .inspect_err(|why| {
            // Said, as instances with different keys otherwise see only the browsers'
            // changes refused as cross-origin.
            tracing::warn!(
                claimed_by = %by.escape_debug(),
                "a request claims to be handed on by another instance, but {why}: it is taken \
                 as an ordinary request"
            );
        })
        .ok()
}

/// Takes `request`, proven handed on as `handed`, as its client's: the client's address
/// is the request's for all that tells callers apart, and the connection it came on
/// (the follower's) leaves the follower's address's share of
/// `server.max_connections_per_client`, as a proxy's would: the client was held to its
/// share where it connected, and one client must not use up the follower's share here.
pub fn received(handed: HandedOn, request: &mut Request) {
    tracing::debug!(by = %handed.by, client = %handed.client, "a request handed on by another instance");
    let extensions = request.extensions_mut();
    if let Some(connection) = extensions.get::<Arc<super::serve::Connection>>() {
        connection.streaming();
    }
    extensions.insert(ConnectInfo(SocketAddr::new(handed.client, 0)));
    extensions.insert(handed);
}

/// The header `name`'s value, taken off `headers`; `None` when it is absent, repeated
/// or not text.
fn take_one(headers: &mut HeaderMap, name: &HeaderName) -> Option<String> {
    let repeated = headers.get_all(name).iter().nth(1).is_some();
    let value = headers.remove(name)?;
    let value = value.to_str().ok()?.to_owned();
    (!repeated).then_some(value)
}

/// How long the leader may take to answer: a change waits for its turn at the
/// platform's request budget, as it would on the leader itself.
const TIMEOUT: Duration = Duration::from_secs(120);

/// What a tenant's routes need to hand requests to its leader.
#[derive(Clone)]
pub struct Forwarding {
    pub tenant: TenantId,
    /// This instance's `ha.instance_id`.
    pub instance: Arc<str>,
    pub http: reqwest::Client,
    /// The tenant's leader as last read, while no lease moved.
    pub leader: Arc<crate::cluster::lease::KnownLeader>,
}

/// The middleware (see the module's doc); the process's routes (no tenant) are
/// always answered here.
pub async fn to_leader(request: Request, next: Next) -> Response {
    let scope = TenantScope::of(request.extensions()).filter(|scope| scope.tenant.is_some());
    let Some(scope) = scope.cloned() else {
        return next.run(request).await;
    };
    let state = &scope.state;
    let Some(forwarding) = &state.forwarding else {
        return next.run(request).await;
    };
    // Live-feed tickets and browser sessions are this instance's own.
    let own = request.method().is_safe()
        || matches!(request.uri().path(), "/v1/live/tickets" | "/v1/session");
    if own || state.store.role() != InstanceRole::Follower {
        return next.run(request).await;
    }
    if let Some(handed) = request.extensions().get::<HandedOn>() {
        return unavailable(format!(
            "{} handed this on to this instance, which does not lead the tenant either \
             (its leader changed in between)",
            handed.by
        ));
    }
    // The route's own limit, before anything is read or the leader looked up: what
    // arrives past it is never held, let alone handed on.
    let limit = body_limit(&request);
    if content_length(&request).is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let known = &forwarding.leader;
    let leader = match known.leader(&state.store).await {
        Ok(Some(leader)) => leader,
        Ok(None) => return unavailable("no instance leads the tenant right now".into()),
        Err(error) => {
            tracing::warn!(%error, "cannot read which instance leads the tenant");
            return unavailable("cannot tell which instance leads the tenant".into());
        }
    };
    let Some(url) = leader.advertise_url else {
        return unavailable(format!(
            "the tenant's leader {} gave no ha.advertise_url to reach it by",
            leader.holder
        ));
    };
    let read = Arc::new(BodyRead::default());
    let capped = |body| Capped {
        body: Mutex::new(body),
        left: limit,
        read: read.clone(),
    };
    match hand_on(forwarding, &url, request, capped).await {
        Ok(response) => {
            // A leader that cannot take the change (it no longer leads, it stops) may
            // have moved: the next change reads it again.
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                known.forget();
            }
            response
        }
        Err(_) if read.over.load(Ordering::Acquire) => too_large(limit),
        Err(error) => {
            known.forget();
            if let Some(why) = read.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // The client's body broke off, not the leader.
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "The request body could not be read",
                    why,
                )
                .into_response();
            }
            tracing::warn!(leader = %leader.holder, %error, "cannot hand a request to the tenant's leader");
            unavailable(format!(
                "the tenant's leader {} did not answer: {error}",
                leader.holder
            ))
        }
    }
}

/// The most the request's route takes (see [`super::BodyLimits`]).
pub(super) fn body_limit(request: &Request) -> usize {
    let limits = request.extensions().get::<Arc<super::BodyLimits>>();
    let route = request.extensions().get::<MatchedPath>();
    match (limits, route) {
        (Some(limits), Some(route)) => limits.of(request.method(), route.as_str()),
        _ => super::BODY_LIMIT_BYTES,
    }
}

/// The length the request's head announces, if it announces one.
fn content_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The 413 of a body over its route's limit, as the route gives it, answered before
/// anything is handed on.
fn too_large(limit: usize) -> Response {
    Problem::body_too_large(limit).into_response()
}

/// How the reading of a handed-on body ended, when it ended early.
#[derive(Default)]
struct BodyRead {
    /// It went past the route's limit.
    over: AtomicBool,
    /// The client's body failed (cut off, too slow): why.
    failed: Mutex<Option<String>>,
}

/// A request body handed on as it arrives, never more than the route's limit of it: a
/// follower holds no more of a body in memory than the chunk in hand.
struct Capped {
    /// In a `Mutex` only to be `Sync`, as the HTTP client wants; only ever reached
    /// through `&mut self`, so never locked.
    body: Mutex<Body>,
    left: usize,
    read: Arc<BodyRead>,
}

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        let body = this.body.get_mut().unwrap_or_else(|p| p.into_inner());
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                if size > this.left {
                    this.read.over.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err("the body is over its route's limit".into())));
                }
                this.left -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.read.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(error.to_string());
                Poll::Ready(Some(Err(error.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .size_hint()
    }
}

/// Sends `request` to the leader at `base`, its body through `capped`, and gives back
/// its answer.
async fn hand_on(
    forwarding: &Forwarding,
    base: &str,
    request: Request,
    capped: impl FnOnce(Body) -> Capped,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    // The tenant's own path, which every instance serves whatever else it serves.
    let path = path_and_query.strip_prefix("/v1").unwrap_or(path_and_query);
    let url = reqwest::Url::parse(&format!(
        "{}/v1/tenants/{}{path}",
        base.trim_end_matches('/'),
        forwarding.tenant
    ))?;
    let body = reqwest::Body::wrap(capped(body));
    let mut headers = end_to_end(&parts.headers);
    let handed = HandedOn {
        by: forwarding.instance.to_string(),
        client: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip().to_canonical()),
        at: chrono::Utc::now().timestamp(),
        caller: parts
            .extensions
            .get::<super::auth::Caller>()
            .filter(|caller| &*caller.name != super::auth::LOCAL_CALLER)
            .map(|caller| caller.name.to_string()),
    };
    match parts.extensions.get::<Option<ClusterKey>>() {
        Some(Some(key)) => {
            // What goes on the wire, as the URL parser may have re-encoded the path.
            let target = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            headers.extend(key.headers(&handed, &parts.method, &target)?);
        }
        // Said unproven, which the leader takes as nothing.
        _ => {
            headers.insert(FORWARDED_BY, HeaderValue::from_str(&handed.by)?);
        }
    }
    let answer = forwarding
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await?;
    let status = answer.status();
    let headers = end_to_end(answer.headers());
    let body = answer.bytes().await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The headers that travel on with a message: all but the connection's own, and the
/// length and host, which the next hop sets for itself.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
    ] {
        kept.remove(name);
    }
    kept
}

fn unavailable(detail: String) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-leader",
        "The tenant's leader cannot be reached",
        detail,
    )
    .retry_after(1)
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const TARGET: &str = "/v1/tenants/default/agents/u_1/transitions?x=1";

    fn key(text: &str) -> ClusterKey {
        ClusterKey::new(SecretString::from(text.to_owned()))
    }

    fn handed(at: i64) -> HandedOn {
        HandedOn {
            by: "wfmd-b".into(),
            client: "10.0.0.9".parse().unwrap(),
            at,
            caller: Some("desk".into()),
        }
    }

    fn request(method: &str, target: &str, headers: HeaderMap) -> Request {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .body(Body::empty())
            .unwrap();
        *request.headers_mut() = headers;
        request
    }

    fn claims_left(request: &Request) -> Vec<&HeaderName> {
        let ours = [
            FORWARDED_BY,
            FORWARDED_FOR,
            FORWARDED_AT,
            FORWARDED_CALLER,
            FORWARDED_PROOF,
        ];
        request
            .headers()
            .keys()
            .filter(|name| ours.contains(name))
            .collect()
    }

    #[test]
    fn a_request_handed_on_with_the_cluster_key_is_proven_and_its_claims_taken_off() {
        let ours = key("the-cluster-key-0123456789abcdef-0123");
        let headers = ours.headers(&handed(NOW), &Method::POST, TARGET).unwrap();
        for now in [NOW - FRESH_FOR_SECONDS, NOW, NOW + FRESH_FOR_SECONDS] {
            let mut request = request("POST", TARGET, headers.clone());
            assert_eq!(
                proven(Some(&ours), &mut request, now),
                Some(handed(NOW)),
                "{now}"
            );
            assert!(claims_left(&request).is_empty());
        }
    }

    #[test]
    fn a_claim_without_a_valid_fresh_proof_proves_nothing_and_is_taken_off() {
        let ours = key("the-cluster-key-0123456789abcdef-0123");
        let signed = |by: &ClusterKey, at: i64, method: &Method, target: &str| {
            by.headers(&handed(at), method, target).unwrap()
        };
        let valid = signed(&ours, NOW, &Method::POST, TARGET);
        let with = |name: HeaderName, value: &str| {
            let mut headers = valid.clone();
            headers.insert(name, value.parse().unwrap());
            headers
        };
        let mut repeated = valid.clone();
        repeated.append(FORWARDED_FOR, "10.0.0.9".parse().unwrap());
        let mut unproven = valid.clone();
        unproven.remove(FORWARDED_PROOF);
        let mut callerless = valid.clone();
        callerless.remove(FORWARDED_CALLER);
        let cases = [
            (
                "another key",
                signed(
                    &key("another-key-0123456789abcdef-012345"),
                    NOW,
                    &Method::POST,
                    TARGET,
                ),
            ),
            (
                "another target",
                signed(
                    &ours,
                    NOW,
                    &Method::POST,
                    "/v1/tenants/default/agents/u_2/transitions?x=1",
                ),
            ),
            (
                "another method",
                signed(&ours, NOW, &Method::DELETE, TARGET),
            ),
            (
                "too old",
                signed(&ours, NOW - FRESH_FOR_SECONDS - 1, &Method::POST, TARGET),
            ),
            (
                "from the future",
                signed(&ours, NOW + FRESH_FOR_SECONDS + 1, &Method::POST, TARGET),
            ),
            ("another client", with(FORWARDED_FOR, "10.0.0.10")),
            ("another instance", with(FORWARDED_BY, "wfmd-c")),
            ("another time", with(FORWARDED_AT, &(NOW + 1).to_string())),
            ("another caller", with(FORWARDED_CALLER, "lead")),
            ("a forged proof", with(FORWARDED_PROOF, &"00".repeat(32))),
            ("a proof that is not hex", with(FORWARDED_PROOF, "proof")),
            ("no proof", unproven),
            ("the caller taken off", callerless),
            ("a repeated claim", repeated),
        ];
        for (what, headers) in cases {
            let mut request = request("POST", TARGET, headers);
            assert_eq!(proven(Some(&ours), &mut request, NOW), None, "{what}");
            assert!(claims_left(&request).is_empty(), "{what}");
        }
        let mut request = request("POST", TARGET, valid);
        assert_eq!(proven(None, &mut request, NOW), None, "no key here");
        assert!(claims_left(&request).is_empty());
    }

    #[test]
    fn a_request_proven_handed_on_is_its_clients_not_the_followers() {
        let mut request = request("POST", TARGET, HeaderMap::new());
        let follower = SocketAddr::from(([10, 0, 0, 2], 41_000));
        request.extensions_mut().insert(ConnectInfo(follower));
        received(handed(NOW), &mut request);
        let ConnectInfo(address) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .unwrap();
        assert_eq!(address.ip(), handed(NOW).client);
        assert_eq!(request.extensions().get::<HandedOn>(), Some(&handed(NOW)));
    }
}
