//! Users, groups, memberships and grants.

use infra_core::{Resource, SubjectKind};
use sqlx::{AssertSqlSafe, FromRow};

use crate::sql::Sql;

use crate::{Conn, StoreError, limit_offset};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: Option<String>,
    pub password_update_required: i64,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    /// `user` or `service`.
    pub kind: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A grant with its subject's display name joined in.
#[derive(Debug, Clone, FromRow)]
pub struct GrantRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub subject_kind: SubjectKind,
    pub subject_id: String,
    pub subject_name: String,
    pub role: String,
    pub resource: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// A user id: that user's own grants.
    pub user_id: Option<String>,
    /// Also the grants of these group ids (for "what can this user do").
    pub via_groups: Vec<String>,
    pub group_id: Option<String>,
    pub resource: Option<String>,
    pub role: Option<String>,
}

const USER_COLS: &str = "id, email, password_hash, password_update_required, created_at, last_seen_at, kind";

pub async fn insert_user(c: &mut Conn, u: &UserRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, password_update_required, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&u.id)
    .bind(&u.email)
    .bind(&u.password_hash)
    .bind(u.password_update_required)
    .bind(u.created_at)
    .bind(&u.kind)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn user_by_email(c: &mut Conn, email: &str) -> Result<Option<UserRow>, StoreError> {
    let q = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
    Ok(sqlx::query_as(AssertSqlSafe(q)).bind(email).fetch_optional(c).await?)
}

pub async fn user_by_id(c: &mut Conn, id: &str) -> Result<Option<UserRow>, StoreError> {
    let q = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
    Ok(sqlx::query_as(AssertSqlSafe(q)).bind(id).fetch_optional(c).await?)
}

/// Users by email, a page at a time; only those of `kind` (`user`,
/// `service`) if given.
pub async fn list_users(
    c: &mut Conn,
    kind: Option<&str>,
    page: u32,
    limit: u32,
) -> Result<(Vec<UserRow>, u64), StoreError> {
    let (l, o) = limit_offset(page, limit);
    let only = |q: &mut Sql| {
        if let Some(k) = kind {
            q.push(" WHERE kind = ").text(k);
        }
    };
    let mut q = Sql::new(&format!("SELECT {USER_COLS} FROM users"));
    only(&mut q);
    q.push(" ORDER BY email LIMIT ").int(l).push(" OFFSET ").int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM users");
    only(&mut q);
    Ok((rows, q.fetch_count(c).await?))
}

/// Every service account: (id, email).
pub async fn service_accounts(c: &mut Conn) -> Result<Vec<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, email FROM users WHERE kind = 'service' ORDER BY email")
            .fetch_all(c)
            .await?,
    )
}

pub async fn set_password(c: &mut Conn, user_id: &str, hash: &str, update_required: bool) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET password_hash = $1, password_update_required = $2 WHERE id = $3")
        .bind(hash)
        .bind(i64::from(update_required))
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn touch_user(c: &mut Conn, user_id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET last_seen_at = $1 WHERE id = $2")
        .bind(now)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Removes a user, their grants and keys (memberships and keys cascade).
pub async fn delete_user(c: &mut Conn, user_id: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM grants WHERE subject_kind = 'user' AND subject_id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    let keys: Vec<String> = sqlx::query_scalar("SELECT id FROM access_keys WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?;
    for k in keys {
        crate::keys::delete_key(c, &k).await?;
    }
    sqlx::query("DELETE FROM group_members WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    let r = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn insert_group(c: &mut Conn, g: &GroupRow) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO infra_groups (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&g.id)
        .bind(&g.name)
        .bind(g.created_at)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn group_by_name(c: &mut Conn, name: &str) -> Result<Option<GroupRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM infra_groups WHERE name = $1")
            .bind(name)
            .fetch_optional(c)
            .await?,
    )
}

pub async fn list_groups(c: &mut Conn, page: u32, limit: u32) -> Result<(Vec<GroupRow>, u64), StoreError> {
    let (l, o) = limit_offset(page, limit);
    let rows = sqlx::query_as("SELECT id, name, created_at FROM infra_groups ORDER BY name LIMIT $1 OFFSET $2")
        .bind(l)
        .bind(o)
        .fetch_all(&mut *c)
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM infra_groups")
        .fetch_one(c)
        .await?;
    Ok((rows, u64::try_from(n).unwrap_or(0)))
}

pub async fn delete_group(c: &mut Conn, group_id: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM grants WHERE subject_kind = 'group' AND subject_id = $1")
        .bind(group_id)
        .execute(&mut *c)
        .await?;
    sqlx::query("DELETE FROM group_members WHERE group_id = $1")
        .bind(group_id)
        .execute(&mut *c)
        .await?;
    let r = sqlx::query("DELETE FROM infra_groups WHERE id = $1")
        .bind(group_id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn add_member(c: &mut Conn, group_id: &str, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)")
        .bind(group_id)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn remove_member(c: &mut Conn, group_id: &str, user_id: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Group ids and names of a user's groups.
pub async fn groups_of_user(c: &mut Conn, user_id: &str) -> Result<Vec<GroupRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.id, g.name, g.created_at FROM infra_groups g JOIN group_members m ON m.group_id = g.id \
         WHERE m.user_id = $1 ORDER BY g.name",
    )
    .bind(user_id)
    .fetch_all(c)
    .await?)
}

/// Member emails of a group.
pub async fn members_of_group(c: &mut Conn, group_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT u.email FROM users u JOIN group_members m ON m.user_id = u.id WHERE m.group_id = $1 ORDER BY u.email",
    )
    .bind(group_id)
    .fetch_all(c)
    .await?)
}

