//! SSH recording mode, the parts that decide: the connector terminates a
//! recorded host's SSH connections itself, so it must check the user's
//! certificate exactly as sshd would, and log in to sshd with a
//! certificate of its own for the same login.
//!
//! - [`check_user_cert`]: a user certificate is accepted for `login` when
//!   a user CA Infra publishes signed it, it is valid now, it is a *user*
//!   certificate, its principals include `infra:HOST:LOGIN:USER` for this
//!   host and the user the stream was admitted for (the principal sshd's
//!   `AuthorizedPrincipalsFile` holds), and it has no critical option this
//!   code does not enforce.
//! - [`RecorderKeys`]: the connector's host key for the recorded host
//!   (certified by the host CA like sshd's own) and its recorder CA, which
//!   sshd trusts beside Infra's user CA and which signs, per session, a
//!   five-minute certificate for exactly the login the user was allowed.

pub(crate) mod proxy;
pub(crate) mod tape;

use std::path::Path;

use anyhow::Context;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, LineEnding, PrivateKey, PublicKey};

/// Why a certificate is refused: said to the log and the audit, never in
/// more detail to the client (sshd does not either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertRefusal {
    #[error("not signed by an Infra user CA, or not valid now")]
    Untrusted,
    #[error("a host certificate, not a user certificate")]
    NotUser,
    #[error("not valid for login {login} on {host} as {user}")]
    Principal { host: String, login: String, user: String },
    #[error("critical option {0} is not enforced here")]
    CriticalOption(String),
    #[error("no user CA is known yet")]
    NoCa,
}

/// Checks `cert` for `login` on `host` for the admitted user `user_id` at
/// `now` (unix seconds), against the user CA public keys `cas` (OpenSSH
/// lines, as the snapshot carries them).
pub(crate) fn check_user_cert(
    cert: &Certificate,
    cas: &[String],
    host: &str,
    login: &str,
    user_id: &str,
    now: u64,
) -> Result<(), CertRefusal> {
    let fingerprints: Vec<_> = cas
        .iter()
        .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect();
    if fingerprints.is_empty() {
        return Err(CertRefusal::NoCa);
    }
    cert.validate_at(now, &fingerprints)
        .map_err(|_| CertRefusal::Untrusted)?;
    if cert.cert_type() != CertType::User {
        return Err(CertRefusal::NotUser);
    }
    let want = infra_auth::ssh_ca::principal(host, login, user_id);
    if !cert.valid_principals().contains(&want) {
        return Err(CertRefusal::Principal {
            host: host.to_owned(),
            login: login.to_owned(),
            user: user_id.to_owned(),
        });
    }
    // `force-command` and `source-address` would change what the session
    // may do; Infra never sets them, and one this code does not enforce is
    // refused rather than ignored.
    if let Some((name, _)) = cert.critical_options().iter().next() {
        return Err(CertRefusal::CriticalOption(name.clone()));
    }
    Ok(())
}

/// The permissions of a user's certificate the recorder passes on to its
/// own login (agent and X11 forwarding it does not carry).
const PASSED_ON: &[&str] = &["permit-pty", "permit-port-forwarding"];

/// Whether the user's certificate grants `permission`, among those the
/// recorder carries.
pub(crate) fn permits(user_cert: &Certificate, permission: &str) -> bool {
    PASSED_ON.contains(&permission) && user_cert.extensions().contains_key(permission)
}

/// The connector's keys for one recorded host, kept in its data directory.
pub(crate) struct RecorderKeys {
    /// What the connector presents as the host (its certificate comes from
    /// the server's host CA, through the snapshot).
    pub(crate) host: PrivateKey,
    /// The CA sshd trusts for the connector's own logins.
    ca: PrivateKey,
    /// The host key sshd must present (`hostKeyFile`), read at start.
    pub(crate) sshd: Option<PublicKey>,
}

impl RecorderKeys {
    /// Loads `DIR/ssh-recorder-DEST-{host,ca}`, making them the first time
    /// (Ed25519, mode 0600), and sshd's host key from `sshd_key_file`.
    pub(crate) fn load_or_make(dir: &Path, destination: &str, sshd_key_file: Option<&Path>) -> anyhow::Result<Self> {
        let sshd = match sshd_key_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
                let line = text.lines().next().unwrap_or_default().trim();
                Some(
                    PublicKey::from_openssh(line)
                        .with_context(|| format!("{}: not an OpenSSH public key", path.display()))?,
                )
            }
        };
        let one = |what: &str| -> anyhow::Result<PrivateKey> {
            let path = dir.join(format!("ssh-recorder-{destination}-{what}"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                private_only(&path)?;
                return PrivateKey::from_openssh(text).with_context(|| format!("read {}", path.display()));
            }
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
            let text = key.to_openssh(LineEnding::LF)?;
            write_private(&path, text.as_bytes())?;
            Ok(key)
        };
        Ok(Self {
            host: one("host")?,
            ca: one("ca")?,
            sshd,
        })
    }

    /// The host key, as an OpenSSH line (reported for a host certificate).
    pub(crate) fn host_public(&self) -> String {
        self.host.public_key().to_openssh().unwrap_or_default()
    }

    /// The recorder CA, as a line for sshd's `TrustedUserCAKeys`.
    pub(crate) fn ca_public(&self) -> String {
        self.ca.public_key().to_openssh().unwrap_or_default()
    }

    /// A certificate for `key` to log in to sshd as `login` on `host` for
    /// `user_id`: the principal sshd's principals file holds for that user,
    /// valid five minutes (a session outlives it: sshd checks at login),
    /// with the permissions of the user's own certificate (`user_cert`)
    /// that the recorder passes on: sshd allows through the recorder what
    /// it would allow the user directly, no more.
    pub(crate) fn sign_login(
        &self,
        key: &PublicKey,
        host: &str,
        login: &str,
        user_id: &str,
        user_cert: &Certificate,
        now: u64,
    ) -> anyhow::Result<Certificate> {
        let mut b = Builder::new_with_random_nonce(
            &mut rand::rng(),
            key.key_data().clone(),
            now.saturating_sub(60),
            now + 300,
        )?;
        b.cert_type(CertType::User)?;
        b.key_id(format!("infra-recorder:{host}:{login}:{user_id}"))?;
        b.valid_principal(infra_auth::ssh_ca::principal(host, login, user_id))?;
        for name in PASSED_ON {
            if user_cert.extensions().contains_key(*name) {
                b.extension(*name, "")?;
            }
        }
        Ok(b.sign(&self.ca)?)
    }
}

