//! The mutating admission webhook: the API server of the cluster sends it
//! every pod created in the namespaces the webhook configuration selects,
//! over TLS with a certificate from the server's webhook CA, and it answers
//! from the last snapshot alone (see `mutate.rs`).
//!
//! Who may call it: anyone who reaches its port, so it answers only what
//! the API server asks (a pod, as JSON) and changes nothing itself. The
//! API server is what applies the patch, and only to the pod it asked
//! about.

pub(crate) mod mutate;

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Limited};
use hyper_util::rt::TokioIo;
use infra_auth::Secret;
use infra_tunnel::proto::WebhookKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::state::State;

/// The API server sends at most 3 MiB; a pod is far smaller.
const BODY_LIMIT: usize = 4 << 20;
const KEY_FILE: &str = "webhook-key.der";
/// The last certificate from the server, so that a restart serves at once
/// (until the first snapshot arrives, the API server could not reach the
/// webhook, and with `failurePolicy: Fail` would refuse every pod of the
/// namespaces it serves).
const CERT_FILE: &str = "webhook-cert.pem";

/// The webhook's TLS key, made once and kept in the data directory (0600).
pub(crate) fn load_or_make_key(dir: &Path) -> anyhow::Result<Secret<Vec<u8>>> {
    let path = dir.join(KEY_FILE);
    if let Ok(der) = std::fs::read(&path) {
        infra_auth::webhook_ca::public_point(&der).with_context(|| format!("{} is not a P-256 key", path.display()))?;
        return Ok(Secret::new(der));
    }
    let key = infra_auth::webhook_ca::generate_key()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(
        &mut opts.open(&path).with_context(|| format!("write {}", path.display()))?,
        key.expose(),
    )?;
    Ok(key)
}

/// What the handshake tells the server: the public key and names to
/// certify.
pub(crate) fn key_info(cfg: &WebhookConfig, key: &Secret<Vec<u8>>) -> Option<WebhookKey> {
    let point = infra_auth::webhook_ca::public_point(key.expose()).ok()?;
    Some(WebhookKey {
        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(point),
        names: cfg.names.clone(),
    })
}

/// The certificate the server last sent, with the connector's own key.
#[derive(Debug)]
struct Certificate {
    key: Arc<Secret<Vec<u8>>>,
    /// Where the chain in use is kept.
    path: std::path::PathBuf,
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl Certificate {
    /// Takes a new chain if it differs from the one in use.
    fn update(&self, chain_pem: &str) -> anyhow::Result<()> {
        if chain_pem.is_empty()
            || self
                .current
                .read()
                .is_ok_and(|c| c.as_ref().is_some_and(|(pem, _)| pem == chain_pem))
        {
            return Ok(());
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.expose().clone()));
        let signer = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key)?;
        if let Ok(mut c) = self.current.write() {
            *c = Some((chain_pem.to_owned(), Arc::new(CertifiedKey::new(certs, signer))));
        }
        if std::fs::read_to_string(&self.path).ok().as_deref() != Some(chain_pem)
            && let Err(e) = std::fs::write(&self.path, chain_pem)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot keep the webhook certificate");
        }
        tracing::info!("webhook certificate from the server in use");
        Ok(())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.as_ref().map(|(_, k)| k.clone())
    }
}

/// Serves the webhook on `listener` until `shutdown`.
pub(crate) async fn serve(
    state: Arc<State>,
    cfg: WebhookConfig,
    key: Arc<Secret<Vec<u8>>>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let cert = Arc::new(Certificate {
        key,
        path: state.settings.data_dir.join(CERT_FILE),
        current: RwLock::new(None),
    });
    if let Ok(pem) = std::fs::read_to_string(&cert.path)
        && let Err(e) = cert.update(&pem)
    {
        tracing::warn!(error = %format!("{e:#}"), "the kept webhook certificate cannot be used; waiting for the server's");
    }
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    // Each snapshot may carry a renewed certificate.
    let mut snapshots = state.subscribe_snapshots();
    let certs = cert.clone();
    state.tasks.spawn(async move {
        loop {
            let pem = snapshots
                .borrow_and_update()
                .as_ref()
                .and_then(|p| p.snapshot.workloads.as_ref().map(|w| w.certificate.clone()));
            if let Some(pem) = pem
                && let Err(e) = certs.update(&pem)
            {
                tracing::warn!(error = %format!("{e:#}"), "the server's webhook certificate cannot be used");
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    });
    let cfg = Arc::new(cfg);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            () = shutdown.cancelled() => return,
        };
        let (acceptor, state, cfg) = (acceptor.clone(), state.clone(), cfg.clone());
        let shutdown = shutdown.clone();
        state.clone().tasks.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let (state, cfg) = (state.clone(), cfg.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&state, &cfg, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn answer(status: u16, body: &Value) -> http::Response<infra_tunnel::Body> {
    let mut r = http::Response::new(infra_tunnel::full(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    state: &State,
    cfg: &WebhookConfig,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<infra_tunnel::Body> {
    let started = std::time::Instant::now();
    if req.method() != http::Method::POST || req.uri().path() != "/mutate" {
        return answer(404, &json!({"message": "the admission webhook is POST /mutate"}));
    }
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(413, &json!({"message": "request too large"})),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return answer(400, &json!({"message": "not an AdmissionReview"}));
    };
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return answer(400, &json!({"message": "AdmissionReview without request.uid"}));
    };
    let response = review_response(state, cfg, request);
    let kind = if response["allowed"] == json!(false) {
        "refused"
    } else if response.get("patch").is_some() {
        "injected"
    } else {
        "untouched"
    };
    crate::metrics::METRICS.admission(kind, started.elapsed());
    let mut response = response;
    response["uid"] = json!(uid);
    answer(
        200,
        &json!({
            "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": response,
        }),
    )
}

/// The `response` of an AdmissionReview for `request` (without its uid).
fn review_response(state: &State, cfg: &WebhookConfig, request: &Value) -> Value {
    let pod = &request["object"];
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| pod["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    let asks = pod["metadata"]["annotations"][mutate::ANNOTATION].is_string();
    if request["kind"]["kind"].as_str() != Some("Pod") || !asks {
        return json!({"allowed": true});
    }
    let pushed = state.subscribe_snapshots().borrow().clone();
    let Some(workloads) = pushed.as_ref().and_then(|p| p.snapshot.workloads.clone()) else {
        return json!({"allowed": false, "status": {"code": 503, "message":
            "Infra's connector has not received its state from the server yet; try again"}});
    };
    let cx = mutate::Context {
        workloads: &workloads,
        image: &cfg.image,
        server: &cfg.server,
    };
    let d = mutate::mutate(pod, namespace, &cx);
    let name = pod["metadata"]["name"]
        .as_str()
        .or_else(|| pod["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    if let Some(message) = d.refuse {
        tracing::info!(namespace, pod = name, reason = %message, "admission: pod refused");
        return json!({"allowed": false, "status": {"code": 400, "message": message}});
    }
    for w in &d.warnings {
        tracing::warn!(namespace, pod = name, warning = %w, "admission: pod admitted with a warning");
    }
    let patch = base64::engine::general_purpose::STANDARD.encode(Value::Array(d.patch).to_string());
    let mut r = json!({"allowed": true, "patchType": "JSONPatch", "patch": patch});
    if !d.warnings.is_empty() {
        r["warnings"] = json!(d.warnings);
    }
    r
}
