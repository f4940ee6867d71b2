//! What an idempotency key of a single change already names: an attempt recorded under
//! it, a deferred change waiting with it, an intent left over with it.
//!
//! A change with a key needs these answers before it is sent (the deferred change's
//! only when it may wait), and almost always they are "nothing", so one statement asks
//! whether each exists and a row is read only where one does: one checkout and one
//! round trip a change instead of two or three. Its plan costs about what theirs did
//! (measured in the fleet bench, where PostgreSQL plans nearly every run again: the
//! connection served another tenant last); the gain is the checkout and the round trip.

use crate::store::{Pool, fetch};

/// Which of the three tables hold a row under a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// An attempt is recorded under the key (`transition_attempts`).
    pub attempt: bool,
    /// A deferred change waits with the key (`deferred_changes`).
    pub deferred: bool,
    /// An intent is left over with the key (`transition_intents`).
    pub intent: bool,
}

/// Where `key` is used, in one statement.
pub async fn uses(pool: &Pool, key: &str) -> Result<KeyUse, sqlx::Error> {
    let (attempt, deferred, intent): (bool, bool, bool) = fetch!(
        pool,
        one,
        "SELECT EXISTS (SELECT 1 FROM transition_attempts WHERE idempotency_key = $1),
                EXISTS (SELECT 1 FROM deferred_changes WHERE idempotency_key = $1),
                EXISTS (SELECT 1 FROM transition_intents WHERE idempotency_key = $1)",
        key
    )?;
    Ok(KeyUse {
        attempt,
        deferred,
        intent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{backends, temp_store_on};
    use crate::store::{Backend, attempts, deferred, intents};
    use rstest_reuse::apply;

    #[apply(backends)]
    #[tokio::test]
    async fn a_key_is_found_in_each_table_that_holds_it_and_nowhere_else(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let uses = async |key| uses(store.reader(), key).await.unwrap();
        assert_eq!(uses("k").await, KeyUse::default(), "an empty database");

        let mut tx = store.begin_write().await.unwrap();
        attempts::insert(&mut tx, &attempts::tests::attempt("a1", Some("made")))
            .await
            .unwrap();
        let waiting = deferred::DeferredRow {
            idempotency_key: Some("waits".into()),
            ..deferred::tests::row("d1", "u_002", 9_000)
        };
        deferred::replace(&mut tx, &waiting).await.unwrap();
        let left = intents::IntentRow {
            idempotency_key: Some("left".into()),
            ..intents::tests::intent("a2", "p1", 1_000, Some(0))
        };
        intents::insert(&mut tx, &left).await.unwrap();
        tx.commit().await.unwrap();

        let only = |attempt, deferred, intent| KeyUse {
            attempt,
            deferred,
            intent,
        };
        assert_eq!(uses("made").await, only(true, false, false));
        assert_eq!(uses("waits").await, only(false, true, false));
        assert_eq!(uses("left").await, only(false, false, true));
        assert_eq!(uses("k").await, KeyUse::default(), "another key");
    }
}
