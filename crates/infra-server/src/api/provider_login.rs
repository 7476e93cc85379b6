//! Logging in through an identity provider: the authorization code with
//! PKCE (from the CLI's loopback listener, or a browser through `web`) or
//! the device grant, then the Infra account the provider's identity maps
//! to (made at first login), its provider groups, and a session that
//! remembers the provider's refresh token for `idp::refresh`.

use axum::Json;
use axum::extract::{Path, State};
use infra_api::{AuthorizeRequest, AuthorizeResponse, DeviceStart, LoginResponse};
use infra_store::providers::{self, PendingRow, ProviderSessionRow};
use infra_store::{UserRow, WriteTx, identity, now_ms};

use crate::audit::{self, Event};
use crate::authn::Source;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::idp::{self, Identity, LoadError, NO_REFRESH_SESSION, Provider};
use crate::oidc::{Oidc, OidcError, Tokens};
use crate::state::AppState;

/// A login started must finish within this.
const PENDING_MS: i64 = 10 * 60_000;
/// Sign-ins one address may have started and not finished within
/// [`PENDING_MS`]: anyone may start one, so each costs a bounded row.
const MAX_PENDING_PER_SOURCE: i64 = 30;
/// All unfinished sign-ins, from every address together.
const MAX_PENDING: i64 = 10_000;

/// The provider named `name`, or what the client hears when it cannot be
/// used.
pub(crate) async fn load(state: &AppState, name: &str) -> ApiResult<Provider> {
    idp::load(state, name).await.map_err(|e| match e {
        LoadError::Unknown(_) => ApiError::not_found(e.to_string()),
        LoadError::Store(e) => e.into(),
        LoadError::Secret { .. } => ApiError::internal(e),
        LoadError::Oidc { name, error } => error.into_api(&name),
    })
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
    Source(source): Source,
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
/// login, where to go next. Every refusal is audited.
pub(crate) async fn login(
    state: &AppState,
    source: &str,
    name: &str,
    grant: Grant,
) -> ApiResult<(LoginResponse, Option<String>)> {
    let attempt = Attempt { state, source, name };
    let p = match load(state, name).await {
        Ok(p) => p,
        Err(e) => return attempt.fail(e.message.clone(), e).await,
    };
    let redeemed = attempt.redeem(&p, grant).await?;
    let identity = match idp::identify(state, &p, &redeemed.tokens, redeemed.nonce.as_deref()).await {
        Ok(i) => i,
        Err(m) => return attempt.fail(m.clone(), ApiError::unauthorized(m)).await,
    };
    let user = attempt.sign_in(&identity).await?;
    let resp = attempt.start_session(user, &redeemed.tokens).await?;
    Ok((resp, redeemed.rd))
}

/// One login through a provider.
struct Attempt<'a> {
    state: &'a AppState,
    source: &'a str,
    name: &'a str,
}

/// What a grant gave: the provider's tokens, the nonce the ID token must
/// carry (code flow) and where a browser goes next.
struct Redeemed {
    tokens: Tokens,
    nonce: Option<String>,
    rd: Option<String>,
}

/// The Infra account a provider identity logs in as.
enum Account {
    Ready(UserRow),
    /// This identity may not use the account, and why.
    Refused(String),
}

