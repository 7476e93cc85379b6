//! The kubeconfig a user's access implies, and its edits, as pure
//! functions over a generic YAML document: the CLI merges it into the
//! user's file at login, the web console offers it as a download. One
//! statement of what Infra's kubeconfig entries are.
//!
//! The edits work over a generic YAML document:
//! everything that is not ours (other clusters, users and contexts, fields
//! and top-level keys this code does not know) passes through as it was.
//!
//! Ours is every cluster, user and context whose name starts with `infra:`.
//! A merge makes that set exactly what the user can reach now: it replaces
//! our entries in place, appends new ones, and drops the rest; a removal is
//! a merge with nothing.

use std::collections::BTreeSet;

use crate::Info;
use anyhow::Context;
use yaml_serde::{Mapping, Value};

/// The prefix of every kubeconfig entry Infra writes.
pub const PREFIX: &str = "infra:";

/// The kind of destination that gets kubeconfig entries.
const KUBERNETES: &str = "kubernetes";

/// The ExecCredential version `infra tokens` prints.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// How kubectl should trust the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The server's CA, PEM; it signs the gateway's certificates too.
    Ca(String),
    /// The login skipped verification (`--skip-tls-verify`).
    Insecure,
    /// The system's roots.
    System,
}

/// A cluster the user can reach, with the namespaces granted one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The destination name.
    pub name: String,
    /// The gateway URL, without a trailing slash.
    pub server: String,
    /// The gateway name to ask for in TLS when `server` is an address.
    pub tls_server_name: Option<String>,
    pub namespaces: BTreeSet<String>,
}

/// `https://dev.localhost:4443` → (`https://127.0.0.1:4443`, `dev.localhost`).
/// RFC 6761 reserves `*.localhost` for the loopback, and browsers and curl
/// resolve it so, but kubectl's resolver asks DNS, which knows no such
/// name on most Linux machines. The gateway finds the cluster from the TLS
/// server name when the Host is an address.
fn loopback_gateway(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    let host_lc = host.to_ascii_lowercase();
    if !host_lc.ends_with(".localhost") {
        return None;
    }
    let server = match port {
        Some(p) => format!("https://127.0.0.1:{p}"),
        None => "https://127.0.0.1".to_owned(),
    };
    Some((server, host_lc))
}

/// Everything Infra should have in the kubeconfig.
#[derive(Debug, Clone)]
pub struct Access {
    pub clusters: Vec<Cluster>,
    pub trust: Trust,
    /// The absolute path of the `infra` binary that kubectl runs for tokens.
    pub exe: String,
}

/// The edited document and what changed, for the message to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub doc: Value,
    /// Our contexts now in the document, in order.
    pub written: Vec<String>,
    /// Our contexts that were there and are gone.
    pub removed: Vec<String>,
    /// The current context, when it was one of `removed` and is now unset.
    pub unset_current: Option<String>,
}

impl Access {
    /// The Kubernetes destinations among the caller's grants: a grant on
    /// `dev` or on `dev.web` gives the cluster `dev`, and `dev.web` the
    /// namespace context too. Destinations without a gateway URL are left
    /// out: there is nothing to point kubectl at.
    pub fn from_info(info: &Info, trust: Trust, exe: String) -> Self {
        let mut granted: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
        for g in &info.grants {
            let (dest, ns) = match g.resource.split_once('.') {
                Some((d, n)) => (d, Some(n).filter(|n| !n.is_empty())),
                None => (g.resource.as_str(), None),
            };
            if info.kinds.get(dest).map(String::as_str) != Some(KUBERNETES) {
                continue;
            }
            let namespaces = granted.entry(dest).or_default();
            if let Some(ns) = ns {
                namespaces.insert(ns.to_owned());
            }
        }
        let clusters = granted
            .into_iter()
            .filter_map(|(dest, namespaces)| {
                let url = info.urls.get(dest)?.trim_end_matches('/');
                let (server, tls_server_name) = match loopback_gateway(url) {
                    Some((server, name)) => (server, Some(name)),
                    None => (url.to_owned(), None),
                };
                Some(Cluster {
                    name: dest.to_owned(),
                    server,
                    tls_server_name,
                    namespaces,
                })
            })
            .collect();
        Self { clusters, trust, exe }
    }

    /// Our context names: `infra:<cluster>`, then `infra:<cluster>.<ns>`.
    pub fn context_names(&self) -> Vec<String> {
        self.clusters
            .iter()
            .flat_map(|c| {
                std::iter::once(format!("{PREFIX}{}", c.name))
                    .chain(c.namespaces.iter().map(move |ns| format!("{PREFIX}{}.{ns}", c.name)))
            })
            .collect()
    }

    fn clusters(&self) -> Vec<Value> {
        self.clusters
            .iter()
            .map(|c| {
                let mut cluster = vec![("server", Value::from(c.server.as_str()))];
                if let Some(name) = &c.tls_server_name {
                    cluster.push(("tls-server-name", Value::from(name.as_str())));
                }
                match &self.trust {
                    Trust::Ca(pem) => {
                        use base64::Engine as _;
                        let data = base64::engine::general_purpose::STANDARD.encode(pem);
                        cluster.push(("certificate-authority-data", Value::from(data)));
                    }
                    Trust::Insecure => cluster.push(("insecure-skip-tls-verify", Value::Bool(true))),
                    Trust::System => {}
                }
                named(&c.name, "cluster", map(cluster))
            })
            .collect()
    }

