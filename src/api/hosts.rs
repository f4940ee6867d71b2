//! DNS rebinding and cross-site requests: a request must name one of wfmd's own hosts,
//! and a browser's request that changes something or opens the live feed must come from
//! a page wfmd served.
//!
//! A web page elsewhere can point a name it controls at 127.0.0.1 and then call wfmd
//! "same-origin" under that name; without tokens it would drive the API. Browsers send
//! the name they used as `Host`, so:
//! - `Host` must be `localhost` (or `*.localhost`, which browsers resolve to loopback
//!   themselves), an IP address, or a name in `server.allowed_hosts`; else 421. An IP
//!   address is safe to accept: a page is only same-origin with an address when it was
//!   loaded from that address, and probes and scrapers often use one. A request
//!   without `Host` did not come from a browser and passes. [`check`] judges it in
//!   front of every route.
//! - `Origin`, when a browser sends it, on the live feed (`/v1/ws`, `/v1/events`) and
//!   every route that is not `GET`/`HEAD`, must be the origin of the request's own
//!   `Host` (same host and port), or a host in `server.allowed_hosts` (for a proxy that
//!   rewrites `Host`); else 403. WebSockets have no CORS to protect them, and a form or
//!   `fetch` may post across sites. Clients that send no `Origin` (curl, scripts, the
//!   CLI) pass. [`same_origin`] judges it on each tenant's (and the process's) routes,
//!   after the dispatcher has resolved a `/v1/tenants/{tenant}` prefix, so every address
//!   of a route is judged as the route it is.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::Problem;
use super::forward::{self, ClusterKey, HandedOn};
use crate::telemetry::names::API_REFUSALS_TOTAL;

/// The host names the API answers to besides `localhost` and IP addresses.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// `server.allowed_hosts`.
    pub fn new(names: &[String]) -> AllowedHosts {
        AllowedHosts {
            names: names.iter().map(|n| normalise(n)).collect(),
        }
    }

    fn configured(&self, host: &str) -> bool {
        self.names.iter().any(|n| *n == host)
    }

    /// Whether `host` (normalised, without port) is one of ours.
    fn allows(&self, host: &str) -> bool {
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<IpAddr>().is_ok()
            || self.configured(host)
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A host and port as `Host` or an origin names them: the host normalised and without
/// IPv6 brackets, the port if given.
fn split(authority: &str) -> Option<(String, Option<u16>)> {
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((normalise(host), authority.port_u16()))
}

/// Whether a request to `path` (a tenant's own path, its prefix resolved) with
/// `method` must come from one of our pages when a browser sends it.
fn needs_same_origin(method: &Method, path: &str) -> bool {
    !(method == Method::GET || method == Method::HEAD) || path == "/v1/ws" || path == "/v1/events"
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    MalformedHost,
    ForeignHost,
    ForeignOrigin,
}

impl Refusal {
    fn response(self) -> Response {
        let problem = match self {
            Refusal::MalformedHost => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-host",
                "The Host header is malformed",
                "send `Host: name[:port]` once",
            ),
            Refusal::ForeignHost => Problem::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected-request",
                "wfmd does not answer to this host name",
                "the Host header names a host that is not localhost, an IP address or one of \
                 server.allowed_hosts; if wfmd is reached under this name (a proxy, a DNS \
                 name), add it to server.allowed_hosts",
            ),
            Refusal::ForeignOrigin => Problem::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "The request comes from another site",
                "a browser sent this request from a page wfmd did not serve (its Origin is \
                 neither the request's own host nor one of server.allowed_hosts); it may \
                 not change anything or open the live feed",
            ),
        };
        problem.into_response()
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::MalformedHost | Refusal::ForeignHost => "host",
            Refusal::ForeignOrigin => "origin",
        }
    }
}

fn one(value: Option<&HeaderValue>, more: bool) -> Result<Option<&str>, Refusal> {
    match value {
        None => Ok(None),
        Some(_) if more => Err(Refusal::MalformedHost),
        Some(value) => value.to_str().map(Some).map_err(|_| Refusal::MalformedHost),
    }
}

