//! Test support: a fresh, empty database per test on either backend.
//!
//! SQLite: a file in a temporary directory. PostgreSQL: a schema of its own
//! in the database `KEYWARD_TEST_POSTGRES_URL` names (dropped afterwards),
//! selected through the URL (`options[search_path]=…`, and the schema as
//! `application_name`), so the server under test needs nothing special.
//! Without that variable the test run starts a throwaway cluster of its own
//! ([`run`]); where PostgreSQL is not installed a PostgreSQL test skips,
//! counted in the run's last line, except under `CI=true`, where it fails.

use sqlx::Connection;

pub mod run;

/// The backends the conformance suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const POSTGRES_URL_VAR: &str = "KEYWARD_TEST_POSTGRES_URL";

/// A fresh database; removed on drop.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    schema: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new empty database, or `None` (after printing why) when the backend
    /// is not available here. Panics under `CI=true` instead of skipping.
    pub async fn new(backend: Backend, test: &str) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("keyward.db").display());
                Some(TestDb { url, backend, schema: None, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let base = postgres_base_url(test)?;
                let schema = format!("kwt_{}", keyward_core::ids::new_id("s").to_lowercase().replace('-', "_"));
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} does not answer: {e}"));
                sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.expect("CREATE SCHEMA");
                let _ = conn.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options[search_path]={schema}&application_name={schema}");
                Some(TestDb { url, backend, schema: Some((base, schema)), _dir: None })
            }
        }
    }
}

/// The base PostgreSQL URL for tests: `KEYWARD_TEST_POSTGRES_URL`, or the
/// test run's throwaway cluster (see [`run`]); `None` after recording why
/// not (a failure under `CI=true`).
pub fn postgres_base_url(test: &str) -> Option<String> {
    provided(run::Piece::Postgres, test, POSTGRES_URL_VAR, run::postgres)
}

/// The Redis for tests: `KEYWARD_TEST_REDIS_URL`, or the test run's
/// throwaway `redis-server`; like [`postgres_base_url`] otherwise.
pub fn redis_url(test: &str) -> Option<String> {
    provided(run::Piece::Redis, test, "KEYWARD_TEST_REDIS_URL", run::redis)
}

fn provided(piece: run::Piece, test: &str, var: &str, provision: fn() -> Result<String, String>) -> Option<String> {
    if let Ok(url) = std::env::var(var)
        && !url.is_empty()
    {
        run::ran(piece, test, var);
        return Some(url);
    }
    match provision() {
        Ok(url) => {
            run::ran(piece, test, "a throwaway server");
            Some(url)
        }
        Err(why) => {
            run::skipped(piece, test, &format!("{var} is unset and {why}"));
            None
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else { return };
        // Drop may run inside or outside a runtime: use a thread of its own.
        // While it waits, the test's runtime is blocked, so a server of the
        // test still running on it cannot finish an open transaction: end
        // the test's own connections (named by the schema) first, or the
        // DROP would wait on their locks for ever.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                let own = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                           WHERE application_name = $1 AND pid <> pg_backend_pid()";
                sqlx::query(own).bind(&schema).execute(&mut conn).await.ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// Runs raw SQL statements, in order, on the PostgreSQL database `url`
/// names, as someone with direct database access would (tests that tamper
/// with rows behind keyward's back). For SQLite, tamper from another
/// process, as such a person would: a second connection inside the
/// server's own process shares its file locks.
pub async fn execute(url: &str, statements: &[&str]) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
    for s in statements {
        sqlx::query(s).execute(&mut conn).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let _ = conn.close().await;
}
