use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use infra_api::{Grant, Info, User};
use yaml_serde::Value;

use super::merge::{self, Access, Cluster, Trust, path};
use super::{edit_file, load};

const EXE: &str = "/usr/local/bin/infra";

fn yaml(s: &str) -> Value {
    yaml_serde::from_str(s).unwrap()
}

fn cluster(name: &str, namespaces: &[&str]) -> Cluster {
    Cluster {
        name: name.into(),
        server: "https://127.0.0.1:4443".into(),
        tls_server_name: Some(format!("{name}.localhost")),
        namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
    }
}

fn access(clusters: Vec<Cluster>, trust: Trust) -> Access {
    Access {
        clusters,
        trust,
        exe: EXE.into(),
    }
}

/// A kubeconfig someone else wrote: entries of theirs, fields and a
/// top-level key this code does not know.
const FOREIGN: &str = r#"
apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: kind-kind
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Zm9v
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: x}
contexts:
- name: kind-kind
  context: {cluster: kind-kind, user: kind-kind, namespace: kube-system}
users:
- name: kind-kind
  user: {client-certificate-data: YmFy, client-key-data: YmF6}
current-context: kind-kind
x-vendor-setting: {keep: me}
"#;

/// What `infra login` writes for `dev` (with namespace `web`) and the CA.
const DEV_ENTRIES: &str = r#"
clusters:
- name: infra:dev
  cluster:
    server: https://127.0.0.1:4443
    tls-server-name: dev.localhost
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnh4Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
users:
- name: infra:dev
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/infra
      args: [tokens, --destination, dev]
      interactiveMode: Never
      provideClusterInfo: false
contexts:
- name: infra:dev
  context: {cluster: infra:dev, user: infra:dev}
- name: infra:dev.web
  context: {cluster: infra:dev, user: infra:dev, namespace: web}
"#;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n";

fn dev() -> Access {
    access(vec![cluster("dev", &["web"])], Trust::Ca(PEM.into()))
}

fn section<'a>(doc: &'a Value, key: &str) -> &'a Vec<Value> {
    doc.get(key).and_then(Value::as_sequence).unwrap()
}

fn names(doc: &Value, key: &str) -> Vec<String> {
    section(doc, key)
        .iter()
        .map(|e| e.get("name").and_then(Value::as_str).unwrap().to_owned())
        .collect()
}

#[test]
fn merge_into_absent_file() {
    let o = merge::merge(Value::Null, &dev()).unwrap();
    let mut want = yaml(DEV_ENTRIES);
    let m = want.as_mapping_mut().unwrap();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Config".into());
    m.insert("preferences".into(), Value::Mapping(Default::default()));
    assert_eq!(o.doc, want);
    assert_eq!(o.written, ["infra:dev", "infra:dev.web"]);
    assert!(o.removed.is_empty());
    assert_eq!(o.unset_current, None);
    // kubectl reads the top-level keys in a fixed place; new files start with them.
    let text = yaml_serde::to_string(&o.doc).unwrap();
    assert!(text.starts_with("apiVersion: v1\nkind: Config\n"), "{text}");
}

#[test]
fn nothing_to_write_into_absent_file_stays_absent() {
    let o = merge::merge(Value::Null, &access(vec![], Trust::System)).unwrap();
    assert_eq!(o.doc, Value::Null);
    assert_eq!(merge::remove(Value::Null).unwrap().doc, Value::Null);
}

#[test]
fn merge_keeps_foreign_entries_and_unknown_keys() {
    let o = merge::merge(yaml(FOREIGN), &dev()).unwrap();
    assert_eq!(names(&o.doc, "clusters"), ["kind-kind", "infra:dev"]);
    assert_eq!(names(&o.doc, "users"), ["kind-kind", "infra:dev"]);
    assert_eq!(names(&o.doc, "contexts"), ["kind-kind", "infra:dev", "infra:dev.web"]);
    let foreign = yaml(FOREIGN);
    for key in ["clusters", "users", "contexts"] {
        assert_eq!(section(&o.doc, key).first(), section(&foreign, key).first(), "{key}");
    }
    for key in [
        "preferences",
        "x-vendor-setting",
        "current-context",
        "apiVersion",
        "kind",
    ] {
        assert_eq!(o.doc.get(key), foreign.get(key), "{key}");
    }
    // Ours are exactly what login writes.
    let ours = yaml(DEV_ENTRIES);
    for key in ["clusters", "users", "contexts"] {
        assert_eq!(&section(&o.doc, key)[1..], &section(&ours, key)[..], "{key}");
    }
}

#[test]
fn trust_choices() {
    let cluster_of = |trust| {
        let o = merge::merge(Value::Null, &access(vec![cluster("dev", &[])], trust)).unwrap();
        section(&o.doc, "clusters")[0].get("cluster").unwrap().clone()
    };
    assert_eq!(
        cluster_of(Trust::Insecure),
        yaml("{server: 'https://127.0.0.1:4443', tls-server-name: dev.localhost, insecure-skip-tls-verify: true}")
    );
    assert_eq!(
        cluster_of(Trust::System),
        yaml("{server: 'https://127.0.0.1:4443', tls-server-name: dev.localhost}")
    );
}

