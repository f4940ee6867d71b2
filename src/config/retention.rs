//! `[retention]` and `[audit]`: how long each kind of record is kept, and how the audit
//! chain is keyed and checkpointed.
//!
//! Ages are humantime durations (`"30d"`, `"400d"`) or `"forever"`. They are checked
//! against a floor of an hour, so a typo such as `"30s"` cannot empty the database.
//!
//! Each tenant's chain has a key of its own, derived from `audit.key` and the tenant's
//! id ([`AuditConfig::for_tenant`]), so one tenant's chain and key cannot forge another's.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::duration_or::{DurationOr, Forever};
use crate::domain::tenant::TenantId;

const DAY: u64 = 86_400;

fn days(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n * DAY))
}

/// How long each kind of record is kept; `None` (`"forever"`) keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Outbox events every endpoint received (with their deliveries and attempts).
    #[serde(with = "DurationOr::<Forever>")]
    pub outbox_delivered: Option<Duration>,
    /// Outbox events with a dead delivery (given up on), kept longer for `outbox replay`.
    #[serde(with = "DurationOr::<Forever>")]
    pub outbox_dead: Option<Duration>,
    /// Webhook attempt records (status, timing, response) of kept deliveries.
    #[serde(with = "DurationOr::<Forever>")]
    pub webhook_attempts: Option<Duration>,
    /// Transition attempts (the attempt log of reports; idempotency keys with them).
    #[serde(with = "DurationOr::<Forever>")]
    pub attempts: Option<Duration>,
    /// Closed state intervals (history, idle time, adherence); the open one is kept.
    #[serde(with = "DurationOr::<Forever>")]
    pub intervals: Option<Duration>,
    /// Metric samples of the skill and queue pollers (`metric_samples`, when present).
    #[serde(with = "DurationOr::<Forever>")]
    pub samples: Option<Duration>,
    /// Finished bulk jobs and their items.
    #[serde(with = "DurationOr::<Forever>")]
    pub bulk_jobs: Option<Duration>,
    /// Finished rule firings and what they did per agent (each rule's latest is kept).
    #[serde(with = "DurationOr::<Forever>")]
    pub rule_firings: Option<Duration>,
    /// Finished analytics jobs (completed or failed) and their stored results; their
    /// audit entries, which keep each result's SHA-256, stay as long as `audit`.
    #[serde(with = "DurationOr::<Forever>")]
    pub analytics_jobs: Option<Duration>,
    /// Audit entries, pruned only up to a checkpoint that later verification starts from.
    #[serde(with = "DurationOr::<Forever>")]
    pub audit: Option<Duration>,
    /// How often a pruning pass runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The most rows removed per write transaction; each is sized to hold the write
    /// lock about 4 ms and to write its pages back within as long, and other writers
    /// go between two of them.
    pub batch_size: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            outbox_delivered: days(30),
            outbox_dead: days(90),
            webhook_attempts: days(30),
            attempts: days(400),
            intervals: days(400),
            samples: days(90),
            bulk_jobs: days(90),
            rule_firings: days(90),
            analytics_jobs: days(30),
            audit: days(400),
            interval: Duration::from_secs(600),
            batch_size: 500,
        }
    }
}

/// The shortest age accepted: an hour.
const MIN_AGE: Duration = Duration::from_secs(3_600);

impl RetentionConfig {
    /// Every configured age by key, for validation and reporting.
    pub fn ages(&self) -> [(&'static str, Option<Duration>); 10] {
        [
            ("outbox_delivered", self.outbox_delivered),
            ("outbox_dead", self.outbox_dead),
            ("webhook_attempts", self.webhook_attempts),
            ("attempts", self.attempts),
            ("intervals", self.intervals),
            ("samples", self.samples),
            ("bulk_jobs", self.bulk_jobs),
            ("rule_firings", self.rule_firings),
            ("analytics_jobs", self.analytics_jobs),
            ("audit", self.audit),
        ]
    }

    /// Adds a line naming the key for every out-of-range value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (key, age) in self.ages() {
            if let Some(age) = age
                && age < MIN_AGE
            {
                problems.push(format!(
                    "retention.{key} must be at least 1h or \"forever\", got {}",
                    humantime::format_duration(age)
                ));
            }
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(DAY)).contains(&self.interval) {
            problems.push(format!(
                "retention.interval must be between 10s and 1day, got {}",
                humantime::format_duration(self.interval)
            ));
        }
        if !(1..=100_000).contains(&self.batch_size) {
            problems.push(format!(
                "retention.batch_size must be between 1 and 100000, got {}",
                self.batch_size
            ));
        }
    }
}

/// HKDF's salt for the tenants' audit keys: names what the derived keys are for, so the
/// same `audit.key` used elsewhere never yields these keys.
const TENANT_KEY_SALT: &[u8] = b"wfmd audit chain key per tenant";

/// Shortest accepted `audit.key`, in bytes.
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// The audit chain's key and checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// HMAC-SHA-256 key of the chain: from the first entry written with it on, each
    /// entry's hash is keyed, so rows appended by someone holding the file but not the
    /// key are detected. Set it from the environment (`WFMD_AUDIT__KEY`). In a tenant's
    /// resolved configuration this is that tenant's own key ([`AuditConfig::for_tenant`]).
    #[serde(
        serialize_with = "mask_optional_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<SecretString>,
    /// How often the chain's head is recorded as a checkpoint and published as an
    /// `audit.checkpoint` webhook (when entries were added since the last one).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key: None,
            checkpoint_interval: Duration::from_secs(3_600),
        }
    }
}

