//! Identity providers below the API: a provider with its client secret
//! and discovery document, who a provider's tokens say the user is, the
//! group memberships a provider gives, and the refresh that keeps a
//! provider session in step with the provider.
//!
//! The API's login flow (`api::provider_login`) and authentication
//! (`authn`) both call down into it; it answers with domain errors, which
//! they turn into what a client hears.

mod groups;
mod identify;
pub(crate) mod refresh;

use infra_auth::envelope;
use infra_store::StoreError;
use infra_store::providers::{self, ProviderRow};

pub(crate) use self::groups::sync_groups;
pub(crate) use self::identify::{Identity, identify};
use crate::oidc::{Discovery, OidcError};
use crate::state::AppState;

/// The longest a provider session without a refresh token lasts: Infra
/// cannot ask the provider again, so it asks the user to log in again.
pub(crate) const NO_REFRESH_SESSION: std::time::Duration = std::time::Duration::from_secs(3600);

/// A provider with its secret and discovery document.
pub(crate) struct Provider {
    pub(crate) row: ProviderRow,
    secret: String,
    pub(crate) discovery: Discovery,
}

impl Provider {
    /// The client id and secret Infra uses at this provider.
    pub(crate) fn client(&self) -> (&str, &str) {
        (&self.row.client_id, &self.secret)
    }
}

/// Why a provider could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("no identity provider named {0}; 'infra providers list' shows them")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sealed client secret does not open (a changed root key).
    #[error("the client secret of provider {name} does not open: {reason}")]
    Secret { name: String, reason: String },
    /// Discovery failed.
    #[error("{}", .error.describe(.name))]
    Oidc { name: String, error: OidcError },
}

/// The provider named `name`, its client secret opened and its discovery
/// document fetched (or cached).
pub(crate) async fn load(state: &AppState, name: &str) -> Result<Provider, LoadError> {
    let mut c = state.store.conn().await?;
    let row = providers::provider(&mut c, name)
        .await?
        .ok_or_else(|| LoadError::Unknown(name.to_owned()))?;
    drop(c);
    let secret_error = |reason: String| LoadError::Secret {
        name: name.to_owned(),
        reason,
    };
    let secret = envelope::open(&state.root_key, &secret_context(name), &row.client_secret_sealed)
        .map_err(|e| secret_error(e.to_string()))?;
    let secret = String::from_utf8(secret.expose().clone()).map_err(|e| secret_error(e.to_string()))?;
    let discovery = state
        .oidc
        .discover(&row.issuer)
        .await
        .map_err(|error| LoadError::Oidc {
            name: name.to_owned(),
            error,
        })?;
    Ok(Provider { row, secret, discovery })
}

/// What a provider's client secret is sealed to.
pub(crate) fn secret_context(name: &str) -> String {
    format!("provider:{name}")
}

/// Seals a provider session's refresh token to that session.
pub(crate) fn seal_refresh(state: &AppState, key_id: &str, token: &str) -> Result<String, envelope::EnvelopeError> {
    envelope::seal(&state.root_key, &refresh_context(key_id), token.as_bytes())
}

fn refresh_context(key_id: &str) -> String {
    format!("provider-session:{key_id}")
}
