//! Fresh, migrated stores for tests: one database per test, on every engine
//! the environment offers.
//!
//! SQLite always runs (a file in a temporary directory). PostgreSQL runs when
//! `TEST_DATABASE_URL` is set: each store gets its own new database
//! `recarga_t_…`, so tests never see each other's rows. If the variable is set
//! and the server cannot be reached, that is a failure, never a skip.

use crate::{Database, PgStore, SqliteStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

pub const TEST_DB_PREFIX: &str = "recarga_t_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The engines this test run must cover.
pub fn engines() -> Vec<Engine> {
    let mut out = vec![Engine::Sqlite];
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        out.push(Engine::Postgres);
    }
    out
}

/// A fresh database: its URL (for child processes) and an open store.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn Store>,
    pub dir: Option<PathBuf>,
}

/// A new empty temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recarga-{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub async fn fresh(engine: Engine) -> TestDb {
    match engine {
        Engine::Sqlite => {
            let dir = temp_dir("db");
            let path = dir.join("recarga.db");
            let store = SqliteStore::open(&path).await.expect("open sqlite");
            store.migrate().await.expect("migrate sqlite");
            TestDb {
                url: format!("sqlite://{}", path.display()),
                store: Arc::new(store),
                dir: Some(dir),
            }
        }
        Engine::Postgres => {
            let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
            let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
            let admin = PgStore::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(admin.pool())
                .await
                .expect("create test database");
            admin.pool().close().await;
            let url = replace_db_name(&admin_url, &name);
            let store = PgStore::connect(&url).await.expect("connect test database");
            store.migrate().await.expect("migrate postgres");
            TestDb {
                url,
                store: Arc::new(store),
                dir: None,
            }
        }
    }
}

/// `postgres://u@h:5432/db?x` with the database name replaced.
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}
