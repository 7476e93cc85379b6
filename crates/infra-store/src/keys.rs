//! Access keys, signing keys, sealed secrets, settings and login throttling.

use sqlx::FromRow;

use crate::{Conn, StoreError};

/// What an access key is for; stored as its word in `access_keys.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Made by a user (`infra keys add`) for scripts and tools.
    User,
    /// Made by a login (password, identity provider or workload sign-in).
    Session,
    /// A workload's session, exchanged for its identity token: borrowed,
    /// it lasts no longer than what it was exchanged for.
    Exchange,
    /// A connector's key: opens tunnels, belongs to no user.
    Connector,
}

/// A `kind` column holding a word this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown access key kind '{0}'")]
pub struct UnknownKeyKind(String);

impl KeyKind {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::User => "user",
            KeyKind::Session => "session",
            KeyKind::Exchange => "exchange",
            KeyKind::Connector => "connector",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownKeyKind> {
        [KeyKind::User, KeyKind::Session, KeyKind::Exchange, KeyKind::Connector]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKeyKind(s.chars().take(64).collect()))
    }
}

impl TryFrom<String> for KeyKind {
    type Error = UnknownKeyKind;
    fn try_from(s: String) -> Result<Self, UnknownKeyKind> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct AccessKeyRow {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: KeyKind,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub inactivity_timeout_ms: Option<i64>,
    pub last_used_at: i64,
    /// The borrowed session this key was made from, which it cannot
    /// outlive (see `lender_of` in the server).
    pub lender_id: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub public_x: String,
    pub private_sealed: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct LoginFailure {
    pub bucket: String,
    pub failures: i64,
    pub locked_until: i64,
    pub last_failure_at: i64,
}

const KEY_SELECT: &str = "SELECT k.id, k.name, k.kind, k.user_id, u.email AS user_email, k.secret_hash, k.created_at, \
     k.expires_at, k.inactivity_timeout_ms, k.last_used_at, k.lender_id FROM access_keys k LEFT JOIN users u ON u.id = k.user_id";

pub async fn insert_key(c: &mut Conn, k: &AccessKeyRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_keys (id, name, kind, user_id, secret_hash, created_at, expires_at, inactivity_timeout_ms, last_used_at, lender_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&k.id)
    .bind(&k.name)
    .bind(k.kind.as_str())
    .bind(&k.user_id)
    .bind(&k.secret_hash)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.inactivity_timeout_ms)
    .bind(k.last_used_at)
    .bind(&k.lender_id)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn key_by_id(c: &mut Conn, id: &str) -> Result<Option<AccessKeyRow>, StoreError> {
    let q = format!("{KEY_SELECT} WHERE k.id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// Keys by name or id (names are unique per user, not globally).
pub async fn keys_by_name_or_id(c: &mut Conn, name: &str) -> Result<Vec<AccessKeyRow>, StoreError> {
    let q = format!("{KEY_SELECT} WHERE k.name = $1 OR k.id = $1 ORDER BY k.created_at");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q)).bind(name).fetch_all(c).await?)
}

/// Lists keys; `user_id` narrows to one user's; sessions only if asked.
pub async fn list_keys(
    c: &mut Conn,
    user_id: Option<&str>,
    include_sessions: bool,
    page: u32,
    limit: u32,
) -> Result<(Vec<AccessKeyRow>, u64), StoreError> {
    let (l, o) = crate::limit_offset(page, limit);
    let cond = "($1 IS NULL OR k.user_id = $1) AND ($2 = 1 OR k.kind <> $3)";
    let q = format!("{KEY_SELECT} WHERE {cond} ORDER BY k.created_at LIMIT $4 OFFSET $5");
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(q))
        .bind(user_id)
        .bind(i64::from(include_sessions))
        .bind(KeyKind::Session.as_str())
        .bind(l)
        .bind(o)
        .fetch_all(&mut *c)
        .await?;
    let q = format!("SELECT COUNT(*) FROM access_keys k WHERE {cond}");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
        .bind(user_id)
        .bind(i64::from(include_sessions))
        .bind(KeyKind::Session.as_str())
        .fetch_one(c)
        .await?;
    Ok((rows, u64::try_from(n).unwrap_or(0)))
}

