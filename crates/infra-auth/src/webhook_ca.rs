//! The CA of admission webhooks: the API server of a cluster trusts it (the
//! webhook configuration's `caBundle`) to reach the connector's webhook.
//!
//! It is not the server's CA. People and connectors trust that one for the
//! server itself; a connector can ask for webhook certificates, so a
//! compromised connector must not get one that the CLI would take for the
//! server. Its key is derived from the root key, so every replica makes the
//! same CA with nothing stored, and the certificate is deterministic
//! (Ed25519 signs deterministically; serial and dates are fixed).
//!
//! The connector keeps its private key: it sends the public key, the server
//! certifies it.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PublicKeyData, SerialNumber, SignatureAlgorithm,
};
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::tls_ca::CaError;

/// How long a webhook certificate lives; the connector gets a new one with
/// each snapshot once a third of that is left.
pub const LEAF_DAYS: i64 = 90;

fn err(e: impl std::fmt::Display) -> CaError {
    CaError::new(format!("webhook CA: {e}"))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Infra webhook CA");
    dn.push(DnType::OrganizationName, "Infra");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(SerialNumber::from_slice(&[1]));
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p
}

/// The webhook CA, made from a 32-byte seed.
pub struct WebhookCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl WebhookCa {
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, CaError> {
        let ed = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed).map_err(err)?;
        let pkcs8 = ed.to_pkcs8().map_err(err)?;
        let der = PrivatePkcs8KeyDer::from(pkcs8.as_ref());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519).map_err(err)?;
        let cert_pem = ca_params().self_signed(&key).map_err(err)?.pem();
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
        })
    }

    /// The CA certificate: the `caBundle` (base64 of this PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate for `names` (DNS names or IP addresses) on the
    /// connector's P-256 public key (the uncompressed point), valid for
    /// [`LEAF_DAYS`]: the leaf in PEM, then the CA.
    pub fn certify(&self, p256_point: &[u8], names: &[String], now: time::OffsetDateTime) -> Result<String, CaError> {
        if p256_point.len() != 65 || p256_point[0] != 4 {
            return Err(err("the public key is not an uncompressed P-256 point"));
        }
        if names.is_empty() {
            return Err(err("no names to certify"));
        }
        if names.iter().any(|n| n.contains('*')) {
            return Err(err("a webhook's names are exact: no wildcards"));
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.subject_alt_names = crate::tls_ca::subject_alt_names(names)?;
        p.distinguished_name.push(DnType::CommonName, names[0].clone());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = p.signed_by(&P256Point(p256_point), &self.issuer).map_err(err)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// A new P-256 key for a webhook's TLS, as PKCS#8 DER (kept by the
/// connector in its data directory).
pub fn generate_key() -> Result<crate::Secret<Vec<u8>>, CaError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
        .map_err(err)?;
    Ok(crate::Secret::new(doc.as_ref().to_vec()))
}

/// The public point of a P-256 key in PKCS#8 DER: what the server
/// certifies.
pub fn public_point(pkcs8: &[u8]) -> Result<Vec<u8>, CaError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).map_err(err)?;
    Ok(k.public_key().as_ref().to_vec())
}

/// A public key the server does not hold the private half of.
struct P256Point<'a>(&'a [u8]);

impl PublicKeyData for P256Point<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn same_seed_same_ca_and_leaves_chain_to_it() {
        let a = WebhookCa::from_seed(&[7; 32]).unwrap();
        let b = WebhookCa::from_seed(&[7; 32]).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem(), "replicas must publish one caBundle");
        assert_ne!(a.cert_pem(), WebhookCa::from_seed(&[8; 32]).unwrap().cert_pem());

        let key = generate_key().unwrap();
        let point = public_point(key.expose()).unwrap();
        let chain = a
            .certify(
                &point,
                &["hook.infra.svc".into(), "127.0.0.1".into()],
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 2);
        // A server presenting the leaf with the connector's key is accepted
        // by a client that trusts only the webhook CA.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs[1].clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("hook.infra.svc").unwrap();
        verifier
            .verify_server_cert(&certs[0], &[], &name, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("infra.example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&certs[0], &[], &other, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn refuses_what_is_not_a_p256_point() {
        let ca = WebhookCa::from_seed(&[1; 32]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(ca.certify(&[4; 10], &["a.svc".into()], now).is_err());
        assert!(ca.certify(&[0; 65], &["a.svc".into()], now).is_err());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(ca.certify(key.public_key_raw(), &[], now).is_err());
        assert!(ca.certify(key.public_key_raw(), &["*.svc".into()], now).is_err());
    }
}