/// The host and port a request names (`Host`, or an absolute target), if any.
fn named_host(request: &Request) -> Result<Option<(String, Option<u16>)>, Refusal> {
    let headers = request.headers();
    let mut host_values = headers.get_all(header::HOST).iter();
    let host_header = one(host_values.next(), host_values.next().is_some())?;
    // An absolute request target names the host instead (HTTP/1.1 §3.2.2).
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or(host_header);
    authority
        .map(|authority| split(authority).ok_or(Refusal::MalformedHost))
        .transpose()
}

/// The verdict on a request's `Host`.
fn judge_host(hosts: &AllowedHosts, request: &Request) -> Result<(), Refusal> {
    match named_host(request)? {
        Some((name, _)) if !hosts.allows(&name) => Err(Refusal::ForeignHost),
        _ => Ok(()),
    }
}

/// The verdict on a request's `Origin`, for a request whose `Host` passed.
fn judge_origin(hosts: &AllowedHosts, request: &Request) -> Result<(), Refusal> {
    if !needs_same_origin(request.method(), request.uri().path()) {
        return Ok(());
    }
    let mut origins = request.headers().get_all(header::ORIGIN).iter();
    let Some(origin) =
        one(origins.next(), origins.next().is_some()).map_err(|_| Refusal::ForeignOrigin)?
    else {
        return Ok(());
    };
    // `null` (a sandboxed frame, a file) and anything unparseable are foreign.
    let origin: Uri = origin.parse().map_err(|_| Refusal::ForeignOrigin)?;
    let (Some(scheme), Some(authority)) = (origin.scheme_str(), origin.authority()) else {
        return Err(Refusal::ForeignOrigin);
    };
    let (origin_host, origin_port) = split(authority.as_str()).ok_or(Refusal::ForeignOrigin)?;
    if hosts.configured(&origin_host) {
        return Ok(());
    }
    let default_port = match scheme {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return Err(Refusal::ForeignOrigin),
    };
    match named_host(request).map_err(|_| Refusal::ForeignOrigin)? {
        // The port a browser leaves out is its scheme's; so is the one a proxy that
        // keeps the name leaves out of `Host`.
        Some((name, port))
            if name == origin_host
                && port.unwrap_or(default_port) == origin_port.unwrap_or(default_port) =>
        {
            Ok(())
        }
        _ => Err(Refusal::ForeignOrigin),
    }
}

/// What [`check`] needs: our host names, and the key that proves a request was handed
/// on by another instance.
pub struct Edge {
    pub hosts: AllowedHosts,
    pub cluster: Option<ClusterKey>,
}

/// Middleware in front of every route: refuses a foreign `Host` (421). A request proven
/// handed on by another instance, which judged its `Host` and `Origin` against its own
/// name, is taken as its client's and not judged here (see [`super::forward`]).
pub async fn check(State(edge): State<Arc<Edge>>, mut request: Request, next: Next) -> Response {
    let now = chrono::Utc::now().timestamp();
    if let Some(handed) = forward::proven(edge.cluster.as_ref(), &mut request, now) {
        forward::received(handed, &mut request);
        return next.run(request).await;
    }
    match judge_host(&edge.hosts, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(refusal),
    }
}

/// Middleware on each tenant's routes and the process's, outside everything else on
/// them: refuses a foreign `Origin` (403) where a page may not act.
pub async fn same_origin(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<HandedOn>().is_some() {
        return next.run(request).await;
    }
    match judge_origin(&hosts, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(refusal),
    }
}