impl AuditConfig {
    /// The key, when one is set (an empty value counts as none).
    pub fn key(&self) -> Option<&SecretString> {
        self.key
            .as_ref()
            .filter(|key| !key.expose_secret().is_empty())
    }

    /// The section as tenant `id` uses it: its chain keyed with HKDF-SHA-256 of
    /// `audit.key` (salt: a fixed label; info: the id), as 64 hex digits. Holding one
    /// tenant's key reveals neither `audit.key` nor another tenant's key. The tenant
    /// `default` keeps `audit.key` itself, so a database written before tenants existed
    /// keeps verifying.
    pub fn for_tenant(&self, id: &TenantId) -> AuditConfig {
        let key = match self.key() {
            Some(key) if *id != TenantId::default_tenant() => {
                let kdf = hkdf::Hkdf::<sha2_0_11::Sha256>::new(
                    Some(TENANT_KEY_SALT),
                    key.expose_secret().as_bytes(),
                );
                let mut derived = [0u8; 32];
                kdf.expand(id.as_str().as_bytes(), &mut derived)
                    .expect("32 bytes are well within HKDF-SHA-256's output limit");
                Some(SecretString::from(hex::encode(derived)))
            }
            _ => self.key.clone(),
        };
        AuditConfig {
            key,
            checkpoint_interval: self.checkpoint_interval,
        }
    }

    /// Adds a line naming the key for every bad value; never prints the key.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(key) = self.key()
            && key.expose_secret().len() < MIN_AUDIT_KEY_BYTES
        {
            problems.push(format!(
                "audit.key must be at least {MIN_AUDIT_KEY_BYTES} characters (e.g. \
                 `openssl rand -hex 32`), got {}",
                key.expose_secret().len()
            ));
        }
        let interval = self.checkpoint_interval;
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * DAY)).contains(&interval) {
            problems.push(format!(
                "audit.checkpoint_interval must be between 1m and 7days, got {}",
                humantime::format_duration(interval)
            ));
        }
    }
}

pub(super) fn mask_optional_secret<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) if !secret.expose_secret().is_empty() => serializer.serialize_str("********"),
        _ => serializer.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;

    #[test]
    fn defaults_are_valid_and_ages_read_as_durations_or_forever() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.retention.intervals, days(400));
        assert_eq!(config.audit.checkpoint_interval, Duration::from_secs(3_600));
        let config = load(
            "[retention]\noutbox_delivered = \"7d\"\naudit = \"forever\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.retention.outbox_delivered, days(7));
        assert_eq!(config.retention.audit, None);
        let shown = config.to_masked_toml();
        assert!(shown.contains("audit = \"forever\""), "{shown}");
    }

    #[test]
    fn bad_ages_and_keys_name_their_key_and_never_print_the_secret() {
        let err = load(
            "[retention]\nintervals = \"30s\"\nbatch_size = 0\nattempts = \"soon\"\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("retention.attempts"), "{err}");
        let err = load(
            "[retention]\nintervals = \"30s\"\nbatch_size = 0\n",
            &[("WFMD_AUDIT__KEY", "short-secret-value")],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "retention.intervals must be at least 1h or \"forever\", got 30s",
                "retention.batch_size must be between 1 and 100000, got 0",
                "audit.key must be at least 32 characters (e.g. `openssl rand -hex 32`), got 18",
            ]
        );
        assert!(!err.to_string().contains("short-secret-value"));
    }

    #[test]
    fn the_audit_key_comes_from_the_environment_and_is_masked() {
        let key = "k".repeat(40);
        let config = load("", &[("WFMD_AUDIT__KEY", &key)]).unwrap();
        assert_eq!(config.audit.key().unwrap().expose_secret(), key);
        let shown = config.to_masked_toml();
        assert!(shown.contains("key = \"********\""), "{shown}");
        assert!(!shown.contains(&key));
        assert!(!format!("{config:?}").contains(&key));
    }

    #[test]
    fn each_tenant_has_its_own_audit_key_and_the_tenant_default_keeps_audit_key() {
        let master = "m".repeat(40);
        let config = load("", &[("WFMD_AUDIT__KEY", &master)]).unwrap().audit;
        let key_of = |id: &str| {
            config
                .for_tenant(&id.parse().unwrap())
                .key()
                .unwrap()
                .expose_secret()
                .to_owned()
        };
        let (alpha, beta) = (key_of("alpha"), key_of("beta"));
        assert_eq!(key_of("default"), master);
        assert_ne!(alpha, beta);
        assert_ne!(alpha, master);
        assert!(!alpha.contains(&master) && !beta.contains(&master));
        assert_eq!(alpha, key_of("alpha"), "the same key on every start");
        assert!(alpha.len() >= MIN_AUDIT_KEY_BYTES);
        let other = load("", &[("WFMD_AUDIT__KEY", &"n".repeat(40))])
            .unwrap()
            .audit;
        assert_ne!(
            other
                .for_tenant(&"alpha".parse().unwrap())
                .key()
                .unwrap()
                .expose_secret(),
            alpha,
            "another audit.key, another tenant key"
        );
        let unkeyed = load("", &[]).unwrap().audit;
        assert!(
            unkeyed
                .for_tenant(&"alpha".parse().unwrap())
                .key()
                .is_none()
        );
        assert_eq!(
            config
                .for_tenant(&"alpha".parse().unwrap())
                .checkpoint_interval,
            config.checkpoint_interval
        );
    }
}
