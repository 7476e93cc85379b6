//! The SSH certificate authorities: Ed25519 keys that sign OpenSSH user
//! certificates (for people, one host at a time) and host certificates
//! (so clients trust a host without a first-use prompt).
//!
//! *Architecture Invariant:* a user certificate names its host and its user
//! in every principal (`infra:<host>:<login>:<user id>`), and a host's sshd
//! accepts only principals with its own name and a user granted that login
//! now, so a certificate for one host never opens another (even where both
//! trust the same CA and have the same login), and a user whose grant is
//! removed is refused at once, whoever else still holds the login.

use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::private::Ed25519Keypair;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::Secret;

/// Why a key or certificate was refused; the message is safe for clients.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("the public key is not in OpenSSH format ('ssh-ed25519 AAAA...'): {0}")]
    BadKey(String),
    #[error("key type {0} is not allowed: use Ed25519 (ssh-keygen -t ed25519), ECDSA, or RSA of at least 3072 bits")]
    KeyType(String),
    #[error("the RSA key has {0} bits; at least 3072 are required (ssh-keygen -t ed25519 is better)")]
    RsaTooShort(usize),
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
    #[error(transparent)]
    Random(#[from] crate::RandomError),
}

/// Which certificates a CA signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    User,
    Host,
}

impl CaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::User => "user",
            CaKind::Host => "host",
        }
    }
}

/// A certificate authority key.
pub struct SshCa {
    key: PrivateKey,
}

impl SshCa {
    pub fn generate(kind: CaKind) -> Result<Self, SshError> {
        let seed = Secret::new(crate::random_bytes::<32>()?);
        let pair = Ed25519Keypair::from_seed(seed.expose());
        let mut key = PrivateKey::from(pair);
        key.set_comment(format!("infra-{}-ca", kind.as_str()));
        Ok(Self { key })
    }

    /// From the OpenSSH private key format (as stored, sealed).
    pub fn from_openssh(pem: &str) -> Result<Self, SshError> {
        let key = PrivateKey::from_openssh(pem).map_err(|e| SshError::BadKey(e.to_string()))?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(SshError::KeyType(key.algorithm().to_string()));
        }
        Ok(Self { key })
    }

    pub fn to_openssh(&self) -> Result<Secret<String>, SshError> {
        let pem = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshError::Sign(e.to_string()))?;
        Ok(Secret::new(pem.to_string()))
    }

    /// The public key line, for `TrustedUserCAKeys` or `@cert-authority`.
    pub fn public_openssh(&self) -> Result<String, SshError> {
        self.key
            .public_key()
            .to_openssh()
            .map_err(|e| SshError::Sign(e.to_string()))
    }

    /// Signs a user certificate. `valid` is (after, before) in unix seconds.
    pub fn sign_user(&self, req: &UserCertRequest<'_>) -> Result<Certificate, SshError> {
        let nonce = crate::random_bytes::<32>()?;
        let mut b = Builder::new(nonce.to_vec(), req.key.key_data().clone(), req.valid.0, req.valid.1)
            .map_err(|e| SshError::Sign(e.to_string()))?;
        let err = |e: ssh_key::Error| SshError::Sign(e.to_string());
        b.cert_type(CertType::User).map_err(err)?;
        b.serial(req.serial).map_err(err)?;
        b.key_id(req.key_id.clone()).map_err(err)?;
        for login in req.logins {
            b.valid_principal(principal(req.host, login, req.user_id))
                .map_err(err)?;
        }
        for ext in req.extensions {
            b.extension(ext.clone(), "").map_err(err)?;
        }
        b.sign(&self.key).map_err(err)
    }

    /// Signs a host certificate for `names`. Everything but the signature
    /// is derived from the inputs and the day, so signing again on the
    /// same day gives the same certificate: it can sit in a snapshot that
    /// is compared for changes without causing a push on every build.
    pub fn sign_host(&self, host_key: &PublicKey, names: &[String], now_secs: u64) -> Result<Certificate, SshError> {
        let day = now_secs / 86_400 * 86_400;
        let valid_after = day.saturating_sub(3_600);
        let valid_before = day + HOST_CERT_DAYS * 86_400;
        let key_line = host_key.to_openssh().map_err(|e| SshError::Sign(e.to_string()))?;
        let seed = format!("{}|{}|{}|{}", self.public_openssh()?, key_line, names.join(","), day);
        let digest = crate::sha256_hex(seed.as_bytes());
        let nonce = hex::decode(&digest[..32]).map_err(|e| SshError::Sign(e.to_string()))?;
        let serial = u64::from_str_radix(&digest[32..48], 16).map_err(|e| SshError::Sign(e.to_string()))?;
        let err = |e: ssh_key::Error| SshError::Sign(e.to_string());
        let mut b = Builder::new(nonce, host_key.key_data().clone(), valid_after, valid_before).map_err(err)?;
        b.cert_type(CertType::Host).map_err(err)?;
        b.serial(serial).map_err(err)?;
        b.key_id(format!("infra-host:{}", names.first().map_or("", String::as_str)))
            .map_err(err)?;
        for n in names {
            b.valid_principal(n.clone()).map_err(err)?;
        }
        b.sign(&self.key).map_err(err)
    }
}

