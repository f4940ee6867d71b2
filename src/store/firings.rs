//! Rule firings: which slot of which rule fired, what it did to each agent, how it ended.
//!
//! [`claim`] inserts the firing's row in its own transaction before any agent is
//! touched; the `UNIQUE (rule, slot_at)` constraint makes exactly one claimer win, in
//! this process or any other on the same file. Each agent's result is added as it comes
//! in, so an interrupted firing is resumed with the agents it already handled left out.

use crate::store::{Pool, execute, fetch, fetch_scalar};
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::FromRow;

use super::{Store, from_ms, to_ms};

/// A stored firing. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct FiringRow {
    pub id: i64,
    pub rule: String,
    pub slot_at: i64,
    /// `running`, `completed`, `partial`, `failed`, `skipped` or `abandoned`.
    pub outcome: String,
    pub definition: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub targets: i64,
    pub changed: i64,
    pub rejected: i64,
    pub failed: i64,
    pub skipped_condition: i64,
    pub skipped_on_contact: i64,
    pub note: Option<String>,
}

impl FiringRow {
    pub fn slot(&self) -> DateTime<Utc> {
        from_ms(self.slot_at)
    }
}

const COLUMNS: &str = "id, rule, slot_at, outcome, definition, started_at, finished_at, targets, \
     changed, rejected, failed, skipped_condition, skipped_on_contact, note";

/// What a firing did to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResult {
    pub agent_id: String,
    /// `changed`, `rejected`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// The violation, the failure kind, or the kind of skip (`condition`, `on_contact`,
    /// `unchanged`).
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub attempt_id: Option<String>,
}

/// A stored agent result.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AgentRow {
    pub agent_id: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub attempt_id: Option<String>,
}

/// Inserts a running firing of `rule` at `slot`; its id, or `None` when the slot was
/// already claimed (fired, running or skipped).
pub async fn claim(
    store: &Store,
    rule: &str,
    slot: DateTime<Utc>,
    definition: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    insert(store, rule, slot, definition, now, "running", None).await
}

/// Records that `slot` of `rule` will not fire, with why; false when the slot was
/// already claimed.
pub async fn record_skip(
    store: &Store,
    rule: &str,
    slot: DateTime<Utc>,
    definition: &serde_json::Value,
    now: DateTime<Utc>,
    note: &str,
) -> Result<bool, sqlx::Error> {
    let id = insert(store, rule, slot, definition, now, "skipped", Some(note)).await?;
    Ok(id.is_some())
}

async fn insert(
    store: &Store,
    rule: &str,
    slot: DateTime<Utc>,
    definition: &serde_json::Value,
    now: DateTime<Utc>,
    outcome: &str,
    note: Option<&str>,
) -> Result<Option<i64>, sqlx::Error> {
    let finished = (outcome != "running").then_some(to_ms(now));
    let mut tx = store.begin_write().await?;
    let id: Option<i64> = fetch_scalar!(
        tx,
        optional,
        "INSERT INTO rule_firings (rule, slot_at, outcome, definition, started_at, finished_at, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (rule, slot_at) DO NOTHING
         RETURNING id",
        rule,
        to_ms(slot),
        outcome,
        definition.to_string(),
        to_ms(now),
        finished,
        note
    )?;
    tx.commit().await?;
    Ok(id)
}

/// The latest slot of `rule` recorded in any way (fired, running, skipped).
pub async fn last_slot(pool: &Pool, rule: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let latest: Option<i64> = fetch_scalar!(
        pool,
        one,
        "SELECT MAX(slot_at) FROM rule_firings WHERE rule = $1",
        rule
    )?;
    Ok(latest.map(from_ms))
}

/// Firings still running: interrupted by a crash or a shutdown, unless this process
/// is running them.
pub async fn running(pool: &Pool) -> Result<Vec<FiringRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rule_firings WHERE outcome = 'running' ORDER BY slot_at, id"
        ))
    )
}

/// One firing.
pub async fn get(pool: &Pool, id: i64) -> Result<Option<FiringRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM rule_firings WHERE id = $1")),
        id
    )
}

/// The firings of `rule`, oldest slot first.
pub async fn of_rule(pool: &Pool, rule: &str) -> Result<Vec<FiringRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rule_firings WHERE rule = $1 ORDER BY slot_at"
        )),
        rule
    )
}

/// The agents a firing has handled so far.
pub async fn agents(pool: &Pool, firing_id: i64) -> Result<Vec<AgentRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        "SELECT agent_id, outcome, reason, detail, attempt_id FROM rule_firing_agents
         WHERE firing_id = $1 ORDER BY agent_id",
        firing_id
    )
}

/// The ids of the agents a firing has handled so far.
pub async fn handled(pool: &Pool, firing_id: i64) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = fetch_scalar!(
        pool,
        all,
        "SELECT agent_id FROM rule_firing_agents WHERE firing_id = $1",
        firing_id
    )?;
    Ok(ids.into_iter().collect())
}

