//! Records the git revision the binary is built from, for `signalbox --version`.
//!
//! `SIGNALBOX_GIT_REV` wins when set (a container build copies no `.git`: pass it as a build
//! argument); otherwise `git rev-parse`; otherwise `unknown`. Never fails the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SIGNALBOX_GIT_REV");
    // A new commit moves HEAD or the branch it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(reference) = head.trim().strip_prefix("ref: ")
        && Path::new(".git").join(reference).exists()
    {
        println!("cargo:rerun-if-changed=.git/{reference}");
    }
    println!("cargo:rerun-if-changed=.git/packed-refs");
    let revision = std::env::var("SIGNALBOX_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
            let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !rev.is_empty()).then_some(rev)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SIGNALBOX_GIT_REV={revision}");
}
