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
    /// On PostgreSQL, the instance's connections to each database in all, shared by
    /// every tenant on it: its session, its listener, with `[ha]` its liveness
    /// session, and the rest pooled (see `store::shared`). Unused with SQLite.
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::store::postgres::redacted(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

fn mask_database_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::store::postgres::redacted(url))
}

impl DatabaseConfig {
    /// Adds a line naming the key when the URL is neither SQLite's nor PostgreSQL's,
    /// or `max_connections` leaves too few pooled.
    pub fn validate(&self, problems: &mut Vec<String>) {
        use crate::store::shared::MIN_MAX_CONNECTIONS;
        if self.max_connections < MIN_MAX_CONNECTIONS {
            problems.push(format!(
                "database.max_connections must be at least {MIN_MAX_CONNECTIONS} (a session, \
                 a listener, a liveness session and three pooled), got {}",
                self.max_connections
            ));
        }
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
            max_connections: crate::store::shared::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_defaults_to_16_and_too_few_are_refused_naming_the_key() {
        let config = DatabaseConfig::default();
        assert_eq!(config.max_connections, 16);
        let mut problems = Vec::new();
        config.validate(&mut problems);
        assert_eq!(problems, Vec::<String>::new());
        let few = DatabaseConfig {
            max_connections: 5,
            ..DatabaseConfig::default()
        };
        few.validate(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("database.max_connections must be at least 6"),
            "{problems:?}"
        );
    }
}