/// Days a host certificate is valid; connectors get a fresh one every day.
pub const HOST_CERT_DAYS: u64 = 8;

/// What a user certificate says.
pub struct UserCertRequest<'a> {
    pub key: &'a PublicKey,
    pub host: &'a str,
    pub user_id: &'a str,
    pub logins: &'a [String],
    pub key_id: String,
    pub serial: u64,
    pub valid: (u64, u64),
    pub extensions: &'a [String],
}

/// The principal that lets user `user_id`'s certificate log in as `login`
/// on `host`.
pub fn principal(host: &str, login: &str, user_id: &str) -> String {
    format!("infra:{host}:{login}:{user_id}")
}

/// Parses a public key a client or connector sent and checks its type:
/// Ed25519 and ECDSA (also on security keys), and RSA of 3072 bits or
/// more. DSA and short RSA keys are refused.
pub fn parse_allowed_key(line: &str) -> Result<PublicKey, SshError> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| SshError::BadKey(e.to_string()))?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) => Ok(key),
        KeyData::Ecdsa(k)
            if matches!(
                k.curve(),
                EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521
            ) =>
        {
            Ok(key)
        }
        KeyData::Rsa(rsa) => {
            let bytes = rsa.n.as_positive_bytes().unwrap_or_default();
            let bits = bytes.len() * 8 - bytes.first().map_or(0, |b| b.leading_zeros() as usize);
            if bits < 3072 {
                Err(SshError::RsaTooShort(bits))
            } else {
                Ok(key)
            }
        }
        other => Err(SshError::KeyType(other.algorithm().to_string())),
    }
}

/// `SHA256:...` as ssh-keygen prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parses a certificate (for the client's cache and for tests).
pub fn parse_certificate(line: &str) -> Result<Certificate, SshError> {
    Certificate::from_openssh(line.trim()).map_err(|e| SshError::BadKey(e.to_string()))
}

/// Line for a certificate file.
pub fn certificate_line(cert: &Certificate) -> Result<String, SshError> {
    cert.to_openssh().map_err(|e| SshError::Sign(e.to_string()))
}

