//! Access decision latency with 100,000 grants.
//!
//! Goal: p99 of `GrantIndex::allows` at or under 10 µs. Run with
//! `cargo bench -p infra-core --bench access_decision`; see
//! docs/benchmarks.md for the figures and what they mean.
//!
//! Each call is timed alone with `Instant` so the percentiles are of single
//! decisions, not averages; the timer's own cost is measured and printed so
//! it can be subtracted by eye. A fixed-seed generator keeps runs comparable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use infra_core::access::GrantRule;
use infra_core::{GrantIndex, Resource, Role, Subject};

const GRANTS: usize = 100_000;
const USERS: usize = 20_000;
const GROUPS: usize = 2_000;
const GROUPS_PER_USER: usize = 5;
const DESTINATIONS: usize = 2_000;
const NAMESPACES_PER_DESTINATION: usize = 10;
const CALLS: usize = 300_000;
const ROLES: [&str; 5] = ["view", "edit", "admin", "connect", "cluster-admin"];

/// splitmix64: small, fast, and good enough to spread keys; no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct World {
    index: GrantIndex,
    /// Each user's groups, as the caller of `allows` would hold them.
    groups_of: Vec<Vec<String>>,
    users: Vec<String>,
    resources: Vec<Resource>,
    roles: Vec<Role>,
    /// The grants, kept so that half the queries can ask for something held.
    rules: Vec<(Subject, Resource, Role)>,
}

fn resource(rng: &mut Rng) -> Resource {
    let d = rng.below(DESTINATIONS);
    // One grant in four is on a whole destination, the rest on a namespace.
    let s = if rng.below(4) == 0 {
        format!("dest-{d}")
    } else {
        format!("dest-{d}.ns-{}", rng.below(NAMESPACES_PER_DESTINATION))
    };
    Resource::parse(&s).unwrap()
}

/// `heavy`: if set, one group every user belongs to holds that many of the
/// grants (an "everyone" group), the worst case for a per-subject scan.
fn build(seed: u64, heavy: Option<usize>) -> World {
    let mut rng = Rng(seed);
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    let group_ids: Vec<String> = (0..GROUPS).map(|i| format!("group-{i}")).collect();
    let roles: Vec<Role> = ROLES.iter().map(|r| Role::parse(r).unwrap()).collect();
    let mut groups_of: Vec<Vec<String>> = (0..USERS)
        .map(|_| {
            let mut gs: Vec<String> = Vec::with_capacity(GROUPS_PER_USER);
            while gs.len() < GROUPS_PER_USER {
                let g = &group_ids[rng.below(GROUPS)];
                if !gs.contains(g) {
                    gs.push(g.clone());
                }
            }
            gs
        })
        .collect();
    if heavy.is_some() {
        for gs in &mut groups_of {
            gs.push("everyone".to_owned());
        }
    }
    let mut rules = Vec::with_capacity(GRANTS);
    for i in 0..GRANTS {
        let subject = match heavy {
            Some(n) if i < n => Subject::Group("everyone".to_owned()),
            // Two grants in three go to users, one to a group.
            _ if rng.below(3) < 2 => Subject::User(users[rng.below(USERS)].clone()),
            _ => Subject::Group(group_ids[rng.below(GROUPS)].clone()),
        };
        let role = roles[rng.below(roles.len())].clone();
        rules.push((subject, resource(&mut rng), role));
    }
    let index = GrantIndex::new(rules.iter().map(|(s, res, role)| GrantRule {
        subject: s.clone(),
        role: role.clone(),
        resource: res.clone(),
        // One grant in ten expires; half of those already have.
        expires_at: (rng.below(10) == 0).then(|| if rng.below(2) == 0 { 0 } else { i64::MAX }),
    }));
    let resources = (0..10_000).map(|_| resource(&mut rng)).collect();
    World {
        index,
        groups_of,
        users,
        resources,
        roles,
        rules,
    }
}

/// A query: half ask for a role some grant holds (through the grant's user,
/// or a member of the grant's group when one is found quickly), half are
/// random and almost always denied.
fn queries(w: &World, rng: &mut Rng) -> Vec<(usize, Resource, Role)> {
    (0..CALLS)
        .map(|i| {
            if i % 2 == 0 {
                let (s, res, role) = &w.rules[rng.below(w.rules.len())];
                let user = match s {
                    Subject::User(u) => u.strip_prefix("user-").unwrap().parse().unwrap(),
                    Subject::Group(g) => (0..64)
                        .map(|_| rng.below(USERS))
                        .find(|&u| w.groups_of[u].contains(g))
                        .unwrap_or_else(|| rng.below(USERS)),
                };
                (user, res.clone(), role.clone())
            } else {
                let res = w.resources[rng.below(w.resources.len())].clone();
                let role = w.roles[rng.below(w.roles.len())].clone();
                (rng.below(USERS), res, role)
            }
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i]
}

fn ns(d: Duration) -> String {
    format!("{:>7.0} ns", d.as_nanos() as f64)
}

fn run(name: &str, seed: u64, heavy: Option<usize>) {
    let t = Instant::now();
    let w = build(seed, heavy);
    let built = t.elapsed();
    let mut rng = Rng(seed ^ 0xA5A5);
    let qs = queries(&w, &mut rng);
    let now = 1_000;

    // Warm up caches and the branch predictor on the same kind of work.
    for (u, res, role) in qs.iter().take(20_000) {
        black_box(w.index.allows(&w.users[*u], &w.groups_of[*u], res, role, now));
    }

    let mut lat = Vec::with_capacity(qs.len());
    let mut allowed = 0usize;
    let wall = Instant::now();
    for (u, res, role) in &qs {
        let (user, groups) = (&w.users[*u], &w.groups_of[*u]);
        let t = Instant::now();
        let ok = w
            .index
            .allows(black_box(user), black_box(groups), black_box(res), black_box(role), now);
        lat.push(t.elapsed());
        allowed += usize::from(black_box(ok));
    }
    let wall = wall.elapsed();

    // The cost of the two `Instant` reads alone, to subtract by eye.
    let mut empty = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        empty.push(t.elapsed());
    }
    empty.sort_unstable();
    lat.sort_unstable();

    println!("{name}");
    println!(
        "  index: {GRANTS} grants, {USERS} users, {GROUPS} groups, {GROUPS_PER_USER} groups/user{}; built in {:.0} ms",
        heavy.map_or(String::new(), |n| format!(", +1 group of all users holding {n} grants")),
        built.as_secs_f64() * 1e3
    );
    println!(
        "  calls: {} ({} allowed), {:.0} ns mean incl. timer",
        lat.len(),
        allowed,
        wall.as_nanos() as f64 / lat.len() as f64
    );
    println!(
        "  p50 {}  p99 {}  p99.9 {}  max {}",
        ns(pct(&lat, 50.0)),
        ns(pct(&lat, 99.0)),
        ns(pct(&lat, 99.9)),
        ns(lat[lat.len() - 1])
    );
    println!(
        "  timer alone: p50 {}  p99 {}",
        ns(pct(&empty, 50.0)),
        ns(pct(&empty, 99.0))
    );
    let p99 = pct(&lat, 99.0);
    println!(
        "  goal p99 <= 10 µs: {}",
        if p99 <= Duration::from_micros(10) {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // a benchmark is not a test, so it only checks that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    run("access decision, grants spread evenly", 1, None);
    println!();
    run("access decision, one group every user is in", 2, Some(5_000));
}