    fn users(&self) -> Vec<Value> {
        self.clusters
            .iter()
            .map(|c| {
                let args = ["tokens", "--destination", c.name.as_str()].map(Value::from).to_vec();
                let exec = map([
                    ("apiVersion", Value::from(EXEC_API_VERSION)),
                    ("command", Value::from(self.exe.as_str())),
                    ("args", Value::Sequence(args)),
                    ("interactiveMode", Value::from("Never")),
                    ("provideClusterInfo", Value::Bool(false)),
                ]);
                named(&c.name, "user", map([("exec", exec)]))
            })
            .collect()
    }

    fn contexts(&self) -> Vec<Value> {
        self.clusters
            .iter()
            .flat_map(|c| {
                let ours = Value::from(format!("{PREFIX}{}", c.name));
                let base = vec![("cluster", ours.clone()), ("user", ours)];
                std::iter::once(named(&c.name, "context", map(base.clone()))).chain(c.namespaces.iter().map(
                    move |ns| {
                        let mut ctx = base.clone();
                        ctx.push(("namespace", Value::from(ns.as_str())));
                        named(&format!("{}.{ns}", c.name), "context", map(ctx))
                    },
                ))
            })
            .collect()
    }
}

/// Makes our entries in `doc` exactly those of `want`; `doc` is `Null` for
/// an absent or empty file. The current context is kept unless it was ours
/// and is gone.
pub fn merge(doc: Value, want: &Access) -> anyhow::Result<Outcome> {
    replace(doc, want.clusters(), want.users(), want.contexts())
}

/// Removes all our entries from `doc`, and the current context if it was ours.
pub fn remove(doc: Value) -> anyhow::Result<Outcome> {
    replace(doc, Vec::new(), Vec::new(), Vec::new())
}

/// Makes `context` (one of ours, already in `doc`) the current context.
pub fn set_current(doc: &mut Value, context: &str) -> anyhow::Result<()> {
    let root = doc.as_mapping_mut().context("the kubeconfig is not a YAML mapping")?;
    root.insert(Value::from("current-context"), Value::from(context));
    Ok(())
}

fn replace(doc: Value, clusters: Vec<Value>, users: Vec<Value>, contexts: Vec<Value>) -> anyhow::Result<Outcome> {
    let written: Vec<String> = contexts.iter().filter_map(|c| name_of(c).map(str::to_owned)).collect();
    let mut root = match doc {
        Value::Null if contexts.is_empty() => {
            // Nothing to write and nothing there: leave "no file" alone.
            return Ok(Outcome {
                doc: Value::Null,
                written,
                removed: Vec::new(),
                unset_current: None,
            });
        }
        Value::Null => map([
            ("apiVersion", Value::from("v1")),
            ("kind", Value::from("Config")),
            ("preferences", Value::Mapping(Mapping::new())),
        ]),
        Value::Mapping(m) => Value::Mapping(m),
        _ => anyhow::bail!("the kubeconfig is not a YAML mapping"),
    };
    let Some(m) = root.as_mapping_mut() else {
        anyhow::bail!("the kubeconfig is not a YAML mapping");
    };
    update_section(m, "clusters", clusters)?;
    update_section(m, "users", users)?;
    let removed = update_section(m, "contexts", contexts)?;
    let current = m.get("current-context").and_then(Value::as_str).map(str::to_owned);
    let unset_current = current.filter(|c| c.starts_with(PREFIX) && !written.contains(c));
    if unset_current.is_some() {
        m.shift_remove("current-context");
    }
    Ok(Outcome {
        doc: root,
        written,
        removed,
        unset_current,
    })
}

/// Replaces our entries of the list `key` with `want`, in place where the
/// name is already there, and returns the names of ours that went away.
/// Entries that are not ours, including ones this code cannot read, stay
/// where they are.
fn update_section(root: &mut Mapping, key: &str, want: Vec<Value>) -> anyhow::Result<Vec<String>> {
    let mut want: Vec<Option<Value>> = want.into_iter().map(Some).collect();
    let items = match root.get_mut(key) {
        None | Some(Value::Null) if want.is_empty() => return Ok(Vec::new()),
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(s)) => std::mem::take(s),
        Some(_) => anyhow::bail!("the kubeconfig's `{key}` is not a list"),
    };
    let mut out = Vec::with_capacity(items.len() + want.len());
    let mut removed = Vec::new();
    for item in items {
        let Some(n) = name_of(&item).filter(|n| n.starts_with(PREFIX)).map(str::to_owned) else {
            out.push(item);
            continue;
        };
        match want
            .iter_mut()
            .find(|w| w.as_ref().and_then(name_of) == Some(n.as_str()))
        {
            Some(slot) => out.extend(slot.take()),
            // A second entry of one name is dropped, and reported once.
            None if removed.contains(&n) || out.iter().any(|o| name_of(o) == Some(n.as_str())) => {}
            None => removed.push(n),
        }
    }
    out.extend(want.into_iter().flatten());
    root.insert(Value::from(key), Value::Sequence(out));
    Ok(removed)
}

fn name_of(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// `{name: infra:<name>, <field>: body}`.
fn named(name: &str, field: &str, body: Value) -> Value {
    map([("name", Value::from(format!("{PREFIX}{name}"))), (field, body)])
}

fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

/// A kubeconfig holding only Infra's entries for `want`: the console's
/// download.
pub fn document(want: &Access) -> anyhow::Result<Value> {
    Ok(merge(Value::Null, want)?.doc)
}
