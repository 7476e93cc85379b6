//! The server's own X.509 CA and serving certificates.
//!
//! `infra server` on embedded defaults makes a CA once (kept in the store,
//! its key sealed) and, at every start, a fresh serving certificate signed by
//! it. Clients pin the CA (by file or by its SHA-256 fingerprint, printed at
//! start), so replicas and restarts keep working with the same pin.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use crate::Secret;

#[derive(Debug, thiserror::Error)]
#[error("certificate authority: {0}")]
pub struct CaError(String);

impl CaError {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

fn e(err: impl std::fmt::Display) -> CaError {
    CaError(err.to_string())
}

/// A CA as the store keeps it.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: Secret<String>,
}

/// A serving certificate chain and key.
pub struct ServingCert {
    pub chain_pem: String,
    pub key_pem: Secret<String>,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Infra CA");
    dn.push(DnType::OrganizationName, "Infra");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p
}

impl Ca {
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let cert = ca_params().self_signed(&key).map_err(e)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
        })
    }

    /// Issues a serving certificate for `names` (DNS names or IP addresses),
    /// valid for a year.
    pub fn issue_server_cert(&self, names: &[String]) -> Result<ServingCert, CaError> {
        let ca_key = KeyPair::from_pem(self.key_pem.expose()).map_err(e)?;
        // The issuer is rebuilt from the same parameters the CA was made
        // with: the subject name is byte-identical, so chains verify.
        let issuer = Issuer::new(ca_params(), ca_key);
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        p.subject_alt_names = subject_alt_names(names)?;
        p.distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time_now();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let cert = p.signed_by(&key, &issuer).map_err(e)?;
        Ok(ServingCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: Secret::new(key.serialize_pem()),
        })
    }
}

/// `names` as a certificate's subject alternative names: IP addresses as
/// such, the rest as DNS names.
pub(crate) fn subject_alt_names(names: &[String]) -> Result<Vec<SanType>, CaError> {
    names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(e),
        })
        .collect()
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by `:`
/// (the form `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    h.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a fingerprint as a user may type it (any case, with or
/// without colons, optional `SHA256:` prefix) for comparison.
pub fn normalize_fingerprint(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("SHA256:")
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_uppercase()
}
