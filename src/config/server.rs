//! `[server]`: where the HTTP API listens, and how it holds up against clients that
//! connect and then stall, flood it with connections, or reach it through a browser
//! under a name that is not its own (DNS rebinding).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::api_tokens::ApiTokenConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// How long SIGTERM waits for in-flight work before giving up on it.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A client has this long to send a complete request head: from connecting, and from
    /// the first byte of each later request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long after its last answer is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body must have arrived completely this long after its head.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A request whose answer has not begun this long after its head is answered 503.
    /// Streams (the live feed, report downloads) are not cut once they have begun.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections open at once, over every client. A new one past it takes the place
    /// of the connection idle longest, or is closed as it comes when none is idle.
    pub max_connections: usize,
    /// Connections open at once from one client address (the live feed's streams, once
    /// authorised, count only toward `max_connections`). A new one past it takes the
    /// place of the address's own connection idle longest, or is closed as it comes.
    pub max_connections_per_client: usize,
    /// Requests served on one kept-alive connection before it is closed.
    pub max_requests_per_connection: u64,
    /// Addresses of reverse proxies in front of wfmd: every client of a proxy arrives
    /// from its address, so their connections count only toward `max_connections`.
    pub proxies: Vec<IpAddr>,
    /// Host names the API answers to besides `localhost` (and `*.localhost`) and IP
    /// addresses; a request naming another host is refused (421).
    pub allowed_hosts: Vec<String>,
    /// With `[[api_tokens]]` and a `listen` address that is not loopback, wfmd refuses
    /// to start (tokens would cross the network in plain HTTP) unless this says a TLS
    /// proxy is in front.
    pub plain_http_ok: bool,
    /// When set (at least 16 characters), `/metrics` answers only a scraper sending
    /// `Authorization: Bearer <it>`; without it `/metrics` is open, as probes are. Set
    /// it from the environment (`WFMD_SERVER__METRICS_TOKEN`).
    #[serde(
        serialize_with = "super::retention::mask_optional_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_token: Option<SecretString>,
    /// How long a browser's sign-in (`POST /v1/session`) lasts: its cookie's lifetime,
    /// enforced by wfmd too.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

/// Shortest accepted `server.metrics_token`, in characters.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_client: 256,
            max_requests_per_connection: 1000,
            proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            plain_http_ok: false,
            metrics_token: None,
            session_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

impl ServerConfig {
    /// Adds a line naming the key for every bad value.
    pub fn validate(&self, tokens: &[ApiTokenConfig], problems: &mut Vec<String>) {
        let least = Duration::from_millis(100);
        for (key, value, most) in [
            (
                "server.header_read_timeout",
                self.header_read_timeout,
                Duration::from_secs(600),
            ),
            (
                "server.idle_timeout",
                self.idle_timeout,
                Duration::from_secs(3600),
            ),
            (
                "server.body_timeout",
                self.body_timeout,
                Duration::from_secs(600),
            ),
            (
                "server.request_timeout",
                self.request_timeout,
                Duration::from_secs(3600),
            ),
        ] {
            check_between(problems, key, value, least, most);
        }
        check_between(
            problems,
            "server.session_ttl",
            self.session_ttl,
            Duration::from_secs(60),
            Duration::from_secs(30 * 24 * 3600),
        );
        if !(1..=1_000_000).contains(&self.max_connections) {
            problems.push(format!(
                "server.max_connections must be between 1 and 1000000, got {}",
                self.max_connections
            ));
        }
        if self.max_connections_per_client == 0
            || self.max_connections_per_client > self.max_connections
        {
            problems.push(format!(
                "server.max_connections_per_client must be between 1 and \
                 server.max_connections ({}), got {}",
                self.max_connections, self.max_connections_per_client
            ));
        }
        if self.max_requests_per_connection == 0 {
            problems.push("server.max_requests_per_connection must be at least 1".into());
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if let Err(e) = check_host_name(host) {
                problems.push(format!("server.allowed_hosts[{i}] {e}, got `{host}`"));
            }
        }
        if let Some(problem) = self.plain_http_problem(tokens.len()) {
            problems.push(problem);
        }
        if let Some(token) = self.metrics_token()
            && token.expose_secret().len() < MIN_METRICS_TOKEN_LEN
        {
            problems.push(format!(
                "server.metrics_token must be at least {MIN_METRICS_TOKEN_LEN} characters \
                 (e.g. `openssl rand -hex 16`), got {}",
                token.expose_secret().len()
            ));
        }
    }

    /// `metrics_token`, when one is set (an empty value counts as none).
    pub fn metrics_token(&self) -> Option<&SecretString> {
        self.metrics_token
            .as_ref()
            .filter(|token| !token.expose_secret().is_empty())
    }

    /// Why wfmd must not serve `tokens` bearer tokens on `listen`: they would travel in
    /// plain HTTP over the network, unless `plain_http_ok` says a TLS proxy is in front.
    pub fn plain_http_problem(&self, tokens: usize) -> Option<String> {
        if tokens == 0 || self.listen.ip().is_loopback() || self.plain_http_ok {
            return None;
        }
        Some(format!(
            "server.listen = {} is not a loopback address and [[api_tokens]] are configured: \
             wfmd speaks plain HTTP, so bearer tokens would cross the network readable. Put \
             a TLS-terminating proxy in front (docs/operations.md, \"TLS\") and listen on \
             127.0.0.1, or, when the proxy runs on another host, set \
             server.plain_http_ok = true",
            self.listen
        ))
    }
}