pub async fn insert_grant(c: &mut Conn, g: &GrantRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO grants (id, subject_kind, subject_id, role, resource, created_at, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&g.id)
    .bind(g.subject_kind.as_str())
    .bind(&g.subject_id)
    .bind(&g.role)
    .bind(&g.resource)
    .bind(g.created_at)
    .bind(&g.created_by)
    .bind(g.expires_at)
    .execute(c)
    .await?;
    Ok(())
}

const GRANT_SELECT: &str = "SELECT g.id, g.subject_kind, g.subject_id, \
     COALESCE(u.email, gr.name, g.subject_id) AS subject_name, g.role, g.resource, g.created_at, g.created_by, g.expires_at \
     FROM grants g \
     LEFT JOIN users u ON g.subject_kind = 'user' AND u.id = g.subject_id \
     LEFT JOIN infra_groups gr ON g.subject_kind = 'group' AND gr.id = g.subject_id";

fn grant_where(q: &mut Sql, f: &GrantFilter, now: i64) {
    q.push(" WHERE (g.expires_at IS NULL OR g.expires_at > ")
        .int(now)
        .push(")");
    if f.user_id.is_some() || f.group_id.is_some() {
        q.push(" AND (1 = 0");
        if let Some(u) = &f.user_id {
            q.push(" OR (g.subject_kind = 'user' AND g.subject_id = ")
                .text(u)
                .push(")");
        }
        for gid in f.via_groups.iter().chain(f.group_id.iter()) {
            q.push(" OR (g.subject_kind = 'group' AND g.subject_id = ")
                .text(gid)
                .push(")");
        }
        q.push(")");
    }
    if let Some(r) = &f.resource {
        q.push(" AND g.resource = ").text(r);
    }
    if let Some(r) = &f.role {
        q.push(" AND g.role = ").text(r);
    }
}

pub async fn list_grants(
    c: &mut Conn,
    f: &GrantFilter,
    now: i64,
    page: u32,
    limit: u32,
) -> Result<(Vec<GrantRow>, u64), StoreError> {
    let (l, o) = limit_offset(page, limit);
    // The page's grants are picked off the `grants_listing` index in its
    // order, and only those rows are joined to their subjects' names: a
    // late page skips index entries, not joined rows.
    let mut q = Sql::new(GRANT_SELECT);
    q.push(" WHERE g.id IN (SELECT g.id FROM grants g");
    grant_where(&mut q, f, now);
    q.push(" ORDER BY g.resource, g.role, g.subject_kind, g.subject_id LIMIT ")
        .int(l)
        .push(" OFFSET ")
        .int(o)
        .push(") ORDER BY g.resource, g.role, g.subject_kind, g.subject_id");
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM grants g");
    grant_where(&mut q, f, now);
    Ok((rows, q.fetch_count(c).await?))
}

pub async fn grant_by_id(c: &mut Conn, id: &str) -> Result<Option<GrantRow>, StoreError> {
    let q = format!("{GRANT_SELECT} WHERE g.id = $1");
    Ok(sqlx::query_as(AssertSqlSafe(q)).bind(id).fetch_optional(c).await?)
}

pub async fn delete_grant(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM grants WHERE id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The roles a user holds on `resource` (exact match) directly or through
/// their groups, unexpired.
pub async fn roles_on(c: &mut Conn, user_id: &str, resource: &str, now: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT g.role FROM grants g WHERE g.resource = $1 AND (g.expires_at IS NULL OR g.expires_at > $2) \
         AND ((g.subject_kind = 'user' AND g.subject_id = $3) OR (g.subject_kind = 'group' AND g.subject_id IN \
         (SELECT group_id FROM group_members WHERE user_id = $3)))",
    )
    .bind(resource)
    .bind(now)
    .bind(user_id)
    .fetch_all(c)
    .await?)
}

