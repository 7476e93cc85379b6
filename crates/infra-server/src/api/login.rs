//! Login, logout and "who am I".
//!
//! Password checks take the same time and give the same answer whether or
//! not the account exists. Attempts are throttled in the store (see
//! `infra_auth::lockout` for the policy): each attempt is counted *before*
//! the password is checked, in one serialised write, so concurrent attempts
//! cannot all pass the lock check before any failure is recorded; a success
//! then gives back what it took.

use axum::Json;
use axum::extract::State;
use infra_api::{Info, LoginRequest, LoginResponse};
use infra_auth::lockout::{FREE_FAILURES, FREE_FAILURES_PER_ACCOUNT, FREE_FAILURES_PER_ADDRESS, lock_for};
use infra_auth::{Secret, access_key, password};
use infra_store::{AccessKeyRow, LoginFailure, UserRow, identity, keys, now_ms};

use crate::audit::{self, Event};
use crate::authn::{Caller, Source};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;
use crate::wire::{ms, time};

const BAD_LOGIN: &str = "invalid email or password";

/// Log in with a password or an access key; returns a session key.
#[utoipa::path(post, path = "/api/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = infra_api::ErrorBody), (status = 429, body = infra_api::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Source(source): Source,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let addr_bucket = format!("addr:{source}");
    if let Some(name) = req.provider.clone() {
        return with_provider(&state, &source, &addr_bucket, &name, req).await;
    }
    match (req.email, req.password, req.access_key) {
        (Some(email), Some(pw), None) => with_password(&state, &source, &addr_bucket, &email, pw).await,
        (None, None, Some(key)) => with_key(&state, &source, &addr_bucket, &key).await,
        _ => Err(ApiError::bad_request("send either email and password, or accessKey")),
    }
}

/// A login through identity provider `name`, finishing a code or device
/// grant the CLI started.
async fn with_provider(
    state: &AppState,
    source: &str,
    addr_bucket: &str,
    name: &str,
    req: LoginRequest,
) -> ApiResult<Json<LoginResponse>> {
    if req.email.is_some() || req.password.is_some() || req.access_key.is_some() {
        return Err(ApiError::bad_request(
            "a provider login takes no email, password or accessKey",
        ));
    }
    check_lock(state, &[addr_bucket], name, source).await?;
    let grant = match (req.code, req.state, req.device_code) {
        (Some(code), Some(st), None) => super::provider_login::Grant::Code {
            code,
            state: st,
            redirect_uri: Some(req.redirect_uri.ok_or_else(|| {
                ApiError::bad_request("redirectUri is required with a code: the one the login started with")
            })?),
        },
        (None, None, Some(device_code)) => super::provider_login::Grant::Device { device_code },
        _ => {
            return Err(ApiError::bad_request(
                "a provider login takes code and state (from the redirect), or deviceCode",
            ));
        }
    };
    super::provider_login::login(state, source, name, grant)
        .await
        .map(|(r, _)| Json(r))
}

/// A login with email and password, throttled per pair, account and
/// address.
async fn with_password(
    state: &AppState,
    source: &str,
    addr_bucket: &str,
    email: &str,
    pw: String,
) -> ApiResult<Json<LoginResponse>> {
    let email = email.trim().to_ascii_lowercase();
    let pair_bucket = format!("pair:{email}|{source}");
    let account_bucket = format!("email:{email}");
    let buckets = [
        (pair_bucket.as_str(), FREE_FAILURES),
        (account_bucket.as_str(), FREE_FAILURES_PER_ACCOUNT),
        (addr_bucket, FREE_FAILURES_PER_ADDRESS),
    ];
    reserve(state, &buckets, &email, source).await?;
    let mut c = state.store.conn().await?;
    let user = identity::user_by_email(&mut c, &email).await?;
    drop(c);
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let pw = Secret::new(pw);
    let ok = crate::hashing::argon(state, move || password::verify(&pw, stored.as_deref())).await?;
    match user {
        Some(user) if ok => {
            // The address keeps its count (a success on one's own
            // account must not buy more guesses at others'); only
            // this attempt is given back.
            refund(state, &[(addr_bucket, FREE_FAILURES_PER_ADDRESS)]).await?;
            let required = user.password_update_required != 0;
            start_session(
                state,
                user,
                source,
                "password",
                &[&pair_bucket, &account_bucket],
                required,
            )
            .await
        }
        _ => Err(fail(state, &email, source).await),
    }
}

