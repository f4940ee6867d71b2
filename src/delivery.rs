//! The outbox dispatcher: delivers every outbox event to every webhook endpoint that
//! wants it, signed per the Standard Webhooks spec, at least once.
//!
//! The loop fans new events out into deliveries, claims due ones with a lease, POSTs
//! them (up to `delivery.concurrency` at once, each on its own so a stalled receiver
//! holds back nobody), and settles finished attempts in batches. Only 2xx is success.
//! Failures are retried on `delivery.retry_schedule` with ±20% jitter, never sooner
//! than a 429/503 `Retry-After`; after the last wait the delivery is dead until
//! `wfmd outbox replay --dead`. A 410 Gone stops that event type to that endpoint.
//!
//! Each endpoint is up, failing or disabled (`/metrics`, `wfmd outbox list`). A failing
//! endpoint is probed with one queued delivery every `delivery.probe_interval` or so
//! (growing with the outage up to `delivery.probe_interval_max`); once it answers again,
//! the retries that failed during the outage are brought forward in growing rounds, in
//! per-agent order, instead of waiting out the retry schedule (see
//! [`crate::store::deliveries`]).
//!
//! The body is the stored event with the tenant's id added first (`"tenant"`, see
//! [`with_tenant`]), and it is what is signed.
//!
//! Crash safety: a delivery sent but not settled keeps its lease until it expires, then
//! it is sent again with the same `webhook-id`. Receivers deduplicate on that id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryConfig, webhook_key};
use crate::domain::events::with_tenant;
use crate::domain::tenant::TenantId;
use crate::store::deliveries::{
    self, Attempt, Claimed, DeliveryVerdict, HealthChange, Probing, Subscriber,
};
use crate::store::{Store, to_ms};
use crate::telemetry::names::{
    WEBHOOK_DEAD_TOTAL, WEBHOOK_DELIVERED_TOTAL, WEBHOOK_DELIVERY_LATENCY_SECONDS,
    WEBHOOK_ENDPOINT_STATUS, WEBHOOK_ENDPOINT_STATUS_SINCE_SECONDS, WEBHOOK_FAILED_ATTEMPTS_TOTAL,
    WEBHOOK_OLDEST_PENDING_AGE_SECONDS, WEBHOOK_QUEUE_DEPTH,
};

/// How much of a receiver's answer is kept with the attempt.
const RESPONSE_BODY_LIMIT: usize = 1_024;

/// How often the loop looks for due work when nothing wakes it sooner.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// How often the queue gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// The signing keys of one endpoint, decoded from its `whsec_` secrets.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    pub fn new(keys: Vec<Vec<u8>>) -> Signer {
        Signer { keys }
    }

    /// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
    /// for each key, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        self.keys
            .iter()
            .map(|key| {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body.as_bytes());
                format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One configured receiver.
#[derive(Clone)]
pub struct Endpoint {
    /// How the endpoint is stored, logged and shown: its URL with credentials masked
    /// ([`crate::redact::url`]; the configuration keeps these unique).
    pub id: String,
    /// The URL requests go to, credentials and all: only in memory, never shown.
    url: String,
    pub events: Option<Vec<String>>,
    pub signer: Signer,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("events", &self.events)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The receiver at `url`, known by its masked URL.
    pub fn new(url: &str, events: Option<Vec<String>>, signer: Signer) -> Endpoint {
        Endpoint {
            id: crate::redact::url(url),
            url: url.to_owned(),
            events,
            signer,
        }
    }

    /// The endpoints of a validated configuration.
    pub fn from_config(config: &Config) -> Vec<Endpoint> {
        config
            .webhooks
            .iter()
            .map(|hook| {
                let keys = hook
                    .secret
                    .iter()
                    .map(|s| webhook_key(s).expect("validated at load"))
                    .collect();
                Endpoint::new(&hook.url, hook.events.clone(), Signer::new(keys))
            })
            .collect()
    }
}

/// Counts of one [`Dispatcher::dispatch_due`] step, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStep {
    pub delivered: usize,
    pub failed: usize,
}

