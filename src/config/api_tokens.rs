//! `[[api_tokens]]`: who may call the HTTP API, and with which role.
//!
//! The configuration holds only the SHA-256 of each bearer token, never the token, so
//! a leaked config file or `wfmd config check` output grants nothing. `wfmd token new`
//! makes a token and prints the entry to add.
//!
//! Validation names the entry (`api_tokens[1] ("desk")`) and the field, and never
//! echoes a `token_sha256` value: an operator who pasted the token itself there by
//! mistake must not find it in an error message or a log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a caller may do. Each role may also do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: history, reports, bulk job progress.
    Viewer,
    /// Also changes agent states and runs bulk jobs.
    Supervisor,
    /// Also replays webhooks and verifies and exports the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Supervisor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// Whether a caller with this role may do what `required` allows.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("must be viewer, supervisor or admin, got `{s}`"))
    }
}

/// One `[[api_tokens]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who the token belongs to; the actor of every change made with it.
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// `viewer`, `supervisor` or `admin`; checked by [`validate`], read with
    /// [`ApiTokenConfig::role`].
    pub role: String,
    /// The tenants the token may act on; left out, every tenant. Used on another, the
    /// token is answered 404, as if the tenant did not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<crate::domain::tenant::TenantId>>,
}

impl ApiTokenConfig {
    /// The role, once [`validate`] accepted the entry.
    pub fn role(&self) -> Result<Role, String> {
        self.role.parse()
    }

    /// The decoded digest, once [`validate`] accepted the entry.
    pub fn digest(&self) -> Result<[u8; 32], String> {
        let text = self.token_sha256.trim();
        if text.len() != 64 {
            return Err(format!(
                "must be the 64 hex digits of a SHA-256, got {} characters",
                text.chars().count()
            ));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest)
            .map_err(|_| "must be hex digits only (0-9, a-f)".to_owned())?;
        Ok(digest)
    }
}

/// Longest token name; names end up in every audit entry their token causes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a token name: 1 to 64 letters, digits, `.`, `_` or `-`. Other actors are
/// written `cli:alice` or `rule:care-lunch`, so a name without `:` cannot pass for one.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_NAME_LEN} letters, digits, `.`, `_` or `-`, got `{}`",
            name.escape_debug()
        ))
    }
}

/// Appends a problem for every bad entry: bad name, hash or role, and names or hashes
/// used twice.
pub fn validate(tokens: &[ApiTokenConfig], problems: &mut Vec<String>) {
    for (i, token) in tokens.iter().enumerate() {
        if token.tenants.as_ref().is_some_and(Vec::is_empty) {
            problems.push(format!(
                "api_tokens[{i}].tenants is empty: leave it out for every tenant, or name some"
            ));
        }
        let entry = if check_name(&token.name).is_ok() {
            format!("api_tokens[{i}] (\"{}\")", token.name)
        } else {
            format!("api_tokens[{i}]")
        };
        if let Err(problem) = check_name(&token.name) {
            problems.push(format!("{entry}.name {problem}"));
        }
        if let Err(problem) = token.digest() {
            problems.push(format!("{entry}.token_sha256 {problem}"));
        }
        if let Err(problem) = token.role() {
            problems.push(format!("{entry}.role {problem}"));
        }
        let earlier = &tokens[..i];
        if let Some(j) = earlier.iter().position(|t| t.name == token.name) {
            problems.push(format!(
                "{entry}.name is already used by api_tokens[{j}]; names must be unique, \
                 they are the actor in the audit log"
            ));
        }
        if let Ok(digest) = token.digest()
            && let Some(j) = earlier.iter().position(|t| t.digest() == Ok(digest))
        {
            problems.push(format!(
                "{entry}.token_sha256 is the same as api_tokens[{j}]'s; one token must not \
                 have two names"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "a4f1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";

    fn entry(name: &str, token_sha256: &str, role: &str) -> ApiTokenConfig {
        ApiTokenConfig {
            name: name.into(),
            token_sha256: token_sha256.into(),
            role: role.into(),
            tenants: None,
        }
    }

    fn problems(tokens: &[ApiTokenConfig]) -> Vec<String> {
        let mut problems = Vec::new();
        validate(tokens, &mut problems);
        problems
    }

    #[test]
    fn roles_are_ordered_and_each_allows_the_weaker_ones() {
        assert!(Role::Admin.allows(Role::Supervisor));
        assert!(Role::Supervisor.allows(Role::Viewer));
        assert!(Role::Viewer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Supervisor));
        assert!(!Role::Supervisor.allows(Role::Admin));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
    }

    #[test]
    fn a_good_entry_passes_in_either_letter_case() {
        assert!(problems(&[entry("desk", HASH, "supervisor")]).is_empty());
        let upper = entry("desk", &HASH.to_uppercase(), "admin");
        assert!(problems(std::slice::from_ref(&upper)).is_empty());
        assert_eq!(upper.digest(), entry("x", HASH, "admin").digest());
    }

    #[test]
    fn each_bad_field_is_named_with_its_entry() {
        let found = problems(&[
            entry("desk", &HASH[..40], "supervisor"),
            entry("ops", &format!("{}zz", &HASH[..62]), "viewer"),
            entry("root", HASH, "god"),
            entry("has space", "", "viewer"),
        ]);
        let expected = [
            "api_tokens[0] (\"desk\").token_sha256 must be the 64 hex digits of a SHA-256, got 40 characters",
            "api_tokens[1] (\"ops\").token_sha256 must be hex digits only",
            "api_tokens[2] (\"root\").role must be viewer, supervisor or admin, got `god`",
            "api_tokens[3].name must be 1 to 64 letters",
            "api_tokens[3].token_sha256 must be the 64 hex digits of a SHA-256, got 0 characters",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found} vs {expected}");
        }
    }

    #[test]
    fn duplicate_names_and_hashes_are_refused() {
        let other = HASH.replace('a', "b");
        let found = problems(&[
            entry("desk", HASH, "viewer"),
            entry("desk", &other, "viewer"),
            entry("ops", &HASH.to_uppercase(), "admin"),
        ]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("api_tokens[1] (\"desk\").name is already used by api_tokens[0]")
        );
        assert!(
            found[1]
                .starts_with("api_tokens[2] (\"ops\").token_sha256 is the same as api_tokens[0]'s")
        );
    }

    #[test]
    fn the_example_entry_uncommented_is_a_valid_configuration() {
        let entry = super::super::tests::example_entry("api_tokens");
        let config: super::super::Config = toml::from_str(&entry).unwrap();
        config.validate(true).unwrap();
        assert_eq!(config.api_tokens.len(), 1);
        assert_eq!(config.api_tokens[0].role(), Ok(Role::Supervisor));
    }

    #[test]
    fn a_pasted_token_is_never_echoed() {
        let token = "wfmd_ThisIsTheSecretTokenItselfNotItsHash0123456789";
        let found = problems(&[entry("desk", token, "viewer")]);
        assert_eq!(found.len(), 1);
        assert!(!found[0].contains("ThisIsTheSecret"), "{}", found[0]);
    }
}
