//! Just-in-time access: policies, requests, reviews and the receivers of
//! request events. The rules live in `infra_core::request`; this stores
//! what they decided.

use sqlx::FromRow;

use crate::sql::Sql;
use crate::{Conn, StoreError, limit_offset};

#[derive(Debug, Clone, FromRow)]
pub struct PolicyRow {
    pub name: String,
    /// The policy as JSON (`infra_core::request::Policy`).
    pub doc: String,
    pub created_at: i64,
    pub created_by: String,
}

pub async fn put_policy(c: &mut Conn, p: &PolicyRow) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO access_policies (name, doc, created_at, created_by) VALUES ($1, $2, $3, $4)")
        .bind(&p.name)
        .bind(&p.doc)
        .bind(p.created_at)
        .bind(&p.created_by)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn policies(c: &mut Conn) -> Result<Vec<PolicyRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT name, doc, created_at, created_by FROM access_policies ORDER BY name")
            .fetch_all(c)
            .await?,
    )
}

pub async fn delete_policy(c: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM access_policies WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

#[derive(Debug, Clone, FromRow)]
pub struct RequestRow {
    pub id: String,
    pub requester_id: String,
    pub requester: String,
    pub policy: String,
    /// JSON list of `infra_core::request::Ask`.
    pub asks: String,
    pub duration_ms: i64,
    pub reason: String,
    pub state: String,
    pub approvals_needed: i64,
    pub break_glass: i64,
    pub created_at: i64,
    pub review_by: i64,
    pub decided_at: Option<i64>,
    pub grants_until: Option<i64>,
    /// JSON list of grant ids.
    pub grant_ids: String,
}

const REQUEST_COLS: &str = "id, requester_id, requester, policy, asks, duration_ms, reason, state, approvals_needed, \
     break_glass, created_at, review_by, decided_at, grants_until, grant_ids";

pub async fn insert_request(c: &mut Conn, r: &RequestRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_requests (id, requester_id, requester, policy, asks, duration_ms, reason, state, \
         approvals_needed, break_glass, created_at, review_by, decided_at, grants_until, grant_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&r.id)
    .bind(&r.requester_id)
    .bind(&r.requester)
    .bind(&r.policy)
    .bind(&r.asks)
    .bind(r.duration_ms)
    .bind(&r.reason)
    .bind(&r.state)
    .bind(r.approvals_needed)
    .bind(r.break_glass)
    .bind(r.created_at)
    .bind(r.review_by)
    .bind(r.decided_at)
    .bind(r.grants_until)
    .bind(&r.grant_ids)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn request(c: &mut Conn, id: &str) -> Result<Option<RequestRow>, StoreError> {
    let mut q = Sql::new(&format!("SELECT {REQUEST_COLS} FROM access_requests WHERE id = "));
    q.text(id);
    Ok(q.fetch_all(c).await?.into_iter().next())
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester_id: Option<String>,
    pub state: Option<String>,
}

/// Requests, newest first.
pub async fn requests(
    c: &mut Conn,
    f: &RequestFilter,
    page: u32,
    limit: u32,
) -> Result<(Vec<RequestRow>, u64), StoreError> {
    let filter = |q: &mut Sql| {
        q.push(" WHERE 1 = 1");
        if let Some(r) = &f.requester_id {
            q.push(" AND requester_id = ").text(r);
        }
        if let Some(s) = &f.state {
            q.push(" AND state = ").text(s);
        }
    };
    let (l, o) = limit_offset(page, limit);
    let mut q = Sql::new(&format!("SELECT {REQUEST_COLS} FROM access_requests"));
    filter(&mut q);
    q.push(" ORDER BY created_at DESC, id LIMIT ")
        .int(l)
        .push(" OFFSET ")
        .int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM access_requests");
    filter(&mut q);
    Ok((rows, q.fetch_count(c).await?))
}

/// Moves request `id` from `from` to `to` (with when it was decided and,
/// once approved, its grants): false if it was not in `from` any more, so
/// of two deciders racing, exactly one wins.
pub async fn set_state(
    c: &mut Conn,
    id: &str,
    from: &str,
    to: &str,
    at: i64,
    grants: Option<(i64, &str)>,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE access_requests SET state = $1, decided_at = COALESCE(decided_at, $2), \
         grants_until = COALESCE($3, grants_until), grant_ids = COALESCE($4, grant_ids) \
         WHERE id = $5 AND state = $6",
    )
    .bind(to)
    .bind(at)
    .bind(grants.map(|g| g.0))
    .bind(grants.map(|g| g.1.to_owned()))
    .bind(id)
    .bind(from)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Pending requests not reviewed by `now`, and approved ones whose time is
/// up: (id, state).
pub async fn due(c: &mut Conn, now: i64) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, state FROM access_requests WHERE (state = 'pending' AND review_by <= $1) \
         OR (state = 'approved' AND grants_until <= $1) ORDER BY created_at LIMIT 500",
    )
    .bind(now)
    .fetch_all(c)
    .await?)
}

