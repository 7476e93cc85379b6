//! Identity providers against a real OpenID Connect provider (npm
//! `oidc-provider` with its own login form, testkit `OidcProvider`): CLI
//! login by code + PKCE (the provider's form driven over HTTP as the
//! "browser"), the device grant, groups (path-style too) and their grants,
//! refresh that follows the provider, every refusal; a browser (headless
//! Chromium) reaching an HTTP destination; workload token exchange; Infra
//! as an issuer checked by PyJWT.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use infra_testkit::{Cli, Connector, HttpDest, OidcProvider, Output, Upstream};

use super::common::{Backend, Env, bin, json};

const SECRET: &str = "client-secret-1";

pub struct Idp {
    pub env: Env,
    pub idp: OidcProvider,
    dir: tempfile::TempDir,
}

pub fn setup() -> Idp {
    setup_with(Vec::new())
}

fn setup_with(mut server_args: Vec<String>) -> Idp {
    server_args.extend(["--provider-refresh".into(), "1s".into()]);
    let env = super::common::start_with(Backend::Sqlite, server_args);
    let idp = OidcProvider::start(serde_json::json!({
        "clients": [{
            "client_id": "infra", "client_secret": SECRET,
            "redirect_uris": ["http://127.0.0.1/callback", format!("https://localhost:{}/oidc/callback", env.server.port)],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic"
        }],
        "users": [
            {"sub": "u-alice", "username": "alice", "password": "alice-pw", "email": "alice@example.com", "name": "Alice",
             "groups": ["devs", "/tenant-a/root/admins"]},
            {"sub": "u-bob", "username": "bob", "password": "bob-pw", "email": "bob@example.com", "name": "Bob", "groups": []},
            {"sub": "u-mallory", "username": "mallory", "password": "mallory-pw", "email": "admin@example.com",
             "email_verified": false, "name": "Mallory", "groups": ["ops"]}
        ],
        "groupsInIdToken": true
    }))
    .expect("start the OIDC provider");
    add_provider(&env, &idp.issuer, &[]);
    Idp {
        env,
        idp,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// `infra providers add idp` for the test provider, with `extra` flags.
fn add_provider(env: &Env, issuer: &str, extra: &[&str]) {
    let mut args = vec!["providers", "add", "idp", "--issuer", issuer, "--client-id", "infra"];
    args.extend_from_slice(extra);
    env.admin
        .run_env(&args, &[("INFRA_PROVIDER_CLIENT_SECRET", SECRET)], None)
        .ok();
}

fn addr(env: &Env) -> String {
    format!("127.0.0.1:{}", env.server.port)
}

/// `infra login --provider idp` with a scripted browser that logs in as `user`.
pub fn provider_login(h: &Idp, cli: &Cli, user: &str, password: &str, extra: &str) -> Output {
    let browser = h.idp.browser_script(h.dir.path(), user, password, extra).unwrap();
    let ca = h.env.server.ca_path();
    cli.run_env(
        &[
            "login",
            &addr(&h.env),
            "--tls-ca",
            ca.to_str().unwrap(),
            "--provider",
            "idp",
        ],
        &[("BROWSER", browser.to_str().unwrap())],
        None,
    )
}

pub fn audit(env: &Env, action: &str) -> String {
    env.admin
        .run(&["audit", "list", "--action", action, "-o", "json"])
        .ok()
        .stdout
        .clone()
}

#[test]
fn cli_login_maps_groups_and_refresh_follows_the_provider() {
    let h = setup();
    // Grants to the provider's groups, one of them path-style.
    for g in ["devs", "/tenant-a/root/admins"] {
        h.env.admin.run(&["groups", "add", g]).ok();
    }
    h.env
        .admin
        .run(&[
            "grants",
            "add",
            "--group",
            "/tenant-a/root/admins",
            "infra",
            "--role",
            "view",
        ])
        .ok();

    let alice = Cli::new(&bin()).unwrap();
    let out = provider_login(&h, &alice, "alice", "alice-pw", "");
    assert_eq!(out.status, 0, "{out:?}\n{}", h.idp.log());
    let info = alice.run(&["info"]).ok().stdout.clone();
    assert!(info.contains("alice@example.com"), "{info}");
    assert!(
        info.contains("/tenant-a/root/admins") && info.contains("devs"),
        "{info}"
    );
    // The path-style group's grant applies.
    alice.run(&["users", "list"]).ok();

    // Removed from the group at the provider: gone at the next refresh.
    h.idp
        .put_user("u-alice", serde_json::json!({"groups": ["devs"]}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = alice.run(&["users", "list"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("view"), "{out:?}");
    let info = alice.run(&["info"]).ok().stdout.clone();
    assert!(!info.contains("/tenant-a/root/admins"), "{info}");
    assert!(audit(&h.env, "group.sync").contains("removed=/tenant-a/root/admins"));

    // Disabled at the provider: the refresh fails and the session ends.
    h.idp
        .put_user("u-alice", serde_json::json!({"disabled": true}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = alice.run(&["info"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("session ended"), "{out:?}");
    let out = alice.run(&["info"]);
    assert_ne!(out.status, 0, "the session stays ended: {out:?}");
    assert!(audit(&h.env, "login.refresh").contains("session ended"));
    let logins = audit(&h.env, "login");
    assert!(logins.contains("method=oidc:idp"), "{logins}");
}

#[test]
fn device_grant_logs_in_without_a_browser() {
    let h = setup();
    let bob = Cli::new(&bin()).unwrap();
    let ca = h.env.server.ca_path();
    let mut child = Command::new(bin())
        .args([
            "login",
            &addr(&h.env),
            "--tls-ca",
            ca.to_str().unwrap(),
            "--provider",
            "idp",
            "--device",
        ])
        .env("HOME", bob.home())
        .env_remove("INFRA_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let (mut uri, mut code) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("To log in through idp, open ") {
            uri = rest.split_whitespace().next().unwrap_or_default().to_owned();
        } else if !uri.is_empty() && !line.trim().is_empty() && !line.trim().contains(' ') {
            code = line.trim().to_owned();
            break;
        }
    }
    assert!(!code.is_empty(), "no user code shown");
    let out = h.idp.drive_device(&uri, &code, "bob", "bob-pw");
    assert_eq!(out.status, 0, "{out:?}");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(bob.run(&["info"]).ok().stdout.contains("bob@example.com"));
}

/// Starts a login at the API and drives the provider's form: the code and
/// state the provider redirects with.
fn code_and_state(h: &Idp, user: &str, pw: &str) -> (String, String) {
    let body = serde_json::json!({"redirectUri": "http://127.0.0.1:9/callback"});
    let (s, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/providers/idp/authorize",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let out = h.idp.drive_code(v["url"].as_str().unwrap(), user, pw);
    assert_eq!(out.status, 0, "{out:?}");
    let u = reqwest::Url::parse(out.stdout.trim()).unwrap();
    let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
    (q["code"].clone(), q["state"].clone())
}

fn api_login(h: &Idp, code: &str, state: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"provider": "idp", "code": code, "state": state,
        "redirectUri": "http://127.0.0.1:9/callback"});
    h.env
        .server
        .send_json(
            "POST",
            "/api/login",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap()
}

#[test]
fn wrong_state_replayed_code_and_bad_id_tokens_are_refused() {
    let h = setup();
    // A redirect with another state: the CLI refuses it.
    let cli = Cli::new(&bin()).unwrap();
    let out = provider_login(&h, &cli, "alice", "alice-pw", "--state-override forged");
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("state is not the one this login started with"),
        "{out:?}"
    );
    // ... and so does the server, for a state it never issued.
    let (code, _) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, "never-issued");
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("state is unknown"), "{v}");

    // A good login works once; the same state again is refused; the same
    // code with a fresh state is refused by the provider.
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 200, "{v}");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    let (_, fresh) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &fresh);
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("invalid_grant"), "{v}");

    // The provider misbehaves: each bad ID token is refused, saying why.
    for (tamper, why) in [
        (serde_json::json!({"nonce": "wrong"}), "nonce does not match"),
        (
            serde_json::json!({"iss": "http://evil.example"}),
            "issued by \"http://evil.example\"",
        ),
        (serde_json::json!({"aud": "someone-else"}), "audience"),
        (serde_json::json!({"expOffset": -120}), "expired"),
        (serde_json::json!({"sign": "other-key"}), "signature does not verify"),
    ] {
        let (code, state) = code_and_state(&h, "alice", "alice-pw");
        h.idp.tamper(serde_json::json!({ "idToken": tamper })).unwrap();
        let (s, v) = api_login(&h, &code, &state);
        assert_eq!(s, 401, "{tamper}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("ID token refused") && m.contains(why), "{tamper}: {m}");
    }
    let failures = audit(&h.env, "login");
    for why in ["nonce", "expired", "unknown or reused state"] {
        assert!(failures.contains(why), "{why}: {failures}");
    }

    // The browser flow takes a callback only from the browser that started
    // it (login CSRF: a victim sent the attacker's callback link).
    let ca = h.env.server.ca_path();
    let start = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{}/oidc/start/idp", h.env.server.url))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&start.stdout).to_string();
    assert!(head.contains("infra_oidc_state="), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let st = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cb = Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{}/oidc/callback?code=stolen&state={st}", h.env.server.url))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&cb.stdout);
    assert!(
        body.contains("not started in this browser") && body.ends_with("401"),
        "{body}"
    );

    // Wrong password at the provider: its form refuses (drive.mjs exit 3).
    let body = serde_json::json!({"redirectUri": "http://127.0.0.1:9/callback"});
    let (_, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/providers/idp/authorize",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    let out = h.idp.drive_code(v["url"].as_str().unwrap(), "alice", "wrong");
    assert_eq!(out.status, 3, "{out:?}");

    // An issuer that differs from what its discovery says: refused when added.
    let wrong = h.idp.issuer.replace("127.0.0.1", "localhost");
    let out = h.env.admin.run_env(
        &["providers", "add", "idp2", "--issuer", &wrong, "--client-id", "infra"],
        &[("INFRA_PROVIDER_CLIENT_SECRET", SECRET)],
        None,
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("must match exactly"), "{out:?}");
}

#[test]
fn allowed_domains_limit_who_is_created() {
    let h = setup();
    h.env.admin.run(&["providers", "remove", "idp"]).ok();
    add_provider(&h.env, &h.idp.issuer, &["--allowed-domains", "example.org"]);
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not in a domain allowed"),
        "{v}"
    );
    let users = json(h.env.admin.run(&["users", "list", "-o", "json"]).ok());
    assert!(!users.to_string().contains("alice@example.com"));
}

/// A connector serving HTTP destination `web` (the upstream's echo).
fn web_connector(env: &Env, up: &Upstream) -> Connector {
    let key = super::gateway::connector_key(env, "webc");
    let dest = HttpDest {
        name: "web".into(),
        url: up.url.clone(),
        upstream_token: None,
    };
    Connector::start(&bin(), &env.server, &key, "webc", &[dest]).unwrap()
}

/// `web_connector`, with a grant on `web` for group `devs`.
fn web_for_devs(env: &Env, up: &Upstream) -> Connector {
    let c = web_connector(env, up);
    env.admin.run(&["groups", "add", "devs"]).ok();
    env.admin
        .run(&["grants", "add", "--group", "devs", "web", "--role", "user"])
        .ok();
    c
}

#[test]
fn a_browser_logs_in_through_the_provider_to_an_http_destination() {
    // With a default provider the browser goes from the destination
    // straight to the provider's login form; without one it clicks
    // "Sign in with idp" on Infra's page (the second half).
    let h = setup_with(vec!["--default-provider".into(), "idp".into()]);
    let up = Upstream::start().unwrap();
    let _c = web_for_devs(&h.env, &up);
    let url = format!("https://web.localhost:{}/echo/hello", h.env.server.port);
    let out = infra_testkit::oidc::browser(&url, "alice", "alice-pw", &[]);
    assert_eq!(out.status, 0, "{out:?}\n{}", h.idp.log());
    let page: serde_json::Value = serde_json::from_str(out.stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(page["url"].as_str().unwrap().starts_with(&url), "{page}");
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("/echo/hello") && text.contains("alice@example.com"),
        "{text}"
    );
    // Without a default provider: Infra's own page, the provider a link on it.
    let h2 = setup();
    let _c2 = web_for_devs(&h2.env, &up);
    let url2 = format!("https://web.localhost:{}/echo/again", h2.env.server.port);
    let out = infra_testkit::oidc::browser(&url2, "alice", "alice-pw", &["Sign in with idp"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("/echo/again") && out.stdout.contains("alice@example.com"),
        "{out:?}"
    );
}

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
    let env = super::common::start(Backend::Sqlite);
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
    let env = super::common::start_with(Backend::Sqlite, vec!["--issuer-claim".into(), "tenant=acme".into()]);
    env.admin.run(&["groups", "add", "ops"]).ok();
    env.admin.run(&["groups", "adduser", "ops", super::common::ADMIN]).ok();
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
    assert_eq!(claims["email"], super::common::ADMIN);
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

#[test]
fn an_unverified_email_never_takes_over_an_account() {
    let h = setup();
    // The provider does not vouch for mallory's email (admin@example.com).
    let (code, state) = code_and_state(&h, "mallory", "mallory-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("does not mark admin@example.com as verified"),
        "{v}"
    );
    // Even where unverified emails are accepted, the existing admin account
    // cannot be had through one.
    h.env.admin.run(&["providers", "remove", "idp"]).ok();
    add_provider(&h.env, &h.idp.issuer, &["--allow-unverified-email"]);
    let (code, state) = code_and_state(&h, "mallory", "mallory-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("cannot be taken over"), "{v}");
    // A verified email links once; afterwards the login follows the
    // provider's subject.
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    assert_eq!(api_login(&h, &code, &state).0, 200);
    h.idp
        .put_user("u-alice", serde_json::json!({"email": "alice.new@example.com"}))
        .unwrap();
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["email"], "alice@example.com");
}

#[test]
fn borrowed_sessions_cannot_make_lasting_keys() {
    let h = setup();
    let alice = Cli::new(&bin()).unwrap();
    assert_eq!(provider_login(&h, &alice, "alice", "alice-pw", "").status, 0);
    // A key made from a provider session ends with the session.
    let out = alice.run(&["keys", "add", "--name", "mine", "--quiet"]);
    assert_eq!(out.status, 0, "{out:?}");
    let keys = json(alice.run(&["keys", "list", "-o", "json"]).ok());
    let mine = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "mine")
        .unwrap()
        .clone();
    assert!(mine["expires"].is_string(), "{mine}");
    // A provider session cannot be turned into a password-less 12 h session.
    let key = super::common::session_key(&alice);
    let body = serde_json::json!({"accessKey": key});
    let (s, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/login",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    assert_eq!(s, 403, "{v}");
    // Nor a key made from it; and a key that key makes is capped in turn.
    let mine_secret = out.stdout.trim().to_owned();
    let post = |path: &str, bearer: Option<&str>, body: serde_json::Value| {
        h.env
            .server
            .send_json("POST", path, bearer, body.to_string().as_bytes(), "application/json")
            .unwrap()
    };
    let (s, v) = post("/api/login", None, serde_json::json!({"accessKey": mine_secret}));
    assert_eq!(s, 403, "{v}");
    let (s, v) = post(
        "/api/keys",
        Some(&mine_secret),
        serde_json::json!({"name": "grandchild"}),
    );
    assert_eq!(s, 201, "{v}");
    assert!(v["key"]["expires"].is_string(), "{v}");
}
