//! Any PostgreSQL client, with the Infra token as the password: straight
//! to the connector (direct mode) or to the gateway.

use infra_testkit::eventually;

use super::{psql_as, reader, setup, setup_full, setup_with};
use crate::e2e::gateway;

/// Direct mode: the connector's own PostgreSQL listener, TLS required, the
/// Infra token as the password; plain psql, no Infra CLI in the way.
#[test]
fn direct_mode_with_the_token_as_password() {
    let port = infra_testkit::free_port();
    let db = setup_with(&format!("    listen: 127.0.0.1:{port}\n"));
    let alice = reader(&db);
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "other", "--role", "x"])
        .ok();
    let ca = db.connector.data_dir.join("data/direct-ca.pem");
    let direct = |password: &str, sslmode: &str| {
        let conninfo = format!(
            "host=127.0.0.1 port={port} dbname=app user=alice@example.com sslmode={sslmode} sslrootcert={}",
            ca.display()
        );
        psql_as(&db, &conninfo, password)
    };
    let token = gateway::token(&alice, "db");
    let (code, stdout, stderr) = eventually!(10, || {
        let r = direct(&token, "verify-ca");
        anyhow::ensure!(r.0 == 0, "{r:?}");
        Ok(r)
    });
    assert_eq!((code, stdout.as_str()), (0, "alice@example.com"), "{stderr}");
    // A token for another destination, a tampered one, no TLS: refused.
    let other = gateway::token(&alice, "other");
    let (code, _, stderr) = direct(&other, "require");
    assert_ne!(code, 0);
    assert!(stderr.contains("this token is not for db"), "{stderr}");
    let (code, _, stderr) = direct(&format!("{token}x"), "require");
    assert_ne!(code, 0);
    assert!(stderr.contains("FATAL"), "{stderr}");
    let (code, _, stderr) = direct(&token, "disable");
    assert_ne!(code, 0);
    assert!(stderr.contains("requires TLS"), "{stderr}");
}

/// Any PostgreSQL client straight to the gateway: TLS with the database's
/// name as server name, the Infra token as the password.
#[test]
fn gateway_tls_with_the_token_as_password() {
    let db = setup();
    let alice = reader(&db);
    let ca = db.env.server.ca_path();
    let port = db.env.server.port;
    let connect = |password: &str, sslmode: &str| {
        let conninfo = format!(
            "host=db.localhost hostaddr=127.0.0.1 port={port} dbname=app user=alice@example.com sslmode={sslmode} sslrootcert={}",
            ca.display()
        );
        psql_as(&db, &conninfo, password)
    };
    let token = gateway::token(&alice, "db");
    let r = eventually!(10, || {
        let r = connect(&token, "verify-full");
        anyhow::ensure!(r.0 == 0, "{r:?}");
        Ok(r)
    });
    assert_eq!(r.1, "alice@example.com", "{r:?}");
    let (code, _, stderr) = connect(&format!("{token}x"), "verify-full");
    assert_ne!(code, 0);
    assert!(stderr.contains("FATAL"), "{stderr}");
    let (code, _, stderr) = connect(&token, "disable");
    assert_ne!(code, 0);
    assert!(stderr.contains("requires TLS"), "{stderr}");
    // The HTTPS API on the same port is unaffected.
    let (status, _) = db.env.server.get_json("/healthz", None).unwrap();
    assert_eq!(status, 200);
}

/// An expired token is refused as the password (after the 30 s clock-skew
/// leeway every verifier allows).
#[test]
fn an_expired_token_is_refused() {
    let port = infra_testkit::free_port();
    let db = setup_full(
        &format!("    listen: 127.0.0.1:{port}\n"),
        vec!["--token-ttl".into(), "1s".into()],
    );
    let alice = reader(&db);
    let token = gateway::token(&alice, "db");
    let stderr = eventually!(60, || {
        let conninfo = format!("host=127.0.0.1 port={port} dbname=app user=alice@example.com sslmode=require");
        let (code, _, stderr) = psql_as(&db, &conninfo, &token);
        anyhow::ensure!(
            code != 0 && stderr.contains("xpired"),
            "not refused as expired yet: {stderr}"
        );
        Ok(stderr)
    });
    assert!(stderr.contains("FATAL"), "{stderr}");
}
