//! The decision and its answer in memory: real signed tokens, a grant
//! view, no server.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use infra_auth::decide::Decider;
use infra_auth::jwt::{Claims, Jwks, SigningKey};
use infra_core::{AppOrigin, GrantRule, GrantView, NamedGrant, Resource, Role, Subject};

use super::{Ask, Ready, Verdict, headers_to_remove};

const ISSUER: &str = "https://infra.test:8443";

struct Fixture {
    key: SigningKey,
    ready: Ready,
}

fn fixture() -> Fixture {
    let key = SigningKey::generate().unwrap();
    let jwks = Jwks { keys: vec![key.jwk()] };
    let view = GrantView::new(
        vec![NamedGrant {
            rule: GrantRule {
                subject: Subject::User("u1".into()),
                role: Role::parse("viewer").unwrap(),
                resource: Resource::parse("wiki").unwrap(),
                expires_at: None,
            },
            subject_name: "a@x.test".into(),
        }],
        [],
    );
    let decider = Decider::new(&jwks, Arc::new(view), &["ended".to_owned()], ISSUER, &[]);
    let apps = vec![
        ("wiki".to_owned(), AppOrigin::parse("https://wiki.test:9443").unwrap()),
        ("docs".to_owned(), AppOrigin::parse("https://docs.test").unwrap()),
    ];
    Fixture {
        key,
        ready: Ready::new(decider, apps, ISSUER.into()),
    }
}

fn now() -> i64 {
    infra_store::now_ms()
}

impl Fixture {
    fn token(&self, sub: &str, aud: &str) -> String {
        let t = now() / 1000;
        self.key
            .sign(&Claims {
                iss: ISSUER.into(),
                sub: sub.into(),
                aud: aud.into(),
                exp: t + 300,
                iat: t,
                nbf: t,
                jti: "j".into(),
                name: format!("{sub}@x.test"),
                email: None,
                groups: vec!["eng".into()],
                sid: Some("live".into()),
                act: None,
            })
            .unwrap()
    }

    fn ask(&self, host: &str, method: Method, uri: &str, headers: &[(&str, &str)]) -> Verdict {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        self.ready.decide(
            &Ask {
                host,
                method,
                uri,
                headers: &h,
            },
            now(),
        )
    }
}

fn status(v: &Verdict) -> u16 {
    match v {
        Verdict::Allow { .. } => 200,
        Verdict::Deny { status, .. } => *status,
    }
}

#[test]
fn an_anonymous_request_is_sent_to_sign_in_and_back_to_the_same_page() {
    let f = fixture();
    let v = f.ask("wiki.test:9443", Method::GET, "/page?x=1", &[]);
    let Verdict::Deny { status, sign_in, .. } = v else {
        panic!("allowed")
    };
    assert_eq!(status, 401);
    assert_eq!(
        sign_in.as_deref(),
        Some("https://infra.test:8443/authorize?rd=https%3A%2F%2Fwiki.test%3A9443%2Fpage%3Fx%3D1")
    );
    // A URI that is no same-origin path comes back to the root.
    let Verdict::Deny { sign_in, .. } = f.ask("wiki.test", Method::GET, "//evil.test/x", &[]) else {
        panic!("allowed")
    };
    assert!(sign_in.unwrap().ends_with("rd=https%3A%2F%2Fwiki.test%3A9443%2F"));
}

#[test]
fn grants_decide_and_identity_comes_from_the_token() {
    let f = fixture();
    let good = format!("Bearer {}", f.token("u1", "wiki"));
    let v = f.ask("WIKI.test", Method::POST, "/edit", &[("authorization", &good)]);
    let Verdict::Allow { ident, destination, .. } = &v else {
        panic!("denied: {}", status(&v))
    };
    assert_eq!(destination, "wiki");
    assert_eq!(ident.email, "u1@x.test");
    assert_eq!(ident.roles, ["viewer"]);
    // No grant: 403 with how to get one.
    let other = format!("Bearer {}", f.token("u2", "wiki"));
    assert_eq!(
        status(&f.ask("wiki.test", Method::GET, "/", &[("authorization", &other)])),
        403
    );
    // A token for another destination is no key to this one.
    let docs = format!("Bearer {}", f.token("u1", "docs"));
    assert_eq!(
        status(&f.ask("wiki.test", Method::GET, "/", &[("authorization", &docs)])),
        403
    );
    // A host no destination has, or the right name on another port.
    assert_eq!(
        status(&f.ask("evil.test", Method::GET, "/", &[("authorization", &good)])),
        403
    );
    assert_eq!(
        status(&f.ask("wiki.test:443", Method::GET, "/", &[("authorization", &good)])),
        403
    );
    // A garbled token is a 401.
    assert_eq!(
        status(&f.ask("wiki.test", Method::GET, "/", &[("authorization", "Bearer x.y.z")])),
        401
    );
}

#[test]
fn the_cookie_works_for_this_origin_only_and_never_reaches_the_upstream() {
    let f = fixture();
    let cookie = format!("theme=dark; __Host-infra_token={}; sid=app", f.token("u1", "wiki"));
    let v = f.ask("wiki.test", Method::GET, "/", &[("cookie", &cookie)]);
    let Verdict::Allow { upstream_cookie, .. } = v else {
        panic!("denied")
    };
    assert_eq!(upstream_cookie.as_deref(), Some("theme=dark; sid=app"));
    let only = format!("__Host-infra_token={}", f.token("u1", "wiki"));
    let Verdict::Allow { upstream_cookie, .. } = f.ask("wiki.test", Method::GET, "/", &[("cookie", &only)]) else {
        panic!("denied")
    };
    assert_eq!(upstream_cookie, None);
    // Another origin's page posting with the browser's cookie.
    let v = f.ask(
        "wiki.test",
        Method::POST,
        "/delete",
        &[("cookie", &only), ("origin", "https://evil.test")],
    );
    assert_eq!(status(&v), 403);
    // The application's own page on its own port, with the proxy naming
    // the host alone: same origin.
    let v = f.ask(
        "wiki.test",
        Method::POST,
        "/save",
        &[("cookie", &only), ("origin", "https://wiki.test:9443")],
    );
    assert_eq!(status(&v), 200);
    // The same name on another port is another origin.
    let v = f.ask(
        "wiki.test",
        Method::POST,
        "/save",
        &[("cookie", &only), ("origin", "https://wiki.test:8443")],
    );
    assert_eq!(status(&v), 403);
}

#[test]
fn every_spelling_of_a_client_identity_header_is_listed_for_removal() {
    let mut h = HeaderMap::new();
    for name in [
        "x-forwarded-user",
        "x_forwarded_user",
        "x-auth-request-user",
        "x-auth-request-groups",
        "remote-user",
        "x-forwarded-for",
        "x-forwarded-proto",
        "authorization",
        "accept",
    ] {
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("forged"),
        );
    }
    assert_eq!(
        headers_to_remove(&h),
        [
            "authorization",
            "remote-user",
            "x-auth-request-groups",
            "x-auth-request-user",
            "x-forwarded-user",
            "x_forwarded_user"
        ]
    );
}
