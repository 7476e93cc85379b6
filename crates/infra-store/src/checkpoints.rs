//! Signed checkpoints of the audit chain (see migration 0010): where the
//! archived part ends and the table's part begins, and how far a
//! verification got. The signature (`token`) is made and checked by the
//! server; the store keeps it.

use sqlx::FromRow;

use crate::{Conn, StoreError};

/// Events up to `seq` were archived and removed from the table.
pub const ARCHIVE: &str = "archive";
/// A verification found the chain intact up to `seq`.
pub const VERIFIED: &str = "verified";

#[derive(Debug, Clone, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The last event it covers.
    pub seq: i64,
    pub kind: String,
    /// The first event it covers (an archive's first; 1 for `verified`).
    pub first_seq: i64,
    /// The hash of event `seq`.
    pub hash: String,
    /// The archive file's name and SHA-256 (`archive` only).
    pub archive: Option<String>,
    pub archive_sha256: Option<String>,
    pub created_at: i64,
    /// The signed form (a JWT over the fields above).
    pub token: String,
}

pub async fn insert(c: &mut Conn, cp: &Checkpoint) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, kind, first_seq, hash, archive, archive_sha256, created_at, token) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(cp.seq)
    .bind(&cp.kind)
    .bind(cp.first_seq)
    .bind(&cp.hash)
    .bind(&cp.archive)
    .bind(&cp.archive_sha256)
    .bind(cp.created_at)
    .bind(&cp.token)
    .execute(c)
    .await?;
    Ok(())
}

/// The checkpoint of `kind` with the highest `seq`.
pub async fn latest(c: &mut Conn, kind: &str) -> Result<Option<Checkpoint>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, kind, first_seq, hash, archive, archive_sha256, created_at, token FROM audit_checkpoints \
         WHERE kind = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(kind)
    .fetch_optional(c)
    .await?)
}

/// Every archive checkpoint, oldest first.
pub async fn archives(c: &mut Conn) -> Result<Vec<Checkpoint>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, kind, first_seq, hash, archive, archive_sha256, created_at, token FROM audit_checkpoints \
         WHERE kind = $1 ORDER BY seq",
    )
    .bind(ARCHIVE)
    .fetch_all(c)
    .await?)
}

/// Drops the `verified` checkpoints up to `seq` (they only say where to
/// start next time; a newer one is about to replace them).
pub async fn forget_verified(c: &mut Conn, seq: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM audit_checkpoints WHERE kind = $1 AND seq <= $2")
        .bind(VERIFIED)
        .bind(seq)
        .execute(c)
        .await?;
    Ok(())
}

/// Deletes the events up to `seq` (archived first, by the caller).
pub async fn prune_events(c: &mut Conn, seq: i64) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
        .bind(seq)
        .execute(c)
        .await?;
    Ok(r.rows_affected())
}