/// Adds a line naming `key` when `value` is not within `least..=most`.
fn check_between(
    problems: &mut Vec<String>,
    key: &str,
    value: Duration,
    least: Duration,
    most: Duration,
) {
    if !(least..=most).contains(&value) {
        problems.push(format!(
            "{key} must be between {} and {}, got {}",
            humantime::format_duration(least),
            humantime::format_duration(most),
            humantime::format_duration(value)
        ));
    }
}

/// A host name as a `Host` header carries it, without port: letters, digits, `-` and
/// `.`, or an IP address.
fn check_host_name(host: &str) -> Result<(), &'static str> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return Err("must be a host name of 1 to 253 characters");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        || host.starts_with('.')
        || host.starts_with('-')
    {
        return Err(
            "must be a bare host name (letters, digits, '-' and '.'; no scheme, port or path)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;

    #[test]
    fn defaults_bound_slow_clients_and_connections() {
        let server = load("", &[]).unwrap().server;
        assert_eq!(server.header_read_timeout.as_secs(), 10);
        assert_eq!(server.idle_timeout.as_secs(), 60);
        assert_eq!(server.body_timeout.as_secs(), 10);
        assert_eq!(server.request_timeout.as_secs(), 30);
        assert_eq!(
            (server.max_connections, server.max_connections_per_client),
            (4096, 256)
        );
        assert!(server.proxies.is_empty() && server.allowed_hosts.is_empty());
        assert!(!server.plain_http_ok);
        assert_eq!(server.session_ttl.as_secs(), 8 * 3600);
    }

    #[test]
    fn a_session_ttl_is_a_duration_between_a_minute_and_thirty_days() {
        let server = load("[server]\nsession_ttl = \"12h 30m\"\n", &[])
            .unwrap()
            .server;
        assert_eq!(server.session_ttl.as_secs(), 12 * 3600 + 30 * 60);
        let err = load("[server]\nsession_ttl = \"30s\"\n", &[]).unwrap_err();
        assert_eq!(
            err.problems,
            ["server.session_ttl must be between 1m and 30days, got 30s"]
        );
        let err = load("", &[("WFMD_SERVER__SESSION_TTL", "721h")]).unwrap_err();
        assert_eq!(
            err.problems,
            ["server.session_ttl must be between 1m and 30days, got 30days 1h"]
        );
    }

    #[test]
    fn bad_limits_and_host_names_are_refused_naming_the_key() {
        let err = load(
            "[server]\nheader_read_timeout = \"10ms\"\nmax_connections = 10\n\
             max_connections_per_client = 11\nmax_requests_per_connection = 0\n\
             allowed_hosts = [\"wfm.example.com\", \"https://wfm.example.com\", \"10.0.0.5\"]\n\
             proxies = [\"127.0.0.1\", \"::1\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "server.header_read_timeout must be between 100ms and 10m, got 10ms",
                "server.max_connections_per_client must be between 1 and \
                 server.max_connections (10), got 11",
                "server.max_requests_per_connection must be at least 1",
                "server.allowed_hosts[1] must be a bare host name (letters, digits, '-' and \
                 '.'; no scheme, port or path), got `https://wfm.example.com`",
            ]
        );
    }

    #[test]
    fn a_metrics_token_is_long_enough_and_never_shown() {
        let short = load("", &[("WFMD_SERVER__METRICS_TOKEN", "scrape")]).unwrap_err();
        assert_eq!(
            short.problems,
            [
                "server.metrics_token must be at least 16 characters (e.g. `openssl rand -hex \
              16`), got 6"
            ]
        );
        let token = "scrape-0123456789abcdef";
        let config = load("", &[("WFMD_SERVER__METRICS_TOKEN", token)]).unwrap();
        let shown = config.to_masked_toml();
        assert!(shown.contains("metrics_token = \"********\""), "{shown}");
        assert!(!shown.contains(token) && !format!("{config:?}").contains(token));
        assert!(load("", &[]).unwrap().server.metrics_token().is_none());
    }

    const TOKEN: &str = "[[api_tokens]]\nname = \"desk\"\n\
        token_sha256 = \"6f2c3f6b4b3e4c1f0d9a8b7c6d5e4f30a1b2c3d4e5f60718293a4b5c6d7e8f90\"\n\
        role = \"viewer\"\n";

    #[test]
    fn tokens_on_a_public_plain_http_listener_need_the_explicit_opt_in() {
        let public = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{TOKEN}");
        let err = load(&public, &[]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].starts_with(
                "server.listen = 0.0.0.0:8080 is not a loopback address and [[api_tokens]] \
                 are configured"
            ),
            "{err}"
        );
        assert!(err.problems[0].contains("server.plain_http_ok"), "{err}");
        load(&public, &[("WFMD_SERVER__PLAIN_HTTP_OK", "true")]).unwrap();
        load(
            &format!("[server]\nlisten = \"127.0.0.1:8080\"\n{TOKEN}"),
            &[],
        )
        .unwrap();
        load("[server]\nlisten = \"0.0.0.0:8080\"\n", &[]).unwrap();
    }
}
