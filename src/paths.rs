//! Where relative paths of the inputs resolve, said in words (issue 22).
//!
//! The rules (README, "Relative paths"): paths in a bundle manifest
//! resolve against the manifest's directory; in `load-image.yaml`,
//! `source.intermediateBundlesPath` and a LOCAL `target.repo.path` resolve
//! against the working directory, as charts-syncer resolves them (it passes
//! them to Go's file functions unchanged), while bundler's own state
//! (`.bundler/`) goes next to the config. A path that does not exist is
//! named as it resolved, lexically cleaned (`a/../b` is `b`), so the user
//! sees which file was looked for.
use std::path::{Component, Path, PathBuf};

/// `path` joined to `base` when relative, with `.` and `..` removed
/// lexically (symlinks are not followed: this is for messages).
pub fn resolved(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    lexical(&joined)
}

/// `.` and `..` components removed without touching the file system.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The working directory made absolute for messages (`.` if unknown).
pub fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// When the config is not in the working directory: one line per relative
/// path of `load-image.yaml`, saying where it resolved (issue 22). Paths in
/// the config resolve against the working directory, as charts-syncer
/// reads them; bundler's own state (`.bundler/`) goes next to the config.
pub fn config_path_notes(config: &crate::config::load_image::SyncConfig) -> Vec<String> {
    let cwd = cwd();
    let config_dir = config
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| resolved(&cwd, p))
        .unwrap_or_else(|| cwd.clone());
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => lexical(a) == lexical(b),
    };
    if same(&config_dir, &cwd) {
        return Vec::new();
    }
    let mut notes = Vec::new();
    let mut note = |key: &str, p: &Path| {
        if p.is_relative() {
            notes.push(format!(
                "{key}: {} resolves to {} (relative to the working directory, as charts-syncer \
                 reads it; the config is in {})",
                p.display(),
                resolved(&cwd, p).display(),
                config_dir.display()
            ));
        }
    };
    if let crate::config::load_image::Source::Bundles(p) = &config.source {
        note("source.intermediateBundlesPath", p);
    }
    if let Some(p) = config.target_repo.as_ref().and_then(|r| r.path.as_ref()) {
        note("target.repo.path", p);
    }
    notes.push(format!(
        "sync records (.bundler/) go next to the config: {}",
        config_dir.join(".bundler").display()
    ));
    notes
}

/// A path a bundle manifest names must exist: when it does not, that is
/// bad input (exit 2), named absolute as it resolved.
pub fn require_manifest_path(what: &str, path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(crate::error::input_error(format!(
                "{what} {} does not exist (paths in a bundle manifest are relative to the \
                 manifest's directory)",
                resolved(&cwd(), path).display()
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_is_removed_lexically() {
        assert_eq!(
            resolved(Path::new("/w/products"), Path::new("../charts/./shop")),
            PathBuf::from("/w/charts/shop")
        );
        assert_eq!(
            resolved(Path::new("/w"), Path::new("/abs/x")),
            PathBuf::from("/abs/x")
        );
        assert_eq!(lexical(Path::new("a/..")), PathBuf::from("."));
    }
}
