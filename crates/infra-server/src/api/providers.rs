//! Identity providers: adding them, and logging people in through them
//! (authorization code with PKCE from the CLI or a browser, or the device
//! grant), with users made at first login and groups from the provider.
//!
//! A session that came from a provider keeps its refresh token (sealed).
//! Every `--provider-refresh` the server refreshes it and reads the user's
//! groups again; a provider that refuses the refresh (user disabled,
//! consent withdrawn) ends the Infra session.

use axum::Json;
use axum::extract::{Path, State};
use infra_api::{AuthorizeRequest, AuthorizeResponse, DeviceStart, LoginResponse, ProviderCreate, ProviderInfo};
use infra_auth::envelope;
use infra_core::{GroupName, InfraRole};
use infra_store::providers::{self, PendingRow, ProviderRow, ProviderSessionRow};
use infra_store::{GroupRow, UserRow, identity, now_ms};
use serde_json::Value;

use super::{Body, ms, time};
use crate::audit::{self, Event};
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::oidc::{Discovery, Oidc, Tokens};
use crate::state::AppState;

/// A login started must finish within this.
const PENDING_MS: i64 = 10 * 60_000;
/// The longest a provider session without a refresh token lasts: Infra
/// cannot ask the provider again, so it asks the user to log in again.
pub(crate) const NO_REFRESH_SESSION: std::time::Duration = std::time::Duration::from_secs(3600);
/// Sign-ins one address may have started and not finished within
/// [`PENDING_MS`]: anyone may start one, so each costs a bounded row.
const MAX_PENDING_PER_SOURCE: i64 = 30;
/// All unfinished sign-ins, from every address together.
const MAX_PENDING: i64 = 10_000;
const DEFAULT_SCOPES: &str = "openid email profile groups";

fn secret_context(name: &str) -> String {
    format!("provider:{name}")
}

fn to_api(p: &ProviderRow) -> ProviderInfo {
    ProviderInfo {
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        client_id: p.client_id.clone(),
        groups_claim: p.groups_claim.clone(),
        scopes: p.scopes.split_whitespace().map(str::to_owned).collect(),
        allowed_domains: p
            .allowed_domains
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        created: time(p.created_at),
        notice: None,
    }
}

