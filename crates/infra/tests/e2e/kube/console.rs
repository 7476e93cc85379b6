//! The kubeconfig the web console offers, used by the real kubectl.

use std::path::Path;
use std::process::Command;

use infra_testkit::eventually;

use super::super::console::{curl, header, sign_in};
use super::super::gateway::user;
use super::{bin, setup};

#[test]
fn the_console_kubeconfig_works_with_kubectl() {
    let k = setup();
    let alice = user(&k.env, "alice@example.com");
    k.env
        .admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "view"])
        .ok();
    let cookie = sign_in(&k.env, "alice@example.com");
    let (status, _, page) = curl(&k.env, "/console", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(status, 200);
    assert!(page.contains("Download kubeconfig"), "{page}");
    let (status, head, yaml) = curl(&k.env, "/console/kubeconfig", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(status, 200, "{yaml}");
    assert!(
        header(&head, "content-disposition").is_some_and(|d| d.contains("attachment")),
        "{head}"
    );
    assert!(
        yaml.contains("infra:k8s.dev") && yaml.contains("certificate-authority-data"),
        "{yaml}"
    );
    let file = alice.home().join("downloaded-kubeconfig.yaml");
    std::fs::write(&file, &yaml).unwrap();
    // kubectl with only that file, running `infra tokens` (on the PATH) as
    // alice, logged in: the list is allowed in dev, once the RoleBinding
    // the grant makes is there.
    let path = format!(
        "{}:{}",
        bin().parent().map(Path::to_path_buf).unwrap_or_default().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    eventually!(std::time::Duration::from_secs(20), || {
        let out = Command::new("kubectl")
            .env("HOME", alice.home())
            .env("KUBECONFIG", &file)
            .env("PATH", &path)
            .args([
                "--context",
                "infra:k8s.dev",
                "get",
                "pods",
                "-n",
                "dev",
                "--request-timeout",
                "20s",
            ])
            .output()
            .unwrap();
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    });
    // No cluster, no kubeconfig.
    let _bob = user(&k.env, "bob@example.com");
    let bob = sign_in(&k.env, "bob@example.com");
    let (status, _, _) = curl(&k.env, "/console/kubeconfig", &["-H", &format!("Cookie: {bob}")]);
    assert_eq!(status, 404);
}
