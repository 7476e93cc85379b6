//! Destinations, connector audit numbering, revoked sessions and the
//! connectors' assertion keys.

use infra_core::{DestinationKind, Resource, SubjectKind};
use sqlx::FromRow;

use crate::sql::Sql;
use crate::{Conn, StoreError};

#[derive(Debug, Clone, FromRow)]
pub struct DestinationRow {
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: DestinationKind,
    pub connector: String,
    pub labels: String,
    pub direct_url: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub tunnels: i64,
    /// A forward-auth destination's public origin (its `connector` is
    /// empty): the server decides for it, no connector serves it.
    pub public_url: Option<String>,
}

/// Registers (or refreshes) a destination served by `connector`. Never
/// takes over a forward-auth destination (its insert fails instead).
pub async fn upsert_destination(c: &mut Conn, d: &DestinationRow) -> Result<(), StoreError> {
    let r = sqlx::query(
        "UPDATE destinations SET kind = $1, connector = $2, labels = $3, direct_url = $4, last_seen_at = $5, tunnels = $6 WHERE name = $7 AND public_url IS NULL",
    )
    .bind(d.kind.as_str())
    .bind(&d.connector)
    .bind(&d.labels)
    .bind(&d.direct_url)
    .bind(d.last_seen_at)
    .bind(d.tunnels)
    .bind(&d.name)
    .execute(&mut *c)
    .await?;
    if r.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO destinations (name, kind, connector, labels, direct_url, created_at, last_seen_at, tunnels) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&d.name)
        .bind(d.kind.as_str())
        .bind(&d.connector)
        .bind(&d.labels)
        .bind(&d.direct_url)
        .bind(d.created_at)
        .bind(d.last_seen_at)
        .bind(d.tunnels)
        .execute(c)
        .await?;
    }
    Ok(())
}

pub async fn destination(c: &mut Conn, name: &str) -> Result<Option<DestinationRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, kind, connector, labels, direct_url, created_at, last_seen_at, tunnels, public_url FROM destinations WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(c)
    .await?)
}

/// Declares a forward-auth destination: decided by the server for a proxy
/// at `public_url`. `false` if the name is taken.
pub async fn add_forward_auth(c: &mut Conn, name: &str, public_url: &str, now: i64) -> Result<bool, StoreError> {
    if destination(&mut *c, name).await?.is_some() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO destinations (name, kind, connector, labels, direct_url, created_at, last_seen_at, tunnels, public_url) \
         VALUES ($1, $2, '', '{}', NULL, $3, $3, 0, $4)",
    )
    .bind(name)
    .bind(DestinationKind::Http.as_str())
    .bind(now)
    .bind(public_url)
    .execute(c)
    .await?;
    Ok(true)
}

/// Every forward-auth destination: (name, public origin).
pub async fn forward_auth_destinations(c: &mut Conn) -> Result<Vec<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT name, public_url FROM destinations WHERE public_url IS NOT NULL ORDER BY name")
            .fetch_all(c)
            .await?,
    )
}

/// Every destination's name.
pub async fn destination_names(c: &mut Conn) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM destinations").fetch_all(c).await?)
}

/// Every destination's name and kind.
pub async fn destination_kinds(c: &mut Conn) -> Result<Vec<(String, DestinationKind)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, kind FROM destinations ORDER BY name")
        .fetch_all(c)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(n, k)| Some((n, DestinationKind::try_from(k).ok()?)))
        .collect())
}

pub async fn list_destinations(c: &mut Conn, page: u32, limit: u32) -> Result<(Vec<DestinationRow>, u64), StoreError> {
    let (l, o) = crate::limit_offset(page, limit);
    let mut q = Sql::new(
        "SELECT name, kind, connector, labels, direct_url, created_at, last_seen_at, tunnels, public_url FROM destinations ORDER BY name LIMIT ",
    );
    q.int(l).push(" OFFSET ").int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let n = Sql::new("SELECT COUNT(*) FROM destinations").fetch_count(c).await?;
    Ok((rows, n))
}