/// Add a provider. Its discovery document is fetched first, so a wrong
/// issuer is refused now rather than at the first login.
#[utoipa::path(post, path = "/api/providers", tag = "providers", request_body = ProviderCreate,
    responses((status = 201, body = ProviderInfo), (status = 400, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ProviderCreate>,
) -> ApiResult<(axum::http::StatusCode, Json<ProviderInfo>)> {
    caller
        .require(&state, InfraRole::Admin, "add identity providers", "providers")
        .await?;
    if req.name.is_empty()
        || req.name.len() > 64
        || !req
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ApiError::bad_request(
            "provider name: 1 to 64 lower-case letters, digits and -",
        ));
    }
    if req.client_id.is_empty() || req.client_secret.is_empty() {
        return Err(ApiError::bad_request("clientId and clientSecret are required"));
    }
    let issuer = req.issuer.trim().to_owned();
    // Keys and discovery over plain HTTP could be swapped on the way; only
    // a provider on this machine may use it.
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| issuer.starts_with(p) && issuer[p.len()..].starts_with([':', '/']) || issuer == *p);
    if !issuer.starts_with("https://") && !loopback {
        return Err(ApiError::bad_request(
            "issuer must be an https:// URL (plain http only for a provider on this machine)",
        ));
    }
    let discovery = state
        .oidc
        .discover(&issuer)
        .await
        .map_err(|e| ApiError::bad_request(e.describe(&req.name)))?;
    // Without a refresh token Infra cannot see a user removed or disabled
    // at the provider: ask for one whenever the provider offers it.
    let scopes = if req.scopes.is_empty() {
        if discovery
            .scopes_supported
            .iter()
            .any(|s| s == crate::oidc::OFFLINE_ACCESS)
        {
            format!("{DEFAULT_SCOPES} {}", crate::oidc::OFFLINE_ACCESS)
        } else {
            DEFAULT_SCOPES.to_owned()
        }
    } else {
        let mut s = req.scopes.clone();
        if !s.iter().any(|x| x == "openid") {
            s.insert(0, "openid".into());
        }
        s.join(" ")
    };
    let row = ProviderRow {
        name: req.name.clone(),
        issuer,
        client_id: req.client_id.clone(),
        client_secret_sealed: envelope::seal(
            &state.root_key,
            &secret_context(&req.name),
            req.client_secret.as_bytes(),
        )
        .map_err(ApiError::internal)?,
        groups_claim: req.groups_claim.clone().unwrap_or_else(|| "groups".into()),
        scopes,
        allowed_domains: req
            .allowed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(","),
        allow_unverified_email: i64::from(req.allow_unverified_email),
        created_at: now_ms(),
    };
    let mut tx = state.store.write().await?;
    if providers::provider(tx.conn(), &row.name).await?.is_some() {
        return Err(ApiError::conflict(format!("provider {} exists already", row.name)));
    }
    providers::insert_provider(tx.conn(), &row).await?;
    let ev = caller
        .event("provider.create", &row.name)
        .detail(format!("issuer={} client_id={}", row.issuer, row.client_id));
    audit::commit(&state, tx, ev).await?;
    let mut info = to_api(&row);
    if !info.scopes.iter().any(|s| s == crate::oidc::OFFLINE_ACCESS) {
        info.notice = Some(format!(
            "{} does not ask for {} here, so it may give no refresh token: a user removed or disabled at the provider then keeps access until their Infra session ends, which for such sessions is at most {}. Add {} to --scopes if the provider supports it.",
            row.name,
            crate::oidc::OFFLINE_ACCESS,
            infra_core::format_duration(NO_REFRESH_SESSION),
            crate::oidc::OFFLINE_ACCESS
        ));
    }
    Ok((axum::http::StatusCode::CREATED, Json(info)))
}

/// List providers (anyone may: a login page shows them).
#[utoipa::path(get, path = "/api/providers", tag = "providers", responses((status = 200, body = Vec<ProviderInfo>)))]
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ProviderInfo>>> {
    let mut c = state.store.conn().await?;
    Ok(Json(providers::providers(&mut c).await?.iter().map(to_api).collect()))
}

/// Remove a provider; sessions that came from it end.
#[utoipa::path(delete, path = "/api/providers/{name}", tag = "providers",
    responses((status = 204), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove identity providers", "providers")
        .await?;
    let mut tx = state.store.write().await?;
    if !providers::delete_provider(tx.conn(), &name).await? {
        return Err(ApiError::not_found(format!("no provider named {name}")));
    }
    audit::commit(&state, tx, caller.event("provider.delete", &name)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A provider with its secret and discovery document.
pub(crate) struct Provider {
    pub(crate) row: ProviderRow,
    secret: String,
    pub(crate) discovery: Discovery,
}

impl Provider {
    fn client(&self) -> (&str, &str) {
        (&self.row.client_id, &self.secret)
    }
}

pub(crate) async fn load(state: &AppState, name: &str) -> ApiResult<Provider> {
    let mut c = state.store.conn().await?;
    let row = providers::provider(&mut c, name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no identity provider named {name}; 'infra providers list' shows them"
        ))
    })?;
    drop(c);
    let secret = envelope::open(&state.root_key, &secret_context(name), &row.client_secret_sealed)
        .map_err(ApiError::internal)
        .and_then(|s| String::from_utf8(s.expose().clone()).map_err(ApiError::internal))?;
    let discovery = state.oidc.discover(&row.issuer).await.map_err(|e| e.into_api(name))?;
    Ok(Provider { row, secret, discovery })
}

