//! A server state for unit tests: a fresh SQLite store in a temporary
//! directory, a new root key, the signing key and SSH CAs a start makes,
//! and the default settings.

use std::sync::Arc;

use clap::Parser;
use infra_store::{AccessKeyRow, keys, now_ms};

use crate::config::{ServerArgs, Settings};
use crate::state::{AppState, Inner};

/// The state and the directory it lives in (removed on drop).
pub(crate) struct TestState {
    pub(crate) state: AppState,
    _dir: tempfile::TempDir,
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ServerArgs,
}

pub(crate) async fn state() -> TestState {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_str().expect("UTF-8 path").to_owned();
    let cli = Cli::parse_from(["infra", "--data-dir", &data_dir]);
    let settings = Settings::resolve(cli.args).expect("settings");
    let store = infra_store::Store::open(&settings.db_url).await.expect("store");
    let recording_store =
        crate::recordings::storage::RecordingStore::dir(settings.recordings_dir.clone()).expect("recordings");
    let state = AppState(Arc::new(Inner {
        recording_store,
        store,
        root_key: infra_auth::envelope::RootKey::generate().expect("root key"),
        settings,
        hub: crate::hub::Hub::new(),
        gateway_names: crate::gateway_names::KnownNames::default(),
        hashing: tokio::sync::Semaphore::new(1),
        oidc: crate::oidc::Oidc::new(),
        tasks: crate::tasks::Tasks::default(),
        audit_intake: crate::audit_intake::Intake::new(),
        forward_auth: crate::forward_auth::Apps::default(),
    }));
    state.audit_intake.start(
        &state.store,
        &state.tasks.background,
        tokio_util::sync::CancellationToken::new(),
    );
    crate::bootstrap::signing_key(&state).await.expect("signing key");
    crate::ssh::ensure(&state).await.expect("SSH CAs");
    TestState { state, _dir: dir }
}

/// Stores an access key of `kind` named `name` (no user: a connector's);
/// returns the full key.
pub(crate) async fn add_key(state: &AppState, kind: infra_store::KeyKind, name: &str) -> String {
    let k = infra_auth::access_key::generate().expect("key");
    let now = now_ms();
    let row = AccessKeyRow {
        id: k.id.clone(),
        name: name.to_owned(),
        kind,
        user_id: None,
        user_email: None,
        secret_hash: k.secret_hash.clone(),
        created_at: now,
        expires_at: None,
        inactivity_timeout_ms: None,
        last_used_at: now,
        lender_id: None,
    };
    let mut tx = state.store.write().await.expect("write");
    keys::insert_key(tx.conn(), &row).await.expect("insert key");
    tx.commit().await.expect("commit");
    k.full.expose().clone()
}
