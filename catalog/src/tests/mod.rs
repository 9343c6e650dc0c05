//! The catalog's tests, by domain. Every test that goes through the store traits runs twice:
//! against SQLite in a temp folder, and against PostgreSQL in a fresh schema of the server
//! `CITYHUB_TEST_POSTGRES_URL` names (`.ci/run` starts one). Without that variable the
//! PostgreSQL runs say so and pass, unless `CITYHUB_REQUIRE_POSTGRES=1` (set by `.ci/run`)
//! makes them fail.

use std::sync::Arc;

use crate::{Catalog, PostgresStore, SqliteStore};

mod camera_alarms;
mod camera_changes;
mod camera_daily;
mod cameras;
mod datasets;
mod sharing;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What keeps a test's catalog alive and reachable for raw SQL: its temp folder, or its
/// PostgreSQL schema's URL.
pub enum TestCatalog {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl TestCatalog {
    /// Runs one statement on the catalog's database directly, bypassing the store: what a
    /// DBA or an attacker with the database password could do. Answers the database's error.
    pub async fn raw_execute(&self, sql: &str) -> Result<(), String> {
        match self {
            TestCatalog::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("catalog.db"))
                    .map_err(|err| err.to_string())?;
                conn.execute(sql, [])
                    .map(drop)
                    .map_err(|err| err.to_string())
            }
            TestCatalog::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|err| err.to_string())?;
                tokio::spawn(connection);
                client.execute(sql, &[]).await.map(drop).map_err(|err| {
                    err.as_db_error()
                        .map(|db| db.message().to_string())
                        .unwrap_or_else(|| err.to_string())
                })
            }
        }
    }

    /// Opens the same catalog again, as a restarted hub (or a second node) would.
    pub async fn reopen(&self) -> Catalog {
        match self {
            TestCatalog::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("catalog.db"), 5_000).expect("reopen"))
            }
            TestCatalog::Postgres(url) => {
                Arc::new(PostgresStore::open_url(url).await.expect("reopen"))
            }
        }
    }
}

/// A fresh, migrated catalog on `backend`; `None` when PostgreSQL is not configured here.
pub async fn open(backend: Backend) -> Option<(TestCatalog, Catalog)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("catalog.db"), 5_000).expect("open");
            Some((TestCatalog::Sqlite(dir), Arc::new(store)))
        }
        Backend::Postgres => {
            let url = postgres_url()?;
            let schema = fresh_schema(&url).await;
            let url = format!(
                "{url}{}options=-c%20search_path%3D{schema}",
                if url.contains('?') { "&" } else { "?" }
            );
            let store = PostgresStore::open_url(&url)
                .await
                .expect("open PostgreSQL");
            Some((TestCatalog::Postgres(url), Arc::new(store)))
        }
    }
}

fn postgres_url() -> Option<String> {
    match std::env::var("CITYHUB_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CITYHUB_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "CITYHUB_REQUIRE_POSTGRES=1 but CITYHUB_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipped: set CITYHUB_TEST_POSTGRES_URL to run the PostgreSQL catalog tests");
            None
        }
    }
}

/// A new empty schema, so that tests running at once never see each other's rows.
async fn fresh_schema(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to CITYHUB_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    let schema = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create a schema");
    schema
}

/// Nodes that start together on a new catalog migrate it once between them: the others
/// wait for the first's migration and find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(url) = postgres_url() else {
        return;
    };
    let schema = fresh_schema(&url).await;
    let separator = if url.contains('?') { "&" } else { "?" };
    let url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::open_url(&url).await.map(drop) })
        })
        .collect();
    for start in starts {
        start
            .await
            .expect("join")
            .expect("every node opens the catalog");
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let applied: i64 = client
        .query_one("SELECT count(*) FROM cityhub_migrations", &[])
        .await
        .expect("migrations")
        .get(0);
    assert_eq!(applied, crate::postgres::MIGRATIONS.len() as i64);
}

/// The two catalogs hold the same tables with the same columns: a migration added to one
/// backend and forgotten in the other fails here.
#[tokio::test]
async fn both_backends_have_the_same_tables_and_columns() {
    let Some((TestCatalog::Postgres(url), _store)) = open(Backend::Postgres).await else {
        return;
    };
    let Some((TestCatalog::Sqlite(dir), _sqlite)) = open(Backend::Sqlite).await else {
        panic!("SQLite always opens");
    };
    let conn = rusqlite::Connection::open(dir.path().join("catalog.db")).expect("open");
    let mut sqlite = std::collections::BTreeSet::new();
    // Names starting sqlite_ are SQLite's own bookkeeping (sqlite_sequence keeps the
    // AUTOINCREMENT counters), as cityhub_migrations is the PostgreSQL store's.
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .expect("tables")
        .query_map([], |row| row.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    for table in tables {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .expect("columns")
            .query_map([], |row| row.get(0))
            .expect("columns")
            .collect::<Result<_, _>>()
            .expect("columns");
        for column in columns {
            sqlite.insert((table.clone(), column));
        }
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'cityhub_migrations'",
            &[],
        )
        .await
        .expect("columns");
    let postgres: std::collections::BTreeSet<(String, String)> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "only in SQLite: {only_sqlite:?}; only in PostgreSQL: {only_postgres:?}"
    );
    assert!(sqlite.len() > 100, "{} columns", sqlite.len());
}

/// Runs each named test function (`async fn name(backend: Backend)`) once per backend, as
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::tests::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
