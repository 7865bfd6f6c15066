//! Fresh databases for tests: the same suite runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL comes from `AGENTRIPE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test gets a database of its own, dropped by nobody (they are cheap and named for their test).
//! When PostgreSQL cannot be reached the PostgreSQL half is skipped with a loud message, except under
//! `CI=true`, where it fails.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AnyConnection, Connection};

use crate::Store;

/// The engines every storage test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("agentripe_{}_{}_{n}", &clean[..clean.len().min(30)], std::process::id())
}

/// The database URL of a fresh database for `label`, or `None` when PostgreSQL is unavailable outside CI.
pub async fn fresh_database_url(engine: Engine, label: &str) -> Option<String> {
    let name = unique_name(label);
    match engine {
        Engine::Sqlite => {
            let dir = std::env::temp_dir().join("agentripe-tests");
            std::fs::create_dir_all(&dir).expect("temporary directory");
            Some(format!("sqlite://{}", dir.join(format!("{name}.db")).display()))
        }
        Engine::Postgres => {
            sqlx::any::install_default_drivers();
            let admin = std::env::var("AGENTRIPE_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let mut connection = match AnyConnection::connect(&admin).await {
                Ok(connection) => connection,
                Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("PostgreSQL is required under CI but {admin} is unreachable: {error}")
                }
                Err(error) => {
                    eprintln!(
                        "\n*** SKIPPING the PostgreSQL half of {label}: {admin} is unreachable ({error}) ***\n"
                    );
                    return None;
                }
            };
            let create = format!("CREATE DATABASE {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut connection)
                .await
                .expect("create test database");
            let (base, _) = admin.rsplit_once('/').expect("a database URL ends in /DATABASE");
            Some(format!("{base}/{name}"))
        }
    }
}

/// A fresh, migrated store on `engine`, or `None` when PostgreSQL is unavailable outside CI.
pub async fn fresh_store(engine: Engine, label: &str) -> Option<Store> {
    let url = fresh_database_url(engine, label).await?;
    Some(Store::connect(&url).await.expect("open the test database"))
}

/// A fresh store as an upgrade leaves it: its database is migrated up to migration `version`, given
/// `rows` (raw SQL in that version's schema), then opened as usual, which runs the later migrations
/// over them. For tests of a migration's backfill. `None` when PostgreSQL is unavailable outside CI.
pub async fn store_upgraded_from(
    engine: Engine,
    label: &str,
    version: i64,
    rows: &'static str,
) -> Option<Store> {
    let url = fresh_database_url(engine, label).await?;
    let (earlier, migrator) = Store::open(&url).await.expect("open the test database");
    migrator.run_to(version, earlier.pool()).await.expect("migrate the test database part of the way");
    execute(&earlier, rows).await;
    earlier.pool().close().await;
    Some(Store::connect(&url).await.expect("upgrade the test database"))
}

/// Runs raw SQL against a store: for tests that put the database in a state only a crash or a bug
/// could leave, to show the server recovers from it.
pub async fn execute(store: &Store, sql: &'static str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(store.pool()).await.expect("test SQL");
}

/// Transactions committed so far in a PostgreSQL store's database: each statement outside an explicit
/// transaction is one. A connection publishes its counts once idle, within ten seconds: wait that long
/// after the work to be counted.
pub async fn postgres_transactions(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(store.pool())
        .await
        .expect("PostgreSQL's statistics")
}

/// A PostgreSQL table locked until released, on a connection of its own: for tests of what the server
/// does while one of its statements waits.
#[derive(Debug)]
pub struct TableLock {
    holder: AnyConnection,
    watcher: AnyConnection,
}

impl TableLock {
    /// Holds back every write to `table` (`EXCLUSIVE` mode); reads go on.
    pub async fn writes(url: &str, table: &str) -> Self {
        Self::take(url, table, "EXCLUSIVE").await
    }

    /// Holds back every statement on `table`, reads included (`ACCESS EXCLUSIVE` mode).
    pub async fn everything(url: &str, table: &str) -> Self {
        Self::take(url, table, "ACCESS EXCLUSIVE").await
    }

    async fn take(url: &str, table: &str, mode: &str) -> Self {
        sqlx::any::install_default_drivers();
        let mut holder = AnyConnection::connect(url).await.expect("connect to lock a table");
        let lock = format!("BEGIN; LOCK TABLE {table} IN {mode} MODE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(lock)).execute(&mut holder).await.expect("lock the table");
        let watcher = AnyConnection::connect(url).await.expect("connect to watch the lock");
        Self { holder, watcher }
    }

    /// Whether a statement that starts with `statement` waits for a lock in this database now.
    pub async fn blocks(&mut self, statement: &str) -> bool {
        self.on_blocked("COUNT(*)", statement).await > 0
    }

    /// Ends the connections whose statement starting with `statement` waits for a lock, as a database
    /// restarting or failing over would; returns how many it ended.
    pub async fn terminate_blocked(&mut self, statement: &str) -> i64 {
        self.on_blocked("COUNT(*) FILTER (WHERE pg_terminate_backend(pid))", statement).await
    }

    /// `aggregate` over the activity of this database's statements starting with `statement` that wait
    /// for a lock.
    async fn on_blocked(&mut self, aggregate: &str, statement: &str) -> i64 {
        let query = format!(
            "SELECT {aggregate} FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND starts_with(query, $1)"
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .bind(statement)
            .fetch_one(&mut self.watcher)
            .await
            .expect("read activity")
    }

    /// Releases the lock.
    pub async fn release(mut self) {
        sqlx::raw_sql("COMMIT").execute(&mut self.holder).await.expect("release the lock");
    }
}
