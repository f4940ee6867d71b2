//! `[exports]`: downloads of the HTTP API (compliance reports, the audit export,
//! analytics results), which read the database on connections of their own.
//!
//! A download's rows are read as fast as the database gives them and held for the
//! client in memory, then on disk (its spool), so a client that reads slowly or not at
//! all keeps no database connection busy. These keys bound what one caller, and one
//! download, may take of that.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportsConfig {
    /// Downloads one caller (API token; `local` without tokens) may have in progress at
    /// once; a further one is answered 429 with `Retry-After` (1-64).
    pub per_caller: usize,
    /// The longest a download may keep its database connection: reading its rows, and
    /// waiting for a client that is behind by a full spool. Past it the transfer is cut
    /// short with an error (the client sees a broken download, never a truncated one
    /// that looks whole). 10s-1h.
    #[serde(with = "humantime_serde")]
    pub max_read_time: Duration,
    /// MiB of one download held on disk (in the temporary folder, `TMPDIR`) ahead of
    /// its client, before the download waits for the client to catch up (1-65536).
    pub spool_mib: u64,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            per_caller: 2,
            max_read_time: Duration::from_secs(300),
            spool_mib: 256,
        }
    }
}

impl ExportsConfig {
    /// Adds a line naming the key for every out-of-range value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !(1..=64).contains(&self.per_caller) {
            problems.push(format!(
                "exports.per_caller must be between 1 and 64, got {}",
                self.per_caller
            ));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(3_600)).contains(&self.max_read_time) {
            problems.push(format!(
                "exports.max_read_time must be between 10s and 1h, got {}",
                humantime::format_duration(self.max_read_time)
            ));
        }
        if !(1..=65_536).contains(&self.spool_mib) {
            problems.push(format!(
                "exports.spool_mib must be between 1 and 65536, got {}",
                self.spool_mib
            ));
        }
    }

    /// [`ExportsConfig::spool_mib`] in bytes.
    pub fn spool_bytes(&self) -> u64 {
        self.spool_mib.saturating_mul(1024 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.exports.per_caller, 2);
        let err = load(
            "[exports]\nper_caller = 0\nmax_read_time = \"1s\"\nspool_mib = 0\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "exports.per_caller must be between 1 and 64, got 0",
                "exports.max_read_time must be between 10s and 1h, got 1s",
                "exports.spool_mib must be between 1 and 65536, got 0",
            ]
        );
        let config = load("", &[("WFMD_EXPORTS__PER_CALLER", "4")]).unwrap();
        assert_eq!(config.exports.per_caller, 4);
    }
}
