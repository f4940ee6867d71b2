//! The two backends' schemas, held against each other: a fresh SQLite database and a
//! fresh PostgreSQL one, each migrated by wfmd's own migrator, compared table by table
//! (columns, keys, constraints, indexes, triggers, the rows a new database holds) by
//! `tests/support/compare-schemas.py`, which allows only the differences it lists as
//! made on purpose. A migration added to one backend's folder and not the other's fails
//! here.

use std::process::Command;

use wfmd::store::Store;

use crate::helpers::{TestDb, install_when_missing};

/// Runs the comparison of `postgres` with the SQLite file of `sqlite`: its exit code
/// and everything it printed.
async fn compare(postgres: &TestDb, sqlite: &TestDb) -> (Option<i32>, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/compare-schemas.py"
    );
    let mut command = Command::new("python3");
    command.arg(script).arg(postgres.url()).arg(sqlite.path());
    let output = tokio::task::spawn_blocking(move || {
        // psql comes with the throwaway server's PostgreSQL.
        install_when_missing("python3", &["--version"], &["python3"]);
        command.output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), printed)
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_schema_and_a_drift_is_found() {
    let sqlite = TestDb::new();
    let postgres = TestDb::postgres();
    for db in [&sqlite, &postgres] {
        let store = Store::open(&db.url()).await.unwrap();
        assert!(store.applied_migrations().await.unwrap() > 0);
        store.close().await;
    }

    let (code, printed) = compare(&postgres, &sqlite).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("same schema"), "{printed}");

    // What one backend's migration alone would do: the comparison must see it.
    postgres.psql("ALTER TABLE agent_roster ADD COLUMN drifted TEXT");
    let (code, printed) = compare(&postgres, &sqlite).await;
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains("DIFFERENT: columns of agent_roster (in order)"),
        "{printed}"
    );
}
