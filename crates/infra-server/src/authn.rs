//! Who is calling: the access key in `Authorization: Bearer`, checked
//! against the store on every request (so a revoked key or removed user is
//! refused at once, on every replica), and what they may do to Infra.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use infra_core::{INFRA_RESOURCE, InfraRole};
use infra_store::{GroupRow, KeyKind, UserRow, identity, keys, now_ms};

use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult};
use crate::idp::refresh::RefreshError;
use crate::state::AppState;

/// An authenticated caller. Cloned only by the console, which calls
/// several API handlers for one page.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) user: UserRow,
    pub(crate) groups: Vec<GroupRow>,
    pub(crate) key_id: String,
    pub(crate) key_kind: KeyKind,
    pub(crate) key_expires: Option<i64>,
    /// The borrowed session this key lives on, if any: keys it makes for
    /// itself end with that session.
    pub(crate) lender: Option<String>,
    pub(crate) role: Option<InfraRole>,
    pub(crate) source: String,
}

/// The client's address, for audit and throttling.
pub(crate) struct Source(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Source(addr.unwrap_or_else(|| "unknown".into())))
    }
}

/// Don't write `last_used_at` on every request: once a minute is enough
/// precision for inactivity timeouts and saves a write per call.
const TOUCH_EVERY_MS: i64 = 60_000;

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Source(source) = Source::from_request_parts(parts, state).await?;
        let Some(key) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "not logged in; run 'infra login' (send Authorization: Bearer <access key>)",
            ));
        };
        let key = key.to_owned();
        Caller::from_key(state, &key, source, may_act_before_password_change(parts)).await
    }
}

impl Caller {
    /// Authenticates an access key (from a bearer header or, for the
    /// browser flow only, the server's session cookie).
    pub(crate) async fn from_key(
        state: &AppState,
        key: &str,
        source: String,
        password_change_ok: bool,
    ) -> ApiResult<Self> {
        let invalid = || ApiError::unauthorized("access key is invalid, expired or revoked; run 'infra login' again");
        let (id, secret) = infra_auth::access_key::parse(key).ok_or_else(invalid)?;
        let mut c = state.store.conn().await?;
        let row = keys::key_by_id(&mut c, id).await?.ok_or_else(invalid)?;
        if !infra_auth::access_key::secret_matches(secret, &row.secret_hash) {
            return Err(invalid());
        }
        let now = now_ms();
        if row.expires_at.is_some_and(|e| e <= now) {
            return Err(invalid());
        }
        if row.inactivity_timeout_ms.is_some_and(|t| row.last_used_at + t <= now) {
            return Err(invalid());
        }
        let Some(user_id) = row.user_id.as_deref() else {
            return Err(ApiError::forbidden("connector keys cannot call the user API"));
        };
        let user = identity::user_by_id(&mut c, user_id).await?.ok_or_else(invalid)?;
        // A key made from a borrowed session ends with it, however the
        // session ends: deleted (a provider that disabled the user, a
        // logout), expired, or unused past its inactivity timeout.
        if let Some(l) = &row.lender_id {
            let ended = keys::key_by_id(&mut c, l).await?.is_none_or(|lender| {
                lender.expires_at.is_some_and(|e| e <= now)
                    || lender
                        .inactivity_timeout_ms
                        .is_some_and(|t| lender.last_used_at + t <= now)
            });
            if ended {
                return Err(invalid());
            }
            // A provider session is asked again on its schedule, whichever
            // key of it is in use: a user disabled at the provider is
            // noticed even if only a derived key is ever used.
            drop(c);
            crate::idp::refresh::refresh_if_due(state, l, &user, &source).await?;
            c = state.store.conn().await?;
        }
        let lender = lender_of(&mut c, &row).await?;
        let mut from_provider = false;
        if row.kind == KeyKind::Session {
            // A session from an identity provider: its groups are read
            // again (or the session ended) when a refresh is due.
            drop(c);
            from_provider = crate::idp::refresh::refresh_if_due(state, &row.id, &user, &source).await?;
            c = state.store.conn().await?;
        }
        // A one-time password is for password logins; a provider session
        // never used it.
        if user.password_update_required != 0 && !password_change_ok && !from_provider {
            return Err(ApiError::forbidden(
                "you must change your password first: run 'infra login' again (it asks for a new one)",
            ));
        }
        let groups = identity::groups_of_user(&mut c, user_id).await?;
        let roles = identity::roles_on(&mut c, user_id, INFRA_RESOURCE, now).await?;
        // Touch often enough that a short inactivity timeout never ends a
        // key that is in use.
        let touch_every = row
            .inactivity_timeout_ms
            .map_or(TOUCH_EVERY_MS, |t| (t / 4).min(TOUCH_EVERY_MS));
        if now - row.last_used_at > touch_every {
            keys::touch_key(&mut c, &row.id, now).await?;
            identity::touch_user(&mut c, user_id, now).await?;
        }
        Ok(Caller {
            role: InfraRole::strongest(roles.iter().map(String::as_str)),
            user,
            groups,
            key_id: row.id,
            key_kind: row.kind,
            key_expires: row.expires_at,
            lender,
            source,
        })
    }
}