/// Adds agent results to a firing, in one transaction whatever their number. An agent
/// already recorded keeps its first result.
pub async fn record_agents(
    store: &Store,
    firing_id: i64,
    results: &[AgentResult],
) -> Result<(), sqlx::Error> {
    if results.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = results
        .iter()
        .map(|r| json!([r.agent_id, r.outcome, r.reason, r.detail, r.attempt_id]))
        .collect();
    let mut tx = store.begin_write().await?;
    let sql = crate::store::batched::for_backend(
        &mut tx,
        "INSERT INTO rule_firing_agents (firing_id, agent_id, outcome, reason, detail, attempt_id)
         SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]')
         FROM json_each($2)
         WHERE true
         ON CONFLICT (firing_id, agent_id) DO NOTHING"
            .to_owned(),
    );
    execute!(
        tx,
        sqlx::AssertSqlSafe(sql),
        firing_id,
        serde_json::Value::Array(rows).to_string()
    )?;
    tx.commit().await
}

/// Ends a firing with `outcome`: its counts are those of the agent results stored, and
/// `targets` the number of agents the selector named (unchanged when `None`).
pub async fn finish(
    store: &Store,
    firing_id: i64,
    outcome: &str,
    targets: Option<usize>,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<FiringRow, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let row = fetch!(
        tx,
        one,
        sqlx::AssertSqlSafe(format!(
            "UPDATE rule_firings SET
            outcome = $1, targets = COALESCE($2, targets), note = $3, finished_at = $4,
            changed = (SELECT COUNT(*) FROM rule_firing_agents a
                       WHERE a.firing_id = rule_firings.id AND a.outcome = 'changed'),
            rejected = (SELECT COUNT(*) FROM rule_firing_agents a
                        WHERE a.firing_id = rule_firings.id AND a.outcome = 'rejected'),
            failed = (SELECT COUNT(*) FROM rule_firing_agents a
                      WHERE a.firing_id = rule_firings.id AND a.outcome = 'failed'),
            skipped_condition = (SELECT COUNT(*) FROM rule_firing_agents a
                                 WHERE a.firing_id = rule_firings.id
                                   AND a.outcome = 'skipped' AND a.reason = 'condition'),
            skipped_on_contact = (SELECT COUNT(*) FROM rule_firing_agents a
                                  WHERE a.firing_id = rule_firings.id
                                    AND a.outcome = 'skipped' AND a.reason = 'on_contact')
         WHERE id = $5
         RETURNING {COLUMNS}"
        )),
        outcome,
        targets.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        note,
        to_ms(now),
        firing_id
    )?;
    tx.commit().await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use rstest_reuse::apply;

    fn at(seconds: i64) -> DateTime<Utc> {
        from_ms(1_790_000_000_000 + seconds * 1000)
    }

    fn result(agent: &str, outcome: &'static str, reason: Option<&str>) -> AgentResult {
        AgentResult {
            agent_id: agent.into(),
            outcome,
            reason: reason.map(Into::into),
            detail: None,
            attempt_id: None,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_slot_is_claimed_once_and_a_skip_counts_as_a_claim(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let def = json!({"name": "lunch"});
        let first = claim(&store, "lunch", at(0), &def, at(1)).await.unwrap();
        assert!(first.is_some());
        assert_eq!(
            claim(&store, "lunch", at(0), &def, at(2)).await.unwrap(),
            None
        );
        assert!(
            claim(&store, "other", at(0), &def, at(2))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            !record_skip(&store, "lunch", at(0), &def, at(3), "late")
                .await
                .unwrap()
        );
        assert!(
            record_skip(&store, "lunch", at(60), &def, at(3), "late")
                .await
                .unwrap()
        );
        assert_eq!(
            claim(&store, "lunch", at(60), &def, at(4)).await.unwrap(),
            None
        );
        assert_eq!(
            last_slot(store.reader(), "lunch").await.unwrap(),
            Some(at(60))
        );
        assert_eq!(last_slot(store.reader(), "never").await.unwrap(), None);
        let running: Vec<_> = running(store.reader())
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.rule)
            .collect();
        assert_eq!(running, ["lunch", "other"]);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn finishing_counts_the_agent_results_and_keeps_first_results(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let id = claim(&store, "lunch", at(0), &json!({}), at(0))
            .await
            .unwrap()
            .unwrap();
        record_agents(
            &store,
            id,
            &[
                result("u_001", "changed", None),
                result("u_002", "rejected", Some("AGENT_NOT_SCHEDULED")),
                result("u_003", "skipped", Some("condition")),
                result("u_004", "skipped", Some("on_contact")),
                result("u_005", "failed", Some("platform_unavailable")),
                result("u_006", "changed", None),
            ],
        )
        .await
        .unwrap();
        record_agents(&store, id, &[result("u_001", "failed", None)])
            .await
            .unwrap();
        let handled = handled(store.reader(), id).await.unwrap();
        assert_eq!(handled.len(), 6);
        let row = finish(&store, id, "partial", Some(7), None, at(9))
            .await
            .unwrap();
        assert_eq!(
            (
                row.changed,
                row.rejected,
                row.failed,
                row.skipped_condition,
                row.skipped_on_contact,
                row.targets
            ),
            (2, 1, 1, 1, 1, 7)
        );
        assert_eq!(row.outcome, "partial");
        assert_eq!(row.finished_at, Some(to_ms(at(9))));
        assert!(running(store.reader()).await.unwrap().is_empty());
        let agents = agents(store.reader(), id).await.unwrap();
        assert_eq!(agents[0].outcome, "changed", "the first result stays");
    }
}