/// Delivers one tenant's outbox events to its configured endpoints.
pub struct Dispatcher {
    /// Named in every body sent.
    tenant: TenantId,
    store: Store,
    http: reqwest::Client,
    endpoints: Arc<HashMap<String, Endpoint>>,
    settings: DeliveryConfig,
    wake: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        tenant: TenantId,
        store: Store,
        http: reqwest::Client,
        endpoints: Vec<Endpoint>,
        settings: DeliveryConfig,
    ) -> Dispatcher {
        let wake = store.outbox_signal();
        Dispatcher {
            tenant,
            store,
            http,
            endpoints: Arc::new(endpoints.into_iter().map(|e| (e.id.clone(), e)).collect()),
            settings,
            wake,
        }
    }

    fn subscribers(&self) -> Vec<Subscriber<'_>> {
        self.endpoints
            .values()
            .map(|e| Subscriber {
                endpoint: &e.id,
                events: e.events.as_deref(),
            })
            .collect()
    }

    fn probing(&self) -> Probing {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Probing {
            min_ms: ms(self.settings.probe_interval),
            max_ms: ms(self.settings.probe_interval_max),
        }
    }

    /// Gives every configured endpoint a health row, so it is reported before its first
    /// delivery.
    async fn register(&self) -> Result<(), sqlx::Error> {
        let urls: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
        deliveries::register(&self.store, &urls, to_ms(Utc::now())).await
    }

    async fn fan_out(&self) -> Result<u64, sqlx::Error> {
        deliveries::fan_out(&self.store, &self.subscribers(), to_ms(Utc::now())).await
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let urls: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
        let lease = i64::try_from(self.settings.lease_ms).unwrap_or(i64::MAX);
        deliveries::claim(&self.store, &urls, to_ms(Utc::now()), lease, limit).await
    }

    /// One step, for tests: fans out, claims what is due, delivers it and settles.
    pub async fn dispatch_due(&self) -> Result<DispatchStep, sqlx::Error> {
        self.register().await?;
        self.fan_out().await?;
        let claimed = self.claim(self.settings.concurrency).await?;
        let mut sends = JoinSet::new();
        for delivery in claimed {
            crate::tasks::spawn_in(&mut sends, self.send(delivery));
        }
        let mut attempts = Vec::new();
        while let Some(attempt) = sends.join_next().await {
            attempts.push(attempt.expect("a send task never panics"));
        }
        self.settle(&attempts).await?;
        Ok(count(&attempts))
    }

    /// Runs until `stop` is cancelled; then claims nothing more, lets in-flight POSTs
    /// finish within `grace`, and gives back the leases of those that did not.
    ///
    /// Database work is batched so its cost is shared by many deliveries: new claims
    /// are made once half the slots are free, finished attempts are settled together,
    /// and new events are fanned out when the engine signals a commit (or on the idle
    /// poll, for events written by another process).
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        tracing::info!(endpoints = self.endpoints.len(), "webhook delivery started");
        if let Err(e) = self.register().await {
            tracing::error!(error = %e, "cannot record the webhook endpoints' health");
        }
        let concurrency = self.settings.concurrency;
        let low_water = concurrency / 2;
        let mut in_flight: JoinSet<Attempt> = JoinSet::new();
        let mut in_flight_ids: Vec<i64> = Vec::new();
        let mut finished: Vec<Attempt> = Vec::new();
        let mut gauges_at: Option<Instant> = None;
        let mut fanned_out_at: Option<Instant> = None;
        let mut error_backoff = Duration::ZERO;
        while !stop.is_cancelled() {
            let fan_out_due = fanned_out_at.is_none_or(|at| at.elapsed() >= IDLE_POLL);
            let claimed = async {
                if fan_out_due {
                    self.fan_out().await?;
                }
                if in_flight.len() <= low_water {
                    self.claim(concurrency - in_flight.len()).await
                } else {
                    Ok(Vec::new())
                }
            }
            .await;
            match claimed {
                Ok(claimed) => {
                    if fan_out_due {
                        fanned_out_at = Some(Instant::now());
                    }
                    error_backoff = Duration::ZERO;
                    for delivery in claimed {
                        in_flight_ids.push(delivery.id);
                        crate::tasks::spawn_in(&mut in_flight, self.send(delivery));
                    }
                }
                Err(e) => {
                    error_backoff = (error_backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(10));
                    tracing::error!(error = %e, retry_in = ?error_backoff, "cannot claim webhook deliveries");
                }
            }
            let idle = if !error_backoff.is_zero() {
                error_backoff
            } else if !in_flight.is_empty() {
                // A finishing POST wakes the loop; no need to ask when work falls due.
                IDLE_POLL
            } else {
                self.idle_wait().await
            };
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finished.push(done.expect("a send task never panics"));
                }
                () = self.wake.notified() => fanned_out_at = None,
                () = tokio::time::sleep(idle) => {}
                () = stop.cancelled() => {}
            }
            while let Some(done) = in_flight.try_join_next() {
                finished.push(done.expect("a send task never panics"));
            }
            if finished.len() > low_water || in_flight.len() <= low_water {
                self.settle_finished(&mut finished, &mut in_flight_ids)
                    .await;
            }
            if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_PERIOD) {
                gauges_at = Some(Instant::now());
                self.update_gauges().await;
            }
        }
        tracing::info!(in_flight = in_flight.len(), "webhook delivery stopping");
        let drain = async {
            while let Some(done) = in_flight.join_next().await {
                finished.push(done.expect("a send task never panics"));
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            in_flight.abort_all();
        }
        self.settle_finished(&mut finished, &mut in_flight_ids)
            .await;
        if let Err(e) = deliveries::release(&self.store, &in_flight_ids).await {
            tracing::error!(error = %e, "cannot release webhook leases; they expire by themselves");
        }
        tracing::info!("webhook delivery stopped");
    }

    /// How long to sleep when nothing wakes the loop: until the next delivery is due,
    /// at most [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        match deliveries::next_due(self.store.reader()).await {
            Ok(Some(due)) => {
                let wait = due - to_ms(Utc::now());
                Duration::from_millis(u64::try_from(wait).unwrap_or(0).max(1)).min(IDLE_POLL)
            }
            _ => IDLE_POLL,
        }
    }

    async fn settle_finished(&self, finished: &mut Vec<Attempt>, in_flight_ids: &mut Vec<i64>) {
        if finished.is_empty() {
            return;
        }
        match self.settle(finished).await {
            Ok(()) => {
                let done: Vec<i64> = finished.iter().map(|a| a.delivery_id).collect();
                in_flight_ids.retain(|id| !done.contains(id));
                finished.clear();
            }
            // Kept for the next round; if the process dies first, the leases expire and
            // the deliveries go out again (at-least-once).
            Err(e) => tracing::error!(error = %e, "cannot record webhook attempts"),
        }
    }

    async fn settle(&self, attempts: &[Attempt]) -> Result<(), sqlx::Error> {
        let changes =
            deliveries::settle(&self.store, attempts, self.probing(), to_ms(Utc::now())).await?;
        for change in &changes {
            log_health_change(change);
        }
        let step = count(attempts);
        metrics::counter!(WEBHOOK_DELIVERED_TOTAL).increment(step.delivered as u64);
        metrics::counter!(WEBHOOK_FAILED_ATTEMPTS_TOTAL).increment(step.failed as u64);
        let dead = attempts
            .iter()
            .filter(|a| a.verdict == DeliveryVerdict::Dead)
            .count();
        metrics::counter!(WEBHOOK_DEAD_TOTAL).increment(dead as u64);
        Ok(())
    }

    async fn update_gauges(&self) {
        if let Ok((depth, oldest)) = deliveries::backlog(self.store.reader()).await {
            metrics::gauge!(WEBHOOK_QUEUE_DEPTH).set(depth as f64);
            let age = oldest.map_or(0, |at| to_ms(Utc::now()) - at).max(0);
            metrics::gauge!(WEBHOOK_OLDEST_PENDING_AGE_SECONDS).set(age as f64 / 1000.0);
        }
        if let Ok(health) = deliveries::health(self.store.reader()).await {
            for endpoint in health
                .iter()
                .filter(|h| self.endpoints.contains_key(&h.endpoint))
            {
                let label = endpoint_label(&endpoint.endpoint);
                for status in ["up", "failing", "disabled"] {
                    let value = if endpoint.status == status { 1.0 } else { 0.0 };
                    metrics::gauge!(WEBHOOK_ENDPOINT_STATUS, "endpoint" => label.clone(), "status" => status)
                        .set(value);
                }
                metrics::gauge!(WEBHOOK_ENDPOINT_STATUS_SINCE_SECONDS, "endpoint" => label)
                    .set(endpoint.since as f64 / 1000.0);
            }
        }
    }

    /// POSTs one delivery and decides what happens next. Never fails: a failure is an
    /// attempt with a verdict.
    fn send(&self, delivery: Claimed) -> impl Future<Output = Attempt> + Send + 'static {
        let http = self.http.clone();
        let endpoints = Arc::clone(&self.endpoints);
        let settings = self.settings.clone();
        // The same bytes on every attempt, so a retry carries the same signed body.
        let body = with_tenant(&delivery.payload, &self.tenant);
        async move {
            let endpoint = &endpoints[&delivery.endpoint];
            let attempted = Utc::now();
            let timestamp = attempted.timestamp();
            let started = Instant::now();
            let result = http
                .post(&endpoint.url)
                .timeout(Duration::from_millis(settings.timeout_ms))
                .header("content-type", "application/json")
                .header("webhook-id", &delivery.event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    endpoint.signer.sign(&delivery.event_id, timestamp, &body),
                )
                .body(body)
                .send()
                .await;
            let (status, retry_after, body, error) = match result {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    // The HTTP client follows no redirect (see `crate::http_client`): a
                    // 3xx is a failed attempt, said plainly, never a delivery.
                    let redirect = status.is_redirection() && status != StatusCode::NOT_MODIFIED;
                    let redirected = redirect.then(|| {
                        let location = response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok());
                        format!(
                            "receiver answered {status}, a redirect to {}; wfmd does not follow \
                             redirects",
                            crate::redact::location(location)
                        )
                    });
                    let body = response.text().await.unwrap_or_default();
                    (Some(status), retry_after, Some(truncate(body)), redirected)
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else {
                        "failed"
                    };
                    let reason = crate::redact::transport_error(e);
                    (None, None, None, Some(format!("request {kind}: {reason}")))
                }
            };
            let duration = started.elapsed();
            let verdict = verdict(&settings, &delivery, status, retry_after, to_ms(attempted));
            if verdict == DeliveryVerdict::Gone {
                tracing::warn!(
                    endpoint = %delivery.endpoint,
                    event_type = %delivery.event_type,
                    "receiver answered 410 Gone: no more of these events go to it"
                );
            }
            if verdict == DeliveryVerdict::Delivered {
                let latency = (to_ms(Utc::now()) - delivery.created_at).max(0);
                metrics::histogram!(WEBHOOK_DELIVERY_LATENCY_SECONDS)
                    .record(latency as f64 / 1000.0);
            }
            Attempt {
                delivery_id: delivery.id,
                endpoint: delivery.endpoint,
                event_type: delivery.event_type,
                attempted_at: to_ms(attempted),
                status_code: status.map(|s| s.as_u16()),
                duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
                error: error.or_else(|| {
                    status
                        .filter(|s| !s.is_success())
                        .map(|s| format!("receiver answered {s}"))
                }),
                response_body: body,
                verdict,
                early: delivery.early,
            }
        }
    }
}

