//! cosign-format artifacts for tests, made by `cosign_artifacts.py`
//! (Python `cryptography`, independent of bundler): key pairs, `.sig` and
//! `.att` tags, a Sigstore-bundle-style OCI referrer, and the independent
//! ECDSA check of a signature read back from a registry.
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cosign_artifacts.py")
}

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3 is needed (scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn must(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "cosign_artifacts.py {args:?}: {text}");
    text.trim().to_string()
}

/// A key pair `<name>.key` / `<name>.pub` in `dir`; returns the public key path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    must(&["keygen", dir.to_str().unwrap(), name]);
    dir.join(format!("{name}.pub"))
}

fn key_of(public: &Path) -> String {
    public.with_extension("key").to_string_lossy().into_owned()
}

/// cosign `.sig` for `digest` in `host/repo`; the signature manifest's digest.
pub fn sign(host: &str, repo: &str, digest: &str, public: &Path) -> String {
    must(&["sign", host, repo, digest, &key_of(public)])
}

/// cosign `.att` (SPDX in-toto attestation); the manifest's digest.
pub fn attest(host: &str, repo: &str, digest: &str, public: &Path) -> String {
    must(&["attest", host, repo, digest, &key_of(public)])
}

/// A Sigstore-bundle referrer of `digest` (an OCI manifest of
/// `media_type`, `size` bytes); the referrer's digest.
pub fn bundle_referrer(
    host: &str,
    repo: &str,
    digest: &str,
    media_type: &str,
    size: usize,
    public: &Path,
) -> String {
    must(&[
        "bundle-referrer",
        host,
        repo,
        digest,
        media_type,
        &size.to_string(),
        &key_of(public),
    ])
}

/// The independent check: a `.sig` in `host/repo` for `digest` verifies
/// with `public` (Python `cryptography`). Err with the script's words.
pub fn verify(host: &str, repo: &str, digest: &str, public: &Path) -> Result<String, String> {
    let (ok, text) = run(&["verify", host, repo, digest, public.to_str().unwrap()]);
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}
