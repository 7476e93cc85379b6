//! Session recordings: what each session was, the pieces of its text
//! while it arrives, and where it stands (`live` while pieces arrive,
//! `stored` once in the recording store with its digest in the audit log,
//! `deleted` once retention removed it).

use sqlx::FromRow;

use crate::sql::Sql;
use crate::{Conn, StoreError, limit_offset};

#[derive(Debug, Clone, FromRow)]
pub struct RecordingRow {
    pub id: String,
    pub connector: String,
    pub kind: String,
    pub user_email: String,
    pub destination: String,
    pub target: String,
    pub command: String,
    pub source: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub exit: String,
    pub truncated: i64,
    pub size: i64,
    pub state: String,
    pub sha256: String,
    pub audit_seq: Option<i64>,
}

const COLS: &str = "id, connector, kind, user_email, destination, target, command, source, started_ms, ended_ms, \
     bytes_in, bytes_out, exit, truncated, size, state, sha256, audit_seq";

pub const LIVE: &str = "live";
pub const STORED: &str = "stored";
pub const DELETED: &str = "deleted";

pub async fn get(c: &mut Conn, id: &str) -> Result<Option<RecordingRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM recordings WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(c)
    .await?)
}

/// A new recording, with nothing received yet.
pub async fn insert(c: &mut Conn, r: &RecordingRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO recordings (id, connector, kind, user_email, destination, target, command, source, started_ms, \
         ended_ms, bytes_in, bytes_out, exit, truncated, size, state, sha256, audit_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, 0, 0, '', 0, 0, $10, '', NULL) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&r.id)
    .bind(&r.connector)
    .bind(&r.kind)
    .bind(&r.user_email)
    .bind(&r.destination)
    .bind(&r.target)
    .bind(&r.command)
    .bind(&r.source)
    .bind(r.started_ms)
    .bind(LIVE)
    .execute(c)
    .await?;
    Ok(())
}

/// How a session ended, as its connector said.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub ended_ms: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub exit: String,
    pub truncated: bool,
    /// What the session was on and ran, once known (an SSH login is known
    /// only after the recording began); a value already kept stays.
    pub target: String,
    pub command: String,
}

/// Appends `data` at byte `at`, if the recording has exactly `at` bytes
/// and is live (a piece that raced another is refused: `false`), in one
/// transaction.
pub async fn append(c: &mut Conn, id: &str, at: i64, data: &str, end: &Ending) -> Result<bool, StoreError> {
    use sqlx::Connection as _;
    let mut tx = c.begin().await?;
    let n = sqlx::query(
        "UPDATE recordings SET size = size + $1, ended_ms = $2, bytes_in = $3, bytes_out = $4, exit = $5, \
         truncated = $6, target = CASE WHEN target = '' THEN $10 ELSE target END, \
         command = CASE WHEN command = '' THEN $11 ELSE command END \
         WHERE id = $7 AND size = $8 AND state = $9",
    )
    .bind(data.len() as i64)
    .bind(end.ended_ms)
    .bind(end.bytes_in)
    .bind(end.bytes_out)
    .bind(&end.exit)
    .bind(i64::from(end.truncated))
    .bind(id)
    .bind(at)
    .bind(LIVE)
    .bind(&end.target)
    .bind(&end.command)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    if !data.is_empty() {
        sqlx::query("INSERT INTO recording_pieces (recording_id, at, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(at)
            .bind(data)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The text received from byte `from` on: the pieces from the one that
/// holds `from`, and the byte that piece starts at.
pub async fn pieces_from(c: &mut Conn, id: &str, from: i64) -> Result<(i64, String), StoreError> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT at, data FROM recording_pieces WHERE recording_id = $1 AND at >= \
         (SELECT COALESCE(MAX(at), 0) FROM recording_pieces WHERE recording_id = $1 AND at <= $2) ORDER BY at",
    )
    .bind(id)
    .bind(from)
    .fetch_all(c)
    .await?;
    let start = rows.first().map_or(from, |r| r.0);
    Ok((start, rows.into_iter().map(|r| r.1).collect()))
}

/// The text received, in order; the whole recording once it has ended.
pub async fn pieces(c: &mut Conn, id: &str) -> Result<String, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT data FROM recording_pieces WHERE recording_id = $1 ORDER BY at")
        .bind(id)
        .fetch_all(c)
        .await?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}

/// The recording is in the store, its digest in audit event `audit_seq`:
/// its pieces go.
pub async fn mark_stored(c: &mut Conn, id: &str, sha256: &str, audit_seq: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE recordings SET state = $1, sha256 = $2, audit_seq = $3 WHERE id = $4")
        .bind(STORED)
        .bind(sha256)
        .bind(audit_seq)
        .bind(id)
        .execute(&mut *c)
        .await?;
    sqlx::query("DELETE FROM recording_pieces WHERE recording_id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Which recordings a listing shows.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub user: Option<String>,
    pub destination: Option<String>,
    pub kind: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only those still arriving (`true`) or only complete ones (`false`).
    pub live: Option<bool>,
}

/// Newest first, never the deleted ones.
pub async fn list(
    c: &mut Conn,
    f: &RecordingFilter,
    page: u32,
    limit: u32,
) -> Result<(Vec<RecordingRow>, u64), StoreError> {
    let (l, o) = limit_offset(page, limit);
    let mut q = Sql::new(&format!("SELECT {COLS} FROM recordings"));
    filter(&mut q, f);
    q.push(" ORDER BY started_ms DESC, id LIMIT ")
        .int(l)
        .push(" OFFSET ")
        .int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM recordings");
    filter(&mut q, f);
    Ok((rows, q.fetch_count(c).await?))
}

fn filter(q: &mut Sql, f: &RecordingFilter) {
    q.push(" WHERE state <> ").text(DELETED);
    if let Some(u) = &f.user {
        q.push(" AND user_email = ").text(u);
    }
    if let Some(d) = &f.destination {
        q.push(" AND destination = ").text(d);
    }
    if let Some(k) = &f.kind {
        q.push(" AND kind = ").text(k);
    }
    if let Some(t) = f.since_ms {
        q.push(" AND started_ms >= ").int(t);
    }
    if let Some(t) = f.until_ms {
        q.push(" AND started_ms < ").int(t);
    }
    match f.live {
        Some(true) => q.push(" AND state = ").text(LIVE),
        Some(false) => q.push(" AND state = ").text(STORED),
        None => q,
    };
}

/// Every recording not deleted: (id, started, size, live), for retention.
pub async fn retention_view(c: &mut Conn) -> Result<Vec<(String, i64, i64, bool)>, StoreError> {
    let rows: Vec<(String, i64, i64, String)> =
        sqlx::query_as("SELECT id, started_ms, size, state FROM recordings WHERE state <> $1")
            .bind(DELETED)
            .fetch_all(c)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, started, size, state)| (id, started, size, state == LIVE))
        .collect())
}

/// A stored recording is deleted (by retention); `false` if it was not
/// stored (another replica deleted it first).
pub async fn mark_deleted(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE recordings SET state = $1 WHERE id = $2 AND state = $3")
        .bind(DELETED)
        .bind(id)
        .bind(STORED)
        .execute(c)
        .await?
        .rows_affected();
    Ok(n > 0)
}
