//! Values backups of `upgrade`: `<dir>/<release>/<UTC stamp>-rev<N>.yaml`.
//!
//! A backup holds the release's values, passwords included, so it is
//! private whatever the umask: the file is 0600 and the release directory
//! 0700 (tightened when it exists looser; a new backup root is 0700 too).
//! It is written whole or not at all: a temp file (`.NAME.partial-PID-N`,
//! cleaned on interrupt and by later runs) is filled and fsynced, then
//! linked to its final name, which never replaces an existing backup. A
//! full disk leaves no empty backup under a valid name.
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Write the backup of `release` at revision `rev`; its path. A second
/// backup in the same second gets `-2`, `-3`, ...
pub fn write(dir: &Path, release: &str, rev: &str, text: &str) -> anyhow::Result<PathBuf> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::now_utc().format(&fmt)?;
    let rel_dir = private_dir(dir, release)?;
    crate::interrupt::remove_stale_partials(&rel_dir);
    let tmp = crate::atomic_file::temp_path_for(&rel_dir.join(format!("{stamp}-rev{rev}.yaml")));
    let result = fill_and_link(&tmp, &rel_dir, &stamp, rev, text);
    let _ = std::fs::remove_file(&tmp);
    crate::interrupt::untrack(&tmp);
    result
}

/// `<dir>/<release>`, created 0700 (and `dir` 0700 when new); an existing
/// release directory is tightened to 0700.
fn private_dir(dir: &Path, release: &str) -> anyhow::Result<PathBuf> {
    let rel_dir = dir.join(release);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&rel_dir)
        .with_context(|| format!("creating the backup directory {}", rel_dir.display()))?;
    std::fs::set_permissions(&rel_dir, std::fs::Permissions::from_mode(0o700)).with_context(
        || {
            format!(
                "making the backup directory {} private (0700)",
                rel_dir.display()
            )
        },
    )?;
    Ok(rel_dir)
}

fn fill_and_link(
    tmp: &Path,
    rel_dir: &Path,
    stamp: &str,
    rev: &str,
    text: &str,
) -> anyhow::Result<PathBuf> {
    let mut f = crate::interrupt::create_tracked(tmp, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
    })
    .with_context(|| format!("creating the values backup {}", tmp.display()))?;
    // 0600 whatever the umask (a umask never widens, but be explicit).
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| {
            format!(
                "writing the values backup in {} (disk full?); no backup was kept, nothing was changed",
                rel_dir.display()
            )
        })?;
    drop(f);
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{stamp}-rev{rev}.yaml")
        } else {
            format!("{stamp}-rev{rev}-{n}.yaml")
        };
        let path = rel_dir.join(name);
        // A hard link never replaces an existing backup (rename would).
        match std::fs::hard_link(tmp, &path) {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(rel_dir) {
                    let _ = d.sync_all();
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the values backup {}", path.display()))
            }
        }
    }
    bail!(
        "too many backups named {stamp}-rev{rev}*.yaml in {}",
        rel_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("backups");
        let a = write(&root, "web", "2", "a: 1\n").unwrap();
        let b = write(&root, "web", "2", "a: 2\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a: 1\n");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "a: 2\n");
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("Z-rev2.yaml"), "{name}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a), 0o600);
        assert_eq!(mode(a.parent().unwrap()), 0o700);
        assert_eq!(mode(&root), 0o700);
        // Nothing but the two backups is left.
        assert_eq!(std::fs::read_dir(root.join("web")).unwrap().count(), 2);
    }

    #[test]
    fn a_loose_release_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("web")).unwrap();
        std::fs::set_permissions(
            dir.path().join("web"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write(dir.path(), "web", "1", "x: 1\n").unwrap();
        let m = std::fs::metadata(dir.path().join("web"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o700);
    }
}
