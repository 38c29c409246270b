//! Upgrades of a database that already holds rows: each migration that
//! rewrites a table (0008 rebuilds `topups` on SQLite) keeps every row, its
//! foreign keys and the ledger's append-only rule.

use crate::{Database, PgStore, SqliteStore, Store};

/// Rows as a database at migration 0007 held them.
const OLD_ROWS: &str = "
INSERT INTO customers (id, name, currency, balance, credit_limit, discount_bps, min_topup, max_topup, catalogue,
                       active, created_at, updated_at)
VALUES ('C1', 'One', 'MXN', 8000, 0, 0, 1000, 200000, 'open_range', TRUE, 1, 1);
INSERT INTO topups (id, customer_id, reference, request_hash, phone, face_value, product_id, amount_sent, vat,
                    delivered, discount_bps, currency, held, status, next_attempt_at, created_at, updated_at)
VALUES ('RLR0192f5a0c3d47e8a9b1c2d3e4f506171', 'C1', 'order-1', 'h', '5512345678', 2000, 'XOOM_20_MXN', 2000, 0,
        2000, 0, 'MXN', 2000, 'SUCCESS', 1, 1, 2),
       ('RLR0192f5a0c3d47e8a9b1c2d3e4f506172', 'C1', 'order-2', 'h', '5512345678', 2000, 'XOOM_20_MXN', 2000, 0,
        2000, 0, 'MXN', 2000, 'FAILED', 1, 2, 3);
INSERT INTO ledger (customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at)
VALUES ('C1', NULL, 'credit', 10000, 10000, 'ops', 'opening', 1),
       ('C1', 'RLR0192f5a0c3d47e8a9b1c2d3e4f506171', 'hold', -2000, 8000, 'api', NULL, 1),
       ('C1', 'RLR0192f5a0c3d47e8a9b1c2d3e4f506172', 'hold', -2000, 6000, 'api', NULL, 2),
       ('C1', 'RLR0192f5a0c3d47e8a9b1c2d3e4f506171', 'capture', 0, 6000, 'worker', NULL, 2),
       ('C1', 'RLR0192f5a0c3d47e8a9b1c2d3e4f506172', 'release', 2000, 8000, 'worker', NULL, 3);
";

async fn check_upgraded(store: &dyn Store) {
    let done = store
        .get_topup("RLR0192f5a0c3d47e8a9b1c2d3e4f506171")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.ref_key.as_deref(), Some("order-1"), "the reference became its key");
    assert!(done.number.is_some(), "old rows get their integer id");
    assert_eq!(
        store.topup_ledger(&done.id).await.unwrap().len(),
        2,
        "ledger rows still point at it"
    );
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.topups, 2);
}

#[tokio::test]
async fn sqlite_rebuild_keeps_rows_and_keys() {
    let dir = crate::testing::temp_dir("upgrade");
    let store = SqliteStore::open(&dir.join("recarga.db")).await.unwrap();
    SqliteStore::MIGRATOR.run_to(7, store.write_pool()).await.unwrap();
    sqlx::raw_sql(OLD_ROWS).execute(store.write_pool()).await.unwrap();
    store.migrate().await.unwrap();
    check_upgraded(&store).await;
    // Foreign keys are on again and still enforced.
    let orphan = sqlx::query("INSERT INTO exchanges (topup_id, kind, provider, outcome, started_at, ended_at) VALUES ('RLRnope', 'topup', 'x', 'x', 1, 1)")
        .execute(store.write_pool())
        .await;
    assert!(orphan.is_err(), "foreign keys are enforced after the rebuild");
    let edit = sqlx::query("UPDATE ledger SET amount = 0")
        .execute(store.write_pool())
        .await;
    assert!(edit.is_err(), "the ledger is still append-only");
}

#[tokio::test]
async fn postgres_upgrade_keeps_rows_and_keys() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: postgres_upgrade_keeps_rows_and_keys: needs TEST_DATABASE_URL"
        );
        return;
    };
    let name = format!("{}{}", crate::testing::TEST_DB_PREFIX, uuid::Uuid::now_v7().simple());
    let admin = PgStore::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let store = PgStore::connect(&crate::testing::replace_db_name(&admin_url, &name))
        .await
        .unwrap();
    PgStore::MIGRATOR.run_to(7, store.pool()).await.unwrap();
    sqlx::raw_sql(OLD_ROWS).execute(store.pool()).await.unwrap();
    store.migrate().await.unwrap();
    check_upgraded(&store).await;
}
