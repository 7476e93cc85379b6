//! Sets up what `scripts/bench-pg` measures: a PostgreSQL server (password
//! authentication, a pgbench database at scale 10), an Infra server, a
//! connector serving the database, a user with a read grant, and `infra
//! proxy` for that user on a local port. Prints one JSON line with the
//! addresses, then waits until its standard input closes.
//!
//! `INFRA_BIN` is the `infra` binary to run (the release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use infra_testkit::{Cli, Connector, Postgres, free_port, server_with_admin};

const PG_PW: &str = "bench-superuser-pw";

fn main() -> anyhow::Result<()> {
    let bin =
        PathBuf::from(std::env::var("INFRA_BIN").map_err(|_| anyhow::anyhow!("set INFRA_BIN to the infra binary"))?);
    let pg = Postgres::start_with_password(PG_PW)?;
    pg.create_database("bench")?;
    let init = std::process::Command::new(pg.bin_dir().join("pgbench"))
        .args(["-i", "-q", "-s", "10", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pg.port().to_string())
        .arg("bench")
        .env("PGPASSWORD", PG_PW)
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    pg.psql(
        "bench",
        "CREATE ROLE bench_read NOLOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_read; \
         CREATE ROLE infra_admin LOGIN CREATEROLE PASSWORD 'connector-pw'; \
         GRANT pg_signal_backend TO infra_admin; GRANT bench_read TO infra_admin WITH ADMIN OPTION;",
    )?;
    let (server, admin) = server_with_admin(&bin)?;
    let key = admin.connector_key("dbc");
    let dir = tempfile::tempdir()?;
    let pw = dir.path().join("pg-admin");
    std::fs::write(&pw, "connector-pw")?;
    let direct_port = free_port();
    let extra = format!(
        "  - name: db\n    kind: postgres\n    url: postgres://127.0.0.1:{}/bench\n    adminUser: infra_admin\n    adminPasswordFile: {}\n    listen: 127.0.0.1:{direct_port}\n",
        pg.port(),
        pw.display()
    );
    let connector = Connector::start_with(&bin, &server, &key, "dbc", &[], &extra)?;
    admin.add_user("alice@example.com", "user-password-1");
    admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "bench_read"])
        .ok();
    let alice = Cli::new(&bin)?;
    alice
        .login_password(&server, "alice@example.com", "user-password-1", &[])
        .ok();
    let token = alice
        .run(&["tokens", "--destination", "db", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let proxy_port = free_port();
    let mut proxy = std::process::Command::new(&bin)
        .env("HOME", alice.home())
        .env_remove("KUBECONFIG")
        .args(["proxy", "db", "--port", &proxy_port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let info = serde_json::json!({
        "pgPort": pg.port(),
        "pgPassword": PG_PW,
        "pgBin": pg.bin_dir(),
        "proxyPort": proxy_port,
        "directPort": direct_port,
        "directCa": connector.data_dir.join("data/direct-ca.pem"),
        "token": token,
        "serverPid": server.pid(),
        "connectorPid": connector.pid(),
        "proxyPid": proxy.id(),
    });
    infra_testkit::hold_until_stdin_closes(&info);
    let _ = proxy.kill();
    let _ = proxy.wait();
    drop(connector);
    drop(server);
    drop(pg);
    Ok(())
}
