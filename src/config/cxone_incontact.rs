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

/// Refuses a `[cxone.reason_codes]` map under which one unavailable code would stand for
/// two wfmd reasons: read back, the platform names only the code, so such a change would
/// come back as the other reason (and a change resumed after a crash would not recognise
/// itself). The map is tenant-wide, so the check is too: two reasons mapped to the same
/// code name or id, or a reason mapped to a code named like another known reason (a
/// mapped one or a state's default reason), which that reason would take by name.
fn ambiguous_codes(map: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    use crate::cxone::incontact::same_name;
    use crate::domain::AgentState;
    let mapped: Vec<(String, &str)> = map
        .iter()
        .map(|(r, c)| (r.trim().to_uppercase(), c.trim()))
        .filter(|(r, c)| !r.is_empty() && !c.is_empty())
        .collect();
    for (i, (reason, code)) in mapped.iter().enumerate() {
        for (other, other_code) in &mapped[i + 1..] {
            if same_name(code, other_code) {
                problems.push(format!(
                    "cxone.reason_codes: `{reason}` and `{other}` both map to the code \
                     `{code}`; give each code one reason"
                ));
            }
        }
        let defaults = AgentState::ALL.map(AgentState::default_reason);
        let known = mapped
            .iter()
            .map(|(r, _)| r.as_str())
            .chain(defaults.iter().copied());
        if let Some(owner) = known
            .filter(|r| !same_name(r, reason))
            .find(|r| same_name(r, code))
        {
            problems.push(format!(
                "cxone.reason_codes: `{reason}` = `{code}` maps to the code of the reason \
                 `{owner}` (a code reads back as the reason of its name); give each code \
                 one reason"
            ));
        }
    }
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
    ambiguous_codes(&c.reason_codes, problems);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn incontact() -> Config {
        let mut config = Config::default();
        config.cxone.dialect = Dialect::Incontact;
        config.cxone.client_id = "app".into();
        config.cxone.client_secret = "app-secret".to_owned().into();
        config.cxone.access_key_id = "key-1".into();
        config.cxone.access_key_secret = "key-secret".to_owned().into();
        config
    }

    fn problems(config: &Config) -> Vec<String> {
        match config.validate(false) {
            Ok(()) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn an_incontact_config_needs_the_access_key_but_no_token_url() {
        let config = incontact();
        assert_eq!(problems(&config), Vec::<String>::new());
        let mut bare = incontact();
        bare.cxone.access_key_id.clear();
        bare.cxone.access_key_secret = String::new().into();
        let found = problems(&bare);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("cxone.access_key_id must be set"));
        assert!(found[1].contains("WFMD_CXONE__ACCESS_KEY_SECRET"));
        assert!(
            bare.validate(true).is_ok(),
            "--simulate needs no credentials"
        );
    }

    #[test]
    fn bad_incontact_values_are_named() {
        let mut config = incontact();
        config.cxone.api_version = "latest".into();
        config.cxone.base_url = "api-na1".into();
        config.cxone.reason_codes.insert("LUNCH".into(), " ".into());
        config.cxone.break_activities.mandatory = vec![String::new()];
        let found = problems(&config);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("cxone.api_version must look like 34.0"))
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("cxone.base_url is not a valid URL"))
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("cxone.reason_codes: `LUNCH`"))
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("cxone.break_activities.mandatory"))
        );
    }

    #[test]
    fn a_code_standing_for_two_reasons_is_refused_naming_both() {
        let mut config = incontact();
        config
            .cxone
            .reason_codes
            .insert("COACHING".into(), "Meeting".into());
        config
            .cxone
            .reason_codes
            .insert("MEETING".into(), "Team Meeting".into());
        config
            .cxone
            .reason_codes
            .insert("lunch".into(), "Lunch Break".into());
        config
            .cxone
            .reason_codes
            .insert("MEAL".into(), "lunch_break".into());
        config
            .cxone
            .reason_codes
            .insert("TRAINING".into(), "Adhoc".into());
        let found = problems(&config);
        assert_eq!(found.len(), 3, "{found:?}");
        let coaching = "cxone.reason_codes: `COACHING` = `Meeting` maps to the code of the \
                        reason `MEETING`";
        assert!(found.iter().any(|p| p.starts_with(coaching)), "{found:?}");
        assert!(found.iter().any(|p| p.starts_with(
            "cxone.reason_codes: `MEAL` and `LUNCH` both map to the code `lunch_break`"
        )));
        assert!(found.iter().any(|p| p.starts_with(
            "cxone.reason_codes: `TRAINING` = `Adhoc` maps to the code of the reason `ADHOC`"
        )));
        let mut fine = incontact();
        fine.cxone
            .reason_codes
            .insert("BREAK".into(), "Coffee Break".into());
        fine.cxone
            .reason_codes
            .insert("LUNCH".into(), "lunch".into());
        assert_eq!(problems(&fine), Vec::<String>::new());
    }

    #[test]
    fn the_sync_may_poll_every_five_seconds_on_incontact_only() {
        let mut config = incontact();
        config.sync.interval_ms = 5_000;
        assert_eq!(problems(&config), Vec::<String>::new());
        config.sync.interval_ms = 4_000;
        assert!(problems(&config)[0].starts_with("sync.interval_ms must be between 5000"));
        config.cxone.dialect = Dialect::V2;
        config.sync.interval_ms = 5_000;
        assert!(config.validate(true).unwrap_err().problems[0].contains("between 10000"));
    }

    #[test]
    fn the_access_key_secret_is_masked() {
        let config = incontact();
        let shown = config.to_masked_toml();
        assert!(!shown.contains("key-secret"), "{shown}");
        assert!(shown.contains("access_key_id = \"key-1\""), "{shown}");
        assert!(!format!("{config:?}").contains("key-secret"));
    }
}
