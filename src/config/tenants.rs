//! `[[tenants]]`: several contact-center tenants in one deployment.
//!
//! Each tenant has its own `[tenants.cxone]` (either dialect, its own credentials and
//! budget) and may give its own `sync`, `live`, `schedules`, `automation`, `compliance`,
//! `rules` and `webhooks`. A section a tenant gives is laid over the top-level one key by
//! key (lists — rules, webhooks — replace it whole); a section it leaves out is the
//! top-level one. Everything else (server, database, log, retry, delivery, bulk,
//! scheduler, retention, audit, analytics, exports, API tokens) belongs to the process.
//!
//! Each tenant resolves to a whole [`Config`] of its own ([`TenantSpec`]), so every
//! service is built for a tenant exactly as it was for the one tenant of a configuration
//! without `[[tenants]]` — which is the tenant `default`, on the top-level sections.
//!
//! Secrets come per tenant from `WFMD_TENANTS__<ID>__<SECTION>__<KEY>` (the id upper
//! case, `-` as `_`), or from the file a `…_FILE` variable names (a credentials file).

use std::collections::{BTreeMap, BTreeSet};

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};
use serde::{Deserialize, Serialize};

use super::{
    AutomationConfig, ComplianceConfig, Config, ConfigError, CxoneConfig, RuleConfig,
    SchedulesConfig, SyncConfig, WebhookConfig, describe_figment_error, live, parse_env_value,
};
pub use crate::domain::tenant::TenantId;

/// Prefix of a tenant's environment variables, before its id.
const TENANT_ENV_PREFIX: &str = "WFMD_TENANTS__";

/// The sections a tenant may give for itself, laid over the top-level ones.
const TENANT_SECTIONS: [&str; 7] = [
    "sync",
    "live",
    "schedules",
    "automation",
    "compliance",
    "rules",
    "webhooks",
];

/// What a tenant's variable that names no configured tenant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TenantVariables {
    /// A problem (a typo in its name, most likely): at start.
    Strict,
    /// Passed over: on reload, where the environment is the one the daemon started
    /// with, and a tenant removed since has left its variables behind.
    Lenient,
}

/// One `[[tenants]]` entry as written (after its secrets are filled in, as resolved).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: TenantId,
    /// Shown on the wallboard and in reports; the id when left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub cxone: CxoneConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<live::LiveConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<SchedulesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation: Option<AutomationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookConfig>>,
    /// The tenant's whole configuration, resolved at load.
    #[serde(skip)]
    resolved: Option<Box<TenantSpec>>,
}

/// One tenant, resolved: its id, its name, and the whole configuration its services are
/// built from (its own platform, its sections over the top-level ones, its database).
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub id: TenantId,
    pub name: String,
    pub config: Config,
}

impl Config {
    /// Every tenant of the deployment, in configuration order: the `[[tenants]]` (as
    /// [`Config::load`] resolved them), or the tenant `default` on the top-level sections
    /// when there are none.
    pub fn tenants(&self) -> Vec<TenantSpec> {
        if self.tenants.is_empty() {
            return vec![TenantSpec {
                id: TenantId::default_tenant(),
                name: TenantId::default_tenant().to_string(),
                config: self.clone(),
            }];
        }
        self.tenants
            .iter()
            .filter_map(|tenant| tenant.resolved.as_deref().cloned())
            .collect()
    }