pub async fn delete_destination(c: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM destinations WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn set_tunnels(c: &mut Conn, name: &str, tunnels: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE destinations SET tunnels = $1, last_seen_at = $2 WHERE name = $3")
        .bind(tunnels)
        .bind(now)
        .bind(name)
        .execute(c)
        .await?;
    Ok(())
}

/// The highest audit number stored for a connector instance.
pub async fn audit_acked(c: &mut Conn, instance: &str) -> Result<i64, StoreError> {
    let v: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM connector_audit WHERE instance_id = $1")
        .bind(instance)
        .fetch_optional(c)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Binds an audit instance to `connector` and returns its acknowledged
/// sequence number, or `Err(owner)` when another connector owns it.
pub async fn claim_audit_instance(
    c: &mut Conn,
    instance: &str,
    connector: &str,
) -> Result<Result<i64, String>, StoreError> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT last_seq, connector FROM connector_audit WHERE instance_id = $1")
            .bind(instance)
            .fetch_optional(&mut *c)
            .await?;
    match row {
        Some((_, Some(owner))) if owner != connector => Ok(Err(owner)),
        Some((seq, owner)) => {
            if owner.is_none() {
                sqlx::query("UPDATE connector_audit SET connector = $1 WHERE instance_id = $2")
                    .bind(connector)
                    .bind(instance)
                    .execute(c)
                    .await?;
            }
            Ok(Ok(seq))
        }
        None => {
            sqlx::query("INSERT INTO connector_audit (instance_id, last_seq, connector) VALUES ($1, 0, $2)")
                .bind(instance)
                .bind(connector)
                .execute(c)
                .await?;
            Ok(Ok(0))
        }
    }
}

pub async fn set_audit_acked(c: &mut Conn, instance: &str, seq: i64) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE connector_audit SET last_seq = $1 WHERE instance_id = $2")
        .bind(seq)
        .bind(instance)
        .execute(&mut *c)
        .await?;
    if r.rows_affected() == 0 {
        sqlx::query("INSERT INTO connector_audit (instance_id, last_seq) VALUES ($1, $2)")
            .bind(instance)
            .bind(seq)
            .execute(c)
            .await?;
    }
    Ok(())
}

pub async fn revoke_session(c: &mut Conn, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM revoked_sessions WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO revoked_sessions (id, revoked_at) VALUES ($1, $2)")
        .bind(id)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

/// Sessions revoked since `since`; older ones are pruned.
pub async fn revoked_sessions(c: &mut Conn, since: i64) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM revoked_sessions WHERE revoked_at >= $1 ORDER BY id")
            .bind(since)
            .fetch_all(c)
            .await?,
    )
}

/// Forgets sessions revoked before `before` (their tokens have expired):
/// a write, so inside the writers' lock.
pub async fn forget_revoked_sessions(c: &mut Conn, before: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM revoked_sessions WHERE revoked_at < $1")
        .bind(before)
        .execute(c)
        .await?;
    Ok(())
}

/// The connector that registered assertion key `kid`, if any.
pub async fn connector_key_owner(c: &mut Conn, kid: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT connector FROM connector_keys WHERE kid = $1")
            .bind(kid)
            .fetch_optional(c)
            .await?,
    )
}

pub async fn put_connector_key(c: &mut Conn, kid: &str, connector: &str, x: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM connector_keys WHERE kid = $1")
        .bind(kid)
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO connector_keys (kid, connector, public_x, last_seen_at) VALUES ($1, $2, $3, $4)")
        .bind(kid)
        .bind(connector)
        .bind(x)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

/// Assertion keys seen since `since`.
pub async fn connector_keys(c: &mut Conn, since: i64) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT kid, connector, public_x FROM connector_keys WHERE last_seen_at >= $1 ORDER BY kid")
            .bind(since)
            .fetch_all(c)
            .await?,
    )
}

/// The grants on `destinations` (or their parts), unexpired, for a
/// connector's snapshot.
pub async fn grants_for(c: &mut Conn, destinations: &[String], now: i64) -> Result<Vec<SnapshotGrant>, StoreError> {
    let mut q = Sql::new(
        "SELECT g.subject_kind, g.subject_id, COALESCE(u.email, ig.name, '') AS subject_name, g.role, g.resource, \
         g.expires_at FROM grants g \
         LEFT JOIN users u ON g.subject_kind = 'user' AND u.id = g.subject_id \
         LEFT JOIN infra_groups ig ON g.subject_kind = 'group' AND ig.id = g.subject_id \
         WHERE (g.expires_at IS NULL OR g.expires_at > ",
    );
    q.int(now).push(") AND (1 = 0");
    // Grants are made on valid resources only: a name that is not one has
    // none.
    for d in destinations.iter().filter_map(|d| Resource::parse(d).ok()) {
        q.push(" OR ").covered_by("g.resource", &d);
    }
    q.push(") ORDER BY g.id");
    let rows: Vec<SnapshotGrant> = q.fetch_all(c).await?;
    Ok(rows)
}

/// A grant as a connector's snapshot carries it.
#[derive(Debug, Clone, FromRow)]
pub struct SnapshotGrant {
    #[sqlx(try_from = "String")]
    pub subject_kind: SubjectKind,
    pub subject_id: String,
    /// The user's email or the group's name.
    pub subject_name: String,
    pub role: String,
    pub resource: String,
    pub expires_at: Option<i64>,
}

/// Records what `destination` offers to grant (JSON from its connector).
/// Stores what `connector` reports for `destination`, only while that
/// connector owns it: a tunnel left open after the destination was removed
/// and taken by another connector reports nothing any more.
pub async fn set_inventory(c: &mut Conn, destination: &str, connector: &str, json: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE destinations SET inventory = $1 WHERE name = $2 AND connector = $3")
        .bind(json)
        .bind(destination)
        .bind(connector)
        .execute(c)
        .await?;
    Ok(())
}