/// A login with an access key of one's own (not a borrowed one), throttled
/// per address.
async fn with_key(state: &AppState, source: &str, addr_bucket: &str, key: &str) -> ApiResult<Json<LoginResponse>> {
    let buckets = [(addr_bucket, FREE_FAILURES_PER_ADDRESS)];
    reserve(state, &buckets, "access key", source).await?;
    let mut c = state.store.conn().await?;
    let now = now_ms();
    let found = match access_key::parse(key) {
        Some((id, secret)) => keys::key_by_id(&mut c, id)
            .await?
            .filter(|k| access_key::secret_matches(secret, &k.secret_hash))
            .filter(|k| k.expires_at.is_none_or(|e| e > now))
            .filter(|k| k.inactivity_timeout_ms.is_none_or(|t| k.last_used_at + t > now)),
        None => None,
    };
    let user = match found.as_ref().and_then(|k| k.user_id.clone()) {
        Some(uid) => identity::user_by_id(&mut c, &uid).await?,
        None => None,
    };
    drop(c);
    let (Some(k), Some(user)) = (found, user) else {
        let err = fail(state, "access key", source).await;
        return Err(if err.status == axum::http::StatusCode::UNAUTHORIZED {
            ApiError::unauthorized("access key is invalid, expired or revoked")
        } else {
            err
        });
    };
    refund(state, &buckets).await?;
    let mut c = state.store.conn().await?;
    // A fresh session would outlive what it was borrowed from.
    if crate::authn::lender_of(&mut c, &k).await?.is_some() {
        return Err(ApiError::forbidden(
            "this key is borrowed (a workload's exchanged session, an identity-provider session, or a key made with one) and cannot start a new session: use it directly as a bearer key, or log in with 'infra login --provider NAME'",
        ));
    }
    keys::touch_key(&mut c, &k.id, now).await?;
    drop(c);
    // A session from a key lasts no longer than the key.
    let mut json = start_session(state, user, source, "access key", &[], false).await?;
    if let Some(exp) = k.expires_at {
        cap_session(state, &mut json, exp).await?;
    }
    Ok(json)
}

/// Refuses while any bucket is locked; audits the refusal.
async fn check_lock(state: &AppState, buckets: &[&str], who: &str, source: &str) -> ApiResult<()> {
    let mut c = state.store.conn().await?;
    let now = now_ms();
    let mut until = 0;
    for b in buckets {
        if let Some(f) = keys::login_failure(&mut c, b).await? {
            until = until.max(f.locked_until);
        }
    }
    drop(c);
    if until > now {
        return Err(locked(state, until - now, who, source).await);
    }
    Ok(())
}

/// The refusal while a bucket is locked for `left_ms` more: audited, 429.
async fn locked(state: &AppState, left_ms: i64, who: &str, source: &str) -> ApiError {
    let secs = (left_ms + 999) / 1000;
    let ev = Event::new(who, "login", who, source)
        .result("failure")
        .detail(format!("refused: locked for {secs}s after repeated failures"));
    if let Err(e) = audit::record(state, ev).await {
        return e.into();
    }
    ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins; try again in {secs} seconds"),
    )
}