fn log_health_change(change: &HealthChange) {
    let endpoint = endpoint_label(&change.endpoint);
    let after_s = change.after_ms / 1000;
    match change.status {
        "up" if change.recovered => tracing::info!(
            %endpoint, failing_for_s = after_s,
            "webhook endpoint answers again; its queued retries are brought forward"
        ),
        "up" => tracing::info!(%endpoint, "webhook endpoint answers again"),
        "failing" => tracing::warn!(
            %endpoint,
            "webhook endpoint is failing; retries follow the schedule, with a probe now and then"
        ),
        _ => tracing::warn!(%endpoint, "webhook endpoint answered 410 Gone"),
    }
}

/// An endpoint's URL as shown in `/metrics` and logs: scheme, host, port and path only,
/// since a query string or user part may carry a receiver's credentials, plus the
/// fragment that tells apart endpoints that differ only in those.
pub fn endpoint_label(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let fragment = parsed
                .fragment()
                .map(|f| format!("#{f}"))
                .unwrap_or_default();
            match parsed.port() {
                Some(port) => format!(
                    "{}://{host}:{port}{}{fragment}",
                    parsed.scheme(),
                    parsed.path()
                ),
                None => format!("{}://{host}{}{fragment}", parsed.scheme(), parsed.path()),
            }
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

fn count(attempts: &[Attempt]) -> DispatchStep {
    let delivered = attempts
        .iter()
        .filter(|a| a.verdict == DeliveryVerdict::Delivered)
        .count();
    DispatchStep {
        delivered,
        failed: attempts.len() - delivered,
    }
}

fn truncate(mut body: String) -> String {
    if body.len() > RESPONSE_BODY_LIMIT {
        let mut end = RESPONSE_BODY_LIMIT;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    body
}

/// What follows an attempt that got `status` (or no answer at all).
fn verdict(
    settings: &DeliveryConfig,
    delivery: &Claimed,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    now_ms: i64,
) -> DeliveryVerdict {
    match status {
        Some(s) if s.is_success() => return DeliveryVerdict::Delivered,
        Some(StatusCode::GONE) => return DeliveryVerdict::Gone,
        _ => {}
    }
    let schedule = settings.retry_schedule();
    // `attempts` counts earlier attempts, so this was attempt number attempts + 1.
    let failed = usize::try_from(delivery.attempts).unwrap_or(usize::MAX);
    let Some(wait) = schedule.get(failed) else {
        return DeliveryVerdict::Dead;
    };
    let jittered = wait.mul_f64(rand::random_range(0.8..1.2));
    let honoured = match status {
        Some(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => retry_after
            .map(|r| r.min(settings.max_retry_after))
            .unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let wait = jittered.max(honoured);
    DeliveryVerdict::RetryAt(now_ms + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_signer() -> Signer {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into();
        Signer::new(vec![webhook_key(&secret).unwrap()])
    }

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let signature = spec_signer().sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_during_rotation_give_two_signatures() {
        let other = "whsec_".to_owned() + &BASE64.encode([7u8; 32]);
        let signer = Signer::new(vec![
            webhook_key(&other.into()).unwrap(),
            spec_signer().keys[0].clone(),
        ]);
        let signature = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("v1,"));
        assert_ne!(parts[0], parts[1]);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(format!("{signer:?}"), "Signer(2 keys)", "no key material");
    }

    fn claimed(attempts: i64) -> Claimed {
        Claimed {
            id: 1,
            endpoint: "http://x".into(),
            event_type: "agent.state_changed".into(),
            event_id: "evt_1".into(),
            payload: "{}".into(),
            attempts,
            created_at: 0,
            early: false,
        }
    }

    #[test]
    fn endpoint_labels_carry_no_credentials() {
        assert_eq!(
            endpoint_label("https://user:pw@hooks.example.com:8443/in/wfmd?token=s3cret"),
            "https://hooks.example.com:8443/in/wfmd"
        );
        assert_eq!(
            endpoint_label("http://127.0.0.1/hooks"),
            "http://127.0.0.1/hooks"
        );
    }

    #[test]
    fn failures_follow_the_schedule_with_jitter_then_die() {
        let settings = DeliveryConfig::default();
        let schedule = settings.retry_schedule();
        for (n, wait) in schedule.iter().enumerate() {
            let DeliveryVerdict::RetryAt(at) = verdict(
                &settings,
                &claimed(n as i64),
                Some(StatusCode::INTERNAL_SERVER_ERROR),
                None,
                0,
            ) else {
                panic!("attempt {n} should be retried");
            };
            let wait = wait.as_millis() as f64;
            assert!(
                (at as f64) >= wait * 0.8 && (at as f64) <= wait * 1.2,
                "{n}: {at}"
            );
        }
        assert_eq!(
            verdict(&settings, &claimed(schedule.len() as i64), None, None, 0),
            DeliveryVerdict::Dead
        );
    }

    #[test]
    fn success_gone_and_retry_after_are_honoured() {
        let settings = DeliveryConfig::default();
        assert_eq!(
            verdict(
                &settings,
                &claimed(0),
                Some(StatusCode::NO_CONTENT),
                None,
                0
            ),
            DeliveryVerdict::Delivered
        );
        assert_eq!(
            verdict(&settings, &claimed(0), Some(StatusCode::GONE), None, 0),
            DeliveryVerdict::Gone
        );
        let later = verdict(
            &settings,
            &claimed(0),
            Some(StatusCode::TOO_MANY_REQUESTS),
            Some(Duration::from_secs(120)),
            0,
        );
        assert_eq!(
            later,
            DeliveryVerdict::RetryAt(120_000),
            "longer than the 5 s first wait"
        );
        let clamped = verdict(
            &settings,
            &claimed(0),
            Some(StatusCode::SERVICE_UNAVAILABLE),
            Some(Duration::from_secs(86_400)),
            0,
        );
        assert_eq!(clamped, DeliveryVerdict::RetryAt(3_600_000));
        let DeliveryVerdict::RetryAt(ignored) = verdict(
            &settings,
            &claimed(0),
            Some(StatusCode::BAD_REQUEST),
            Some(Duration::from_secs(120)),
            0,
        ) else {
            panic!()
        };
        assert!(ignored < 10_000, "Retry-After only counts on 429/503");
    }
}