fn refused(refusal: Refusal) -> Response {
    metrics::counter!(API_REFUSALS_TOTAL, "reason" => refusal.reason()).increment(1);
    tracing::warn!(
        reason = refusal.reason(),
        "refused a request naming a foreign host or coming from a foreign page"
    );
    refusal.response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn verdict(
        hosts: &AllowedHosts,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        // As the two layers judge it: the host in front, the origin on the routes.
        let request = request(method, uri, headers);
        judge_host(hosts, &request).and_then(|()| judge_origin(hosts, &request))
    }

    #[test]
    fn loopback_names_ip_addresses_and_configured_names_are_our_hosts() {
        let hosts = AllowedHosts::new(&["WFM.example.com".into()]);
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.:8080",
            "wall-3.localhost",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.5",
            "wfm.example.com",
            "wfm.example.com:8443",
        ] {
            assert_eq!(
                verdict(&hosts, "GET", "/healthz", &[("host", host)]),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "wfm.example.com.evil",
        ] {
            assert_eq!(
                verdict(&hosts, "GET", "/healthz", &[("host", host)]),
                Err(Refusal::ForeignHost),
                "{host}"
            );
        }
        for host in ["", "a b", "user@localhost"] {
            assert_eq!(
                verdict(&hosts, "GET", "/healthz", &[("host", host)]),
                Err(Refusal::MalformedHost),
                "{host:?}"
            );
        }
        assert_eq!(
            verdict(
                &hosts,
                "GET",
                "/healthz",
                &[("host", "localhost"), ("host", "attacker.example")]
            ),
            Err(Refusal::MalformedHost)
        );
        assert_eq!(
            verdict(&hosts, "GET", "/healthz", &[]),
            Ok(()),
            "no Host: no browser"
        );
        assert_eq!(
            verdict(
                &hosts,
                "GET",
                "http://attacker.example/healthz",
                &[("host", "localhost")]
            ),
            Err(Refusal::ForeignHost),
            "an absolute target names the host"
        );
    }

    #[test]
    fn a_foreign_origin_may_read_but_not_change_or_open_the_feed() {
        let hosts = AllowedHosts::default();
        let from = |method: &str, path: &str, origin: &str| {
            verdict(
                &hosts,
                method,
                path,
                &[("host", "127.0.0.1:8080"), ("origin", origin)],
            )
        };
        assert_eq!(from("GET", "/v1/live", "http://attacker.example"), Ok(()));
        for (method, path) in [
            ("POST", "/v1/agents/u_1/transitions"),
            ("DELETE", "/v1/bulk-transitions/x"),
            ("GET", "/v1/ws"),
            ("GET", "/v1/events"),
        ] {
            for origin in [
                "http://attacker.example",
                "http://127.0.0.1:3000",
                "https://127.0.0.1",
                "null",
                "file://",
            ] {
                assert_eq!(
                    from(method, path, origin),
                    Err(Refusal::ForeignOrigin),
                    "{method} {path} {origin}"
                );
            }
            assert_eq!(
                from(method, path, "http://127.0.0.1:8080"),
                Ok(()),
                "{method} {path}"
            );
        }
        assert_eq!(
            verdict(
                &hosts,
                "POST",
                "/v1/live/tickets",
                &[("host", "127.0.0.1:8080")]
            ),
            Ok(()),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn behind_a_proxy_the_public_origin_matches_the_kept_host_or_a_configured_name() {
        // The proxy keeps the name (`proxy_set_header Host $host`): no port either side.
        let hosts = AllowedHosts::new(&["wfm.example.com".into()]);
        let kept = [
            ("host", "wfm.example.com"),
            ("origin", "https://wfm.example.com"),
        ];
        assert_eq!(verdict(&hosts, "POST", "/v1/live/tickets", &kept), Ok(()));
        // The proxy rewrites `Host` to the upstream address.
        let rewritten = [
            ("host", "127.0.0.1:8080"),
            ("origin", "https://wfm.example.com"),
        ];
        assert_eq!(verdict(&hosts, "GET", "/v1/ws", &rewritten), Ok(()));
        assert_eq!(
            verdict(&AllowedHosts::default(), "GET", "/v1/ws", &rewritten),
            Err(Refusal::ForeignOrigin)
        );
    }
}
