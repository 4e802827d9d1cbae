//! Build script: records the git commit the binary is built from, for `rtcbox --version`, the
//! log's start line and the admin panel. `RTCBOX_GIT_COMMIT` overrides it (a build from a source
//! tarball has no `.git`); without either the commit reads "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RTCBOX_GIT_COMMIT");
    let commit = std::env::var("RTCBOX_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RTCBOX_GIT_COMMIT={}", commit.trim());
}

/// The short hash of HEAD, and rebuild triggers for when HEAD moves.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD names a branch; a commit moves that branch's ref (loose or packed), not HEAD itself.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    Some(commit)
}