    /// The tenant `id` names, or the only one when `id` is `None`; an error naming the
    /// choices otherwise (for `--tenant`).
    pub fn tenant(&self, id: Option<&str>) -> anyhow::Result<TenantSpec> {
        let tenants = self.tenants();
        let ids = || {
            tenants
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match id {
            Some(id) => tenants
                .iter()
                .find(|t| t.id.as_str() == id)
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!("no tenant `{id}` is configured (tenants: {})", ids())
                }),
            None if tenants.len() == 1 => Ok(tenants[0].clone()),
            None => anyhow::bail!(
                "several tenants are configured: name one with --tenant ({})",
                ids()
            ),
        }
    }

    /// Problems with `api_tokens[].tenants` naming a tenant that is not configured.
    pub(super) fn token_tenant_problems(&self) -> Vec<String> {
        let ids: Vec<TenantId> = self.tenants().into_iter().map(|t| t.id).collect();
        let mut problems = Vec::new();
        for (i, token) in self.api_tokens.iter().enumerate() {
            for id in token.tenants.iter().flatten() {
                if !ids.contains(id) {
                    let known: Vec<&str> = ids.iter().map(TenantId::as_str).collect();
                    problems.push(format!(
                        "api_tokens[{i}].tenants names `{id}`, which is not configured \
                         (tenants: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        problems
    }

    /// Resolves `[[tenants]]` from the loaded `figment` (file and top-level environment)
    /// and the tenants' environment variables `tenant_env`; problems name the tenant.
    pub(super) fn resolve_tenants(
        &mut self,
        figment: &Figment,
        tenant_env: &[(String, String)],
        simulate: bool,
        variables: TenantVariables,
    ) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return match tenant_env.first() {
                Some(_) if variables == TenantVariables::Lenient => Ok(()),
                Some((var, _)) => Err(ConfigError::one(format!(
                    "{var} is set but no [[tenants]] are configured"
                ))),
                None => Ok(()),
            };
        }
        let mut data = figment
            .data()
            .map_err(describe_figment_error)?
            .remove(&Profile::Default)
            .unwrap_or_default();
        let raw_tenants = match data.remove("tenants") {
            Some(Value::Array(_, entries)) => entries,
            _ => Vec::new(),
        };
        let mut problems = Vec::new();
        if data.contains_key("cxone") {
            problems.push(
                "cxone: with [[tenants]], each tenant's platform is its own [tenants.cxone]; \
                 move the top-level [cxone] there"
                    .to_owned(),
            );
        }
        let mut seen = BTreeSet::new();
        for tenant in &self.tenants {
            if !seen.insert(tenant.id.clone()) {
                problems.push(format!("tenants: the id `{}` is given twice", tenant.id));
            }
        }
        let env = tenant_variables(&self.tenants, tenant_env, variables, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        for (entry, raw) in self.tenants.iter_mut().zip(raw_tenants) {
            let id = entry.id.clone();
            // The tenant's variables are the ones to set, not the top-level ones.
            let tenant_var = format!("{TENANT_ENV_PREFIX}{}__CXONE__", id.env_key());
            let name_problem =
                |p: String| format!("tenants[{id}].{}", p.replace("WFMD_CXONE__", &tenant_var));
            let raw = raw.into_dict().unwrap_or_default();
            let overrides: Dict = raw
                .into_iter()
                .filter(|(key, _)| key == "cxone" || TENANT_SECTIONS.contains(&key.as_str()))
                .collect();
            let mut figment = Figment::new()
                .merge(Serialized::defaults(data.clone()))
                .merge(Serialized::defaults(overrides));
            for (key, value) in env.get(&id).into_iter().flatten() {
                figment = figment.merge(Serialized::default(key, value.clone()));
            }
            let config = figment
                .extract::<Config>()
                .map_err(describe_figment_error)
                .and_then(|mut config| {
                    config.read_rules_file()?;
                    config.validate(simulate)?;
                    Ok(config.own_to_tenant(&id))
                });
            let config = match config {
                Ok(config) => config,
                Err(error) => {
                    problems.extend(error.problems.into_iter().map(name_problem));
                    continue;
                }
            };
            // `config check` shows each tenant as it runs: its secrets filled in, masked.
            entry.cxone = config.cxone.clone();
            let name = if entry.name.trim().is_empty() {
                id.to_string()
            } else {
                entry.name.clone()
            };
            entry.resolved = Some(Box::new(TenantSpec { id, name, config }));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// The tenants' variables as `section.key` values per tenant; a variable naming no
/// configured tenant (unless `variables` is lenient), or a `…_FILE` that cannot be
/// read, is a problem.
fn tenant_variables(
    tenants: &[TenantConfig],
    env: &[(String, String)],
    variables: TenantVariables,
    problems: &mut Vec<String>,
) -> BTreeMap<TenantId, Vec<(String, Value)>> {
    let mut found: BTreeMap<TenantId, Vec<(String, Value)>> = BTreeMap::new();
    for (var, value) in env {
        let rest = &var[TENANT_ENV_PREFIX.len()..];
        let tenant = tenants.iter().find(|t| {
            rest.strip_prefix(&t.id.env_key())
                .is_some_and(|key| key.starts_with("__"))
        });
        let Some(tenant) = tenant else {
            if variables == TenantVariables::Lenient {
                continue;
            }
            let ids: Vec<String> = tenants.iter().map(|t| t.id.env_key()).collect();
            problems.push(format!(
                "{var} names no configured tenant (their keys: {})",
                ids.join(", ")
            ));
            continue;
        };
        let key = &rest[tenant.id.env_key().len() + 2..];
        let (key, value) = match key.strip_suffix("_FILE") {
            Some(key) => match std::fs::read_to_string(value) {
                Ok(text) => (
                    key,
                    Value::from(text.trim_end_matches(['\r', '\n']).to_owned()),
                ),
                Err(e) => {
                    problems.push(format!("{var} {value}: cannot read it: {e}"));
                    continue;
                }
            },
            None => (key, parse_env_value(value)),
        };
        let key = key.to_lowercase().replace("__", ".");
        found
            .entry(tenant.id.clone())
            .or_default()
            .push((key, value));
    }
    found
}

impl Config {
    /// The process's configuration made tenant `id`'s: its own database beside
    /// `database.url` ([`tenant_database_url`]) and its own audit key derived from
    /// `audit.key` ([`AuditConfig::for_tenant`](super::retention::AuditConfig::for_tenant)).
    pub fn own_to_tenant(mut self, id: &TenantId) -> Config {
        self.database.url = tenant_database_url(&self.database.url, id);
        self.audit = self.audit.for_tenant(id);
        self
    }
}

/// The database of tenant `id` beside the configured one: the tenant `default` keeps
/// `database.url` itself (so a single-tenant deployment's database is its tenant's).
/// On SQLite another's file takes the id before the extension (`data/wfmd.db` →
/// `data/wfmd-bpo-alpha.db`); on PostgreSQL another's tables are in a schema of the
/// same database named after the id (`tenant_schema_url`).
pub fn tenant_database_url(url: &str, id: &TenantId) -> String {
    if *id == TenantId::default_tenant() || url.contains(":memory:") {
        return url.to_owned();
    }
    if crate::store::Backend::of_url(url) == crate::store::Backend::Postgres {
        return tenant_schema_url(url, id);
    }
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (url, String::new()),
    };
    let file_start = path.rfind('/').map_or(0, |slash| slash + 1);
    let stem_end = path[file_start..]
        .rfind('.')
        .filter(|&dot| dot > 0)
        .map_or(path.len(), |dot| file_start + dot);
    format!("{}-{id}{}{query}", &path[..stem_end], &path[stem_end..])
}

/// The PostgreSQL `url` with its `options[search_path]` naming tenant `id`'s schema:
/// the id with `-` as `_` (`bpo-alpha` → `bpo_alpha`), a name PostgreSQL takes
/// unquoted (ids hold no `_`, so distinct ids stay distinct). The URL's other
/// parameters stay; a `search_path` it had gives way, as it names the tenant
/// `default`'s schema. The store creates the schema when missing.
fn tenant_schema_url(url: &str, id: &TenantId) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let ours = format!("options[search_path]={}", id.as_str().replace('-', "_"));
    let pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !names_search_path(pair))
        .chain([ours.as_str()])
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Whether the query parameter `pair` (`key=value`) sets the connection's
/// `search_path`, its key written plainly or percent-encoded.
fn names_search_path(pair: &str) -> bool {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .is_some_and(|(key, _)| key == "options[search_path]")
}

/// Splits the environment's tenant variables from the others.
pub(super) fn is_tenant_variable(key: &str) -> bool {
    key.starts_with(TENANT_ENV_PREFIX)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::ConfigSource;

    const TWO: &str = r#"
        [database]
        url = "sqlite://data/wfmd.db"
        [sync]
        interval_ms = 10000
        enabled = true
        [compliance]
        exception_threshold = "7m"
        [[webhooks]]
        url = "https://top.example/hook"
        secret = "whsec_dG9wLWxldmVsLXdlYmhvb2stc2VjcmV0LTEyMw=="

        [[tenants]]
        id = "bpo-alpha"
        name = "BPO Alpha"
        [tenants.cxone]
        base_url = "https://alpha.example/api"
        token_url = "https://alpha.example/token"
        client_id = "alpha"
        [tenants.sync]
        interval_ms = 15000

        [[tenants]]
        id = "emea"
        [tenants.cxone]
        dialect = "incontact"
        access_key_id = "emea-key"
        client_id = "emea"
        requests_per_minute = 90
        [[tenants.webhooks]]
        url = "https://emea.example/hook"
        secret = "whsec_ZW1lYS1vd24td2ViaG9vay1zZWNyZXQtNTY3OA=="
    "#;

    fn load(contents: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
        let source = ConfigSource {
            file: Some(f.path().to_owned()),
            simulate: false,
        };
        Config::load_with_env(
            &source,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "WFMD_TENANTS__BPO_ALPHA__CXONE__CLIENT_SECRET",
                "alpha-secret-value",
            ),
            (
                "WFMD_TENANTS__EMEA__CXONE__ACCESS_KEY_SECRET",
                "emea-secret-value",
            ),
            (
                "WFMD_TENANTS__EMEA__CXONE__CLIENT_SECRET",
                "emea-client-secret",
            ),
        ]
    }

    #[test]
    fn without_tenants_the_top_level_sections_are_the_tenant_default() {
        let config = crate::config::tests::load("", &[]).unwrap();
        let tenants = config.tenants();
        assert_eq!(tenants.len(), 1);
        assert_eq!(tenants[0].id, TenantId::default_tenant());
        assert_eq!(tenants[0].config.database.url, config.database.url);
        assert_eq!(config.tenant(None).unwrap().id, TenantId::default_tenant());
    }

    #[test]
    fn each_tenant_has_its_own_platform_and_lays_its_sections_over_the_top_level_ones() {
        let config = load(TWO, &secrets()).unwrap();
        let tenants = config.tenants();
        let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["bpo-alpha", "emea"]);
        let (alpha, emea) = (&tenants[0], &tenants[1]);
        assert_eq!(alpha.name, "BPO Alpha");
        assert_eq!(emea.name, "emea", "the id when no name is given");

        assert_eq!(alpha.config.cxone.client_id, "alpha");
        assert_eq!(
            alpha.config.cxone.client_secret.expose_secret(),
            "alpha-secret-value"
        );
        assert_eq!(emea.config.cxone.dialect, crate::config::Dialect::Incontact);
        assert_eq!(emea.config.cxone.access_key_id, "emea-key");
        assert_eq!(emea.config.cxone.requests_per_minute, 90);
        assert_eq!(
            alpha.config.cxone.requests_per_minute,
            CxoneConfig::default().requests_per_minute
        );

        // Key by key: alpha's interval, the top-level `enabled`.
        assert_eq!(alpha.config.sync.interval_ms, 15000);
        assert!(alpha.config.sync.enabled);
        assert_eq!(
            emea.config.sync.interval_ms, 10000,
            "left out: the top-level one"
        );
        for tenant in [alpha, emea] {
            assert_eq!(tenant.config.compliance.exception_threshold.as_secs(), 420);
        }
        // Lists replace.
        let urls = |t: &TenantSpec| {
            t.config
                .webhooks
                .iter()
                .map(|w| w.url.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(urls(alpha), ["https://top.example/hook"]);
        assert_eq!(urls(emea), ["https://emea.example/hook"]);

        assert_eq!(alpha.config.database.url, "sqlite://data/wfmd-bpo-alpha.db");
        assert_eq!(emea.config.database.url, "sqlite://data/wfmd-emea.db");
        for tenant in &tenants {
            assert!(
                tenant.config.tenants().len() == 1,
                "a tenant's own configuration is one tenant"
            );
        }
    }

    #[test]
    fn each_tenant_keys_its_audit_chain_with_its_own_key() {
        let master = "a".repeat(40);
        let mut env = secrets();
        env.push(("WFMD_AUDIT__KEY", &master));
        let config = load(TWO, &env).unwrap();
        let keys: Vec<String> = config
            .tenants()
            .iter()
            .map(|t| t.config.audit.key().unwrap().expose_secret().to_owned())
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert!(keys.iter().all(|key| *key != master), "{keys:?}");
        assert_eq!(config.audit.key().unwrap().expose_secret(), master);
        assert!(!format!("{:?}", config.tenants()).contains(&keys[0]));
    }

    #[test]
    fn tenant_secrets_come_from_credentials_files_and_are_masked_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha-secret");
        std::fs::write(&path, "alpha-from-a-file\n").unwrap();
        let path = path.to_str().unwrap();
        let env = [
            ("WFMD_TENANTS__BPO_ALPHA__CXONE__CLIENT_SECRET_FILE", path),
            (
                "WFMD_TENANTS__EMEA__CXONE__ACCESS_KEY_SECRET",
                "emea-secret-value",
            ),
            (
                "WFMD_TENANTS__EMEA__CXONE__CLIENT_SECRET",
                "emea-client-secret",
            ),
        ];
        let config = load(TWO, &env).unwrap();
        let alpha = config.tenant(Some("bpo-alpha")).unwrap();
        assert_eq!(
            alpha.config.cxone.client_secret.expose_secret(),
            "alpha-from-a-file"
        );
        let shown = format!(
            "{}{:?}{:?}",
            config.to_masked_toml(),
            config,
            config.tenants()
        );
        for secret in [
            "alpha-from-a-file",
            "emea-secret-value",
            "whsec_ZW1lYS1vd24td2ViaG9vay1zZWNyZXQtNTY3OA==",
        ] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
        assert!(config.to_masked_toml().contains("id = \"bpo-alpha\""));
    }

    #[test]
    fn a_tenant_missing_its_credentials_is_refused_naming_the_tenant_and_its_variable() {
        let problems = load(TWO, &[]).unwrap_err().to_string();
        assert!(
            problems.contains(
                "tenants[bpo-alpha].cxone.client_secret must be set, e.g. with \
                 WFMD_TENANTS__BPO_ALPHA__CXONE__CLIENT_SECRET"
            ),
            "{problems}"
        );
        assert!(
            problems.contains("tenants[emea].cxone.access_key_secret"),
            "{problems}"
        );
    }

    #[test]
    fn a_bad_value_in_a_tenant_section_names_the_tenant_and_the_key() {
        let text = TWO.replace("interval_ms = 15000", "interval_ms = 1");
        let problems = load(&text, &secrets()).unwrap_err().to_string();
        assert!(
            problems.contains("tenants[bpo-alpha].sync.interval_ms"),
            "{problems}"
        );
        assert!(!problems.contains("tenants[emea]"), "{problems}");

        let text = TWO.replace("[tenants.sync]", "[tenants.sync]\nfrequency = 3");
        let problems = load(&text, &secrets()).unwrap_err().to_string();
        assert!(problems.contains("frequency"), "{problems}");
    }

    #[test]
    fn ambiguous_or_mistyped_tenants_are_refused() {
        let twice = format!("{TWO}\n[[tenants]]\nid = \"emea\"\n");
        let problems = load(&twice, &secrets()).unwrap_err().to_string();
        assert!(
            problems.contains("the id `emea` is given twice"),
            "{problems}"
        );

        let bad_id = TWO.replace("id = \"emea\"", "id = \"EMEA_1\"");
        let problems = load(&bad_id, &secrets()).unwrap_err().to_string();
        assert!(problems.contains("`EMEA_1`"), "{problems}");

        let top_level = format!("[cxone]\nclient_id = \"x\"\n{TWO}");
        let problems = load(&top_level, &secrets()).unwrap_err().to_string();
        assert!(
            problems.contains("move the top-level [cxone]"),
            "{problems}"
        );

        let mut env = secrets();
        env.push(("WFMD_TENANTS__APAC__CXONE__CLIENT_SECRET", "x"));
        let problems = load(TWO, &env).unwrap_err().to_string();
        assert!(
            problems
                .contains("WFMD_TENANTS__APAC__CXONE__CLIENT_SECRET names no configured tenant"),
            "{problems}"
        );
        let problems = crate::config::tests::load("", &[("WFMD_TENANTS__A__CXONE__X", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            problems.contains("no [[tenants]] are configured"),
            "{problems}"
        );
    }

    #[test]
    fn a_reload_passes_over_the_variables_of_a_tenant_removed_since_the_start() {
        // The daemon started with `apac` configured; the file no longer has it.
        let mut env = secrets();
        env.push(("WFMD_TENANTS__APAC__CXONE__CLIENT_SECRET", "x"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let reload = |contents: &str| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
            let source = ConfigSource {
                file: Some(f.path().to_owned()),
                simulate: false,
            };
            Config::reload_with_env(&source, env.clone())
        };
        let ids: Vec<String> = reload(TWO)
            .unwrap()
            .tenants()
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(ids, ["bpo-alpha", "emea"]);
        // Every tenant gone: the top-level sections are the tenant `default` again.
        let problems = reload("").unwrap_err().to_string();
        assert!(!problems.contains("no [[tenants]]"), "{problems}");
        // A variable of a tenant that is configured is still read, and still checked.
        let broken = TWO.replace("requests_per_minute = 90", "requests_per_minute = 0");
        let problems = reload(&broken).unwrap_err().to_string();
        assert!(
            problems.contains("tenants[emea].cxone.requests_per_minute"),
            "{problems}"
        );
    }

    #[test]
    fn several_tenants_need_one_named() {
        let config = load(TWO, &secrets()).unwrap();
        let problem = config.tenant(None).unwrap_err().to_string();
        assert!(problem.contains("--tenant (bpo-alpha, emea)"), "{problem}");
        let problem = config.tenant(Some("apac")).unwrap_err().to_string();
        assert!(problem.contains("no tenant `apac`"), "{problem}");
    }

    #[test]
    fn a_tenant_database_sits_beside_the_configured_one() {
        let id: TenantId = "bpo-alpha".parse().unwrap();
        for (url, expected) in [
            ("sqlite://data/wfmd.db", "sqlite://data/wfmd-bpo-alpha.db"),
            (
                "sqlite:///var/lib/wfmd/state.sqlite?mode=rwc",
                "sqlite:///var/lib/wfmd/state-bpo-alpha.sqlite?mode=rwc",
            ),
            ("sqlite://data/wfmd", "sqlite://data/wfmd-bpo-alpha"),
            ("sqlite://./.hidden/db", "sqlite://./.hidden/db-bpo-alpha"),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(tenant_database_url(url, &id), expected);
        }
        assert_eq!(
            tenant_database_url("sqlite://data/wfmd.db", &TenantId::default_tenant()),
            "sqlite://data/wfmd.db"
        );
    }

    #[test]
    fn a_tenant_on_postgresql_gets_a_schema_named_after_it_in_the_same_database() {
        let id: TenantId = "bpo-alpha".parse().unwrap();
        for (url, expected) in [
            (
                "postgres://wfmd@db.example/wfmd",
                "postgres://wfmd@db.example/wfmd?options[search_path]=bpo_alpha",
            ),
            (
                "postgresql://wfmd@db.example:5433/wfmd?sslmode=require&application_name=wfmd",
                "postgresql://wfmd@db.example:5433/wfmd?sslmode=require&application_name=wfmd\
                 &options[search_path]=bpo_alpha",
            ),
            // The default tenant's schema gives way to the tenant's; other options stay.
            (
                "postgres://wfmd@db/wfmd?options[search_path]=wfmd&options[statement_timeout]=5s",
                "postgres://wfmd@db/wfmd?options[statement_timeout]=5s\
                 &options[search_path]=bpo_alpha",
            ),
            (
                "postgres://wfmd@db/wfmd?options%5Bsearch_path%5D=wfmd",
                "postgres://wfmd@db/wfmd?options[search_path]=bpo_alpha",
            ),
            (
                "postgres://wfmd@db/wfmd?",
                "postgres://wfmd@db/wfmd?options[search_path]=bpo_alpha",
            ),
        ] {
            assert_eq!(tenant_database_url(url, &id), expected, "{url}");
        }
        // The tenant `default` keeps the URL, and its tables stay where they are.
        for url in [
            "postgres://wfmd@db.example/wfmd",
            "postgres://wfmd@db.example/wfmd?options[search_path]=wfmd",
        ] {
            assert_eq!(tenant_database_url(url, &TenantId::default_tenant()), url);
        }
    }

    #[test]
    fn a_tenants_postgresql_url_keeps_the_password_and_names_a_schema_the_store_reads() {
        let id: TenantId = "emea-2".parse().unwrap();
        let url = tenant_database_url("postgres://wfmd:s3cr%40t@db.example/wfmd", &id);
        assert_eq!(
            url,
            "postgres://wfmd:s3cr%40t@db.example/wfmd?options[search_path]=emea_2"
        );
        let options: sqlx_postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(options.get_options(), Some("-c search_path=emea_2"));
        let shown = crate::store::postgres::redacted(&url);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("search_path"), "{shown}");
    }
}
