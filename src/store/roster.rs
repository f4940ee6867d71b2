//! The agent roster: each agent's name and team as the platform last listed them.
//!
//! Written wherever wfmd lists the tenant's agents anyway (the agent directory that bulk
//! jobs and the wallboard's roster refresh share), so reading it costs no platform call:
//! compliance reports name people and teams from it, history analytics group by its
//! teams. An agent the platform stops listing keeps its row, so a report over a window
//! the agent worked in still names them.

use crate::store::{AsConn, Pool, execute, fetch};
use std::collections::HashMap;

use serde::Serialize;
use sqlx::FromRow;

/// An agent's name and team as the platform listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, FromRow)]
pub struct RosterEntry {
    pub agent_id: String,
    /// `None`: never listed with a name.
    pub name: Option<String>,
    pub team_id: Option<String>,
    pub team_name: Option<String>,
}

impl From<&crate::cxone::Agent> for RosterEntry {
    fn from(agent: &crate::cxone::Agent) -> Self {
        RosterEntry {
            agent_id: agent.id.clone(),
            name: Some(agent.name.clone()),
            team_id: agent.team_id.clone(),
            team_name: agent.team_name.clone(),
        }
    }
}

/// Stores what the platform listed at `now_ms`: each agent's name and team replace the
/// stored ones, agents not in `entries` keep theirs. An empty or missing name keeps the
/// last known one (a listing without names must not forget them); a missing team is the
/// platform saying the agent has none, and is stored as such. One statement for any
/// number of agents.
pub async fn remember(
    conn: &mut impl AsConn,
    entries: &[RosterEntry],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    execute!(
        conn,
        "INSERT INTO agent_roster (agent_id, name, team_id, team_name, updated_at)
         SELECT json_extract(value, '$.agent_id'),
                NULLIF(json_extract(value, '$.name'), ''),
                json_extract(value, '$.team_id'), json_extract(value, '$.team_name'), $2
         FROM json_each($1) WHERE true
         ON CONFLICT (agent_id) DO UPDATE SET
             name = COALESCE(excluded.name, agent_roster.name),
             team_id = excluded.team_id,
             team_name = excluded.team_name,
             updated_at = excluded.updated_at",
        serde_json::to_string(entries).expect("roster serializes"),
        now_ms
    )?;
    Ok(())
}

/// Every stored agent, by id.
pub async fn all(pool: &Pool) -> Result<HashMap<String, RosterEntry>, sqlx::Error> {
    let rows: Vec<RosterEntry> = fetch!(
        pool,
        all,
        "SELECT agent_id, name, team_id, team_name FROM agent_roster"
    )?;
    Ok(rows
        .into_iter()
        .map(|entry| (entry.agent_id.clone(), entry))
        .collect())
}

/// The agents the roster places in `team`: its id, or its name in any letter case.
pub async fn team_members(
    pool: &Pool,
    team: &str,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    Ok(all(pool)
        .await?
        .into_values()
        .filter(|entry| {
            entry.team_id.as_deref() == Some(team)
                || entry
                    .team_name
                    .as_deref()
                    .is_some_and(|name| name.eq_ignore_ascii_case(team))
        })
        .map(|entry| entry.agent_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::on;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use rstest_reuse::apply;

    fn entry(id: &str, name: &str, team: Option<(&str, &str)>) -> RosterEntry {
        RosterEntry {
            agent_id: id.into(),
            name: Some(name.into()),
            team_id: team.map(|t| t.0.into()),
            team_name: team.map(|t| t.1.into()),
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_listing_updates_names_and_teams_and_keeps_agents_no_longer_listed(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        remember(
            &mut tx,
            &[
                entry("u_001", "Ada Lovelace", Some(("t_1", "Care"))),
                entry("u_002", "Grace Hopper", Some(("t_2", "Billing"))),
            ],
            1_000,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        // u_001 moved team and changed name; u_002 left the tenant.
        let mut tx = store.begin_write().await.unwrap();
        remember(
            &mut tx,
            &[entry("u_001", "Ada King", Some(("t_2", "Billing")))],
            2_000,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let roster = all(store.reader()).await.unwrap();
        assert_eq!(
            roster["u_001"],
            entry("u_001", "Ada King", Some(("t_2", "Billing")))
        );
        assert_eq!(
            roster["u_002"],
            entry("u_002", "Grace Hopper", Some(("t_2", "Billing"))),
            "an agent no longer listed keeps the last known name and team"
        );
        let updated: Vec<(String, i64)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT agent_id, updated_at FROM agent_roster ORDER BY agent_id"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            updated,
            [("u_001".to_owned(), 2_000), ("u_002".to_owned(), 1_000)]
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_listing_without_a_name_keeps_the_known_one_and_a_missing_team_is_stored(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        remember(
            &mut tx,
            &[entry("u_001", "Ada Lovelace", Some(("t_1", "Care")))],
            1,
        )
        .await
        .unwrap();
        remember(
            &mut tx,
            &[
                RosterEntry {
                    agent_id: "u_001".into(),
                    name: Some(String::new()),
                    team_id: None,
                    team_name: None,
                },
                RosterEntry {
                    agent_id: "u_003".into(),
                    ..RosterEntry::default()
                },
            ],
            2,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let roster = all(store.reader()).await.unwrap();
        assert_eq!(roster["u_001"].name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(roster["u_001"].team_id, None);
        assert_eq!(roster["u_003"].name, None);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn names_are_stored_as_given_whatever_they_contain(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let hostile = [
            "=HYPERLINK(\"http://x\",\"y\")",
            "<script>alert(1)</script>",
            "O'Brien \"Bob\"",
            "Zoë 李",
        ];
        let entries: Vec<RosterEntry> = hostile
            .iter()
            .enumerate()
            .map(|(i, name)| entry(&format!("u_{i}"), name, None))
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        remember(&mut tx, &entries, 1).await.unwrap();
        tx.commit().await.unwrap();
        let roster = all(store.reader()).await.unwrap();
        for (i, name) in hostile.iter().enumerate() {
            assert_eq!(roster[&format!("u_{i}")].name.as_deref(), Some(*name));
        }
    }
}
