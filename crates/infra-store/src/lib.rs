//! Persistence on SQLite (embedded default) or PostgreSQL (several
//! replicas), through one code path.
//!
//! Queries are written once in the SQL both engines share and run through
//! sqlx's `Any` driver; the schema uses only types both understand
//! (TEXT, BIGINT), ids are made by the application and times are unix
//! milliseconds. Migrations run at start on both backends.
//!
//! *Architecture Invariant:* nothing a replica needs lives only in memory.
//! Writers go through [`Store::write`], which locks the audit chain head
//! first, so concurrent writers (even on other replicas) are serialised
//! and every change is audited in the same transaction that makes it.

pub mod audit;
pub mod checkpoints;
pub mod connectors;
mod error;
pub mod export;
pub mod identity;
pub mod keys;
pub mod providers;
pub mod recordings;
pub mod requests;
mod sql;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};

pub use audit::{AuditFilter, AuditRow, NewAuditEvent, RequestStory, VerifyOutcome};
pub use error::StoreError;
pub use identity::{GrantFilter, GrantRow, GroupRow, UserRow};
pub use keys::{AccessKeyRow, KeyKind, LoginFailure, SigningKeyRow};
pub use sqlx::AnyConnection as Conn;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A write transaction holding the writers' lock. Dropped without
/// [`WriteTx::commit`], it rolls back.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
}

impl Store {
    /// Connects and runs migrations. `url` is `sqlite://PATH` or
    /// `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl);
        };
        let opts: AnyConnectOptions = url.parse().map_err(StoreError::Connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer;
                        // a busy timeout makes writers queue instead of fail.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Starts a write transaction and takes the writers' lock.
    pub async fn write(&self) -> Result<WriteTx, StoreError> {
        // SQLite: IMMEDIATE takes the write lock now, so a transaction that
        // reads before it writes cannot fail half-way with SQLITE_BUSY.
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let mut tx = self.pool.begin_with(begin).await?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(WriteTx { tx })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new random row id.
pub fn new_id() -> Result<String, StoreError> {
    infra_auth::random_token(16).map_err(|_| StoreError::Random)
}

/// `LIMIT`/`OFFSET` from a 1-based page.
pub(crate) fn limit_offset(page: u32, limit: u32) -> (i64, i64) {
    let limit = i64::from(limit.max(1));
    (limit, i64::from(page.max(1) - 1) * limit)
}
