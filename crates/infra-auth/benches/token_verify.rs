//! Token verifications per second on one core, against PyJWT.
//!
//! Goal: at least 50,000 `Verifier::verify` calls a second on one thread.
//! Run with `cargo bench -p infra-auth --bench token_verify`; see
//! docs/benchmarks.md for the figures.
//!
//! The baseline is PyJWT (`/usr/bin/python3`, Debian's python3-jwt with
//! python3-cryptography) verifying the very same token with the same checks
//! (kid lookup, EdDSA only, audience, issuer, leeway, required claims), in
//! the same run. The bare Ed25519 signature check is timed too: it is the
//! floor no verifier can go under.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use infra_auth::jwt::{CachingVerifier, Claims, Jwks, SigningKey, Verifier};

const ISS: &str = "https://infra.example.com";
const AUD: &str = "prod";
const SECS: f64 = 3.0;

/// The baseline, run in the child: the same checks `Verifier::verify` makes.
const PYJWT: &str = r#"
import sys, time, base64, jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
token, x, kid, aud, iss, secs = sys.argv[1:7]
keys = {kid: Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=="))}
opts = {"require": ["exp", "nbf", "aud", "iss", "sub"]}
def verify():
    h = jwt.get_unverified_header(token)
    return jwt.decode(token, keys[h["kid"]], algorithms=["EdDSA"], audience=aud,
                      issuer=iss, leeway=30, options=opts)
assert verify()["aud"] == aud
n, start, deadline = 0, time.perf_counter(), time.perf_counter() + float(secs)
while True:
    for _ in range(1000):
        verify()
    n += 1000
    if time.perf_counter() >= deadline:
        break
print(n, time.perf_counter() - start)
"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// Calls `f` in batches until `SECS` have passed; returns calls per second.
fn per_second(mut f: impl FnMut()) -> (u64, Duration) {
    for _ in 0..1_000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..1_000 {
            f();
        }
        n += 1_000;
        if start.elapsed().as_secs_f64() >= SECS {
            return (n, start.elapsed());
        }
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn pyjwt(token: &str, key: &SigningKey) -> Result<f64, String> {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PYJWT, token, &key.public_x, &key.kid, AUD, ISS])
        .arg(SECS.to_string())
        .output()
        .map_err(|e| format!("cannot run /usr/bin/python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let n: f64 = it.next().and_then(|v| v.parse().ok()).ok_or("bad output")?;
    let secs: f64 = it.next().and_then(|v| v.parse().ok()).ok_or("bad output")?;
    Ok(n / secs)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // a benchmark is not a test, so it only checks that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let key = SigningKey::generate().unwrap();
    let n = now();
    let claims = Claims {
        iss: ISS.into(),
        sub: "0k3fz9q2m7xw4r8t".into(),
        aud: AUD.into(),
        exp: n + 300,
        iat: n,
        nbf: n,
        jti: "Jq7pW2xYz9Kc4mNb".into(),
        name: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        groups: ["devs", "sre", "payments", "oncall", "everyone"]
            .map(String::from)
            .to_vec(),
        sid: Some("k7Rw2nZp9Qx4sT8v".into()),
        act: None,
    };
    let token = key.sign(&claims).unwrap();
    let verifier = Verifier::new(&Jwks { keys: vec![key.jwk()] }, ISS);
    assert_eq!(verifier.verify(&token, AUD).unwrap(), claims);

    // The bare signature check over the same signing input.
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let public = URL_SAFE_NO_PAD.decode(&key.public_x).unwrap();
    let pk = UnparsedPublicKey::new(&ED25519, public);
    pk.verify(input.as_bytes(), &sig).unwrap();

    println!(
        "token verification, one thread, {SECS} s each; token {} bytes, EdDSA (Ed25519)",
        token.len()
    );
    let (vn, vd) = per_second(|| {
        black_box(verifier.verify(black_box(&token), black_box(AUD))).unwrap();
    });
    let infra = rate(vn, vd);
    println!(
        "  infra Verifier::verify   {:>9.0} /s  ({:.2} µs each)",
        infra,
        1e6 / infra
    );
    let (sn, sd) = per_second(|| {
        black_box(pk.verify(black_box(input.as_bytes()), black_box(&sig))).unwrap();
    });
    let bare = rate(sn, sd);
    println!(
        "  bare Ed25519 verify      {:>9.0} /s  ({:.2} µs each; {:.0}% of a full verify)",
        bare,
        1e6 / bare,
        100.0 * infra / bare
    );
    match pyjwt(&token, &key) {
        Ok(py) => {
            println!("  PyJWT jwt.decode         {:>9.0} /s  ({:.2} µs each)", py, 1e6 / py);
            println!("  ratio infra / PyJWT      {:>9.2}x", infra / py);
        }
        Err(e) => println!("  PyJWT baseline skipped: {e}"),
    }
    // What a connector does per request: the same token again hits the
    // cache of verified tokens (audience and time still checked).
    let cached = CachingVerifier::new(Verifier::new(&Jwks { keys: vec![key.jwk()] }, ISS), 100_000);
    let (cn, cd) = per_second(|| {
        black_box(cached.verify(black_box(&token), black_box(AUD))).unwrap();
    });
    let hit = rate(cn, cd);
    println!("  CachingVerifier, repeat  {:>9.0} /s  ({:.2} µs each)", hit, 1e6 / hit);
    println!(
        "  goal >= 50,000 /s: first sight of a token {}, repeat token {}",
        if infra >= 50_000.0 { "met" } else { "NOT met" },
        if hit >= 50_000.0 { "met" } else { "NOT met" }
    );
}
