//! The server's token signing keys: kept in the store with the private key
//! sealed, the newest unretired one signs, and retired keys stay in the
//! JWKS until every token they signed has expired.

use infra_auth::envelope;
use infra_auth::jwt::{Jwks, SigningKey};
use infra_store::{SigningKeyRow, keys, now_ms};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// Makes a key and stores it (sealed) inside the caller's transaction.
pub(crate) async fn create(c: &mut infra_store::Conn, state: &AppState) -> ApiResult<SigningKey> {
    let key = SigningKey::generate().map_err(ApiError::internal)?;
    let sealed = envelope::seal(&state.root_key, &context(&key.kid), key.pkcs8()).map_err(ApiError::internal)?;
    keys::insert_signing_key(
        c,
        &SigningKeyRow {
            kid: key.kid.clone(),
            public_x: key.public_x.clone(),
            private_sealed: sealed,
            created_at: now_ms(),
            retired_at: None,
        },
    )
    .await?;
    Ok(key)
}

/// The key that signs new tokens.
pub(crate) async fn active(state: &AppState) -> ApiResult<SigningKey> {
    let mut c = state.store.conn().await?;
    let rows = keys::signing_keys(&mut c).await?;
    let row = rows
        .into_iter()
        .find(|r| r.retired_at.is_none())
        .ok_or_else(|| ApiError::internal("no active signing key"))?;
    let pkcs8 = envelope::open(&state.root_key, &context(&row.kid), &row.private_sealed).map_err(ApiError::internal)?;
    SigningKey::from_pkcs8(pkcs8.expose().clone()).map_err(ApiError::internal)
}

/// How long a retired key is still published: the longest a token it
/// signed can live, plus clock skew.
pub(crate) fn retention_ms(state: &AppState) -> i64 {
    let ttl = i64::try_from(state.settings.token_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    ttl + i64::try_from(infra_auth::jwt::LEEWAY_SECS * 1000).unwrap_or(0) + 60_000
}

/// The published key set: the active key and retired keys still within
/// their tokens' lifetime.
pub(crate) async fn jwks(state: &AppState) -> ApiResult<Jwks> {
    let mut c = state.store.conn().await?;
    let cutoff = now_ms() - retention_ms(state);
    let rows = keys::signing_keys(&mut c).await?;
    let keys = rows
        .iter()
        .filter(|r| r.retired_at.is_none_or(|t| t > cutoff))
        .map(|r| infra_auth::jwt::Jwk::ed25519(&r.kid, &r.public_x))
        .collect();
    Ok(Jwks { keys })
}

const ES_SECRET: &str = "issuer_es256";

/// The P-256 key for issuer tokens (`--issuer-alg ES256`), made on first
/// use and kept sealed like the others.
pub(crate) async fn issuer_es256(state: &AppState) -> ApiResult<infra_auth::jwt::EsKey> {
    let mut c = state.store.conn().await?;
    let found = keys::sealed_secret(&mut c, ES_SECRET).await?;
    drop(c);
    let sealed = match found {
        Some((_, sealed)) => sealed,
        None => {
            let mut tx = state.store.write().await?;
            let sealed = match keys::sealed_secret(tx.conn(), ES_SECRET).await? {
                Some((_, s)) => s,
                None => {
                    let k = infra_auth::jwt::EsKey::generate().map_err(ApiError::internal)?;
                    let s = envelope::seal(&state.root_key, ES_SECRET, k.pkcs8()).map_err(ApiError::internal)?;
                    keys::insert_sealed_secret(tx.conn(), ES_SECRET, &k.kid, &s).await?;
                    s
                }
            };
            tx.commit().await?;
            sealed
        }
    };
    let pkcs8 = envelope::open(&state.root_key, ES_SECRET, &sealed).map_err(ApiError::internal)?;
    infra_auth::jwt::EsKey::from_pkcs8(pkcs8.expose().clone()).map_err(ApiError::internal)
}
