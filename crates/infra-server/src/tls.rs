//! Serving certificates chosen by SNI: the server's own names get the
//! certificate made at start; `<destination>.<gateway domain>` names get one
//! issued on first use by the server's CA and cached, so gateway URLs
//! verify in every client (a `*.localhost` wildcard is refused by many,
//! since it spans a single label).
//!
//! Only for destinations that exist: a client choosing names cannot make the
//! CA sign (and the cache hold) certificates for whatever it likes, and new
//! certificates are issued at a bounded rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infra_auth::tls_ca::Ca;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::gateway_names::KnownNames;

/// Most names kept; past it the cache starts afresh.
const CACHE_MAX: usize = 4096;
/// New certificates issued per second at most (each costs a signature).
const ISSUE_PER_SECOND: u32 = 20;

pub(crate) struct SniResolver {
    ca: Ca,
    default: Arc<CertifiedKey>,
    gateway_domain: String,
    own_host: String,
    known: KnownNames,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The second issuance is being counted for, and the count so far.
    issued: Mutex<(Instant, u32)>,
}

pub(crate) fn certified_key(chain_pem: &str, key_pem: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let signer = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("gateway_domain", &self.gateway_domain)
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    pub(crate) fn new(
        ca: Ca,
        default: Arc<CertifiedKey>,
        gateway_domain: String,
        own_host: String,
        known: KnownNames,
    ) -> Self {
        Self {
            ca,
            default,
            gateway_domain,
            own_host,
            known,
            cache: Mutex::new(HashMap::new()),
            issued: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Whether one more certificate may be issued this second.
    fn may_issue(&self) -> bool {
        let Ok(mut issued) = self.issued.lock() else {
            return false;
        };
        if issued.0.elapsed() >= Duration::from_secs(1) {
            *issued = (Instant::now(), 0);
        }
        issued.1 += 1;
        issued.1 <= ISSUE_PER_SECOND
    }

    fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let dest = crate::gateway::destination_of(name, &self.gateway_domain, &self.own_host)?;
        if !self.known.contains(&dest) {
            return None;
        }
        let mut cache = self.cache.lock().ok()?;
        if let Some(k) = cache.get(name) {
            return Some(k.clone());
        }
        if !self.may_issue() {
            tracing::warn!(
                name,
                "gateway certificate issuance over its rate; serving the default certificate"
            );
            return None;
        }
        let issued = self.ca.issue_server_cert(&[name.to_owned()]).ok()?;
        let key = certified_key(&issued.chain_pem, issued.key_pem.expose()).ok()?;
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(name.to_owned(), key.clone());
        Some(key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        Some(
            name.and_then(|n| self.for_name(&n))
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}
