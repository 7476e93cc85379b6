//! The audit log: an append-only hash chain.
//!
//! Each event stores the hash of the one before it and its own hash over
//! its fields and that link. `audit_head` holds the last sequence number and
//! hash, so editing, deleting or reordering any event, the last included,
//! breaks the chain at a point `verify` can name.

use sqlx::FromRow;

use crate::sql::Sql;

use crate::{Conn, StoreError};

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    /// `success`, `denied` or `failure`.
    pub result: String,
    pub detail: String,
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    pub result: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    /// Matches actor or target.
    pub who: Option<String>,
    /// Matches a target that is the destination or a part of it.
    pub destination: Option<String>,
    pub action: Option<String>,
    pub after_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Ok { events: u64 },
    Broken { events: u64, seq: i64, reason: String },
}

fn chain_hash(e: &AuditRow) -> String {
    // A JSON array is an unambiguous encoding of the fields: no separator
    // in a field can make two different events hash alike.
    let fields = serde_json::json!([
        e.seq,
        e.time_ms,
        e.actor,
        e.action,
        e.target,
        e.source,
        e.result,
        e.detail,
        e.prev_hash
    ]);
    infra_auth::sha256_hex(fields.to_string().as_bytes())
}

/// Appends an event inside the caller's write transaction.
pub async fn append(c: &mut Conn, ev: NewAuditEvent, now_ms: i64) -> Result<AuditRow, StoreError> {
    let mut rows = append_batch(c, vec![ev], now_ms).await?;
    rows.pop().ok_or(StoreError::Random)
}

/// Appends several events in order with one read and one write of the
/// chain head and multi-row inserts (the connectors' request events come
/// in thousands a second).
pub async fn append_batch(c: &mut Conn, evs: Vec<NewAuditEvent>, now_ms: i64) -> Result<Vec<AuditRow>, StoreError> {
    if evs.is_empty() {
        return Ok(vec![]);
    }
    let n = i64::try_from(evs.len()).unwrap_or(i64::MAX);
    let (last, mut prev_hash): (i64, String) =
        sqlx::query_as("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
            .bind(n)
            .fetch_one(&mut *c)
            .await?;
    let mut rows = Vec::with_capacity(evs.len());
    for (seq, ev) in (last - n + 1..).zip(evs) {
        let mut row = AuditRow {
            seq,
            time_ms: now_ms,
            actor: ev.actor,
            action: ev.action,
            target: ev.target,
            source: ev.source,
            result: ev.result,
            detail: ev.detail,
            prev_hash: std::mem::take(&mut prev_hash),
            hash: String::new(),
        };
        row.hash = chain_hash(&row);
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev_hash)
        .execute(&mut *c)
        .await?;
    // 10 parameters a row. Small chunks: sqlx's SQLite driver looks each
    // `$n` up by name, which costs more per parameter the more there are
    // (profiled: with 50-row chunks that lookup was a quarter of the insert).
    for chunk in rows.chunks(8) {
        let mut q = Sql::new(
            "INSERT INTO audit_events (seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash) VALUES ",
        );
        for (k, r) in chunk.iter().enumerate() {
            q.push(if k == 0 { "(" } else { ", (" });
            q.int(r.seq).push(", ").int(r.time_ms);
            for v in [
                &r.actor,
                &r.action,
                &r.target,
                &r.source,
                &r.result,
                &r.detail,
                &r.prev_hash,
                &r.hash,
            ] {
                q.push(", ").text(v);
            }
            q.push(")");
        }
        q.execute(&mut *c).await?;
    }
    Ok(rows)
}

fn filter(q: &mut Sql, f: &AuditFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(t) = f.since_ms {
        q.push(" AND time_ms >= ").int(t);
    }
    if let Some(w) = &f.who {
        q.push(" AND (actor = ").text(w).push(" OR target = ").text(w).push(")");
    }
    if let Some(d) = &f.destination {
        // A name that is no resource has no parts: it matches only itself.
        match infra_core::Resource::parse(d) {
            Ok(r) => q.push(" AND ").covered_by("target", &r),
            Err(_) => q.push(" AND target = ").text(d),
        };
    }
    if let Some(a) = &f.action {
        q.push(" AND action = ").text(a);
    }
    if let Some(s) = f.after_seq {
        q.push(" AND seq > ").int(s);
    }
}

/// Events matching `f`, oldest first.
pub async fn list(c: &mut Conn, f: &AuditFilter, page: u32, limit: u32) -> Result<(Vec<AuditRow>, u64), StoreError> {
    let (l, o) = crate::limit_offset(page, limit);
    let mut q = Sql::new(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events",
    );
    filter(&mut q, f);
    q.push(" ORDER BY seq LIMIT ").int(l).push(" OFFSET ").int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM audit_events");
    filter(&mut q, f);
    Ok((rows, q.fetch_count(c).await?))
}

/// Walks the whole chain in order, in batches, and checks every link.
pub async fn verify(c: &mut Conn) -> Result<VerifyOutcome, StoreError> {
    const BATCH: i64 = 5000;
    let (head_seq, head_hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *c)
        .await?;
    let mut expected_seq = 1i64;
    let mut prev = "0".repeat(64);
    let mut events = 0u64;
    loop {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(expected_seq)
        .bind(BATCH)
        .fetch_all(&mut *c)
        .await?;
        let done = i64::try_from(rows.len()).unwrap_or(0) < BATCH;
        for r in rows {
            let broken = |reason: String| {
                Ok(VerifyOutcome::Broken {
                    events,
                    seq: r.seq,
                    reason,
                })
            };
            if r.seq != expected_seq {
                return Ok(VerifyOutcome::Broken {
                    events,
                    seq: expected_seq,
                    reason: format!(
                        "event {expected_seq} is missing (deleted?); the next event is {}",
                        r.seq
                    ),
                });
            }
            if r.prev_hash != prev {
                return broken(format!("event {} does not link to the event before it", r.seq));
            }
            if chain_hash(&r) != r.hash {
                return broken(format!(
                    "event {} was modified: its contents do not match its hash",
                    r.seq
                ));
            }
            prev = r.hash.clone();
            expected_seq += 1;
            events += 1;
        }
        if done {
            break;
        }
    }
    let last = expected_seq - 1;
    if last != head_seq {
        return Ok(VerifyOutcome::Broken {
            events,
            seq: last + 1,
            reason: format!("the log ends at event {last}, but {head_seq} events were written (deleted at the end?)"),
        });
    }
    if prev != head_hash {
        return Ok(VerifyOutcome::Broken {
            events,
            seq: last,
            reason: format!("event {last} does not match the recorded head of the chain"),
        });
    }
    Ok(VerifyOutcome::Ok { events })
}