#[test]
fn stale_entries_go_and_current_ones_are_replaced_in_place() {
    // Yesterday: dev (old URL, namespaces web and api) and prod, current prod.
    let yesterday = access(
        vec![
            Cluster {
                server: "https://old.example:1".into(),
                ..cluster("dev", &["web", "api"])
            },
            cluster("prod", &[]),
        ],
        Trust::Insecure,
    );
    let mut doc = merge::merge(yaml(FOREIGN), &yesterday).unwrap().doc;
    merge::set_current(&mut doc, "infra:prod").unwrap();
    // Today: only dev.web, with the CA.
    let o = merge::merge(doc, &dev()).unwrap();
    assert_eq!(o.removed, ["infra:dev.api", "infra:prod"]);
    assert_eq!(o.unset_current.as_deref(), Some("infra:prod"));
    assert_eq!(o.doc.get("current-context"), None);
    assert_eq!(names(&o.doc, "clusters"), ["kind-kind", "infra:dev"]);
    assert_eq!(names(&o.doc, "users"), ["kind-kind", "infra:dev"]);
    assert_eq!(names(&o.doc, "contexts"), ["kind-kind", "infra:dev", "infra:dev.web"]);
    let server = section(&o.doc, "clusters")[1]
        .get("cluster")
        .and_then(|c| c.get("server"));
    assert_eq!(server, Some(&Value::from("https://127.0.0.1:4443")));
    let mut fresh = merge::merge(yaml(FOREIGN), &dev()).unwrap().doc;
    fresh.as_mapping_mut().unwrap().shift_remove("current-context");
    assert_eq!(
        o.doc, fresh,
        "the same as a fresh merge, less the unset current context"
    );
}

#[test]
fn current_context_still_granted_is_kept() {
    let mut doc = merge::merge(yaml(FOREIGN), &dev()).unwrap().doc;
    merge::set_current(&mut doc, "infra:dev.web").unwrap();
    let o = merge::merge(doc, &dev()).unwrap();
    assert_eq!(o.doc.get("current-context"), Some(&Value::from("infra:dev.web")));
    assert_eq!(o.unset_current, None);
    assert!(o.removed.is_empty());
}

#[test]
fn logout_restores_the_original() {
    for original in [
        FOREIGN,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    ] {
        let login = merge::merge(yaml(original), &dev()).unwrap().doc;
        assert_ne!(login, yaml(original));
        let o = merge::remove(login).unwrap();
        assert_eq!(o.doc, yaml(original));
        assert_eq!(o.removed, ["infra:dev", "infra:dev.web"]);
        assert!(o.written.is_empty());
    }
    // After 'infra use', logout unsets the current context it set.
    let mut doc = merge::merge(yaml(FOREIGN), &dev()).unwrap().doc;
    merge::set_current(&mut doc, "infra:dev").unwrap();
    let o = merge::remove(doc).unwrap();
    assert_eq!(o.unset_current.as_deref(), Some("infra:dev"));
    let mut want = yaml(FOREIGN);
    want.as_mapping_mut().unwrap().shift_remove("current-context");
    assert_eq!(o.doc, want);
}

#[test]
fn logout_leaves_files_without_our_entries_alone() {
    for doc in [
        FOREIGN,
        "clusters: null\nusers:\ncontexts: []\ncurrent-context: ''\n",
        "{}",
    ] {
        let o = merge::remove(yaml(doc)).unwrap();
        assert_eq!(o.doc, yaml(doc), "{doc}");
        assert!(o.removed.is_empty() && o.unset_current.is_none());
    }
}

#[test]
fn null_sections_and_duplicates() {
    let doc = yaml(
        "clusters: null\ncontexts:\n- {name: infra:dev}\n- {name: infra:dev}\n- {name: infra:gone}\n- {name: infra:gone}\n- just a string\n",
    );
    let o = merge::merge(doc, &dev()).unwrap();
    assert_eq!(names(&o.doc, "clusters"), ["infra:dev"]);
    assert_eq!(o.removed, ["infra:gone"]);
    let contexts = section(&o.doc, "contexts");
    assert_eq!(contexts.len(), 3, "{contexts:?}");
    assert_eq!(contexts[1], Value::from("just a string"));
}

#[test]
fn not_a_kubeconfig() {
    assert!(merge::merge(yaml("[1, 2]"), &dev()).is_err());
    assert!(merge::merge(yaml("clusters: {a: b}"), &dev()).is_err());
    assert!(merge::remove(yaml("users: 3")).is_err());
}

