//! Workload identity both ways: a workload exchanges its service-account
//! token for Infra credentials, and Infra's tokens for another audience
//! verify with PyJWT.

use std::process::Command;

use infra_testkit::Upstream;

use super::web_connector;
use crate::e2e::common::{self, Backend, Env};

/// A P-256 key: the signing key and its JWKS (as a Kubernetes cluster
/// publishes at /openid/v1/jwks).
pub fn workload_key() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use base64::Engine;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let raw = kp.public_key_raw();
    let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "sa-key", "alg": "ES256", "use": "sig",
        "x": b(&raw[1..33]), "y": b(&raw[33..65])}]});
    (enc, jwks)
}

pub fn sa_token(enc: &jsonwebtoken::EncodingKey, iss: &str, aud: &str, exp_in: i64, sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("sa-key".into());
    let claims = serde_json::json!({"iss": iss, "sub": sub, "aud": [aud], "exp": now + exp_in, "iat": now, "nbf": now,
        "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer"}}});
    jsonwebtoken::encode(&header, &claims, enc).unwrap()
}

pub fn exchange(env: &Env, token: &str, resource: Option<&str>) -> (u16, serde_json::Value) {
    let mut body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token={token}"
    );
    if let Some(r) = resource {
        body.push_str(&format!("&resource={r}"));
    }
    env.server
        .send_json(
            "POST",
            "/api/tokens/exchange",
            None,
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        )
        .unwrap()
}

/// Issuer of the test cluster's service-account tokens.
pub const WORKLOAD_ISS: &str = "https://kubernetes.default.svc.cluster.local";
/// The service account `deployer` in namespace `ci`.
pub const WORKLOAD_SUB: &str = "system:serviceaccount:ci:deployer";

/// Service account `sa` (granted `web`), and a workload issuer that maps
/// [`WORKLOAD_SUB`] to it; returns the issuer's signing key.
pub fn workload_issuer(env: &Env, sa: &str) -> jsonwebtoken::EncodingKey {
    let (enc, jwks) = workload_key();
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let iss = WORKLOAD_ISS;
    env.admin.run(&["users", "add", sa, "--service"]).ok();
    env.admin.run(&["grants", "add", sa, "web", "--role", "deploy"]).ok();
    env.admin
        .run(&[
            "workload-issuers",
            "add",
            "k8s",
            "--issuer",
            iss,
            "--jwks-file",
            jwks_file.to_str().unwrap(),
            "--audience",
            "infra",
            "--map",
            &format!("{WORKLOAD_SUB}={sa}"),
        ])
        .ok();
    enc
}

#[test]
fn a_workload_exchanges_its_service_account_token_for_access() {
    let env = common::start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let _c = web_connector(&env, &up);
    let (iss, sub, sa) = (WORKLOAD_ISS, WORKLOAD_SUB, "deployer@ci.example.com");
    let enc = workload_issuer(&env, sa);
    // The exchange gives an access key of the service account...
    let (s, v) = exchange(&env, &sa_token(&enc, iss, "infra", 600, sub), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    let access = v["access_token"].as_str().unwrap().to_owned();
    let (s, info) = env.server.get_json("/api/info", Some(&access)).unwrap();
    assert_eq!(s, 200);
    assert_eq!(info["user"]["email"], sa);
    // ... which reaches the destination it was granted, through the gateway.
    let (s, v) = exchange(&env, &sa_token(&enc, iss, "infra", 600, sub), Some("web"));
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--cacert", env.server.ca_path().to_str().unwrap(), "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://web.localhost:{}/echo/deploy", env.server.port))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("/echo/deploy") && body.contains(sa), "{body}");

    // Refused: an untrusted issuer, the wrong audience, an expired token,
    // another key, an unmapped subject.
    let (other, _) = workload_key();
    for (t, why) in [
        (
            sa_token(&enc, "https://evil.example", "infra", 600, sub),
            "no workload issuer trusts",
        ),
        (sa_token(&enc, iss, "vault", 600, sub), "audience"),
        (sa_token(&enc, iss, "infra", -120, sub), "expired"),
        (sa_token(&other, iss, "infra", 600, sub), "signature"),
        (
            sa_token(&enc, iss, "infra", 600, "system:serviceaccount:ci:other"),
            "not mapped",
        ),
        ("garbage".to_owned(), "not a well-formed JWT"),
    ] {
        let (s, v) = exchange(&env, &t, None);
        assert_eq!(s, 401, "{why}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let denied = env
        .admin
        .run(&["audit", "list", "--action", "token.exchange", "-o", "json"])
        .ok()
        .stdout
        .clone();
    assert!(denied.contains("denied") && denied.contains("success"), "{denied}");
}

#[test]
fn infra_tokens_for_an_audience_verify_with_pyjwt() {
    let env = common::start_with(Backend::Sqlite, vec!["--issuer-claim".into(), "tenant=acme".into()]);
    env.admin.run(&["groups", "add", "ops"]).ok();
    env.admin.run(&["groups", "adduser", "ops", common::ADMIN]).ok();
    let token = env
        .admin
        .run(&["tokens", "--audience", "sts.example"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    // PyJWT, given only the server's URL (and its CA): discovery, JWKS, verify.
    let script = r#"
import json, ssl, sys, urllib.request
import jwt
base, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
get = lambda u: json.load(urllib.request.urlopen(u, context=ctx))
conf = get(base + "/.well-known/openid-configuration")
keys = jwt.PyJWKSet.from_dict(get(conf["jwks_uri"]))
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in keys.keys if k.key_id == kid)
claims = jwt.decode(token, key.key, algorithms=conf["id_token_signing_alg_values_supported"],
                    audience="sts.example", issuer=conf["issuer"])
print(json.dumps(claims))
try:
    jwt.decode(token, key.key, algorithms=["EdDSA"], audience="other.example", issuer=conf["issuer"])
    print("WRONG AUDIENCE ACCEPTED")
except jwt.InvalidAudienceError:
    pass
"#;
    // Debian's python3-jwt, not whatever python3 comes first on PATH.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &env.server.url,
            env.server.ca_path().to_str().unwrap(),
            &token,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let claims: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(claims["aud"], "sts.example");
    assert_eq!(claims["email"], common::ADMIN);
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["groups"], serde_json::json!(["ops"]));
    assert!(!stdout.contains("WRONG AUDIENCE ACCEPTED"));
    // An audience that looks like a destination name is refused.
    let out = env.admin.run(&["tokens", "--audience", "web"]);
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("could be taken for an Infra destination"),
        "{out:?}"
    );
}
