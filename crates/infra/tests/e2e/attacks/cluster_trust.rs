//! Trust in a cluster's service-account tokens (`infra workload-issuers add
//! --from-cluster`) comes from what its connector reports. A compromised
//! connector with a key of its own must not be able to swap in keys of its
//! own for a cluster it does not serve, even after the destination is
//! removed and its name is free again.

use std::time::Duration;

use base64::Engine as _;
use infra_auth::jwt::SigningKey;
use serde_json::{Value, json};

use super::connector::{serve_as_connector, tunnel_hello};
use crate::e2e::common::{Backend, Env, start};

const ISSUER: &str = "https://kubernetes.default.svc";
const SUBJECT: &str = "system:serviceaccount:shop:api";

/// An ES256 key: its JWKS and a way to sign a service-account token.
struct ClusterKey {
    pem: String,
    jwks: Value,
}

impl ClusterKey {
    fn new(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
        Self {
            pem: key.serialize_pem(),
            jwks,
        }
    }

    fn token(&self, audience: &str) -> String {
        let kid = self.jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid);
        let now = jsonwebtoken::get_current_timestamp();
        let claims =
            json!({"iss": ISSUER, "aud": [audience], "sub": SUBJECT, "iat": now, "nbf": now, "exp": now + 600});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    }
}

/// Connects as connector `name` serving Kubernetes destination `k8s` and
/// reports `key` as the cluster's issuer keys on the control stream.
fn report_cluster(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    name: &str,
    key: &ClusterKey,
) -> Result<tokio_util::sync::CancellationToken, String> {
    let access_key = env.admin.connector_key(name);
    let signing = SigningKey::generate().unwrap();
    let hello = infra_tunnel::proto::Hello {
        version: infra_tunnel::proto::VERSION,
        access_key,
        name: name.to_owned(),
        instance_id: format!("{name}-instance"),
        destinations: vec![infra_tunnel::proto::DestinationInfo {
            name: "k8s".into(),
            kind: infra_tunnel::proto::DestinationKind::Kubernetes,
            labels: Default::default(),
            direct_url: None,
            ssh_host_keys: vec![],
            webhook: None,
        }],
        assertion_key: signing.jwk().x,
        assertion_kid: signing.kid.clone(),
        software: String::new(),
    };
    let (reply, io) = tunnel_hello(env, rt, &hello)?;
    if !reply.ok {
        return Err(reply.error.unwrap_or_default());
    }
    let inventory = json!({"type": "inventory", "destination": "k8s",
        "clusterIssuer": {"issuer": ISSUER, "jwks": key.jwks}});
    let service = move |_req: http::Request<hyper::body::Incoming>| {
        let inventory = inventory.clone();
        async move {
            let (tx, body) = infra_tunnel::body::channel(16);
            tokio::spawn(async move {
                let _ = tx.send(&inventory).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            Ok::<_, std::convert::Infallible>(http::Response::new(infra_tunnel::boxed(body)))
        }
    };
    Ok(serve_as_connector(rt, io, service))
}

fn exchange(env: &Env, token: &str) -> u16 {
    let form = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token_type=urn:ietf:params:oauth:token-type:jwt&subject_token={token}"
    );
    let (status, _) = env
        .server
        .send_json(
            "POST",
            "/api/tokens/exchange",
            None,
            form.as_bytes(),
            "application/x-www-form-urlencoded",
        )
        .unwrap();
    status
}

#[test]
fn attack_a_connector_cannot_swap_the_keys_of_a_cluster_it_took_over() {
    let env = start(Backend::Sqlite);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let audience = env.server.url.trim_end_matches('/').to_owned();
    env.admin.run(&["users", "add", "api@shop.example", "--service"]).ok();

    // The cluster's own connector reports its keys; the admin trusts them.
    let real = ClusterKey::new("real");
    let good = report_cluster(&env, &rt, "kc", &real).expect("the cluster's connector");
    infra_testkit::eventually!(Duration::from_secs(20), || {
        let out = env.admin.run(&[
            "workload-issuers",
            "add",
            "k8s",
            "--from-cluster",
            "k8s",
            "--map",
            &format!("{SUBJECT}=api@shop.example"),
        ]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    assert_eq!(exchange(&env, &real.token(&audience)), 200);

    // The destination is removed; another connector registers the name
    // and reports keys of its own.
    good.cancel();
    env.admin.run(&["destinations", "remove", "k8s"]).ok();
    let forged = ClusterKey::new("forged");
    let evil = infra_testkit::eventually!(Duration::from_secs(20), || {
        report_cluster(&env, &rt, "evil", &forged).map_err(|e| anyhow::anyhow!(e))
    });
    // Give the forged report time to arrive, then try it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        exchange(&env, &forged.token(&audience)),
        401,
        "a token signed with the other connector's keys was exchanged"
    );
    evil.cancel();
}