/// Starts a code flow: a pending login (state, nonce, PKCE verifier) in the
/// store, and the URL to send the browser to.
pub(crate) async fn begin(
    state: &AppState,
    p: &Provider,
    redirect_uri: &str,
    rd: Option<String>,
    source: &str,
) -> ApiResult<AuthorizeResponse> {
    let pending = PendingRow {
        state: infra_auth::random_token(32).map_err(ApiError::internal)?,
        provider: p.row.name.clone(),
        nonce: infra_auth::random_token(32).map_err(ApiError::internal)?,
        verifier: infra_auth::random_token(64).map_err(ApiError::internal)?,
        redirect_uri: redirect_uri.to_owned(),
        rd,
        created_at: now_ms(),
        source: source.to_owned(),
    };
    let url = Oidc::authorization_url(
        &p.discovery,
        &p.row.client_id,
        redirect_uri,
        &p.row.scopes,
        &pending.state,
        &pending.nonce,
        &pending.verifier,
    )
    .map_err(|e| e.into_api(&p.row.name))?;
    let mut tx = state.store.write().await?;
    providers::prune_pending(tx.conn(), now_ms() - PENDING_MS).await?;
    let (all, mine) = providers::pending_counts(tx.conn(), source).await?;
    if mine >= MAX_PENDING_PER_SOURCE || all >= MAX_PENDING {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many sign-ins started and not finished; finish one, or try again in a few minutes",
        ));
    }
    providers::insert_pending(tx.conn(), &pending, now_ms() - PENDING_MS).await?;
    tx.commit().await?;
    Ok(AuthorizeResponse {
        url,
        state: pending.state,
    })
}

/// Start a login by authorization code: returns the URL to open. The CLI
/// sends the code and state that come back to its loopback listener to
/// `POST /api/login`.
#[utoipa::path(post, path = "/api/providers/{name}/authorize", tag = "providers", request_body = AuthorizeRequest,
    responses((status = 200, body = AuthorizeResponse)))]
pub(crate) async fn authorize(
    State(state): State<AppState>,
    crate::authn::Source(source): crate::authn::Source,
    Path(name): Path<String>,
    Body(req): Body<AuthorizeRequest>,
) -> ApiResult<Json<AuthorizeResponse>> {
    let u = url::Url::parse(&req.redirect_uri)
        .map_err(|_| ApiError::bad_request("redirectUri must be a URL such as http://127.0.0.1:PORT/callback"))?;
    // Only a loopback listener: anything else would send the code elsewhere.
    if u.scheme() != "http" || !matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) {
        return Err(ApiError::bad_request(
            "redirectUri must be a loopback address (http://127.0.0.1:PORT/...)",
        ));
    }
    let p = load(&state, &name).await?;
    Ok(Json(begin(&state, &p, &req.redirect_uri, None, &source).await?))
}

