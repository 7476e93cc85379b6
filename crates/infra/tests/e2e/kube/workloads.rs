//! Workloads in Kubernetes reach a database and an HTTP service with no
//! secret: the real kube-apiserver calls the connector's admission webhook
//! for every pod of an enabled namespace and stores what it answers. There
//! is no kubelet, so the test then runs the injected sidecar as a process,
//! with a token the same API server issues through the TokenRequest API
//! for the Infra audience, and the application side is the real psql and
//! curl with nothing but the injected environment.
//!
//! Two things differ from a pod, and only those: the sidecar's port (5432
//! is taken on a test machine; the test moves the port in the sidecar's
//! arguments and in the application's environment alike) and the token's
//! path (the kubelet would mount the projected volume there).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra_testkit::{Connector, HttpDest, KubeCluster, Postgres, Upstream, eventually, free_port};
use serde_json::{Value, json};

use super::super::common::{Backend, Env, bin, start};
use super::super::gateway::connector_key;

const PG_ADMIN_PW: &str = "pg-admin-password";
const CONNECTOR_PW: &str = "connector-admin-password";
const SA: &str = "api@shop.example";

struct Wl {
    cluster: KubeCluster,
    /// Where the connector's admission webhook listens.
    webhook_port: u16,
    env: Env,
    _connector: Connector,
    _pg: Postgres,
    _upstream: Upstream,
    dir: tempfile::TempDir,
}

