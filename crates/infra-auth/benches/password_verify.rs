//! Login latency: one Argon2id password check with the chosen parameters
//! (m = 19 MiB, t = 2, p = 1).
//!
//! Run with `cargo bench -p infra-auth --bench password_verify`; see
//! docs/benchmarks.md for the figures. A login costs one `verify` whether
//! the user exists or not (unknown users check a dummy hash), so this is
//! the server-side floor of `POST /api/login` with a password.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use infra_auth::Secret;
use infra_auth::password::{hash, verify};

const RUNS: usize = 30;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn time_runs(mut f: impl FnMut() -> bool) -> Vec<Duration> {
    assert!(f(), "warm-up call failed");
    let mut v: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let ok = black_box(f());
            let d = t.elapsed();
            assert!(ok);
            d
        })
        .collect();
    v.sort_unstable();
    v
}

fn report(name: &str, v: &[Duration]) {
    println!(
        "  {name:<28} p50 {:>8}  p99 {:>8}  min {:>8}  max {:>8}",
        ms(pct(v, 50.0)),
        ms(pct(v, 99.0)),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // a benchmark is not a test, so it only checks that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pw = Secret::new("correct horse battery staple".to_owned());
    let wrong = Secret::new("correct horse battery stapler".to_owned());
    let phc = hash(&pw).unwrap();
    println!(
        "password check, Argon2id {}, {RUNS} runs each, one thread",
        phc.split('$').nth(3).unwrap_or("?")
    );
    let ok = time_runs(|| verify(black_box(&pw), Some(black_box(&phc))));
    report("verify (right password)", &ok);
    let bad = time_runs(|| !verify(black_box(&wrong), Some(black_box(&phc))));
    report("verify (wrong password)", &bad);
    let none = time_runs(|| !verify(black_box(&pw), None));
    report("verify (unknown user)", &none);
    let hashed = time_runs(|| hash(black_box(&pw)).is_ok());
    report("hash (set a password)", &hashed);
    let p50 = pct(&ok, 50.0).as_secs_f64();
    println!(
        "  => at most {:.0} password logins/s per core; each holds 19 MiB while it runs",
        1.0 / p50
    );
}
