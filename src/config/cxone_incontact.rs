//! The `[cxone]` keys of the `incontact` dialect (the platform NICE publishes) and their
//! checks: the API user's access key, the registered application (`client_id`,
//! `client_secret`, shared with v2), discovery (`auth_base`, `tenant_id`), the optional
//! API host override (`base_url`), `api_version`, `[cxone.reason_codes]` (wfmd reason ->
//! unavailable code name or id) and `[cxone.break_activities]` (WFM activity titles that
//! are mandatory breaks).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{Config, Dialect};

/// The auth host of NICE's platform; discovery starts there.
pub const DEFAULT_AUTH_BASE: &str = "https://cxone.niceincontact.com";
/// The API version the contract was compiled from.
pub const DEFAULT_API_VERSION: &str = "34.0";
/// The shortest `sync.interval_ms` on this dialect (NICE's own client polls every 5 s).
pub const MIN_SYNC_INTERVAL_MS: u64 = 5_000;
/// How long a logout (202) may take to show in the agent's state.
pub const LOGOUT_CONFIRM: Duration = Duration::from_secs(10);

/// `[cxone.break_activities]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakActivities {
    /// WFM activity titles (case-insensitive) whose intervals are mandatory breaks.
    pub mandatory: Vec<String>,
}

/// The reason map as the client wants it: upper-case reasons.
pub fn reason_codes(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(reason, code)| (reason.trim().to_uppercase(), code.trim().to_owned()))
        .collect()
}

/// The minimum `sync.interval_ms` of the configured dialect.
pub fn min_sync_interval_ms(dialect: Dialect) -> u64 {
    match dialect {
        Dialect::V2 => 10_000,
        Dialect::Incontact => MIN_SYNC_INTERVAL_MS,
    }
}

/// Problems with the `incontact` keys (nothing when another dialect is configured).
pub fn validate(config: &Config, simulate: bool, problems: &mut Vec<String>) {
    let c = &config.cxone;
    if c.dialect != Dialect::Incontact {
        return;
    }
    let version = c.api_version.trim().trim_start_matches(['v', 'V']);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid_version = match version.split_once('.') {
        Some((major, minor)) => numeric(major) && numeric(minor),
        None => numeric(version),
    };
    if !valid_version {
        problems.push(format!(
            "cxone.api_version must look like 34.0, got `{}`",
            c.api_version
        ));
    }
    for (reason, code) in &c.reason_codes {
        if reason.trim().is_empty() || code.trim().is_empty() {
            problems.push(format!(
                "cxone.reason_codes: `{reason}` = `{code}` needs a reason and an unavailable \
                 code name or id"
            ));
        }
    }
    if c.break_activities
        .mandatory
        .iter()
        .any(|t| t.trim().is_empty())
    {
        problems.push("cxone.break_activities.mandatory has an empty title".into());
    }
    if simulate {
        return;
    }
    if let Some(problem) = super::url_problem("cxone.auth_base", &c.auth_base) {
        problems.push(problem);
    }
    if !c.base_url.trim().is_empty()
        && let Some(problem) = super::url_problem("cxone.base_url", &c.base_url)
    {
        problems.push(problem);
    }
    if c.access_key_id.trim().is_empty() {
        problems.push(
            "cxone.access_key_id must be set for the incontact dialect (the API user's \
             access key; or run with --simulate)"
                .into(),
        );
    }
    if c.access_key_secret.expose_secret().is_empty() {
        problems.push(
            "cxone.access_key_secret must be set, e.g. with WFMD_CXONE__ACCESS_KEY_SECRET \
             (or run with --simulate)"
                .into(),
        );
    }
}
