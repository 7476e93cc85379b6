//! Keeping a provider session in step with its provider.
//!
//! A session that came from an identity provider keeps the provider's
//! refresh token, sealed. **When it runs:** on an authenticated API
//! request, not on a timer. Every request whose key is a provider session
//! (or a key made from one, through its lender) looks at the session's
//! last refresh while the key is checked (`authn::Caller::from_key`); once
//! that is older than `--provider-refresh` (default 5m) the refresh is
//! due, and the first request to see it claims it in the store (a
//! compare-and-set on the time of the last refresh, so across replicas
//! only one request spends the refresh token, which providers rotate);
//! the others go on with the session as it is. The claiming request waits
//! for the provider: the token endpoint, then the new ID token (and
//! userinfo if the groups are not in it), each call bounded at 10 s. A session nobody uses is not
//! refreshed; its inactivity timeout ends it. Tokens for destinations
//! already issued are not touched: they end within `--token-ttl`.
//!
//! **What happens:** new tokens → the user's groups from this provider are
//! made what the new ID token says (an audited `group.sync` when they
//! changed; without an ID token they stay) and the new refresh token is
//! sealed. The provider refusing (any OAuth error answer, typically
//! `invalid_grant`: the user disabled or deleted, consent withdrawn) →
//! the session key is deleted, so every key made from it ends too, a
//! failed `login.refresh` is audited, and the request is refused (401). A
//! provider that cannot be reached, answers nonsense, or sends an ID token
//! for another subject → a warning in the log, the session is kept, and
//! the next try waits another interval (the claim already moved the time).
//! A session without a refresh token is never refreshed; it was capped at
//! [`super::NO_REFRESH_SESSION`] when it began instead. No lock is held
//! while the provider answers.

use infra_store::providers::{self, ProviderSessionRow};
use infra_store::{StoreError, UserRow, now_ms};

use super::Provider;
use crate::audit::{self, Event};
use crate::oidc::{OidcError, Tokens};
use crate::state::AppState;

/// Why a request on a provider session cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    /// The provider refused the refresh: the session has been ended.
    #[error("identity provider {provider} refused the refresh: {code} {description}")]
    Ended {
        provider: String,
        code: String,
        description: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session's sealed refresh token does not open, or the new one
    /// cannot be sealed.
    #[error("the refresh token of a provider session: {0}")]
    Sealing(String),
}

/// Refreshes the provider session `key_id` if it is due (see the module
/// documentation). Returns whether the key is a provider session at all.
pub(crate) async fn refresh_if_due(
    state: &AppState,
    key_id: &str,
    user: &UserRow,
    source: &str,
) -> Result<bool, RefreshError> {
    let now = now_ms();
    let due = now - crate::wire::ms(state.settings.provider_refresh);
    let mut c = state.store.conn().await?;
    let Some(session) = providers::provider_session(&mut c, key_id).await? else {
        return Ok(false);
    };
    drop(c);
    let Some(sealed) = session.refresh_sealed.clone().filter(|_| session.refreshed_at <= due) else {
        return Ok(true);
    };
    let mut tx = state.store.write().await?;
    let claimed = providers::claim_refresh(tx.conn(), key_id, session.refreshed_at, now).await?;
    tx.commit().await?;
    if !claimed {
        return Ok(true);
    }
    let refresh = Refresh {
        state,
        key_id,
        user,
        source,
        session,
        now,
    };
    match refresh.run(sealed).await {
        Ok(()) => Ok(true),
        Err(Stop::Kept(why)) => {
            let provider = &refresh.session.provider;
            tracing::warn!(%provider, user = %user.email, reason = %why, "provider session not refreshed; kept");
            Ok(true)
        }
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// One claimed refresh.
struct Refresh<'a> {
    state: &'a AppState,
    key_id: &'a str,
    user: &'a UserRow,
    source: &'a str,
    session: ProviderSessionRow,
    now: i64,
}

/// How a claimed refresh stops short.
enum Stop {
    /// The session stays as it was, for this reason.
    Kept(String),
    Failed(RefreshError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e.into())
    }
}

