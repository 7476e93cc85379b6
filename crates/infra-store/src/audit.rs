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

#[derive(Debug, Clone, FromRow, serde::Serialize, serde::Deserialize)]
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
    pub result: Option<String>,
    /// Events before this time.
    pub until_ms: Option<i64>,
    pub after_seq: Option<i64>,
    /// An access request's story: events whose detail starts `request=ID`,
    /// and the sessions its end cut.
    pub request: Option<RequestStory>,
    pub newest_first: bool,
}

/// What belongs to an access request's story.
#[derive(Debug, Clone, Default)]
pub struct RequestStory {
    /// The store's id (letters and digits only, so never a `LIKE` pattern).
    pub id: String,
    /// Once granted: the requester, the destinations it gave, and the time
    /// its grants held (a cut of one of their sessions then belongs to it).
    pub granted: Option<(String, Vec<String>, i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Intact up to the recorded head, event `last` with hash `last_hash`.
    Ok {
        events: u64,
        last: i64,
        last_hash: String,
    },
    Broken {
        events: u64,
        seq: i64,
        reason: String,
    },
}

fn chain_hash(e: &AuditRow) -> String {
    let mut buf = Vec::with_capacity(256);
    hash_input(&mut buf, e);
    infra_auth::sha256_hex(&buf)
}

/// What an event's hash covers: its fields and the link to the event
/// before it, as a compact JSON array. An array is an unambiguous
/// encoding: no separator in a field can make two different events hash
/// alike. (The bytes are those of `serde_json::json!([..]).to_string()`,
/// which chains written before this function existed were hashed over.)
fn hash_input(buf: &mut Vec<u8>, e: &AuditRow) {
    let fields = (
        e.seq,
        e.time_ms,
        &e.actor,
        &e.action,
        &e.target,
        &e.source,
        &e.result,
        &e.detail,
        &e.prev_hash,
    );
    // Serialising integers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &fields);
}

/// Appends an event inside the caller's write transaction.
pub async fn append(c: &mut Conn, ev: NewAuditEvent, now_ms: i64) -> Result<AuditRow, StoreError> {
    let mut rows = append_batch(c, vec![ev], now_ms).await?;
    rows.pop().ok_or(StoreError::Random)
}

/// Appends several events in order with one read and one write of the
/// chain head and one insert (the connectors' request events come in tens
/// of thousands a second).
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
    // The whole batch goes to the database as one JSON array of rows: one
    // statement and one parameter, however many events. Each row is the
    // hash's input with the hash appended, so each event is encoded once.
    let mut batch = Vec::with_capacity(evs.len() * 320);
    batch.push(b'[');
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
        if batch.len() > 1 {
            batch.push(b',');
        }
        let start = batch.len();
        hash_input(&mut batch, &row);
        row.hash = infra_auth::sha256_hex(&batch[start..]);
        // `[fields…, prev_hash]` becomes `[fields…, prev_hash, hash]`.
        batch.pop();
        batch.extend_from_slice(b",\"");
        batch.extend_from_slice(row.hash.as_bytes());
        batch.extend_from_slice(b"\"]");
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    batch.push(b']');
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev_hash)
        .execute(&mut *c)
        .await?;
    let batch = String::from_utf8(batch).map_err(|_| StoreError::Random)?;
    sqlx::query(INSERT_BATCH[usize::from(is_postgres(c))])
        .bind(batch)
        .execute(&mut *c)
        .await?;
    Ok(rows)
}

/// One insert for a batch: a JSON array of `[seq, time_ms, actor, action,
/// target, source, result, detail, prev_hash, hash]` rows, taken apart by
/// the database: SQLite's `jsonb_each` and PostgreSQL's
/// `jsonb_array_elements`, whose rows stay in the binary form, so each
/// field is found without parsing text again (the `json` forms parsed
/// every row once per field; measured).
const INSERT_BATCH: [&str; 2] = [
    "INSERT INTO audit_events (seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, \
     value ->> 7, value ->> 8, value ->> 9 FROM jsonb_each($1)",
    "INSERT INTO audit_events (seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash) \
     SELECT (e ->> 0)::bigint, (e ->> 1)::bigint, e ->> 2, e ->> 3, e ->> 4, e ->> 5, e ->> 6, \
     e ->> 7, e ->> 8, e ->> 9 FROM jsonb_array_elements($1::jsonb) AS e",
];

