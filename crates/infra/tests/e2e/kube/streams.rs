//! Long-lived streams through Infra: watch after idling, and exec, attach,
//! port-forward and logs -f against a kubelet double.

use std::process::Command;
use std::time::Duration;

use infra_testkit::{Cli, Connector, eventually};

use super::{kubectl, path_with_infra, setup};
use crate::e2e::common::{self, Backend, bin, start};
use crate::e2e::gateway::{connector_key, user};

#[test]
fn watch_delivers_events_after_idling() {
    let k = setup();
    let alice = user(&k.env, "alice@example.com");
    k.env
        .admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "view"])
        .ok();
    common::login(&alice, &k.env.server, "alice@example.com", "user-password-1").ok();
    eventually!(10, || {
        let out = kubectl(&alice, &["get", "pods", "-n", "dev"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    let out_path = alice.home().join("watch.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut watch = Command::new("kubectl")
        .env("HOME", alice.home())
        .env_remove("KUBECONFIG")
        .env("PATH", path_with_infra())
        .args([
            "--context",
            "infra:k8s",
            "get",
            "configmaps",
            "-n",
            "dev",
            "--watch",
            "-o",
            "name",
        ])
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .unwrap();
    // Idle longer than any idle timeout on the path (the connector's
    // upstream pool, the tunnel's keepalive); the soak run in
    // docs/kubernetes.md idles for 10 minutes.
    let idle: u64 = std::env::var("INFRA_KUBE_WATCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    std::thread::sleep(Duration::from_secs(idle));
    assert!(watch.try_wait().unwrap().is_none(), "kubectl --watch ended while idle");
    k.cluster
        .kubectl(&["create", "configmap", "after-idle", "-n", "dev"])
        .ok();
    eventually!(10, || {
        let text = std::fs::read_to_string(&out_path)?;
        anyhow::ensure!(text.contains("configmap/after-idle"), "{text}");
        Ok(())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let after = std::fs::read_to_string(alice.home().join("watch.out")).unwrap();
    assert!(!after.contains("error"), "{after}");
}

/// kubectl as the user of `cli` against cluster `dest` (through the gateway).
fn kubectl_to(cli: &Cli, dest: &str, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.env("HOME", cli.home())
        .env_remove("KUBECONFIG")
        .env("PATH", path_with_infra())
        .args(["--context", &format!("infra:{dest}"), "--request-timeout", "30s"])
        .args(args);
    c
}

fn run(mut c: Command, stdin: Option<&str>) -> infra_testkit::Output {
    use std::io::Write as _;
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn kubectl");
    let mut sin = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        sin.write_all(s.as_bytes()).unwrap();
    }
    drop(sin);
    let out = child.wait_with_output().unwrap();
    infra_testkit::Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// exec, attach, port-forward and logs -f need a kubelet: a test double
/// built from the kubelet's own streaming code stands in for the cluster,
/// and it refuses anything not impersonating alice. Both wire protocols:
/// WebSocket v5 (kubectl ≥ 1.30's default) and SPDY (the fallback).
#[test]
fn exec_attach_port_forward_and_logs_through_infra() {
    const SA_TOKEN: &str = "connector-sa-token";
    let ws = infra_testkit::KubeDouble::start(SA_TOKEN, "alice@example.com", true).unwrap();
    let spdy = infra_testkit::KubeDouble::start(SA_TOKEN, "alice@example.com", false).unwrap();
    let env = start(Backend::Sqlite);
    let key = connector_key(&env, "kc");
    let extra = ws.destination("pods") + &spdy.destination("pods-spdy");
    let c = Connector::start_with(&bin(), &env.server, &key, "kc", &[], &extra).unwrap();
    let alice = user(&env, "alice@example.com");
    for d in ["pods", "pods-spdy"] {
        env.admin
            .run(&["grants", "add", "alice@example.com", d, "--role", "connect"])
            .ok();
    }
    common::login(&alice, &env.server, "alice@example.com", "user-password-1").ok();

    // A local TCP service for port-forward: answers each connection with a line.
    let svc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let svc_port = svc.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in svc.incoming().flatten() {
            use std::io::Write as _;
            let mut s = s;
            let _ = s.write_all(b"hello from the pod\n");
        }
    });

    for (dest, double, proto) in [
        ("pods", &ws, "websocket v5.channel.k8s.io"),
        ("pods-spdy", &spdy, "SPDY/3.1"),
    ] {
        let out = run(
            kubectl_to(&alice, dest, &["exec", "web", "-n", "dev", "--", "sh", "-c", "echo hi"]),
            None,
        );
        assert_eq!(out.status, 0, "{dest}: {out:?}\n{}\n{}", double.log(), c.log());
        assert_eq!(out.stdout.trim(), "hi", "{dest}: {out:?}");
        assert!(
            double.log().contains(proto),
            "{dest} did not use {proto}:\n{}",
            double.log()
        );
        // stdin in, exit codes out.
        let out = run(
            kubectl_to(
                &alice,
                dest,
                &["exec", "-i", "web", "-n", "dev", "--", "sh", "-c", "cat; exit 3"],
            ),
            Some("through stdin\n"),
        );
        assert_eq!(out.status, 3, "{dest}: {out:?}");
        assert_eq!(out.stdout.trim(), "through stdin", "{dest}: {out:?}");
        let out = run(
            kubectl_to(&alice, dest, &["attach", "-i", "web", "-n", "dev", "-c", "main"]),
            Some("to attach\n"),
        );
        assert!(out.stdout.contains("to attach"), "{dest}: {out:?}");

        // logs -f streams until the client goes away.
        let mut logs = kubectl_to(&alice, dest, &["logs", "-f", "web", "-n", "dev"]);
        logs.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = logs.spawn().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = lines.next().unwrap().unwrap();
        let second = lines.next().unwrap().unwrap();
        assert_ne!(first, second);
        let _ = child.kill();
        let _ = child.wait();

        // port-forward: a local port on the client reaches the pod's port.
        let mut pf = kubectl_to(
            &alice,
            dest,
            &["port-forward", "pod/web", "-n", "dev", &format!(":{svc_port}")],
        );
        pf.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = pf.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        // "Forwarding from 127.0.0.1:PORT -> SVC_PORT"
        let local: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{dest}: unexpected port-forward output {line:?}"));
        for _ in 0..3 {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut got).unwrap();
            assert_eq!(got, "hello from the pod\n", "{dest}");
        }
        let _ = child.kill();
        let _ = child.wait();

        // The double saw only the connector's token acting as alice.
        let log = double.log();
        assert!(log.contains("alice@example.com"), "{log}");
        assert!(!log.contains(SA_TOKEN), "the double logs tokens?");
    }

    // kubectl --as is refused before anything reaches the double.
    let before = ws.log().lines().count();
    let out = run(
        kubectl_to(
            &alice,
            "pods",
            &["exec", "web", "-n", "dev", "--as", "bob@example.com", "--", "true"],
        ),
        None,
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("impersonation is not allowed"), "{out:?}");
    assert!(
        !ws.log().lines().skip(before).any(|l| l.contains("bob@example.com")),
        "{}",
        ws.log()
    );

    // exec sessions are audited: start (with the command) and end.
    let events = common::json(&env.admin.run(&["audit", "list", "--destination", "pods", "-o", "json"]));
    let details: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or_default())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("resource=pods/exec")
            && d.contains("command=\"sh -c echo hi\"")
            && d.contains("session started")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("resource=pods/exec")
            && d.contains("status=101")
            && d.contains("duration_ms=")
            && !d.contains("session started")),
        "{details:#?}"
    );
}