impl Refresh<'_> {
    async fn run(&self, sealed: String) -> Result<(), Stop> {
        let name = &self.session.provider;
        let p = super::load(self.state, name)
            .await
            .map_err(|e| Stop::Kept(e.to_string()))?;
        let refresh_token = self.open(&sealed)?;
        let tokens = match self.state.oidc.refresh(&p.discovery, p.client(), &refresh_token).await {
            Ok(t) => t,
            Err(OidcError::Refused { code, description }) => {
                return Err(Stop::Failed(self.end(code, description).await));
            }
            Err(e) => return Err(Stop::Kept(e.describe(name))),
        };
        let groups = self.groups(&p, &tokens).await?;
        self.save(&p, &tokens, sealed, groups).await
    }

    fn open(&self, sealed: &str) -> Result<String, Stop> {
        let sealing = |e: String| Stop::Failed(RefreshError::Sealing(e));
        let token = infra_auth::envelope::open(&self.state.root_key, &super::refresh_context(self.key_id), sealed)
            .map_err(|e| sealing(e.to_string()))?;
        String::from_utf8(token.expose().clone()).map_err(|e| sealing(e.to_string()))
    }

    /// The provider refused: the session ends, and says why.
    async fn end(&self, code: String, description: String) -> RefreshError {
        let ended = RefreshError::Ended {
            provider: self.session.provider.clone(),
            code,
            description,
        };
        let r: Result<(), StoreError> = async {
            let mut tx = self.state.store.write().await?;
            infra_store::keys::delete_key(tx.conn(), self.key_id).await?;
            let ev = Event::new(&self.user.email, "login.refresh", &self.user.email, self.source)
                .result("failure")
                .detail(format!("session ended: {ended}"));
            audit::commit(self.state, tx, ev).await
        }
        .await;
        match r {
            Ok(()) => ended,
            Err(e) => e.into(),
        }
    }

    /// The groups the refreshed ID token gives, if it came with one (it is
    /// optional on refresh, OIDC Core 12.2: without one the groups stay).
    async fn groups(&self, p: &Provider, tokens: &Tokens) -> Result<Option<Vec<String>>, Stop> {
        if tokens.id_token.is_none() {
            return Ok(None);
        }
        let identity = super::identify(self.state, p, tokens, None).await.map_err(Stop::Kept)?;
        let mut c = self.state.store.conn().await?;
        let linked = providers::linked_user(&mut c, &self.session.provider, &identity.sub).await?;
        if linked.as_deref() != Some(self.user.id.as_str()) {
            return Err(Stop::Kept(format!(
                "the refreshed ID token is for another subject ({})",
                identity.sub
            )));
        }
        Ok(Some(identity.groups))
    }

    /// Writes the new memberships and refresh token, and audits a change
    /// of memberships (which also pushes it to connectors).
    async fn save(
        &self,
        p: &Provider,
        tokens: &Tokens,
        sealed: String,
        groups: Option<Vec<String>>,
    ) -> Result<(), Stop> {
        let mut tx = self.state.store.write().await?;
        let changes = match &groups {
            Some(g) => super::sync_groups(tx.conn(), self.user, &self.session.provider, g).await?,
            None => None,
        };
        let refresh_sealed = match &tokens.refresh_token {
            Some(r) => super::seal_refresh(self.state, self.key_id, r)
                .map_err(|e| Stop::Failed(RefreshError::Sealing(e.to_string())))?,
            None => sealed,
        };
        providers::put_provider_session(
            tx.conn(),
            &ProviderSessionRow {
                refresh_sealed: Some(refresh_sealed),
                refreshed_at: self.now,
                ..self.session.clone()
            },
        )
        .await?;
        // An event (and a push to connectors) only when memberships changed.
        if let Some(changes) = changes {
            let email = &self.user.email;
            let ev = Event::new(email, "group.sync", email, self.source).detail(format!(
                "provider={} refresh groups={} {changes}",
                p.row.name,
                groups.unwrap_or_default().join(",")
            ));
            audit::commit(self.state, tx, ev).await?;
        } else {
            tx.commit().await?;
        }
        Ok(())
    }
}