/// Refuses a key file others may read: whoever reads the recorder CA can
/// sign logins sshd accepts.
fn private_only(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} may be read by others (mode {:o}): make it the connector's only (chmod 600 {})",
        path.display(),
        mode & 0o777,
        path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
    }

    fn cert(ca: &PrivateKey, kind: CertType, principal: &str, from: u64, to: u64) -> Certificate {
        let user = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let mut b =
            Builder::new_with_random_nonce(&mut rand::rng(), user.public_key().key_data().clone(), from, to).unwrap();
        b.cert_type(kind).unwrap();
        b.valid_principal(principal).unwrap();
        b.sign(ca).unwrap()
    }

    #[test]
    fn only_a_current_user_cert_for_this_host_login_and_user_passes() {
        let infra = ca();
        let cas = vec![infra.public_key().to_openssh().unwrap()];
        let p = infra_auth::ssh_ca::principal("web", "deploy", "u1");
        let ok = cert(&infra, CertType::User, &p, 100, 200);
        assert_eq!(check_user_cert(&ok, &cas, "web", "deploy", "u1", 150), Ok(()));
        // Expired, not yet valid.
        assert_eq!(
            check_user_cert(&ok, &cas, "web", "deploy", "u1", 200),
            Err(CertRefusal::Untrusted)
        );
        assert_eq!(
            check_user_cert(&ok, &cas, "web", "deploy", "u1", 99),
            Err(CertRefusal::Untrusted)
        );
        // Another host, another login, another user.
        for (h, l, u) in [("db", "deploy", "u1"), ("web", "root", "u1"), ("web", "deploy", "u2")] {
            assert!(matches!(
                check_user_cert(&ok, &cas, h, l, u, 150),
                Err(CertRefusal::Principal { .. })
            ));
        }
        // Signed by someone else; a host certificate; no CA known.
        let other = cert(&ca(), CertType::User, &p, 100, 200);
        assert_eq!(
            check_user_cert(&other, &cas, "web", "deploy", "u1", 150),
            Err(CertRefusal::Untrusted)
        );
        let host = cert(&infra, CertType::Host, &p, 100, 200);
        assert_eq!(
            check_user_cert(&host, &cas, "web", "deploy", "u1", 150),
            Err(CertRefusal::NotUser)
        );
        assert_eq!(
            check_user_cert(&ok, &[], "web", "deploy", "u1", 150),
            Err(CertRefusal::NoCa)
        );
    }

    #[test]
    fn the_recorder_signs_what_its_own_check_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let keys = RecorderKeys::load_or_make(dir.path(), "web", None).unwrap();
        let again = RecorderKeys::load_or_make(dir.path(), "web", None).unwrap();
        assert_eq!(keys.ca_public(), again.ca_public());
        assert_eq!(keys.host_public(), again.host_public());
        // A key file others may read is refused.
        {
            use std::os::unix::fs::PermissionsExt as _;
            let ca = dir.path().join("ssh-recorder-web-ca");
            std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = RecorderKeys::load_or_make(dir.path(), "web", None).err().unwrap();
            assert!(format!("{e:#}").contains("may be read by others"), "{e:#}");
            std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let session = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        // The user's certificate allows a terminal and agent forwarding,
        // not port forwarding: the recorder's passes on the terminal only.
        let user = {
            let k = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
            let mut b =
                Builder::new_with_random_nonce(&mut rand::rng(), k.public_key().key_data().clone(), 0, 5_000).unwrap();
            b.valid_principal("p").unwrap();
            b.extension("permit-pty", "").unwrap();
            b.extension("permit-agent-forwarding", "").unwrap();
            b.sign(&ca()).unwrap()
        };
        let c = keys
            .sign_login(session.public_key(), "web", "deploy", "u1", &user, 1_000)
            .unwrap();
        let passed: Vec<&String> = c.extensions().keys().collect();
        assert_eq!(passed, ["permit-pty"]);
        assert!(permits(&user, "permit-pty"));
        assert!(!permits(&user, "permit-port-forwarding"));
        assert!(!permits(&user, "permit-agent-forwarding"));
        let cas = vec![keys.ca_public()];
        assert_eq!(check_user_cert(&c, &cas, "web", "deploy", "u1", 1_100), Ok(()));
        assert_eq!(
            check_user_cert(&c, &cas, "web", "deploy", "u1", 2_000),
            Err(CertRefusal::Untrusted)
        );
    }
}
