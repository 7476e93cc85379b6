//! The decision in memory: real signed tokens, a grant view, no I/O.

use std::sync::Arc;

use crate::jwt::{Claims, Jwks, SigningKey};
use infra_core::{GrantRule, GrantView, NamedGrant, Resource, Role, Subject};

use super::Decider;

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

const ISSUER: &str = "https://infra.test";

fn grant(subject: Subject, name: &str, role: &str, res: &str, exp: Option<i64>) -> NamedGrant {
    NamedGrant {
        rule: GrantRule {
            subject,
            role: Role::parse(role).unwrap(),
            resource: Resource::parse(res).unwrap(),
            expires_at: exp,
        },
        subject_name: name.into(),
    }
}

struct Fixture {
    key: SigningKey,
    decider: Decider,
}

impl Fixture {
    fn new() -> Self {
        let key = SigningKey::generate().unwrap();
        let jwks = Jwks { keys: vec![key.jwk()] };
        let view = GrantView::new(
            vec![
                grant(Subject::User("u1".into()), "a@x.test", "viewer", "web", None),
                grant(Subject::User("u1".into()), "a@x.test", "edit", "prod.payments", None),
                grant(Subject::Group("g1".into()), "sre", "view", "prod", None),
                grant(Subject::User("u3".into()), "c@x.test", "root", "host", Some(1_000)),
            ],
            [("g1".to_owned(), "u2".to_owned())],
        );
        let decider = Decider::new(&jwks, Arc::new(view), &["ended".to_owned()], ISSUER, &["prod"]);
        Self { key, decider }
    }

    fn claims(&self, sub: &str, aud: &str) -> Claims {
        let now = now_ms() / 1000;
        Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: aud.into(),
            exp: now + 300,
            iat: now,
            nbf: now,
            jti: "j".into(),
            name: format!("{sub}@x.test"),
            email: None,
            groups: vec!["from-token".into(), "sre".into(), "system:masters".into()],
            sid: Some("live".into()),
            act: None,
        }
    }

    fn token(&self, c: &Claims) -> String {
        self.key.sign(c).unwrap()
    }
}

#[test]
fn a_token_for_another_destination_is_a_403_and_a_bad_one_a_401() {
    let f = Fixture::new();
    let t = f.token(&f.claims("u1", "web"));
    assert!(f.decider.verify(&t, "web").is_ok());
    assert_eq!(f.decider.verify(&t, "prod").unwrap_err().status, 403);
    assert_eq!(f.decider.verify("not.a.token", "web").unwrap_err().status, 401);
    let other = SigningKey::generate().unwrap().sign(&f.claims("u1", "web")).unwrap();
    assert_eq!(f.decider.verify(&other, "web").unwrap_err().status, 401);
    let mut old = f.claims("u1", "web");
    old.exp = old.iat - 3600;
    assert_eq!(f.decider.verify(&f.token(&old), "web").unwrap_err().status, 401);
}

#[test]
fn grants_decide_and_say_how_to_get_one() {
    let f = Fixture::new();
    let now = now_ms();
    let ident = f.decider.authorize(&f.claims("u1", "web"), "web", now).unwrap();
    assert_eq!(ident.roles, ["viewer"]);
    assert_eq!(ident.email, "u1@x.test");
    assert!(ident.current_groups.is_empty(), "only clusters impersonate groups");
    let d = f.decider.authorize(&f.claims("u2", "web"), "web", now).unwrap_err();
    assert_eq!(d.status, 403);
    assert!(
        d.message.contains("infra grants add u2@x.test web --role ROLE"),
        "{}",
        d.message
    );
    // Expired grants give nothing.
    assert!(f.decider.authorize(&f.claims("u3", "host"), "host", 999).is_ok());
    assert_eq!(
        f.decider
            .authorize(&f.claims("u3", "host"), "host", 1_000)
            .unwrap_err()
            .status,
        403
    );
}

#[test]
fn a_cluster_admits_namespace_grants_and_impersonates_current_groups() {
    let f = Fixture::new();
    let now = now_ms();
    let u1 = f.decider.authorize(&f.claims("u1", "prod"), "prod", now).unwrap();
    assert_eq!(u1.roles, ["edit on prod.payments"]);
    // The token says u1 is in `sre`, but the pushed memberships say not:
    // the group is dropped; a group only the token knows is kept; a name
    // Kubernetes reserves never is.
    assert_eq!(u1.current_groups, ["from-token"]);
    let u2 = f.decider.authorize(&f.claims("u2", "prod"), "prod", now).unwrap();
    assert_eq!(u2.roles, ["view on prod"]);
    assert_eq!(u2.current_groups, ["from-token", "sre"]);
    let d = f.decider.authorize(&f.claims("u3", "prod"), "prod", now).unwrap_err();
    assert!(
        d.message.contains("cluster prod or any of its namespaces"),
        "{}",
        d.message
    );
}

#[test]
fn an_ended_session_ends_its_tokens() {
    let f = Fixture::new();
    let mut c = f.claims("u1", "web");
    c.sid = Some("ended".into());
    let d = f.decider.authorize(&c, "web", now_ms()).unwrap_err();
    assert_eq!(d.status, 401);
    assert!(f.decider.has_any_grant("u1", "web", 0));
    assert!(!f.decider.has_any_grant("u1", "host", 0));
}