/// Kills the process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup() -> Wl {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(KubeCluster::start()).expect("start kube-apiserver");
    for ns in ["shop", "other"] {
        cluster.create_namespace(ns).unwrap();
    }
    for (ns, sa) in [("shop", "api"), ("shop", "lonely"), ("other", "x")] {
        let out = cluster.kubectl(&["create", "serviceaccount", sa, "-n", ns]);
        assert_eq!(out.status, 0, "{out:?}");
    }
    let out = cluster.kubectl(&["label", "namespace", "shop", "infra.dev/inject=enabled"]);
    assert_eq!(out.status, 0, "{out:?}");
    let (token_file, ca_file) = rt.block_on(cluster.connector_identity()).expect("connector identity");

    let pg = Postgres::start_with_password(PG_ADMIN_PW).expect("start PostgreSQL");
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        &format!(
            "CREATE ROLE app_read NOLOGIN; \
             CREATE ROLE infra_admin LOGIN CREATEROLE PASSWORD '{CONNECTOR_PW}'; \
             GRANT pg_signal_backend TO infra_admin; GRANT app_read TO infra_admin WITH ADMIN OPTION;"
        ),
    )
    .unwrap();
    let upstream = Upstream::start().unwrap();
    let env = start(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg-admin");
    std::fs::write(&pw, CONNECTOR_PW).unwrap();
    let webhook_port = free_port();
    let extra = format!(
        "  - name: k8s\n    kind: kubernetes\n    url: {}\n    tokenFile: {}\n    caFile: {}\n\
         \x20 - name: db\n    kind: postgres\n    url: postgres://127.0.0.1:{}/app\n    adminUser: infra_admin\n    adminPasswordFile: {}\n\
         webhook:\n  listen: 127.0.0.1:{webhook_port}\n  names: [\"127.0.0.1\"]\n  image: registry.example/infra:test\n",
        cluster.url(),
        token_file.display(),
        ca_file.display(),
        pg.port(),
        pw.display()
    );
    let key = connector_key(&env, "kc");
    let web = HttpDest {
        name: "web".into(),
        url: upstream.url.clone(),
        upstream_token: None,
    };
    let connector = Connector::start_with(&bin(), &env.server, &key, "kc", &[web], &extra).unwrap();

    let a = &env.admin;
    assert_eq!(a.run(&["users", "add", SA, "--service"]).status, 0);
    a.run(&["grants", "add", SA, "db", "--role", "app_read"]).ok();
    a.run(&["grants", "add", SA, "web", "--role", "user"]).ok();
    // The connector reports the cluster's issuer and keys within its
    // inventory round; the server then trusts the cluster by name.
    eventually!(Duration::from_secs(30), || {
        let out = a.run(&[
            "workload-issuers",
            "add",
            "k8s",
            "--from-cluster",
            "k8s",
            "--map",
            "system:serviceaccount:shop:*=*@shop.example",
        ]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    let out = a.run(&[
        "workload-issuers",
        "webhook-config",
        "--cluster",
        "k8s",
        "--url",
        &format!("https://127.0.0.1:{webhook_port}"),
    ]);
    out.ok();
    let config = out.stdout;
    assert!(
        config.contains("caBundle:") && config.contains("infra.dev/inject: enabled"),
        "{config}"
    );
    // The webhook CA is not the server's: no webhook certificate passes
    // for the server.
    let server_ca = std::fs::read(env.server.ca_path()).unwrap();
    let server_ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, server_ca);
    assert!(!config.contains(&server_ca), "{config}");
    cluster.apply(&config).unwrap();
    Wl {
        cluster,
        webhook_port,
        env,
        _connector: connector,
        _pg: pg,
        _upstream: upstream,
        dir,
    }
}

fn pod_yaml(name: &str, ns: &str, sa: &str, annotation: Option<&str>) -> String {
    let annotations = annotation.map_or(String::new(), |a| {
        format!("  annotations:\n    infra.dev/connect: \"{a}\"\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}spec:\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: registry.example/app:1\n"
    )
}

fn create_pod(w: &Wl, name: &str, ns: &str, sa: &str, annotation: Option<&str>) -> infra_testkit::Output {
    w.cluster
        .kubectl_with_input(&["create", "-f", "-"], &pod_yaml(name, ns, sa, annotation))
}

fn stored_pod(w: &Wl, name: &str, ns: &str) -> Value {
    let out = w.cluster.kubectl(&["get", "pod", name, "-n", ns, "-o", "json"]);
    assert_eq!(out.status, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

fn env_of(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Runs the sidecar `c` as the kubelet would, on `port` instead of its own,
/// with `token` where the projected volume would be; waits until it listens.
fn run_sidecar(w: &Wl, c: &Value, port: u16, token: &Path) -> Proc {
    let mut args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let i = args.iter().position(|a| a == "--port").unwrap();
    args[i + 1] = port.to_string();
    let i = args.iter().position(|a| a == "--workload-token").unwrap();
    args[i + 1] = token.display().to_string();
    let home = w.dir.path().join(format!("home-{port}"));
    std::fs::create_dir_all(&home).unwrap();
    let log = std::fs::File::create(w.dir.path().join(format!("sidecar-{port}.log"))).unwrap();
    let child = Command::new(bin())
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // No login: a fresh HOME.
        .env("HOME", &home)
        .envs(env_of(c))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sidecar did not listen: {}",
            sidecar_log(w, port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Proc(child)
}

fn sidecar_log(w: &Wl, port: u16) -> String {
    std::fs::read_to_string(w.dir.path().join(format!("sidecar-{port}.log"))).unwrap_or_default()
}

/// The application's environment with the sidecar's port moved to `port`.
fn app_env(app: &Value, from: &str, to: u16) -> BTreeMap<String, String> {
    env_of(app)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "PGPORT" && v == from {
                to.to_string()
            } else {
                v.replace(&format!(":{from}"), &format!(":{to}"))
            };
            (k, v)
        })
        .collect()
}

fn psql(env: &BTreeMap<String, String>, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    c
}

fn exchange(w: &Wl, token: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(w.env.server.ca_path())
        .arg(format!("{}/api/tokens/exchange", w.env.server.url))
        .args(["-d", "grant_type=urn:ietf:params:oauth:grant-type:token-exchange"])
        .args(["-d", "subject_token_type=urn:ietf:params:oauth:token-type:jwt"])
        .args(["--data-urlencode", &format!("subject_token={token}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn pods_get_sidecars_that_reach_postgres_and_http_with_no_secret() {
    let w = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let audience = w.env.server.url.trim_end_matches('/').to_owned();

    // The first admission may come before the connector has its
    // certificate; the API server then refuses the pod (failurePolicy Fail).
    eventually!(Duration::from_secs(30), || {
        let out = create_pod(&w, "app", "shop", "api", Some("db,web"));
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    let pod = stored_pod(&w, "app", "shop");
    let text = pod.to_string();
    assert!(
        !text.to_lowercase().contains("password") && !text.contains(CONNECTOR_PW),
        "{pod:#}"
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "infra-token")
        .unwrap_or_else(|| panic!("no token volume: {pod:#}"));
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        json!(audience)
    );
    let app = container(&pod, "app");
    let env = env_of(app);
    assert_eq!(env["PGHOST"], "127.0.0.1");
    assert_eq!(env["PGUSER"], SA);
    assert_eq!(env["INFRA_WEB_URL"], "http://127.0.0.1:18080");
    assert!(
        env["DATABASE_URL"].starts_with("postgres://api%40shop.example@127.0.0.1:5432"),
        "{env:?}"
    );
    let db_sidecar = container(&pod, "infra-db");
    assert_eq!(db_sidecar["image"], "registry.example/infra:test");
    assert_eq!(db_sidecar["securityContext"]["runAsNonRoot"], true);

    // Untouched: a pod that does not ask, and one in a namespace the
    // webhook is not enabled for.
    assert_eq!(create_pod(&w, "plain", "shop", "api", None).status, 0);
    assert_eq!(
        stored_pod(&w, "plain", "shop")["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(create_pod(&w, "elsewhere", "other", "x", Some("db")).status, 0);
    let elsewhere = stored_pod(&w, "elsewhere", "other");
    assert_eq!(
        elsewhere["spec"]["containers"].as_array().unwrap().len(),
        1,
        "{elsewhere:#}"
    );
    // Refused: a malformed annotation, with the webhook's message.
    let out = create_pod(&w, "bad", "shop", "api", Some("DB!"));
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("infra.dev/connect") && out.stderr.contains("not a destination name"),
        "{out:?}"
    );
    // Admitted with a warning: a service account with no grant.
    let out = create_pod(&w, "lonely", "shop", "lonely", Some("db"));
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("Warning: lonely@shop.example has no grant on db"),
        "{out:?}"
    );

    // The sidecar, with a token the API server issues for the Infra audience.
    let token = rt
        .block_on(w.cluster.token_request("shop", "api", &audience, 600))
        .unwrap();
    let token_file = w.dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let pg_port = free_port();
    let _db = run_sidecar(&w, db_sidecar, pg_port, &token_file);
    // Its postStart hook, which holds the app until the proxy listens.
    let hook: Vec<String> = db_sidecar["lifecycle"]["postStart"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("5432", &pg_port.to_string()))
        .collect();
    assert_eq!(hook[0], "/usr/local/bin/infra");
    let out = Command::new(bin()).args(&hook[1..]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let app_env = app_env(app, "5432", pg_port);
    let out = psql(&app_env, "select current_user").output().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", sidecar_log(&w, pg_port));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SA);
    // DATABASE_URL alone works too.
    let url_only: BTreeMap<String, String> = app_env
        .iter()
        .filter(|(k, _)| k.as_str() == "DATABASE_URL")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = Command::new("psql")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg(&url_only["DATABASE_URL"])
        .args(["-X", "-A", "-t", "-c", "select 'via url'"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("via url"), "{out:?}");

    // The audit names the service account and, in each event, the pod's
    // namespace and Kubernetes service account (the token's `act`).
    let events = super::super::common::json(&w.env.admin.run(&["audit", "list", "-o", "json"]));
    let events = events.as_array().unwrap();
    assert!(
        events.iter().any(|e| e["actor"] == SA && {
            let d = e["detail"].as_str().unwrap_or_default();
            d.contains("query=\"select current_user\"") && d.contains("workload=system:serviceaccount:shop:api")
        }),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["action"] == "token.exchange"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("sub=system:serviceaccount:shop:api")),
        "{events:#?}"
    );

    // HTTP: curl with only the injected URL.
    let web_port = free_port();
    let _web = run_sidecar(&w, container(&pod, "infra-web"), web_port, &token_file);
    let url = env["INFRA_WEB_URL"].replace("18080", &web_port.to_string());
    let out = Command::new("curl")
        .args(["-s", "-f", &format!("{url}/echo")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", sidecar_log(&w, web_port));
    let echo: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-email"], SA, "{echo:#}");
    // A web page cannot use the port: not through a name of its own that
    // resolves to 127.0.0.1 (DNS rebinding), not from another site.
    for extra in [
        format!("Host: rebound.example:{web_port}"),
        "Origin: https://evil.example".to_owned(),
    ] {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &extra,
                &format!("{url}/echo"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{extra}");
    }

    // Removing the grant ends an open session.
    let mut long = psql(&app_env, "select pg_sleep(60)")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let removed = Instant::now();
    let out = w.env.admin.run(&["grants", "remove", SA, "db", "--role", "app_read"]);
    assert_eq!(out.status, 0, "{out:?}");
    let ended = loop {
        if let Some(status) = long.try_wait().unwrap() {
            break status;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(10),
            "the session outlived its grant"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!ended.success());
    eprintln!("session ended {:?} after the grant was removed", removed.elapsed());
    // And the sidecar says why a new connection is refused.
    let out = psql(&app_env, "select 1").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no grant on db"),
        "{out:?}"
    );
    assert!(
        sidecar_log(&w, pg_port).contains("connection refused"),
        "{}",
        sidecar_log(&w, pg_port)
    );
    // Granted again: the same sidecar gets in, with no restart.
    let out = w.env.admin.run(&["grants", "add", SA, "db", "--role", "app_read"]);
    assert_eq!(out.status, 0, "{out:?}");
    eventually!(Duration::from_secs(10), || {
        let out = psql(&app_env, "select 1").output().unwrap();
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    });
}

#[test]
fn the_exchange_refuses_other_audiences_expired_tokens_and_unmapped_accounts() {
    let w = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let audience = w.env.server.url.trim_end_matches('/').to_owned();
    let good = rt
        .block_on(w.cluster.token_request("shop", "api", &audience, 600))
        .unwrap();
    let (code, body) = exchange(&w, &good);
    assert_eq!(code, 200, "{body}");

    let other = rt
        .block_on(w.cluster.token_request("shop", "api", "https://elsewhere.example", 600))
        .unwrap();
    let (code, body) = exchange(&w, &other);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("aud"), "{body}");

    let unmapped = rt
        .block_on(w.cluster.token_request("other", "x", &audience, 600))
        .unwrap();
    let (code, body) = exchange(&w, &unmapped);
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("system:serviceaccount:other:x") && body.contains("not mapped"),
        "{body}"
    );

    // Expired: signed with the cluster's own key (the API server issues
    // tokens for ten minutes at least), under the key id it uses.
    let header = jsonwebtoken::decode_header(&good).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = header.kid;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": w.cluster.service_account_issuer(), "aud": [audience], "sub": "system:serviceaccount:shop:api",
        "iat": now - 1200, "nbf": now - 1200, "exp": now - 600,
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(w.cluster.service_account_key_pem().unwrap().as_bytes()).unwrap();
    let expired = jsonwebtoken::encode(&h, &claims, &key).unwrap();
    let (code, body) = exchange(&w, &expired);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}

/// The webhook's port and the webhook CA, as anyone on the network (no
/// credential) finds them: the webhook answers only about the pod it is
/// sent and changes nothing; the CA is for admins.
#[test]
fn attack_the_webhook_port_answers_only_about_the_pod_it_is_sent() {
    let w = setup();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", w.webhook_port);
    let post = |path: &str, body: &str| {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--data-binary",
                "@-",
            ])
            .args(["-H", "Content-Type: application/json", &url(path)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(body.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Not a review, another path, a body past the limit: refused.
    assert_eq!(post("/mutate", "not json"), "400");
    assert_eq!(post("/mutate", r#"{"request": {}}"#), "400");
    assert_eq!(post("/admin", "{}"), "404");
    assert_eq!(post("/mutate", &"x".repeat(5 << 20)), "413");
    // A review it makes up: the answer is a patch for that pod, which
    // nobody applies; nothing is created in the cluster.
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"kind": "Pod"}, "namespace": "shop",
        "object": {"metadata": {"name": "made-up", "annotations": {"infra.dev/connect": "db"}},
                   "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "x"}]}}}});
    assert_eq!(post("/mutate", &review.to_string()), "200");
    let out = w.cluster.kubectl(&["get", "pods", "-n", "shop", "-o", "name"]);
    assert!(!out.stdout.contains("made-up"), "{out:?}");
    // The webhook CA is not for anonymous clients.
    let (status, _) = w
        .env
        .server
        .get_json("/api/workloads/webhook-ca?cluster=k8s", None)
        .unwrap();
    assert_eq!(status, 401);
}
