//! Sets up what `scripts/bench-ssh` measures: two real sshd (A and B, the
//! same configuration), an Infra server, a connector serving `host1`
//! (sshd A, through the tunnel) and `host2` (sshd B, with a public
//! address: clients connect straight to it), `host3` (sshd C, in recording
//! mode: the connector terminates SSH and records), and a user granted the
//! current login on all three, logged in with `~/.ssh/config` written. Prints
//! one JSON line with the addresses and paths, then waits until its
//! standard input closes.
//!
//! `INFRA_BIN` is the `infra` binary to run (the release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use infra_testkit::{Cli, Connector, Sshd, current_login, server_with_admin};

fn main() -> anyhow::Result<()> {
    let bin =
        PathBuf::from(std::env::var("INFRA_BIN").map_err(|_| anyhow::anyhow!("set INFRA_BIN to the infra binary"))?);
    let (server, admin) = server_with_admin(&bin)?;
    let key = admin.connector_key("sshc");
    let mut a = Sshd::prepare()?;
    let mut b = Sshd::prepare()?;
    let mut c = Sshd::prepare()?;
    let mut extra = format!(
        "  - name: host1\n    kind: ssh\n    address: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n\
         \x20 - name: host2\n    kind: ssh\n    address: 127.0.0.1:{}\n    publicAddress: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n",
        a.port,
        a.host_key_pub().display(),
        a.infra_dir().display(),
        b.port,
        b.port,
        b.host_key_pub().display(),
        b.infra_dir().display()
    );
    extra.push_str(&format!(
        "  - name: host3\n    kind: ssh\n    address: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n    record: true\n",
        c.port,
        c.host_key_pub().display(),
        c.infra_dir().display()
    ));
    let connector = Connector::start_with(&bin, &server, &key, "sshc", &[], &extra)?;
    for s in [&mut a, &mut b] {
        s.wait_for_infra_files(30)?;
        s.start()?;
    }
    c.wait_for_recording_files(30)?;
    c.start()?;
    let login = current_login();
    admin.add_user("alice@example.com", "user-password-1");
    for host in ["host1", "host2", "host3"] {
        admin
            .run(&["grants", "add", "alice@example.com", host, "--role", &login])
            .ok();
    }
    // The grants reach the connector, which writes the principals files.
    for s in [&a, &b, &c] {
        let p = s.infra_dir().join("principals").join(&login);
        for _ in 0..100 {
            if p.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let alice = Cli::new(&bin)?;
    alice
        .login_password(&server, "alice@example.com", "user-password-1", &["--ssh-include"])
        .ok();
    let info = serde_json::json!({
        "home": alice.home(),
        "login": login,
        "portA": a.port,
        "portB": b.port,
        "keyA": a.client_key(),
        "keyB": b.client_key(),
        "hostKeyA": a.host_key_pub(),
        "hostKeyB": b.host_key_pub(),
        "portC": c.port,
        "serverRecordings": server.data_dir.join("recordings"),
        "serverPid": server.pid(),
        "connectorPid": connector.pid(),
    });
    infra_testkit::hold_until_stdin_closes(&info);
    drop(a);
    drop(b);
    drop(c);
    drop(connector);
    drop(server);
    Ok(())
}