fn is_postgres(c: &Conn) -> bool {
    c.backend_name().eq_ignore_ascii_case("postgresql")
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
    if let Some(r) = &f.result {
        q.push(" AND result = ").text(r);
    }
    if let Some(t) = f.until_ms {
        q.push(" AND time_ms < ").int(t);
    }
    if let Some(s) = f.after_seq {
        q.push(" AND seq > ").int(s);
    }
    if let Some(story) = &f.request {
        if !story.id.chars().all(|c| c.is_ascii_alphanumeric()) {
            // Never "no filter": an id that cannot be one matches nothing.
            q.push(" AND 1 = 0");
            return;
        }
        let tag = format!("request={}", story.id);
        q.push(" AND (detail = ")
            .text(&tag)
            .push(" OR detail LIKE ")
            .text(&format!("{tag} %"));
        if let Some((user, dests, from, to)) = &story.granted {
            q.push(" OR (actor = ")
                .text(user)
                .push(" AND SUBSTR(detail, 1, 12) = ")
                .text("session cut:")
                .push(" AND time_ms >= ")
                .int(*from)
                .push(" AND time_ms <= ")
                .int(*to)
                .push(" AND (1 = 0");
            for d in dests {
                q.push(" OR target = ").text(d);
            }
            q.push("))");
        }
        q.push(")");
    }
}

/// Events matching `f`, oldest first (or newest first).
pub async fn list(c: &mut Conn, f: &AuditFilter, page: u32, limit: u32) -> Result<(Vec<AuditRow>, u64), StoreError> {
    let (l, o) = crate::limit_offset(page, limit);
    let mut q = Sql::new(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events",
    )
    .on(c);
    filter(&mut q, f);
    q.push(if f.newest_first {
        " ORDER BY seq DESC LIMIT "
    } else {
        " ORDER BY seq LIMIT "
    })
    .int(l)
    .push(" OFFSET ")
    .int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM audit_events").on(c);
    filter(&mut q, f);
    Ok((rows, q.fetch_count(c).await?))
}

/// Up to `limit` events after `seq`, oldest first: what an export target
/// has not received yet.
pub async fn after(c: &mut Conn, seq: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Up to `limit` events after `seq` whose action starts with `prefix`
/// (such as `request.`), oldest first; refusals left out (anyone can
/// cause those, as often as they like).
pub async fn actions_after(c: &mut Conn, seq: i64, prefix: &str, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let n = i64::try_from(prefix.chars().count()).unwrap_or(0);
    Ok(sqlx::query_as(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events \
         WHERE seq > $1 AND SUBSTR(action, 1, CAST($2 AS INTEGER)) = $3 AND result <> 'denied' ORDER BY seq LIMIT $4",
    )
    .bind(seq)
    .bind(n)
    .bind(prefix)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Walks the whole chain in order, in batches, and checks every link.
pub async fn verify(c: &mut Conn) -> Result<VerifyOutcome, StoreError> {
    verify_from(c, None, &mut |_| {}).await
}

/// Where a verification starts: after event `seq`, whose hash is `hash`
/// (a checkpoint's); `None` for the start of the chain.
pub type Anchor = Option<(i64, String)>;

/// Checks every link after `from` up to the recorded head, in batches;
/// `progress` hears the number of events checked so far after each batch.
pub async fn verify_from(
    c: &mut Conn,
    from: Anchor,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyOutcome, StoreError> {
    const BATCH: i64 = 5000;
    let (head_seq, head_hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *c)
        .await?;
    let (mut expected_seq, mut prev) = match from {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1i64, "0".repeat(64)),
    };
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
            if let Err(reason) = check_link(&r, expected_seq, &prev) {
                return Ok(VerifyOutcome::Broken {
                    events,
                    seq: r.seq.min(expected_seq),
                    reason,
                });
            }
            prev = r.hash.clone();
            expected_seq += 1;
            events += 1;
        }
        progress(events);
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
    Ok(VerifyOutcome::Ok {
        events,
        last,
        last_hash: prev,
    })
}

/// Whether `r` is event `expected` and links to `prev` with its own hash
/// intact; the reason when not.
pub fn check_link(r: &AuditRow, expected: i64, prev: &str) -> Result<(), String> {
    if r.seq != expected {
        return Err(format!(
            "event {expected} is missing (deleted?); the next event is {}",
            r.seq
        ));
    }
    if r.prev_hash != prev {
        return Err(format!("event {} does not link to the event before it", r.seq));
    }
    if chain_hash(r) != r.hash {
        return Err(format!(
            "event {} was modified: its contents do not match its hash",
            r.seq
        ));
    }
    Ok(())
}

/// Event `seq`, if it is in the table.
pub async fn get(c: &mut Conn, seq: i64) -> Result<Option<AuditRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events WHERE seq = $1",
    )
    .bind(seq)
    .fetch_optional(c)
    .await?)
}

