//! Typed configuration: built-in defaults < TOML file < `WFMD_SECTION__KEY` environment.
//!
//! Everything is validated at load, and every problem is reported with the key it
//! belongs to (`cxone.requests_per_minute must be between 1 and 6000, got 0`), so a
//! bad deployment fails at start with exit code 2 instead of misbehaving later.
//! Secrets are [`SecretString`]s: they print as `********` in `wfmd config check`, in
//! logs and in `Debug` output.

pub mod analytics;
pub mod api_tokens;
pub mod boards;
pub mod cxone_incontact;
pub mod delivery;
mod duration_or;
pub mod exports;
pub mod ha;
pub mod sync;
pub mod tenants;
pub mod webhooks;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

pub mod bulk;
mod database;
pub mod deferred;
pub mod live;
pub mod retention;
pub mod rules;
pub mod server;

pub use database::DatabaseConfig;
pub use delivery::DeliveryConfig;
pub use rules::{RuleConfig, SchedulerConfig};
pub use server::ServerConfig;
pub use sync::SyncConfig;
pub use webhooks::{EVENT_TYPES, WebhookConfig, webhook_key};
mod adherence;
pub use adherence::{
    AdherenceRuleConfig, AutoCorrect, AutomationConfig, ComplianceConfig, SchedulesConfig,
};

/// Where `--config` points when it is not given and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/wfmd.toml";

/// Prefix of configuration environment variables (`WFMD_CXONE__CLIENT_SECRET`).
const ENV_PREFIX: &str = "WFMD_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub cxone: CxoneConfig,
    pub retry: RetryConfig,
    pub log: LogConfig,
    pub sync: SyncConfig,
    pub delivery: DeliveryConfig,
    pub scheduler: SchedulerConfig,
    pub webhooks: Vec<WebhookConfig>,
    pub bulk: bulk::BulkConfig,
    /// Changes that wait for a busy agent (`when_busy = "defer"`).
    pub deferred: deferred::DeferredConfig,
    pub rules: Vec<RuleConfig>,
    pub schedules: SchedulesConfig,
    pub automation: AutomationConfig,
    pub compliance: ComplianceConfig,
    /// The wallboard's skill and queue metrics.
    pub live: live::LiveConfig,
    /// Bearer tokens of the HTTP API; none = the API binds to loopback only.
    pub api_tokens: Vec<api_tokens::ApiTokenConfig>,
    pub retention: retention::RetentionConfig,
    pub audit: retention::AuditConfig,
    /// Platform aggregation queries.
    pub analytics: analytics::AnalyticsConfig,
    /// Downloads: per-caller limit, read time, spool.
    pub exports: exports::ExportsConfig,
    /// Boards for wall displays (`/?kiosk=1&board=NAME`), shared by every tenant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boards: Vec<boards::BoardConfig>,
    /// Several contact-center tenants; none = the top-level sections are the tenant
    /// `default`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<tenants::TenantConfig>,
    /// This instance among several on one PostgreSQL database; none = the sole
    /// instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<ha::HaConfig>,
}

/// The API dialect spoken to the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    V2,
    /// The platform NICE publishes (access key, discovery, delta polling).
    Incontact,
}

