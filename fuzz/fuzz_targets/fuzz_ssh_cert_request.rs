//! SSH certificate requests as the server handles them
//! (`POST /api/ssh/certificates`, and a connector's host keys): the JSON
//! body, the destination name, the client's public key
//! (`ssh_ca::parse_allowed_key`), and, for a key that is accepted, signing
//! a user or host certificate with a real CA and reading it back.
//!
//! Input: one byte of mode, then either the request body (JSON) or the
//! public key line alone (so the fuzzer need not also build JSON to reach
//! the key parser).
//!
//! Asserts: no panic; only the allowed key types pass (Ed25519, ECDSA
//! P-256/384/521, the security-key forms, RSA of 3072 bits or more); an
//! accepted key round-trips through its OpenSSH line; the refusal message
//! is bounded; a signed certificate reads back with exactly the requested
//! principals and the client's key.
#![no_main]

use std::sync::OnceLock;

use infra_auth::ssh_ca::{self, CaKind, SshCa, UserCertRequest};
use libfuzzer_sys::fuzz_target;

fn ca(kind: CaKind) -> &'static SshCa {
    static USER: OnceLock<SshCa> = OnceLock::new();
    static HOST: OnceLock<SshCa> = OnceLock::new();
    let cell = match kind {
        CaKind::User => &USER,
        CaKind::Host => &HOST,
    };
    cell.get_or_init(|| SshCa::generate(kind).expect("CA key"))
}

fn allowed(algorithm: &str) -> bool {
    matches!(
        algorithm,
        "ssh-ed25519"
            | "sk-ssh-ed25519@openssh.com"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "ssh-rsa"
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (destination, public_key, logins) = if mode & 1 == 0 {
        match serde_json::from_slice::<infra_api::SshCertRequest>(rest) {
            Ok(r) => (r.destination, r.public_key, r.logins),
            Err(_) => return,
        }
    } else {
        match std::str::from_utf8(rest) {
            Ok(s) => ("web".to_owned(), s.to_owned(), vec!["root".to_owned()]),
            Err(_) => return,
        }
    };
    let host = match infra_core::Resource::parse(&destination) {
        Ok(r) if r.as_str() == r.destination() => r.destination().to_owned(),
        _ => "web".to_owned(),
    };

    let key = match ssh_ca::parse_allowed_key(&public_key) {
        Ok(k) => k,
        Err(e) => {
            assert!(e.to_string().len() <= 1024, "refusal of {} bytes", e.to_string().len());
            return;
        }
    };
    let alg = key.algorithm().to_string();
    assert!(allowed(&alg), "key type {alg} accepted");
    if let Some(rsa) = key.key_data().rsa() {
        let bytes = rsa.n.as_positive_bytes().unwrap_or_default();
        let bits = bytes.len() * 8 - bytes.first().map_or(0, |b| b.leading_zeros() as usize);
        assert!(bits >= 3072, "RSA key of {bits} bits accepted");
    }
    assert!(ssh_ca::fingerprint(&key).starts_with("SHA256:"));
    let line = key.to_openssh().expect("an accepted key has an OpenSSH line");
    let again = ssh_ca::parse_allowed_key(&line).expect("an accepted key's own line is accepted");
    assert_eq!(again.key_data(), key.key_data());

    if mode & 2 == 0 {
        let logins: Vec<String> = logins.into_iter().take(8).collect();
        let extensions = vec!["permit-pty".to_owned()];
        let req = UserCertRequest {
            key: &key,
            host: &host,
            user_id: "u1",
            logins: &logins,
            key_id: "alice@example.com serial=1".to_owned(),
            serial: 1,
            valid: (1_000, 2_000),
            extensions: &extensions,
        };
        if let Ok(cert) = ca(CaKind::User).sign_user(&req) {
            let line = ssh_ca::certificate_line(&cert).expect("certificate line");
            let back = ssh_ca::parse_certificate(&line).expect("a signed certificate reads back");
            let want: Vec<String> = logins.iter().map(|l| ssh_ca::principal(&host, l, "u1")).collect();
            assert_eq!(back.valid_principals(), want.as_slice());
            assert_eq!(back.public_key(), key.key_data());
        }
    } else {
        let names = [host.clone()];
        if let Ok(cert) = ca(CaKind::Host).sign_host(&key, &names, 1_700_000_000) {
            let line = ssh_ca::certificate_line(&cert).expect("certificate line");
            let back = ssh_ca::parse_certificate(&line).expect("a signed certificate reads back");
            assert_eq!(back.valid_principals(), &names[..]);
            assert_eq!(back.public_key(), key.key_data());
        }
    }
});