impl Attempt<'_> {
    /// Audits the failed login (`why`) and answers `status`.
    async fn fail<T>(&self, why: String, status: ApiError) -> ApiResult<T> {
        let ev = Event::new(&format!("provider:{}", self.name), "login", self.name, self.source)
            .result("failure")
            .detail(why);
        audit::record(self.state, ev).await?;
        Err(status)
    }

    /// Trades the grant for the provider's tokens.
    async fn redeem(&self, p: &Provider, grant: Grant) -> ApiResult<Redeemed> {
        match grant {
            Grant::Code {
                code,
                state,
                redirect_uri,
            } => self.redeem_code(p, &code, &state, redirect_uri).await,
            Grant::Device { device_code } => {
                match self
                    .state
                    .oidc
                    .device_token(&p.discovery, p.client(), &device_code)
                    .await
                {
                    Ok(tokens) => Ok(Redeemed {
                        tokens,
                        nonce: None,
                        rd: None,
                    }),
                    Err(OidcError::Refused { code, .. }) if code == "authorization_pending" || code == "slow_down" => {
                        // Not a failure: the CLI polls until the user is done.
                        Err(ApiError::new(axum::http::StatusCode::PRECONDITION_REQUIRED, code))
                    }
                    Err(e) => self.fail(e.describe(self.name), e.into_api(self.name)).await,
                }
            }
        }
    }

    /// The code flow's second half: the pending login `state` (once, and
    /// only for this provider and redirect URI), then the code for tokens.
    async fn redeem_code(
        &self,
        p: &Provider,
        code: &str,
        state: &str,
        redirect_uri: Option<String>,
    ) -> ApiResult<Redeemed> {
        let name = self.name;
        let mut c = self.state.store.conn().await?;
        let pending = providers::take_pending(&mut c, state).await?;
        providers::prune_pending(&mut c, now_ms() - PENDING_MS).await?;
        drop(c);
        let Some(pending) = pending.filter(|x| x.provider == name && x.created_at > now_ms() - PENDING_MS) else {
            let m = "this login's state is unknown, already used or expired: start again (infra login --provider NAME)";
            return self
                .fail("unknown or reused state".into(), ApiError::unauthorized(m))
                .await;
        };
        if let Some(r) = redirect_uri
            && r != pending.redirect_uri
        {
            let m = "the redirect URI differs from the one this login started with";
            return self.fail(m.into(), ApiError::unauthorized(m)).await;
        }
        let exchanged = self
            .state
            .oidc
            .exchange_code(&p.discovery, p.client(), code, &pending.redirect_uri, &pending.verifier)
            .await;
        match exchanged {
            Ok(tokens) => Ok(Redeemed {
                tokens,
                nonce: Some(pending.nonce),
                rd: pending.rd,
            }),
            Err(e) => {
                let m = match &e {
                    OidcError::Refused { code, .. } if code == "invalid_grant" => format!(
                        "{} (an authorization code works once and only for a few minutes: log in again)",
                        e.describe(name)
                    ),
                    OidcError::Refused { code, .. } if code == "invalid_client" => format!(
                        "{} (the client id or secret configured in Infra is wrong: ask an admin to check 'infra providers list')",
                        e.describe(name)
                    ),
                    _ => e.describe(name),
                };
                let status = match e {
                    OidcError::Unreachable(_) => e.into_api(name),
                    _ => ApiError::unauthorized(m.clone()),
                };
                self.fail(m, status).await
            }
        }
    }

    /// The account `identity` logs in as, with its provider groups made
    /// what the provider says, in one audited write.
    async fn sign_in(&self, identity: &Identity) -> ApiResult<UserRow> {
        let name = self.name;
        let mut tx = self.state.store.write().await?;
        let user = match self.account(&mut tx, identity).await? {
            Account::Ready(u) => u,
            Account::Refused(m) => {
                // The refusal is audited in a write of its own.
                drop(tx);
                return self.fail(m.clone(), ApiError::forbidden(m)).await;
            }
        };
        let changes = idp::sync_groups(tx.conn(), &user, name, &identity.groups)
            .await?
            .unwrap_or_else(|| "unchanged".into());
        let ev = Event::new(&user.email, "group.sync", &user.email, self.source).detail(format!(
            "provider={name} groups={} {changes}",
            identity.groups.join(",")
        ));
        audit::commit(self.state, tx, ev).await?;
        Ok(user)
    }

    /// The user: the one this provider subject is linked to; else the one
    /// with this email, if the provider vouches for the email and nobody
    /// else is linked to it; else a new one. An unverified email never takes
    /// over an existing account.
    async fn account(&self, tx: &mut WriteTx, identity: &Identity) -> ApiResult<Account> {
        let name = self.name;
        let linked = match providers::linked_user(tx.conn(), name, &identity.sub).await? {
            Some(id) => identity::user_by_id(tx.conn(), &id).await?,
            None => None,
        };
        let by_email = match &linked {
            Some(_) => None,
            None => identity::user_by_email(tx.conn(), &identity.email).await?,
        };
        let service = |u: &UserRow| {
            Account::Refused(format!(
                "{} is a service account and cannot log in through a provider",
                u.email
            ))
        };
        Ok(match (linked, by_email) {
            (Some(u), _) if u.kind == "service" => service(&u),
            (Some(u), _) => Account::Ready(u),
            (None, Some(u)) if u.kind == "service" => service(&u),
            (None, Some(u)) => self.take_over(tx, identity, u).await?,
            (None, None) => Account::Ready(self.first_login(tx, identity).await?),
        })
    }

    /// An existing account with the identity's email, taken over by the
    /// identity when the provider vouches for the email and no other
    /// identity holds the account.
    async fn take_over(&self, tx: &mut WriteTx, identity: &Identity, u: UserRow) -> ApiResult<Account> {
        if !identity.email_verified {
            return Ok(Account::Refused(format!(
                "an Infra account {} exists, and {} does not mark this email as verified: it cannot be taken over",
                u.email, self.name
            )));
        }
        if !providers::links_of(tx.conn(), &u.id).await?.is_empty() {
            return Ok(Account::Refused(format!(
                "the Infra account {} belongs to another identity at a provider; ask an admin",
                u.email
            )));
        }
        providers::link(tx.conn(), self.name, &identity.sub, &u.id).await?;
        Ok(Account::Ready(u))
    }

    /// A user made at their first login, linked to the provider's subject.
    async fn first_login(&self, tx: &mut WriteTx, identity: &Identity) -> ApiResult<UserRow> {
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
        providers::link(tx.conn(), self.name, &identity.sub, &u.id).await?;
        let ev = Event::new(&u.email, "user.create", &u.email, self.source)
            .detail(format!("first login through {}", self.name));
        audit::append(tx, ev).await?;
        Ok(u)
    }

    /// The Infra session, and the provider session beside it that keeps
    /// the refresh token. Without one the session is short, so the
    /// provider's word (a removal, a disabled user) is followed within it.
    async fn start_session(&self, user: UserRow, tokens: &Tokens) -> ApiResult<LoginResponse> {
        let (state, name) = (self.state, self.name);
        let method = format!("oidc:{name}");
        let mut resp = super::login::start_session(state, user, self.source, &method, &[], false).await?;
        if tokens.refresh_token.is_none() {
            let end = now_ms() + crate::wire::ms(NO_REFRESH_SESSION);
            super::login::cap_session(state, &mut resp, end).await?;
            resp.notice = Some(format!(
                "{name} gave no refresh token, so Infra cannot check with it during your session: it ends at {} and you log in again then (an admin can add offline_access to the provider's scopes)",
                resp.expires
            ));
        }
        let Json(resp) = resp;
        let key_id = resp.access_key.split('.').next().unwrap_or_default().to_owned();
        let refresh_sealed = match &tokens.refresh_token {
            Some(r) => Some(idp::seal_refresh(state, &key_id, r).map_err(ApiError::internal)?),
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
        Ok(resp)
    }
}