/// Events `from..=to`, oldest first.
pub async fn range(c: &mut Conn, from: i64, to: i64) -> Result<Vec<AuditRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, time_ms, actor, action, target, source, result, detail, prev_hash, hash FROM audit_events \
         WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(c)
    .await?)
}

/// The sequence number of the last event at or before `time_ms`, and of
/// the first event in the table.
pub async fn bounds(c: &mut Conn, before_ms: i64) -> Result<(Option<i64>, Option<i64>), StoreError> {
    let last_old: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_events WHERE time_ms < $1")
        .bind(before_ms)
        .fetch_one(&mut *c)
        .await?;
    let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_events")
        .fetch_one(c)
        .await?;
    Ok((last_old, first))
}

/// The average stored size of the newest `sample` events' text fields, in
/// bytes (0 when there are none): what retention's size bound divides by.
pub async fn average_size(c: &mut Conn, sample: i64) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(AVG(LENGTH(actor) + LENGTH(action) + LENGTH(target) + LENGTH(source) \
         + LENGTH(result) + LENGTH(detail) + LENGTH(prev_hash) + LENGTH(hash)), 0) AS BIGINT) \
         FROM (SELECT actor, action, target, source, result, detail, prev_hash, hash FROM audit_events \
         ORDER BY seq DESC LIMIT $1) AS s",
    )
    .bind(sample)
    .fetch_one(c)
    .await?)
}

/// The chain's head: the last sequence number written and its hash.
pub async fn head(c: &mut Conn) -> Result<(i64, String), StoreError> {
    Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(c)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chains written before the hash input was serialised directly were
    /// hashed over `json!([..]).to_string()`: the bytes must not change.
    #[test]
    fn the_hash_input_is_the_bytes_earlier_chains_were_hashed_over() {
        let row = AuditRow {
            seq: 7,
            time_ms: -3,
            actor: "a\"li\\ce\u{0}\n".into(),
            action: "http.request".into(),
            target: "web.ns/ü".into(),
            source: "[::1]:5".into(),
            result: "success".into(),
            detail: "GET /x?a=<b>&c=\u{1f600} \t".into(),
            prev_hash: "0".repeat(64),
            hash: String::new(),
        };
        let old = serde_json::json!([
            row.seq,
            row.time_ms,
            row.actor,
            row.action,
            row.target,
            row.source,
            row.result,
            row.detail,
            row.prev_hash
        ])
        .to_string();
        let mut new = Vec::new();
        hash_input(&mut new, &row);
        assert_eq!(String::from_utf8(new).unwrap(), old);
    }
}
