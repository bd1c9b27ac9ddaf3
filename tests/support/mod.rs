//! Test support shared by the integration tests: real `docker-registry`
//! instances on 127.0.0.1 (plain, basic auth, TLS with a CA), and helpers to
//! run the bundler binary. Each test file includes this with `mod support;`.
#![allow(dead_code)]

pub mod chart_server;
pub mod cosign;
pub mod faulty_proxy;
pub mod images;
pub mod kube_api;
pub mod nginx;
pub mod registry;
pub mod runtimes;
pub mod serve;
pub mod standins;
pub mod token_registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `bundler` binary.
pub fn bundler_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bundler"))
}

/// Run bundler with args in `dir`; returns the output (never panics on failure).
pub fn bundler(dir: &Path, args: &[&str]) -> Output {
    Command::new(bundler_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run bundler")
}

/// A fixture by path relative to a fixtures root: `tests/fixtures/<rel>`
/// when the project keeps its own copy, else `../shared/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel)
}

/// The shared fixtures root (`../shared/fixtures`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// `helm` binary for tests: $BUNDLER_TEST_HELM, else `helm` on PATH.
pub fn helm() -> PathBuf {
    std::env::var_os("BUNDLER_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