#[derive(Debug, Clone, FromRow)]
pub struct ReviewRow {
    pub request_id: String,
    pub reviewer_id: String,
    pub reviewer: String,
    pub decision: String,
    pub reason: String,
    pub at: i64,
}

/// Records a review; `Conflict` if this reviewer already reviewed it.
pub async fn add_review(c: &mut Conn, r: &ReviewRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO request_reviews (request_id, reviewer_id, reviewer, decision, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&r.request_id)
    .bind(&r.reviewer_id)
    .bind(&r.reviewer)
    .bind(&r.decision)
    .bind(&r.reason)
    .bind(r.at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn reviews(c: &mut Conn, request_id: &str) -> Result<Vec<ReviewRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT request_id, reviewer_id, reviewer, decision, reason, at FROM request_reviews \
         WHERE request_id = $1 ORDER BY at",
    )
    .bind(request_id)
    .fetch_all(c)
    .await?)
}

#[derive(Debug, Clone, FromRow)]
pub struct WebhookRow {
    pub name: String,
    pub url: String,
    pub secret_sealed: String,
    /// `json` or `slack`.
    pub format: String,
    pub last_seq: i64,
    pub failures: i64,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

const WEBHOOK_COLS: &str = "name, url, secret_sealed, format, last_seq, failures, next_at, last_error, created_at";

pub async fn put_webhook(c: &mut Conn, w: &WebhookRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO request_webhooks (name, url, secret_sealed, format, last_seq, failures, next_at, last_error, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, 0, NULL, $6)",
    )
    .bind(&w.name)
    .bind(&w.url)
    .bind(&w.secret_sealed)
    .bind(&w.format)
    .bind(w.last_seq)
    .bind(w.created_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn webhook(c: &mut Conn, name: &str) -> Result<Option<WebhookRow>, StoreError> {
    let q = format!("SELECT {WEBHOOK_COLS} FROM request_webhooks WHERE name = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q))
        .bind(name)
        .fetch_optional(c)
        .await?)
}

pub async fn webhooks(c: &mut Conn) -> Result<Vec<WebhookRow>, StoreError> {
    let q = format!("SELECT {WEBHOOK_COLS} FROM request_webhooks ORDER BY name");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(c).await?)
}

pub async fn delete_webhook(c: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM request_webhooks WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Takes webhook `name` for delivery until `until` if it is due at `now`
/// and nobody holds it: true for exactly one replica.
pub async fn lease_webhook(c: &mut Conn, name: &str, now: i64, until: i64) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE request_webhooks SET next_at = $1 WHERE name = $2 AND next_at <= $3")
        .bind(until)
        .bind(name)
        .bind(now)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// After a delivery round: delivered up to `last_seq`; on failure, the
/// error and when to try again.
pub async fn webhook_done(
    c: &mut Conn,
    name: &str,
    last_seq: i64,
    failed: Option<(&str, i64)>,
    now: i64,
) -> Result<(), StoreError> {
    match failed {
        None => {
            sqlx::query(
                "UPDATE request_webhooks SET last_seq = CASE WHEN last_seq > $1 THEN last_seq ELSE $1 END, failures = 0, \
                 last_error = NULL, next_at = $2 WHERE name = $3",
            )
            .bind(last_seq)
            .bind(now)
            .bind(name)
            .execute(c)
            .await?;
        }
        Some((error, retry_at)) => {
            sqlx::query(
                "UPDATE request_webhooks SET last_seq = CASE WHEN last_seq > $1 THEN last_seq ELSE $1 END, \
                 failures = failures + 1, last_error = $2, next_at = $3 WHERE name = $4",
            )
            .bind(last_seq)
            .bind(error)
            .bind(retry_at)
            .bind(name)
            .execute(c)
            .await?;
        }
    }
    Ok(())
}
