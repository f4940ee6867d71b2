//! Authorised exceptions: a supervisor excuses agents (listed, or a team's members) from
//! adherence for a time range, with a reason; that time is neither in nor out of
//! adherence (see [`crate::store::authorisations`] and
//! [`crate::domain::adherence::Timeline::authorised`]). Creating and withdrawing one are
//! each stored with their audit entry in one transaction.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use crate::store::audit::{self, NewEntry};
use crate::store::authorisations::{self as stored, AuthorisationRow};
use crate::store::{Store, to_ms};
use crate::telemetry::names::ADHERENCE_AUTHORISATIONS_TOTAL;

/// The longest range one authorisation covers: a leave or a project, not a standing
/// exemption.
pub const MAX_SPAN: TimeDelta = TimeDelta::days(31);

/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The most agents one authorisation covers (as a bulk job).
pub const MAX_AGENTS: usize = crate::engine::bulk::MAX_AGENTS;

/// An authorisation asked for.
#[derive(Debug, Clone)]
pub struct Authorise {
    /// The agents, a team's members resolved already.
    pub agents: Vec<String>,
    /// The team asked for, when one was.
    pub team: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
    /// Who authorises (the caller's token name).
    pub actor: String,
}

/// Why an authorisation was refused: the field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum AuthoriseError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

fn invalid(field: &'static str, message: impl Into<String>) -> AuthoriseError {
    AuthoriseError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks `request` and stores it with its `adherence.authorised` audit entry; the
/// stored authorisation.
pub async fn authorise(
    store: &Store,
    mut request: Authorise,
    now: DateTime<Utc>,
) -> Result<AuthorisationRow, AuthoriseError> {
    if request.to <= request.from {
        return Err(invalid("to", "`to` must be after `from`"));
    }
    if request.to - request.from > MAX_SPAN {
        return Err(invalid(
            "to",
            format!(
                "an authorisation covers at most {} days; make several",
                MAX_SPAN.num_days()
            ),
        ));
    }
    request.reason = request.reason.trim().to_owned();
    if request.reason.is_empty() || request.reason.chars().count() > MAX_REASON_CHARS {
        return Err(invalid(
            "reason",
            format!("say why, in 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    request.agents.sort_unstable();
    request.agents.dedup();
    if request.agents.is_empty() || request.agents.len() > MAX_AGENTS {
        return Err(invalid(
            "agents",
            format!("an authorisation covers 1 to {MAX_AGENTS} agents"),
        ));
    }
    let row = AuthorisationRow {
        id: uuid::Uuid::now_v7().to_string(),
        agents: json!(request.agents).to_string(),
        team: request.team,
        from_at: to_ms(request.from),
        to_at: to_ms(request.to),
        reason: request.reason,
        created_by: request.actor,
        created_at: to_ms(now),
        withdrawn_at: None,
        withdrawn_by: None,
    };
    let mut tx = store.begin_write().await?;
    stored::insert(&mut tx, &row).await?;
    audited(&mut tx, &row, "adherence.authorised", &row.created_by, now).await?;
    tx.commit().await?;
    metrics::counter!(ADHERENCE_AUTHORISATIONS_TOTAL, "action" => "authorised").increment(1);
    Ok(row)
}

/// Withdraws authorisation `id` (it counts no more) with its
/// `adherence.authorisation_withdrawn` audit entry; `None` when there is none or it was
/// withdrawn already.
pub async fn withdraw(
    store: &Store,
    id: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<AuthorisationRow>, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let Some(row) = stored::withdraw(&mut tx, id, to_ms(now), by).await? else {
        return Ok(None);
    };
    audited(&mut tx, &row, "adherence.authorisation_withdrawn", by, now).await?;
    tx.commit().await?;
    metrics::counter!(ADHERENCE_AUTHORISATIONS_TOTAL, "action" => "withdrawn").increment(1);
    Ok(Some(row))
}

async fn audited(
    tx: &mut impl crate::store::AsConn,
    row: &AuthorisationRow,
    action: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let detail = json!({
        "authorisationId": row.id,
        "agents": row.agent_ids(),
        "team": row.team,
        "from": crate::time::rfc3339(crate::store::from_ms(row.from_at)),
        "to": crate::time::rfc3339(crate::store::from_ms(row.to_at)),
        "reason": row.reason,
    });
    audit::append(
        tx,
        &NewEntry {
            at: now,
            actor,
            action,
            agent_id: None,
            subject_id: Some(&row.id),
            detail,
        },
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + TimeDelta::minutes(minute)
    }

    fn request(agents: &[&str], from: i64, to: i64, reason: &str) -> Authorise {
        Authorise {
            agents: agents.iter().map(|a| (*a).to_owned()).collect(),
            team: None,
            from: at(from),
            to: at(to),
            reason: reason.into(),
            actor: "desk".into(),
        }
    }

    #[tokio::test]
    async fn an_authorisation_and_its_withdrawal_are_each_audited_once() {
        let (store, _dir) = temp_store().await;
        let row = authorise(
            &store,
            request(&["u_2", "u_1", "u_2"], 0, 30, " coaching "),
            at(-5),
        )
        .await
        .unwrap();
        assert_eq!(row.agent_ids(), ["u_1", "u_2"], "sorted, each once");
        assert_eq!(row.reason, "coaching");
        assert!(
            withdraw(&store, &row.id, "lead", at(10))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            withdraw(&store, &row.id, "lead", at(11))
                .await
                .unwrap()
                .is_none()
        );
        let actions: Vec<(String, String, Option<String>)> = crate::store::on!(
            store.reader(),
            |c| sqlx::query_as("SELECT action, actor, subject_id FROM audit_log ORDER BY seq")
                .fetch_all(c)
                .await
        )
        .unwrap();
        assert_eq!(
            actions,
            [
                (
                    "adherence.authorised".into(),
                    "desk".into(),
                    Some(row.id.clone())
                ),
                (
                    "adherence.authorisation_withdrawn".into(),
                    "lead".into(),
                    Some(row.id.clone())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_authorisation_names_its_field_and_stores_nothing() {
        let (store, _dir) = temp_store().await;
        for (bad, field) in [
            (request(&["u_1"], 30, 30, "x"), "to"),
            (request(&["u_1"], 0, 32 * 24 * 60, "x"), "to"),
            (request(&["u_1"], 0, 30, "  "), "reason"),
            (request(&["u_1"], 0, 30, &"x".repeat(501)), "reason"),
            (request(&[], 0, 30, "x"), "agents"),
        ] {
            match authorise(&store, bad, at(0)).await {
                Err(AuthoriseError::Invalid { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let stored = stored::overlapping(store.reader(), i64::MIN, i64::MAX, 10)
            .await
            .unwrap();
        assert!(stored.is_empty());
    }
}
