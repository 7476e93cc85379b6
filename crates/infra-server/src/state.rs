//! Shared request state.

use std::sync::Arc;

use infra_auth::envelope::RootKey;
use infra_store::Store;

use crate::config::Settings;

#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) root_key: RootKey,
    pub(crate) settings: Settings,
    pub(crate) hub: crate::hub::Hub,
    /// Destination names the gateway serves certificates for.
    pub(crate) gateway_names: crate::gateway_names::KnownNames,
    /// Bounds concurrent password hashing (see `hashing::argon`).
    pub(crate) hashing: tokio::sync::Semaphore,
    /// The relying party for identity providers (discovery and key caches).
    pub(crate) oidc: crate::oidc::Oidc,
    /// The owners of every task the server starts (see `tasks`).
    pub(crate) tasks: crate::tasks::Tasks,
    /// The queue of the server's one writer of connectors' audit events.
    pub(crate) audit_intake: crate::audit_intake::Intake,
    /// Forward-auth destinations and the decider over their grants.
    pub(crate) forward_auth: crate::forward_auth::Apps,
    /// Where finished session recordings are kept.
    pub(crate) recording_store: crate::recordings::storage::RecordingStore,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
