//! First start: the root key, the TLS CA, a signing key and the first
//! admin. Each step is idempotent and safe when several replicas start at
//! once on one database (they run inside the writers' lock).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use infra_auth::envelope::{self, RootKey};
use infra_auth::tls_ca::Ca;
use infra_auth::{Secret, access_key, password};
use infra_core::Email;
use infra_store::{AccessKeyRow, GrantRow, UserRow, identity, keys, new_id, now_ms};

use crate::audit::{self, Event};
use crate::signing;
use crate::state::AppState;

pub(crate) const CA_SECRET: &str = "tls_ca";

/// Loads the root key from INFRA_ROOT_KEY, or its file, creating the file
/// (0600) on first start.
pub(crate) fn root_key(path: &Path) -> anyhow::Result<RootKey> {
    if let Ok(text) = std::env::var("INFRA_ROOT_KEY") {
        return RootKey::from_text(&text).context("INFRA_ROOT_KEY");
    }
    match std::fs::read_to_string(path) {
        Ok(text) => RootKey::from_text(&text).with_context(|| format!("root key file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = RootKey::generate()?;
            write_private(path, key.to_text().expose().as_bytes())
                .with_context(|| format!("create root key file {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("read root key file {}", path.display())),
    }
}

/// Writes a file only its owner can read, failing if it exists.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The CA, created on first start.
pub(crate) async fn ca(state: &AppState) -> anyhow::Result<Ca> {
    let mut tx = state.store.write().await?;
    let ca = match keys::sealed_secret(tx.conn(), CA_SECRET).await? {
        Some((cert_pem, sealed)) => {
            let key = envelope::open(&state.root_key, CA_SECRET, &sealed).context("open the stored CA key")?;
            let key_pem = String::from_utf8(key.expose().clone()).context("stored CA key")?;
            Ca {
                cert_pem,
                key_pem: Secret::new(key_pem),
            }
        }
        None => {
            let ca = Ca::generate()?;
            let sealed = envelope::seal(&state.root_key, CA_SECRET, ca.key_pem.expose().as_bytes())?;
            keys::insert_sealed_secret(tx.conn(), CA_SECRET, &ca.cert_pem, &sealed).await?;
            ca
        }
    };
    tx.commit().await?;
    Ok(ca)
}

/// Makes sure a signing key exists.
pub(crate) async fn signing_key(state: &AppState) -> anyhow::Result<()> {
    let mut tx = state.store.write().await?;
    let existing = keys::signing_keys(tx.conn()).await?;
    if existing.iter().all(|k| k.retired_at.is_some()) {
        signing::create(tx.conn(), state)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    tx.commit().await?;
    Ok(())
}

/// What the first start created for the first admin.
pub(crate) enum FirstAdmin {
    /// Already done on an earlier start.
    Existing,
    FromEnvironment(String),
    /// A one-time access key to print.
    Key(Secret<String>),
}

/// Creates the first admin on the first start: from INFRA_ADMIN_EMAIL and
/// INFRA_ADMIN_PASSWORD, or a user `admin@localhost` with an access key.
pub(crate) async fn first_admin(state: &AppState) -> anyhow::Result<FirstAdmin> {
    let mut tx = state.store.write().await?;
    if keys::setting(tx.conn(), "bootstrapped").await?.is_some() {
        return Ok(FirstAdmin::Existing);
    }
    let now = now_ms();
    let env_email = std::env::var("INFRA_ADMIN_EMAIL").ok().filter(|s| !s.is_empty());
    let (email, hash) = match env_email {
        Some(e) => {
            let email = Email::parse(&e).context("INFRA_ADMIN_EMAIL")?;
            let pw = Secret::new(std::env::var("INFRA_ADMIN_PASSWORD").context(
                "INFRA_ADMIN_EMAIL is set, so INFRA_ADMIN_PASSWORD must be too (or unset both to get a one-time access key)",
            )?);
            password::check_policy(pw.expose()).context("INFRA_ADMIN_PASSWORD")?;
            let hash = tokio::task::spawn_blocking(move || password::hash(&pw)).await??;
            (email, Some(hash))
        }
        None => (Email::parse("admin@localhost")?, None),
    };
    let user = UserRow {
        id: new_id()?,
        email: email.to_string(),
        password_hash: hash.clone(),
        password_update_required: 0,
        created_at: now,
        last_seen_at: None,
        kind: "user".into(),
    };
    identity::insert_user(tx.conn(), &user).await?;
    identity::insert_grant(
        tx.conn(),
        &GrantRow {
            id: new_id()?,
            subject_kind: infra_core::SubjectKind::User,
            subject_id: user.id.clone(),
            subject_name: user.email.clone(),
            role: "admin".into(),
            resource: "infra".into(),
            created_at: now,
            created_by: "system".into(),
            expires_at: None,
        },
    )
    .await?;
    let result = if hash.is_some() {
        FirstAdmin::FromEnvironment(user.email.clone())
    } else {
        let k = access_key::generate()?;
        keys::insert_key(
            tx.conn(),
            &AccessKeyRow {
                id: k.id.clone(),
                name: "first-admin".into(),
                kind: keys::KeyKind::User,
                user_id: Some(user.id.clone()),
                user_email: None,
                secret_hash: k.secret_hash.clone(),
                created_at: now,
                expires_at: None,
                inactivity_timeout_ms: None,
                last_used_at: now,
                lender_id: None,
            },
        )
        .await?;
        FirstAdmin::Key(k.full)
    };
    keys::insert_setting(tx.conn(), "bootstrapped", &now.to_string()).await?;
    let row = audit::append(&mut tx, Event::new("system", "bootstrap.admin", &user.email, "local")).await?;
    tx.commit().await?;
    audit::emit(state, &row);
    Ok(result)
}
