//! What a tenant's leader shares with the other instances' wallboards (`live_shared`):
//! its newest metric board and the agents the platform lists, which a follower may not
//! ask the platform for itself (one instance makes a tenant's platform calls). The
//! leader writes each as JSON when it changes; followers read them every few seconds.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{Pool, Store, execute, fetch};

/// One shared view: its name in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The metric board ([`crate::domain::metrics::MetricBoard`]).
    Board,
    /// The agents the platform lists (`Vec<`[`crate::cxone::Agent`]`>`).
    Roster,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Board => "board",
            View::Roster => "roster",
        }
    }
}

/// Shares `value` as `view`, published at `now_ms`.
pub async fn publish(
    store: &Store,
    view: View,
    value: &impl Serialize,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let body = serde_json::to_string(value).expect("a shared view serializes");
    let mut tx = store.begin_write().await?;
    execute!(
        &mut tx,
        "INSERT INTO live_shared (name, body, published_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET body = excluded.body,
             published_at = excluded.published_at",
        view.name(),
        body,
        now_ms
    )?;
    tx.commit().await
}

/// `view` as last shared, unless it is the publication of `seen_ms` (the one read last
/// time; 0 for none): the value and when it was published. Another time, not a later
/// one: a new leader's clock may be behind the last one's. A body this build cannot
/// read (a newer instance's) counts as none.
pub async fn changed<T: DeserializeOwned>(
    pool: &Pool,
    view: View,
    seen_ms: i64,
) -> Result<Option<(T, i64)>, sqlx::Error> {
    let row: Option<(String, i64)> = fetch!(
        pool,
        optional,
        "SELECT body, published_at FROM live_shared WHERE name = $1 AND published_at <> $2",
        view.name(),
        seen_ms
    )?;
    Ok(row.and_then(|(body, at)| match serde_json::from_str(&body) {
        Ok(value) => Some((value, at)),
        Err(error) => {
            tracing::warn!(view = view.name(), %error, "a shared wallboard view cannot be read");
            None
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    #[apply(backends)]
    #[tokio::test]
    async fn a_view_is_read_once_per_publication_and_the_last_replaces_it(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let nothing: Option<(Vec<String>, i64)> =
            changed(store.reader(), View::Roster, 0).await.unwrap();
        assert_eq!(nothing, None);

        publish(&store, View::Roster, &["u_001"], 1_000)
            .await
            .unwrap();
        publish(&store, View::Board, &["other"], 1_500)
            .await
            .unwrap();
        let first = changed(store.reader(), View::Roster, 0).await.unwrap();
        assert_eq!(first, Some((vec!["u_001".to_owned()], 1_000)));
        let again: Option<(Vec<String>, i64)> =
            changed(store.reader(), View::Roster, 1_000).await.unwrap();
        assert_eq!(again, None, "nothing but what was read");

        publish(&store, View::Roster, &["u_001", "u_002"], 2_000)
            .await
            .unwrap();
        let second = changed(store.reader(), View::Roster, 1_000).await.unwrap();
        assert_eq!(
            second,
            Some((vec!["u_001".to_owned(), "u_002".to_owned()], 2_000))
        );
        // A new leader whose clock is behind still replaces it.
        publish(&store, View::Roster, &["u_003"], 1_200)
            .await
            .unwrap();
        let behind = changed(store.reader(), View::Roster, 2_000).await.unwrap();
        assert_eq!(behind, Some((vec!["u_003".to_owned()], 1_200)));
        let board: Option<(Vec<String>, i64)> =
            changed(store.reader(), View::Board, 0).await.unwrap();
        assert_eq!(board, Some((vec!["other".to_owned()], 1_500)));
    }
}