impl Dialect {
    /// The dialect's name, as `cxone.dialect` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::V2 => "v2",
            Dialect::Incontact => "incontact",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CxoneConfig {
    pub dialect: Dialect,
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    #[serde(serialize_with = "mask_secret")]
    pub client_secret: SecretString,
    /// The tenant budget wfmd keeps itself under, over every caller in the process.
    pub requests_per_minute: u32,
    /// The share of the budget background work (schedule refresh, pollers) keeps while
    /// other lanes wait; with nobody else waiting it may use all of it.
    pub background_share: f64,
    /// Permits of the budget only single changes may spend, so a person's first
    /// requests never wait behind the other lanes.
    pub interactive_reserve: u32,
    pub request_timeout_ms: u64,
    /// How long a fetched schedule or break status is reused for compliance checks.
    pub schedule_cache_ttl_ms: u64,
    /// incontact: the API user's access key id (see `cxone_incontact`).
    pub access_key_id: String,
    #[serde(serialize_with = "mask_secret")]
    pub access_key_secret: SecretString,
    /// incontact: where discovery starts.
    pub auth_base: String,
    /// incontact: the tenant id for discovery; empty reads it from the id_token.
    pub tenant_id: String,
    /// incontact: `34.0`.
    pub api_version: String,
    /// incontact: wfmd reason -> unavailable code name or id.
    pub reason_codes: std::collections::BTreeMap<String, String>,
    /// incontact: WFM activity titles that are mandatory breaks.
    pub break_activities: cxone_incontact::BreakActivities,
}

impl CxoneConfig {
    /// Adds a line naming the key for every bad value; `sync` for the room its polls
    /// take of the budget, `simulate` when the simulator stands in for the platform.
    pub fn validate(&self, sync: &SyncConfig, simulate: bool, problems: &mut Vec<String>) {
        let c = self;
        in_range(
            problems,
            "cxone.requests_per_minute",
            c.requests_per_minute.into(),
            1,
            6_000,
        );
        in_range(
            problems,
            "cxone.interactive_reserve",
            c.interactive_reserve.into(),
            0,
            100,
        );
        in_range(
            problems,
            "cxone.request_timeout_ms",
            c.request_timeout_ms,
            100,
            300_000,
        );
        in_range(
            problems,
            "cxone.schedule_cache_ttl_ms",
            c.schedule_cache_ttl_ms,
            0,
            3_600_000,
        );
        let share = c.background_share;
        if !(share > 0.0 && share < 1.0) {
            problems.push(format!(
                "cxone.background_share must be above 0 and below 1, got {share}"
            ));
        }
        // A budget of 0 is out of range, said above; a valid one may still be too small.
        let rpm = c.requests_per_minute;
        if sync.enabled && rpm >= 1 && rpm <= sync.polls_per_minute() {
            problems.push(format!(
                "cxone.requests_per_minute ({rpm}) must leave room beyond the {} polls a \
                 minute of state sync (sync.interval_ms = {}) for every other platform call",
                sync.polls_per_minute(),
                sync.interval_ms
            ));
        }
        if simulate {
            return;
        }
        // The incontact dialect discovers both (base_url overrides, checked there).
        let urls: &[(&str, &String)] = match c.dialect {
            Dialect::V2 => &[
                ("cxone.base_url", &c.base_url),
                ("cxone.token_url", &c.token_url),
            ],
            Dialect::Incontact => &[],
        };
        for &(key, value) in urls {
            if let Some(problem) = url_problem(key, value) {
                problems.push(problem);
            }
        }
        if c.client_id.trim().is_empty() {
            problems.push("cxone.client_id must be set (or run with --simulate)".into());
        }
        if c.client_secret.expose_secret().is_empty() {
            problems.push(
                "cxone.client_secret must be set, e.g. with WFMD_CXONE__CLIENT_SECRET \
                 (or run with --simulate)"
                    .into(),
            );
        }
    }
}

impl Default for CxoneConfig {
    fn default() -> Self {
        Self {
            dialect: Dialect::V2,
            base_url: String::new(),
            token_url: String::new(),
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
            requests_per_minute: 100,
            background_share: crate::cxone::budget::DEFAULT_BACKGROUND_SHARE,
            interactive_reserve: crate::cxone::budget::DEFAULT_INTERACTIVE_RESERVE,
            request_timeout_ms: 10_000,
            schedule_cache_ttl_ms: 30_000,
            access_key_id: String::new(),
            access_key_secret: SecretString::from(String::new()),
            auth_base: cxone_incontact::DEFAULT_AUTH_BASE.to_owned(),
            tenant_id: String::new(),
            api_version: cxone_incontact::DEFAULT_API_VERSION.to_owned(),
            reason_codes: std::collections::BTreeMap::new(),
            break_activities: cxone_incontact::BreakActivities::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl RetryConfig {
    /// Adds a line naming the key for every bad value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        in_range(
            problems,
            "retry.max_retries",
            self.max_retries.into(),
            0,
            20,
        );
        in_range(
            problems,
            "retry.base_delay_ms",
            self.base_delay_ms,
            1,
            600_000,
        );
        in_range(
            problems,
            "retry.max_delay_ms",
            self.max_delay_ms,
            1,
            3_600_000,
        );
        if self.max_delay_ms < self.base_delay_ms {
            problems.push(format!(
                "retry.max_delay_ms must not be below retry.base_delay_ms ({}), got {}",
                self.base_delay_ms, self.max_delay_ms
            ));
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `wfmd=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl LogConfig {
    /// Adds a line naming the key when the level is not a valid filter.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.push(format!("log.level is not a valid filter: {e}"));
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

fn mask_secret<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    if secret.expose_secret().is_empty() {
        serializer.serialize_str("")
    } else {
        serializer.serialize_str("********")
    }
}

/// A configuration that could not be loaded; each line names a key or the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// An explicit `--config FILE` (must exist), or `None` for the default file if present.
    pub file: Option<PathBuf>,
    /// Whether the platform settings will be filled in by `--simulate`, so they need not
    /// be configured.
    pub simulate: bool,
}

impl Config {
    /// Loads and validates the configuration from `source` and the process environment.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_with_env(source, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        source: &ConfigSource,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_from(source, env, tenants::TenantVariables::Strict)
    }

    /// [`Config::load`] for a reload of the running daemon: a tenant's variable that
    /// names no configured tenant is passed over rather than refused, since the
    /// environment is the one the daemon started with, which still holds the variables
    /// of a tenant the configuration no longer has.
    pub fn reload(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_from(source, std::env::vars(), tenants::TenantVariables::Lenient)
    }

    /// [`Config::reload`] with the environment given explicitly (for tests).
    pub fn reload_with_env(
        source: &ConfigSource,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_from(source, env, tenants::TenantVariables::Lenient)
    }

    fn load_from(
        source: &ConfigSource,
        env: impl IntoIterator<Item = (String, String)>,
        variables: tenants::TenantVariables,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        match &source.file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::one(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH));
            }
            None => {}
        }
        // Only `WFMD_SECTION__KEY` variables and the lists of `ENV_LISTS` are
        // configuration: others with the prefix (such as `WFMD_TOKEN` for `wfmd bulk`)
        // belong to other parts of the CLI.
        let (tenant_env, env): (Vec<_>, Vec<_>) = env
            .into_iter()
            .partition(|(key, _)| tenants::is_tenant_variable(key));
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(key, _)| {
                key.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                    rest.contains("__")
                        || ENV_LISTS
                            .iter()
                            .any(|(var, _)| key == var || key.strip_suffix("_FILE") == Some(var))
                })
            })
            .collect();
        let (lists, env): (Vec<_>, Vec<_>) = env.into_iter().partition(|(key, _)| {
            ENV_LISTS
                .iter()
                .any(|(var, _)| key == var || key.strip_suffix("_FILE") == Some(var))
        });
        for (key, value) in env
            .into_iter()
            .filter(|(key, _)| key[ENV_PREFIX.len()..].contains("__"))
        {
            let key = key[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
            figment = figment.merge(Serialized::default(&key, parse_env_value(&value)));
        }
        let mut from_env = Vec::new();
        for (var, key) in ENV_LISTS {
            if let Some((origin, entries)) = list_from_env(&lists, var, key)? {
                figment = figment.merge(Serialized::default(key, entries));
                from_env.push((key, origin));
            }
        }
        // Problems with entries given by a variable name the variable as well.
        let name_origin = |mut error: ConfigError| {
            for problem in &mut error.problems {
                if let Some((_, origin)) = from_env.iter().find(|(key, _)| {
                    problem.starts_with(&format!("{key}["))
                        || problem.starts_with(&format!("{key}:"))
                }) {
                    problem.push_str(&format!(" (from {origin})"));
                }
            }
            error
        };
        let mut config: Config = figment
            .extract()
            .map_err(describe_figment_error)
            .map_err(name_origin)?;
        config.read_rules_file()?;
        config.validate(source.simulate).map_err(name_origin)?;
        config.resolve_tenants(&figment, &tenant_env, source.simulate, variables)?;
        let problems = config.token_tenant_problems();
        if !problems.is_empty() {
            return Err(name_origin(ConfigError { problems }));
        }
        Ok(config)
    }

    /// Checks every value; collects all problems instead of stopping at the first.
    pub fn validate(&self, simulate: bool) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.sync.validate(
            cxone_incontact::min_sync_interval_ms(self.cxone.dialect),
            &mut problems,
        );
        self.delivery.validate(&mut problems);
        // With [[tenants]], each tenant's resolved configuration checks its own platform.
        if self.tenants.is_empty() {
            self.cxone.validate(&self.sync, simulate, &mut problems);
            cxone_incontact::validate(self, simulate, &mut problems);
        }
        self.retry.validate(&mut problems);
        self.database.validate(&mut problems);
        self.log.validate(&mut problems);
        adherence::validate(self, &mut problems);
        webhooks::validate(&self.webhooks, &mut problems);
        self.bulk.validate(&mut problems);
        self.deferred.validate(&mut problems);
        self.live.validate(&mut problems);
        self.server.validate(&self.api_tokens, &mut problems);
        problems.extend(self.rule_problems());
        api_tokens::validate(&self.api_tokens, &mut problems);
        self.retention.validate(&mut problems);
        self.audit.validate(&mut problems);
        self.analytics.validate(&mut problems);
        self.exports.validate(&mut problems);
        boards::validate(&self.boards, &mut problems);
        if let Some(ha) = &self.ha {
            if crate::store::Backend::of_url(&self.database.url) != crate::store::Backend::Postgres
            {
                problems.push(
                    "[ha] is only for several instances on PostgreSQL; database.url is not \
                     a postgres:// URL (a second daemon on one SQLite file is refused)"
                        .into(),
                );
            }
            ha.validate(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serializes")
    }

    /// Requests a minute the state sync's subscription polls take (one each
    /// `sync.interval_ms`, rounded up); none when the sync is off.
    pub fn sync_polls_per_minute(&self) -> u32 {
        self.sync.polls_per_minute()
    }

    /// The request budget of every platform call but the sync's polls:
    /// `cxone.requests_per_minute` less [`Config::sync_polls_per_minute`]. The polls are
    /// paced by their subscription's interval instead, so they never wait behind a bulk
    /// job or a rule firing for a permit, and together everything stays within
    /// `requests_per_minute`.
    pub fn call_budget_per_minute(&self) -> u32 {
        self.cxone
            .requests_per_minute
            .saturating_sub(self.sync_polls_per_minute())
            .max(1)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cxone.request_timeout_ms)
    }

    pub fn schedule_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cxone.schedule_cache_ttl_ms)
    }
}

/// Adds a line naming `key` when `value` lies outside `min..=max`.
fn in_range(problems: &mut Vec<String>, key: &str, value: u64, min: u64, max: u64) {
    if !(min..=max).contains(&value) {
        problems.push(format!(
            "{key} must be between {min} and {max}, got {value}"
        ));
    }
}

fn url_problem(key: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        return Some(format!("{key} must be set (or run with --simulate)"));
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => None,
        Ok(url) => Some(format!(
            "{key} must be an http(s) URL, got scheme `{}`",
            url.scheme()
        )),
        Err(e) => Some(format!("{key} is not a valid URL ({e}): `{value}`")),
    }
}

/// Environment values are strings; numbers, booleans and `[a, b]` lists are given their
/// TOML meaning so `WFMD_CXONE__REQUESTS_PER_MINUTE=50` sets a number.
/// Lists of tables settable as one environment variable each, for deployments with no
/// config file to edit (containers, systemd credentials): `VAR` holds a JSON array or a
/// TOML inline array of tables; `VAR_FILE` names a TOML file of `[[key]]` tables (such
/// as `$CREDENTIALS_DIRECTORY/webhooks`). Either replaces the config file's entries.
pub const ENV_LISTS: [(&str, &str); 2] = [
    ("WFMD_API_TOKENS", "api_tokens"),
    ("WFMD_WEBHOOKS", "webhooks"),
];

/// The entries `var` (or `var_FILE`) gives for `key`, with the variable's name (and
/// file), or a problem naming the variable.
fn list_from_env(
    env: &[(String, String)],
    var: &str,
    key: &str,
) -> Result<Option<(String, serde_json::Value)>, ConfigError> {
    let file_var = format!("{var}_FILE");
    let inline = env.iter().find(|(k, _)| k == var).map(|(_, v)| v);
    let file = env.iter().find(|(k, _)| *k == file_var).map(|(_, v)| v);
    match (inline, file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ConfigError::one(format!(
            "{var} and {file_var} are both set; give {key} one way"
        ))),
        (Some(value), None) => {
            if let Ok(entries @ serde_json::Value::Array(_)) =
                serde_json::from_str::<serde_json::Value>(value)
            {
                return Ok(Some((var.to_owned(), entries)));
            }
            let parsed = toml::from_str::<toml::Table>(&format!("entries = {value}"))
                .map_err(|e| e.message().to_owned())
                .and_then(|mut table| match table.remove("entries") {
                    Some(entries @ toml::Value::Array(_)) => {
                        serde_json::to_value(entries).map_err(|e| e.to_string())
                    }
                    _ => Err("not an array".to_owned()),
                });
            match parsed {
                Ok(entries) => Ok(Some((var.to_owned(), entries))),
                Err(e) => Err(ConfigError::one(format!(
                    "{var} must be a JSON array of objects or a TOML inline array of tables \
                     (e.g. [{{url = \"https://…\", secret = \"whsec_…\"}}]): {e}"
                ))),
            }
        }
        (None, Some(path)) => {
            let origin = format!("{file_var} {path}");
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::one(format!("{origin}: cannot read it: {e}")))?;
            let mut table = toml::from_str::<toml::Table>(&text)
                .map_err(|e| ConfigError::one(format!("{origin}: not TOML: {}", e.message())))?;
            let entries = table.remove(key).unwrap_or(toml::Value::Array(Vec::new()));
            if let Some(other) = table.keys().next() {
                return Err(ConfigError::one(format!(
                    "{origin} may hold only [[{key}]] tables, found `{other}`"
                )));
            }
            if !entries.is_array() {
                return Err(ConfigError::one(format!(
                    "{origin}: `{key}` must be [[{key}]] tables"
                )));
            }
            let entries = serde_json::to_value(entries)
                .map_err(|e| ConfigError::one(format!("{origin}: {e}")))?;
            Ok(Some((origin, entries)))
        }
    }
}

fn parse_env_value(raw: &str) -> figment::value::Value {
    raw.parse::<figment::value::Value>()
        .unwrap_or_else(|_| figment::value::Value::from(raw.to_owned()))
}

fn describe_figment_error(error: figment::Error) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|e| {
            // `rules.2.cron` reads as `rules[2].cron`, as validation names entries.
            let key = e.path.iter().fold(String::new(), |key, part| {
                match (part.parse::<usize>(), key.is_empty()) {
                    (Ok(index), false) => format!("{key}[{index}]"),
                    (_, true) => part.clone(),
                    (_, false) => format!("{key}.{part}"),
                }
            });
            let origin = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{key}: {}{origin}", e.kind)
            }
        })
        .collect();
    ConfigError { problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    /// The commented-out `[[TABLE]]` entry of wfmd.example.toml, un-commented: the
    /// `# key = value` lines from `# [[TABLE]]` to the next blank line (or the end).
    pub(super) fn example_entry(table: &str) -> String {
        let example = include_str!("../../config/wfmd.example.toml");
        let lines: Vec<&str> = example
            .split(&format!("# [[{table}]]"))
            .nth(1)
            .unwrap_or_else(|| panic!("wfmd.example.toml has no `# [[{table}]]` entry"))
            .lines()
            .skip(1)
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with('#'))
            .collect();
        format!("[[{table}]]\n{}\n", lines.join("\n"))
    }

    pub(super) fn load(contents: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let f = file(contents);
        let source = ConfigSource {
            file: Some(f.path().to_owned()),
            simulate: true,
        };
        Config::load_with_env(
            &source,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn database_url_is_sqlite_or_postgresql_and_a_refused_one_shows_no_password() {
        for url in [
            "sqlite://data/wfmd.db",
            "postgres://wfmd:pw@db.example/wfmd",
            "postgresql://wfmd@db.example/wfmd?options[search_path]=wfmd",
        ] {
            let text = format!("[database]\nurl = \"{url}\"\n");
            assert_eq!(load(&text, &[]).unwrap().database.url, url);
        }
        let refused = load(
            "[database]\nurl = \"mysql://wfmd:s3cret@db.example/wfmd\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("database.url must be"), "{refused}");
        assert!(refused.contains("db.example"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[test]
    fn the_database_password_is_masked_in_config_check_and_debug() {
        let config = load(
            "[database]\nurl = \"postgres://wfmd:s3cret@db.example/wfmd\"\n",
            &[],
        )
        .unwrap();
        for shown in [config.to_masked_toml(), format!("{config:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains("postgres://wfmd:********@db.example/wfmd"),
                "{shown}"
            );
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.cxone.requests_per_minute, 100);
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        let config = load(
            "[cxone]\nrequests_per_minute = 50\nclient_id = \"from-file\"\n",
            &[
                ("WFMD_CXONE__REQUESTS_PER_MINUTE", "70"),
                ("WFMD_RETRY__MAX_RETRIES", "5"),
                ("WFMD_TOKEN", "not configuration"),
            ],
        )
        .unwrap();
        assert_eq!(config.cxone.requests_per_minute, 70);
        assert_eq!(config.cxone.client_id, "from-file");
        assert_eq!(config.retry.max_retries, 5);
    }

    #[test]
    fn out_of_range_value_is_named_with_its_key() {
        let err = load("[cxone]\nrequests_per_minute = 0\n", &[]).unwrap_err();
        assert_eq!(
            err.problems,
            ["cxone.requests_per_minute must be between 1 and 6000, got 0"]
        );
    }

    #[test]
    fn background_share_must_lie_strictly_between_zero_and_one() {
        assert_eq!(
            load("", &[]).unwrap().cxone.background_share,
            crate::cxone::budget::DEFAULT_BACKGROUND_SHARE
        );
        load("[cxone]\nbackground_share = 0.5\n", &[]).unwrap();
        for bad in ["0", "1", "1.5", "-0.1"] {
            let err = load(&format!("[cxone]\nbackground_share = {bad}\n"), &[]).unwrap_err();
            assert!(
                err.problems[0].starts_with("cxone.background_share must be above 0"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_sync_polls_have_their_share_of_the_budget_set_aside() {
        let config = load("[cxone]\nrequests_per_minute = 100\n", &[]).unwrap();
        assert_eq!(config.sync_polls_per_minute(), 6);
        assert_eq!(config.call_budget_per_minute(), 94);
        let slower = load("[sync]\ninterval_ms = 45000\n", &[]).unwrap();
        assert_eq!(slower.sync_polls_per_minute(), 2, "rounded up");
        let off = load("[sync]\nenabled = false\n", &[]).unwrap();
        assert_eq!(off.call_budget_per_minute(), 100);

        let err = load("[cxone]\nrequests_per_minute = 6\n", &[]).unwrap_err();
        assert!(
            err.problems[0].starts_with("cxone.requests_per_minute (6) must leave room"),
            "{err}"
        );
        load(
            "[cxone]\nrequests_per_minute = 6\n[sync]\nenabled = false\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[cxone]\nrequests_per_minit = 10\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("requests_per_minit"), "{text}");
    }

    #[test]
    fn wrong_type_from_the_environment_names_the_key() {
        let err = load("", &[("WFMD_RETRY__MAX_RETRIES", "lots")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("retry.max_retries"), "{text}");
    }

    #[test]
    fn platform_settings_are_required_without_simulate() {
        let f = file("");
        let source = ConfigSource {
            file: Some(f.path().to_owned()),
            simulate: false,
        };
        let err = Config::load_with_env(&source, []).unwrap_err();
        let text = err.to_string();
        for key in [
            "cxone.base_url",
            "cxone.token_url",
            "cxone.client_id",
            "cxone.client_secret",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let source = ConfigSource {
            file: Some("/nonexistent/wfmd.toml".into()),
            simulate: true,
        };
        let err = Config::load_with_env(&source, []).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/wfmd.toml"));
    }

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn webhooks_load_with_one_or_two_secrets_and_an_event_filter() {
        let config = load(
            &format!(
                "[[webhooks]]\nurl = \"https://hooks.example.com/a\"\nsecret = \"{SPEC_SECRET}\"\n\
                 events = [\"agent.state_changed\"]\n\
                 [[webhooks]]\nurl = \"http://127.0.0.1:9/b\"\nsecret = [\"{SPEC_SECRET}\", \"{SPEC_SECRET}\"]\n"
            ),
            &[],
        )
        .unwrap();
        assert_eq!(config.webhooks.len(), 2);
        assert!(config.webhooks[0].wants("agent.state_changed"));
        assert!(!config.webhooks[0].wants("transition.rejected"));
        assert!(config.webhooks[1].wants("transition.rejected"));
        assert_eq!(config.webhooks[1].secret.len(), 2);
        let shown = config.to_masked_toml();
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }

    #[test]
    fn bad_webhooks_are_refused_naming_the_entry_and_field() {
        let err = load(
            "[[webhooks]]\nurl = \"ftp://example.com\"\nsecret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             events = [\"agent.exploded\"]\n\
             [[webhooks]]\nurl = \"https://example.com\"\nsecret = \"whsec_!!!\"\n\
             [[webhooks]]\nurl = \"https://example.com\"\nsecret = \"whsec_c2hvcnQ=\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "webhooks[0].url must be an http(s) URL",
            "webhooks[0].secret must start with `whsec_`",
            "webhooks[0].events has unknown event type `agent.exploded`",
            "webhooks[1].secret is not valid base64",
            "webhooks[2].secret decodes to 5 bytes",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(!text.contains("MfKQ9r8"), "never the secret: {text}");
    }

    #[test]
    fn webhook_url_credentials_are_masked_in_output_debug_and_errors() {
        let url = "https://hookuser:hookpass@hooks.example.com/in?token=tok123&channel=ops";
        let hook =
            |url: &str| format!("[[webhooks]]\nurl = \"{url}\"\nsecret = \"{SPEC_SECRET}\"\n");
        let config = load(&hook(url), &[]).unwrap();
        assert_eq!(config.webhooks[0].url, url, "kept whole for sending");
        let shown = config.to_masked_toml();
        assert!(
            shown.contains("https://***@hooks.example.com/in?token=***&channel=***"),
            "{shown}"
        );
        let debug = format!("{config:?}");
        for secret in ["hookuser", "hookpass", "tok123"] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!debug.contains(secret), "{debug}");
        }

        // Two endpoints that differ only in what is masked would be stored as one.
        let twins = hook(url) + &hook(&url.replace("tok123", "tok456"));
        let err = load(&twins, &[]).unwrap_err().to_string();
        assert!(
            err.contains("webhooks[1].url is the same endpoint as webhooks[0].url"),
            "{err}"
        );
        assert!(!err.contains("tok123") && !err.contains("tok456"), "{err}");
        let told_apart = hook(&format!("{url}#a")) + &hook(&url.replace("tok123", "tok456"));
        assert_eq!(load(&told_apart, &[]).unwrap().webhooks.len(), 2);

        // A URL that does not parse cannot be masked, so it is not shown at all.
        let err = load(&hook("https://user:pw@[::1/in?token=tok123"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhooks[0].url is not a valid URL"), "{err}");
        assert!(!err.contains("tok123") && !err.contains("pw@"), "{err}");
    }

    #[test]
    fn secrets_are_masked_in_output_and_debug() {
        let config = load("", &[("WFMD_CXONE__CLIENT_SECRET", "hunter2-very-secret")]).unwrap();
        assert_eq!(
            config.cxone.client_secret.expose_secret(),
            "hunter2-very-secret"
        );
        let toml = config.to_masked_toml();
        assert!(!toml.contains("hunter2"), "{toml}");
        assert!(toml.contains("client_secret = \"********\""), "{toml}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_file_loads_and_documents_every_key() {
        let example = include_str!("../../config/wfmd.example.toml");
        let config = load(example, &[]).unwrap();
        let effective: toml::Table = toml::from_str(&config.to_masked_toml()).unwrap();
        for (section, keys) in effective {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            let text = example
                .split(&format!("\n[{section}]\n"))
                .nth(1)
                .unwrap_or("");
            let text = text.split("\n[").next().unwrap_or("");
            for key in keys.keys() {
                assert!(
                    text.contains(&format!("\n{key} =")),
                    "{section}.{key} is not in wfmd.example.toml"
                );
            }
        }

        // The commented-out webhook entry, uncommented, is a valid configuration that
        // sets every key a webhook has.
        let config = load(&example_entry("webhooks"), &[]).unwrap();
        let hook = &config.webhooks[0];
        assert!(hook.events.is_some() && !hook.secret.is_empty());

        // So is the commented-out rule, which sets a selector, an action and every
        // other key.
        let rule = example_entry("rules");
        let config = load(&rule, &[]).unwrap();
        let rules = config.rules().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "care-lunch");
        let written: toml::Table = toml::from_str(&rule).unwrap();
        let written = written["rules"][0].as_table().unwrap();
        for key in [
            "name",
            "cron",
            "timezone",
            "set",
            "reason",
            "only_if_state",
            "skip_on_contact",
            "catch_up",
        ] {
            assert!(
                written.contains_key(key),
                "the [[rules]] example lacks {key}"
            );
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SHA: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn webhooks_and_api_tokens_come_from_the_environment_as_json_or_toml_replacing_the_file() {
        let file =
            format!("[[webhooks]]\nurl = \"https://file.example/hook\"\nsecret = \"{SECRET}\"\n");
        let json = format!(
            r#"[{{"url":"https://env.example/a","secret":"{SECRET}","events":["bulk.completed"]}}]"#
        );
        let toml = format!(r#"[{{name = "desk", token_sha256 = "{SHA}", role = "viewer"}}]"#);
        let config = load(
            &file,
            &[("WFMD_WEBHOOKS", &json), ("WFMD_API_TOKENS", &toml)],
        )
        .unwrap();
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].url, "https://env.example/a");
        assert!(config.webhooks[0].wants("bulk.completed"));
        assert!(!config.webhooks[0].wants("agent.state_changed"));
        assert_eq!(config.api_tokens.len(), 1);
        assert_eq!(config.api_tokens[0].name, "desk");
    }

    #[test]
    fn a_credentials_file_gives_the_tables_and_problems_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks");
        std::fs::write(
            &path,
            format!("[[webhooks]]\nurl = \"https://cred.example/h\"\nsecret = \"{SECRET}\"\n\n[[webhooks]]\nurl = \"https://cred.example/2\"\nsecret = \"{SECRET}\"\n"),
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = load("", &[("WFMD_WEBHOOKS_FILE", path)]).unwrap();
        assert_eq!(config.webhooks.len(), 2);
        assert_eq!(config.webhooks[1].url, "https://cred.example/2");

        let problems = |env: &[(&str, &str)]| load("", env).unwrap_err().problems.join("\n");
        let both = problems(&[("WFMD_WEBHOOKS_FILE", path), ("WFMD_WEBHOOKS", "[]")]);
        assert!(
            both.contains("WFMD_WEBHOOKS and WFMD_WEBHOOKS_FILE are both set"),
            "{both}"
        );
        let garbage = problems(&[("WFMD_API_TOKENS", "desk:viewer")]);
        assert!(
            garbage.starts_with("WFMD_API_TOKENS must be a JSON array"),
            "{garbage}"
        );
        let missing = problems(&[("WFMD_WEBHOOKS", r#"[{"url":"https://x.example/"}]"#)]);
        assert!(
            missing.contains("webhooks[0]")
                && missing.contains("secret")
                && missing.contains("(from WFMD_WEBHOOKS)"),
            "{missing}"
        );
        let bad_url = problems(&[(
            "WFMD_WEBHOOKS",
            &format!(r#"[{{"url":"ftp://x","secret":"{SECRET}"}}]"#),
        )]);
        assert!(
            bad_url.contains("webhooks[0].url") && bad_url.contains("(from WFMD_WEBHOOKS)"),
            "{bad_url}"
        );
        let unreadable = problems(&[("WFMD_API_TOKENS_FILE", "/nonexistent/tokens")]);
        assert!(
            unreadable.starts_with("WFMD_API_TOKENS_FILE /nonexistent/tokens: cannot read it"),
            "{unreadable}"
        );
        std::fs::write(
            dir.path().join("mixed"),
            "[server]\nlisten = \"0.0.0.0:1\"\n",
        )
        .unwrap();
        let mixed_path = dir.path().join("mixed");
        let mixed = problems(&[("WFMD_WEBHOOKS_FILE", mixed_path.to_str().unwrap())]);
        assert!(
            mixed.contains("may hold only [[webhooks]] tables, found `server`"),
            "{mixed}"
        );
    }
}
