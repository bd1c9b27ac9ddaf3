//! Records the git commit bundler is built from, for `bundler --version`.
//! Outside a git checkout (a source tarball) the commit is
//! `BUNDLER_GIT_COMMIT` from the environment, else "unknown".
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=BUNDLER_GIT_COMMIT");
    // Rebuild when HEAD moves (a commit, a checkout); works in worktrees,
    // whose HEAD and reflog live under the worktree's own git dir.
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("BUNDLER_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BUNDLER_GIT_COMMIT={commit}");
}
