//! Names the commit the binary was built from, for `infra --version`:
//! `INFRA_COMMIT` if set (a build without the repository, such as the
//! container image's), otherwise `git rev-parse`, otherwise `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=INFRA_COMMIT");
    let given = std::env::var("INFRA_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = given.or_else(git_commit).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=INFRA_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = root.join(".git");
    // Rebuild when HEAD moves (a new commit, a checkout).
    for f in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git.join(f).display());
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(r) = head.strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed={}", git.join(r.trim()).display());
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!commit.is_empty()).then_some(commit)
}
