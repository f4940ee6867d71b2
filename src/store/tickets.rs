//! Live-feed tickets in the database (`live_tickets`), for several instances: one
//! issues a ticket, any redeems it, once. A sole instance keeps its tickets in memory
//! only ([`crate::live::Tickets`]), and the table stays empty.
//!
//! Written whatever this instance's role (`Store::begin_write_unfenced`): a follower
//! issues and redeems tickets as the leader does, and they are no record of the
//! tenant's.

use crate::store::{Store, execute, fetch};

/// Records a ticket, by its `digest`, for `holder` in `role` until `expires_at` (Unix
/// ms); drops the tickets expired by `now`.
pub async fn record(
    store: &Store,
    digest: &str,
    holder: &str,
    role: &str,
    expires_at: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = store.begin_write_unfenced().await?;
    execute!(
        &mut tx,
        "DELETE FROM live_tickets WHERE expires_at <= $1",
        now
    )?;
    execute!(
        &mut tx,
        "INSERT INTO live_tickets (digest, holder, role, expires_at) VALUES ($1, $2, $3, $4)",
        digest,
        holder,
        role,
        expires_at
    )?;
    tx.commit().await
}

/// Uses up the ticket of `digest`: its holder and role when it was recorded and has
/// not expired by `now`. A second use finds nothing.
pub async fn spend(
    store: &Store,
    digest: &str,
    now: i64,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut tx = store.begin_write_unfenced().await?;
    let spent: Option<(String, String, i64)> = fetch!(
        &mut tx,
        optional,
        "DELETE FROM live_tickets WHERE digest = $1 RETURNING holder, role, expires_at",
        digest
    )?;
    tx.commit().await?;
    Ok(spent
        .filter(|(_, _, expires_at)| now < *expires_at)
        .map(|(holder, role, _)| (holder, role)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::on;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    #[apply(backends)]
    #[tokio::test]
    async fn a_recorded_ticket_is_spent_once_and_not_after_it_expires(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        record(&store, "d1", "desk", "viewer", 61_000, 1_000)
            .await
            .unwrap();
        record(&store, "d2", "ops", "admin", 61_000, 1_000)
            .await
            .unwrap();
        let first = spend(&store, "d1", 60_999).await.unwrap();
        assert_eq!(first, Some(("desk".to_owned(), "viewer".to_owned())));
        assert_eq!(spend(&store, "d1", 2_000).await.unwrap(), None, "once");
        assert_eq!(spend(&store, "d2", 61_000).await.unwrap(), None, "expired");
        assert_eq!(spend(&store, "never", 1_000).await.unwrap(), None);

        // Issuing drops the expired ones.
        record(&store, "d3", "desk", "viewer", 200_000, 100_000)
            .await
            .unwrap();
        record(&store, "d4", "desk", "viewer", 250_000, 150_000)
            .await
            .unwrap();
        record(&store, "d5", "desk", "viewer", 300_000, 220_000)
            .await
            .unwrap();
        let left: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM live_tickets"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(left, 2, "d3 expired by the time d5 was issued");
    }
}
