//! What the admission webhook does to a pod: the pure part. A pod that
//! asks for Infra (`infra.dev/connect: "db,web"`) gets a projected
//! service-account token for the server's audience, an `infra proxy`
//! sidecar per destination, and the environment an unmodified libpq or
//! HTTP client reads. No password or key is written into the pod.

use std::collections::BTreeSet;

use infra_core::DestinationKind;
use infra_core::workload::{Mappings, kubernetes_subject};
use infra_tunnel::proto::Workloads;
use serde_json::{Value, json};

/// The annotation a pod asks with.
pub(crate) const ANNOTATION: &str = "infra.dev/connect";
/// Set on a pod the webhook changed: what it injected.
pub(crate) const INJECTED: &str = "infra.dev/injected";
/// Where the projected token is mounted in the sidecars.
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/infra";
const TOKEN_VOLUME: &str = "infra-token";
/// How long the kubelet makes each projected token live (it rotates them
/// at 80 %).
const TOKEN_SECONDS: u64 = 3600;
const FIRST_PG_PORT: u16 = 5432;
const FIRST_HTTP_PORT: u16 = 18080;
const MAX_DESTINATIONS: usize = 8;

/// One destination a pod names: `db` or `db/orders` (a database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) destination: String,
    pub(crate) database: Option<String>,
}

/// Reads the annotation's value; the error is the message the pod's
/// creator sees.
pub(crate) fn parse_annotation(v: &str) -> Result<Vec<Wanted>, String> {
    let hint = "write destination names separated by commas, each optionally with /DATABASE, such as \"db/orders,web\"";
    let mut out: Vec<Wanted> = Vec::new();
    for item in v.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("{ANNOTATION}: an empty name; {hint}"));
        }
        let (destination, database) = match item.split_once('/') {
            Some((d, db)) => (d, Some(db)),
            None => (item, None),
        };
        let name_ok = !destination.is_empty()
            && destination.len() <= 57
            && !destination.starts_with('-')
            && destination
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "{ANNOTATION}: {destination:?} is not a destination name; {hint}"
            ));
        }
        if let Some(db) = database
            && (db.is_empty()
                || db.len() > 63
                || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(format!("{ANNOTATION}: {db:?} is not a database name; {hint}"));
        }
        if out.iter().any(|w| w.destination == destination) {
            return Err(format!("{ANNOTATION}: {destination} is named twice"));
        }
        out.push(Wanted {
            destination: destination.to_owned(),
            database: database.map(str::to_owned),
        });
    }
    if out.len() > MAX_DESTINATIONS {
        return Err(format!("{ANNOTATION}: at most {MAX_DESTINATIONS} destinations per pod"));
    }
    Ok(out)
}

/// What the webhook knows besides the pod.
pub(crate) struct Context<'a> {
    pub(crate) workloads: &'a Workloads,
    /// The `infra` image of the sidecars.
    pub(crate) image: &'a str,
    /// The server the sidecars dial.
    pub(crate) server: &'a str,
}

/// The webhook's answer to one pod.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// `Some(message)`: refuse the pod.
    pub(crate) refuse: Option<String>,
    /// RFC 6902 operations.
    pub(crate) patch: Vec<Value>,
    pub(crate) warnings: Vec<String>,
}

/// The environment variable a destination's URL goes in: `INFRA_<NAME>_URL`.
pub(crate) fn url_variable(destination: &str) -> String {
    format!("INFRA_{}_URL", destination.to_ascii_uppercase().replace('-', "_"))
}