/// A fresh Ed25519 key for a client: (private key in OpenSSH format,
/// public key line).
pub fn client_key(comment: &str) -> Result<(Secret<String>, String), SshError> {
    let seed = Secret::new(crate::random_bytes::<32>()?);
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(seed.expose()));
    key.set_comment(comment);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::Sign(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| SshError::Sign(e.to_string()))?;
    Ok((Secret::new(pem.to_string()), public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_certificate_binds_host_and_logins() {
        let ca = SshCa::generate(CaKind::User).unwrap();
        let (_, public) = client_key("alice").unwrap();
        let key = parse_allowed_key(&public).unwrap();
        let logins = vec!["root".to_owned(), "deploy".to_owned()];
        let ext = vec!["permit-pty".to_owned()];
        let cert = ca
            .sign_user(&UserCertRequest {
                key: &key,
                host: "host1",
                user_id: "u1",
                logins: &logins,
                key_id: "alice@example.com serial=7".into(),
                serial: 7,
                valid: (100, 200),
                extensions: &ext,
            })
            .unwrap();
        assert_eq!(
            cert.valid_principals(),
            ["infra:host1:root:u1", "infra:host1:deploy:u1"]
        );
        assert_eq!(cert.serial(), 7);
        assert_eq!(cert.cert_type(), CertType::User);
        assert!(cert.extensions().contains_key("permit-pty"));
        assert!(!cert.extensions().contains_key("permit-port-forwarding"));
        let ca_fp = ca.key.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(150, [&ca_fp]).unwrap();
        assert!(cert.validate_at(250, [&ca_fp]).is_err(), "expired");
        let other = SshCa::generate(CaKind::User).unwrap();
        let other_fp = other.key.public_key().fingerprint(HashAlg::Sha256);
        assert!(cert.validate_at(150, [&other_fp]).is_err(), "another CA");
        // Round trip through the stored form.
        let again = SshCa::from_openssh(ca.to_openssh().unwrap().expose()).unwrap();
        assert_eq!(again.public_openssh().unwrap(), ca.public_openssh().unwrap());
        let line = certificate_line(&cert).unwrap();
        assert_eq!(parse_certificate(&line).unwrap().serial(), 7);
    }

    #[test]
    fn host_certificate_is_stable_within_a_day() {
        let ca = SshCa::generate(CaKind::Host).unwrap();
        let (_, public) = client_key("host").unwrap();
        let key = parse_allowed_key(&public).unwrap();
        let names = vec!["host1".to_owned()];
        let a = ca.sign_host(&key, &names, 86_400 * 100 + 5).unwrap();
        let b = ca.sign_host(&key, &names, 86_400 * 100 + 80_000).unwrap();
        let c = ca.sign_host(&key, &names, 86_400 * 101 + 5).unwrap();
        assert_eq!(certificate_line(&a).unwrap(), certificate_line(&b).unwrap());
        assert_ne!(certificate_line(&a).unwrap(), certificate_line(&c).unwrap());
        assert_eq!(a.cert_type(), CertType::Host);
        assert_eq!(a.valid_principals(), ["host1"]);
        assert!(a.valid_before() - 86_400 * 100 >= 7 * 86_400);
    }

    #[test]
    fn refuses_weak_and_unknown_keys() {
        let dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAP7tmTqpOPeFChj67jbBcU5O8XBVBSg/bBwhPyHGUU2YWcjeMJsQ7NbmMoCuk9grr9cf9Lo4ItGjt0oOAgFe+KliYHDDXA2f66nnRyxYOFMFi39sTp2hMAu0INXDtdkXwQZb1A1BF+E9GGhMhdMlbcrZQl8dAc76Qj55+q5IHTkLAAAAFQDROmZfjkSZSvVMjjvdL6vuMafN2QAAAIEAzg3Y3O69IM6SnQpEYA3/WVBM4/V4smlHi+VFzHY2mp8/CoonV/KqZNIGZttkh19wkKoIpPUbux91ArL/a+zA6NXSL36DAAtVp7ery0mdCsX+nxx1hTBZo2yybQ2UVgWC55O+9gPDlGGOqvPPF8eZPP9vOgRKXCkSCYOHr/8RkHYAAACBANxx/J8IG/K5zMIGoTXyL9KAIU9Od5tcQ1uhYdtNt9y138cWHyF1JcespsXoA6pOun8SDyT19Zmn7aXCwogVtA6suMRFuFRdjwvnAtIlQc3PL6+76oL8eLCEehg17TlrCjuiBqQqipztW2TM8FQL791iAAAYWqothsDAXgaZxunn dsa";
        assert!(matches!(parse_allowed_key(dsa), Err(SshError::KeyType(_))));
        assert!(matches!(
            parse_allowed_key("ssh-ed25519 notbase64"),
            Err(SshError::BadKey(_))
        ));
        assert!(matches!(parse_allowed_key(""), Err(SshError::BadKey(_))));
        let rsa2048 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCzTFVQ1TF6EEe0qq15hWPOh3Rf0eDO+9ZzP61FTzYdnmDZdKOxEDyfySLy/mngLL3zPI40BoyWKIVNLZVZRniz103uT5xcU1UFLxuQPFAZbo6lW9tJN48iypeWc5t50775OS6ah3MP1Z151NEsXPzIFSiOohmVxB2TrkdcQGO0yoQOToqiYJPzjWiGOMMnkt92P9ClykVNtnvhAAoGaTCJHCmo6N/H4GDan0kdOa8SyHVDxpjiIWdq2TsRYeQrEF9NkKwrB/h3RwelWel7p/JPq8gVVapdLNU3BmLl6HVJ0fwZxQ9YDMLuqoIz8RHzuPJUTi14cPeSokMWSyKFaghd rsa2048";
        match parse_allowed_key(rsa2048) {
            Err(SshError::RsaTooShort(bits)) => assert_eq!(bits, 2048),
            other => panic!("expected RsaTooShort, got {:?}", other.map(|k| k.algorithm())),
        }
    }
}
