//! Attacks on forward-auth's own doors, through the real binary: the
//! callback that sets the browser's cookie, the sign-in redirect's return
//! address, a connector claiming a forward-auth destination's name, and
//! metric labels a client would choose.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra_testkit::{ProxyKind, free_port};

use super::common::{Backend, bin, start_with};
use super::forward_auth::{curl, setup};
use super::gateway::token;

#[test]
fn attack_a_forged_callback_link_plants_no_cookie() {
    let fa = setup(ProxyKind::Nginx);
    let set_cookie = |head: &str| head.to_ascii_lowercase().contains("set-cookie: __host-infra_token");
    // Garbage, and a valid token for another application (bob's, for
    // docs): refused, and no cookie set.
    let docs = token(&fa.bob, "docs");
    for t in ["garbage", docs.as_str()] {
        let (s, head, body) = curl(&fa, &format!("/.infra/callback?token={t}&rd=/"), &[]);
        assert_eq!(s, 401, "{head}{body}");
        assert!(!set_cookie(&head), "{head}");
    }
    // A genuine link sets the cookie for this host, and its return address
    // cannot leave the host.
    let wiki = token(&fa.alice, "wiki");
    let (s, head, _) = curl(
        &fa,
        &format!("/.infra/callback?token={wiki}&rd=//evil.example.com/x"),
        &[],
    );
    assert_eq!(s, 302, "{head}");
    assert!(set_cookie(&head), "{head}");
    assert!(head.to_ascii_lowercase().contains("location: /\r\n"), "{head}");
}

#[test]
fn attack_the_sign_in_redirect_returns_only_to_declared_origins() {
    let fa = setup(ProxyKind::Nginx);
    let port = fa.env.server.port;
    let authorize = |rd: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "--cacert",
            ])
            .arg(fa.env.server.ca_path())
            .arg("--get")
            .args(["--data-urlencode", &format!("rd={rd}")])
            .arg(format!("https://localhost:{port}/authorize"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let app = fa.proxy.url.clone();
    let other_port = format!("https://wiki.localhost:{}/", fa.proxy.port + 1);
    let suffix = format!("https://wiki.localhost.evil.example.com:{}/", fa.proxy.port);
    let plain = app.replace("https://", "http://");
    for rd in [
        other_port.as_str(),
        suffix.as_str(),
        plain.as_str(),
        "https://evil.example.com/",
    ] {
        let got = authorize(rd);
        assert!(got.starts_with("400"), "{rd}: {got}");
    }
    // The declared origin: on to sign in, and back there afterwards.
    let got = authorize(&format!("{app}/page"));
    assert!(got.contains("/login?rd="), "{got}");
}

#[test]
fn attack_a_connector_cannot_take_over_a_forward_auth_destination() {
    let fa = setup(ProxyKind::Nginx);
    let key = fa.env.admin.connector_key("squatter");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("connector.yaml");
    std::fs::write(
        &conf,
        format!(
            "server: https://localhost:{}\nname: squatter\ntls: {{ caFile: {} }}\nadminListen: 127.0.0.1:{}\ndataDir: {}\ndestinations:\n  - {{ name: wiki, kind: http, url: \"http://127.0.0.1:9\" }}\n",
            fa.env.server.port,
            fa.env.server.ca_path().display(),
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("connector.log");
    let mut child = Command::new(bin())
        .args(["connector", "--config"])
        .arg(&conf)
        .env("INFRA_ACCESS_KEY", &key)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("is a forward-auth destination of the server") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    // The destination is still the server's, and still decides.
    let list = super::common::json(fa.env.admin.run(&["destinations", "list", "-o", "json"]).ok());
    let wiki = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "wiki")
        .unwrap()
        .clone();
    assert_eq!(wiki["health"], "forward-auth", "{wiki}");
    assert_eq!(wiki["connector"], "", "{wiki}");
    let t = token(&fa.alice, "wiki");
    assert_eq!(
        curl(&fa, "/echo/x", &["-H", &format!("Authorization: Bearer {t}")]).0,
        200
    );
}

#[test]
fn attack_clients_cannot_mint_metric_labels() {
    let mport = free_port();
    let env = start_with(
        Backend::Sqlite,
        vec!["--metrics-listen".into(), format!("127.0.0.1:{mport}")],
    );
    let port = env.server.port;
    // Made-up gateway hosts, made-up forward-auth hosts, made-up methods.
    let mut cmd = Command::new("curl");
    cmd.stdout(Stdio::null())
        .args(["-s", "-k", "--parallel", "--parallel-max", "8"]);
    for i in 0..40 {
        let host = format!("minted{i}.localhost");
        cmd.args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg(format!("https://{host}:{port}/"))
            .arg("--next")
            .args(["-s", "-k", "-X", &format!("MINTED{i}")])
            .args(["-H", &format!("X-Forwarded-Host: minted-fa{i}.example.com")])
            .arg(format!("https://localhost:{port}/api/forward-auth"))
            .arg("--next")
            .args(["-s", "-k"]);
    }
    cmd.arg(format!("https://localhost:{port}/livez"));
    assert!(cmd.status().unwrap().success());
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{mport}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.to_ascii_lowercase().contains("minted"), "{text}");
    assert!(text.contains(r#"destination="unknown""#), "{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
}
