use std::collections::BTreeMap;

use infra_tunnel::proto::ClusterTrust;

use super::*;

fn workloads() -> Workloads {
    Workloads {
        cluster: "prod".into(),
        certificate: String::new(),
        ca: String::new(),
        server_ca: "CA".into(),
        issuers: vec![ClusterTrust {
            name: "prod".into(),
            audience: "https://infra.example.com".into(),
            mappings: BTreeMap::from([("system:serviceaccount:shop:*".into(), "*@shop.example".into())]),
        }],
        reach: BTreeMap::from([("api@shop.example".into(), vec!["db".into()])]),
        destinations: BTreeMap::from([
            ("db".into(), DestinationKind::Postgres),
            ("web".into(), DestinationKind::Http),
            ("prod".into(), DestinationKind::Kubernetes),
        ]),
    }
}

fn pod(annotation: Option<&str>, sa: &str) -> Value {
    let mut p = json!({
        "metadata": {"name": "p", "annotations": {}},
        "spec": {"serviceAccountName": sa, "containers": [
            {"name": "app", "image": "app"},
            {"name": "other", "image": "x", "env": [{"name": "PGHOST", "value": "mine"}]},
        ]},
    });
    if let Some(a) = annotation {
        p["metadata"]["annotations"][ANNOTATION] = json!(a);
    }
    p
}

fn run(p: &Value) -> Decision {
    let w = workloads();
    mutate(
        p,
        "shop",
        &Context {
            workloads: &w,
            image: "infra:1",
            server: "https://infra.example.com",
        },
    )
}

fn env_of(d: &Decision, container: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for op in &d.patch {
        let path = op["path"].as_str().unwrap();
        if path == format!("/spec/containers/{container}/env") {
            for e in op["value"].as_array().unwrap() {
                out.insert(
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap().to_owned(),
                );
            }
        } else if path == format!("/spec/containers/{container}/env/-") {
            out.insert(
                op["value"]["name"].as_str().unwrap().to_owned(),
                op["value"]["value"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

#[test]
fn pods_that_do_not_ask_are_untouched() {
    assert_eq!(run(&pod(None, "api")), Decision::default());
    let mut done = pod(Some("db"), "api");
    done["metadata"]["annotations"][INJECTED] = json!("db");
    assert_eq!(run(&done), Decision::default());
}

#[test]
fn a_granted_pod_gets_token_sidecars_and_environment() {
    let d = run(&pod(Some("db/orders, web"), "api"));
    assert_eq!(d.refuse, None);
    // Only `web` is ungranted.
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("no grant on web"), "{:?}", d.warnings);
    assert!(d.warnings[1].contains("other sets PGHOST"), "{:?}", d.warnings);
    let vol = &d.patch[0];
    assert_eq!(vol["path"], "/spec/volumes");
    let sat = &vol["value"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sat["audience"], "https://infra.example.com");
    let sidecars: Vec<&Value> = d
        .patch
        .iter()
        .filter(|o| {
            o["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/spec/containers/") && !p.contains("/env"))
        })
        .map(|o| &o["value"])
        .collect();
    assert_eq!(sidecars.len(), 2);
    assert_eq!(sidecars[0]["name"], "infra-db");
    assert_eq!(
        sidecars[0]["args"],
        json!([
            "proxy",
            "db",
            "--port",
            "5432",
            "--workload-token",
            "/var/run/secrets/infra/token",
            "--kind",
            "postgres"
        ])
    );
    assert_eq!(sidecars[1]["args"][3], "18080");
    // First in the pod, each holding the next container until it listens.
    assert_eq!(d.patch.iter().filter(|o| o["path"] == "/spec/containers/0").count(), 1);
    assert_eq!(
        sidecars[0]["lifecycle"]["postStart"]["exec"]["command"][5],
        "--ready-check"
    );
    let env = env_of(&d, 0);
    assert_eq!(env["PGHOST"], "127.0.0.1");
    assert_eq!(env["PGPORT"], "5432");
    assert_eq!(env["PGUSER"], "api@shop.example");
    assert_eq!(env["PGDATABASE"], "orders");
    assert_eq!(
        env["DATABASE_URL"],
        "postgres://api%40shop.example@127.0.0.1:5432/orders?sslmode=disable"
    );
    assert_eq!(env["INFRA_WEB_URL"], "http://127.0.0.1:18080");
    // A variable the container sets itself is left alone.
    assert!(!env_of(&d, 1).contains_key("PGHOST"));
    // Nothing secret is written into the pod.
    let text = serde_json::to_string(&d.patch).unwrap();
    assert!(!text.to_lowercase().contains("password"));
}

#[test]
fn unmapped_and_unknown_are_warnings_malformed_and_unfit_are_refusals() {
    let d = run(&pod(Some("db"), "")); // the namespace's `default` account
    assert_eq!(d.refuse, None);
    // `default` matches the shop pattern too.
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("default@shop.example has no grant on db")),
        "{:?}",
        d.warnings
    );
    let d = run(&pod(Some("nope"), "api"));
    assert!(
        d.warnings.iter().any(|w| w.contains("no destination named nope")),
        "{:?}",
        d.warnings
    );
    for bad in ["", "db,", "DB", "db/", "db/x y", "db,db", "a,b,c,d,e,f,g,h,i", "../x"] {
        let d = run(&pod(Some(bad), "api"));
        assert!(
            d.refuse.as_deref().is_some_and(|m| m.contains(ANNOTATION)),
            "{bad:?}: {d:?}"
        );
        assert!(d.patch.is_empty());
    }
    let d = run(&pod(Some("prod"), "api"));
    assert!(
        d.refuse
            .as_deref()
            .is_some_and(|m| m.contains("kubernetes destination")),
        "{d:?}"
    );
    let mut on_host = pod(Some("db"), "api");
    on_host["spec"]["hostNetwork"] = json!(true);
    assert!(
        run(&on_host)
            .refuse
            .as_deref()
            .is_some_and(|m| m.contains("hostNetwork"))
    );
    let mut taken = pod(Some("db"), "api");
    taken["spec"]["containers"][1]["name"] = json!("infra-db");
    assert!(
        run(&taken)
            .refuse
            .as_deref()
            .is_some_and(|m| m.contains("already has a container named infra-db"))
    );
}

#[test]
fn without_issuer_or_mapping_the_pod_is_told_why() {
    let mut w = workloads();
    w.issuers[0].mappings = BTreeMap::from([("system:serviceaccount:other:x".into(), "x@o.example".into())]);
    let cx = Context {
        workloads: &w,
        image: "infra:1",
        server: "https://infra.example.com",
    };
    let d = mutate(&pod(Some("db"), "api"), "shop", &cx);
    assert!(
        d.warnings[0].contains("mapped to no Infra service account"),
        "{:?}",
        d.warnings
    );
    assert_eq!(env_of(&d, 0)["PGUSER"], "infra");
    w.issuers.clear();
    let cx = Context {
        workloads: &w,
        image: "infra:1",
        server: "https://infra.example.com",
    };
    let d = mutate(&pod(Some("db"), "api"), "shop", &cx);
    assert!(
        d.warnings[0].contains("no workload issuer trusts cluster prod"),
        "{:?}",
        d.warnings
    );
}
