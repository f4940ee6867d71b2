//! Skill and queue samples (`metric_samples`): one row per skill or queue and platform
//! refresh, written set-based, one statement per poll whatever the number of tiles.

use crate::store::{AsConn, Pool, execute, fetch};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::FromRow;

use super::{from_ms, to_ms};
use crate::domain::metrics::{MetricFamily, QueueTile, SkillTile};

/// One sample as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: MetricFamily,
    pub entity_id: String,
    /// The platform's time of the figures.
    pub sampled_at: DateTime<Utc>,
    pub name: String,
    pub service_level: Option<f64>,
    /// Contacts queued (skills) or calls waiting (queues).
    pub queued: u32,
    pub agents_available: u32,
    /// Staffed (skills) or logged on (queues).
    pub agents_staffed: u32,
    /// On contact and in ACW (skills) or busy (queues).
    pub agents_busy: u32,
    pub contacts_active: Option<u32>,
    pub longest_wait_secs: Option<u32>,
    pub estimated_wait_secs: Option<u32>,
    pub average_wait_ms: Option<u64>,
}

impl From<&SkillTile> for Sample {
    fn from(t: &SkillTile) -> Sample {
        Sample {
            family: MetricFamily::Skills,
            entity_id: t.skill_id.clone(),
            sampled_at: t.sampled_at,
            name: t.skill_name.clone(),
            service_level: t.service_level,
            queued: t.contacts_queued,
            agents_available: t.agents_available,
            agents_staffed: t.agents_staffed,
            agents_busy: t.agents_on_contact.saturating_add(t.agents_acw),
            contacts_active: Some(t.contacts_active),
            longest_wait_secs: Some(t.longest_wait_secs),
            estimated_wait_secs: t.estimated_wait_secs,
            average_wait_ms: None,
        }
    }
}

impl From<&QueueTile> for Sample {
    fn from(t: &QueueTile) -> Sample {
        Sample {
            family: MetricFamily::Queues,
            entity_id: t.queue_id.clone(),
            sampled_at: t.sampled_at,
            name: t.name.clone(),
            service_level: t.service_level,
            queued: t.contacts_waiting,
            agents_available: t.agents_available,
            agents_staffed: t.agents_logged_on,
            agents_busy: t.agents_busy,
            contacts_active: None,
            longest_wait_secs: None,
            estimated_wait_secs: None,
            average_wait_ms: t.average_wait_ms,
        }
    }
}

/// Stores `samples`, taken at `polled_at`; a sample whose family, id and platform time
/// are stored already is skipped (the same answer stored twice). Returns how many
/// rows were added.
pub async fn insert(
    conn: &mut impl AsConn,
    samples: &[Sample],
    polled_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if samples.is_empty() {
        return Ok(0);
    }
    let rows: Vec<_> = samples
        .iter()
        .map(|s| {
            json!([
                s.family.as_str(),
                s.entity_id,
                to_ms(s.sampled_at),
                s.name,
                s.service_level,
                s.queued,
                s.agents_available,
                s.agents_staffed,
                s.agents_busy,
                s.contacts_active,
                s.longest_wait_secs,
                s.estimated_wait_secs,
                s.average_wait_ms,
            ])
        })
        .collect();
    let sql = crate::store::batched::for_backend(
        conn,
        "INSERT INTO metric_samples (family, entity_id, sampled_at, name, service_level,
             queued, agents_available, agents_staffed, agents_busy, contacts_active,
             longest_wait_secs, estimated_wait_secs, average_wait_ms, polled_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                CAST(json_extract(value, '$[2]') AS BIGINT), json_extract(value, '$[3]'),
                CAST(json_extract(value, '$[4]') AS DOUBLE PRECISION), CAST(json_extract(value, '$[5]') AS BIGINT),
                CAST(json_extract(value, '$[6]') AS BIGINT), CAST(json_extract(value, '$[7]') AS BIGINT),
                CAST(json_extract(value, '$[8]') AS BIGINT), CAST(json_extract(value, '$[9]') AS BIGINT),
                CAST(json_extract(value, '$[10]') AS BIGINT), CAST(json_extract(value, '$[11]') AS BIGINT),
                CAST(json_extract(value, '$[12]') AS BIGINT), $2
         FROM json_each($1) WHERE true
         ON CONFLICT (family, entity_id, sampled_at) DO NOTHING"
            .to_owned(),
    );
    let done = execute!(
        conn,
        sqlx::AssertSqlSafe(sql),
        serde_json::Value::Array(rows).to_string(),
        to_ms(polled_at)
    )?;
    Ok(done.rows_affected())
}

/// One point of a day curve.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    pub sampled_at: DateTime<Utc>,
    pub service_level: Option<f64>,
    pub queued: u32,
}

#[derive(FromRow)]
struct PointRow {
    sampled_at: i64,
    service_level: Option<f64>,
    queued: i64,
}