/// Decides what to do with `pod` (its namespace from the request).
pub(crate) fn mutate(pod: &Value, namespace: &str, cx: &Context<'_>) -> Decision {
    let annotations = &pod["metadata"]["annotations"];
    let Some(value) = annotations[ANNOTATION].as_str() else {
        return Decision::default();
    };
    // Admitted once already (a re-invocation): nothing more to add.
    if annotations[INJECTED].is_string() {
        return Decision::default();
    }
    let wanted = match parse_annotation(value) {
        Ok(w) => w,
        Err(e) => {
            return Decision {
                refuse: Some(e),
                ..Decision::default()
            };
        }
    };
    if let Some(why) = unfit(pod, &wanted) {
        return Decision {
            refuse: Some(why),
            ..Decision::default()
        };
    }
    let w = cx.workloads;
    let mut warnings = Vec::new();
    for want in &wanted {
        match w.destinations.get(&want.destination) {
            Some(DestinationKind::Postgres | DestinationKind::Http) | None => {}
            Some(other) => {
                return Decision {
                    refuse: Some(format!(
                        "{ANNOTATION}: {} is a {other} destination; pods connect to postgres and http destinations",
                        want.destination
                    )),
                    ..Decision::default()
                };
            }
        }
    }
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let subject = kubernetes_subject(namespace, sa_name);
    // The first issuer that maps this service account decides the audience.
    let mapped = w
        .issuers
        .iter()
        .find_map(|i| Some((i, Mappings::stored(i.mappings.clone()).resolve(&subject)?)));
    let audience = match (&mapped, w.issuers.first()) {
        (Some((i, _)), _) => i.audience.clone(),
        (None, Some(i)) => i.audience.clone(),
        (None, None) => cx.server.to_owned(),
    };
    let account = mapped.as_ref().map(|(_, sa)| sa.clone());
    match (&account, w.issuers.is_empty()) {
        (_, true) => warnings.push(format!(
            "no workload issuer trusts cluster {} yet: 'infra workload-issuers add NAME --from-cluster {} --map ...'; until then the sidecars' connections are refused",
            w.cluster, w.cluster
        )),
        (None, false) => warnings.push(format!(
            "service account {namespace}/{sa_name} ({subject}) is mapped to no Infra service account; the sidecars' connections will be refused"
        )),
        (Some(sa), false) => {
            let reach: BTreeSet<&String> = w.reach.get(sa).into_iter().flatten().collect();
            for want in &wanted {
                if !w.destinations.contains_key(&want.destination) {
                    warnings.push(format!("no destination named {} (yet)", want.destination));
                } else if !reach.contains(&want.destination) {
                    warnings.push(format!(
                        "{sa} has no grant on {}: connections to it are refused until 'infra grants add {sa} {}'",
                        want.destination, want.destination
                    ));
                }
            }
        }
    }
    let mut d = Decision {
        refuse: None,
        patch: Vec::new(),
        warnings,
    };
    d.patch = patch(pod, &wanted, cx, &audience, account.as_deref(), &mut d.warnings);
    d
}

/// Why the pod cannot take the sidecars, if it cannot: on the node's
/// network their loopback ports would be every process's on the node; a
/// name the webhook adds that the pod already uses would make the API
/// server refuse it with a less helpful message.
fn unfit(pod: &Value, wanted: &[Wanted]) -> Option<String> {
    if pod["spec"]["hostNetwork"] == json!(true) {
        return Some(format!(
            "{ANNOTATION}: a pod on the host's network (hostNetwork: true) cannot have Infra's sidecars: their ports would be open to every process on the node"
        ));
    }
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let containers: Vec<String> = [names("containers"), names("initContainers")].concat();
    for want in wanted {
        let name = format!("infra-{}", want.destination);
        if containers.contains(&name) {
            return Some(format!("{ANNOTATION}: the pod already has a container named {name}"));
        }
    }
    if names("volumes").iter().any(|v| v == TOKEN_VOLUME) {
        return Some(format!(
            "{ANNOTATION}: the pod already has a volume named {TOKEN_VOLUME}"
        ));
    }
    None
}

/// The port each destination's sidecar listens on, and its kind (an
/// unknown destination is taken for a database: most are).
fn ports(wanted: &[Wanted], w: &Workloads) -> Vec<(u16, DestinationKind)> {
    let (mut pg, mut http) = (FIRST_PG_PORT, FIRST_HTTP_PORT);
    wanted
        .iter()
        .map(|want| match w.destinations.get(&want.destination) {
            Some(DestinationKind::Http) => {
                http += 1;
                (http - 1, DestinationKind::Http)
            }
            _ => {
                pg += 1;
                (pg - 1, DestinationKind::Postgres)
            }
        })
        .collect()
}

