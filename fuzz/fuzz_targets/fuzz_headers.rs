//! The connector's header hygiene (`strip_client_headers`) and the hop-by-hop
//! stripping both ends do (`infra_tunnel::strip_hop_by_hop`), on arbitrary
//! header maps.
//!
//! Input: lines `name:value`; names and values that `http` refuses are
//! skipped, as hyper would have refused the request.
//!
//! Asserts, after `strip_client_headers`:
//! - no header whose name, lower-cased and with `_` read as `-` (as CGI,
//!   WSGI, Rack and many upstreams read it), starts with `x-forwarded-`,
//!   `x-infra-` or `impersonate-`, or is `authorization`, remains;
//! - no hop-by-hop header remains, nor any header the request's own
//!   `Connection` named;
//! - headers nobody asked to drop (`x-ok-*`) survive;
//! - the map only shrinks.
//!
//! And after `strip_hop_by_hop` alone: no hop-by-hop header and no
//! `Connection`-named header remains.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn client_controlled(name: &str) -> bool {
    let n = normalised(name);
    n.starts_with("x-forwarded-") || n.starts_with("x-infra-") || n.starts_with("impersonate-") || n == "authorization"
}

/// The names `Connection` lists, as `strip_hop_by_hop` reads them.
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

fn assert_no_hop_by_hop(after: &HeaderMap, named: &[HeaderName]) {
    for n in infra_tunnel::HOP_BY_HOP {
        assert!(!after.contains_key(n), "hop-by-hop header {n} survived");
    }
    for n in named {
        assert!(!after.contains_key(n), "header {n} named in Connection survived");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    let named = connection_named(&h);

    let mut hop = h.clone();
    infra_tunnel::strip_hop_by_hop(&mut hop);
    assert_no_hop_by_hop(&hop, &named);
    assert!(hop.len() <= h.len());

    let mut after = h.clone();
    infra_connector::fuzzing::strip_client_headers(&mut after);
    for name in after.keys() {
        assert!(
            !client_controlled(name.as_str()),
            "client header {name} survived the hygiene"
        );
    }
    assert_no_hop_by_hop(&after, &named);
    assert!(after.len() <= h.len());
    for (name, value) in &h {
        if name.as_str().starts_with("x-ok-") && !named.contains(name) {
            assert!(
                after.get_all(name).iter().any(|v| v == value),
                "harmless header {name} was dropped"
            );
        }
    }
});
