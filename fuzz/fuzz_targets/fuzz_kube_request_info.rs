//! The connector's Kubernetes request-info parser and the audit detail it
//! writes (`RequestInfo::parse` and `describe`), on arbitrary methods,
//! paths and queries.
//!
//! Input: one byte picks the method, the rest is a request target
//! (`/path?query`). When `http` accepts it as a request target, the path
//! and query are taken as hyper would hand them to the connector;
//! otherwise the raw bytes are split at the first `?` (robustness only).
//!
//! Asserts: no panic; the same input gives the same result; the verb is
//! one of the closed set (or the method, for non-resource paths); every
//! field but a non-resource path is one path segment (no `/`); the audit
//! detail is bounded by the input's size; and for a target `http`
//! accepts, the detail has no ASCII control character (one audit line
//! stays one line, whatever the client sends). `http` does accept raw
//! UTF-8 in a path, so C1 controls (U+0080..U+009F) can reach the detail,
//! as they reach every proxied request's path in the audit: escaping them
//! is for whatever displays the audit.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;

const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = match m % 9 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        3 => Method::PUT,
        4 => Method::PATCH,
        5 => Method::DELETE,
        6 => Method::OPTIONS,
        7 => Method::CONNECT,
        _ => Method::from_bytes(b"PROPFIND").unwrap_or(Method::TRACE),
    };
    let parsed = http::uri::PathAndQuery::try_from(rest).ok();
    let raw = String::from_utf8_lossy(rest);
    let (path, query) = match &parsed {
        Some(pq) => (pq.path(), pq.query().unwrap_or("")),
        None => raw.split_once('?').unwrap_or((&raw, "")),
    };

    let info = infra_connector::fuzzing::kube_request_info(&method, path, query);
    assert_eq!(info, infra_connector::fuzzing::kube_request_info(&method, path, query));

    // The API server's rule: `/api/VERSION/...` and `/apis/GROUP/VERSION/...`
    // are resource requests, everything else is not.
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if matches!(segs.as_slice(), ["api", _, ..] | ["apis", _, _, ..]) {
        assert!(VERBS.contains(&info.verb.as_str()), "verb {:?}", info.verb);
        for f in [
            &info.group,
            &info.resource,
            &info.subresource,
            &info.namespace,
            &info.name,
        ] {
            assert!(!f.contains('/'), "field {f:?} spans segments");
            assert!(f.is_empty() || path.contains(f.as_str()));
        }
    } else {
        assert_eq!(info.verb, method.as_str().to_ascii_lowercase());
    }

    let bound = 100 + 7 * path.len() + 12 * query.len();
    assert!(
        info.description.len() <= bound,
        "detail of {} bytes for {} bytes of input",
        info.description.len(),
        rest.len()
    );
    if parsed.is_some() {
        assert!(
            !info.description.chars().any(|c| c.is_ascii_control()),
            "control character in the audit detail: {:?}",
            info.description
        );
    }
});