fn patch(
    pod: &Value,
    wanted: &[Wanted],
    cx: &Context<'_>,
    audience: &str,
    account: Option<&str>,
    warnings: &mut Vec<String>,
) -> Vec<Value> {
    let mut ops = Vec::new();
    let volume = json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "path": "token", "audience": audience, "expirationSeconds": TOKEN_SECONDS,
        }}]},
    });
    if pod["spec"]["volumes"].is_array() {
        ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
    } else {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": [volume]}));
    }
    let ports = ports(wanted, cx.workloads);
    let mut env: Vec<(String, String)> = Vec::new();
    let user = account.unwrap_or("infra");
    for (want, (port, kind)) in wanted.iter().zip(&ports) {
        let url = match kind {
            DestinationKind::Http => format!("http://127.0.0.1:{port}"),
            _ => {
                let db = want.database.as_deref().map(|d| format!("/{d}")).unwrap_or_default();
                format!(
                    "postgres://{}@127.0.0.1:{port}{db}?sslmode=disable",
                    user.replace('@', "%40")
                )
            }
        };
        // libpq's variables name the first database.
        if *kind == DestinationKind::Postgres && !env.iter().any(|(k, _)| k == "PGHOST") {
            env.push(("PGHOST".into(), "127.0.0.1".into()));
            env.push(("PGPORT".into(), port.to_string()));
            env.push(("PGUSER".into(), user.to_owned()));
            if let Some(db) = &want.database {
                env.push(("PGDATABASE".into(), db.clone()));
            }
            env.push(("PGSSLMODE".into(), "disable".into()));
            env.push(("DATABASE_URL".into(), url.clone()));
        }
        env.push((url_variable(&want.destination), url));
    }
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or_default();
        let existing: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        let mut add = Vec::new();
        for (k, v) in &env {
            if existing.contains(&k.as_str()) {
                warnings.push(format!("container {name} sets {k} itself; left as it is"));
            } else {
                add.push(json!({"name": k, "value": v}));
            }
        }
        if add.is_empty() {
            continue;
        }
        if c["env"].is_array() {
            for e in add {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": e}));
            }
        } else {
            ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": add}));
        }
    }
    // The sidecars go first, each holding the next container until it
    // listens (its postStart hook): the kubelet starts a pod's containers
    // in order. Inserted after the environment's operations, whose indices
    // are the pod's own.
    for (i, (want, (port, kind))) in wanted.iter().zip(&ports).enumerate() {
        ops.push(
            json!({"op": "add", "path": format!("/spec/containers/{i}"), "value": sidecar(want, *port, *kind, cx)}),
        );
    }
    let injected: Vec<&str> = wanted.iter().map(|w| w.destination.as_str()).collect();
    if pod["metadata"]["annotations"].is_object() {
        ops.push(
            json!({"op": "add", "path": "/metadata/annotations/infra.dev~1injected", "value": injected.join(",")}),
        );
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {INJECTED: injected.join(",")}}));
    }
    ops
}

/// The `infra` binary in the image (its entrypoint).
const BINARY: &str = "/usr/local/bin/infra";

/// The `infra proxy` container for one destination.
fn sidecar(want: &Wanted, port: u16, kind: DestinationKind, cx: &Context<'_>) -> Value {
    json!({
        "name": format!("infra-{}", want.destination),
        "image": cx.image,
        "args": ["proxy", want.destination, "--port", port.to_string(),
                 "--workload-token", format!("{TOKEN_DIR}/token"), "--kind", kind.as_str()],
        "lifecycle": {"postStart": {"exec": {"command":
            [BINARY, "proxy", want.destination, "--port", port.to_string(), "--ready-check"]}}},
        "env": [
            {"name": "INFRA_SERVER", "value": cx.server},
            {"name": "INFRA_SERVER_CA", "value": cx.workloads.server_ca},
        ],
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
        },
    })
}

#[cfg(test)]
mod tests;
