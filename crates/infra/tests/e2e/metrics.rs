//! Metrics, liveness and readiness of the real server and connector:
//! scraped with curl, parsed with the Prometheus project's own text
//! parser (PyPI prometheus-client), counters watched as the test acts.

use std::process::Command;
use std::time::{Duration, Instant};

use infra_testkit::{Cli, Connector, Upstream, free_port};
use serde_json::Value;

use super::common::{Backend, bin, login, start_with};
use super::gateway::{Gw, connector_key, token, user, web};

/// `curl` a plain-HTTP endpoint: (status, body).
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Scrapes `url` and parses it with the Prometheus parser.
fn scrape(url: &str) -> Vec<Value> {
    let (status, body) = get(url);
    assert_eq!(status, 200, "{body}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/metrics/parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["samples"].as_array().unwrap().clone()
}

/// The value of sample `name` whose labels include `labels` (0 if none).
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn metrics_parse_and_move_as_server_and_connector_work() {
    let mport = free_port();
    let env = start_with(
        Backend::Sqlite,
        vec!["--metrics-listen".into(), format!("127.0.0.1:{mport}")],
    );
    let server_metrics = format!("http://127.0.0.1:{mport}/metrics");
    let before = scrape(&server_metrics);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(before.iter().any(|s| s["name"] == name), "{name} missing");
    }
    // Not on the public port.
    let (s, _) = get(&format!("https://localhost:{}/metrics", env.server.port));
    assert_ne!(s, 200);

    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let mut c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    c.wait_ready().unwrap();
    let alice = user(&env, "alice@example.com");
    env.admin
        .run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    // A refused login, a token, two requests and a refusal through the
    // gateway, a forward-auth decision.
    let stranger = Cli::new(&bin()).unwrap();
    assert_ne!(
        login(&stranger, &env.server, "alice@example.com", "wrong-password").status,
        0
    );
    let t = token(&alice, "web");
    let gw = Gw::new(&env, &["web"], false);
    assert_eq!(gw.get("web", "/echo/a", Some(&t), &[]).0, 200);
    assert_eq!(gw.get("web", "/echo/b", Some(&t), &[]).0, 200);
    assert_eq!(gw.get("web", "/echo/c", None, &[]).0, 401);
    env.admin
        .run(&["destinations", "add", "wiki", "--url", "https://wiki.example.com"])
        .ok();
    let fa = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(env.server.ca_path())
        .args(["-H", "X-Forwarded-Host: wiki.example.com"])
        .arg(format!("https://localhost:{}/api/forward-auth", env.server.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fa.stdout), "401");

    let after = scrape(&server_metrics);
    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(moved("infra_login_failures_total", &[("reason", "credentials")]), 1.0);
    assert!(moved("infra_credentials_issued_total", &[("kind", "token")]) >= 1.0);
    assert_eq!(
        moved(
            "infra_gateway_requests_total",
            &[("destination", "web"), ("result", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "infra_gateway_requests_total",
            &[("destination", "web"), ("result", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "infra_gateway_request_duration_seconds_count",
            &[("kind", "http")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "infra_access_decisions_total",
            &[("destination", "wiki"), ("result", "deny")]
        ),
        1.0
    );
    assert_eq!(value(&after, "infra_tunnels_open", &[]), 1.0);
    assert!(
        moved(
            "infra_api_requests_total",
            &[("route", "/api/tokens"), ("method", "POST")]
        ) >= 1.0
    );
    assert!(value(&after, "infra_snapshot_push_lag_seconds_count", &[]) >= 1.0);

    // The connector's, on its admin listener.
    let conn = scrape(&format!("http://127.0.0.1:{}/metrics", c.admin_port));
    let v = |name: &str, labels: &[(&str, &str)]| value(&conn, name, labels);
    assert_eq!(
        v(
            "infra_connector_requests_total",
            &[("destination", "web"), ("kind", "http"), ("result", "success")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "infra_connector_requests_total",
            &[("destination", "web"), ("result", "denied")]
        ),
        1.0
    );
    assert_eq!(
        v("infra_connector_request_duration_seconds_count", &[("kind", "http")]),
        3.0
    );
    assert_eq!(
        v(
            "infra_connector_access_decision_duration_seconds_count",
            &[("kind", "http")]
        ),
        2.0
    );
    assert_eq!(v("infra_connector_tunnels_connected", &[]), 1.0);
    assert!(v("infra_connector_snapshot_age_seconds", &[]) >= 0.0);
    assert!(v("process_resident_memory_bytes", &[]) > 0.0);
    // The events reach the server: the ship lag is observed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = scrape(&format!("http://127.0.0.1:{}/metrics", c.admin_port));
        if value(&conn, "infra_connector_audit_ship_lag_seconds_count", &[]) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no acknowledgement observed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn liveness_stays_up_while_readiness_follows_the_connection() {
    let mport = free_port();
    let mut env = start_with(
        Backend::Sqlite,
        vec!["--metrics-listen".into(), format!("127.0.0.1:{mport}")],
    );
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let mut c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    c.wait_ready().unwrap();
    let admin = |path: &str| get(&format!("http://127.0.0.1:{}{path}", c.admin_port)).0;
    assert_eq!(admin("/livez"), 200);
    assert_eq!(admin("/readyz"), 200);
    assert_eq!(get(&format!("http://127.0.0.1:{mport}/livez")).0, 200);
    assert_eq!(get(&format!("http://127.0.0.1:{mport}/readyz")).0, 200);

    // The server goes away: the connector is alive, not ready.
    env.server.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while admin("/readyz") != 503 {
        assert!(Instant::now() < deadline, "readiness never went down");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(admin("/livez"), 200);
    assert_eq!(admin("/healthz"), 503);

    // It comes back: ready again.
    env.server.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin("/readyz") != 200 {
        assert!(Instant::now() < deadline, "readiness never came back:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}
