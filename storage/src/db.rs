//! The connection pool: SQLite (WAL) or PostgreSQL behind one `sqlx::Any` pool.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    sqlite::SqliteConnectOptions,
};

use crate::error::{Result, StorageError};

/// Which database engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database handle shared by every repository.
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens the pool for `url` (`sqlite://…` or `postgres://…`), without migrating: see
    /// [`Db::connect`].
    pub(crate) async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        if backend == Backend::Sqlite {
            private_sqlite_file(url)?;
        }
        let opts = AnyConnectOptions::from_str(url).map_err(StorageError::Database)?;
        let max = if backend == Backend::Sqlite { 8 } else { 16 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // FULL: a commit is on disk (in the WAL) before it is acknowledged.
                        conn.execute(
                            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA synchronous = FULL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        Ok(Db { pool, backend })
    }

    /// The SQLite URL of the embedded database inside `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("veza.db").display())
    }

    /// The engine behind this pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes waits for other writers instead
    /// of failing with "database is locked" when it upgrades.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the SQLite file 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm`
/// files the database file's mode), and tightens an existing database and its companions: they
/// hold password hashes and the deployment's signing seed.
fn private_sqlite_file(url: &str) -> Result<()> {
    let opts = SqliteConnectOptions::from_str(url).map_err(StorageError::Database)?;
    let path = opts.get_filename();
    let in_memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || path.to_string_lossy().starts_with("file:sqlx-in-memory");
    if in_memory || path.as_os_str().is_empty() {
        return Ok(());
    }
    let io = |e: std::io::Error| StorageError::Config(format!("{}: {e}", path.display()));
    if url.contains("mode=rwc") {
        crate::private::touch(path).map_err(io)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        crate::private::tighten(Path::new(&p), crate::private::FILE_MODE).map_err(io)?;
    }
    Ok(())
}

fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Backend::Postgres)
    } else {
        Err(StorageError::Config(format!(
            "unsupported database URL scheme in {:?}: use sqlite:// or postgres://",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