pub async fn touch_key(c: &mut Conn, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE access_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Deletes a key and records it as revoked, so connectors refuse tokens
/// issued through it.
pub async fn set_key_expiry(c: &mut Conn, id: &str, expires_at: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE access_keys SET expires_at = $1 WHERE id = $2")
        .bind(expires_at)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Deletes a key and every key made from it as a borrowed session, and
/// tells connectors to refuse tokens minted through any of them.
pub async fn delete_key(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    let borrowers: Vec<String> = sqlx::query_scalar("SELECT id FROM access_keys WHERE lender_id = $1")
        .bind(id)
        .fetch_all(&mut *c)
        .await?;
    let now = crate::now_ms();
    for b in borrowers.iter().filter(|b| *b != id) {
        sqlx::query("DELETE FROM access_keys WHERE id = $1")
            .bind(b)
            .execute(&mut *c)
            .await?;
        crate::connectors::revoke_session(c, b, now).await?;
    }
    let r = sqlx::query("DELETE FROM access_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    crate::connectors::revoke_session(c, id, now).await?;
    Ok(r.rows_affected() > 0)
}

pub async fn insert_signing_key(c: &mut Conn, k: &SigningKeyRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, public_x, private_sealed, created_at, retired_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&k.kid)
    .bind(&k.public_x)
    .bind(&k.private_sealed)
    .bind(k.created_at)
    .bind(k.retired_at)
    .execute(c)
    .await?;
    Ok(())
}

/// All signing keys, newest first.
pub async fn signing_keys(c: &mut Conn) -> Result<Vec<SigningKeyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kid, public_x, private_sealed, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(c)
    .await?)
}

pub async fn retire_signing_keys(c: &mut Conn, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

/// Drops retired keys whose every token has expired.
/// Deletes workload keys (token exchanges) that expired before `before`:
/// a workload exchanges again each time, and nothing minted with an
/// expired key outlives it.
pub async fn prune_expired_exchange_keys(c: &mut Conn, before: i64) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM access_keys WHERE kind = $1 AND expires_at IS NOT NULL AND expires_at < $2")
        .bind(KeyKind::Exchange.as_str())
        .bind(before)
        .execute(c)
        .await?;
    Ok(r.rows_affected())
}

pub async fn prune_signing_keys(c: &mut Conn, retired_before: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
        .bind(retired_before)
        .execute(c)
        .await?;
    Ok(())
}

/// A sealed secret and its public part (e.g. the CA key and certificate).
pub async fn sealed_secret(c: &mut Conn, name: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT public_part, sealed FROM sealed_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(c)
            .await?,
    )
}

pub async fn insert_sealed_secret(c: &mut Conn, name: &str, public: &str, sealed: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO sealed_secrets (name, public_part, sealed) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(public)
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn setting(c: &mut Conn, name: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
        .bind(name)
        .fetch_optional(c)
        .await?)
}

pub async fn insert_setting(c: &mut Conn, name: &str, value: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
        .bind(name)
        .bind(value)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn login_failure(c: &mut Conn, bucket: &str) -> Result<Option<LoginFailure>, StoreError> {
    Ok(
        sqlx::query_as("SELECT bucket, failures, locked_until, last_failure_at FROM login_failures WHERE bucket = $1")
            .bind(bucket)
            .fetch_optional(c)
            .await?,
    )
}

pub async fn put_login_failure(c: &mut Conn, f: &LoginFailure) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE bucket = $1")
        .bind(&f.bucket)
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO login_failures (bucket, failures, locked_until, last_failure_at) VALUES ($1, $2, $3, $4)")
        .bind(&f.bucket)
        .bind(f.failures)
        .bind(f.locked_until)
        .bind(f.last_failure_at)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn clear_login_failures(c: &mut Conn, bucket: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE bucket = $1")
        .bind(bucket)
        .execute(c)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct SshCaRow {
    pub id: String,
    pub kind: String,
    pub public_key: String,
    pub private_sealed: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub async fn insert_ssh_ca(c: &mut Conn, r: &SshCaRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ssh_cas (id, kind, public_key, private_sealed, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&r.id)
    .bind(&r.kind)
    .bind(&r.public_key)
    .bind(&r.private_sealed)
    .bind(r.created_at)
    .bind(r.retired_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The CA keys of one kind, newest first.
pub async fn ssh_cas(c: &mut Conn, kind: &str) -> Result<Vec<SshCaRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, public_key, private_sealed, created_at, retired_at FROM ssh_cas WHERE kind = $1 ORDER BY created_at DESC, id",
    )
    .bind(kind)
    .fetch_all(&mut *c)
    .await?)
}

/// Retires the signing CA of `kind` and forgets ones retired before `prune_before`.
pub async fn retire_ssh_cas(c: &mut Conn, kind: &str, now: i64, prune_before: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ssh_cas WHERE kind = $1 AND retired_at IS NOT NULL AND retired_at < $2")
        .bind(kind)
        .bind(prune_before)
        .execute(&mut *c)
        .await?;
    sqlx::query("UPDATE ssh_cas SET retired_at = $1 WHERE kind = $2 AND retired_at IS NULL")
        .bind(now)
        .bind(kind)
        .execute(&mut *c)
        .await?;
    Ok(())
}