/// Counts this attempt as a failure in every bucket before the credential
/// is checked, or refuses (429, audited) while any bucket is locked. One
/// serialised write: of many concurrent attempts, only as many pass as the
/// budget allows.
async fn reserve(state: &AppState, buckets: &[(&str, i64)], who: &str, source: &str) -> ApiResult<()> {
    let mut tx = state.store.write().await?;
    let now = now_ms();
    let mut until = 0;
    let mut rows = Vec::with_capacity(buckets.len());
    for (b, free) in buckets {
        let prev = keys::login_failure(tx.conn(), b).await?;
        until = until.max(prev.as_ref().map_or(0, |p| p.locked_until));
        // Failures older than the longest lock are forgotten.
        let failures = match prev {
            Some(p) if now - p.last_failure_at < ms(infra_auth::lockout::MAX_LOCK) => p.failures + 1,
            _ => 1,
        };
        rows.push(LoginFailure {
            bucket: (*b).to_owned(),
            failures,
            locked_until: now + ms(lock_for(failures, *free)),
            last_failure_at: now,
        });
    }
    if until > now {
        drop(tx);
        return Err(locked(state, until - now, who, source).await);
    }
    for row in &rows {
        keys::put_login_failure(tx.conn(), row).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Gives back the attempt [`reserve`] counted in these buckets, after a
/// success: one failure fewer, and no lock unless the rest still earn one.
async fn refund(state: &AppState, buckets: &[(&str, i64)]) -> ApiResult<()> {
    let mut tx = state.store.write().await?;
    for (b, free) in buckets {
        if let Some(mut f) = keys::login_failure(tx.conn(), b).await? {
            f.failures = (f.failures - 1).max(0);
            f.locked_until = f.last_failure_at + ms(lock_for(f.failures, *free));
            keys::put_login_failure(tx.conn(), &f).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Audits a failed attempt (already counted by [`reserve`]) and returns
/// the error.
async fn fail(state: &AppState, who: &str, source: &str) -> ApiError {
    let ev = Event::new(who, "login", who, source)
        .result("failure")
        .detail(BAD_LOGIN);
    match audit::record(state, ev).await {
        Ok(()) => ApiError::unauthorized(BAD_LOGIN),
        Err(e) => e.into(),
    }
}

pub(crate) async fn start_session(
    state: &AppState,
    user: UserRow,
    source: &str,
    method: &str,
    clear: &[&str],
    password_update_required: bool,
) -> ApiResult<Json<LoginResponse>> {
    let now = now_ms();
    let k = access_key::generate().map_err(ApiError::internal)?;
    let expires = now + ms(state.settings.session_ttl);
    let mut tx = state.store.write().await?;
    for b in clear {
        keys::clear_login_failures(tx.conn(), b).await?;
    }
    keys::insert_key(
        tx.conn(),
        &AccessKeyRow {
            id: k.id.clone(),
            name: format!("session-{}", &k.id[..6]),
            kind: infra_store::KeyKind::Session,
            user_id: Some(user.id.clone()),
            user_email: None,
            secret_hash: k.secret_hash.clone(),
            created_at: now,
            expires_at: Some(expires),
            inactivity_timeout_ms: Some(ms(state.settings.session_inactivity)),
            last_used_at: now,
            lender_id: None,
        },
    )
    .await?;
    identity::touch_user(tx.conn(), &user.id, now).await?;
    let groups = identity::groups_of_user(tx.conn(), &user.id).await?;
    let ev = Event::new(&user.email, "login", &user.email, source).detail(format!("method={method} session={}", k.id));
    audit::commit(state, tx, ev).await?;
    Ok(Json(LoginResponse {
        access_key: k.full.expose().clone(),
        expires: time(expires),
        user: super::users::to_api(&user, groups.into_iter().map(|g| g.name).collect()),
        password_update_required,
        notice: None,
    }))
}

/// Shortens the session just made to end at `exp`.
pub(crate) async fn cap_session(state: &AppState, resp: &mut Json<LoginResponse>, exp: i64) -> ApiResult<()> {
    let id = resp.access_key.split('.').next().unwrap_or_default().to_owned();
    let mut tx = state.store.write().await?;
    if let Some(k) = keys::key_by_id(tx.conn(), &id).await?
        && k.expires_at.is_none_or(|e| e > exp)
    {
        keys::set_key_expiry(tx.conn(), &id, exp).await?;
        resp.expires = time(exp);
    }
    tx.commit().await?;
    Ok(())
}

/// End the current session.
#[utoipa::path(post, path = "/api/logout", tag = "auth", responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::http::StatusCode> {
    let mut tx = state.store.write().await?;
    if caller.key_kind == infra_store::KeyKind::Session {
        keys::delete_key(tx.conn(), &caller.key_id).await?;
    }
    audit::commit(&state, tx, caller.event("logout", caller.email())).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The caller, their role on Infra and their grants.
#[utoipa::path(get, path = "/api/info", tag = "auth", responses((status = 200, body = Info)), security(("accessKey" = [])))]
pub(crate) async fn info(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Info>> {
    let mut c = state.store.conn().await?;
    let filter = infra_store::GrantFilter {
        user_id: Some(caller.user.id.clone()),
        via_groups: caller.groups.iter().map(|g| g.id.clone()).collect(),
        ..Default::default()
    };
    // Every grant, page by page: a user may hold more than one page's worth.
    let mut grants = Vec::new();
    let mut page = 1;
    loop {
        let (rows, total) = identity::list_grants(&mut c, &filter, now_ms(), page, infra_api::MAX_LIMIT).await?;
        let n = rows.len();
        grants.extend(rows);
        if n == 0 || grants.len() as u64 >= total {
            break;
        }
        page += 1;
    }
    let mut urls = std::collections::BTreeMap::new();
    let mut kinds = std::collections::BTreeMap::new();
    for g in &grants {
        let dest = g.resource.split('.').next().unwrap_or(&g.resource).to_owned();
        if dest != infra_core::INFRA_RESOURCE && !urls.contains_key(&dest) {
            urls.insert(dest.clone(), super::destinations::url_of(&state, &dest));
            if let Some(d) = infra_store::connectors::destination(&mut c, &dest).await? {
                kinds.insert(dest, d.kind.as_str().to_owned());
            }
        }
    }
    Ok(Json(Info {
        server_version: env!("CARGO_PKG_VERSION").into(),
        user: super::users::to_api(&caller.user, caller.groups.iter().map(|g| g.name.clone()).collect()),
        infra_role: caller.role.map(|r| r.as_str().to_owned()),
        grants: grants.iter().map(super::grants::to_api).collect(),
        session_expires: caller.key_expires.map(time),
        urls,
        kinds,
    }))
}
