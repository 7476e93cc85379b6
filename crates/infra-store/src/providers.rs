//! Identity providers, logins in progress, provider sessions, memberships
//! that come from a provider's groups claim, and workload issuers.

use sqlx::FromRow;

use crate::{Conn, StoreError};

#[derive(Debug, Clone, FromRow)]
pub struct ProviderRow {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_sealed: String,
    pub groups_claim: String,
    /// Space-separated.
    pub scopes: String,
    /// Comma-separated; empty: any domain.
    pub allowed_domains: String,
    pub allow_unverified_email: i64,
    pub created_at: i64,
}

const PROVIDER_COLS: &str = "name, issuer, client_id, client_secret_sealed, groups_claim, scopes, allowed_domains, \
     allow_unverified_email, created_at";

pub async fn insert_provider(c: &mut Conn, p: &ProviderRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO providers (name, issuer, client_id, client_secret_sealed, groups_claim, scopes, allowed_domains, \
         allow_unverified_email, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&p.name)
    .bind(&p.issuer)
    .bind(&p.client_id)
    .bind(&p.client_secret_sealed)
    .bind(&p.groups_claim)
    .bind(&p.scopes)
    .bind(&p.allowed_domains)
    .bind(p.allow_unverified_email)
    .bind(p.created_at)
    .execute(c)
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

pub async fn provider(c: &mut Conn, name: &str) -> Result<Option<ProviderRow>, StoreError> {
    let q = format!("SELECT {PROVIDER_COLS} FROM providers WHERE name = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q))
        .bind(name)
        .fetch_optional(c)
        .await?)
}

pub async fn providers(c: &mut Conn) -> Result<Vec<ProviderRow>, StoreError> {
    let q = format!("SELECT {PROVIDER_COLS} FROM providers ORDER BY name");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(c).await?)
}

/// Removes a provider and ends the sessions that came from it (through
/// `keys::delete_key`, so connectors hear of each).
pub async fn delete_provider(c: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let sessions: Vec<(String,)> = sqlx::query_as("SELECT key_id FROM provider_sessions WHERE provider = $1")
        .bind(name)
        .fetch_all(&mut *c)
        .await?;
    for (id,) in sessions {
        crate::keys::delete_key(c, &id).await?;
    }
    for table in ["provider_sessions", "provider_links", "oidc_pending"] {
        let q = format!("DELETE FROM {table} WHERE provider = $1");
        sqlx::query(sqlx::AssertSqlSafe(q)).bind(name).execute(&mut *c).await?;
    }
    sqlx::query("DELETE FROM group_members WHERE provider = $1")
        .bind(name)
        .execute(&mut *c)
        .await?;
    let r = sqlx::query("DELETE FROM providers WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

#[derive(Debug, Clone, FromRow)]
pub struct PendingRow {
    pub state: String,
    pub provider: String,
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    pub rd: Option<String>,
    pub created_at: i64,
    /// The client address that started it.
    pub source: String,
}

/// Forgets logins started before `before` and never finished.
pub async fn prune_pending(c: &mut Conn, before: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM oidc_pending WHERE created_at < $1")
        .bind(before)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn insert_pending(c: &mut Conn, p: &PendingRow, prune_before: i64) -> Result<(), StoreError> {
    prune_pending(c, prune_before).await?;
    sqlx::query(
        "INSERT INTO oidc_pending (state, provider, nonce, verifier, redirect_uri, rd, created_at, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&p.state)
    .bind(&p.provider)
    .bind(&p.nonce)
    .bind(&p.verifier)
    .bind(&p.redirect_uri)
    .bind(&p.rd)
    .bind(p.created_at)
    .bind(&p.source)
    .execute(c)
    .await?;
    Ok(())
}

/// Pending logins in all, and those `source` started.
pub async fn pending_counts(c: &mut Conn, source: &str) -> Result<(i64, i64), StoreError> {
    Ok(
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(CASE WHEN source = $1 THEN 1 ELSE 0 END), 0) FROM oidc_pending")
            .bind(source)
            .fetch_one(c)
            .await?,
    )
}

/// The provider of a pending login, without taking it.
pub async fn pending_provider(c: &mut Conn, state: &str) -> Result<Option<String>, StoreError> {
    let r: Option<(String,)> = sqlx::query_as("SELECT provider FROM oidc_pending WHERE state = $1")
        .bind(state)
        .fetch_optional(c)
        .await?;
    Ok(r.map(|x| x.0))
}

/// Takes a pending login: it is deleted as it is read, and only the
/// request whose delete removed it gets it, so a state works once even
/// under concurrent requests.
pub async fn take_pending(c: &mut Conn, state: &str) -> Result<Option<PendingRow>, StoreError> {
    let row: Option<PendingRow> = sqlx::query_as(
        "SELECT state, provider, nonce, verifier, redirect_uri, rd, created_at, source FROM oidc_pending WHERE state = $1",
    )
    .bind(state)
    .fetch_optional(&mut *c)
    .await?;
    if row.is_none() {
        return Ok(None);
    }
    let r = sqlx::query("DELETE FROM oidc_pending WHERE state = $1")
        .bind(state)
        .execute(c)
        .await?;
    Ok(row.filter(|_| r.rows_affected() == 1))
}

/// The user a provider subject is linked to.
pub async fn linked_user(c: &mut Conn, provider: &str, subject: &str) -> Result<Option<String>, StoreError> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT user_id FROM provider_links WHERE provider = $1 AND subject = $2")
            .bind(provider)
            .bind(subject)
            .fetch_optional(c)
            .await?;
    Ok(r.map(|x| x.0))
}

/// The provider subjects linked to a user.
pub async fn links_of(c: &mut Conn, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT provider, subject FROM provider_links WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(c)
            .await?,
    )
}

pub async fn link(c: &mut Conn, provider: &str, subject: &str, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO provider_links (provider, subject, user_id) VALUES ($1, $2, $3)")
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Claims a due refresh: true for the one request that moved
/// `refreshed_at` from `seen`, so only it talks to the provider.
pub async fn claim_refresh(c: &mut Conn, key_id: &str, seen: i64, now: i64) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE provider_sessions SET refreshed_at = $1 WHERE key_id = $2 AND refreshed_at = $3")
        .bind(now)
        .bind(key_id)
        .bind(seen)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone, FromRow)]
