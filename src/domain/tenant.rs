//! A contact-center tenant's id: the namespace key of everything wfmd keeps and serves
//! for one tenant (its database, its routes `/v1/tenants/{id}/…`, its wallboard, its
//! webhook bodies' and feed events' `"tenant"`, its metrics' `tenant` label).
//!
//! Ids come from the configuration only, never from a request: a request names one, and
//! is answered only when it is configured. That keeps metric label values bounded.

use std::fmt;

use serde::{Deserialize, Serialize};

/// 1 to 32 characters of `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// The longest id.
pub const MAX_LEN: usize = 32;

impl TenantId {
    /// The tenant of a configuration without `[[tenants]]`: its top-level sections.
    pub fn default_tenant() -> TenantId {
        TenantId("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as it stands in environment variable names: upper case, `-` as `_`
    /// (`bpo-alpha` → `BPO_ALPHA`). Distinct ids stay distinct, as ids hold no `_`.
    pub fn env_key(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;

    fn try_from(id: String) -> Result<TenantId, String> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if id.is_empty() || id.len() > MAX_LEN || !id.chars().all(allowed) {
            return Err(format!(
                "a tenant id is 1 to {MAX_LEN} characters of a-z, 0-9 and -, got `{id}`"
            ));
        }
        Ok(TenantId(id))
    }
}

impl std::str::FromStr for TenantId {
    type Err = String;

    fn from_str(id: &str) -> Result<TenantId, String> {
        TenantId::try_from(id.to_owned())
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lower_case_words_with_dashes() {
        for good in ["default", "bpo-alpha", "emea-2", "a", &"x".repeat(MAX_LEN)] {
            assert_eq!(good.parse::<TenantId>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "BPO",
            "bpo_alpha",
            "bpo alpha",
            "../etc",
            "é",
            &"x".repeat(33),
        ] {
            let problem = bad.parse::<TenantId>().unwrap_err();
            assert!(problem.contains(&format!("`{bad}`")), "{problem}");
        }
    }

    #[test]
    fn the_environment_key_is_upper_case_with_underscores() {
        let id: TenantId = "bpo-alpha-2".parse().unwrap();
        assert_eq!(id.env_key(), "BPO_ALPHA_2");
    }
}