/// The borrowed session a key lives on: the one it was made from, or the
/// key itself when it is a borrowed session (a workload's exchanged
/// session, or a session an identity provider may end). `None` for keys
/// that stand on their own. The one rule for "borrowed", used wherever a
/// key could outlive its lender.
pub(crate) async fn lender_of(c: &mut infra_store::Conn, row: &infra_store::AccessKeyRow) -> ApiResult<Option<String>> {
    if let Some(l) = &row.lender_id {
        return Ok(Some(l.clone()));
    }
    if row.kind == KeyKind::Exchange || infra_store::providers::provider_session(c, &row.id).await?.is_some() {
        return Ok(Some(row.id.clone()));
    }
    Ok(None)
}

/// With a password set by an admin, a session may only change it, look
/// at itself, or end.
fn may_act_before_password_change(parts: &Parts) -> bool {
    let path = parts.uri.path();
    (parts.method == axum::http::Method::PUT && path.contains("/users/"))
        || path.ends_with("/logout")
        || path.ends_with("/info")
}

impl Caller {
    pub(crate) fn email(&self) -> &str {
        &self.user.email
    }

    pub(crate) fn event(&self, action: &'static str, target: &str) -> Event {
        Event::new(&self.user.email, action, target, &self.source)
    }

    /// Refuses, and audits the denial, unless the caller holds `needed` on
    /// `infra`. `what` completes "you need role X on infra to …".
    pub(crate) async fn require(&self, state: &AppState, needed: InfraRole, what: &str, target: &str) -> ApiResult<()> {
        if self.role.is_some_and(|r| r.satisfies(needed)) {
            return Ok(());
        }
        self.deny(state, needed, what, target).await
    }

    pub(crate) async fn deny(&self, state: &AppState, needed: InfraRole, what: &str, target: &str) -> ApiResult<()> {
        let have = self.role.map_or("no role", InfraRole::as_str);
        let msg = format!(
            "you need role {} on infra to {what} (you have {have}); ask an admin to run: infra grants add {} infra --role {}",
            needed.as_str(),
            self.email(),
            needed.as_str()
        );
        let ev = self
            .event("authz.deny", target)
            .result("denied")
            .detail(format!("{what}: needs {}", needed.as_str()));
        audit::record(state, ev).await?;
        Err(ApiError::forbidden(msg))
    }
}

/// What a client hears when its provider session could not be refreshed.
impl From<RefreshError> for ApiError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::Ended { ref provider, .. } => ApiError::unauthorized(format!(
                "your session ended: {e}; log in again with 'infra login --provider {provider}'"
            )),
            RefreshError::Store(e) => e.into(),
            RefreshError::Sealing(_) => ApiError::internal(e),
        }
    }
}
