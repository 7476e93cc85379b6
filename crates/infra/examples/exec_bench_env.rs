//! Sets up what `scripts/bench-recording` measures for `kubectl exec`: the
//! kubelet double (WebSocket), an Infra server, a connector serving the
//! double twice (`pods`, recorded, and `pods-plain`, `record: false`), and
//! alice with `connect` on both, logged in. Prints one JSON line (alice's
//! HOME for kubectl, the double's URL, CA and token for the direct
//! baseline, the directories recordings go through), then waits until its
//! standard input closes.
//!
//! `INFRA_BIN` is the `infra` binary to run (the release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use infra_testkit::{Cli, Connector, KubeDouble, server_with_admin};

const SA_TOKEN: &str = "connector-sa-token";

fn main() -> anyhow::Result<()> {
    let bin =
        PathBuf::from(std::env::var("INFRA_BIN").map_err(|_| anyhow::anyhow!("set INFRA_BIN to the infra binary"))?);
    let double = KubeDouble::start(SA_TOKEN, "alice@example.com", true)?;
    let (server, admin) = server_with_admin(&bin)?;
    let key = admin.connector_key("kc");
    let mut extra = String::new();
    for (name, record) in [("pods", true), ("pods-plain", false)] {
        extra.push_str(&format!("{}    record: {record}\n", double.destination(name)));
    }
    let connector = Connector::start_with(&bin, &server, &key, "kc", &[], &extra)?;
    admin.add_user("alice@example.com", "user-password-1");
    for d in ["pods", "pods-plain"] {
        admin
            .run(&["grants", "add", "alice@example.com", d, "--role", "connect"])
            .ok();
    }
    let alice = Cli::new(&bin)?;
    alice
        .login_password(&server, "alice@example.com", "user-password-1", &[])
        .ok();
    let info = serde_json::json!({
        "home": alice.home(),
        "double": double.url(),
        "doubleCa": double.ca_file(),
        "doubleToken": SA_TOKEN,
        "serverRecordings": server.data_dir.join("recordings"),
        "connectorRecordings": connector.data_dir.join("data/recordings"),
        "serverPid": server.pid(),
        "connectorPid": connector.pid(),
    });
    infra_testkit::hold_until_stdin_closes(&info);
    drop(connector);
    drop(server);
    drop(double);
    Ok(())
}