/// The samples of one skill or queue since `from`, oldest first; at most `cap` of them,
/// picked evenly (the first always among them) when there are more.
pub async fn series(
    pool: &Pool,
    family: MetricFamily,
    entity_id: &str,
    from: DateTime<Utc>,
    cap: u32,
) -> Result<Vec<CurvePoint>, sqlx::Error> {
    // Row `rn` of `n` is kept when `rn·cap mod n < cap`: for each k < cap exactly the
    // first row at or after k·n/cap passes, so `cap` rows spread evenly over the range.
    let rows: Vec<PointRow> = fetch!(
        pool,
        all,
        "WITH s AS (
             SELECT sampled_at, service_level, queued,
                    ROW_NUMBER() OVER (ORDER BY sampled_at) - 1 AS rn,
                    COUNT(*) OVER () AS n
             FROM metric_samples
             WHERE family = $1 AND entity_id = $2 AND sampled_at >= $3)
         SELECT sampled_at, service_level, queued FROM s
         WHERE n <= $4 OR (rn * $4) % n < $4
         ORDER BY sampled_at",
        family.as_str(),
        entity_id,
        to_ms(from),
        i64::from(cap.max(1))
    )?;
    Ok(rows
        .into_iter()
        .map(|r| CurvePoint {
            sampled_at: from_ms(r.sampled_at),
            service_level: r.service_level,
            queued: u32::try_from(r.queued).unwrap_or(0),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::store::Backend;
    use crate::store::on;
    use crate::store::testing::backends;
    use chrono::TimeDelta;
    use rstest_reuse::apply;

    use super::*;
    use crate::store::testing::temp_store_on;

    fn at(minute: i64) -> DateTime<Utc> {
        "2026-11-20T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(minute)
    }

    fn skill(id: &str, minute: i64, queued: u32) -> Sample {
        Sample::from(&SkillTile {
            skill_id: id.into(),
            skill_name: "Tier 1 Voice".into(),
            contacts_queued: queued,
            contacts_active: 2,
            longest_wait_secs: 40,
            service_level: Some(0.5),
            service_level_threshold_secs: None,
            service_level_goal: None,
            agents_available: 1,
            agents_staffed: 5,
            agents_on_contact: 2,
            agents_acw: 1,
            estimated_wait_secs: None,
            sampled_at: at(minute),
        })
    }

    #[apply(backends)]
    #[tokio::test]
    async fn samples_are_stored_once_per_platform_time_and_read_back_in_order(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut conn = store.begin_write().await.unwrap();
        let batch = [skill("s_1", 2, 7), skill("s_1", 1, 3), skill("s_2", 1, 9)];
        assert_eq!(insert(&mut conn, &batch, at(3)).await.unwrap(), 3);
        // The platform had not refreshed: the same times again add nothing.
        let again = [skill("s_1", 2, 8), skill("s_1", 3, 4)];
        assert_eq!(insert(&mut conn, &again, at(4)).await.unwrap(), 1);
        conn.commit().await.unwrap();

        let points = series(store.reader(), MetricFamily::Skills, "s_1", at(0), 100)
            .await
            .unwrap();
        let got: Vec<(DateTime<Utc>, u32)> =
            points.iter().map(|p| (p.sampled_at, p.queued)).collect();
        assert_eq!(got, [(at(1), 3), (at(2), 7), (at(3), 4)]);
        assert_eq!(points[0].service_level, Some(0.5));
        let since = series(store.reader(), MetricFamily::Skills, "s_1", at(2), 100)
            .await
            .unwrap();
        assert_eq!(since.len(), 2);
        let queues = series(store.reader(), MetricFamily::Queues, "s_1", at(0), 100)
            .await
            .unwrap();
        assert!(queues.is_empty(), "families are apart");

        let busy: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT agents_busy FROM metric_samples WHERE entity_id = 's_2'"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(busy, 3, "on contact + ACW");
    }

    #[apply(backends)]
    #[tokio::test]
    async fn more_samples_than_the_cap_are_thinned_evenly(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut conn = store.begin_write().await.unwrap();
        let batch: Vec<Sample> = (0..100).map(|m| skill("s_1", m, m as u32)).collect();
        insert(&mut conn, &batch, at(100)).await.unwrap();
        conn.commit().await.unwrap();
        let points = series(store.reader(), MetricFamily::Skills, "s_1", at(0), 10)
            .await
            .unwrap();
        let kept: Vec<u32> = points.iter().map(|p| p.queued).collect();
        assert_eq!(kept, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        let points = series(store.reader(), MetricFamily::Skills, "s_1", at(0), 30)
            .await
            .unwrap();
        assert_eq!(points.len(), 30);
        assert!(points.windows(2).all(|w| w[0].sampled_at < w[1].sampled_at));
        let gaps: Vec<u32> = points
            .windows(2)
            .map(|w| w[1].queued - w[0].queued)
            .collect();
        assert!(gaps.iter().all(|g| (3..=4).contains(g)), "{gaps:?}");
    }
}