pub struct ProviderSessionRow {
    pub key_id: String,
    pub provider: String,
    pub refresh_sealed: Option<String>,
    pub refreshed_at: i64,
}

pub async fn put_provider_session(c: &mut Conn, s: &ProviderSessionRow) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM provider_sessions WHERE key_id = $1")
        .bind(&s.key_id)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "INSERT INTO provider_sessions (key_id, provider, refresh_sealed, refreshed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&s.key_id)
    .bind(&s.provider)
    .bind(&s.refresh_sealed)
    .bind(s.refreshed_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn provider_session(c: &mut Conn, key_id: &str) -> Result<Option<ProviderSessionRow>, StoreError> {
    Ok(
        sqlx::query_as(
            "SELECT key_id, provider, refresh_sealed, refreshed_at FROM provider_sessions WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(c)
        .await?,
    )
}

/// Group names whose membership for `user_id` came from `provider`.
pub async fn provider_groups(c: &mut Conn, user_id: &str, provider: &str) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.id, g.name FROM group_members m JOIN infra_groups g ON g.id = m.group_id \
         WHERE m.user_id = $1 AND m.provider = $2 ORDER BY g.name",
    )
    .bind(user_id)
    .bind(provider)
    .fetch_all(c)
    .await?)
}

/// Adds a membership from `provider`; a membership an admin made stays
/// theirs (and is not removed by a later sync).
pub async fn add_provider_member(
    c: &mut Conn,
    group_id: &str,
    user_id: &str,
    provider: &str,
) -> Result<bool, StoreError> {
    let exists: Option<(String,)> =
        sqlx::query_as("SELECT group_id FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .fetch_optional(&mut *c)
            .await?;
    if exists.is_some() {
        return Ok(false);
    }
    sqlx::query("INSERT INTO group_members (group_id, user_id, provider) VALUES ($1, $2, $3)")
        .bind(group_id)
        .bind(user_id)
        .bind(provider)
        .execute(c)
        .await?;
    Ok(true)
}

pub async fn remove_provider_member(
    c: &mut Conn,
    group_id: &str,
    user_id: &str,
    provider: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 AND provider = $3")
        .bind(group_id)
        .bind(user_id)
        .bind(provider)
        .execute(c)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct WorkloadIssuerRow {
    pub name: String,
    pub issuer: String,
    pub jwks_url: Option<String>,
    /// A JWKS document given inline (from a file).
    pub jwks: Option<String>,
    pub audience: String,
    /// The claim whose value names the workload (`sub` by default).
    pub claim: String,
    /// JSON object: claim value → service account email.
    pub mappings: String,
    pub created_at: i64,
    /// The Kubernetes destination whose reported issuer and keys this
    /// issuer uses (`--from-cluster`), instead of `jwks`/`jwks_url`.
    pub cluster: Option<String>,
    /// The connector that served `cluster` when the issuer was made: only
    /// its reports are trusted.
    pub cluster_connector: Option<String>,
}

const ISSUER_COLS: &str =
    "name, issuer, jwks_url, jwks, audience, claim, mappings, created_at, cluster, cluster_connector";

pub async fn insert_workload_issuer(c: &mut Conn, w: &WorkloadIssuerRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workload_issuers (name, issuer, jwks_url, jwks, audience, claim, mappings, created_at, cluster, cluster_connector) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&w.name)
    .bind(&w.issuer)
    .bind(&w.jwks_url)
    .bind(&w.jwks)
    .bind(&w.audience)
    .bind(&w.claim)
    .bind(&w.mappings)
    .bind(w.created_at)
    .bind(&w.cluster)
    .bind(&w.cluster_connector)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn workload_issuers(c: &mut Conn) -> Result<Vec<WorkloadIssuerRow>, StoreError> {
    let q = format!("SELECT {ISSUER_COLS} FROM workload_issuers ORDER BY name");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(q)).fetch_all(c).await?)
}

pub async fn delete_workload_issuer(c: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM workload_issuers WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}