/// The kind of `destination` and its last reported inventory, if known.
pub async fn inventory(
    c: &mut Conn,
    destination: &str,
) -> Result<Option<(DestinationKind, Option<String>)>, StoreError> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(try_from = "String")]
        kind: DestinationKind,
        inventory: Option<String>,
    }
    let row: Option<Row> = sqlx::query_as("SELECT kind, inventory FROM destinations WHERE name = $1")
        .bind(destination)
        .fetch_optional(c)
        .await?;
    Ok(row.map(|r| (r.kind, r.inventory)))
}

/// (group id, user id) for the given groups.
pub async fn memberships(c: &mut Conn, groups: &[String]) -> Result<Vec<(String, String)>, StoreError> {
    if groups.is_empty() {
        return Ok(vec![]);
    }
    let mut q = Sql::new("SELECT group_id, user_id FROM group_members WHERE group_id IN (");
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.text(g);
    }
    q.push(") ORDER BY group_id, user_id");
    #[derive(FromRow)]
    struct Row {
        group_id: String,
        user_id: String,
    }
    let rows: Vec<Row> = q.fetch_all(c).await?;
    Ok(rows.into_iter().map(|r| (r.group_id, r.user_id)).collect())
}

/// A number that moves with every write through the API, on any replica
/// (not with the audit writer's events): what replicas watch for changes
/// to what connectors and forward-auth decide with.
pub async fn change_marker(c: &mut Conn) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT n FROM change_marker WHERE id = 1")
        .fetch_one(c)
        .await?)
}

/// Moves the change marker, inside a write's transaction.
pub async fn bump_change_marker(c: &mut Conn) -> Result<(), StoreError> {
    sqlx::query("UPDATE change_marker SET n = n + 1 WHERE id = 1")
        .execute(c)
        .await?;
    Ok(())
}

/// Records that replica `id` is alive at `url`.
pub async fn heartbeat_replica(c: &mut Conn, id: &str, url: &str, now: i64) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE replicas SET url = $1, last_seen_at = $2 WHERE id = $3")
        .bind(url)
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?;
    if r.rows_affected() == 0 {
        sqlx::query("INSERT INTO replicas (id, url, last_seen_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(url)
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    sqlx::query("DELETE FROM replicas WHERE last_seen_at < $1")
        .bind(now - 3_600_000)
        .execute(c)
        .await?;
    Ok(())
}

/// URLs of replicas seen since `since`.
pub async fn live_replicas(c: &mut Conn, since: i64) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT url FROM replicas WHERE last_seen_at >= $1 ORDER BY url")
            .bind(since)
            .fetch_all(c)
            .await?,
    )
}

/// A connector instance as admins see it.
#[derive(Debug, Clone, FromRow)]
pub struct InstanceRow {
    pub instance_id: String,
    pub connector: String,
    pub version: String,
    pub source: String,
    pub connected_at: i64,
    pub last_seen_at: i64,
    pub tunnels: i64,
}

/// Instance `r.instance_id` opened a tunnel (at `r.last_seen_at`).
/// Instances unseen for 30 days, with no tunnel, are forgotten then.
pub async fn instance_connected(c: &mut Conn, r: &InstanceRow) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM connector_instances WHERE tunnels = 0 AND last_seen_at < $1")
        .bind(r.last_seen_at - 30 * 24 * 3_600_000)
        .execute(&mut *c)
        .await?;
    let n = sqlx::query(
        "UPDATE connector_instances SET connector = $1, version = $2, source = $3, last_seen_at = $4, \
         tunnels = tunnels + 1, connected_at = CASE WHEN tunnels = 0 THEN $4 ELSE connected_at END \
         WHERE instance_id = $5",
    )
    .bind(&r.connector)
    .bind(&r.version)
    .bind(&r.source)
    .bind(r.last_seen_at)
    .bind(&r.instance_id)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 0 {
        sqlx::query(
            "INSERT INTO connector_instances (instance_id, connector, version, source, connected_at, last_seen_at, tunnels) \
             VALUES ($1, $2, $3, $4, $5, $5, 1)",
        )
        .bind(&r.instance_id)
        .bind(&r.connector)
        .bind(&r.version)
        .bind(&r.source)
        .bind(r.last_seen_at)
        .execute(c)
        .await?;
    }
    Ok(())
}

/// A tunnel of instance `id` closed at `now`.
pub async fn instance_disconnected(c: &mut Conn, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connector_instances SET last_seen_at = $1, \
         tunnels = CASE WHEN tunnels > 0 THEN tunnels - 1 ELSE 0 END WHERE instance_id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Instances seen since `since`, by connector name and then the most
/// recently seen first.
pub async fn instances(c: &mut Conn, since: i64) -> Result<Vec<InstanceRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT instance_id, connector, version, source, connected_at, last_seen_at, tunnels FROM connector_instances \
         WHERE last_seen_at >= $1 OR tunnels > 0 ORDER BY connector, last_seen_at DESC LIMIT 1000",
    )
    .bind(since)
    .fetch_all(c)
    .await?)
}
