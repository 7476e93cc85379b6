//! Audit export cursors: how far each target has received the chain, and
//! the lease that lets one replica at a time ship it.

use crate::{Conn, StoreError};

/// Takes (or keeps) the lease on `target` for `owner` until `until`, if no
/// other replica holds a live one; returns the last sequence number the
/// target has acknowledged.
pub async fn claim(c: &mut Conn, target: &str, owner: &str, now: i64, until: i64) -> Result<Option<i64>, StoreError> {
    sqlx::query(
        "INSERT INTO audit_exports (target, last_seq, owner, lease_until) VALUES ($1, 0, '', 0) \
         ON CONFLICT (target) DO NOTHING",
    )
    .bind(target)
    .execute(&mut *c)
    .await?;
    let r = sqlx::query(
        "UPDATE audit_exports SET owner = $1, lease_until = $2 WHERE target = $3 AND (owner = $1 OR lease_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(target)
    .bind(now)
    .execute(&mut *c)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(None);
    }
    let seq: i64 = sqlx::query_scalar("SELECT last_seq FROM audit_exports WHERE target = $1")
        .bind(target)
        .fetch_one(c)
        .await?;
    Ok(Some(seq))
}

/// Records that `target` has everything up to `seq`, if `owner` still
/// holds its lease (`false` otherwise: another replica took over, and its
/// own cursor stands).
pub async fn advance(c: &mut Conn, target: &str, owner: &str, seq: i64) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE audit_exports SET last_seq = $1 WHERE target = $2 AND owner = $3 AND last_seq < $1")
        .bind(seq)
        .bind(target)
        .bind(owner)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Every target's cursor: (target, last sequence number, lease end).
pub async fn cursors(c: &mut Conn) -> Result<Vec<(String, i64, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT target, last_seq, lease_until FROM audit_exports ORDER BY target")
            .fetch_all(c)
            .await?,
    )
}