#[test]
fn kubeconfig_path() {
    let home = Path::new("/home/me");
    let check = |env: Option<&str>, want: &str| assert_eq!(path(env.map(OsStr::new), home), PathBuf::from(want));
    check(None, "/home/me/.kube/config");
    check(Some(""), "/home/me/.kube/config");
    check(Some("/tmp/a"), "/tmp/a");
    check(Some("/tmp/a:/tmp/b:/tmp/c"), "/tmp/a");
    check(Some(":/tmp/b"), "/tmp/b");
    check(Some("relative/k"), "relative/k");
}

fn info(grants: &[&str], kinds: &[(&str, &str)]) -> Info {
    let grant = |resource: &&str| Grant {
        id: "g".into(),
        user: Some("a@example.com".into()),
        group: None,
        role: "view".into(),
        resource: (*resource).into(),
        created: "2030-01-01T00:00:00Z".into(),
        created_by: "admin@example.com".into(),
        expires: None,
    };
    let user = User {
        id: "u".into(),
        email: "a@example.com".into(),
        created: "2030-01-01T00:00:00Z".into(),
        last_seen: None,
        groups: Vec::new(),
        kind: "user".into(),
    };
    Info {
        server_version: "test".into(),
        user,
        infra_role: None,
        grants: grants.iter().map(grant).collect(),
        session_expires: None,
        urls: kinds
            .iter()
            .map(|(d, _)| ((*d).to_owned(), format!("https://{d}.localhost:4443/")))
            .collect::<BTreeMap<_, _>>(),
        kinds: kinds.iter().map(|(d, k)| ((*d).to_owned(), (*k).to_owned())).collect(),
    }
}

#[test]
fn loopback_gateway_names_become_an_address_and_a_tls_name() {
    let mut i = info(&["dev", "prod"], &[("dev", "kubernetes"), ("prod", "kubernetes")]);
    i.urls.insert("prod".into(), "https://prod.infra.example.com/".into());
    let a = Access::from_info(&i, Trust::System, EXE.into());
    assert_eq!(a.clusters[0].server, "https://127.0.0.1:4443");
    assert_eq!(a.clusters[0].tls_server_name.as_deref(), Some("dev.localhost"));
    // A real domain is left as it is: DNS knows it.
    assert_eq!(a.clusters[1].server, "https://prod.infra.example.com");
    assert_eq!(a.clusters[1].tls_server_name, None);
}

#[test]
fn access_from_grants() {
    let i = info(
        &[
            "infra", "dev.web", "dev.api", "dev.web", "prod", "web", "db.x", "nourl", "unknown",
        ],
        &[
            ("dev", "kubernetes"),
            ("prod", "kubernetes"),
            ("web", "http"),
            ("db", "postgres"),
        ],
    );
    let mut i = i;
    i.kinds.insert("nourl".into(), "kubernetes".into());
    let a = Access::from_info(&i, Trust::System, EXE.into());
    assert_eq!(a.clusters, vec![cluster("dev", &["api", "web"]), cluster("prod", &[])]);
    assert_eq!(
        a.context_names(),
        ["infra:dev", "infra:dev.api", "infra:dev.web", "infra:prod"]
    );
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("infra-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn files_login_then_logout() {
    let tmp = TempDir::new("kubeconfig");
    // No file and nothing to write: no file.
    let absent = tmp.0.join("absent/config");
    edit_file(&absent, |d| merge::merge(d, &access(vec![], Trust::System))).unwrap();
    assert!(!absent.exists());
    // No file: created with its directory, 0600.
    let fresh = tmp.0.join(".kube/config");
    edit_file(&fresh, |d| merge::merge(d, &dev())).unwrap();
    assert_eq!(
        names(&load(&fresh).unwrap(), "contexts"),
        ["infra:dev", "infra:dev.web"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An empty file is an empty kubeconfig.
    let empty = tmp.0.join("empty");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(load(&empty).unwrap(), Value::Null);
    // A real one, through a symlink, with comments: login then logout gives
    // back the same document, and the symlink stays.
    let real = tmp.0.join("real-config");
    let original = format!("# my clusters\n{FOREIGN}");
    std::fs::write(&real, &original).unwrap();
    let link = tmp.0.join("link");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&real, &link).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&real, &link).unwrap();
    edit_file(&link, |d| merge::merge(d, &dev())).unwrap();
    assert_eq!(
        names(&load(&real).unwrap(), "contexts"),
        ["kind-kind", "infra:dev", "infra:dev.web"]
    );
    #[cfg(unix)]
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    edit_file(&link, merge::remove).unwrap();
    assert_eq!(load(&real).unwrap(), yaml(FOREIGN));
    // With nothing of ours to change, the file is not rewritten (comments stay).
    std::fs::write(&real, &original).unwrap();
    edit_file(&real, merge::remove).unwrap();
    assert_eq!(std::fs::read_to_string(&real).unwrap(), original);
    // Not YAML: an error, and the file is left as it was.
    std::fs::write(&real, "clusters: [").unwrap();
    assert!(edit_file(&real, merge::remove).is_err());
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "clusters: [");
}
