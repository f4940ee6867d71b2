//! A full disk under the database: nothing reaches the platform that wfmd cannot
//! record, `/readyz` says the database does not take writes, and writes work again as
//! soon as space comes back, without a restart. The database sits on a small tmpfs the
//! test fills and frees ([`SmallDisk`](crate::helpers::SmallDisk)).

use std::time::Duration;

use wfmd::store::Store;

use crate::helpers::{DEADLINE, TestDb};

/// Room for the database and its log, with little to spare.
const DISK_BYTES: u64 = 8 << 20;

/// One small write transaction of the kind every writer makes.
async fn write_one(store: &Store) -> Result<(), sqlx::Error> {
    let mut tx = store.begin_write().await?;
    sqlx::query("INSERT INTO write_probe (id, at) VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET at = at + 1")
        .execute(&mut *tx)
        .await?;
    // A page's worth of new rows, so the commit needs room in the log.
    sqlx::query("CREATE TABLE IF NOT EXISTS ballast (x BLOB)")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO ballast VALUES (randomblob(16000))")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Polls `write_one` until it succeeds, failing the test after the deadline.
async fn writes_again(store: &Store) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match write_one(store).await {
            Ok(()) => return,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "writes did not recover after space came back: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_write_that_failed_on_a_full_disk_does_not_stop_the_writes_after_it() {
    let db = TestDb::on_small_disk(DISK_BYTES);
    let store = Store::open(&db.url()).await.unwrap();
    write_one(&store).await.unwrap();

    db.small_disk().fill();
    let error = write_one(&store).await.expect_err("the disk is full");
    assert!(
        error.to_string().contains("full"),
        "the failure says why: {error}"
    );
    assert!(store.check_writable().await.is_err(), "and the probe agrees");

    db.small_disk().free();
    writes_again(&store).await;
    store.check_writable().await.expect("the probe sees it too");
}