/// Start a device login: returns the code to enter at the provider.
#[utoipa::path(post, path = "/api/providers/{name}/device", tag = "providers", responses((status = 200, body = DeviceStart)))]
pub(crate) async fn device(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<DeviceStart>> {
    let p = load(&state, &name).await?;
    let d = state
        .oidc
        .device_authorize(&p.discovery, p.client(), &p.row.scopes)
        .await
        .map_err(|e| e.into_api(&name))?;
    Ok(Json(DeviceStart {
        device_code: d.device_code,
        user_code: d.user_code,
        verification_uri: d.verification_uri,
        verification_uri_complete: d.verification_uri_complete,
        interval: d.interval.unwrap_or(5),
        expires_in: d.expires_in,
    }))
}

/// How a provider login proves itself.
pub(crate) enum Grant {
    Code {
        code: String,
        state: String,
        redirect_uri: Option<String>,
    },
    Device {
        device_code: String,
    },
}

/// Logs in through provider `name`. Returns the session and, for a browser
/// login, where to go next.
pub(crate) async fn login(
    state: &AppState,
    source: &str,
    name: &str,
    grant: Grant,
) -> ApiResult<(LoginResponse, Option<String>)> {
    let fail = |why: String, status: ApiError| {
        let state = state.clone();
        let ev = Event::new(&format!("provider:{name}"), "login", name, source)
            .result("failure")
            .detail(why);
        async move {
            audit::record(&state, ev).await?;
            Err::<(LoginResponse, Option<String>), _>(status)
        }
    };
    let p = match load(state, name).await {
        Ok(p) => p,
        Err(e) => return fail(e.message.clone(), e).await,
    };
    let (tokens, nonce, rd) = match grant {
        Grant::Code {
            code,
            state: st,
            redirect_uri,
        } => {
            let mut c = state.store.conn().await?;
            let pending = providers::take_pending(&mut c, &st).await?;
            providers::prune_pending(&mut c, now_ms() - PENDING_MS).await?;
            drop(c);
            let Some(pending) = pending.filter(|x| x.provider == name && x.created_at > now_ms() - PENDING_MS) else {
                let m =
                    "this login's state is unknown, already used or expired: start again (infra login --provider NAME)";
                return fail("unknown or reused state".into(), ApiError::unauthorized(m)).await;
            };
            if let Some(r) = redirect_uri
                && r != pending.redirect_uri
            {
                let m = "the redirect URI differs from the one this login started with";
                return fail(m.into(), ApiError::unauthorized(m)).await;
            }
            match state
                .oidc
                .exchange_code(
                    &p.discovery,
                    p.client(),
                    &code,
                    &pending.redirect_uri,
                    &pending.verifier,
                )
                .await
            {
                Ok(t) => (t, Some(pending.nonce), pending.rd),
                Err(e) => {
                    let m = match &e {
                        crate::oidc::OidcError::Refused { code, .. } if code == "invalid_grant" => format!(
                            "{} (an authorization code works once and only for a few minutes: log in again)",
                            e.describe(name)
                        ),
                        crate::oidc::OidcError::Refused { code, .. } if code == "invalid_client" => format!(
                            "{} (the client id or secret configured in Infra is wrong: ask an admin to check 'infra providers list')",
                            e.describe(name)
                        ),
                        _ => e.describe(name),
                    };
                    let status = match e {
                        crate::oidc::OidcError::Unreachable(_) => e.into_api(name),
                        _ => ApiError::unauthorized(m.clone()),
                    };
                    return fail(m, status).await;
                }
            }
        }
        Grant::Device { device_code } => match state.oidc.device_token(&p.discovery, p.client(), &device_code).await {
            Ok(t) => (t, None, None),
            Err(crate::oidc::OidcError::Refused { code, .. })
                if code == "authorization_pending" || code == "slow_down" =>
            {
                // Not a failure: the CLI polls until the user is done.
                return Err(ApiError::new(axum::http::StatusCode::PRECONDITION_REQUIRED, code));
            }
            Err(e) => return fail(e.describe(name), e.into_api(name)).await,
        },
    };
    let identity = match identify(state, &p, &tokens, nonce.as_deref()).await {
        Ok(i) => i,
        Err(m) => return fail(m.clone(), ApiError::unauthorized(m)).await,
    };
    // The user: the one this provider subject is linked to; else the one
    // with this email, if the provider vouches for the email and nobody else
    // is linked to it; else a new one. An unverified email never takes over
    // an existing account.
    let mut tx = state.store.write().await?;
    let linked = match providers::linked_user(tx.conn(), name, &identity.sub).await? {
        Some(id) => identity::user_by_id(tx.conn(), &id).await?,
        None => None,
    };
    let by_email = match &linked {
        Some(_) => None,
        None => identity::user_by_email(tx.conn(), &identity.email).await?,
    };
    let refuse = |m: String| async move { fail(m.clone(), ApiError::forbidden(m)).await };
    let user = match (linked, by_email) {
        (Some(u), _) if u.kind == "service" => {
            drop(tx);
            return refuse(format!(
                "{} is a service account and cannot log in through a provider",
                u.email
            ))
            .await;
        }
        (Some(u), _) => u,
        (None, Some(u)) if u.kind == "service" => {
            drop(tx);
            return refuse(format!(
                "{} is a service account and cannot log in through a provider",
                u.email
            ))
            .await;
        }
        (None, Some(u)) => {
            if !identity.email_verified {
                drop(tx);
                return refuse(format!(
                    "an Infra account {} exists, and {name} does not mark this email as verified: it cannot be taken over",
                    u.email
                ))
                .await;
            }
            if !providers::links_of(tx.conn(), &u.id).await?.is_empty() {
                drop(tx);
                return refuse(format!(
                    "the Infra account {} belongs to another identity at a provider; ask an admin",
                    u.email
                ))
                .await;
            }
            providers::link(tx.conn(), name, &identity.sub, &u.id).await?;
            u
        }
        (None, None) => {
            let u = UserRow {
                id: infra_auth::random_token(16).map_err(ApiError::internal)?,
                email: identity.email.clone(),
                password_hash: None,
                password_update_required: 0,
                created_at: now_ms(),
                last_seen_at: None,
                kind: "user".into(),
            };
            identity::insert_user(tx.conn(), &u).await?;
            providers::link(tx.conn(), name, &identity.sub, &u.id).await?;
            let ev =
                Event::new(&u.email, "user.create", &u.email, source).detail(format!("first login through {name}"));
            audit::append(&mut tx, ev).await?;
            u
        }
    };
    let changes = sync_groups(tx.conn(), &user, name, &identity.groups)
        .await?
        .unwrap_or_else(|| "unchanged".into());
    let ev = Event::new(&user.email, "group.sync", &user.email, source).detail(format!(
        "provider={name} groups={} {changes}",
        identity.groups.join(",")
    ));
    audit::commit(state, tx, ev).await?;
    let mut resp = super::login::start_session(state, user, source, &format!("oidc:{name}"), &[], false).await?;
    if tokens.refresh_token.is_none() {
        // Nothing to refresh with: the session is short, so the provider's
        // word (a removal, a disabled user) is followed within it.
        super::login::cap_session(state, &mut resp, now_ms() + super::ms(NO_REFRESH_SESSION)).await?;
        resp.notice = Some(format!(
            "{name} gave no refresh token, so Infra cannot check with it during your session: it ends at {} and you log in again then (an admin can add offline_access to the provider's scopes)",
            resp.expires
        ));
    }
    let Json(resp) = resp;
    let key_id = resp.access_key.split('.').next().unwrap_or_default().to_owned();
    let refresh_sealed = match &tokens.refresh_token {
        Some(r) => {
            Some(envelope::seal(&state.root_key, &refresh_context(&key_id), r.as_bytes()).map_err(ApiError::internal)?)
        }
        None => None,
    };
    let mut c = state.store.conn().await?;
    providers::put_provider_session(
        &mut c,
        &ProviderSessionRow {
            key_id,
            provider: name.to_owned(),
            refresh_sealed,
            refreshed_at: now_ms(),
        },
    )
    .await?;
    Ok((resp, rd))
}

fn refresh_context(key_id: &str) -> String {
    format!("provider-session:{key_id}")
}

struct Identity {
    sub: String,
    email: String,
    email_verified: bool,
    groups: Vec<String>,
}

/// Who the tokens say the user is: the verified ID token's email (checked
/// against the allowed domains) and groups (from the ID token, or from
/// userinfo when the ID token does not carry them).
async fn identify(state: &AppState, p: &Provider, t: &Tokens, nonce: Option<&str>) -> Result<Identity, String> {
    let id_token = t
        .id_token
        .as_deref()
        .ok_or("the provider sent no ID token (is the openid scope allowed?)")?;
    let claims = state
        .oidc
        .verify_id_token(&p.discovery, id_token, &p.row.client_id, nonce)
        .await?;
    let mut info = Value::Null;
    let claim = |name: &str, info: &Value| -> Option<Value> {
        let v = &claims[name];
        if v.is_null() {
            info.get(name).cloned()
        } else {
            Some(v.clone())
        }
    };
    let needs_userinfo = claims["email"].is_null()
        || infra_auth::oidc::string_list(&claims, &p.row.groups_claim).is_empty()
            && claims.get(&p.row.groups_claim).is_none();
    if needs_userinfo && let Some(at) = &t.access_token {
        info = state
            .oidc
            .userinfo(&p.discovery, at)
            .await
            .map_err(|e| e.describe(&p.row.name))?;
        if info.is_object() && info["sub"] != claims["sub"] {
            return Err("userinfo is for another subject than the ID token".into());
        }
    }
    let raw_email = claim("email", &info)
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("the provider gave no email for this user (ask for the email scope)")?;
    // The same type as everywhere else: trimmed, lower-cased, validated, so
    // " alice@corp.com" is alice, not a look-alike account.
    let email = infra_core::Email::parse(&raw_email)
        .map_err(|e| e.to_string())?
        .as_str()
        .to_owned();
    let email_verified = claim("email_verified", &info).and_then(|v| v.as_bool()) == Some(true);
    if !email_verified && p.row.allow_unverified_email == 0 {
        return Err(format!(
            "the provider does not mark {email} as verified (email_verified is not true); an admin can accept its emails as they are with --allow-unverified-email"
        ));
    }
    let sub = claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("the ID token has no subject (sub)")?
        .to_owned();
    let allowed: Vec<&str> = p.row.allowed_domains.split(',').filter(|d| !d.is_empty()).collect();
    let domain = email.rsplit_once('@').map(|x| x.1).unwrap_or_default();
    if !allowed.is_empty() && !allowed.contains(&domain) {
        return Err(format!(
            "{email} is not in a domain allowed to log in through {} ({})",
            p.row.name,
            allowed.join(", ")
        ));
    }
    let mut groups = infra_auth::oidc::string_list(&claims, &p.row.groups_claim);
    if groups.is_empty() {
        groups = infra_auth::oidc::string_list(&info, &p.row.groups_claim);
    }
    groups.sort();
    groups.dedup();
    Ok(Identity {
        sub,
        email,
        email_verified,
        groups,
    })
}

/// Makes the memberships `provider` gives `user` exactly `groups`: adds the
/// missing ones (creating groups as needed), removes the ones it gave
/// before and no longer does. Memberships an admin made are left alone.
/// Returns what changed, for the audit event (None: nothing).
async fn sync_groups(
    c: &mut infra_store::Conn,
    user: &UserRow,
    provider: &str,
    groups: &[String],
) -> ApiResult<Option<String>> {
    let current = providers::provider_groups(c, &user.id, provider).await?;
    let mut added = Vec::new();
    let mut dropped = Vec::new();
    for name in groups {
        // A name Infra cannot hold (a character it refuses, or a name
        // Kubernetes reserves such as system:masters) is dropped, and the
        // audit event says so.
        let Ok(valid) = GroupName::parse(name) else {
            dropped.push(name.chars().take(64).collect::<String>());
            continue;
        };
        if current.iter().any(|(_, n)| n == name) {
            continue;
        }
        let group = match identity::group_by_name(c, valid.as_str()).await? {
            Some(g) => g,
            None => {
                let g = GroupRow {
                    id: infra_auth::random_token(16).map_err(ApiError::internal)?,
                    name: valid.as_str().to_owned(),
                    created_at: now_ms(),
                };
                identity::insert_group(c, &g).await?;
                g
            }
        };
        if providers::add_provider_member(c, &group.id, &user.id, provider).await? {
            added.push(name.clone());
        }
    }
    let mut removed = Vec::new();
    for (id, name) in current {
        if !groups.contains(&name) {
            providers::remove_provider_member(c, &id, &user.id, provider).await?;
            removed.push(name);
        }
    }
    let mut change = (!added.is_empty() || !removed.is_empty())
        .then(|| format!("added={} removed={}", added.join(","), removed.join(",")));
    if !dropped.is_empty() {
        let note = format!(
            "dropped={} (not valid Infra group names, or reserved by Kubernetes)",
            dropped.join(",")
        );
        change = Some(change.map_or(note.clone(), |c| format!("{c} {note}")));
    }
    Ok(change)
}

/// Refreshes a provider session if it is due: new tokens, groups read
/// again. Returns whether the key is a provider session at all.
///
/// Only the provider refusing the refresh (`invalid_grant`: the user is
/// disabled or deleted, consent withdrawn) ends the session (Err, 401).
/// An outage at the provider keeps it, and the next try waits another
/// interval. One request claims the refresh (refresh tokens rotate: two
/// must not spend one); no lock is held while the provider answers.
pub(crate) async fn refresh_if_due(state: &AppState, key_id: &str, user: &UserRow, source: &str) -> ApiResult<bool> {
    let now = now_ms();
    let due = now - ms(state.settings.provider_refresh);
    let mut c = state.store.conn().await?;
    let Some(s) = providers::provider_session(&mut c, key_id).await? else {
        return Ok(false);
    };
    drop(c);
    let Some(sealed) = s.refresh_sealed.clone().filter(|_| s.refreshed_at <= due) else {
        return Ok(true);
    };
    let mut tx = state.store.write().await?;
    let claimed = providers::claim_refresh(tx.conn(), key_id, s.refreshed_at, now).await?;
    tx.commit().await?;
    if !claimed {
        return Ok(true);
    }
    let keep = |why: String| {
        tracing::warn!(provider = %s.provider, user = %user.email, reason = %why, "provider session not refreshed; kept");
        Ok(true)
    };
    let p = match load(state, &s.provider).await {
        Ok(p) => p,
        Err(e) => return keep(e.message),
    };
    let refresh = envelope::open(&state.root_key, &refresh_context(key_id), &sealed).map_err(ApiError::internal)?;
    let refresh = String::from_utf8(refresh.expose().clone()).map_err(ApiError::internal)?;
    let tokens = match state.oidc.refresh(&p.discovery, p.client(), &refresh).await {
        Ok(t) => t,
        Err(crate::oidc::OidcError::Refused { code, description }) => {
            let why = format!(
                "identity provider {} refused the refresh: {code} {description}",
                s.provider
            );
            let mut tx = state.store.write().await?;
            infra_store::keys::delete_key(tx.conn(), key_id).await?;
            let ev = Event::new(&user.email, "login.refresh", &user.email, source)
                .result("failure")
                .detail(format!("session ended: {why}"));
            audit::commit(state, tx, ev).await?;
            return Err(ApiError::unauthorized(format!(
                "your session ended: {why}; log in again with 'infra login --provider {}'",
                s.provider
            )));
        }
        Err(e) => return keep(e.describe(&s.provider)),
    };
    // The ID token is optional on refresh (OIDC Core 12.2): without one the
    // groups stay as they were.
    let groups = match &tokens.id_token {
        Some(_) => match identify(state, &p, &tokens, None).await {
            Ok(i) if !links_to(state, &s.provider, &i.sub, &user.id).await? => {
                return keep(format!("the refreshed ID token is for another subject ({})", i.sub));
            }
            Ok(i) => Some(i.groups),
            Err(e) => return keep(e),
        },
        None => None,
    };
    let mut tx = state.store.write().await?;
    let changes = match &groups {
        Some(g) => sync_groups(tx.conn(), user, &s.provider, g).await?,
        None => None,
    };
    let refresh_sealed = match &tokens.refresh_token {
        Some(r) => {
            Some(envelope::seal(&state.root_key, &refresh_context(key_id), r.as_bytes()).map_err(ApiError::internal)?)
        }
        None => Some(sealed),
    };
    providers::put_provider_session(
        tx.conn(),
        &ProviderSessionRow {
            refresh_sealed,
            refreshed_at: now,
            ..s
        },
    )
    .await?;
    // An event (and a push to connectors) only when memberships changed.
    if let Some(changes) = changes {
        let ev = Event::new(&user.email, "group.sync", &user.email, source).detail(format!(
            "provider={} refresh groups={} {changes}",
            p.row.name,
            groups.unwrap_or_default().join(",")
        ));
        audit::commit(state, tx, ev).await?;
    } else {
        tx.commit().await?;
    }
    Ok(true)
}

async fn links_to(state: &AppState, provider: &str, sub: &str, user_id: &str) -> ApiResult<bool> {
    let mut c = state.store.conn().await?;
    Ok(providers::linked_user(&mut c, provider, sub).await?.as_deref() == Some(user_id))
}
