//! `[ha]`: this instance among several on one PostgreSQL database (see
//! [`crate::cluster`]). Without it an instance is its tenants' sole one. Only with
//! PostgreSQL: on SQLite a second daemon is refused.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Shortest accepted `ha.cluster_key`, in characters.
pub const MIN_CLUSTER_KEY_LEN: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaConfig {
    /// This instance's name among the others (1-64 letters, digits, `.`, `_`, `-`);
    /// by default the host name and the process id, so a restarted instance is a new
    /// one (it leads again once its former self's lease runs out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// How the other instances reach this one's API (`http://HOST:PORT`), to hand it
    /// the changes asked of them for the tenants it leads. Without it, a change asked
    /// of another instance is answered 503 while this one leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// How long a tenant's lease lasts without renewal (2s-5m): a leader that vanishes
    /// without its database session ending (its host gone, the network cut) loses its
    /// tenants to another instance after at most this; one whose process dies, within a
    /// second (its session ends with it). The leader renews every third of it and stops
    /// acting when a fifth of it is left unrenewed.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The key every instance shares (the same on each, at least 32 characters, e.g.
    /// `openssl rand -hex 32`; required): a follower signs each request it hands on to
    /// the leader with it, so the leader trusts the `Host` and `Origin` the follower
    /// already judged and counts the original client's address. A request claiming to
    /// be handed on without a valid signature is an ordinary one. Set it from the
    /// environment (`WFMD_HA__CLUSTER_KEY`).
    #[serde(
        serialize_with = "super::retention::mask_optional_secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_key: Option<SecretString>,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            instance_id: None,
            advertise_url: None,
            lease_ttl: Duration::from_secs(10),
            cluster_key: None,
        }
    }
}

impl HaConfig {
    /// Adds a line naming the key for every bad value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(id) = &self.instance_id
            && !valid_instance_id(id)
        {
            problems.push(format!(
                "ha.instance_id must be 1-64 letters, digits, `.`, `_` or `-`, got `{id}`"
            ));
        }
        if let Some(url) = &self.advertise_url
            && let Some(problem) = super::url_problem("ha.advertise_url", url)
        {
            problems.push(problem);
        }
        match self
            .cluster_key
            .as_ref()
            .map(|key| key.expose_secret().len())
        {
            None | Some(0) => problems.push(format!(
                "ha.cluster_key must be set with [ha]: the same key on every instance, at \
                 least {MIN_CLUSTER_KEY_LEN} characters (e.g. `openssl rand -hex 32`), with \
                 which an instance proves it handed a request on"
            )),
            Some(len) if len < MIN_CLUSTER_KEY_LEN => problems.push(format!(
                "ha.cluster_key must be at least {MIN_CLUSTER_KEY_LEN} characters (e.g. \
                 `openssl rand -hex 32`), got {len}"
            )),
            Some(_) => {}
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&self.lease_ttl) {
            problems.push(format!(
                "ha.lease_ttl must be between 2s and 5m, got {}",
                humantime::format_duration(self.lease_ttl)
            ));
        }
    }

    /// [`HaConfig::instance_id`], or the host name and the process id.
    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()))
    }
}

fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The kernel's host name (Linux), else `HOSTNAME`, else `wfmd`; cut to what an
/// instance id holds.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    if name.is_empty() { "wfmd".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;

    #[test]
    fn ha_is_for_postgresql_and_bad_values_name_their_key() {
        let refused = load("[ha]\nlease_ttl = \"10s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("[ha] is only for several instances on PostgreSQL"),
            "{refused}"
        );

        let postgres = "[database]\nurl = \"postgres://wfmd@db.example/wfmd\"\n";
        assert!(
            load(postgres, &[]).unwrap().ha.is_none(),
            "the sole instance"
        );
        let ha = load(&format!("{postgres}[ha]\n"), &[KEY])
            .unwrap()
            .ha
            .unwrap();
        assert_eq!(
            (ha.instance_id, ha.lease_ttl),
            (None, Duration::from_secs(10))
        );
        let refused = load(
            &format!(
                "{postgres}[ha]\ninstance_id = \"a b\"\nadvertise_url = \"ftp://x\"\n\
                 lease_ttl = \"1s\"\n"
            ),
            &[KEY],
        )
        .unwrap_err()
        .to_string();
        for key in ["ha.instance_id", "ha.advertise_url", "ha.lease_ttl"] {
            assert!(refused.contains(key), "{key}: {refused}");
        }
        let config = load(
            &format!(
                "{postgres}[ha]\ninstance_id = \"wfmd-a\"\n\
                 advertise_url = \"http://10.0.0.5:8080\"\nlease_ttl = \"30s\"\n"
            ),
            &[KEY],
        )
        .unwrap();
        let ha = config.ha.unwrap();
        assert_eq!(ha.instance_id(), "wfmd-a");
        assert_eq!(ha.advertise_url.as_deref(), Some("http://10.0.0.5:8080"));
        assert_eq!(ha.lease_ttl, Duration::from_secs(30));
    }

    const KEY: (&str, &str) = ("WFMD_HA__CLUSTER_KEY", "0123456789abcdef0123456789abcdef");

    #[test]
    fn the_cluster_key_is_required_long_enough_and_never_shown() {
        let ha = "[database]\nurl = \"postgres://wfmd@db.example/wfmd\"\n[ha]\n";
        for (env, expected) in [
            (&[][..], "ha.cluster_key must be set with [ha]"),
            (
                &[("WFMD_HA__CLUSTER_KEY", "short")][..],
                "ha.cluster_key must be at least 32 characters (e.g. `openssl rand -hex 32`), got 5",
            ),
        ] {
            let refused = load(ha, env).unwrap_err();
            assert!(
                refused.problems.iter().any(|p| p.starts_with(expected)),
                "{refused}"
            );
        }
        let config = load(ha, &[KEY]).unwrap();
        let shown = config.to_masked_toml();
        assert!(shown.contains("cluster_key = \"********\""), "{shown}");
        assert!(!shown.contains(KEY.1), "{shown}");
        assert!(!format!("{config:?}").contains(KEY.1));
    }

    #[test]
    fn an_instance_is_named_after_its_host_and_process_by_default() {
        let id = HaConfig::default().instance_id();
        assert!(valid_instance_id(&id), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }
}
