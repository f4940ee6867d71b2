//! `[database]`: where the tenant's records live (SQLite or PostgreSQL).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (the file and its folder are created when missing) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?options[search_path]=SCHEMA]`.
    /// Shown (`config check`, `Debug`) with its password masked.
    #[serde(serialize_with = "mask_database_url")]
    pub url: String,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::store::postgres::redacted(&self.url))
            .finish()
    }
}

fn mask_database_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::store::postgres::redacted(url))
}

impl DatabaseConfig {
    /// Adds a line naming the key when the URL is neither SQLite's nor PostgreSQL's.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let postgres = crate::store::Backend::of_url(&self.url) == crate::store::Backend::Postgres;
        if !self.url.starts_with("sqlite:") && !postgres {
            let shown = crate::store::postgres::redacted(&self.url);
            problems.push(format!(
                "database.url must be a sqlite: URL such as sqlite://data/wfmd.db or a \
                 postgres:// one, got `{shown}`"
            ));
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/wfmd.db".into(),
        }
    }
}