/// How many users hold `admin` on `infra` right now, directly or through a
/// group. Checked inside the write transaction that might remove the last.
pub async fn count_admins(c: &mut Conn, now: i64) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u WHERE EXISTS (SELECT 1 FROM grants g WHERE g.resource = 'infra' \
         AND g.role = 'admin' AND (g.expires_at IS NULL OR g.expires_at > $1) \
         AND ((g.subject_kind = 'user' AND g.subject_id = u.id) OR (g.subject_kind = 'group' AND g.subject_id IN \
         (SELECT group_id FROM group_members WHERE user_id = u.id))))",
    )
    .bind(now)
    .fetch_one(c)
    .await?)
}

/// Whether a user holds any unexpired grant on `destination` or a part of
/// it (`destination.x`), directly or through a group.
pub async fn has_grant_on_destination(
    c: &mut Conn,
    user_id: &str,
    destination: &str,
    now: i64,
) -> Result<bool, StoreError> {
    // Grants are made on valid resources only: a name that is not one has
    // none.
    let Ok(destination) = Resource::parse(destination) else {
        return Ok(false);
    };
    let mut q = Sql::new("SELECT COUNT(*) FROM grants g WHERE (g.expires_at IS NULL OR g.expires_at > ").on(c);
    q.int(now)
        .push(") AND ")
        .covered_by("g.resource", &destination)
        .push(" AND ((g.subject_kind = 'user' AND g.subject_id = ")
        .text(user_id)
        .push(") OR (g.subject_kind = 'group' AND g.subject_id IN (SELECT group_id FROM group_members WHERE user_id = ")
        .text(user_id)
        .push(")))");
    let n = q.fetch_count(c).await?;
    Ok(n > 0)
}

/// One way a user reaches a destination: a grant on it (or a part of it),
/// held directly or through a group.
#[derive(Debug, Clone, FromRow)]
pub struct ReachRow {
    pub email: String,
    pub role: String,
    pub resource: String,
    /// The group the grant is held through; none for a direct grant.
    pub via_group: Option<String>,
    pub expires_at: Option<i64>,
    pub grant_id: String,
}

/// Everyone who can reach `destination` right now and through which grant,
/// by email, a page at a time; and how many such paths there are.
pub async fn reach_of_destination(
    c: &mut Conn,
    destination: &Resource,
    now: i64,
    page: u32,
    limit: u32,
) -> Result<(Vec<ReachRow>, u64), StoreError> {
    let paths = |q: &mut Sql| {
        q.push(
            "SELECT u.email, g.role, g.resource, NULL AS via_group, g.expires_at, g.id AS grant_id \
             FROM grants g JOIN users u ON g.subject_kind = 'user' AND u.id = g.subject_id \
             WHERE (g.expires_at IS NULL OR g.expires_at > ",
        )
        .int(now)
        .push(") AND ")
        .covered_by("g.resource", destination)
        .push(
            " UNION ALL SELECT u.email, g.role, g.resource, gr.name AS via_group, g.expires_at, g.id AS grant_id \
             FROM grants g JOIN infra_groups gr ON g.subject_kind = 'group' AND gr.id = g.subject_id \
             JOIN group_members m ON m.group_id = gr.id JOIN users u ON u.id = m.user_id \
             WHERE (g.expires_at IS NULL OR g.expires_at > ",
        )
        .int(now)
        .push(") AND ")
        .covered_by("g.resource", destination);
    };
    let (l, o) = limit_offset(page, limit);
    let mut q = Sql::new("SELECT email, role, resource, via_group, expires_at, grant_id FROM (").on(c);
    paths(&mut q);
    q.push(") AS reach ORDER BY email, resource, role, via_group LIMIT ")
        .int(l)
        .push(" OFFSET ")
        .int(o);
    let rows = q.fetch_all(&mut *c).await?;
    let mut q = Sql::new("SELECT COUNT(*) FROM (").on(c);
    paths(&mut q);
    q.push(") AS reach");
    Ok((rows, q.fetch_count(c).await?))
}

/// Makes user `user_id`'s grant of `role` on `resource` last until at least
/// `until`, if it has an end before then: the id of that grant, or none if
/// the user holds no such grant. A grant with no end stays without one.
pub async fn extend_user_grant(
    c: &mut Conn,
    user_id: &str,
    role: &str,
    resource: &str,
    until: i64,
) -> Result<Option<String>, StoreError> {
    sqlx::query(
        "UPDATE grants SET expires_at = $1 WHERE subject_kind = 'user' AND subject_id = $2 AND role = $3 \
         AND resource = $4 AND expires_at IS NOT NULL AND expires_at < $1",
    )
    .bind(until)
    .bind(user_id)
    .bind(role)
    .bind(resource)
    .execute(&mut *c)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT id FROM grants WHERE subject_kind = 'user' AND subject_id = $1 AND role = $2 AND resource = $3",
    )
    .bind(user_id)
    .bind(role)
    .bind(resource)
    .fetch_optional(c)
    .await?)
}
